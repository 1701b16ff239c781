"""Deriving the final architecture from α and β (docs/algorithm.md §Viterbi derivation).

* Blocks: Viterbi over the block DAG — ``P[0] = 1``, ``P[k] = max_{i∈in(k)} P[i]·p_{i→k}``,
  keep the arg-max predecessor, back-track from the tail. Computed in log space.
* Ops: argmax α on the kept alignment branch (the one from the chosen predecessor) and on every
  basic layer of the kept blocks; skip layers are dropped (``architecture_from_choices``).

The result is the versioned architecture document of :mod:`densenas_core.arch`
(``Architecture.to_dict()``). α and β are accepted as the nested lists of
``SearchResult.arch_params`` (α: alignment rows then basic-layer rows, in the order of
:mod:`densenas_core._graph`; β: one list per block 0..N over its out-paths) or as the
supernet's tensors.

Under a cost budget (:func:`derive_within_budget`), the aim is *the most probable sub-network
(under α and β) that fits the budget*, without retraining the supernet, in two nested steps:

1. **Block paths**: the ``top_k`` most probable stem→tail paths under β (:func:`k_best_paths`,
   a list Viterbi keeping the top-k partial scores per block). Path 0 is the Viterbi path.
2. **Operations on a path**: start from the α-argmax op of every alignment branch and basic
   layer on the path (the argmax derivation). While a budget is exceeded, apply the single op
   change that costs the least log-probability per unit of cost saved (``skip`` on a basic
   layer costs nothing, so layers are dropped before wide ops are narrowed). Op costs are
   separable: each op's mult-adds/latency depends only on its own site's shape.

Every candidate is then rebuilt as a document (:func:`architecture_from_choices`) and measured
exactly (closed-form mult-adds, latency-table prediction); among those within the budget the one
with the highest score wins: the path's log-probability plus, for each changed op, its
log-probability relative to the argmax op (unchanged ops add nothing, so paths with more layers
are not penalised for having more choices). With a budget the argmax already meets, the result
is the argmax derivation.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ._graph import SpaceGraph, space_graph
from .document import ArchError, architecture_from_choices
from .flops import op_mult_adds
from .presets import get_arch
from .spaces import SearchSpace, get_space
from .summary import arch_summary, op_sites, predict_cost


def viterbi(
    num_blocks: int, in_edges: Sequence[Sequence[int]], probs: Sequence[Sequence[float]]
) -> list[int]:
    """The most probable block sequence from block 0 to block ``num_blocks − 1``.

    ``in_edges[k]``: predecessors of block k (each < k); ``probs[k][n]``: the transition
    probability of edge ``in_edges[k][n] → k``. Ties go to the first edge listed. Returns the
    block indices from 0 to the last block.
    """
    if num_blocks < 2:
        raise ValueError("viterbi: need at least a first and a last block")
    score = [-math.inf] * num_blocks
    score[0] = 0.0
    back = [-1] * num_blocks
    for k in range(1, num_blocks):
        if len(in_edges[k]) != len(probs[k]):
            raise ValueError(
                f"viterbi: block {k} has {len(in_edges[k])} edges but {len(probs[k])} probabilities"
            )
        best, arg = -math.inf, -1
        for i, p in zip(in_edges[k], probs[k]):
            if not 0 <= i < k:
                raise ValueError(f"viterbi: edge {i}→{k} does not go forward")
            v = score[i] + (math.log(p) if p > 0 else -math.inf)
            if arg < 0 or v > best:
                best, arg = v, i
        score[k], back[k] = best, arg
    path = [num_blocks - 1]
    while path[-1] != 0:
        prev = back[path[-1]]
        if prev < 0:
            raise ValueError(f"viterbi: block {path[-1]} has no predecessor")
        path.append(prev)
    return path[::-1]


def path_log_prob(
    path: Sequence[int], in_edges: Sequence[Sequence[int]], probs: Sequence[Sequence[float]]
) -> float:
    total = 0.0
    for i, k in zip(path[:-1], path[1:]):
        p = probs[k][list(in_edges[k]).index(i)]
        total += math.log(p) if p > 0 else -math.inf
    return total


# -- α/β in their exchange formats -----------------------------------------------------------


def _rows(x: Any) -> list[list[float]]:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist()
    return [list(map(float, r)) for r in x]


def split_alpha(graph: SpaceGraph, alpha: Any) -> tuple[list[list[float]], list[list[float]]]:
    """(alignment rows, layer rows) from nested lists, a (align, layer) pair or a dict."""
    n_align, n_layer = len(graph.align_paths), len(graph.layer_block)
    if isinstance(alpha, dict):
        a, la = _rows(alpha["align"]), _rows(alpha["layers"])
    elif (
        isinstance(alpha, (tuple, list))
        and len(alpha) == 2
        and isinstance(alpha[0], torch.Tensor)
        and alpha[0].dim() == 2
    ):
        a, la = _rows(alpha[0]), _rows(alpha[1])
    else:
        rows = _rows(alpha)
        if len(rows) != n_align + n_layer:
            raise ValueError(
                f"alpha: expected {n_align} alignment rows + {n_layer} layer rows, "
                f"got {len(rows)} rows"
            )
        a, la = rows[:n_align], rows[n_align:]
    s = graph.space
    if len(a) != n_align or any(len(r) != len(s.align_ops) for r in a):
        raise ValueError(f"alpha: alignment rows must be {n_align}×{len(s.align_ops)}")
    if len(la) != n_layer or any(len(r) != len(s.layer_ops) for r in la):
        raise ValueError(f"alpha: layer rows must be {n_layer}×{len(s.layer_ops)}")
    return a, la


def beta_path_probs(graph: SpaceGraph, beta: Any, temperature: float = 1.0) -> list[float]:
    """p_{i→j} = softmax(β_i/T)_j per path (path order) from ragged lists or the padded tensor."""
    rows = _rows(beta)
    if len(rows) != graph.beta_rows:
        raise ValueError(f"beta: expected {graph.beta_rows} rows (blocks 0..N), got {len(rows)}")
    probs = []
    for i, row in enumerate(rows):
        m = len(graph.space.out_paths[i])
        if len(row) < m:
            raise ValueError(f"beta[{i}]: block {i} has {m} out-paths, got {len(row)} values")
        z = [v / temperature for v in row[:m]]
        top = max(z)
        e = [math.exp(v - top) for v in z]
        tot = sum(e)
        probs.append([v / tot for v in e])
    return [probs[s][c] for s, c in zip(graph.path_src, graph.path_col)]


def _argmax(row: Sequence[float]) -> int:
    return max(range(len(row)), key=row.__getitem__)  # the first maximum


def log_softmax(row: Sequence[float]) -> list[float]:
    """log softmax(row), in Python floats (stable: the maximum is subtracted first)."""
    top = max(row)
    z = math.log(sum(math.exp(v - top) for v in row)) + top
    return [v - z for v in row]


def derive_choices(
    space: SearchSpace | str, alpha: Any, beta: Any, *, temperature: float = 1.0
) -> tuple[list[int], dict[tuple[int, int], int], dict[int, list[int]]]:
    """(block path, {(i, j): align op index}, {j: [layer op index, ...]}) of the argmax child."""
    g = space_graph(get_space(space))
    a_rows, l_rows = split_alpha(g, alpha)
    p = beta_path_probs(g, beta, temperature)
    in_edges = [[g.path_src[k] for k in g.in_paths(j)] for j in range(g.num_blocks)]
    probs = [[p[k] for k in g.in_paths(j)] for j in range(g.num_blocks)]
    path = viterbi(g.num_blocks, in_edges, probs)
    index = {(s, d): k for k, (s, d) in enumerate(zip(g.path_src, g.path_dst))}
    align = {
        (i, j): _argmax(a_rows[g.path_row[index[(i, j)]]]) for i, j in zip(path[:-2], path[1:-1])
    }
    layers = {j: [_argmax(l_rows[r]) for r in g.block_layers[j]] for j in path[1:-1]}
    return path, align, layers


def derive_architecture(
    space: SearchSpace | str,
    alpha: Any,
    beta: Any,
    input_size: int | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    temperature: float = 1.0,
    name: str | None = None,
) -> dict[str, Any]:
    """The architecture document (``Architecture.to_dict()``) of the argmax child network."""
    space = get_space(space)
    path, align, layers = derive_choices(space, alpha, beta, temperature=temperature)
    arch = architecture_from_choices(
        space,
        path,
        {e: space.align_ops[o] for e, o in align.items()},
        {j: [space.layer_ops[o] for o in ops] for j, ops in layers.items()},
        num_classes=num_classes,
        input_size=input_size,
        in_channels=in_channels,
        name=name,
    )
    return arch.to_dict()


def random_architecture(
    space: SearchSpace | str,
    generator: torch.Generator,
    *,
    num_classes: int,
    input_size: int | None = None,
    in_channels: int = 3,
    scale: float = 3.0,
    name: str | None = None,
) -> dict[str, Any]:
    """A random member of ``space``: derivation from random α/β logits (N(0, scale²)), so the
    block sequence is a random path of the DAG and every op a random candidate — the baseline
    a search must beat at equal cost."""
    g = space_graph(get_space(space))
    n_align, n_layer = len(g.align_paths), len(g.layer_block)
    sp = get_space(space)
    alpha = (scale * torch.randn(n_align, len(sp.align_ops), generator=generator)).tolist() + (
        scale * torch.randn(n_layer, len(sp.layer_ops), generator=generator)
    ).tolist()
    beta = [(scale * torch.randn(len(row), generator=generator)).tolist() for row in _beta_shape(g)]
    return derive_architecture(
        sp,
        alpha,
        beta,
        input_size=input_size,
        num_classes=num_classes,
        in_channels=in_channels,
        name=name,
    )


def _beta_shape(g: SpaceGraph) -> list[list[int]]:
    return [[k for k in range(len(g.paths)) if g.path_src[k] == i] for i in range(g.beta_rows)]


# -- derivation under a cost budget -----------------------------------------------------------


class DeriveError(ValueError):
    """Architecture parameters that cannot be derived from; ``where`` names the field of
    ``SearchResult.arch_params`` (``arch_params.alpha[3]``, …) and ``message`` says why."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where, self.message = where, message


