"""The search driver (nash_lit.driver): one module submits work, no import cycles, the cost ledger counted independently
from each search's config, and `budget_images` stopping every search at the first step or generation that would pass it."""

import ast
import re
from dataclasses import replace
from pathlib import Path

import pytest

from nash_lit import NashConfig, ParetoConfig, TrainConfig, nash, pareto_nash, random_search, seed_arch, synthetic
from nash_lit.operators import OPERATORS

PACKAGE = Path(__file__).resolve().parent.parent / "nash_lit"
N_TRAIN, BATCH = 64, 32  # every epoch trains all 64 images: two full batches
TRAIN = TrainConfig(batch_size=BATCH, amp=False, channels_last=False, progress=False)
P0 = [seed_arch((16, 16, 16)), seed_arch((16, 32, 32))]
APPROXIMATE = {name for name, op in OPERATORS.items() if not op.exact}

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def data():
    return synthetic(N_TRAIN, 32, 16, seed=0)


def nash_config(**changes):
    return NashConfig(
        **{
            **dict(n_steps=2, n_child=2, n_op=2, n_epochs=2, seed_epochs=3, calib_size=16, seed=1, train=TRAIN),
            **changes,
        }
    )


def pareto_config(**changes):
    return ParetoConfig(
        **{
            **dict(
                n_gen=2,
                n_pc=5,
                n_ac=2,
                n_epochs=2,
                seed_epochs=3,
                recovery_epochs=1,
                calib_size=16,
                seed=2,
                train=TRAIN,
                recovery=dict(batch_size=BATCH),
            ),
            **changes,
        }
    )


# --- Acceptance 1: one module submits work; no import cycles, no module above another -------------------------------


def _imports(path: Path) -> set:
    "The package modules a module imports, anywhere in it (lazy imports inside functions included)."
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.module and node.module.startswith("nash_lit."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("nash_lit.")}
    return found


def _graph() -> dict:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "_modidx"}
    return {m: _imports(PACKAGE / f"{m}.py") & modules for m in modules}


def test_only_the_driver_and_the_executors_submit_work():
    submitting = sorted(p.name for p in PACKAGE.glob("*.py") if re.search(r"\.submit\(", p.read_text()))
    assert submitting == ["driver.py", "executors.py"]


def test_no_import_cycle_among_the_modules():
    "Every module can be placed after everything it imports (a topological order exists): no cycle, lazy imports included."
    graph, placed = _graph(), []
    while len(placed) < len(graph):
        ready = sorted(m for m, deps in graph.items() if m not in placed and deps <= set(placed))
        assert ready, f"an import cycle among {sorted(set(graph) - set(placed))}"
        placed += ready


def test_the_loop_lives_below_the_searches():
    graph = _graph()
    searches = {"hill_climbing", "pareto", "pareto_async", "peers"}
    assert not graph["driver"] & searches, "the driver imports a search"
    assert all("driver" in graph[s] for s in searches)
    for m, deps in graph.items():  # nobody imports another module's private names
        text = (PACKAGE / f"{m}.py").read_text()
        assert not re.search(r"from \.\w+ import[^\n]*\b_[a-z]", text), f"{m} imports a private name"


# --- Acceptance 4: the ledger against counts made from the config ---------------------------------------------------


def _spend(result, kind):
    return result.cost.by_kind[kind]


def test_nash_cost_counted_from_the_config(data):
    c = nash_config()
    result = nash(seed_arch((4, 8, 8)), data, c, progress=False)
    assert (result.log.status == "ok").all()
    assert _spend(result, "seed").images == c.seed_epochs * N_TRAIN
    assert _spend(result, "child").images == c.n_steps * c.n_child * c.n_epochs * N_TRAIN
    assert _spend(result, "recovery").images == 0  # the paper's operators are exact
    assert result.cost.images == (c.seed_epochs + c.n_steps * c.n_child * c.n_epochs) * N_TRAIN
    flops = sum(
        3.0 * r.flops * r.train_images for r in result.log.itertuples()
    )  # 3 x forward (arch.flops: 2 per multiply-add)
    assert result.cost.total.flops == pytest.approx(flops)
    assert result.cost.total.seconds == pytest.approx(
        result.log.train_seconds.sum() + result.log.recovery_seconds.sum()
    )
    text = repr(result)
    assert "\n" not in text and "images trained" in text and "FLOPs" in text


def test_random_search_cost_counted_from_the_config(data):
    c = nash_config()
    result = random_search(seed_arch((4, 8, 8)), data, c, progress=False)
    assert _spend(result, "seed").images == 0  # the control never trains the seed
    assert _spend(result, "child").images == c.n_steps * c.n_child * c.n_epochs * N_TRAIN
    assert _spend(result, "recovery").images == 0  # trained from scratch: nothing to recover


