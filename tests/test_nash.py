"NASH (nash_lit.hill_climbing): kill-and-resume, failures as data, invalid configs, refused resumes of damaged runs, ids."

import json
import random
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import nash_lit.store as ST
import nash_lit.session as S
from nash_lit.arch import Arch, seed_arch
from nash_lit.executors import InProcess
from nash_lit.runs import RunDamaged, read_log, read_records
from nash_lit.store import load_checkpoint
from nash_lit.data import synthetic
from nash_lit.training import TrainConfig, TrainingDiverged
from _helpers import crash_after_best, finish, gray_data, log_lines, no_training, start_script
import nash_lit.evaluation as E
import nash_lit.hill_climbing as N
import nash_lit.driver as D  # the loop every search runs: it submits evaluate_child

SCRIPT = Path(__file__).with_name("_nash_run.py")
TRAIN = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)


def small_config(**changes):
    base = dict(n_steps=2, n_child=3, n_op=2, n_epochs=1, seed_epochs=1, calib_size=16, train=TRAIN)
    return N.NashConfig(**{**base, **changes})


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    return synthetic(64, 32, 32, seed=0)


def start(run_dir, seed, out):
    return start_script(SCRIPT, run_dir, seed, out)


def check_run(run_dir, n_steps=3, n_child=3):
    "The log and checkpoints parse; every child is there exactly once."
    records = read_records(run_dir)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), f"duplicated children: {sorted(ids)}"
    assert sorted((r["step"], r["child"]) for r in records) == [(0, 0)] + [
        (s, j) for s in range(1, n_steps + 1) for j in range(n_child)
    ]
    for r in records:
        assert r["status"] == "ok", r
        Arch.from_json(r["arch"])
    for p in Path(run_dir).glob("*.pt"):
        load_checkpoint(p)
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
        while proc.poll() is None and log_lines(run) < after and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rnd.uniform(0, 0.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
        read_records(run)  # the log parses after every kill (a torn last line is ignored)
    finish(start(run, seed, tmp_path / "killed.json"))
    finish(reference)
    assert kills >= 1
    check_run(run)
    check_run(tmp_path / "ref")
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
    real, calls = ST.append_record, []

    def crash_on_fourth(run_dir, record):
        calls.append(record["id"])
        if len(calls) < 4:
            return real(run_dir, record)
        with open(Path(run_dir) / "log.jsonl", "ab") as f:
            f.write(json.dumps(record).encode()[:40])
        raise SystemExit("killed mid-write")

    monkeypatch.setattr(ST, "append_record", crash_on_fourth)
    with pytest.raises(SystemExit):
        N.nash(seed_arch((4, 8, 8)), data, config, run_dir=tmp_path / "run")
    monkeypatch.setattr(ST, "append_record", real)
    with pytest.raises(json.JSONDecodeError):
        json.loads((tmp_path / "run/log.jsonl").read_text().splitlines()[-1])
    again = N.nash(seed_arch((4, 8, 8)), data, config, run_dir=tmp_path / "run", resume=True)
    assert (again.id, again.val_error, again.arch) == (reference.id, reference.val_error, reference.arch)
    assert [r["id"] for r in read_records(tmp_path / "run")] == [0, 1, 2, 3]
    assert (tmp_path / "run/log.jsonl").read_text().endswith("\n")


def _failing_train(failures):
    "A stand-in for `train` that raises failures[train seed] for chosen children, and trains the rest."
    real = E.train

    def fake(net, data, config, **kwargs):
        if config.seed in failures:
            raise failures[config.seed]
        return real(net, data, config, **kwargs)

    return fake


def test_failed_child_is_data(tmp_path, data, monkeypatch):
    "A diverged, an out-of-memory and a crashing child are logged; the search continues with the others."
    seed = lambda step, j: D.child_seeds(0, step, j)[1]
    monkeypatch.setattr(
        E,
        "train",
        _failing_train(
            {
                seed(1, 0): TrainingDiverged("loss became nan"),
                seed(1, 1): RuntimeError("CUDA out of memory. Tried"),
                seed(2, 2): KeyError("boom"),
            }
        ),
    )
    result = N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path)
    log = read_log(tmp_path).set_index("id")
    assert list(log.status) == ["ok", "diverged", "oom", "ok", "ok", "ok", "failed"]
    assert "loss became nan" in log.error[1] and "boom" in log.error[6]
    assert log.parent[4] == 3  # step 2 climbed from the only child of step 1 that trained
    assert result.paper_step == 2 and result.paper_id in (4, 5)
    ok = log[log.status == "ok"]
    assert result.val_error == ok.val_error.min() and result.id == ok[ok.val_error == ok.val_error.min()].index.min()


