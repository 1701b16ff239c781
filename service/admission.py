"""Admission: whether a job that passed the schema may be queued at all.

The schema (:mod:`service.schemas`) checks what a spec *says*; this module checks what it would
*cost* against the limits of this deployment (:class:`~service.settings.Settings`,
``DENSENAS_MAX_*``), and refuses with a 422 that names the field and the limit::

    spec.space.stages: 10000 blocks exceeds the limit of 64 (DENSENAS_MAX_SPACE_BLOCKS)

* **Resources** a job can never get: more workers than one job may have, more GPUs per worker
  or per job than there are, several nodes where there is one.
* **Dataset roots** outside the configured directories (after ``..`` is refused and symlinks
  are resolved). Messages name the path given and the allowed directories, never what any
  directory holds.
* **Search spaces**: a name must be a preset. A custom description is checked in two steps.
  First the description is *counted* without building anything — blocks, candidate paths,
  channels, basic layers, ops per row, input size — in time linear in the request (so a
  10,000-block space is refused in milliseconds). Only a
  description within those limits is built (:func:`densenas_core.spaces.space_from_dict`),
  and its supernet is bounded in closed form (:func:`densenas_core.flops.supernet_bound`,
  parameters and mult-adds at the job's resolution; no modules are built).

:func:`admit` does file-system look-ups, imports the core (torch: seconds, the first time) and
may build a space: call it off the event loop (``POST /v1/jobs`` is a sync route, which FastAPI
runs in its thread pool).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from .errors import Invalid
from .schemas import ProfileSpec, RetrainSpec, SearchSpec, space_problem
from .settings import Settings

#: Op codes are short (``mb_k7_e6``); a longer one is refused before it is parsed.
MAX_OP_CODE_CHARS = 32
#: The width of ``architectures.space`` / ``latency_tables.space`` (a search's space name).
MAX_SPACE_NAME_CHARS = 100

Problem = tuple[str, str]  # (loc, msg)


def admit(body: Any, settings: Settings) -> None:
    """Raise :class:`~service.errors.Invalid` (422) when the job ``body`` (a ``JobCreate``)
    asks for more than this deployment allows; cheap checks first."""
    kind, spec = body.kind, body.spec
    problems = resource_problems(spec, settings)
    space = getattr(spec, "space", None)
    space_counts_ok = True
    if isinstance(space, Mapping):
        counted = space_count_problems(space, settings)
        space_counts_ok = not counted
        problems += counted
    dataset = getattr(spec, "dataset", None)
    if dataset is not None and dataset.root is not None:
        problems += dataset_root_problems(dataset.root, settings)
    if isinstance(space, str):
        problems += preset_problems(space)
    elif not problems and isinstance(space, Mapping) and space_counts_ok:
        problems += space_build_problems(space, _resolution(kind, spec), settings)
    if problems:
        raise Invalid(
            errors=[{"loc": f"spec.{loc}", "msg": msg, "type": "limit"} for loc, msg in problems]
        )


def _fmt(n: float) -> str:
    return f"{n:g}" if isinstance(n, float) else f"{n}"


# -- resources -----------------------------------------------------------------------------------


def resource_problems(
    spec: SearchSpec | RetrainSpec | ProfileSpec, settings: Settings
) -> list[Problem]:
    out: list[Problem] = []
    workers_cap = settings.workers_capacity
    gpu_cap = settings.gpus_per_worker_capacity
    job_gpu_cap = settings.gpus_per_job_capacity
    if isinstance(spec, SearchSpec):
        workers, gpus, gpu_loc = spec.num_workers, (1.0 if spec.use_gpu else 0.0), "use_gpu"
        if workers > workers_cap:
            out.append(
                (
                    "num_workers",
                    f"{workers} workers exceeds the limit of {workers_cap} "
                    "workers per job (DENSENAS_MAX_WORKERS_PER_JOB)",
                )
            )
    elif isinstance(spec, RetrainSpec):
        nodes, per_node = spec.num_nodes, spec.workers_per_node
        workers, gpus, gpu_loc = nodes * per_node, spec.gpus_per_worker, "gpus_per_worker"
        if nodes > settings.nodes_capacity:
            out.append(
                (
                    "num_nodes",
                    f"{nodes} nodes exceeds the limit of "
                    f"{settings.nodes_capacity} (DENSENAS_MAX_NODES_PER_JOB)",
                )
            )
        if workers > workers_cap:
            out.append(
                (
                    "workers_per_node",
                    f"num_nodes × workers_per_node = {nodes} × {per_node} = {workers} workers "
                    f"exceeds the limit of {workers_cap} workers per job "
                    "(DENSENAS_MAX_WORKERS_PER_JOB)",
                )
            )
    elif isinstance(spec, ProfileSpec):
        workers, gpus, gpu_loc = 1, (1.0 if spec.device.device == "cuda" else 0.0), "device.device"
    else:  # pragma: no cover - the schema knows three kinds
        return out
    if gpus > gpu_cap:
        out.append(
            (
                gpu_loc,
                f"{_fmt(gpus)} GPU per worker exceeds the limit of {_fmt(gpu_cap)} "
                "(DENSENAS_MAX_GPUS_PER_WORKER)",
            )
        )
    elif gpus and job_gpu_cap is not None and workers * gpus > job_gpu_cap:
        out.append(
            (
                gpu_loc,
                f"{workers} workers × {_fmt(gpus)} GPU = {_fmt(workers * gpus)} GPUs "
                f"exceeds the limit of {_fmt(job_gpu_cap)} GPUs per job "
                "(DENSENAS_MAX_GPUS_PER_JOB)",
            )
        )
    return out


# -- dataset roots -------------------------------------------------------------------------------


def dataset_root_problems(root: str, settings: Settings) -> list[Problem]:
    """``dataset.root`` must be absolute, free of ``..`` and, with every symlink resolved, lie
    in one of ``DENSENAS_DATASET_ROOTS`` (it need not exist yet: cifar10 downloads into it)."""
    loc = "dataset.root"
    path = PurePath(root)
    if not path.is_absolute():
        return [(loc, f"{root!r} is not an absolute path")]
    if ".." in path.parts:
        return [(loc, f"{root!r} contains '..'")]
    allowed = [Path(os.path.realpath(r)) for r in settings.allowed_dataset_roots]
    resolved = Path(os.path.realpath(root))
    if any(resolved == a or a in resolved.parents for a in allowed):
        return []
    shown = ", ".join(str(a) for a in allowed) or "none configured"
    via = "" if resolved == Path(root) else " (through a symbolic link)"
    return [
        (
            loc,
            f"{root!r} is outside the allowed dataset directories{via}: {shown} "
            "(DENSENAS_DATASET_ROOTS)",
        )
    ]


# -- custom search spaces ------------------------------------------------------------------------


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _stage_rows(desc: Mapping[str, Any]) -> tuple[str, str, list[tuple[str, Any, Any]]] | None:
    """(blocks loc, layers loc, [(widths loc, widths, num_layers)]) of either stage form, or
    None when the shape is wrong (the build names that)."""
    if "stages" in desc:
        raw = desc["stages"]
        if not isinstance(raw, list):
            return None
        rows = []
        for i, st in enumerate(raw):
            if not isinstance(st, Mapping):
                return None
            rows.append((f"space.stages[{i}].widths", st.get("widths"), st.get("num_layers")))
        return "space.stages", "space.stages", rows
    widths, layers = desc.get("widths"), desc.get("num_layers")
    if not isinstance(widths, list):
        return None
    layers = layers if isinstance(layers, list) else []
    return (
        "space.widths",
        "space.num_layers",
        [
            (f"space.widths[{i}]", w, layers[i] if i < len(layers) else None)
            for i, w in enumerate(widths)
        ],
    )


def max_paths(routing_blocks: int, max_connections: int) -> int:
    """Block pairs at most ``max_connections`` apart among stem, the routing blocks and tail:
    an upper bound on the space's paths (the connection rule may stop earlier)."""
    t, k = routing_blocks + 1, max_connections
    return t * (t + 1) // 2 if k >= t else k * (k + 1) // 2 + k * (t - k)