@pytest.mark.parametrize("n_instances", [1, 2])
def test_pareto_cost_counted_from_the_config(data, n_instances):
    c = pareto_config(n_instances=n_instances)
    result = pareto_nash(P0, data, c, progress=False)
    log = result.log
    trained = log[log.accepted]
    assert (trained.status == "ok").all()
    recovered = sum(1 for ops in trained[trained.step > 0].ops if APPROXIMATE & set(ops))  # from the plan's operators
    assert recovered > 0, "no approximate operator was applied: the recovery count is not tested"
    assert _spend(result, "seed").images == len(P0) * c.seed_epochs * N_TRAIN
    assert _spend(result, "child").images == n_instances * c.n_gen * c.n_ac * c.n_epochs * N_TRAIN
    assert _spend(result, "recovery").images == recovered * c.recovery_epochs * N_TRAIN
    assert log[~log.accepted].train_images.fillna(0).sum() == 0  # a proposal that is not accepted costs nothing
    assert "\n" not in repr(result) and "images trained" in repr(result)


# --- budget_images: the first step or generation that would pass it does not start ----------------------------------


def _per_step(log) -> dict:
    "step -> images its records trained (children and recovery)."
    images = log.train_images.fillna(0) + log.recovery_images.fillna(0)
    return images.groupby(log.step).sum().astype(int).to_dict()


@pytest.mark.parametrize("search", [nash, random_search])
def test_budget_images_stops_nash_and_random_search(data, search, tmp_path):
    c = nash_config(n_steps=3)
    full = search(seed_arch((4, 8, 8)), data, c, progress=False)
    steps = _per_step(full.log)
    first = min(steps)
    upto = lambda s: sum(v for k, v in steps.items() if k <= s)
    for budget, last in (
        (upto(first + 1) + steps[first + 2] - 1, first + 1),
        (upto(first + 1) + steps[first + 2], first + 2),
    ):
        cut = search(
            seed_arch((4, 8, 8)), data, replace(c, budget_images=budget), run_dir=tmp_path / f"{budget}", progress=False
        )
        assert cut.log.step.max() == last and cut.cost.images <= budget
        assert cut.cost.images == upto(last)
    # a stopped run extended with no image budget goes on to n_steps, training nothing twice: the full run's log
    more = search(
        seed_arch((4, 8, 8)),
        data,
        c,
        run_dir=tmp_path / f"{upto(first + 1) + steps[first + 2] - 1}",
        resume=True,
        progress=False,
    )
    keep = ["id", "step", "child", "ops", "arch", "val_error"]
    assert more.log.sort_values("id")[keep].to_dict("records") == full.log.sort_values("id")[keep].to_dict("records")


def test_budget_images_below_the_seed_still_trains_the_seed(data):
    result = nash(seed_arch((4, 8, 8)), data, nash_config(budget_images=1), progress=False)
    assert list(result.log.step) == [0]  # the seed always trains: without it there is no result


@pytest.mark.parametrize("n_instances", [1, 2])
def test_budget_images_stops_pareto(data, n_instances):
    c = pareto_config(n_gen=4, n_instances=n_instances)
    full = pareto_nash(P0, data, c, progress=False)
    p0 = len(P0) * c.seed_epochs * N_TRAIN
    most = c.n_ac * (c.n_epochs + c.recovery_epochs) * N_TRAIN  # the most one generation can train
    budget = p0 + int(2.5 * most)
    cut = pareto_nash(P0, data, replace(c, budget_images=budget), progress=False)
    spent = cut.cost.images
    assert spent <= budget < full.cost.images
    assert spent + most > budget, "stopped although a generation could still fit"
    n_closed = len(cut.hypervolume) - 1
    assert 1 <= n_closed < n_instances * c.n_gen
    assert (cut.log[cut.log.accepted].status == "ok").all()


# --- Acceptance 5: every module imports as itself -------------------------------------------------------------------


def test_every_module_imports_as_itself():
    "`import nash_lit.m as x` gives the module m, and a top-level attribute named m, where there is one, is that module."
    import pkgutil
    import types

    import nash_lit

    names = [info.name for info in pkgutil.iter_modules(nash_lit.__path__)]
    assert {"training", "hill_climbing", "evaluation", "exporting", "driver"} <= set(names)
    for name in names:
        scope = {}
        exec(f"import nash_lit.{name} as x", scope)
        assert isinstance(scope["x"], types.ModuleType) and scope["x"].__name__ == f"nash_lit.{name}", name
        if hasattr(nash_lit, name):
            assert getattr(nash_lit, name) is scope["x"], f"nash_lit.{name} is not the module"
    for public in nash_lit.__all__:  # the short API stays: functions and classes, none of them a module's name
        assert not isinstance(getattr(nash_lit, public), types.ModuleType) and public not in names, public
