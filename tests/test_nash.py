"NASH (nash_lit.nash): kill-and-resume, failures as data, invalid configs, refused resumes of damaged runs, ids."
import json
import random
import signal
import time
from pathlib import Path

import pytest
import torch

import nash_lit.evaluate as E
import nash_lit.nash as N
import nash_lit.runs as R
from nash_lit.arch import Arch, seed_arch
from nash_lit.runs import RunDamaged, load_checkpoint, read_log, read_records
from nash_lit.data import synthetic
from nash_lit.train import TrainConfig, TrainingDiverged
from _helpers import finish, log_lines, start_script

SCRIPT = Path(__file__).with_name("_nash_run.py")
TRAIN = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)


def small_config(**changes):
    base = dict(n_steps=2, n_child=3, n_op=2, n_epochs=1, seed_epochs=1, calib_size=16, train=TRAIN)
    return N.NashConfig(**{**base, **changes})


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    return synthetic(64, 32, 32, seed=0)


def start(run_dir, seed, out): return start_script(SCRIPT, run_dir, seed, out)


def check_run(run_dir, n_steps=3, n_child=3):
    "The log and checkpoints parse; every child is there exactly once."
    records = read_records(run_dir)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), f"duplicated children: {sorted(ids)}"
    assert sorted((r["step"], r["child"]) for r in records) == \
        [(0, 0)] + [(s, j) for s in range(1, n_steps + 1) for j in range(n_child)]
    for r in records:
        assert r["status"] == "ok", r
        Arch.from_json(r["arch"])
    for p in Path(run_dir).glob("*.pt"): load_checkpoint(p)
    assert not list(Path(run_dir).glob("child_*.pt")), "a finished run keeps no children's checkpoints"
    assert len(read_log(run_dir)) == len(records)


def test_kill_and_resume(tmp_path):
    "SIGKILL a search at random moments, resume it each time: the result equals an uninterrupted run."
    seed = 3
    reference = start(tmp_path / "ref", seed, tmp_path / "ref.json")
    rnd = random.Random()
    run, kills = tmp_path / "killed", 0
    for after in (1, 3, 6):  # log lines to wait for before killing, then a random delay
        proc = start(run, seed, tmp_path / "killed.json")
        deadline = time.monotonic() + 240
        while proc.poll() is None and log_lines(run) < after and time.monotonic() < deadline: time.sleep(0.02)
        time.sleep(rnd.uniform(0, 0.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL); kills += 1
        proc.communicate(timeout=60)
        read_records(run)  # the log parses after every kill (a torn last line is ignored)
    finish(start(run, seed, tmp_path / "killed.json"))
    finish(reference)
    assert kills >= 1
    check_run(run); check_run(tmp_path / "ref")
    got, want = (json.loads((tmp_path / f).read_text()) for f in ("killed.json", "ref.json"))
    assert got == want
    # resuming a finished run trains nothing and returns the same
    n = log_lines(run)
    finish(start(run, seed, tmp_path / "again.json"))
    assert log_lines(run) == n and json.loads((tmp_path / "again.json").read_text()) == want


def test_torn_last_line_is_repaired(tmp_path, data, monkeypatch):
    "A crash mid-write leaves half a line: resume ignores it, truncates it, redoes that child and goes on."
    config = small_config(n_steps=1)
    reference = N.nash(seed_arch((4, 8, 8)), data, config, run_dir=tmp_path / "ref")
    real, calls = R.append_record, []
    def crash_on_fourth(run_dir, record):
        calls.append(record["id"])
        if len(calls) < 4: return real(run_dir, record)
        with open(Path(run_dir) / "log.jsonl", "ab") as f: f.write(json.dumps(record).encode()[:40])
        raise SystemExit("killed mid-write")
    monkeypatch.setattr(R, "append_record", crash_on_fourth)
    with pytest.raises(SystemExit): N.nash(seed_arch((4, 8, 8)), data, config, run_dir=tmp_path / "run")
    monkeypatch.setattr(R, "append_record", real)
    with pytest.raises(json.JSONDecodeError): json.loads((tmp_path / "run/log.jsonl").read_text().splitlines()[-1])
    again = N.nash(seed_arch((4, 8, 8)), data, config, run_dir=tmp_path / "run", resume=True)
    assert (again.id, again.val_error, again.arch) == (reference.id, reference.val_error, reference.arch)
    assert [r["id"] for r in read_records(tmp_path / "run")] == [0, 1, 2, 3]
    assert (tmp_path / "run/log.jsonl").read_text().endswith("\n")


def _failing_train(failures):
    "A stand-in for `train` that raises failures[train seed] for chosen children, and trains the rest."
    real = E.train
    def fake(net, data, config, **kwargs):
        if config.seed in failures: raise failures[config.seed]
        return real(net, data, config, **kwargs)
    return fake


def test_failed_child_is_data(tmp_path, data, monkeypatch):
    "A diverged, an out-of-memory and a crashing child are logged; the search continues with the others."
    seed = lambda step, j: N.child_seeds(0, step, j)[1]
    monkeypatch.setattr(E, "train", _failing_train({
        seed(1, 0): TrainingDiverged("loss became nan"), seed(1, 1): RuntimeError("CUDA out of memory. Tried"),
        seed(2, 2): KeyError("boom")}))
    result = N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path)
    log = read_log(tmp_path).set_index("id")
    assert list(log.status) == ["ok", "diverged", "oom", "ok", "ok", "ok", "failed"]
    assert "loss became nan" in log.error[1] and "boom" in log.error[6]
    assert log.parent[4] == 3  # step 2 climbed from the only child of step 1 that trained
    assert result.step == 2 and result.id in (4, 5)


