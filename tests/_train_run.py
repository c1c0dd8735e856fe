"A training with epoch checkpoints, run as a subprocess by tests/test_train.py: python _train_run.py CHECKPOINT|- OUT.json."

import json
import sys

import torch

from nash_lit.arch import Net, seed_arch
from nash_lit.data import synthetic
from nash_lit.training import TrainConfig, train
from _helpers import fingerprint

torch.set_num_threads(1)
CONFIG = TrainConfig(epochs=8, batch_size=32, lr_max=0.1, amp=False, channels_last=False, device="cpu", progress=False)


def main(checkpoint: str, out: str):
    data = synthetic(1024, 64, 32, seed=0, device="cpu")
    torch.manual_seed(0)
    net = Net(seed_arch((8, 16, 32)))
    history = train(net, data, CONFIG, checkpoint=None if checkpoint == "-" else checkpoint)
    with open(out, "w") as f:
        json.dump(
            dict(
                weights=fingerprint(net),
                epochs=[h["epoch"] for h in history],
                val_errors=[h["val_error"] for h in history],
            ),
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
