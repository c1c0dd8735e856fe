"Asynchronous Pareto-NASH (nash_lit.pareto_async): one instance is the synchronous search; the invariants of runs of 2-3 instances in this process and in a pool whose worker dies; SIGKILL and resume; bad n_instances."

import json
import os
import re
import signal
from pathlib import Path

import pytest

import nash_lit.pareto as P
from nash_lit import pareto_nash
import nash_lit.pareto_async as PA
from nash_lit.driver import search
from nash_lit.data import DataSpec, synthetic
from nash_lit.evaluation import fresh
from nash_lit.executors import Pool
from nash_lit.front import hypervolume
from nash_lit.runs import read_records
from _helpers import (
    kill_at_random,
    small_pareto_config,
    tiny_p0,
    finish,
    fingerprint,
    log_lines,
    no_training,
    start_script,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

P0 = tiny_p0()
TIMINGS = ("search_seconds", "time", "train_seconds", "recovery_seconds")


def small_config(**changes):
    return small_pareto_config(**{"n_pc": 5, **changes})


@pytest.fixture(scope="module")
def data():
    return synthetic(64, 32, 16, seed=0)


def untimed(run_dir, drop=()):
    return [{k: v for k, v in r.items() if k not in TIMINGS + tuple(drop)} for r in read_records(run_dir)]


def point(r):
    return (r["val_error"], *r["objectives"])


def non_dominated(records) -> set:
    "Ids of the trained networks no other dominates (of equal ones the oldest), by brute force: no moocore, no pareto_front."
    ok = [r for r in records if r["status"] == "ok"]

    def beats(a, b):
        pa, pb = point(a), point(b)
        return (all(x <= y for x, y in zip(pa, pb)) and pa != pb) or (pa == pb and a["id"] < b["id"])

    return {r["id"] for r in ok if not any(beats(o, r) for o in ok)}


def check_invariants(run_dir, result, config, n_p0=len(P0)):
    "What every asynchronous run must satisfy, whatever the order its children finished in."
    run_dir, k = Path(run_dir), config.n_instances
    records = read_records(run_dir)
    assert all("instance" in r and type(r["step"]) is int for r in records)
    assert len({r["id"] for r in records}) == len(records), "ids are not unique"
    keys = [(r["instance"], r["step"], r["child"]) for r in records]
    assert len(set(keys)) == len(keys), "a proposal was logged twice"
    assert set(keys) == {(None, 0, j) for j in range(n_p0)} | {
        (i, g, j) for i in range(k) for g in range(1, config.n_gen + 1) for j in range(config.n_pc)
    }, "a proposal is missing"
    for i, g in {
        (r["instance"], r["step"]) for r in records
    }:  # a plan reserves consecutive ids: one plan per generation
        ids = sorted(r["id"] for r in records if (r["instance"], r["step"]) == (i, g))
        assert ids == list(range(ids[0], ids[0] + len(ids))), f"instance {i}, generation {g}: ids {ids} of two plans?"
    accepted = [r for r in records if r["accepted"]]
    assert len(accepted) == n_p0 + k * config.n_gen * config.n_ac
    assert {r["status"] for r in accepted} <= {"ok", "failed", "diverged", "oom"}  # each evaluated, once (keys above)
    assert {r["status"] for r in records if not r["accepted"]} <= {"rejected", "invalid"}
    line = {r["id"]: n for n, r in enumerate(records)}
    for r in records:
        if r["step"] == 0:
            continue
        parent = records[line[r["parent"]]]
        assert parent["status"] == "ok" and line[parent["id"]] < line[r["id"]], "a parent that was not trained before"
    assert {m.id for m in result.front} == non_dominated(records)
    hv = result.hypervolume
    assert len(hv) == 1 + k * config.n_gen and all(b >= a for a, b in zip(hv, hv[1:])), hv
    assert hv[-1] == pytest.approx(hypervolume([m.point() for m in result.front], config.reference))
    state = json.loads((run_dir / PA.STATE).read_text())
    assert [s["step"] for s in state["instances"]] == [config.n_gen] * k
    assert sorted(map(tuple, state["closed"][1:])) == [(i, g) for i in range(k) for g in range(1, config.n_gen + 1)]
    kept = {int(p.stem.split("_")[1]) for p in run_dir.glob("child_*.pt")}
    assert kept == {m.id for m in result.front}.union(*(s["front"] for s in state["instances"]))
    assert not list(run_dir.glob("plan_*.json"))
    return records


def test_one_instance_is_the_synchronous_search(tmp_path, data):
    "The asynchronous machinery run with one instance (pareto_nash never does) gives the synchronous log, fronts and weights."
    config = small_config()
    sync = pareto_nash(P0, data, config, run_dir=tmp_path / "sync", progress=False)
    nets = [fresh(a, config.seed + k) for k, a in enumerate(P0)]
    alone = search(
        PA.AsyncPareto(nets, config),
        {},
        data,
        config,
        {"config": config.to_dict()},
        tmp_path / "alone",
        progress=False,
        store_type=PA.AsyncStore,
    )
    assert untimed(tmp_path / "alone", drop=("instance",)) == untimed(tmp_path / "sync")
    assert alone.hypervolume == sync.hypervolume
    assert [(m.id, fingerprint(m.net)) for m in alone.front] == [(m.id, fingerprint(m.net)) for m in sync.front]
    # pareto_nash with n_instances = 1 is the synchronous search, with the config it always stored
    assert "n_instances" not in json.loads((tmp_path / "sync" / "config.json").read_text())["config"]
    assert all("instance" not in r for r in read_records(tmp_path / "sync"))


def test_invariants_in_process_and_extended(tmp_path, data):
    "Three instances in this process (children finish in submission order); then extended by one generation each."
    config = small_config(n_instances=3, n_gen=1)
    result = pareto_nash(P0, data, config, run_dir=tmp_path / "run", progress=False)
    before = check_invariants(tmp_path / "run", result, config)
    assert result.run_dir == tmp_path / "run" and str(result.log.instance.dtype) == "Int64"
    assert "n_instances" in json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    longer = small_config(n_instances=3, n_gen=2)
    result = pareto_nash(P0, data, longer, run_dir=tmp_path / "run", resume=True, progress=False)
    assert check_invariants(tmp_path / "run", result, longer)[: len(before)] == before
    with pytest.raises(ValueError, match=r"config\.n_instances \(stored 3, given 2\)"):
        pareto_nash(P0, data, small_config(n_instances=2, n_gen=2), run_dir=tmp_path / "run", resume=True)
    instance_seeds = {PA.instance_seed(config.seed, i) for i in range(3)}
    assert len(instance_seeds) == 3 and config.seed in instance_seeds


class Killing:
    "Submits through a pool; the first child (n_op > 0) any worker starts kills that worker, on its first `times` attempts."

    def __init__(self, inner, folder, times):
        self.inner, self.folder, self.times = inner, str(folder), times

    def submit(self, fn, task):
        return self.inner.submit(die_then, fn, task, self.folder, self.times)


def die_then(fn, task, folder, times):
    folder = Path(folder)
    if task.n_op:
        key = json.dumps(task.rng)
        try:  # the first child to get here is the victim (O_EXCL: one of the two workers wins)
            fd = os.open(folder / "victim", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, key.encode())
            os.close(fd)
        except FileExistsError:
            pass
        tries = sorted(folder.glob("try_*"))
        if (folder / "victim").read_text() == key and len(tries) < times:
            (folder / f"try_{len(tries)}").touch()
            os.kill(os.getpid(), signal.SIGKILL)
    return fn(task)


def test_invariants_in_a_pool_whose_worker_dies(tmp_path):
    "Two instances, two spawned workers (children finish in any order); one child's worker dies twice: failed, the search goes on."
    (tmp_path / "kills").mkdir()
    config = small_config(n_instances=2)
    spec = DataSpec.synthetic(n_train=64, n_val=32, n_test=16, seed=0)
    with Pool(2) as pool:
        result = pareto_nash(
            P0, spec, config, run_dir=tmp_path / "run", executor=Killing(pool, tmp_path / "kills", 2), progress=False
        )
    records = check_invariants(tmp_path / "run", result, config)
    assert len(list((tmp_path / "kills").glob("try_*"))) == 2
    victim = json.loads(
        (tmp_path / "kills" / "victim").read_text()
    )  # the rng of its task: (seed, step, child, 0, attempt)
    (dead,) = [
        r
        for r in records
        if r["step"] == victim[1]
        and r["child"] == victim[2]
        and r["accepted"]
        and PA.instance_seed(config.seed, r["instance"]) == victim[0]
    ]
    assert dead["status"] == "failed" and "WorkerDied" in dead["error"]
    assert sum(r["status"] == "ok" for r in records if r["accepted"]) == len(P0) + 2 * 2 * 2 - 1


def test_invariants_on_a_dask_cluster(tmp_path):
    "Two instances on a Dask LocalCluster of 2 worker processes: Dask's futures as they complete, the same invariants."
    config = small_config(n_instances=2)
    spec = DataSpec.synthetic(n_train=64, n_val=32, n_test=16, seed=0)
    result = pareto_nash(P0, spec, config, run_dir=tmp_path / "run", executor="dask:local:2", progress=False)
    records = check_invariants(tmp_path / "run", result, config)
    assert sum(r["status"] == "ok" for r in records if r["accepted"]) == len(P0) + 2 * 2 * 2


SCRIPT = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from nash_lit.arch import seed_arch
from nash_lit.data import synthetic
from nash_lit import ParetoConfig, pareto_nash
from nash_lit.training import TrainConfig
P0 = [seed_arch((16, 16, 16)), seed_arch((16, 32, 32)), seed_arch((16, 32, 32), separable=True)]
config = ParetoConfig(n_gen=3, n_pc=4, n_ac=2, n_epochs=1, seed_epochs=1, recovery_epochs=1, calib_size=16, n_instances=3,
                      train=TrainConfig(batch_size=32, amp=False, channels_last=False, progress=False))
run_dir = sys.argv[1]
pareto_nash(P0, synthetic(64, 32, 16, seed=0), config, run_dir=run_dir, resume=(Path(run_dir) / "config.json").exists(),
            progress=False)
"""


def test_kill_and_resume(tmp_path, data):
    "SIGKILL the search at >= 3 random moments and resume each time: every proposal logged once, none missing, the invariants hold."
    script = tmp_path / "run_async.py"
    script.write_text(SCRIPT)
    run, total = tmp_path / "run", len(P0) + 3 * 3 * 4
    kills = kill_at_random(lambda: start_script(script, run), run, total - 2)
    finish(start_script(script, run))
    assert kills >= 3
    n = log_lines(run)
    config = small_config(n_gen=3, n_pc=4, n_instances=3)
    result = pareto_nash(P0, data, config, run_dir=run, resume=True, progress=False)  # finished: trains nothing
    assert log_lines(run) == n == total
    check_invariants(run, result, config)


@pytest.mark.parametrize(
    "value, error, message",
    [
        (0, ValueError, "ParetoConfig.n_instances must be >= 1, got 0"),
        (1.5, TypeError, "ParetoConfig.n_instances must be an int, got 1.5 (float)"),
        ("2", TypeError, "ParetoConfig.n_instances must be an int"),
    ],
)
def test_bad_n_instances_is_refused(tmp_path, data, monkeypatch, value, error, message):
    no_training(monkeypatch, P)
    no_training(monkeypatch, PA)
    with pytest.raises(error, match=re.escape(message)):
        pareto_nash(P0, data, small_config(n_instances=value), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kill_at", range(1, 7))
def test_killed_before_each_close(tmp_path, data, monkeypatch, kill_at):
    "Killed when an instance's last child is logged but its generation not yet closed, at each close in turn; resumed."
    config = small_config(n_instances=2, n_gen=3)
    real, calls = PA.close_instance, []

    def killed(search, inst):
        calls.append(inst.index)
        if len(calls) == kill_at:
            raise SystemExit("killed")
        real(search, inst)

    monkeypatch.setattr(PA, "close_instance", killed)
    with pytest.raises(SystemExit):
        pareto_nash(P0, data, config, run_dir=tmp_path, progress=False)
    monkeypatch.setattr(PA, "close_instance", real)
    check_invariants(tmp_path, pareto_nash(P0, data, config, run_dir=tmp_path, resume=True, progress=False), config)


@pytest.mark.parametrize("kill_at", [2, 4, 7])
def test_killed_after_the_state_is_saved(tmp_path, data, monkeypatch, kill_at):
    "Killed right after instances.json is written (P0's is the first), before the plan and the checkpoints are deleted."
    config = small_config(n_instances=2, n_gen=3)
    real, calls = PA.AsyncStore.save_state, []

    def killed(self, state):
        real(self, state)
        calls.append(1)
        if len(calls) == kill_at:
            raise SystemExit("killed")

    monkeypatch.setattr(PA.AsyncStore, "save_state", killed)
    with pytest.raises(SystemExit):
        pareto_nash(P0, data, config, run_dir=tmp_path, progress=False)
    instance, generation = json.loads((tmp_path / PA.STATE).read_text())["closed"][-1]
    assert (tmp_path / PA.plan_file(instance, generation)).exists()  # the closed generation's plan is still there
    monkeypatch.setattr(PA.AsyncStore, "save_state", real)
    check_invariants(tmp_path, pareto_nash(P0, data, config, run_dir=tmp_path, resume=True, progress=False), config)
