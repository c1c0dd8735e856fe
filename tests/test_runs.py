"The run store (nash_lit.runs): atomic files, the append-only log, config checks, checkpoints, RunStore, executors."
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from nash_lit.arch import Net, seed_arch
from nash_lit.runs import (BEST, LOG, RECORD, SEED, InProcess, RunDamaged, RunStore, append_record, atomic_write_text,
                           check_run_files, child_checkpoint, collect, load_checkpoint, open_run, read_log, read_records,
                           save_checkpoint, step_ids)


def test_atomic_write_leaves_no_temporary(tmp_path):
    for text in ("a", "bb"): atomic_write_text(tmp_path / "f.json", text)
    assert (tmp_path / "f.json").read_text() == "bb"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_failed_write_keeps_the_old_file(tmp_path):
    from nash_lit.runs import atomic_write
    atomic_write_text(tmp_path / "f", "old")
    def broken(f):
        f.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError): atomic_write(tmp_path / "f", broken)
    assert (tmp_path / "f").read_text() == "old"


@pytest.mark.parametrize("torn", [b'{"id": 3, "val', b"{", b'{"id": 3}'])  # the last is complete JSON without newline
def test_torn_last_line(tmp_path, torn):
    for i in range(3): append_record(tmp_path, {"id": i, "val_error": 0.1 * i})
    with open(tmp_path / LOG, "ab") as f: f.write(torn)
    assert [r["id"] for r in read_records(tmp_path)] == [0, 1, 2]
    assert (tmp_path / LOG).read_bytes().endswith(torn)  # reading alone changes nothing
    read_records(tmp_path, repair=True)
    assert (tmp_path / LOG).read_bytes().endswith(b"}\n")
    append_record(tmp_path, {"id": 3})
    assert [r["id"] for r in read_records(tmp_path)] == [0, 1, 2, 3]


def test_damaged_middle_line_is_an_error(tmp_path):
    (tmp_path / LOG).write_text('{"id": 0}\n{"id": \n{"id": 2}\n')
    with pytest.raises(RunDamaged, match=r"log\.jsonl: line 2 is not valid JSON.*delete that line"): read_records(tmp_path)


@pytest.mark.parametrize("line, says", [
    (b"null", "is null, not a record"), (b"[1, 2]", "is an array, not a record"),
    (b'"text"', "is a string"), (b"7", "is a number"),
    (b'{"x": 1}', "is not a search's record: it lacks a valid id, step, child, status"),
    (b'{"id": 1, "step": 1, "child": 0}', "lacks a valid status"),
    (b'{"id": true, "step": 1, "child": 0, "status": "ok"}', "lacks a valid id "),
    (b'{"id": 1, "step": 1.0, "child": 0, "status": "ok"}', "lacks a valid step "),
])
def test_lines_that_are_not_records_are_named(tmp_path, line, says):
    append_record(tmp_path, dict(id=0, step=0, child=0, status="ok"))
    with open(tmp_path / LOG, "ab") as f: f.write(line + b"\n")
    with pytest.raises(RunDamaged, match=rf"{tmp_path}/log\.jsonl: line 2 .*{says}.*delete that line if it was added by hand"):
        read_records(tmp_path, fields=RECORD)
    if not line.startswith(b"{"):  # not an object: an error whether or not fields are asked for
        with pytest.raises(RunDamaged, match=says): read_records(tmp_path)


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
    with pytest.raises(FileExistsError, match="resume=True"): open_run(tmp_path / "r", config)
    open_run(tmp_path / "r", config, resume=True)  # tuples and lists compare equal
    with pytest.raises(ValueError, match=r"train.lr_max \(stored 0.05, given 0.1\)"):
        open_run(tmp_path / "r", {**config, "train": {"lr_max": 0.1, "progress": True}}, resume=True)
    with pytest.raises(ValueError, match="extra"):
        open_run(tmp_path / "r", {**config, "extra": 1}, resume=True)
    open_run(tmp_path / "r", {**config, "train": {"lr_max": 0.05, "progress": False}}, resume=True,
             ignore=("train.progress",))
    open_run(tmp_path / "new", config, resume=True)  # resuming a run that never started starts it
    (tmp_path / "orphan").mkdir(); (tmp_path / "orphan" / LOG).write_text("")
    with pytest.raises(FileExistsError, match="no config.json"): open_run(tmp_path / "orphan", config)


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = Net(seed_arch((4, 8, 8)))
    save_checkpoint(tmp_path / "n.pt", net, step=2, id=7)
    back, meta = load_checkpoint(tmp_path / "n.pt")
    assert meta == {"step": 2, "id": 7} and back.arch == net.arch
    for (k, a), (k2, b) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(2, 3, 32, 32)
    net.eval(); back.eval()
    assert torch.equal(net(x), back(x))


