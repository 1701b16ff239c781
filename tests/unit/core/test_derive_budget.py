"""Derivation under a cost budget: k-best block paths and the greedy op fit, against brute-force
enumeration of every path and every op assignment on small spaces."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from densenas_core._graph import space_graph
from densenas_core.arch import arch_summary, architecture_from_choices, predict_cost
from densenas_core.derive import (
    DeriveError,
    derive_architecture,
    derive_choices,
    derive_within_budget,
    k_best_paths,
    log_softmax,
)
from densenas_core.flops import op_mult_adds
from densenas_core.latency import LatencyStat, LatencyTable, space_op_signatures
from densenas_core.spaces import get_space, space_from_dict

TINY = space_from_dict(
    {
        "name": "tiny",
        "family": "mbv2",
        "input_size": 8,
        "stem": {"channels": 8, "stride": 1, "fixed_op": "mb_k3_e1"},
        "stages": [
            {"stride": 2, "widths": [8, 12], "num_layers": 1},
            {"stride": 2, "widths": [16, 16], "num_layers": 1},
        ],
        "tail_channels": 24,
        "align_ops": ["mb_k3_e1", "mb_k5_e2"],
        "layer_ops": ["mb_k3_e1", "skip"],
        "max_connections": 3,
    }
)
SHAPE = {"num_classes": 4, "input_size": 8, "in_channels": 3}


def _arch_params(space, seed, scale=1.0):
    g = space_graph(space)
    gen = torch.Generator().manual_seed(seed)
    alpha = [(scale * torch.randn(len(r["ops"]), generator=gen)).tolist() for r in g.alpha_rows()]
    beta = [
        (scale * torch.randn(len(space.out_paths[i]), generator=gen)).tolist()
        for i in range(g.beta_rows)
    ]
    return {"alpha": alpha, "beta": beta}


def _all_paths(space):
    def rec(j):
        return [[0]] if j == 0 else [p + [j] for e in space.in_paths[j] for p in rec(e.src)]

    return rec(len(space.blocks) - 1)


def _path_log_prob(space, beta, path):
    total = 0.0
    for i, j in zip(path[:-1], path[1:]):
        outs = space.out_paths[i]
        total += log_softmax(beta[i][: len(outs)])[[p.dst for p in outs].index(j)]
    return total


def _table(space, seed):
    """A latency table for every candidate op of ``space``: ∝ mult-adds, with seeded noise."""
    gen = torch.Generator().manual_seed(seed)
    t = LatencyTable(device_name="t", device_kind="cpu", batch=1, input_size=space.input_size)
    for sig in space_op_signatures(space, space.input_size, in_channels=3, num_classes=4):
        ms = op_mult_adds(sig.op, sig.c_in, sig.c_out, sig.stride, sig.h) / 1e5 + float(
            torch.rand(1, generator=gen)
        )
        t.entries[t.key(sig.op, sig.c_in, sig.c_out, sig.stride, sig.h, sig.w)] = LatencyStat(
            ms, ms, ms, 0.0, 5
        )
    return t


def _every_subnetwork(space, ap, table):
    """(score, mult_adds, latency) of every path × op assignment, scored as the derivation
    scores: path log-prob + Σ over changed ops of log p(op) − log p(argmax op)."""
    rows = space_graph(space).alpha_rows()
    lp = {}
    for meta, values in zip(rows, ap["alpha"]):
        key = (
            (meta["src"], meta["dst"])
            if meta["kind"] == "align"
            else (meta["block"], meta["layer"])
        )
        lp[(meta["kind"], key)] = log_softmax(values)
    out = []
    for path in _all_paths(space):
        path_lp = _path_log_prob(space, ap["beta"], path)
        sites = [("align", (i, j)) for i, j in zip(path[:-2], path[1:-1])]
        sites += [("layer", (j, n)) for j in path[1:-1] for n in range(space.blocks[j].num_layers)]
        for choice in itertools.product(*(range(len(lp[s])) for s in sites)):
            align = {
                k: space.align_ops[c] for (kind, k), c in zip(sites, choice) if kind == "align"
            }
            layers: dict[int, list[str]] = {}
            for (kind, (j, _)), c in zip(sites, choice):
                if kind == "layer":
                    layers.setdefault(j, []).append(space.layer_ops[c])
            doc = architecture_from_choices(space, path, align, layers, **SHAPE).to_dict()
            score = path_lp + sum(lp[s][c] - max(lp[s]) for s, c in zip(sites, choice))
            out.append(
                (
                    score,
                    arch_summary(doc)["mult_adds"],
                    predict_cost(doc, table, input_size=table.input_size),
                )
            )
    return out


def test_log_softmax_is_torchs():
    row = [3.0, -1.5, 0.25, 700.0]
    assert log_softmax(row) == pytest.approx(
        torch.tensor(row, dtype=torch.float64).log_softmax(0).tolist(), abs=1e-12
    )


@pytest.mark.parametrize(
    "space", [TINY, get_space("mbv2-small"), get_space("resnet-small")], ids=lambda s: s.name
)
@pytest.mark.parametrize("seed", [0, 1])
def test_k_best_paths_are_the_k_most_probable_of_all_paths(space, seed):
    beta = _arch_params(space, seed)["beta"]
    brute = sorted(
        ((_path_log_prob(space, beta, p), p) for p in _all_paths(space)), key=lambda c: -c[0]
    )
    for k in (1, 3, 10, len(brute) + 5):
        got = k_best_paths(space, beta, k)
        assert len(got) == min(k, len(brute))
        assert [s for s, _ in got] == pytest.approx([s for s, _ in brute[:k]], abs=1e-9)
        assert [p for _, p in got] == [p for _, p in brute[:k]]  # random β: no ties
        for s, p in got:
            assert s == pytest.approx(_path_log_prob(space, beta, p), abs=1e-9)
    ap = _arch_params(space, seed)
    assert k_best_paths(space, beta, 1)[0][1] == derive_choices(space, ap["alpha"], beta)[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric", ["mult_adds", "latency_ms"])
def test_budgeted_fit_against_every_subnetwork(seed, metric):
    """Over all paths (top_k ≥ their number): a fit exists iff some sub-network is within the
    budget (the greedy walks a path down to its cheapest ops if it must), it is within the
    budget, its figures are exact, and its score is at most the brute-force best."""
    ap = _arch_params(TINY, seed, scale=2.0)
    table = _table(TINY, seed)
    every = _every_subnetwork(TINY, ap, table)
    col = 1 if metric == "mult_adds" else 2
    lo, hi = min(e[col] for e in every), max(e[col] for e in every)
    for frac in (0.0, 0.1, 0.3, 0.5, 0.8, 1.0):
        budget = lo * 0.999 + frac * (hi - lo)
        found = derive_within_budget(
            TINY, ap, {metric: budget}, latency_table=table, top_k=100, **SHAPE
        )
        assert found.considered == len(_all_paths(TINY))
        fits = [e for e in every if e[col] <= budget]
        assert (found.best is not None) == bool(fits), (frac, budget)
        if found.best is None:
            assert getattr(found.cheapest, metric) == pytest.approx(lo)
            continue
        best = found.best
        assert getattr(best, metric) <= budget
        assert best.mult_adds == arch_summary(best.architecture)["mult_adds"]
        assert best.latency_ms == pytest.approx(
            predict_cost(best.architecture, table, input_size=8)
        )
        assert best.log_prob <= max(e[0] for e in fits) + 1e-9
        assert best.report() == {
            k: getattr(best, k)
            for k in (
                "rank",
                "log_prob",
                "path_log_prob",
                "blocks",
                "mult_adds",
                "params",
                "latency_ms",
                "changed_ops",
            )
        }


@pytest.mark.parametrize("space", ["mbv2-small", "resnet-small"])
def test_a_budget_the_argmax_meets_gives_the_argmax_derivation(space):
    sp = get_space(space)
    ap = _arch_params(sp, 4)
    doc = derive_architecture(
        sp, ap["alpha"], ap["beta"], num_classes=10, input_size=32, in_channels=1, name="n"
    )
    found = derive_within_budget(
        sp,
        ap,
        {"mult_adds": arch_summary(doc)["mult_adds"]},
        top_k=8,
        num_classes=10,
        input_size=32,
        in_channels=1,
        name="n",
    )
    assert found.best.architecture == doc
    assert (found.best.rank, found.best.changed_ops) == (0, 0)
    assert found.best.log_prob == found.best.path_log_prob
    budget = arch_summary(doc)["mult_adds"] * 3 // 4
    tight = derive_within_budget(
        sp, ap, {"mult_adds": budget}, top_k=64, num_classes=10, input_size=32, in_channels=1
    )
    assert tight.best.mult_adds <= budget
    assert tight.best.log_prob < found.best.log_prob


def test_unmeasured_ops_are_never_chosen_under_a_latency_budget():
    ap = _arch_params(TINY, 0)
    table = _table(TINY, 0)
    for key in [k for k in table.entries if k.op == "skip"]:
        del table.entries[key]
    found = derive_within_budget(TINY, ap, {"latency_ms": 1e9}, latency_table=table, **SHAPE)
    assert found.best is not None and math.isfinite(found.best.latency_ms)


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda ap: {"beta": ap["beta"]}, "arch_params"),
        (lambda ap: {**ap, "alpha": ap["alpha"][:-1]}, "arch_params.alpha"),
        (lambda ap: {**ap, "alpha": [r[:-1] for r in ap["alpha"]]}, "arch_params.alpha[0]"),
        (lambda ap: {**ap, "beta": ap["beta"][:1]}, "arch_params.beta"),
        (lambda ap: {**ap, "beta": [r[:1] for r in ap["beta"]]}, "arch_params.beta[0]"),
    ],
)
def test_arch_params_that_do_not_fit_the_space_name_the_field(change, where):
    with pytest.raises(DeriveError) as e:
        derive_within_budget(TINY, change(_arch_params(TINY, 0)), {"mult_adds": 1e9}, **SHAPE)
    assert e.value.where == where and str(e.value).startswith(f"{where}: ")
    with pytest.raises(ValueError, match="budgets"):
        derive_within_budget(TINY, _arch_params(TINY, 0), {}, **SHAPE)
    with pytest.raises(ValueError, match="latency table"):
        derive_within_budget(TINY, _arch_params(TINY, 0), {"latency_ms": 1.0}, **SHAPE)
