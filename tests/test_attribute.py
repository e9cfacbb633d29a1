"""Kernel attribution: alignment, per-name statistics, per-launch energies, against the simulated GPU.

Ground truth: launches become power segments of a :class:`jouletrace.sampling.sim.SimGPU`
(H100-like sensor: a counter that updates every 100 ms), whose exact energy
over any interval is known. The launches go out as real-schema Nsight Systems
SQLite and PyTorch profiler JSON files (``jouletrace.testing.traces``) and come
back through the importers before they are attributed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import jouletrace
from jouletrace import attribute as at
from jouletrace.energy import windows
from jouletrace.energy.updates import locate_updates
from jouletrace.errors import InvalidArgumentError
from jouletrace.kernels.attribution.names import _unresolved_reasons
from jouletrace.kernels.markers import SyncMarkers, available_backends
from jouletrace.kernels.traces import KernelTable, RangeTable, load, load_kineto, load_nsys
from jouletrace.sampling.sim import SimGPU
from jouletrace.testing.stats import coverage_floor
from jouletrace.testing.traces import write_kineto_json, write_nsys_sqlite
from jouletrace.testing.workloads import (
    EPOCH_OFFSET,
    kernel_table,
    name_watts,
    sharing_segments,
    synthetic_launches,
    synthetic_recording,
    tile,
)

TRACES = Path(os.environ.get("JOULETRACE_TRACES_DIR") or Path(__file__).resolve().parent / "data" / "traces")
T0 = 5_000_000_000_000  # CLOCK_MONOTONIC start of the synthetic runs (ns)
IDLE_W = 60.0


def _idle_gaps(s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stretches between the union of the kernels' intervals (a plain loop)."""
    gs, ge = [], []
    order = np.argsort(s, kind="stable")
    reach = None
    for a, b in zip(s[order].tolist(), e[order].tolist(), strict=True):
        if reach is not None and a > reach:
            gs.append(reach)
            ge.append(a)
        reach = b if reach is None else max(reach, b)
    return np.array(gs, np.int64), np.array(ge, np.int64)


def _check_adds_up(rec, launches) -> None:  # type: ignore[no-untyped-def]
    """Launch shares plus the gaps with no kernel are the counter's energy over the span."""
    s, e = launches["start_ns"], launches["end_ns"]
    gs, ge = _idle_gaps(s, e)
    idle = rec.energies(gs, ge).energy_j["gpu0"].sum()
    span = rec.energies([s.min()], [e.max()]).energy_j["gpu0"][0]
    assert launches["energy_j"].sum() + idle == pytest.approx(span, rel=1e-9)
    assert launches.meta["devices"][0]["idle_energy_j"] == pytest.approx(idle, rel=1e-9)


