"""What searches and profiles produced, and what can be searched: ``derive``, ``arch ...``,
``space ...`` (local, no server) and the latency ``tables``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .common import (
    CliError,
    JsonOpt,
    app,
    arch_app,
    cli_errors,
    client_from,
    console,
    err_console,
    print_json,
    print_json_or,
    space_app,
)
from .format import (
    architectures_table,
    fmt_latency,
    fmt_millions,
    latency_tables_table,
    new_table,
    print_arch_doc,
    print_architecture,
    print_listing,
)
from .submit import put_given


def parse_count(text: str) -> int:
    """``300M``, ``1.5G``, ``250k`` or a plain number; a bare number under 100 000 means
    millions (``--max-mult-adds 300`` is 300 M: no real network has fewer mult-adds)."""
    t = text.strip().replace("_", "").replace(",", "")
    scale = {"k": 1e3, "m": 1e6, "g": 1e9, "b": 1e9}.get(t[-1:].lower())
    try:
        value = float(t[:-1] if scale else t)
    except ValueError:
        raise CliError(f"not a count: {text!r} (use e.g. 300M, 1.5G or 300000000)") from None
    if scale is None:
        scale = 1e6 if value < 1e5 else 1.0
    if value <= 0:
        raise CliError(f"not a positive count: {text!r}")
    return int(round(value * scale))


@app.command()
@cli_errors
def derive(
    ctx: typer.Context,
    job_id: int,
    max_mult_adds: Annotated[
        list[str] | None,
        typer.Option(
            help="FLOPs budget: 300M, 1.5G, or a number (under 100000 means millions). "
            "Repeat it for a family: one architecture per budget, one row each."
        ),
    ] = None,
    max_latency_ms: Annotated[
        list[float] | None,
        typer.Option(help="Latency budget in ms (needs --latency-table); repeatable, as above."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(help="Budget in the metric's unit: ms with --latency-table, else mult-adds."),
    ] = None,
    latency_table: Annotated[
        int | None, typer.Option(help="Latency table that predicts the latency.")
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(help="Most probable block paths considered (k-best Viterbi).")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="Name of the new architecture (a family's: their names' prefix)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Derive another architecture from a finished search under a budget, or a family of them:
    `--max-mult-adds 12M --max-mult-adds 20M` derives one per budget in one request (a bound
    given once applies to every budget; two repeated options pair up in order)."""
    madds = [parse_count(v) for v in max_mult_adds or ()]
    latency = list(max_latency_ms or ())
    common: dict[str, Any] = {}
    if target is not None:
        if latency_table is not None:
            try:
                common["max_latency_ms"] = float(target)
            except ValueError:
                raise CliError(f"--target: not a latency in ms: {target!r}") from None
        else:
            common["max_mult_adds"] = parse_count(target)
    put_given(common, "latency_table_id", latency_table)
    put_given(common, "top_k", top_k)
    if len(madds) <= 1 and len(latency) <= 1:
        cost = dict(common)
        put_given(cost, "max_mult_adds", madds[0] if madds else None)
        put_given(cost, "max_latency_ms", latency[0] if latency else None)
        with client_from(ctx) as c:
            arch = c.derive(job_id, cost, name=name)
        print_json_or(arch, as_json, print_architecture)
        return
    budgets = family_budgets(common, madds, latency)
    with client_from(ctx) as c:
        family = c.derive_family(job_id, budgets, name=name)
    print_json_or(family, as_json, lambda archs: console.print(family_table(budgets, archs)))


def family_budgets(
    common: dict[str, Any], madds: list[int], latency: list[float]
) -> list[dict[str, Any]]:
    """One cost per budget: a bound given once goes into every cost, repeated ones pair up."""
    n = max(len(madds), len(latency))
    for option, values in (("--max-mult-adds", madds), ("--max-latency-ms", latency)):
        if len(values) not in (0, 1, n):
            raise CliError(
                f"{option} given {len(values)} times: give it once (a bound for every budget) "
                f"or {n} times (one per budget)"
            )

    def nth(values: list[Any], i: int) -> Any:
        return values[i if len(values) > 1 else 0] if values else None

    budgets = []
    for i in range(n):
        cost = dict(common)
        put_given(cost, "max_mult_adds", nth(madds, i))
        put_given(cost, "max_latency_ms", nth(latency, i))
        budgets.append(cost)
    return budgets


