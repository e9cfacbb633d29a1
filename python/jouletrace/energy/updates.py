"""When each counter update happened, and how sure that is: the one update placement.

Everything that turns a cumulative counter into energy over time consumes this
placement: window energies (:mod:`jouletrace.energy.windows`), per-launch and
per-name kernel energies (:mod:`jouletrace.attribute`), power timelines
(:meth:`jouletrace.Recording.power`) and exported counter tracks. Nothing else
re-derives it. ``Recording.updates(channel)`` gives it for a recording (cached).
See ARCHITECTURE.md ("Updates").

Model
=====

A counter reading at time ``t`` is the value of the last update ``u <= t``. When
polling is faster than the sensor, the update that changed the value happened
after the last read that still shows the old value and no later than the end of
the first read that shows the new one: it lies in the *bracket*
``(t_before[j-1], t_after[j]]`` (``lo_ns``, ``hi_ns``). Its time is estimated
from the first of these that the data confirm:

* ``"timestamps"``: the sensor's own timestamps (NVML's per-field timestamp,
  converted to CLOCK_MONOTONIC), used only if they move when the value moves and
  not otherwise, and fall inside the brackets. Uncertainty: ``h_ns`` = 2 µs (the
  stamp's µs truncation and the clock conversion), independent per update.
* ``"periodic"``: a sensor that updates every ``P`` exactly has all its updates
  on ``phi + n P``. The grid whose slope leaves the widest range of phases that
  every bracket allows is found (over the whole recording if all brackets agree
  on one, else over blocks of 64 update periods); each update is pinned to the
  grid. The remaining uncertainty is a *phase shared by every update of the
  block*: the true update is ``t_ns + d`` with one ``d`` in ``[-hc_ns, hc_ns]``
  for the whole block (``hc_ns`` also holds what a tilt of the grid that still
  fits every bracket could move, and never exceeds the update's own bracket).
  When the polling and the sensor clocks drift apart even slightly, the brackets
  slide over the update instants and ``hc_ns`` shrinks far below a polling
  period; when they do not drift at all (a sensor on the host's own clock) it
  stays about one polling period wide.
* ``"brackets"``: the middle of each bracket, with its half-width ``h_ns`` as an
  independent, uniform uncertainty per update.

Consumers treat the uncertainty as the model says: a shared phase moves every
update of a block together (its effect on a window cancels but for the change of
power between the edges); independent offsets do not cancel. :meth:`Updates.shifted`
moves the shared phase (for a search within it), :meth:`Updates.sample` draws
placements the model allows (for resampling the timing into a confidence interval).

Stalls
------
A change whose bracket is wider than a period (the reads missed updates: a starved
sampler thread, a long read) holds several updates, and the value read after it is
the last one's. A periodic sensor updated within a period before that read, so the
change is placed in ``[hi - 1.02 P, hi]``, not at its whole bracket's middle (which
put the last update's value up to half the gap early). What happened inside the gap
stays unknown: :mod:`jouletrace.energy.windows` bounds it ("Stalls").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError

__all__ = ["Updates", "locate_updates", "infer_update_period", "METHODS"]

#: How update times can be placed, best first.
METHODS = ("timestamps", "periodic", "brackets", "none")

#: Updates per periodic-grid block (a block spans this many update periods).
_GRID_BLOCK_PERIODS = 64
#: Iterations of the grid slope searches. The search spans a slope change that moves the
#: grid by two bracket widths over a block (~2 ms at 1 kHz polling); 28 golden-section
#: steps (x 0.618 each) pin the best slope to ~3 ns of grid movement, 20 bisection steps
#: (x 0.5) its range to ~2 ns.
_GOLDEN_ITERATIONS = 28
_BISECT_ITERATIONS = 20
#: A block needs at least this many located updates to fit a grid.
_GRID_MIN_UPDATES = 8
#: The last update before a read happened within this many periods of it (module
#: docstring, "Stalls"; 2 % for the period's estimate and the sensor clock's drift).
_LAST_UPDATE_REACH = 1.02


@dataclass(eq=False)
class Updates:
    """Counter updates located in time, with their timing uncertainty (module docstring)."""

    #: Estimated time of each located update (int64 CLOCK_MONOTONIC ns).
    t_ns: np.ndarray
    #: The counter value each update brought (J).
    value: np.ndarray
    #: Independent timing half-width of each update (ns, float64).
    h_ns: np.ndarray
    #: Shared (grid phase) timing half-width of each update (ns, float64).
    hc_ns: np.ndarray
    #: Grid block of each update (-1: not on a fitted grid).
    block: np.ndarray
    #: The counter value before the first located update (NaN if none).
    first_value: float
    #: The update period used (ns), or None when fewer than three updates.
    period_ns: float | None
    #: How update times were placed: "timestamps", "periodic", "brackets" or "none".
    method: str
    #: Fraction of located updates pinned by the grid or by timestamps.
    pinned_fraction: float
    #: Relative uncertainty of the grid's rate (its tilt) at each update (0 off the grid).
    rate_rel: np.ndarray
    #: The bracket of each update: after ``lo_ns`` (the last read showing the old value
    #: began), no later than ``hi_ns`` (the first read showing the new value ended).
    lo_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hi_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: ``hc_ns`` split in two for a search inside it: a phase shared by the block's
    #: updates (half-width ``phase_ns``) and a tilt of the grid that moves update ``k``
    #: by ``b * tilt_ns[k]`` for one ``b`` in [-1, 1] per block (signed: the two ends of a
    #: block move in opposite directions). ``phase_ns + |tilt_ns| == hc_ns`` but for
    #: the clip to the update's own bracket. Zero off a grid.
    phase_ns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    tilt_ns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _knots: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.t_ns.size)

    @property
    def half_width_ns(self) -> np.ndarray:
        """The whole timing half-width of each update (ns): independent plus shared."""
        return self.h_ns + self.hc_ns

    def shifted(self, phase: float, tilt: float = 0.0) -> np.ndarray:
        """Update times with the grid moved by ``phase`` (-1..1) of ``phase_ns`` and tilted
        by ``tilt`` (-1..1) of ``tilt_ns``, kept inside each update's bracket.

        Updates off any grid do not move. Returns int64 ns.
        """
        off = float(phase) * self.phase_ns + float(tilt) * self.tilt_ns if self.phase_ns.size else 0.0
        t = self.t_ns + np.rint(off).astype(np.int64)
        if self.lo_ns.size == t.size:
            t = np.clip(t, self.lo_ns, np.maximum(self.hi_ns, self.lo_ns))
        return t

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` placements the model allows, shape (n, len(self)), int64 ns.

        Each draws one shared phase and one tilt per grid block, uniform in
        ``[-phase_ns, phase_ns]`` and ``[-1, 1] * tilt_ns``, and an independent
        offset per update, uniform in ``[-h_ns, h_ns]``; the result is kept inside
        each update's bracket and in time order.
        """
        k = self.t_ns.size
        if k == 0 or n <= 0:
            return np.zeros((max(n, 0), k), dtype=np.int64)
        blocks, inv = np.unique(self.block, return_inverse=True)
        on = self.block[None, :] >= 0
        phase = np.where(on, rng.uniform(-1.0, 1.0, (n, blocks.size))[:, inv], 0.0)
        tilt = np.where(on, rng.uniform(-1.0, 1.0, (n, blocks.size))[:, inv], 0.0)
        own = rng.uniform(-1.0, 1.0, (n, k))
        pw = self.phase_ns if self.phase_ns.size == k else self.hc_ns
        tw = self.tilt_ns if self.tilt_ns.size == k else np.zeros(k)
        t = self.t_ns[None, :] + np.rint(phase * pw + tilt * tw + own * self.h_ns).astype(np.int64)
        if self.lo_ns.size == k:
            t = np.clip(t, self.lo_ns, np.maximum(self.hi_ns, self.lo_ns))
        return np.maximum.accumulate(t, axis=1)

    def summary(self) -> dict[str, Any]:
        """Plain JSON-able facts about the placement (for metadata and reports)."""
        k = self.t_ns.size
        return {
            "method": self.method,
            "updates": int(k),
            "period_ns": self.period_ns,
            "pinned_fraction": float(self.pinned_fraction),
            "median_independent_half_width_ns": float(np.median(self.h_ns)) if k else None,
            "median_shared_half_width_ns": float(np.median(self.hc_ns)) if k else None,
        }