def space_count_problems(desc: Mapping[str, Any], s: Settings) -> list[Problem]:
    """What can be counted without building: time linear in the description, nothing built.

    Wrong types are left alone (the build reports them with the field); only numbers that are
    there are held to the limits.
    """
    out: list[Problem] = []
    for key in ("name", "family"):
        v = desc.get(key)
        if isinstance(v, str) and len(v) > MAX_SPACE_NAME_CHARS:
            out.append(
                (f"space.{key}", f"{len(v)} characters exceeds the limit of {MAX_SPACE_NAME_CHARS}")
            )
    for key in ("align_ops", "layer_ops"):
        ops = desc.get(key)
        if not isinstance(ops, list):
            continue
        if len(ops) > s.max_space_ops:
            out.append(
                (
                    f"space.{key}",
                    f"{len(ops)} ops exceeds the limit of "
                    f"{s.max_space_ops} (DENSENAS_MAX_SPACE_OPS)",
                )
            )
            continue
        for i, code in enumerate(ops):
            if isinstance(code, str) and len(code) > MAX_OP_CODE_CHARS:
                out.append(
                    (
                        f"space.{key}[{i}]",
                        f"op code of {len(code)} characters exceeds "
                        f"the limit of {MAX_OP_CODE_CHARS}",
                    )
                )
                break
    stem = desc.get("stem")
    if isinstance(stem, Mapping):
        fixed = stem.get("fixed_op")
        if isinstance(fixed, str) and len(fixed) > MAX_OP_CODE_CHARS:
            out.append(
                (
                    "space.stem.fixed_op",
                    f"op code of {len(fixed)} characters exceeds the limit of {MAX_OP_CODE_CHARS}",
                )
            )
    size = _int(desc.get("input_size"))
    if size is not None and size > s.max_space_input_size:
        out.append(
            (
                "space.input_size",
                f"{size} exceeds the limit of {s.max_space_input_size} "
                "(DENSENAS_MAX_SPACE_INPUT_SIZE)",
            )
        )

    channels: list[tuple[str, Any]] = [
        ("space.stem.channels", stem.get("channels") if isinstance(stem, Mapping) else None),
        ("space.tail_channels", desc.get("tail_channels")),
    ]
    shape = _stage_rows(desc)
    if shape is not None:
        blocks_loc, layers_loc, rows = shape
        widths_of = [w if isinstance(w, (list, tuple)) else () for _, w, _ in rows]
        n_blocks = sum(len(w) for w in widths_of)
        too_many = n_blocks > s.max_space_blocks
        if too_many:
            out.append(
                (
                    blocks_loc,
                    f"{n_blocks} blocks exceeds the limit of "
                    f"{s.max_space_blocks} (DENSENAS_MAX_SPACE_BLOCKS)",
                )
            )
        k = desc.get("max_connections", 4)
        k = _int(k)
        if k is not None and k > 0:
            bound = max_paths(n_blocks, k)
            if bound > s.max_space_paths:
                out.append(
                    (
                        "space.max_connections",
                        f"{n_blocks} blocks with max_connections {k} give up to {bound} "
                        f"paths, exceeding the limit of {s.max_space_paths} "
                        "(DENSENAS_MAX_SPACE_PATHS)",
                    )
                )
        layers = 0
        for (_, _, n), w in zip(rows, widths_of):
            n = _int(n)
            if n is not None and n > 0:
                layers += n * len(w)
        if layers > s.max_space_layers:
            out.append(
                (
                    layers_loc,
                    f"{layers} basic layers exceeds the limit of "
                    f"{s.max_space_layers} (DENSENAS_MAX_SPACE_LAYERS)",
                )
            )
        if not too_many:
            channels += [
                (f"{loc}[{j}]", c)
                for (loc, _, _), w in zip(rows, widths_of)
                for j, c in enumerate(w)
            ]
    for loc, c in channels:
        c = _int(c)
        if c is not None and c > s.max_space_channels:
            out.append(
                (
                    loc,
                    f"{c} channels exceeds the limit of {s.max_space_channels} "
                    "(DENSENAS_MAX_SPACE_CHANNELS)",
                )
            )
            break
    return out