def test_in_process_executor_is_lazy_and_keeps_errors():
    calls = []
    def f(x):
        calls.append(x)
        if x == 2: raise KeyError("two")
        return x * 10
    ex = InProcess()
    futures = {x: ex.submit(f, x) for x in range(4)}
    assert calls == []
    got = {}
    for k, fut in collect(futures):
        try: got[k] = fut.result()
        except KeyError as e: got[k] = repr(e)
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
            if k == n // 2: assert step_ids(records, step, n) == ids
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
            if step == n_steps: return store  # the step in progress: one child done
        store.save_best(net, step, id=ids[0], val_error=0.5)
        for i in ids: store.delete(child_checkpoint(i))
    return store


def test_consistent_files_resume(tmp_path):
    store = _run_files(tmp_path)
    again = RunStore(tmp_path, {"x": 1}, resume=True)
    assert again.best == store.best and again.best["step"] == 1 and again.best["logged"] == 4
    assert list(again.finished(2)) == [0] and again.ids(2, 2) == [4, 5]
    assert again.seconds() >= store.records[-1]["search_seconds"]


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


@pytest.mark.parametrize("cut", ["lines", "mid-line"])
def test_log_cut_in_the_middle_is_named(tmp_path, cut):
    _run_files(tmp_path, open_step=False)
    raw = (tmp_path / LOG).read_bytes()
    lines = raw.split(b"\n")
    (tmp_path / LOG).write_bytes(b"\n".join(lines[:2]) + b"\n" if cut == "lines" else raw[:len(raw) // 2])
    with pytest.raises(RunDamaged, match=r"log\.jsonl ends before what .*best\.pt records.*stops in step 0"):
        RunStore(tmp_path, {"x": 1}, resume=True)
    assert (tmp_path / LOG).read_bytes() == (b"\n".join(lines[:2]) + b"\n" if cut == "lines" else raw[:len(raw) // 2]), \
        "a refused resume changes no file"


def test_torn_last_line_is_repaired_by_the_store(tmp_path):
    _run_files(tmp_path)
    with open(tmp_path / LOG, "ab") as f: f.write(b'{"id": 5, "st')
    store = RunStore(tmp_path, {"x": 1}, resume=True)
    assert len(store.records) == 5 and (tmp_path / LOG).read_bytes().endswith(b"}\n")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    store = RunStore(tmp_path, {})
    with pytest.raises(RunDamaged, match="nope.pt is missing"): store.load("nope.pt")
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


@pytest.mark.parametrize("extra, says", [
    (dict(id=9, step=1, child=0), r"records 3 and 6 have the same step and child: id 2 \(step 1, child 0\) and id 9"),
    (dict(id=2, step=2, child=1), r"records 3 and 6 have the same id: id 2 \(step 1, child 0\) and id 2 \(step 2"),
    (dict(id=9, step=1, child=2), r"record 6 \(id 9, step 1, child 2\) comes after the 4 records that .*best\.pt saw"),
    (dict(id=9, step=0, child=2), r"record 6 \(id 9, step 0, child 2\) comes after"),
])
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
