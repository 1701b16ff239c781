"""Chained cost = exact expectation over child networks; local cost is the A.5 baseline."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from densenas_core._graph import space_graph
from densenas_core.arch import arch_summary, predict_cost
from densenas_core.cost import (
    build_cost_table,
    chained_cost,
    chained_cost_recursive,
    choice_probs,
    cost_term,
    flops_table,
    latency_lookup,
    local_cost,
)
from densenas_core.derive import derive_architecture, derive_choices
from densenas_core.spaces import get_space, space_from_dict
from densenas_core.supernet import SuperNet

SMALL = {
    "name": "small",
    "family": "mbv2",
    "input_size": 16,
    "stem": {"channels": 8, "stride": 1, "fixed_op": "mb_k3_e1"},
    "stages": [
        {"stride": 2, "widths": [8, 12, 16], "num_layers": 1},
        {"stride": 2, "widths": [16, 24], "num_layers": 2},
    ],
    "tail_channels": 32,
    "align_ops": ["mb_k3_e1", "mb_k5_e2"],
    "layer_ops": ["mb_k3_e2", "skip"],
    "max_connections": 3,
}


def _random_probs(g, seed, dtype=torch.float64, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    s = g.space
    a = (
        scale * torch.randn(len(g.align_paths), len(s.align_ops), generator=gen, dtype=dtype)
    ).softmax(-1)
    la = (
        scale * torch.randn(len(g.layer_block), len(s.layer_ops), generator=gen, dtype=dtype)
    ).softmax(-1)
    p = torch.empty(len(g.paths), dtype=dtype)
    for i in range(g.beta_rows):
        ks = [k for k in range(len(g.paths)) if g.path_src[k] == i]
        p[ks] = (scale * torch.randn(len(ks), generator=gen, dtype=dtype)).softmax(0)
    return a, la, p


def _exact_expectation(g, table, a, la, p):
    """Σ over every child network (block path × op choices on it) of P(child)·cost(child)."""
    s = g.space
    in_paths = {j: g.in_paths(j) for j in range(g.num_blocks)}

    def block_paths(k):
        if k == 0:
            return [[]]
        return [ks + [kk] for kk in in_paths[k] for ks in block_paths(g.path_src[kk])]

    total = 0.0
    for ks in block_paths(g.tail):
        p_path = math.prod(float(p[k]) for k in ks)
        align_rows = [g.path_row[k] for k in ks if not g.is_tail_path(k)]
        layer_rows = [r for k in ks if not g.is_tail_path(k) for r in g.block_layers[g.path_dst[k]]]
        tail_cost = sum(float(table.tail[g.path_row[k]]) for k in ks if g.is_tail_path(k))
        for ops_a in itertools.product(range(len(s.align_ops)), repeat=len(align_rows)):
            pa = math.prod(float(a[r, o]) for r, o in zip(align_rows, ops_a))
            ca = sum(float(table.align[r, o]) for r, o in zip(align_rows, ops_a))
            for ops_l in itertools.product(range(len(s.layer_ops)), repeat=len(layer_rows)):
                pl = math.prod(float(la[r, o]) for r, o in zip(layer_rows, ops_l))
                cl = sum(float(table.layers[r, o]) for r, o in zip(layer_rows, ops_l))
                total += p_path * pa * pl * (table.stem + table.classifier + tail_cost + ca + cl)
    return total


def test_chained_cost_is_the_exact_expectation_over_children():
    space = space_from_dict(SMALL)
    g = space_graph(space)
    table = flops_table(space, num_classes=5)
    for seed in range(2):
        a, la, p = _random_probs(g, seed, scale=2.0)
        exact = _exact_expectation(g, table, a, la, p)
        assert float(chained_cost(g, table, a, la, p)) == pytest.approx(exact, rel=1e-12)
        assert float(chained_cost_recursive(g, table, a, la, p)) == pytest.approx(exact, rel=1e-12)


def test_chained_cost_matches_monte_carlo_of_derived_children():
    """Sample child networks, build their documents and cost them with arch_summary."""
    space = space_from_dict(SMALL)
    g = space_graph(space)
    table = flops_table(space, num_classes=5, in_channels=1)
    a, la, p = _random_probs(g, 7, scale=1.5)
    expected = float(chained_cost(g, table, a, la, p))
    gen = torch.Generator().manual_seed(0)
    n, total = 1500, 0.0
    for _ in range(n):
        # a child: walk from the stem by p, ops by softmax α, then derive it exactly
        onehot_a = torch.nn.functional.one_hot(
            torch.multinomial(a, 1, generator=gen)[:, 0], a.shape[1]
        ).double()
        onehot_l = torch.nn.functional.one_hot(
            torch.multinomial(la, 1, generator=gen)[:, 0], la.shape[1]
        ).double()
        beta = []
        for i in range(g.beta_rows):
            ks = [k for k in range(len(g.paths)) if g.path_src[k] == i]
            pick = int(torch.multinomial(p[ks], 1, generator=gen))
            beta.append([10.0 if c == pick else -10.0 for c in range(len(ks))])
        alpha = (torch.cat([onehot_a, onehot_l]) * 10).tolist()
        doc = derive_architecture(space, alpha, beta, num_classes=5, in_channels=1)
        total += arch_summary(doc)["mult_adds"] / 1e6
    assert total / n == pytest.approx(expected, rel=0.03)


def test_chained_cost_of_a_one_hot_child_is_its_mult_adds():
    space = get_space("mbv2-small")
    g = space_graph(space)
    table = flops_table(space, input_size=32, num_classes=10, in_channels=1)
    torch.manual_seed(1)
    net = SuperNet(space, 10, 32, in_channels=1)
    with torch.no_grad():
        for prm in net.arch_parameters():
            prm.normal_()
    path, align, layers = derive_choices(space, net.alpha_lists(), net.beta_lists())
    cost = chained_cost(g, table, *choice_probs(g, path, align, layers))
    doc = net.export()
    assert float(cost) * 1e6 == pytest.approx(arch_summary(doc)["mult_adds"], rel=1e-12)


def test_gradients_reach_alpha_and_beta():
    space = get_space("mbv2-small")
    net = SuperNet(space, 10, 32, in_channels=1)
    table = flops_table(space, 32, 10, 1).to(dtype=torch.float32)
    cost = chained_cost(net.graph, table, *net.probs())
    cost.backward()
    for prm in net.arch_parameters():
        assert prm.grad is not None and prm.grad.abs().sum() > 0
    assert net.beta.grad[~net.beta_mask].abs().sum() == 0
    # more expensive alignment ops get positive gradient (raising them raises the cost)
    heavy = space.align_ops.index("mb_k7_e6")
    light = space.align_ops.index("mb_k3_e3")
    assert (net.alpha_align.grad[:, heavy] > net.alpha_align.grad[:, light]).all()


def test_local_equals_chained_on_a_chain_and_differs_on_a_dense_space():
    chain = space_from_dict({**SMALL, "max_connections": 1})
    g = space_graph(chain)
    table = flops_table(chain)
    a, la, p = _random_probs(g, 3)
    assert (p == 1).all()
    assert float(local_cost(g, table, a, la, p)) == pytest.approx(
        float(chained_cost(g, table, a, la, p)), rel=1e-12
    )

    dense = space_from_dict(SMALL)
    g = space_graph(dense)
    table = flops_table(dense)
    a, la, p = _random_probs(g, 3)
    # prefer the farthest jump everywhere: chained cost drops (skipped blocks vanish), local
    # keeps counting every block
    far = torch.zeros_like(p)
    for i in range(g.beta_rows):
        ks = [k for k in range(len(g.paths)) if g.path_src[k] == i]
        far[ks[-1]] = 0.97
        for k in ks[:-1]:
            far[k] = 0.03 / max(len(ks) - 1, 1)
        if len(ks) == 1:
            far[ks[0]] = 1.0
    chained_far = float(chained_cost(g, table, a, la, far))
    local_far = float(local_cost(g, table, a, la, far))
    assert chained_far < 0.8 * local_far


def test_tables_ask_the_lookup_for_every_op_once():
    space = get_space("mbv2-small")
    seen = []

    def lookup(op, c_in, c_out, stride, size):
        seen.append((op, c_in, c_out, stride, size))
        return 1.0

    t = build_cost_table(space, lookup, input_size=32, num_classes=10, in_channels=1)
    g = space_graph(space)
    assert t.align.shape == (len(g.align_paths), 6) and t.layers.shape == (len(g.layer_block), 7)
    assert ("conv3x3", 1, 16, 1, 32) in seen and ("linear", 256, 10, 1, 4) in seen
    assert all(op != "skip" for op, *_ in seen)  # skip costs 0 without asking
    assert float(t.layers[:, space.layer_ops.index("skip")].sum()) == 0


def test_latency_lookup_reads_a_table_object():
    class Table:
        def get(self, op, c_in, c_out, stride, h, w):
            assert h == w
            return 0.5 if op.startswith("mb_") else 0.25

    space = get_space("mbv2-small")
    t = build_cost_table(space, latency_lookup(Table()), input_size=32)
    net = SuperNet(space, 10)
    doc = derive_architecture(space, net.alpha_lists(), net.beta_lists(), 32, 10)
    g = space_graph(space)
    path, align, layers = derive_choices(space, net.alpha_lists(), net.beta_lists())
    # the one-hot chained cost of the derived child is what arch.predict_cost sums per op
    assert float(chained_cost(g, t, *choice_probs(g, path, align, layers))) == pytest.approx(
        predict_cost(doc, Table()), rel=1e-12
    )


def test_cost_terms():
    c = torch.tensor(20.0, requires_grad=True)
    term = cost_term(c, mode="log", lam=0.15, tau=15)
    assert float(term.detach()) == pytest.approx(0.15 * math.log(20) / math.log(15))
    term.backward()
    assert float(c.grad) == pytest.approx(0.15 / (20 * math.log(15)))
    c = torch.tensor(10.0)
    assert float(cost_term(c, mode="target", lam=1.0, target=12.0)) == 0.0
    over = cost_term(torch.tensor(15.0), mode="target", lam=1.0, target=12.0)
    assert float(over) == pytest.approx(math.log(15 / 12))
    assert float(cost_term(c, mode="none")) == 0.0
    with pytest.raises(ValueError):
        cost_term(c, mode="log", tau=None)
    with pytest.raises(ValueError):
        cost_term(c, mode="target", target=None)