def k_best_paths(
    space: SearchSpace | str, beta: Sequence[Sequence[float]], k: int
) -> list[tuple[float, list[int]]]:
    """The ``k`` most probable block paths 0 → tail as (log prob, blocks), best first.

    ``beta``: one row per block 0..N over its out-paths (extra entries are ignored, as in the
    padded tensor); the probability of a path is the product of softmax(β_i) of its edges.
    """
    space = get_space(space)
    n = len(space.blocks)
    tail = n - 1
    if len(beta) < tail:
        raise DeriveError("arch_params.beta", f"expected {tail} rows, got {len(beta)}")
    logp: dict[tuple[int, int], float] = {}
    for i in range(tail):
        outs = space.out_paths[i]
        if not outs:
            continue
        row = [float(v) for v in list(beta[i])[: len(outs)]]
        if len(row) < len(outs):
            raise DeriveError(
                f"arch_params.beta[{i}]",
                f"block {i} has {len(outs)} out-paths, got {len(row)} values",
            )
        for p, lp in zip(outs, log_softmax(row)):
            logp[(p.src, p.dst)] = lp
    # best[j]: up to k (score, previous block, rank there), best first
    best: list[list[tuple[float, int, int]]] = [[] for _ in range(n)]
    best[0] = [(0.0, -1, -1)]
    for j in range(1, n):
        cands = [
            (s + logp[(p.src, j)], p.src, r)
            for p in space.in_paths[j]
            for r, (s, _, _) in enumerate(best[p.src])
        ]
        best[j] = heapq.nlargest(k, cands, key=lambda c: c[0])
    out = []
    for score, prev, rank in best[tail]:
        path, node, r = [tail], prev, rank
        while node >= 0:
            path.append(node)
            _, node, r = best[node][r]
        out.append((score, path[::-1]))
    return out