def test_all_children_failing_is_a_clear_error(tmp_path, data, monkeypatch):
    monkeypatch.setattr(E, "train", _failing_train({N.child_seeds(0, 1, j)[1]: TrainingDiverged("nan") for j in range(3)}))
    with pytest.raises(N.SearchFailed, match="all 3 children of step 1 failed"):
        N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path)
    assert [r["status"] for r in read_records(tmp_path)] == ["ok", "diverged", "diverged", "diverged"]


@pytest.mark.parametrize("changes, message", [
    (dict(n_child=0), "n_child must be >= 1"),
    (dict(n_op=0), "n_op must be >= 1"),
    (dict(budget_seconds=-5), "budget_seconds must be >= 0"),
    (dict(n_epochs=-1), "n_epochs must be >= 0"),
    (dict(seed_epochs=-1), "seed_epochs must be >= 0"),
    (dict(n_steps=-1), "n_steps must be >= 0"),
    (dict(n_steps=None), "needs a budget"),
    (dict(operators=("deeper", "narrower")), "unknown operator 'narrower'"),
    (dict(operators=()), "operator set is empty"),
    (dict(n_op=2.5), r"n_op must be an int, got 2\.5 \(float\)"),
    (dict(n_steps=2.0), r"n_steps must be an int \(or None"),
    (dict(budget_seconds="1h"), r"budget_seconds must be a number of seconds"),
    *[(dict([(name, value)]), rf"{name} must be an int, got {value!r}")
      for name in N.INT_FIELDS if name != "n_steps" for value in (1.5, True, "3")],
])
def test_invalid_config_fails_before_training(changes, message, monkeypatch):
    monkeypatch.setattr(E, "train", lambda *a, **k: pytest.fail("trained before validating"))
    with pytest.raises(ValueError, match=message):
        N.nash(seed_arch((4, 8, 8)), None, small_config(**changes))


def test_numpy_integers_are_stored_as_ints():
    import numpy as np
    config = small_config(n_child=np.int64(3), seed=np.int32(1))
    assert type(config.n_child) is int and type(config.seed) is int and json.dumps(config.to_dict(), default=str)


def test_resume_with_other_config_fails(tmp_path, data):
    N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=0), run_dir=tmp_path)
    with pytest.raises(FileExistsError, match="resume=True"):
        N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=0), run_dir=tmp_path)
    with pytest.raises(ValueError, match="n_op"):
        N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=0, n_op=3), run_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="seed_arch"):
        N.nash(seed_arch((4, 8, 16)), data, small_config(n_steps=0), run_dir=tmp_path, resume=True)


def test_budget_in_seconds_stops_the_search(data):
    result = N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=None, budget_seconds=0))
    assert result.step == 0 and list(result.log.step) == [0] and result.run_dir is None


def test_argmin_over_children_even_if_worse_than_parent(tmp_path, data, monkeypatch):
    "Line 8 of Algorithm 1: N* is the best child, even when the parent was better."
    real = N.evaluate_child
    def worse_children(task):
        out = real(task)
        out.val_error = 0.9 + task.rng[2] / 100 if task.n_op else 0.1  # child j gets 0.9 + j/100
        return out
    monkeypatch.setattr(N, "evaluate_child", worse_children)
    result = N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=1), run_dir=tmp_path)
    assert (result.id, result.step, result.val_error) == (1, 1, 0.9)


def test_process_pool_executor(tmp_path, data):
    "evaluate_child is a picklable top-level function: a process pool runs the same search."
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    config = small_config(n_steps=1, n_child=2)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        with pytest.warns(UserWarning, match=r"every task submitted to ProcessPoolExecutor carries the whole dataset "
                                             r"\(0\.3 MB.*DataSpec\.cifar10\(\.\.\.\) or DataSpec\.synthetic"):
            result = N.nash(seed_arch((4, 8, 8)), data, config, run_dir=tmp_path / "pool", executor=pool)
    assert list(result.log.status) == ["ok"] * 3 and result.step == 1
    local = N.nash(seed_arch((4, 8, 8)), data, config, run_dir=tmp_path / "local")
    assert list(result.log.arch) == list(local.log.arch)  # the same children, wherever they were trained


