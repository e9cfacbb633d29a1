"""jouletrace.Monitor: windows (nested, overlapping, threaded), sync at both edges, accuracy, sources."""

from __future__ import annotations

import json
import re
import sys
import threading
import time

import numpy as np
import pytest

import jouletrace
from jouletrace.energy.monitor import Monitor
from jouletrace.errors import InvalidArgumentError, SourceUnavailableError
from jouletrace.sampling.sources import SourceInfo
from jouletrace.testing.waiting import wait_for_reads, wait_until

sources_module = sys.modules["jouletrace.sampling.sources"]


@pytest.fixture
def busy_sim(make_sim, now_ns):  # type: ignore[no-untyped-def]
    """A simulated GPU with 10 ms sensor updates and a load that changes every few ms."""
    sim = make_sim(update_period_s=0.01, idle_w=60.0)
    rng = np.random.default_rng(1)
    starts = now_ns + np.cumsum(rng.integers(2_000_000, 30_000_000, 400))
    sim.add_segments(starts, starts + rng.integers(1_000_000, 40_000_000, 400), rng.uniform(50, 500, 400))
    return sim


def test_window_energy_is_within_its_bound(busy_sim):  # type: ignore[no-untyped-def]
    with Monitor(sim=busy_sim, cpu=False, rate_hz=1000) as mon:
        time.sleep(0.05)
        ms = []
        for i in range(12):
            with mon.window(f"w{i}") as m:
                time.sleep(0.005 + 0.02 * i)
            ms.append(m)
        got = mon.measurements()
    assert got == ms and all(m.resolved for m in ms)
    truth = busy_sim.true_energy([m.t0_ns for m in ms], [m.t1_ns for m in ms])
    err = np.array([m.total_j for m in ms]) - truth
    unc = np.array([m.total_uncertainty_j for m in ms])
    assert np.mean(np.abs(err) <= unc) >= 11 / 12
    for m in ms:
        assert set(m.energy_j) == {"gpu0"} and m.method == {"gpu0": "counter"}
        assert m.duration_s == pytest.approx((m.t1_ns - m.t0_ns) * 1e-9)
        if abs(m.duration_s - 0.1) > 0.01:  # ten 10 ms updates; the seen period is not exactly 10 ms
            assert ("below_sensor_resolution" in m.flags) == (m.duration_s < 0.1)
        assert "extrapolated" not in m.flags  # the Monitor waited for the updates after the end


def test_nesting_overlap_and_same_name(busy_sim):  # type: ignore[no-untyped-def]
    with Monitor(sim=busy_sim, cpu=False) as mon:
        outer = mon.begin_window("step")
        time.sleep(0.02)
        a = mon.begin_window("a")
        inner = mon.begin_window("step")  # same name: nests
        time.sleep(0.02)
        b = mon.begin_window("b")
        assert sorted(mon.open_windows()) == ["a", "b", "step", "step"]
        assert mon.end_window("a") is a  # overlaps b: ends while b is open
        time.sleep(0.02)
        assert mon.end_window("step") is inner
        assert mon.end_window("b") is b
        assert mon.end_window("step") is outer
        assert mon.open_windows() == []
        with pytest.raises(InvalidArgumentError, match="no open window 'step'"):
            mon.end_window("step")
    assert outer.t0_ns < a.t0_ns < inner.t0_ns < b.t0_ns < a.t1_ns < inner.t1_ns < b.t1_ns < outer.t1_ns
    # Energies nest too, to within their bounds.
    assert outer.total_j + outer.total_uncertainty_j >= inner.total_j - inner.total_uncertainty_j
    assert [m.name for m in mon.measurements()] == ["a", "step", "b", "step"]
    assert mon.measurements("step") == [inner, outer]


def test_windows_from_many_threads(busy_sim):  # type: ignore[no-untyped-def]
    mon = Monitor(sim=busy_sim, cpu=False).start()
    per_thread: dict[int, list] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            mine = per_thread.setdefault(k, [])
            for _ in range(50):
                outer = mon.begin_window("job")
                with mon.window("job") as inner:  # same name, nested, in every thread at once
                    pass
                assert mon.end_window("job") is outer
                mine.append((outer, inner))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.05)
    mon.stop()
    assert not errors
    assert mon.open_windows() == []
    done = mon.measurements("job")
    assert len(done) == 400
    for pairs in per_thread.values():
        for outer, inner in pairs:
            assert outer.t0_ns <= inner.t0_ns <= inner.t1_ns <= outer.t1_ns
            assert np.isfinite(outer.total_j) and np.isfinite(inner.total_j)


