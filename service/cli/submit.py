"""``densenas submit search|retrain|profile``: job specs from flags and spec files."""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, cast

import typer

from .common import CliError, JsonOpt, cli_errors, client_from, console, print_json, submit_app
from .format import status_text
from .watch import JobWatcher, finish_watch


def _load_mapping_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise CliError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected an object at the top level")
    return data


def resolve_space(space: str | None) -> str | dict[str, Any] | None:
    """A preset name stays a name; a JSON/YAML file becomes the space object (checked here)."""
    if space is None:
        return None
    p = Path(space)
    if p.suffix.lower() in (".json", ".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise CliError(f"space file not found: {space}")
        desc = _load_mapping_file(p)
        from ..core import space_from_dict

        space_from_dict(desc)  # fail here, with the field name, rather than after submitting
        return desc
    return space


def _declared_default(kind: str, path: str) -> Any:
    """The default of the field ``path`` (``"dataset.name"``) of a ``kind`` job's spec where it
    is declared: the core's part (``densenas_core.specs``, through :mod:`service.core`) or the
    workers' (``workers.payload``). The server fills in exactly these for an omitted field."""
    from workers.payload import JOB_RESOURCES

    from ..core import JOB_SPECS

    head, *rest = path.split(".")
    for spec in (JOB_SPECS[kind], JOB_RESOURCES[kind]):
        if head in {f.name for f in dataclasses.fields(spec)}:
            value = getattr(spec(), head)
            for name in rest:
                value = getattr(value, name)
            return value
    raise KeyError(f"{kind} spec has no field {path!r}")  # a declaration error


def server_default(help: str | None, kind: str, path: str, *, flag: str | None = None) -> str:
    """``help`` followed by the server's default for the option of spec field ``path`` (the
    options themselves default to None, so that only given flags reach the spec): ``Total
    epochs.  [server default: 4]``. ``flag``: a boolean's ``--flag/--no-flag`` name."""
    value = _declared_default(kind, path)
    if value is None:
        return help or ""
    if isinstance(value, bool):
        text = f"--{flag}" if value else f"--no-{flag}"
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return f"{help}  [server default: {text}]" if help else f"[server default: {text}]"


def put_given(d: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        d[key] = value


def _dataset(
    name: str | None,
    root: str | None,
    limit_train: int | None,
    limit_val: int | None,
    num_classes: int | None,
    input_size: int | None,
) -> dict[str, Any] | None:
    ds: dict[str, Any] = {}
    for k, v in (
        ("name", name),
        ("root", root),
        ("limit_train", limit_train),
        ("limit_val", limit_val),
        ("num_classes", num_classes),
        ("input_size", input_size),
    ):
        put_given(ds, k, v)
    return ds or None


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


SpecFileOpt = Annotated[
    Path | None,
    typer.Option("--spec", help="Base spec from a JSON/YAML file; flags override its fields."),
]
PriorityOpt = Annotated[int, typer.Option(help="Higher runs first.")]
IdemOpt = Annotated[
    str | None,
    typer.Option("--idempotency-key", help="Re-submitting with the same key returns the same job."),
]
WatchOpt = Annotated[bool, typer.Option("--watch", help="Follow the job live until it ends.")]
MaxAttemptsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-attempts", help="Attempts before the job fails for good (default: server's)."
    ),
]
ProjectOpt = Annotated[
    str | None, typer.Option("--project", help="Create in this project (admin tokens only).")
]
TagOpt = Annotated[
    list[str] | None,
    typer.Option("--tag", help="Label the job (repeat for several); densenas jobs --tag finds it."),
]


def _common_options(
    spec_file: SpecFileOpt = None,
    priority: PriorityOpt = 0,
    idempotency_key: IdemOpt = None,
    max_attempts: MaxAttemptsOpt = None,
    project: ProjectOpt = None,
    tag: TagOpt = None,
    watch: WatchOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The options every ``submit`` command takes after its own (declared once, here)."""


_COMMON = inspect.signature(_common_options, eval_str=True).parameters
SpecBuilder = Callable[..., dict[str, Any]]


def submit_command(kind: str, doc: str | None = None) -> Callable[[SpecBuilder], SpecBuilder]:
    """Register ``build`` as ``densenas submit <kind>``: it takes the kind's own flags and
    returns the spec they give; the command takes those flags, then :func:`_common_options`,
    merges the spec over the ``--spec`` file's and submits it. ``doc``: the command's help, when
    not ``build``'s docstring."""

    def register(build: SpecBuilder) -> SpecBuilder:
        keyword = inspect.Parameter.KEYWORD_ONLY
        own = inspect.signature(build, eval_str=True).parameters.values()
        ctx = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        params = [
            ctx.replace(annotation=typer.Context),
            *(p.replace(kind=keyword) for p in (*own, *_COMMON.values())),
        ]

        def command(ctx: typer.Context, **kwargs: Any) -> None:
            common = {name: kwargs.pop(name) for name in _COMMON}
            spec_file = common.pop("spec_file")
            base = _load_mapping_file(spec_file) if spec_file else {}
            _submit(ctx, kind, _merge(base, build(**kwargs)), **common)

        command.__name__, command.__doc__ = build.__name__, doc or build.__doc__
        command.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}
        cast(Any, command).__signature__ = inspect.Signature(params, return_annotation=None)
        submit_app.command(kind)(cli_errors(command))
        return build

    return register


def _submit(
    ctx: typer.Context,
    kind: str,
    spec: dict[str, Any],
    *,
    priority: int,
    idempotency_key: str | None,
    max_attempts: int | None,
    project: str | None,
    tag: list[str] | None,
    watch: bool,
    as_json: bool,
) -> None:
    with client_from(ctx) as c:
        job = c.create_job(
            kind,
            spec,
            priority=priority,
            idempotency_key=idempotency_key,
            max_attempts=max_attempts,
            project=project,
            tags=tag,
        )
        if not watch:
            if as_json:
                print_json(job)
            else:
                console.print(
                    f"submitted {kind} job [bold]{job['id']}[/] "
                    f"({status_text(job['status'])})"
                    f" — follow it with: densenas watch {job['id']}"
                )
            return
        if not as_json:
            console.print(f"submitted {kind} job [bold]{job['id']}[/]")
        final = JobWatcher(c, job, json_lines=as_json).run()
        finish_watch(c, final, as_json)


@submit_command("search", doc="Submit a DenseNAS search.")
def build_search_spec(
    *,
    space: Annotated[
        str | None,
        typer.Option(
            help=server_default(
                "Preset (mbv2-small, mbv2-imagenet, resnet-small, resnet-imagenet) or a JSON/YAML "
                "space file.",
                "search",
                "space",
            )
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help=server_default(
                "fashion-mnist | cifar10 | imagefolder | synthetic.", "search", "dataset.name"
            )
        ),
    ] = None,
    dataset_root: Annotated[str | None, typer.Option(help="Dataset directory.")] = None,
    limit_train: Annotated[int | None, typer.Option(help="Use at most N training images.")] = None,
    limit_val: Annotated[int | None, typer.Option(help="Use at most N validation images.")] = None,
    num_classes: Annotated[int | None, typer.Option(help="Seeded random class subset.")] = None,
    input_size: Annotated[int | None, typer.Option(help="Resize images to N×N.")] = None,
    epochs: Annotated[
        int | None, typer.Option(help=server_default("Total epochs.", "search", "epochs"))
    ] = None,
    warmup_epochs: Annotated[
        int | None,
        typer.Option(
            help=server_default("First epochs train weights only.", "search", "warmup_epochs")
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=server_default(None, "search", "batch_size"))
    ] = None,
    seed: Annotated[int | None, typer.Option(help=server_default(None, "search", "seed"))] = None,
    schedule: Annotated[
        str | None,
        typer.Option(
            help=server_default(
                "scaled (default: lrs scaled to the batch and the arch steps, entangled op "
                "weights) | paper (the paper's settings).",
                "search",
                "schedule",
            )
        ),
    ] = None,
    w_lr: Annotated[
        float | None, typer.Option(help="Weight learning rate (default: from --schedule).")
    ] = None,
    a_lr: Annotated[
        float | None, typer.Option(help="Architecture learning rate (default: from --schedule).")
    ] = None,
    cost_metric: Annotated[
        str | None,
        typer.Option(help=server_default("flops | latency.", "search", "cost.metric")),
    ] = None,
    cost_mode: Annotated[
        str | None,
        typer.Option(help=server_default("Cost term form (e.g. log).", "search", "cost.mode")),
    ] = None,
    lam: Annotated[
        float | None, typer.Option(help=server_default("Cost weight λ.", "search", "cost.lam"))
    ] = None,
    tau: Annotated[float | None, typer.Option(help="Cost normaliser τ.")] = None,
    target: Annotated[
        float | None, typer.Option(help="Cost budget (ms for latency, M mult-adds for flops).")
    ] = None,
    latency_table: Annotated[
        int | None, typer.Option(help="Latency table id (for --cost-metric latency).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help=server_default("Ray Train workers.", "search", "num_workers")),
    ] = None,
    gpu: Annotated[
        bool | None,
        typer.Option(
            "--gpu/--no-gpu", help=server_default("Use GPUs.", "search", "use_gpu", flag="gpu")
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            help=server_default("Steps between checkpoints.", "search", "checkpoint_every")
        ),
    ] = None,
) -> dict[str, Any]:
    """The search spec from CLI flags: only what was given, so the server's defaults apply."""
    spec: dict[str, Any] = {}
    put_given(spec, "space", resolve_space(space))
    put_given(
        spec,
        "dataset",
        _dataset(dataset, dataset_root, limit_train, limit_val, num_classes, input_size),
    )
    for k, v in (
        ("epochs", epochs),
        ("warmup_epochs", warmup_epochs),
        ("batch_size", batch_size),
        ("seed", seed),
        ("schedule", schedule),
        ("w_lr", w_lr),
        ("a_lr", a_lr),
        ("num_workers", workers),
        ("use_gpu", gpu),
        ("checkpoint_every", checkpoint_every),
    ):
        put_given(spec, k, v)
    cost: dict[str, Any] = {}
    for k, v in (
        ("metric", cost_metric),
        ("mode", cost_mode),
        ("lam", lam),
        ("tau", tau),
        ("target", target),
        ("latency_table_id", latency_table),
    ):
        put_given(cost, k, v)
    if latency_table is not None and cost_metric is None:
        cost["metric"] = "latency"
    if cost:
        spec["cost"] = cost
    return spec


@submit_command("retrain")
def submit_retrain(
    arch_id: Annotated[int, typer.Argument(help="Architecture id to retrain.")],
    epochs: Annotated[
        int | None, typer.Option(help=server_default(None, "retrain", "epochs"))
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help=server_default(None, "retrain", "batch_size"))
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(help=server_default("Peak learning rate (cosine).", "retrain", "lr")),
    ] = None,
    lr_min: Annotated[
        float | None, typer.Option(help=server_default(None, "retrain", "lr_min"))
    ] = None,
    label_smoothing: Annotated[
        float | None, typer.Option(help=server_default(None, "retrain", "label_smoothing"))
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option(help=server_default("Ray nodes (num_nodes).", "retrain", "num_nodes")),
    ] = None,
    workers_per_node: Annotated[
        int | None, typer.Option(help=server_default(None, "retrain", "workers_per_node"))
    ] = None,
    gpus_per_worker: Annotated[
        float | None, typer.Option(help=server_default(None, "retrain", "gpus_per_worker"))
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help=server_default(None, "retrain", "dataset.name"))
    ] = None,
    dataset_root: Annotated[str | None, typer.Option()] = None,
    limit_train: Annotated[int | None, typer.Option()] = None,
    limit_val: Annotated[int | None, typer.Option()] = None,
    num_classes: Annotated[int | None, typer.Option()] = None,
    input_size: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option(help=server_default(None, "retrain", "seed"))] = None,
) -> dict[str, Any]:
    """Retrain a derived architecture from scratch (multi-node with --nodes)."""
    spec: dict[str, Any] = {"architecture_id": arch_id}
    put_given(
        spec,
        "dataset",
        _dataset(dataset, dataset_root, limit_train, limit_val, num_classes, input_size),
    )
    for k, v in (
        ("epochs", epochs),
        ("batch_size", batch_size),
        ("lr", lr),
        ("lr_min", lr_min),
        ("label_smoothing", label_smoothing),
        ("num_nodes", nodes),
        ("workers_per_node", workers_per_node),
        ("gpus_per_worker", gpus_per_worker),
        ("seed", seed),
    ):
        put_given(spec, k, v)
    if gpus_per_worker is not None and float(gpus_per_worker).is_integer():
        spec["gpus_per_worker"] = int(gpus_per_worker)
    return spec


