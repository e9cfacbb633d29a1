"""Energy over windows: the numerics against numpy references, and against the simulated GPU's truth.

Groups:
* unit: the vectorised functions of jouletrace.integrate against plain per-window
  references (STYLE habit 12), flags, NaN handling, argument checks;
* sensor model: windows from 1 ms to 10 s on recordings synthesised from the
  simulated GPU's own sensor model (``SimGPU.sensor_energy_j``) at update periods of
  1, 20 and 100 ms; the bound must cover >= 95 % of windows and be no looser than
  twice what that coverage needs;
* end to end: the real sampler reading the simulated GPU through its NVML library.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest

import jouletrace
from jouletrace.energy import windows as integrate
from jouletrace.energy.recording import Recording
from jouletrace.energy.windows import (
    FLAG_BELOW_RESOLUTION,
    FLAG_EDGE_OUTSIDE_RECORDING,
    FLAG_EXTRAPOLATED,
    FLAG_NO_SAMPLES,
)
from jouletrace.errors import InvalidArgumentError

T0 = 10_000_000_000  # synthetic recordings start here (CLOCK_MONOTONIC ns)


# -- helpers ------------------------------------------------------------------------------
def ml_schedule(sim, rng, start_ns, end_ns, shortest_s=2e-4, longest_s=2.0, gpu=0):  # type: ignore[no-untyped-def]
    """Busy and idle phases with log-uniform lengths: kernels up to whole training steps."""
    s, e, w = [], [], []
    t = int(start_ns)
    lo, hi = np.log(shortest_s * 1e9), np.log(longest_s * 1e9)
    while t < end_ns:
        d = int(np.exp(rng.uniform(lo, hi)))
        if rng.random() < 0.6:
            s.append(t)
            e.append(t + d)
            w.append(rng.uniform(50.0, 600.0))
        t += d
    sim.add_segments(s, e, w, gpu=gpu)


def synthetic_recording(  # type: ignore[no-untyped-def]
    sim, rng, seconds, rate_hz, *, jitter_ns=None, nan_fraction=0.001, avg_ns=None, drift_ppm=0.0
):
    """What a sampler would record from ``sim``: its sensor model read at jittered times.

    Reads last 300 ns (t_before/t_after); a fraction of reads fail (NaN, status 1).
    ``drift_ppm`` makes the polling period differ from nominal, as a GPU's sensor clock
    and the host's CLOCK_MONOTONIC differ (the simulated sensor runs on the latter).
    ``gpu0.power_w`` is the sensor's mean power over ``avg_ns`` before each update
    (default: the update period), rounded to mW like NVML.
    """
    n = int(seconds * rate_hz)
    step = 1e9 / rate_hz * (1.0 + drift_ppm * 1e-6)
    if jitter_ns is None:
        jitter_ns = int(step * 0.05)
    t = T0 + np.rint(np.arange(n) * step).astype(np.int64) + rng.integers(-jitter_ns, jitter_ns + 1, n)
    t.sort()
    energy = sim.sensor_energy_j(t)
    u = sim.last_update_ns(t)
    a = int(avg_ns or sim.update_period_ns)
    power = np.rint(sim.true_energy(u - a, u) / (a * 1e-9) * 1000.0) / 1000.0
    bad = rng.random(n) < nan_fraction
    bad[:2] = bad[-2:] = False
    energy[bad] = np.nan
    power[bad] = np.nan
    return Recording(
        t_ns=t,
        t_before_ns=t - 150,
        t_after_ns=t + 150,
        seq=np.arange(n, dtype=np.uint64),
        status=bad.astype(np.int32),
        values={"gpu0.energy_j": energy, "gpu0.power_w": power},
        cumulative={"gpu0.energy_j": True, "gpu0.power_w": False},
        clock_pairs=np.array([[t[0], t[0] + 1_700_000_000_000_000_000, 50]], dtype=np.int64),
        metadata={"source": "synthetic"},
    )


def random_windows(rng, t_first, t_last, n, shortest_s=1e-3, longest_s=10.0, margin_ns=0):  # type: ignore[no-untyped-def]
    """``n`` windows with log-uniform lengths inside [t_first + margin, t_last - margin]."""
    length = np.exp(rng.uniform(np.log(shortest_s * 1e9), np.log(longest_s * 1e9), n)).astype(np.int64)
    a = rng.integers(t_first + margin_ns, t_last - margin_ns - length)
    return a, a + length


def coverage_and_looseness(err, bound, length_ns):  # type: ignore[no-untyped-def]
    """(coverage, pooled looseness, median looseness against each length class's need).

    * coverage: fraction of windows with |error| <= bound;
    * pooled looseness: 1 / the 95th percentile of |error| / bound — the factor by which
      every bound could shrink and still cover 95 % of windows;
    * class looseness: each window's bound over the bound its class of windows needs
      (the 95th percentile of |error| among windows of its update period and length,
      by half-decades), median over windows.

    The needed bound is that of the window's class, not its own |error|: a bound that
    covers 95 % of windows cannot be within twice each window's own error in the median
    (when the error is a sum of independent edge errors it is about 2.7 times it; when
    the power was constant it is zero and any honest bound is infinitely looser).
    """
    err = np.abs(err)
    rel = err / bound
    cls = np.floor(2 * np.log10(length_ns / 1e6)).astype(int)
    needed = np.empty_like(bound)
    for c in np.unique(cls):
        sel = cls == c
        needed[sel] = np.quantile(err[sel], 0.95)
    return float(np.mean(rel <= 1.0)), float(1.0 / np.quantile(rel, 0.95)), float(np.median(bound / needed))


# -- references (plain per-window numpy) -----------------------------------------------------
def reference_knots(t, v):  # type: ignore[no-untyped-def]
    """Valid samples, bracket-midpoint update knots found sample by sample, and their median period."""
    keep = np.isfinite(v)
    t, v = t[keep], v[keep]
    kt, kv = [], []
    for j in range(1, len(v)):
        if v[j] != v[j - 1]:
            kt.append(int(t[j - 1]) + (int(t[j]) - int(t[j - 1])) // 2)
            kv.append(float(v[j]))
    return t, v, kt, kv, int(round(float(np.median(np.diff(kt)))))


def reference_counter(t, v, t0s, t1s):  # type: ignore[no-untyped-def]
    """Bracket-midpoint knots found sample by sample, np.interp between them, per window."""
    t, v, kt, kv, p = reference_knots(t, v)
    rate = (kv[-1] - kv[-2]) / (kt[-1] - kt[-2])
    kt = [kt[0] - p, *kt, kt[-1] + p]
    kv = [float(v[0]), *kv, kv[-1] + rate * p]

    def at(x: int) -> float:
        if x < kt[0]:
            return kv[0] + (kv[1] - kv[0]) / (kt[1] - kt[0]) * (x - kt[0])
        if x > kt[-1]:
            return kv[-1] + (kv[-1] - kv[-2]) / (kt[-1] - kt[-2]) * (x - kt[-1])
        return float(np.interp(x, kt, kv))

    return np.array([at(int(b)) - at(int(a)) for a, b in zip(t0s, t1s, strict=True)])


def reference_counter_bound(t, v, t0s, t1s):  # type: ignore[no-untyped-def]
    """The bound of integrate's docstring, edge by edge in Python, for bracket timing."""
    keep = np.isfinite(v)
    t, v = t[keep], v[keep]
    kt, kv, kh = [], [], []
    for j in range(1, len(v)):
        if v[j] != v[j - 1]:
            kt.append(int(t[j - 1]) + (int(t[j]) - int(t[j - 1])) // 2)
            kv.append(float(v[j]))
            kh.append((int(t[j]) - int(t[j - 1])) / 2 * 1e-9)
    p = int(round(float(np.median(np.diff(kt)))))
    rate = (kv[-1] - kv[-2]) / ((kt[-1] - kt[-2]) * 1e-9)
    kt = [kt[0] - p, *kt, kt[-1] + p]
    kv = [float(v[0]), *kv, kv[-1] + rate * p * 1e-9]
    kh = [kh[0], *kh, kh[-1]]
    n_int = len(kt) - 1
    r = [(kv[i + 1] - kv[i]) / ((kt[i + 1] - kt[i]) * 1e-9) for i in range(n_int)]
    q = integrate.counter_quantum(v)

    def edge(x: int):  # type: ignore[no-untyped-def]
        i = min(max(int(np.searchsorted(kt, x, side="right")) - 1, 0), n_int - 1)
        T = (kt[i + 1] - kt[i]) * 1e-9
        f = min(max((x - kt[i]) * 1e-9 / T, 0.0), 1.0)
        rr = [r[min(max(j, 0), n_int - 1)] for j in range(i - 2, i + 3)]
        dp = 0.5 * sum(abs(rr[j + 1] - rr[j]) for j in range(4))
        s = min(1.25 * T * np.sqrt(f * (1 - f)) * dp, max(f, 1 - f) * abs(r[i]) * T)
        timing = abs(r[i]) * ((1 - f) * kh[i] + f * kh[i + 1])
        return i, f, T, dp, s, timing

    out = []
    for a, b in zip(t0s, t1s, strict=True):
        i0, f0, T0_, dp0, s0, tm0 = edge(int(a))
        i1, f1, T1, dp1, s1, tm1 = edge(int(b))
        w = 2 * (f1 - f0) ** 2 if i0 == i1 else (1 - f0) ** 2 + f0**2 + (1 - f1) ** 2 + f1**2
        qb = 2 * q * np.sqrt(w / 12)
        shape = float(np.hypot(s0, s1))
        length = (int(b) - int(a)) * 1e-9
        if length <= 0.25 * max(T0_, T1):
            shape = min(shape, 1.25 * np.sqrt(length * max(T0_, T1)) * max(dp0, dp1))
        out.append(np.sqrt(qb**2 + (tm0 + tm1) ** 2 + shape**2))
    return np.array(out)


def reference_power(t, w, t0s, t1s):  # type: ignore[no-untyped-def]
    keep = np.isfinite(w)
    t, w = t[keep].astype(np.float64), w[keep]
    out = []
    for a, b in zip(t0s, t1s, strict=True):
        inside = (t > a) & (t < b)
        x = np.concatenate([[a], t[inside], [b]])
        y = np.interp(x, t, w)
        out.append(np.trapezoid(y, x * 1e-9))
    return np.array(out)


# -- unit -------------------------------------------------------------------------------------
@pytest.fixture
def sim20(make_sim):  # type: ignore[no-untyped-def]
    sim = make_sim(update_period_s=0.02, phase_ns=7_345_678)
    ml_schedule(sim, np.random.default_rng(5), T0 - 10**9, T0 + 12 * 10**9, longest_s=0.5)
    return sim


def test_counter_matches_reference(sim20):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(11)
    rec = synthetic_recording(sim20, rng, 10, 1000)
    t, v = np.asarray(rec.t_ns), np.asarray(rec["gpu0.energy_j"])
    a, b = random_windows(rng, int(t[0]) - 50_000_000, int(t[-1]) + 50_000_000, 400, longest_s=3)
    e, bound, _ = integrate.counter_energy(t, v, a, b, timing="brackets", edges="independent")
    np.testing.assert_allclose(e, reference_counter(t, v, a, b), rtol=1e-12, atol=1e-9)
    inside = (a > t[0] + 200_000_000) & (b < t[-1] - 200_000_000)
    np.testing.assert_allclose(bound[inside], reference_counter_bound(t, v, a, b)[inside], rtol=1e-9, atol=1e-12)


def test_power_matches_reference(sim20):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(12)
    rec = synthetic_recording(sim20, rng, 5, 1000, nan_fraction=0.01)
    t, w = np.asarray(rec.t_ns), np.asarray(rec["gpu0.power_w"])
    a, b = random_windows(rng, int(t[0]), int(t[-1]), 300, longest_s=2)
    e, _, flags = integrate.power_energy(t, w, a, b)
    np.testing.assert_allclose(e, reference_power(t, w, a, b), rtol=1e-10, atol=1e-9)
    assert not np.any(flags & FLAG_EDGE_OUTSIDE_RECORDING)


def test_short_window_inside_one_update_is_not_zero(sim20):  # type: ignore[no-untyped-def]
    """A 1 ms window between two counter updates: interpolated, not the (zero) change of samples."""
    rng = np.random.default_rng(13)
    rec = synthetic_recording(sim20, rng, 3, 1000, nan_fraction=0)
    a = np.arange(T0 + 500_000_000, T0 + 2_500_000_000, 7_000_000, dtype=np.int64)
    b = a + 1_000_000
    e, bound, flags = integrate.counter_energy(rec.t_ns, rec["gpu0.energy_j"], a, b)
    truth = sim20.true_energy(a, b)
    assert np.all(e > 0.03)  # >= 30 mJ in every ms: idle is 60 W
    assert np.mean(np.abs(e - truth) <= bound) >= 0.95
    assert np.all(flags & FLAG_BELOW_RESOLUTION)


def test_constant_power_is_exact_to_the_quantum(make_sim):  # type: ignore[no-untyped-def]
    sim = make_sim(update_period_s=0.1, idle_w=250.0, phase_ns=31_000_000)
    rec = synthetic_recording(sim, np.random.default_rng(1), 6, 1000, nan_fraction=0)
    a = np.linspace(T0 + 300_000_000, T0 + 3_000_000_000, 200).astype(np.int64)
    b = a + np.linspace(1e6, 2.5e9, 200).astype(np.int64)
    e, bound, _ = integrate.counter_energy(rec.t_ns, rec["gpu0.energy_j"], a, b, edges="independent")
    np.testing.assert_allclose(e, 250.0 * (b - a) * 1e-9, atol=2e-3)
    assert np.all(np.abs(e - sim.true_energy(a, b)) <= bound)
    assert np.all(bound < 0.06)  # quantum + the grid phase; no shape term


def test_nan_samples_are_ignored(sim20):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(14)
    rec = synthetic_recording(sim20, rng, 5, 1000, nan_fraction=0.05)
    t, v = np.asarray(rec.t_ns), np.asarray(rec["gpu0.energy_j"])
    ok = np.isfinite(v)
    assert (~ok).sum() > 100
    a, b = random_windows(rng, int(t[0]), int(t[-1]), 200, longest_s=2)
    got = integrate.counter_energy(t, v, a, b)
    want = integrate.counter_energy(t[ok], v[ok], a, b)
    for x, y in zip(got, want, strict=True):
        np.testing.assert_array_equal(x, y)
    w = np.asarray(rec["gpu0.power_w"])
    np.testing.assert_array_equal(
        integrate.power_energy(t, w, a, b)[0], integrate.power_energy(t[ok], w[ok], a, b)[0]
    )


def test_flags_and_shapes(sim20):  # type: ignore[no-untyped-def]
    rec = synthetic_recording(sim20, np.random.default_rng(15), 3, 1000, nan_fraction=0)
    t, v = rec.t_ns, rec["gpu0.energy_j"]
    first, last = int(t[0]), int(t[-1])
    a = np.array([[first + 10**9, first - 10**8], [first + 10**9, last - 5_000_000]], dtype=np.int64)
    b = np.array([[first + 2 * 10**9, first + 10**9], [first + 10**9 + 50_000_000, last + 10**8]], dtype=np.int64)
    e, bound, flags = integrate.counter_energy(t, v, a, b)
    assert e.shape == bound.shape == flags.shape == (2, 2)
    assert flags[0, 0] == 0
    assert flags[0, 1] & FLAG_EDGE_OUTSIDE_RECORDING and not flags[0, 1] & FLAG_BELOW_RESOLUTION
    assert flags[1, 0] == FLAG_BELOW_RESOLUTION  # 50 ms < 10 periods of 20 ms
    assert flags[1, 1] & FLAG_EXTRAPOLATED and flags[1, 1] & FLAG_EDGE_OUTSIDE_RECORDING
    assert integrate.flag_names(int(flags[1, 1])) == ("below_sensor_resolution", "edge_outside_recording", "extrapolated")
    assert np.all(np.isfinite(e)) and np.all(bound > 0)
    # Extrapolated edges carry the energy since the last update in their bound.
    truth = sim20.true_energy(a, b)
    assert abs(e[1, 1] - truth[1, 1]) <= bound[1, 1]
    # Nothing to integrate: NaN with the flag.
    e, bound, flags = integrate.counter_energy(t[:1], v[:1], [first], [first + 1])
    assert np.isnan(e[0]) and np.isnan(bound[0]) and flags[0] == FLAG_NO_SAMPLES
    e, _, flags = integrate.counter_energy(t, np.full(len(t), 5.0), [first], [last])
    assert np.isnan(e[0]) and flags[0] & FLAG_NO_SAMPLES


def test_bad_windows_are_refused(sim20):  # type: ignore[no-untyped-def]
    rec = synthetic_recording(sim20, np.random.default_rng(16), 1, 1000)
    with pytest.raises(InvalidArgumentError, match="ends before it begins"):
        integrate.counter_energy(rec.t_ns, rec["gpu0.energy_j"], [T0 + 10], [T0])
    with pytest.raises(InvalidArgumentError, match="do not match"):
        integrate.power_energy(rec.t_ns, rec["gpu0.power_w"], [T0, T0 + 1, T0 + 2], [T0 + 5, T0 + 6])
    with pytest.raises(InvalidArgumentError, match="NaN"):
        integrate.counter_energy(rec.t_ns, rec["gpu0.energy_j"], [float("nan")], [T0])


def test_update_period_and_quantum():  # type: ignore[no-untyped-def]
    t = np.arange(0, 2_000_000_000, 1_000_000, dtype=np.int64)
    v = np.floor(t / 20_000_000) * 1.25  # a counter that steps every 20 ms
    assert integrate.infer_update_period(t, v) == pytest.approx(20_000_000, abs=1)
    assert integrate.infer_update_period(t[:3], v[:3]) is None
    assert integrate.counter_quantum(np.array([1.001, 2.5, 1e6 + 0.123])) == 1e-3
    assert integrate.counter_quantum(np.arange(10) * 2.0**-14 + 7.0) == 2.0**-14
    assert integrate.counter_quantum(np.array([0.1234567, 0.7654321])) == 0.0


def test_updates_are_placed_where_the_sensor_updated(make_sim):  # type: ignore[no-untyped-def]
    """Every located update lies within its stated uncertainty of the sensor's true update time."""
    period = 20_000_000
    sim = make_sim(update_period_s=0.02, phase_ns=3_210_987)
    ml_schedule(sim, np.random.default_rng(3), T0 - 10**9, T0 + 11 * 10**9)
    rec = synthetic_recording(sim, np.random.default_rng(4), 10, 1000)
    for timing in ("brackets", "periodic"):
        u = integrate.locate_updates(
            rec.t_ns, rec["gpu0.energy_j"], t_before_ns=rec.t_before_ns, t_after_ns=rec.t_after_ns, timing=timing
        )
        true_u = sim.last_update_ns(u.t_ns + period // 2)  # the grid point nearest each estimate
        err = np.abs(u.t_ns - true_u)
        assert np.all(err <= u.h_ns + u.hc_ns + 1), timing
        assert u.period_ns == pytest.approx(period, rel=1e-3)
        if timing == "periodic":
            assert u.method == "periodic" and u.pinned_fraction == 1.0
            assert np.all(u.hc_ns > 0) and np.all(u.h_ns == 0)
        else:
            assert u.method == "brackets"


def test_sensor_timestamps_are_used_only_when_credible(sim20):  # type: ignore[no-untyped-def]
    rec = synthetic_recording(sim20, np.random.default_rng(17), 4, 1000, nan_fraction=0)
    t, v = np.asarray(rec.t_ns), np.asarray(rec["gpu0.energy_j"])
    stamps = sim20.last_update_ns(t).astype(np.float64)  # what NVML's field timestamp says
    u = integrate.locate_updates(t, v, update_times_ns=stamps)
    assert u.method == "timestamps"
    np.testing.assert_array_equal(u.t_ns, sim20.last_update_ns(u.t_ns))
    per_read = t.astype(np.float64)  # a stamp of the read, not of the update
    assert integrate.locate_updates(t, v, update_times_ns=per_read).method != "timestamps"
    wrong = stamps + 5e6  # 5 ms off: outside the brackets
    assert integrate.locate_updates(t, v, update_times_ns=wrong).method != "timestamps"


def test_derive_power_and_characterize(make_sim):  # type: ignore[no-untyped-def]
    sim = make_sim(update_period_s=0.1, phase_ns=12_345)
    ml_schedule(sim, np.random.default_rng(6), T0 - 10**9, T0 + 22 * 10**9, shortest_s=0.01, longest_s=0.4)
    rng = np.random.default_rng(7)
    averaged = synthetic_recording(sim, rng, 20, 1000, nan_fraction=0)
    t_mid, watts = averaged.power("gpu0.energy_j")
    assert len(t_mid) > 150
    # Each derived point is the mean power between two updates: compare with the truth there.
    truth = sim.true_energy(t_mid - 50_000_000, t_mid + 50_000_000) / 0.1
    assert np.median(np.abs(watts - truth)) < 1.0
    info = averaged.characterize()
    assert info["gpu0.energy_j"]["update_period_ns"] == pytest.approx(1e8, rel=1e-3)
    assert info["gpu0.energy_j"]["quantum_j"] == 1e-3 and info["gpu0.energy_j"]["resolved"]
    assert info["gpu0.power_w"]["averaged"] is True
    assert averaged.metadata["sensors"] is info
    assert averaged.metadata["observed_update_period_ns"]["gpu0.power_w"] == pytest.approx(1e8, rel=1e-3)
    instant = synthetic_recording(sim, rng, 20, 1000, nan_fraction=0, avg_ns=25_000_000)  # H100-like
    assert instant.characterize()["gpu0.power_w"]["averaged"] is False
    # A level channel's samples, and a device key resolving to its power channel.
    t_p, w_p = instant.power("gpu0")
    assert len(t_p) == len(instant) and np.array_equal(w_p, instant["gpu0.power_w"])


# -- accuracy on the sensor model ---------------------------------------------------------------
PERIODS = [(0.001, 10_000), (0.02, 1000), (0.1, 1000)]  # (update period s, polling Hz)


def _model_errors(make_sim, period_s, rate_hz, seeds, schedule, channels=None, avg_ns=None, drift_ppm=20.0):  # type: ignore[no-untyped-def]
    errs, bounds, lengths = [], [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        p = int(period_s * 1e9)
        sim = make_sim(update_period_s=period_s, phase_ns=int(rng.integers(0, p)))
        schedule(sim, rng)
        rec = synthetic_recording(sim, rng, 40, rate_hz, avg_ns=avg_ns, drift_ppm=drift_ppm)
        a, b = random_windows(rng, int(rec.t_ns[0]), int(rec.t_ns[-1]), 2500, margin_ns=3 * p)
        we = rec.energies(a, b, channels=channels, edges="independent")
        errs.append(we.energy_j["gpu0"] - sim.true_energy(a, b))
        bounds.append(we.uncertainty_j["gpu0"])
        lengths.append(b - a)
        sim.close()
    return np.concatenate(errs), np.concatenate(bounds), np.concatenate(lengths)


def _ml(sim, rng):  # type: ignore[no-untyped-def]
    ml_schedule(sim, rng, T0 - 10**9, T0 + 42 * 10**9)


def _flicker(sim, rng):  # type: ignore[no-untyped-def]
    ml_schedule(sim, rng, T0 - 10**9, T0 + 42 * 10**9, shortest_s=1e-4, longest_s=0.02)


@pytest.mark.parametrize("period_s, rate_hz", PERIODS, ids=["1ms", "20ms", "100ms"])
def test_counter_bound_covers_95_percent_and_is_not_loose(make_sim, period_s, rate_hz):  # type: ignore[no-untyped-def]
    """Windows of 1 ms to 10 s over an ML-like load (steps from 0.2 ms to 2 s), 4 x 2500 windows."""
    err, bound, length = _model_errors(make_sim, period_s, rate_hz, range(4), _ml)
    coverage, pooled, median_class = coverage_and_looseness(err, bound, length)
    print(f"period {period_s * 1e3:g} ms: coverage {coverage:.3f}, looseness pooled {pooled:.2f}, "
          f"median vs class need {median_class:.2f}")
    assert coverage >= 0.95
    assert median_class <= 2.0


@pytest.mark.parametrize("period_s, rate_hz", PERIODS, ids=["1ms", "20ms", "100ms"])
def test_counter_bound_covers_a_flickering_load(make_sim, period_s, rate_hz):  # type: ignore[no-untyped-def]
    """Steps of 0.1–20 ms: many power changes inside every 20 or 100 ms update interval."""
    err, bound, length = _model_errors(make_sim, period_s, rate_hz, range(10, 14), _flicker)
    coverage, pooled, median_class = coverage_and_looseness(err, bound, length)
    assert coverage >= 0.95
    assert median_class <= 2.0


def reference_aligned_shape(t, v, t0s, t1s, p_hi):  # type: ignore[no-untyped-def]
    """The aligned-edge shape term of integrate's docstring, window by window (bracket timing)."""
    t, v, kt, kv, p = reference_knots(t, v)
    kt = [kt[0] - p, *kt]
    kv = [float(v[0]), *kv]

    def edge(x: int):  # type: ignore[no-untyped-def]
        i = int(np.searchsorted(kt, x, side="right")) - 1
        T = (kt[i + 1] - kt[i]) * 1e-9
        r = (kv[i + 1] - kv[i]) / T
        f = (x - kt[i]) * 1e-9 / T
        up = p_hi - r
        return i, T * max(min(f * up, (1 - f) * r), min(f * r, (1 - f) * up))

    out = []
    for a, b in zip(t0s, t1s, strict=True):
        (i0, s0), (i1, s1) = edge(int(a)), edge(int(b))
        out.append((i0, i1, s0 + s1))
    return out


def test_aligned_bound_matches_reference(sim20):  # type: ignore[no-untyped-def]
    rec = synthetic_recording(sim20, np.random.default_rng(21), 6, 1000, nan_fraction=0)
    t, v = np.asarray(rec.t_ns), np.asarray(rec["gpu0.energy_j"])
    a, b = random_windows(np.random.default_rng(22), int(t[0]) + 10**8, int(t[-1]) - 10**8, 300, longest_s=3)
    _, bound, _ = integrate.counter_energy(t, v, a, b, timing="brackets", edges="aligned", max_power_w=700.0)
    _, stat, _ = integrate.counter_energy(t, v, a, b, timing="brackets", edges="independent")
    ref = reference_aligned_shape(t, v, a, b, 700.0)
    across = np.array([i0 != i1 for i0, i1, _ in ref])
    shape = np.array([s for _, _, s in ref])
    # Across intervals the aligned shape term replaces the statistical one when larger; the
    # quantisation and timing terms are the same, so the bound is at least the shape term.
    assert np.all(bound >= stat - 1e-12)
    assert np.all(bound[across] >= shape[across] - 1e-9)
    assert np.all(bound[across] <= np.sqrt(shape[across] ** 2 + stat[across] ** 2) + 1e-9)


@pytest.mark.parametrize("period_s, step_ms, busy", [(0.1, 100, 0.7), (0.1, 137, 0.8), (0.1, 300, 0.9), (0.02, 45, 0.6)])
def test_aligned_windows_on_a_repeating_load(make_sim, period_s, step_ms, busy):  # type: ignore[no-untyped-def]
    """Training-step windows: they open as the GPU starts and close as it stops, every step alike.

    With a 100 ms counter and 100 ms steps every update interval holds the same mix, the
    interval means are flat and the independent-edges bound sees nothing; the aligned-edge
    bound (the default) allows a step at each edge up to the power limit.
    """
    rng = np.random.default_rng(step_ms)
    sim = make_sim(update_period_s=period_s, phase_ns=int(rng.integers(0, int(period_s * 1e9))))
    step = step_ms * 1_000_000
    n = 40_000 // step_ms
    starts = T0 - 10**9 + np.arange(n + 20, dtype=np.int64) * step
    sim.add_segments(starts, starts + int(busy * step), 340.0)
    rec = synthetic_recording(sim, rng, 40, 1000, drift_ppm=20.0, avg_ns=25_000_000)
    rec.metadata["device"] = {"gpu0.power_limit_w": "700.000000"}  # as NVML reports it
    i = rng.integers(30, n - 60, 3000)
    k = rng.integers(1, 40, 3000)
    a, b = starts[i], starts[i + k - 1] + int(busy * step)
    truth = sim.true_energy(a, b)
    we = rec.energies(a, b)
    err = np.abs(we.energy_j["gpu0"] - truth)
    assert np.all(err <= we.uncertainty_j["gpu0"])
    assert np.median(we.uncertainty_j["gpu0"] / truth) < 0.1  # still a useful number
    if (period_s, step_ms) == (0.1, 100):
        ind = rec.energies(a, b, edges="independent")
        assert np.mean(np.abs(ind.energy_j["gpu0"] - truth) <= ind.uncertainty_j["gpu0"]) < 0.05


@pytest.mark.parametrize(
    "period_s, avg_ms", [(0.02, 20), (0.1, 100), (0.1, 25)], ids=["20ms-averaged", "100ms-averaged", "100ms-instant"]
)
def test_power_channel_bound_covers_95_percent(make_sim, period_s, avg_ms):  # type: ignore[no-untyped-def]
    """The trapezoid over gpu0.power_w, for averaging sensors and H100-like instant power."""
    err, bound, _ = _model_errors(
        make_sim, period_s, 1000, range(20, 22), _ml, channels=["gpu0.power_w"], avg_ns=avg_ms * 1_000_000
    )
    assert np.mean(np.abs(err) <= bound) >= 0.95


# -- end to end ---------------------------------------------------------------------------------
def test_real_sampler_windows_within_bound(make_sim, now_ns):  # type: ignore[no-untyped-def]
    """The native sampler reading the simulated GPU through NVML for 3 s; windows of 1 ms to 1 s."""
    rng = np.random.default_rng(99)
    sim = make_sim(update_period_s=0.02)
    ml_schedule(sim, rng, now_ns, now_ns + 5 * 10**9, longest_s=0.3)
    with jouletrace.Sampler("sim", rate_hz=1000, sim=sim) as s:
        time.sleep(3.0)
    rec = s.recording()
    t = np.asarray(rec.t_ns)
    a, b = random_windows(rng, int(t[0]), int(t[-1]), 3000, longest_s=1.0, margin_ns=100_000_000)
    truth = sim.true_energy(a, b)
    we = rec.energies(a, b, edges="independent")
    assert we.method == {"gpu0": "counter"} and rec.characterize()["gpu0.energy_j"]["update_timing"] == "timestamps"
    # The sampler's longest stall, for the messages: on a loaded machine it can miss a few updates.
    stall_ms = float(np.max(np.diff(t))) / 1e6
    coverage = float(np.mean(np.abs(we.energy_j["gpu0"] - truth) <= we.uncertainty_j["gpu0"]))
    assert coverage >= 0.95, (coverage, stall_ms)  # measured (24 loaded runs): 0.996-1.000
    # Without NVML's timestamps: the periodic grid placed from the sample brackets.
    e, bound, _ = integrate.counter_energy(
        t, rec["gpu0.energy_j"], a, b, t_before_ns=rec.t_before_ns, t_after_ns=rec.t_after_ns, timing="periodic"
    )
    assert integrate.locate_updates(t, rec["gpu0.energy_j"], timing="periodic").method == "periodic"
    # Measured over 24 loaded runs: 0.990-1.000 in 22, 0.957 and 0.972 in two. In the 0.972 run the
    # sampler stalled for 146 ms (7 updates unseen) and every miss was a window ending inside that
    # gap, 1-4.6x over its bound: the bound under-covering there, not chance. Kept at 95 % and
    # reported; a longer stall would fail this.
    coverage = float(np.mean(np.abs(e - truth) <= bound))
    assert coverage >= 0.95, (coverage, stall_ms)
    # The default (aligned-edge) bound is wider and covers them too.
    al = rec.energies(a, b)
    assert np.all(al.uncertainty_j["gpu0"] >= we.uncertainty_j["gpu0"])
    assert np.mean(np.abs(al.energy_j["gpu0"] - truth) <= al.uncertainty_j["gpu0"]) >= 0.95
    # One window through the Measurement API.
    m = rec.energy(int(a[0]), int(b[0]), name="w", edges="independent")
    assert m.energy_j["gpu0"] == we.energy_j["gpu0"][0] and m.method["gpu0"] == "counter"


def test_windows_ending_inside_a_stall_are_covered(make_sim):  # type: ignore[no-untyped-def]
    """Synthetic: a 1 kHz recording of a 20 ms counter whose reads stop for 150 ms now and then
    (seven updates unseen each time), as a starved sampler thread does, over a load of
    random steps. Windows with an edge inside a stall take the stall's hard shape term
    (module docstring, "Stalls"): each is covered, whichever edge model; the statistical
    bound alone was 1-4.6x short of such windows in real time."""
    rng = np.random.default_rng(146)
    sim = make_sim(update_period_s=0.02, idle_w=60.0)
    ml_schedule(sim, rng, T0 - 10**9, T0 + 12 * 10**9, shortest_s=0.005, longest_s=0.3)
    rec = synthetic_recording(sim, rng, 10, 1000, nan_fraction=0.0)
    t = np.asarray(rec.t_ns)
    gaps = T0 + np.arange(1, 10) * 10**9
    keep = np.ones(t.size, dtype=bool)
    for g in gaps:
        keep &= ~((t >= g) & (t < g + 150_000_000))
    stalled = Recording(
        t_ns=t[keep], t_before_ns=t[keep] - 150, t_after_ns=t[keep] + 150,
        seq=np.arange(int(keep.sum()), dtype=np.uint64), status=np.zeros(int(keep.sum()), np.int32),
        values={"gpu0.energy_j": np.asarray(rec["gpu0.energy_j"])[keep]},
        cumulative={"gpu0.energy_j": True}, clock_pairs=rec.clock_pairs, metadata={"source": "synthetic"},
    )
    # Windows of 5 ms to 1 s with one edge inside a stall (both, for the short ones).
    n = 2000
    inside = gaps[rng.integers(0, gaps.size, n)] + rng.integers(2_000_000, 148_000_000, n)
    length = np.exp(rng.uniform(np.log(5e6), np.log(1e9), n)).astype(np.int64)
    before = rng.random(n) < 0.5
    a = np.where(before, inside - length, inside)
    b = np.where(before, inside, inside + length)
    truth = sim.true_energy(a, b)
    for timing in ("periodic", "brackets"):
        u = integrate.locate_updates(stalled.t_ns, stalled["gpu0.energy_j"], t_before_ns=stalled.t_before_ns,
                                     t_after_ns=stalled.t_after_ns, timing=timing)
        assert np.max(np.diff(u.t_ns)) > 4 * 20_000_000  # the stall is one long interval
        for edges in ("independent", "aligned"):
            e, bound, _ = integrate.counter_energy(stalled.t_ns, stalled["gpu0.energy_j"], a, b, updates=u,
                                                   edges=edges)
            miss = np.abs(e - truth) > bound
            assert not miss.any(), (timing, edges, int(miss.sum()), float(np.max(np.abs(e - truth) / bound)))
    # Away from the stalls nothing changed: windows far from them keep the statistical bound.
    u = integrate.locate_updates(stalled.t_ns, stalled["gpu0.energy_j"], timing="periodic",
                                 t_before_ns=stalled.t_before_ns, t_after_ns=stalled.t_after_ns)
    a2 = gaps[:-1] + 400_000_000
    b2 = a2 + 300_000_000
    e_s, bound_s, _ = integrate.counter_energy(stalled.t_ns, stalled["gpu0.energy_j"], a2, b2, updates=u,
                                               edges="independent")
    u_full = integrate.locate_updates(t, rec["gpu0.energy_j"], timing="periodic",
                                      t_before_ns=rec.t_before_ns, t_after_ns=rec.t_after_ns)
    e_f, bound_f, _ = integrate.counter_energy(t, rec["gpu0.energy_j"], a2, b2, updates=u_full, edges="independent")
    np.testing.assert_allclose(bound_s, bound_f, rtol=0.2)


# -- Recording API --------------------------------------------------------------------------------
def test_recording_energy_api(sim20):  # type: ignore[no-untyped-def]
    rec = synthetic_recording(sim20, np.random.default_rng(18), 4, 1000)
    a = np.array([T0 + 10**9, T0 + 15 * 10**8], dtype=np.int64)
    b = a + np.array([10**9, 3_000_000], dtype=np.int64)
    we = rec.energies(a, b)
    assert len(we) == 2 and we.keys == ["gpu0"] and we.channel == {"gpu0": "gpu0.energy_j"}
    np.testing.assert_array_equal(we.total_j, we.energy_j["gpu0"])
    np.testing.assert_allclose(we.duration_s, [1.0, 0.003])
    m = rec.energy(int(a[1]), int(b[1]), name="short")
    assert m.name == "short" and m.duration_s == pytest.approx(0.003)
    assert m.total_j == pytest.approx(we.energy_j["gpu0"][1])
    assert m.flags == ("below_sensor_resolution",) and m.channel_flags["gpu0"] == ("below_sensor_resolution",)
    text = str(m)
    assert text.startswith("short: 0.003 s") and "gpu0" in text and "±" in text and "counter" in text
    by_power = rec.energies(a, b, channels=["gpu0.power_w"])
    assert by_power.method == {"gpu0": "power"}
    assert rec.energy_sources() == {"gpu0": ("gpu0.energy_j", "counter")}
    with pytest.raises(InvalidArgumentError, match="no device or channel"):
        rec.energies(a, b, channels=["gpu7"])
    stamped = Recording(
        t_ns=rec.t_ns, t_before_ns=rec.t_before_ns, t_after_ns=rec.t_after_ns, seq=rec.seq, status=rec.status,
        values={"gpu0.energy_j": rec["gpu0.energy_j"], "gpu0.energy_ts_us": np.zeros(len(rec))},
        cumulative={"gpu0.energy_j": True, "gpu0.energy_ts_us": False},
    )
    with pytest.raises(InvalidArgumentError, match="neither"):
        stamped.energies(a, b, channels=["gpu0.energy_ts_us"])


def test_power_only_recording_uses_the_power_method(sim20):  # type: ignore[no-untyped-def]
    full = synthetic_recording(sim20, np.random.default_rng(19), 3, 1000)
    rec = Recording(
        t_ns=full.t_ns,
        t_before_ns=full.t_before_ns,
        t_after_ns=full.t_after_ns,
        seq=full.seq,
        status=full.status,
        values={"gpu0.power_w": full["gpu0.power_w"]},
        cumulative={"gpu0.power_w": False},
    )
    m = rec.energy(T0 + 10**9, T0 + 2 * 10**9)
    assert m.method == {"gpu0": "power"}
    assert abs(m.total_j - sim20.true_energy(T0 + 10**9, T0 + 2 * 10**9)) <= m.total_uncertainty_j


def test_to_pandas_without_pandas_says_how_to_get_it(sim20, monkeypatch):  # type: ignore[no-untyped-def]
    rec = synthetic_recording(sim20, np.random.default_rng(20), 1, 1000)
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now raises ImportError
    with pytest.raises(ImportError, match="pip install pandas"):
        rec.to_pandas()


def test_recording_energies_refuses_nan_edges(make_sim):
    """Recording.energies checks its windows like the numerics do (no silent garbage)."""
    import jouletrace

    sim = make_sim(update_period_s=0.005)
    with jouletrace.Sampler("sim", sim=sim, rate_hz=500) as s:
        time.sleep(0.1)
    rec = s.recording()
    with pytest.raises(jouletrace.InvalidArgumentError, match="NaN"):
        rec.energies([float("nan")], [int(rec.t_ns[-1])])
    with pytest.raises(jouletrace.InvalidArgumentError, match="ends before it begins"):
        rec.energies([int(rec.t_ns[-1])], [int(rec.t_ns[0])])
