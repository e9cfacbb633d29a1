"""Monitor: the usable samplers together, and named energy windows over them.

>>> import jouletrace
>>> from jouletrace.sampling.sim import SimGPU
>>> with SimGPU(update_period_s=0.01) as sim, jouletrace.Monitor(sim=sim, cpu=False) as mon:
...     with mon.window("step") as m:
...         pass
...     e = m.total_j          # computed now: may wait ~3 sensor updates
>>> "gpu0" in m.energy_j
True

Windows are cheap to mark: ``begin_window`` and ``end_window`` (or the
``window`` context manager) only read CLOCK_MONOTONIC under a lock, a few
microseconds. They may nest and overlap freely; the same name opened twice in
one thread nests (a stack per thread and name); windows may be marked from
several threads.

The energy of a window is computed when first asked for (an attribute of its
:class:`~jouletrace.energy.measurement.Measurement`, ``Measurement.resolve()``, or
:meth:`Monitor.measurements` for all of them at once, vectorised). A counter
updates only every sensor period (NVML: up to 100 ms), so the update that
brackets a window's end may not have happened yet when the window ends. On
first use the Monitor therefore waits until every counter has been seen to
update ``wait_updates`` times (default 3: the bound uses the two intervals
after the end) past the window's end — until the samplers have *read* about
that many sensor periods past the end (their progress, not the wall clock: on
a loaded machine a starved sampler thread reads late, and the wait lasts until
it has caught up, at most ``Monitor.wait_cap_s``, 10 s, of wall clock; a window
whose wait hit that cap is flagged ``wait_capped``) — and then integrates. ``resolve(wait=False)``
computes at once instead, extrapolating past the last update (flag
``extrapolated``, with a bound to match).

``sync`` (e.g. ``torch.cuda.synchronize``), given to the Monitor or to one
window, is called at both edges before the clock is read, so that the window
covers the GPU work queued inside it.

Reading a window's energy right after it ends therefore blocks for up to
about ``wait_updates`` sensor periods (~0.3 s on a 100 ms NVML sensor);
``Measurement.ready`` says without blocking whether it would, and
``resolve(wait=False)`` returns at once with values marked ``provisional``
(replaced by the final ones on the next waiting read).

Ended windows are kept (``measurements()``) until ``clear()``, and every
recording the Monitor hands over (``recording()``, ``recordings()``, or a
sampler's ``recording()``) carries them in ``metadata["windows"]``: name,
edges, work units, and the energies once computed.

GPUs are chosen as the framework numbers them (``gpus="visible"``, the
default: ``CUDA_VISIBLE_DEVICES``; ``"local"``: the rank's own GPU from
``LOCAL_RANK``; ``"all"``: every GPU by NVML index; see
:mod:`jouletrace.sampling.devices`). Results are keyed ``gpu<framework index>``
and ``WindowEnergies.uuid`` / ``Measurement.uuid`` give each key's GPU UUID.

``stop()`` ends sampling; ``begin_window`` on a stopped Monitor raises
:class:`InvalidArgumentError` (a window there would have no samples) until
``start()`` is called again, which resumes sampling (the gap is recorded as a
pause).

With ``unavailable="warn"`` (what ``jouletrace.window`` uses), a Monitor that
finds no usable source warns once per process
(:class:`jouletrace.errors.MeasurementUnavailableWarning`) and its windows are
marked unavailable (``Measurement.available`` False, energies NaN, the reason
in ``unavailable_reason``) instead of raising; sources named explicitly
(``sources=[...]``) still raise.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from threading import get_ident
from time import monotonic_ns
from types import TracebackType
from typing import Any

import numpy as np

from ..errors import (
    InvalidArgumentError,
    JouletraceError,
    MeasurementUnavailableWarning,
    SourceUnavailableError,
)
from ..sampling import registry
from ..sampling import sources as source_probes
from ..sampling.devices import GpuDevice, select_gpus
from .measurement import Measurement, WindowEnergies, check_work
from .recording import Recording
from .sampler import _STREAM_MAX_SAMPLES, Sampler
from .stream import require_pyarrow
from .windows import flag_names, infer_update_period

__all__ = ["Monitor"]

# How long to assume a sensor period is before one has been seen (NVML's slowest).
_DEFAULT_PERIOD_S = 0.1
#: Default wall-clock cap (s) on the wait for a window's closing updates: a liveness bound for a
#: sampler thread that stops progressing, far above what a loaded machine delays it by.
_WAIT_CAP_S = 10.0

#: Options every sampler takes.
_SAMPLER_OPTIONS = frozenset({"ring_capacity", "spin_us", "drain_period_s", "max_samples"})
#: The sources that read NVML-numbered GPUs, which the Monitor chooses (``gpus=``, ``sim=``).
_GPU_SOURCES = ("nvml", "sim")
#: Source options the Monitor sets itself rather than passing on.
_MONITOR_SETS = frozenset({"gpus", "sim"})


def _source_options_by_name() -> dict[str, frozenset[str]]:
    """Source name -> the options a Monitor passes on to it (each registered source's own)."""
    return {spec.name: spec.options - _MONITOR_SETS for spec in registry.specs()}

_warned_unavailable = False


class Monitor:
    """Runs the usable samplers together and measures named windows over them.

    * ``gpus``: ``"visible"`` (default: the GPUs ``CUDA_VISIBLE_DEVICES`` leaves
      visible, keyed by the framework's index), ``"local"`` (this rank's GPU,
      from ``LOCAL_RANK``), ``"all"`` (every GPU, by NVML index), a list of
      framework indices, or None for no GPU (:mod:`jouletrace.sampling.devices`).
    * ``cpu``: sample RAPL (package, cores, DRAM, psys) when it is usable here.
    * ``rate_hz``: sampling rate of every sampler.
    * ``sim``: a :class:`jouletrace.sampling.sim.SimGPU` to use instead of NVML.
    * ``sources``: explicit source names (``["nvml", "rapl-msr"]``) instead of
      ``gpus``/``cpu``; each must be usable.
    * ``source_options``: options for one source only, by name (e.g.
      ``{"rapl-msr": {"dev_cpu_root": ...}}``), on top of the shared ones.
    * ``sync``: a callable run at both edges of every window (see the module docstring).
    * ``wait_updates``: counter updates to wait for past a window's end on first use.
    * ``edges``: ``"aligned"`` (default): windows open and close where the program
      changes what it does, so their bound allows a power step at each edge that the
      sensor never showed (:mod:`jouletrace.energy.windows`, "Aligned edges");
      ``"independent"`` for windows placed without regard to the load.
    * ``unavailable``: ``"raise"`` (default) or ``"warn"`` (see the module docstring).
    * ``stream_to``: write the recording to disk as it is made, with the windows
      (:mod:`jouletrace.energy.stream`; a new folder, ``NAME.<source>.jt`` per sampler when
      there are several); ``compact``, ``keep_s``, ``flush_s`` as for :class:`jouletrace.Sampler`.
      Memory stays bounded: the recordings this Monitor hands out cover the last ``keep_s``.
    * further keyword arguments: sampler options (``ring_capacity``, ``spin_us``,
      ``drain_period_s``, ``max_samples``) go to every :class:`jouletrace.Sampler`;
      source options go to the sources that take them (as registered,
      :mod:`jouletrace.sampling.registry`): GPU options (``nvml_library``,
      ``timestamps``) to the GPU sampler, RAPL roots (``dev_cpu_root``,
      ``powercap_root``, ``perf_root``, ``cpu_sysfs_root``, ``cpuinfo_path``, ...)
      to the RAPL sampler; each is used to decide whether its source is usable.
      Any other name is an error.

    Sources asked for but not usable here (no GPU, RAPL not readable) are
    skipped and listed in ``skipped`` with the reason; if none is usable,
    :class:`SourceUnavailableError` says why for each (or, with
    ``unavailable="warn"``, a warning). Use as a context manager or
    ``start()`` / ``stop()``; ``begin_window`` starts it if needed.
    """

    def __init__(
        self,
        gpus: str | int | Sequence[int] | None = "visible",
        cpu: bool = True,
        rate_hz: float = 1000.0,
        *,
        sim: Any = None,
        sources: Sequence[str] | None = None,
        sync: Callable[[], Any] | None = None,
        wait_updates: int = 3,
        edges: str = "aligned",
        source_options: dict[str, dict[str, Any]] | None = None,
        unavailable: str = "raise",
        stream_to: str | os.PathLike[str] | None = None,
        compact: bool = True,
        keep_s: float | None = 600.0,
        flush_s: float = 0.5,
        **sampler_options: Any,
    ) -> None:
        self.rate_hz = float(rate_hz)
        if stream_to is not None:
            require_pyarrow()
            sampler_options.setdefault("max_samples", _STREAM_MAX_SAMPLES)
        self.sync = sync
        self.wait_updates = max(0, int(wait_updates))
        #: Wall-clock bound (s) on one wait for the updates after a window's end, which otherwise
        #: lasts until the samplers have read far enough past it (``_wait_for_updates``).
        self.wait_cap_s = _WAIT_CAP_S
        if edges not in ("aligned", "independent"):
            raise InvalidArgumentError(f"edges must be 'aligned' or 'independent', got {edges!r}")
        self.edges = edges
        if unavailable not in ("raise", "warn"):
            raise InvalidArgumentError(f"unavailable must be 'raise' or 'warn', got {unavailable!r}")
        by_source = _source_options_by_name()
        unknown = set(sampler_options) - _SAMPLER_OPTIONS - set().union(*by_source.values())
        if unknown:
            groups: dict[frozenset[str], list[str]] = {}
            for name, names in by_source.items():
                if names:
                    groups.setdefault(names, []).append(name)
            per_source = "; ".join(f"{', '.join(n)}: {', '.join(sorted(o))}" for o, n in groups.items())
            raise InvalidArgumentError(
                f"unknown Monitor option(s): {', '.join(sorted(unknown))}; sampler options: "
                f"{', '.join(sorted(_SAMPLER_OPTIONS))}; source options: {per_source}"
            )
        #: Source name -> why it was not used.
        self.skipped: dict[str, str] = {}
        #: The GPUs sampled, keyed as the framework keys them (empty without a GPU sampler).
        self.devices: list[GpuDevice] = []
        #: Why nothing is measured (``unavailable="warn"`` and no usable source), else None.
        self.unavailable_reason: str | None = None
        self._source_options = {k: dict(v) for k, v in (source_options or {}).items()}
        try:
            self._samplers: list[Sampler] = self._make_samplers(gpus, cpu, sim, sources, sampler_options)
        except SourceUnavailableError as e:
            if unavailable == "raise" or sources is not None:
                raise
            self._samplers = []
            self.unavailable_reason = str(e)
            _warn_unavailable(str(e))
        # Per sampler: its own device key -> the key in results (gpu<NVML index> -> gpu<framework index>).
        self._rename: list[dict[str, str]] = [self._renames_for(s) for s in self._samplers]
        for s in self._samplers:
            s._windows_provider = self._windows_metadata  # noqa: SLF001  (windows in every recording)
        #: Where each sampler streams its recording (``stream_to``), in the order of ``samplers``.
        self.stream_paths: list[str] = []
        self._streamed: dict[int, int] = {}  # sampler index -> windows of _finished already streamed
        if stream_to is not None:
            self.stream_paths = stream_paths(os.fspath(stream_to), [s.source for s in self._samplers])
            for si, (s, path) in enumerate(zip(self._samplers, self.stream_paths, strict=True)):
                s._stream_args = dict(path=path, compact=compact, keep_s=keep_s, flush_s=flush_s)  # noqa: SLF001
                s._windows_stream = functools.partial(self._new_windows, si)  # noqa: SLF001
        self._stopped = False
        self._lock = threading.Lock()  # guards the window lists; held for microseconds
        self._resolve_lock = threading.RLock()  # one batch computation (and recording read) at a time
        # (thread, name) -> the stack of open windows; a Measurement knows its stack (m._stack).
        self._open: dict[tuple[int, str], list[Measurement]] = {}
        self._resolve_cb = self._resolve  # bound once: closing a window allocates nothing more
        self._ready_cb = self._is_ready
        self._finished: list[Measurement] = []
        self._pending: list[Measurement] = []
        self._periods: dict[tuple[int, str], float] = {}
        self._started = False

    # -- construction ---------------------------------------------------------------
    def _make_samplers(
        self,
        gpus: str | int | Sequence[int] | None,
        cpu: bool,
        sim: Any,
        sources: Sequence[str] | None,
        opts: dict[str, Any],
    ) -> list[Sampler]:
        common = {k: v for k, v in opts.items() if k in _SAMPLER_OPTIONS}
        shared = {k: v for k, v in opts.items() if k not in _SAMPLER_OPTIONS}

        def theirs(name: str) -> dict[str, Any]:
            """The shared source options that the source ``name`` takes."""
            return {k: v for k, v in shared.items() if k in registry.lookup(name).options}

        usable = {s.name: s for s in source_probes.sources()}
        made: list[Sampler] = []
        if sources is not None:
            for name in sources:
                passed = theirs(name)  # an unknown name fails here, listing the known ones
                own = {**passed, **common, **self._source_options.get(name, {})}
                if name in _GPU_SOURCES:
                    info = usable.get(name)
                    default_lib = own.get("nvml_library") is None and not os.environ.get("JOULETRACE_NVML_LIBRARY")
                    if name == "nvml" and default_lib and info is not None and not info.usable:
                        fix = f" (fix: {info.fix})" if info.fix else ""
                        raise SourceUnavailableError(f"source {name!r} is not usable here: {info.reason}{fix}")
                    made.append(self._gpu_sampler(name, gpus, sim, own))
                    continue
                info = usable.get(name)
                custom = name in self._source_options or bool(passed)
                if not custom and info is not None and not info.usable:
                    fix = f" (fix: {info.fix})" if info.fix else ""
                    raise SourceUnavailableError(f"source {name!r} is not usable here: {info.reason}{fix}")
                # With options of its own (other roots), the source is tried as given: its
                # constructor says precisely what is wrong if it cannot be used.
                made.append(Sampler(name, rate_hz=self.rate_hz, **own))
            return made
        want_gpu = not (gpus is None or gpus is False or (isinstance(gpus, (list, tuple)) and len(gpus) == 0))
        if gpus is True:
            gpus = "visible"
        if isinstance(gpus, str) and gpus not in ("visible", "local", "all"):
            raise InvalidArgumentError(
                f"gpus must be 'visible', 'local', 'all', a list of indices or None, got {gpus!r}"
            )
        if want_gpu:
            name = "sim" if sim is not None else "nvml"
            own = {**theirs(name), **common, **self._source_options.get(name, {})}
            if sim is not None:
                made.append(self._gpu_sampler("sim", gpus, sim, own))
            else:
                lib = own.get("nvml_library")
                info = usable.get("nvml")
                default_lib = lib is None and not os.environ.get("JOULETRACE_NVML_LIBRARY")
                if default_lib and info is not None and not info.usable:
                    self.skipped["nvml"] = info.reason
                else:
                    try:  # the library asked for decides, not the default one probed
                        made.append(self._gpu_sampler("nvml", gpus, None, own))
                    except SourceUnavailableError as e:
                        self.skipped["nvml"] = str(e)
        if cpu:
            passed = theirs("rapl")
            own = {**passed, **common, **self._source_options.get("rapl", {})}
            if passed or "rapl" in self._source_options:
                try:
                    made.append(Sampler("rapl", rate_hz=self.rate_hz, **own))
                except JouletraceError as e:
                    self.skipped["rapl"] = str(e)
            else:
                info = usable.get("rapl")
                if info is not None and info.usable:
                    made.append(Sampler("rapl", rate_hz=self.rate_hz, **own))
                else:
                    self.skipped["rapl"] = info.reason if info is not None else "unknown source"
        if not made:
            why = "; ".join(f"{k}: {v}" for k, v in self.skipped.items()) or "none was asked for"
            raise SourceUnavailableError(
                f"no usable energy source for this Monitor ({why}); `jouletrace info` says how to fix each"
            )
        return made

    def _gpu_sampler(self, source: str, gpus: Any, sim: Any, opts: dict[str, Any]) -> Sampler:
        """A GPU sampler over the chosen GPUs (framework numbering); records them in ``devices``."""
        if "gpus" in opts:
            gpus = opts.pop("gpus")
        if source == "sim":
            from ..sampling.sim import SimGPU

            if sim is None:
                sim = opts.pop("sim", None) or SimGPU()
            library: Any = sim.library_path if isinstance(sim, SimGPU) else None
        else:
            library = opts.get("nvml_library") or os.environ.get("JOULETRACE_NVML_LIBRARY")
        if library is not None or source == "nvml":
            devs = select_gpus("visible" if gpus is None else gpus, library=library)
        else:
            devs = []
        if not devs:
            raise SourceUnavailableError(
                f"no GPU selected for source {source!r} (gpus={gpus!r}, "
                f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})"
            )
        self.devices.extend(devs)
        extra = {"sim": sim} if source == "sim" else {}
        return Sampler(source, rate_hz=self.rate_hz, gpus=[d.nvml_index for d in devs], **extra, **opts)

    def _renames_for(self, s: Sampler) -> dict[str, str]:
        if s.source not in _GPU_SOURCES:
            return {}
        return {f"gpu{d.nvml_index}": d.key for d in self.devices}

    @property
    def uuids(self) -> dict[str, str]:
        """Result key -> GPU UUID, for every GPU sampled."""
        return {d.key: d.uuid for d in self.devices}

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def samplers(self) -> list[Sampler]:
        return list(self._samplers)

    def start(self) -> Monitor:
        """Start every sampler (idempotent) and wait for each one's first sample (at most 1 s).

        A window that begins before a sampler's first sample would have an edge
        outside its recording.
        """
        for s in self._samplers:
            s.start()
        self._stopped = False
        if self._started:
            return self
        self._started = True
        deadline = time.monotonic() + 1.0
        while any(s.running and s.reads == 0 for s in self._samplers) and time.monotonic() < deadline:
            time.sleep(0.0005)
        return self

    def stop(self) -> None:
        """Compute the ended windows, stop every sampler; then raise the first sampling error, if any.

        Windows that ended but were not asked for yet are computed first, while the
        samplers still run, so that the counter updates after their ends are seen
        (at most about ``wait_updates`` sensor periods).
        """
        if self.running:
            with contextlib.suppress(Exception):  # a sampler error is reported below, by stop()
                self._resolve(True)
        if self._started:
            self._stopped = True
        first: BaseException | None = None
        for s in self._samplers:
            try:
                s.stop()
            except Exception as e:  # noqa: BLE001  (stop them all, then report)
                if first is None:
                    first = e
        if first is not None:
            raise first

    @property
    def running(self) -> bool:
        return any(s.running for s in self._samplers)

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.stop()
        else:
            with contextlib.suppress(Exception):
                self.stop()

    # -- windows ------------------------------------------------------------------------
    def begin_window(
        self, name: str, sync: Callable[[], Any] | None = None, *, work: Mapping[str, float] | None = None
    ) -> Measurement:
        """Open window ``name`` now; returns its (open) Measurement.

        ``sync`` (default: the Monitor's) runs before the clock is read.
        ``work``: units of work done in the window (``{"tokens": 4096}``; numbers
        >= 0, checked here: :class:`InvalidArgumentError` otherwise); more can be
        given to ``end_window``/``end_measurement`` or ``Measurement.add_work``.
        Raises :class:`InvalidArgumentError` on a stopped Monitor (``start()`` it again).

        The caller's thread does only this: the sync, one clock read, one
        :class:`Measurement`, and an append under a lock held for a few
        instructions. No sensor is read here; the energies are computed later.
        """
        if self._stopped:
            raise InvalidArgumentError(
                f"window {name!r}: this Monitor was stopped, so nothing would measure the window; "
                "call start() to sample again"
            )
        if not self._started:
            self.start()
        m = Measurement(name)
        if work:
            m._work = check_work(work, name)  # checked first: a bad amount opens nothing
        m.unavailable_reason = self.unavailable_reason
        fn = sync if sync is not None else self.sync
        if fn is not None:
            fn()
        m.t0_ns = monotonic_ns()
        key = (get_ident(), name)
        with self._lock:
            stack = self._open.get(key)
            if stack is None:
                # Kept when empty, so a loop's next window reuses it (one entry per thread and name).
                stack = self._open[key] = []
            stack.append(m)
            m._stack = stack
        return m

    def end_window(
        self, name: str, sync: Callable[[], Any] | None = None, *, work: Mapping[str, float] | None = None
    ) -> Measurement:
        """Close the innermost open window ``name`` of this thread and return its Measurement.

        (A window opened by another thread can be closed here if it is the only
        open one of that name.) ``work`` adds units of work known only at the end
        (tokens generated). The energies are computed on first use.
        """
        checked = check_work(work, name) if work else None
        fn = sync if sync is not None else self.sync
        if fn is not None:
            fn()
        t1 = monotonic_ns()
        with self._lock:
            stack = self._open.get((get_ident(), name))
            if not stack:
                others = [v for k, v in self._open.items() if k[1] == name and v]
                if len(others) != 1 or len(others[0]) != 1:
                    open_names = sorted({k[1] for k, v in self._open.items() if v})
                    raise InvalidArgumentError(
                        f"no open window {name!r} to end in this thread; open windows: {open_names or 'none'}"
                    )
                stack = others[0]
            m = stack.pop()
            if checked:
                m.add_work(**checked)
            self._close(m, t1)
        return m

    def _close(self, m: Measurement, t1: int) -> None:
        # Under self._lock.
        m.t1_ns = t1
        m._stack = None
        m._resolver = self._resolve_cb
        m._ready = self._ready_cb
        self._finished.append(m)
        self._pending.append(m)

    def window(
        self, name: str, sync: Callable[[], Any] | None = None, *, work: Mapping[str, float] | None = None
    ) -> _Window:
        """``with monitor.window("step") as m:`` — ``m`` holds the result after the block.

        ``work`` as for :meth:`begin_window`; work known only at the end goes to
        ``m.add_work(tokens=n)`` inside the block. Reading ``m``'s energy blocks
        until the sensor has updated after the block (module docstring);
        ``m.ready`` says whether it would.
        """
        return _Window(self, name, sync, work)

    def end_measurement(
        self, m: Measurement, sync: Callable[[], Any] | None = None, *, work: Mapping[str, float] | None = None
    ) -> Measurement:
        """End this very window (from ``begin_window``), whichever thread opened it; idempotent.

        ``work`` adds units of work known only at the end (ignored if it had ended).
        """
        checked = check_work(work, m.name) if work else None
        fn = sync if sync is not None else self.sync
        if fn is not None:
            fn()
        t1 = monotonic_ns()
        with self._lock:
            stack = m._stack
            if m.t1_ns is None and stack is not None:  # else already ended (end_window from another thread)
                if stack[-1] is m:
                    stack.pop()
                else:
                    del stack[next(i for i in range(len(stack) - 1, -1, -1) if stack[i] is m)]
                if checked:
                    m.add_work(**checked)
                self._close(m, t1)
        return m

    def open_windows(self) -> list[str]:
        """Names of the windows open now (any thread)."""
        with self._lock:
            return [name for (_, name), stack in self._open.items() for _m in stack]

    # -- results --------------------------------------------------------------------------
    def measurements(self, name: str | None = None, *, wait: bool = True) -> list[Measurement]:
        """Every ended window (or those named ``name``), in the order they ended, computed.

        All windows not computed yet are computed together (one vectorised pass).
        """
        self._resolve(wait)
        with self._lock:
            done = list(self._finished)
        return [m for m in done if name is None or m.name == name]

    def clear(self) -> None:
        """Forget the ended windows (open ones stay open)."""
        self._resolve(False)
        with self._lock:
            self._finished.clear()
            self._streamed.clear()

    def ready(self) -> list[Measurement]:
        """The ended windows whose energies can be computed now without waiting, computed.

        For loggers that report each step as soon as its energy is final,
        without blocking the training loop.
        """
        with self._lock:
            ended = sorted(((m.t1_ns, m) for m in self._pending if m.t1_ns is not None), key=lambda e: -e[0])
        # Readiness is monotone in the end time: the latest ready end decides for all earlier ones.
        latest = next((t1 for t1, _ in ended if self._is_ready(t1)), None)
        if latest is None:
            return []
        batch = [(t1, m) for t1, m in ended if t1 <= latest]
        self._resolve(True, [m for _, m in batch])
        return [m for _, m in sorted(batch, key=lambda e: e[0])]

    def _is_ready(self, t1_ns: int) -> bool:
        """Whether every counter has updated ``wait_updates`` times past ``t1_ns`` (or none runs)."""
        if self.wait_updates <= 0 or not self.running:
            return True
        return not self._missing_updates(t1_ns)[0]

    def _missing_updates(self, t1_ns: int) -> tuple[bool, float]:
        """(Whether a running counter still lacks ``wait_updates`` updates past ``t1_ns``, the
        longest sensor period seen, in s). A counter never seen to update (an idle RAPL
        sub-domain, say) is waited on only when no other is: waiting for it would cost the
        whole deadline on every window for nothing."""
        missing = False
        longest = 0.0
        unseen: list[tuple[Recording, str]] = []
        for si, s in enumerate(self._samplers):
            if not s.running:
                continue
            rec = s.recording()
            for ch in rec.channels:
                if not rec.is_cumulative(ch):
                    continue
                period = self._period_seen(si, ch, rec)
                if period is None:
                    unseen.append((rec, ch))
                    continue
                longest = max(longest, period)
                if _updates_after(rec, ch, t1_ns) < self.wait_updates:
                    missing = True
        if longest == 0.0 and unseen:  # nothing seen to update yet: wait on all, assumed period
            longest = _DEFAULT_PERIOD_S
            missing = any(_updates_after(rec, ch, t1_ns) < self.wait_updates for rec, ch in unseen)
        return missing, longest

    def _windows_metadata(self, sampler: Sampler) -> list[dict[str, Any]]:
        """The windows as stored in ``sampler``'s recordings (its own device keys)."""
        try:
            si = next(i for i, s in enumerate(self._samplers) if s is sampler)
        except StopIteration:
            return []
        back = {v: k for k, v in self._rename[si].items()}
        own = set()
        for ch in sampler.channels:
            if ch.endswith(".energy_j") or ch.endswith(".power_w"):
                own.add(ch.rsplit(".", 1)[0])
        with self._lock:
            done = list(self._finished)
            open_ = [m for stack in self._open.values() for m in stack]
        out: list[dict[str, Any]] = []
        for m in sorted(done + open_, key=lambda m: m.t0_ns):
            w: dict[str, Any] = {"name": m.name, "t0_ns": m.t0_ns, "t1_ns": m.t1_ns}
            if m._work:
                w["work"] = dict(m._work)
            if m.resolved:
                energy = m._energy or {}
                keys = {k: back.get(k, k) for k in energy}
                keys = {k: dev for k, dev in keys.items() if dev in own}
                w["energy_j"] = {dev: energy[k] for k, dev in keys.items()}
                w["uncertainty_j"] = {dev: m._unc.get(k) for k, dev in keys.items()}
                w["flags"] = {dev: list(m._flags.get(k, ())) for k, dev in keys.items()}
                if m.provisional:
                    w["provisional"] = True
            out.append(w)
        return out

    def _new_windows(self, si: int) -> list[dict[str, Any]]:
        """The windows that ended since the last call for sampler ``si`` (for its stream)."""
        with self._lock:
            start = self._streamed.get(si, 0)
            if start > len(self._finished):  # clear() forgot them
                start = 0
            new = self._finished[start:]
            self._streamed[si] = len(self._finished)
        out = []
        for m in new:
            w: dict[str, Any] = {"name": m.name, "t0_ns": m.t0_ns, "t1_ns": m.t1_ns}
            if m._work:
                w["work"] = dict(m._work)
            out.append(w)
        return out

    def recordings(self) -> dict[str, Recording]:
        """The samples so far of every sampler, keyed by source name."""
        out: dict[str, Recording] = {}
        for s in self._samplers:
            key = s.source
            n = 2
            while key in out:
                key = f"{s.source}#{n}"
                n += 1
            out[key] = s.recording()
        return out

    def recording(self) -> Recording:
        """The samples so far, when the Monitor runs exactly one sampler."""
        if len(self._samplers) != 1:
            raise InvalidArgumentError(
                f"this Monitor runs {len(self._samplers)} samplers; use recordings() to get each"
            )
        return self._samplers[0].recording()

    def energies(self, t0s: Any, t1s: Any, *, wait: bool = True) -> WindowEnergies:
        """Energy of arbitrary windows (CLOCK_MONOTONIC ns) over every sampler, vectorised."""
        a = np.atleast_1d(np.asarray(t0s, dtype=np.int64))
        b = np.atleast_1d(np.asarray(t1s, dtype=np.int64))
        return self._energies(a, b, wait)[0]

    def _energies(self, a: np.ndarray, b: np.ndarray, wait: bool) -> tuple[WindowEnergies, bool]:
        """``energies`` and whether the wait for the closing updates hit ``wait_cap_s``."""
        capped = False
        with self._resolve_lock:
            if wait and b.size:
                capped = self._wait_for_updates(int(b.max()))
            out = WindowEnergies(t0_ns=a, t1_ns=b)
            for si, s in enumerate(self._samplers):
                we = s.recording().energies(a, b, edges=self.edges)
                out.merge(we.renamed(self._rename[si]) if self._rename[si] else we)
            out.uuid.update({k: u for k, u in self.uuids.items() if k in out.energy_j})
        return out, capped

    # -- computation ------------------------------------------------------------------------
    def _resolve(self, wait: bool, only: list[Measurement] | None = None) -> None:
        with self._resolve_lock:
            with self._lock:
                batch = [m for m in self._pending if not m.resolved or (wait and m.provisional)]
            if only is not None:
                keep = set(map(id, only))
                batch = [m for m in batch if id(m) in keep]
            if not batch:
                return
            if not self._samplers:  # unavailable="warn" and nothing usable
                for m in batch:
                    m._fill({}, {}, {}, {})
                    m.unavailable_reason = self.unavailable_reason
                with self._lock:
                    done = set(map(id, batch))
                    self._pending = [m for m in self._pending if id(m) not in done]
                return
            t0s = np.fromiter((m.t0_ns for m in batch), dtype=np.int64, count=len(batch))
            # Every pending window has ended (a None would leave the iterator short: an error).
            t1s = np.fromiter((m.t1_ns for m in batch if m.t1_ns is not None), dtype=np.int64, count=len(batch))
            we, capped = self._energies(t0s, t1s, wait)
            # Without waiting, a window is final only if its end was already followed by the updates.
            provisional = not wait and self.running and not self._is_ready(int(t1s.max()))
            # Filled straight from the arrays (one list per key, flag names memoised per value):
            # a clear() or a logger's ready() over 10^4 windows costs ~1 µs each.
            keys = list(we.energy_j)
            ev = [we.energy_j[k].tolist() for k in keys]
            uv = [we.uncertainty_j[k].tolist() for k in keys]
            fv = [we.flags[k].tolist() for k in keys]
            names: dict[int, tuple[str, ...]] = {}
            method = dict(we.method)  # shared by the batch: Measurement only hands out copies
            uuid = {k: u for k, u in we.uuid.items() if k in we.energy_j}
            sensor_model, edges = dict(we.sensor_model), dict(we.edges)
            for i, m in enumerate(batch):
                flags = {}
                for k, col in zip(keys, fv, strict=True):
                    f = col[i]
                    fl = names.get(f)
                    if fl is None:
                        fl = names[f] = flag_names(f)
                    flags[k] = fl
                m._fill({k: col[i] for k, col in zip(keys, ev, strict=True)},
                        {k: col[i] for k, col in zip(keys, uv, strict=True)}, flags, method)
                m.uuid = dict(uuid)
                m.sensor_model, m.edges = sensor_model, edges
                m.provisional = provisional
                m.wait_capped = capped
            if provisional:
                return  # stay pending: a later waiting read replaces them with the final values
            with self._lock:
                done = set(map(id, batch))
                self._pending = [m for m in self._pending if id(m) not in done]

    def _wait_for_updates(self, t1_ns: int) -> bool:
        """Wait until every running counter has updated ``wait_updates`` times past ``t1_ns``.

        The deadline is the samplers' progress, not the wall clock: the wait ends once every
        running sampler has *read* past ``t1_ns`` + ``wait_updates + 1`` sensor periods + 50 ms
        (a counter still short of its updates then has stopped updating: its end is extrapolated).
        A sampler thread starved of the CPU reads late, and the wait lasts until it has caught up,
        up to ``wait_cap_s`` of wall clock (a liveness bound). Returns True when that cap cut the
        wait short (the windows are flagged ``wait_capped``).
        """
        if self.wait_updates <= 0:
            return False
        cap: float | None = None
        while True:
            missing, longest = self._missing_updates(t1_ns)
            if not missing:
                return False
            horizon = t1_ns + int(((self.wait_updates + 1) * longest + 0.05) * 1e9)
            if all(_read_past(s, horizon) for s in self._samplers if s.running):
                return False
            now = time.monotonic()
            if cap is None:
                cap = now + self.wait_cap_s
            if now >= cap:
                return True
            time.sleep(min(max(longest / 20, 0.0005), 0.01))

    def _period_seen(self, si: int, ch: str, rec: Recording) -> float | None:
        """The sensor period (s) of a channel as seen so far, or None."""
        key = (si, ch)
        p = self._periods.get(key)
        if p is not None:
            return p
        n = len(rec)
        tail = slice(max(0, n - 20000), n)
        seen = infer_update_period(rec.t_ns[tail], rec[ch][tail])
        if seen is None:
            return None
        if n >= 64:
            self._periods[key] = seen * 1e-9
        return seen * 1e-9

    def __repr__(self) -> str:
        srcs = ", ".join(s.source for s in self._samplers)
        return f"<Monitor [{srcs}] {self.rate_hz:g} Hz windows={len(self._finished)} skipped={list(self.skipped)}>"


