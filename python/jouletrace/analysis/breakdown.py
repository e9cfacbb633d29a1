"""Where a run's energy went, in groups a model engineer recognises.

:func:`breakdown` takes a recording and the profiler trace of the same run and
splits the energy of the trace's span (first kernel start to last kernel end,
per device) into groups of kernels, plus the time the GPU ran no kernel:

* ``by="category"``: GEMM, attention, normalisation, element-wise, reduction,
  communication, memory copy/set, other; each kernel name is placed by the
  first matching pattern of :data:`DEFAULT_PATTERNS` (overridable, below);
* ``by="name"``: each kernel name;
* ``by="range"``: the NVTX range (Nsight Systems) or ``record_function``
  annotation (PyTorch profiler) the kernel ran in — ranges on the GPU's own
  timeline (``gpu_user_annotation``) when the trace has them for that device,
  else host-side ranges; a kernel belongs to the innermost range (``level=
  "outermost"``: the outermost) containing its midpoint, among the ranges
  matching ``ranges=`` (shell pattern); numbered names (``ProfilerStep#4``,
  ``step 12``) are merged (``#N``) unless ``merge_numbered=False``. Host-side
  ranges are matched by the kernel's *execution* time: a kernel that runs
  after its (asynchronous) launch range closed counts as outside it;
* ``by="op"`` / ``by="scope"`` (PyTorch-profiler traces, :mod:`.ops`): the CPU
  op that launched the kernel (Kineto's ``External id``), or the
  ``record_function`` scope enclosing that op on its thread.

Two numbers per group, each saying what it is:

* **direct** (``energy_j``, ``bound_j``): the per-launch energies of
  :func:`jouletrace.attribute.attribute_launches` (the counter interpolated over
  each launch, shared equally under overlap) summed per group. With the idle
  row (``"(idle)"``: the segments with no kernel — data loading, host-bound
  launch gaps, synchronisation) they add up *exactly* to the span's energy.
  The bound is the sum of the launches' bounds: honest but loose, because a
  launch shorter than the sensor's period is given its interval's mean power
  (below resolution), which smears groups of different power into each other.
* **statistical** (``stat_energy_j`` with ``stat_ci_low_j``/``stat_ci_high_j``
  at ``level``): the per-name regression of
  :func:`jouletrace.attribute.attribute_names` run with the *groups* as names
  (each counter interval's energy regressed on the time each group ran in it),
  and idle power times idle time. It separates groups of different power even
  when every kernel is far shorter than the sensor's period; ``stat_resolved``
  and ``stat_reason`` say when the data do not support it. The statistical
  parts need not add up exactly to the span's energy.

The pattern table: a list of ``(category, regex)`` pairs, tried in order,
case-insensitive, ``re.search`` on the kernel's full name; the first match
wins; no match is ``"other"``. ``patterns=`` given to :func:`categorize` or
:func:`breakdown` is tried *before* the defaults (so one line overrides one
kernel); a JSON file of ``[["category", "regex"], ...]`` does the same from the
command line (``jouletrace compare --categories FILE``).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..energy.measurement import counts_in_total
from ..errors import InvalidArgumentError
from ..kernels.alignment import Alignment, align, device_channels
from ..kernels.attribution import attribute_launches, attribute_names
from ..kernels.traces import KernelTable
from .ops import _merge_numbered, group_by_op

__all__ = ["CATEGORIES", "DEFAULT_PATTERNS", "IDLE", "OUTSIDE", "Breakdown", "categorize",
           "breakdown", "add_statistical", "group_kernels", "load_patterns"]

#: The categories, in display order ("idle" is the time with no kernel).
CATEGORIES = ("gemm", "attention", "normalisation", "elementwise", "reduction", "communication",
              "memory", "other")
IDLE = "(idle)"
#: A direct group energy whose bound is within this fraction of it (and whose launches are
#: above the sensor's resolution) needs no regression (``statistical="auto"``).
DIRECT_SOUND_REL = 0.05
OUTSIDE = "(outside ranges)"

#: (category, regex): tried in order, first match wins (module docstring).
DEFAULT_PATTERNS: tuple[tuple[str, str], ...] = (
    ("communication", r"nccl|rccl|all_?reduce|all_?gather|reduce_?scatter|all_?to_?all|sendrecv|c10d"),
    ("memory", r"memcpy|memset|copy_?kernel|CatArrayBatchedCopy|\bfill_kernel"),
    ("attention", r"flash|fmha|attention|attn|sdpa|\bmha\b|softmax"),
    ("normalisation", r"norm|\bbn_|batch_?norm|welford"),
    ("gemm", r"gemm|cutlass|cublas|matmul|wgmma|xmma|\bmm\b|_mm_|conv|winograd|dot_kernel"),
    ("reduction", r"reduce|reduction|argmax|argmin|topk|\bsum\b|cross_entropy|nll_loss|cumsum|scan"),
    ("elementwise", r"elementwise|vectorized|unrolled|gelu|relu|silu|swiglu|sigmoid|tanh|dropout|"
                    r"multi_tensor|adam|sgd|\badd\b|\bmul\b|index|cast|where|clamp|exp\b|pow"),
)


def load_patterns(path: str) -> list[tuple[str, str]]:
    """A JSON file of ``[["category", "regex"], ...]`` (checked: each regex compiles)."""
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read the category table {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"the category table {path} is not JSON: {exc}") from None
    if not isinstance(raw, list) or not all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in raw):
        raise InvalidArgumentError(
            f'the category table {path} must be a JSON list of ["category", "regex"] pairs')
    return _checked(raw)


def _checked(patterns: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    out = []
    for cat, rx in patterns:
        try:
            re.compile(rx)
        except re.error as exc:
            raise InvalidArgumentError(f"category {cat!r}: pattern {rx!r} is not a regex: {exc}") from None
        out.append((str(cat), str(rx)))
    return out


def categorize(names: Sequence[str], patterns: Sequence[Sequence[str]] | None = None) -> list[str]:
    """The category of each kernel name: ``patterns`` first, then :data:`DEFAULT_PATTERNS`."""
    table = _checked(list(patterns or ())) + list(DEFAULT_PATTERNS)
    compiled = [(c, re.compile(rx, re.IGNORECASE)) for c, rx in table]
    out = []
    for n in names:
        for cat, rx in compiled:
            if rx.search(n):
                out.append(cat)
                break
        else:
            out.append("other")
    return out


def _paint(points: np.ndarray, starts: np.ndarray, ends: np.ndarray, ids: np.ndarray,
           innermost: bool) -> np.ndarray:
    """For sorted ``points``: the id of the innermost (shortest; or outermost: longest)
    interval [start, end) holding each point, -1 for none. Longest painted first."""
    out = np.full(points.size, -1, dtype=np.int64)
    order = np.argsort(ends - starts, kind="stable")
    if innermost:
        order = order[::-1]
    lo = np.searchsorted(points, starts, side="left")
    hi = np.searchsorted(points, ends, side="left")
    for i in order:
        if hi[i] > lo[i]:
            out[lo[i]:hi[i]] = ids[i]
    return out


def group_kernels(kernels: KernelTable, by: str = "category", *, patterns: Sequence[Sequence[str]] | None = None,
                  ranges: str | None = None, level: str = "innermost", merge_numbered: bool = True,
                  ops: Any = None) -> tuple[list[str], np.ndarray]:
    """Group names and each kernel's group id (see :func:`breakdown` for ``by``)."""
    if level not in ("innermost", "outermost"):
        raise InvalidArgumentError(f"level must be 'innermost' or 'outermost', got {level!r}")
    if by == "name":
        return list(kernels.names), np.asarray(kernels.name_id, dtype=np.int64)
    if by == "category":
        cats = categorize(kernels.names, patterns)
        groups = [c for c in CATEGORIES if c in cats] + sorted(set(cats) - set(CATEGORIES))
        idx = {g: i for i, g in enumerate(groups)}
        lut = np.array([idx[c] for c in cats], dtype=np.int64)
        return groups, lut[np.asarray(kernels.name_id, dtype=np.int64)] if len(kernels) else np.zeros(0, np.int64)
    if by == "range":
        return _by_range(kernels, ranges, level == "innermost", merge_numbered)
    if by in ("op", "scope"):
        return group_by_op(kernels, by, ops=ops, pattern=ranges, innermost=level == "innermost",
                           merge_numbered=merge_numbered)
    raise InvalidArgumentError(f"by must be category, name, range, op or scope; got {by!r}")


