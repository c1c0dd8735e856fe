"""The from-scratch peers (nash_lit.peers): Optuna's NSGA-II and TPE as strategies of the driver. Every trial is trained
from scratch within footnote 1's bound and costs what the config says; a killed peer resumes to the same log; a repeated
network is not trained again; budget_images stops them; bad settings are refused before anything trains."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from nash_lit import TrainConfig, synthetic
from nash_lit.operators import satisfies_constraint
from nash_lit.arch import Arch
from nash_lit.peers import PeerConfig, nsga2, tpe
from _helpers import finish, kill_at_random, log_lines, no_training, start_script

SCRIPT = Path(__file__).with_name("_peer_run.py")
N_TRAIN = 64
TRAIN = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    return synthetic(N_TRAIN, 32, 16, seed=0)


def config(**changes):
    return PeerConfig(**{**dict(n_steps=2, population=4, n_epochs=1, seed=0, widths=(16, 32), train=TRAIN), **changes})


@pytest.mark.parametrize("search", [nsga2, tpe])
def test_every_trial_is_trained_from_scratch_within_the_bound(data, search):
    c = config(n_epochs=2)
    result = search(data, c, progress=False)
    log = result.log
    trained = log[log.status == "ok"]
    assert len(log) == c.n_steps * c.population and len(trained) > 0
    assert all(satisfies_constraint(Arch.from_json(a), c.min_convs, c.min_filters) for a in trained.arch)
    assert (trained.recovery_images == 0).all() and all(len(a) == 0 for a in trained.affected)
    assert result.cost.images == len(trained) * c.n_epochs * N_TRAIN  # duplicates cost nothing
    assert result.cost.by_kind["seed"].images == 0  # a peer has no seed network
    assert "\n" not in repr(result) and "images trained" in repr(result)


def test_nsga2_front_and_hypervolume(data):
    result = nsga2(data, config(n_steps=3), progress=False)
    ok = result.log[result.log.status == "ok"]
    points = {(r.val_error, *r.objectives) for r in ok.itertuples()}
    for m in result.front:  # no trained network dominates a member
        p = (m.val_error, *m.objectives)
        assert not any(all(a <= b for a, b in zip(q, p)) and q != p for q in points)
    assert len(result.hypervolume) == 3 and all(b >= a for a, b in zip(result.hypervolume, result.hypervolume[1:]))


def test_a_repeated_network_is_not_trained_again(data):
    "A space of 8 networks (one block per stage, one width, regular or separable): later steps repeat some."
    result = tpe(data, config(n_steps=4, widths=(16,), max_blocks=1), progress=False)
    log = result.log
    dup = log[log.status == "duplicate"]
    assert len(dup) > 0
    by_id = log.set_index("id")
    for r in dup.itertuples():
        same = by_id.loc[int(r.same_as)]
        assert same.status == "ok" and same.arch == r.arch and same.val_error == r.val_error and same.step < r.step
    assert dup.train_images.fillna(0).sum() == 0
    trained_archs = log[log.status == "ok"].arch
    assert trained_archs.is_unique or log[log.status == "ok"].groupby("arch").step.nunique().max() == 1


def test_budget_images_cuts_a_peers_last_step(data, tmp_path):
    "The last step keeps the trials that still fit in the budget; resumed with more budget, the cut step is replayed as it ran."
    c = config(n_steps=4)
    full = nsga2(data, c, progress=False)
    each = c.n_epochs * N_TRAIN  # a trial from scratch
    spent12 = int(full.log[full.log.step <= 2].train_images.fillna(0).sum())
    budget = spent12 + 3 * each - 1  # room for two more trials, not three
    cut = nsga2(data, replace(c, budget_images=budget), run_dir=tmp_path / "cut", progress=False)
    assert cut.log.step.max() == 3 and (cut.log.step == 3).sum() == 2 and cut.cost.images <= budget
    keep = ["id", "step", "child", "trial", "arch", "status", "val_error"]
    first = lambda log: log[log.step <= 2].sort_values("id")[keep].to_dict("records")
    assert first(cut.log) == first(full.log)  # the same search up to the cut
    more = nsga2(data, c, run_dir=tmp_path / "cut", resume=True, progress=False)  # no image budget: on to n_steps
    assert more.log[more.log.step <= 3].sort_values("id")[keep].to_dict("records") == cut.log.sort_values("id")[
        keep
    ].to_dict("records")  # the cut step replayed, not re-planned
    assert (more.log.step == 4).sum() == c.population


def test_kill_and_resume(tmp_path):
    "SIGKILL at random moments, resume each time: the same log and front as an uninterrupted run."
    reference = start_script(SCRIPT, tmp_path / "ref", tmp_path / "ref.json")
    run = tmp_path / "killed"
    kills = kill_at_random(lambda: start_script(SCRIPT, run, tmp_path / "killed.json"), run, 11)  # of 12 log lines
    finish(start_script(SCRIPT, run, tmp_path / "killed.json"))
    finish(reference)
    assert kills >= 3
    got, want = (json.loads((tmp_path / f).read_text()) for f in ("killed.json", "ref.json"))
    assert got == want
    kept = sorted(p.name for p in run.glob("child_*.pt"))
    assert kept == sorted(f"child_{i}.pt" for i in want["front"])  # disk use bounded by the front
    n = log_lines(run)
    finish(start_script(SCRIPT, run, tmp_path / "again.json"))  # resuming a finished run trains nothing
    assert log_lines(run) == n and json.loads((tmp_path / "again.json").read_text()) == want


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(sampler="random"), "PeerConfig.sampler must be one of"),
        (dict(population=0), "PeerConfig.population must be >= 1"),
        (dict(widths=(16, 0)), "PeerConfig.widths must be positive ints"),
        (dict(n_steps=None), "PeerConfig needs a budget"),
        (dict(objectives=("size",)), "unknown ['size']"),
    ],
)
def test_bad_settings_are_refused_before_training(changes, message, monkeypatch, data):
    no_training(monkeypatch)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        nsga2(data, config(**changes), progress=False)
