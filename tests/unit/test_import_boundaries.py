"""The three packages import one way only: core ← workers ← service (see docs/DESIGN.md)."""
from __future__ import annotations

import ast
import graphlib
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "densenas_core": {"ray", "fastapi", "sqlalchemy", "starlette", "httpx", "alembic",
                      "workers", "service", "uvicorn", "pydantic"},
    "workers": {"sqlalchemy", "fastapi", "starlette", "alembic", "service", "uvicorn"},
}


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_never_imports_forbidden_modules(package: str) -> None:
    """Static check, including lazy imports inside functions (import-linter sees only some)."""
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        hit = _imports(path) & FORBIDDEN[package]
        if hit:
            bad.append(f"{path.relative_to(ROOT)}: {sorted(hit)}")
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_import_linter_contracts_hold() -> None:
    lint = pathlib.Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_core_imports_without_heavy_dependencies() -> None:
    """Importing the whole core in a fresh interpreter must not pull ray/fastapi/sqlalchemy."""
    code = (
        "import sys, pkgutil, importlib, densenas_core\n"
        "for m in pkgutil.iter_modules(densenas_core.__path__):\n"
        "    importlib.import_module('densenas_core.' + m.name)\n"
        "bad = [m for m in ('ray', 'fastapi', 'sqlalchemy', 'starlette') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _core_dependencies(path: pathlib.Path) -> set[str]:
    """The ``densenas_core`` modules ``path`` imports, lazy (in-function) imports included."""
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            deps.update([node.module.split(".")[0]] if node.module else
                        [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("densenas_core."):
            deps.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            deps.update(a.name.split(".")[1] for a in node.names
                        if a.name.startswith("densenas_core."))
    return deps


def test_core_modules_import_one_way() -> None:
    """No import cycle among the core's modules, not even through a lazy import (arch.py and
    flops.py used to import each other, one of them inside a function)."""
    graph = {p.stem: _core_dependencies(p) for p in (ROOT / "densenas_core").glob("*.py")}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        pytest.fail(f"import cycle in densenas_core: {' → '.join(e.args[1])}")
    assert order.index("flops") < order.index("summary") < order.index("arch")