@submit_command("profile")
def submit_profile(
    space: Annotated[
        str | None,
        typer.Option(help=server_default("Preset or a JSON/YAML space file.", "profile", "space")),
    ] = None,
    device: Annotated[
        str | None, typer.Option(help=server_default("cpu | cuda.", "profile", "device.device"))
    ] = None,
    gpu_type: Annotated[str | None, typer.Option(help="e.g. A100 (Ray accelerator type).")] = None,
    batch: Annotated[
        int | None,
        typer.Option(help=server_default("Batch size to time at.", "profile", "batch_size")),
    ] = None,
    input_size: Annotated[int | None, typer.Option()] = None,
    warmup: Annotated[
        int | None,
        typer.Option(help=server_default("Discarded warm-up runs.", "profile", "warmup")),
    ] = None,
    repeats: Annotated[
        int | None, typer.Option(help=server_default("Timed runs per op.", "profile", "repeats"))
    ] = None,
) -> dict[str, Any]:
    """Measure a latency lookup table for every candidate op of a space on a worker device."""
    spec: dict[str, Any] = {}
    put_given(spec, "space", resolve_space(space))
    dev: dict[str, Any] = {}
    put_given(dev, "device", device)
    put_given(dev, "gpu_type", gpu_type)
    if dev:
        spec["device"] = dev
    for k, v in (
        ("batch_size", batch),
        ("input_size", input_size),
        ("warmup", warmup),
        ("repeats", repeats),
    ):
        put_given(spec, k, v)
    return spec
