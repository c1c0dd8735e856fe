"""Throughput of nash_lit.training against a plain DataLoader + torchvision pipeline.

Both pipelines train the same network (one initialisation, copied) at the same batch size with the
same optimiser, on the same images, alternating within this one process so that load from other
processes hits both alike. Prints images/s of each round, the medians and their ratio.

    python tests/benchmarks/bench_train.py                      # real CIFAR-10 when found, else synthetic
    NASH_LIT_DATA=/path/to/cifar10 python tests/benchmarks/bench_train.py --images 10240 --rounds 3
    python tests/benchmarks/bench_train.py --fp32               # also ours without bf16 / channels-last

Not collected by pytest (the name does not start with test_).
"""

import argparse
import copy
import os
import statistics
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from nash_lit.arch import Net, seed_arch
from nash_lit.data import cifar10, synthetic
from nash_lit.training import TrainConfig, train


class PlainCIFAR(Dataset):
    "The textbook pipeline: one PIL image at a time through torchvision transforms."

    def __init__(self, x, y, mean, std):
        self.images, self.labels = x.permute(0, 2, 3, 1).numpy(), y.numpy()  # HWC uint8, as torchvision's CIFAR10
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(mean, std),
            ]
        )

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def plain_epoch(net, loader, cfg):
    "One epoch of a plain training loop (fp32, default memory layout); returns images/s."
    opt = torch.optim.SGD(
        net.parameters(), lr=cfg.lr_max, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=len(loader))
    net.train()
    seen, start = 0, time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=10240, help="training images per round")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per pipeline (after one warm-up each)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain pipeline")
    ap.add_argument("--fp32", action="store_true", help="also time our pipeline without bf16 and channels-last")
    ap.add_argument("--synthetic", action="store_true", help="use synthetic data even when CIFAR-10 is found")
    args = ap.parse_args()

    try:
        if args.synthetic:
            raise FileNotFoundError
        data, source = (
            cifar10(device="cpu", train_size=args.images, val_subset=1000, test_size=0, download=False),
            "CIFAR-10",
        )
    except FileNotFoundError:
        data, source = synthetic(args.images, 1000, 0), "synthetic"
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, device="cpu", progress=False)
    amp, cl = cfg.speedups(torch.device("cpu"))
    mean, std = data.mean.tolist(), data.std.tolist()
    loader = DataLoader(
        PlainCIFAR(data.x_train, data.y_train, mean, std),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    torch.manual_seed(0)
    init = Net(seed_arch())
    print(
        f"{source}: {len(data.y_train):,} images/round, batch {args.batch_size}, seed network "
        f"{sum(p.numel() for p in init.parameters()):,} params, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; ours: bf16 autocast={amp}, "
        f"channels_last={cl}, crop+flip+cutout+mixup; plain: DataLoader(num_workers={args.workers}), "
        f"RandomCrop(32, 4)+RandomHorizontalFlip+ToTensor+Normalize, fp32"
    )
    # a third pipeline separates the data path from the arithmetic: ours in fp32 and the default layout
    fp32 = replace(cfg, amp=False, channels_last=False)
    ours, ours32, plain = [], [], []
    for r in range(args.rounds + 1):  # round 0 warms all up and is not counted
        o = train(copy.deepcopy(init), data, cfg)[0]["img_s"]
        p = plain_epoch(copy.deepcopy(init), loader, cfg)
        o32 = train(copy.deepcopy(init), data, fp32)[0]["img_s"] if args.fp32 else float("nan")
        if r:
            ours.append(o)
            plain.append(p)
            ours32.append(o32)
        print(
            f"round {r}{' (warm-up)' if not r else ''}: ours {o:7.0f} img/s   plain {p:7.0f} img/s   "
            f"ratio {o / p:.2f}" + (f"   (ours fp32, NCHW: {o32:.0f} img/s, {o32 / p:.2f}x)" if args.fp32 else ""),
            flush=True,
        )
    mo, mp = statistics.median(ours), statistics.median(plain)
    print(
        f"median: ours {mo:.0f} img/s, plain {mp:.0f} img/s, ratio {mo / mp:.2f}x"
        + (
            f"; ours fp32 NCHW {statistics.median(ours32):.0f} img/s, {statistics.median(ours32) / mp:.2f}x"
            if args.fp32
            else ""
        )
    )


if __name__ == "__main__":
    main()