#: the figures of a candidate (``BudgetCandidate.report()``), in report order
CANDIDATE_FIGURES = (
    "rank",
    "log_prob",
    "path_log_prob",
    "blocks",
    "mult_adds",
    "params",
    "latency_ms",
    "changed_ops",
)
BUDGET_METRICS = ("mult_adds", "latency_ms")


@dataclass
class BudgetCandidate:
    """The fit found on one block path: its score, exact figures and document."""

    rank: int  # of the path among the k best
    log_prob: float  # path log-probability + the changed ops' log-prob vs. argmax
    path_log_prob: float
    blocks: list[int]
    mult_adds: int
    params: int
    latency_ms: float | None  # None without a table, inf where the table lacks an op
    changed_ops: int
    architecture: dict[str, Any]

    def report(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CANDIDATE_FIGURES}


@dataclass
class BudgetDerivation:
    """What :func:`derive_within_budget` found: the most probable candidate within the budget
    (None if none fits), the cheapest candidate under the first budget, and how many paths
    were considered."""

    best: BudgetCandidate | None
    cheapest: BudgetCandidate | None
    considered: int


@dataclass
class _Site:
    """One choice on a path: an alignment branch (i, j) or basic layer (j, l)."""

    key: tuple[str, int, int]  # ("align", i, j) or ("layer", j, l)
    ops: tuple[str, ...]
    logp: list[float]
    shape: tuple[int, int, int, int]  # c_in, c_out, stride, input size
    choice: int = 0
    costs: dict[str, list[float]] = field(default_factory=dict)


