"""python/jouletrace/_core.pyi held to the compiled module.

Every name in the stub exists in ``jouletrace._core`` (module level, in the
``Sampler`` class and in the ``bench`` submodule), every public name of the
module is in the stub, properties are properties, and where pybind11 writes a
signature into the docstring the parameters agree: the same names in the same
order, the same ones with defaults. (pybind11's ``argN`` names a positional-only
parameter; the stub marks it positional-only.) Types are not compared: pybind11
spells them differently (``typing.SupportsInt``, ``dict``) from the stub.
"""

from __future__ import annotations

import ast
import re
import types
from pathlib import Path

import pytest

import jouletrace
from jouletrace import _core

STUB = Path(jouletrace.__file__).with_name("_core.pyi")


def _stub() -> ast.Module:
    return ast.parse(STUB.read_text())


def _public(obj: object) -> set[str]:
    return {n for n in dir(obj) if not n.startswith("_")}


def _stub_names(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    out: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
    return out


def _split_top(s: str) -> list[str]:
    """Split a parameter list at the commas not inside brackets or quotes."""
    parts, depth, cur, quote = [], 0, [], ""
    for ch in s:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def _bound_params(name: str, obj: object) -> list[tuple[str, bool]] | None:
    """(name, has default) of each parameter from pybind11's docstring signature, or None."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    m = re.match(rf"{re.escape(name)}\((.*)\) ->", doc.split("\n", 1)[0])
    if not m:
        return None
    out = []
    for p in _split_top(m.group(1)):
        pname = p.split(":", 1)[0].strip()
        if pname == "self":
            continue
        out.append((pname, "=" in p.split(":", 1)[-1]))
    return out


def _stub_params(fn: ast.FunctionDef) -> list[tuple[str, bool]]:
    a = fn.args
    posonly, normal = list(a.posonlyargs), list(a.args)
    allpos = posonly + normal
    n_def = len(a.defaults)
    out = []
    for i, arg in enumerate(allpos):
        if arg.arg == "self":
            continue
        has_default = i >= len(allpos) - n_def
        out.append(("<posonly>" if arg in posonly else arg.arg, has_default))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        out.append((arg.arg, d is not None))
    if a.vararg:
        out.append(("*" + a.vararg.arg, False))
    if a.kwarg:
        out.append(("**" + a.kwarg.arg, False))
    return out


def _compatible(bound: list[tuple[str, bool]], stub: list[tuple[str, bool]]) -> bool:
    if len(bound) != len(stub):
        return False
    for (bn, bd), (sn, sd) in zip(bound, stub, strict=True):
        positional_only = re.fullmatch(r"arg\d+", bn) is not None
        if bd != sd:
            return False
        if positional_only != (sn == "<posonly>"):
            return False
        if not positional_only and bn != sn:
            return False
    return True


def _is_property(node: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


def _namespaces() -> list[tuple[str, object, dict[str, ast.stmt]]]:
    """(label, runtime object, stub names) for the module and each stubbed class."""
    top = _stub_names(_stub().body)
    out: list[tuple[str, object, dict[str, ast.stmt]]] = [("_core", _core, top)]
    for name, node in top.items():
        if isinstance(node, ast.ClassDef):
            out.append((f"_core.{name}", getattr(_core, name), _stub_names(node.body)))
    return out


@pytest.mark.parametrize("label,obj,stubbed", _namespaces(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_stub_name_exists_and_every_public_name_is_stubbed(label, obj, stubbed):
    runtime = _public(obj)
    if isinstance(obj, type):  # pybind11 adds nothing public to a class that we do not bind
        runtime -= _public(object)
    missing_at_runtime = sorted(set(stubbed) - runtime)
    missing_in_stub = sorted(runtime - set(stubbed))
    assert not missing_at_runtime, f"{label}: in _core.pyi but not in the module: {missing_at_runtime}"
    assert not missing_in_stub, f"{label}: in the module but not in _core.pyi: {missing_in_stub}"


@pytest.mark.parametrize("label,obj,stubbed", _namespaces(), ids=lambda v: v if isinstance(v, str) else "")
def test_signatures_and_kinds_agree(label, obj, stubbed):
    checked = 0
    for name, node in stubbed.items():
        value = getattr(obj, name)
        raw = obj.__dict__.get(name) if isinstance(obj, type) else value
        if isinstance(node, ast.FunctionDef):
            if _is_property(node):
                assert isinstance(raw, property), f"{label}.{name}: a property in the stub, not in the module"
                continue
            assert callable(value) and not isinstance(raw, property), f"{label}.{name}: not callable"
            bound = _bound_params(name, value)
            if bound is None:
                continue
            stub = _stub_params(node)
            assert _compatible(bound, stub), (
                f"{label}.{name}: the binding's parameters {bound} differ from the stub's {stub}"
            )
            checked += 1
        elif isinstance(node, ast.ClassDef):
            assert isinstance(value, (type, types.ModuleType)), f"{label}.{name}: not a class or namespace"
        else:
            ann = ast.unparse(node.annotation) if isinstance(node, ast.AnnAssign) else ""
            if ann in ("int", "float", "str", "bool"):
                assert isinstance(value, {"int": int, "float": float, "str": str, "bool": bool}[ann]), (
                    f"{label}.{name}: not a {ann}"
                )
    if label == "_core":
        assert checked >= 8  # the docstring signatures were found and compared
