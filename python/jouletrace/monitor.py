"""Monitor: the usable samplers together, and named energy windows over them.

>>> import jouletrace
>>> from jouletrace.sim import SimGPU
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
:class:`~jouletrace.measurement.Measurement`, ``Measurement.resolve()``, or
:meth:`Monitor.measurements` for all of them at once, vectorised). A counter
updates only every sensor period (NVML: up to 100 ms), so the update that
brackets a window's end may not have happened yet when the window ends. On
first use the Monitor therefore waits until every counter has been seen to
update ``wait_updates`` times (default 3: the bound uses the two intervals
after the end) past the window's end — at most about that many sensor periods
after the end, never longer — and then integrates. ``resolve(wait=False)``
computes at once instead, extrapolating past the last update (flag
``extrapolated``, with a bound to match).

``sync`` (e.g. ``torch.cuda.synchronize``), given to the Monitor or to one
window, is called at both edges before the clock is read, so that the window
covers the GPU work queued inside it.

Ended windows are kept (``measurements()``) until ``clear()``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from ._sampler import Sampler
from .errors import InvalidArgumentError, SourceUnavailableError
from .measurement import Measurement, WindowEnergies
from .recording import Recording

__all__ = ["Monitor"]

# How long to assume a sensor period is before one has been seen (NVML's slowest).
_DEFAULT_PERIOD_S = 0.1


class Monitor:
    """Runs the usable samplers together and measures named windows over them.

    * ``gpus``: ``"all"`` (default), a list of NVML indices, or None for no GPU.
    * ``cpu``: sample RAPL (package, cores, DRAM, psys) when it is usable here.
    * ``rate_hz``: sampling rate of every sampler.
    * ``sim``: a :class:`jouletrace.sim.SimGPU` to use instead of NVML.
    * ``sources``: explicit source names (``["nvml", "rapl-msr"]``) instead of
      ``gpus``/``cpu``; each must be usable.
    * ``source_options``: options for one source only, by name (e.g.
      ``{"rapl-msr": {"dev_cpu_root": ...}}``), on top of the shared ones.
    * ``sync``: a callable run at both edges of every window (see the module docstring).
    * ``wait_updates``: counter updates to wait for past a window's end on first use.
    * ``edges``: ``"aligned"`` (default): windows open and close where the program
      changes what it does, so their bound allows a power step at each edge that the
      sensor never showed (:mod:`jouletrace.integrate`, "Aligned edges");
      ``"independent"`` for windows placed without regard to the load.
    * further keyword arguments go to every :class:`jouletrace.Sampler`.

    Sources asked for but not usable here (no GPU, RAPL not readable) are
    skipped and listed in ``skipped`` with the reason; if none is usable,
    :class:`SourceUnavailableError` says why for each. Use as a context manager
    or ``start()`` / ``stop()``; ``begin_window`` starts it if needed.
    """

    def __init__(
        self,
        gpus: str | int | Sequence[int] | None = "all",
        cpu: bool = True,
        rate_hz: float = 1000.0,
        *,
        sim: Any = None,
        sources: Sequence[str] | None = None,
        sync: Callable[[], Any] | None = None,
        wait_updates: int = 3,
        edges: str = "aligned",
        source_options: dict[str, dict[str, Any]] | None = None,
        **sampler_options: Any,
    ) -> None:
        self.rate_hz = float(rate_hz)
        self.sync = sync
        self.wait_updates = max(0, int(wait_updates))
        if edges not in ("aligned", "independent"):
            raise InvalidArgumentError(f"edges must be 'aligned' or 'independent', got {edges!r}")
        self.edges = edges
        #: Source name -> why it was not used.
        self.skipped: dict[str, str] = {}
        self._source_options = {k: dict(v) for k, v in (source_options or {}).items()}
        self._samplers: list[Sampler] = self._make_samplers(gpus, cpu, sim, sources, sampler_options)
        self._lock = threading.Lock()  # guards the window lists; held for microseconds
        self._resolve_lock = threading.RLock()  # one batch computation (and recording read) at a time
        self._open: dict[tuple[int, str], list[Measurement]] = {}
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
        from .sources import sources as probe

        usable = {s.name: s for s in probe()}
        made: list[Sampler] = []
        if sources is not None:
            for name in sources:
                own = {**opts, **self._source_options.get(name, {})}
                if name == "sim":
                    made.append(Sampler("sim", rate_hz=self.rate_hz, sim=sim, **own))
                    continue
                info = usable.get(name)
                if name not in self._source_options and info is not None and not info.usable:
                    fix = f" (fix: {info.fix})" if info.fix else ""
                    raise SourceUnavailableError(f"source {name!r} is not usable here: {info.reason}{fix}")
                # With options of its own (other roots), the source is tried as given: its
                # constructor says precisely what is wrong if it cannot be used.
                made.append(Sampler(name, rate_hz=self.rate_hz, **own))
            return made
        gpu_list: list[int] | None
        if gpus is None or gpus is False or (isinstance(gpus, (list, tuple)) and len(gpus) == 0):
            gpu_list, want_gpu = None, False
        elif isinstance(gpus, str):
            if gpus != "all":
                raise InvalidArgumentError(f"gpus must be 'all', a list of indices or None, got {gpus!r}")
            gpu_list, want_gpu = None, True
        elif gpus is True:
            gpu_list, want_gpu = None, True
        elif isinstance(gpus, int):
            gpu_list, want_gpu = [gpus], True
        else:
            gpu_list, want_gpu = [int(g) for g in gpus], True
        if want_gpu:
            gpu_opts = dict(opts)
            if gpu_list is not None:
                gpu_opts["gpus"] = gpu_list
            if sim is not None:
                made.append(Sampler("sim", rate_hz=self.rate_hz, sim=sim, **gpu_opts))
            elif usable.get("nvml") is not None and usable["nvml"].usable:
                made.append(Sampler("nvml", rate_hz=self.rate_hz, **gpu_opts))
            else:
                info = usable.get("nvml")
                self.skipped["nvml"] = info.reason if info is not None else "unknown source"
        if cpu:
            info = usable.get("rapl")
            if info is not None and info.usable:
                made.append(Sampler("rapl", rate_hz=self.rate_hz, **opts))
            else:
                self.skipped["rapl"] = info.reason if info is not None else "unknown source"
        if not made:
            why = "; ".join(f"{k}: {v}" for k, v in self.skipped.items()) or "none was asked for"
            raise SourceUnavailableError(
                f"no usable energy source for this Monitor ({why}); `jouletrace info` says how to fix each"
            )
        return made

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
    def begin_window(self, name: str, sync: Callable[[], Any] | None = None) -> Measurement:
        """Open window ``name`` now; returns its (open) Measurement.

        ``sync`` (default: the Monitor's) runs before the clock is read.
        """
        if not self._started:
            self.start()
        fn = sync if sync is not None else self.sync
        if fn is not None:
            fn()
        m = Measurement(name, time.monotonic_ns())
        key = (threading.get_ident(), name)
        with self._lock:
            stack = self._open.get(key)
            if stack is None:
                self._open[key] = [m]
            else:
                stack.append(m)
        return m

    def end_window(self, name: str, sync: Callable[[], Any] | None = None) -> Measurement:
        """Close the innermost open window ``name`` of this thread and return its Measurement.

        (A window opened by another thread can be closed here if it is the only
        open one of that name.) The energies are computed on first use.
        """
        fn = sync if sync is not None else self.sync
        if fn is not None:
            fn()
        t1 = time.monotonic_ns()
        with self._lock:
            key = (threading.get_ident(), name)
            stack = self._open.get(key)
            if not stack:
                others = [k for k, v in self._open.items() if k[1] == name and v]
                if len(others) != 1 or len(self._open[others[0]]) != 1:
                    open_names = sorted({k[1] for k, v in self._open.items() if v})
                    raise InvalidArgumentError(
                        f"no open window {name!r} to end in this thread; open windows: {open_names or 'none'}"
                    )
                key = others[0]
                stack = self._open[key]
            m = stack.pop()
            if not stack:
                del self._open[key]
            self._close(m, t1)
        return m

    def _close(self, m: Measurement, t1: int) -> None:
        # Under self._lock.
        m.t1_ns = t1
        m._resolver = self._resolve
        self._finished.append(m)
        self._pending.append(m)

    @contextlib.contextmanager
    def window(self, name: str, sync: Callable[[], Any] | None = None) -> Iterator[Measurement]:
        """``with monitor.window("step") as m:`` — ``m`` holds the result after the block."""
        m = self.begin_window(name, sync)
        try:
            yield m
        finally:
            fn = sync if sync is not None else self.sync
            if fn is not None:
                fn()
            t1 = time.monotonic_ns()
            with self._lock:
                if m.t1_ns is None:  # else already ended (end_window from another thread)
                    key = (threading.get_ident(), name)
                    stack = self._open.get(key, [])
                    for i in range(len(stack) - 1, -1, -1):
                        if stack[i] is m:
                            del stack[i]
                            break
                    if not stack:
                        self._open.pop(key, None)
                    self._close(m, t1)

    def open_windows(self) -> list[str]:
        """Names of the windows open now (any thread)."""
        with self._lock:
            return [m.name for stack in self._open.values() for m in stack]  # type: ignore[misc]

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
        with self._resolve_lock:
            if wait and b.size:
                self._wait_for_updates(int(b.max()))
            out = WindowEnergies(t0_ns=a, t1_ns=b)
            for s in self._samplers:
                out.merge(s.recording().energies(a, b, edges=self.edges))
        return out

    # -- computation ------------------------------------------------------------------------
    def _resolve(self, wait: bool) -> None:
        with self._resolve_lock:
            with self._lock:
                batch = [m for m in self._pending if not m.resolved]
            if not batch:
                return
            t0s = np.fromiter((m.t0_ns for m in batch), dtype=np.int64, count=len(batch))
            t1s = np.fromiter((m.t1_ns for m in batch), dtype=np.int64, count=len(batch))  # type: ignore[misc]
            we = self.energies(t0s, t1s, wait=wait)
            for i, m in enumerate(batch):
                r = we.measurement(i)
                m._fill(r._energy or {}, r._unc, r._flags, r._method)
            with self._lock:
                done = set(map(id, batch))
                self._pending = [m for m in self._pending if id(m) not in done]

    def _wait_for_updates(self, t1_ns: int) -> None:
        """Wait until every running counter has updated ``wait_updates`` times past ``t1_ns``."""
        if self.wait_updates <= 0:
            return
        deadline: float | None = None
        while True:
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
                    if self._period_seen(si, ch, rec) is None:
                        # Never seen to update (an idle RAPL sub-domain, say): waiting for it
                        # would cost the whole deadline on every window for nothing.
                        unseen.append((rec, ch))
                        continue
                    period = self._period(si, ch, rec)
                    longest = max(longest, period)
                    if _updates_after(rec, ch, t1_ns) < self.wait_updates:
                        missing = True
            if longest == 0.0 and unseen:  # nothing seen to update yet: wait on all, assumed period
                longest = _DEFAULT_PERIOD_S
                missing = any(_updates_after(rec, ch, t1_ns) < self.wait_updates for rec, ch in unseen)
            if not missing:
                return
            now = time.monotonic()
            if deadline is None:
                # From the window's end: wait_updates periods, a margin for the polling.
                spent = max(0.0, (time.monotonic_ns() - t1_ns) * 1e-9)
                deadline = now + (self.wait_updates + 1) * longest + 0.05 - spent
            if now >= deadline:
                return
            time.sleep(min(max(longest / 20, 0.0005), 0.01))

    def _period(self, si: int, ch: str, rec: Recording) -> float:
        """The sensor period (s) of a channel: seen once enough updates exist, else assumed."""
        seen = self._period_seen(si, ch, rec)
        return _DEFAULT_PERIOD_S if seen is None else seen

    def _period_seen(self, si: int, ch: str, rec: Recording) -> float | None:
        """The sensor period (s) of a channel as seen so far, or None."""
        key = (si, ch)
        p = self._periods.get(key)
        if p is not None:
            return p
        n = len(rec)
        tail = slice(max(0, n - 20000), n)
        from .integrate import infer_update_period

        seen = infer_update_period(rec.t_ns[tail], rec[ch][tail])
        if seen is None:
            return None
        if n >= 64:
            self._periods[key] = seen * 1e-9
        return seen * 1e-9

    def __repr__(self) -> str:
        srcs = ", ".join(s.source for s in self._samplers)
        return f"<Monitor [{srcs}] {self.rate_hz:g} Hz windows={len(self._finished)} skipped={list(self.skipped)}>"


def _updates_after(rec: Recording, channel: str, t_ns: int) -> int:
    """How many times ``channel`` changed value after ``t_ns`` (NaN samples ignored)."""
    i = int(np.searchsorted(rec.t_ns, t_ns, side="right"))
    v = np.asarray(rec[channel][max(0, i - 1) :])
    v = v[np.isfinite(v)]
    if v.size < 2:
        return 0
    return int(np.count_nonzero(v[1:] != v[:-1]))