_LogP = dict[tuple[int, int], list[float]]


def _alpha_logp(space: SearchSpace, alpha: Sequence[Sequence[float]]) -> tuple[_LogP, _LogP]:
    """log softmax of every α row: ({(i, j): alignment row}, {(block, layer): layer row})."""
    rows = space_graph(space).alpha_rows()
    if len(alpha) != len(rows):
        raise DeriveError(
            "arch_params.alpha", f"expected {len(rows)} rows for {space.name}, got {len(alpha)}"
        )
    align: _LogP = {}
    layers: _LogP = {}
    for r, (meta, row) in enumerate(zip(rows, alpha)):
        values = [float(v) for v in row]
        if len(values) != len(meta["ops"]):
            raise DeriveError(
                f"arch_params.alpha[{r}]", f"expected {len(meta['ops'])} values, got {len(values)}"
            )
        if meta["kind"] == "align":
            align[(meta["src"], meta["dst"])] = log_softmax(values)
        else:
            layers[(meta["block"], meta["layer"])] = log_softmax(values)
    return align, layers


OpCost = Callable[[str, tuple[int, int, int, int]], float]


def _op_costs(table: Any) -> dict[str, OpCost]:
    """Per-op cost functions by budget metric (latency only with a table)."""
    fns: dict[str, OpCost] = {
        "mult_adds": lambda op, s: (
            0.0 if op == "skip" else float(op_mult_adds(op, s[0], s[1], s[2], s[3]))
        )
    }
    if table is not None:

        def latency(op: str, s: tuple[int, int, int, int]) -> float:
            if op == "skip":
                return 0.0
            try:
                return float(table.get(op, s[0], s[1], s[2], s[3], s[3]))
            except KeyError:
                return math.inf  # not measured: never choose it under a latency budget

        fns["latency_ms"] = latency
    return fns


@dataclass
class _PathFitter:
    """Rebuilds, measures and fits the sub-networks on block paths of one α."""

    space: SearchSpace
    align_lp: _LogP
    layer_lp: _LogP
    table: Any
    shape: dict[str, Any]
    name: str | None

    def document(self, path: list[int], sites: list[_Site]) -> dict[str, Any]:
        align = {s.key[1:]: s.ops[s.choice] for s in sites if s.key[0] == "align"}
        layers: dict[int, list[str]] = {}
        for s in sorted((s for s in sites if s.key[0] == "layer"), key=lambda s: s.key):
            layers.setdefault(s.key[1], []).append(s.ops[s.choice])
        return architecture_from_choices(
            self.space, path, align, layers, name=self.name, **self.shape
        ).to_dict()

    def measure(self, doc: dict[str, Any]) -> dict[str, Any]:
        summary = arch_summary(doc)
        out: dict[str, Any] = {
            "mult_adds": summary["mult_adds"],
            "params": summary["params"],
            "latency_ms": None,
        }
        if self.table is not None:
            try:
                out["latency_ms"] = float(
                    predict_cost(doc, self.table, input_size=self.table.input_size)
                )
            except KeyError:
                out["latency_ms"] = math.inf
        return out

    def sites(self, path: list[int]) -> list[_Site]:
        """The path's choices at their argmax, with each site's input shape and op costs."""
        sp = self.space
        sites = [
            _Site(("align", i, j), sp.align_ops, self.align_lp[(i, j)], (0, 0, 0, 0))
            for i, j in zip(path[:-2], path[1:-1])
        ]
        sites += [
            _Site(("layer", j, k), sp.layer_ops, self.layer_lp[(j, k)], (0, 0, 0, 0))
            for j in path[1:-1]
            for k in range(sp.blocks[j].num_layers)
        ]
        for s in sites:
            s.choice = _argmax(s.logp)
        # Shapes come from the built argmax network, so they follow the core's conventions.
        arch = get_arch(self.document(path, sites))
        align_shape: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        layer_shape: dict[int, tuple[int, int, int, int]] = {}
        by_part = {o.part: o for o in op_sites(arch)}
        for b, block in enumerate(arch.blocks):
            if block.to_block is None or block.from_block is None:
                continue  # the fixed stem op
            a = by_part[f"blocks[{b}].align"]
            align_shape[(block.from_block, block.to_block)] = (a.c_in, a.c_out, a.stride, a.h)
            size = math.ceil(a.h / a.stride)
            layer_shape[block.to_block] = (a.c_out, a.c_out, 1, size)
        costs = _op_costs(self.table)
        for s in sites:
            s.shape = align_shape[s.key[1:]] if s.key[0] == "align" else layer_shape[s.key[1]]
            s.costs = {m: [fn(op, s.shape) for op in s.ops] for m, fn in costs.items()}
        return sites

    def fit(
        self, path: list[int], budgets: Mapping[str, float]
    ) -> tuple[list[_Site], dict[str, Any], dict[str, Any]]:
        """Greedy op changes on ``path`` until every budget is met or nothing cheaper is left:
        (sites at their final choices, document, exact figures)."""
        sites = self.sites(path)
        exact = self.measure(self.document(path, sites))
        current = {m: float(exact[m]) for m in budgets}
        while True:
            over = {m: (current[m] - b) / b for m, b in budgets.items() if current[m] > b}
            if not over:
                break
            metric = max(over, key=over.__getitem__)
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


