"""Run folders that survive damage (issue 22). A NASH, a Pareto-NASH and an asynchronous Pareto-NASH run are each
killed in the middle of a step; then every file of the folder is damaged in every way a disk or a hand can (deleted,
truncated, garbage, one bit flipped, a value edited, a log line removed, a torn last line) and the run is resumed:
each damage must be named, with the file's path, before anything trains, or repaired where repair is safe. The
undamaged folder must resume (it reaches training), so no check fires on a healthy run."""

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from _helpers import no_training, small_pareto_config, tiny_p0
from nash_lit.arch import seed_arch
from nash_lit.data import synthetic
from nash_lit.hill_climbing import NashConfig, nash
from nash_lit.pareto_async import pareto_nash
from nash_lit.runs import LOG, DiskFull, RunDamaged, read_json, read_records, write_json
from nash_lit.store import RunStore
from nash_lit.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TRAIN = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)


class Killed(BaseException):
    "A kill of the search at a chosen moment (BaseException: nothing in the search catches it)."


def nash_config():
    return NashConfig(n_steps=3, n_child=3, n_op=2, n_epochs=1, seed_epochs=1, calib_size=16, seed=0, train=TRAIN)


SEARCHES = {  # kind -> (start or resume a search in run_dir, appends after which it is killed)
    "nash": (lambda d, data, resume: nash(seed_arch((4, 8, 8)), data, nash_config(), d, resume, progress=False), 6),
    "pareto": (
        lambda d, data, resume: pareto_nash(
            tiny_p0(), data, small_pareto_config(n_pc=4, seed=1), d, resume, progress=False
        ),
        6,
    ),
    "async": (
        lambda d, data, resume: pareto_nash(
            tiny_p0(), data, small_pareto_config(n_pc=4, n_instances=2, seed=2), d, resume, progress=False
        ),
        9,
    ),
}


@pytest.fixture(scope="module")
def data():
    return synthetic(64, 32, 16, seed=0)


@pytest.fixture(scope="module")
def killed_runs(tmp_path_factory, data):
    "kind -> a run folder as a kill in the middle of its second step left it (trained children, an open plan)."
    runs, real = {}, RunStore.append
    for kind, (search, appends) in SEARCHES.items():
        calls = []

        def append(self, record, calls=calls, appends=appends):
            out = real(self, record)
            calls.append(record)
            if len(calls) == appends:
                raise Killed
            return out

        RunStore.append = append
        runs[kind] = tmp_path_factory.mktemp(kind) / "run"
        try:
            with pytest.raises(Killed):
                search(runs[kind], data, False)
        finally:
            RunStore.append = real
    return runs


def _flip(path: Path):
    "One bit flipped: in the middle of the largest tensor's bytes for a checkpoint (a flip in the zip's padding changes nothing read), else in the middle of the file."
    raw = bytearray(path.read_bytes())
    at = len(raw) // 2
    if path.suffix == ".pt":
        with zipfile.ZipFile(path) as z:
            entry = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        local = raw[entry.header_offset :]  # the local header: 30 bytes, then the name and the extra field
        start = (
            entry.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        )
        at = start + entry.file_size // 2
    raw[at] ^= 0x10
    path.write_bytes(bytes(raw))


def _first_number(value, change):
    "`value` with its first number (depth first, `sha256` and `chain` aside) changed by `change`; (new value, done)."
    if isinstance(value, dict):
        out, done = {}, False
        for k, v in value.items():
            if not done and k not in ("sha256", "chain"):
                v, done = _first_number(v, change)
            out[k] = v
        return out, done
    if isinstance(value, list):
        out, done = [], False
        for v in value:
            if not done:
                v, done = _first_number(v, change)
            out.append(v)
        return out, done
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return change(value), True
    return value, False


def _edit(path: Path):
    "A value changed by hand, the file otherwise well formed (its checksum, chain and format kept)."
    if path.suffix == ".pt":
        blob = torch.load(path, weights_only=True)
        first = sorted(blob["state"])[0]
        blob["state"][first] = blob["state"][first] + 1  # the weights edited, the stored checksum kept
        torch.save(blob, path)
    elif path.name == LOG:
        lines = path.read_bytes().splitlines(keepends=True)
        record = json.loads(lines[1])
        record["val_error"] = record["val_error"] / 2 if record.get("val_error") else 0.01
        lines[1] = (json.dumps(record) + "\n").encode()
        path.write_bytes(b"".join(lines))
    else:
        value, done = _first_number(json.loads(path.read_bytes()), lambda x: x + 1)
        assert done, path
        path.write_text(json.dumps(value))


def _remove_line(path: Path):
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:1] + lines[2:]))


DAMAGE = {
    "deleted": lambda p: p.unlink(),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "garbage": lambda p: p.write_bytes(os.urandom(p.stat().st_size)),
    "bit flipped": _flip,
    "value edited": _edit,
}
LOG_DAMAGE = {"line removed": _remove_line}

