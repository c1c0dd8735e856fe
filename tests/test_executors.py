"Executors (nash_lit.executors): one search, the same log in this process, in a spawn pool and on a Dask LocalCluster; dead workers."

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import cloudpickle
import pytest

from nash_lit.arch import seed_arch
from nash_lit.data import DataSpec
from nash_lit.executors import Dask, InProcess, Pool, collect, make_executor, open_executor
from nash_lit.training import TrainConfig
import nash_lit.hill_climbing as N
import nash_lit.pareto_async as P  # where pareto_nash, which runs either strategy, lives

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Dask workers do not have tests/ on their path

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: this process trains with the workers' 1 thread

TRAIN = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)
SPEC = DataSpec.synthetic(n_train=64, n_val=32, n_test=16, seed=0)
NASH = N.NashConfig(n_steps=1, n_child=2, n_op=2, n_epochs=1, seed_epochs=1, calib_size=16, train=TRAIN)
PARETO = P.ParetoConfig(
    n_gen=1, n_pc=4, n_ac=2, n_epochs=1, seed_epochs=1, recovery_epochs=1, calib_size=16, train=TRAIN
)
P0 = [seed_arch((16, 16, 16)), seed_arch((16, 32, 32))]
COLUMNS = ("id", "step", "child", "generation", "parent", "ops", "arch", "status", "val_error", "objectives", "error")


def run_nash(executor, run_dir):
    return N.nash(seed_arch((4, 8, 8)), SPEC, NASH, run_dir=run_dir, executor=executor, progress=False)


def run_pareto(executor, run_dir):
    return P.pareto_nash(P0, SPEC, PARETO, run_dir=run_dir, executor=executor, progress=False)


def text(value) -> str:
    "A log cell as text; a missing value (None or NaN, as pandas has it) as 'None'."
    return "None" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def summary(result):
    "The log without timings, as plain rows sorted by id."
    log = result.log.sort_values("id")
    return [tuple(text(row[c]) for c in COLUMNS if c in log.columns) for _, row in log.iterrows()]


def nash_result(result):
    return (result.id, result.val_error, result.paper_id, result.paper_val_error, summary(result))


def pareto_result(result):
    return (sorted((m.id, m.val_error) for m in result.front), result.hypervolume, summary(result))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "Both searches in this process."
    where = tmp_path_factory.mktemp("inprocess")
    return nash_result(run_nash(None, where / "nash")), pareto_result(run_pareto(None, where / "pareto"))


def test_names():
    with open_executor("inprocess") as here:
        assert isinstance(here, InProcess)
    mine = InProcess()
    with open_executor(mine) as same:
        assert same is mine
    with pytest.raises(ValueError, match="executor 'processes:0'"):
        make_executor("processes:0")
    with pytest.raises(ValueError, match="executor 'gpus:2'"):  # a search refuses a wrong name before anything trains
        run_nash("gpus:2", None)


@pytest.mark.parametrize("name", ["processes:2", "dask:local:2"])
def test_same_search_on_every_executor(name, reference, tmp_path):
    "NASH and Pareto-NASH give the same log and result here, in 2 spawned processes and on a Dask LocalCluster(2)."
    with open_executor(name) as executor:
        assert isinstance(executor, Pool if name.startswith("processes") else Dask)
        got = (
            nash_result(run_nash(executor, tmp_path / "nash")),
            pareto_result(run_pareto(executor, tmp_path / "pareto")),
        )
        loads = {executor.submit(loaded_data, SPEC).result() for _ in range(6)}
    assert got[0] == reference[0]
    assert got[1] == reference[1]
    pids = [pid for pid, _ in loads]
    assert len(pids) == len(set(pids)), f"a worker loaded its data more than once: {loads}"
    if name.startswith("processes"):  # made from a name, closed on leaving
        with pytest.raises(RuntimeError):
            executor.submit(pow, 2, 2).result()