def test_all_children_failing_is_a_clear_error(tmp_path, data, monkeypatch):
    monkeypatch.setattr(
        E, "train", _failing_train({D.child_seeds(0, 1, j)[1]: TrainingDiverged("nan") for j in range(3)})
    )
    with pytest.raises(N.SearchFailed, match="all 3 children of step 1 failed"):
        N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path)
    assert [r["status"] for r in read_records(tmp_path)] == ["ok", "diverged", "diverged", "diverged"]


@pytest.mark.parametrize(
    "changes, error, message",
    [
        (dict(n_child=0), ValueError, r"^NashConfig\.n_child must be >= 1, got 0$"),
        (dict(n_op=0), ValueError, r"^NashConfig\.n_op must be >= 1, got 0$"),
        (dict(budget_seconds=-5), ValueError, r"^NashConfig\.budget_seconds must be >= 0, got -5\.0$"),
        (dict(budget_seconds=float("inf")), ValueError, r"NashConfig\.budget_seconds must be finite"),
        (dict(n_epochs=-1), ValueError, "NashConfig.n_epochs must be >= 0"),
        (dict(seed_epochs=-1), ValueError, "NashConfig.seed_epochs must be >= 0"),
        (dict(n_steps=-1), ValueError, "NashConfig.n_steps must be >= 0"),
        (dict(seed=-1), ValueError, "NashConfig.seed must be >= 0"),
        (dict(n_steps=None), ValueError, "NashConfig needs a budget"),
        (dict(operators=("deeper", "narrower")), ValueError, "unknown operator 'narrower'"),
        (dict(operators=()), ValueError, "operator set is empty"),
        (dict(operators=(len,)), ValueError, "NashConfig.operators must be given by name"),
        (dict(n_op=2.5), TypeError, r"^NashConfig\.n_op must be an int, got 2\.5 \(float\)$"),
        (dict(n_steps=2.0), TypeError, r"^NashConfig\.n_steps must be an int or None, got 2\.0 \(float\)$"),
        (
            dict(budget_seconds="1h"),
            TypeError,
            r"^NashConfig\.budget_seconds must be a real number or None, got '1h' \(str\)$",
        ),
        *[
            (dict([(name, value)]), TypeError, rf"^NashConfig\.{name} must be an int, got {value!r}")
            for name, (kind, _) in {**D.SearchConfig.RULES, **N.NashConfig.RULES}.items()
            if kind is int and name not in ("n_steps", "budget_images")
            for value in (1.5, True, "3")
        ],
    ],
)
def test_invalid_config_fails_before_training(changes, error, message, monkeypatch):
    "Checked by check_setting, as TrainConfig is: the message names NashConfig's field; a wrong type is a TypeError."
    monkeypatch.setattr(E, "train", lambda *a, **k: pytest.fail("trained before validating"))
    with pytest.raises(error, match=message):
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
    real = D.evaluate_child

    def worse_children(task):
        out = real(task)
        out.val_error = 0.9 + task.rng[2] / 100 if task.n_op else 0.1  # child j gets 0.9 + j/100
        return out

    monkeypatch.setattr(D, "evaluate_child", worse_children)
    result = N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=1), run_dir=tmp_path)
    assert (result.paper_id, result.paper_step, result.paper_val_error) == (1, 1, 0.9)  # the paper's N*
    assert (result.id, result.step, result.val_error) == (0, 0, 0.1)  # the seed was better: it is the best ever