def _as_i64(a: object, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and not np.all(np.isfinite(arr)):
            raise InvalidArgumentError(f"{name} holds NaN or infinite times")
        arr = np.rint(arr)
    return np.ascontiguousarray(arr, dtype=np.int64)


def _valid(t_ns: np.ndarray, values: np.ndarray, *others: np.ndarray | None) -> tuple[Any, ...]:
    t = _as_i64(t_ns, "t_ns")
    v = np.asarray(values, dtype=np.float64)
    if v.shape != t.shape:
        raise InvalidArgumentError(f"t_ns {t.shape} and values {v.shape} differ in shape")
    ok = np.isfinite(v)
    if ok.all():
        return (t, v) + tuple(None if o is None else np.asarray(o) for o in others)
    return (t[ok], v[ok]) + tuple(None if o is None else np.asarray(o)[ok] for o in others)


def infer_update_period(t_ns: np.ndarray, values: np.ndarray) -> float | None:
    """A channel's sensor update period (ns): the median time between value changes.

    Each change is placed in the middle of its bracket (last sample with the old
    value, first with the new). NaN samples are ignored. None with fewer than
    three changes. The median is over the first :data:`MEDIAN_CHANGES` changes (a
    sensor's period does not change during a run; this bounds what a recording of
    any length needs in memory). When every sample shows a new value the sensor is
    faster than the polling and the result is only the polling period
    (:func:`characterize` says ``resolved: False`` then).
    """
    t, v = _valid(t_ns, values)
    if v.size < 4:
        return None
    chg = np.flatnonzero(v[1:] != v[:-1]) + 1
    if chg.size < 3:
        return None
    chg = chg[: MEDIAN_CHANGES + 1]
    mid = t[chg - 1] + (t[chg] - t[chg - 1]) // 2
    return float(np.median(np.diff(mid)))


#: Medians that characterise a sensor (its period, its bracket widths) look at its first
#: this many changes: enough to be exact for any run of a day at 100 ms, and bounded.
MEDIAN_CHANGES = 1 << 20
#: Grid blocks per segment: a periodic grid is fitted over a whole segment if it holds
#: there, else per block. Segments are anchored at the recording's first sample, so a
#: recording placed block by block (:mod:`jouletrace.energy.blocks`) gets the same grid.
SEGMENT_BLOCKS = 1024
#: Tolerance of a sensor timestamp (ns): its µs truncation and the clock conversion.
_TS_TOL = 2000.0


@dataclass
class Plan:
    """What the placement decides over the whole recording before placing any update.

    Everything else is local: each update from the samples around it, a grid from the
    updates of its segment. ``locate_updates`` makes the plan from whole arrays;
    :mod:`jouletrace.energy.blocks` from a pass over a file, block by block.
    """

    period: float | None
    ref: int
    use_ts: bool
    grid: bool
    pinned_ts: float
    first_value: float
    changes: int


@dataclass
class TsStats:
    """Counts that decide whether a channel's sensor timestamps are credible (summable over blocks)."""

    good: int = 0
    moved: int = 0
    reads: float = 0.0
    inside: int = 0

    def add(self, other: TsStats) -> None:
        self.good += other.good
        self.moved += other.moved
        self.reads += other.reads
        self.inside += other.inside

    def credible(self, changes: int) -> bool:
        if self.good < 4 or changes == 0:
            return False
        if self.moved > 0.05 * self.reads:
            return False
        return self.inside / changes >= 0.95


def ts_stats(v: np.ndarray, chg: np.ndarray, lo: np.ndarray, hi: np.ndarray, ts: np.ndarray,
             seq: np.ndarray | None, skip_first: bool) -> TsStats:
    """The timestamp counts of rows ``v`` (valid rows; ``chg``: rows where the value changed).

    ``skip_first``: row 0 was counted with the previous block (it is carried over only to
    pair with row 1).
    """
    good = np.isfinite(ts) & (ts > 0)
    out = TsStats(good=int(good[1:].sum() if skip_first else good.sum()))
    # Timestamps must move only with the value: a per-read stamp is not an update time.
    same_v = np.ones(v.size, dtype=bool)
    same_v[chg] = False
    same_v[0] = False
    both = same_v[1:] & good[1:] & good[:-1]
    if both.any():
        out.moved = int((np.abs(ts[1:][both] - ts[:-1][both]) > _TS_TOL).sum())
        # Each pair stands for the reads between its samples (1 each without seq): a stamp that
        # moves in more than 5 % of the reads where the value stayed is a per-read stamp.
        if seq is None:
            out.reads = float(both.sum())
        else:
            sq = np.asarray(seq, dtype=np.uint64)
            out.reads = float(np.sum((sq[1:] - sq[:-1])[both].astype(np.float64)))
    cand = ts[chg]
    out.inside = int((np.isfinite(cand) & (cand >= lo - _TS_TOL) & (cand <= hi + _TS_TOL)).sum())
    return out


def brackets(t: np.ndarray, v: np.ndarray, tb: np.ndarray, ta: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(chg, lo, hi, mid, h)``: the rows where the value changed and each change's bracket."""
    chg = np.flatnonzero(v[1:] != v[:-1]) + 1
    lo = tb[chg - 1]
    hi = ta[chg]
    lo = np.minimum(lo, hi)
    mid = lo + (hi - lo) // 2
    h = (hi - lo).astype(np.float64) * 0.5
    return chg, lo, hi, mid, h


def grid_eligible(period: float | None, widths: np.ndarray, changes: int, timing: str, use_ts: bool) -> bool:
    """Whether to fit a grid: polling clearly faster than the sensor (``widths``: the first
    :data:`MEDIAN_CHANGES` bracket widths)."""
    if use_ts or timing == "brackets" or not period or changes < _GRID_MIN_UPDATES:
        return False
    return bool(np.median(widths) < 0.5 * period)


def locate_updates(
    t_ns: np.ndarray,
    values: np.ndarray,
    *,
    t_before_ns: np.ndarray | None = None,
    t_after_ns: np.ndarray | None = None,
    update_period_ns: float | None = None,
    update_times_ns: np.ndarray | None = None,
    t_ref_ns: int | None = None,
    timing: str = "auto",
    seq: np.ndarray | None = None,
) -> Updates:
    """Place every update of a cumulative counter in time (module docstring).

    ``t_before_ns`` / ``t_after_ns`` are the edges of each read (default: ``t_ns``).
    ``update_times_ns`` are the sensor's own per-sample timestamps in CLOCK_MONOTONIC
    ns (NaN or 0 where unknown); they are used only if they move with the value and
    fall inside the brackets. ``t_ref_ns`` anchors the grid blocks (default: the
    first valid sample), so that a slice of a recording gives the same answer as
    the whole. ``timing`` = "auto" (timestamps, else grid, else brackets),
    "brackets" (midpoints only) or "periodic" (no timestamps). ``seq`` (read numbers)
    weighs each pair of consecutive samples by the reads between them, so that a
    recording with repeated polls left out (:mod:`jouletrace.energy.compact`) is judged
    exactly as the whole one.
    """
    if timing not in ("auto", "brackets", "periodic"):
        raise InvalidArgumentError(f"timing must be 'auto', 'periodic' or 'brackets', got {timing!r}")
    t, v, tb, ta, ts, sq = _valid(t_ns, values, t_before_ns, t_after_ns, update_times_ns, seq)
    tb = t if tb is None else _as_i64(tb, "t_before_ns")
    ta = t if ta is None else _as_i64(ta, "t_after_ns")
    if v.size < 2:
        return empty_updates(float(v[0]) if v.size else float("nan"))
    chg, lo, hi, mid, h = brackets(t, v, tb, ta)
    if chg.size == 0:
        return empty_updates(float(v[0]))
    period = float(update_period_ns) if update_period_ns else None
    if period is None and chg.size >= 3:
        period = float(np.median(np.diff(mid[: MEDIAN_CHANGES + 1])))
    use_ts, pinned_ts = False, 0.0
    cand = None
    if timing == "auto" and ts is not None:
        tsf = np.asarray(ts, dtype=np.float64)
        stats = ts_stats(v, chg, lo, hi, tsf, sq, skip_first=False)
        use_ts = stats.credible(chg.size)
        pinned_ts = stats.inside / chg.size
        cand = tsf[chg]
    grid = grid_eligible(period, (hi - lo)[:MEDIAN_CHANGES], chg.size, timing, use_ts)
    plan = Plan(period, int(t[0]) if t_ref_ns is None else int(t_ref_ns), use_ts, grid, pinned_ts,
                float(v[0]), int(chg.size))
    return finish(plan, [place(plan, lo, hi, mid, h, v[chg].astype(np.float64), cand)])


def empty_updates(first: float) -> Updates:
    empty_i = np.zeros(0, dtype=np.int64)
    empty_f = np.zeros(0)
    return Updates(empty_i, empty_f, empty_f, empty_f, empty_i, first, None, "none", 0.0, empty_f)


#: The per-update arrays of a placement, in the order :func:`place` returns them.
FIELDS = ("t_ns", "value", "h_ns", "hc_ns", "block", "rate_rel", "lo_ns", "hi_ns", "phase_ns", "tilt_ns")


def place(plan: Plan, lo: np.ndarray, hi: np.ndarray, mid: np.ndarray, h: np.ndarray, value: np.ndarray,
          cand: np.ndarray | None) -> dict[str, np.ndarray]:
    """Place the updates of whole grid segments (all of them, for a recording in memory).

    Returns :data:`FIELDS` plus ``on`` (pinned to a grid). ``cand``: the sensor's
    timestamps at each change (used when ``plan.use_ts``).
    """
    k = mid.size
    if plan.period and k:
        # A bracket wider than a period (reads that missed updates: a stalled sampler) holds
        # several updates, and the value read after it is the last one's, which happened
        # within a period of the read: place that one (module docstring, "Stalls").
        reach = int(math.ceil(_LAST_UPDATE_REACH * plan.period))
        wide = (hi - lo) > reach
        if wide.any():
            lo = np.where(wide, hi - reach, lo)
            mid = np.where(wide, lo + (hi - lo) // 2, mid)
            h = np.where(wide, (hi - lo).astype(np.float64) * 0.5, h)
    hc = np.zeros(k)
    rate_rel = np.zeros(k)
    block = np.full(k, -1, dtype=np.int64)
    phase = np.zeros(k)
    lever = np.zeros(k)
    on = np.zeros(k, dtype=bool)
    if plan.use_ts and cand is not None:
        inside = np.isfinite(cand) & (cand >= lo - _TS_TOL) & (cand <= hi + _TS_TOL)
        c = np.clip(np.where(inside, cand, mid), lo, hi)
        mid = np.where(inside, np.rint(c).astype(np.int64), mid)
        h = np.where(inside, _TS_TOL, h)
    elif plan.grid and plan.period and k:
        res = _fit_grid(lo, hi, mid, plan.period, plan.ref)
        if res is not None:
            mid, h, hc, block, on, rate_rel, phase, lever = res
    return {"t_ns": mid, "value": value, "h_ns": h, "hc_ns": hc, "block": block, "rate_rel": rate_rel,
            "lo_ns": lo.astype(np.int64), "hi_ns": hi.astype(np.int64), "phase_ns": phase, "tilt_ns": lever,
            "on": on}


def finish(plan: Plan, parts: list[dict[str, np.ndarray]]) -> Updates:
    """One :class:`Updates` from the placed parts of a plan."""
    if not parts:
        return empty_updates(plan.first_value)
    cat = {f: np.concatenate([p[f] for p in parts]) if len(parts) > 1 else parts[0][f] for f in (*FIELDS, "on")}
    on = cat.pop("on")
    if plan.use_ts:
        method, pinned = "timestamps", plan.pinned_ts
    elif on.any():
        method, pinned = "periodic", float(on.mean())
    else:
        method, pinned = "brackets", 0.0
    return Updates(cat["t_ns"], cat["value"], cat["h_ns"], cat["hc_ns"], cat["block"], plan.first_value,
                   plan.period, method, pinned, cat["rate_rel"], cat["lo_ns"], cat["hi_ns"], cat["phase_ns"],
                   cat["tilt_ns"])


def segment_of(mid: np.ndarray, period: float, ref: int) -> tuple[np.ndarray, np.ndarray]:
    """``(block, segment)`` of each update (by its bracket's middle): grid blocks of
    :data:`_GRID_BLOCK_PERIODS` periods, :data:`SEGMENT_BLOCKS` of them a segment."""
    blk = np.floor_divide(mid - ref, int(_GRID_BLOCK_PERIODS * period)).astype(np.int64) + 1
    return blk, np.maximum((blk - 1) // SEGMENT_BLOCKS, 0)


def _fit_grid(
    lo: np.ndarray, hi: np.ndarray, mid: np.ndarray, period: float, ref: int
) -> tuple[Any, ...] | None:
    """Fit a periodic grid over each segment where one holds for all its updates, else per block."""
    n_upd = mid.size
    # Integer update numbers: successive midpoints are a whole number of periods apart.
    steps = np.maximum(np.rint(np.diff(mid).astype(np.float64) / period).astype(np.int64), 1)
    n = np.concatenate([[0], np.cumsum(steps)])
    blk, seg = segment_of(mid, period, ref)
    # A segment's own label (not a block number of any segment): the first segment keeps 0.
    seg_label = np.where(seg == 0, 0, seg * SEGMENT_BLOCKS + 1)
    whole = _fit_grid_blocks(lo, hi, mid, n, period, seg_label)
    full = np.zeros(n_upd, dtype=bool)
    if whole is not None:
        starts = np.flatnonzero(np.concatenate([[True], seg[1:] != seg[:-1]]))
        counts = np.diff(np.concatenate([starts, [n_upd]]))
        all_on = np.logical_and.reduceat(whole[4], starts)
        full = np.repeat(all_on, counts)
        if full.all():
            return whole
    rest = ~full
    part = _fit_grid_blocks(lo[rest], hi[rest], mid[rest], n[rest], period, blk[rest]) if rest.any() else None
    if part is None and not full.any():
        return None
    out = []
    for i, dflt in enumerate((mid, (hi - lo).astype(np.float64) * 0.5, 0.0, -1, False, 0.0, 0.0, 0.0)):
        if whole is not None and full.any():
            a = np.array(whole[i], copy=True)
        else:
            a = np.broadcast_to(np.asarray(dflt), (n_upd,)).copy() if np.ndim(dflt) == 0 else dflt.copy()
        if part is not None:
            a[rest] = part[i]
        else:
            a[rest] = dflt if np.ndim(dflt) == 0 else dflt[rest]
        out.append(a)
    return tuple(out)


def _fit_grid_blocks(
    lo: np.ndarray, hi: np.ndarray, mid: np.ndarray, n: np.ndarray, period: float, blk: np.ndarray
) -> tuple[Any, ...] | None:
    n_upd = mid.size
    starts = np.flatnonzero(np.concatenate([[True], blk[1:] != blk[:-1]]))
    counts = np.diff(np.concatenate([starts, [n_upd]]))
    # Least-squares line mid = a + b * n per block, on values relative to the block's first.
    base_n = np.repeat(n[starts], counts)
    base_t = np.repeat(mid[starts], counts)
    x = (n - base_n).astype(np.float64)
    y = (mid - base_t).astype(np.float64)
    sx = np.add.reduceat(x, starts)
    sy = np.add.reduceat(y, starts)
    sxx = np.add.reduceat(x * x, starts)
    sxy = np.add.reduceat(x * y, starts)
    c = counts.astype(np.float64)
    den = c * sxx - sx * sx
    ok_fit = (counts >= _GRID_MIN_UPDATES) & (den > 0)
    slope_ls = np.where(ok_fit, (c * sxy - sx * sy) / np.where(den > 0, den, 1.0), period)
    # The least-squares slope need not keep every bracket; search the slope that leaves the
    # widest phase range (that width is concave in the slope: golden section), then the
    # range of slopes that keep it non-empty (bisection). Vectorised over blocks.
    lo_r = (lo - base_t).astype(np.float64)
    hi_r = (hi - base_t).astype(np.float64)

    one = starts.size == 1

    def width(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if one:  # the whole recording on one grid: no per-block bookkeeping
            br = b[0] * x
            return np.array([np.max(lo_r - br)]), np.array([np.min(hi_r - br)])
        br = np.repeat(b, counts) * x
        a_lo = np.maximum.reduceat(lo_r - br, starts)
        a_hi = np.minimum.reduceat(hi_r - br, starts)
        return a_lo, a_hi

    span = np.maximum(np.maximum.reduceat(x, starts), 1.0)
    reach = 2.0 * np.maximum.reduceat(hi_r - lo_r, starts) / span
    b_lo, b_hi = slope_ls - reach, slope_ls + reach
    g = 0.5 * (np.sqrt(5.0) - 1.0)
    for _ in range(_GOLDEN_ITERATIONS):
        m1 = b_hi - g * (b_hi - b_lo)
        m2 = b_lo + g * (b_hi - b_lo)
        l1, h1 = width(m1)
        l2, h2 = width(m2)
        left = (h1 - l1) >= (h2 - l2)
        b_hi = np.where(left, m2, b_hi)
        b_lo = np.where(left, b_lo, m1)
    slope = 0.5 * (b_lo + b_hi)
    a_lo, a_hi = width(slope)
    consistent = ok_fit & (a_hi >= a_lo) & (np.abs(slope - period) < 0.01 * period)
    if not consistent.any():
        return None
    # Slopes that still fit every bracket: how far the grid may tilt.
    tilt = np.zeros_like(slope)
    for sign in (-1.0, 1.0):
        good = slope.copy()
        bad = slope + sign * reach
        for _ in range(_BISECT_ITERATIONS):
            mid_b = 0.5 * (good + bad)
            l_m, h_m = width(mid_b)
            ok_m = h_m >= l_m
            good = np.where(ok_m, mid_b, good)
            bad = np.where(ok_m, bad, mid_b)
        tilt = np.maximum(tilt, np.abs(bad - slope))
    a_mid = 0.5 * (a_lo + a_hi)
    half = 0.5 * (a_hi - a_lo)
    on = np.repeat(consistent, counts)
    s_rep = np.repeat(slope, counts)
    grid_t = base_t + np.rint(np.repeat(a_mid, counts) + s_rep * x).astype(np.int64)
    new_mid = np.where(on, np.clip(grid_t, lo, hi), mid)
    new_h = np.where(on, 0.0, (hi - lo).astype(np.float64) * 0.5)
    # A tilt of the grid moves update x by tilt * (its distance from the block's pivot),
    # at most tilt * the block's span; 1 ns more for rounding grid times to integers.
    tilt_rep = np.repeat(tilt, counts)
    span_rep = np.repeat(span, counts)
    # It never exceeds the update's own bracket around its grid time.
    own = np.maximum(new_mid - lo, hi - new_mid).astype(np.float64)
    tilted = np.repeat(half, counts) + tilt_rep * np.maximum(x, span_rep - x)
    new_hc = np.where(on, np.minimum(tilted, own) + 1.0, 0.0)
    # Beyond the shared phase, a grid tilt is a relative error of the clock rate.
    rate = np.where(on, tilt_rep / np.maximum(s_rep, 1.0), 0.0)
    block = np.where(on, blk, -1)
    # The same range split into a shared phase (about the block's middle) and a tilt,
    # which moves each update by ``tilt * (x - span / 2)``: opposite at the two ends.
    phase = np.where(on, np.repeat(half, counts) + tilt_rep * 0.5 * span_rep, 0.0)
    lever = np.where(on, tilt_rep * (x - 0.5 * span_rep), 0.0)
    return new_mid, new_h, new_hc, block, on, rate, phase, lever


