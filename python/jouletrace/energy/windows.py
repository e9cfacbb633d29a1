"""Energy over time windows, with an honest bound: pure functions on numpy arrays.

Everything here is vectorised: N windows cost a few passes of
:func:`numpy.searchsorted` over the samples, never a Python loop per window.
Times are CLOCK_MONOTONIC integer nanoseconds; energies are joules, powers watts.

Method
======

**Cumulative channels** (``gpu0.energy_j``, ``cpu0.package.energy_j``): the
sensor refreshes the counter once per *update period* ``P`` (NVML: 10–100 ms;
RAPL: ~1 ms). Between updates a read returns the value of the last update, so
a counter reading at time ``t`` is ``E(u)`` for the last update ``u <= t``.

1. *Place every counter update in time*: :mod:`jouletrace.energy.updates`, the
   one placement everything uses (sensor timestamps, a fitted periodic grid whose
   phase ``h_c`` is shared by the updates of a block, or sample brackets with an
   independent half-width ``h``).

2. *Interpolate the counter between update instants* (not between sample
   times): knot ``k`` is ``(u_k, C_k)`` with ``C_k`` the value the update
   brought; ``E(t)`` is linear between knots. This is the unbiased estimate
   when nothing is known about how the power moved inside an update interval.
   Before the first located update the counter holds the first value (its
   update is placed one period earlier); after the last one the last interval's
   rate is extrapolated and the result is flagged ``extrapolated``.

3. *Energy of a window* ``[t0, t1]`` is ``E(t1) - E(t0)``. The samples inside
   the window are never summed alone, so edges are not lost and short windows
   do not read zero.

**Bound** (``edges="independent"``: windows placed without regard to the
load; see "Aligned edges" below for the default). The error of
``E(t1) - E(t0)`` has three parts, each bounded from
what the recording shows (``r_k``: mean power over update interval ``k``,
``T_k`` its length, ``f`` how far through its interval an edge lies):

* *Quantisation*: a reading is floored to the counter's quantum ``q`` (1 mJ for
  NVML, 2^-14 J or so for RAPL; inferred from the values), an error uniform in
  ``[0, q)``. An edge interpolates two readings with weights ``1 - f`` and
  ``f``; the term is two standard deviations of the weighted sum of the four
  readings involved (of two when both edges share an update interval), at most
  ``0.82 q``.
* *Timing*: knots off by ``delta`` move ``E(t)`` by ``-r delta``. A grid phase
  shared by both edges cancels but for the difference of the power there:
  ``|r(t1) - r(t0)| h_c`` (``|r(t0)| h_c + |r(t1)| h_c`` when the edges are on
  different grid blocks), plus the grid's possible tilt (a relative rate error
  between the sensor's clock and ours) times the window's energy; independent
  bracket or timestamp uncertainty adds ``|r| h`` at each edge. ``h_c`` is the
  half-width of the phase range every bracket allows, widened by the tilt, and
  never more than the update's own bracket.
* *Shape*: power that changes inside the update interval holding an edge bends
  the true ``E`` away from the straight line between the knots. With
  ``dp`` = half the sum of the changes of mean power between the five
  intervals around the edge (``|r_{k-1} - r_{k-2}| + ... + |r_{k+2} - r_{k+1}|``,
  halved), the edge's term is ``S = 1.25 T_k sqrt(f (1 - f)) dp``, and never
  more than ``max(f, 1 - f) r_k T_k``, the most a non-decreasing counter
  allows. Two cases fix it:

  - a lone step of ``D`` watts inside the interval, at an unknown place, moves
    the interpolated value by at most ``T f (1 - f) D``; its ``dp`` is ``D / 2``,
    and ``0.625 sqrt(f (1 - f)) >= f (1 - f)``, so ``S`` is a hard bound there;
  - a load that flickers much faster than ``P`` makes the error a Brownian
    bridge (standard deviation ``sqrt(c T f (1 - f))``) while neighbouring
    means differ with standard deviation ``sqrt(2 c / T)``; with ``dp`` itself
    estimated from four differences, the factor 1.25 covers about 97 % of
    windows in that model (a Monte-Carlo of it, not a fit to any trace).

  The two edges' terms add in quadrature (they come from different
  intervals). A window shorter than a quarter of its update interval has
  nearly the same shape error at both edges; only the change of power inside
  the window counts and the term is at most ``1.25 sqrt(L T) dp`` (a lone step
  inside the window: at most ``L D``; flicker: ``sqrt(c L)``).

The three sources are independent, so the bound is their terms added in
quadrature. It is a coverage bound, not a worst case: the tests check, against
the simulated GPU's exact energy, that it holds in at least 95 % of windows
from 1 ms to 10 s for update periods of 1, 20 and 100 ms, and that it is not
more than twice what such coverage needs.
Past the last located update (a window that ends before the sensor has
updated again) the energy since that update is bounded by the larger of the
last two intervals' mean powers times the time since it, and the window is
flagged ``extrapolated``.

**Stalls.** When the reads miss two or more updates in a row (the sampler
thread starved on a busy machine, a long read), the interval between the two
located updates around the gap holds several periods nobody saw, and its
neighbours' change of power says nothing about how the power moved inside it
(a step of the load there is invisible). An edge in such an interval (longer
than ``_STALL_PERIODS`` update periods) takes the hard shape term of "Aligned
edges" below, whatever the edge model, with the largest interval mean as the
ceiling; a window inside it is between 0 and that ceiling times its length.
Measured in real time before this rule: windows ending inside a 146 ms stall of
a 20 ms counter were 1–4.6x over their statistical bound.

**Aligned edges.** All of the above assumes that a window's edges fall
anywhere with respect to the load's own power changes. Windows around the
steps of a program do not: they open as the GPU starts working and close as it
stops. When such a load also repeats with about the sensor's period, every
update interval holds the same mix of busy and idle, the interval means are
flat, and the shape term sees nothing, while each edge sits on a step the
sensor never showed (on the simulated GPU, a 100 ms step of 70 % busy under a
100 ms counter: no window within the independent-edges bound). For such windows
(``edges="aligned"``, the default everywhere) the shape
term of each edge is the worst case over every power profile between 0 and
the device's maximum power ``p_hi`` (its power limit where known, at least the
largest interval mean seen) that keeps the interval's energy:
``T max(min(f (p_hi - r), (1 - f) r), min(f r, (1 - f) (p_hi - r)))``. The
two edges' terms add (a busy window is undercounted at both ends), and a
window inside one interval is between 0 and ``p_hi L``. This is a hard bound,
about one update period's worth of power at each edge: honest, and wide for
windows of a few update periods.

**Part-time counters** (``counter="part_time"`` or ``"unknown"``; see
:mod:`jouletrace.sampling.sensor_model`). A counter that adds, each period ``P``, the mean
power over only the last ``W`` of it times ``P`` errs in *every* period inside
the window, not only at the edges: period ``k`` adds ``P m_W,k`` where the truth
is ``P m_P,k``. Write ``m_P = (W/P) m_W + (1 - W/P) m_U`` (``m_U``: the unseen
part); the error is ``P (1 - W/P) (m_W - m_U)``. For a load whose power changes
on scales shorter than the period (the 1–50 ms segments of a training step), the
seen and unseen means scatter about the same level with variances ``s^2`` and
``s^2 W / (P - W)``, so the error of a period has variance
``P^2 (1 - W/P) s^2``. The recording shows ``s``: consecutive interval means
``r_k = m_W,k`` differ with variance ``2 s^2``, so ``s^2`` is estimated as half
the mean square of the changes of ``r`` over the nine intervals around each
period (local, so a quiet stretch stays tight and a busy one does not). Periods
err independently, so for a window that covers fraction ``phi_k`` of period
``k`` the term is ``K_pt sqrt(sum_k phi_k^2 T_k^2 (1 - W/P) s_k^2)``, added in
quadrature to the edge terms. It grows like the square root of the window, as
DESIGN.md §4 asks. ``W/P`` is the calibrated share when known, else 0 (an
unknown counter is bounded as if it saw an instant of each period, the widest
case). ``K_pt`` = 2.5 (about two standard deviations of a sum of independent
period errors, with a margin for ``s`` estimated from nine changes): on the
simulated GPU's part-time counter under loads of 1–50 ms segments the bound
covers 98–100 % of windows at every length from 5 ms to 10 s (synthetic
recordings; tests/test_parttime_bound.py, bench/RESULTS.md). What this term
cannot see: a load that repeats with exactly the sensor period and does its work
only in the unseen part shows flat interval means and no error; measure such
work with :func:`jouletrace.measure`, whose random phase offsets break the lock.

**Choosing the edge model** (``edges="auto"``, what
:meth:`jouletrace.Recording.energies` does by default): the aligned bound is
needed when windows open and close on power steps of a load that repeats at about
the sensor period; then the windows themselves repeat with about a multiple of the
period, and their edges keep (or slowly drift in) phase against the update grid.
``auto`` uses ``independent`` only with evidence that this is not so: at least
:data:`AUTO_MIN_WINDOWS` windows, a median length of at least two update periods
(shorter windows, such as kernels, sit on the steps they measure), window
starts whose phase against the update grid is spread evenly (Rayleigh resultant
below ``3 / sqrt(n) + 0.1``), and consecutive windows whose phase changes look
random (fewer than a quarter move by under 5 % of a period, where an even spread
gives 10 %). Otherwise ``aligned``. :func:`choose_edges` returns the choice and
the reason, which results carry.

Windows shorter than ten update periods are flagged
``below_sensor_resolution``: their relative error can be large even when the
bound is honest.

**Power channels** (``gpu0.power_w``): trapezoid over the samples, with the
power interpolated linearly at the window edges. Its bound is one update
period's worth of the change of power between the two edges (a sensor shows the
mean of the period just finished, a lag of up to one period), plus at each edge
one period times the spread of the readings around it, plus, unless the sensor
is known to average over its whole period, the readings' period-to-period
changes added in quadrature over the window (what a sensor that sees only part
of each period may miss). It assumes the sensor averages over no more than
about one update period: a longer moving average (Hopper's
``nvmlDeviceGetPowerUsage``, one second) lags by more than the bound allows,
which is why a counter is always preferred when the device has one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import InvalidArgumentError
from .updates import MEDIAN_CHANGES, Updates, _as_i64, _valid, infer_update_period, locate_updates

__all__ = [
    "FLAG_BELOW_RESOLUTION",
    "FLAG_NO_SAMPLES",
    "FLAG_EDGE_OUTSIDE_RECORDING",
    "FLAG_EXTRAPOLATED",
    "FLAG_SPANS_PAUSE",
    "FLAG_NAMES",
    "RESOLUTION_PERIODS",
    "Updates",
    "flag_names",
    "locate_updates",
    "counter_energy",
    "power_energy",
    "infer_update_period",
    "counter_quantum",
    "derive_power",
    "characterize",
    "choose_edges",
    "AUTO_MIN_WINDOWS",
]

#: The window is shorter than :data:`RESOLUTION_PERIODS` sensor update periods.
FLAG_BELOW_RESOLUTION = 1
#: The channel has too few valid samples or counter updates to say anything.
FLAG_NO_SAMPLES = 2
#: An edge lies before the first or after the last valid sample.
FLAG_EDGE_OUTSIDE_RECORDING = 4
#: An edge lies after the last located counter update (or before the first):
#: its value is extrapolated from the nearest interval's mean power.
FLAG_EXTRAPOLATED = 8
#: The window spans a pause of the sampler (stopped, then started again) long
#: enough for a 32-bit RAPL counter to have wrapped unseen: its energy is a lower
#: bound and its uncertainty infinite.
FLAG_SPANS_PAUSE = 16

FLAG_NAMES = {
    FLAG_BELOW_RESOLUTION: "below_sensor_resolution",
    FLAG_NO_SAMPLES: "no_samples",
    FLAG_EDGE_OUTSIDE_RECORDING: "edge_outside_recording",
    FLAG_EXTRAPOLATED: "extrapolated",
    FLAG_SPANS_PAUSE: "spans_unsampled_pause",
}

#: Windows shorter than this many update periods are flagged below sensor resolution.
RESOLUTION_PERIODS = 10

#: Part-time term factor (module docstring, "Part-time counters").
_PART_TIME_K = 2.5
#: Intervals on each side over which the load's period-to-period variability is estimated.
_PART_TIME_HALF = 4
#: ``edges="auto"`` needs at least this many windows to judge their phase (module docstring).
AUTO_MIN_WINDOWS = 16

#: Shape-bound factor (module docstring): ~97 % for white flicker, a hard bound for a lone step.
_SHAPE_K = 1.25
#: An interval longer than this many update periods is a stall (module docstring, "Stalls").
_STALL_PERIODS = 2.5

# Quanta a counter may step in (J): NVML mJ, RAPL energy units 2^-ESU, powercap µJ.
_QUANTA = (1e-3, 2.0**-8, 2.0**-10, 2.0**-12, 2.0**-14, 2.0**-16, 1e-6, 2.0**-32)


def flag_names(bits: int) -> tuple[str, ...]:
    """The names of the flags set in ``bits`` (a value of a ``flags`` array)."""
    b = int(bits)
    return tuple(name for bit, name in FLAG_NAMES.items() if b & bit)


# -- helpers ----------------------------------------------------------------------------
def _windows(t0s: object, t1s: object) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    a = _as_i64(t0s, "t0s")
    b = _as_i64(t1s, "t1s")
    if a.shape != b.shape:
        try:
            a, b = np.broadcast_arrays(a, b)
        except ValueError:
            raise InvalidArgumentError(f"t0s {a.shape} and t1s {b.shape} do not match") from None
    if np.any(b < a):
        raise InvalidArgumentError("a window ends before it begins (t1 < t0)")
    return a.ravel(), b.ravel(), a.shape


def counter_quantum(values: np.ndarray) -> float:
    """The step a counter's readings are quantised to (J), inferred from the values.

    Tries NVML's 1 mJ, RAPL's power-of-two energy units, powercap's 1 µJ and perf's
    2^-32 J, and returns the largest that every reading is a multiple of; 0.0
    when none fits (an unquantised or rescaled counter).
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0
    if v.size > 4096:  # a spread subset is enough to tell
        v = v[np.linspace(0, v.size - 1, 4096).astype(np.intp)]
    for q in _QUANTA:
        x = v / q
        tol = 1e-6 + np.abs(x) * 4e-15
        if np.all(np.abs(x - np.rint(x)) <= tol):
            return float(q)
    return 0.0


