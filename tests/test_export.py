"""Perfetto / Chrome-trace export: kernels and jouletrace's counter tracks on one timeline."""

from __future__ import annotations

import gzip
import json
import os
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

import jouletrace
from jouletrace import attribute as at
from jouletrace.kernels.export import merge_kineto, write_perfetto
from jouletrace.kernels.traces import load_kineto
from jouletrace.sampling.sim import SimGPU
from jouletrace.testing.workloads import (
    kernel_table,
    name_watts,
    synthetic_launches,
    synthetic_recording,
)

TRACES = Path(os.environ.get("JOULETRACE_TRACES_DIR") or Path(__file__).resolve().parent / "data" / "traces")
T0 = 5_000_000_000_000


def _strict_load(path: Path) -> dict:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not valid JSON")

    return json.loads(raw, parse_constant=no_constants, parse_float=Decimal)


def _check_chrome_trace(doc: dict) -> None:
    """The Chrome trace event format as viewers read it: what every event kind must carry."""
    assert isinstance(doc, dict) and isinstance(doc["traceEvents"], list)
    for ev in doc["traceEvents"]:
        ph = ev["ph"]
        assert isinstance(ev["name"], str) and isinstance(ev["pid"], int)
        if ph == "X":
            assert isinstance(ev["ts"], (int, Decimal)) and isinstance(ev["dur"], (int, Decimal))
            assert ev["dur"] >= 0 and isinstance(ev["tid"], int)
        elif ph == "C":
            assert isinstance(ev["ts"], (int, Decimal))
            assert ev["args"] and all(isinstance(v, (int, float, Decimal)) for v in ev["args"].values())
        elif ph == "M":
            assert ev["name"] in ("process_name", "thread_name") and isinstance(ev["args"]["name"], str)
        else:
            raise AssertionError(f"unexpected event phase {ph!r}")


def _ts_ns(ev: dict, base: int) -> int:
    return base + int(Decimal(ev["ts"]) * 1000)


@pytest.fixture(scope="module")
def small_run():
    rng = np.random.default_rng(31)
    w = synthetic_launches(rng, T0, 20.0, n_names=4, rate_hz=200)
    sim = SimGPU(update_period_s=0.1, avg_window_s=0.025, idle_w=60.0, phase_ns=7_000_000)
    sim.add_segments(w["start"], w["end"], w["watts"])
    rec = synthetic_recording(sim, T0 - 1_000_000_000, T0 + 21_000_000_000, rng)
    # Add the instant-power channel the sensor model would show (mean over the 25 ms before each update).
    u = sim.last_update_ns(rec.t_ns)
    power = sim.true_energy(u - sim.avg_window_ns, u) / (sim.avg_window_ns * 1e-9)
    values = {"gpu0.energy_j": rec["gpu0.energy_j"], "gpu0.power_w": power}
    rec = jouletrace.Recording(
        t_ns=rec.t_ns, t_before_ns=rec.t_before_ns, t_after_ns=rec.t_after_ns, seq=rec.seq,
        status=rec.status, values=values, cumulative={"gpu0.energy_j": True, "gpu0.power_w": False},
        clock_pairs=rec.clock_pairs, metadata=rec.metadata,
    )
    yield rec, kernel_table(w["start"], w["end"], w["name_id"], w["names"], stream=np.full(w["start"].size, 7)), sim
    sim.close()


def test_perfetto_trace_has_kernels_and_counter_tracks_on_one_timeline(small_run, tmp_path):
    rec, kernels, sim = small_run
    res = at.attribute(rec, kernels, bootstrap=50)
    path = write_perfetto(tmp_path / "run.json", rec, kernels, launches=res.launches, names=res.names)
    doc = _strict_load(Path(path))
    _check_chrome_trace(doc)
    base = doc["baseTimeNanoseconds"]
    ev = doc["traceEvents"]
    tracks = {e["name"] for e in ev if e["ph"] == "C"}
    assert tracks == {"gpu0 energy (J)", "gpu0 power from counter (W)", "gpu0 power (W)"}
    # Counter tracks live in the GPU's process, beside its kernels (pid = device id).
    assert {e["pid"] for e in ev if e["ph"] in ("C", "X")} == {0}
    names = {e["args"]["name"] for e in ev if e["ph"] == "M"}
    assert "GPU 0 (gpu0)" in names and "stream 7" in names
    # Kernels: exact times, and the attribution in their args.
    kx = [e for e in ev if e["ph"] == "X"]
    assert len(kx) == len(kernels)
    starts = np.array(sorted(_ts_ns(e, base) for e in kx))
    np.testing.assert_array_equal(starts, kernels.start_ns)
    jt = kx[0]["args"]["jouletrace"]
    assert jt["energy_kind"] == "direct" and jt["below_sensor_resolution"] is True
    assert jt["name_kind"] == "statistical" and jt["name_energy_per_launch_j"] > 0
    # The energy track steps at each counter update, mapped to the trace's clock exactly.
    al = res.alignment
    e_ev = [e for e in ev if e["name"] == "gpu0 energy (J)"]
    t_mono = al.to_monotonic(np.array([_ts_ns(e, base) for e in e_ev]))
    upd = rec.updates("gpu0.energy_j")  # the updates as the windows place them
    assert set(t_mono[1:].tolist()) <= set(upd.t_ns.tolist())
    vals = np.array([float(e["args"]["J"]) for e in e_ev])
    assert np.all(np.diff(vals) >= 0)
    # Power from the counter: energy over each interval / its length, as a step.
    p_ev = [e for e in ev if e["name"] == "gpu0 power from counter (W)"]
    p = np.array([float(e["args"]["W"]) for e in p_ev])
    assert 55 < np.median(p) < 700
    # The file reads back as a PyTorch profiler trace with the same kernels.
    back = load_kineto(path)
    np.testing.assert_array_equal(back.start_ns, kernels.start_ns)
    np.testing.assert_array_equal(back.end_ns, kernels.end_ns)
    assert back.name.tolist() == kernels.name.tolist()


