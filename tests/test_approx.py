"Approximate morphisms over random architectures: validity, affected parameters, recovery, SVD init, formulas."

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import nash_lit.operators as A
from nash_lit.operators import (
    RECOVERY,
    conv_depth,
    delta,
    prune,
    recover,
    removable_ids,
    remove_block,
    satisfies_constraint,
    separable_factors,
    separable_ids,
    to_separable,
)
from nash_lit.arch import Arch, Net, conv_block_ids, n_params, seed_arch
from nash_lit.ops import OPS as SPECS
from nash_lit.morphisms import add_skip, concat_skip, deeper, morphism_error, scramble, wider
from nash_lit.operators import OPERATORS, generate_child
from nash_lit.surgery import NotApplicable
from nash_lit.data import synthetic
from nash_lit.training import TrainConfig, train

OPS = {"remove": remove_block, "prune": prune, "to_separable": to_separable}
SHRINKING = {name: op.fn for name, op in OPERATORS.items() if op.shrinks}
DATA = synthetic(256, 64, 64, size=8, seed=0)
FAST = TrainConfig(epochs=1, batch_size=64, progress=False, amp=False, channels_last=False, cutout=4)  # 8x8 images
GENTLE = replace(RECOVERY, batch_size=64, amp=False, channels_last=False, cutout=4)


def grown_net(rng, dtype=torch.float32, n_op=6):
    "A seed of 16-24 filters per block, grown by random exact morphisms, scrambled (λ ≠ 1, no zero weights)."
    widths = tuple(int(w) for w in rng.integers(16, 25, size=3))
    sep = tuple(bool(s) for s in rng.integers(0, 2, size=3))
    net = Net(seed_arch(widths, separable=sep, size=8, kernel=int(rng.choice([1, 3, 3])))).to(dtype)
    net = generate_child(net, n_op, ("deeper", "wider", "add_skip", "concat_skip"), rng=rng).net
    return scramble(net, seed=int(rng.integers(1 << 30)))


def changed_parameters(parent, child) -> set:
    "Child parameters that are new or differ in shape or value from the parent's."
    old = dict(parent.named_parameters())
    return {
        name
        for name, p in child.named_parameters()
        if name not in old or old[name].shape != p.shape or not torch.equal(old[name], p)
    }


@settings(max_examples=36, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), op=st.sampled_from(sorted(OPS)))
def test_approximate_operators_on_random_architectures(seed, op):
    rng = np.random.default_rng(seed)
    parent = grown_net(rng)
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    try:
        child, ops, affected = OPS[op](parent, rng)
    except NotApplicable:
        return
    # a valid architecture that builds, runs and keeps the constraint
    assert Arch.from_json(child.arch.to_json()) == child.arch and satisfies_constraint(child.arch)
    assert torch.isfinite(child(torch.randn(2, 3, 8, 8))).all()
    for k, v in parent.state_dict().items():
        assert torch.equal(before[k], v), f"parent's {k} changed"
    assert ops == (op,) and set(affected) <= {name for name, _ in child.named_parameters()}
    missing = changed_parameters(parent, child) - set(affected)
    assert not missing, f"{op}: parameters changed but not marked affected: {missing}"
    # recovery trains nothing outside the affected parameters, BN statistics of frozen layers included
    frozen = {
        k: v.clone()
        for k, v in child.state_dict().items()
        if not any(k.startswith(a.rsplit(".", 1)[0] + ".") for a in affected)
    }
    recover(parent, child, affected, DATA, epochs=1, config=GENTLE)
    after = child.state_dict()
    for k, v in frozen.items():
        assert torch.equal(after[k], v), f"{op}: recovery changed frozen {k}"


def test_recovery_reduces_delta():
    rng = np.random.default_rng(3)
    parent = Net(seed_arch((16, 24, 32), size=8))
    train(parent, DATA, FAST)
    parent = concat_skip(add_skip(parent, rng).net, rng).net
    train(parent, DATA, FAST)
    for name, op in OPS.items():
        child, _, affected = op(parent, rng)
        d0 = delta(parent, child, DATA)
        recover(parent, child, affected, DATA, epochs=3, config=GENTLE)
        assert delta(parent, child, DATA) < d0, name


