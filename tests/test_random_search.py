"""Random search (nash_lit.hill_climbing.random_search), Table 1's control: NASH's operator chains on the seed, children trained
from scratch, through the run store, resumable."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import nash_lit.store as ST  # where RunStore.append finds append_record
from nash_lit.arch import Net, seed_arch
from nash_lit.data import synthetic
from nash_lit.evaluation import calibration_batch, child_seeds
from nash_lit.hill_climbing import NashConfig, nash, random_search
from nash_lit.operators import generate_child
from nash_lit.runs import RunDamaged, read_records
from nash_lit.training import TrainConfig

TRAIN = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)
CONFIG = NashConfig(n_steps=2, n_child=3, n_op=2, n_epochs=1, seed_epochs=1, calib_size=16, seed=4, train=TRAIN)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    return synthetic(64, 32, 32, seed=0)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    run = tmp_path_factory.mktemp("rs") / "run"
    return random_search(seed_arch((4, 8, 8)), data, CONFIG, run_dir=run), run


def test_log_and_result(reference):
    result, run = reference
    log = result.log
    assert sorted(log.id) == list(range(6)) and list(log.status) == ["ok"] * 6
    assert sorted(zip(log.step, log.child)) == [(s, j) for s in (1, 2) for j in range(3)]
    assert log.parent.isna().all()  # every chain starts from the untrained seed, which is not logged
    best = log.sort_values(["val_error", "step", "child"]).iloc[0]
    assert (result.id, result.step, result.val_error) == (int(best.id), int(best.step), float(best.val_error))
    assert result.arch.to_json() == best.arch
    # the control returns the best child of all steps: the paper's fields name the same network
    assert (result.paper_id, result.paper_val_error, result.paper_step) == (result.id, result.val_error, result.step)
    assert result.paper_net is result.net and "the control's best child" in repr(result)
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "best_ever.pt", "config.json", "log.jsonl", "seed.pt"]
    assert ST.checkpoint_meta(run / "best.pt")["step"] == 2  # best.pt: the state after the last step


def test_children_are_the_seeds_chains(reference, data):
    "Child j of step i is generate_child(seed, n_op * i, T, child_seeds(...)[0] + [2]), so its size follows NASH's step i."
    result, _ = reference
    torch.manual_seed(CONFIG.seed)
    seed = Net(seed_arch((4, 8, 8)))
    calib = calibration_batch(data, CONFIG.calib_size, CONFIG.seed)
    for r in result.log.itertuples():
        rng = np.random.default_rng(child_seeds(CONFIG.seed, r.step, r.child)[0] + [2])
        child = generate_child(seed, CONFIG.n_op * r.step, CONFIG.operators, rng, calib)
        assert child.net.arch.to_json() == r.arch and list(child.ops) == list(r.ops)


def test_children_are_not_nashs(reference, data):
    "Its own stream: the chains differ from the ones NASH draws for the same (seed, step, child)."
    result, _ = reference
    ours = nash(seed_arch((4, 8, 8)), data, replace(CONFIG, n_steps=1))
    step1 = result.log[result.log.step == 1].sort_values("child")
    assert list(step1.arch) != list(ours.log[ours.log.step == 1].sort_values("child").arch)


def test_resume_after_a_crash(reference, data, tmp_path, monkeypatch):
    result, _ = reference
    real = ST.append_record

    def crash(run_dir, record):
        real(run_dir, record)
        if record["id"] == 3:
            raise SystemExit("killed")

    monkeypatch.setattr(ST, "append_record", crash)
    with pytest.raises(SystemExit):
        random_search(seed_arch((4, 8, 8)), data, CONFIG, run_dir=tmp_path)
    monkeypatch.setattr(ST, "append_record", real)
    assert len(read_records(tmp_path)) == 4
    again = random_search(seed_arch((4, 8, 8)), data, CONFIG, run_dir=tmp_path, resume=True)
    assert (again.id, again.step, again.val_error, again.arch) == (
        result.id,
        result.step,
        result.val_error,
        result.arch,
    )
    assert [r["id"] for r in read_records(tmp_path)] == list(range(6))
    assert all(torch.equal(a, b) for a, b in zip(again.net.state_dict().values(), result.net.state_dict().values()))
    n = len(read_records(tmp_path))
    random_search(seed_arch((4, 8, 8)), data, CONFIG, run_dir=tmp_path, resume=True)  # finished: trains nothing
    assert len(read_records(tmp_path)) == n


def test_resume_is_checked(reference, data):
    _, run = reference
    with pytest.raises(ValueError, match=r"holds a nash_lit\.random_search/\d run .*not a nash_lit\.nash/\d one"):
        nash(seed_arch((4, 8, 8)), data, CONFIG, run_dir=run, resume=True)
    (run / "seed.pt").rename(run / "seed.bak")
    try:
        with pytest.raises(RunDamaged, match=r"seed\.pt is missing"):
            random_search(seed_arch((4, 8, 8)), data, CONFIG, run_dir=run, resume=True)
    finally:
        (run / "seed.bak").rename(run / "seed.pt")


def test_needs_a_step(data):
    with pytest.raises(ValueError, match="n_steps >= 1"):
        random_search(seed_arch((4, 8, 8)), data, replace(CONFIG, n_steps=0))
