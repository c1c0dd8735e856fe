"A smoke-scale Pareto-NASH run, as a subprocess of tests/test_pareto.py: python _pareto_run.py RUN_DIR SEED OUT.json."

import json
import sys
from pathlib import Path

import torch

from nash_lit.arch import seed_arch
from nash_lit.data import synthetic
from nash_lit import ParetoConfig, pareto_nash
from nash_lit.training import TrainConfig
from _helpers import fingerprint

torch.set_num_threads(1)  # deterministic and light on a shared machine

P0 = [seed_arch((16, 16, 16)), seed_arch((16, 32, 32)), seed_arch((16, 32, 32), separable=True)]


def config(seed: int) -> ParetoConfig:
    return ParetoConfig(
        n_gen=3,
        n_pc=8,
        n_ac=3,
        n_epochs=1,
        seed_epochs=1,
        recovery_epochs=1,
        calib_size=16,
        seed=seed,
        train=TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False),
    )


def main(run_dir: str, seed: int, out: str):
    data = synthetic(96, 48, 16, seed=0)
    resume = (Path(run_dir) / "config.json").exists()  # killed before its config was written: nothing to resume
    result = pareto_nash(P0, data, config(seed), run_dir=run_dir, resume=resume, progress=False)
    front = [
        dict(
            id=m.id,
            val_error=m.val_error,
            objectives=list(m.objectives),
            arch=m.net.arch.to_json(),
            weights=fingerprint(m.net),
        )
        for m in result.front
    ]
    with open(out, "w") as f:
        json.dump(dict(front=front, hypervolume=result.hypervolume), f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