def _truth_per_name(sim: SimGPU, w: dict, n_names: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact energy per launch (J, idle included) and power while running (W), per name."""
    e = sim.true_energy(w["start"], w["end"])
    n = np.bincount(w["name_id"], minlength=n_names)
    tot = np.bincount(w["name_id"], weights=e, minlength=n_names)
    dur = np.bincount(w["name_id"], weights=(w["end"] - w["start"]) * 1e-9, minlength=n_names)
    return tot / n, tot / dur


@pytest.fixture(scope="module")
def h100_run(tmp_path_factory):
    """300 s of 8 kernel names (20 µs .. 5 ms) on a simulated H100 sensor, written as nsys and Kineto."""
    rng = np.random.default_rng(2024)
    w = synthetic_launches(rng, T0, 300.0, n_names=8, rate_hz=300)
    sim = SimGPU(update_period_s=0.1, avg_window_s=0.025, idle_w=IDLE_W, phase_ns=int(rng.integers(0, 100_000_000)))
    sim.add_segments(w["start"], w["end"], w["watts"])
    rec = synthetic_recording(sim, T0 - 1_000_000_000, T0 + 301_000_000_000, rng)
    table = kernel_table(w["start"], w["end"], w["name_id"], w["names"])
    d = tmp_path_factory.mktemp("h100")
    nsys_path = d / "run.sqlite"
    kineto_path = d / "run.pt.trace.json.gz"
    write_nsys_sqlite(nsys_path, table, session_start_epoch_ns=int(table.start_ns.min()) - 1_000_000_000)
    write_kineto_json(kineto_path, table, base_time_ns=int(table.start_ns.min()) // 10**9 * 10**9, gz=True)
    epl, power = _truth_per_name(sim, w, 8)
    yield types.SimpleNamespace(w=w, sim=sim, rec=rec, table=table, nsys=nsys_path, kineto=kineto_path,
                                truth_epl=epl, truth_power=power)
    sim.close()


# ------------------------------------------------------------------------------------------------
# The statistical estimate per kernel name
# ------------------------------------------------------------------------------------------------
def test_per_name_estimate_within_5_percent_from_nsys_and_kineto(h100_run):
    r = h100_run
    results = {}
    for path, loader in ((r.nsys, load_nsys), (r.kineto, load_kineto)):
        kernels = loader(path)
        assert len(kernels) == len(r.table) > 10_000
        np.testing.assert_array_equal(kernels.start_ns, r.table.start_ns)
        res = at.attribute_names(r.rec, kernels)
        assert res.kind == "statistical"
        ids = res["name_id"]
        # name ids are the importer's; map them back to the synthetic names.
        synth_id = np.array([int(n.split("_")[1]) for n in res["name"]])
        truth = r.truth_epl[synth_id]
        est = res["energy_per_launch_j"]
        ok = res["enough_data"]
        assert ok.sum() >= 6, res.to_text()
        rel = np.abs(est / truth - 1.0)
        assert np.all(rel[ok] < 0.05), res.to_text()
        covered = (res["energy_per_launch_ci_low_j"] <= truth) & (truth <= res["energy_per_launch_ci_high_j"])
        assert covered[ok].sum() >= ok.sum() - 1, res.to_text()  # 95 % intervals: at most one miss in 8
        # The workload holds names far shorter than the 100 ms update period, and they are resolved.
        mean_dur = res["active_s"] / res["launches"]
        assert np.any(ok & (mean_dur < 0.001)) and np.all(rel[ok & (mean_dur < 0.001)] < 0.05)
        # Idle power, and the whole: names plus idle make up the counter's energy.
        dev = res.meta["devices"][0]
        assert dev["idle_power_ci_low_w"] <= IDLE_W <= dev["idle_power_ci_high_w"]
        assert dev["intervals"] > 2500 and dev["update_period_ns"] == pytest.approx(1e8, rel=1e-3)
        results[path.suffix] = (ids, res)
    (a_ids, a), (b_ids, b) = results.values()
    np.testing.assert_allclose(np.sort(a["power_w"]), np.sort(b["power_w"]), rtol=1e-9)


def test_confidence_intervals_cover_the_truth_at_their_level():
    """Many independent runs: the 95 % intervals of power and energy per launch hold the truth ~95 % of the time."""
    hits_p, hits_e, widths = [], [], []
    for seed in range(16):
        rng = np.random.default_rng(500 + seed)
        w = synthetic_launches(rng, T0, 120.0, n_names=6, rate_hz=300)
        with SimGPU(update_period_s=0.1, avg_window_s=0.025, idle_w=IDLE_W,
                    phase_ns=int(rng.integers(0, 100_000_000))) as sim:
            sim.add_segments(w["start"], w["end"], w["watts"])
            rec = synthetic_recording(sim, T0 - 1_000_000_000, T0 + 121_000_000_000, rng)
            epl, power = _truth_per_name(sim, w, 6)
        res = at.attribute_names(rec, kernel_table(w["start"], w["end"], w["name_id"], w["names"]), seed=seed)
        sid = res["name_id"]
        hits_p += list((res["power_ci_low_w"] <= power[sid]) & (power[sid] <= res["power_ci_high_w"]))
        hits_e += list((res["energy_per_launch_ci_low_j"] <= epl[sid]) & (epl[sid] <= res["energy_per_launch_ci_high_j"]))
        widths += list((res["power_ci_high_w"] - res["power_ci_low_w"]) / 2 / res["power_w"])
    assert len(hits_p) == 96
    # Nominal 95 %: 96 draws, a binomial sd of ~2.2 %; below 88 % the intervals are too narrow.
    assert np.mean(hits_p) >= 0.88 and np.mean(hits_e) >= 0.88
    # ...and they are informative, not vacuous.
    assert np.median(widths) < 0.05


def test_names_that_cannot_be_told_apart_get_wide_intervals():
    """A name whose every launch runs alongside a twin of the same length, on another stream:
    only the pair's sum is known, and the intervals say so."""
    rng = np.random.default_rng(9)
    w = synthetic_launches(rng, T0, 120.0, n_names=3, rate_hz=200)
    m = w["name_id"] == 0
    s = np.concatenate([w["start"], w["start"][m]])
    e = np.concatenate([w["end"], w["end"][m]])
    nid = np.concatenate([w["name_id"], np.full(m.sum(), 3)])
    watts = np.concatenate([w["watts"], np.full(m.sum(), 150.0)])
    stream = np.concatenate([np.full(w["start"].size, 7), np.full(m.sum(), 8)])
    with SimGPU(update_period_s=0.1, avg_window_s=0.025, idle_w=IDLE_W) as sim:
        sim.add_segments(*sharing_segments(s, e, watts))
        rec = synthetic_recording(sim, T0 - 1_000_000_000, T0 + 121_000_000_000, rng)
    res = at.attribute_names(rec, kernel_table(s, e, nid, ["a", "b", "c", "twin"], stream=stream))
    assert res.meta["devices"][0]["collinear_directions"] == 1
    row = {n: i for i, n in enumerate(res["name"])}
    for n in ("a", "twin"):
        assert not res["enough_data"][row[n]]
        assert res["power_ci_low_w"][row[n]] == 0.0 and res["power_ci_high_w"][row[n]] == np.inf
    for n in ("b", "c"):
        assert res["enough_data"][row[n]] and np.isfinite(res["power_ci_high_w"][row[n]])


# ------------------------------------------------------------------------------------------------
# Per launch, direct
# ------------------------------------------------------------------------------------------------
def test_per_launch_energies_are_flagged_bounded_and_add_up(h100_run):
    r = h100_run
    kernels = load(r.nsys)
    launches = at.attribute_launches(r.rec, kernels)
    assert launches.kind == "direct" and len(launches) == len(kernels)
    # Every kernel is shorter than ten 100 ms updates: all flagged below resolution.
    assert launches["below_resolution"].all()
    truth = r.sim.true_energy(launches["start_ns"], launches["end_ns"])
    err = np.abs(launches["energy_j"] - truth)
    # Below resolution the bound includes the board's power-limit range: it always holds.
    assert launches.meta["devices"][0]["power_limit_w"] == 700.0
    assert np.all(err <= launches["bound_j"])
    # Without a power limit it is the windows' bound alone (checked there for windows >= 1 ms).
    plain = at.attribute_launches(r.rec, kernels, power_limit_w=float("nan"))
    assert np.all(plain["bound_j"] <= launches["bound_j"]) and np.any(plain["bound_j"] < launches["bound_j"])
    # The launches' shares plus the no-kernel segments are the counter's energy over the span.
    _check_adds_up(r.rec, launches)
    # rows map back to the trace
    np.testing.assert_array_equal(kernels.name_id[launches["index"]], launches["name_id"])
    by = launches.by_name()
    assert by["launches"].sum() == len(kernels)
    assert by["energy_j"].sum() == pytest.approx(launches["energy_j"].sum())


def test_long_launches_are_not_flagged_and_within_their_bound(make_sim):
    sim = make_sim(update_period_s=0.1, avg_window_s=0.025, idle_w=IDLE_W, phase_ns=37_000_000)
    s = T0 + np.array([1, 4, 8], dtype=np.int64) * 1_000_000_000
    e = s + np.array([1_500_000_000, 2_500_000_000, 30_000_000], dtype=np.int64)
    sim.add_segments(s, e, [200.0, 350.0, 300.0])
    rec = synthetic_recording(sim, T0, T0 + 12_000_000_000, np.random.default_rng(1))
    launches = at.attribute_launches(rec, kernel_table(s, e, np.array([0, 1, 2]), ["x", "y", "z"]))
    order = np.argsort(launches["index"])
    br = launches["below_resolution"][order]
    assert br.tolist() == [False, False, True]
    truth = sim.true_energy(s, e)
    # The long ones: within 3 % (the counter smears each power step over one 100 ms update).
    assert np.all(np.abs(launches["energy_j"][order][:2] / truth[:2] - 1) < 0.03)
    assert np.all(np.abs(launches["energy_j"][order] - truth) <= launches["bound_j"][order])


def test_concurrent_kernels_share_by_overlap(make_sim):
    """Two streams that overlap. The simulated GPU follows the sharing rule (power while m kernels
    run = idle + the mean of their powers); per name, the estimate recovers each name's power."""
    rng = np.random.default_rng(77)
    a = synthetic_launches(rng, T0, 120.0, n_names=3, rate_hz=150)
    b = synthetic_launches(rng, T0 + 137_000, 120.0, n_names=3, rate_hz=150)
    s = np.concatenate([a["start"], b["start"]])
    e = np.concatenate([a["end"], b["end"]])
    nid = np.concatenate([a["name_id"], b["name_id"] + 3])
    watts = np.concatenate([a["name_watts"], b["name_watts"]])
    stream = np.concatenate([np.full(a["start"].size, 7), np.full(b["start"].size, 13)])
    sim = make_sim(update_period_s=0.1, avg_window_s=0.025, idle_w=IDLE_W, phase_ns=11_000_000)
    sim.add_segments(*sharing_segments(s, e, watts[nid]))
    rec = synthetic_recording(sim, T0 - 1_000_000_000, T0 + 121_000_000_000, rng)
    kernels = kernel_table(s, e, nid, [f"k{i}" for i in range(6)], stream=stream)
    res = at.attribute_names(rec, kernels)
    assert np.all(res["overlap_fraction"] > 0.005)
    truth = IDLE_W + watts[res["name_id"]]
    ok = res["enough_data"]
    assert ok.sum() >= 4
    assert np.all(np.abs(res["power_w"][ok] / truth[ok] - 1) < 0.05), res.to_text()
    covered = (res["power_ci_low_w"] <= truth) & (truth <= res["power_ci_high_w"])
    assert covered.sum() >= len(res) - 1
    # Per launch: share times are the integral of 1/m; energies add up over the span.
    launches = at.attribute_launches(rec, kernels)
    assert np.all(launches["share_s"] <= launches["duration_s"] + 1e-12)
    assert np.any(launches["share_s"] < launches["duration_s"] - 1e-9)
    _check_adds_up(rec, launches)


def test_per_launch_shares_match_elementary_segments(make_sim):
    """Random launches on three streams, against each elementary segment's energy / m (plain loops)."""
    rng = np.random.default_rng(21)
    n = 300
    s = T0 + np.sort(rng.integers(0, 3_000_000_000, n))
    e = s + rng.integers(1_000, 80_000_000, n)
    sim = make_sim(update_period_s=0.02, idle_w=IDLE_W)
    sim.add_segments(s, e, rng.uniform(20, 300, n))
    rec = synthetic_recording(sim, T0 - 100_000_000, T0 + 3_200_000_000, rng)
    launches = at.attribute_launches(rec, kernel_table(s, e, np.zeros(n, np.int64), ["k"]))
    knots = np.unique(np.concatenate([s, e]))
    seg_e = rec.energies(knots[:-1], knots[1:]).energy_j["gpu0"]
    expect = np.zeros(n)
    for q in range(knots.size - 1):
        a, b = knots[q], knots[q + 1]
        on = np.flatnonzero((s <= a) & (e >= b))
        if on.size:
            expect[on] += seg_e[q] / on.size
    order = np.argsort(launches["index"])
    np.testing.assert_allclose(launches["energy_j"][order], expect, rtol=1e-9, atol=1e-9)


def test_two_identical_overlapping_launches_split_equally(make_sim):
    sim = make_sim(update_period_s=0.01, idle_w=50.0)
    s = np.array([T0 + 2_000_000_000] * 2, dtype=np.int64)
    e = s + 3_000_000_000
    sim.add_segments(s, e, [100.0, 100.0])
    rec = synthetic_recording(sim, T0, T0 + 6_000_000_000, np.random.default_rng(2))
    launches = at.attribute_launches(rec, kernel_table(s, e, np.array([0, 1]), ["p", "q"]))
    window = rec.energies(s[:1], e[:1]).energy_j["gpu0"][0]
    np.testing.assert_allclose(launches["energy_j"], [window / 2, window / 2], rtol=1e-12)
    np.testing.assert_allclose(launches["share_s"], [1.5, 1.5])


# ------------------------------------------------------------------------------------------------
# The pieces: share times, interval matrix, NNLS, counter updates
# ------------------------------------------------------------------------------------------------
def _dense_reference(s, e, nid, n_names, u):  # type: ignore[no-untyped-def]
    """Share and idle time per interval on a 1-ns grid (times are small integers here)."""
    t = np.arange(u[0], u[-1])
    active = (s[None, :] <= t[:, None]) & (t[:, None] < e[None, :])
    m = active.sum(axis=1)
    share_t = np.where(m[:, None] > 0, active / np.maximum(m, 1)[:, None], 0.0)
    k = np.searchsorted(u, t, side="right") - 1
    K = u.size - 1
    share = np.zeros((K, n_names))
    for j in range(n_names):
        share[:, j] = np.bincount(k, weights=share_t[:, nid == j].sum(axis=1), minlength=K)
    idle = np.bincount(k, weights=(m == 0).astype(float), minlength=K)
    per_launch = share_t.sum(axis=0)
    return share * 1e-9, idle * 1e-9, per_launch * 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_share_times_and_interval_matrix_match_a_dense_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    s = rng.integers(0, 3000, n)
    e = s + rng.integers(0, 700, n)  # zero-length launches too
    zero = rng.random(n) < 0.1
    e[zero] = s[zero]
    nid = rng.integers(0, 4, n)
    u = np.unique(np.concatenate([[200, 3500], rng.integers(200, 3500, int(rng.integers(1, 15)))]))
    order = np.argsort(s, kind="stable")
    s, e, nid = s[order], e[order], nid[order]
    share, idle = at.interval_matrix(s, e, nid, 4, u)
    ref_share, ref_idle, ref_launch = _dense_reference(s, e, nid, 4, u)
    np.testing.assert_allclose(share, ref_share, atol=1e-15)
    np.testing.assert_allclose(idle, ref_idle, atol=1e-15)
    np.testing.assert_allclose(share.sum(1) + idle, np.diff(u) * 1e-9, atol=1e-15)
    t = np.arange(s.min(), max(e.max(), s.min() + 1))
    full = _dense_reference(s, e, nid, 4, np.array([t[0], t[-1] + 1]))[2]
    np.testing.assert_allclose(at.share_times(s, e), full, atol=1e-15)


def _brute_nnls(A: np.ndarray, b: np.ndarray) -> float:
    """The least residual over every support set whose unconstrained solution is non-negative."""
    import itertools

    best = float(np.linalg.norm(b))
    n = A.shape[1]
    for r in range(1, n + 1):
        for cols in itertools.combinations(range(n), r):
            x = np.linalg.lstsq(A[:, cols], b, rcond=None)[0]
            if np.all(x >= -1e-12):
                best = min(best, float(np.linalg.norm(A[:, cols] @ x - b)))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_nnls_matches_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(3, 30)), int(rng.integers(1, 7))
    A = rng.normal(size=(m, n)) * rng.uniform(0.01, 100, n)
    if seed % 5 == 0 and n > 1:
        A[:, -1] = A[:, 0] * 2.0  # collinear columns
    if seed % 7 == 0:
        A[:, 0] = 0.0  # an all-zero column
    b = rng.normal(size=m) * 10
    x, res = at.nnls(A, b)
    assert np.all(x >= 0)
    assert res == pytest.approx(float(np.linalg.norm(A @ x - b)), rel=1e-12)
    assert res <= _brute_nnls(A, b) * (1 + 1e-8) + 1e-10