def _extent(t_ns: np.ndarray, values: np.ndarray) -> tuple[int, int] | None:
    """First and last time with a valid value; O(1) when those are the array's ends."""
    v = np.asarray(values)
    if v.size == 0:
        return None
    if np.isfinite(v[0]) and np.isfinite(v[-1]):
        return int(t_ns[0]), int(t_ns[-1])
    ok = np.flatnonzero(np.isfinite(v))
    if ok.size == 0:
        return None
    return int(t_ns[ok[0]]), int(t_ns[ok[-1]])


# -- step 2 and 3: interpolate, integrate, bound ----------------------------------------------
class _Knots(NamedTuple):
    t: np.ndarray  # int64, with a virtual knot at each end
    c: np.ndarray  # value at each knot
    h: np.ndarray  # independent half-width (s)
    hc: np.ndarray  # shared half-width (s)
    block: np.ndarray
    rate_rel: np.ndarray
    r: np.ndarray  # mean power over each interval (W), len(t) - 1
    dt: np.ndarray  # interval lengths (s)
    r_max: float  # the largest mean power over a located interval (W)
    tvar: np.ndarray  # T_k^2 s_k^2 per interval (J^2): the load's variability between periods
    tvar_cum: np.ndarray  # its prefix sums, len(t)
    period: float  # the update period (s)


