"""The dense super network with dropping-path execution (docs/algorithm.md §Supernet).

Structure: stem (conv 3×3 + BN + act, then the space's fixed op if any) → routing blocks →
tail. A routing block j sums, over its in-paths i→j, ``p_{i→j} · Align_{i→j}(x_i)`` and then
applies its basic layers; every candidate op is built once (BN ``affine=False``). The tail
sums one fixed 1×1 conv per in-path (dropped, as in ``Architecture``, for non-MBV2 families
when the widths already match — unless the path down-samples, so the summed maps agree), then
global average pooling and a linear classifier. Every block runs in every step; only the ops
are sampled.

Architecture parameters are three tensors, so a step never loops over rows in Python to touch
them: ``alpha_align`` [alignment rows, |align_ops|], ``alpha_layer`` [basic layers,
|layer_ops|] and ``beta`` [blocks 0..N, max out-degree] padded (the mask ``beta_mask`` marks the
real entries). Row orders are those of :mod:`densenas_core._graph`.

A step runs a :class:`Sample` of op indices drawn beforehand (one per row for weight steps, two
for arch steps). Only sampled ops run; with more than one op in a row, their outputs are mixed by
the softmax over the *sampled* α entries, which is how gradients reach α. In a weight step
(``Sample.arch`` false) the path and op weights are plain floats, so the step runs exactly the
computation of :meth:`SuperNet.freeze` — the static module the benchmark compares against.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from ._graph import SpaceGraph, space_graph
from .ops import ConvBnAct, build_op, build_row
from .spaces import SearchSpace, get_space

ARCH_PARAM_NAMES = ("alpha_align", "alpha_layer", "beta")


@dataclass(frozen=True, eq=False)
class Sample:
    """Op indices per row (CPU ``long`` tensors [rows, k]) for one step.

    ``arch``: whether the step differentiates w.r.t. α/β (arch step) or treats the path and
    op weights as constants (weight step).
    """

    align: torch.Tensor
    layers: torch.Tensor
    arch: bool = False

    def to_lists(self) -> tuple[list[list[int]], list[list[int]]]:
        return self.align.tolist(), self.layers.tolist()


# -- execution shared by the supernet and its frozen sub-networks ---------------------------------

#: a path or op weight: a plain number (weight steps, frozen nets) or a tensor carrying gradients
Weight = float | torch.Tensor
#: one row's op weights, None where the row runs a single op
RowWeights = Sequence[Weight] | None


def _row(mods: Sequence[nn.Module], w: RowWeights, x: torch.Tensor) -> torch.Tensor:
    """One alignment branch or basic layer: a single op, or the w-weighted sum of its ops."""
    out: torch.Tensor = mods[0](x)
    if w is None:
        return out
    out = out * w[0]
    for m, wi in zip(mods[1:], w[1:]):
        out = out + m(x) * wi
    return out


def _op_rows(rows: nn.ModuleList) -> list[nn.ModuleList]:
    """``align``/``layers`` as their rows: each entry is a ModuleList of candidate ops."""
    # nn.ModuleList is not generic, so iterating it yields plain Modules; both classes below
    # only ever put ModuleLists in these two lists.
    return [cast(nn.ModuleList, r) for r in rows]


def _off(w: Weight) -> bool:
    """A path weight given as the plain number 0 (tensors, which carry gradients, always run)."""
    return isinstance(w, (int, float)) and w == 0


class _Runner(nn.Module):
    """Forward over the block DAG given, per row, the modules to run and their weights."""

    graph: SpaceGraph
    stem: nn.Module
    stem_op: nn.Module | None
    align: nn.ModuleList  # alignment row → ModuleList of its ops
    layers: nn.ModuleList  # layer row → ModuleList of its ops
    tail_convs: nn.ModuleList
    classifier: nn.Module

    def _setup(self, graph: SpaceGraph) -> None:
        self.graph = graph
        g = graph
        # block j (1..N): [(path k, alignment row, src)], then its layer rows
        self._block_plan = [
            ([(k, g.path_row[k], g.path_src[k]) for k in g.in_paths(j)], g.block_layers[j])
            for j in range(1, g.tail)
        ]
        self._tail_plan = [(k, g.path_row[k], g.path_src[k]) for k in g.in_paths(g.tail)]

    def _run(
        self,
        x: torch.Tensor,
        align_mods: Sequence[Sequence[nn.Module]],
        align_w: Sequence[RowWeights],
        layer_mods: Sequence[Sequence[nn.Module]],
        layer_w: Sequence[RowWeights],
        path_w: Sequence[Weight],
    ) -> torch.Tensor:
        x = self.stem(x)
        if self.stem_op is not None:
            x = self.stem_op(x)
        xs: list[torch.Tensor | None] = [x]  # block j's output, None where no path reaches it
        for in_plan, layer_rows in self._block_plan:
            acc: torch.Tensor | None = None
            for k, r, src in in_plan:
                x_src = xs[src]
                if _off(path_w[k]) or x_src is None:
                    continue  # a path of weight 0 (a single-path sub-network) is not run
                y = _row(align_mods[r], align_w[r], x_src) * path_w[k]
                acc = y if acc is None else acc + y
            if acc is not None:
                for r in layer_rows:
                    acc = _row(layer_mods[r], layer_w[r], acc)
            xs.append(acc)
        acc = None
        for k, t, src in self._tail_plan:
            x_src = xs[src]
            if _off(path_w[k]) or x_src is None:
                continue
            y = self.tail_convs[t](x_src) * path_w[k]
            acc = y if acc is None else acc + y
        if acc is None:
            raise ValueError("no path with a non-zero weight reaches the tail")
        logits: torch.Tensor = self.classifier(torch.flatten(F.adaptive_avg_pool2d(acc, 1), 1))
        return logits


class SuperNet(_Runner):
    beta_mask: torch.Tensor  # [blocks 0..N, max out-degree]: the real entries of beta
    _path_flat: torch.Tensor  # path k → its flat index into beta

    def __init__(
        self,
        space: SearchSpace | str | Mapping[str, Any],
        num_classes: int,
        input_size: int | None = None,
        in_channels: int = 3,
        *,
        temperature: float = 1.0,
        entangled: bool = True,
    ) -> None:
        super().__init__()
        space = get_space(space)
        g = space_graph(space)
        self.space = space
        self.num_classes = num_classes
        self.input_size = input_size or space.input_size
        self.in_channels = in_channels
        self.temperature = float(temperature)
        act = space.stem.act
        c0 = space.stem.channels
        blocks = space.blocks
        self.stem = ConvBnAct(
            in_channels, c0, kernel=3, stride=space.stem.stride, act=act, affine=False
        )
        self.stem_op = (
            build_op(space.stem.fixed_op, c0, c0, 1, affine=False, act=act)
            if space.stem.fixed_op
            else None
        )
        self.entangled = bool(entangled)
        self.align = nn.ModuleList(
            build_row(
                space.align_ops,
                blocks[g.path_src[k]].channels,
                blocks[g.path_dst[k]].channels,
                g.paths[k].stride,
                act=act,
                entangled=self.entangled,
            )
            for k in g.align_paths
        )
        self.layers = nn.ModuleList(
            build_row(
                space.layer_ops,
                blocks[b].channels,
                blocks[b].channels,
                1,
                act=act,
                entangled=self.entangled,
            )
            for b in g.layer_block
        )
        self.tail_convs = nn.ModuleList(
            build_op(
                "conv1x1",
                blocks[g.path_src[k]].channels,
                space.tail_channels,
                g.paths[k].stride,
                affine=False,
                act=act,
            )
            if g.tail_has_conv(g.path_src[k]) or g.paths[k].stride != 1
            else nn.Identity()
            for k in g.tail_paths
        )
        self.classifier = nn.Linear(space.tail_channels, num_classes)
        self._setup(g)
        _init_weights(self)

        self.alpha_align = nn.Parameter(
            1e-3 * torch.randn(len(g.align_paths), len(space.align_ops))
        )
        self.alpha_layer = nn.Parameter(
            1e-3 * torch.randn(len(g.layer_block), len(space.layer_ops))
        )
        mask = torch.zeros(g.beta_rows, g.beta_width, dtype=torch.bool)
        mask[list(g.path_src), list(g.path_col)] = True
        self.beta = nn.Parameter(torch.where(mask, 1e-3 * torch.randn(mask.shape), torch.zeros(())))
        self.register_buffer("beta_mask", mask, persistent=False)
        self.register_buffer(
            "_path_flat",
            torch.tensor(
                [s * g.beta_width + c for s, c in zip(g.path_src, g.path_col)], dtype=torch.long
            ),
            persistent=False,
        )

    # -- parameters ------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_align, self.alpha_layer, self.beta]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n not in ARCH_PARAM_NAMES]

    # -- probabilities -----------------------------------------------------------------------
    def path_probs(self) -> torch.Tensor:
        """p_{i→j} = softmax(β_i / T) per path, in path order (differentiable)."""
        logits = (self.beta / self.temperature).masked_fill(~self.beta_mask, float("-inf"))
        return logits.softmax(-1).reshape(-1)[self._path_flat]

    def probs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(softmax α_align, softmax α_layer, path probabilities): the inputs of the costs."""
        return self.alpha_align.softmax(-1), self.alpha_layer.softmax(-1), self.path_probs()

    # -- sampling ------------------------------------------------------------------------------
    def sample(
        self,
        generator: torch.Generator | None = None,
        *,
        k: int = 1,
        uniform: bool = False,
        arch: bool = False,
    ) -> Sample:
        """k distinct ops per row (fewer where a row has fewer ops), uniformly or by softmax α.

        Drawn on the CPU from ``generator`` so that every rank holding the same generator state
        draws the same sub-network.
        """

        def draw(alpha: torch.Tensor) -> torch.Tensor:
            rows, n = alpha.shape
            kk = min(k, n)
            if rows == 0:
                return torch.zeros(0, kk, dtype=torch.long)
            if uniform:
                probs = torch.ones(rows, n, dtype=torch.float64)
            else:
                probs = alpha.detach().to("cpu", torch.float64).softmax(-1).clamp_min(1e-300)
            return torch.multinomial(probs, kk, replacement=False, generator=generator)

        return Sample(draw(self.alpha_align), draw(self.alpha_layer), arch)

    def argmax_sample(self) -> Sample:
        return Sample(
            self.alpha_align.detach().argmax(-1, keepdim=True).cpu(),
            self.alpha_layer.detach().argmax(-1, keepdim=True).cpu(),
            False,
        )

    def _weights(
        self, sample: Sample
    ) -> tuple[
        list[list[int]],
        Sequence[RowWeights],
        list[list[int]],
        Sequence[RowWeights],
        Sequence[Weight],
    ]:
        """(align_idx, align_w, layer_idx, layer_w, path_w) for :meth:`_run`."""
        ai, li = sample.to_lists()
        path_w: Sequence[Weight]
        if sample.arch:
            path_w = self.path_probs().unbind(0)
            aw = _mix_weights(self.alpha_align, sample.align, grad=True)
            lw = _mix_weights(self.alpha_layer, sample.layers, grad=True)
        else:
            with torch.no_grad():
                path_w = self.path_probs().tolist()
                aw = _mix_weights(self.alpha_align, sample.align, grad=False)
                lw = _mix_weights(self.alpha_layer, sample.layers, grad=False)
        return ai, aw, li, lw, path_w

    def forward(
        self,
        x: torch.Tensor,
        sample: Sample | None = None,
        path_weights: Sequence[float] | None = None,
    ) -> torch.Tensor:
        """Run ``sample`` (default: the argmax op of every row, as a weight step).

        ``path_weights`` (one number per path, in path order) replaces the β path
        probabilities, e.g. one-hot on a derived block sequence; paths of weight 0 are skipped.
        """
        sample = sample if sample is not None else self.argmax_sample()
        ai, aw, li, lw, path_w = self._weights(sample)
        if path_weights is not None:
            if len(path_weights) != len(self.graph.paths):
                raise ValueError(
                    f"path_weights: {len(path_weights)} values for {len(self.graph.paths)} paths"
                )
            path_w = [float(w) for w in path_weights]
        align_mods = [[row[i] for i in idx] for row, idx in zip(_op_rows(self.align), ai)]
        layer_mods = [[row[i] for i in idx] for row, idx in zip(_op_rows(self.layers), li)]
        return self._run(x, align_mods, aw, layer_mods, lw, path_w)

    def freeze(self, sample: Sample) -> FrozenSubNet:
        """The sampled sub-network as a static module sharing this supernet's weights.

        Path and op weights are frozen to their current values (floats); in eval mode its
        output equals ``self(x, sample)``.
        """
        with torch.no_grad():
            ai, aw, li, lw, path_w = self._weights(Sample(sample.align, sample.layers, False))
        return FrozenSubNet(self, ai, aw, li, lw, path_w)

    # -- export --------------------------------------------------------------------------------
    def alpha_lists(self) -> list[list[float]]:
        """α as nested lists: alignment rows, then basic-layer rows."""
        return self.alpha_align.detach().cpu().tolist() + self.alpha_layer.detach().cpu().tolist()

    def beta_lists(self) -> list[list[float]]:
        """β as one list per block 0..N over its out-paths (padding removed)."""
        b = self.beta.detach().cpu()
        m = self.beta_mask.cpu()
        return [b[i][m[i]].tolist() for i in range(b.shape[0])]

    def load_arch_lists(
        self, alpha: Sequence[Sequence[float]], beta: Sequence[Sequence[float]]
    ) -> None:
        from .derive import split_alpha

        a_rows, l_rows = split_alpha(self.graph, alpha)
        with torch.no_grad():
            if a_rows:
                self.alpha_align.copy_(torch.tensor(a_rows))
            if l_rows:
                self.alpha_layer.copy_(torch.tensor(l_rows))
            for i, row in enumerate(beta):
                self.beta[i, : len(row)] = torch.tensor(row, dtype=self.beta.dtype)

    def export(self, num_classes: int | None = None, name: str | None = None) -> dict[str, Any]:
        """The argmax architecture document (Viterbi blocks, argmax ops) — see derive."""
        from .derive import derive_architecture

        return derive_architecture(
            self.space,
            self.alpha_lists(),
            self.beta_lists(),
            input_size=self.input_size,
            num_classes=num_classes or self.num_classes,
            in_channels=self.in_channels,
            temperature=self.temperature,
            name=name,
        )

    def export_probs(self) -> dict[str, Any]:
        """JSON-able probability tables for dashboards."""
        g, s = self.graph, self.space
        with torch.no_grad():
            a, la, p = (t.detach().cpu() for t in self.probs())
        align = [
            {
                "src": g.path_src[k],
                "dst": g.path_dst[k],
                "ops": list(s.align_ops),
                "probs": _round(a[r].tolist()),
            }
            for r, k in enumerate(g.align_paths)
        ]
        layers = [
            {"block": b, "layer": i, "ops": list(s.layer_ops), "probs": _round(la[r].tolist())}
            for r, (b, i) in enumerate(zip(g.layer_block, g.layer_pos))
        ]
        beta = []
        for i in range(g.beta_rows):
            ks = [k for k in range(len(g.paths)) if g.path_src[k] == i]
            beta.append(
                {
                    "block": i,
                    "dst": [g.path_dst[k] for k in ks],
                    "probs": _round([float(p[k]) for k in ks]),
                }
            )
        return {
            "space": s.name,
            "temperature": self.temperature,
            "alpha": {"align": align, "layers": layers},
            "beta": beta,
        }


