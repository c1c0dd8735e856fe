"The run store (nash_lit.runs): atomic files, the append-only log, config checks, checkpoints, executors."
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from nash_lit.arch import Net, seed_arch
from nash_lit.runs import (LOG, InProcess, append_record, atomic_write_text, collect, load_checkpoint, open_run,
                           read_log, read_records, save_checkpoint)


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
    with pytest.raises(ValueError, match="line 2 is not valid JSON"): read_records(tmp_path)


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