def test_process_pool_executor(tmp_path, data):
    "A spawn pool of one worker runs the same search as this process: the same children, errors and weights."
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from _helpers import fingerprint

    config = small_config(n_steps=1, n_child=2)
    # the worker uses this process's thread count: another count sums in another order (other last bits)
    with ProcessPoolExecutor(
        1, mp_context=get_context("spawn"), initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),)
    ) as pool:
        with pytest.warns(
            UserWarning,
            match=r"every task submitted to ProcessPoolExecutor carries the whole dataset "
            r"\(0\.3 MB.*DataSpec\.cifar10\(\.\.\.\) or DataSpec\.synthetic",
        ):
            result = N.nash(seed_arch((4, 8, 8)), data, config, run_dir=tmp_path / "pool", executor=pool)
    assert list(result.log.status) == ["ok"] * 3 and result.paper_step == 1
    local = N.nash(seed_arch((4, 8, 8)), data, config, run_dir=tmp_path / "local")
    assert list(result.log.sort_values("id").arch) == list(local.log.sort_values("id").arch)
    assert list(result.log.sort_values("id").val_error) == list(local.log.sort_values("id").val_error)
    assert (result.id, result.paper_id) == (local.id, local.paper_id)
    assert fingerprint(result.net) == fingerprint(local.net) and fingerprint(result.paper_net) == fingerprint(
        local.paper_net
    )


def test_data_that_would_travel_warns(data, tmp_path):
    "Only an in-memory Data sent to other processes warns; the warning names the caller's line."
    import warnings
    from concurrent.futures import ThreadPoolExecutor
    from nash_lit.data import DataSpec

    class Cluster:  # stands for a Dask client
        def submit(self, fn, *args):
            raise RuntimeError("not reached")

    class Here(Cluster):
        in_process = True  # an executor of one's own that runs its tasks in this process

    for quiet in [
        (data, None),
        (data, InProcess()),
        (data, ThreadPoolExecutor(1)),
        (data, Here()),
        (DataSpec.synthetic(), Cluster()),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            D.warn_if_data_travels(*quiet)
    with pytest.warns(UserWarning, match="submitted to Cluster carries the whole dataset") as caught:
        with pytest.raises(RuntimeError, match="not reached"):
            N.random_search(seed_arch((4, 8, 8)), data, small_config(n_steps=1), executor=Cluster(), run_dir=tmp_path)
    assert caught[0].filename == __file__
    from nash_lit.peers import PeerConfig, nsga2

    with pytest.warns(UserWarning, match="submitted to Cluster carries the whole dataset") as caught:
        with pytest.raises(RuntimeError, match="not reached"):  # nsga2 -> peer_search -> the driver, one level deeper
            nsga2(
                data, PeerConfig(n_steps=1, population=2), executor=Cluster(), run_dir=tmp_path / "peer", progress=False
            )
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

    real = D.evaluate_child

    def slow_first(task):
        time.sleep(0.4 * (2 - task.rng[2]))  # child 0 finishes last
        return real(task)

    monkeypatch.setattr(D, "evaluate_child", slow_first)
    with ThreadPoolExecutor(3) as pool:
        N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=1), run_dir=tmp_path, executor=pool)
    records = read_records(tmp_path)
    assert [r["child"] for r in records] == [0, 2, 1, 0]  # logged as they came back
    assert {(r["step"], r["child"]): r["id"] for r in records} == {(0, 0): 0, (1, 0): 1, (1, 1): 2, (1, 2): 3}


def _crash_in_step_two(tmp_path, data, monkeypatch, logged=1):
    "A run killed after `logged` children of step 2 were logged."
    real, calls = ST.append_record, []

    def crash(run_dir, record):
        real(run_dir, record)
        calls.append(record)
        if sum(r["step"] == 2 for r in calls) == logged:
            raise SystemExit("killed")

    monkeypatch.setattr(ST, "append_record", crash)
    with pytest.raises(SystemExit):
        N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path)
    monkeypatch.setattr(ST, "append_record", real)
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
    log.write_bytes(
        b"".join(log.read_bytes().splitlines(keepends=True)[:3])
    )  # best.pt says step 2; the log stops in step 1
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
    assert sorted(N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path, resume=True).log.id) == list(
        range(7)
    )


def test_resume_after_a_crash_in_a_step_continues(tmp_path, data, monkeypatch):
    _crash_in_step_two(tmp_path, data, monkeypatch)
    resumed = N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path, resume=True)
    reference = N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path / "ref")
    assert (resumed.id, resumed.val_error, resumed.arch) == (reference.id, reference.val_error, reference.arch)
    assert sorted(resumed.log.id) == list(range(7))


def test_no_final_train_here():
    "final_train and train_plus_val live in nash_lit.training and nash_lit.data now."
    assert not hasattr(N, "final_train") and not hasattr(N, "train_plus_val")