def test_sync_is_called_at_both_edges_before_the_clock(busy_sim):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def sync() -> None:
        calls.append(time.monotonic_ns())

    with Monitor(sim=busy_sim, cpu=False, sync=sync) as mon:
        with mon.window("default") as m:
            assert len(calls) == 1
        assert len(calls) == 2
        assert calls[0] <= m.t0_ns and m.t0_ns <= calls[1] <= m.t1_ns
        other: list[str] = []
        mon.begin_window("override", sync=lambda: other.append("begin"))
        mon.end_window("override", sync=lambda: other.append("end"))
        assert other == ["begin", "end"] and len(calls) == 2
        with mon.window("boom", sync=lambda: other.append("edge")):
            pass
        assert other[-2:] == ["edge", "edge"]

        # An exception inside the window still ends it (and syncs).
        with pytest.raises(RuntimeError):
            with mon.window("fails"):
                raise RuntimeError("body failed")
        assert len(calls) == 4 and mon.open_windows() == []


def test_lazy_result_and_resolve_without_waiting(busy_sim, make_sim):  # type: ignore[no-untyped-def]
    slow = make_sim(update_period_s=0.05)
    with Monitor(sim=slow, cpu=False) as mon:
        time.sleep(0.25)
        m = mon.begin_window("x")
        assert m.open and repr(m) == "<Measurement 'x' open>"
        with pytest.raises(RuntimeError, match="still open"):
            m.total_j  # noqa: B018
        # End just after a counter update has been recorded: the next one is ~45 ms or more away,
        # so resolve(wait=False) below sees none past the end unless this thread stalls that long
        # (ending at a random moment instead left U(0, 50) ms: a few % on a loaded machine).
        last = float(mon.recording()["gpu0.energy_j"][-1])
        wait_until(lambda: float(mon.recording()["gpu0.energy_j"][-1]) != last, "a counter update")
        mon.end_window("x")
        assert not m.resolved and "not computed yet" in repr(m)
        m.resolve(wait=False)  # at once: past the last counter update, extrapolated
        assert m.resolved and "extrapolated" in m.flags and np.isfinite(m.total_j)
    with Monitor(sim=busy_sim, cpu=False) as mon:
        n = mon.begin_window("y")
        time.sleep(0.03)
        mon.end_window("y")
        e = n.total_j  # waits for three counter updates past the end (10 ms each)
        rec = mon.recording()
    assert "extrapolated" not in n.flags and np.isfinite(e)
    after = np.asarray(rec["gpu0.energy_j"])[np.asarray(rec.t_ns) > n.t1_ns]
    assert np.count_nonzero(np.diff(after[np.isfinite(after)])) >= 2  # the updates it waited for
    d = n.to_dict()
    assert json.loads(json.dumps(d))["energy_j"]["gpu0"] == pytest.approx(e)
    text = str(n)
    assert re.match(r"y: 0\.0\d+ s, [0-9.]+ ± [0-9.]+ J total\n  gpu0  ", text), text


def test_energies_of_arbitrary_windows_and_recordings(busy_sim):  # type: ignore[no-untyped-def]
    with Monitor(sim=busy_sim, cpu=False) as mon:
        time.sleep(0.3)
        wait_for_reads(mon.samplers[0], 250)  # the samples asserted below, counted rather than slept for
        now = time.monotonic_ns()
        we = mon.energies([now - 250_000_000, now - 100_000_000], [now - 50_000_000, now])
        rec = mon.recording()
    assert we.keys == ["gpu0"] and len(we) == 2
    assert list(mon.recordings()) == ["sim"] and len(rec) > 200
    truth = busy_sim.true_energy(we.t0_ns, we.t1_ns)
    assert np.all(np.abs(we.total_j - truth) <= we.total_uncertainty_j)
    assert "sim" in repr(mon)


def test_sources_that_are_not_usable_are_skipped_or_refused(busy_sim, monkeypatch):  # type: ignore[no-untyped-def]
    fake = [
        SourceInfo("nvml", "GPUs", False, "libnvidia-ml.so.1: not found", "install the driver"),
        SourceInfo("sim", "sim", True),
        SourceInfo("rapl", "CPU", False, "no RAPL here", ""),
    ]
    monkeypatch.setattr(sources_module, "sources", lambda refresh=False: fake)
    with pytest.raises(SourceUnavailableError, match=r"nvml: libnvidia-ml.so.1: not found; rapl: no RAPL here"):
        Monitor()
    with pytest.raises(SourceUnavailableError, match="none was asked for"):
        Monitor(gpus=None, cpu=False)
    with pytest.raises(SourceUnavailableError, match="'nvml' is not usable here.*install the driver"):
        Monitor(sources=["nvml"])
    mon = Monitor(gpus=[0], cpu=True, sim=busy_sim)  # the sim stands in for NVML; RAPL skipped
    assert [s.source for s in mon.samplers] == ["sim"] and mon.skipped == {"rapl": "no RAPL here"}
    with pytest.raises(InvalidArgumentError):
        Monitor(gpus="some", sim=busy_sim)


