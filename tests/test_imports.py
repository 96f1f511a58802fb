"""The library's import graph: every module imports in a fresh interpreter, no cycle
among library modules, arrows point down the pipeline, and nothing in the library
imports ``pipelines`` (the Ray drivers import the library, never the reverse)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "vcinr_sci"

# Floors, from the bottom: a module may import modules on its own floor or below.
# coding/ (bytes of numbers) sits under model/ because a model artifact carries its coders.
FLOORS = {"base": 0, "data": 1, "coding": 2, "model": 3, "codec": 4, "io": 5, "bench": 6, "cli": 7}
BASE = {"errors", "config", "metrics", "atomic", "threads", "zarr_compat", "trust"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def _floor(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return -1  # the package itself
    return FLOORS["base"] if parts[1] in BASE else FLOORS[parts[1]]


def _imports(path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(library modules imported at module level, all modules named in any import).

    Module level means run when the module is imported: statements of the module body,
    also inside its ``if``/``try`` blocks and class bodies, but not inside functions, which
    defer an import on purpose (compressai's slow import, zarr-3-only APIs) and cannot
    make an import-time cycle. Function-level imports still count for the floors."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    every: set[str] = set()

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` names the submodule when there is one
            return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
        return []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names = targets(child)
            every.update(names)
            if module_level:
                top.update(n for n in names if n in modules)
            inside_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, module_level and not inside_function)

    visit(tree, True)
    return top, every


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    top, every = {}, {}
    for name, path in modules.items():
        top[name], every[name] = _imports(path, modules)
    return top, every


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d) :] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_cycle_among_library_modules():
    """Neither at import time nor through the imports deferred into functions (which
    would be a cycle waiting for one of them to move to the top). The package's
    __init__ (which registers the accessors) is left out: every module implicitly
    imports it, which is no dependency of theirs."""
    top, every = _graph()
    modules = _modules()
    _assert_acyclic({m: {d for d in deps if d != "vcinr_sci"} for m, deps in top.items()})
    _assert_acyclic({m: {d for d in deps if d in modules and d != "vcinr_sci"} for m, deps in every.items()})


def test_arrows_point_down_the_pipeline():
    _, every = _graph()
    modules = _modules()
    upward = [
        f"{m} (floor {_floor(m)}) -> {d} (floor {_floor(d)})"
        for m, deps in every.items()
        if m != "vcinr_sci"
        for d in deps
        if d in modules and d != "vcinr_sci" and _floor(d) > _floor(m)
    ]
    assert not upward, upward


def test_library_never_imports_pipelines():
    _, every = _graph()
    offenders = {m: sorted(d for d in deps if d == "pipelines" or d.startswith("pipelines.")) for m, deps in every.items()}
    assert not {m: d for m, d in offenders.items() if d}


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(_modules())
    script = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'pipelines' or m.startswith('pipelines.'))))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []


def test_package_registers_the_accessors_and_has_a_version():
    script = (
        "import xarray as xr, vcinr_sci\n"
        "assert hasattr(xr.Dataset(), 'vcinr') and hasattr(xr.DataArray([1.0]), 'vcinr')\n"
        "print(vcinr_sci.__version__)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() and run.stdout.strip() != "0+unknown"
