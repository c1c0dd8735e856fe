"A smoke-scale NASH search, run as a subprocess by tests/test_nash.py: python _nash_run.py RUN_DIR SEED OUT.json."

import json
import sys
from pathlib import Path

import torch

from nash_lit.arch import seed_arch
from nash_lit.hill_climbing import NashConfig, nash
from nash_lit.data import synthetic
from nash_lit.training import TrainConfig
from _helpers import fingerprint

torch.set_num_threads(1)  # deterministic and light on a shared machine


def config(seed: int) -> NashConfig:
    return NashConfig(
        n_steps=3,
        n_child=3,
        n_op=2,
        n_epochs=1,
        seed_epochs=1,
        calib_size=32,
        seed=seed,
        train=TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False),
    )


def main(run_dir: str, seed: int, out: str):
    data = synthetic(128, 64, 32, seed=0)
    resume = (Path(run_dir) / "config.json").exists()  # killed before its config was written: nothing to resume
    result = nash(seed_arch((4, 8, 8)), data, config(seed), run_dir=run_dir, resume=resume, progress=False)
    with open(out, "w") as f:
        json.dump(
            dict(
                id=result.id,
                step=result.step,
                val_error=result.val_error,
                arch=result.arch.to_json(),
                weights=fingerprint(result.net),
            ),
            f,
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
