"The relayout kernel: take, moved, propagate (on the architecture alone and with weights), and the small editors."

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from nash_lit.arch import Arch, Net, conv_block_ids, n_params, seed_arch
from nash_lit.ops import Node
from nash_lit.morphisms import scramble
from nash_lit.operators import generate_child
from nash_lit.surgery import (
    NotApplicable,
    as_rng,
    clone_state,
    he_normal,
    insert_after,
    make_child,
    moved,
    pick,
    propagate,
    rewire,
    site_node,
    take,
    take_filters,
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_take_keeps_drops_and_adds_slices(data):
    n = data.draw(st.integers(1, 6))
    t = torch.randn(n, 3, dtype=torch.float64)
    origin = data.draw(st.lists(st.one_of(st.none(), st.integers(0, n - 1)), min_size=1, max_size=8))
    k = origin.count(None)
    new = torch.randn(k, 3, dtype=torch.float64)
    out = take(t, origin, 0, new if k else None)
    fresh = iter(new)
    for j, o in enumerate(origin):
        assert torch.equal(out[j], t[o] if o is not None else next(fresh))
    assert torch.equal(
        take(t, origin, 0)[[j for j, o in enumerate(origin) if o is None]], torch.zeros(k, 3, dtype=t.dtype)
    )
    channels = tuple(range(n))
    for c, j in zip(channels, moved(channels, origin)):
        assert (j is None) == (c not in origin) and (j is None or origin[j] == c)


def random_arch_net(seed, operators=("deeper", "wider", "add_skip", "concat_skip")):
    rng = np.random.default_rng(seed)
    widths = tuple(int(w) for w in rng.integers(3, 9, size=3))
    net = Net(seed_arch(widths, separable=tuple(bool(s) for s in rng.integers(0, 2, size=3)), size=8))
    net = generate_child(net, 8, operators, rng=rng).net
    return scramble(net.double(), seed=seed), rng


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_planning_on_the_architecture_agrees_with_the_build(seed):
    "propagate without a state gives the same nodes and names, consumes no random numbers, and counts the child's size."
    net, rng = random_arch_net(seed)
    arch = net.arch
    site = int(rng.choice(conv_block_ids(arch)))
    c = arch.channels(site)
    origin = sorted(rng.choice(c, size=int(rng.integers(1, c + 1)), replace=False).tolist()) + [None] * int(
        rng.integers(0, 3)
    )
    nodes = [n.replace(attrs={"channels": len(origin)}) if n.id == site else n for n in arch.nodes]
    plan_names, built_names = set(), set()
    before = as_rng(1).bit_generator.state
    r = as_rng(1)
    planned = propagate(nodes, {site: (origin, c)}, rng=r, affected=plan_names)
    assert r.bit_generator.state == before
    state = clone_state(net)
    take_filters(state, arch, site, origin, as_rng(2))
    built = propagate(nodes, {site: (origin, c)}, state, as_rng(3), built_names)
    assert planned == built and plan_names == built_names
    child = make_child(net, built, state)
    assert n_params(Arch(tuple(planned))) == n_params(child)
    assert built_names <= {name for name, _ in child.named_parameters()}
    assert torch.isfinite(child(torch.randn(2, 3, 8, 8, dtype=torch.float64))).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_dropping_zero_channels_and_adding_zero_read_channels_is_exact(seed):
    """A block's channels that output 0 can be dropped; new channels are read with zero weights: both exact.
    (Without additive merges: a dropped main channel of a merge may carry the skip's values.)"""
    net, rng = random_arch_net(seed, ("deeper", "wider", "concat_skip"))
    net.eval()
    arch = net.arch
    site = int(rng.choice(conv_block_ids(arch)))
    c = arch.channels(site)
    drop = set(rng.choice(c, size=int(rng.integers(0, c)), replace=False).tolist())
    with torch.no_grad():
        for ch in drop:
            net.blocks[str(site)].bn.weight[ch] = net.blocks[str(site)].bn.bias[ch] = 0  # ReLU(0) = 0
    origin = [ch for ch in range(c) if ch not in drop] + [None] * int(rng.integers(0, 3))
    nodes = [n.replace(attrs={"channels": len(origin)}) if n.id == site else n for n in arch.nodes]
    state = clone_state(net)
    take_filters(state, arch, site, origin, rng)
    child = make_child(net, propagate(nodes, {site: (origin, c)}, state, rng), state)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y, y_child = net(x), child(x)
    assert ((y - y_child).abs().max() / y.abs().max()).item() <= 1e-10


def test_editors_and_errors():
    arch = seed_arch((4, 6, 8))
    nodes = insert_after(rewire(list(arch.nodes), 3, 7, skip=7), 3, Node(7, "conv", (3,), {"channels": 6, "kernel": 3}))
    assert [n.id for n in nodes] == [0, 1, 2, 3, 7, 4, 5, 6] and Arch(tuple(nodes)).node(4).inputs == (7,)
    with pytest.raises(ValueError, match="topological order"):
        propagate(nodes[::-1], {})
    net = Net(arch)
    state = clone_state(net)
    for v in state.values():
        v.zero_()
    assert not all(
        torch.equal(v, torch.zeros_like(v)) for v in net.state_dict().values()
    )  # the parent kept its weights
    with pytest.raises(NotApplicable, match="demo: no applicable place"):
        pick(as_rng(0), [], "demo", arch)
    w = he_normal(as_rng(0), (2000, 8), 8, torch.zeros(()))
    assert w.dtype == torch.float32 and abs(w.std().item() - 0.5) < 0.02
    assert make_child(net.eval(), arch.nodes, clone_state(net)).training is False


@pytest.mark.parametrize(
    "site, message",
    [
        (99, "demo: no node 99 in 0:in3@32"),
        (-1, "demo: no node -1 in"),
        ("1", r"demo: site must be a node id \(an int\), got '1'"),
        (1.0, "demo: site must be a node id"),
        (True, "demo: site must be a node id"),
        (None, "demo: site must be a node id"),
    ],
)
def test_a_forced_site_that_is_no_node_is_named(site, message):
    with pytest.raises(ValueError, match=message):
        site_node(seed_arch((4, 6, 8)), site, "demo")


def test_site_node_accepts_any_integer_id():
    arch = seed_arch((4, 6, 8))
    assert site_node(arch, 3, "demo") == site_node(arch, np.int64(3), "demo") == arch.node(3)
    assert 3 in arch and 99 not in arch and "3" not in arch
