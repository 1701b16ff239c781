"""Index arithmetic over a search space's block DAG, shared by the supernet, costs and derivation.

Everything here is derived once from a frozen :class:`~densenas_core.spaces.SearchSpace` and is
plain Python data, so the supernet's forward, the chained cost and Viterbi agree on one ordering:

* **paths** in β order: block 0's out-paths by destination, then block 1's, … (= ``space.paths``);
  path ``k`` is entry ``path_col[k]`` of β row ``path_src[k]``;
* **alignment rows**: the paths that do not enter the tail, in path order (=
  ``space.alignment_branches``), one row of ``alpha_align`` each;
* **layer rows**: every basic layer of every routing block, block by block, one row of
  ``alpha_layer`` each;
* **tail paths**: the paths into the tail, whose 1×1 conv is fixed (no α).

``alpha`` as a nested list (``SearchResult.arch_params``) is the alignment rows followed by the
layer rows; ``beta`` is one list per block 0..N over its out-paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from .spaces import PathSpec, SearchSpace


@dataclass(frozen=True)
class SpaceGraph:
    space: SearchSpace
    paths: tuple[PathSpec, ...]
    path_src: tuple[int, ...]
    path_dst: tuple[int, ...]
    path_col: tuple[int, ...]
    beta_rows: int  # blocks 0..N (the tail has no β)
    beta_width: int  # max out-degree (β is stored padded to this width)
    align_paths: tuple[int, ...]  # alignment row r → path index
    tail_paths: tuple[int, ...]  # tail slot t → path index
    layer_block: tuple[int, ...]  # layer row → block index
    layer_pos: tuple[int, ...]  # layer row → position inside its block
    block_layers: tuple[tuple[int, ...], ...]  # block → its layer rows
    path_row: tuple[int, ...]  # path → its alignment row, or tail slot (see is_tail)

    @property
    def num_blocks(self) -> int:
        return len(self.space.blocks)

    @property
    def tail(self) -> int:
        return self.num_blocks - 1

    def is_tail_path(self, k: int) -> bool:
        return self.path_dst[k] == self.tail

    def tail_has_conv(self, src: int) -> bool:
        """The fixed 1×1 tail projection exists (same rule as ``Architecture.tail_has_conv``)."""
        return (
            self.space.family == "mbv2"
            or self.space.blocks[src].channels != self.space.tail_channels
        )

    def in_paths(self, j: int) -> tuple[int, ...]:
        """Path indices entering block j, nearest predecessor first (the order of in_paths)."""
        return _in_paths(self)[j]

    def alpha_rows(self) -> list[dict[str, Any]]:
        """What each α row is, in nested-list order (alignment rows, then layer rows)."""
        s = self.space
        rows = [
            {
                "kind": "align",
                "src": self.path_src[k],
                "dst": self.path_dst[k],
                "stride": self.paths[k].stride,
                "ops": list(s.align_ops),
            }
            for k in self.align_paths
        ]
        rows += [
            {"kind": "layer", "block": b, "layer": i, "ops": list(s.layer_ops)}
            for b, i in zip(self.layer_block, self.layer_pos)
        ]
        return rows


@cache
def _in_paths(g: SpaceGraph) -> tuple[tuple[int, ...], ...]:
    index = {(p.src, p.dst): k for k, p in enumerate(g.paths)}
    return tuple(
        tuple(index[(p.src, p.dst)] for p in g.space.in_paths[j]) for j in range(g.num_blocks)
    )


@cache
def space_graph(space: SearchSpace) -> SpaceGraph:
    tail = len(space.blocks) - 1
    paths = tuple(p for i in range(tail) for p in space.out_paths[i])
    cols = tuple(space.out_paths[p.src].index(p) for p in paths)
    align = tuple(k for k, p in enumerate(paths) if p.dst != tail)
    tails = tuple(k for k, p in enumerate(paths) if p.dst == tail)
    row = [0] * len(paths)
    for r, k in enumerate(align):
        row[k] = r
    for t, k in enumerate(tails):
        row[k] = t
    lb: list[int] = []
    lp: list[int] = []
    per_block: list[tuple[int, ...]] = []
    for b in space.blocks:
        rows: list[int] = []
        for i in range(b.num_layers if 0 < b.index < tail else 0):
            rows.append(len(lb))
            lb.append(b.index)
            lp.append(i)
        per_block.append(tuple(rows))
    return SpaceGraph(
        space=space,
        paths=paths,
        path_src=tuple(p.src for p in paths),
        path_dst=tuple(p.dst for p in paths),
        path_col=cols,
        beta_rows=tail,
        beta_width=max(len(space.out_paths[i]) for i in range(tail)),
        align_paths=align,
        tail_paths=tails,
        layer_block=tuple(lb),
        layer_pos=tuple(lp),
        block_layers=tuple(per_block),
        path_row=tuple(row),
    )
