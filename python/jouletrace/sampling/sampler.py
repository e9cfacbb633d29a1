"""jouletrace.Sampler: one native sampling thread over one source."""

from __future__ import annotations

import getpass
import platform
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .. import _core
from .._version import __version__
from ..errors import (
    DeviceLostError,
    InvalidArgumentError,
    JouletraceError,
    PermissionDeniedError,
    SourceUnavailableError,
)
from . import counters, registry, sensor_model
from . import sources as _sources  # noqa: F401  (importing it registers the built-in sources)
from .samples import Samples

if TYPE_CHECKING:
    from .sim import SimGPU

__all__ = ["Sampler", "SOURCE_NAMES"]

_SamplesT = TypeVar("_SamplesT", bound=Samples)
_SamplerT = TypeVar("_SamplerT", bound="Sampler")

#: The built-in sources; :func:`jouletrace.sampling.registry.names` has every registered one.
SOURCE_NAMES = registry.names()

_ERROR_CLASSES: dict[int, type[JouletraceError]] = {
    _core.ERROR_DEVICE_LOST: DeviceLostError,
    _core.ERROR_UNAVAILABLE: SourceUnavailableError,
    _core.ERROR_PERMISSION: PermissionDeniedError,
}


class Sampler:
    """Samples one source on a native thread at ``rate_hz``, with the GIL out of the way.

    This is the sampling layer's part; :class:`jouletrace.Sampler`
    (:mod:`jouletrace.energy.sampler`) is this class with ``recording()`` handing over a
    :class:`jouletrace.Recording` and with streaming (``stream_to=``); use that one.

    ``source`` is the name of a registered source (:mod:`jouletrace.sampling.registry`):
    ``nvml``, ``sim`` (the simulated GPU), ``rapl``, ``rapl-perf``, ``rapl-msr``,
    ``rapl-powercap``, or one registered since (see :func:`jouletrace.sources`).

    Source options (each source's module documents its own):

    * ``nvml``: ``gpus=[0, 1]`` (NVML indices; default all), ``nvml_library=PATH``
      (default ``$JOULETRACE_NVML_LIBRARY`` or ``libnvidia-ml.so.1``),
      ``timestamps=True`` (also keep NVML's own per-field timestamps as
      ``gpuN.energy_ts_us`` / ``gpuN.power_ts_us``, µs since 1970).
    * ``sim``: ``sim=SimGPU(...)`` (default: one idle simulated H100), plus the
      ``nvml`` options but ``nvml_library``. It goes through the NVML code path.
    * ``rapl`` (tries perf, then msr, then powercap), ``rapl-perf``, ``rapl-msr``,
      ``rapl-powercap``: CPU package/core/uncore/DRAM and psys energy as
      cumulative joules (``cpuN.package.energy_j``, ...), 32-bit counters
      unwrapped in the core on every read. The roots are options so tests can
      point them at fake trees: ``dev_cpu_root`` (/dev/cpu), ``powercap_root``
      (/sys/class/powercap), ``perf_root`` (/sys/bus/event_source/devices/power),
      ``cpu_sysfs_root`` (/sys/devices/system/cpu), ``cpuinfo_path``.

    Sampler options: ``ring_capacity`` (records, power of two; default about
    one second), ``spin_us`` (busy-wait before each deadline; default 0 at
    1 kHz and below, up to 20 µs above), ``drain_period_s`` (how often the
    ring is moved to storage), ``max_samples`` (storage bound), ``wake_slice``
    (default True: the sampler thread asks the kernel for a short scheduling
    slice, so that it preempts the program's other busy threads when it wakes
    instead of waiting out their slice; not a priority: ARCHITECTURE.md).

    Use as a context manager, or ``start()`` / ``stop()``; ``recording()``
    returns the samples so far (zero-copy) at any time. Errors on the sampling
    thread (a GPU lost) are raised at the next ``stop()`` or ``check()``, with
    what was recorded attached as ``error.recording``.
    """

    def __init__(
        self,
        source: str = "nvml",
        rate_hz: float = 1000.0,
        *,
        ring_capacity: int = 0,
        spin_us: float | None = None,
        drain_period_s: float | None = None,
        max_samples: int = 0,
        wake_slice: bool = True,
        **source_options: Any,
    ) -> None:
        self.source = source
        spec = registry.lookup(source)
        unknown = sorted(set(source_options) - spec.options)
        if unknown:
            raise InvalidArgumentError(
                f"unknown option(s) for source {source!r}: {', '.join(unknown)}; "
                f"it takes {', '.join(sorted(spec.options)) or 'none'}"
            )
        config = _core.SamplerConfig(
            rate_hz=float(rate_hz),
            ring_capacity=int(ring_capacity),
            spin_ns=-1 if spin_us is None else int(spin_us * 1000),
            drain_period_ns=0 if drain_period_s is None else int(drain_period_s * 1e9),
            max_records=int(max_samples),
            wake_slice=bool(wake_slice),
        )
        opened = spec.open(dict(source_options), config)
        self._native = opened.native
        #: The simulated GPU behind a simulated source (``sim``), else None.
        self.sim: SimGPU | None = opened.sim
        self._error_raised = False
        self._started_realtime_ns: int | None = None
        self._stopped_at_ns: int | None = None
        #: (stop, restart) CLOCK_MONOTONIC ns of every pause: nothing was read in between.
        self._pauses: list[list[int]] = []
        #: Set by a Monitor that owns this sampler: its windows go into every recording's metadata.
        self._windows_provider: Any = None

    # -- lifecycle --------------------------------------------------------------
    def start(self: _SamplerT) -> _SamplerT:
        """Start sampling (idempotent)."""
        if self._started_realtime_ns is None:
            self._started_realtime_ns = time.time_ns()
        if self._stopped_at_ns is not None and not self._native.running:
            self._pauses.append([self._stopped_at_ns, time.monotonic_ns()])
            self._stopped_at_ns = None
        self._starting()
        self._native.start()
        self._started()
        return self

    # Hooks for the layer above (jouletrace.energy.sampler: the streaming writer).
    def _starting(self) -> None:
        """Called by :meth:`start` just before the native thread starts."""

    def _started(self) -> None:
        """Called by :meth:`start` just after the native thread started."""

    def _stopped(self) -> None:
        """Called when a running sampler has stopped (its threads joined)."""

    def _stop_native(self) -> None:
        was_running = bool(self._native.running)
        self._native.stop()
        if was_running:
            self._stopped_at_ns = time.monotonic_ns()
            self._stopped()

    def stop(self) -> None:
        """Stop sampling, join the threads, keep every record (idempotent).

        Raises the sampling thread's error, if any, after stopping: e.g.
        :class:`DeviceLostError`; every such error carries the recording so far
        as ``.recording``.
        """
        self._stop_native()
        self.check()

    def check(self) -> None:
        """Raise the sampling thread's first error, once. The sampler keeps running."""
        err = self._native.error()
        if err is None or self._error_raised:
            return
        self._error_raised = True
        kind, message = err
        cls = _ERROR_CLASSES.get(kind, JouletraceError)
        if cls is DeviceLostError:
            raise DeviceLostError(message, recording=self.recording())
        err_obj = cls(message)
        # What was read is kept on the error, as DeviceLostError keeps it.
        err_obj.recording = self.recording()  # type: ignore[attr-defined]
        raise err_obj

    @property
    def running(self) -> bool:
        return bool(self._native.running)

    def __enter__(self: _SamplerT) -> _SamplerT:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.stop()
        else:
            # The body failed: stop quietly; its exception is the one to see.
            self._stop_native()

    # -- state --------------------------------------------------------------------
    @property
    def channels(self) -> list[str]:
        return [name for name, _ in self._native.channels]

    @property
    def rate_hz(self) -> float:
        return float(self._native.config.rate_hz)

    @property
    def config(self) -> dict[str, Any]:
        """The sampler settings in force (rate_hz, ring_capacity, spin_ns, drain_period_ns, max_records)."""
        return self._native.config.to_dict()

    @property
    def dropped(self) -> int:
        """Records lost: ring full (ring_capacity too small for a stalled consumer) or storage full."""
        return int(self._native.dropped_ring + self._native.dropped_storage)

    @property
    def missed_deadlines(self) -> int:
        return int(self._native.missed_deadlines)

    @property
    def reads(self) -> int:
        return int(self._native.reads)

    def last_read_ns(self) -> int | None:
        """CLOCK_MONOTONIC ns at which the latest stored read began (None before the first).

        How far the sampling thread has got: a wait for the samples after some instant
        waits on this, not on the wall clock, since a thread starved of the CPU falls behind.
        """
        if self._native.running:
            self._native.drain()
        t = self._native.columns()["t_before_ns"]
        return int(t[-1]) if len(t) else None

    @property
    def memory_bytes(self) -> int:
        """Memory committed for the samples stored so far (grows with the recording)."""
        return int(self._native.committed_bytes)

    def source_metadata(self) -> dict[str, str]:
        return dict(self._native.metadata)

    # -- data -----------------------------------------------------------------------
    def _metadata(self) -> dict[str, Any]:
        cfg = self._native.config
        meta: dict[str, Any] = {
            "schema": 1,
            "jouletrace_version": __version__,
            "source": self._native.source_name,
            "rate_hz": cfg.rate_hz,
            "ring_capacity": cfg.ring_capacity,
            "spin_ns": cfg.spin_ns,
            "host": socket.gethostname(),
            "user": _user(),
            "kernel": platform.release(),
            "machine": platform.machine(),
            "cpu_model": _cpu_model(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "started_epoch_ns": self._started_realtime_ns,
            "reads": int(self._native.reads),
            "dropped_ring": int(self._native.dropped_ring),
            "dropped_storage": int(self._native.dropped_storage),
            "missed_deadlines": int(self._native.missed_deadlines),
            "wake_slice_ns": int(self._native.wake_slice_ns),
            "channels": {name: ("cumulative" if cum else "level") for name, cum in self._native.channels},
            "counters": counters.published(self._native.channel_info),
            "device": dict(self._native.metadata),
            "pauses": [list(p) for p in self._pauses],
        }
        keys = sorted({k.split(".")[0] for k in meta["device"] if k.startswith("gpu") and k.endswith(".uuid")})
        keys += sorted({c[: -len(".energy_j")] for c in meta["channels"] if c.endswith(".energy_j")} - set(keys))
        simulated = None
        if self.sim is not None and self.sim.publish_counter:
            simulated = {f"gpu{i}": self.sim.sensor_model(i) for i in range(self.sim.gpu_count)}
        meta["sensor_model"] = sensor_model.models_for(meta["device"], str(meta["source"]), keys, simulated)
        err = self._native.error()
        if err is not None:
            meta["error"] = err[1]
        if self._windows_provider is not None:
            meta["windows"] = self._windows_provider(self)
        return meta

    def recording(self) -> Samples:
        """Every sample so far as :class:`~jouletrace.sampling.samples.Samples` of read-only,
        zero-copy numpy views (:class:`jouletrace.Sampler`: a :class:`jouletrace.Recording`)."""
        return self._samples(Samples)

    def _samples(self, cls: type[_SamplesT], first_poll: Callable[[], int] | None = None) -> _SamplesT:
        """The samples as a ``cls``; from poll ``first_poll()`` on (read once the columns are), if given."""
        if self._native.running:
            self._native.drain()
        cols = self._native.columns()
        kinds = dict(self._native.channels)
        meta = self._metadata()
        start = 0 if first_poll is None else first_poll()
        values = cols["values"]
        if start:  # the recent span of a streaming sampler (a view of the native view: still no copy)
            values = {k: v[start:] for k, v in values.items()}
            cols = {k: cols[k][start:] for k in ("t_ns", "t_before_ns", "t_after_ns", "seq", "status")}
        return cls(
            t_ns=cols["t_ns"],
            t_before_ns=cols["t_before_ns"],
            t_after_ns=cols["t_after_ns"],
            seq=cols["seq"],
            status=cols["status"],
            values=values,
            cumulative=kinds,
            dropped=int(self._native.dropped_ring + self._native.dropped_storage),
            missed_deadlines=int(self._native.missed_deadlines),
            clock_pairs=self._native.clock_pairs(),
            metadata=meta,
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Sampler {self.source} {self.rate_hz:g} Hz {state} reads={self.reads} dropped={self.dropped}>"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001  (no passwd entry in some containers)
        return "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"
