"""Work units on windows: energy per token, per sample, per step, with the bound carried through.

A window may say how much work it did. In a recording's metadata every entry of
``metadata["windows"]`` is ``{"name", "t0_ns", "t1_ns", ...}``; an optional
``"work"`` key maps a unit to an amount::

    {"name": "step", "t0_ns": ..., "t1_ns": ..., "work": {"tokens": 512, "samples": 1}}

Units are free-form names (``tokens``, ``samples``, ``requests``, ``images``);
every window also counts one ``step`` implicitly (its own count), unless it
names ``steps`` itself. Amounts are exact counts: the uncertainty of energy per
unit is the energy's bound divided by the work.

What is *direct* here: the energy of each window is the counter interpolated
over it with its bound (:meth:`jouletrace.Recording.energies`). Windows that
touch (one ends where the next starts, as steps of a loop do) form one block:
the interpolated energies add up exactly over it and only its outer edges are
uncertain, so the bound is the block's; separate blocks' bounds are added. Energy per unit = total energy / total
work, bound = total bound / total work. The spread of the per-window values
(their mean and a 95 % interval of that mean, a *statistical* figure) is given
beside it, for runs whose windows differ.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..energy.measurement import counts_in_total
from ..energy.windows import flag_names
from ..errors import InvalidArgumentError

__all__ = ["WorkEnergy", "select_windows", "work_of", "work_table", "window_work_energies", "per_work"]

#: The implicit unit every window counts once.
STEP = "steps"


def work_of(window: Mapping[str, Any]) -> dict[str, float]:
    """The work of one window entry: its ``"work"`` mapping (validated), plus one step."""
    raw = window.get("work") or {}
    if not isinstance(raw, Mapping):
        raise InvalidArgumentError(
            f"window {window.get('name')!r}: 'work' must map a unit to an amount, e.g. "
            f'{{"tokens": 512}}; got {type(raw).__name__}')
    out: dict[str, float] = {}
    for unit, amount in raw.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) \
                or amount < 0:
            raise InvalidArgumentError(
                f"window {window.get('name')!r}: work {unit!r} must be a finite number >= 0, got {amount!r}")
        out[str(unit)] = float(amount)
    out.setdefault(STEP, 1.0)
    return out


def work_table(windows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The work of N window entries as one array per unit (0 where a window does not name
    the unit), ``steps`` included (1 per window unless given); validated as :func:`work_of`,
    in one pass (recordings hold 10^5 windows and more)."""
    n = len(windows)
    cols: dict[str, np.ndarray] = {}
    for i, w in enumerate(windows):
        raw = w.get("work")
        if not raw:
            continue
        if not isinstance(raw, Mapping):
            work_of(w)  # raises, naming the window
        for unit, amount in raw.items():
            if type(amount) is not float and type(amount) is not int and (
                    isinstance(amount, bool) or not isinstance(amount, numbers.Real)):
                work_of(w)  # raises, naming the window and the amount
            col = cols.get(unit)
            if col is None:
                col = cols[str(unit)] = np.zeros(n)
            col[i] = amount
    for col in cols.values():
        bad = np.flatnonzero(~np.isfinite(col) | (col < 0))
        if bad.size:
            work_of(windows[int(bad[0])])  # raises, naming the window and the amount
    if STEP not in cols:
        cols[STEP] = np.ones(n)
    else:
        given = np.array([isinstance(w.get("work"), Mapping) and STEP in w["work"] for w in windows])
        cols[STEP] = np.where(given, cols[STEP], 1.0)
    return cols


