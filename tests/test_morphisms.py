"Eq. 1 at scale: random architectures reached by long chains of random morphisms, float64 and float32."

import copy
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from nash_lit.arch import Arch, Net, conv_block_ids, seed_arch
from nash_lit.morphisms import add_skip, concat_skip, deeper, morphism_error, scramble, skip, skip_pairs, wider
from nash_lit.operators import OPERATORS, generate_child, resolve_operators
from nash_lit.surgery import NotApplicable

N_ARCHS, CHAIN = 200, 20
EXACT = {name: op.fn for name, op in OPERATORS.items() if op.exact}  # deeper, wider, skip, add_skip, concat_skip
F64_TOL, F32_TOL = 1e-10, 1e-4


def random_seed_net(rng, dtype=torch.float64):
    "A small seed (2-4 blocks, regular or separable), scrambled so that no weight or statistic is at its initial value."
    blocks = int(rng.integers(2, 4))
    widths = tuple(int(w) for w in rng.integers(2, 7, size=blocks))
    separable = tuple(bool(s) for s in rng.integers(0, 2, size=blocks))
    arch = seed_arch(
        widths, kernel=int(rng.choice([1, 3])), separable=separable, size=8, classes=int(rng.integers(2, 11))
    )
    return scramble(Net(arch).to(dtype), seed=int(rng.integers(1 << 30)))


def readers_of_widened(arch: Arch, site: int) -> set:
    "Ops that read the tensor widened at `site`, following it through pools, concats and add main inputs."
    seen, frontier = set(), [site]
    while frontier:
        node = frontier.pop()
        for consumer, pos in arch.consumers(node):
            op = arch.node(consumer).op
            seen.add(f"{op}:skip" if op == "add" and pos == 1 else op)
            if op in ("pool", "concat") or (op == "add" and pos == 0):
                frontier.append(consumer)
    return seen


def state_copy(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_unchanged(net, before):
    after = net.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"parent tensor {k} was changed by a morphism"


def test_chains_on_200_random_architectures():
    coverage = Counter()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    worst64 = worst32 = 0.0
    names = list(EXACT)
    for k in range(N_ARCHS):
        rng = np.random.default_rng(1000 + k)
        net = random_seed_net(rng)
        for step in range(CHAIN):
            before = state_copy(net)
            name = names[rng.integers(len(names))]
            kwargs = {"calib": x} if name == "deeper" and rng.random() < 0.5 else {}
            if name == "wider":  # pick the site here to know where the widened tensor travels
                kwargs["site"] = int(rng.choice(conv_block_ids(net.arch)))
                coverage.update(f"wider->{r}" for r in readers_of_widened(net.arch, kwargs["site"]))
            try:
                child, ops, affected = EXACT[name](net, rng, **kwargs)
            except NotApplicable:
                continue
            assert affected == () and ops[0] in EXACT
            coverage[name] += 1
            assert_unchanged(net, before)
            e64 = morphism_error(net, child, x)
            e32 = morphism_error(copy.deepcopy(net).float(), copy.deepcopy(child).float(), x.float())
            assert e64 <= F64_TOL, (k, step, name, str(net.arch), e64)
            assert e32 <= F32_TOL, (k, step, name, str(net.arch), e32)
            worst64, worst32 = max(worst64, e64), max(worst32, e32)
            # the next parent is "trained": λ ≠ 1, the zero weights of earlier steps no longer zero
            net = scramble(child, seed=int(rng.integers(1 << 30)))
        Arch.from_json(net.arch.to_json()) == net.arch or pytest.fail("JSON round trip")
    print(f"\nworst relative error: float64 {worst64:.1e}, float32 {worst32:.1e}; coverage {dict(coverage)}")
    for needed in (
        "deeper",
        "wider",
        "skip",
        "add_skip",
        "concat_skip",
        "wider->add",
        "wider->add:skip",
        "wider->concat",
        "wider->sep",
        "wider->conv",
        "wider->pool",
        "wider->head",
    ):
        assert coverage[needed] >= 5, f"{needed} appeared only {coverage[needed]} times in the chains"


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_op=st.integers(20, 30))
def test_end_to_end_chain_is_a_morphism(seed, n_op):
    "generate_child with n_op ≥ 20 operators at once: the final child equals the scrambled seed."
    rng = np.random.default_rng(seed)
    parent = random_seed_net(rng)
    before = state_copy(parent)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed % 1000))
    child, ops, affected = generate_child(parent, n_op, rng=rng, calib=x)
    assert_unchanged(parent, before)
    assert affected == ()
    assert len(ops) >= n_op - 5  # only skips can be inapplicable, and rarely
    assert morphism_error(parent, child, x) <= F64_TOL
    assert morphism_error(copy.deepcopy(parent).float(), copy.deepcopy(child).float(), x.float()) <= F32_TOL


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_deeper_is_identity_in_train_mode_on_its_calibration_batch(seed):
    rng = np.random.default_rng(seed)
    parent = random_seed_net(rng)
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed % 1000))
    child = deeper(parent, rng, calib=x).net
    p, c = copy.deepcopy(parent).train(), copy.deepcopy(child).train()
    with torch.no_grad():
        y, y_child = p(x), c(x)
    assert ((y - y_child).abs().max() / y.abs().max()).item() <= F64_TOL


