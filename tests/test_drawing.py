"Drawing architectures: one box per block and one arrow per input, for random children of every seed, and what changed."

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from nash_lit.arch import PARETO_SEEDS, Net, seed_arch
from nash_lit.drawing import OUTLINE, changes, draw_arch
from nash_lit.operators import OPERATORS, generate_child


def family(seed: int, n: int = 6):
    "A chain of n random children of a random seed network, every operator of the registry allowed."
    rng = np.random.default_rng(seed)
    kwargs = list(PARETO_SEEDS.values())[seed % len(PARETO_SEEDS)]
    net = Net(seed_arch(**{**kwargs, "widths": tuple(w // 8 for w in kwargs["widths"])}))
    chain = [net.arch]
    for _ in range(n):
        net = generate_child(net, int(rng.integers(1, 4)), tuple(OPERATORS), rng=rng).net
        chain.append(net.arch)
    return chain


def drawn(ax, kind: str) -> list:
    return [p for p in ax.patches if (p.get_gid() or "").startswith(kind + " ")]


@pytest.mark.parametrize("seed", range(4))  # one family per Pareto seed
def test_one_box_per_block_one_arrow_per_input(seed):
    chain = family(seed)
    for parent, child in zip(chain, chain[1:]):
        ax = draw_arch(child, before=parent)
        boxes, arrows = drawn(ax, "block"), drawn(ax, "edge")
        assert sorted(int(b.get_gid().split()[1]) for b in boxes) == sorted(n.id for n in child.nodes)
        assert sorted(a.get_gid().split()[1] for a in arrows) == sorted(
            f"{i}->{n.id}" for n in child.nodes for i in n.inputs
        )
        diff = changes(parent, child)
        parent_ids, child_ids = {n.id for n in parent.nodes}, {n.id for n in child.nodes}
        assert set(diff["added"]) == child_ids - parent_ids and set(diff["removed"]) == parent_ids - child_ids
        assert set(diff["changed"]) == {n.id for n in child.nodes if n.id in parent_ids and n != parent.node(n.id)}
        outlined = {
            int(b.get_gid().split()[1])
            for b in boxes
            if matplotlib.colors.to_hex(b.get_edgecolor()) in {OUTLINE["added"], OUTLINE["changed"]}
        }
        assert outlined == set(diff["added"]) | set(diff["changed"])
        plt.close(ax.figure)


def test_an_unchanged_network_says_so_and_draws_into_a_given_axes():
    arch = seed_arch((8, 16, 32))
    fig, ax = plt.subplots()
    assert draw_arch(arch, ax, before=arch) is ax
    assert ax.get_title().endswith("unchanged") and changes(arch, arch) == dict(added=[], changed=[], removed=[])
    plt.close(fig)
