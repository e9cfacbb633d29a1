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
"""

from __future__ import annotations

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
    three changes. When every sample shows a new value the sensor is faster than
    the polling and the result is only the polling period (:func:`characterize`
    says ``resolved: False`` then).
    """
    t, v = _valid(t_ns, values)
    if v.size < 4:
        return None
    chg = np.flatnonzero(v[1:] != v[:-1]) + 1
    if chg.size < 3:
        return None
    mid = t[chg - 1] + (t[chg] - t[chg - 1]) // 2
    return float(np.median(np.diff(mid)))


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
    empty_i = np.zeros(0, dtype=np.int64)
    empty_f = np.zeros(0)
    if v.size < 2:
        first = float(v[0]) if v.size else float("nan")
        return Updates(empty_i, empty_f, empty_f, empty_f, empty_i, first, None, "none", 0.0, empty_f)
    chg = np.flatnonzero(v[1:] != v[:-1]) + 1
    if chg.size == 0:
        return Updates(empty_i, empty_f, empty_f, empty_f, empty_i, float(v[0]), None, "none", 0.0, empty_f)
    lo = tb[chg - 1]
    hi = ta[chg]
    lo = np.minimum(lo, hi)
    mid = lo + (hi - lo) // 2
    h = (hi - lo).astype(np.float64) * 0.5
    hc = np.zeros(chg.size)
    rate_rel = np.zeros(chg.size)
    block = np.full(chg.size, -1, dtype=np.int64)
    period = float(update_period_ns) if update_period_ns else None
    if period is None and chg.size >= 3:
        period = float(np.median(np.diff(mid)))
    method = "brackets"
    pinned = 0.0

    used_ts = False
    if timing == "auto" and ts is not None:
        used_ts, mid, h, pinned = _use_timestamps(v, chg, lo, hi, mid, h, np.asarray(ts, dtype=np.float64), sq)
        if used_ts:
            method = "timestamps"
    phase = np.zeros(chg.size)
    lever = np.zeros(chg.size)
    if not used_ts and timing != "brackets" and period and chg.size >= _GRID_MIN_UPDATES:
        # Only when polling is clearly faster than the sensor do the brackets pin a grid.
        if np.median(hi - lo) < 0.5 * period:
            ref = int(t[0]) if t_ref_ns is None else int(t_ref_ns)
            res = _fit_grid(lo, hi, mid, period, ref)
            if res is not None:
                mid, h, hc, block, pinned, rate_rel, phase, lever = res
                method = "periodic"
    return Updates(mid, v[chg].astype(np.float64), h, hc, block, float(v[0]), period, method, pinned, rate_rel,
                   lo.astype(np.int64), hi.astype(np.int64), phase, lever)


def _use_timestamps(
    v: np.ndarray, chg: np.ndarray, lo: np.ndarray, hi: np.ndarray, mid: np.ndarray, h: np.ndarray,
    ts: np.ndarray, seq: np.ndarray | None = None,
) -> tuple[bool, np.ndarray, np.ndarray, float]:
    """Pin updates to the sensor's own timestamps when they are credible."""
    good = np.isfinite(ts) & (ts > 0)
    if good.sum() < 4:
        return False, mid, h, 0.0
    # Timestamps must move only with the value: a per-read stamp is not an update time.
    same_v = np.ones(v.size, dtype=bool)
    same_v[chg] = False
    same_v[0] = False
    both = same_v[1:] & good[1:] & good[:-1]
    tol = 2000.0  # ns: µs truncation of the stamp and the clock conversion
    if both.any():
        moved = np.abs(ts[1:][both] - ts[:-1][both]) > tol
        # Each pair stands for the reads between its samples (1 each without seq): a stamp that
        # moves in more than 5 % of the reads where the value stayed is a per-read stamp.
        if seq is None:
            reads = float(both.sum())
        else:
            sq = np.asarray(seq, dtype=np.uint64)
            reads = float(np.sum((sq[1:] - sq[:-1])[both].astype(np.float64)))
        if moved.sum() > 0.05 * reads:
            return False, mid, h, 0.0
    cand = ts[chg]
    inside = np.isfinite(cand) & (cand >= lo - tol) & (cand <= hi + tol)
    if inside.mean() < 0.95:
        return False, mid, h, 0.0
    c = np.clip(np.where(inside, cand, mid), lo, hi)
    mid = np.where(inside, np.rint(c).astype(np.int64), mid)
    h = np.where(inside, tol, h)
    return True, mid, h, float(inside.mean())


def _fit_grid(
    lo: np.ndarray, hi: np.ndarray, mid: np.ndarray, period: float, ref: int
) -> tuple[Any, ...] | None:
    """Fit a periodic grid, over the whole recording if it holds there, else per block."""
    n_upd = mid.size
    # Integer update numbers: successive midpoints are a whole number of periods apart.
    steps = np.maximum(np.rint(np.diff(mid).astype(np.float64) / period).astype(np.int64), 1)
    n = np.concatenate([[0], np.cumsum(steps)])
    res = _fit_grid_blocks(lo, hi, mid, n, period, np.zeros(n_upd, dtype=np.int64))
    if res is not None and res[4] == 1.0:
        return res
    blk = np.floor_divide(mid - ref, int(_GRID_BLOCK_PERIODS * period)).astype(np.int64) + 1
    return _fit_grid_blocks(lo, hi, mid, n, period, blk)


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
    return new_mid, new_h, new_hc, block, float(on.mean()), rate, phase, lever


