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

import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from . import core
from .errors import Invalid

log = logging.getLogger(__name__)

#: set once :func:`warm_up` has run (whatever its outcome)
WARM = threading.Event()


def warm_up(space: str = "mbv2-small") -> float:
    """Import what a derivation runs — the core, and torch under it — and build the default
    space: seconds. A fresh process paid this in its first derive request (issue 15): ~2.3 of
    its 2.5 s here, and the time to read torch's and CUDA's libraries (GBs) from a cold disk —
    minutes on slow storage — where the next derive took 0.1 s."""
    t0 = time.perf_counter()
    try:
        core.get_arch  # noqa: B018 - resolving the name imports densenas_core.arch (torch)
        core.get_space(space)
    except Exception as e:  # noqa: BLE001 - a failed warm-up only leaves the cost to a request
        log.warning("derive warm-up failed: %s", e)
    finally:
        WARM.set()
    return time.perf_counter() - t0


@asynccontextmanager
async def warm_up_in_background(_app: Any) -> AsyncIterator[None]:
    """Lifespan of the jobs router: :func:`warm_up` in a daemon thread as the server starts, so
    the first derive after start-up does not import torch in its request."""
    if not WARM.is_set():
        threading.Thread(target=warm_up, name="densenas-derive-warm-up", daemon=True).start()
    yield


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
    where: str = "cost",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """→ (architecture document, report) of the most probable fit; see the module docstring.

    ``where``: the request field of the budget (``cost``, or ``budgets[i]`` of a family), which
    a 422 names."""
    budgets: dict[str, float] = {}
    if max_mult_adds is not None:
        budgets["mult_adds"] = float(max_mult_adds)
    if max_latency_ms is not None:
        budgets["latency_ms"] = float(max_latency_ms)
    if not budgets:
        raise Invalid.field(where, "give max_mult_adds and/or max_latency_ms")
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
        errors=[{"loc": where, "msg": "no derivable architecture within the budget"}],
        cheapest={
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in best.items()
        },
    )
