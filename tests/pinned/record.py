"""Recorded tests/pinned/{nash,random_search,pareto,pareto_async}.json with the code of commit 1590f1a (before the
search-loop refactor), each pin run by tests/_pinned_run.py in its pin environment, twice (the second time with the
caller asking for other kernel levels, which the pin overrides or does not use) and kept only if both runs agree:

    git worktree add --detach /tmp/pre 1590f1a
    python tests/pinned/record.py /tmp/pre

Kept for provenance: it records from the package in the folder it is given (its nash_lit/ must be that commit's)."""

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))
from _pinned_run import CAPABILITY, PIN_ENV, PINS, RECORDED_WITH, start  # noqa: E402

COMPARED = ("records", "evaluated", "result")
OTHER_LEVELS = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": "SSE41"}


def check_source(root: Path):
    "The package in `root` is commit RECORDED_WITH's, unchanged."
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout
    assert head.startswith(RECORDED_WITH), f"{root} is at {head.strip()}, not {RECORDED_WITH}"
    changed = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", "nash_lit"], capture_output=True, text=True, check=True
    ).stdout
    assert not changed, f"{root}/nash_lit differs from {RECORDED_WITH}:\n{changed}"


def run(name: str, base: dict, out: Path) -> dict:
    proc = start(name, out, base)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.read_text())


def main(root: str):
    root = Path(root).resolve()
    check_source(root)
    base = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(2) as pool:  # two runs at a time, one thread each
        jobs = {
            (name, k): pool.submit(run, name, env, Path(tmp) / f"{name}_{k}.json")
            for name in PINS
            for k, env in enumerate((base, {**base, **OTHER_LEVELS}))
        }
        for name in PINS:
            first, second = jobs[name, 0].result(), jobs[name, 1].result()
            for got in (first, second):
                assert got["run"]["package"] == str(root / "nash_lit"), got["run"]["package"]
                assert got["run"]["capability"] == CAPABILITY, got["run"]["capability"]
                assert all(got["run"]["environment"][k] == v for k, v in PIN_ENV.items()), got["run"]["environment"]
            assert all(first[k] == second[k] for k in COMPARED), f"{name}: the two runs differ"
            pinned = {k: v for k, v in first.items() if k != "run"}
            pinned["recorded"] = {k: first["run"][k] for k in ("torch", "cpu", "capability", "seconds")}
            (TESTS / "pinned" / f"{name}.json").write_text(json.dumps(pinned, indent=1) + "\n")
            print(
                f"{name}: {len(first['records'])} records, {len(first['evaluated'])} tasks, "
                f"{first['run']['seconds']:.1f} s and {second['run']['seconds']:.1f} s"
            )


if __name__ == "__main__":
    main(sys.argv[1])
