"Pareto-NASH (nash_lit.pareto, nash_lit.pareto_run): kill-and-resume, invalid configs, failures as data, the generation unit, disk use."

import json
from importlib import import_module
from pathlib import Path

import numpy as np
import pytest
import torch

import nash_lit.pareto as P
import nash_lit.pareto_run as PR
from nash_lit import pareto_nash
from nash_lit.front import front_history
from nash_lit.arch import seed_arch
from nash_lit.data import as_spec, synthetic
from nash_lit.runs import read_records
from nash_lit.store import checkpoint_meta
from nash_lit.store import RunStore
from nash_lit.training import TrainConfig, TrainingDiverged
from _helpers import (
    kill_at_random,
    small_pareto_config,
    tiny_p0,
    crash_after_best,
    finish,
    gray_data,
    log_lines,
    no_training,
    start_script,
)
import nash_lit.evaluation as E
import nash_lit.driver as D

SCRIPT = Path(__file__).with_name("_pareto_run.py")
P0 = tiny_p0()

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def small_config(**changes):
    return small_pareto_config(**changes)


@pytest.fixture(scope="module")
def data():
    return synthetic(64, 32, 16, seed=0)


def start(run_dir, seed, out):
    return start_script(SCRIPT, run_dir, seed, out)


def test_kill_and_resume(tmp_path):
    "SIGKILL at >= 3 random moments, resume each time: the final front equals an uninterrupted run's."
    seed = 1
    reference = start(tmp_path / "ref", seed, tmp_path / "ref.json")
    run = tmp_path / "killed"
    kills = kill_at_random(lambda: start(run, seed, tmp_path / "killed.json"), run, 26)  # of 27 log lines
    finish(start(run, seed, tmp_path / "killed.json"))
    finish(reference)
    assert kills >= 3
    got, want = (json.loads((tmp_path / f).read_text()) for f in ("killed.json", "ref.json"))
    assert got == want
    for r in (run, tmp_path / "ref"):
        records = read_records(r)
        assert sorted((x["step"], x["child"]) for x in records) == [(0, j) for j in range(3)] + [
            (g, j) for g in (1, 2, 3) for j in range(8)
        ]
        kept = sorted(p.name for p in Path(r).glob("child_*.pt"))
        assert kept == sorted(f"child_{m['id']}.pt" for m in want["front"])  # disk use bounded by the front
        assert not list(Path(r).glob("plan_*.json"))
    n = log_lines(run)
    finish(start(run, seed, tmp_path / "again.json"))  # resuming a finished run trains nothing
    assert log_lines(run) == n and json.loads((tmp_path / "again.json").read_text()) == want


def test_a_kill_at_every_write_of_p0_resumes(tmp_path, monkeypatch, data):
    "P0 is stored network by network; killed after any of those writes, the run resumes and ends as an unkilled one."
    config = small_config(n_gen=1)
    want = pareto_nash(P0, data, config, run_dir=tmp_path / "ref", progress=False)
    real = RunStore.save
    for k in range(1, len(P0)):  # after the last write P0 is stored: the kills that matter come before it
        saved = []

        def killed_after_k(store, name, net, **meta):
            real(store, name, net, **meta)
            saved.append(name)
            if meta.get("role") == "P0" and len(saved) == k:
                raise SystemExit("killed")

        monkeypatch.setattr(RunStore, "save", killed_after_k)
        run = tmp_path / f"killed{k}"
        with pytest.raises(SystemExit):
            pareto_nash(P0, data, config, run_dir=run, progress=False)
        monkeypatch.setattr(RunStore, "save", real)
        got = pareto_nash(P0, data, config, run_dir=run, resume=True, progress=False)
        assert [(m.id, m.val_error) for m in got.front] == [(m.id, m.val_error) for m in want.front]