def preset_problems(name: str) -> list[Problem]:
    from .core import SpaceError, get_space

    try:
        get_space(name)
    except SpaceError as e:
        return [("space", str(e))]
    return []


def space_build_problems(
    desc: Mapping[str, Any], resolution: int | None, s: Settings
) -> list[Problem]:
    """Build a counted description (bounded work) and bound its supernet in closed form."""
    from .core import OpError, SpaceError, space_from_dict, supernet_bound

    try:
        space = space_from_dict(desc)
    except (SpaceError, OpError) as e:
        sub, message = space_problem(str(e))
        return [(f"space.{sub}" if sub else "space", message)]
    except (TypeError, ValueError) as e:  # a shape space_from_dict does not name (a bug there)
        return [("space", f"not a valid space description ({e})")]
    if len(space.paths) > s.max_space_paths:  # the counted bound already holds; belt and braces
        return [
            (
                "space.max_connections",
                f"{len(space.paths)} paths exceeds the limit of "
                f"{s.max_space_paths} (DENSENAS_MAX_SPACE_PATHS)",
            )
        ]
    res = resolution or space.input_size
    try:
        mult_adds, params = supernet_bound(space, res)
    except OpError as e:
        return [("space", str(e))]
    out = []
    if params > s.max_supernet_params:
        out.append(
            (
                "space",
                f"the supernet's {params:,} parameters (every candidate op) exceed "
                f"the limit of {s.max_supernet_params:,} "
                "(DENSENAS_MAX_SUPERNET_PARAMS)",
            )
        )
    if mult_adds > s.max_supernet_mult_adds:
        out.append(
            (
                "space",
                f"the supernet's {mult_adds:,} mult-adds per {res}×{res} image "
                f"(every candidate op) exceed the limit of "
                f"{s.max_supernet_mult_adds:,} (DENSENAS_MAX_SUPERNET_MULT_ADDS)",
            )
        )
    return out


def _resolution(kind: str, spec: Any) -> int | None:
    """The input size the job will run the space at (None: the space's own)."""
    if kind == "profile":
        return spec.input_size
    dataset = getattr(spec, "dataset", None)
    if dataset is None:
        return None
    if dataset.input_size is not None:
        return dataset.input_size
    return 224 if dataset.name == "imagefolder" else None
