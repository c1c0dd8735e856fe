"""One NASH step of 4 children, in this process with 2 torch threads vs 2 spawned processes x 1 thread.

The same search (small seed network, 5,000 real CIFAR-10 training images, 1 epoch per child, the seed trained once
beforehand and not timed) runs through each executor; prints the wall time of the step in each, and their ratio.
Each pool is started (and its workers have imported torch and loaded the data) before its timing starts.

    python tests/benchmarks/bench_executors.py                       # CIFAR-10 from NASH_LIT_DATA or data/
    python tests/benchmarks/bench_executors.py --root /work/shared/data/cifar10 --images 5000

Not collected by pytest (the name does not start with test_).
"""

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from importlib import import_module
from pathlib import Path

import torch

from nash_lit.arch import seed_arch
from nash_lit.data import DataSpec
from nash_lit.executors import InProcess, Pool
from nash_lit.training import TrainConfig

N = import_module("nash_lit.hill_climbing")  # the module, not the package's `nash` function


def warm(pool: Pool, spec: DataSpec, workers: int):
    "Start every worker and load the data there, so that the timing is the step's."
    for f in [pool.submit(_load, spec) for _ in range(4 * workers)]:
        f.result()


def _load(spec):
    return len(spec.load().y_train)


def step(executor, spec, config, seed_run: Path, out: Path) -> float:
    "Wall seconds of step 1 (n_child children) of a NASH run whose step 0 (the seed) is already in `seed_run`."
    shutil.copytree(seed_run, out)
    start = time.perf_counter()
    N.nash(seed_arch((16, 32, 64)), spec, config, run_dir=out, resume=True, executor=executor, progress=False)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="CIFAR-10 data root (default: NASH_LIT_DATA or data/)")
    ap.add_argument("--images", type=int, default=5000, help="training images")
    ap.add_argument("--children", type=int, default=4, help="children in the step")
    ap.add_argument("--workers", type=int, default=2, help="processes of the pool (and threads in this process)")
    args = ap.parse_args()
    spec = DataSpec.cifar10(root=args.root, train_size=args.images, val_subset=1000, test_size=100, download=False)
    train = TrainConfig(batch_size=128, amp=False, channels_last=False, progress=False, device="cpu")
    seed_only = N.NashConfig(
        n_steps=0, n_child=args.children, n_op=2, n_epochs=1, seed_epochs=1, calib_size=64, train=train
    )
    config = replace(seed_only, n_steps=1)  # the seed run, extended by one step
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.set_num_threads(args.workers)
        N.nash(seed_arch((16, 32, 64)), spec, seed_only, run_dir=tmp / "seed", progress=False)  # step 0, not timed
        here = step(InProcess(), spec, config, tmp / "seed", tmp / "here")
        with Pool(args.workers, threads=1) as pool:
            warm(pool, spec, args.workers)
            pooled = step(pool, spec, config, tmp / "seed", tmp / "pool")
    print(f"one NASH step of {args.children} children, {args.images:,} CIFAR-10 images, 1 epoch each:")
    print(f"  in this process, {args.workers} torch threads: {here:7.1f} s")
    print(f"  {args.workers} spawned processes x 1 thread:    {pooled:7.1f} s")
    print(f"  speed-up of the pool: {here / pooled:.2f}x")


if __name__ == "__main__":
    main()