def test_svd_beats_random_initialisation_on_20_trained_convolutions():
    rng, compared = np.random.default_rng(0), 0
    while compared < 20:
        net = Net(seed_arch(tuple(int(w) for w in rng.integers(16, 33, size=3)), size=8))
        net = generate_child(net, 3, ["deeper", "wider"], rng=rng).net
        train(net, DATA, FAST)
        for site in separable_ids(net.arch):
            svd = delta(net, to_separable(net, rng, site=site, init="svd").net, DATA)
            rnd = delta(net, to_separable(net, rng, site=site, init="random").net, DATA)
            assert svd < rnd, (str(net.arch), site, svd, rnd)
            compared += 1
    assert compared >= 20


def test_separable_kernel_is_substituted_exactly():
    g = torch.Generator().manual_seed(0)
    net = scramble(Net(seed_arch((16, 20, 24))).double(), seed=0)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=g)
    for site, (o, i) in ((3, (20, 16)), (5, (24, 20))):
        d, p = (
            torch.randn(i, 3, 3, dtype=torch.float64, generator=g),
            torch.randn(o, i, dtype=torch.float64, generator=g),
        )
        with torch.no_grad():
            net.blocks[str(site)].conv.weight.copy_(p[:, :, None, None] * d[None])
        assert morphism_error(net, to_separable(net, site=site).net, x) <= 1e-10
    w = torch.randn(7, 5, 3, 3, dtype=torch.float64, generator=g)
    dw, pw = separable_factors(w)
    best = pw[:, :, 0, 0][:, :, None, None] * dw[None, :, 0]
    # Eckart–Young: the residual is the energy beyond the first singular value of each input channel's matrix
    s = torch.linalg.svdvals(w.permute(1, 0, 2, 3).reshape(5, 7, 9))
    assert torch.allclose((w - best).pow(2).sum(), s[:, 1:].pow(2).sum())


def test_removing_an_untrained_skip_changes_nothing():
    parent = Net(seed_arch((16, 24, 32), size=8))
    train(parent, DATA, FAST)
    for make in (add_skip, concat_skip):
        grown = make(parent, site=(2, 3)).net
        merge = grown.arch.next_id - 1
        child = remove_block(grown, site=merge).net
        assert child.arch == parent.arch
        assert delta(grown, child, DATA) <= 1e-5 * delta(grown, Net(parent.arch), DATA)


@pytest.mark.parametrize("site, fraction", [(1, 0.5), (1, 0.25), (3, 0.5), (3, 0.25), (5, 0.5), (5, 0.25)])
def test_parameter_counts_after_pruning_follow_the_formula(site, fraction):
    widths, k, classes = (32, 48, 64), 3, 10
    net = Net(seed_arch(widths))
    child = prune(net, site=site, fraction=fraction, min_filters=8).net
    b = (site - 1) // 2  # block index
    c = widths[b]
    removed = int(c * fraction)
    c_in = 3 if b == 0 else widths[b - 1]
    own = removed * (c_in * k * k + 2)  # filters and their BN γ, β
    reader = removed * (widths[b + 1] * k * k if b < 2 else classes)  # next conv's input slices, or head columns
    assert n_params(net.arch) - n_params(child.arch) == own + reader


def test_parameter_counts_after_separable_substitution_follow_the_formula():
    net = Net(seed_arch((32, 48, 64)))
    for site, (o, i) in ((1, (32, 3)), (3, (48, 32)), (5, (64, 48))):
        child, _, affected = to_separable(net, site=site)
        assert n_params(net.arch) - n_params(child.arch) == o * i * 9 - (i * 9 + o * i)
        assert {f"blocks.{site}.depthwise.weight", f"blocks.{site}.pointwise.weight"} <= set(affected)


def test_constraint_and_bad_input():
    seed = Net(seed_arch((16, 32, 64)))
    assert conv_depth(seed.arch) == 3
    with pytest.raises(ValueError, match="fewer than 3 connected convolutions"):
        remove_block(seed, site=3)
    with pytest.raises(NotApplicable):
        remove_block(seed, 0)  # every removal would break the constraint
    with pytest.raises(ValueError, match="fewer than 3"):
        prune(seed, site=1, fraction=0.5)  # 16 -> 8 filters
    with pytest.raises(ValueError, match="not a conv block"):
        prune(seed, site=2)
    with pytest.raises(ValueError, match="not a regular conv"):
        to_separable(to_separable(seed, site=3).net, site=3)
    with pytest.raises(ValueError, match="would grow"):
        to_separable(Net(seed_arch((16, 32, 64), kernel=1)), site=3)
    with pytest.raises(NotApplicable):
        to_separable(Net(seed_arch((16, 32, 64), kernel=1)), 0)
    with pytest.raises(ValueError, match="init must be"):
        to_separable(seed, site=3, init="zeros")
    with pytest.raises(ValueError, match="not a block or a skip"):
        remove_block(seed, site=2)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 2.0, -0.5, float("nan"), "half"])
