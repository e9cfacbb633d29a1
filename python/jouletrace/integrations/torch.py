"""PyTorch: energy windows that show in profiler and Nsight timelines, and profiler traces with energy.

>>> from jouletrace.integrations import torch as jt          # or: import jouletrace.torch as jt
>>> with jt.window("step"):                                 # doctest: +SKIP
...     loss = model(x).sum(); loss.backward(); opt.step()

:func:`window` opens a jouletrace window (on the default Monitor, or the one
given) that is also a ``torch.profiler.record_function`` range (it appears in
``torch.profiler`` / Kineto traces) and, when CUDA is in use, an NVTX range
(it appears in ``nsys``). By default it synchronises CUDA at both edges so that
the window covers the GPU work queued inside it; ``sync=False`` skips that.

:class:`ProfilerEnergy` is an ``on_trace_ready`` handler for
``torch.profiler.profile``: it writes the profiled steps' trace, attributes
their CUDA kernels to energy (:func:`jouletrace.attribute.attribute`) and
writes the Kineto trace with jouletrace's power and energy tracks merged in
(:func:`jouletrace.kernels.export.merge_kineto`), openable in Perfetto.

torch is imported when these are first used, not when jouletrace is.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .._default import default_monitor
from .._optional import require
from ..energy.measurement import Measurement
from ..energy.monitor import Monitor
from ..kernels import attribution, export, traces

__all__ = ["window", "EnergyWindow", "ProfilerEnergy", "TraceEnergy", "cuda_sync"]

_torch: Any = None


def _t() -> Any:
    global _torch
    if _torch is None:
        _torch = require("torch", "jouletrace.torch")
    return _torch


_cuda_available: bool | None = None


def _cuda_in_use(t: Any) -> bool:
    """CUDA initialised in this process (``is_available`` asked once: it queries the driver)."""
    global _cuda_available
    if _cuda_available is None:
        _cuda_available = bool(t.cuda.is_available())
    return _cuda_available and bool(t.cuda.is_initialized())


def cuda_sync() -> Callable[[], Any] | None:
    """``torch.cuda.synchronize`` when CUDA is initialised in this process, else None."""
    t = _t()
    if _cuda_in_use(t):
        return t.cuda.synchronize
    return None


class EnergyWindow:
    """A jouletrace window that is also a ``record_function`` range and an NVTX range.

    Reusable: each ``with`` opens a new window; ``measurement`` is the last one.
    """

    __slots__ = ("name", "monitor", "sync", "nvtx", "work", "measurement", "_rf", "_nvtx_on", "_mon")

    def __init__(
        self,
        name: str,
        monitor: Monitor | None = None,
        *,
        sync: Callable[[], Any] | bool | None = True,
        nvtx: bool = True,
        work: dict[str, float] | None = None,
    ) -> None:
        self.name = name
        self.monitor = monitor
        if sync is True:
            sync = cuda_sync()
        self.sync = sync or None
        self.nvtx = nvtx
        self.work = work
        self.measurement: Measurement | None = None
        self._rf: Any = None
        self._nvtx_on = False
        self._mon: Monitor | None = None

    def __enter__(self) -> Measurement:
        t = _t()
        mon = self.monitor
        if mon is None:
            mon = default_monitor()
        if self.sync is not None:
            self.sync()
        self._nvtx_on = self.nvtx and _cuda_in_use(t)
        if self._nvtx_on:
            t.cuda.nvtx.range_push(self.name)
        # A record_function range costs ~10-20 µs even with no profiler running; it is only
        # seen by a running profiler, so it is entered only then.
        if t.autograd._profiler_enabled():
            self._rf = t.autograd.profiler.record_function(self.name)
            self._rf.__enter__()
        else:
            self._rf = None
        # The window opens last and closes first: the ranges enclose it.
        m = mon.begin_window(self.name, work=self.work)
        self.measurement = m
        self._mon = mon
        return m

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.sync is not None:
            self.sync()  # (the Monitor's own sync, if any, runs in end_measurement)
        assert self.measurement is not None and self._mon is not None
        self._mon.end_measurement(self.measurement)
        if self._rf is not None:
            self._rf.__exit__(exc_type, exc, tb)
            self._rf = None
        if self._nvtx_on:
            _t().cuda.nvtx.range_pop()


def window(
    name: str,
    monitor: Monitor | None = None,
    *,
    sync: Callable[[], Any] | bool | None = True,
    nvtx: bool = True,
    work: dict[str, float] | None = None,
) -> EnergyWindow:
    """``with window("step") as m:`` — energy of the block, also a profiler and NVTX range.

    ``monitor``: default the process-wide one (``jouletrace.window``'s);
    ``sync``: True (``torch.cuda.synchronize`` at both edges when CUDA is in
    use), False, or a callable; ``work``: units of work (``{"tokens": n}``).
    """
    return EnergyWindow(name, monitor, sync=sync, nvtx=nvtx, work=work)


@dataclass
class TraceEnergy:
    """What :class:`ProfilerEnergy` made of one profiler cycle."""

    step: int
    #: The profiler's own trace (Kineto JSON).
    trace_path: Path
    #: The same trace with jouletrace's power/energy tracks (open in https://ui.perfetto.dev).
    merged_path: Path | None
    #: :class:`jouletrace.kernels.Attribution`, or None when the cycle ran no CUDA kernel.
    attribution: Any
    #: Why there is no attribution or merged trace, if so.
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class ProfilerEnergy:
    """``torch.profiler.profile(on_trace_ready=ProfilerEnergy("traces/"))``.

    At the end of each active cycle it writes ``<dir>/<worker>.<step>.pt.trace.json``,
    waits for the sensor updates after the cycle (about three sensor periods),
    attributes the cycle's CUDA kernels to energy per name and per launch, and
    writes ``<dir>/<worker>.<step>.jouletrace.json.gz``: the Kineto trace with
    power and energy counter tracks in each GPU's process. ``results`` keeps a
    :class:`TraceEnergy` per cycle. A cycle without CUDA kernels (a CPU-only
    run) still gets its merged trace; its ``note`` says why nothing was attributed.
    ``monitor``: default the process-wide one; its GPU sampler's recording is used.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        monitor: Monitor | None = None,
        *,
        worker_name: str | None = None,
        attribute: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.monitor = monitor
        self.worker_name = worker_name
        self.do_attribute = attribute
        self.results: list[TraceEnergy] = []

    def _recording(self, mon: Monitor) -> Any:
        recs = mon.recordings()
        for key, rec in recs.items():
            if key.startswith(("nvml", "sim")):
                return rec
        return next(iter(recs.values()), None)

    def __call__(self, prof: Any) -> TraceEnergy:
        mon = self.monitor if self.monitor is not None else default_monitor()
        self.directory.mkdir(parents=True, exist_ok=True)
        step = int(getattr(prof, "step_num", len(self.results)))
        worker = self.worker_name or f"{os.uname().nodename}_{os.getpid()}"
        trace_path = self.directory / f"{worker}.{step}.pt.trace.json"
        prof.export_chrome_trace(str(trace_path))
        mon._wait_for_updates(time.monotonic_ns())  # noqa: SLF001  (the counter updates after the cycle)
        rec = self._recording(mon)
        if rec is None:
            te = TraceEnergy(step, trace_path, None, None, note=mon.unavailable_reason or "no recording")
            self.results.append(te)
            return te
        kernels = traces.load(trace_path)
        # Kineto numbers GPUs as CUDA does; the recording as NVML does.
        device_map = {d.index: f"gpu{d.nvml_index}" for d in mon.devices} or None
        result = None
        note = ""
        if len(kernels) == 0:
            note = "the profiled steps ran no CUDA kernel (CPU only): nothing to attribute"
        elif self.do_attribute:
            result = attribution.attribute(rec, kernels, device_map=device_map)
        merged = self.directory / f"{worker}.{step}.jouletrace.json.gz"
        export.merge_kineto(
            trace_path, merged, rec, kernels=kernels, device_map=device_map,
            launches=None if result is None else result.launches,
            names=None if result is None else result.names,
        )
        te = TraceEnergy(step, trace_path, merged, result, note=note)
        self.results.append(te)
        return te