def _round(xs: list[float]) -> list[float]:
    return [round(v, 6) for v in xs]


def _mix_weights(alpha: torch.Tensor, idx: torch.Tensor, *, grad: bool) -> Sequence[RowWeights]:
    """Per row, softmax over the sampled α entries (None per row where one op is sampled)."""
    rows, k = idx.shape
    if k == 1:
        return [None] * rows
    w = alpha.gather(1, idx.to(alpha.device)).softmax(-1)
    if grad:
        return [r.unbind(0) for r in w.unbind(0)]
    plain: list[list[float]] = w.tolist()
    return plain


class FrozenSubNet(_Runner):
    """A static sub-network of a :class:`SuperNet`: the sampled ops only, shared weights."""

    def __init__(
        self,
        net: SuperNet,
        ai: Sequence[Sequence[int]],
        aw: Sequence[RowWeights],
        li: Sequence[Sequence[int]],
        lw: Sequence[RowWeights],
        path_w: Sequence[Weight],
    ) -> None:
        super().__init__()
        self.stem = net.stem
        self.stem_op = net.stem_op
        net_align, net_layers = _op_rows(net.align), _op_rows(net.layers)
        self.align = nn.ModuleList(
            nn.ModuleList(net_align[r][i] for i in idx) for r, idx in enumerate(ai)
        )
        self.layers = nn.ModuleList(
            nn.ModuleList(net_layers[r][i] for i in idx) for r, idx in enumerate(li)
        )
        self.tail_convs = net.tail_convs
        self.classifier = net.classifier
        self._setup(net.graph)
        self._aw, self._lw, self._path_w = aw, lw, list(path_w)
        # plain lists, as the supernet hands to _run (ModuleList slicing would rebuild lists)
        self._align_mods = [list(row) for row in _op_rows(self.align)]
        self._layer_mods = [list(row) for row in _op_rows(self.layers)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, self._align_mods, self._aw, self._layer_mods, self._lw, self._path_w)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
