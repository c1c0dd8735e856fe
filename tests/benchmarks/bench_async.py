"""Asynchronous vs synchronous Pareto-NASH with 2 workers and children of very different sizes: worker utilisation.

P0 is one tiny network (16-16-16 filters, ~5k parameters) and one large one (128-256-256, ~0.9M parameters), so the
children of the two differ by about tenfold in training time. Both searches train the same number of children after
P0 (synchronous: n_gen x n_ac; asynchronous: n_instances x n_gen x n_ac) on real CIFAR-10 images, 1 epoch each,
through the same warm spawn pool of 2 workers x 1 torch thread. For each it prints the wall seconds after P0 (from the
log's search clock: the last record minus P0's last), the busy seconds (the sum of each child's `train_seconds` and
`recovery_seconds`, which `evaluate_child` measures in the worker) and the worker utilisation
busy / (workers x wall). A synchronous generation waits for its slowest child; asynchronous instances do not.

    python tests/benchmarks/bench_async.py --root /work/shared/data/cifar10 --images 1500

Not collected by pytest (the name does not start with test_). On a machine where other work shares the cores, both
runs are slowed alike, but busy seconds then include time a worker waited for a core.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from nash_lit.arch import n_params, seed_arch
from nash_lit.data import DataSpec
from nash_lit.executors import Pool
from nash_lit import ParetoConfig, pareto_nash
from nash_lit.runs import read_records
from nash_lit.training import TrainConfig

P0 = [seed_arch((16, 16, 16)), seed_arch((128, 256, 256))]


def _load(spec):
    return len(spec.load().y_train)


def measure(config: ParetoConfig, spec: DataSpec, pool: Pool, run_dir: Path, workers: int) -> dict:
    "Run the search through `pool`; what its log says about the generations after P0."
    start = time.perf_counter()
    pareto_nash(P0, spec, config, run_dir=run_dir, executor=pool, progress=False)
    total = time.perf_counter() - start
    records = read_records(run_dir)
    p0_end = max(r["search_seconds"] for r in records if r["step"] == 0)
    wall = max(r["search_seconds"] for r in records) - p0_end
    trained = [r for r in records if r["accepted"] and r["step"] > 0]
    seconds = [r["train_seconds"] + r["recovery_seconds"] for r in trained]
    busy = sum(seconds)
    return dict(
        children=len(trained),
        total=total,
        wall=wall,
        busy=busy,
        utilisation=busy / (workers * wall),
        fastest=min(seconds),
        slowest=max(seconds),
        ok=sum(r["status"] == "ok" for r in trained),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="CIFAR-10 data root (default: NASH_LIT_DATA or data/)")
    ap.add_argument("--images", type=int, default=1500, help="training images")
    ap.add_argument("--workers", type=int, default=2, help="processes of the pool, 1 torch thread each")
    ap.add_argument("--instances", type=int, default=2, help="asynchronous instances")
    ap.add_argument("--generations", type=int, default=2, help="generations of each asynchronous instance")
    ap.add_argument("--n_ac", type=int, default=2, help="accepted children per generation")
    args = ap.parse_args()
    torch.set_num_threads(1)
    spec = DataSpec.cifar10(root=args.root, train_size=args.images, val_subset=500, test_size=100, download=False)
    train = TrainConfig(batch_size=128, amp=False, channels_last=False, progress=False, device="cpu")
    base = dict(
        n_pc=3 * args.n_ac,
        n_ac=args.n_ac,
        n_epochs=1,
        seed_epochs=1,
        recovery_epochs=1,
        calib_size=64,
        seed=0,
        train=train,
    )
    configs = {
        "synchronous": ParetoConfig(n_gen=args.instances * args.generations, **base),
        f"asynchronous, {args.instances} instances": ParetoConfig(
            n_gen=args.generations, n_instances=args.instances, **base
        ),
    }
    print(
        f"P0: {[n_params(a) for a in P0]} parameters; {args.images:,} CIFAR-10 images, 1 epoch per child; "
        f"{args.workers} spawned workers x 1 thread; load average at start {os.getloadavg()[0]:.2f} on "
        f"{os.cpu_count()} cores"
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp, Pool(args.workers, threads=1) as pool:
        for f in [pool.submit(_load, spec) for _ in range(4 * args.workers)]:
            f.result()  # workers started, data loaded
        for name, config in configs.items():
            rows[name] = measure(config, spec, pool, Path(tmp) / name.split(",")[0], args.workers)
    print(
        f"{'search':<28} {'children':>8} {'total s':>8} {'wall s':>8} {'busy s':>8} {'utilisation':>11} "
        f"{'child s (min-max)':>18}"
    )
    for name, r in rows.items():
        print(
            f"{name:<28} {r['children']:>8} {r['total']:>8.1f} {r['wall']:>8.1f} {r['busy']:>8.1f} "
            f"{r['utilisation']:>10.0%} {r['fastest']:>8.1f} - {r['slowest']:<7.1f}"
        )
    print(
        "wall, busy and utilisation are of the generations after P0 (P0 is trained the same way by both); "
        "utilisation = busy / (workers x wall)"
    )


if __name__ == "__main__":
    main()