# Damage that is safely repaired rather than refused, and why. Nothing else may pass.
REPAIRED = {
    ("pareto", "plan_1.json", "deleted"): "the synchronous search re-makes the plan of a generation from its seed",
}


def _cases():
    "(kind, file name, damage) for every file of each kind's killed run; collected without running the searches."
    files = {
        "nash": ["config.json", LOG, "seed.pt", "best.pt", "best_ever.pt", "child_4.pt", "child_5.pt"],
        "pareto": ["config.json", LOG, "seed.pt", "seed_1.pt", "best.pt", "plan_1.json", "child_0.pt", "child_3.pt"],
        "async": [
            "config.json",
            LOG,
            "seed.pt",
            "seed_1.pt",
            "instances.json",
            "plan_0_1.json",
            "child_0.pt",
            "child_4.pt",
        ],
    }
    for kind, names in files.items():
        for name in names:
            for damage in {**DAMAGE, **(LOG_DAMAGE if name == LOG else {})}:
                yield kind, name, damage


def _kind_of(name: str) -> str:
    "A run file's kind: its name with the numbers taken out (child_4.pt -> child_#.pt)."
    return re.sub(r"\d+", "#", name)


def test_the_table_covers_every_kind_of_file_a_killed_run_holds(killed_runs):
    "The table's files exist in the killed runs, and every kind of file those runs hold is in the table."
    table = {}
    for kind, name, _ in _cases():
        table.setdefault(kind, set()).add(name)
    for kind, run in killed_runs.items():
        present = {p.name for p in run.iterdir() if not p.name.startswith(".")}
        assert table[kind] <= present, f"{kind}: {sorted(table[kind] - present)} not in {sorted(present)}"
        missed = {_kind_of(n) for n in present} - {_kind_of(n) for n in table[kind]}
        assert not missed, f"{kind}: the table damages no {sorted(missed)}"


def _resume(kind, run, data, monkeypatch):
    "What resuming `run` does: 'trains' when it gets as far as training, else the error it raises."
    no_training(monkeypatch)
    try:
        SEARCHES[kind][0](run, data, True)
    except pytest.fail.Exception:
        return "trains"
    except Exception as e:  # noqa: BLE001 - the table records whatever comes out
        return e
    return "finished"


