"""A Prometheus exporter on ``prometheus_client``: a Monitor's energy, power, windows and health.

>>> from jouletrace.integrations.prometheus import expose     # doctest: +SKIP
>>> server = expose(monitor, port=9464)                         # http://127.0.0.1:9464/metrics
>>> server.close()

``jouletrace serve --port N`` runs a Monitor on a node and serves it. Metrics
(names and units after the Prometheus conventions; labels ``device`` — the
result key, ``gpu0`` as the framework numbers it or ``cpu0``/``psys`` —,
``domain`` — ``gpu``, ``package``, ``core``, ``uncore``, ``dram``,
``platform`` —, ``uuid`` for GPUs, ``source``):

* ``jouletrace_energy_joules_total`` (counter): energy since the Monitor
  started sampling, from the hardware counter (the last sample read at scrape
  time; it steps once per sensor update).
* ``jouletrace_power_watts`` (gauge): the last power sample per device.
* ``jouletrace_windows_total{name}`` (counter): ended windows;
  ``jouletrace_window_energy_joules_total{name}`` (counter): their energy,
  once final (never blocks a scrape).
* ``jouletrace_samples_total``, ``jouletrace_samples_dropped_total``,
  ``jouletrace_deadlines_missed_total`` (counters, per source), and
  ``jouletrace_sampler_up`` (gauge: 1 while the sampler runs).

Counters restart from 0 with a new Monitor (a counter reset, which
``increase()`` and ``rate()`` handle).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._optional import require
from ..energy.monitor import Monitor

__all__ = ["MonitorCollector", "expose", "Exporter"]


def _domain(key: str) -> tuple[str, str]:
    """(device, domain) labels of a result key."""
    if key.startswith("gpu"):
        return key, "gpu"
    if key.startswith("psys"):
        return "psys", "platform"
    dev, _, dom = key.partition(".")
    return dev, dom or "package"


def _last_finite(v: np.ndarray) -> float | None:
    n = v.shape[0]
    for i in range(n - 1, max(-1, n - 64), -1):
        x = float(v[i])
        if np.isfinite(x):
            return x
    return None


def _first_finite(v: np.ndarray) -> float | None:
    idx = np.flatnonzero(np.isfinite(v[: min(len(v), 4096)]))
    return float(v[idx[0]]) if idx.size else None


class MonitorCollector:
    """A ``prometheus_client`` collector reading a Monitor at each scrape (no extra thread)."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        core = require("prometheus_client.core", "the Prometheus exporter")
        labels = ["device", "domain", "uuid", "source"]
        energy = core.CounterMetricFamily(
            "jouletrace_energy", "Energy since the Monitor started, from the hardware counter.", labels=labels,
            unit="joules")
        power = core.GaugeMetricFamily(
            "jouletrace_power", "Last power sample of the device.", labels=labels, unit="watts")
        samples = core.CounterMetricFamily("jouletrace_samples", "Samples read.", labels=["source"])
        dropped = core.CounterMetricFamily(
            "jouletrace_samples_dropped", "Samples lost (ring or storage full).", labels=["source"])
        missed = core.CounterMetricFamily(
            "jouletrace_deadlines_missed", "Sampling deadlines missed by a whole period.", labels=["source"])
        up = core.GaugeMetricFamily("jouletrace_sampler_up", "1 while the sampler runs.", labels=["source"])
        wins = core.CounterMetricFamily("jouletrace_windows", "Windows ended.", labels=["name"])
        wenergy = core.CounterMetricFamily(
            "jouletrace_window_energy", "Energy of the ended windows whose energy is final.", labels=["name"],
            unit="joules")
        mon = self.monitor
        uuids = mon.uuids
        with self._lock:
            for si, s in enumerate(mon.samplers):
                rec = s.recording()
                ren = mon._rename[si]  # noqa: SLF001  (NVML index -> framework key)
                for ch in rec.channels:
                    dev_key, _, quantity = ch.rpartition(".")
                    if quantity not in ("energy_j", "power_w"):
                        continue
                    key = ren.get(dev_key, dev_key)
                    device, domain = _domain(key)
                    lv = [device, domain, uuids.get(key, ""), s.source]
                    v = rec[ch]
                    if quantity == "energy_j":
                        first, last = _first_finite(v), _last_finite(v)
                        # Before the first sample (a Monitor not started yet): nothing measured, 0 J.
                        energy.add_metric(lv, 0.0 if first is None or last is None else last - first)
                    else:
                        last = _last_finite(v)
                        if last is not None:
                            power.add_metric(lv, last)
                samples.add_metric([s.source], s.reads)
                dropped.add_metric([s.source], s.dropped)
                missed.add_metric([s.source], s.missed_deadlines)
                up.add_metric([s.source], 1.0 if s.running else 0.0)
            mon.ready()  # final windows get their energies (never waits)
            with mon._lock:  # noqa: SLF001
                done = list(mon._finished)  # noqa: SLF001
            counts: dict[str, int] = {}
            joules: dict[str, float] = {}
            for m in done:
                name = str(m.name)
                counts[name] = counts.get(name, 0) + 1
                if m.resolved and not m.provisional and m.available:
                    joules[name] = joules.get(name, 0.0) + m.total_j
            for name, n in counts.items():
                wins.add_metric([name], n)
                wenergy.add_metric([name], joules.get(name, 0.0))
        yield from (energy, power, samples, dropped, missed, up, wins, wenergy)


class Exporter:
    """A running exporter: ``port``, ``url``, ``close()``."""

    def __init__(self, server: Any, thread: Any, address: str) -> None:
        self._server, self._thread = server, thread
        self.address = address
        self.port = int(server.server_port)
        self.url = f"http://{address}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def expose(monitor: Monitor, port: int = 9464, address: str = "127.0.0.1") -> Exporter:
    """Serve ``monitor`` at ``http://address:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port (``Exporter.port``). ``address`` is loopback by
    default; give ``0.0.0.0`` explicitly to let a Prometheus on another host scrape it.
    """
    pc = require("prometheus_client", "the Prometheus exporter")
    registry = pc.CollectorRegistry(auto_describe=False)
    registry.register(MonitorCollector(monitor))
    server, thread = pc.start_http_server(port, addr=address, registry=registry)
    return Exporter(server, thread, address)
