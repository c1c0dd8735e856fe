"The genotype: validation, hashing, JSON, parameter and FLOP counts."

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from torch import nn

from nash_lit.arch import (
    Arch,
    Net,
    block_id,
    conv_block_ids,
    eval_mode,
    filters_name,
    flops,
    n_params,
    param_name,
    seed_arch,
)
from nash_lit.ops import OPS, Node
from nash_lit.operators import OPERATORS, generate_child


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_archs_round_trip_and_count(seed):
    rng = np.random.default_rng(seed)
    net = Net(seed_arch((3, 4, 5), separable=bool(seed % 2), size=16))
    arch = generate_child(net, 8, ("deeper", "wider", "skip"), rng=rng).net.arch
    again = Arch.from_json(arch.to_json())
    assert again == arch and hash(again) == hash(arch) and str(again) == str(arch)
    assert n_params(arch) == sum(p.numel() for p in Net(arch).parameters())
    assert flops(arch) > 0
    out = Net(arch)(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_node_order_does_not_matter():
    a = seed_arch()
    assert Arch(tuple(reversed(a.nodes))) == a


def test_flops_match_the_closed_form_for_the_seed():
    a = seed_arch((32, 64, 128))
    assert flops(a) == 2 * (32**2 * 3 * 32 * 9 + 16**2 * 32 * 64 * 9 + 8**2 * 64 * 128 * 9 + 128 * 10)
    assert flops(a, (4, 3, 32, 32)) == 4 * flops(a)


def _nodes():
    return list(seed_arch((4, 8, 16)).nodes)  # 0 in, 1 conv, 2 pool, 3 conv, 4 pool, 5 conv, 6 head


@pytest.mark.parametrize(
    "nodes, message",
    [
        (
            lambda n: n[:1] + [Node(1, "convv", (0,), {"channels": 4, "kernel": 3})] + n[2:],
            r"node 1 \(convv\): unknown op",
        ),
        (lambda n: n[:-1] + [n[-1].replace(inputs=(42,))], r"node 6 \(head\): input 42 does not exist"),
        (lambda n: n[:1] + [n[1].replace(inputs=(3,))] + n[2:], r"node \d \(\w+\): is on a cycle"),
        (
            lambda n: n[:-1] + [Node(9, "add", (5, 4), {"src": [0], "dst": [99]}), n[-1].replace(inputs=(9,))],
            r"node 9 \(add\): dst channels",
        ),
        (
            lambda n: n[:-1] + [Node(9, "add", (5, 4), {"src": [99], "dst": [0]}), n[-1].replace(inputs=(9,))],
            r"node 9 \(add\): src channels",
        ),
        (
            lambda n: n[:-1] + [Node(9, "concat", (5, 1)), n[-1].replace(inputs=(9,))],
            r"node 9 \(concat\): inputs have different resolutions",
        ),
        (lambda n: n[:3] + [n[3].replace(attrs={"channels": 0})] + n[4:], r"node 3 \(conv\): attribute 'channels'"),
        (
            lambda n: n[:3] + [Node(3, "conv", (2, 1), {"channels": 8, "kernel": 3})] + n[4:],
            r"node 3 \(conv\): takes 1 inputs",
        ),
        (
            lambda n: n[:5] + [Node(7, "conv", (5,), {"channels": 8, "kernel": 3})] + n[5:],
            r"node 7 \(conv\): its output is never used",
        ),
        (lambda n: n + [Node(7, "pool", (4,))], r"head must be the last node|never used"),
        (lambda n: [n[0].replace(attrs={"size": 6})] + n[1:], r"node 4 \(pool\): cannot max-pool a 3x3"),
        (lambda n: n[:3] + [n[3].replace(attrs={"kernel": 2})] + n[4:], r"node 3 \(conv\): kernel 2 is even"),
        (lambda n: n[:5] + [n[5].replace(op="sep", attrs={"kernel": 4})] + n[6:], r"node 5 \(sep\): kernel 4 is even"),
    ],
)
def test_invalid_genotypes_name_the_node(nodes, message):
    with pytest.raises(ValueError, match=message):
        Arch(tuple(nodes(_nodes())))


def test_from_json_rejects_foreign_documents():
    with pytest.raises(ValueError, match="not a nash_lit architecture"):
        Arch.from_json(json.dumps({"nodes": []}))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_op=st.integers(0, 12))
def test_analytic_parameter_count_equals_the_built_network(seed, n_op):
    "n_params(arch) from OpSpec.params, on architectures reached by all eight operators, equals the built count."
    rng = np.random.default_rng(seed)
    widths = tuple(int(w) for w in rng.integers(16, 30, size=int(rng.integers(3, 5))))
    seed_net = Net(
        seed_arch(
            widths,
            kernel=int(rng.choice([1, 3, 5])),
            separable=bool(rng.integers(2)),
            size=16,
            classes=int(rng.integers(2, 12)),
        )
    )
    net = generate_child(seed_net, n_op, tuple(OPERATORS), rng=rng).net
    with torch.device("meta"):
        built = Net(net.arch)
    assert n_params(net.arch) == sum(p.numel() for p in built.parameters()) == n_params(net)