def _knots(u: Updates) -> _Knots | None:
    if u._knots is None:
        u._knots = (_make_knots(u),)
    return u._knots[0]


def _make_knots(u: Updates) -> _Knots | None:
    if u.t_ns.size < 2 or u.period_ns is None:
        return None
    return knots_span(u.t_ns, u.value, u.h_ns, u.hc_ns, u.block, u.rate_rel, first=True, last=True,
                      first_value=u.first_value, period_ns=u.period_ns)


def knots_span(t_ns: np.ndarray, value: np.ndarray, h_ns: np.ndarray, hc_ns: np.ndarray, block: np.ndarray,
               rate_rel: np.ndarray, *, first: bool, last: bool, first_value: float, period_ns: float) -> _Knots:
    """The knots of a run of consecutive updates: with the virtual knot before the first update
    (``first``) and after the last (``last``) when the run holds the recording's ends. A run
    that does not is exact only away from its ends (what :mod:`jouletrace.energy.blocks` uses)."""
    p = int(round(period_ns))
    t, c, h, hc, blk, rr = t_ns, value, h_ns, hc_ns, block, rate_rel
    if first:
        t = np.concatenate([[t_ns[0] - p], t])
        c = np.concatenate([[first_value], c])
        h, hc = np.concatenate([[h_ns[0]], h]), np.concatenate([[hc_ns[0]], hc])
        blk, rr = np.concatenate([[block[0]], blk]), np.concatenate([[rate_rel[0]], rr])
    if last:
        dt_last = (t_ns[-1] - t_ns[-2]) * 1e-9
        r_last = (value[-1] - value[-2]) / dt_last if dt_last > 0 else 0.0
        t = np.concatenate([t, [t_ns[-1] + p]])
        c = np.concatenate([c, [value[-1] + r_last * p * 1e-9]])
        h, hc = np.concatenate([h, [h_ns[-1]]]), np.concatenate([hc, [hc_ns[-1]]])
        blk, rr = np.concatenate([blk, [block[-1]]]), np.concatenate([rr, [rate_rel[-1]]])
    h = h * 1e-9
    hc = hc * 1e-9
    dt = np.diff(t).astype(np.float64) * 1e-9
    dt = np.where(dt > 0, dt, 1e-9)
    r = np.diff(c) / dt
    lo_l = 1 if first else 0
    hi_l = r.size - 1 if last else r.size
    located = r[lo_l:hi_l] if (first and last and r.size > 2) or not (first and last) else r
    # s_k^2: half the mean square change of the interval means over the intervals around k.
    d2 = np.diff(r) ** 2 if r.size > 1 else np.zeros(1)
    cum = np.concatenate([[0.0], np.cumsum(d2)])
    n = d2.size
    idx = np.arange(r.size)
    lo = np.clip(idx - _PART_TIME_HALF, 0, n)
    hi = np.clip(idx + _PART_TIME_HALF, 0, n)
    s2 = 0.5 * (cum[hi] - cum[lo]) / np.maximum(hi - lo, 1)
    tvar = dt**2 * s2
    tvar_cum = np.concatenate([[0.0], np.cumsum(tvar)])
    r_max = float(np.nanmax(np.abs(located))) if located.size else 0.0
    return _Knots(t, c, h, hc, blk, rr, r, dt, r_max, tvar, tvar_cum, float(period_ns) * 1e-9)


