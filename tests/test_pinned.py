"""Pinned runs: NASH, random search, Pareto-NASH and asynchronous Pareto-NASH, small and on one thread, recorded with
commit 1590f1a before the search-loop refactor (tests/pinned/record.py wrote tests/pinned/<pin>.json). The code must
still give the same log (ids, operators, errors, architectures, sizes), bitwise the same weights of every trained
child, and the same result. Float32 results differ in the last bits with the kernels that ATen, oneDNN, NNPACK and MKL
pick per CPU, and training amplifies them; so each pin runs in a subprocess in its pin environment
(tests/_pinned_run.py: ATen at AVX2, MKL's COMPATIBLE branch, oneDNN and NNPACK off), which any x86-64 CPU with AVX2
reproduces. A second run of each pin, with the caller asking for other kernel levels, must give the same result: the
pin's own settings reach the kernels and win, and oneDNN, whose level the pin leaves to the caller, is not used."""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from _pinned_run import BACKENDS, CAPABILITY, PIN_ENV, PINS, start

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PINNED = {name: json.loads((HERE / "pinned" / f"{name}.json").read_text()) for name in PINS}


def _other_levels() -> dict:
    "The caller's environment asking for other kernel levels: ATen's and MKL's the pin overrides, oneDNN's it leaves."
    onednn = "AVX2" if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() == "SSE41" else "SSE41"
    return {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO", "ONEDNN_MAX_CPU_ISA": onednn}


LEVELS = {"caller": {}, "other": _other_levels()}


def _run(name: str, level: str, out: Path) -> dict:
    "Pin `name` in a subprocess: this checkout's package, the caller's environment with `level`'s changes, PIN_ENV over it."
    base = dict(os.environ, **LEVELS[level])
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    proc = start(name, out, base)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"pin {name} ({level}) failed:\n{err.decode()[-3000:]}"
    return json.loads(out.read_text())


def _wanted(session) -> list:
    "(pin, level) of every selected test of this module, the longest runs first."
    wanted = set()
    for item in session.items:
        if item.module.__name__ != __name__ or not hasattr(item, "callspec"):
            continue
        pin = item.callspec.params["pin"]
        wanted.add((pin, "caller"))
        if item.originalname == "test_same_under_other_kernel_levels":
            wanted.add((pin, "other"))
    return sorted(wanted, key=lambda w: (PINS.index(w[0]), w[1]))  # nash and random search take longest


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    "pin, level -> what the run gave; all the module needs start at once, two at a time (one thread each)."
    tmp = tmp_path_factory.mktemp("pinned")
    with ThreadPoolExecutor(2) as pool:
        futures = {w: pool.submit(_run, *w, tmp / f"{w[0]}_{w[1]}.json") for w in _wanted(request.session)}
        yield lambda pin, level="caller": futures[pin, level].result()
        for f in futures.values():
            f.cancel()


def _check_settings(got: dict, level: str):
    "The run used this checkout's package, and the pin's settings reached torch."
    run = got["run"]
    assert run["package"] == str(ROOT / "nash_lit"), f"the run imported {run['package']}"
    assert {k: run["environment"][k] for k in PIN_ENV} == PIN_ENV
    assert run["backends"] == BACKENDS and run["threads"] == 1
    for k, v in LEVELS[level].items():
        if k not in PIN_ENV:
            assert run["environment"][k] == v, f"{k} did not reach the run"
    assert run["capability"] == CAPABILITY, (
        f"torch runs ATen's {run['capability']} kernels with ATEN_CPU_CAPABILITY={PIN_ENV['ATEN_CPU_CAPABILITY']}: "
        f"a CPU without AVX2 ({run['cpu']}) cannot reproduce the pins"
    )


def _compare_records(got: list, pinned: list):
    assert [r["id"] for r in got] == [r["id"] for r in pinned], "not the same networks logged"
    for ours, theirs in zip(got, pinned):
        assert ours.keys() == theirs.keys()
        for k in theirs:
            assert ours[k] == theirs[k], f"record {theirs['id']}: {k} is {ours[k]!r}, pinned {theirs[k]!r}"


def _tasks(evaluated: list) -> list:
    "Every evaluated task's (rng, weights), in an order that does not depend on the order of submission."
    return sorted((tuple(rng), str(h)) for rng, h in evaluated)


@pytest.mark.parametrize("pin", PINS)
def test_log_matches_the_pin(runs, pin):
    got, pinned = runs(pin), PINNED[pin]
    _check_settings(got, "caller")
    _compare_records(got["records"], pinned["records"])


@pytest.mark.parametrize("pin", PINS)
def test_every_childs_weights_match_the_pin(runs, pin):
    got, pinned = runs(pin), PINNED[pin]
    assert len(got["evaluated"]) == len(pinned["evaluated"]) > 0
    assert all(h is not None for _, h in pinned["evaluated"])  # every pinned task trained
    assert _tasks(got["evaluated"]) == _tasks(pinned["evaluated"]), (
        f"weights differ (recorded with torch {pinned['torch']}, this is {got['run']['torch']})"
    )


@pytest.mark.parametrize("pin", PINS)
def test_result_matches_the_pin(runs, pin):
    got, pinned = runs(pin), PINNED[pin]
    for k, v in pinned["result"].items():
        assert got["result"][k] == v, f"result: {k} differs"
    assert got["result"].keys() == pinned["result"].keys()


@pytest.mark.parametrize("pin", PINS)
def test_same_under_other_kernel_levels(runs, pin):
    "The caller asks for ATen's DEFAULT kernels, MKL's AUTO branch and another oneDNN level: nothing changes."
    caller, other = runs(pin), runs(pin, "other")
    _check_settings(other, "other")
    assert other["run"]["environment"]["ONEDNN_MAX_CPU_ISA"] != caller["run"]["environment"]["ONEDNN_MAX_CPU_ISA"]
    _compare_records(other["records"], caller["records"])
    assert _tasks(other["evaluated"]) == _tasks(caller["evaluated"])
    assert other["result"] == caller["result"]


@pytest.mark.parametrize("pin", ["nash", "random_search"])
def test_result_holds_the_best_ever_beside_the_papers(runs, pin):
    """The result holds the best network ever trained (the lowest validation error of the log, the earlier id on ties),
    its paper_* fields the paper's: NASH's N* (the last step's best child), random search's best child."""
    got = runs(pin)
    result, trained = got["result"], [r for r in got["records"] if r["status"] == "ok"]
    weights = {h for _, h in got["evaluated"]}
    best = min(trained, key=lambda r: (r["val_error"], r["id"]))
    last = max(r["step"] for r in trained)
    paper = (
        min((r for r in trained if r["step"] == last), key=lambda r: (r["val_error"], r["child"]))
        if pin == "nash"
        else best
    )
    assert (result["id"], result["step"], result["val_error"], result["arch"]) == (
        best["id"],
        best["step"],
        best["val_error"],
        best["arch"],
    )
    assert (result["paper_id"], result["paper_step"], result["paper_val_error"], result["paper_arch"]) == (
        paper["id"],
        paper["step"],
        paper["val_error"],
        paper["arch"],
    )
    assert result["weights"] in weights and result["paper_weights"] in weights  # trained children, not copies
    assert (result["weights"] == result["paper_weights"]) == (result["id"] == result["paper_id"])
