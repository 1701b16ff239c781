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
    "densenas_core": {
        "ray",
        "fastapi",
        "sqlalchemy",
        "starlette",
        "httpx",
        "alembic",
        "workers",
        "service",
        "uvicorn",
        "pydantic",
    },
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


def _fresh_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter at the repository root; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
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
    _fresh_python(code)


def _core_dependencies(path: pathlib.Path) -> set[str]:
    """The ``densenas_core`` modules ``path`` imports, lazy (in-function) imports included."""
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            deps.update(
                [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
            )
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("densenas_core."):
            deps.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            deps.update(
                a.name.split(".")[1] for a in node.names if a.name.startswith("densenas_core.")
            )
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


# -- the service's doors into the core and the workers ----------------------------------------

#: service modules that still import densenas_core themselves; each should switch to
#: ``from .core import …`` (service/core.py re-exports what they use: ``CORE_NAMES``) and
#: leave this list. The test fails for an entry that no longer imports the core, so the list
#: only shrinks.
PENDING_CORE_IMPORTERS: set[str] = set()
#: what the service may import from workers: the job payload and the executors
SERVICE_WORKER_MODULES = {"workers.payload", "workers.executors"}
#: known exceptions: module → the other workers modules it imports
SERVICE_WORKER_EXCEPTIONS = {
    "service/settings.py": {"workers.storage"},  # checks/joins the checkpoint storage URI
}


def _absolute_imports(path: pathlib.Path) -> set[str]:
    """Dotted names ``path`` imports, lazy imports included: ``import a.b`` gives a.b, and
    ``from a.b import c`` gives both a.b and a.b.c (c may be a module or a name)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _service_modules() -> dict[str, set[str]]:
    return {
        str(p.relative_to(ROOT)): _absolute_imports(p)
        for p in sorted((ROOT / "service").rglob("*.py"))
    }


def test_only_service_core_imports_densenas_core() -> None:
    importers = {
        m
        for m, names in _service_modules().items()
        if any(n == "densenas_core" or n.startswith("densenas_core.") for n in names)
    }
    assert "service/core.py" in importers
    extra = sorted(importers - {"service/core.py"} - PENDING_CORE_IMPORTERS)
    assert not extra, (
        "import densenas_core through service/core.py (add the name to its "
        f"CORE_NAMES if needed), not directly: {extra}"
    )
    done = sorted(m for m in PENDING_CORE_IMPORTERS - importers if (ROOT / m).is_file())
    assert not done, f"no longer import densenas_core: remove from PENDING_CORE_IMPORTERS: {done}"


def test_service_core_reexports_core_names_lazily() -> None:
    """``from service.core import SpaceError`` works and importing service.core alone does not
    import torch (the door stays lazy)."""
    code = (
        "import importlib, sys\n"
        "import service.core as c\n"
        "assert 'torch' not in sys.modules, 'service.core imported torch'\n"
        "for name, mod in c.CORE_NAMES.items():\n"
        "    assert getattr(c, name) is getattr(importlib.import_module(mod), name), name\n"
    )
    _fresh_python(code)


def test_service_imports_from_workers_only_payload_and_executors() -> None:
    bad = []
    for module, names in _service_modules().items():
        allowed = SERVICE_WORKER_MODULES | SERVICE_WORKER_EXCEPTIONS.get(module, set())
        used = {n for n in names if n.startswith("workers.")}
        # ``from workers.payload import tail`` lists workers.payload and workers.payload.tail
        stray = {n for n in used if not any(n == a or n.startswith(a + ".") for a in allowed)}
        if stray:
            bad.append(f"{module}: {sorted(stray)}")
        if "workers" in names and not used:
            bad.append(f"{module}: the whole workers package")
    assert not bad, "service imports from workers beyond payload/executors:\n" + "\n".join(bad)
    for module, extra in SERVICE_WORKER_EXCEPTIONS.items():  # the exceptions are still needed
        assert _service_modules()[module] & extra, f"{module} no longer needs {sorted(extra)}"
