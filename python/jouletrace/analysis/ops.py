"""The CPU op and ``record_function`` scope of each kernel of a PyTorch-profiler trace.

:func:`jouletrace.kernels.traces.load_kineto` keeps kernels and annotation ranges; the
CPU side is read here, from the same file through the same guarded reader
(input budget, exact decimal timestamps). Kineto links a kernel to the CPU op
that launched it by the kernel's ``External id`` (``args["External id"]``,
older traces ``"external id"``), which is that op's own ``External id``. From
the op, its enclosing scopes are the ``user_annotation`` events
(``record_function``, ``nn.Module`` scopes, ``ProfilerStep#N``) on the same
process and thread that contain the op's start.

* ``by="op"``: the launching op's name (``aten::mm``, ``aten::_flash_attention``);
  ``level="outermost"`` takes the outermost CPU op containing it instead
  (``aten::linear`` rather than ``aten::addmm``).
* ``by="scope"``: the innermost (or outermost) enclosing annotation, among those
  whose names match ``pattern``.

Kernels with no op (no external id, or an id the CPU side does not hold) are
grouped as ``"(no op)"``; ops outside every matching scope as ``"(no scope)"``.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from ..kernels.traces.kineto import _read_json, us_to_ns

__all__ = ["KinetoOps", "read_ops", "group_by_op", "NO_OP", "NO_SCOPE"]

NO_OP = "(no op)"
NO_SCOPE = "(no scope)"
_OP_CATS = frozenset({"cpu_op", "Operator", "operator"})
_SCOPE_CATS = frozenset({"user_annotation"})
_NUMBERED = re.compile(r"(#|\s)\d+$")


def _merge_numbered(name: str) -> str:
    """``layer 3`` / ``block#12`` -> ``layer N`` / ``block#N``: numbered scopes merged into one group."""
    return _NUMBERED.sub(lambda m: f"{m.group(1)}N", name)


@dataclass
class KinetoOps:
    """CPU-side events: ``kind`` 0 op / 1 scope, ``thread`` (an id per (pid, tid)),
    ``start_ns``/``end_ns`` (the trace's own time base, consistent within the file),
    ``name`` (object array), ``external_id``."""

    kind: np.ndarray
    thread: np.ndarray
    start_ns: np.ndarray
    end_ns: np.ndarray
    name: np.ndarray
    external_id: np.ndarray


def read_ops(path: str, max_bytes: int | None = None) -> KinetoOps:
    """The CPU ops and ``user_annotation`` scopes of a PyTorch-profiler trace."""
    doc = _read_json(str(path), max_bytes)
    events = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        raise InvalidArgumentError(f"{path}: no traceEvents list: not a PyTorch-profiler trace")
    kind, thread, st, en, name, ext = [], [], [], [], [], []
    threads: dict[tuple[str, str], int] = {}
    for ev in events:
        if type(ev) is not dict or ev.get("ph") != "X":
            continue
        cat = ev.get("cat")
        if cat in _OP_CATS:
            k = 0
        elif cat in _SCOPE_CATS:
            k = 1
        else:
            continue
        raw_args = ev.get("args")
        args: dict[str, object] = raw_args if type(raw_args) is dict else {}
        x = args.get("External id", args.get("external id"))
        try:
            t0 = us_to_ns(ev["ts"])
            t1 = t0 + us_to_ns(ev.get("dur", 0))
        except (KeyError, TypeError, ValueError, ArithmeticError):
            continue
        if not (-(2**62) < t0 < 2**62 and -(2**62) < t1 < 2**62):
            continue
        key = (str(ev.get("pid")), str(ev.get("tid")))
        thread.append(threads.setdefault(key, len(threads)))
        kind.append(k)
        st.append(t0)
        en.append(t1)
        name.append(str(ev.get("name", "")))
        ext.append(x if type(x) is int and -(2**62) < x < 2**62 else -1)
    names = np.empty(len(name), dtype=object)
    names[:] = name
    return KinetoOps(np.array(kind, np.int8), np.array(thread, np.int64), np.array(st, np.int64),
                     np.array(en, np.int64), names, np.array(ext, np.int64))