def test_nnls_recovers_a_positive_solution_exactly():
    rng = np.random.default_rng(4)
    A = rng.uniform(0, 1, (50, 8))
    x0 = rng.uniform(0.5, 3, 8)
    x, res = at.nnls(A, A @ x0)
    np.testing.assert_allclose(x, x0, rtol=1e-9)
    assert res < 1e-9
    with pytest.raises(InvalidArgumentError):
        at.nnls(A, np.ones(3))


def test_counter_updates_are_placed_in_their_brackets():
    t = np.array([0, 10, 20, 30, 40, 50], dtype=np.int64) * 1000
    v = np.array([1.0, 1.0, 2.0, 2.0, np.nan, 3.0])
    u = locate_updates(t, v, t_before_ns=t - 100, t_after_ns=t + 100, timing="brackets")
    # change between samples 1 and 2: (9.9 µs, 20.1 µs]; between 3 and 5 (4 is NaN): (29.9, 50.1]
    np.testing.assert_array_equal(u.t_ns, [15_000, 40_000])
    np.testing.assert_array_equal(u.h_ns, [5_100.0, 10_100.0])
    np.testing.assert_array_equal(u.lo_ns, [9_900, 29_900])
    np.testing.assert_array_equal(u.hi_ns, [20_100, 50_100])
    np.testing.assert_array_equal(u.value, [2.0, 3.0])


