"""The Prometheus exporter against a real Prometheus server (Debian's `prometheus` binary)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

from jouletrace.cli import main
from jouletrace.energy.monitor import Monitor

pytest.importorskip("prometheus_client", reason="prometheus_client is not installed (pip install 'jouletrace[prometheus]')")
from jouletrace.integrations.prometheus import expose  # noqa: E402

PROMETHEUS = shutil.which("prometheus") or ("/usr/bin/prometheus" if shutil.os.path.exists("/usr/bin/prometheus") else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None) -> str:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310  (loopback only)
        return r.read().decode()


def _query(api: str, q: str, at: float | None = None) -> list:  # type: ignore[type-arg]
    params = {"query": q}
    if at is not None:
        params["time"] = f"{at:.3f}"
    body = json.loads(_get(f"{api}/api/v1/query?{urllib.parse.urlencode(params)}"))
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def _until(what: str, fn, seconds: float = 20.0):  # type: ignore[no-untyped-def]
    """Poll ``fn`` until it returns something truthy; a bounded loop."""
    for _ in range(int(seconds / 0.1)):
        got = fn()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_exposition_names_help_unit_and_labels(make_sim) -> None:  # type: ignore[no-untyped-def]
    sim = make_sim(gpus=2, update_period_s=0.01)
    with Monitor(sim=sim, cpu=False, rate_hz=200) as mon, expose(mon, port=0) as ex:
        with mon.window("step"):
            time.sleep(0.02)
        mon.measurements()
        text = _get(ex.url)
        om = _get(ex.url, {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert ex.address == "127.0.0.1"
    assert "# HELP jouletrace_energy_joules_total Energy since the Monitor started" in text
    assert "# TYPE jouletrace_energy_joules_total counter" in text
    assert "# UNIT jouletrace_energy_joules joules" in om and "# UNIT jouletrace_power_watts watts" in om
    u1 = sim._gpus[1].uuid
    assert f'jouletrace_energy_joules_total{{device="gpu1",domain="gpu",source="sim",uuid="{u1}"}}' in text
    assert 'jouletrace_windows_total{name="step"} 1.0' in text
    for name in ("jouletrace_samples_dropped_total", "jouletrace_deadlines_missed_total", "jouletrace_sampler_up",
                 "jouletrace_power_watts", "jouletrace_window_energy_joules_total"):
        assert name in text


@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus server binary is not installed "
                    "(apt-get install prometheus; scripts/test.sh installs it when run as root)")
def test_prometheus_increase_matches_the_recording(make_sim, now_ns, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sim = make_sim(update_period_s=0.01, idle_w=60.0)
    rng = np.random.default_rng(3)
    starts = now_ns + np.cumsum(rng.integers(20_000_000, 80_000_000, 200))
    sim.add_segments(starts, starts + rng.integers(10_000_000, 60_000_000, 200), rng.uniform(100, 400, 200))
    mon = Monitor(sim=sim, cpu=False, rate_hz=500)
    prom_port = _free_port()
    api = f"http://127.0.0.1:{prom_port}"
    with expose(mon, port=0) as ex:
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 100ms\n  scrape_timeout: 100ms\n"
            "scrape_configs:\n  - job_name: jouletrace\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{ex.port}']\n")
        log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            def ready() -> bool:
                try:
                    return bool(_query(api, "jouletrace_energy_joules_total"))
                except OSError:
                    return False

            _until("Prometheus to scrape the exporter once", ready)
            mon.start()
            for _ in range(6):
                with mon.window("step"):
                    time.sleep(0.2)
            mon.stop()  # the counter stays at the recording's last value from here on
            rec = mon.recording()
            e = rec["gpu0.energy_j"]
            recorded = float(e[-1] - e[0])

            def frozen() -> list:  # type: ignore[type-arg]
                r = _query(api, "jouletrace_energy_joules_total[60s]")
                vals = r[0]["values"] if r else []
                return vals if len(vals) >= 3 and all(float(v) == pytest.approx(recorded) for _, v in vals[-2:]) else []

            values = _until("Prometheus to scrape the final value twice", frozen)
            assert float(values[0][1]) == 0.0  # scraped before sampling began
            t_first, t_last = float(values[0][0]), float(values[-1][0])
            span_ms = int(round((t_last - t_first) * 1000)) + 1
            inc = _query(api, f"increase(jouletrace_energy_joules_total[{span_ms}ms])", at=t_last)
            increase = float(inc[0]["value"][1])
            windows = _query(api, "jouletrace_windows_total")
        finally:
            prom.terminate()
            prom.wait(timeout=20)
            log.close()
    we = rec.energies([rec.t_ns[0]], [rec.t_ns[-1]])
    bound = float(we.uncertainty_j["gpu0"][0])
    assert abs(increase - recorded) <= bound
    truth = float(sim.true_energy(rec.t_ns[0], rec.t_ns[-1]))
    assert abs(increase - truth) <= bound + abs(recorded - float(we.energy_j["gpu0"][0]))
    assert float(windows[0]["value"][1]) == 6.0


def test_serve_command_refuses_user_mistakes(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["serve", "--port", "70000"]) == 1
    assert "--port must be 0..65535" in capsys.readouterr().err
    assert main(["serve", "--gpus", "x"]) == 1
    assert "--gpus must be" in capsys.readouterr().err


def test_serve_command_serves_a_node(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import sys

    port = _free_port()
    p = subprocess.Popen([sys.executable, "-m", "jouletrace", "serve", "--source", "sim", "--port", str(port),
                          "--seconds", "20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert "on http://127.0.0.1:" in p.stdout.readline()  # type: ignore[union-attr]
        text = _until("the served metrics", lambda: _get(f"http://127.0.0.1:{port}/metrics"))
        assert 'jouletrace_sampler_up{source="sim"} 1.0' in text
    finally:
        p.terminate()
        p.communicate(timeout=20)
    assert p.returncode == 0