class _Edge(NamedTuple):
    value: np.ndarray
    r: np.ndarray  # mean power of the interval holding the edge
    h: np.ndarray  # independent timing half-width (s), interpolated
    hc: np.ndarray  # shared timing half-width (s), interpolated
    block: np.ndarray
    shape: np.ndarray  # shape bound (J)
    extrapolated: np.ndarray
    i: np.ndarray  # interval index
    f: np.ndarray  # fraction through the interval (clipped to [0, 1])
    T: np.ndarray  # interval length (s)
    dp: np.ndarray  # neighbouring change of mean power (W)
    rate_rel: np.ndarray  # relative uncertainty of the grid's rate
    tv: np.ndarray  # the load's variability term of the interval (tvar[i])
    cum0: np.ndarray  # its prefix sum before the interval (tvar_cum[i])
    cum1: np.ndarray  # and after it (tvar_cum[i + 1])
    stall: np.ndarray  # the interval holds updates no read saw (module docstring, "Stalls")


def _edge(k: _Knots, q: np.ndarray) -> _Edge:
    nk = k.t.size
    i = np.searchsorted(k.t, q, side="right") - 1
    i = np.clip(i, 0, nk - 2)
    d = (q - k.t[i]).astype(np.float64) * 1e-9
    T = k.dt[i]
    f = d / T
    r = k.r[i]
    value = k.c[i] + r * d
    fc = np.clip(f, 0.0, 1.0)
    w = 1.0 - fc
    h = w * k.h[i] + fc * k.h[i + 1]
    hc = w * k.hc[i] + fc * k.hc[i + 1]
    # A shared grid offset cancels only if both knots of the interval share the grid block.
    block = np.where(k.block[i] == k.block[i + 1], k.block[i], -1)
    # Change of mean power across the five intervals around the edge (module docstring).
    last_i = nk - 2
    rp = k.r[np.maximum(i - 1, 0)]
    rn = k.r[np.minimum(i + 1, last_i)]
    rpp = k.r[np.maximum(i - 2, 0)]
    rnn = k.r[np.minimum(i + 2, last_i)]
    dp = 0.5 * (np.abs(rp - rpp) + np.abs(r - rp) + np.abs(rn - r) + np.abs(rnn - rn))
    shape = _SHAPE_K * T * np.sqrt(fc * w) * dp
    hard = np.maximum(fc, w) * np.abs(r) * T
    shape = np.minimum(shape, hard)
    # Past the last located update (the last interval is extrapolated) or before the
    # first: the energy since the nearest located update is unknown, up to the rate
    # of the nearest two intervals over that distance.
    last = i == nk - 2
    extrap = (last & (d > 0.0)) | (f < 0.0)
    if extrap.any():
        far = np.where(last, d, (k.t[0] - q).astype(np.float64) * 1e-9)
        rr = np.maximum(np.abs(r), np.abs(np.where(last, rp, rn)))
        shape = np.where(extrap, np.maximum(shape, rr * np.maximum(far, 0.0)), shape)
    # A stall (the reads missed two or more updates in a row): the interval's inside is unseen
    # for several periods, and its neighbours' change of power says nothing about it. The
    # edge's error is then what any power between 0 and the largest interval mean allows.
    stall = T > _STALL_PERIODS * k.period if k.period > 0 else np.zeros(T.shape, dtype=bool)
    if stall.any():
        ra = np.abs(r)
        up = np.maximum(k.r_max - ra, 0.0)
        worst = T * np.maximum(np.minimum(fc * up, w * ra), np.minimum(fc * ra, w * up))
        shape = np.where(stall, np.maximum(shape, worst), shape)
    return _Edge(value, r, h, hc, block, shape, extrap, i, fc, T, dp, np.maximum(k.rate_rel[i], k.rate_rel[i + 1]),
                 k.tvar[i], k.tvar_cum[i], k.tvar_cum[i + 1], stall)