def test_prune_names_a_bad_fraction(fraction):
    "A fraction outside (0, 1) is refused naming `fraction`, never as a node with 0 (or fewer) channels."
    seed = Net(seed_arch((16, 32, 64), size=8))
    with pytest.raises(ValueError, match=r"prune: fraction must lie in \(0, 1\)"):
        prune(seed, site=5, fraction=fraction)
    with pytest.raises(ValueError, match=r"prune: fraction must lie in \(0, 1\)"):
        prune(seed, 0, fraction=fraction)


def test_candidate_sites_come_from_the_registry():
    net = concat_skip(Net(seed_arch((16, 32, 64), separable=(False, True, False))), site=(0, 1)).net
    arch = add_skip(net, site=(2, 3)).net.arch
    merges = [n.id for n in arch.nodes if n.op in ("add", "concat")]
    assert removable_ids(arch) == [n.id for n in arch.nodes if SPECS[n.op].conv_block or n.id in merges]
    assert separable_ids(arch) == [1, 5]  # node 3 is already separable
    child = to_separable(Net(arch), site=1).net
    assert child.arch.node(1).op == SPECS["conv"].separable_of and separable_ids(child.arch) == [5]


def test_removal_that_would_grow_the_network_is_refused():
    "The issue's case: deeper(3) then wider(3) makes block 7 read 48 channels while it has 32."
    wide = wider(deeper(Net(seed_arch((16, 32, 128))), site=3).net, site=3).net
    assert n_params(wide) == 59_770
    with pytest.raises(ValueError, match=r"node 3\) has 48 channels, more than its 32"):
        remove_block(wide, site=7)
    for seed in range(30):
        child = remove_block(wide, seed).net
        assert 7 in [n.id for n in child.arch.nodes] and n_params(child) < n_params(wide)


def _all_sites(net, name):
    arch = net.arch
    if name == "remove":
        return [dict(site=i) for i in removable_ids(arch)]
    if name == "prune":
        return [dict(site=i, fraction=f) for i in conv_block_ids(arch) for f in (0.25, 0.5)]
    return [dict(site=i) for i in separable_ids(arch)]


def test_shrinking_operators_never_grow_on_300_random_applications():
    "Random draws, and every forced site: a child is smaller, or the site is refused with a ValueError."
    rng, applied, forced, refused = np.random.default_rng(11), 0, 0, 0
    while applied < 300:
        net = grown_net(rng, n_op=int(rng.integers(2, 9)))
        if rng.random() < 0.3:  # the wider-then-remove pattern: a block that reads a wider input than it has
            site = int(rng.choice(conv_block_ids(net.arch)))
            net = wider(deeper(net, rng, site=site).net, rng, site=site).net
        size = n_params(net)
        for name, op in SHRINKING.items():
            try:
                child = op(net, rng).net
            except NotApplicable:
                continue
            assert n_params(child) <= size, (name, str(net.arch), str(child.arch))
            assert n_params(child) == sum(p.numel() for p in child.parameters())
            applied += 1
        for name in SHRINKING:
            for kw in _all_sites(net, name)[:4]:
                try:
                    child = SHRINKING[name](net, rng, **kw).net
                except ValueError:
                    refused += 1
                    continue
                assert n_params(child) <= size, (name, kw, str(net.arch))
                forced += 1
    print(f"\n{applied} random and {forced} forced applications never grew a network ({refused} forced sites refused)")


@pytest.mark.parametrize("name", sorted(OPS))
def test_choosing_a_site_builds_one_network(name, monkeypatch):
    "Candidates are planned on the architecture: one child network is built, however many sites there are."
    exact = ("deeper", "wider", "add_skip", "concat_skip")
    net = generate_child(Net(seed_arch((16, 20, 24), size=8)), 10, exact, rng=4).net
    built = []
    real = A.make_child
    monkeypatch.setattr(A, "make_child", lambda *a: built.append(1) or real(*a))
    OPS[name](net, np.random.default_rng(0))
    assert len(built) == 1