def _enclosing(ops: KinetoOps, q_thread: np.ndarray, q_t: np.ndarray, cand: np.ndarray,
               innermost: bool) -> np.ndarray:
    """For each query (thread, time): the index into ``ops`` of the innermost/outermost
    candidate event on that thread containing the time, or -1."""
    out = np.full(q_t.size, -1, dtype=np.int64)
    for th in np.unique(q_thread):
        qsel = np.flatnonzero(q_thread == th)
        csel = cand[ops.thread[cand] == th]
        if csel.size == 0:
            continue
        order = np.argsort(q_t[qsel], kind="stable")
        pts = q_t[qsel][order]
        lens = ops.end_ns[csel] - ops.start_ns[csel]
        seq = np.argsort(lens, kind="stable")
        if innermost:
            seq = seq[::-1]
        lo = np.searchsorted(pts, ops.start_ns[csel], side="left")
        hi = np.searchsorted(pts, ops.end_ns[csel], side="right")
        res = np.full(pts.size, -1, dtype=np.int64)
        for i in seq:
            if hi[i] > lo[i]:
                res[lo[i]:hi[i]] = csel[i]
        out[qsel[order]] = res
    return out


def group_by_op(kernels: Any, by: str, *, ops: KinetoOps | None = None, pattern: str | None = None,
                innermost: bool = True, merge_numbered: bool = True) -> tuple[list[str], np.ndarray]:
    """Group names and each kernel's group id, by launching op or enclosing scope."""
    if ops is None:
        if kernels.format != "kineto-json" or not kernels.source:
            raise InvalidArgumentError(
                f"grouping by {by} needs a PyTorch-profiler trace (its CPU ops and External ids); this "
                f"trace is {kernels.format}: use by='range' for NVTX ranges, or by='category'")
        ops = read_ops(kernels.source)
    ext = np.asarray(kernels.external_id, dtype=np.int64)
    is_op = np.flatnonzero(ops.kind == 0)
    order = np.argsort(ops.external_id[is_op], kind="stable")
    keys = ops.external_id[is_op][order]
    pos = np.searchsorted(keys, ext)
    pos_c = np.minimum(pos, max(keys.size - 1, 0))
    found = (keys.size > 0) & (ext >= 0)
    found = found & (keys[pos_c] == ext) if keys.size else np.zeros(ext.size, bool)
    op_idx = np.where(found, is_op[order][pos_c] if keys.size else -1, -1)
    if by == "op" and not innermost:
        has = op_idx >= 0
        outer = _enclosing(ops, ops.thread[op_idx[has]], ops.start_ns[op_idx[has]], is_op, innermost=False)
        op_idx = op_idx.copy()
        op_idx[np.flatnonzero(has)[outer >= 0]] = outer[outer >= 0]
    if by == "op":
        labels = np.where(op_idx >= 0, ops.name[np.maximum(op_idx, 0)], NO_OP)
    else:
        scopes = np.flatnonzero(ops.kind == 1)
        if pattern is not None:
            ok = np.array([fnmatch.fnmatchcase(str(n), pattern) for n in ops.name[scopes]], dtype=bool)
            scopes = scopes[ok] if scopes.size else scopes
        has = op_idx >= 0
        sc = np.full(ext.size, -1, dtype=np.int64)
        if has.any() and scopes.size:
            sc[has] = _enclosing(ops, ops.thread[op_idx[has]], ops.start_ns[op_idx[has]], scopes, innermost)
        raw = np.where(sc >= 0, ops.name[np.maximum(sc, 0)], np.where(has, NO_SCOPE, NO_OP))
        labels = np.array([_merge_numbered(str(x)) if merge_numbered else str(x) for x in raw], dtype=object)
    if labels.size == 0:
        return [], np.zeros(0, np.int64)
    groups, gid = np.unique(labels.astype(str), return_inverse=True)
    return [str(g) for g in groups], gid.astype(np.int64)
