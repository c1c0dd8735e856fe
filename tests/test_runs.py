"The run store (nash_lit.runs): atomic files, the append-only log, config checks, checkpoints, RunStore, executors."

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from nash_lit.arch import Net, seed_arch
from nash_lit.executors import InProcess, collect
from nash_lit.runs import (
    LOG,
    RECORD,
    RunDamaged,
    append_record,
    atomic_write_text,
    open_run,
    read_log,
    read_records,
)
from nash_lit.store import (
    BEST,
    BEST_EVER,
    SEED,
    RunStore,
    child_checkpoint,
    load_checkpoint,
    save_checkpoint,
    step_ids,
)


def test_atomic_write_leaves_no_temporary(tmp_path):
    for text in ("a", "bb"):
        atomic_write_text(tmp_path / "f.json", text)
    assert (tmp_path / "f.json").read_text() == "bb"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    from nash_lit.runs import atomic_write

    atomic_write_text(tmp_path / "f", "old")

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "f", broken)
    assert (tmp_path / "f").read_text() == "old"


@pytest.mark.parametrize("torn", [b'{"id": 3, "val', b"{", b'{"id": 3}'])  # the last is complete JSON without newline
def test_torn_last_line(tmp_path, torn):
    for i in range(3):
        append_record(tmp_path, {"id": i, "val_error": 0.1 * i})
    with open(tmp_path / LOG, "ab") as f:
        f.write(torn)
    assert [r["id"] for r in read_records(tmp_path)] == [0, 1, 2]
    assert (tmp_path / LOG).read_bytes().endswith(torn)  # reading alone changes nothing
    read_records(tmp_path, repair=True)
    assert (tmp_path / LOG).read_bytes().endswith(b"}\n")
    append_record(tmp_path, {"id": 3})
    assert [r["id"] for r in read_records(tmp_path)] == [0, 1, 2, 3]


def test_damaged_middle_line_is_an_error(tmp_path):
    (tmp_path / LOG).write_text('{"id": 0}\n{"id": \n{"id": 2}\n')
    with pytest.raises(RunDamaged, match=r"log\.jsonl: line 2 is not valid JSON.*delete that line"):
        read_records(tmp_path)


@pytest.mark.parametrize(
    "line, says",
    [
        (b"null", "is null, not a record"),
        (b"[1, 2]", "is an array, not a record"),
        (b'"text"', "is a string"),
        (b"7", "is a number"),
        (b'{"x": 1}', "is not a search's record: it lacks a valid id, step, child, status"),
        (b'{"id": 1, "step": 1, "child": 0}', "lacks a valid status"),
        (b'{"id": true, "step": 1, "child": 0, "status": "ok"}', "lacks a valid id "),
        (b'{"id": 1, "step": 1.0, "child": 0, "status": "ok"}', "lacks a valid step "),
    ],
)
def test_lines_that_are_not_records_are_named(tmp_path, line, says):
    append_record(tmp_path, dict(id=0, step=0, child=0, status="ok"))
    with open(tmp_path / LOG, "ab") as f:
        f.write(line + b"\n")
    with pytest.raises(
        RunDamaged, match=rf"{tmp_path}/log\.jsonl: line 2 .*{says}.*delete that line if it was added by hand"
    ):
        read_records(tmp_path, fields=RECORD)
    if not line.startswith(b"{"):  # not an object: an error whether or not fields are asked for
        with pytest.raises(RunDamaged, match=says):
            read_records(tmp_path)


def test_read_log(tmp_path):
    assert read_records(tmp_path) == [] and len(read_log(tmp_path)) == 0
    append_record(tmp_path, {"id": 0, "parent": None, "val_error": float("nan")})
    append_record(tmp_path, {"id": 1, "parent": 0, "val_error": 0.5})
    df = read_log(tmp_path)
    assert list(df.parent.astype(object).fillna(-1)) == [-1, 0] and str(df.id.dtype) == "Int64"


