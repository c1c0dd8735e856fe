"The front (nash_lit.front): pareto_front and hypervolume against brute force, Eq. 9-10 by chi-square, fallbacks."

import itertools
import math

import numpy as np
import pytest
import scipy.stats

import nash_lit.front as F
from nash_lit.arch import Net, seed_arch


def dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def brute_front(points):
    "The definition: not dominated by any point, and no equal point earlier."
    keep = []
    for i, p in enumerate(points):
        if any(dominates(q, p) for q in points):
            continue
        if any(tuple(points[k]) == tuple(p) for k in range(i)):
            continue
        keep.append(i)
    return keep


def brute_hypervolume(points, ref):
    "Sum of the grid cells (between sorted coordinates) that some point dominates."
    pts = [p for p in points if all(x < r for x, r in zip(p, ref))]
    if not pts:
        return 0.0
    axes = [sorted({p[k] for p in pts} | {ref[k]}) for k in range(len(ref))]
    total = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        lo = [axes[k][c] for k, c in enumerate(cell)]
        if any(all(p[k] <= lo[k] for k in range(len(ref))) for p in pts):
            total += math.prod(axes[k][c + 1] - axes[k][c] for k, c in enumerate(cell))
    return total


def random_sets(n_sets, dims, seed):
    "Point sets on a coarse grid (ties and duplicates are common), some with explicit copies."
    rng = np.random.default_rng(seed)
    for _ in range(n_sets):
        n = int(rng.integers(1, 12))
        p = rng.integers(0, 5, size=(n, dims)).astype(float) / 4
        if rng.random() < 0.5:
            p = np.vstack([p, p[rng.integers(0, n, size=int(rng.integers(1, 4)))]])
        yield p


@pytest.mark.parametrize("dims", [2, 3])
def test_front_and_hypervolume_match_brute_force(dims):
    n_dup = 0
    for p in random_sets(150, dims, seed=dims):
        front = F.pareto_front(p)
        assert list(front) == brute_front(p.tolist())
        n_dup += len({tuple(r) for r in p}) < len(p)
        ref = np.full(dims, 1.1)
        assert F.hypervolume(p[front], ref) == pytest.approx(brute_hypervolume(p.tolist(), ref.tolist()), abs=1e-12)
        assert F.hypervolume(p, ref) == pytest.approx(F.hypervolume(p[front], ref), abs=1e-12)
    assert n_dup >= 50  # duplicates were exercised


def test_hypervolume_ignores_points_beyond_the_reference():
    assert F.hypervolume([(0.5, 2.0), (1.0, 0.5)], (1.0, 1.0)) == 0.0
    assert F.hypervolume([(0.5, 0.5), (0.5, 2.0)], (1.0, 1.0)) == pytest.approx(0.25)


FRONT = np.array([(9.6,), (10.6,), (10.75,), (10.9,), (11.0,), (11.2,), (12.9,)])


def chi2_p(counts, probs):
    return scipy.stats.chisquare(counts, np.asarray(probs) * counts.sum()).pvalue


def test_parents_follow_eq_9():
    probs, density = F.parent_probabilities(FRONT)
    kde = scipy.stats.gaussian_kde(FRONT.T)
    want = 1 / kde(FRONT.T)
    np.testing.assert_allclose(probs, want / want.sum(), rtol=1e-10)
    counts = np.bincount(F.sample_parents(FRONT, 20000, np.random.default_rng(1)), minlength=len(FRONT))
    p = chi2_p(counts, probs)
    print(f"Eq. 9 chi-square p = {p:.3f}")
    assert p > 0.01


def test_first_accepted_child_follows_eq_10():
    _, density = F.parent_probabilities(FRONT)
    kids = np.array([(9.0,), (10.8,), (11.1,), (12.0,), (13.5,)])
    want = F.inverse_density(density, kids)
    rng = np.random.default_rng(2)
    firsts = np.bincount([F.accept(density, kids, 3, rng)[0] for _ in range(20000)], minlength=len(kids))
    p = chi2_p(firsts, want)
    print(f"Eq. 10 chi-square p = {p:.3f}")
    assert p > 0.01
    second = F.accept(density, kids, 5, rng)
    assert sorted(second) == list(range(5))  # without replacement


