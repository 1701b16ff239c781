"""Rebuild BENCHMARKS.md from bench/results/*.json (each module renders its own section)."""

from __future__ import annotations

import importlib
from pathlib import Path

from .common import load_results

ROOT = Path(__file__).resolve().parents[1]


def _machine_line(m: dict) -> str:
    return (
        f"{m.get('cpu')} · {m.get('cores')} cores · torch {m.get('torch')} "
        f"({m.get('torch_threads')} threads, {m.get('allocator')} malloc) · "
        f"ray {m.get('ray', '-')} · git {m.get('git', '-')} · {m.get('date')}"
    )


def write_markdown() -> Path:
    results = load_results()
    parts = [
        "# Benchmarks",
        "",
        "Every figure below was produced by the command named in its section on the machine "
        "named there (`python -m bench` reruns all of them; results land in `bench/results/` "
        "as JSON). Ratios are measured side by side in one run; absolute times are context. "
        "Misses are reported as misses.",
        "",
    ]
    for name, res in results.items():
        try:
            mod = importlib.import_module(f"bench.{name}")
            body = mod.markdown(res)
        except Exception as e:  # noqa: BLE001 - keep the report whole even if one renderer breaks
            body = f"(could not render: {e})"
        parts += [
            f"## {res.get('title', name)}",
            "",
            f"Command: `{res.get('command')}` · wall {res.get('wall_s')} s  ",
            f"Machine: {_machine_line(res.get('machine', {}))}",
            "",
            body,
            "",
        ]
    extra = ROOT / "bench" / "EXTRA.md"
    if extra.exists():
        parts += [extra.read_text()]
    out = ROOT / "BENCHMARKS.md"
    out.write_text("\n".join(parts) + "\n")
    return out


def write_section(path: Path, res: dict, body: str) -> Path:
    """``path``: one result's section as BENCHMARKS.md shows it (title, command, machine, body),
    for a benchmark that keeps a Markdown file of its own (its ``write_summary``)."""
    path.write_text(
        f"# {res.get('title', path.stem)}\n\nCommand: `{res.get('command')}` · wall "
        f"{res.get('wall_s')} s  \nMachine: {_machine_line(res.get('machine', {}))}\n\n{body}\n"
    )
    return path
