"""Time every exact morphism on a ~5M-parameter network and report its worst relative error.

    .venv/bin/python tests/benchmarks/bench_morphisms.py [--repeats 15] [--calib 16]

Not collected by pytest (plain script). Prints, per operator, the median and worst wall time of one
application (building the child included) and the worst max|parent(x) − child(x)| / max|parent(x)|
over the repetitions, in float32, eval mode, on random inputs. Target on a 2-core CPU: < 100 ms each.
"""

import argparse
import statistics
import time

import numpy as np
import torch

from nash_lit.arch import Net, n_params, seed_arch
from nash_lit.morphisms import deeper, morphism_error, scramble, wider
from nash_lit.operators import OPERATORS

EXACT = {name: op.fn for name, op in OPERATORS.items() if op.exact}


def five_million(rng) -> Net:
    "A NASH-like network of about 5M parameters: a scrambled seed grown by exact morphisms."
    net = scramble(Net(seed_arch((64, 128, 256))), seed=0)
    while n_params(net.arch) < 4_500_000:
        op = (deeper, wider)[rng.integers(2)]
        net = op(net, rng).net
    for name in ("add_skip", "concat_skip", "add_skip"):
        net = EXACT[name](net, rng).net
    return scramble(net, seed=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="applications per operator")
    ap.add_argument("--calib", type=int, default=16, help="calibration batch size for deeper (0: none)")
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = five_million(rng).eval()
    x = torch.randn(8, 3, 32, 32)
    calib = torch.randn(args.calib, 3, 32, 32) if args.calib else None
    print(
        f"network: {n_params(net.arch):,} parameters, {len(net.arch.nodes)} nodes, torch threads {torch.get_num_threads()}"
    )
    print(f"  {net.arch}")
    rows = []
    cases = [(name, op, {}) for name, op in EXACT.items()]
    if calib is not None:
        cases.insert(1, (f"deeper+calib{args.calib}", deeper, {"calib": calib}))
    for name, op, kw in cases:
        times, worst = [], 0.0
        for k in range(args.repeats):
            r = np.random.default_rng(100 + k)
            t0 = time.perf_counter()
            child = op(net, r, **kw).net
            times.append(time.perf_counter() - t0)
            worst = max(worst, morphism_error(net, child, x))
        rows.append((name, statistics.median(times) * 1e3, max(times) * 1e3, worst))
    print(f"{'operator':20s} {'median ms':>10s} {'max ms':>8s} {'worst rel. error':>17s}")
    for name, med, mx, err in rows:
        print(f"{name:20s} {med:10.1f} {mx:8.1f} {err:17.1e}")
    slow = [name for name, med, _, _ in rows if med >= 100]
    print("all operators under 100 ms (median)" if not slow else f"over 100 ms: {slow}")


if __name__ == "__main__":
    main()
