"""Viterbi equals brute force over all block paths; derivation yields buildable documents."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from densenas_core._graph import space_graph
from densenas_core.arch import Architecture, build_network, space_mismatches
from densenas_core.derive import derive_architecture, derive_choices, path_log_prob, viterbi
from densenas_core.spaces import SPACE_NAMES, get_space
from densenas_core.supernet import SuperNet


def _all_paths(n, in_edges):
    """Every block sequence 0 → n−1 (backwards enumeration)."""

    def rec(k):
        if k == 0:
            return [[0]]
        return [p + [k] for i in in_edges[k] for p in rec(i)]

    return rec(n - 1)


@st.composite
def dags(draw):
    n = draw(st.integers(2, 8))
    in_edges, probs = [[]], [[]]
    for k in range(1, n):
        preds = draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
        in_edges.append(preds)
        probs.append([draw(st.one_of(st.just(0.0), st.floats(1e-6, 1.0))) for _ in preds])
    return n, in_edges, probs


@settings(max_examples=150, deadline=None)
@given(dags())
def test_viterbi_matches_brute_force(dag):
    n, in_edges, probs = dag
    path = viterbi(n, in_edges, probs)
    assert path[0] == 0 and path[-1] == n - 1
    for i, k in zip(path[:-1], path[1:]):
        assert i in in_edges[k]
    best = max(path_log_prob(p, in_edges, probs) for p in _all_paths(n, in_edges))
    got = path_log_prob(path, in_edges, probs)
    if best == -math.inf:
        assert got == -math.inf
    else:
        assert got == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_viterbi_prefers_the_product_not_the_greedy_step():
    # greedy from 0 takes 0→1 (0.6) but 1→3 is weak; 0→2→3 has the larger product
    in_edges = [[], [0], [0], [1, 2]]
    probs = [[], [0.6], [0.4], [0.1, 0.9]]
    assert viterbi(4, in_edges, probs) == [0, 2, 3]


def test_viterbi_rejects_backward_edges():
    with pytest.raises(ValueError):
        viterbi(3, [[], [0], [2]], [[], [1.0], [1.0]])


def _random_arch_params(space, seed):
    g = space_graph(space)
    gen = torch.Generator().manual_seed(seed)
    alpha = [torch.randn(len(space.align_ops), generator=gen).tolist() for _ in g.align_paths]
    alpha += [torch.randn(len(space.layer_ops), generator=gen).tolist() for _ in g.layer_block]
    beta = [
        torch.randn(len(space.out_paths[i]), generator=gen).tolist() for i in range(g.beta_rows)
    ]
    return alpha, beta


@pytest.mark.parametrize("name", SPACE_NAMES)
def test_derived_architecture_is_a_valid_subnetwork(name):
    space = get_space(name)
    alpha, beta = _random_arch_params(space, 0)
    doc = derive_architecture(space, alpha, beta, num_classes=7, in_channels=1)
    arch = Architecture.from_dict(doc)
    assert doc["version"] == 1 and doc["space"] == name and doc["num_classes"] == 7
    assert arch.in_channels == 1
    assert space_mismatches(arch, space) == []
    path, align, layers = derive_choices(space, alpha, beta)
    non_stem = [b for b in arch.blocks if b.from_block is not None]
    assert [(b.from_block, b.to_block) for b in non_stem] == list(zip(path[:-2], path[1:-1]))
    for b in non_stem:
        assert b.align_op == space.align_ops[align[(b.from_block, b.to_block)]]
        assert list(b.layers) == [
            space.layer_ops[o] for o in layers[b.to_block] if space.layer_ops[o] != "skip"
        ]
    if space.stem.fixed_op:
        assert (arch.blocks[0].align_op, arch.blocks[0].to_block) == (space.stem.fixed_op, 0)


def test_supernet_export_is_the_derivation_of_its_parameters():
    space = get_space("mbv2-small")
    torch.manual_seed(0)
    net = SuperNet(space, num_classes=10, in_channels=1)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    assert net.export() == derive_architecture(
        space, net.alpha_lists(), net.beta_lists(), 32, 10, 1
    )


def test_derivation_follows_strong_preferences():
    space = get_space("mbv2-small")
    net = SuperNet(space, 10)
    g = net.graph
    with torch.no_grad():
        net.beta.zero_()
        # from every block prefer the farthest reachable successor
        for i in range(g.beta_rows):
            n_out = len(space.out_paths[i])
            net.beta[i, n_out - 1] = 5.0
        net.alpha_align.zero_()
        net.alpha_align[:, space.align_ops.index("mb_k7_e6")] = 3.0
        net.alpha_layer.zero_()
        net.alpha_layer[:, space.layer_ops.index("skip")] = 3.0
    doc = derive_architecture(space, net.alpha_lists(), net.beta_lists(), 32, 10, 1)
    blocks = doc["blocks"][1:]
    assert all(b["align_op"] == "mb_k7_e6" and b["layers"] == [] for b in blocks)
    # the derived sequence jumps: fewer blocks than the 9 routing blocks
    assert len(blocks) < len(space.routing_blocks)
    model = build_network(doc)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_alpha_beta_exchange_formats_agree():
    space = get_space("resnet-small")
    torch.manual_seed(3)
    net = SuperNet(space, 10)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    a = derive_architecture(space, net.alpha_lists(), net.beta_lists())
    b = derive_architecture(space, (net.alpha_align, net.alpha_layer), net.beta)
    c = derive_architecture(
        space,
        {"align": net.alpha_align.tolist(), "layers": net.alpha_layer.tolist()},
        net.beta_lists(),
    )
    assert a == b == c
    with pytest.raises(ValueError):
        derive_architecture(space, net.alpha_lists()[:-1], net.beta_lists())


def test_random_architectures_are_valid_members_of_the_space_and_vary():
    from densenas_core.derive import random_architecture

    gen = torch.Generator().manual_seed(0)
    docs = [
        random_architecture("mbv2-small", gen, num_classes=10, input_size=32, in_channels=1)
        for _ in range(20)
    ]
    for d in docs:
        assert space_mismatches(Architecture.from_dict(d), get_space("mbv2-small")) == []
    assert len({json.dumps(d["blocks"], sort_keys=True) for d in docs}) > 15
    assert len({len(d["blocks"]) for d in docs}) > 1  # paths of different lengths
