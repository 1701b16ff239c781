"""Re-deriving a finished search's architecture under a new cost budget.

A search stores its α/β (``Architecture.arch_params``); a budget is applied at derivation time,
without retraining the supernet. The aim is *the most probable sub-network (under α and β) that
fits the budget*, found in two nested steps:

1. **Block paths**: the ``top_k`` most probable stem→tail paths under β, by a list Viterbi
   (top-k partial scores per block) over the space's block graph. Path 0 is exactly the
   reference derivation's Viterbi path.
2. **Operations on a path**: start from the α-argmax op of every alignment branch and basic layer
   on the path (the reference derivation). While a budget is exceeded, apply the single op change
   that costs the least log-probability per unit of cost saved (``skip`` on a basic layer costs
   nothing, so layers are dropped before wide ops are narrowed). Op costs are separable: each
   op's mult-adds/latency depends only on its own site's shape.

Every candidate is then rebuilt as a document (``densenas_core.arch.architecture_from_choices``)
and measured exactly (closed-form mult-adds, latency-table prediction); among those within the
budget the one with the highest score wins: the path's log-probability plus, for each changed op,
its log-probability relative to the argmax op (unchanged ops add nothing, so paths with more
layers are not penalised for having more choices). With a budget the argmax already meets, the
result is the reference derivation. Nothing within budget → 422 that names the
cheapest candidate seen.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import Invalid


def _log_softmax(row: Sequence[float]) -> list[float]:
    top = max(row)
    z = math.log(sum(math.exp(v - top) for v in row)) + top
    return [v - z for v in row]


def _argmax(row: Sequence[float]) -> int:
    return max(range(len(row)), key=row.__getitem__)  # first maximum, as the core does


def k_best_paths(space: Any, beta: Sequence[Sequence[float]], k: int
                 ) -> list[tuple[float, list[int]]]:
    """The ``k`` most probable block paths 0 → tail as (log prob, blocks), best first."""
    n = len(space.blocks)
    tail = n - 1
    if len(beta) < tail:
        raise Invalid.field("arch_params.beta", f"expected {tail} rows, got {len(beta)}")
    logp: dict[tuple[int, int], float] = {}
    for i in range(tail):
        outs = space.out_paths[i]
        if not outs:
            continue
        row = [float(v) for v in list(beta[i])[:len(outs)]]
        if len(row) < len(outs):
            raise Invalid.field(f"arch_params.beta[{i}]",
                                f"block {i} has {len(outs)} out-paths, got {len(row)} values")
        for p, lp in zip(outs, _log_softmax(row)):
            logp[(p.src, p.dst)] = lp
    # best[j]: up to k (score, previous block, rank there), best first
    best: list[list[tuple[float, int, int]]] = [[] for _ in range(n)]
    best[0] = [(0.0, -1, -1)]
    for j in range(1, n):
        cands = [(s + logp[(p.src, j)], p.src, r)
                 for p in space.in_paths[j] for r, (s, _, _) in enumerate(best[p.src])]
        best[j] = heapq.nlargest(k, cands, key=lambda c: c[0])
    out = []
    for score, prev, rank in best[tail]:
        path, node, r = [tail], prev, rank
        while node >= 0:
            path.append(node)
            _, node, r = best[node][r]
        out.append((score, path[::-1]))
    return out


@dataclass
class _Site:
    """One choice on a path: an alignment branch (i, j) or basic layer (j, l)."""

    key: tuple
    ops: tuple[str, ...]
    logp: list[float]
    shape: tuple[int, int, int, int]  # c_in, c_out, stride, input size
    choice: int = 0
    costs: dict[str, list[float]] = field(default_factory=dict)


def _alpha_rows(space: Any, alpha: Sequence[Sequence[float]]) -> tuple[dict, dict]:
    from densenas_core.search import arch_param_rows

    rows = arch_param_rows(space)
    if len(alpha) != len(rows):
        raise Invalid.field("arch_params.alpha", f"expected {len(rows)} rows for "
                                                 f"{space.name}, got {len(alpha)}")
    align, layers = {}, {}
    for r, (meta, values) in enumerate(zip(rows, alpha)):
        values = [float(v) for v in values]
        if len(values) != len(meta["ops"]):
            raise Invalid.field(f"arch_params.alpha[{r}]",
                                f"expected {len(meta['ops'])} values, got {len(values)}")
        if meta["kind"] == "align":
            align[(meta["src"], meta["dst"])] = _log_softmax(values)
        else:
            layers[(meta["block"], meta["layer"])] = _log_softmax(values)
    return align, layers


class _Deriver:
    def __init__(self, space: Any, arch_params: dict[str, Any], template: dict[str, Any],
                 table: Any, name: str) -> None:
        from densenas_core.flops import op_mult_adds

        self.space = space
        alpha, self.beta = arch_params.get("alpha"), arch_params.get("beta")
        if not isinstance(alpha, list) or not isinstance(self.beta, list):
            raise Invalid.field("arch_params", "the search stored no α/β to derive from")
        self.align_lp, self.layer_lp = _alpha_rows(space, alpha)
        self.shape = {k: template[k] for k in ("input_size", "num_classes", "in_channels")
                      if isinstance(template.get(k), int)}
        self.shape.setdefault("num_classes", 10)
        self.table = table
        self.name = name
        self.metric_fns: dict[str, Callable[[str, tuple[int, int, int, int]], float]] = {
            "mult_adds": lambda op, s: 0.0 if op == "skip" else float(
                op_mult_adds(op, s[0], s[1], s[2], s[3]))}
        if table is not None:
            def latency(op: str, s: tuple[int, int, int, int]) -> float:
                if op == "skip":
                    return 0.0
                try:
                    return float(table.get(op, s[0], s[1], s[2], s[3], s[3]))
                except KeyError:
                    return math.inf  # not measured: never choose it under a latency budget
            self.metric_fns["latency_ms"] = latency

    def document(self, path: list[int], sites: list[_Site]) -> dict[str, Any]:
        from densenas_core.arch import architecture_from_choices

        align = {s.key[1:]: s.ops[s.choice] for s in sites if s.key[0] == "align"}
        layers: dict[int, list[str]] = {}
        for s in sorted((s for s in sites if s.key[0] == "layer"), key=lambda s: s.key):
            layers.setdefault(s.key[1], []).append(s.ops[s.choice])
        return architecture_from_choices(self.space, path, align, layers, name=self.name,
                                         **self.shape).to_dict()

    def measure(self, doc: dict[str, Any]) -> dict[str, float | None]:
        from densenas_core.arch import arch_summary, predict_cost

        summary = arch_summary(doc)
        out: dict[str, float | None] = {"mult_adds": summary["mult_adds"],
                                        "params": summary["params"], "latency_ms": None}
        if self.table is not None:
            try:
                out["latency_ms"] = float(predict_cost(doc, self.table,
                                                       input_size=self.table.input_size))
            except KeyError:
                out["latency_ms"] = math.inf
        return out

    def sites(self, path: list[int]) -> list[_Site]:
        """The path's choices at their argmax, with each site's input shape."""
        from densenas_core.arch import get_arch, op_sites

        sp = self.space
        sites = [_Site(("align", i, j), sp.align_ops, self.align_lp[(i, j)], (0, 0, 0, 0))
                 for i, j in zip(path[:-2], path[1:-1])]
        sites += [_Site(("layer", j, l), sp.layer_ops, self.layer_lp[(j, l)], (0, 0, 0, 0))
                  for j in path[1:-1] for l in range(sp.blocks[j].num_layers)]
        for s in sites:
            s.choice = _argmax(s.logp)
        # Shapes come from the built argmax network, so they follow the core's conventions.
        arch = get_arch(self.document(path, sites))
        align_shape, layer_shape = {}, {}
        by_part = {o.part: o for o in op_sites(arch)}
        for b, block in enumerate(arch.blocks):
            if block.to_block is None or block.from_block is None:
                continue  # the fixed stem op
            a = by_part[f"blocks[{b}].align"]
            align_shape[(block.from_block, block.to_block)] = (a.c_in, a.c_out, a.stride, a.h)
            size = math.ceil(a.h / a.stride)
            layer_shape[block.to_block] = (a.c_out, a.c_out, 1, size)
        for s in sites:
            s.shape = align_shape[s.key[1:]] if s.key[0] == "align" else layer_shape[s.key[1]]
            s.costs = {m: [fn(op, s.shape) for op in s.ops]
                       for m, fn in self.metric_fns.items()}
        return sites

    def fit(self, path: list[int], budgets: dict[str, float]
            ) -> tuple[list[_Site], dict[str, Any], dict[str, float | None]]:
        sites = self.sites(path)
        doc = self.document(path, sites)
        exact = self.measure(doc)
        current = {m: float(exact[m]) for m in budgets}
        while True:
            over = {m: (current[m] - b) / b for m, b in budgets.items() if current[m] > b}
            if not over:
                break
            metric = max(over, key=over.get)
            best: tuple[float, _Site, int, dict[str, float]] | None = None
            for s in sites:
                here = s.costs[metric][s.choice]
                for o in range(len(s.ops)):
                    saved = here - s.costs[metric][o]
                    if not saved > 0 or math.isinf(s.costs[metric][o]):
                        continue
                    ratio = (s.logp[s.choice] - s.logp[o]) / saved
                    if best is None or ratio < best[0]:
                        deltas = {m: s.costs[m][o] - s.costs[m][s.choice] for m in budgets}
                        best = (ratio, s, o, deltas)
            if best is None:
                break  # nothing cheaper left on this path
            _, s, o, deltas = best
            s.choice = o
            for m, d in deltas.items():
                current[m] += d
        doc = self.document(path, sites)
        return sites, doc, self.measure(doc)


def derive_within_budget(space_ref: Any, arch_params: dict[str, Any], template: dict[str, Any],
                         *, max_mult_adds: int | None, max_latency_ms: float | None,
                         table_doc: dict[str, Any] | None, top_k: int,
                         name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """→ (architecture document, report) of the most probable fit; see the module docstring."""
    from densenas_core.arch import ArchError
    from densenas_core.latency import LatencyTable
    from densenas_core.spaces import SpaceError, get_space

    try:
        space = get_space(space_ref)
    except SpaceError as e:
        raise Invalid.field("spec.space", str(e)) from None
    table = LatencyTable.from_dict(table_doc) if table_doc is not None else None
    deriver = _Deriver(space, arch_params, template, table, name)
    budgets: dict[str, float] = {}
    if max_mult_adds is not None:
        budgets["mult_adds"] = float(max_mult_adds)
    if max_latency_ms is not None:
        budgets["latency_ms"] = float(max_latency_ms)
    if not budgets:
        raise Invalid.field("cost", "give max_mult_adds and/or max_latency_ms")
    first = next(iter(budgets))

    winner: tuple[float, dict[str, Any], dict[str, Any]] | None = None
    cheapest: dict[str, Any] | None = None
    paths = k_best_paths(space, deriver.beta, top_k)
    for rank, (path_lp, path) in enumerate(paths):
        try:
            sites, doc, exact = deriver.fit(path, budgets)
        except (ArchError, KeyError, ValueError) as e:
            raise Invalid.field("arch_params", f"cannot derive path {path}: {e}") from None
        # Path log-probability plus what the op changes cost relative to their argmax, so
        # paths with more layers are not penalised for having more (unchanged) choices.
        score = path_lp + sum(s.logp[s.choice] - max(s.logp) for s in sites)
        figure = {"rank": rank, "log_prob": score, "path_log_prob": path_lp, "blocks": path,
                  "mult_adds": exact["mult_adds"], "params": exact["params"],
                  "latency_ms": exact["latency_ms"],
                  "changed_ops": sum(s.choice != _argmax(s.logp) for s in sites)}
        if cheapest is None or (figure[first] or 0) < (cheapest[first] or 0):
            cheapest = figure
        if all(exact[m] is not None and exact[m] <= b for m, b in budgets.items()):
            if winner is None or score > winner[0]:
                winner = (score, doc, figure)
    if winner is not None:
        return winner[1], {**winner[2], "considered": len(paths)}
    best = cheapest or {}
    latency = best.get("latency_ms")
    raise Invalid(
        f"no architecture among the {len(paths)} most probable block paths fits the budget; "
        f"the cheapest found has {best.get('mult_adds')} mult-adds"
        + (f" and {latency:.3f} ms" if latency is not None and math.isfinite(latency) else "")
        + " (raise the budget or cost.top_k)",
        errors=[{"loc": "cost", "msg": "no derivable architecture within the budget"}],
        cheapest={k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                  for k, v in best.items()})