def test_uniform_is_uniform():
    rng = np.random.default_rng(3)
    counts = np.bincount(F.sample_parents(FRONT, 20000, rng, "uniform"), minlength=len(FRONT))
    assert chi2_p(counts, np.full(len(FRONT), 1 / len(FRONT))) > 0.01
    _, density = F.parent_probabilities(FRONT)
    kids = np.array([(9.0,), (10.8,), (13.5,), (11.0,)])
    firsts = np.bincount([F.accept(density, kids, 2, rng, "uniform")[0] for _ in range(20000)], minlength=4)
    assert chi2_p(firsts, np.full(4, 0.25)) > 0.01


@pytest.mark.parametrize(
    "front, branch",
    [
        ([(10.0,)], "single"),
        ([(10.0, 3.0), (10.0, 3.0), (10.0, 3.0)], "equal"),
        ([(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)], "diagonal"),  # collinear: singular covariance
        ([(1.0, 2.0), (2.0, 1.0)], "diagonal"),  # fewer members than dimensions + 1
        ([(1.0, 7.0), (2.0, 7.0), (4.0, 7.0)], "kde"),  # a constant objective is left out
        ([(1.0, 2.0), (2.0, 1.0), (3.0, 3.0), (0.5, 2.5)], "kde"),
    ],
)
def test_degenerate_fronts_do_not_raise(front, branch):
    probs, density = F.parent_probabilities(front)
    assert density.branch == branch
    assert np.isfinite(probs).all() and probs.sum() == pytest.approx(1.0)
    if branch in ("single", "equal"):
        np.testing.assert_allclose(probs, 1 / len(front))
    kids = np.array(front) + 0.5
    chosen = F.accept(density, np.vstack([kids, np.full((1, kids.shape[1]), 1e6)]), 2, np.random.default_rng(0))
    assert len(chosen) == 2 and len(set(chosen)) == 2


def test_far_child_gets_a_finite_weight():
    _, density = F.parent_probabilities(FRONT)
    w = F.inverse_density(density, [(10.0,), (1e5,)])
    assert np.isfinite(w).all() and w[1] == pytest.approx(1.0)


def test_objectives_registry():
    net = Net(seed_arch((4, 8, 8)))
    values = F.cheap_objectives(net, ("log_params", "params", "log_flops"))
    assert values[0] == pytest.approx(math.log(values[1]))
    F.register_objective("depth", lambda n: float(len(n.arch.nodes)), reference=100, overwrite=True)
    assert F.cheap_objectives(net, "depth") == (float(len(net.arch.nodes)),)
    with pytest.raises(ValueError, match="already registered"):
        F.register_objective("depth", len, 1)
    with pytest.raises(ValueError, match="unknown"):
        F.resolve_objectives(["nope"])
    with pytest.raises(ValueError, match="twice"):
        F.resolve_objectives(["params", "params"])
    timer = F.Latency(min_run_time=0.005)
    first = timer(net)
    assert first > 0 and timer(net) == first and len(timer.cache) == 1
    assert list(timer.threads.values()) == [__import__("torch").get_num_threads()]
    del F.OBJECTIVES["depth"]


def test_sampling_name_is_checked():
    with pytest.raises(ValueError, match="sampling must be one of"):
        F.sample_parents(FRONT, 3, np.random.default_rng(), "kdee")


def test_hypervolume_refuses_non_finite_points():
    import math

    with pytest.raises(ValueError, match="must be finite"):
        F.hypervolume([[math.nan, 1.0]], (2.0, 2.0))
    with pytest.raises(ValueError, match="must be finite"):
        F.hypervolume([[0.5, 1.0]], (math.inf, 2.0))
