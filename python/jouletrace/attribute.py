"""Energy per CUDA kernel: a profiler trace lined up with a recording, energy per launch and per name.

Three steps, each usable alone:

1. **Alignment** (:func:`align`): trace times onto the recording's CLOCK_MONOTONIC.
2. **Per name, statistically** (:func:`attribute_names`): mean power and energy per
   launch of every kernel name, with a confidence interval, from many launches.
3. **Per launch, directly** (:func:`attribute_launches`): the counter interpolated
   over each launch, with a bound; below the sensor's resolution for nearly every
   kernel, and flagged so.

:func:`attribute` does all three.

Alignment
=========

A trace's kernel times are epoch nanoseconds (Nsight Systems: session start +
offset; Kineto: ``baseTimeNanoseconds`` + µs). The recording holds
(CLOCK_MONOTONIC, CLOCK_REALTIME) pairs taken during the run, so an epoch time
maps to CLOCK_MONOTONIC through the pair nearest in time (exact integers). The
stated uncertainty is the pairs' own read bracket plus the change of the
clock offset (NTP slew) between pairs around the trace. It assumes the trace's
epoch times are right, i.e. the profiler and jouletrace ran on one host with one
wall clock and the profiler converted its GPU timestamps correctly.

*Sync markers* check and correct that assumption. :class:`jouletrace.markers.SyncMarkers`
emits ranges with unique names (an NVTX range, a ``record_function``
annotation) at CLOCK_MONOTONIC times it records, bracketed by clock reads.
The trace holds them as ranges; matching them by name gives one offset per
range edge; the median is the correction, the largest deviation from it plus
the markers' brackets is the uncertainty.

Concurrency rule (one GPU)
==========================

At each instant the GPU's power is shared **equally among the kernels running
at that instant**; with none running it is *idle* power. A launch's *share time*
is the integral of ``1/m(t)`` over its duration (``m``: kernels running). Both
estimates follow this one rule:

* per launch, each elementary segment's energy (between consecutive kernel
  starts and ends) is divided equally among the kernels active in it;
* per name, the regressor of a name is the sum of its launches' share times in
  the counter interval, and the idle regressor is the time with no kernel.

So, for a name, "power" is the GPU's total power while it runs (its share of it
under overlap), idle included; the names' energies plus the idle energy add up
to the measured total. Kernels on one stream never overlap, and there the rule
is no assumption at all. Under overlap it models the GPU's power with ``m``
kernels as the mean of their solo powers; the ``overlap_fraction`` column says
how much of a name's time that concerns.

Statistical estimate (per name)
===============================

1. *Counter updates.* An update happened after the last sample that still
   shows the old value and no later than the first that shows the new one: it
   lies in that bracket (:func:`counter_updates`).
2. *Intervals.* Between consecutive updates ``k`` and ``k + 1`` the counter
   rose by ``dE_k`` over ``T_k``. Only intervals inside the trace's span (from
   the first kernel start to the last kernel end on the device, or ``span_ns=``)
   are used: outside it the GPU may run work the trace did not see.
3. *Regressors.* For each interval, the share time of every kernel name inside
   it and the idle time (they sum to ``T_k``), from one sweep over the sorted
   kernel starts and ends with cumulative sums and :func:`numpy.bincount`: no
   Python loop per launch (:func:`interval_matrix`).
4. *Where in its bracket each update happened.* A poller on a fixed grid
   against a sensor with its own fixed period sees every update at nearly the
   same place in its bracket, so bracket midpoints are off by a common offset
   (up to half a polling period) — enough to move short neighbouring kernels of
   a repeated training step into the wrong interval. The regressors are
   computed for the bracket average (updates anywhere in their brackets) and
   for common positions across the bracket, searched in four passes, each four
   times finer; the candidate with the least residual is used.
5. *Fit.* ``dE_k = P_idle * idle_k + sum_j P_j * share_kj + e_k``, solved by
   non-negative least squares (:func:`nnls`, Lawson–Hanson), rows weighted by
   ``1 / sqrt(T_k)`` (an interval's noise grows with its length).
6. *Uncertainty.* The confidence interval of every reported number (power,
   energy per launch, total, power above idle; all linear in the coefficients)
   is the union of

   * a block bootstrap over intervals (blocks of about ``n^(1/3)`` consecutive
     intervals keep the correlation between neighbours, which share an update):
     ``bootstrap`` refits on the replicates' normal equations, percentile
     interval — this sees the noise and the non-negativity bound;
   * the unconstrained least-squares estimate plus or minus ``z`` standard
     errors, the larger of the classical one (residual variance with
     ``n - p`` degrees of freedom) and one robust to correlation within the
     same blocks; names whose regressors are collinear (always launched
     together in the same proportion) get an infinite one — this sees how well
     the data separate the names, which the bootstrap cannot;
   * the estimate itself;

   and each side is then widened, in quadrature, by the largest change of the
   estimate among the update positions of step 4 that the residuals cannot rule
   out (within ``3.84 sigma^2`` of the best, an F-like test at 95 %).
   ``enough_data`` marks names with at least ``min_launches`` launches, seen in
   ``min_intervals`` intervals, whose interval is within ``max_relative_ci``
   (5 %) of the estimate.

Then per name: ``power_w`` (W, the GPU's power while it runs, idle included),
``power_above_idle_w``, ``energy_per_launch_j`` = ``power_w`` times the mean
share time per launch (J, idle included), ``dynamic_energy_per_launch_j``
(above idle), ``total_energy_j`` over all its launches in the trace. The
estimate does not need kernels to be longer than the sensor's update period:
it needs many intervals whose kernel mix differs.

Checked on the simulated GPU (H100-like: 100 ms updates, 1 mJ counter, 1 kHz
polling): 8 names of 20 µs to 5 ms over 300 s, energy per launch within 2.5 %
and 95 % intervals holding the truth in 95–97 % of cases; the repeated step
of a real trace (2,700 kernels, 70 names, two streams) in ~93 % of names.

Limits: names that always run together in the same proportion cannot be told
apart (their intervals say so: unbounded); "(other kernels)" (beyond
``max_names``) is one regressor for names of different power, a misfit that
leaks into the others when the lump's mix changes; a counter that sees only
part of each period (Hopper's 25 % power window, if the counter were built from
it) or lags its update instant adds noise and, when the mix changes in step
with the sensor, bias that this model does not see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np

from .errors import InvalidArgumentError
from .traces._util import normalize_pci, normalize_uuid

__all__ = [
    "Alignment",
    "align",
    "CounterUpdates",
    "counter_updates",
    "nnls",
    "share_times",
    "interval_matrix",
    "NameEnergies",
    "LaunchEnergies",
    "Attribution",
    "device_channels",
    "attribute_names",
    "attribute_launches",
    "attribute",
]

_PANDAS_MISSING = (
    "to_pandas() needs pandas, which is not installed; install it with "
    "`pip install pandas`, or use the table's numpy columns (table[column], table.columns)"
)


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------
def _nearest(keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    if keys.size == 1:
        return np.zeros(q.shape, dtype=np.intp)
    i = np.clip(np.searchsorted(keys, q), 1, keys.size - 1)
    return np.where(np.abs(q - keys[i - 1]) <= np.abs(keys[i] - q), i - 1, i)


@dataclass(frozen=True)
class Alignment:
    """How a trace's times map onto a recording's CLOCK_MONOTONIC.

    ``to_monotonic(t_trace)``: the clock pairs' epoch -> monotonic conversion
    (for an epoch-clock trace; the identity for a monotonic-clock table), then
    ``+ correction_ns`` (from sync markers; 0 without). ``uncertainty_ns`` is
    the half-width within which a trace time lands on CLOCK_MONOTONIC.
    """

    #: "clock_pairs", "markers" (clock pairs corrected by sync markers) or "identity".
    method: str
    #: The clock of the trace times this maps: "epoch" or "monotonic".
    trace_clock: str
    #: Added after the clock-pair conversion (ns).
    correction_ns: int
    #: Half-width of the alignment's uncertainty (ns).
    uncertainty_ns: int
    #: (CLOCK_MONOTONIC ns, CLOCK_REALTIME ns, uncertainty ns) pairs used.
    clock_pairs: np.ndarray = field(repr=False)
    #: Sync marker edges matched in the trace.
    markers_matched: int = 0
    #: Each matched marker edge's offset minus the correction (ns).
    residuals_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    notes: tuple[str, ...] = ()

    def _offsets(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.clock_pairs
        return p[:, 0], p[:, 1] - p[:, 0]

    def to_monotonic(self, t_trace_ns: Any) -> np.ndarray:
        """Trace times (int64 ns on ``trace_clock``) -> CLOCK_MONOTONIC ns (int64, exact)."""
        q = np.asarray(t_trace_ns, dtype=np.int64)
        if self.trace_clock == "monotonic":
            return q + self.correction_ns
        mono, off = self._offsets()
        real = mono + off
        return q - off[_nearest(real, q)] + self.correction_ns

    def to_trace(self, t_mono_ns: Any) -> np.ndarray:
        """CLOCK_MONOTONIC ns -> the trace's clock (inverse of :meth:`to_monotonic`)."""
        q = np.asarray(t_mono_ns, dtype=np.int64) - self.correction_ns
        if self.trace_clock == "monotonic":
            return q
        mono, off = self._offsets()
        return q + off[_nearest(mono, q)]