@pytest.mark.parametrize(
    "changes, error, message",
    [
        (dict(n_pc=4, n_ac=5), ValueError, "ParetoConfig.n_ac (5) must be <= n_pc (4)"),
        (dict(objectives=("log_params", "size")), ValueError, "unknown ['size']"),
        (dict(operators=("deeper", "grow")), ValueError, "ParetoConfig.operators: unknown operator 'grow'"),
        (dict(n_op=(3, 2)), ValueError, "ParetoConfig.n_op must satisfy 1 <= fewest <= most"),
        (dict(n_op=(0, 2)), ValueError, "ParetoConfig.n_op must satisfy"),
        (dict(n_op=3), TypeError, "ParetoConfig.n_op must be (fewest, most)"),
        (dict(n_op=(1, 2.5)), TypeError, "ParetoConfig.n_op[1] must be an int, got 2.5 (float)"),
        (dict(sampling="inverse"), ValueError, "ParetoConfig.sampling must be one of"),
        (dict(reference=(1.0,)), ValueError, "ParetoConfig.reference must have 2 values"),
        (dict(reference=(0.0, 20.0)), ValueError, "ParetoConfig.reference's error coordinate must be > 0"),
        (dict(reference=(1.0, float("nan"))), ValueError, "ParetoConfig.reference[1] must be finite"),
        (dict(reference=(1.0, "20")), TypeError, "ParetoConfig.reference[1] must be a real number, got '20' (str)"),
        (dict(n_ac=0), ValueError, "ParetoConfig.n_ac must be >= 1, got 0"),
        (dict(n_gen=-1), ValueError, "ParetoConfig.n_gen must be >= 0, got -1"),
        (dict(n_gen=2.5), TypeError, "ParetoConfig.n_gen must be an int, got 2.5 (float)"),
        (dict(seed=True), TypeError, "ParetoConfig.seed must be an int, got True (bool)"),
        (dict(seed=-1), ValueError, "ParetoConfig.seed must be >= 0"),
        (dict(objectives=()), ValueError, "objectives: at least one"),
        (dict(max_failed_generations=0), ValueError, "ParetoConfig.max_failed_generations must be >= 1"),
        (dict(train="fast"), ValueError, "train must be a TrainConfig"),
        (dict(operators=(P.ParetoConfig,)), ValueError, "ParetoConfig.operators must be given by name"),
    ],
)
def test_invalid_configs(changes, error, message):
    "Checked by check_setting, as TrainConfig is: the message names ParetoConfig's field; a wrong type is a TypeError."
    with pytest.raises(error) as e:
        small_config(**changes)
    assert message in str(e.value)


def test_counts_are_stored_as_ints():
    config = small_config(n_gen=np.int64(2), n_op=(np.int32(1), 2), reference=(1, 20))
    assert type(config.n_gen) is int and all(type(v) is int for v in config.n_op)
    assert config.reference == (1.0, 20.0) and json.dumps(config.to_dict(), default=str)


def test_reference_the_seeds_do_not_dominate_fails_before_training(tmp_path, data, monkeypatch):
    monkeypatch.setattr(D, "evaluate_child", lambda task: pytest.fail("trained before the config was checked"))
    with pytest.raises(ValueError, match=r"reference: P0 network \d does not dominate it in \['log_params'\]"):
        pareto_nash(P0, data, small_config(reference=(1.0, 8.0)), run_dir=tmp_path)
    assert not (tmp_path / "log.jsonl").exists()


def test_proposals_are_cheap_and_logged(tmp_path, data, monkeypatch):
    "Only P0 and the accepted children are evaluated; every proposal is logged with what Figures 3-4 need."
    calls, real = [], D.evaluate_child
    monkeypatch.setattr(D, "evaluate_child", lambda task: calls.append(task.n_op) or real(task))
    config = small_config()
    result = pareto_nash(P0, data, config, run_dir=tmp_path)
    assert len(calls) == len(P0) + config.n_gen * config.n_ac
    log = result.log
    assert len(log) == len(P0) + config.n_gen * config.n_pc
    assert log.accepted.sum() == len(P0) + config.n_gen * config.n_ac
    assert set(log[~log.accepted].status) <= {"rejected", "invalid"} and set(log[log.accepted].status) == {"ok"}
    for col in ("id", "parent", "step", "ops", "arch", "objectives", "val_error", "train_seconds", "status"):
        assert col in log
    for _, r in log[log.step > 0].iterrows():
        assert 1 <= r.n_op <= 3 and r.parent in set(log.id) and r.ops
    assert len(result.hypervolume) == config.n_gen + 1
    assert all(b >= a for a, b in zip(result.hypervolume, result.hypervolume[1:]))
    history = front_history(log)
    assert sorted(history[config.n_gen].id) == sorted(m.id for m in result.front)