def test_top_level_exports():  # type: ignore[no-untyped-def]
    assert jouletrace.Monitor is Monitor
    assert jouletrace.Measurement.__name__ == "Measurement" and callable(jouletrace.load)


def test_monitor_gpu_and_cpu_together(tmp_path, make_sim):
    """A simulated GPU and RAPL (a fake msr tree) sampled together; one window measures both."""
    import threading as _threading

    from jouletrace import _core
    from jouletrace.sampling.rapl import INTEL_MSR
    from jouletrace.testing.rapl import FakeRapl

    unit = 2.0**-14  # J per tick with energy-unit bits 14
    package_w = 35.0
    f = FakeRapl(tmp_path / "machine")
    f.set_energy_unit(0, 14)
    t_start = _core.monotonic_ns()
    f.set_counter(0, INTEL_MSR["package"], 1000)  # a counter reading 0 counts as unsupported
    stop = _threading.Event()
    stale_ns = 0  # the longest a written value was older than the moment it could be read

    def cpu_power() -> None:  # the package draws 35 W: the counter follows the clock every 0.5 ms
        nonlocal stale_ns
        while not stop.is_set():
            t = _core.monotonic_ns()
            f.set_counter(0, INTEL_MSR["package"], 1000 + int(package_w * (t - t_start) * 1e-9 / unit))
            stale_ns = max(stale_ns, _core.monotonic_ns() - t)
            time.sleep(0.0005)

    writer = _threading.Thread(target=cpu_power)
    writer.start()
    sim = make_sim(update_period_s=0.01, idle_w=90.0)
    try:
        with jouletrace.Monitor(sources=["sim", "rapl-msr"], sim=sim, rate_hz=1000,
                                source_options={"rapl-msr": f.options()}) as mon:
            assert [s.source for s in mon.samplers] == ["sim", "rapl-msr"]
            with mon.window("both") as m:
                time.sleep(0.5)
            m.resolve()
    finally:
        stop.set()
        writer.join()
    assert set(m.energy_j) == {"gpu0", "cpu0.package"}
    # Constant power on both: energy = power x duration, within each key's bound (+ the fake
    # counter's own staleness: a value is computed for one moment and written a little later;
    # 2 ms, or twice (both edges) the most the writer measured, if the machine kept it off the CPU).
    assert abs(m.energy_j["gpu0"] - 90.0 * m.duration_s) <= m.uncertainty_j["gpu0"]
    assert abs(m.energy_j["cpu0.package"] - package_w * m.duration_s) <= (
        m.uncertainty_j["cpu0.package"] + package_w * max(0.002, 2 * stale_ns * 1e-9)), stale_ns
    assert m.total_j == pytest.approx(m.energy_j["gpu0"] + m.energy_j["cpu0.package"])


def test_module_level_window_on_the_default_monitor(make_sim, now_ns):
    """`with jouletrace.window("step")`, the one-liner of the design brief."""
    sim = make_sim(update_period_s=0.01, idle_w=40.0)
    sim.add_segment(now_ns, now_ns + 60_000_000_000, 160.0)  # 200 W from now on
    jouletrace.configure(sim=sim, cpu=False, rate_hz=1000)
    try:
        with jouletrace.window("step") as m:
            time.sleep(0.3)
        assert jouletrace.default_monitor() is jouletrace.default_monitor()
        assert abs(m.energy_j["gpu0"] - 200.0 * m.duration_s) <= m.uncertainty_j["gpu0"]
        assert m.uncertainty_j["gpu0"] < 0.2 * m.energy_j["gpu0"]
    finally:
        jouletrace.configure()  # stop it; the next use would make a fresh one


def test_last_window_in_a_with_block_is_measured_before_the_samplers_stop(make_sim, now_ns):
    """`with mon: with mon.window(...) as m: ...` then `print(m)`: the end edge is bracketed."""
    sim = make_sim(update_period_s=0.05, idle_w=100.0)
    with jouletrace.Monitor(sim=sim, cpu=False, rate_hz=1000) as mon:
        with mon.window("last") as m:
            time.sleep(0.3)
    assert "extrapolated" not in m.flags and "edge_outside_recording" not in m.flags
    truth = sim.true_energy(m.t0_ns, m.t1_ns)
    assert abs(m.energy_j["gpu0"] - truth) <= m.uncertainty_j["gpu0"]