def _by_range(kernels: KernelTable, pattern: str | None, innermost: bool,
              merge_numbered: bool) -> tuple[list[str], np.ndarray]:
    r = kernels.ranges
    if len(r) == 0:
        raise InvalidArgumentError(
            "the trace has no NVTX ranges or record_function annotations: nothing to group by range "
            "(add torch.profiler.record_function / nvtx ranges to the program, or use by='category')")
    rnames = [_merge_numbered(n) if merge_numbered else n for n in r.names]
    keep = np.ones(len(r), dtype=bool)
    if pattern is not None:
        ok = np.array([fnmatch.fnmatchcase(n, pattern) or fnmatch.fnmatchcase(o, pattern)
                       for n, o in zip(rnames, r.names, strict=True)])
        keep = ok[r.name_id] if len(r) else keep
        if not keep.any():
            raise InvalidArgumentError(f"no range matches {pattern!r}; ranges: "
                                       + ", ".join(sorted(set(rnames))[:12]))
    groups = sorted(set(np.asarray(rnames, dtype=object)[r.name_id[keep]].tolist()))
    gid = {g: i for i, g in enumerate(groups)}
    range_gid = np.array([gid.get(n, -1) for n in rnames], dtype=np.int64)[r.name_id]
    mid = kernels.start_ns + (kernels.end_ns - kernels.start_ns) // 2
    out = np.full(len(kernels), -1, dtype=np.int64)
    for dev in np.unique(kernels.device):
        ksel = np.flatnonzero(kernels.device == dev)
        rsel = keep & (r.device == dev)
        if not rsel.any():
            rsel = keep & (r.device == -1)
        if not rsel.any():
            continue
        order = np.argsort(mid[ksel], kind="stable")
        painted = _paint(mid[ksel][order], r.start_ns[rsel], r.end_ns[rsel], range_gid[rsel], innermost)
        out[ksel[order]] = painted
    if (out < 0).any():
        groups.append(OUTSIDE)
        out[out < 0] = len(groups) - 1
    return groups, out