def test_generation_fed_in_any_order(tmp_path, data):
    "A generation's children may finish in any order: the closed front is the same."
    config = small_config(n_gen=0)
    fronts = []
    for name, order in (("fwd", 1), ("rev", -1)):
        pareto_nash(P0, data, config, run_dir=tmp_path / name)
        store = RunStore(tmp_path / name, json.loads((tmp_path / name / "config.json").read_text()), resume=True)
        front, more, spec = PR.front_of(store), small_config(n_pc=6, n_ac=4), as_spec(data)
        plan = PR.make_plan(more, spec, front, 1)
        gen = PR.Generation(store, more, spec, front, 1, plan, store.ids(1, len(plan["proposals"])))
        todo, run = gen.as_plan(), D.Run(store, more, spec, len(data.y_train), None, None)
        for j, task in list(todo.tasks.items())[::order]:
            run.log_child(todo, j, E.evaluate_child(task))
        new, n = gen.close()
        assert n == 4
        fronts.append([(m.id, m.val_error, m.objectives) for m in new])
    assert fronts[0] == fronts[1]


def _failing_train(fail):
    real = E.train

    def fake(net, data, config, **kwargs):
        if fail(config):
            raise TrainingDiverged("loss became nan")
        return real(net, data, config, **kwargs)

    return fake


def test_failed_children_are_data(tmp_path, data, monkeypatch):
    "A generation whose every child fails leaves the front unchanged; too many in a row stop with a clear error."
    p0_seeds = {E.child_seeds(0, 0, j)[1] for j in range(len(P0))}
    monkeypatch.setattr(E, "train", _failing_train(lambda c: c.seed not in p0_seeds and c.epochs == 1))
    config = small_config(n_gen=5, max_failed_generations=2)
    with pytest.raises(D.SearchFailed, match="2 consecutive generations \\(up to 2\\) trained no child"):
        pareto_nash(P0, data, config, run_dir=tmp_path)
    records = read_records(tmp_path)
    assert {r["status"] for r in records if r["step"] > 0 and r["accepted"]} == {"diverged"}
    best = checkpoint_meta(tmp_path / "best.pt")
    assert best["failed"] == 2 and len(set(best["hypervolume"])) == 1  # the front did not move
    with pytest.raises(D.SearchFailed, match="consecutive failed generations"):  # and resuming says so again
        pareto_nash(P0, data, config, run_dir=tmp_path, resume=True)


def test_every_seed_failing_is_a_clear_error(tmp_path, data, monkeypatch):
    monkeypatch.setattr(E, "train", _failing_train(lambda c: True))
    with pytest.raises(D.SearchFailed, match="every network of P0 failed"):
        pareto_nash(P0, data, small_config(), run_dir=tmp_path)


def test_uniform_sampling_and_default_p0(tmp_path, data):
    result = pareto_nash(P0[:2], data, small_config(n_gen=1, sampling="uniform"), run_dir=tmp_path)
    assert len(result.front) >= 1
    p0 = PR.default_p0()
    assert [round(E.n_params(n.arch), -3) for n in p0] == [13000, 46000, 95000, 374000]