def _range_bound(e: _Edge, p_hi: float) -> np.ndarray:
    """Worst error at an edge for any power in [0, p_hi] inside its interval (hard bound)."""
    T, f, r = e.T, e.f, np.abs(e.r)
    w = 1.0 - f
    up = np.maximum(p_hi - r, 0.0)
    worst = T * np.maximum(np.minimum(f * up, w * r), np.minimum(f * r, w * up))
    return np.where(e.extrapolated, np.maximum(worst, e.shape), worst)


def counter_energy(
    t_ns: np.ndarray,
    values: np.ndarray,
    t0s: object,
    t1s: object,
    update_period_ns: float | None = None,
    *,
    t_before_ns: np.ndarray | None = None,
    t_after_ns: np.ndarray | None = None,
    update_times_ns: np.ndarray | None = None,
    quantum_j: float | None = None,
    timing: str = "auto",
    updates: Updates | None = None,
    edges: str = "aligned",
    max_power_w: float | None = None,
    counter: str = "full",
    seen_fraction: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy (J) of a cumulative counter over windows ``[t0s[i], t1s[i]]``, vectorised.

    Returns ``(energy_j, bound_j, flags)``, arrays shaped like ``t0s``; ``flags``
    is a uint8 bitmask (:data:`FLAG_NAMES`, :func:`flag_names`). NaN samples
    (failed reads) are ignored. The method and the bound are described in the
    module docstring: the counter is interpolated linearly between its update
    instants, each placed inside the bracket of samples around the change.

    ``update_period_ns`` defaults to :func:`infer_update_period`; ``quantum_j``
    to :func:`counter_quantum`. ``updates`` takes a precomputed
    :func:`locate_updates` result (the other sample arguments are then used only
    for the recording's extent).

    ``edges`` says how the windows relate to the load (module docstring, "Aligned
    edges"): ``"aligned"`` (default) for windows that open and close where the
    program changes what it does (training steps, kernels), whose bound allows
    any power profile between 0 and ``max_power_w`` (at least the largest mean
    power seen over an update interval) inside the intervals holding the edges;
    ``"independent"`` for windows placed without regard to when the power
    changes (a time grid, random windows): the statistical bound.
    """
    if edges not in ("independent", "aligned"):
        raise InvalidArgumentError(f"edges must be 'independent' or 'aligned', got {edges!r}")
    a, b, shape = _windows(t0s, t1s)
    m = a.size
    flags = np.zeros(m, dtype=np.uint8)
    if updates is None:
        updates = locate_updates(
            t_ns,
            values,
            t_before_ns=t_before_ns,
            t_after_ns=t_after_ns,
            update_period_ns=update_period_ns,
            update_times_ns=update_times_ns,
            timing=timing,
        )
    k = _knots(updates)
    extent = _extent(t_ns, values)
    if k is None or m == 0 or extent is None:
        flags |= FLAG_NO_SAMPLES
        nan = np.full(m, np.nan)
        return nan.reshape(shape), nan.copy().reshape(shape), flags.reshape(shape)
    q = counter_quantum(values) if quantum_j is None else float(quantum_j)
    period = float(updates.period_ns or 0.0)
    if edges == "auto":
        edges = choose_edges(a, b, updates)[0]
    e0 = _edge(k, a)
    e1 = _edge(k, b)
    p_hi = k.r_max if max_power_w is None else max(float(max_power_w), k.r_max)
    energy, bound, fl = combine_edges(e0, e1, a, b, q=q, period=period, extent=extent, p_hi=p_hi, edges=edges,
                                      counter=counter, seen_fraction=seen_fraction)
    flags |= fl
    return energy.reshape(shape), bound.reshape(shape), flags.reshape(shape)


def combine_edges(e0: _Edge, e1: _Edge, a: np.ndarray, b: np.ndarray, *, q: float, period: float,
                  extent: tuple[int, int], p_hi: float, edges: str, counter: str,
                  seen_fraction: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy, bound and flags of windows ``[a, b]`` from their two edges (module docstring)."""
    flags = np.zeros(a.size, dtype=np.uint8)
    energy = e1.value - e0.value
    same = (e0.block == e1.block) & (e0.block >= 0)
    L = (b - a).astype(np.float64) * 1e-9
    timing_b = np.where(
        same,
        np.abs(e1.r - e0.r) * np.maximum(e0.hc, e1.hc)
        + np.maximum(np.abs(e0.r), np.abs(e1.r)) * np.maximum(e0.rate_rel, e1.rate_rel) * L,
        np.abs(e0.r) * e0.hc + np.abs(e1.r) * e1.hc,
    )
    timing_b += np.abs(e0.r) * e0.h + np.abs(e1.r) * e1.h
    same_i = e0.i == e1.i
    # Each edge weighs two readings, each floored by U(0, q): two standard deviations of the
    # weighted sum. Both edges in one update interval share their two readings.
    w_q = np.where(same_i, 2.0 * (e1.f - e0.f) ** 2, (1 - e0.f) ** 2 + e0.f**2 + (1 - e1.f) ** 2 + e1.f**2)
    q_b = 2.0 * q * np.sqrt(w_q / 12.0)
    shape_b = np.hypot(e0.shape, e1.shape)
    # A window much shorter than the update interval: the shape errors of its edges are
    # nearly the same and cancel but for the power change inside the window.
    T_max = np.maximum(e0.T, e1.T)
    stalled = e0.stall | e1.stall
    short = (L <= 0.25 * T_max) & ~(e0.extrapolated | e1.extrapolated) & ~stalled
    cap = _SHAPE_K * np.sqrt(L * T_max) * np.maximum(e0.dp, e1.dp)
    shape_b = np.where(short, np.minimum(shape_b, cap), shape_b)
    # Both edges in one stalled interval: the window holds between 0 and p_hi * L.
    in_stall = same_i & stalled & ~(e0.extrapolated | e1.extrapolated)
    if in_stall.any():
        ra = np.abs(e0.r)
        shape_b = np.where(in_stall, np.minimum(shape_b, np.maximum(ra, np.maximum(p_hi - ra, 0.0)) * L), shape_b)
    if edges == "aligned":
        s0 = _range_bound(e0, p_hi)
        s1 = _range_bound(e1, p_hi)
        # The two edges' worst cases can have the same sign (a busy window undercounts at
        # both ends): they add. Inside one interval the window is between 0 and p_hi * L.
        aligned = s0 + s1
        inside = same_i & ~(e0.extrapolated | e1.extrapolated)
        est = np.abs(e1.value - e0.value)
        aligned = np.where(inside, np.minimum(aligned, np.maximum(est, p_hi * L - est)), aligned)
        shape_b = np.maximum(shape_b, aligned)
    # Independent sources of error: their bounds add in quadrature.
    bound = np.sqrt(q_b**2 + timing_b**2 + shape_b**2)
    if counter != "full":
        bound = np.hypot(bound, _part_time_term(e0, e1, same_i, seen_fraction))
    flags[(b - a) < RESOLUTION_PERIODS * period] |= FLAG_BELOW_RESOLUTION
    flags[(a < extent[0]) | (b > extent[1])] |= FLAG_EDGE_OUTSIDE_RECORDING
    flags[e0.extrapolated | e1.extrapolated] |= FLAG_EXTRAPOLATED
    return energy, bound, flags


def _part_time_term(e0: _Edge, e1: _Edge, same_i: np.ndarray, seen: float | None) -> np.ndarray:
    """What the unseen part of every period inside the window may hold (module docstring)."""
    unseen = 1.0 - (min(max(float(seen), 0.0), 1.0) if seen is not None else 0.0)
    # Fraction of each edge interval inside the window; whole intervals in between.
    phi0 = 1.0 - e0.f
    phi1 = e1.f
    interior = np.where(e1.i > e0.i + 1, e1.cum0 - e0.cum1, 0.0)
    var = np.where(same_i, (e1.f - e0.f) ** 2 * e0.tv, phi0**2 * e0.tv + phi1**2 * e1.tv + interior)
    return _PART_TIME_K * np.sqrt(np.maximum(var, 0.0) * unseen)


def choose_edges(t0s: object, t1s: object, updates: Updates) -> tuple[str, str]:
    """``("aligned"|"independent", reason)`` for windows on this counter (module docstring, "Choosing")."""
    a, b, _ = _windows(t0s, t1s)
    first = int(updates.t_ns[0]) if updates.t_ns.size else 0
    return choose_edges_for(a, b, float(updates.period_ns or 0.0), first, int(updates.t_ns.size))


def choose_edges_for(a: np.ndarray, b: np.ndarray, period: float, first_update_ns: int,
                     n_updates: int) -> tuple[str, str]:
    """:func:`choose_edges` from the facts of the placement it needs (its period, its first
    update and how many there are)."""
    n = a.size
    if n < AUTO_MIN_WINDOWS:
        return "aligned", f"{n} window(s): too few to show how their edges relate to the sensor's updates"
    if period <= 0 or n_updates < 2:
        return "aligned", "no update period located"
    if np.median(b - a) < 2 * period:
        return "aligned", "windows shorter than two update periods sit on the power steps they measure"
    order = np.argsort(a, kind="stable")
    phase = ((a[order] - first_update_ns) % int(round(period))).astype(np.float64) / period
    z = np.exp(2j * np.pi * phase)
    resultant = float(np.abs(z.mean()))
    if resultant > 3.0 / np.sqrt(n) + 0.1:
        return "aligned", f"window starts are phase-locked to the update grid (resultant {resultant:.2f})"
    step = np.abs((np.diff(phase) + 0.5) % 1.0 - 0.5)
    slow = float(np.mean(step < 0.05)) if step.size else 0.0
    if slow >= 0.25:
        return "aligned", f"window starts drift slowly against the update grid ({slow:.0%} move < 5 % of a period)"
    return "independent", (f"{n} windows of median {np.median(b - a) / period:.0f} update periods, starts spread "
                           f"evenly over the update phase (resultant {resultant:.2f}, {slow:.0%} slow steps)")


# -- power channels ---------------------------------------------------------------------------
def power_energy(
    t_ns: np.ndarray,
    watts: np.ndarray,
    t0s: object,
    t1s: object,
    update_period_ns: float | None = None,
    *,
    averaged: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy (J) from a power channel (W) over windows, vectorised: ``(energy_j, bound_j, flags)``.

    Trapezoid over the valid samples, with the power interpolated linearly at
    the window edges (outside the samples the first or last value is held and the
    window flagged ``edge_outside_recording``). The bound (module docstring) needs
    the sensor's update period (default: :func:`infer_update_period`); pass
    ``averaged=True`` for a sensor known to report the mean over its whole period.
    """
    a, b, shape = _windows(t0s, t1s)
    t, w = _valid(t_ns, watts)
    m = a.size
    flags = np.zeros(m, dtype=np.uint8)
    if t.size < 2 or m == 0:
        flags |= FLAG_NO_SAMPLES
        nan = np.full(m, np.nan)
        return nan.reshape(shape), nan.copy().reshape(shape), flags.reshape(shape)
    period = float(update_period_ns) if update_period_ns else infer_update_period(t, w)
    if period is None:  # a constant reading: the polling period is all we know
        period = float(np.median(np.diff(t)))
    dt = np.diff(t).astype(np.float64) * 1e-9
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * dt)])

    def integral(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = np.clip(np.searchsorted(t, q, side="right") - 1, 0, t.size - 2)
        d = np.clip((q - t[i]).astype(np.float64) * 1e-9, 0.0, dt[i])
        slope = (w[i + 1] - w[i]) / np.where(dt[i] > 0, dt[i], 1.0)
        val = cum[i] + w[i] * d + 0.5 * slope * d * d
        before = q < t[0]
        after = q > t[-1]
        val = np.where(before, (q - t[0]).astype(np.float64) * 1e-9 * w[0], val)
        val = np.where(after, cum[-1] + (q - t[-1]).astype(np.float64) * 1e-9 * w[-1], val)
        p_at = np.where(before, w[0], np.where(after, w[-1], w[i] + slope * d))
        return val, p_at

    i0, p0 = integral(a)
    i1, p1 = integral(b)
    energy = i1 - i0
    # Readings as a sequence of sensor updates: spread around each edge, changes inside.
    chg = np.concatenate([[0], np.flatnonzero(w[1:] != w[:-1]) + 1])
    rv = w[chg]
    rt = t[chg]
    nr = rv.size
    ps = period * 1e-9

    def spread(q: np.ndarray) -> np.ndarray:
        j = np.clip(np.searchsorted(rt, q, side="right") - 1, 0, nr - 1)
        lo_i = np.clip(j - 1, 0, nr - 1)
        hi_i = np.clip(j + 2, 0, nr - 1)
        vals = np.stack([rv[lo_i], rv[j], rv[np.clip(j + 1, 0, nr - 1)], rv[hi_i]])
        return vals.max(axis=0) - vals.min(axis=0)

    bound = ps * np.abs(p1 - p0) + ps * (spread(a) + spread(b))
    if not averaged:
        d2 = np.concatenate([[0.0], np.cumsum(np.diff(rv) ** 2)]) if nr > 1 else np.zeros(1)
        ja = np.clip(np.searchsorted(rt, a, side="right") - 1, 0, nr - 1)
        jb = np.clip(np.searchsorted(rt, b, side="right") - 1, 0, nr - 1)
        bound = bound + ps * 0.5 * np.sqrt(np.maximum(d2[jb] - d2[ja], 0.0))
    flags[(b - a) < RESOLUTION_PERIODS * period] |= FLAG_BELOW_RESOLUTION
    flags[(a < t[0]) | (b > t[-1])] |= FLAG_EDGE_OUTSIDE_RECORDING
    return energy.reshape(shape), bound.reshape(shape), flags.reshape(shape)


# -- derived timelines and characterisation ---------------------------------------------------
def derive_power(
    t_ns: np.ndarray,
    values: np.ndarray,
    update_period_ns: float | None = None,
    *,
    updates: Updates | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A power timeline (W) from a cumulative counter (J): ``(t_ns, watts)``.

    One point per interval between two located counter updates: the mean power
    over that interval, placed at its middle. Its time resolution is the
    sensor's update period, not the polling rate.
    """
    u = updates if updates is not None else locate_updates(t_ns, values, update_period_ns=update_period_ns)
    if u.t_ns.size < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    dt = np.diff(u.t_ns)
    keep = dt > 0
    mid = (u.t_ns[:-1] + dt // 2)[keep]
    watts = (np.diff(u.value)[keep]) / (dt[keep].astype(np.float64) * 1e-9)
    return mid, watts


def characterize(
    t_ns: np.ndarray,
    values: np.ndarray,
    cumulative: bool,
    *,
    counter: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, object]:
    """What a recording says about one channel's sensor (plain JSON-able values).

    Keys: ``update_period_ns`` (median time between value changes, None if
    unknown), ``updates`` (changes seen), ``resolved`` (polling was at least twice
    as fast as the sensor, so the period is the sensor's and not the polling's).
    Cumulative channels add ``quantum_j`` and ``update_timing`` (how updates are
    placed: "periodic" grid, sensor "timestamps" or "brackets"). Power channels,
    given their device's ``counter=(t_ns, values)``, add ``averaged``: whether
    each reading equals the mean power over the sensor period that ended when it
    appeared (True), or only part of it, like Hopper's instant power (False);
    None when the load was too steady to tell.
    """
    t, v = _valid(t_ns, values)
    out: dict[str, object] = {"update_period_ns": None, "updates": 0, "resolved": False}
    if v.size < 2:
        return out
    chg = np.flatnonzero(v[1:] != v[:-1]) + 1
    out["updates"] = int(chg.size)
    period: float | None = None
    if chg.size >= 3:
        first = chg[: MEDIAN_CHANGES + 1]  # the medians look at the first changes (updates.MEDIAN_CHANGES)
        mid = t[first - 1] + (t[first] - t[first - 1]) // 2
        period = float(np.median(np.diff(mid)))
        out["update_period_ns"] = period
        out["resolved"] = bool(np.median((t[first] - t[first - 1])[:MEDIAN_CHANGES]) < 0.5 * period)
    if cumulative:
        out["quantum_j"] = counter_quantum(v)
        u = locate_updates(t, v, update_period_ns=period)
        out["update_timing"] = u.method
    elif counter is not None:
        out["averaged"] = _looks_averaged(t, v, chg, *counter)
    return out


#: Whether a power sensor averages is judged over the samples up to the counter's this-many-th.
AVERAGED_SAMPLES = 1 << 21


def _looks_averaged(t: np.ndarray, v: np.ndarray, chg: np.ndarray, ct: np.ndarray, cv: np.ndarray) -> bool | None:
    if ct.size > AVERAGED_SAMPLES:  # a bounded span: the sensor does not change during a run
        cut = ct[AVERAGED_SAMPLES - 1]
        ct, cv = ct[:AVERAGED_SAMPLES], cv[:AVERAGED_SAMPLES]
        keep = int(np.searchsorted(t, cut, side="right"))
        t, v = t[:keep], v[:keep]
        chg = chg[chg < keep]
    u = locate_updates(ct, cv)
    if u.t_ns.size < 8 or chg.size < 8:
        return None
    # Mean counter power over each counter interval, against the power reading shown just
    # after the interval ended, over the intervals in which the power changed (their mean
    # differs from both neighbours'): there a partial reading differs from the mean.
    r = np.diff(u.value) / (np.diff(u.t_ns).astype(np.float64) * 1e-9)
    ends = u.t_ns[1:] + (u.h_ns[1:] + u.hc_ns[1:]).astype(np.int64)
    j = np.searchsorted(t, ends, side="right")
    dl = np.abs(np.diff(r))[:-1]
    dr = np.abs(np.diff(r))[1:]
    level = np.maximum(np.abs(r[1:-1]), 1e-9)
    moving = (dl > 0.02 * level) & (dr > 0.02 * level) & (j[1:-1] < t.size)
    if moving.sum() < 8:
        return None
    p_after = v[j[1:-1][moving]]
    mismatch = np.median(np.abs(p_after - r[1:-1][moving]))
    change = np.median(np.minimum(dl, dr)[moving])
    return bool(mismatch < 0.2 * change)