def test_data_that_would_travel_warns(data):
    "Only an in-memory Data sent to other processes warns; the warning names the caller's line."
    import warnings
    from concurrent.futures import ThreadPoolExecutor
    from nash_lit.data import DataSpec
    class Cluster:  # stands for a Dask client
        def submit(self, fn, *args): raise RuntimeError("not reached")
    class Here(Cluster): in_process = True  # an executor of one's own that runs its tasks in this process
    for quiet in [(data, None), (data, R.InProcess()), (data, ThreadPoolExecutor(1)), (data, Here()),
                  (DataSpec.synthetic(), Cluster())]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            N.warn_if_data_travels(*quiet)
    with pytest.warns(UserWarning, match="submitted to Cluster carries the whole dataset") as caught:
        with pytest.raises(RuntimeError, match="not reached"):
            N.random_search(seed_arch((4, 8, 8)), data, small_config(n_steps=1), executor=Cluster())
    assert caught[0].filename == __file__


def test_default_operators_are_the_papers():
    assert N.NashConfig().operators == ("deeper", "wider", "skip")


def test_data_spec_gives_the_same_search(tmp_path, data):
    "A DataSpec (what a worker would load) and the loaded Data make the same search."
    from nash_lit.data import DataSpec
    spec = DataSpec.synthetic(n_train=64, n_val=32, n_test=32, seed=0)
    a = N.nash(seed_arch((4, 8, 8)), spec, small_config(n_steps=1))
    b = N.nash(seed_arch((4, 8, 8)), spec.load("cpu"), small_config(n_steps=1))
    assert list(a.log.arch) == list(b.log.arch) and list(a.log.val_error) == list(b.log.val_error)


def test_ids_do_not_depend_on_completion_order(tmp_path, data, monkeypatch):
    "Children that come back in reverse order keep the ids of their positions."
    from concurrent.futures import ThreadPoolExecutor
    real = N.evaluate_child
    def slow_first(task):
        time.sleep(0.4 * (2 - task.rng[2]))  # child 0 finishes last
        return real(task)
    monkeypatch.setattr(N, "evaluate_child", slow_first)
    with ThreadPoolExecutor(3) as pool:
        N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=1), run_dir=tmp_path, executor=pool)
    records = read_records(tmp_path)
    assert [r["child"] for r in records] == [0, 2, 1, 0]  # logged as they came back
    assert {(r["step"], r["child"]): r["id"] for r in records} == {(0, 0): 0, (1, 0): 1, (1, 1): 2, (1, 2): 3}


def _crash_in_step_two(tmp_path, data, monkeypatch, logged=1):
    "A run killed after `logged` children of step 2 were logged."
    real, calls = R.append_record, []
    def crash(run_dir, record):
        real(run_dir, record)
        calls.append(record)
        if sum(r["step"] == 2 for r in calls) == logged: raise SystemExit("killed")
    monkeypatch.setattr(R, "append_record", crash)
    with pytest.raises(SystemExit): N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path)
    monkeypatch.setattr(R, "append_record", real)
    return calls[-1]


def test_resume_after_deleting_best_is_refused(tmp_path, data):
    N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path)
    (tmp_path / "best.pt").unlink()
    with pytest.raises(RunDamaged, match=r"best\.pt is missing"):
        N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path, resume=True)


def test_resume_after_deleting_a_needed_checkpoint_is_refused(tmp_path, data, monkeypatch):
    last = _crash_in_step_two(tmp_path, data, monkeypatch)
    (tmp_path / f"child_{last['id']}.pt").unlink()
    with pytest.raises(RunDamaged, match=rf"child_{last['id']}\.pt is missing"):
        N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path, resume=True)


def test_resume_of_a_log_cut_in_the_middle_is_refused(tmp_path, data):
    N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path)
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:3]))  # best.pt says step 2; the log stops in step 1
    with pytest.raises(RunDamaged, match=r"log\.jsonl ends before .*best\.pt.*step 2.*stops in step 1"):
        N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path, resume=True)


def test_resume_of_a_log_cut_inside_the_open_step_is_refused(tmp_path, data, monkeypatch):
    "Two children of step 2 trained and logged, then the log cut inside the first one's line: not a crash."
    _crash_in_step_two(tmp_path, data, monkeypatch, logged=2)
    log = tmp_path / "log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-2]) + lines[-2][:20])
    with pytest.raises(RunDamaged, match=r"log\.jsonl was cut: it lacks the records of child_4\.pt, child_5\.pt"):
        N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path, resume=True)
    log.write_bytes(b"".join(lines[:-1]))  # the last record alone lost, as a crash inside its write would: resumes
    assert sorted(N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path, resume=True).log.id) == list(range(7))


def test_resume_after_a_crash_in_a_step_continues(tmp_path, data, monkeypatch):
    _crash_in_step_two(tmp_path, data, monkeypatch)
    resumed = N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path, resume=True)
    reference = N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path / "ref")
    assert (resumed.id, resumed.val_error, resumed.arch) == (reference.id, reference.val_error, reference.arch)
    assert sorted(resumed.log.id) == list(range(7))


def test_no_final_train_here():
    "final_train and train_plus_val live in nash_lit.train and nash_lit.data now."
    assert not hasattr(N, "final_train") and not hasattr(N, "train_plus_val")
