"""Re-deriving a finished search's architecture under a new cost budget.

A search stores its α/β (``Architecture.arch_params``); the budget is applied at derivation
time, without retraining the supernet:

1. rank the block paths of the space by their β probability — the *k* most probable stem→tail
   paths by a list Viterbi (top-k partial scores per block) over the space's public block graph;
2. turn each path into an architecture with ``densenas_core.derive.derive_architecture``, with β
   pinned to that path (its edges get logits +L, the block's other out-edges −L, so the core's
   own Viterbi returns exactly that path) and α untouched — operations stay the α-argmax;
3. return the most probable one whose mult-adds (closed form) and/or predicted latency (the
   given latency table) are within the budget. None within budget → 422 naming the cheapest.

So "budget" means "the most likely network the search found that fits", the DenseNAS analogue of
re-running the final Viterbi with over-budget paths removed.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

from .errors import Invalid

PIN_LOGIT = 50.0


def _softmax(row: Sequence[float]) -> list[float]:
    top = max(row)
    e = [math.exp(v - top) for v in row]
    s = sum(e)
    return [v / s for v in e]


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
        row = list(beta[i])[:len(outs)]
        if len(row) < len(outs):
            raise Invalid.field(f"arch_params.beta[{i}]",
                                f"block {i} has {len(outs)} out-paths, got {len(row)} values")
        for p, prob in zip(outs, _softmax(row)):
            logp[(p.src, p.dst)] = math.log(prob) if prob > 0 else -math.inf
    # best[j]: up to k (score, prev block, prev rank) entries, best first
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


def pinned_beta(space: Any, path: Sequence[int]) -> list[list[float]]:
    """β logits whose argmax Viterbi path is ``path`` (off-path blocks score ≤ −2·PIN_LOGIT)."""
    nxt = dict(zip(path[:-1], path[1:]))
    rows = []
    for i in range(len(space.blocks) - 1):
        outs = space.out_paths[i]
        if i in nxt:
            rows.append([PIN_LOGIT if p.dst == nxt[i] else -PIN_LOGIT for p in outs])
        else:
            rows.append([0.0] * len(outs))
    return rows


def derive_within_budget(space_ref: Any, arch_params: dict[str, Any], template: dict[str, Any],
                         *, max_mult_adds: int | None, max_latency_ms: float | None,
                         table_doc: dict[str, Any] | None, top_k: int,
                         name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """→ (architecture document, report) for the most probable path within the budget."""
    from densenas_core.arch import arch_summary
    from densenas_core.derive import derive_architecture
    from densenas_core.spaces import SpaceError, get_space

    from .core import predict_latency_ms

    try:
        space = get_space(space_ref)
    except SpaceError as e:
        raise Invalid.field("spec.space", str(e)) from None
    alpha, beta = arch_params.get("alpha"), arch_params.get("beta")
    if not isinstance(alpha, list) or not isinstance(beta, list):
        raise Invalid.field("arch_params", "the search stored no α/β to derive from")
    shape = {k: template[k] for k in ("input_size", "num_classes", "in_channels")
             if isinstance(template.get(k), int)}
    considered = []
    cheapest: tuple[float, dict[str, Any]] | None = None
    for rank, (logp, path) in enumerate(k_best_paths(space, beta, top_k)):
        try:
            doc = derive_architecture(space, alpha, pinned_beta(space, path), name=name,
                                      **shape)
        except ValueError as e:
            raise Invalid.field("arch_params", str(e)) from None
        summary = arch_summary(doc)
        ms = predict_latency_ms(doc, table_doc) if table_doc is not None else None
        fits = ((max_mult_adds is None or summary["mult_adds"] <= max_mult_adds)
                and (max_latency_ms is None or (ms is not None and ms <= max_latency_ms)))
        figure = {"rank": rank, "log_prob": logp, "blocks": path,
                  "mult_adds": summary["mult_adds"], "latency_ms": ms}
        considered.append(figure)
        key = ms if max_latency_ms is not None and ms is not None else summary["mult_adds"]
        if cheapest is None or key < cheapest[0]:
            cheapest = (key, figure)
        if fits:
            return doc, {"rank": rank, "log_prob": logp, "blocks": path,
                         "mult_adds": summary["mult_adds"], "params": summary["params"],
                         "latency_ms": ms, "considered": len(considered)}
    best = cheapest[1] if cheapest else {}
    raise Invalid(
        f"none of the {len(considered)} most probable paths meets the budget; the cheapest "
        f"has {best.get('mult_adds')} mult-adds"
        + (f" and {best['latency_ms']:.3f} ms" if best.get("latency_ms") is not None else "")
        + " (raise the budget or cost.top_k)",
        errors=[{"loc": "cost", "msg": "no derivable architecture within the budget"}],
        cheapest=best)