def test_modules_without_an_arch_are_counted_and_measured():
    plain = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 32 * 32, 10)
    )
    assert n_params(plain) == 3 * 4 * 9 + 4 + 2 * 4 + 4 * 32 * 32 * 10 + 10
    assert flops(plain) == 2 * (32 * 32 * 3 * 4 * 9 + 4 * 32 * 32 * 10)
    assert flops(plain, (2, 3, 32, 32)) == 2 * flops(plain)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    flops(plain.train())  # measured on meta copies: BatchNorm statistics are not touched
    assert all(torch.equal(v, before[k]) for k, v in plain.state_dict().items())
    net = Net(seed_arch((8, 16, 32)))
    assert (n_params(net), flops(net)) == (n_params(net.arch), flops(net.arch))
    with pytest.raises(ValueError, match="must be an Arch or an nn.Module"):
        n_params([1, 2])
    with pytest.raises(ValueError, match="must be an Arch or an nn.Module"):
        flops("net")


def test_operator_knowledge_lives_in_the_registry():
    assert {op for op, s in OPS.items() if s.conv_block} == {"conv", "sep"}
    assert {op for op, s in OPS.items() if s.relays_layout} == {"pool", "concat", "add"}
    arch = seed_arch((4, 8, 16), separable=(True, False, True))
    assert conv_block_ids(arch) == [1, 3, 5]
    state = Net(arch).state_dict()
    for i, c in zip((1, 3, 5), (4, 8, 16)):
        assert state[filters_name(arch, i)].shape[0] == c
    assert all(block_id(k) == int(k.split(".")[1]) for k in state) and param_name(3, "bn.bias") in state
    with pytest.raises(ValueError, match=r"node 6 \(head\): has no filters"):
        filters_name(arch, 6)
    with pytest.raises(ValueError, match="is not a block's tensor"):
        block_id("blocks.x.conv.weight")


def test_even_kernels_are_refused_by_the_seed_too():
    "padding k // 2 keeps the size only for odd k: a 2x2 kernel would make 9x9 of an 8x8 input."
    with pytest.raises(ValueError, match=r"node 1 \(conv\): kernel 2 is even"):
        seed_arch((16, 32, 64), kernel=2, size=8)
    with pytest.raises(ValueError, match=r"node 1 \(sep\): kernel 4 is even"):
        seed_arch(kernel=4, separable=True)
    for k in (1, 3, 5):
        net = Net(seed_arch((4, 4, 4), kernel=k, size=8))
        assert net.features(torch.randn(1, 3, 8, 8), [1])[1].shape == (1, 4, 8, 8)


def test_what_operators_read_matches_the_modules():
    "OpSpec.reads names real tensors with one slice per input channel; identity kernels pass the input through."
    shapes = {"conv": [(5, 8)], "sep": [(5, 8)], "add": [(6, 8), (4, 8)], "head": [(5, 1)]}
    for op, spec in OPS.items():
        if spec.build is None:
            assert not spec.reads and spec.identity is None
            continue
        attrs = {"add": {"src": (0,), "dst": (0,)}, "head": {"classes": 3}}.get(op, {"channels": 7, "kernel": 3})
        tensors = dict(spec.build(Node(1, op, (0, 2)[: len(shapes[op])], attrs), shapes[op]).named_parameters())
        for tensor, dim in spec.reads:
            assert tensors[tensor].shape[dim] == shapes[op][0][0], (op, tensor)
        assert set(spec.per_channel) <= {t for t, _ in spec.reads}
        if spec.conv_block:
            assert spec.filters in tensors and spec.identity is not None and spec.reads
    assert {op for op, s in OPS.items() if s.merge} == {"add", "concat"}
    for op, s in OPS.items():
        if s.separable_of:
            assert OPS[s.separable_of].conv_block and OPS[s.separable_of].per_channel
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    for op in ("conv", "sep"):
        for k in (1, 3, 5):
            block = OPS[op].build(Node(1, op, (0,), {"channels": 6, "kernel": k}), [(6, 5)]).double()
            block.load_state_dict(OPS[op].identity(6, k, x), strict=False)
            kernels = block.conv if op == "conv" else nn.Sequential(block.depthwise, block.pointwise)
            with torch.no_grad():
                assert torch.allclose(kernels(x), x, rtol=0, atol=1e-12), (op, k)


def test_eval_mode_restores_every_mode_also_after_an_error():
    a, b = Net(seed_arch((4, 4, 4))).train(), Net(seed_arch((4, 4, 4))).eval()
    with eval_mode(a, b) as nets:
        assert nets == (a, b)
        assert not any(m.training for m in (*a.modules(), *b.modules()))
    assert all(m.training for m in a.modules()) and not b.training
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(a):
            raise RuntimeError("boom")
    assert a.training
    with eval_mode():
        pass  # no modules: nothing to do