def test_a_non_finite_objective_is_no_proposal(tmp_path):
    "A user's objective that fails (NaN, inf) on some networks: those proposals are redrawn or invalid, never a crash."
    import math
    from nash_lit.arch import n_params
    from nash_lit.front import OBJECTIVES, register_objective
    from nash_lit import ParetoConfig, pareto_nash

    register_objective(
        "nan_when_big",
        lambda net: math.nan if n_params(net.arch) > 6000 else math.log(n_params(net.arch)),
        reference=100.0,
        weights=False,
        overwrite=True,
    )
    data = synthetic(64, 32, 16, seed=0, size=8)  # the networks below take 8x8 images
    try:
        p0 = [seed_arch((16, 16, 16), size=8)]
        cfg = ParetoConfig(
            n_gen=2,
            n_pc=8,
            n_ac=2,
            n_epochs=1,
            seed_epochs=1,
            recovery_epochs=1,
            calib_size=16,
            objectives=("nan_when_big",),
            train=TrainConfig(batch_size=32, progress=False),
        )
        result = pareto_nash(p0, data, cfg)
        for objectives in result.log.objectives.dropna():
            assert all(math.isfinite(v) for v in objectives)
        big = [seed_arch((64, 64, 64), size=8)]
        with pytest.raises(ValueError, match="objectives: .*not finite"):
            pareto_nash(big, data, cfg)
    finally:
        OBJECTIVES.pop("nan_when_big")


def test_a_finished_run_is_extended(tmp_path, data):
    "Resumed with a larger n_gen, a finished run trains the missing generations: as if it had run that long."
    from _helpers import fingerprint

    pareto_nash(P0, data, small_config(n_gen=1), run_dir=tmp_path / "run", progress=False)
    before = read_records(tmp_path / "run")
    longer = pareto_nash(P0, data, small_config(n_gen=2), run_dir=tmp_path / "run", resume=True, progress=False)
    assert read_records(tmp_path / "run")[: len(before)] == before
    direct = pareto_nash(P0, data, small_config(n_gen=2), run_dir=tmp_path / "direct", progress=False)
    key = lambda log: log.sort_values("id")[["id", "arch", "status", "val_error"]].astype(str).values.tolist()
    assert key(longer.log) == key(direct.log) and longer.hypervolume == direct.hypervolume
    assert [(m.id, fingerprint(m.net)) for m in longer.front] == [(m.id, fingerprint(m.net)) for m in direct.front]
    with pytest.raises(ValueError, match=r"config\.n_gen \(stored 2, given 1\), which would shorten it"):
        pareto_nash(P0, data, small_config(n_gen=1), run_dir=tmp_path / "run", resume=True)
    with pytest.raises(ValueError, match=r"config\.n_pc \(stored 6, given 8\)"):
        pareto_nash(P0, data, small_config(n_gen=3, n_pc=8), run_dir=tmp_path / "run", resume=True)


def test_resume_of_a_folder_without_a_run_fails(tmp_path, data, monkeypatch):
    no_training(monkeypatch, P)
    with pytest.raises(FileNotFoundError, match=r"pareto_rn: the folder does not exist.*pass resume=False"):
        pareto_nash(P0, data, small_config(), run_dir=tmp_path / "pareto_rn", resume=True)
    assert list(tmp_path.iterdir()) == []


def test_a_fork_pool_is_refused_before_anything_trains(tmp_path, data, monkeypatch):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from nash_lit.data import DataSpec

    no_training(monkeypatch, P)
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    try:
        with pytest.raises(ValueError, match=r"executor: .*fork.*mp_context=multiprocessing\.get_context\(\"spawn\"\)"):
            pareto_nash(P0, DataSpec.synthetic(n_train=64), small_config(), run_dir=tmp_path / "run", executor=pool)
    finally:
        pool.shutdown()
    assert not (tmp_path / "run").exists()


def test_data_that_does_not_fit_p0_is_refused(tmp_path, monkeypatch):
    "A 1-channel 16x16 dataset of 4 classes and the paper's P0: the mismatch is named, nothing is written."
    no_training(monkeypatch, P)
    with pytest.raises(ValueError, match=r"P0 network 0 .*(channel|in_channels).*seed_arch\("):
        pareto_nash(None, gray_data(), small_config(), run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match=r"P0 network 1 "):  # every network of P0 is checked
        pareto_nash(
            [seed_arch((16, 16, 16), in_channels=1, size=16, classes=4), seed_arch((16, 16, 16))],
            gray_data(),
            small_config(),
            run_dir=tmp_path / "run",
        )
    assert not (tmp_path / "run").exists()