# ------------------------------------------------------------------------------------------------
# Alignment and sync markers
# ------------------------------------------------------------------------------------------------
def _recording_at(t0: int, t1: int, pairs: np.ndarray) -> jouletrace.Recording:
    t = np.arange(t0, t1, 1_000_000, dtype=np.int64)
    return jouletrace.Recording(
        t_ns=t, t_before_ns=t, t_after_ns=t, seq=np.arange(t.size), status=np.zeros(t.size, np.uint8),
        values={"gpu0.energy_j": np.floor(np.arange(t.size) / 100.0)}, cumulative={"gpu0.energy_j": True},
        clock_pairs=pairs,
    )


def test_alignment_through_clock_pairs():
    pairs = np.array([[T0, T0 + EPOCH_OFFSET, 40], [T0 + 10**10, T0 + 10**10 + EPOCH_OFFSET + 3_000, 55]])
    rec = _recording_at(T0, T0 + 10**10, pairs)
    s = np.array([T0 + 10**9, T0 + 9 * 10**9])
    table = kernel_table(s, s + 1000, np.array([0, 0]), ["k"])
    al = at.align(table, rec)
    assert al.method == "clock_pairs" and al.trace_clock == "epoch"
    # nearest pair: the first kernel through the first pair, the second through the slewed one
    np.testing.assert_array_equal(al.to_monotonic(table.start_ns), [T0 + 10**9, T0 + 9 * 10**9 - 3_000])
    np.testing.assert_array_equal(al.to_trace(al.to_monotonic(table.start_ns)), table.start_ns)
    assert al.uncertainty_ns == 55 + 3_000  # read bracket plus the wall clock's slew
    # A monotonic-clock table maps as it is.
    mono = KernelTable(s, s + 1000, [0, 0], [0, 0], ["k"], clock="monotonic")
    assert at.align(mono, rec).method == "identity"
    # A trace from another time, or a recording without pairs, is refused with a reason.
    far = kernel_table(s + 100 * 10**9, s + 100 * 10**9 + 1, np.array([0, 0]), ["k"])
    with pytest.raises(InvalidArgumentError, match="after the recording"):
        at.align(far, rec)
    with pytest.raises(InvalidArgumentError, match="no clock pairs"):
        at.align(table, _recording_at(T0, T0 + 10**10, np.zeros((0, 3))))


