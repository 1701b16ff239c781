"""Re-deriving a finished search's architecture under a new cost budget (``POST
/v1/jobs/{id}/derive``): the request's side.

The algorithm — the most probable sub-network under the search's α/β that fits the budget,
over the ``top_k`` most probable block paths, without retraining — is
:func:`densenas_core.derive.derive_within_budget` (its module docstring says how), reached
through :mod:`service.core`. Here: the budgets from the request, the network shape from the
search's stored architecture, the winner's report, and the 422 that names the cheapest
candidate when nothing fits.
"""

from __future__ import annotations

import math
from typing import Any

from . import core
from .errors import Invalid


def derive_within_budget(
    space_ref: Any,
    arch_params: dict[str, Any],
    template: dict[str, Any],
    *,
    max_mult_adds: int | None,
    max_latency_ms: float | None,
    table_doc: dict[str, Any] | None,
    top_k: int,
    name: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """→ (architecture document, report) of the most probable fit; see the module docstring."""
    budgets: dict[str, float] = {}
    if max_mult_adds is not None:
        budgets["mult_adds"] = float(max_mult_adds)
    if max_latency_ms is not None:
        budgets["latency_ms"] = float(max_latency_ms)
    if not budgets:
        raise Invalid.field("cost", "give max_mult_adds and/or max_latency_ms")
    shape = {
        k: template[k]
        for k in ("input_size", "num_classes", "in_channels")
        if isinstance(template.get(k), int)
    }
    shape.setdefault("num_classes", 10)
    found = core.derive_within_budget(
        space_ref, arch_params, budgets, table_doc=table_doc, top_k=top_k, name=name, **shape
    )
    if found.best is not None:
        return found.best.architecture, {**found.best.report(), "considered": found.considered}
    best = found.cheapest.report() if found.cheapest is not None else {}
    latency = best.get("latency_ms")
    raise Invalid(
        f"no architecture among the {found.considered} most probable block paths fits the "
        f"budget; the cheapest found has {best.get('mult_adds')} mult-adds"
        + (f" and {latency:.3f} ms" if latency is not None and math.isfinite(latency) else "")
        + " (raise the budget or cost.top_k)",
        errors=[{"loc": "cost", "msg": "no derivable architecture within the budget"}],
        cheapest={
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in best.items()
        },
    )