def test_children_are_deterministic_and_independent_of_the_parent():
    rng = np.random.default_rng(0)
    parent = random_seed_net(rng)
    a, ops_a, _ = generate_child(parent, 5, rng=np.random.default_rng(7))
    b, ops_b, _ = generate_child(parent, 5, rng=np.random.default_rng(7))
    assert ops_a == ops_b and a.arch == b.arch
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    before = state_copy(parent)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(1.0)  # training a child must not reach the parent
    assert_unchanged(parent, before)


def test_skip_pairs_are_same_resolution_ancestors():
    arch = seed_arch((4, 4, 4))
    pairs = skip_pairs(arch)
    assert (0, 1) in pairs and (2, 3) in pairs and (1, 3) not in pairs  # 1 is at 32x32, 3 at 16x16
    for a, b in pairs:
        assert arch.shape(a)[1] == arch.shape(b)[1]


def test_bad_input_gives_clear_errors():
    net = Net(seed_arch((4, 4, 4)))
    with pytest.raises(ValueError, match="unknown operator 'deepr'"):
        generate_child(net, 1, ["deepr"])
    with pytest.raises(ValueError, match="empty"):
        resolve_operators([])
    with pytest.raises(ValueError, match="node 2 is pool"):
        deeper(net, site=2)
    with pytest.raises(ValueError, match="node 6 is head"):
        wider(net, site=6)
    with pytest.raises(ValueError, match="not a valid"):
        add_skip(net, site=(1, 3))
    with pytest.raises(ValueError, match="not a valid"):
        concat_skip(net, site=(3, 1))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda net: deeper(net, site=1, kernel=2), "deeper: kernel must be a positive odd integer"),
        (lambda net: deeper(net, site=1, kernel=0), "deeper: kernel must be a positive odd integer"),
        (lambda net: deeper(net, site=1, kernel=3.0), "deeper: kernel must be a positive odd integer"),
        (lambda net: deeper(net, kernel=-1), "deeper: kernel must be a positive odd integer"),
        (lambda net: wider(net, site=1, factor=0.5), "wider: factor must be a finite number > 1"),
        (lambda net: wider(net, site=1, factor=-1), "wider: factor must be a finite number > 1"),
        (lambda net: wider(net, site=1, factor=1.0), "wider: factor must be a finite number > 1"),
        (lambda net: wider(net, factor=float("inf")), "wider: factor must be a finite number > 1"),
        (lambda net: add_skip(net, site=3), r"add_skip: site must be a \(from, to\) pair"),
        (lambda net: concat_skip(net, site=(0, 1, 3)), r"concat_skip: site must be a \(from, to\) pair"),
        (lambda net: add_skip(net, site=(0, 99)), "add_skip: no node 99 in"),
        (lambda net: concat_skip(net, site=("0", 1)), "concat_skip: site must be a node id"),
    ],
)
def test_bad_arguments_are_named(call, message):
    net = Net(seed_arch((16, 32, 64), size=8))
    with pytest.raises(ValueError, match=message):
        call(net)


def test_deeper_keeps_the_resolution_for_every_odd_kernel():
    parent = scramble(Net(seed_arch((8, 8, 8), size=8)).double(), seed=3).eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for kernel in (1, 3, 5, 7):
        child = deeper(parent, site=1, kernel=kernel).net
        assert child.features(x, [7])[7].shape == (2, 8, 8, 8)
        assert morphism_error(parent, child, x) < 1e-12


def test_skip_merges_by_addition_or_concatenation_with_equal_chance():
    net = Net(seed_arch((4, 4, 4)))
    rng = np.random.default_rng(0)
    kinds = [skip(net, rng).ops for _ in range(400)]
    assert set(kinds) == {("add_skip",), ("concat_skip",)}
    assert 0.42 < kinds.count(("add_skip",)) / len(kinds) < 0.58
    # the kind is one draw, then the merge draws its pair from the same generator
    r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
    merge = (add_skip, concat_skip)[r2.integers(2)]
    assert skip(net, r1).net.arch == merge(net, r2).net.arch