class _Window:
    """The context manager of :meth:`Monitor.window` (a plain class: cheaper than a generator)."""

    __slots__ = ("_mon", "_name", "_sync", "_work", "_m")

    def __init__(self, mon: Monitor, name: str, sync: Callable[[], Any] | None,
                 work: Mapping[str, float] | None) -> None:
        self._mon, self._name, self._sync, self._work = mon, name, sync, work
        self._m: Measurement | None = None

    def __enter__(self) -> Measurement:
        self._m = self._mon.begin_window(self._name, self._sync, work=self._work)
        return self._m

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        m, self._m = self._m, None
        if m is not None:
            self._mon.end_measurement(m, self._sync)


def stream_paths(output: str, sources: Sequence[str]) -> list[str]:
    """One path per sampler: ``output`` itself for one, ``NAME.<source>.SUFFIX`` for several."""
    if len(sources) <= 1:
        return [output]
    root, ext = os.path.splitext(output)
    return [f"{root}.{src}{ext or '.jt'}" for src in sources]


def _read_past(sampler: Sampler, t_ns: int) -> bool:
    """Whether ``sampler`` has begun a read after CLOCK_MONOTONIC ``t_ns``."""
    last = sampler.last_read_ns()
    return last is not None and last > t_ns


def _updates_after(rec: Recording, channel: str, t_ns: int) -> int:
    """How many times ``channel`` changed value after ``t_ns`` (NaN samples ignored)."""
    i = int(np.searchsorted(rec.t_ns, t_ns, side="right"))
    v = np.asarray(rec[channel][max(0, i - 1) :])
    v = v[np.isfinite(v)]
    if v.size < 2:
        return 0
    return int(np.count_nonzero(v[1:] != v[:-1]))


def _warn_unavailable(reason: str) -> None:
    """Warn once per process that nothing is measured here."""
    global _warned_unavailable
    if _warned_unavailable:
        return
    _warned_unavailable = True
    warnings.warn(
        f"jouletrace measures nothing here: {reason}. Windows still run and their energies are "
        "NaN (Measurement.available is False); configure(unavailable='raise') makes this an error.",
        MeasurementUnavailableWarning,
        stacklevel=4,
    )
