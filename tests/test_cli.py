"""The command line as users run it: a subprocess, exit codes, messages."""

from __future__ import annotations

import json
import subprocess
import sys

from jouletrace.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jouletrace", *args], capture_output=True, text=True, timeout=120, env=env
    )


def test_info_lists_every_source_and_why():
    r = run("info")
    assert r.returncode == 0, r.stderr
    for name in ("nvml", "sim", "rapl", "rapl-perf", "rapl-msr", "rapl-powercap"):
        assert f"  {name} " in r.stdout
    assert "why:" in r.stdout  # this machine has no GPU: nvml says why


def test_info_json():
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)["sources"]
    by_name = {d["name"]: d for d in data}
    assert by_name["sim"]["usable"] is True
    assert set(by_name["nvml"]) >= {"usable", "reason", "fix", "description"}


def test_info_with_simulated_nvml(make_sim):
    sim = make_sim(gpus=2)
    r = run("info", env=sim.env())
    assert r.returncode == 0, r.stderr
    assert "2 GPU(s): NVIDIA H100 80GB HBM3 (simulated)" in r.stdout


def test_usage_errors_exit_2(capsys):
    assert run().returncode == 2
    r = run("no-such-command")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    assert "Traceback" not in r.stderr
    assert main([]) == 2


def test_console_script_and_no_link_to_nvml():
    """The installed `jouletrace` script runs; the extension does not link libnvidia-ml."""
    import shutil
    from pathlib import Path

    import pytest

    import jouletrace

    core = next(Path(jouletrace.__file__).parent.glob("_core*.so"))
    readelf = shutil.which("readelf")
    if readelf:
        needed = subprocess.run([readelf, "-d", str(core)], capture_output=True, text=True).stdout
        assert "NEEDED" in needed and "nvidia-ml" not in needed
    script = Path(sys.executable).parent / "jouletrace"
    if not script.exists():
        pytest.skip("jouletrace is not pip-installed in this environment (developer build on PYTHONPATH)")
    r = subprocess.run([str(script), "info"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Sources:" in r.stdout


def test_info_devices_and_sensor_measured(make_sim):
    sim = make_sim(gpus=1, update_period_s=0.02, avg_window_s=0.005)
    r = run("info", "--measure", "0.6", env=sim.env())
    assert r.returncode == 0, r.stderr
    assert "gpu0: NVIDIA H100 80GB HBM3 (simulated)" in r.stdout
    assert "UUID GPU-5117e000-0000-4000-8000-000000000000" in r.stdout and "power limit 700 W" in r.stdout
    assert "sensor (published, Hopper)" in r.stdout and "1-second moving average" in r.stdout
    # The simulated counter updates every 20 ms; the measurement says so.
    line = next(ln for ln in r.stdout.splitlines() if "measured gpu0.energy_j" in ln)
    period_ms = float(line.split("updates every ")[1].split(" ms")[0])
    assert abs(period_ms - 20.0) < 1.0
    data = json.loads(run("info", "--json", env=sim.env()).stdout)
    assert data["gpus"][0]["uuid"] == "GPU-5117e000-0000-4000-8000-000000000000"
    assert data["gpus"][0]["known_sensor"]["architecture"] == "Hopper"
