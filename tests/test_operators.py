"The operator registry and GenerateChild: random chains of all eight operators, and what they affect."

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from nash_lit.arch import Arch, Net, n_params, seed_arch
from nash_lit.morphisms import add_skip, concat_skip, deeper, morphism_error, scramble, skip, wider
from nash_lit.operators import prune, remove_block, to_separable
from nash_lit.operators import OPERATORS, Child, Operator, generate_child, merge_affected, resolve_operators
from nash_lit.surgery import NotApplicable

ALL = tuple(OPERATORS)
EXACT = tuple(name for name, op in OPERATORS.items() if op.exact)
APPROX = tuple(name for name, op in OPERATORS.items() if not op.exact)


def random_net(rng, dtype=torch.float64):
    "A seed of 16-24 filters per block (regular or separable), grown by a few exact morphisms, scrambled."
    widths = tuple(int(w) for w in rng.integers(16, 25, size=3))
    sep = tuple(bool(s) for s in rng.integers(0, 2, size=3))
    net = Net(seed_arch(widths, separable=sep, size=8, kernel=int(rng.choice([1, 3, 3])))).to(dtype)
    net = generate_child(net, int(rng.integers(0, 6)), ("deeper", "wider", "skip"), rng=rng).net
    return scramble(net, seed=int(rng.integers(1 << 30)))


def state_copy(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def params(net) -> set:
    return {name for name, _ in net.named_parameters()}


def changed_parameters(parent, child) -> set:
    "Child parameters that are new or differ in shape or value from the parent's."
    old = dict(parent.named_parameters())
    return {
        name
        for name, p in child.named_parameters()
        if name not in old or old[name].shape != p.shape or not torch.equal(old[name], p)
    }


def assert_bitwise(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def replay(parent, n_op, operators, seed, calib):
    """The chain of generate_child, one operator at a time with the same draws, checking every step.

    Returns the final child and the parameters that approximate steps created or changed and that
    still exist (a name whose block a later step removed is gone, even if a later block reuses the id)."""
    rng = np.random.default_rng(seed)
    child, touched, applied = parent, set(), []
    for _ in range(n_op):
        name = operators[rng.integers(len(operators))]
        op = OPERATORS[name]
        before = state_copy(child)
        try:
            step = op.fn(child, rng, **({"calib": calib} if name == "deeper" else {}))
        except NotApplicable:
            continue
        assert isinstance(step, Child)
        for k, v in before.items():
            assert torch.equal(child.state_dict()[k], v), f"{name} changed its parent's {k}"
        assert set(step.affected) <= params(step.net), name
        if op.exact:
            assert step.affected == (), name
        else:
            missing = changed_parameters(child, step.net) - set(step.affected)
            assert not missing, f"{name} changed {missing} without marking them affected"
        touched = (touched & params(step.net)) | (set() if op.exact else changed_parameters(child, step.net))
        applied += step.ops
        child = step.net
    return child, tuple(applied), touched


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_op=st.integers(1, 12), which=st.sampled_from(["all", "approx"]))
def test_random_chains_of_all_operators(seed, n_op, which):
    rng = np.random.default_rng(seed)
    parent = random_net(rng)
    before = state_copy(parent)
    calib = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed % 1000))
    operators = ALL if which == "all" else APPROX
    child, ops, affected = generate_child(parent, n_op, operators, rng=seed, calib=calib)
    for k, v in before.items():
        assert torch.equal(parent.state_dict()[k], v), f"parent's {k} changed"
    again, ops_again, touched = replay(parent, n_op, operators, seed, calib)
    assert ops == ops_again and child.arch == again.arch
    assert_bitwise(child, again)
    assert tuple(sorted(affected)) == affected and set(affected) <= params(child)
    assert touched <= set(affected), f"changed by an approximate step but not affected: {touched - set(affected)}"
    if which == "approx":
        assert changed_parameters(parent, child) <= set(affected)
    if not any(not OPERATORS[o].exact for o in ops):
        assert affected == ()
    assert Arch.from_json(child.arch.to_json()) == child.arch
    out = child(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_op=st.integers(5, 20))
def test_exact_chains_affect_nothing_and_are_morphisms(seed, n_op):
    rng = np.random.default_rng(seed)
    parent = random_net(rng).eval()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed % 1000))
    child, ops, affected = generate_child(parent, n_op, EXACT, rng=rng, calib=x)
    assert affected == () and len(ops) >= 1
    assert morphism_error(parent, child, x) <= 1e-10