def _pairs_uncertainty(pairs: np.ndarray, lo: int, hi: int) -> tuple[int, list[str]]:
    """Uncertainty (ns) of converting epoch times in [lo, hi] through ``pairs``."""
    notes: list[str] = []
    real = pairs[:, 1]
    off = pairs[:, 1] - pairs[:, 0]
    i0 = max(int(np.searchsorted(real, lo)) - 1, 0)
    i1 = min(int(np.searchsorted(real, hi)) + 1, len(pairs))
    near = off[i0:i1] if i1 > i0 else off[[_nearest(real, np.array([lo]))[0]]]
    slew = int(near.max() - near.min())
    read = int(pairs[:, 2].max()) if pairs.shape[1] > 2 else 0
    if slew:
        notes.append(f"the wall clock moved by {slew} ns against CLOCK_MONOTONIC during the run")
    return read + slew, notes


def align(
    kernels: Any,
    recording: Any,
    *,
    markers: Any = None,
    clock_pairs: np.ndarray | None = None,
) -> Alignment:
    """Line up a trace (a :class:`~jouletrace.traces.KernelTable`) with a recording.

    Epoch-clock traces go through the recording's clock pairs; monotonic-clock
    tables map as they are. With ``markers`` (a
    :class:`jouletrace.markers.SyncMarkers` or its :class:`~jouletrace.markers.MarkerLog`),
    the trace's ranges named like the markers give a correction and an
    uncertainty measured from the trace itself (module docstring). Raises
    :class:`InvalidArgumentError` when the trace and the recording cannot share
    a time base or do not overlap in time.
    """
    clock = getattr(kernels, "clock", "epoch")
    if clock_pairs is None:
        clock_pairs = getattr(recording, "clock_pairs", np.zeros((0, 3), np.int64))
    pairs = np.asarray(clock_pairs, dtype=np.int64).reshape(-1, 3)
    notes: list[str] = []
    if clock == "monotonic":
        al = Alignment("identity", "monotonic", 0, 0, pairs, notes=("trace times are CLOCK_MONOTONIC",))
    else:
        if len(pairs) == 0:
            raise InvalidArgumentError(
                "the trace's times are epoch ns, but the recording holds no clock pairs to "
                "convert them to CLOCK_MONOTONIC; record with a jouletrace Sampler (it takes "
                "them), or pass clock_pairs="
            )
        pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
        lo, hi = _trace_extent(kernels)
        unc, notes = _pairs_uncertainty(pairs, lo, hi)
        notes.append(
            "assumes the trace's epoch times come from this host's wall clock "
            "(use sync markers to check)"
        )
        al = Alignment("clock_pairs", "epoch", 0, unc, pairs, notes=tuple(notes))
    if markers is not None:
        al = _refine_with_markers(al, kernels, markers)
    _check_overlap(al, kernels, recording)
    return al


def _trace_extent(kernels: Any) -> tuple[int, int]:
    parts = [kernels.start_ns, kernels.end_ns]
    ranges = getattr(kernels, "ranges", None)
    if ranges is not None and len(ranges):
        parts += [ranges.start_ns, ranges.end_ns]
    allt = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    if allt.size == 0:
        raise InvalidArgumentError("the trace holds no kernels and no ranges to align")
    return int(allt.min()), int(allt.max())


def _check_overlap(al: Alignment, kernels: Any, recording: Any) -> None:
    t = getattr(recording, "t_ns", None)
    if t is None or len(t) == 0 or len(kernels) == 0:
        return
    k0 = int(al.to_monotonic(kernels.start_ns.min()))
    k1 = int(al.to_monotonic(kernels.end_ns.max()))
    r0, r1 = int(t[0]), int(t[-1])
    if k1 < r0 or k0 > r1:
        gap = (r0 - k1) if k1 < r0 else (k0 - r1)
        where = "before" if k1 < r0 else "after"
        raise InvalidArgumentError(
            f"the trace's kernels lie entirely {where} the recording ({gap / 1e9:.3f} s apart "
            "on CLOCK_MONOTONIC): was the trace taken during this recording, on this host? "
            "Sync markers (jouletrace.markers) align traces from another clock."
        )


def _refine_with_markers(al: Alignment, kernels: Any, markers: Any) -> Alignment:
    log = markers.log() if hasattr(markers, "log") and callable(markers.log) else markers
    ranges = getattr(kernels, "ranges", None)
    if ranges is None or len(ranges) == 0:
        raise InvalidArgumentError(
            "sync markers were given but the trace holds no ranges (NVTX / user annotations); "
            "was NVTX (nsys -t nvtx) or record_function capture on while the markers were emitted?"
        )
    want = {name: i for i, name in enumerate(log.names)}
    rnames = ranges.names
    r_marker = np.array([want.get(rnames[j], -1) for j in range(len(rnames))], dtype=np.int64)
    m_idx = r_marker[ranges.name_id] if len(rnames) else np.zeros(0, np.int64)
    hit = np.flatnonzero(m_idx >= 0)
    if hit.size == 0:
        raise InvalidArgumentError(
            f"none of the {len(log.names)} sync markers ({log.names[0] if log.names else '-'} ...) "
            "is among the trace's ranges; was the trace taken while the markers were emitted?"
        )
    # One range per marker: the first of each name (a marker emitted through two
    # annotation APIs can appear twice with the same start).
    mi = m_idx[hit]
    _, first = np.unique(mi, return_index=True)
    hit, mi = hit[first], mi[first]
    base = al.to_monotonic(np.concatenate([ranges.start_ns[hit], ranges.end_ns[hit]])) - al.correction_ns
    mark_t = np.concatenate([log.start_ns[mi], log.end_ns[mi]])
    mark_h = np.concatenate([log.start_half_ns[mi], log.end_half_ns[mi]])
    offs = mark_t - base
    corr = int(np.median(offs))
    res = offs - corr
    unc = int(np.abs(res).max() + mark_h.max()) + (int(al.clock_pairs[:, 2].max()) if len(al.clock_pairs) else 0)
    notes = [n for n in al.notes if "sync markers" not in n]
    notes.append(
        f"{hit.size} sync marker(s) matched; trace clock corrected by {corr} ns "
        f"(residuals up to {int(np.abs(res).max())} ns)"
    )
    return Alignment("markers", al.trace_clock, corr, unc, al.clock_pairs, int(offs.size),
                     res.astype(np.int64), tuple(notes))


# ---------------------------------------------------------------------------------------------
# Counter updates
# ---------------------------------------------------------------------------------------------
class CounterUpdates(NamedTuple):
    """Observed counter updates: bracket midpoints, half-widths, values."""

    #: Estimated update instants (int64 CLOCK_MONOTONIC ns): bracket midpoints.
    t_ns: np.ndarray
    #: Half-width of each bracket (ns, float64): the timing uncertainty.
    half_ns: np.ndarray
    #: The counter value each update brought (J).
    value: np.ndarray