def test_a_later_worse_step_keeps_the_best_ever(tmp_path, data, monkeypatch):
    "Acceptance 3: step 2's children are all worse than step 1's best; the result holds step 1's, the paper's N* step 2's."
    from _helpers import fingerprint

    real = D.evaluate_child

    def step_two_worse(task):
        out = real(task)
        step, j = task.rng[1], task.rng[2]
        out.val_error = {0: 0.9, 1: 0.5 + j / 100, 2: 0.95 + j / 100}[step]
        return out

    monkeypatch.setattr(D, "evaluate_child", step_two_worse)
    result = N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path / "two", progress=False)
    assert (result.id, result.step, result.val_error) == (1, 1, 0.5)
    assert (result.paper_id, result.paper_step, result.paper_val_error) == (4, 2, 0.95)
    one = N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=1), run_dir=tmp_path / "one", progress=False)
    assert one.paper_id == 1 and fingerprint(result.net) == fingerprint(one.paper_net)  # step 1's trained weights
    assert fingerprint(result.net) != fingerprint(result.paper_net)
    assert result.arch.to_json() == result.log.set_index("id").arch[1]
    assert ST.checkpoint_meta(tmp_path / "two" / ST.BEST_EVER) == dict(id=1, val_error=0.5, step=1)
    text = repr(result)
    assert (
        "the best-ever network, id 1 from step 1" in text
        and "the paper's N* (the last step's best), id 4 from step 2" in text
    )
    again = N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path / "two", resume=True, progress=False)
    assert (again.id, again.paper_id) == (1, 4) and fingerprint(again.net) == fingerprint(result.net)


def test_a_finished_run_is_extended(tmp_path, data):
    "Resumed with more steps (or a larger budget), a finished run goes on; the result equals a run as long from the start."
    from _helpers import fingerprint

    short = N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=1), run_dir=tmp_path / "run", progress=False)
    before = read_records(tmp_path / "run")
    longer = N.nash(
        seed_arch((4, 8, 8)), data, small_config(n_steps=2), run_dir=tmp_path / "run", resume=True, progress=False
    )
    assert read_records(tmp_path / "run")[: len(before)] == before  # nothing discarded, nothing trained again
    assert json.loads((tmp_path / "run/config.json").read_text())["config"]["n_steps"] == 2
    direct = N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=2), run_dir=tmp_path / "direct", progress=False)
    key = lambda log: log.sort_values("id")[["id", "arch", "val_error"]].values.tolist()
    assert key(longer.log) == key(direct.log) and len(short.log) == 4
    assert (longer.id, longer.paper_id) == (direct.id, direct.paper_id)
    assert fingerprint(longer.net) == fingerprint(direct.net) and fingerprint(longer.paper_net) == fingerprint(
        direct.paper_net
    )
    with pytest.raises(ValueError, match=r"config\.n_steps \(stored 2, given 1\), which would shorten it"):
        N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=1), run_dir=tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match=r"config\.n_op \(stored 2, given 3\)"):  # a larger budget and another change
        N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=3, n_op=3), run_dir=tmp_path / "run", resume=True)


def test_a_spent_time_budget_is_extended(tmp_path, data):
    cut = N.random_search(
        seed_arch((4, 8, 8)), data, small_config(n_steps=2, budget_seconds=0), run_dir=tmp_path, progress=False
    )
    assert cut.paper_step == 1  # the first step always runs; the budget then stops the search
    more = N.random_search(
        seed_arch((4, 8, 8)),
        data,
        small_config(n_steps=2, budget_seconds=None),
        run_dir=tmp_path,
        resume=True,
        progress=False,
    )
    assert more.paper_step == 2 and sorted(more.log.id) == list(range(6))
    with pytest.raises(ValueError, match=r"config\.budget_seconds \(stored None, given 5\.0\), which would shorten it"):
        N.random_search(
            seed_arch((4, 8, 8)), data, small_config(n_steps=2, budget_seconds=5), run_dir=tmp_path, resume=True
        )


@pytest.mark.parametrize("search", [N.nash, N.random_search])
@pytest.mark.parametrize("folder", ["mistyped", "empty"])
def test_resume_of_a_folder_without_a_run_fails(tmp_path, data, monkeypatch, search, folder):
    no_training(monkeypatch, N)
    run = tmp_path / "nash_run_1"
    if folder == "empty":
        run.mkdir()
    with pytest.raises(
        FileNotFoundError,
        match=rf"cannot resume {run}: the folder (does not exist|is empty).*"
        r"pass resume=False to start a new run there",
    ):
        search(seed_arch((4, 8, 8)), data, small_config(), run_dir=run, resume=True)
    assert list(tmp_path.iterdir()) == ([run] if folder == "empty" else []) and not (
        folder == "empty" and any(run.iterdir())
    )


