"""``jouletrace.window("step")``: windows on a process-wide Monitor, started on first use.

The default Monitor samples every usable hardware source (NVML, RAPL) at
1 kHz. Configure it before its first use with :func:`configure` (any
:class:`jouletrace.Monitor` arguments), or make your own Monitor instead.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from .measurement import Measurement
from .monitor import Monitor

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
            m = Monitor(**_options)
            m.start()
            atexit.register(m.stop)
            _monitor = m
        return _monitor


def window(name: str, sync: Callable[[], Any] | None = None) -> AbstractContextManager[Measurement]:
    """``with jouletrace.window("step") as m:`` — energy of the block on the default Monitor.

    ``m.energy_j``, ``m.total_j``, ``m.uncertainty_j`` are computed on first use.
    Raises :class:`jouletrace.SourceUnavailableError` (with the reason for each
    source) when nothing is usable here; ``configure(sim=SimGPU(...))`` runs
    it on the simulated GPU.
    """
    cm: AbstractContextManager[Measurement] = default_monitor().window(name, sync=sync)
    return cm