def test_a_failed_temporary_run_keeps_its_folder(tmp_path, data, monkeypatch):
    "Kept, and named; a SearchFailed would be replayed by a resume, so the advice is a new run."
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(E, "train", _failing_train(lambda c: True))
    with pytest.raises(D.SearchFailed, match="every network of P0 failed") as failed:
        pareto_nash(P0, data, small_config(), progress=False)
    (kept,) = [p for p in tmp_path.iterdir() if not p.name.startswith("torchinductor")]  # torch's cache aside
    assert (
        kept.name.startswith("pareto_")
        and str(kept / "log.jsonl") in str(failed.value)
        and (kept / "log.jsonl").exists()
    )
    assert any(
        f"kept in {kept}" in note and "start a new run" in note and "resume=True" not in note
        for note in failed.value.__notes__
    )


_MISTAKES = {  # what is wrong -> (config changes, data (None: the fixture's), the message)
    "no validation images": (dict(), synthetic(64, 0, 16, seed=0), r"^the data has no validation images.*val_size"),
    "cutout": (
        dict(train=TrainConfig(cutout=40)),
        None,
        r"^train: TrainConfig\.cutout=40 cannot apply to 32×32 images",
    ),
    "crop_pad": (dict(train=TrainConfig(crop_pad=32)), None, r"^train: TrainConfig\.crop_pad=32 cannot apply to 32×32"),
    "recovery's cutout": (
        dict(recovery=TrainConfig(cutout=33)),
        None,
        r"^recovery: TrainConfig\.cutout=33 cannot apply",
    ),
}