NOTES = [
    pytest.param(
        True, marks=pytest.mark.skipif(not hasattr(BaseException, "add_note"), reason="Python 3.10: no notes")
    ),
    False,
]  # exceptions take notes (Python 3.11+); they do not (3.10, simulated where they do)


def _kept(folder) -> list:
    "The folders a search left in `folder`, torch's own cache aside (made on first use wherever tempfile points)."
    return [p for p in Path(folder).iterdir() if not p.name.startswith("torchinductor")]


def _told(error, capsys) -> str:
    "All a failed search told: its message, its notes (Python 3.11+) and stderr."
    return "\n".join([str(error), *getattr(error, "__notes__", []), capsys.readouterr().err])


@pytest.mark.parametrize("notes", NOTES, ids=["add_note", "python3.10"])
def test_a_failed_temporary_run_keeps_its_folder(tmp_path, data, monkeypatch, capsys, notes):
    """Without run_dir: deleted on success; on failure kept, the files the message names exist, and the error says
    where and that a resume would fail the same way. Python 3.10 (simulated) has no notes: a SearchFailed again, the
    advice in its message, the original its cause."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(S, "_HAS_NOTES", notes)
    N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=1), progress=False)
    assert _kept(tmp_path) == []
    monkeypatch.setattr(
        E, "train", _failing_train({D.child_seeds(0, 1, j)[1]: TrainingDiverged("nan") for j in range(3)})
    )
    with pytest.raises(N.SearchFailed, match="all 3 children of step 1 failed") as failed:
        N.nash(seed_arch((4, 8, 8)), data, small_config(n_steps=1), progress=False)
    (kept,) = _kept(tmp_path)
    assert (
        kept.name.startswith("nash_") and str(kept / "log.jsonl") in str(failed.value) and (kept / "log.jsonl").exists()
    )
    told = _told(failed.value, capsys)
    assert f"kept in {kept}" in told and "fix the cause and start a new run" in told and "resume=True" not in told
    assert not hasattr(failed.value, "__notes__") or notes
    if not notes:
        assert f"kept in {kept}" in str(failed.value) and isinstance(failed.value.__cause__, N.SearchFailed)
    assert [r["status"] for r in read_records(kept)] == ["ok", "diverged", "diverged", "diverged"]


@pytest.mark.parametrize("notes", NOTES, ids=["add_note", "python3.10"])
def test_an_interrupted_temporary_run_says_how_to_resume(tmp_path, data, monkeypatch, capsys, notes):
    """Ctrl-C after step 1 of a run without run_dir: the folder is kept, the error says to resume from it, and that
    finishes the run. Python 3.10 (simulated): a KeyboardInterrupt cannot carry the advice, which goes to stderr."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(S, "_HAS_NOTES", notes)
    real = ST.RunStore.save_best

    def interrupted(self, net, step, **meta):
        real(self, net, step, **meta)
        if step == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(ST.RunStore, "save_best", interrupted)
    with pytest.raises(KeyboardInterrupt) as stopped:
        N.nash(seed_arch((4, 8, 8)), data, small_config(), progress=False)
    (kept,) = _kept(tmp_path)
    assert f"the run's files are kept in {kept}: pass run_dir={str(kept)!r} and resume=True" in _told(
        stopped.value, capsys
    )
    monkeypatch.setattr(ST.RunStore, "save_best", real)
    resumed = N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=kept, resume=True, progress=False)
    assert sorted(resumed.log.id) == list(range(7)) and resumed.paper_step == 2


@pytest.mark.parametrize("search", [N.nash, N.random_search])
def test_a_fork_pool_is_refused_before_anything_trains(tmp_path, data, monkeypatch, search):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    no_training(monkeypatch, N)
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    try:
        with pytest.raises(
            ValueError,
            match=r"executor: .*fork.*ProcessPoolExecutor\(max_workers, "
            r"mp_context=multiprocessing\.get_context\(\"spawn\"\)\)",
        ):
            search(
                seed_arch((4, 8, 8)),
                N.DataSpec.synthetic(n_train=64),
                small_config(),
                run_dir=tmp_path / "run",
                executor=pool,
            )
    finally:
        pool.shutdown()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("search", [N.nash, N.random_search])
