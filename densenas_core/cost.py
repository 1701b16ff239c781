"""Expected network cost from architecture probabilities: chained and local
(docs/algorithm.md §Chained cost, docs/algorithm.md §Local cost).

Both estimators are pure, differentiable functions of

* the space's structure (a ``SpaceGraph``; :func:`space_graph` is public here),
* the op probabilities ``softmax(α)`` per alignment row and per basic-layer row,
* the path probabilities ``p_{i→j} = softmax(β_i/T)_j`` (one per path, path order),
* a :class:`CostTable`: the cost of every candidate op at its exact shape, built once per
  (space, input size, classes) from a lookup callable.

Their device and dtype follow the inputs (move the table with :meth:`CostTable.to`).

**Chained** (DenseNAS): ``C_b = S_b + Σ_{j∈out(b)} p_{b→j}·(H_{b→j} + C_j)``, ``C_tail = 0``,
total ``= stem + C_0 + classifier``. Written as one triangular solve: with ``P`` the path
probability matrix, ``C = (I − P)⁻¹ r`` where ``r_b = S_b + Σ_j P_bj·H_bj`` — identical to the
backward recursion and free of Python loops over blocks. It equals the exact expected cost of a
child network drawn by walking the block DAG from the stem by ``p`` and picking every op by
``softmax(α)`` (tested by enumeration).

**Local** (the paper's baseline, supplementary A.5; our precise reading): every routing block
and the tail is scored as if it were always present, by its own stack plus its incoming
alignment cost averaged with the local path probabilities,
``L_b = S_b + Σ_{i∈in(b)} p_{i→b}·H_{i→b}``; total ``= stem + Σ_{b≥1} L_b + classifier``.
Nothing is chained through downstream probabilities, so blocks that the path distribution skips
still count in full. On a chain (every block has one out-path) the two estimators agree.

Skip layers cost 0 in every table: derivation drops them from the network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ._graph import SpaceGraph, space_graph  # public here: every estimator takes one
from .flops import CLASSIFIER_OP, STEM_OP, op_mult_adds
from .spaces import SearchSpace, get_space
from .specs import COST_MODES, CostSpec

#: ``lookup(op_code, c_in, c_out, stride, in_size) -> cost`` (``in_size``: square input side)
Lookup = Callable[[str, int, int, int, int], float]


@dataclass(frozen=True)
class CostTable:
    """Per-op costs of one space at one input size, as tensors in the supernet's row order."""

    metric: str
    unit: str
    stem: float  # stem conv (+ the fixed stem op)
    classifier: float  # global pooling + linear
    align: torch.Tensor  # [alignment rows, |align_ops|]
    layers: torch.Tensor  # [basic-layer rows, |layer_ops|]
    tail: torch.Tensor  # [tail paths]: the fixed 1×1 projections
    space: str = ""
    input_size: int = 0
    num_classes: int = 0

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> CostTable:
        return replace(
            self,
            align=self.align.to(device, dtype),
            layers=self.layers.to(device, dtype),
            tail=self.tail.to(device, dtype),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "unit": self.unit,
            "stem": self.stem,
            "classifier": self.classifier,
            "align": self.align.tolist(),
            "layers": self.layers.tolist(),
            "tail": self.tail.tolist(),
            "space": self.space,
            "input_size": self.input_size,
            "num_classes": self.num_classes,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CostTable:
        t = torch.float64
        return cls(
            metric=d["metric"],
            unit=d["unit"],
            stem=float(d["stem"]),
            classifier=float(d["classifier"]),
            align=torch.tensor(d["align"], dtype=t),
            layers=torch.tensor(d["layers"], dtype=t),
            tail=torch.tensor(d["tail"], dtype=t),
            space=d.get("space", ""),
            input_size=d.get("input_size", 0),
            num_classes=d.get("num_classes", 0),
        )


def build_cost_table(
    space: SearchSpace | str | Mapping[str, Any],
    lookup: Lookup,
    *,
    input_size: int | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
    metric: str = "custom",
    unit: str = "",
) -> CostTable:
    """Ask ``lookup`` for every op of the supernet at its exact shape (once)."""
    space = get_space(space)
    g = space_graph(space)
    res = input_size or space.input_size
    blocks = space.blocks
    size = [b.size(res) for b in blocks]
    c0 = space.stem.channels

    def cost(op: str, c_in: int, c_out: int, stride: int, in_size: int) -> float:
        return 0.0 if op == "skip" else float(lookup(op, c_in, c_out, stride, in_size))

    stem = cost(STEM_OP, in_channels, c0, space.stem.stride, res)
    if space.stem.fixed_op:
        stem += cost(space.stem.fixed_op, c0, c0, 1, size[0])
    classifier = cost(CLASSIFIER_OP, space.tail_channels, num_classes, 1, size[-1])
    align = [
        [
            cost(
                op,
                blocks[g.path_src[k]].channels,
                blocks[g.path_dst[k]].channels,
                g.paths[k].stride,
                size[g.path_src[k]],
            )
            for op in space.align_ops
        ]
        for k in g.align_paths
    ]
    layers = [
        [cost(op, blocks[b].channels, blocks[b].channels, 1, size[b]) for op in space.layer_ops]
        for b in g.layer_block
    ]
    # the derived network's 1×1 head (none for non-MBV2 families whose widths already match)
    tail = [
        cost(
            "conv1x1",
            blocks[g.path_src[k]].channels,
            space.tail_channels,
            g.paths[k].stride,
            size[g.path_src[k]],
        )
        if g.tail_has_conv(g.path_src[k])
        else 0.0
        for k in g.tail_paths
    ]
    t = torch.float64
    return CostTable(
        metric=metric,
        unit=unit,
        stem=stem,
        classifier=classifier,
        align=torch.tensor(align, dtype=t).reshape(len(g.align_paths), len(space.align_ops)),
        layers=torch.tensor(layers, dtype=t).reshape(len(g.layer_block), len(space.layer_ops)),
        tail=torch.tensor(tail, dtype=t),
        space=space.name,
        input_size=res,
        num_classes=num_classes,
    )


def flops_lookup(op: str, c_in: int, c_out: int, stride: int, in_size: int) -> float:
    """Mult-adds in millions (:func:`densenas_core.flops.op_mult_adds`, batch 1)."""
    return op_mult_adds(op, c_in, c_out, stride, in_size) / 1e6


def latency_lookup(table: Any) -> Lookup:
    """A lookup reading ``table.get(op, c_in, c_out, stride, h, w)`` (a ``LatencyTable``)."""

    def lookup(op: str, c_in: int, c_out: int, stride: int, in_size: int) -> float:
        return float(table.get(op, c_in, c_out, stride, in_size, in_size))

    return lookup


def flops_table(
    space: SearchSpace | str | Mapping[str, Any],
    input_size: int | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
) -> CostTable:
    return build_cost_table(
        space,
        flops_lookup,
        input_size=input_size,
        num_classes=num_classes,
        in_channels=in_channels,
        metric="flops",
        unit="M mult-adds",
    )


def latency_table(
    space: SearchSpace | str | Mapping[str, Any],
    table: Any,
    input_size: int | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
) -> CostTable:
    """A latency cost table (unit: the table's, milliseconds for ``LatencyTable``)."""
    if isinstance(table, Mapping):
        from .latency import LatencyTable

        table = LatencyTable.from_dict(table)
    return build_cost_table(
        space,
        latency_lookup(table),
        input_size=input_size,
        num_classes=num_classes,
        in_channels=in_channels,
        metric="latency",
        unit="ms",
    )


# -- estimators --------------------------------------------------------------------------------


def _graph(space_or_graph: SearchSpace | SpaceGraph | str) -> SpaceGraph:
    if isinstance(space_or_graph, SpaceGraph):
        return space_or_graph
    return space_graph(get_space(space_or_graph))


def _index(g: SpaceGraph, device: torch.device) -> dict[str, torch.Tensor]:
    key = (g, str(device))
    cached = _INDEX_CACHE.get(key)
    if cached is None:

        def lt(xs: Sequence[int]) -> torch.Tensor:
            return torch.tensor(xs, dtype=torch.long, device=device)

        cached = {
            "src": lt(g.path_src),
            "dst": lt(g.path_dst),
            "align_paths": lt(g.align_paths),
            "tail_paths": lt(g.tail_paths),
            "layer_block": lt(g.layer_block),
        }
        _INDEX_CACHE[key] = cached
    return cached


_INDEX_CACHE: dict[tuple[SpaceGraph, str], dict[str, torch.Tensor]] = {}


def _parts(
    g: SpaceGraph,
    table: CostTable,
    align_probs: torch.Tensor,
    layer_probs: torch.Tensor,
    path_probs: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(S per block, H per path, index tensors) in the dtype/device of ``path_probs``."""
    dev, dt = path_probs.device, path_probs.dtype
    ix = _index(g, dev)
    nb = g.num_blocks
    stack = torch.zeros(nb, device=dev, dtype=dt)
    if layer_probs.numel():
        per_layer = (layer_probs.to(dt) * table.layers.to(dev, dt)).sum(-1)
        stack = stack.index_add(0, ix["layer_block"], per_layer)
    h = torch.zeros(len(g.paths), device=dev, dtype=dt)
    if align_probs.numel():
        per_branch = (align_probs.to(dt) * table.align.to(dev, dt)).sum(-1)
        h = h.index_put((ix["align_paths"],), per_branch)
    h = h.index_put((ix["tail_paths"],), table.tail.to(dev, dt))
    return stack, h, ix


def chained_cost(
    space: SearchSpace | SpaceGraph | str,
    table: CostTable,
    align_probs: torch.Tensor,
    layer_probs: torch.Tensor,
    path_probs: torch.Tensor,
) -> torch.Tensor:
    """Expected network cost, chained from the tail back to the stem (0-dim tensor)."""
    g = _graph(space)
    stack, h, ix = _parts(g, table, align_probs, layer_probs, path_probs)
    nb = g.num_blocks
    dev, dt = path_probs.device, path_probs.dtype
    trans = torch.zeros(nb, nb, device=dev, dtype=dt).index_put((ix["src"], ix["dst"]), path_probs)
    r = stack + torch.zeros(nb, device=dev, dtype=dt).index_add(0, ix["src"], path_probs * h)
    eye = torch.eye(nb, device=dev, dtype=dt)
    c = torch.linalg.solve_triangular(eye - trans, r.unsqueeze(1), upper=True).squeeze(1)
    total: torch.Tensor = c[0] + (table.stem + table.classifier)
    return total


def chained_cost_recursive(
    space: SearchSpace | SpaceGraph | str,
    table: CostTable,
    align_probs: torch.Tensor,
    layer_probs: torch.Tensor,
    path_probs: torch.Tensor,
) -> torch.Tensor:
    """The same as :func:`chained_cost`, as the backward recursion of docs/algorithm.md
    §Chained cost (for tests/reading)."""
    g = _graph(space)
    stack, h, _ = _parts(g, table, align_probs, layer_probs, path_probs)
    c: list[Any] = [None] * g.num_blocks
    c[g.tail] = torch.zeros((), dtype=path_probs.dtype, device=path_probs.device)
    for b in range(g.tail - 1, -1, -1):
        acc = stack[b]
        for k in range(len(g.paths)):
            if g.path_src[k] == b:
                acc = acc + path_probs[k] * (h[k] + c[g.path_dst[k]])
        c[b] = acc
    total: torch.Tensor = c[0] + (table.stem + table.classifier)
    return total


def local_cost(
    space: SearchSpace | SpaceGraph | str,
    table: CostTable,
    align_probs: torch.Tensor,
    layer_probs: torch.Tensor,
    path_probs: torch.Tensor,
) -> torch.Tensor:
    """The A.5 baseline: Σ over all blocks of own stack + p-weighted incoming alignment."""
    g = _graph(space)
    stack, h, _ = _parts(g, table, align_probs, layer_probs, path_probs)
    total: torch.Tensor = stack.sum() + (path_probs * h).sum() + (table.stem + table.classifier)
    return total


def choice_probs(
    space: SearchSpace | SpaceGraph | str,
    block_path: list[int],
    align_choice: Mapping[tuple[int, int], int],
    layer_choice: Mapping[int, list[int]],
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One-hot (align, layer, path) probabilities of one sub-network, for costing it exactly.

    ``align_choice[(i, j)]``: op index on path i→j; ``layer_choice[j]``: op index per layer of
    block j (all layers, skips included). Off-path rows get op 0 (they do not contribute).
    """
    g = _graph(space)
    s = g.space
    a = torch.zeros(len(g.align_paths), len(s.align_ops), dtype=dtype)
    la = torch.zeros(len(g.layer_block), len(s.layer_ops), dtype=dtype)
    p = torch.zeros(len(g.paths), dtype=dtype)
    a[:, 0] = 1
    la[:, 0] = 1
    on_path = list(zip(block_path[:-1], block_path[1:]))
    for k, (src, dst) in enumerate(zip(g.path_src, g.path_dst)):
        if (src, dst) in on_path:
            p[k] = 1
            if dst != g.tail:
                r = g.path_row[k]
                a[r] = 0
                a[r, align_choice[(src, dst)]] = 1
    for j in block_path[1:-1]:
        for r, o in zip(g.block_layers[j], layer_choice.get(j, [])):
            la[r] = 0
            la[r, o] = 1
    return a, la, p


# -- the cost term of the arch loss --------------------------------------------------------------


def cost_term(
    cost: torch.Tensor,
    *,
    mode: str = CostSpec.mode,
    lam: float = CostSpec.lam,
    tau: float | None = None,
    target: float | None = None,
) -> torch.Tensor:
    """The cost part of the architecture loss.

    * ``"log"`` (reference): ``lam · log(cost) / log(tau)``, ``tau > 1`` in the table's unit.
    * ``"target"`` (a budget): ``lam · max(0, log(cost / target))`` — no pressure while the
      expected cost is within ``target``, a push proportional to ``lam/cost`` above it (the
      hard-constraint form of MnasNet's reward, as a loss).
    * ``"none"``: 0.
    """
    if mode == "none" or lam == 0:
        return cost.new_zeros(())
    if mode == "log":
        if tau is None or tau <= 1:
            raise ValueError(f"cost.tau: the log cost term needs tau > 1, got {tau!r}")
        return lam * torch.log(cost) / math.log(tau)
    if mode == "target":
        if target is None or target <= 0:
            raise ValueError(f"cost.target: mode 'target' needs a positive target, got {target!r}")
        return lam * torch.relu(torch.log(cost / target))
    raise ValueError(f"cost.mode: expected one of {', '.join(COST_MODES)}, got {mode!r}")


def default_tau(initial_cost: float) -> float:
    """τ when the config leaves it null: the supernet's expected cost at initialisation, at
    least e — the log term then starts near λ and has slope ≤ λ/cost."""
    return max(math.e, float(initial_cost))
