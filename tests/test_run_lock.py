"""One search per run folder (issue 22): a second search on a live folder fails at once, naming the folder and the
process; the first finishes with a valid log; a killed search leaves no lock and no live worker."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from nash_lit.arch import seed_arch
from nash_lit.data import synthetic
from nash_lit.hill_climbing import NashConfig, nash
from nash_lit.runs import RunBusy, hold_run, read_records
from nash_lit.training import TrainConfig
from _helpers import finish, start_script

SCRIPT = Path(__file__).with_name("_nash_run.py")  # a smoke NASH search: python _nash_run.py RUN_DIR SEED OUT.json
TRAIN = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def wait_for(path: Path, proc, timeout: float = 120):
    "Wait until `path` exists (the search has opened its folder) while `proc` runs."
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < end, f"{path} did not appear"
        time.sleep(0.05)


def second_search(run_dir, resume):
    return nash(
        seed_arch((4, 8, 8)),
        synthetic(128, 64, 32, seed=0),
        NashConfig(n_steps=3, n_child=3, n_op=2, n_epochs=1, seed_epochs=1, calib_size=32, seed=0, train=TRAIN),
        run_dir=run_dir,
        resume=resume,
        progress=False,
    )


def valid_log(run_dir):
    ids = [r["id"] for r in read_records(run_dir)]
    return len(ids) == len(set(ids)) == 1 + 3 * 3  # the seed and 3 steps of 3 children, each once


def test_a_second_search_on_a_live_folder_fails_at_once(tmp_path):
    "A start and a resume on the folder of a running search: each refused before anything trains; the first finishes."
    run = tmp_path / "run"
    first = start_script(SCRIPT, run, 0, tmp_path / "first.json")
    wait_for(run / "config.json", first)
    for resume in (False, True):
        t0 = time.time()
        with pytest.raises(RunBusy) as e:
            second_search(run, resume)
        assert time.time() - t0 < 30, "refused at once, not after training"
        assert str(run) in str(e.value) and f"process {first.pid}" in str(e.value), str(e.value)
    finish(first)
    assert valid_log(run)
    assert json.loads((tmp_path / "first.json").read_text())["step"] == 2  # the last of steps 0, 1, 2


def test_two_starts_at_once_one_runs_and_the_other_is_refused(tmp_path):
    run = tmp_path / "run"
    procs = [start_script(SCRIPT, run, 0, tmp_path / f"out{k}.json") for k in range(2)]
    errors = [p.communicate(timeout=300)[1].decode() for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, errors
    refused = errors[[p.returncode for p in procs].index(codes[1])]
    assert "RunBusy" in refused and str(run) in refused, refused[-2000:]
    assert valid_log(run)


def test_a_killed_search_leaves_no_lock(tmp_path):
    "SIGKILL frees the folder at once: the resume runs to the end."
    run = tmp_path / "run"
    proc = start_script(SCRIPT, run, 0, tmp_path / "killed.json")
    wait_for(run / "config.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = second_search(run, resume=True)
    assert result.step == 2 and valid_log(run)


def test_hold_run_in_one_process_and_a_file_for_a_folder(tmp_path):
    with hold_run(tmp_path / "run"):
        with pytest.raises(RunBusy, match=f"process {os.getpid()}"):
            with hold_run(tmp_path / "run", resume=True):
                pass
    with hold_run(tmp_path / "run", resume=True):  # released when the block ended
        pass
    assert list((tmp_path / "run").iterdir()) == [], "the lock writes nothing into the run folder"
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file; name a folder"):
        with hold_run(tmp_path / "file"):
            pass
    with pytest.raises(NotADirectoryError, match=r"run_dir .*file/sub, inside .*file, which is a file; name a folder"):
        with hold_run(tmp_path / "file" / "sub"):
            pass


def children(pid: int) -> list:
    "Process ids whose parent is `pid` (Linux: /proc)."
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


POOL_SCRIPT = """
import sys, time
from pathlib import Path
from nash_lit.executors import make_executor


def busy(path):  # a long task that says when it has started
    Path(path).write_text("started")
    time.sleep(120)


if __name__ == "__main__":
    executor = make_executor(sys.argv[1])
    futures = [executor.submit(busy, f"{sys.argv[2]}/started{k}") for k in range(2)]
    time.sleep(120)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("executor", ["processes:2", "dask:local:2"])
def test_a_killed_search_leaves_no_live_worker(tmp_path, executor):
    "SIGKILL the process whose two workers are busy: the workers and the resource tracker end within 5 s."
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    proc = start_script(script, executor, tmp_path)
    end = time.time() + 180
    while not all((tmp_path / f"started{k}").exists() for k in range(2)):  # both workers inside their long task
        assert proc.poll() is None and time.time() < end, proc.stderr.read().decode()[-3000:]
        time.sleep(0.1)
    workers = children(proc.pid)  # the two workers and multiprocessing's resource tracker
    assert len(workers) >= 3, workers
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    end = time.time() + 5
    while any(alive(pid) for pid in workers) and time.time() < end:
        time.sleep(0.1)
    left = {pid: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2] for pid in workers if alive(pid)}
    assert not left, f"processes of the killed search still alive after 5 s (state, parent): {left}"