@dataclass
class Breakdown:
    """The energy of a trace's span split into groups (module docstring).

    ``rows``: one dict per group, then ``"(idle)"``: ``group``, ``launches``,
    ``time_s`` (share time; idle time for the idle row), ``energy_j``/``bound_j``/
    ``power_w``/``fraction`` (direct), ``stat_energy_j``, ``stat_ci_low_j``,
    ``stat_ci_high_j``, ``stat_fraction``, ``stat_resolved``, ``stat_reason``
    (statistical; None without a fit). ``span_energy_j``/``span_bound_j``: the
    direct energy of the span (the rows' ``energy_j`` add up to it).
    """

    by: str
    rows: list[dict[str, Any]]
    span_s: float
    span_energy_j: float
    span_bound_j: float
    level: float | None
    devices: dict[int, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def direct_sound(self) -> bool:
        """Whether the direct energies alone answer the question: every group's energy comes from
        launches above the sensor's resolution and its bound is within ``DIRECT_SOUND_REL`` of it
        (then the regression would buy nothing)."""
        rows = [r for r in self.rows if r["group"] != IDLE and r["launches"] > 0]
        return bool(rows) and all(
            r["below_resolution_fraction"] == 0.0 and np.isfinite(r["bound_j"])
            and r["bound_j"] <= DIRECT_SOUND_REL * abs(r["energy_j"]) for r in rows)

    def row(self, group: str) -> dict[str, Any]:
        for r in self.rows:
            if r["group"] == group:
                return r
        raise KeyError(f"no group {group!r}; groups: {', '.join(r['group'] for r in self.rows)}")

    @property
    def groups(self) -> list[str]:
        return [r["group"] for r in self.rows]

    def fraction(self, group: str, kind: str = "statistical") -> float:
        """The share of the span's energy of one group ("statistical" or "direct")."""
        r = self.row(group)
        return float(r["stat_fraction"] if kind == "statistical" else r["fraction"])

    def to_text(self, limit: int = 20) -> str:
        lv = f"{self.level:.0%}" if self.level else "-"
        lines = [f"{'group':<36} {'time s':>9} {'direct J':>11} {'± bound':>9} {'share':>6} "
                 f"{'statistical J':>13} {lv + ' CI':>21} {'share':>6}"]
        for r in self.rows[:limit]:
            st = "" if r["stat_energy_j"] is None else f"{r['stat_energy_j']:13.2f}"
            ci = "" if r["stat_energy_j"] is None else f"[{_f(r['stat_ci_low_j'])}, {_f(r['stat_ci_high_j'])}]"
            sf = "" if r["stat_fraction"] is None else f"{r['stat_fraction']:6.1%}"
            flag = "" if r["stat_resolved"] in (None, True) else " *"
            lines.append(f"{_short(r['group']):<36} {r['time_s']:9.3f} {r['energy_j']:11.2f} {r['bound_j']:9.2f} "
                         f"{r['fraction']:6.1%} {st:>13} {ci:>21} {sf:>6}{flag}")
        lines.append(f"{'span':<36} {self.span_s:9.3f} {self.span_energy_j:11.2f} {self.span_bound_j:9.2f}")
        if any(r["stat_resolved"] is False for r in self.rows):
            lines.append("* statistical estimate not resolved (stat_reason says why)")
        return "\n".join(lines)


def _f(x: float) -> str:
    return "inf" if not np.isfinite(x) else f"{x:.1f}"


def _short(name: str, n: int = 36) -> str:
    return name if len(name) <= n else name[: n - 3] + "..."


def breakdown(
    recording: Any,
    kernels: KernelTable,
    by: str = "category",
    *,
    patterns: Sequence[Sequence[str]] | None = None,
    ranges: str | None = None,
    level: str = "innermost",
    merge_numbered: bool = True,
    ops: Any = None,
    alignment: Alignment | None = None,
    launches: Any = None,
    statistical: bool | str = True,
    confidence: float = 0.95,
    bootstrap: int = 200,
    device_map: dict[int, str] | None = None,
    seed: int | None = 0,
) -> Breakdown:
    """Split the energy of the trace's span by group (module docstring).

    ``launches`` reuses a :class:`~jouletrace.kernels.attribution.LaunchEnergies`
    computed before (same kernels, same alignment). ``statistical=False`` skips
    the regression; ``"auto"`` skips it when :meth:`Breakdown.direct_sound` (the note says so). ``confidence`` and ``bootstrap`` are those of the statistical
    intervals.
    """
    if len(kernels) == 0:
        raise InvalidArgumentError("the trace holds no kernels: there is nothing to break down")
    groups, gid = group_kernels(kernels, by, patterns=patterns, ranges=ranges, level=level,
                                merge_numbered=merge_numbered, ops=ops)
    if alignment is None:
        alignment = align(kernels, recording)
    if launches is None:
        launches = attribute_launches(recording, kernels, alignment=alignment, device_map=device_map)
    ng = len(groups)
    idx = np.asarray(launches["index"], dtype=np.int64)
    g = gid[idx]
    e = np.nan_to_num(np.asarray(launches["energy_j"], dtype=np.float64))
    u = np.asarray(launches["bound_j"], dtype=np.float64)
    share = np.asarray(launches["share_s"], dtype=np.float64)
    energy = np.bincount(g, weights=e, minlength=ng)
    bound = np.bincount(g, weights=u, minlength=ng)
    time_s = np.bincount(g, weights=share, minlength=ng)
    count = np.bincount(g, minlength=ng)
    below = np.asarray(launches["below_resolution"], dtype=bool)
    below_e = np.bincount(g, weights=np.abs(e) * below, minlength=ng)
    chans = device_channels(kernels, recording, device_map)
    idle_e = idle_t = span_s = span_e = span_u = 0.0
    devices: dict[int, dict[str, Any]] = {}
    for dev, (ch, _how) in chans.items():
        sel = np.flatnonzero(np.asarray(launches["device"]) == dev)
        if sel.size == 0:
            continue
        s0 = int(np.min(launches["start_ns"][sel]))
        s1 = int(np.max(launches["end_ns"][sel]))
        we = recording.energies([s0], [s1], channels=[ch])
        (key,) = we.keys
        de = float(we.energy_j[key][0])
        du = float(we.uncertainty_j[key][0])
        dt = (s1 - s0) * 1e-9
        d_idle_t = dt - float(np.sum(share[sel]))
        d_idle_e = float(launches.meta["devices"][dev]["idle_energy_j"])
        devices[int(dev)] = {"channel": ch, "span_ns": [s0, s1], "span_energy_j": de, "span_bound_j": du,
                             "idle_time_s": d_idle_t, "idle_energy_j": d_idle_e, "counts_in_total": counts_in_total(key)}
        span_s = max(span_s, dt)
        span_e += de
        span_u += du
        idle_e += d_idle_e
        idle_t += d_idle_t
    rows: list[dict[str, Any]] = []
    for i, name in enumerate(groups):
        rows.append({"group": name, "launches": int(count[i]), "time_s": float(time_s[i]),
                     "energy_j": float(energy[i]), "bound_j": float(bound[i]),
                     "below_resolution_fraction": float(below_e[i] / energy[i]) if energy[i] > 0 else 0.0})
    rows.append({"group": IDLE, "launches": 0, "time_s": idle_t, "energy_j": idle_e,
                 "bound_j": span_u, "below_resolution_fraction": 0.0})
    for r in rows:
        r["power_w"] = r["energy_j"] / r["time_s"] if r["time_s"] > 0 else None
        r["fraction"] = r["energy_j"] / span_e if span_e else float("nan")
        r.update(stat_energy_j=None, stat_ci_low_j=None, stat_ci_high_j=None, stat_fraction=None,
                 stat_resolved=None, stat_reason=None)
    notes = ["direct: per-launch energies summed (they and the idle row add up to the span's energy); "
             "the idle row's bound is the span's"]
    out = Breakdown(by=by, rows=rows, span_s=span_s, span_energy_j=span_e, span_bound_j=span_u,
                    level=confidence if statistical is True else None, devices=devices, notes=notes)
    out.rows = [r for r in out.rows if r["launches"] > 0 or r["group"] == IDLE]
    if statistical == "auto" and out.direct_sound():
        out.notes.append("statistical: not fitted, the direct energies are sound (every group's launches "
                         f"above the sensor's resolution, bounds within {DIRECT_SOUND_REL:.0%})")
    elif statistical:
        out.level = confidence
        _statistical(out, recording, kernels, groups, gid, alignment, device_map, confidence, bootstrap, seed)
    return out


def add_statistical(out: Breakdown, recording: Any, kernels: KernelTable, *,
                    patterns: Sequence[Sequence[str]] | None = None, ranges: str | None = None,
                    level: str = "innermost", merge_numbered: bool = True, ops: Any = None,
                    alignment: Alignment | None = None, confidence: float = 0.95, bootstrap: int = 200,
                    device_map: dict[int, str] | None = None, seed: int | None = 0) -> Breakdown:
    """Add the statistical estimate to a breakdown made with ``statistical=False`` (same
    kernels and grouping arguments); returns it."""
    groups, gid = group_kernels(kernels, out.by, patterns=patterns, ranges=ranges, level=level,
                                merge_numbered=merge_numbered, ops=ops)
    if alignment is None:
        alignment = align(kernels, recording)
    out.level = confidence
    _statistical(out, recording, kernels, groups, gid, alignment, device_map, confidence, bootstrap, seed)
    return out


@dataclass
class _StatSum:
    """One group's statistical estimate, summed over devices."""

    energy_j: float = 0.0
    ci_low_j: float = 0.0
    ci_high_j: float = 0.0
    resolved: bool = True
    reason: str = ""


def _statistical(out: Breakdown, recording: Any, kernels: KernelTable, groups: list[str], gid: np.ndarray,
                 alignment: Alignment, device_map: dict[int, str] | None, level: float, bootstrap: int,
                 seed: int | None) -> None:
    """Per group, statistical: the per-name regression with the groups as names."""
    relabelled = KernelTable(kernels.start_ns, kernels.end_ns, kernels.device, gid.astype(np.int32), groups,
                             stream=kernels.stream, source=kernels.source, clock=kernels.clock,
                             devices=kernels.devices)
    ne = attribute_names(recording, relabelled, alignment=alignment, device_map=device_map,
                         max_names=len(groups) + 1, bootstrap=bootstrap, level=level, seed=seed,
                         min_launches=1, min_intervals=10)
    est = {g: _StatSum() for g in groups + [IDLE]}
    for i in range(len(ne)):
        name = str(ne["name"][i])
        if name not in est:
            continue
        acc = est[name]
        acc.energy_j += float(ne["total_energy_j"][i])
        acc.ci_low_j += float(ne["total_energy_ci_low_j"][i])
        acc.ci_high_j += float(ne["total_energy_ci_high_j"][i])
        if not bool(ne["resolved"][i]):
            acc.resolved = False
            acc.reason = acc.reason or str(ne["unresolved_reason"][i])
    for dev, dm in ne.meta.get("devices", {}).items():
        d = out.devices.get(int(dev))
        if d is None:
            continue
        t = d["idle_time_s"]
        p = dm.get("idle_power_w", float("nan"))
        acc = est[IDLE]
        acc.energy_j += p * t
        acc.ci_low_j += dm.get("idle_power_ci_low_w", float("nan")) * t
        acc.ci_high_j += dm.get("idle_power_ci_high_w", float("nan")) * t
        if not np.isfinite(p):
            acc.resolved = False
            acc.reason = dm.get("note", "no fit")
    total = sum(v.energy_j for v in est.values())
    for r in out.rows:
        v = est.get(r["group"])
        if v is None:
            continue
        r.update(stat_energy_j=v.energy_j, stat_ci_low_j=v.ci_low_j, stat_ci_high_j=v.ci_high_j,
                 stat_fraction=v.energy_j / total if total > 0 else None,
                 stat_resolved=bool(v.resolved and np.isfinite(v.energy_j)), stat_reason=v.reason or None)
    out.notes.append(f"statistical: counter intervals regressed on each group's time ({level:.0%} intervals, "
                     f"{bootstrap} bootstrap replicates); stat_fraction is of the statistical total")