def test_open_run(tmp_path):
    config = {"n_child": 8, "operators": ("deeper", "wider"), "train": {"lr_max": 0.05, "progress": True}}
    open_run(tmp_path / "r", config)
    assert json.loads((tmp_path / "r/config.json").read_text())["operators"] == ["deeper", "wider"]
    with pytest.raises(FileExistsError, match="resume=True"):
        open_run(tmp_path / "r", config)
    open_run(tmp_path / "r", config, resume=True)  # tuples and lists compare equal
    with pytest.raises(ValueError, match=r"train.lr_max \(stored 0.05, given 0.1\)"):
        open_run(tmp_path / "r", {**config, "train": {"lr_max": 0.1, "progress": True}}, resume=True)
    with pytest.raises(ValueError, match="extra"):
        open_run(tmp_path / "r", {**config, "extra": 1}, resume=True)
    open_run(
        tmp_path / "r",
        {**config, "train": {"lr_max": 0.05, "progress": False}},
        resume=True,
        ignore=("train.progress",),
    )
    for folder, why in [("nash_rn", "does not exist"), ("empty", "is empty"), ("other", "has no config.json")]:
        if why != "does not exist":
            (tmp_path / folder).mkdir()
        if why == "has no config.json":
            (tmp_path / folder / "notes.txt").write_text("x")
        with pytest.raises(
            FileNotFoundError, match=rf"cannot resume {tmp_path / folder}: the folder {why}.*pass resume=False"
        ):
            open_run(tmp_path / folder, config, resume=True)
    assert not (tmp_path / "nash_rn").exists() and not any((tmp_path / "empty").iterdir())  # nothing written
    (tmp_path / "orphan").mkdir()
    (tmp_path / "orphan" / LOG).write_text("")
    with pytest.raises(RunDamaged, match=r"config\.json is missing, but .* holds a run.s log"):
        open_run(tmp_path / "orphan", config)


