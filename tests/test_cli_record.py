"""`jouletrace record` and `jouletrace report` as users run them: subprocesses against the simulated GPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jouletrace
from jouletrace.cli._summary import JSON_SCHEMA


def jt(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jouletrace", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def validate(value, schema, path="$"):  # type: ignore[no-untyped-def]
    """A small JSON Schema checker for the subset the summary schema uses."""
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        py = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
              "null": type(None), "boolean": bool}
        ok = any(isinstance(value, py[n]) and not (n in ("integer", "number") and isinstance(value, bool))
                 for n in names)
        assert ok, f"{path}: {value!r} is not {types}"
    if "const" in schema:
        assert value == schema["const"], path
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    if isinstance(value, dict):
        for k in schema.get("required", []):
            assert k in value, f"{path}: missing {k}"
        for k, sub in schema.get("properties", {}).items():
            if k in value:
                validate(value[k], sub, f"{path}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            validate(v, schema["items"], f"{path}[{i}]")


def test_record_propagates_exit_code_and_saves(tmp_path):
    out = tmp_path / "run.npz"
    r = jt("record", "--source", "sim", "-o", str(out), "--", sys.executable, "-c",
           "import time, sys; time.sleep(0.3); sys.exit(3)")
    assert r.returncode == 3, r.stderr
    assert "Energy of" in r.stderr and "gpu0" in r.stderr and "exited with status 3" in r.stderr
    rec = jouletrace.load(out)
    assert rec.metadata["exit_code"] == 3
    assert rec.metadata["command"][-1].endswith("sys.exit(3)")
    (w,) = rec.metadata["windows"]
    assert w["name"] == "command" and w["t1_ns"] - w["t0_ns"] >= 300_000_000
    # The recording covers the command with counter updates on both sides of it.
    assert rec.t_ns[0] < w["t0_ns"] and rec.t_ns[-1] > w["t1_ns"] + 100_000_000


def test_record_json_matches_schema_and_energy(tmp_path):
    out = tmp_path / "run.npz"
    r = jt("record", "--source", "sim", "--json", "-o", str(out), "--", sys.executable, "-c",
           "import time; time.sleep(1.0)")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    validate(summary, JSON_SCHEMA)
    (dev,) = summary["devices"]
    # The default simulated GPU idles at 60 W: the command's energy is 60 W x its duration,
    # within the reported bound.
    assert abs(dev["energy_j"] - 60.0 * summary["duration_s"]) <= dev["uncertainty_j"]
    assert dev["uncertainty_j"] < 0.2 * dev["energy_j"]
    assert dev["peak_power_w"] == 60.0 and dev["method"] == "counter"
    # `report --json` of the saved file says the same.
    r2 = jt("report", "--json", str(out))
    assert r2.returncode == 0, r2.stderr
    again = json.loads(r2.stdout)
    validate(again, JSON_SCHEMA)
    assert again["devices"][0]["energy_j"] == pytest.approx(dev["energy_j"])


def _start_record(tmp_path: Path, seconds: float) -> tuple[subprocess.Popen[str], Path]:
    out = tmp_path / "sig.npz"
    marker = tmp_path / "child-started"
    code = f"import time, pathlib; pathlib.Path({str(marker)!r}).touch(); time.sleep({seconds})"
    p = subprocess.Popen(
        [sys.executable, "-m", "jouletrace", "record", "--source", "sim", "-o", str(out), "--",
         sys.executable, "-c", code],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline, "the child never started"
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    time.sleep(1.0)  # ~1000 polls at 1 kHz before the signal; 100 are asserted (record's polls cannot be watched)
    return p, out


@pytest.mark.parametrize("sig,expect", [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_signal_stops_child_and_recording_is_saved(tmp_path, sig, expect):
    p, out = _start_record(tmp_path, 30)
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == expect, err
    assert "Traceback" not in err.split("jouletrace record")[-1]
    rec = jouletrace.load(out)
    assert rec.metadata["signals"] == [signal.Signals(sig).name]
    assert rec.metadata["exit_code"] == expect
    assert len(rec) > 100 and not np.any(np.isnan(rec["gpu0.energy_j"]))


def test_record_without_hardware_says_so(tmp_path):
    if any(i.usable for i in jouletrace.sources(refresh=True) if i.name.startswith("rapl")):
        pytest.skip("RAPL is usable on this machine: there is hardware to record")
    env = dict(os.environ, JOULETRACE_NVML_LIBRARY=str(tmp_path / "no-such-libnvidia-ml.so.1"))
    r = jt("record", "-o", str(tmp_path / "x.npz"), "--", "true", env=env)
    assert r.returncode == 1
    assert "no hardware energy source is usable" in r.stderr and "--source sim" in r.stderr
    assert "nvml:" in r.stderr and "Traceback" not in r.stderr
    # each hardware source says why: the RAPL interfaces, not "rapl" (which picks among them)
    assert "  rapl-msr:" in r.stderr and "  rapl:" not in r.stderr and "  sim:" not in r.stderr
    assert not (tmp_path / "x.npz").exists()


def test_record_usage_errors(tmp_path):
    r = jt("record", "--source", "sim")
    assert r.returncode == 2 and "no command given" in r.stderr
    r = jt("record", "--source", "cuda", "--", "true")
    assert r.returncode == 1 and "unknown source 'cuda'" in r.stderr and "Traceback" not in r.stderr
    r = jt("record", "--rate", "fast", "--", "true")
    assert r.returncode == 2 and "invalid float value" in r.stderr
    r = jt("record", "--source", "sim", "-o", str(tmp_path / "n.npz"), "--", "/no/such/program")
    assert r.returncode == 127 and "cannot run" in r.stderr


def test_report_errors_are_clear(tmp_path):
    r = jt("report", str(tmp_path / "missing.npz"))
    assert r.returncode == 1 and "missing.npz" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a recording")
    r = jt("report", str(bad))
    assert r.returncode == 1 and "bad.npz" in r.stderr and "Traceback" not in r.stderr
    assert jt("report").returncode == 2


def _two_gpu_recording(tmp_path: Path, make_sim, now_ns: int) -> Path:  # type: ignore[no-untyped-def]
    sim = make_sim(gpus=2, update_period_s=0.01, idle_w=[50.0, 80.0])
    sim.add_segment(now_ns + 100_000_000, now_ns + 300_000_000, 200.0, gpu=1)
    with jouletrace.Monitor(sim=sim, cpu=False, rate_hz=500) as mon:
        with mon.window("step"):
            time.sleep(0.4)
        time.sleep(0.05)
    rec = mon.recording()
    rec.metadata["windows"] = [{"name": "step", "t0_ns": m.t0_ns, "t1_ns": m.t1_ns} for m in mon.measurements()]
    path = tmp_path / "two.npz"
    rec.save(path)
    return path


def test_report_csv_and_plot(tmp_path, make_sim, now_ns):
    path = _two_gpu_recording(tmp_path, make_sim, now_ns)
    r = jt("report", "--csv", str(path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("file,source,key,duration_s,energy_j")
    assert [ln.split(",")[2] for ln in lines[1:]] == ["gpu0", "gpu1"]
    png = tmp_path / "p.png"
    r = jt("report", str(path), "--plot", str(png), "--size", "8x4")
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[:2] == (400, 800)  # 8x4 inches at 100 dpi
    # One line per device, from the same function the command uses.
    from jouletrace.cli.report import plot

    fig = plot([jouletrace.load(path)], str(tmp_path / "q.png"))
    (ax,) = fig.axes
    assert len(ax.lines) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["gpu0 (sim)", "gpu1 (sim)"]
    assert any(t.get_text() == "step" for t in ax.texts)  # the window is labelled
    # ... and shaded over exactly its edges (seconds since the first sample)
    rec = jouletrace.load(path)
    (w,) = rec.metadata["windows"]
    (span,) = ax.patches
    x = span.get_path().vertices[:, 0] if not hasattr(span, "get_width") else [span.get_x(), span.get_x() + span.get_width()]
    assert min(x) == pytest.approx((w["t0_ns"] - int(rec.t_ns[0])) * 1e-9, abs=1e-9)
    assert max(x) == pytest.approx((w["t1_ns"] - int(rec.t_ns[0])) * 1e-9, abs=1e-9)


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, make_sim, now_ns, monkeypatch):
    path = _two_gpu_recording(tmp_path, make_sim, now_ns)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    from jouletrace.cli import main

    assert main(["report", str(path), "--plot", str(tmp_path / "x.png")]) == 1


def test_live_status_line_on_a_terminal(tmp_path):
    """On a terminal, record shows elapsed time, watts and joules so far on one rewritten line."""
    import pty
    import select

    master, slave = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-m", "jouletrace", "record", "--source", "sim", "-o", str(tmp_path / "t.npz"), "--",
         sys.executable, "-c", "import time; time.sleep(1.6)"],
        stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )
    os.close(slave)
    buf = b""
    while True:
        r, _, _ = select.select([master], [], [], 30)
        if not r:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        buf += chunk
    p.wait(timeout=60)
    os.close(master)
    text = buf.decode(errors="replace")
    assert p.returncode == 0, text
    status = [seg for seg in text.split("\r") if seg.startswith("[jouletrace]")]
    assert status, text
    assert "gpu0" in status[-1] and " W" in status[-1] and "J so far" in status[-1]
    assert "Energy of" in text


def test_verbose_report_shows_feeds_and_sensors(tmp_path):
    out = tmp_path / "v.npz"
    assert jt("record", "--source", "sim", "-o", str(out), "--", "true").returncode == 0
    r = jt("report", "-v", str(out))
    assert r.returncode == 0, r.stderr
    assert "gpu0.energy_j.feed: nvmlDeviceGetFieldValues" in r.stdout
    assert "sensor gpu0.energy_j: updates every" in r.stdout
    assert "dropped in the ring 0" in r.stdout
    plain = jt("report", str(out))
    assert "feed" not in plain.stdout


def test_bad_output_path_is_refused_before_the_command_runs(tmp_path):
    marker = tmp_path / "ran"
    code = f"import pathlib; pathlib.Path({str(marker)!r}).touch()"
    r = jt("record", "--source", "sim", "-o", str(tmp_path / "no" / "such" / "x.npz"), "--",
           sys.executable, "-c", code)
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()  # refused before running anything
    r = jt("record", "--source", "sim", "-o", str(tmp_path), "--", "true")
    assert r.returncode == 1 and "is a folder" in r.stderr


def test_second_interrupt_after_the_child_exits_still_saves(tmp_path):
    p, out = _start_record(tmp_path, 30)
    p.send_signal(signal.SIGINT)
    time.sleep(0.1)
    p.send_signal(signal.SIGINT)  # impatient user: again, while jouletrace finishes up
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    rec = jouletrace.load(out)
    assert rec.metadata["exit_code"] == 130 and rec.metadata["signals"][0] == "SIGINT"


def test_cli_numbers_are_checked(tmp_path):
    out = tmp_path / "c.npz"
    assert jt("record", "--source", "sim", "-o", str(out), "--", "true").returncode == 0
    r = jt("report", str(out), "--plot", str(tmp_path / "p.png"), "--size", "0x0")
    assert r.returncode == 1 and "--size needs" in r.stderr and "Traceback" not in r.stderr
    r = jt("attribute", str(out), "--trace", str(out), "--bootstrap", "-1")
    assert r.returncode == 1 and "--bootstrap must be >= 0" in r.stderr
