"""NASH with the four exact operators gives, after the house refactor (issue 8), exactly the run recorded with
commit 4f60c3c before it: the same ids, operators, errors, architectures, and bitwise the same weights of every
child. The recording script is tests/pinned/record_4f60c3c.py; its output is tests/pinned/nash_4f60c3c.json."""
import json
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

from nash_lit.arch import seed_arch
from nash_lit.data import synthetic
from nash_lit.nash import NashConfig, nash
from nash_lit.train import TrainConfig
from _helpers import fingerprint

PINNED = json.loads((Path(__file__).parent / "pinned" / "nash_4f60c3c.json").read_text())




class Hashing:
    "An in-process executor that notes a fingerprint of every trained child's weights."
    in_process = True  # tasks run here: an in-memory Data does not travel
    def __init__(self): self.hashes = []
    def submit(self, fn, task, *args, **kwargs):
        out = fn(task, *args, **kwargs)
        state = out.state if hasattr(out, "state") else out.get("state")
        self.hashes.append((list(task.rng), None if state is None else fingerprint(state)))
        future = Future()
        future.set_result(out)
        return future


@pytest.fixture(scope="module")
def run():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = NashConfig(n_steps=3, n_child=3, n_op=3, n_epochs=2, seed_epochs=2, calib_size=32, seed=5,
                         operators=("deeper", "wider", "add_skip", "concat_skip"),
                         train=TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False))
        executor = Hashing()
        result = nash(seed_arch((8, 16, 16)), synthetic(512, 128, 32, seed=0), cfg, executor=executor, progress=False)
    finally:
        torch.set_num_threads(threads)
    return result, executor.hashes


def test_log_matches_the_pinned_run(run):
    result, _ = run
    got = [dict(id=int(r.id), step=int(r.step), child=int(r.child), ops=list(r.ops), val_error=float(r.val_error),
                arch=r.arch, params=int(r.params), flops=int(r.flops)) for r in result.log.itertuples()]
    got.sort(key=lambda r: r["id"])  # the log is in order of completion
    assert len(got) == len(PINNED["records"]) == 10
    for ours, pinned in zip(got, PINNED["records"]): assert ours == pinned


def test_every_childs_weights_match_the_pinned_run(run):
    _, hashes = run
    assert sorted(map(tuple, ((tuple(r), h) for r, h in hashes))) == \
        sorted(map(tuple, ((tuple(r), h) for r, h in PINNED["hashes"])))


def test_result_matches_the_pinned_run(run):
    "The pinned result is the paper's N* (the last step's best child): the result's paper_* fields."
    result, _ = run
    best = PINNED["best"]
    assert (result.paper_id, result.paper_step, result.paper_val_error) == (best["id"], best["step"], best["val_error"])
    assert fingerprint(result.paper_net.state_dict()) == best["weights"]


def test_best_ever_is_the_lowest_error_of_the_log(run):
    "The result itself holds the best network ever trained: the lowest validation error of the log, the earlier id on ties."
    result, _ = run
    lowest = min(PINNED["records"], key=lambda r: (r["val_error"], r["id"]))
    assert result.holds == "best-ever"
    assert (result.id, result.step, result.val_error) == (lowest["id"], lowest["step"], lowest["val_error"])
    assert result.arch.to_json() == lowest["arch"]
    if lowest["id"] == PINNED["best"]["id"]:  # here the paper's N* is also the best ever: the same weights
        assert fingerprint(result.net.state_dict()) == PINNED["best"]["weights"]