@pytest.mark.parametrize("fmt", ["nsys", "kineto"])
def test_sync_markers_measure_and_correct_a_trace_clock_offset(tmp_path, fmt):
    """The profiler's clock is 3.2 ms off the wall clock jouletrace saw: markers find it."""
    markers = SyncMarkers(backend="none", hold_s=0.0002)
    t_first = time.monotonic_ns()
    for i in range(6):
        markers.mark(f"step{i}")
        time.sleep(0.002)
    log = markers.log()
    assert len(log) == 6 and log.names[0].endswith(":0:step0")
    assert np.all(log.start_half_ns >= 0) and np.all(log.end_ns > log.start_ns)
    pairs = np.array([[t_first - 10**9, t_first - 10**9 + EPOCH_OFFSET, 40],
                      [t_first + 10**9, t_first + 10**9 + EPOCH_OFFSET, 40]])
    rec = _recording_at(t_first - 10**9, t_first + 10**9, pairs)
    skew = 3_200_000  # the trace's epoch times are 3.2 ms late
    rng = np.random.default_rng(3)
    jitter = rng.integers(-2_000, 2_000, len(log))
    ranges = RangeTable.from_names(log.names, log.start_ns + EPOCH_OFFSET + skew + jitter,
                                   log.end_ns + EPOCH_OFFSET + skew + jitter)
    ks = log.start_ns[:3] + 50_000  # kernels run just after three markers (true CLOCK_MONOTONIC)
    table = kernel_table(ks, ks + 20_000, np.zeros(3, np.int64), ["k"], epoch_offset=EPOCH_OFFSET + skew)
    table = KernelTable(table.start_ns, table.end_ns, table.device, table.name_id, table.names, ranges=ranges)
    path = tmp_path / ("t.sqlite" if fmt == "nsys" else "t.json")
    if fmt == "nsys":
        write_nsys_sqlite(path, table, session_start_epoch_ns=int(table.start_ns.min()) - 10**8)
    else:
        write_kineto_json(path, table, base_time_ns=int(table.start_ns.min()) // 10**9 * 10**9)
    kernels = load(path)
    plain = at.align(kernels, rec)
    assert np.all(np.abs(plain.to_monotonic(kernels.start_ns) - ks - skew) < 100)  # off by the skew
    al = at.align(kernels, rec, markers=markers)
    assert al.method == "markers" and al.markers_matched == 12
    assert abs(al.correction_ns + skew) <= al.uncertainty_ns
    assert al.uncertainty_ns < 20_000 + int(log.start_half_ns.max() + log.end_half_ns.max())
    assert np.all(np.abs(al.to_monotonic(kernels.start_ns) - ks) <= al.uncertainty_ns)
    with pytest.raises(InvalidArgumentError, match="none of the"):
        at.align(kernels, rec, markers=_other_markers())


def _other_markers():  # type: ignore[no-untyped-def]
    m = SyncMarkers(backend="none", session="feedbeef", hold_s=0)
    m.mark()
    return m


def _stand_in_modules(monkeypatch, *, nvtx_ok: bool, torch_nvtx_ok: bool, calls: list):  # type: ignore[no-untyped-def]
    if nvtx_ok:
        nv = types.ModuleType("nvtx")
        nv.push_range = lambda message=None, **kw: calls.append(("nvtx.push", message, time.monotonic_ns()))
        nv.pop_range = lambda **kw: calls.append(("nvtx.pop", None, time.monotonic_ns()))
        monkeypatch.setitem(sys.modules, "nvtx", nv)
    else:
        monkeypatch.setitem(sys.modules, "nvtx", None)  # import fails

    def range_push(msg):  # type: ignore[no-untyped-def]
        if not torch_nvtx_ok:
            raise RuntimeError("NVTX functions not installed. Are you sure you have a CUDA build?")
        calls.append(("torch.push", msg, time.monotonic_ns()))

    def range_pop():  # type: ignore[no-untyped-def]
        if not torch_nvtx_ok:
            raise RuntimeError("NVTX functions not installed")
        calls.append(("torch.pop", None, time.monotonic_ns()))

    class record_function:  # noqa: N801  (torch's name)
        def __init__(self, name):  # type: ignore[no-untyped-def]
            self.name = name

        def __enter__(self):  # type: ignore[no-untyped-def]
            calls.append(("rf.enter", self.name, time.monotonic_ns()))
            return self

        def __exit__(self, *a):  # type: ignore[no-untyped-def]
            calls.append(("rf.exit", self.name, time.monotonic_ns()))

    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(nvtx=types.SimpleNamespace(range_push=range_push, range_pop=range_pop))
    torch.profiler = types.SimpleNamespace(record_function=record_function)
    monkeypatch.setitem(sys.modules, "torch", torch)


def test_markers_go_through_nvtx_and_record_function_with_brackets(monkeypatch):
    calls: list = []
    _stand_in_modules(monkeypatch, nvtx_ok=True, torch_nvtx_ok=False, calls=calls)
    assert available_backends() == ["nvtx", "record_function"]
    m = SyncMarkers(hold_s=0.0003)
    assert m.backends == ("nvtx", "record_function")
    name = m.mark("x")
    assert [c[0] for c in calls] == ["nvtx.push", "rf.enter", "rf.exit", "nvtx.pop"]
    assert calls[0][1] == name == calls[1][1]
    log = m.log()
    # every stand-in call happened inside the recorded bracket of its edge
    for kind, _, t in calls:
        mid, half = (log.start_ns[0], log.start_half_ns[0]) if kind in ("nvtx.push", "rf.enter") else (log.end_ns[0], log.end_half_ns[0])
        assert mid - half <= t <= mid + half
    assert log.end_ns[0] - log.start_ns[0] >= 300_000
    # An explicitly named backend that does not work is refused; torch's NVTX when it works.
    with pytest.raises(InvalidArgumentError, match="not usable"):
        SyncMarkers(backend="torch-nvtx")
    calls.clear()
    _stand_in_modules(monkeypatch, nvtx_ok=False, torch_nvtx_ok=True, calls=calls)
    m2 = SyncMarkers()
    assert m2.backends == ("torch-nvtx", "record_function")
    m2.mark()
    assert [c[0] for c in calls if c[0] != "torch.push" or c[1] != "jouletrace.probe"][-4:] == [
        "torch.push", "rf.enter", "rf.exit", "torch.pop"]
    with pytest.raises(InvalidArgumentError, match="unknown marker backend"):
        SyncMarkers(backend="etw")


def test_markers_without_any_annotation_api_only_record_times(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvtx", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    m = SyncMarkers()
    assert m.backends == ()
    m.mark()
    m.mark()
    log = m.log()
    assert len(log) == 2 and log.start_ns[1] > log.start_ns[0]
    r = log.ranges(lambda x: x + 5)
    np.testing.assert_array_equal(r.start_ns, np.sort(log.start_ns) + 5)


# ------------------------------------------------------------------------------------------------
# Tables, devices
# ------------------------------------------------------------------------------------------------
def test_result_tables_sort_by_total_energy_and_say_their_kind(h100_run):
    res = at.attribute_names(h100_run.rec, h100_run.table, bootstrap=50)
    tot = res["total_energy_j"]
    assert np.all(np.diff(tot) <= 0)  # sorted by total energy, largest first
    by_launches = res.sort("launches", descending=False)
    assert np.all(np.diff(by_launches["launches"]) >= 0)
    assert set(by_launches["name"]) == set(res["name"])
    assert "total_energy_j" in res.columns and res.kind == "statistical"
    text = res.to_text(3)
    assert "energy_per_launch_j" in text and "more rows" in text
    d = res.to_dict()
    assert d["kind"] == ["statistical"] * len(res)
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            res.to_pandas()
    else:
        df = res.to_pandas()
        assert list(df["kind"].unique()) == ["statistical"] and len(df) == len(res)
    with pytest.raises(KeyError, match="no column"):
        res["nope"]


def test_devices_matched_by_uuid_pci_guess_or_map():
    uuid = "GPU-5117e000-0000-4000-8000-000000000001"
    rec = jouletrace.Recording(
        t_ns=np.arange(3), t_before_ns=np.arange(3), t_after_ns=np.arange(3), seq=np.arange(3),
        status=np.zeros(3, np.uint8), values={"gpu0.energy_j": np.zeros(3), "gpu1.energy_j": np.zeros(3)},
        cumulative={"gpu0.energy_j": True, "gpu1.energy_j": True},
        metadata={"device": {"gpu0.uuid": "GPU-aaaa", "gpu1.uuid": uuid, "gpu0.pci_bus_id": "00000000:01:00.0",
                             "gpu1.pci_bus_id": "00000000:02:00.0"}},
    )
    devs = [
        {"id": 0, "name": None, "uuid": uuid[4:], "pci_bus_id": None, "mapping": "uuid"},
        {"id": 1, "name": None, "uuid": None, "pci_bus_id": "0000:01:00.0", "mapping": "pci"},
        {"id": 2, "name": None, "uuid": None, "pci_bus_id": None, "mapping": "guessed"},
    ]
    k = KernelTable([1, 2, 3], [2, 3, 4], [0, 1, 2], [0, 0, 0], ["k"], devices=devs)
    m = at.device_channels(k, rec)
    assert m == {0: ("gpu1.energy_j", "uuid"), 1: ("gpu0.energy_j", "pci")}
    assert at.device_channels(k, rec, {2: "gpu0"})[2] == ("gpu0.energy_j", "given")
    with pytest.raises(InvalidArgumentError, match="lacks"):
        at.device_channels(k, rec, {2: "gpu7"})
    solo = KernelTable([1], [2], [3], [0], ["k"])
    assert at.device_channels(solo, rec) == {}


# ------------------------------------------------------------------------------------------------
# Real traces' kernel timelines through the simulated GPU
# ------------------------------------------------------------------------------------------------
def test_end_to_end_real_time_with_the_sampler_and_a_real_trace(make_sim, tmp_path):
    """The ResNet-50 trace's kernel timeline, shifted to now, replayed by the simulated GPU while a
    Sampler records; the trace is written as Kineto JSON on the wall clock and imported back."""
    real = load_kineto(TRACES / "kineto-2021-resnet50.json.gz")
    rng = np.random.default_rng(12)
    watts = name_watts(real.names)
    sim = make_sim(update_period_s=0.01, avg_window_s=0.0025, idle_w=IDLE_W)
    start = time.monotonic_ns() + 400_000_000
    s, e, nid, stream = tile(real, start, 3.0, rng)
    sim.add_segments(s, e, watts[nid])
    mono, wall, _ = jouletrace._core.take_clock_pair()  # bracketed: immune to a preemption
    wall_minus_mono = wall - mono  # what the profiler's clock would say
    with jouletrace.Sampler("sim", sim=sim, rate_hz=2000) as sampler:
        while time.monotonic_ns() < e.max() + 200_000_000:
            time.sleep(0.05)
    rec = sampler.recording()
    table = kernel_table(s, e, nid, real.names, stream=stream, epoch_offset=wall_minus_mono)
    path = tmp_path / "replay.pt.trace.json"
    write_kineto_json(path, table, base_time_ns=int(table.start_ns.min()) // 10**9 * 10**9)
    kernels = load(path)
    result = at.attribute(rec, kernels)
    al = result.alignment
    order = np.argsort(s, kind="stable")
    assert np.all(np.abs(al.to_monotonic(kernels.start_ns) - s[order]) <= al.uncertainty_ns + 200_000)
    # Per launch: all below resolution at 10 ms updates, within their bound, adding up.
    launches = result.launches
    truth = sim.true_energy(launches["start_ns"], launches["end_ns"])
    assert launches["below_resolution"].all()
    assert np.mean(np.abs(launches["energy_j"] - truth) <= launches["bound_j"]) >= 0.9
    _check_adds_up(rec, launches)
    span = rec.energies([s.min()], [e.max()]).energy_j["gpu0"][0]
    assert span == pytest.approx(float(sim.true_energy(s.min(), e.max())), rel=0.02)
    # Per name: 67 names from 300 counter intervals; the intervals hold the truth.
    names = result.names
    truth_p = IDLE_W + watts[names["name_id"]]
    covered = (names["power_ci_low_w"] <= truth_p) & (truth_p <= names["power_ci_high_w"])
    # 95 % intervals of ~67 names from one real-time run: below the binomial 10^-4 floor (~82 %) only
    # if they under-cover.
    assert covered.mean() >= coverage_floor(covered.size, 0.95), names.to_text(80)
    ok = names["enough_data"]
    assert np.all(np.abs(names["power_w"][ok] / truth_p[ok] - 1) < 0.05), names.to_text(80)
    assert "per kernel name" in result.summary()


# ------------------------------------------------------------------------------------------------
# One timing for every consumer; degenerate fits are never "resolved"
# ------------------------------------------------------------------------------------------------
def test_per_launch_and_per_name_use_the_recordings_one_placement(h100_run, monkeypatch):
    """Both estimates take their counter updates from Recording.updates: moved there (by 300 µs),
    both move, and each equals what the moved placement gives when passed explicitly."""
    r = h100_run
    kernels = r.table
    ch = "gpu0.energy_j"
    base = r.rec.updates(ch)
    moved = dataclasses.replace(base, t_ns=base.t_ns + 300_000, _knots=None)
    before_l = at.attribute_launches(r.rec, kernels)["energy_j"]
    before_n = at.attribute_names(r.rec, kernels, bootstrap=0)
    explicit_n = at.attribute_names(r.rec, kernels, bootstrap=0, updates={ch: moved})
    monkeypatch.setattr(r.rec, "updates", lambda c: moved if c == ch else base)
    after_l = at.attribute_launches(r.rec, kernels)["energy_j"]
    after_n = at.attribute_names(r.rec, kernels, bootstrap=0)
    we = windows.counter_energy(r.rec.t_ns, r.rec[ch], at.align(kernels, r.rec).to_monotonic(kernels.start_ns[:50]),
                                  at.align(kernels, r.rec).to_monotonic(kernels.end_ns[:50]), updates=moved)[0]
    np.testing.assert_allclose(after_l[:50], we, rtol=1e-9, atol=1e-12)  # these launches never overlap
    assert not np.allclose(after_l, before_l)
    np.testing.assert_array_equal(after_n["power_w"], explicit_n["power_w"])
    assert not np.array_equal(after_n["power_w"], before_n["power_w"])
    assert after_n.meta["devices"][0]["update_placement"] == moved.summary()


def test_degenerate_fits_are_flagged_with_their_reason():
    P = np.array([100.0, 0.0, 50.0, 900.0, 80.0, 80.0, np.nan])
    lo = np.array([98.0, 0.0, 50.0, 890.0, 40.0, 79.0, -np.inf])
    hi = np.array([102.0, 3.0, 50.0, 910.0, 120.0, np.inf, np.inf])
    ols = np.array([100.0, -4.0, 50.0, 900.0, 80.0, 80.0, np.nan])
    n = np.full(7, 1000)
    why = _unresolved_reasons(P, lo, hi, ols, n, n, np.arange(7), 20, 30, 0.05, 700.0)
    assert why[0] == ""
    assert "negative" in why[1]
    assert "zero width" in why[2]
    assert "power limit (700 W)" in why[3]
    assert "wider than" in why[4]
    assert "collinear" in why[5]
    assert "no estimate" in why[6]
    few = _unresolved_reasons(P[:1], lo[:1], hi[:1], ols[:1], np.array([5]), np.array([1000]), np.zeros(1, int),
                              20, 30, 0.05, None)
    assert "5 launches" in few[0]


def test_estimates_above_the_power_limit_are_not_resolved(h100_run):
    r = h100_run
    rec = jouletrace.Recording(
        t_ns=r.rec.t_ns, t_before_ns=r.rec.t_before_ns, t_after_ns=r.rec.t_after_ns, seq=r.rec.seq,
        status=r.rec.status, values={"gpu0.energy_j": r.rec["gpu0.energy_j"]}, cumulative={"gpu0.energy_j": True},
        clock_pairs=r.rec.clock_pairs, metadata={"device": {"gpu0.power_limit_w": "150"}})
    res = at.attribute_names(rec, r.table, bootstrap=50)
    over = res["power_w"] > 150
    assert over.any() and not res["resolved"][over].any()
    assert all("power limit (150 W)" in s for s in res["unresolved_reason"][over])
    # limits may be +inf, never NaN
    assert not np.isnan(res["power_ci_low_w"]).any() and not np.isnan(res["power_ci_high_w"]).any()