def test_data_that_does_not_fit_the_seed_is_refused(tmp_path, monkeypatch, search):
    "A 1-channel 16x16 dataset of 4 classes and the default seed network: the mismatch is named, nothing is written."
    no_training(monkeypatch, N)
    with pytest.raises(ValueError, match=r"the seed network .*(channel|in_channels).*seed_arch\("):
        search(seed_arch(), gray_data(), small_config(), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    monkeypatch.undo()
    fits = seed_arch((4, 8), in_channels=1, size=16, classes=4)
    result = search(fits, gray_data(), small_config(n_steps=1, n_child=1), run_dir=tmp_path / "ok", progress=False)
    assert result.log.status.tolist() == ["ok"] * len(result.log)


_MISTAKES = {  # what is wrong -> (config changes, data (None: the fixture's), the message, the fix: (data, config))
    "no validation images": (
        dict(),
        synthetic(64, 0, 32, seed=0),
        r"^the data has no validation images.*val_size",
        lambda c, d: (synthetic(64, 16, 32, seed=0), c),
    ),
    "cutout": (
        dict(train=replace(TRAIN, cutout=40)),
        None,
        r"^train: TrainConfig\.cutout=40 cannot apply to 32×32 images",
        lambda c, d: (d, replace(c, train=replace(TRAIN, cutout=None))),
    ),
    "crop_pad": (
        dict(train=replace(TRAIN, crop_pad=32)),
        None,
        r"^train: TrainConfig\.crop_pad=32 cannot apply to 32×32",
        lambda c, d: (d, replace(c, train=replace(TRAIN, crop_pad=4))),
    ),
    "recovery's cutout": (
        dict(recovery=TrainConfig(cutout=33)),
        None,
        r"^recovery: TrainConfig\.cutout=33 cannot apply",
        lambda c, d: (d, replace(c, recovery=TrainConfig(cutout=16))),
    ),
}


@pytest.mark.parametrize(
    "search, mistake",
    [(N.nash, m) for m in _MISTAKES] + [(N.random_search, m) for m in _MISTAKES if m != "recovery's cutout"],
)
def test_settings_and_data_a_search_cannot_use_are_refused(tmp_path, data, monkeypatch, search, mistake):
    """Data without validation images, a crop or Cutout that cannot apply to the images: refused before anything trains
    (with the message train would give) and before a folder is made, so the same call, fixed, starts the run."""
    import tempfile

    no_training(monkeypatch, N)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    changes, bad_data, message, fix = _MISTAKES[mistake]
    config, given = small_config(**changes), bad_data if bad_data is not None else data
    for run_dir in (tmp_path / "run", None):
        with pytest.raises(ValueError, match=message):
            search(seed_arch((4, 8, 8)), given, config, run_dir=run_dir)
    assert not (tmp_path / "run").exists() and _kept(tmp_path / "tmp") == []
    with pytest.raises(
        pytest.fail.Exception, match="before the mistake was found"
    ):  # fixed: past the checks, it trains
        search(seed_arch((4, 8, 8)), *fix(config, given), run_dir=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "config.json").exists()


def test_random_search_does_not_check_a_recovery_it_never_runs(tmp_path, data, monkeypatch):
    "Its children train from scratch: no recovery, so recovery's settings cannot stop it."
    no_training(monkeypatch, N)
    with pytest.raises(pytest.fail.Exception, match="before the mistake was found"):
        N.random_search(
            seed_arch((4, 8, 8)), data, small_config(recovery=TrainConfig(cutout=33)), run_dir=tmp_path / "r"
        )


@pytest.mark.parametrize("search", [N.nash, N.random_search])
def test_a_seed_that_is_no_arch_or_net_is_refused(tmp_path, data, monkeypatch, search):
    "A plain nn.Module fits the data, but the search cannot change its architecture: a TypeError, before anything else."
    no_training(monkeypatch, N)
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    with pytest.raises(
        TypeError,
        match=rf"^{search.__name__} takes the seed network as an Arch or a Net, got Sequential: "
        r".*seed_arch\(\.\.\.\), or Net\(arch\)",
    ):
        search(module, data, small_config(), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_absent_device_is_refused_before_anything_trains(tmp_path, data, monkeypatch):
    no_training(monkeypatch, N)
    with pytest.raises(ValueError, match=r"train\.device: .*cuda"):
        N.nash(
            seed_arch((4, 8, 8)),
            data,
            small_config(train=TrainConfig(device="cuda", progress=False)),
            run_dir=tmp_path / "r",
        )
    assert not (tmp_path / "r").exists()


def test_one_progress_bar_per_search(tmp_path, data, capsys):
    """progress=True: one bar, with the steps, the children and the best error, whatever the training settings say
    (recovery's bars too: tests/test_pareto.py)."""
    loud = small_config(train=TrainConfig(batch_size=32, amp=False, channels_last=False, progress=True))
    capsys.readouterr()
    result = N.nash(seed_arch((4, 8, 8)), data, loud, run_dir=tmp_path / "run")
    err = capsys.readouterr().err
    frames = [f for f in err.replace("\n", "\r").split("\r") if f.strip()]
    assert frames and all(f.startswith("NASH") for f in frames), err[:500]  # no child's own training bar
    assert err.count("\n") == 1  # one bar, closed once
    assert "NASH step 2/2" in frames[-1] and "7/7 children" in frames[-1]
    # n_steps known: the time left is estimated from step 1 (step 0, the seed, is unlike the others) and ends at ~0s
    assert all(" left" not in f for f in frames if "step 2/2" not in f)
    assert any("step 2/2" in f and "s left" in f.split("elapsed")[1] and ", ~" in f for f in frames[:-1])
    assert frames[-1].endswith("~0s left") or frames[-1].rstrip().endswith("~0s left")
    assert f"best val error {result.log[result.log.status == 'ok'].val_error.min():.4f}" in frames[-1]
    N.nash(seed_arch((4, 8, 8)), data, loud, run_dir=tmp_path / "run", resume=True)  # the bar of a resumed run
    assert "7/7 children" in capsys.readouterr().err.replace("\n", "\r").split("\r")[1]
    N.random_search(seed_arch((4, 8, 8)), data, small_config(budget_seconds=600), progress=True)
    last = [f for f in capsys.readouterr().err.replace("\n", "\r").split("\r") if f.strip()][-1]
    assert last.startswith("random search step 2/2") and "6/6 children" in last and " left" in last
    N.nash(seed_arch((4, 8, 8)), data, loud, run_dir=tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""


def test_a_crash_after_best_is_written_leaves_no_checkpoints(tmp_path, data, monkeypatch):
    "Killed between best.pt and deleting the step's checkpoints: the resume deletes them, and the run ends as usual."
    real = crash_after_best(monkeypatch, step=1)
    with pytest.raises(SystemExit):
        N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("child_*.pt"))) == 3
    monkeypatch.setattr(ST.RunStore, "save_best", real)
    resumed = N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path, resume=True, progress=False)
    reference = N.nash(seed_arch((4, 8, 8)), data, small_config(), run_dir=tmp_path / "ref", progress=False)
    assert not list(tmp_path.glob("child_*.pt")) and (resumed.id, resumed.paper_id) == (
        reference.id,
        reference.paper_id,
    )


