"A smoke-scale NSGA-II peer, run as a subprocess by tests/test_peers.py: python _peer_run.py RUN_DIR OUT.json."

import json
import sys
from pathlib import Path

import torch

from nash_lit import TrainConfig, synthetic
from nash_lit.peers import PeerConfig, nsga2

torch.set_num_threads(1)  # deterministic and light on a shared machine

CONFIG = PeerConfig(
    n_steps=3,
    population=4,
    n_epochs=1,
    seed=3,
    widths=(16, 24, 32),
    train=TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False),
)


def main(run_dir: str, out: str):
    resume = (Path(run_dir) / "config.json").exists()  # killed before its config was written: nothing to resume
    result = nsga2(synthetic(64, 32, 16, seed=0), CONFIG, run_dir=run_dir, resume=resume, progress=False)
    keep = ("id", "step", "child", "trial", "choices", "arch", "status", "val_error", "objectives", "train_images")
    records = [{k: r.get(k) for k in keep} for r in result.log.to_dict("records")]
    with open(out, "w") as f:
        json.dump(
            dict(
                records=sorted(records, key=lambda r: r["id"]),
                front=[m.id for m in result.front],
                hypervolume=result.hypervolume,
            ),
            f,
            default=str,
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
