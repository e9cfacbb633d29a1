"""``jouletrace.window("step")``: windows on a process-wide Monitor, started on first use.

The default Monitor samples every usable hardware source (NVML, RAPL) at
1 kHz. Configure it before its first use with :func:`configure` (any
:class:`jouletrace.Monitor` arguments), or make your own Monitor instead.

Degrade, don't break: where nothing is usable (a laptop, a CI runner, a VM),
the default Monitor warns once (:class:`jouletrace.errors.MeasurementUnavailableWarning`)
and its windows are marked unavailable (NaN energies, the reason in
``unavailable_reason``), so an instrumented script runs anywhere. Sources
named explicitly (``configure(sources=["nvml"])``) or ``configure(unavailable="raise")``
raise :class:`jouletrace.SourceUnavailableError` instead.

When ``JOULETRACE_WINDOWS_FILE`` names a file (``jouletrace record`` sets it for
its child), the default Monitor's windows are written there as JSON when it
stops (at exit), so that the recording made outside the process shows them.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from .energy.measurement import Measurement
from .energy.monitor import Monitor

__all__ = ["window", "default_monitor", "configure"]

_lock = threading.Lock()
_monitor: Monitor | None = None
_options: dict[str, Any] = {}


def configure(**monitor_options: Any) -> None:
    """Set the default Monitor's arguments (``gpus``, ``cpu``, ``rate_hz``, ``sim``, ``sync`` ...).

    Stops and replaces a default Monitor that is already running.
    """
    global _monitor
    with _lock:
        old, _monitor = _monitor, None
        _options.clear()
        _options.update(monitor_options)
    if old is not None:
        old.stop()


def default_monitor() -> Monitor:
    """The process-wide Monitor, made and started on first use (stopped at exit)."""
    global _monitor
    with _lock:
        if _monitor is None:
            opts = dict(_options)
            if "sources" not in opts:
                opts.setdefault("unavailable", "warn")
            m = Monitor(**opts)
            m.start()
            atexit.register(_stop_at_exit, m)
            _monitor = m
        return _monitor


def _stop_at_exit(m: Monitor) -> None:
    try:
        m.stop()
    finally:
        path = os.environ.get("JOULETRACE_WINDOWS_FILE")
        if path:
            write_windows(m, path)


def write_windows(m: Monitor, path: str) -> None:
    """Write ``m``'s ended windows as ``{"windows": [...]}`` JSON (``metadata["windows"]`` entries).

    Times are CLOCK_MONOTONIC ns, which every process of the machine shares.
    """
    out = []
    for w in m.measurements(wait=False):
        d: dict[str, Any] = {"name": w.name, "t0_ns": w.t0_ns, "t1_ns": w.t1_ns}
        if w.work:
            d["work"] = w.work
        out.append(d)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"schema": "jouletrace.windows/1", "pid": os.getpid(), "windows": out}, f)
    os.replace(tmp, path)


def window(
    name: str, sync: Callable[[], Any] | None = None, *, work: Mapping[str, float] | None = None
) -> AbstractContextManager[Measurement]:
    """``with jouletrace.window("step", work={"tokens": n}) as m:`` — energy of the block on the
    default Monitor.

    ``work``: units of work done in the block (numbers >= 0, checked at once); work
    known only at the end goes to ``m.add_work(tokens=n)`` inside the block, and
    ``m.per("tokens")`` gives energy per unit with its bound. ``m.energy_j``,
    ``m.total_j``, ``m.uncertainty_j`` are computed on first use (which may block
    ~3 sensor periods after the block; ``m.ready`` says). Where nothing is usable
    here it warns once and ``m`` is unavailable (``m.available`` False, NaN
    energies, ``m.unavailable_reason``); ``configure(sim=SimGPU(...))`` runs it on
    the simulated GPU.
    """
    cm: AbstractContextManager[Measurement] = default_monitor().window(name, sync=sync, work=work)
    return cm