def same_values(approx, mixed, names, seed, new_random):
    """Give the named parameters random values, the same in both children; where the mixed child's tensor is
    larger (the slices an exact step added at the end), the extra slices are random too or zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in sorted(names):
            a, m = approx.get_parameter(name), mixed.get_parameter(name)
            a.copy_(torch.randn(a.shape, generator=g, dtype=torch.float64))
            m.copy_(torch.randn(m.shape, generator=g, dtype=torch.float64) if new_random else torch.zeros_like(m))
            m[tuple(slice(0, n) for n in a.shape)] = a


CASES = {  # case -> (approximate step, exact step, whether the exact step's new slices may take any value)
    "deeper after a pruned block": ("prune", lambda n, x: deeper(n, site=3, calib=x), True),
    "add skip into a pruned block": ("prune", lambda n, x: add_skip(n, site=(2, 3)), True),
    "wider of a pruned block's reader": ("prune", lambda n, x: wider(n, 0, site=5), True),
    "wider of a pruned block": ("prune", lambda n, x: wider(n, 0, site=3), False),
    "concat skip into a pruned block": ("prune", lambda n, x: concat_skip(n, site=(2, 3)), False),
    "wider of a substituted block": ("to_separable", lambda n, x: wider(n, 0, site=3), True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_step_next_to_an_affected_block(case):
    """An exact step after an approximate one adds nothing to `affected`; whatever values the affected parameters
    take, the mixed child computes what the approximate child computes. Where an exact step adds slices to a tensor
    that is already affected (a trained reader), those may be learned: then only their start (zero) is exact."""
    approx_name, make_exact, new_random = CASES[case]
    x = torch.randn(6, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    net = scramble(Net(seed_arch((16, 24, 32), size=16)).double(), seed=0).eval()
    approx = prune(net, site=3, fraction=0.25) if approx_name == "prune" else to_separable(net, site=3)
    mixed = make_exact(approx.net, x)
    affected = merge_affected(approx.affected, mixed)
    assert affected == set(approx.affected)  # nothing new: the exact step's own parameters stay frozen
    for seed in range(3):
        same_values(approx.net, mixed.net, affected, seed, new_random)
        assert morphism_error(approx.net, mixed.net, x) <= 1e-10, seed


def test_a_removed_block_takes_its_names_out_even_if_its_id_comes_back():
    net = scramble(Net(seed_arch((16, 24, 32), size=8)).double(), seed=0)
    grown = deeper(net, site=3).net  # node 7, the largest id
    pruned = prune(grown, site=3, fraction=0.25)  # block 7 reads block 3: affected
    assert any(name.startswith("blocks.7.") for name in pruned.affected)
    removed = OPERATORS["remove"].fn(pruned.net, site=7)
    again = deeper(removed.net, site=3)  # next_id is 7 again: a new, exact block
    affected = merge_affected(merge_affected(pruned.affected, removed), again)
    assert not any(name.startswith("blocks.7.") for name in affected)
    assert affected <= params(again.net)


def test_generate_child_draws_like_algorithm_1():
    "One integers(len(T)) per draw, then the operator on the same generator; NotApplicable skipped, not recorded."
    net = Net(seed_arch((4, 4, 4), size=8))
    r = np.random.default_rng(9)
    child = net
    expected = []
    names = ["deeper", "wider", "add_skip", "concat_skip"]
    for _ in range(6):
        name = names[r.integers(4)]
        try:
            child = OPERATORS[name].fn(child, r).net
        except NotApplicable:
            continue
        expected.append(name)
    got = generate_child(net, 6, names, rng=np.random.default_rng(9))
    assert list(got.ops) == expected and got.net.arch == child.arch
    assert_bitwise(got.net, child)
    seed = Net(seed_arch((16, 32, 64), size=8))  # nothing can be removed without breaking the constraint
    assert generate_child(seed, 3, ["remove"], rng=0) == Child(seed, (), ())


def test_registry_and_bad_input():
    assert set(ALL) == {"deeper", "wider", "skip", "add_skip", "concat_skip", "remove", "prune", "to_separable"}
    assert set(EXACT) == {"deeper", "wider", "skip", "add_skip", "concat_skip"}
    assert {name for name, op in OPERATORS.items() if op.shrinks} == {"remove", "prune", "to_separable"}
    assert resolve_operators(["remove"])["remove"].fn.__name__ == "remove_block"
    custom = Operator(deeper, exact=True, shrinks=False)
    assert resolve_operators([custom, "wider"]) == {"deeper": custom, "wider": OPERATORS["wider"]}
    with pytest.raises(ValueError, match="unknown operator 'narrower'; known:"):
        resolve_operators(["narrower"])
    # a registry function keeps its registry name, as an Operator or on its own
    assert list(resolve_operators([Operator(remove_block, exact=False, shrinks=True), "wider"])) == ["remove", "wider"]
    assert resolve_operators([remove_block, skip]) == {"remove": OPERATORS["remove"], "skip": OPERATORS["skip"]}

    def narrower(net, rng=None):
        return Child(net)

    assert resolve_operators([narrower]) == {"narrower": Operator(narrower, exact=False, shrinks=False)}
    with pytest.raises(ValueError, match="empty"):
        resolve_operators([])
    net = Net(seed_arch((4, 4, 4), size=8))
    with pytest.raises(ValueError, match="unknown operator"):
        generate_child(net, 1, ("deeper", "deepr"))
    assert generate_child(net, 0) == Child(net, (), ())


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("site", [99, "1", (0, 99), 3.5])
def test_a_forced_site_that_does_not_exist_is_a_value_error_naming_the_operator(name, site):
    "Every operator refuses a site that is no node (or, for a skip, no pair of nodes) with a reason, never a KeyError."
    net = Net(seed_arch((16, 32, 64), size=8))
    what = {"skip": "(add|concat)_skip", "remove": "remove"}.get(name, name)
    with pytest.raises(ValueError, match=f"^{what}: (no node|site must be)"):
        OPERATORS[name].fn(net, 0, site=site)
