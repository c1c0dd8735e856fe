"""Cost of Pareto-NASH's proposal step against training the generation's accepted children (issue 9, acceptance 5).

One generation's proposal step -- draw n_pc = 200 parents by Eq. 9, make each child (GenerateChild with 1-3 of the six
operators, on the parent's weights), measure its cheap objectives, accept n_ac by Eq. 10 -- is timed on a front of
networks from about 13k to about 0.8M parameters. Training is estimated from one measured epoch of each front member
on `--images` images, scaled to each profile's training set: n_ac x n_epochs x (mean epoch time of the front).

    OMP_NUM_THREADS=1 python tests/benchmarks/bench_pareto.py [--n-pc 200] [--images 1024] [--threads 1]

Not collected by pytest (the name does not start with test_).
"""

import argparse
import time

import torch

from nash_lit.arch import PARETO_SEEDS, Net, n_params, seed_arch
from nash_lit.data import DataSpec, synthetic
from nash_lit.evaluation import fresh
from nash_lit.pareto import Member, ParetoConfig
from nash_lit.pareto_run import make_plan
from nash_lit.training import TrainConfig, train

PROFILES = {  # name -> (n_ac, n_epochs, training images)
    "cpu": (8, 2, 10_000),  # the cpu profile's sizes (settings.ini [cpu]: train_size, n_epochs), 8 accepted children
    "paper": (40, 20, 45_000),  # Section 5.2: n_ac = 40, 20 epochs, 45,000 training images
}


def front(seed: int = 0) -> list:
    archs = [seed_arch(**kw) for kw in PARETO_SEEDS.values()] + [seed_arch((96, 192, 384))]
    nets = [fresh(a, seed + k) for k, a in enumerate(archs)]
    return [
        Member(k, net, 0.5 - 0.05 * k, (float(torch.tensor(n_params(net.arch)).log()),)) for k, net in enumerate(nets)
    ]


def epoch_seconds(net: Net, images: int, batch_size: int) -> float:
    "Seconds of one training epoch on `images` synthetic images."
    data = synthetic(images, 64, 16, seed=0)
    config = TrainConfig(epochs=1, batch_size=batch_size, amp=False, channels_last=False, progress=False, eval_every=0)
    start = time.perf_counter()
    train(net, data, config)
    return (time.perf_counter() - start) * 1.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-pc", type=int, default=200)
    ap.add_argument("--images", type=int, default=1024, help="images of the measured training epoch")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    members = front()
    print(f"front: {[n_params(m.net.arch) for m in members]} parameters; torch threads {torch.get_num_threads()}")
    spec = DataSpec.synthetic(n_train=2048, n_val=64, n_test=16, seed=0)
    config = ParetoConfig(
        n_pc=args.n_pc,
        n_ac=min(40, args.n_pc),
        calib_size=256,
        train=TrainConfig(amp=False, channels_last=False, progress=False),
    )
    spec.load(torch.device("cpu"))  # loading the data is not part of the step
    start = time.perf_counter()
    plan = make_plan(config, spec, members, step=1)
    proposal = time.perf_counter() - start
    valid = sum(p["arch"] is not None for p in plan["proposals"])
    print(f"proposal step: {args.n_pc} proposals ({valid} valid) made, measured, sampled, accepted in {proposal:.1f} s")
    per_image = [epoch_seconds(m.net, args.images, 128) / args.images for m in members]
    mean_per_image = sum(per_image) / len(per_image)
    print("one epoch per front member, seconds per 1,000 images:", [round(1000 * s, 2) for s in per_image])
    for name, (n_ac, n_epochs, images) in PROFILES.items():
        training = n_ac * n_epochs * images * mean_per_image
        share = proposal / training
        verdict = "under 5%: holds" if share < 0.05 else "over 5%: FAILS"
        print(
            f"{name:>5}: n_ac={n_ac} x n_epochs={n_epochs} x {images} images ~ {training / 3600:.2f} h of training; "
            f"proposal step = {100 * share:.2f}% of it ({verdict})"
        )


if __name__ == "__main__":
    main()
