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
        "jouletrace._optional")
LAYERS = ["sampling", "energy", "kernels", "analysis"]
TOP = len(LAYERS) + 1

# Known exceptions, each a dependency still to be moved down a layer.
ALLOWED_UPWARD = {
    # Sampler.recording() wraps the columns in a Recording (energy): Recording's column part
    # belongs to sampling, its energy methods to energy.
    ("jouletrace.sampling.sampler", "jouletrace.energy.recording"),
    # Sampler(stream_to=...) starts the streaming writer (energy.stream) when it starts
    # (imported in the function that does so).
    ("jouletrace.sampling.sampler", "jouletrace.energy.stream"),
}

# Old module path -> where it lives now. Each old path is a module that only re-exports.
SHIMS = {
    "jouletrace.sources": "jouletrace.sampling.sources",
    "jouletrace.rapl": "jouletrace.sampling.rapl",
    "jouletrace.sim": "jouletrace.sampling.sim",
    "jouletrace.sensors": "jouletrace.sampling.sensors",
    "jouletrace.sensor_model": "jouletrace.sampling.sensor_model",
    "jouletrace.calibrate": "jouletrace.sampling.calibrate",
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
            if target == "jouletrace":  # `from jouletrace import __version__`
                names = {n for t, ns in _imports(module, module_level=False) if t == "jouletrace"
                         for n in ns}
                if names <= {"__version__"}:
                    continue
            allowed = any(m == module and (t == target or t.startswith(target + "."))
                          for m, t in ALLOWED_UPWARD)  # the exception's target, or its package
            if _layer(target) > _layer(module) and not allowed:
                bad.append(f"{module} -> {target}")
    assert bad == []


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