def test_perfetto_trace_of_a_recording_alone_and_gzipped(small_run, tmp_path):
    rec, _, _ = small_run
    path = write_perfetto(tmp_path / "rec.json.gz", rec)
    raw = Path(path).read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    doc = _strict_load(Path(path))
    _check_chrome_trace(doc)
    base = doc["baseTimeNanoseconds"]
    ev = [e for e in doc["traceEvents"] if e["name"] == "gpu0 power (W)"]
    first = _ts_ns(ev[0], base)
    assert first == int(rec.to_epoch_ns(rec.t_ns[:1])[0])  # epoch time base, exact
    procs = [e for e in doc["traceEvents"] if e["ph"] == "M"]
    assert procs and procs[0]["args"]["name"] == "jouletrace gpu0"


@pytest.mark.parametrize("fname", ["kineto-a100-nccl.json.gz", "kineto-2021-resnet50.json.gz"])
def test_kineto_trace_keeps_its_events_and_gains_counter_tracks(fname, make_sim, tmp_path):
    """A real PyTorch profiler trace, replayed on the simulated GPU at its own (epoch) times."""
    src = TRACES / fname
    kernels = load_kineto(src)
    offset = (int(kernels.start_ns.min()) // 10**9 - 10_000) * 10**9  # the run 10,000 s after boot
    mono_s = kernels.start_ns - offset
    mono_e = kernels.end_ns - offset
    sim = make_sim(update_period_s=0.01, avg_window_s=0.0025, idle_w=60.0)
    sim.add_segments(mono_s, mono_e, name_watts(kernels.names)[kernels.name_id] / 4)
    rec = synthetic_recording(sim, int(mono_s.min()) - 500_000_000, int(mono_e.max()) + 500_000_000,
                              np.random.default_rng(5), epoch_offset=offset)
    launches = at.attribute_launches(rec, kernels)
    out = merge_kineto(src, tmp_path / "merged.json.gz", rec, kernels=kernels, launches=launches)
    orig = _strict_load(src)
    merged = _strict_load(Path(out))
    _check_chrome_trace({"traceEvents": [e for e in merged["traceEvents"] if e.get("cat") == "jouletrace"]})
    # Kernels carry their per-launch energies.
    kx = [e for e in merged["traceEvents"] if e.get("cat") in ("kernel", "Kernel") and e.get("ph") == "X"]
    assert all("jouletrace" in e["args"] for e in kx)
    assert len(kx) == len(kernels) and kx[0]["args"]["jouletrace"]["energy_kind"] == "direct"
    # Every original event is still there, unchanged but for the added args["jouletrace"].
    mine = [e for e in merged["traceEvents"] if e.get("cat") == "jouletrace" or
            (e.get("ph") == "M" and str(e.get("args", {}).get("name", "")).startswith("jouletrace"))]
    theirs = [e for e in merged["traceEvents"] if e not in mine]
    for e in theirs:
        if isinstance(e.get("args"), dict):
            e["args"].pop("jouletrace", None)
    assert theirs == orig["traceEvents"]
    assert {k: v for k, v in merged.items() if k not in ("traceEvents", "jouletrace")} == \
        {k: v for k, v in orig.items() if k != "traceEvents"}
    # Counter tracks: in the trace's own time base, on the GPU's process.
    base = orig.get("baseTimeNanoseconds", 0)
    counters = [e for e in mine if e["ph"] == "C"]
    assert {e["pid"] for e in counters} == {0}
    t = np.array([_ts_ns(e, base) for e in counters if e["name"] == "gpu0 energy (J)"])
    al = at.align(kernels, rec)
    upd = rec.updates("gpu0.energy_j")
    assert set(al.to_monotonic(t[1:]).tolist()) <= set(upd.t_ns.tolist())
    assert t.min() <= kernels.start_ns.min() and t.max() >= kernels.end_ns.max() - 20_000_000
    # It still loads as the same trace.
    back = load_kineto(out)
    np.testing.assert_array_equal(back.start_ns, kernels.start_ns)
    np.testing.assert_array_equal(back.end_ns, kernels.end_ns)


def _with_windows(rec, windows):
    return jouletrace.Recording(
        t_ns=rec.t_ns, t_before_ns=rec.t_before_ns, t_after_ns=rec.t_after_ns, seq=rec.seq, status=rec.status,
        values={c: rec[c] for c in rec.channels}, cumulative={c: rec.is_cumulative(c) for c in rec.channels},
        clock_pairs=rec.clock_pairs, metadata=dict(rec.metadata, windows=windows))


def _window_slices(doc: dict) -> list[dict]:
    from jouletrace.kernels.export import WINDOWS_PID

    ws = [e for e in doc["traceEvents"] if e.get("cat") == "jouletrace.window"]
    assert all(e["ph"] == "X" and e["pid"] == WINDOWS_PID for e in ws)
    assert any(e["ph"] == "M" and e["pid"] == WINDOWS_PID and e["args"]["name"] == "jouletrace windows"
               for e in doc["traceEvents"])
    return ws


def test_windows_are_slices_with_energy_and_bound(small_run, tmp_path):
    """Monitor-style windows in the recording: one slice each, exact edges, energy ± bound
    holding the simulation's truth, work and energy per unit; overlaps on separate rows."""
    rec, kernels, sim = small_run
    s = T0 + 2_000_000_000
    windows = [
        {"name": "step", "t0_ns": s, "t1_ns": s + 3_000_000_000, "work": {"tokens": 3000}},
        {"name": "fwd", "t0_ns": s + 500_000_000, "t1_ns": s + 1_500_000_000},   # nested in step
        {"name": "eval", "t0_ns": s + 2_000_000_000, "t1_ns": s + 6_000_000_000},  # overlaps step's end
        {"name": "open", "t0_ns": s + 7_000_000_000, "t1_ns": None},               # still open: not drawn
    ]
    rw = _with_windows(rec, windows)
    doc = _strict_load(Path(write_perfetto(tmp_path / "w.json", rw, kernels)))
    _check_chrome_trace(doc)
    base = doc["baseTimeNanoseconds"]
    al = at.align(kernels, rw)
    ws = {e["name"]: e for e in _window_slices(doc)}
    assert set(ws) == {"step", "fwd", "eval"}
    for w in windows[:3]:
        e = ws[w["name"]]
        t0 = int(al.to_monotonic(np.array([_ts_ns(e, base)]))[0])
        t1 = int(al.to_monotonic(np.array([_ts_ns(e, base) + int(Decimal(e["dur"]) * 1000)]))[0])
        assert (t0, t1) == (w["t0_ns"], w["t1_ns"])
        a = e["args"]
        assert a["energy_kind"] == "direct" and a["total_bound_j"] > 0
        truth = float(sim.true_energy(w["t0_ns"], w["t1_ns"]))
        assert abs(float(a["total_energy_j"]) - truth) <= float(a["total_bound_j"])
        assert float(a["energy_j"]["gpu0"]) == float(a["total_energy_j"])
    step = ws["step"]["args"]
    assert step["work"] == {"tokens": 3000}
    assert float(step["energy_per_unit_j"]["tokens"]) == pytest.approx(float(step["total_energy_j"]) / 3000)
    assert ws["fwd"]["tid"] == ws["step"]["tid"] != ws["eval"]["tid"]


def test_kineto_merge_draws_the_windows_too(make_sim, tmp_path):
    src = TRACES / "kineto-a100-nccl.json.gz"
    kernels = load_kineto(src)
    offset = (int(kernels.start_ns.min()) // 10**9 - 10_000) * 10**9
    mono_s, mono_e = kernels.start_ns - offset, kernels.end_ns - offset
    sim = make_sim(update_period_s=0.01, avg_window_s=0.0025, idle_w=60.0)
    sim.add_segments(mono_s, mono_e, name_watts(kernels.names)[kernels.name_id] / 4)
    rec = synthetic_recording(sim, int(mono_s.min()) - 500_000_000, int(mono_e.max()) + 500_000_000,
                              np.random.default_rng(5), epoch_offset=offset)
    a, b = int(mono_s.min()), int(mono_e.max())
    rec = _with_windows(rec, [{"name": "profiled", "t0_ns": a, "t1_ns": b, "work": {"steps": 1}}])
    merged = _strict_load(Path(merge_kineto(src, tmp_path / "m.json", rec, kernels=kernels)))
    (w,) = _window_slices(merged)
    base = merged.get("baseTimeNanoseconds", 0)
    assert _ts_ns(w, base) == int(kernels.start_ns.min())  # the trace's own time base, exact
    assert abs(float(w["args"]["total_energy_j"]) - float(sim.true_energy(a, b))) <= float(w["args"]["total_bound_j"])
    assert load_kineto(tmp_path / "m.json").start_ns.tolist() == kernels.start_ns.tolist()