def test_window_ended_from_another_thread_is_closed_once(make_sim):
    sim = make_sim(update_period_s=0.01)
    with jouletrace.Monitor(sim=sim, cpu=False) as mon:
        with mon.window("w") as m:
            t = threading.Thread(target=mon.end_window, args=("w",))
            t.start()
            t.join()
            t1 = m.t1_ns
        assert m.t1_ns == t1  # the with-block's exit did not move the end
        assert len(mon.measurements("w")) == 1


def test_totals_leave_out_sub_domains():
    """package + dram count; core/uncore (inside package) and psys (the platform) do not."""
    from jouletrace.energy.measurement import Measurement

    m = Measurement("w", 0, 1_000_000_000)
    energy = {"cpu0.package": 10.0, "cpu0.core": 6.0, "cpu0.uncore": 1.0, "cpu0.dram": 2.0,
              "psys": 30.0, "gpu0": 100.0}
    m._fill(energy, {k: 0.5 for k in energy}, {k: () for k in energy}, {k: "counter" for k in energy})
    assert m.total_j == 112.0
    assert m.total_uncertainty_j == 1.5


def _starve(sampler, stall_from_ns: int, release_after_s: float) -> None:  # type: ignore[no-untyped-def]
    """Make ``sampler`` look starved of the CPU: the reads it begins after ``stall_from_ns`` stay
    unseen (recording, progress) for ``release_after_s`` of wall clock, then all appear at once, as
    when a starved thread catches up."""
    from jouletrace.energy.recording import Recording

    release = time.monotonic_ns() + int(release_after_s * 1e9)
    real_rec, real_last = sampler.recording, sampler.last_read_ns

    def recording():  # type: ignore[no-untyped-def]
        r = real_rec()
        if time.monotonic_ns() >= release:
            return r
        n = int(np.searchsorted(r.t_before_ns, stall_from_ns))
        return Recording(t_ns=r.t_ns[:n], t_before_ns=r.t_before_ns[:n], t_after_ns=r.t_after_ns[:n],
                         seq=r.seq[:n], status=r.status[:n], values={k: r[k][:n] for k in r.channels},
                         cumulative={k: r.is_cumulative(k) for k in r.channels}, clock_pairs=r.clock_pairs,
                         metadata=r.metadata)

    def last_read_ns():  # type: ignore[no-untyped-def]
        last = real_last()
        return last if time.monotonic_ns() >= release or last is None else min(last, stall_from_ns - 1)

    sampler.recording, sampler.last_read_ns = recording, last_read_ns


def test_the_wait_for_closing_updates_follows_a_starved_sampler(make_sim):  # type: ignore[no-untyped-def]
    """A sampler thread that gets no CPU for 0.6 s right after a window ends (far longer than the
    (3 + 1) x 50 ms + 50 ms that the wall-clock wait used to allow) delays the result; it does not
    make it extrapolated. resolve(wait=False) still returns at once."""
    sim = make_sim(update_period_s=0.05)
    with Monitor(sim=sim, cpu=False) as mon:
        s = mon.samplers[0]
        wait_until(lambda: mon._period_seen(0, "gpu0.energy_j", s.recording()) is not None,  # noqa: SLF001
                   "the sensor period to be seen")
        m = mon.begin_window("starved")
        time.sleep(0.01)
        mon.end_window("starved")
        _starve(s, m.t1_ns, 0.6)
        t = time.monotonic()
        m.resolve(wait=False)
        assert time.monotonic() - t < 0.3 and m.provisional and "extrapolated" in m.flags
        m.resolve()
        assert time.monotonic() - t >= 0.6  # it waited for the sampler to catch up
        assert "extrapolated" not in m.flags and "wait_capped" not in m.flags and not m.provisional
        assert m.total_j == pytest.approx(float(sim.true_energy(m.t0_ns, m.t1_ns)), rel=0.2)


def test_a_sampler_that_never_catches_up_hits_the_wall_clock_cap(make_sim):  # type: ignore[no-untyped-def]
    sim = make_sim(update_period_s=0.05)
    with Monitor(sim=sim, cpu=False) as mon:
        mon.wait_cap_s = 0.5
        s = mon.samplers[0]
        wait_until(lambda: mon._period_seen(0, "gpu0.energy_j", s.recording()) is not None,  # noqa: SLF001
                   "the sensor period to be seen")
        m = mon.begin_window("stuck")
        mon.end_window("stuck")
        _starve(s, m.t1_ns, 3600.0)
        t = time.monotonic()
        assert {"extrapolated", "wait_capped"} <= set(m.flags)  # it says so, instead of waiting forever
        assert 0.5 <= time.monotonic() - t < 30.0 and m.wait_capped and m.to_dict()["wait_capped"]
        assert "wait_capped" in str(m)