def test_a_search_takes_an_executor_by_name_and_closes_it(reference, tmp_path, monkeypatch):
    "nash(..., executor='processes:1') makes the pool, gives the in-process result, and shuts the pool down."
    import nash_lit.executors as X

    made = []
    real = X.make_executor
    monkeypatch.setattr(X, "make_executor", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    assert nash_result(run_nash("processes:1", tmp_path / "nash")) == reference[0]
    assert len(made) == 1 and isinstance(made[0], Pool)
    with pytest.raises(RuntimeError):
        made[0].submit(pow, 2, 2).result()  # closed by the search


def torch_threads():
    import torch

    return torch.get_num_threads()


@pytest.mark.parametrize("name", ["processes:1", "dask:local:1"])
def test_workers_are_pinned_to_their_threads(name):
    "A worker trains with the threads it was given, not with its machine's cores or Dask's default of one."
    with open_executor(name, threads=2) as executor:
        assert executor.submit(torch_threads).result() == 2


def loaded_data(spec):
    "(this worker's pid, the id of the data it holds for `spec`): one id per worker when the data is loaded once."
    return os.getpid(), id(spec.load("cpu"))


class Killing:
    "Submits through `inner`; child 1 of step 1 kills its own worker process (SIGKILL) the first `times` times it starts."

    def __init__(self, inner, folder, times):
        self.inner, self.folder, self.times = inner, str(folder), times

    def submit(self, fn, task):
        return self.inner.submit(die_then, fn, task, self.folder, self.times)


def die_then(fn, task, folder, times):
    "Kill this process in the middle of the victim's child (its first `times` attempts), else run fn(task)."
    if task.n_op and task.rng[1:3] == [1, 1]:
        tries = sorted(Path(folder).glob("try_*"))
        if len(tries) < times:
            (Path(folder) / f"try_{len(tries)}").touch()
            os.kill(os.getpid(), signal.SIGKILL)
    return fn(task)


@pytest.fixture(scope="module")
def pool():
    with Pool(2) as pool:
        yield pool


def test_pool_retries_a_child_whose_worker_died(pool, reference, tmp_path):
    "Killed once, the child is trained again: the search is the one that nothing killed."
    result = run_nash(Killing(pool, tmp_path, times=1), tmp_path / "run")
    assert len(list(tmp_path.glob("try_*"))) == 1
    assert nash_result(result) == reference[0]


def test_pool_logs_a_child_killed_twice_as_failed(pool, reference, tmp_path):
    "Killed on its retry too, the child is failed, with the reason; the others are trained as ever."
    result = run_nash(Killing(pool, tmp_path, times=2), tmp_path / "run")
    assert len(list(tmp_path.glob("try_*"))) == 2
    log = result.log.set_index("id")
    victim = log[(log.step == 1) & (log.child == 1)].iloc[0]
    assert victim.status == "failed" and "WorkerDied" in victim.error and "died" in victim.error
    want = {row[0]: row for row in reference[0][4]}
    others = [row for row in summary(result) if row[0] != str(victim.name)]
    assert len(others) == 2 and all(row == want[row[0]] for row in others)


def test_pool_survives_a_death_between_plain_calls(pool, tmp_path):
    "Futures of other calls in flight when a worker dies are resubmitted; the pool takes new work after."
    futures = {k: pool.submit(pow, k, 2) for k in range(3)}
    futures["victim"] = pool.submit(die_then, len, DieAlways(), str(tmp_path), 1)
    got = {k: f.result() for k, f in collect(futures)}
    assert got == {0: 0, 1: 1, 2: 4, "victim": 0}
    assert pool.submit(pow, 5, 2).result() == 25


class DieAlways:
    "Stands for the victim's task: n_op and rng say child 1 of step 1."

    n_op, rng = 1, [0, 1, 1, 0]

    def __len__(self):
        return 0


def test_dask_retries_a_child_whose_worker_died(reference, tmp_path):
    "On a LocalCluster the scheduler reschedules the child of a dead worker once, then reports KilledWorker."
    with open_executor("dask:local:2") as dask:
        for folder in ("once", "twice"):
            (tmp_path / folder).mkdir()
        once = run_nash(Killing(dask, tmp_path / "once", times=1), tmp_path / "once_run")
        assert nash_result(once) == reference[0]
        twice = run_nash(Killing(dask, tmp_path / "twice", times=2), tmp_path / "twice_run")
    log = twice.log
    victim = log[(log.step == 1) & (log.child == 1)].iloc[0]
    assert victim.status == "failed" and "KilledWorker" in victim.error
    assert (log[log.id != victim.id].status == "ok").all()


SCRIPT_BODY = """from nash_lit import NashConfig, TrainConfig, nash, seed_arch
from nash_lit.data import synthetic

train = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)
config = NashConfig(n_steps=1, n_child=2, n_op=1, n_epochs=1, seed_epochs=1, calib_size=16, train=train)
"""
SEARCH = 'nash(seed_arch((4, 8, 8)), synthetic(64, 32, 16, seed=0), config, executor="EXECUTOR", progress=False)'


@pytest.mark.parametrize("executor", ["processes:2", "dask:local:2"])
def test_a_script_without_the_main_guard_is_refused_before_any_worker_starts(tmp_path, executor):
    "Issue 23: the README's executor in a plain script; the error is the last line, with the fix; no run folder made."
    script = tmp_path / "search.py"
    script.write_text(SCRIPT_BODY + "result = " + SEARCH.replace("EXECUTOR", executor) + "\n")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()
    line = len(SCRIPT_BODY.splitlines()) + 1  # the search
    assert last[-3].startswith("RuntimeError: ") and f"line {line} starts the search" in last[-3], r.stderr[-2000:]
    assert last[-2:] == ['    if __name__ == "__main__":', "        ...  # the search, indented"]
    assert "WorkerDied" not in r.stderr and list(temp.iterdir()) == [], "no worker ran, no run folder was made"


def test_a_script_with_the_main_guard_runs(tmp_path):
    script = tmp_path / "search.py"
    guarded = 'if __name__ == "__main__":\n    print(' + SEARCH.replace("EXECUTOR", "processes:2") + ")\n"
    script.write_text(SCRIPT_BODY + guarded)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("NashResult("), r.stderr[-2000:]