@pytest.mark.parametrize("mistake", list(_MISTAKES))
def test_settings_and_data_it_cannot_use_are_refused(tmp_path, data, monkeypatch, mistake):
    "Refused before anything trains (the message train would give) and before a folder is made; fixed, the same call runs."
    import tempfile

    no_training(monkeypatch, P)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    changes, bad_data, message = _MISTAKES[mistake]
    given = bad_data if bad_data is not None else data
    for run_dir in (tmp_path / "run", None):
        with pytest.raises(ValueError, match=message):
            pareto_nash(P0, given, small_config(**changes), run_dir=run_dir)
    assert (
        not (tmp_path / "run").exists() and [p for p in (tmp_path / "tmp").iterdir() if "inductor" not in p.name] == []
    )
    with pytest.raises(
        pytest.fail.Exception, match="before the mistake was found"
    ):  # fixed: past the checks, it trains
        pareto_nash(P0, data, small_config(), run_dir=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize(
    "p0, message",
    [
        (seed_arch((16, 16, 16)), r"^p0 is a list of networks; got one Arch: pass \[it\]"),
        ([seed_arch((16, 16, 16)), "seed"], r"^p0\[1\] is a str, not an Arch or a Net"),
        (
            [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))],
            r"^p0\[0\] is a Sequential, not an Arch or a Net.*seed_arch",
        ),
    ],
)
def test_p0_that_is_not_a_list_of_archs_or_nets_is_refused(tmp_path, data, monkeypatch, p0, message):
    no_training(monkeypatch, P)
    with pytest.raises(TypeError, match=message):
        pareto_nash(p0, data, small_config(), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_one_progress_bar_per_search(tmp_path, data, capsys):
    "One bar: generations, trained children (not proposals), the best error; no child's or recovery's own bars."
    loud = small_config(
        train=TrainConfig(batch_size=32, amp=False, channels_last=False, progress=True),
        recovery=TrainConfig(progress=True),
    )
    capsys.readouterr()
    result = pareto_nash(P0, data, loud, run_dir=tmp_path / "run")
    err = capsys.readouterr().err
    frames = [f for f in err.replace("\n", "\r").split("\r") if f.strip()]
    assert frames and all(f.startswith("Pareto-NASH") for f in frames), err[:500]
    assert err.count("\n") == 1
    trained = len(P0) + loud.n_gen * loud.n_ac
    assert "Pareto-NASH generation 2/2" in frames[-1] and f"{trained}/{trained} children" in frames[-1]
    # n_gen known: the time left is estimated once generation 1 (after P0, which is unlike it) has finished
    assert all(" left" not in f for f in frames if "generation 2/2" not in f)
    assert any("generation 2/2" in f and ", ~" in f and f.rstrip().endswith("s left") for f in frames)
    assert f"best val error {result.front[0].val_error:.4f}" in frames[-1]
    assert any(len(a) for a in result.log.affected.dropna()), "no approximate operator: recovery never ran"
    pareto_nash(P0, data, loud, run_dir=tmp_path / "quiet", progress=False)
    assert capsys.readouterr().err == ""


def test_a_crash_after_best_is_written_leaves_no_plan(tmp_path, data, monkeypatch):
    "Killed between best.pt and deleting the generation's plan: the resume deletes it, and the run ends as usual."
    real = crash_after_best(monkeypatch, step=1)
    with pytest.raises(SystemExit):
        pareto_nash(P0, data, small_config(), run_dir=tmp_path, progress=False)
    assert (tmp_path / "plan_1.json").exists()
    monkeypatch.setattr(import_module("nash_lit.store").RunStore, "save_best", real)
    resumed = pareto_nash(P0, data, small_config(), run_dir=tmp_path, resume=True, progress=False)
    reference = pareto_nash(P0, data, small_config(), run_dir=tmp_path / "ref", progress=False)
    assert not list(tmp_path.glob("plan_*.json")) and resumed.hypervolume == reference.hypervolume


def test_small_budget_preset():
    "P.ParetoConfig.small_budget(): the settings 33_inheritance measured, any field changed by keyword, checked alike."
    small = P.ParetoConfig.small_budget(budget_images=123_456)
    assert {k: getattr(small, k) for k in P.SMALL_BUDGET} == {**P.SMALL_BUDGET, "n_op": tuple(P.SMALL_BUDGET["n_op"])}
    assert small.budget_images == 123_456 and small.n_epochs == 4 and small.n_gen == 10
    assert P.ParetoConfig().n_epochs == 20 and P.ParetoConfig().n_pc == 200, "the defaults stay the paper's"
    assert P.ParetoConfig.small_budget(n_epochs=1, sampling="uniform").n_epochs == 1
    with pytest.raises(ValueError, match=r"n_ac \(30\) must be <= n_pc \(24\)"):
        P.ParetoConfig.small_budget(n_ac=30)
    with pytest.raises(TypeError):
        P.ParetoConfig.small_budget(n_children=3)


@pytest.mark.parametrize("seed,sampling", [(5, "uniform")])  # kde: the check in chapter 08_pareto_run
def test_the_reference_loop_finds_the_same_front(seed, sampling):
    "pareto_reference (Algorithm 2 in memory) and pareto_nash end with the same front: architectures, errors, weights."
    from dataclasses import replace
    from nash_lit.training import train

    data = synthetic(192, 96, 16, seed=seed)
    sgdr = TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False)
    p0 = [seed_arch((16, 16, 16)), seed_arch((16, 32, 32), separable=True), seed_arch((32, 48, 64))]
    config = P.ParetoConfig(
        n_gen=2,
        n_pc=8,
        n_ac=3,
        n_epochs=1,
        seed_epochs=1,
        recovery_epochs=1,
        calib_size=16,
        sampling=sampling,
        seed=seed,
        train=sgdr,
    )
    found = pareto_nash(p0, data, config, progress=False)
    trained = []
    for k, arch in enumerate(p0):  # P0 as pareto_nash initialises and trains it
        net = E.fresh(arch, seed + k)
        trained.append(
            (net, train(net, data, replace(sgdr, epochs=1, seed=E.child_seeds(seed, 0, k)[1]))[-1]["val_error"])
        )
    front = P.pareto_reference(
        trained,
        config.operators,
        2,
        8,
        3,
        (1, 3),
        1,
        data,
        sgdr,
        seed=seed,
        sampling=sampling,
        recovery_epochs=1,
        calib_size=16,
    )
    key = lambda pair: (pair[1], pair[0].arch.to_json())
    mine = sorted(front, key=key)
    theirs = sorted(((m.net, m.val_error) for m in found.front), key=key)
    assert [(n.arch, e) for n, e in mine] == [(n.arch, e) for n, e in theirs]
    for (a, _), (b, _) in zip(mine, theirs):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
