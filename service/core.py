"""The control plane's narrow door into ``densenas_core``: the one service module that imports
it (tests/unit/test_import_boundaries.py holds the rest of the service to that).

Imports are lazy (the core pulls in torch, which the API should not pay for at import time or in
routes that never need it), and every failure of the core on user- or worker-supplied data is
turned into :class:`~service.errors.Invalid` with the core's own message, which names the field.

Besides the functions below, the core names in :data:`CORE_NAMES` can be imported from here
(``from .core import SpaceError, space_from_dict``); each is resolved from the core on first
access, so importing this module still does not import torch.
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import Invalid

if TYPE_CHECKING:
    from densenas_core.arch import ArchError, arch_summary, get_arch  # noqa: F401
    from densenas_core.flops import supernet_bound  # noqa: F401
    from densenas_core.ops import OpError  # noqa: F401
    from densenas_core.spaces import (  # noqa: F401
        SPACE_NAMES,
        SpaceError,
        get_space,
        load_space_file,
        space_from_dict,
    )
    from densenas_core.specs import (  # noqa: F401
        JOB_SPECS,
        Bounds,
        CostSpec,
        DatasetSpec,
        Doc,
        MaxLen,
        ProfileSpec,
        RetrainSpec,
        SearchSpec,
        Spec,
        SpecError,
        spec_fields,
    )

log = logging.getLogger(__name__)

#: core names re-exported for service modules that use them as they are: name → core module
CORE_NAMES = {
    "ArchError": "densenas_core.arch",
    "arch_summary": "densenas_core.arch",
    "get_arch": "densenas_core.arch",
    "supernet_bound": "densenas_core.flops",
    "OpError": "densenas_core.ops",
    "SPACE_NAMES": "densenas_core.spaces",
    "SpaceError": "densenas_core.spaces",
    "get_space": "densenas_core.spaces",
    "load_space_file": "densenas_core.spaces",
    "space_from_dict": "densenas_core.spaces",
    # the job specs' science part (torch-free: the request schemas are derived from them)
    **dict.fromkeys(
        (
            "Spec",
            "SpecError",
            "Bounds",
            "MaxLen",
            "Doc",
            "spec_fields",
            "DatasetSpec",
            "CostSpec",
            "SearchSpec",
            "RetrainSpec",
            "ProfileSpec",
            "JOB_SPECS",
        ),
        "densenas_core.specs",
    ),
}


def __getattr__(name: str) -> Any:
    """``from service.core import <a CORE_NAMES name>``: the core's object, imported now."""
    module = CORE_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def check_architecture(doc: Mapping[str, Any], where: str) -> None:
    """Raise 422 at ``where`` unless ``doc`` is a valid architecture document."""
    from densenas_core.arch import ArchError, get_arch

    try:
        get_arch(dict(doc))
    except (ArchError, ValueError, TypeError, KeyError) as e:
        raise Invalid.field(where, str(e)) from None


def arch_figures(doc: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(mult_adds, params): the document's own figures, else the closed-form summary."""
    mult_adds, params = doc.get("mult_adds"), doc.get("params")
    if isinstance(mult_adds, int) and isinstance(params, int):
        return mult_adds, params
    try:
        from densenas_core.arch import arch_summary

        summary = arch_summary(dict(doc))
        return int(summary["mult_adds"]), int(summary["params"])
    except Exception as e:  # noqa: BLE001 - a doc the summary cannot read still gets stored
        log.warning("no mult-adds/params for architecture %r: %s", doc.get("name"), e)
        return (
            mult_adds if isinstance(mult_adds, int) else None,
            params if isinstance(params, int) else None,
        )


def check_latency_table(doc: Mapping[str, Any], where: str) -> None:
    from densenas_core.latency import LatencyTable, LatencyTableError

    try:
        LatencyTable.from_dict(doc)
    except (LatencyTableError, ValueError, TypeError, KeyError) as e:
        raise Invalid.field(where, str(e)) from None


def predict_latency_ms(arch_doc: Mapping[str, Any], table_doc: Mapping[str, Any]) -> float | None:
    """Σ of the table's per-op latencies over the architecture; None when the table lacks an
    op of it (the architecture was not searched against this table's space/resolution)."""
    from densenas_core.arch import predict_cost
    from densenas_core.latency import LatencyTable

    try:
        table = LatencyTable.from_dict(table_doc)
        return float(predict_cost(dict(arch_doc), table, input_size=table.input_size))
    except KeyError:
        return None
    except Exception as e:  # noqa: BLE001 - no prediction, not a failed request
        log.warning("latency prediction failed: %s", e)
        return None


def space_names() -> tuple[str, ...]:
    from densenas_core.spaces import SPACE_NAMES

    return SPACE_NAMES


def derive_within_budget(
    space_ref: Any,
    arch_params: Mapping[str, Any],
    budgets: Mapping[str, float],
    *,
    table_doc: Mapping[str, Any] | None,
    top_k: int,
    name: str,
    **shape: int,
):
    """:func:`densenas_core.derive.derive_within_budget` on a job's space and stored α/β;
    → its ``BudgetDerivation``. 422 at ``spec.space`` or the α/β field the core names."""
    from densenas_core.derive import DeriveError
    from densenas_core.derive import derive_within_budget as derive
    from densenas_core.latency import LatencyTable
    from densenas_core.spaces import SpaceError
    from densenas_core.spaces import get_space as _get

    try:
        space = _get(space_ref)
    except SpaceError as e:
        raise Invalid.field("spec.space", str(e)) from None
    table = LatencyTable.from_dict(table_doc) if table_doc is not None else None
    try:
        return derive(
            space, arch_params, budgets, latency_table=table, top_k=top_k, name=name, **shape
        )
    except DeriveError as e:
        raise Invalid.field(e.where, e.message) from None


def export_onnx(arch_doc: Mapping[str, Any]) -> bytes:
    """The architecture as ONNX (fresh weights: the graph, for deployment tooling)."""
    try:
        import torch

        from densenas_core.arch import build_network, get_arch

        arch = get_arch(dict(arch_doc))
        model = build_network(arch).eval()
        x = torch.randn(1, arch.in_channels, arch.input_size, arch.input_size)
        fd, path = tempfile.mkstemp(suffix=".onnx")
        os.close(fd)
        try:
            with torch.no_grad():
                torch.onnx.export(
                    model,
                    (x,),
                    path,
                    dynamo=False,
                    input_names=["input"],
                    output_names=["logits"],
                    opset_version=17,
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                )
            with open(path, "rb") as f:
                return f.read()
        finally:
            os.unlink(path)
    except Invalid:
        raise
    except Exception as e:  # noqa: BLE001 - any exporter failure is the request's 422
        raise Invalid(
            f"ONNX export failed: {type(e).__name__}: {e}",
            errors=[{"loc": "format", "msg": f"onnx export failed: {e}"}],
        ) from None
