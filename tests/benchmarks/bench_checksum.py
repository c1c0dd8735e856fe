"""What the run store's checksums cost: per checkpoint, the SHA-256 of its content beside the save and the load.

    .venv/bin/python tests/benchmarks/bench_checksum.py [--repeats 20]

Not collected by pytest (plain script). For the cpu profile's networks (Table 1's seed, the four Pareto-NASH seeds)
and one of about 5M parameters, prints the median wall time of computing a checkpoint's checksum, of a whole
`save_checkpoint` (checksum, serialisation, fsync, rename) and of a whole `load_checkpoint` (read, checksum verified,
network built), each timed in the same run, interleaved, on one thread.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nash_lit.arch import PARETO_SEEDS, Net, n_params, seed_arch
from nash_lit.store import checkpoint_checksum, load_checkpoint, save_checkpoint

NETWORKS = {
    "Table 1 seed (cpu)": seed_arch((32, 64, 128)),
    **{f"Pareto seed {name}": seed_arch(**kw) for name, kw in PARETO_SEEDS.items()},
    "5M parameters": seed_arch((256, 512, 1024)),
}


def main(repeats: int):
    torch.set_num_threads(1)
    print(f"{'network':<22} {'params':>10} {'file':>9} {'checksum':>9} {'save':>9} {'load':>9}  checksum/save")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "n.pt"
        for name, arch in NETWORKS.items():
            net = Net(arch)
            blob = {"arch": arch.to_json(), "state": dict(net.state_dict()), "meta": {"step": 1}}
            times = {"checksum": [], "save": [], "load": []}
            for _ in range(repeats):
                for what, fn in (
                    ("checksum", lambda: checkpoint_checksum(blob)),
                    ("save", lambda: save_checkpoint(path, net, step=1)),
                    ("load", lambda: load_checkpoint(path)),
                ):
                    start = time.perf_counter()
                    fn()
                    times[what].append(time.perf_counter() - start)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            size = path.stat().st_size / 2**20
            print(
                f"{name:<22} {n_params(arch):>10,} {size:>7.2f}MB {med['checksum']:>7.2f}ms {med['save']:>7.2f}ms "
                f"{med['load']:>7.2f}ms  {med['checksum'] / med['save']:.0%}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    main(parser.parse_args().repeats)
