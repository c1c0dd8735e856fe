"""Training throughput of the Table 2 baselines (MobileNet V1, NASNet-A) on this machine.

Each network of Table 2's sizes trains for one epoch through `nash_lit.training.train` (batch 128, the default
augmentation, bf16 autocast and channels-last where the device supports them) on synthetic 32x32 images, after a
one-batch warm-up. Prints images/s and what one epoch of CIFAR-10's 50,000 training images would take.

    python tests/benchmarks/bench_baselines.py                 # all eight Table 2 sizes, 256 images each
    python tests/benchmarks/bench_baselines.py --images 1024 --names mobilenet-1 nasnet-6@768 --device cuda

Not collected by pytest (the name does not start with test_).
"""

import argparse
import time

import torch

from nash_lit.arch import n_params
from nash_lit.baselines import baseline
from nash_lit.data import default_device, synthetic
from nash_lit.training import TrainConfig, train

TABLE2 = (
    "mobilenet-0.1",
    "mobilenet-0.25",
    "mobilenet-0.5",
    "mobilenet-1",
    "nasnet-2@96",
    "nasnet-4@192",
    "nasnet-6@384",
    "nasnet-6@768",
)  # the N@F nearest each Table 2 NASNet row
EPOCH = 50_000  # CIFAR-10's training images


def throughput(name: str, images: int, config: TrainConfig) -> float:
    "Images/s of one training epoch of `images` synthetic images, after a one-batch warm-up."
    torch.manual_seed(0)
    net = baseline(name)
    train(net, synthetic(config.batch_size, 0, 0), config)  # warm-up: allocator, kernels, autocast caches
    history = train(net, synthetic(images, 0, 0), config)
    return history[-1]["img_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=256, help="training images timed per network")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--names", nargs="+", default=TABLE2, help="registry names (nash_lit.baselines.BASELINES)")
    ap.add_argument("--device", default=None, help="default: CUDA if available, else CPU")
    args = ap.parse_args()

    device = default_device(args.device)
    config = TrainConfig(epochs=1, batch_size=args.batch_size, device=str(device), progress=False, eval_every=0)
    amp, channels_last = config.speedups(device)
    print(
        f"device {device}, {torch.get_num_threads()} threads, bf16 autocast {amp}, channels-last {channels_last}, "
        f"batch {args.batch_size}, {args.images} images timed per network"
    )
    print(f"{'network':<16}{'params':>11}{'img/s':>9}{'s / 50k epoch':>15}{'h / 600 epochs':>16}")
    start = time.perf_counter()
    for name in args.names:
        with torch.device("meta"):
            params = n_params(baseline(name))
        img_s = throughput(name, args.images, config)
        print(f"{name:<16}{params:>11,}{img_s:>9.1f}{EPOCH / img_s:>15.0f}{600 * EPOCH / img_s / 3600:>16.1f}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
