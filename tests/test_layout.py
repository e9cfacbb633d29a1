"""The package's layout (ARCHITECTURE.md, "Who owns what"): no import cycles, each layer imports
only the layers below it, and the old module paths re-export the objects of their new homes."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import jouletrace

PACKAGE = Path(jouletrace.__file__).resolve().parent

# The layers, bottom up. A module in a layer may import its own layer and those below it.
# Everything not listed (the root package, cli, integrations, testing, the kept-for-imports
# modules, `attribute`, `torch`, `distributed`, `_default`) is on top and may import anything.
BASE = ("jouletrace._core", "jouletrace.errors", "jouletrace._input", "jouletrace._safe_output", "jouletrace._json",
        "jouletrace._optional", "jouletrace._version", "jouletrace._table")
LAYERS = ["sampling", "energy", "kernels", "analysis"]
TOP = len(LAYERS) + 1

# Known exceptions, each a dependency still to be moved down a layer (none left).
ALLOWED_UPWARD: set[tuple[str, str]] = set()

# Optional third-party dependencies (the extras): the only modules a function may import.
OPTIONAL = {"torch", "pandas", "matplotlib", "pyarrow", "prometheus_client", "pynvml", "transformers",
            "accelerate", "cupy", "jsonschema", "lightning", "pytorch_lightning"}
# Package modules a function may still import, each loaded on first use for a stated reason.
LAZY = {
    # The simulated GPU's Python side: `import jouletrace` does not load it (import time; see
    # test_import_jouletrace_does_not_load_the_kernel_export_or_simulation_code).
    "jouletrace.sampling.sim": "the simulated GPU loads when source 'sim' is asked for",
    # Imports Lightning when it is loaded; `jouletrace.torch` offers it only when asked for.
    "jouletrace.integrations.lightning": "imports the optional lightning at its top",
}

# Old module path -> where it lives now. Each old path is a module that only re-exports.
SHIMS = {
    "jouletrace.sources": "jouletrace.sampling.sources",
    "jouletrace.rapl": "jouletrace.sampling.rapl",
    "jouletrace.sim": "jouletrace.sampling.sim",
    "jouletrace.sensors": "jouletrace.sampling.sensors",
    "jouletrace.sensor_model": "jouletrace.sampling.sensor_model",
    "jouletrace.calibrate": "jouletrace.energy.calibrate",
    "jouletrace.recording": "jouletrace.energy.recording",
    "jouletrace.integrate": "jouletrace.energy.windows",
    "jouletrace.measurement": "jouletrace.energy.measurement",
    "jouletrace.monitor": "jouletrace.energy.monitor",
    "jouletrace.io": "jouletrace.energy.storage",
    "jouletrace.repeat": "jouletrace.energy.repeat",
    "jouletrace.export": "jouletrace.kernels.export",
    "jouletrace.markers": "jouletrace.kernels.markers",
    "jouletrace.traces": "jouletrace.kernels.traces",
    "jouletrace.traces.kineto": "jouletrace.kernels.traces.kineto",
    "jouletrace.traces.nsys": "jouletrace.kernels.traces.nsys",
    "jouletrace.traces.plain": "jouletrace.kernels.traces.plain",
    "jouletrace.traces.table": "jouletrace.kernels.traces.table",
    "jouletrace.traces.synth": "jouletrace.testing.traces",
}


def _modules() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["jouletrace", *path.relative_to(PACKAGE).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()
NATIVE = {"jouletrace._core"}  # the extension module (a .so, stubbed by _core.pyi)


def _layer(module: str) -> int:
    if module in BASE:
        return 0
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1]) + 1
    return TOP


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, *, module_level: bool) -> list[tuple[str, list[str]]]:
    """(imported module, names) for each import in `module`: only those run when the module is
    imported (not in functions, not under TYPE_CHECKING), or every one."""
    path, is_pkg = MODULES[module]
    package = module if is_pkg else module.rpartition(".")[0]
    found: list[tuple[str, list[str]]] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend((a.name, []) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                found.append((target, [a.name for a in node.names]))
            elif module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif module_level and isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit([n for n in getattr(node, field, []) if isinstance(n, (ast.stmt, ast.excepthandler))])  # type: ignore[misc]

    visit(ast.parse(path.read_text()).body)
    return found


def _targets(target: str, names: list[str]) -> set[str]:
    """The jouletrace modules an import statement loads (`from pkg import submodule` included)."""
    if not target.startswith("jouletrace"):
        return set()
    subs = {f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES.keys() | NATIVE}
    return subs if subs and len(subs) == len(names) else subs | {target}


def _graph(*, module_level: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        edges: set[str] = set()
        for target, names in _imports(module, module_level=module_level):
            for t in _targets(target, names):
                edges.add(t)
                # importing a.b.c first runs the packages a.b (but the importer's own packages are
                # already being imported, and the root package is the facade over everything)
                parts = t.split(".")
                for k in range(2, len(parts)):
                    parent = ".".join(parts[:k])
                    if not (module == parent or module.startswith(parent + ".")):
                        edges.add(parent)
        edges.discard(module)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_cycles_among_module_level_imports():
    graph = _graph(module_level=True)
    assert len(graph) > 50
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lower_layers_do_not_import_higher_ones():
    bad = []
    for module, edges in _graph(module_level=False).items():
        for target in edges:
            allowed = any(m == module and (t == target or t.startswith(target + "."))
                          for m, t in ALLOWED_UPWARD)  # the exception's target, or its package
            if _layer(target) > _layer(module) and not allowed:
                bad.append(f"{module} -> {target}")
    assert bad == []


def _function_level_imports(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, imported module) of each import statement inside a function of the module at ``path``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if in_function and isinstance(child, ast.Import):
                found.extend((child.lineno, a.name) for a in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                subs = [f"{target}.{a.name}" for a in child.names if f"{target}.{a.name}" in MODULES]
                found.extend((child.lineno, t) for t in (subs or [target]))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


def test_no_function_level_imports_but_optional_dependencies():
    bad = []
    for module, (path, is_pkg) in sorted(MODULES.items()):
        package = module if is_pkg else module.rpartition(".")[0]
        bad += [f"{module}:{line} imports {target}" for line, target in _function_level_imports(path, package)
                if target.split(".")[0] not in OPTIONAL and target not in LAZY]
    assert bad == [], "move these imports to the top of their modules (or see OPTIONAL, LAZY)"


def test_the_function_level_import_check_finds_one(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("import os\n\ndef f():\n    import json\n    from . import errors\n"
                    "    from .energy import recording\n\nclass C:\n    def g(self):\n        import torch\n")
    assert _function_level_imports(path, "jouletrace") == [
        (4, "json"), (5, "jouletrace.errors"), (6, "jouletrace.energy.recording"), (10, "torch")]


def test_the_allowed_exceptions_are_still_needed():
    graph = _graph(module_level=False)
    for module, target in ALLOWED_UPWARD:
        assert target in graph[module], f"{module} no longer imports {target}: drop the exception"


def test_code_in_the_package_imports_from_the_new_homes():
    shims = set(SHIMS)
    bad = [f"{m} -> {t}" for m, edges in _graph(module_level=False).items()
           if m != "jouletrace" and m not in shims for t in edges & shims]
    assert bad == []


@pytest.mark.parametrize("old", sorted(SHIMS))
def test_old_module_paths_re_export_the_same_objects(old):
    shim = importlib.import_module(old)
    new = importlib.import_module(SHIMS[old])
    assert shim is not new and shim.__doc__ and SHIMS[old] in shim.__doc__
    assert set(new.__all__) <= set(shim.__all__)
    for name in new.__all__:
        assert getattr(shim, name) is getattr(new, name), f"{old}.{name}"
    # a shim holds nothing of its own: only what it re-exports
    own = {n for n in vars(shim) if not n.startswith("_") and n != "annotations"}
    assert own <= set(shim.__all__), own - set(shim.__all__)


def test_a_shim_re_exports_what_moved_out_of_its_module():
    from jouletrace import integrate, rapl
    from jouletrace.energy import windows
    from jouletrace.testing.rapl import FakeRapl

    assert integrate.counter_energy is windows.counter_energy
    assert rapl.FakeRapl is FakeRapl


def test_importing_the_old_module_paths_keeps_the_functions_of_those_names():
    # `jouletrace.sources` and `jouletrace.calibrate` are functions and also old module paths
    code = ("import jouletrace, jouletrace.sources, jouletrace.calibrate, types; "
            "assert not isinstance(jouletrace.sources, types.ModuleType); "
            "assert not isinstance(jouletrace.calibrate, types.ModuleType); "
            "from jouletrace.sources import SourceInfo; print(jouletrace.sources.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "jouletrace.sampling.sources"


def test_import_jouletrace_does_not_load_the_kernel_export_or_simulation_code():
    code = "import sys, jouletrace; print(sorted(m for m in sys.modules if m.startswith('jouletrace.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(eval(out.stdout))
    for lazy in ("jouletrace.kernels.attribution", "jouletrace.kernels.export", "jouletrace.sampling.sim",
                 "jouletrace.kernels.traces", "jouletrace.analysis", "jouletrace.testing", "jouletrace.cli"):
        assert lazy not in loaded, lazy
