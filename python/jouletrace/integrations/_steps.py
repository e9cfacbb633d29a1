"""Energy per step and epoch for trainer callbacks, reported without blocking the loop.

A step's energy is final only a few sensor periods after it ends, so the
callbacks report each step when it becomes final (``Monitor.ready``), under
the step number it belongs to, and flush the rest when training ends.
"""

from __future__ import annotations

from typing import Any

from .._default import default_monitor
from ..energy.measurement import Measurement
from ..energy.monitor import Monitor

PREFIX = "energy/"


class StepEnergy:
    """Opens a window per step and per epoch on a Monitor; hands out final results as metrics."""

    def __init__(self, monitor: Monitor | None = None, *, prefix: str = PREFIX) -> None:
        self._monitor = monitor
        self.prefix = prefix
        self.step: Measurement | None = None
        self.epoch: Measurement | None = None
        self._pending: list[tuple[str, int, Measurement]] = []
        #: Every step and epoch window, in order.
        self.measurements: list[Measurement] = []
        self.total_j = 0.0
        self.total_uncertainty_j = 0.0
        self.total_work: dict[str, float] = {}

    @property
    def monitor(self) -> Monitor:
        if self._monitor is None:
            self._monitor = default_monitor()
        return self._monitor

    def begin(self, kind: str, index: int) -> None:
        m = self.monitor.begin_window(kind)
        if kind == "step":
            self.step = m
        else:
            self.epoch = m
        self._pending.append((kind, int(index), m))
        self.measurements.append(m)

    def end(self, kind: str, **work: float) -> Measurement | None:
        m = self.step if kind == "step" else self.epoch
        if m is None:
            return None
        if work:
            m.add_work(**{k: v for k, v in work.items() if v})
        self.monitor.end_measurement(m)
        if kind == "step":
            self.step = None
        else:
            self.epoch = None
        return m

    def final(self, wait: bool = False) -> list[tuple[int, dict[str, float]]]:
        """(step or epoch index, metrics) for every ended window now final; with ``wait``, all."""
        ended = [(k, i, m) for k, i, m in self._pending if m.t1_ns is not None]
        if not ended:
            return []
        if wait:
            self.monitor.measurements()
        else:
            self.monitor.ready()
        done = [(k, i, m) for k, i, m in ended if m.resolved and not m.provisional]
        ids = {id(m) for _, _, m in done}
        self._pending = [p for p in self._pending if id(p[2]) not in ids]
        out = []
        for kind, index, m in done:
            out.append((index, self.metrics(kind, m)))
        return out

    def metrics(self, kind: str, m: Measurement) -> dict[str, float]:
        p = f"{self.prefix}{kind}_"
        d: dict[str, float] = {}
        if not m.available:
            return d
        d[p + "j"] = m.total_j
        d[p + "uncertainty_j"] = m.total_uncertainty_j
        d[p + "mean_power_w"] = m.mean_power_w
        for unit, n in m.work.items():
            if n > 0:
                d[f"{p}j_per_{unit.rstrip('s')}"] = m.total_j / n
        if kind == "step":
            self.total_j += m.total_j
            self.total_uncertainty_j += m.total_uncertainty_j
            for unit, n in m.work.items():
                self.total_work[unit] = self.total_work.get(unit, 0.0) + n
            d[self.prefix + "total_j"] = self.total_j
        for key, e in m.energy_j.items():
            d[f"{p}{key}_j"] = e
        return d

    def summary(self) -> dict[str, Any]:
        """Totals over the final steps: joules, bound, work units."""
        return {"total_j": self.total_j, "total_uncertainty_j": self.total_uncertainty_j, "work": dict(self.total_work)}