def family_table(budgets: list[dict[str, Any]], archs: list[dict[str, Any]]) -> Any:
    """One row per budget: the budget, the architecture's id, mult-adds, predicted latency (on
    the budget's table) and its ops path (block: align op + layer ops)."""
    table = new_table(
        ("budget", "arch", "mult-adds", "latency", "ops path"),
        right=("arch", "mult-adds", "latency"),
    )
    for cost, arch in zip(budgets, archs):
        bound = " ".join(
            part
            for part in (
                fmt_millions(cost["max_mult_adds"]) if "max_mult_adds" in cost else "",
                f"{cost['max_latency_ms']:g} ms" if "max_latency_ms" in cost else "",
            )
            if part
        )
        ms = (arch.get("predicted_latency") or {}).get(str(cost.get("latency_table_id")))
        table.add_row(
            escape(bound),
            str(arch.get("id", "-")),
            fmt_millions(arch.get("mult_adds")),
            fmt_latency(ms) if ms is not None else "-",
            escape(ops_path(arch.get("doc") or {})),
        )
    return table


def ops_path(doc: dict[str, Any]) -> str:
    """``1:mb_k3_e6 → 3:mb_k5_e6+mb_k7_e3 → …``: each routing block's index, its align op and
    its layers' ops, stem to tail."""
    steps = []
    for b in doc.get("blocks") or []:
        if b.get("from_block") is None:
            continue  # the fixed stem op
        ops = [str(b.get("align_op")), *(str(op) for op in b.get("layers") or [])]
        steps.append(f"{b.get('to_block')}:{'+'.join(ops)}")
    return " → ".join(steps)


# -- architectures ---------------------------------------------------------------------------