def select_windows(recording: Any, pattern: str | None = None) -> list[dict[str, Any]]:
    """The windows of ``recording.metadata["windows"]`` a run is made of.

    ``pattern`` (shell-style, ``fnmatch``: ``"step"``, ``"step*"``) picks by name.
    Without one: the windows that carry ``"work"``; if none do, the ``"command"``
    window (what ``jouletrace record`` ran); if there is none, the whole recording
    as one window named ``"recording"``. Closed windows only; overlapping windows
    are refused (their energies would be counted twice).
    """
    wins = [w for w in (recording.metadata.get("windows") or [])
            if isinstance(w, Mapping) and w.get("t1_ns") is not None and w.get("t0_ns") is not None]
    if pattern is not None:
        picked = [w for w in wins if fnmatch.fnmatchcase(str(w.get("name")), pattern)]
        if not picked:
            names = sorted({str(w.get("name")) for w in wins})
            shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise InvalidArgumentError(
                f"no window matches {pattern!r}; the recording's windows: {shown or 'none'}")
    else:
        picked = [w for w in wins if w.get("work")]
        if not picked:
            picked = [w for w in wins if w.get("name") == "command"]
        if not picked:
            if len(recording) < 2:
                raise InvalidArgumentError("the recording has fewer than two samples: nothing to measure")
            if hasattr(recording, "t_first_ns"):  # read block by block
                first, last = int(recording.t_first_ns), int(recording.t_last_ns)
            else:
                first, last = int(recording.t_ns[0]), int(recording.t_ns[-1])
            picked = [{"name": "recording", "t0_ns": first, "t1_ns": last}]
    ordered = sorted((dict(w) for w in picked), key=lambda w: int(w["t0_ns"]))
    for a, b in zip(ordered, ordered[1:], strict=False):
        if int(b["t0_ns"]) < int(a["t1_ns"]):
            raise InvalidArgumentError(
                f"windows {a.get('name')!r} and {b.get('name')!r} overlap: their energies would be "
                "counted twice; pick non-overlapping windows by name (--window PATTERN)")
    return ordered


@dataclass
class WorkEnergy:
    """Energy, time and work of a set of windows, and energy per unit of work.

    ``energy_j``/``bound_j``: direct (the counter over each window, bounds added);
    ``per_unit[unit]`` = ``{"energy_j", "bound_j", "kind": "direct"}`` per unit of
    ``work[unit]``; ``spread[unit]`` (statistical, when there are two windows or
    more): the mean of the per-window values and a 95 % interval of that mean.
    """

    windows: int
    time_s: float
    energy_j: float
    bound_j: float
    work: dict[str, float]
    per_unit: dict[str, dict[str, Any]] = field(default_factory=dict)
    spread: dict[str, dict[str, float]] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    devices: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The windows' edges (CLOCK_MONOTONIC ns) and their work per unit, one entry per window.
    t0_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    t1_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    per_window: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def avg_power_w(self) -> float:
        return self.energy_j / self.time_s if self.time_s > 0 else float("nan")


