"""Deriving the final architecture from α and β (SPEC §6, supplementary A.2).

* Blocks: Viterbi over the block DAG — ``P[0] = 1``, ``P[k] = max_{i∈in(k)} P[i]·p_{i→k}``,
  keep the arg-max predecessor, back-track from the tail. Computed in log space.
* Ops: argmax α on the kept alignment branch (the one from the chosen predecessor) and on every
  basic layer of the kept blocks; skip layers are dropped (``architecture_from_choices``).

The result is the versioned architecture document of :mod:`densenas_core.arch`
(``Architecture.to_dict()``). α and β are accepted as the nested lists of
``SearchResult.arch_params`` (α: alignment rows then basic-layer rows, in the order of
:mod:`densenas_core._graph`; β: one list per block 0..N over its out-paths) or as the
supernet's tensors.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from ._graph import SpaceGraph, space_graph
from .document import architecture_from_choices
from .spaces import SearchSpace, get_space


def viterbi(num_blocks: int, in_edges: Sequence[Sequence[int]],
            probs: Sequence[Sequence[float]]) -> list[int]:
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
            raise ValueError(f"viterbi: block {k} has {len(in_edges[k])} edges but "
                             f"{len(probs[k])} probabilities")
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


def path_log_prob(path: Sequence[int], in_edges: Sequence[Sequence[int]],
                  probs: Sequence[Sequence[float]]) -> float:
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
    elif isinstance(alpha, (tuple, list)) and len(alpha) == 2 and \
            isinstance(alpha[0], torch.Tensor) and alpha[0].dim() == 2:
        a, la = _rows(alpha[0]), _rows(alpha[1])
    else:
        rows = _rows(alpha)
        if len(rows) != n_align + n_layer:
            raise ValueError(f"alpha: expected {n_align} alignment rows + {n_layer} layer rows, "
                             f"got {len(rows)} rows")
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
    return max(range(len(row)), key=row.__getitem__)


def derive_choices(space: SearchSpace | str, alpha: Any, beta: Any, *,
                   temperature: float = 1.0):
    """(block path, {(i, j): align op index}, {j: [layer op index, ...]}) of the argmax child."""
    g = space_graph(get_space(space))
    a_rows, l_rows = split_alpha(g, alpha)
    p = beta_path_probs(g, beta, temperature)
    in_edges = [[g.path_src[k] for k in g.in_paths(j)] for j in range(g.num_blocks)]
    probs = [[p[k] for k in g.in_paths(j)] for j in range(g.num_blocks)]
    path = viterbi(g.num_blocks, in_edges, probs)
    index = {(s, d): k for k, (s, d) in enumerate(zip(g.path_src, g.path_dst))}
    align = {(i, j): _argmax(a_rows[g.path_row[index[(i, j)]]])
             for i, j in zip(path[:-2], path[1:-1])}
    layers = {j: [_argmax(l_rows[r]) for r in g.block_layers[j]] for j in path[1:-1]}
    return path, align, layers


def derive_architecture(space: SearchSpace | str, alpha: Any, beta: Any,
                        input_size: int | None = None, num_classes: int = 10,
                        in_channels: int = 3, *, temperature: float = 1.0,
                        name: str | None = None) -> dict[str, Any]:
    """The architecture document (``Architecture.to_dict()``) of the argmax child network."""
    space = get_space(space)
    path, align, layers = derive_choices(space, alpha, beta, temperature=temperature)
    arch = architecture_from_choices(
        space, path,
        {e: space.align_ops[o] for e, o in align.items()},
        {j: [space.layer_ops[o] for o in ops] for j, ops in layers.items()},
        num_classes=num_classes, input_size=input_size, in_channels=in_channels, name=name)
    return arch.to_dict()


def random_architecture(space: SearchSpace | str, generator: torch.Generator, *,
                        num_classes: int, input_size: int | None = None, in_channels: int = 3,
                        scale: float = 3.0, name: str | None = None) -> dict[str, Any]:
    """A random member of ``space``: derivation from random α/β logits (N(0, scale²)), so the
    block sequence is a random path of the DAG and every op a random candidate — the baseline
    a search must beat at equal cost."""
    g = space_graph(get_space(space))
    n_align, n_layer = len(g.align_paths), len(g.layer_block)
    sp = get_space(space)
    alpha = (scale * torch.randn(n_align, len(sp.align_ops), generator=generator)).tolist() + \
        (scale * torch.randn(n_layer, len(sp.layer_ops), generator=generator)).tolist()
    beta = [(scale * torch.randn(len(row), generator=generator)).tolist()
            for row in _beta_shape(g)]
    return derive_architecture(sp, alpha, beta, input_size=input_size, num_classes=num_classes,
                               in_channels=in_channels, name=name)


def _beta_shape(g: SpaceGraph) -> list[list[int]]:
    return [[k for k in range(len(g.paths)) if g.path_src[k] == i] for i in range(g.beta_rows)]