@pytest.mark.parametrize("seed,n_steps,n_child", [(1, 3, 2), (7, 1, 4)])  # seed 0: the check in chapter 05_nash
def test_the_dozen_line_reference_finds_the_same_networks(seed, n_steps, n_child):
    "nash_reference (Algorithm 1 in memory) and nash give the same N*: architecture, validation error and weights."
    from nash_lit.arch import Net
    from nash_lit.training import train

    data = synthetic(96, 48, 16, seed=seed)
    sgdr = TrainConfig(batch_size=32, amp=False, progress=False)
    config = N.NashConfig(
        n_steps=n_steps, n_child=n_child, n_op=2, n_epochs=1, seed_epochs=1, calib_size=16, train=sgdr, seed=seed
    )
    found = N.nash(seed_arch((4, 8, 8)), data, config, progress=False)
    torch.manual_seed(seed)  # as nash initialises a seed given as an architecture
    n0 = Net(seed_arch((4, 8, 8)))
    train(n0, data, replace(sgdr, epochs=1, seed=E.child_seeds(seed, 0, 0)[1]))
    n_star, error = N.nash_reference(n0, config.operators, n_steps, n_child, 2, 1, data, sgdr, seed=seed, calib_size=16)
    assert found.paper_arch == n_star.arch and found.paper_val_error == error
    mine, theirs = n_star.state_dict(), found.paper_net.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
