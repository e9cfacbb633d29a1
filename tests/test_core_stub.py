"""python/jouletrace/_core.pyi held to the compiled module.

Every name in the stub exists in ``jouletrace._core`` (module level, in the
``Sampler`` class and in the ``bench`` submodule), every public name of the
module is in the stub, properties are properties, and where pybind11 writes a
signature into the docstring the parameters agree: the same names in the same
order, the same ones with defaults, the same ones keyword-only (after ``*``).
(pybind11's ``argN`` names a positional-only parameter; the stub marks it
positional-only.) A read-only property in the stub is read-only in the module.
Types are not compared: pybind11 spells them differently (``typing.SupportsInt``,
``dict``) from the stub. The bound C++ structs (``SamplerConfig``, ``NvmlOptions``,
``RaplOptions``) are also held to the stub's defaults, and to what a struct
binding promises: keyword construction, readable attributes, a repr that builds
it again.
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


def _bound_params(name: str, obj: object) -> list[tuple[str, bool, bool]] | None:
    """(name, has default, keyword-only) of each parameter from pybind11's docstring signature, or None."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    m = re.match(rf"{re.escape(name)}\((.*)\) ->", doc.split("\n", 1)[0])
    if not m:
        return None
    out = []
    kw_only = False
    for p in _split_top(m.group(1)):
        pname = p.split(":", 1)[0].strip()
        if pname == "*":  # py::kw_only(): the parameters after it are keyword-only
            kw_only = True
            continue
        if pname in ("self", "/"):
            continue
        out.append((pname, "=" in p.split(":", 1)[-1], kw_only))
    return out


def _bound_defaults(name: str, obj: object) -> dict[str, str]:
    """Parameter -> the text of its default in pybind11's docstring signature."""
    doc = (getattr(obj, "__doc__", None) or "").strip()
    m = re.match(rf"{re.escape(name)}\((.*)\) ->", doc.split("\n", 1)[0])
    assert m, f"no signature in the docstring of {name}"
    out = {}
    for p in _split_top(m.group(1)):
        if "=" in p:
            head, default = p.rsplit("=", 1) if p.count("=") == 1 else p.split(" = ", 1)
            out[head.split(":", 1)[0].strip()] = default.strip()
    return out


def _stub_params(fn: ast.FunctionDef) -> list[tuple[str, bool, bool]]:
    a = fn.args
    posonly, normal = list(a.posonlyargs), list(a.args)
    allpos = posonly + normal
    n_def = len(a.defaults)
    out = []
    for i, arg in enumerate(allpos):
        if arg.arg == "self":
            continue
        has_default = i >= len(allpos) - n_def
        out.append(("<posonly>" if arg in posonly else arg.arg, has_default, False))
    for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True):
        out.append((arg.arg, d is not None, True))
    if a.vararg:
        out.append(("*" + a.vararg.arg, False, False))
    if a.kwarg:
        out.append(("**" + a.kwarg.arg, False, True))
    return out


def _compatible(bound: list[tuple[str, bool, bool]], stub: list[tuple[str, bool, bool]]) -> bool:
    if len(bound) != len(stub):
        return False
    for (bn, bd, bk), (sn, sd, sk) in zip(bound, stub, strict=True):
        positional_only = re.fullmatch(r"arg\d+", bn) is not None
        if bd != sd or bk != sk:
            return False
        if positional_only != (sn == "<posonly>"):
            return False
        if not positional_only and bn != sn:
            return False
    return True


def _is_property(node: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in node.decorator_list)


def _has_setter(body: list[ast.stmt], name: str) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == name and any(
        isinstance(d, ast.Attribute) and d.attr == "setter" for d in n.decorator_list) for n in body)


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
    public = {n for n in stubbed if not n.startswith("_")}
    # a special method in the stub (__init__, __eq__) is one the binding defines on the class
    own = set(vars(obj)) if isinstance(obj, type) else set()
    missing_at_runtime = sorted(public - runtime) + sorted(set(stubbed) - public - own)
    missing_in_stub = sorted(runtime - public)
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
                if raw.fset is not None:
                    body = next(n for n in _stub().body if isinstance(n, ast.ClassDef)
                                and n.name == label.split(".")[-1]).body
                    assert _has_setter(body, name), f"{label}.{name}: writable in the module, read-only in the stub"
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
    if label in (f"_core.{c}" for c in STRUCTS):
        assert "__init__" in stubbed and checked >= 1, f"{label}: its constructor was not compared"


#: The C++ structs bound as classes: one object crosses the binding, not a list of arguments.
STRUCTS = ("SamplerConfig", "NvmlOptions", "RaplOptions")


def _stub_init_defaults(cls: str) -> dict[str, object]:
    node = next(n for n in _stub().body if isinstance(n, ast.ClassDef) and n.name == cls)
    init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    out: dict[str, object] = {}
    for arg, d in zip(init.args.kwonlyargs, init.args.kw_defaults, strict=True):
        if d is not None and not (isinstance(d, ast.Constant) and d.value is Ellipsis):
            out[arg.arg] = ast.literal_eval(d)
    return out


@pytest.mark.parametrize("cls", STRUCTS)
def test_bound_structs_construct_by_keyword_read_back_and_repr(cls):
    t = getattr(_core, cls)
    default = t()
    stub_defaults = _stub_init_defaults(cls)
    params = _bound_params("__init__", t.__init__)
    assert params and all(kw for _, _, kw in params), f"{cls}: construction is by keyword only"
    assert {p for p, _, _ in params} >= set(stub_defaults)
    for name, value in stub_defaults.items():  # the stub's defaults are the C++ struct's
        assert getattr(default, name) == value, f"{cls}.{name}: {getattr(default, name)!r} != stub {value!r}"
    with pytest.raises(TypeError):
        t(1)  # no positional construction
    with pytest.raises(TypeError):
        t(no_such_field=1)
    # the repr builds an equal object (its fields, by keyword)
    rebuilt = eval(repr(default), {cls: t})  # noqa: S307  (our own repr)
    for name, _, _ in params:
        assert getattr(rebuilt, name) == getattr(default, name)
    with pytest.raises(AttributeError):
        setattr(default, params[0][0], getattr(default, params[0][0]))  # read-only


def test_one_config_object_crosses_the_binding(make_sim):
    c = _core.SamplerConfig(rate_hz=250.0, ring_capacity=512, max_records=4096)
    assert c == _core.SamplerConfig(rate_hz=250.0, ring_capacity=512, max_records=4096) != _core.SamplerConfig()
    assert c.to_dict() == {"rate_hz": 250.0, "ring_capacity": 512, "spin_ns": -1, "drain_period_ns": 0,
                           "max_records": 4096, "wake_slice": True}
    assert _core.SamplerConfig(wake_slice=False) != _core.SamplerConfig()
    sim = make_sim()
    s = _core.Sampler.nvml(_core.NvmlOptions(library=str(sim.library_path), source_name="sim", timestamps=False), c)
    got = s.config  # the settings in force: what was asked, the auto ones resolved
    assert isinstance(got, _core.SamplerConfig)
    assert (got.rate_hz, got.ring_capacity, got.max_records) == (250.0, 512, 4096)
    assert got.spin_ns >= 0 and got.drain_period_ns > 0
    assert [(i.name, i.cumulative) for i in s.channel_info] == s.channels
    assert s.source_name == "sim"
    # defaults of the factories are default objects
    params = _bound_params("nvml", _core.Sampler.nvml)
    assert params == [("options", True, False), ("config", True, False)]
    assert _bound_defaults("nvml", _core.Sampler.nvml)["config"] == repr(_core.SamplerConfig())