@pytest.mark.parametrize("kind", list(SEARCHES))
def test_an_undamaged_killed_run_resumes(kind, killed_runs, data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(killed_runs[kind], run)
    assert _resume(kind, run, data, monkeypatch) == "trains"


@pytest.mark.parametrize("kind, name, damage", list(_cases()))
def test_damage_is_named_before_training(kind, name, damage, killed_runs, data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(killed_runs[kind], run)
    path = run / name
    {**DAMAGE, **LOG_DAMAGE}[damage](path)
    outcome = _resume(kind, run, data, monkeypatch)
    if (kind, name, damage) in REPAIRED:
        assert outcome == "trains", outcome
        assert read_json(path) == read_json(killed_runs[kind] / name)  # re-made as it was, before anything trained
        return
    assert isinstance(outcome, (RunDamaged, ValueError)), f"{kind}/{name} {damage}: {outcome!r}"
    assert str(path) in str(outcome), f"{kind}/{name} {damage}: the message does not name the file: {outcome}"


@pytest.mark.parametrize("kind", list(SEARCHES))
def test_a_torn_last_line_is_repaired(kind, killed_runs, data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(killed_runs[kind], run)
    complete = read_records(run)
    with open(run / LOG, "ab") as f:
        f.write(b'{"id": 99, "step": 1, "val_err')  # a kill in the middle of a write
    assert _resume(kind, run, data, monkeypatch) == "trains"
    assert read_records(run)[: len(complete)] == complete  # the torn line is gone (a resume may log untrained children)


def test_a_json_file_keeps_its_checksum(tmp_path):
    write_json(tmp_path / "a.json", {"ids": [1, 2], "x": 0.5})
    assert read_json(tmp_path / "a.json") == {"ids": [1, 2], "x": 0.5}
    (tmp_path / "b.json").write_text(json.dumps({"ids": [1, 2]}))  # written before checksums: read as it is
    assert read_json(tmp_path / "b.json") == {"ids": [1, 2]}


def test_a_log_before_the_chain_reads_and_continues(tmp_path):
    "A log written before records were chained reads as it is, and chained records may follow it."
    (tmp_path / LOG).write_text('{"id": 0, "step": 0, "child": 0, "status": "ok"}\n')
    from nash_lit.runs import append_record

    append_record(tmp_path, dict(id=1, step=1, child=0, status="ok"))
    assert [r["id"] for r in read_records(tmp_path)] == [0, 1]
    assert "chain" not in read_records(tmp_path)[1]


def _immutable(path: Path, on: bool) -> bool:
    "chattr +i (-i): not even root may write it; False where the file system does not allow it."
    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr to make a file unwritable for root too")
@pytest.mark.parametrize("what", ["folder", "log"])
def test_a_folder_or_log_it_cannot_write_is_named(what, killed_runs, data, tmp_path, monkeypatch):
    "A folder or log this process may not write is named before anything trains (chattr +i: root is refused too)."
    run = tmp_path / "run"
    shutil.copytree(killed_runs["nash"], run)
    target = run if what == "folder" else run / LOG
    if not _immutable(target, True):
        pytest.skip("this file system does not allow chattr +i")
    try:
        outcome = _resume("nash", run, data, monkeypatch)
    finally:
        _immutable(target, False)
    assert isinstance(outcome, RunDamaged) and f"{target} is not writable" in str(outcome), repr(outcome)


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a small tmpfs needs root")
def test_a_full_disk_is_named_and_the_run_resumes_identical(tmp_path, data):
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "4m"):
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        whole = nash(seed_arch((4, 8, 8)), data, nash_config(), tmp_path / "whole", progress=False)
        filler = disk / "filler"
        with open(filler, "wb") as f:  # leave room for the config, the seed and a few checkpoints
            f.write(b"\0" * (4 * 2**20 - 160 * 2**10))
        with pytest.raises(DiskFull, match=r"the disk is full: writing .*run.* free some space and resume"):
            nash(seed_arch((4, 8, 8)), data, nash_config(), disk / "run", progress=False)
        assert read_records(disk / "run")  # it got somewhere before the disk filled
        filler.unlink()
        resumed = nash(seed_arch((4, 8, 8)), data, nash_config(), disk / "run", resume=True, progress=False)
        timing = ("search_seconds", "time", "train_seconds", "recovery_seconds")
        untimed = lambda d: [{k: v for k, v in r.items() if k not in timing} for r in read_records(d)]
        assert untimed(disk / "run") == untimed(tmp_path / "whole")
        assert (resumed.id, resumed.val_error) == (whole.id, whole.val_error)
    finally:
        subprocess.run(["umount", str(disk)])


def test_checksums_hold_for_values_json_changes(tmp_path):
    "Integer keys (JSON makes them strings, sorted differently), NaN and nesting: what is written verifies when read."
    from nash_lit.runs import append_record

    value = {"p": {3: 0.25, 10: 0.75}, "x": float("nan"), "ids": (1, 2)}
    write_json(tmp_path / "a.json", value)
    assert read_json(tmp_path / "a.json")["p"] == {"3": 0.25, "10": 0.75}
    for i in range(3):
        append_record(
            tmp_path, dict(id=i, step=0, child=i, status="ok", probs={3: 0.5, 10: 0.5}, val_error=float("nan"))
        )
    assert [r["id"] for r in read_records(tmp_path)] == [0, 1, 2]


def test_a_resume_on_other_data_is_refused_naming_both(killed_runs, data, tmp_path, monkeypatch):
    "Issue 23, point 2: the run records its data; other data is refused before training, unless asked for."
    run = tmp_path / "run"
    shutil.copytree(killed_runs["nash"], run)
    stored = json.loads((run / "config.json").read_text())["data"]
    assert stored["shape"] == [3, 32, 32] and (stored["train"], stored["val"]) == (64, 32), stored
    other = synthetic(64, 32, 16, seed=1)  # the same shapes and sizes, other images
    no_training(monkeypatch)
    with pytest.raises(ValueError, match=r"it was run on other data \(sha256 '[0-9a-f]+' then, '[0-9a-f]+' now\)"):
        nash(seed_arch((4, 8, 8)), other, nash_config(), run, resume=True, progress=False)
    with pytest.raises(pytest.fail.Exception, match="before the mistake was found"):  # on purpose: it trains
        nash(seed_arch((4, 8, 8)), other, nash_config(), run, resume="other-data", progress=False)
    assert json.loads((run / "config.json").read_text())["data"]["sha256"] != stored["sha256"]  # and says so
    with pytest.raises(ValueError, match="resume must be one of"):
        nash(seed_arch((4, 8, 8)), data, nash_config(), run, resume="yes", progress=False)


def test_a_resume_by_another_search_names_the_run_it_holds(killed_runs, data, tmp_path, monkeypatch):
    "Issue 23, point 4: pareto_nash(resume=True) on a NASH run says what the folder holds, not every differing field."
    run = tmp_path / "run"
    shutil.copytree(killed_runs["nash"], run)
    no_training(monkeypatch)
    with pytest.raises(ValueError, match=r"it holds a nash_lit\.nash/\d run .*, not a nash_lit\.pareto/\d one"):
        SEARCHES["pareto"][0](run, data, True)