def counter_updates(
    t_ns: np.ndarray,
    values: np.ndarray,
    t_before_ns: np.ndarray | None = None,
    t_after_ns: np.ndarray | None = None,
) -> CounterUpdates:
    """Locate every update of a cumulative counter between samples (module docstring, step 1).

    The update that changed the value between samples ``j - 1`` and ``j`` lies in
    ``(t_before[j - 1], t_after[j]]``; it is placed at the middle. NaN samples
    are skipped.
    """
    t = np.asarray(t_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    tb = t if t_before_ns is None else np.asarray(t_before_ns, dtype=np.int64)
    ta = t if t_after_ns is None else np.asarray(t_after_ns, dtype=np.int64)
    ok = np.isfinite(v)
    if not ok.all():
        t, v, tb, ta = t[ok], v[ok], tb[ok], ta[ok]
    if v.size < 2:
        z = np.zeros(0, np.int64)
        return CounterUpdates(z, np.zeros(0), np.zeros(0))
    chg = np.flatnonzero(v[1:] != v[:-1]) + 1
    lo = tb[chg - 1]
    hi = np.maximum(ta[chg], lo)
    width = hi - lo
    return CounterUpdates(lo + width // 2, width.astype(np.float64) * 0.5, v[chg])


# ---------------------------------------------------------------------------------------------
# Non-negative least squares (Lawson–Hanson, on the normal equations)
# ---------------------------------------------------------------------------------------------
def _solve_sub(G: np.ndarray, h: np.ndarray, idx: np.ndarray) -> np.ndarray:
    Gs = G[np.ix_(idx, idx)]
    try:
        z = np.linalg.solve(Gs, h[idx])
        if np.all(np.isfinite(z)):
            return z
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(Gs, h[idx], rcond=None)[0]


def _nnls_gram(G: np.ndarray, h: np.ndarray, init: np.ndarray | None = None,
               max_iter: int | None = None) -> np.ndarray:
    """min ||A x - b||^2, x >= 0, given G = A'A and h = A'b (columns scaled to O(1))."""
    p = h.size
    tol = 1e-10 * max(float(np.abs(h).max()) if p else 0.0, 1e-300)
    if init is not None and init.any():
        # Warm start: the passive set of a nearby problem (bootstrap replicates).
        idx = np.flatnonzero(init)
        z = _solve_sub(G, h, idx)
        if np.all(z > 0):
            x = np.zeros(p)
            x[idx] = z
            w = h - G @ x
            w[idx] = 0.0
            if np.all(w <= tol):
                return x
    x = np.zeros(p)
    passive = np.zeros(p, dtype=bool)
    w = h - G @ x
    limit = max_iter if max_iter is not None else 3 * p + 10
    it = 0
    while it < limit:
        cand = np.where(passive, -np.inf, w)
        j = int(np.argmax(cand)) if p else 0
        if p == 0 or cand[j] <= tol:
            break
        passive[j] = True
        while True:
            it += 1
            idx = np.flatnonzero(passive)
            z = np.zeros(p)
            z[idx] = _solve_sub(G, h, idx)
            if np.all(z[idx] > 0):
                x = z
                break
            neg = passive & (z <= 0)
            denom = x[neg] - z[neg]
            alpha = float(np.min(np.where(denom > 0, x[neg] / np.where(denom > 0, denom, 1.0), 0.0)))
            x = x + alpha * (z - x)
            passive &= x > tol * 1e-3
            x[~passive] = 0.0
            if not passive.any() or it >= limit:
                break
        w = h - G @ x
    return np.maximum(x, 0.0)


def nnls(A: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative least squares: ``x >= 0`` minimising ``||A x - b||``; returns ``(x, ||A x - b||)``.

    Lawson–Hanson active-set method on the normal equations, with the columns
    scaled to unit norm first (numpy only). All-zero columns get 0.
    """
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if A.ndim != 2 or b.shape != (A.shape[0],):
        raise InvalidArgumentError(f"nnls: A must be (m, n) and b (m,), got {A.shape} and {b.shape}")
    norms = np.sqrt(np.einsum("ij,ij->j", A, A))
    live = norms > 0
    scale = np.where(live, norms, 1.0)
    As = A / scale
    y = np.zeros(A.shape[1])
    if live.any():
        Al = As[:, live]
        y[live] = _nnls_gram(Al.T @ Al, Al.T @ b)
    x = y / scale
    return x, float(np.linalg.norm(A @ x - b))


# ---------------------------------------------------------------------------------------------
# Share times: one sweep over kernel starts and ends
# ---------------------------------------------------------------------------------------------
class _Sweep(NamedTuple):
    t: np.ndarray  # knot times (int64), sorted
    m: np.ndarray  # kernels running on [t[q], t[q + 1]) (0 after the last)
    w: np.ndarray  # cumulative share time (s) at each knot: integral of [m > 0] / m
    idle: np.ndarray  # cumulative idle time (s) at each knot: integral of [m == 0]
    start_pos: np.ndarray  # knot index of each launch's start
    end_pos: np.ndarray  # knot index of each launch's end


def _sweep(start: np.ndarray, end: np.ndarray) -> _Sweep:
    n = start.size
    times = np.concatenate([start, end])
    # Stable sort of (nearly sorted) runs; a start sorts before an end at the same instant.
    order = np.argsort(times, kind="stable")
    t = times[order]
    m = np.cumsum(np.where(order < n, 1, -1).astype(np.int32))
    dt = np.diff(t).astype(np.float64) * 1e-9
    ms = m[:-1]
    rate = np.zeros(ms.shape)
    np.divide(1.0, ms, out=rate, where=ms > 0)
    w = np.concatenate([[0.0], np.cumsum(dt * rate)])
    idle = np.concatenate([[0.0], np.cumsum(dt * (ms == 0))])
    pos = np.empty(2 * n, dtype=np.intp)
    pos[order] = np.arange(2 * n)
    return _Sweep(t, m, w, idle, pos[:n], pos[n:])


def _sweep_eval(sw: _Sweep, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative share and idle time (s) at arbitrary times ``x``."""
    idx = np.searchsorted(sw.t, x, side="right") - 1
    before = idx < 0
    i = np.maximum(idx, 0)
    d = (x - sw.t[i]).astype(np.float64) * 1e-9
    mm = np.where(before, 0, sw.m[i])
    rate = np.zeros(mm.shape)
    np.divide(1.0, mm, out=rate, where=mm > 0)
    w = np.where(before, 0.0, sw.w[i] + d * rate)
    idle = np.where(before, d, sw.idle[i] + d * (mm == 0))
    return w, idle


def share_times(start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
    """Each launch's share time (s): its duration, divided among the kernels running alongside.

    The integral over the launch of ``1/m(t)`` (``m``: kernels running at ``t``),
    from one sweep over starts and ends. Equal to the duration for kernels that
    never overlap another.
    """
    s = np.asarray(start_ns, dtype=np.int64)
    e = np.asarray(end_ns, dtype=np.int64)
    if s.size == 0:
        return np.zeros(0)
    sw = _sweep(s, e)
    return sw.w[sw.end_pos] - sw.w[sw.start_pos]


def _pieces(sw: _Sweep, start: np.ndarray, end: np.ndarray, u: np.ndarray):  # type: ignore[no-untyped-def]
    """(launch index, interval index, share time) of every launch piece inside the intervals."""
    K = u.size - 1
    wu, _ = _sweep_eval(sw, u)
    k_lo = np.searchsorted(u, start, side="right") - 1
    k_hi = np.maximum(np.searchsorted(u, end, side="left") - 1, k_lo)
    a = np.maximum(k_lo, 0)
    b = np.minimum(k_hi, K - 1)
    cnt = b - a + 1
    keep = np.flatnonzero(cnt > 0)
    cnt_k = cnt[keep]
    if keep.size == cnt_k.sum():  # every launch in exactly one interval (the usual case)
        rep = keep
        k = a[keep]
    else:
        rep = np.repeat(keep, cnt_k)
        offs = np.cumsum(cnt_k) - cnt_k
        k = a[rep] + (np.arange(rep.size) - np.repeat(offs, cnt_k))
    lo = np.where(k == k_lo[rep], sw.w[sw.start_pos[rep]], wu[k])
    hi = np.where(k == k_hi[rep], sw.w[sw.end_pos[rep]], wu[k + 1])
    return rep, k, hi - lo


def interval_matrix(
    start_ns: np.ndarray,
    end_ns: np.ndarray,
    name_id: np.ndarray,
    n_names: int,
    boundaries_ns: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Share time (s) of every name in every interval, and each interval's idle time (s).

    ``boundaries_ns`` (sorted, K + 1 values) delimit K intervals. Returns
    ``(share, idle)`` shaped (K, n_names) and (K,); for each interval
    ``share.sum(1) + idle`` is its length. Vectorised: one sweep, one
    :func:`numpy.bincount`.
    """
    s = np.asarray(start_ns, dtype=np.int64)
    e = np.asarray(end_ns, dtype=np.int64)
    u = np.asarray(boundaries_ns, dtype=np.int64)
    nid = np.asarray(name_id, dtype=np.int64)
    K = max(u.size - 1, 0)
    if K == 0:
        return np.zeros((0, n_names)), np.zeros(0)
    if s.size == 0:
        return np.zeros((K, n_names)), np.diff(u).astype(np.float64) * 1e-9
    # The same routine the estimator runs (on its precomputed sweep), so tests of this
    # function test that one.
    return _matrix_from_sweep(_sweep(s, e), s, e, nid, n_names, u)


# ---------------------------------------------------------------------------------------------
# Result tables
# ---------------------------------------------------------------------------------------------
class _Table:
    """Numpy columns of equal length, a kind ("direct" or "statistical"), sorting, pandas."""

    kind: str = ""
    _default_sort = ""
    _text_columns: tuple[str, ...] = ()

    def __init__(self, columns: dict[str, np.ndarray], meta: dict[str, Any] | None = None) -> None:
        lens = {len(v) for v in columns.values()}
        if len(lens) > 1:
            raise ValueError(f"columns differ in length: {sorted(lens)}")
        self._cols = dict(columns)
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def columns(self) -> list[str]:
        return list(self._cols)

    def __getitem__(self, column: str) -> np.ndarray:
        try:
            return self._cols[column]
        except KeyError:
            raise KeyError(f"no column {column!r}; columns: {', '.join(self._cols)}") from None

    def __getattr__(self, name: str) -> np.ndarray:
        cols = self.__dict__.get("_cols")
        if cols is not None and name in cols:
            return cols[name]
        raise AttributeError(name)

    def __len__(self) -> int:
        return len(next(iter(self._cols.values()))) if self._cols else 0

    def _new(self, cols: dict[str, np.ndarray]) -> _Table:
        out = object.__new__(type(self))
        out.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("_cols",)})
        out._cols = cols
        return out

    def take(self, index: Any) -> _Table:
        """The rows picked by an integer index array or a boolean mask."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return self._new({k: v[idx] for k, v in self._cols.items()})

    def sort(self, by: str | None = None, descending: bool = True) -> _Table:
        """A copy ordered by ``by`` (default: total energy), largest first; NaN last."""
        key = np.asarray(self[by or self._default_sort], dtype=np.float64)
        k = np.where(np.isnan(key), -np.inf if descending else np.inf, key)
        order = np.argsort(-k if descending else k, kind="stable")
        return self.take(order)

    def to_dict(self) -> dict[str, list[Any]]:
        """Plain lists per column, plus ``kind``."""
        out = {k: v.tolist() for k, v in self._cols.items()}
        out["kind"] = [self.kind] * len(self)
        return out

    def to_pandas(self) -> Any:
        """A pandas DataFrame of the columns, with a ``kind`` column. Needs pandas."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError(_PANDAS_MISSING) from exc
        df = pd.DataFrame(self._cols)
        df["kind"] = self.kind
        df.attrs.update({k: v for k, v in self.meta.items() if isinstance(v, (int, float, str))})
        return df

    def to_text(self, limit: int = 20) -> str:
        """A fixed-width text table of the first ``limit`` rows (the ``_text_columns``)."""
        cols = [c for c in self._text_columns if c in self._cols]
        rows = [[_fmt(self._cols[c][i]) for c in cols] for i in range(min(limit, len(self)))]
        widths = [max([len(c)] + [len(r[j]) for r in rows]) for j, c in enumerate(cols)]
        lines = ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(cols, widths, strict=True)))]
        for r in rows:
            lines.append("  ".join(x.rjust(w) if j else x[:w].ljust(w) for j, (x, w) in enumerate(zip(r, widths, strict=True))))
        if len(self) > limit:
            lines.append(f"... {len(self) - limit} more rows")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind} rows={len(self)}>\n{self.to_text(10)}"


def _fmt(x: Any) -> str:
    if isinstance(x, (float, np.floating)):
        if not np.isfinite(x):
            return "nan"
        ax = abs(float(x))
        return f"{x:.4g}" if (ax >= 1e-3 and ax < 1e6) or ax == 0 else f"{x:.3e}"
    if isinstance(x, str):
        return x if len(x) <= 48 else x[:45] + "..."
    return str(x)


class NameEnergies(_Table):
    """Per kernel name, statistical: power and energy per launch with confidence intervals.

    One row per (device, name). Columns: ``device`` (trace device id), ``name``,
    ``name_id`` (into the trace's names; -1 for the lumped "(other kernels)"),
    ``launches``, ``active_s`` (sum of durations), ``share_s`` (sum of share
    times, module docstring), ``overlap_fraction`` (1 - share/active),
    ``intervals`` (counter intervals it was seen in), ``power_w`` (the GPU's
    power while it runs, idle included) with ``power_ci_low_w``/``power_ci_high_w``,
    ``power_above_idle_w`` (+ CI), ``energy_per_launch_j`` (+ CI),
    ``dynamic_energy_per_launch_j`` (above idle, + CI), ``total_energy_j`` (+ CI,
    all its launches in the trace), ``enough_data`` (launches and intervals
    above the thresholds). ``kind`` = "statistical".

    ``meta`` holds, per device, the fit: ``idle_power_w`` (+ CI), intervals
    used, residual RMS, R², confidence level, bootstrap size and block length,
    the update period and timing seen.
    """

    kind = "statistical"
    _default_sort = "total_energy_j"
    _text_columns = ("name", "device", "launches", "share_s", "power_w", "energy_per_launch_j",
                     "energy_per_launch_ci_low_j", "energy_per_launch_ci_high_j", "total_energy_j",
                     "enough_data")


class LaunchEnergies(_Table):
    """Per kernel launch, direct: the counter interpolated over each launch, with a bound.

    Columns: ``index`` (row in the trace's KernelTable), ``device``, ``name_id``,
    ``name``, ``start_ns``/``end_ns`` (CLOCK_MONOTONIC), ``duration_s``,
    ``share_s``, ``energy_j`` (its share of the interpolated energy, idle
    included), ``bound_j`` (the counter bound of the launch's window),
    ``flags`` (``jouletrace.integrate`` flag bits), ``below_resolution``
    (shorter than ten sensor update periods: the number says little about
    this launch, see the per-name statistical estimate). ``kind`` = "direct".
    """

    kind = "direct"
    _default_sort = "energy_j"
    _text_columns = ("name", "device", "start_ns", "duration_s", "energy_j", "bound_j",
                     "below_resolution")

    def by_name(self) -> dict[str, np.ndarray]:
        """Direct energies summed per (device, name): ``device``, ``name``, ``launches``,
        ``energy_j``, ``bound_j`` (bounds added: conservative), ``below_resolution_fraction``."""
        dev = np.asarray(self["device"], dtype=np.int64)
        nid = np.asarray(self["name_id"], dtype=np.int64)
        key = dev * (int(nid.max()) + 2 if nid.size else 1) + nid
        uk, inv = np.unique(key, return_inverse=True)
        first = np.zeros(uk.size, dtype=np.intp)
        first[inv[::-1]] = np.arange(inv.size)[::-1]
        n = np.bincount(inv, minlength=uk.size)
        return {
            "device": dev[first],
            "name": np.asarray(self["name"])[first],
            "launches": n,
            "energy_j": np.bincount(inv, weights=self["energy_j"], minlength=uk.size),
            "bound_j": np.bincount(inv, weights=self["bound_j"], minlength=uk.size),
            "below_resolution_fraction": np.bincount(
                inv, weights=self["below_resolution"].astype(np.float64), minlength=uk.size) / n,
        }


# ---------------------------------------------------------------------------------------------
# Devices
# ---------------------------------------------------------------------------------------------
def device_channels(
    kernels: Any, recording: Any, device_map: dict[int, str] | None = None
) -> dict[int, tuple[str, str]]:
    """Which energy channel of the recording each trace device's kernels ran on.

    ``{trace_device_id: (channel, how)}`` with ``how`` = "given", "uuid", "pci"
    or "guessed" (trace device N -> ``gpuN.energy_j``, or the only GPU channel
    when both sides have one device). Devices with no channel are left out.
    """
    channels = list(getattr(recording, "channels", []))
    gpu_ch = [c for c in channels if c.startswith("gpu") and c.endswith(".energy_j")]
    meta = getattr(recording, "metadata", {}).get("device", {}) or {}
    by_uuid: dict[str, str] = {}
    by_pci: dict[str, str] = {}
    for c in gpu_ch:
        dev = c.split(".", 1)[0]
        u = normalize_uuid(meta.get(f"{dev}.uuid"))
        p = normalize_pci(meta.get(f"{dev}.pci_bus_id"))
        if u:
            by_uuid[u] = c
        if p:
            by_pci[p] = c
    out: dict[int, tuple[str, str]] = {}
    devs = sorted({int(d) for d in np.unique(kernels.device)}) if len(kernels) else []
    for d in devs:
        if device_map and d in device_map:
            ch = device_map[d]
            ch = ch if ch.endswith("_j") else f"{ch}.energy_j"
            if ch not in channels:
                raise InvalidArgumentError(f"device_map names {ch!r}, which the recording lacks")
            out[d] = (ch, "given")
            continue
        info = kernels.device_info(d) if hasattr(kernels, "device_info") else None
        info = info or {}
        u = normalize_uuid(info.get("uuid"))
        p = normalize_pci(info.get("pci_bus_id"))
        if u and u in by_uuid:
            out[d] = (by_uuid[u], "uuid")
        elif p and p in by_pci:
            out[d] = (by_pci[p], "pci")
        elif f"gpu{d}.energy_j" in channels:
            out[d] = (f"gpu{d}.energy_j", "guessed")
        elif len(devs) == 1 and len(gpu_ch) == 1:
            out[d] = (gpu_ch[0], "guessed")
    return out


# ---------------------------------------------------------------------------------------------
# The statistical estimate
# ---------------------------------------------------------------------------------------------
def _block_grams(Xs: np.ndarray, yw: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block of ``block`` consecutive rows: X'X (nb, q, q) and X'y (nb, q)."""
    n, q = Xs.shape
    nb = math.ceil(n / block)
    pad = nb * block - n
    Xp = np.concatenate([Xs, np.zeros((pad, q))]).reshape(nb, block, q)
    yp = np.concatenate([yw, np.zeros(pad)]).reshape(nb, block)
    return np.matmul(Xp.transpose(0, 2, 1), Xp), np.einsum("blq,bl->bq", Xp, yp)


@dataclass
class _Fit:
    coef: np.ndarray  # (p,) W: names..., idle last
    reps: np.ndarray  # (B, p)
    n_int: int
    rms_j: float
    r2: float
    block: int
    cov: np.ndarray  # (p, p) cluster-robust covariance of the linear model (inf: not identifiable)
    ols: np.ndarray  # (p,) the unconstrained least-squares coefficients
    cov_classical: np.ndarray  # (p, p) sigma^2 (X'X)^-1, sigma^2 from the residuals with n - p dof
    rank_deficient: int  # directions of the regressors that the data cannot tell apart


def _fit(X: np.ndarray, y: np.ndarray, T: np.ndarray, bootstrap: int, seed: int | None) -> _Fit:
    n, p = X.shape
    sw = 1.0 / np.sqrt(T / np.median(T))
    Xw = X * sw[:, None]
    yw = y * sw
    norms = np.sqrt(np.einsum("ij,ij->j", Xw, Xw))
    live = norms > 0
    scale = np.where(live, norms, 1.0)
    Xs = (Xw / scale)[:, live]
    q = Xs.shape[1]
    G = Xs.T @ Xs
    h = Xs.T @ yw
    ys = _nnls_gram(G, h)
    coef = np.zeros(p)
    coef[live] = ys / scale[live]
    resid = y - X @ coef
    rms = float(np.sqrt(np.mean(resid**2))) if n else float("nan")
    ss = float(np.sum((y - y.mean()) ** 2)) if n else 0.0
    r2 = 1.0 - float(np.sum(resid**2)) / ss if ss > 0 else float("nan")
    block = max(1, int(round(n ** (1.0 / 3.0))))
    cov, deficient, ys_ols, cov_c = _robust_cov(G, h, Xs, yw - Xs @ ys, block)
    cov_full = np.full((p, p), np.inf)
    cov_cl = np.full((p, p), np.inf)
    li = np.flatnonzero(live)
    cov_full[np.ix_(li, li)] = cov / np.outer(scale[live], scale[live])
    cov_cl[np.ix_(li, li)] = cov_c / np.outer(scale[live], scale[live])
    ols = np.zeros(p)
    ols[live] = ys_ols / scale[live]
    reps = np.full((bootstrap, p), np.nan)
    if bootstrap > 0 and n > 1:
        # Block bootstrap: draw whole blocks of consecutive intervals with replacement;
        # a replicate's normal equations are the drawn blocks' sums.
        rng = np.random.default_rng(seed)
        Gblk, hblk = _block_grams(Xs, yw, block)
        nb = Gblk.shape[0]
        Gflat = Gblk.reshape(nb, q * q)
        init = ys > 0
        chunk = max(1, int(4e6 // max(q * q, 1)))
        for c0 in range(0, bootstrap, chunk):
            m = min(chunk, bootstrap - c0)
            draws = rng.integers(0, nb, size=(m, nb))
            counts = np.zeros((m, nb))
            np.add.at(counts, (np.repeat(np.arange(m), nb), draws.ravel()), 1.0)
            Gb = (counts @ Gflat).reshape(m, q, q)
            hb = counts @ hblk
            for i in range(m):
                r = np.zeros(p)
                r[live] = _nnls_gram(Gb[i], hb[i], init=init) / scale[live]
                reps[c0 + i] = r
    return _Fit(coef, reps, n, rms, r2, block, cov_full, ols, cov_cl, deficient)


def _robust_cov(G: np.ndarray, h: np.ndarray, Xs: np.ndarray, rs: np.ndarray,
                block: int) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Covariance of the unconstrained coefficients, robust to correlation within blocks,
    and the unconstrained solution itself.

    Sandwich ``G^-1 M G^-1`` with ``M`` the sum over blocks of consecutive
    intervals of ``(X_b' r_b)(X_b' r_b)'``. Directions in which the regressors
    are (nearly) collinear cannot be estimated from the data: every
    coefficient that has weight in one gets an infinite variance.
    """
    n, q = Xs.shape
    if q == 0:
        return np.zeros((0, 0)), 0, np.zeros(0), np.zeros((0, 0))
    lam, V = np.linalg.eigh(G)
    tiny = lam <= 1e-9 * max(float(lam.max()), 1e-300)
    inv = np.zeros_like(lam)
    np.divide(1.0, lam, out=inv, where=~tiny)
    Ginv = (V * inv) @ V.T
    nb = math.ceil(n / block)
    pad = nb * block - n
    Xp = np.concatenate([Xs, np.zeros((pad, q))]).reshape(nb, block, q)
    rp = np.concatenate([rs, np.zeros(pad)]).reshape(nb, block)
    g = np.einsum("blq,bl->bq", Xp, rp)
    M = g.T @ g * (nb / max(nb - 1, 1))
    cov = Ginv @ M @ Ginv
    # The classical one too: with few blocks per coefficient the sandwich runs low.
    sigma2 = float(rs @ rs) / max(n - q, 1)
    cov_c = sigma2 * Ginv
    if tiny.any():
        bad = (V[:, tiny] ** 2).sum(axis=1) > 1e-6
        for c in (cov, cov_c):
            c[bad, :] = np.inf
            c[:, bad] = np.inf
    return cov, int(tiny.sum()), Ginv @ h, cov_c


def _ci(reps: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    a = (1.0 - level) / 2.0
    if reps.shape[0] == 0 or np.all(np.isnan(reps)):
        nan = np.full(reps.shape[1:], np.nan)
        return nan, nan.copy()
    return np.nanquantile(reps, a, axis=0), np.nanquantile(reps, 1.0 - a, axis=0)


def _usable_intervals(upd: CounterUpdates, span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boundaries, dE and a keep-mask of the intervals fully inside ``span``."""
    u = upd.t_ns
    dE = np.diff(upd.value)
    T = np.diff(u)
    h = upd.half_ns
    inside = (u[:-1] >= span[0]) & (u[1:] <= span[1])
    med = float(np.median(T)) if T.size else 0.0
    sharp = (h[:-1] <= 0.25 * med) & (h[1:] <= 0.25 * med)
    keep = inside & sharp & (T > 0) & (dE >= 0)
    return u, dE, keep


def attribute_names(
    recording: Any,
    kernels: Any,
    *,
    alignment: Alignment | None = None,
    device_map: dict[int, str] | None = None,
    span_ns: tuple[int, int] | None = None,
    by: str = "name",
    max_names: int = 128,
    bootstrap: int = 400,
    level: float = 0.95,
    min_launches: int = 100,
    min_intervals: int = 30,
    max_relative_ci: float = 0.05,
    timing: bool = True,
    seed: int | None = 0,
) -> NameEnergies:
    """Per kernel name, statistically: power and energy per launch with a confidence interval.

    ``kernels`` is a :class:`~jouletrace.traces.KernelTable`; ``alignment``
    defaults to :func:`align` (clock pairs). ``span_ns`` (CLOCK_MONOTONIC)
    limits the counter intervals used (default: first kernel start to last
    kernel end, per device). ``by`` = "name" or "short_name" (nsys).
    ``max_names``: names beyond this many, ranked by share time, are lumped
    into one "(other kernels)" regressor. ``bootstrap`` replicates give the
    ``level`` confidence intervals (``seed`` for reproducibility; 0 replicates:
    no intervals). ``timing=False`` leaves out the widening for the update
    offsets the data allow. ``min_launches``, ``min_intervals`` and
    ``max_relative_ci`` decide ``enough_data``. Method: module docstring.
    """
    if alignment is None:
        alignment = align(kernels, recording)
    names, name_id = _grouped_names(kernels, by)
    chans = device_channels(kernels, recording, device_map)
    if not chans:
        raise InvalidArgumentError(
            "no energy channel of the recording matches the trace's devices "
            f"(trace devices {sorted(set(np.unique(kernels.device).tolist()))}, recording "
            f"channels {recording.channels}); pass device_map={{trace_device: 'gpu0'}}"
        )
    cols: dict[str, list[np.ndarray]] = {}
    meta: dict[str, Any] = {"alignment": alignment, "level": level, "bootstrap": bootstrap,
                            "by": by, "devices": {}}
    for dev, (ch, how) in chans.items():
        sel = np.flatnonzero(kernels.device == dev)
        s = alignment.to_monotonic(kernels.start_ns[sel])
        e = alignment.to_monotonic(kernels.end_ns[sel])
        nid = name_id[sel]
        order = np.argsort(s, kind="stable")
        s, e, nid = s[order], e[order], nid[order]
        res, dmeta = _names_one_device(
            recording, ch, s, e, nid, names, span_ns, max_names, bootstrap, level,
            min_launches, min_intervals, max_relative_ci, timing, seed,
        )
        dmeta["channel"] = ch
        dmeta["device_mapping"] = how
        meta["devices"][dev] = dmeta
        res["device"] = np.full(len(res["name"]), dev, dtype=np.int64)
        for k, v in res.items():
            cols.setdefault(k, []).append(v)
    first = ["device", "name", "name_id"]
    out = {k: np.concatenate(cols[k]) for k in first + [k for k in cols if k not in first]}
    return NameEnergies(out, meta).sort()  # type: ignore[return-value]


def _grouped_names(kernels: Any, by: str) -> tuple[list[str], np.ndarray]:
    if by == "name":
        return list(kernels.names), np.asarray(kernels.name_id, dtype=np.int64)
    if by == "short_name":
        short = kernels.short_names or kernels.names
        uniq, inv = np.unique(np.asarray(short, dtype=object), return_inverse=True)
        return [str(x) for x in uniq], inv[np.asarray(kernels.name_id)].astype(np.int64)
    raise InvalidArgumentError(f"by must be 'name' or 'short_name', got {by!r}")


def _names_one_device(recording, ch, s, e, nid, names, span_ns, max_names, bootstrap, level,  # type: ignore[no-untyped-def]
                      min_launches, min_intervals, max_relative_ci, timing, seed):
    n_all = len(names)
    upd = counter_updates(recording.t_ns, recording[ch], getattr(recording, "t_before_ns", None),
                          getattr(recording, "t_after_ns", None))
    span = span_ns if span_ns is not None else (int(s.min()), int(e.max())) if s.size else (0, 0)
    sw = _sweep(s, e) if s.size else None
    share_launch = (sw.w[sw.end_pos] - sw.w[sw.start_pos]) if sw is not None else np.zeros(0)
    launches = np.bincount(nid, minlength=n_all)
    active = np.bincount(nid, weights=(e - s).astype(np.float64) * 1e-9, minlength=n_all)
    share_tot = np.bincount(nid, weights=share_launch, minlength=n_all)
    present = np.flatnonzero(launches > 0)
    # Regressor groups: the max_names names with most share time, then "(other kernels)".
    rank = present[np.argsort(-share_tot[present], kind="stable")]
    own = rank[:max_names]
    lumped = rank[max_names:]
    group_of = np.full(n_all, -1, dtype=np.int64)
    group_of[own] = np.arange(own.size)
    if lumped.size:
        group_of[lumped] = own.size
    n_groups = own.size + (1 if lumped.size else 0)
    u_all, dE_all, keep = (
        _usable_intervals(upd, span) if upd.t_ns.size >= 2 else (np.zeros(0, np.int64), np.zeros(0), np.zeros(0, bool))
    )
    dmeta: dict[str, Any] = {"updates": int(upd.t_ns.size)}
    if upd.t_ns.size >= 3:
        dmeta["update_period_ns"] = float(np.median(np.diff(upd.t_ns)))
        dmeta["timing_half_width_ns"] = float(np.median(upd.half_ns))
    if keep.sum() < 2 or s.size == 0:
        share_k = np.zeros((0, n_groups))
        idle_k = np.zeros(0)
        dE = np.zeros(0)
        T = np.zeros(0)
    else:
        # Regression calibration: each update's time is only known to lie in its bracket,
        # so every interval's regressors are averaged over where its edges may be.
        dE = dE_all[keep]
        T = np.diff(u_all).astype(np.float64)[keep] * 1e-9
        Xbest, cand_coef, tmeta = _offset_search(sw, s, e, group_of[nid], n_groups, u_all,
                                                 upd.half_ns, keep, dE, T)
        share_k, idle_k = Xbest[:, :n_groups], Xbest[:, n_groups]
        dmeta.update(tmeta)
    X = np.column_stack([share_k, idle_k]) if T.size else np.zeros((0, n_groups + 1))
    dmeta["intervals"] = int(T.size)
    jit = np.zeros((0, n_groups + 1))
    if T.size >= 2:
        fit = _fit(X, dE, T, bootstrap, seed)
        coef, reps = fit.coef, fit.reps
        if timing:
            jit = cand_coef
        dmeta.update(residual_rms_j=fit.rms_j, r2=fit.r2, block_length=fit.block,
                     collinear_directions=fit.rank_deficient)
    else:
        coef = np.full(n_groups + 1, np.nan)
        reps = np.full((max(bootstrap, 0), n_groups + 1), np.nan)
        dmeta["note"] = "fewer than two counter intervals inside the trace's span: no estimate"
    p_idle = coef[-1]
    inf_cov = np.full((n_groups + 1, n_groups + 1), np.inf)
    cov = fit.cov if T.size >= 2 else inf_cov
    cov_c = fit.cov_classical if T.size >= 2 else inf_cov

    def lin_se(A: np.ndarray) -> np.ndarray:
        return np.maximum(_lin_se(cov, A), _lin_se(cov_c, A))

    idle_row = np.zeros((1, n_groups + 1))
    idle_row[0, -1] = 1.0
    ols = fit.ols if T.size >= 2 else np.full(n_groups + 1, np.nan)
    i_lo, i_hi = _interval(np.array([p_idle]), reps[:, -1:], idle_row @ ols, lin_se(idle_row),
                           jit @ idle_row.T, level, True)
    dmeta.update(idle_power_w=float(p_idle), idle_power_ci_low_w=float(i_lo[0]),
                 idle_power_ci_high_w=float(i_hi[0]),
                 idle_energy_j=float(p_idle * idle_k.sum()) if T.size else float("nan"))
    # Rows: one per own name, one for the lump.
    g_launch = np.bincount(group_of[present], weights=launches[present], minlength=n_groups)
    g_active = np.bincount(group_of[present], weights=active[present], minlength=n_groups)
    g_share = np.bincount(group_of[present], weights=share_tot[present], minlength=n_groups)
    g_int = (share_k > 0).sum(axis=0) if share_k.size else np.zeros(n_groups, np.int64)
    mean_share = np.divide(g_share, g_launch, out=np.full(n_groups, np.nan), where=g_launch > 0)
    P = coef[:n_groups]
    Pr = reps[:, :n_groups]
    above = Pr - reps[:, -1:]
    # Each reported number is linear in the coefficients: its rows of A in A @ coef.
    eye = np.eye(n_groups, n_groups + 1)
    minus_idle = eye.copy()
    minus_idle[:, -1] = -1.0
    ms = np.nan_to_num(mean_share)

    def ci(est: np.ndarray, rep: np.ndarray, A: np.ndarray, nonneg: bool) -> tuple[np.ndarray, np.ndarray]:
        return _interval(est, rep, A @ ols, lin_se(A), jit @ A.T, level, nonneg)

    row_names = np.empty(n_groups, dtype=object)
    row_names[: own.size] = [names[i] for i in own]
    row_ids = np.concatenate([own, [-1] * (n_groups - own.size)]).astype(np.int64)
    if lumped.size:
        row_names[-1] = f"(other kernels: {lumped.size} names)"
    p_lo, p_hi = ci(P, Pr, eye, True)
    a_lo, a_hi = ci(P - p_idle, above, minus_idle, False)
    epl_lo, epl_hi = ci(P * mean_share, Pr * mean_share, eye * ms[:, None], True)
    dyn_lo, dyn_hi = ci((P - p_idle) * mean_share, above * mean_share, minus_idle * ms[:, None], False)
    tot_lo, tot_hi = ci(P * g_share, Pr * g_share, eye * g_share[:, None], True)
    half = 0.5 * (p_hi - p_lo)
    resolved = np.isfinite(half) & (half <= max_relative_ci * np.abs(P))
    res = {
        "name": row_names,
        "name_id": row_ids,
        "launches": g_launch.astype(np.int64),
        "active_s": g_active,
        "share_s": g_share,
        "overlap_fraction": np.divide(g_active - g_share, g_active, out=np.zeros(n_groups), where=g_active > 0),
        "intervals": np.asarray(g_int, dtype=np.int64),
        "power_w": P,
        "power_ci_low_w": p_lo,
        "power_ci_high_w": p_hi,
        "power_above_idle_w": P - p_idle,
        "power_above_idle_ci_low_w": a_lo,
        "power_above_idle_ci_high_w": a_hi,
        "energy_per_launch_j": P * mean_share,
        "energy_per_launch_ci_low_j": epl_lo,
        "energy_per_launch_ci_high_j": epl_hi,
        "dynamic_energy_per_launch_j": (P - p_idle) * mean_share,
        "dynamic_energy_per_launch_ci_low_j": dyn_lo,
        "dynamic_energy_per_launch_ci_high_j": dyn_hi,
        "total_energy_j": P * g_share,
        "total_energy_ci_low_j": tot_lo,
        "total_energy_ci_high_j": tot_hi,
        "resolved": resolved,
        "enough_data": (g_launch >= min_launches) & (np.asarray(g_int) >= min_intervals) & resolved,
    }
    return res, dmeta


def _lin_se(cov: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Standard error of each row of ``A @ coef`` (inf where a row leans on an unidentifiable coefficient)."""
    bad = ~np.isfinite(np.diag(cov))
    finite = np.where(np.isfinite(cov), cov, 0.0)
    var = np.einsum("ri,ij,rj->r", A, finite, A)
    se = np.sqrt(np.maximum(var, 0.0))
    leans = (np.abs(A[:, bad]) > 0).any(axis=1) if bad.any() else np.zeros(A.shape[0], bool)
    return np.where(leans, np.inf, se)


def _interval(est: np.ndarray, reps: np.ndarray, lin: np.ndarray, se: np.ndarray,
              timing: np.ndarray, level: float, nonneg: bool) -> tuple[np.ndarray, np.ndarray]:
    """The union of the bootstrap percentile interval, the estimate, and ``lin +- z se``
    (``lin``: the unconstrained estimate), each side then widened in quadrature by
    the largest change among the update offsets the data allow (module docstring)."""
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    b_lo, b_hi = _ci(reps, level)
    lo = np.fmin(np.fmin(b_lo, est), lin - z * se)
    hi = np.fmax(np.fmax(b_hi, est), lin + z * se)
    if timing.shape[0] >= 2:
        t = np.max(np.abs(timing - est), axis=0)
        lo = est - np.hypot(est - lo, t)
        hi = est + np.hypot(hi - est, t)
    if nonneg:
        lo = np.maximum(lo, 0.0)
    return lo, hi


def _matrix_from_sweep(sw: _Sweep, s: np.ndarray, e: np.ndarray, gid: np.ndarray, n_groups: int,
                       u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    K = u.size - 1
    _, idle_u = _sweep_eval(sw, u)
    rep, k, val = _pieces(sw, s, e, u)
    share = np.bincount(k * n_groups + gid[rep], weights=val, minlength=K * n_groups)
    return share.reshape(K, n_groups), np.diff(idle_u)


def _weighted_nnls(X: np.ndarray, y: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The fit of :func:`_fit` alone (rows weighted by 1/sqrt(T))."""
    sw = 1.0 / np.sqrt(T / np.median(T))
    return nnls(X * sw[:, None], y * sw)[0]


_LEVELS = 9  # positions across each update's bracket, per search pass
_PASSES = 4  # passes of the update-offset search, each 4 times finer


def _bracket_cumulative(sw: _Sweep, s: np.ndarray, e: np.ndarray, gid: np.ndarray, n_groups: int,
                        u: np.ndarray, h: np.ndarray, fracs: np.ndarray) -> np.ndarray:
    """Cumulative share and idle time (s) at ``u_k + f h_k`` for each fraction ``f`` of ``fracs``.

    Row ``len(fracs) * k + j`` is update ``k`` at ``fracs[j]`` (sorted, within [-1, 1]),
    counted from the first position: shape (len(u) * len(fracs), n_groups + 1).
    """
    r = (u[:, None] + np.rint(h[:, None] * fracs[None, :]).astype(np.int64)).ravel()
    share, idle = _matrix_from_sweep(sw, s, e, gid, n_groups, r)
    return np.concatenate([np.zeros((1, n_groups + 1)), np.cumsum(np.column_stack([share, idle]), axis=0)])


def _offset_search(sw: _Sweep, s: np.ndarray, e: np.ndarray, gid: np.ndarray, n_groups: int,
                   u: np.ndarray, half: np.ndarray, keep: np.ndarray, y: np.ndarray,
                   T: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Where inside their brackets the counter updates happen (module docstring).

    Polling on a fixed grid against a sensor with its own fixed period puts every
    update at nearly the same place in its bracket, so the bracket midpoints are
    off by a common offset. Candidates: the bracket average (each update anywhere
    in its bracket: the regressors averaged over it, trapezoid rule) and common
    positions ``u_k + f h_k``, searched in passes of ``_LEVELS`` positions, each
    pass 4 times finer around the best so far. The one with the least weighted
    residual wins; every candidate whose residual sum of squares is within
    ``3.84 sigma^2`` of it (an F-like test at 95 %) is kept, and the spread of
    their coefficients widens the confidence intervals.
    Returns the regressors of the best, the kept candidates' coefficients, metadata.
    """
    gaps = np.diff(u).astype(np.float64)
    left = np.concatenate([[gaps[0]], gaps])
    right = np.concatenate([gaps, [gaps[-1]]])
    h = np.minimum(half, 0.45 * np.minimum(left, right))
    ki = np.flatnonzero(keep)
    n_upd = u.size
    wsq = 1.0 / np.sqrt(T / np.median(T))
    results: list[tuple[float, float | None, np.ndarray, np.ndarray]] = []  # rss, frac, coef, X

    def evaluate(X: np.ndarray, frac: float | None) -> None:
        c = _weighted_nnls(X, y, T)
        r = (X @ c - y) * wsq
        results.append((float(r @ r), frac, c, X))

    fracs = np.linspace(-1.0, 1.0, _LEVELS)
    C = _bracket_cumulative(sw, s, e, gid, n_groups, u, h, fracs)
    wts = np.full(_LEVELS, 1.0)
    wts[[0, -1]] = 0.5
    wts /= wts.sum()
    at_upd = np.einsum("kjp,j->kp", C.reshape(n_upd, _LEVELS, -1), wts)
    evaluate(np.diff(at_upd, axis=0)[ki], None)
    step = 2.0 / (_LEVELS - 1)
    for p in range(_PASSES):
        if p:
            best_f = min((r for r in results if r[1] is not None), key=lambda r: r[0])[1]
            fracs = np.unique(np.clip(best_f + np.linspace(-step, step, _LEVELS), -1.0, 1.0))
            step /= 4.0
            C = _bracket_cumulative(sw, s, e, gid, n_groups, u, h, fracs)
        L = fracs.size
        base = np.arange(n_upd) * L
        for j in range(L):
            pos = base + j
            evaluate(C[pos[ki + 1]] - C[pos[ki]], float(fracs[j]))
        if p == 0 and results[0][0] <= min(r[0] for r in results[1:]):
            break  # the bracket average fits best: updates are spread over their brackets
    rss = np.array([r[0] for r in results])
    b = int(np.argmin(rss))
    sigma2 = rss[b] / max(T.size - n_groups - 1, 1)
    ok = rss - rss[b] <= 3.84 * sigma2
    coefs = np.array([r[2] for r in results])[ok]
    frac = results[b][1]
    meta = {
        "update_timing": "bracket average" if frac is None else "common offset",
        "update_offset_ns": None if frac is None else float(frac * np.median(h)),
        "offsets_accepted": int(ok.sum()),
    }
    return results[b][3], coefs, meta


# ---------------------------------------------------------------------------------------------
# Per launch (direct) and everything together
# ---------------------------------------------------------------------------------------------
def attribute_launches(
    recording: Any,
    kernels: Any,
    *,
    alignment: Alignment | None = None,
    device_map: dict[int, str] | None = None,
    power_limit_w: float | None = None,
) -> LaunchEnergies:
    """Per launch, directly: each launch's share of the interpolated counter energy, with a bound.

    The counter is interpolated between its located updates and integrated
    over every elementary segment between consecutive kernel starts and ends
    (:meth:`jouletrace.Recording.energies`, the windows' method); a segment's
    energy is shared equally among the kernels running in it (module
    docstring), so the launches' energies plus the energy of the segments with
    no kernel add up to the energy over the trace's span. ``bound_j`` is the
    bound of the launch's whole window; ``below_resolution`` marks launches
    shorter than ten sensor update periods, which for kernels is nearly all of
    them: there the number is the interval's mean power times the launch's
    share time, not this launch's own, and the per-name statistical estimate
    (:func:`attribute_names`) is the one to use.

    For those launches the bound is also at least what the board's power
    limit allows: the launch's share energy lies between 0 and
    ``power_limit_w`` times its share time, so the error of ``r * share`` is at
    most ``max(limit - r, r) * share``. The limit defaults to the recording's
    ``gpuN.power_limit_w`` (NVML); without one, ``bound_j`` is the window
    bound of :mod:`jouletrace.integrate` alone, whose coverage was checked for
    windows of 1 ms and more.
    """
    from .integrate import FLAG_BELOW_RESOLUTION

    if alignment is None:
        alignment = align(kernels, recording)
    chans = device_channels(kernels, recording, device_map)
    cols: dict[str, list[np.ndarray]] = {}
    meta: dict[str, Any] = {"alignment": alignment, "devices": {}}
    names_arr = np.empty(len(kernels.names), dtype=object)
    names_arr[:] = list(kernels.names)
    for dev, (ch, how) in chans.items():
        sel = np.flatnonzero(kernels.device == dev)
        if sel.size == 0:
            continue
        s = alignment.to_monotonic(kernels.start_ns[sel])
        e = alignment.to_monotonic(kernels.end_ns[sel])
        sw = _sweep(s, e)
        # A launch's share is its window's energy less, for each segment where m > 1
        # kernels overlap, (1 - 1/m) of that segment's energy: only those segments need
        # windows of their own (interpolated energies add up over adjacent windows).
        ms = sw.m[:-1]
        multi = np.flatnonzero((ms > 1) & (sw.t[1:] > sw.t[:-1]))
        span0, span1 = int(sw.t[0]), int(sw.t[-1])
        we = recording.energies(np.concatenate([s, sw.t[multi], [span0]]),
                                np.concatenate([e, sw.t[multi + 1], [span1]]), channels=[ch])
        (key,) = list(we.energy_j)
        energy_all = we.energy_j[key]
        own = energy_all[: s.size]
        seg_e = np.nan_to_num(energy_all[s.size:-1])
        excess = np.zeros(ms.size)
        excess[multi] = seg_e * (1.0 - 1.0 / ms[multi])
        Q = np.concatenate([[0.0], np.cumsum(excess)])
        energy = own - (Q[sw.end_pos] - Q[sw.start_pos])
        span_e = float(energy_all[-1])
        nseg = s.size
        flags = we.flags[key][:nseg]
        share = sw.w[sw.end_pos] - sw.w[sw.start_pos]
        bound = we.uncertainty_j[key][:nseg]
        below = (flags & FLAG_BELOW_RESOLUTION) != 0
        limit = power_limit_w
        if limit is None:
            dev_meta = getattr(recording, "metadata", {}).get("device", {}) or {}
            try:
                limit = float(dev_meta.get(f"{key}.power_limit_w", "nan"))
            except (TypeError, ValueError):
                limit = None
        if limit is not None and np.isfinite(limit) and limit > 0:
            r = np.divide(energy, share, out=np.zeros(share.size), where=share > 0)
            floor = share * np.maximum(limit - r, r)
            bound = np.where(below, np.fmax(bound, floor), bound)
        meta["devices"][dev] = {
            "channel": ch,
            "device_mapping": how,
            "idle_energy_j": span_e - float(np.nansum(energy)),
            "power_limit_w": limit,
        }
        part = {
            "index": sel.astype(np.int64),
            "device": np.full(sel.size, dev, dtype=np.int64),
            "name_id": kernels.name_id[sel].astype(np.int64),
            "name": names_arr[kernels.name_id[sel]],
            "start_ns": s,
            "end_ns": e,
            "duration_s": (e - s).astype(np.float64) * 1e-9,
            "share_s": share,
            "energy_j": energy,
            "bound_j": bound,
            "flags": flags,
            "below_resolution": below,
        }
        for k, v in part.items():
            cols.setdefault(k, []).append(v)
    if not cols:
        raise InvalidArgumentError(
            "no energy channel of the recording matches the trace's devices; "
            "pass device_map={trace_device: 'gpu0'}"
        )
    return LaunchEnergies({k: np.concatenate(v) for k, v in cols.items()}, meta)


@dataclass
class Attribution:
    """What :func:`attribute` found: the alignment, per-name (statistical) and per-launch (direct) tables."""

    alignment: Alignment
    names: NameEnergies
    launches: LaunchEnergies | None

    def summary(self, limit: int = 15) -> str:
        a = self.alignment
        lines = [
            f"alignment: {a.method}, uncertainty {a.uncertainty_ns / 1e3:.1f} µs",
            "per kernel name (statistical: counter intervals regressed on each name's time):",
            self.names.to_text(limit),
        ]
        for dev, m in self.names.meta.get("devices", {}).items():
            lines.append(
                f"device {dev} ({m.get('channel')}, {m.get('device_mapping')}): idle "
                f"{m.get('idle_power_w', float('nan')):.1f} W, {m.get('intervals')} intervals"
            )
        return "\n".join(lines)


def attribute(
    recording: Any,
    kernels: Any,
    *,
    markers: Any = None,
    alignment: Alignment | None = None,
    launches: bool = True,
    **name_options: Any,
) -> Attribution:
    """Align, then attribute per name (statistical) and, with ``launches=True``, per launch (direct)."""
    if alignment is None:
        alignment = align(kernels, recording, markers=markers)
    device_map = name_options.get("device_map")
    names = attribute_names(recording, kernels, alignment=alignment, **name_options)
    per_launch = attribute_launches(recording, kernels, alignment=alignment, device_map=device_map) if launches else None
    return Attribution(alignment, names, per_launch)