def derive_within_budget(
    space: SearchSpace | str,
    arch_params: Mapping[str, Any],
    budgets: Mapping[str, float],
    *,
    latency_table: Any = None,
    top_k: int = 64,
    num_classes: int = 10,
    input_size: int | None = None,
    in_channels: int = 3,
    name: str | None = None,
) -> BudgetDerivation:
    """The most probable sub-network within ``budgets`` (see the module docstring).

    ``arch_params``: ``{"alpha": …, "beta": …}`` as nested lists (``SearchResult.arch_params``);
    ``budgets``: upper bounds by metric, ``mult_adds`` and/or ``latency_ms`` (which needs
    ``latency_table``, a :class:`densenas_core.latency.LatencyTable`); the first one orders
    the ``cheapest`` candidate. Raises :class:`DeriveError` for α/β that do not fit ``space``
    or a path whose sub-network cannot be built.
    """
    space = get_space(space)
    alpha, beta = arch_params.get("alpha"), arch_params.get("beta")
    if not isinstance(alpha, list) or not isinstance(beta, list):
        raise DeriveError("arch_params", "the search stored no α/β to derive from")
    align_lp, layer_lp = _alpha_logp(space, alpha)
    unknown = sorted(set(budgets) - set(BUDGET_METRICS))
    if not budgets or unknown:
        raise ValueError(f"budgets: expected some of {BUDGET_METRICS}, got {list(budgets)}")
    if "latency_ms" in budgets and latency_table is None:
        raise ValueError("budgets: a latency_ms budget needs a latency table")
    shape = {"num_classes": num_classes, "input_size": input_size, "in_channels": in_channels}
    fitter = _PathFitter(space, align_lp, layer_lp, latency_table, shape, name)
    first = next(iter(budgets))
    best: BudgetCandidate | None = None
    cheapest: BudgetCandidate | None = None
    paths = k_best_paths(space, beta, top_k)
    for rank, (path_lp, path) in enumerate(paths):
        try:
            sites, doc, exact = fitter.fit(path, budgets)
        except (ArchError, KeyError, ValueError) as e:
            raise DeriveError("arch_params", f"cannot derive path {path}: {e}") from None
        # Path log-probability plus what the op changes cost relative to their argmax, so
        # paths with more layers are not penalised for having more (unchanged) choices.
        score = path_lp + sum(s.logp[s.choice] - max(s.logp) for s in sites)
        cand = BudgetCandidate(
            rank,
            score,
            path_lp,
            path,
            exact["mult_adds"],
            exact["params"],
            exact["latency_ms"],
            sum(s.choice != _argmax(s.logp) for s in sites),
            doc,
        )
        if cheapest is None or (getattr(cand, first) or 0) < (getattr(cheapest, first) or 0):
            cheapest = cand
        fits = all(exact[m] is not None and exact[m] <= b for m, b in budgets.items())
        if fits and (best is None or score > best.log_prob):
            best = cand
    return BudgetDerivation(best, cheapest, len(paths))