@arch_app.command("list")
@cli_errors
def arch_list(
    ctx: typer.Context,
    space: Annotated[str | None, typer.Option()] = None,
    max_mult_adds: Annotated[float | None, typer.Option()] = None,
    max_latency_ms: Annotated[float | None, typer.Option()] = None,
    latency_table: Annotated[int | None, typer.Option()] = None,
    min_accuracy: Annotated[float | None, typer.Option()] = None,
    pareto: Annotated[
        str | None, typer.Option(help="e.g. latency,accuracy: only the Pareto front.")
    ] = None,
    limit: Annotated[int | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """List derived architectures."""
    with client_from(ctx) as c:
        page = c.list_architectures(
            space=space,
            max_mult_adds=max_mult_adds,
            max_latency_ms=max_latency_ms,
            latency_table_id=latency_table,
            min_accuracy=min_accuracy,
            pareto=pareto,
            limit=limit,
        )
    print_listing(page, as_json, architectures_table, "no architectures")


@arch_app.command("show")
@cli_errors
def arch_show(ctx: typer.Context, arch_id: int, as_json: JsonOpt = False) -> None:
    """Block table, mult-adds, params, accuracy and latencies of one architecture."""
    with client_from(ctx) as c:
        arch = c.get_architecture(arch_id)
    print_json_or(arch, as_json, print_architecture)


@arch_app.command("export")
@cli_errors
def arch_export(
    ctx: typer.Context,
    arch_id: int,
    format: Annotated[str, typer.Option("--format", "-f", help="json | onnx")] = "json",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write (default arch-<id>.<format>)."),
    ] = None,
) -> None:
    """Download an architecture as its JSON document or an ONNX model."""
    if format not in ("json", "onnx"):
        raise CliError("--format: expected json or onnx")
    out = output or Path(f"arch-{arch_id}.{format}")
    with client_from(ctx) as c:
        data = c.download_architecture(arch_id, format)
    out.write_bytes(data)
    err_console.print(f"wrote {out} ({len(data)} bytes)")


@arch_app.command("flops")
@cli_errors
def arch_flops(
    arch: Annotated[
        str,
        typer.Argument(help="Preset (densenas-c, densenas-r1..r3) or an architecture JSON file."),
    ],
    input: Annotated[
        int | None, typer.Option("--input", help="Input resolution (default the architecture's).")
    ] = None,
    classes: Annotated[
        int | None,
        typer.Option("--classes", help="Classifier outputs (default the architecture's)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Mult-adds and parameters of an architecture, computed locally (no server)."""
    from ..core import arch_summary, get_arch

    a = get_arch(arch)
    summary = arch_summary(a, input_size=input, num_classes=classes)
    if as_json:
        print_json(
            {
                "name": summary.get("name") or arch,
                "input_size": summary["input_size"],
                "num_classes": summary["num_classes"],
                "mult_adds": summary["mult_adds"],
                "mult_adds_m": round(summary["mult_adds"] / 1e6, 3),
                "params": summary["params"],
                "params_m": round(summary["params"] / 1e6, 3),
                "depth": summary.get("depth"),
                "blocks": summary.get("blocks", []),
            }
        )
        return
    print_arch_doc(
        a.to_dict(),
        summary,
        title=f"{summary.get('name') or arch} at {summary['input_size']}px, "
        f"{summary['num_classes']} classes",
    )


# -- spaces ----------------------------------------------------------------------------------


@space_app.command("show")
@cli_errors
def space_show(
    name: Annotated[str, typer.Argument(help="Preset name or a JSON/YAML file.")],
    input: Annotated[
        int | None, typer.Option("--input", help="Input resolution for the size column.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Summary counts and block table of a search space (local, no server)."""
    from ..core import get_space, load_space_file

    p = Path(name)
    space = (
        load_space_file(p)
        if p.suffix.lower() in (".json", ".yaml", ".yml") or p.is_file()
        else get_space(name)
    )
    summary = space.summary()
    blocks = space.block_table(input)
    if as_json:
        print_json(
            {
                "name": space.name,
                "family": space.family,
                "input_size": input or space.input_size,
                "summary": summary,
                "align_ops": list(space.align_ops),
                "layer_ops": list(space.layer_ops),
                "blocks": [dict(b, inputs=[list(x) for x in b["inputs"]]) for b in blocks],
            }
        )
        return
    console.print(
        f"[bold]{escape(space.name)}[/] ({space.family}, {input or space.input_size}px input)"
    )
    console.print(
        f"{summary['routing_blocks']} routing blocks, {summary['paths']} paths, "
        f"{summary['alignment_branches']} alignment branches × {summary['alignment_ops']} ops, "
        f"{summary['basic_layers']} basic layers × {summary['layer_ops']} ops, "
        f"{summary['block_paths']:,} block paths"
    )
    console.print(f"alignment ops: {', '.join(space.align_ops)}")
    console.print(f"layer ops: {', '.join(space.layer_ops)}")
    table = new_table(
        ("block", "kind", "ch", "size", "stage", "layers", "inputs (block, stride)"),
        right=("block", "ch", "size", "stage", "layers"),
    )
    for b in blocks:
        inputs = " ".join(f"({s},{st})" for s, st in b["inputs"]) or "–"
        layers = "–" if b["kind"] != "routing" else str(b["basic_layers"])
        table.add_row(
            str(b["block"]),
            b["kind"],
            str(b["channels"]),
            str(b["size"]),
            str(b["stage"]),
            layers,
            inputs,
        )
    console.print(table)


@space_app.command("list")
@cli_errors
def space_list(as_json: JsonOpt = False) -> None:
    """The preset search spaces."""
    from ..core import SPACE_NAMES, get_space

    rows: list[dict[str, Any]] = [
        {
            "name": n,
            "family": get_space(n).family,
            "input_size": get_space(n).input_size,
            **get_space(n).summary(),
        }
        for n in SPACE_NAMES
    ]
    if as_json:
        print_json(rows)
        return
    table = new_table(("name", "family", "input", "blocks", "paths", "layers", "block paths"))
    for r in rows:
        table.add_row(
            r["name"],
            r["family"],
            str(r["input_size"]),
            str(r["routing_blocks"]),
            str(r["paths"]),
            str(r["basic_layers"]),
            f"{r['block_paths']:,}",
        )
    console.print(table)


# -- latency tables --------------------------------------------------------------------------


@app.command()
@cli_errors
def tables(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Latency lookup tables measured by profile jobs."""
    with client_from(ctx) as c:
        page = c.list_latency_tables()
    print_listing(
        page,
        as_json,
        latency_tables_table,
        "no latency tables (measure one: densenas submit profile --space ...)",
    )