def window_work_energies(
    recording: Any,
    t0s: Sequence[int] | np.ndarray,
    t1s: Sequence[int] | np.ndarray,
    *,
    work: Mapping[str, Sequence[float] | np.ndarray] | Sequence[Mapping[str, float]] | None = None,
    channels: Sequence[str] | None = None,
) -> WorkEnergy:
    """Energy per unit of work over N windows of ``recording`` (CLOCK_MONOTONIC ns).

    ``work`` is per window: either ``{"tokens": [512, 512, ...]}`` (one amount per
    window) or a list of ``{"tokens": 512}`` (one mapping per window). Each window
    also counts one step. Devices that count in the total (GPUs, CPU packages;
    not sub-domains) are added.
    """
    a = np.atleast_1d(np.asarray(t0s, dtype=np.int64))
    b = np.atleast_1d(np.asarray(t1s, dtype=np.int64))
    if a.shape != b.shape or a.size == 0:
        raise InvalidArgumentError("t0s and t1s must be equal-length, non-empty sequences of ns")
    per_win: dict[str, np.ndarray] = {STEP: np.ones(a.size)}
    if work is not None:
        if isinstance(work, Mapping):
            for unit, v in work.items():
                arr = np.broadcast_to(np.asarray(v, dtype=np.float64), a.shape).astype(np.float64)
                per_win[str(unit)] = arr
        else:
            if len(work) != a.size:
                raise InvalidArgumentError(f"work has {len(work)} entries for {a.size} windows")
            units = sorted({unit for w in work for unit in w})
            for unit in units:
                per_win[unit] = np.array([float(w.get(unit, 0.0)) for w in work])
        for unit, v in per_win.items():
            if not np.all(np.isfinite(v)) or np.any(v < 0):
                raise InvalidArgumentError(f"work {unit!r} must be finite and >= 0 in every window")
    we = recording.energies(a, b, channels)
    e = np.zeros(a.size)
    u = np.zeros(a.size)
    devices: dict[str, dict[str, float]] = {}
    for key in we.keys:
        ek, uk = we.energy_j[key], we.uncertainty_j[key]
        devices[key] = {"energy_j": float(np.sum(ek)), "bound_j": float(np.sum(uk))}
        if counts_in_total(key):
            e = e + ek
            u = u + uk
    flags = sorted(set(flag_names(int(np.bitwise_or.reduce(we.any_flags))))) if len(we) else []
    time_s = float(np.sum(b - a) * 1e-9)
    # Adjacent windows (one's end is the next one's start) are measured as one block: the
    # interpolated energies add up exactly, and the block's edges are the only ones that count.
    order = np.argsort(a, kind="stable")
    sa, sb = a[order], b[order]
    brk = np.flatnonzero(sa[1:] != sb[:-1]) + 1
    first = np.concatenate([[0], brk])
    last = np.concatenate([brk - 1, [sa.size - 1]])
    bounds_j = 0.0
    if first.size < a.size:
        wb = recording.energies(sa[first], sb[last], channels)
        for key in wb.keys:
            if counts_in_total(key):
                bounds_j += float(np.sum(wb.uncertainty_j[key]))
    else:
        bounds_j = float(np.sum(u))
    out = WorkEnergy(windows=int(a.size), time_s=time_s, energy_j=float(np.sum(e)),
                     bound_j=bounds_j, work={k: float(np.sum(v)) for k, v in per_win.items()},
                     flags=flags, devices=devices, t0_ns=a, t1_ns=b, per_window=per_win)
    for unit, v in per_win.items():
        total = float(np.sum(v))
        if total <= 0:
            continue
        out.per_unit[unit] = {"energy_j": out.energy_j / total, "bound_j": out.bound_j / total,
                              "kind": "direct"}
        ok = v > 0
        if int(ok.sum()) >= 2:
            x = e[ok] / v[ok]
            half = 1.96 * float(np.std(x, ddof=1)) / math.sqrt(x.size)
            out.spread[unit] = {"mean_j": float(np.mean(x)), "ci_low_j": float(np.mean(x)) - half,
                                "ci_high_j": float(np.mean(x)) + half, "windows": int(x.size),
                                "level": 0.95}
    return out


def per_work(recording: Any, pattern: str | None = None, *,
             work: Mapping[str, Any] | None = None, channels: Sequence[str] | None = None) -> WorkEnergy:
    """Energy per unit of work of the recording's windows (:func:`select_windows`).

    Each window's work is its ``"work"`` entry; ``work={"tokens": 512}`` gives every
    selected window that amount instead (``{"tokens": [..]}``: one per window).
    """
    wins = select_windows(recording, pattern)
    per: dict[str, np.ndarray] | list[dict[str, float]]
    if work is None:
        per = work_table(wins)
    else:
        given: list[dict[str, float]] = [{} for _ in wins]
        for unit, v in work.items():
            arr = np.broadcast_to(np.asarray(v, dtype=np.float64), (len(wins),))
            for i, x in enumerate(arr):
                given[i][str(unit)] = float(x)
        for p in given:
            p.setdefault(STEP, 1.0)
        per = given
    return window_work_energies(recording, [int(w["t0_ns"]) for w in wins], [int(w["t1_ns"]) for w in wins],
                                work=per, channels=channels)
