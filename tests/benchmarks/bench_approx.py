"""Time choosing and applying each shrinking operator at a random site of a ~5M-parameter network.

    .venv/bin/python tests/benchmarks/bench_approx.py [--repeats 15]

Not collected by pytest (plain script). The network is a seed grown by exact morphisms to about 5M
parameters with at least 20 places for each of remove, prune and to_separable. Per operator it prints
the number of candidate sites (every forced site tried once, untimed), then the median and worst wall
time of one call with a random site (planning every candidate on the architecture, picking one,
building the child's weights once), and how many parameters the children save. Target on a 2-core
CPU: < 100 ms each.
"""

import argparse
import statistics
import time

import numpy as np
import torch

from nash_lit.operators import removable_ids, separable_ids
from nash_lit.arch import Net, conv_block_ids, n_params, seed_arch
from nash_lit.morphisms import add_skip, concat_skip, deeper, scramble, wider
from nash_lit.operators import OPERATORS

SHRINKING = {name: op.fn for name, op in OPERATORS.items() if op.shrinks}


def five_million(rng) -> Net:
    "A NASH-like network of about 5M parameters and 20+ convolution blocks: a seed grown by exact morphisms."
    net = Net(seed_arch((64, 128, 192)))
    while len(conv_block_ids(net.arch)) < 22:
        net = deeper(net, rng).net
    while n_params(net) < 4_800_000:
        net = wider(net, rng).net
    for merge in (add_skip, concat_skip, add_skip, concat_skip):
        net = merge(net, rng).net
    return scramble(net, seed=1)


def forced_sites(net, name) -> list:
    "Every site the operator accepts when forced (tried once each, not timed)."
    arch = net.arch
    if name == "remove":
        sites = [dict(site=i) for i in removable_ids(arch)]
    elif name == "prune":
        sites = [dict(site=i, fraction=0.5) for i in conv_block_ids(arch)]
    else:
        sites = [dict(site=i) for i in separable_ids(arch)]
    good = []
    for kw in sites:
        try:
            SHRINKING[name](net, 0, **kw)
        except ValueError:
            continue
        good.append(kw)
    return good


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15, help="random applications per operator")
    args = ap.parse_args()
    torch.manual_seed(0)
    net = five_million(np.random.default_rng(0)).eval()
    size = n_params(net)
    print(
        f"network: {size:,} parameters, {len(net.arch.nodes)} nodes, "
        f"{len(conv_block_ids(net.arch))} conv blocks, torch threads {torch.get_num_threads()}"
    )
    print(f"  {net.arch}")
    print(f"{'operator':14s} {'sites':>6s} {'median ms':>10s} {'max ms':>8s} {'params saved (median)':>22s}")
    slow = []
    for name, op in SHRINKING.items():
        sites = forced_sites(net, name)
        times, saved = [], []
        for k in range(args.repeats):
            r = np.random.default_rng(100 + k)
            t0 = time.perf_counter()
            child = op(net, r).net
            times.append(time.perf_counter() - t0)
            saved.append(size - n_params(child))
            assert saved[-1] > 0
        med, worst = statistics.median(times) * 1e3, max(times) * 1e3
        print(f"{name:14s} {len(sites):6d} {med:10.1f} {worst:8.1f} {statistics.median(saved):22,.0f}")
        if len(sites) < 20:
            print(f"  fewer than 20 candidate sites for {name}")
        if med >= 100:
            slow.append(name)
    print("all shrinking operators under 100 ms (median)" if not slow else f"over 100 ms: {slow}")


if __name__ == "__main__":
    main()