@pytest.mark.parametrize("key", ["n_steps", "budget_seconds"])
def test_a_budget_may_grow_on_resume(tmp_path, key):
    "A finished run resumed with a larger budget (None: no limit) is extended, the new budget stored; never shortened."
    config = lambda v: {"format": "x/1", "config": {"n_steps": 3, "budget_seconds": 60.0, "n_child": 8, key: v}}
    extend = ("config.n_steps", "config.budget_seconds")
    open_run(tmp_path, config(3))
    open_run(tmp_path, config(5), resume=True, extend=extend)
    assert json.loads((tmp_path / "config.json").read_text()) == config(5)
    with pytest.raises(ValueError, match=rf"config\.{key} \(stored 5, given 4\), which would shorten it"):
        open_run(tmp_path, config(4), resume=True, extend=extend)
    assert json.loads((tmp_path / "config.json").read_text()) == config(5), "a refused resume changes no file"
    with pytest.raises(ValueError, match=r"config\.n_child \(stored 8, given 4\)"):  # other keys may not change
        open_run(tmp_path, {**config(6), "config": {**config(6)["config"], "n_child": 4}}, resume=True, extend=extend)
    with pytest.raises(ValueError, match=rf"config\.{key}"):  # not listed in extend: any change is refused
        open_run(tmp_path, config(6), resume=True)
    open_run(tmp_path, config(None), resume=True, extend=extend)  # no limit is the largest budget
    with pytest.raises(ValueError, match=rf"config\.{key} \(stored None, given 9\), which would shorten it"):
        open_run(tmp_path, config(9), resume=True, extend=extend)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = Net(seed_arch((4, 8, 8)))
    save_checkpoint(tmp_path / "n.pt", net, step=2, id=7)
    back, meta = load_checkpoint(tmp_path / "n.pt")
    assert meta == {"step": 2, "id": 7} and back.arch == net.arch
    for (k, a), (k2, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(2, 3, 32, 32)
    net.eval()
    back.eval()
    assert torch.equal(net(x), back(x))


def test_in_process_executor_is_lazy_and_keeps_errors():
    calls = []

    def f(x):
        calls.append(x)
        if x == 2:
            raise KeyError("two")
        return x * 10

    ex = InProcess()
    futures = {x: ex.submit(f, x) for x in range(4)}
    assert calls == []
    got = {}
    for k, fut in collect(futures):
        try:
            got[k] = fut.result()
        except KeyError as e:
            got[k] = repr(e)
        assert calls[-1] == k  # each result is collected as soon as it is computed
    assert got == {0: 0, 1: 10, 2: "KeyError('two')", 3: 30}


def test_collect_real_futures():
    with ThreadPoolExecutor(2) as pool:
        futures = {k: pool.submit(pow, k, 2) for k in range(5)}
        assert sorted((k, f.result()) for k, f in collect(futures)) == [(k, k * k) for k in range(5)]


def test_step_ids_do_not_depend_on_completion_order():
    import random

    records = [dict(id=0, step=0)]
    for step, n, first in [(1, 4, 1), (2, 3, 5), (3, 5, 8)]:
        ids = step_ids(records, step, n)
        assert ids == list(range(first, first + n))
        order = list(range(n))
        random.Random(step).shuffle(order)
        for k, j in enumerate(order):  # half the step done, then replanned as after a crash: the same ids
            if k == n // 2:
                assert step_ids(records, step, n) == ids
            records.append(dict(id=ids[j], step=step))
        records = sorted(records, key=lambda r: r["step"])  # the order of lines within a step does not matter
    assert step_ids(records, 4, 2) == [13, 14]
    assert step_ids([], 1, 2) == [0, 1]  # a search without step 0 starts at 0


def _run_files(d, n_steps=2, open_step=True):
    "A run's files as a search writes them: seed, steps of two children, best.pt after each, a step in progress."
    torch.manual_seed(0)
    net = Net(seed_arch((4, 8, 8)))
    store = RunStore(d, {"x": 1})
    store.save(SEED, net)
    for step in range(n_steps + int(open_step)):
        ids = store.ids(step, 2)
        for j in range(2):
            store.save(child_checkpoint(ids[j]), net, step=step, id=ids[j])
            store.append(dict(id=ids[j], step=step, child=j, status="ok", val_error=0.5))
            if step == n_steps:
                return store  # the step in progress: one child done
        store.save_best(net, step, id=ids[0], val_error=0.5)
        for i in ids:
            store.delete(child_checkpoint(i))
    return store


def test_consistent_files_resume(tmp_path):
    store = _run_files(tmp_path)
    again = RunStore(tmp_path, {"x": 1}, resume=True)
    assert again.best == store.best and again.best["step"] == 1 and again.best["logged"] == 4
    assert list(again.finished(2)) == [0] and again.ids(2, 2) == [4, 5]
    assert again.seconds() >= store.records[-1]["search_seconds"]


def test_a_damaged_run_keeps_its_budget(tmp_path):
    """Resumed with a larger budget, a run whose files disagree is refused before config.json is rewritten, so that,
    repaired, it resumes with the config it was made with (and can be extended then)."""
    _run_files(tmp_path)
    (tmp_path / SEED).rename(tmp_path / "seed.bak")
    with pytest.raises(RunDamaged, match=r"seed\.pt is missing"):
        RunStore(tmp_path, {"x": 2}, resume=True, extend=("x",))
    assert json.loads((tmp_path / "config.json").read_text()) == {"x": 1}
    (tmp_path / "seed.bak").rename(tmp_path / SEED)
    assert RunStore(tmp_path, {"x": 1}, resume=True).best["step"] == 1  # repaired: as it was made
    RunStore(tmp_path, {"x": 2}, resume=True, extend=("x",))
    assert json.loads((tmp_path / "config.json").read_text()) == {"x": 2}


def test_open_run_checks_before_it_writes(tmp_path):
    "`check` runs before config.json is written, for a new run and for an extended one alike."

    def refuse(run_dir):
        raise RunDamaged(f"{run_dir} refused")

    with pytest.raises(RunDamaged, match="new refused"):
        open_run(tmp_path / "new", {"n": 1}, check=refuse)
    assert not (tmp_path / "new" / "config.json").exists()
    open_run(tmp_path / "old", {"n": 1})
    with pytest.raises(RunDamaged, match="old refused"):
        open_run(tmp_path / "old", {"n": 2}, resume=True, extend=("n",), check=refuse)
    assert json.loads((tmp_path / "old" / "config.json").read_text()) == {"n": 1}
    seen = []
    open_run(tmp_path / "old", {"n": 2}, resume=True, extend=("n",), check=seen.append)
    assert seen == [tmp_path / "old"] and json.loads((tmp_path / "old" / "config.json").read_text()) == {"n": 2}


def test_deleted_best_is_named(tmp_path):
    _run_files(tmp_path)
    (tmp_path / BEST).unlink()
    with pytest.raises(RunDamaged, match=r"best\.pt is missing.*steps \[0, 1, 2\]"):
        RunStore(tmp_path, {"x": 1}, resume=True)


def test_older_best_is_named(tmp_path):
    store = _run_files(tmp_path)
    net, meta = store.load(BEST)
    store.save(BEST, net, **{**meta, "step": 0, "logged": 2})  # an older best.pt put back
    with pytest.raises(RunDamaged, match=r"best\.pt records step 0.*steps \[1, 2\]"):
        RunStore(tmp_path, {"x": 1}, resume=True)


def test_deleted_needed_checkpoint_is_named(tmp_path):
    _run_files(tmp_path)
    (tmp_path / child_checkpoint(4)).unlink()
    with pytest.raises(RunDamaged, match=r"child_4\.pt is missing.*child 4 of step 2"):
        RunStore(tmp_path, {"x": 1}, resume=True)


def test_deleted_seed_is_named(tmp_path):
    _run_files(tmp_path)
    (tmp_path / SEED).unlink()
    with pytest.raises(RunDamaged, match=r"seed\.pt is missing"):
        RunStore(tmp_path, {"x": 1}, resume=True)


@pytest.mark.parametrize("name", [BEST, SEED, "child_4.pt"])
def test_garbage_in_a_checkpoint_is_named(tmp_path, name):
    "Not torch's UnpicklingError (with its hint to load untrusted code): the damaged file, and what to do."
    _run_files(tmp_path)
    (tmp_path / name).write_bytes(b"not a checkpoint")
    with pytest.raises(
        RunDamaged, match=rf"{re.escape(str(tmp_path / name))} is damaged, torch cannot read it.*new folder"
    ):
        RunStore(tmp_path, {"x": 1}, resume=True).load(name)


def test_garbage_in_the_config_is_named(tmp_path):
    _run_files(tmp_path)
    (tmp_path / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RunDamaged, match=r"config\.json is damaged, it does not hold JSON"):
        RunStore(tmp_path, {"x": 1}, resume=True)


@pytest.mark.parametrize("resume", [True, False])
def test_a_deleted_config_of_a_run_is_named(tmp_path, resume):
    "Neither 'pass resume=False' nor 'the folder holds a run': the missing file, whatever resume says."
    _run_files(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(RunDamaged, match=r"config\.json is missing, but .* holds a run's log"):
        RunStore(tmp_path, {"x": 1}, resume=resume)


@pytest.mark.parametrize("cut", ["lines", "mid-line"])
def test_log_cut_in_the_middle_is_named(tmp_path, cut):
    _run_files(tmp_path, open_step=False)
    raw = (tmp_path / LOG).read_bytes()
    lines = raw.split(b"\n")
    (tmp_path / LOG).write_bytes(b"\n".join(lines[:2]) + b"\n" if cut == "lines" else raw[: len(raw) // 2])
    with pytest.raises(RunDamaged, match=r"log\.jsonl ends before what .*best\.pt records.*stops in step 0"):
        RunStore(tmp_path, {"x": 1}, resume=True)
    assert (tmp_path / LOG).read_bytes() == (
        b"\n".join(lines[:2]) + b"\n" if cut == "lines" else raw[: len(raw) // 2]
    ), "a refused resume changes no file"


def test_torn_last_line_is_repaired_by_the_store(tmp_path):
    _run_files(tmp_path)
    with open(tmp_path / LOG, "ab") as f:
        f.write(b'{"id": 5, "st')
    store = RunStore(tmp_path, {"x": 1}, resume=True)
    assert len(store.records) == 5 and (tmp_path / LOG).read_bytes().endswith(b"}\n")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    store = RunStore(tmp_path, {})
    with pytest.raises(RunDamaged, match="nope.pt is missing"):
        store.load("nope.pt")
    store.delete("nope.pt")  # deleting what is not there is fine


def test_one_unlogged_checkpoint_is_a_crash(tmp_path):
    "Killed between a child's checkpoint and its log line: the resume trains that child again."
    store = _run_files(tmp_path)
    store.save(child_checkpoint(5), store.load(SEED)[0], step=2, id=5)
    again = RunStore(tmp_path, {"x": 1}, resume=True)
    assert list(again.finished(2)) == [0] and again.ids(2, 2) == [4, 5]


@pytest.mark.parametrize("cut", ["lines", "mid-line"])
def test_log_cut_inside_the_open_step_is_named(tmp_path, cut):
    "Two checkpoints without records: the log lost a record a crash cannot lose."
    store = _run_files(tmp_path)
    store.save(child_checkpoint(5), store.load(SEED)[0], step=2, id=5)
    raw = (tmp_path / LOG).read_bytes()
    lines = raw.splitlines(keepends=True)
    (tmp_path / LOG).write_bytes(b"".join(lines[:-1]) + (lines[-1][:20] if cut == "mid-line" else b""))
    with pytest.raises(RunDamaged, match=r"log\.jsonl was cut: it lacks the records of child_4\.pt, child_5\.pt"):
        RunStore(tmp_path, {"x": 1}, resume=True)


def test_unreadable_child_checkpoint_is_named(tmp_path):
    _run_files(tmp_path)
    (tmp_path / child_checkpoint(7)).write_bytes(b"not a checkpoint")
    with pytest.raises(RunDamaged, match=r"child_7\.pt is not a readable child checkpoint"):
        RunStore(tmp_path, {"x": 1}, resume=True)


@pytest.mark.parametrize(
    "extra, says",
    [
        (
            dict(id=9, step=1, child=0),
            r"records 3 and 6 have the same step and child: id 2 \(step 1, child 0\) and id 9",
        ),
        (dict(id=2, step=2, child=1), r"records 3 and 6 have the same id: id 2 \(step 1, child 0\) and id 2 \(step 2"),
        (
            dict(id=9, step=1, child=2),
            r"record 6 \(id 9, step 1, child 2\) comes after the 4 records that .*best\.pt saw",
        ),
        (dict(id=9, step=0, child=2), r"record 6 \(id 9, step 0, child 2\) comes after"),
    ],
)
def test_extra_records_are_named(tmp_path, extra, says):
    "A network logged twice, or a record of a finished step after best.pt was written."
    _run_files(tmp_path)
    append_record(tmp_path, dict(status="ok", val_error=0.1, **extra))
    with pytest.raises(RunDamaged, match=rf"log\.jsonl: {says}"):
        RunStore(tmp_path, {"x": 1}, resume=True)


def test_extra_record_of_a_finished_run_is_named(tmp_path):
    _run_files(tmp_path, open_step=False)
    append_record(tmp_path, dict(id=4, step=1, child=2, status="ok", val_error=0.1))
    with pytest.raises(RunDamaged, match=r"record 5 \(id 4, step 1, child 2\).*only children of step 2 can follow"):
        RunStore(tmp_path, {"x": 1}, resume=True)


def _best_ever_run(d, errors=((0.9,), (0.5, 0.4), (0.6, 0.45), (0.3,))):
    "A run of a search that keeps its best network: steps of these errors, the best ever rewritten only when beaten."
    torch.manual_seed(0)
    net = Net(seed_arch((4, 8, 8)))
    store = RunStore(d, {"x": 1})
    store.save(SEED, net)
    for step, errs in enumerate(errors):
        ids = store.ids(step, len(errs))
        for j, e in enumerate(errs):
            store.save(child_checkpoint(ids[j]), net, step=step, id=ids[j])
            store.append(dict(id=ids[j], step=step, child=j, status="ok", val_error=e))
        if step == len(errors) - 1:
            return store  # the last step is still open
        k = min(range(len(errs)), key=lambda j: errs[j])
        if store.best_ever is None or errs[k] < store.best_ever["val_error"]:
            store.save_best_ever(net, id=ids[k], val_error=errs[k], step=step)
        store.save_best(net, step, id=ids[k], val_error=errs[k], best_ever=store.best_ever["id"])
        for i in ids:
            store.delete(child_checkpoint(i))
    return store


def test_best_ever_is_kept_and_resumed(tmp_path):
    "Step 2's best (0.45) is worse than step 1's (0.4): best.pt moves on, best_ever.pt stays with step 1's."
    store = _best_ever_run(tmp_path)
    assert store.best["id"] == 4 and store.best_ever == dict(id=2, val_error=0.4, step=1)
    again = RunStore(tmp_path, {"x": 1}, resume=True)
    assert again.best_ever == store.best_ever and again.best == store.best
    assert BEST_EVER == "best_ever.pt" and (tmp_path / BEST_EVER).exists()


def test_crash_between_best_ever_and_best_resumes(tmp_path):
    "best_ever.pt is written before best.pt: killed between the two, the run resumes (the step is finished again)."
    store = _best_ever_run(tmp_path)
    net = store.load(SEED)[0]
    store.save_best_ever(net, id=5, val_error=0.3, step=3)  # step 3's winner kept, best.pt not yet written
    again = RunStore(tmp_path, {"x": 1}, resume=True)
    assert again.best["step"] == 2 and again.best_ever["id"] == 5


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda d, net: (d / BEST_EVER).unlink(), r"best_ever\.pt is missing, but .*best\.pt says it holds network 2"),
        (
            lambda d, net: save_checkpoint(d / BEST_EVER, net, id=0, val_error=0.9, step=0),
            r"best_ever\.pt holds network 0 \(validation error 0\.9\), but the log has network 2 of completed step 1 with the "
            r"lower 0\.4: best_ever\.pt was replaced by an older copy",
        ),
        (
            lambda d, net: save_checkpoint(d / BEST_EVER, net, id=2, val_error=0.35, step=1),
            r"best_ever\.pt holds network 2 with validation error 0\.35, but the log has no such trained network",
        ),
        (lambda d, net: save_checkpoint(d / BEST_EVER, net, id=17, val_error=0.1, step=1), r"has no record of it"),
    ],
)
def test_damaged_best_ever_is_named(tmp_path, damage, says):
    store = _best_ever_run(tmp_path)
    damage(tmp_path, store.load(SEED)[0])
    with pytest.raises(RunDamaged, match=says):
        RunStore(tmp_path, {"x": 1}, resume=True)


def test_fork_pools_are_refused_before_anything_runs():
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from nash_lit.executors import SPAWN_POOL, check_executor, in_process, start_method

    fork = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    with pytest.raises(
        ValueError,
        match=r"executor: this ProcessPoolExecutor starts its workers with fork.*"
        r"mp_context=multiprocessing\.get_context\(\"spawn\"\)",
    ):
        check_executor(fork)
    assert not fork._processes, "the check starts no worker"
    fork.shutdown()
    if multiprocessing.get_start_method() == "fork":  # Linux before Python 3.14: the default pool forks
        with pytest.raises(ValueError, match="fork"):
            check_executor(ProcessPoolExecutor(1))
    for method in ("spawn", "forkserver"):
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method))
        check_executor(pool)
        assert start_method(pool) == method and not in_process(pool)
        pool.shutdown()

    class PoolOfOnesOwn:  # wraps a multiprocessing pool, which keeps its context as _ctx
        _ctx = multiprocessing.get_context("fork")

        def submit(self, fn, *args):
            raise AssertionError("not reached")

    with pytest.raises(ValueError, match="PoolOfOnesOwn starts its workers with fork"):
        check_executor(PoolOfOnesOwn())
    for quiet in (None, InProcess(), ThreadPoolExecutor(1)):
        check_executor(quiet)
        assert in_process(quiet) and start_method(quiet) is None
    assert "spawn" in SPAWN_POOL
