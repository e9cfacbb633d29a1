"""Sync markers: recognisable ranges in a profiler trace, at CLOCK_MONOTONIC times we know.

A trace's times reach jouletrace's clock through the wall clock (clock pairs,
see :mod:`jouletrace.attribute`). Markers measure that path instead of
trusting it: during the recording, :meth:`SyncMarkers.mark` opens and closes a
range with a unique name through the annotation APIs that are importable,

* NVTX, for Nsight Systems: the ``nvtx`` package (``nvtx.push_range`` /
  ``pop_range``), else ``torch.cuda.nvtx.range_push`` / ``range_pop``;
* ``torch.profiler.record_function``, for the PyTorch profiler (it shows as a
  ``user_annotation`` event),

and reads CLOCK_MONOTONIC just before and just after each edge. The profiler
stamps each edge somewhere inside that bracket. :func:`jouletrace.attribute.align`
finds the ranges by name in the trace and solves the clock offset from them.

With no annotation API importable (``backend="none"``), markers only record
their times: enough for tests, which write the trace side themselves
(:meth:`MarkerLog.ranges`).

>>> m = SyncMarkers(backend="none")
>>> name = m.mark()
>>> name.startswith("jouletrace.sync:")
True
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidArgumentError
from .traces import RangeTable

__all__ = ["SyncMarkers", "MarkerLog", "BACKENDS", "available_backends"]

#: Annotation APIs a marker can go through.
BACKENDS = ("nvtx", "torch-nvtx", "record_function", "none")


@dataclass(frozen=True)
class MarkerLog:
    """The markers emitted so far: names and CLOCK_MONOTONIC times of both edges.

    ``start_ns``/``end_ns`` are the middles of the brackets around each edge,
    ``start_half_ns``/``end_half_ns`` their half-widths (int64 arrays).
    """

    names: list[str]
    start_ns: np.ndarray
    start_half_ns: np.ndarray
    end_ns: np.ndarray
    end_half_ns: np.ndarray
    backends: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)

    def ranges(self, to_trace: Callable[[np.ndarray], np.ndarray] | None = None, device: int = -1) -> Any:
        """The ranges a trace would hold for these markers, as a :class:`~jouletrace.kernels.traces.RangeTable`.

        ``to_trace`` maps CLOCK_MONOTONIC ns to the trace's clock (e.g. a
        recording's ``to_epoch_ns``); default: keep monotonic times. For tests
        and for traces written by jouletrace itself.
        """
        f = to_trace or (lambda x: x)
        return RangeTable.from_names(self.names, f(self.start_ns), f(self.end_ns),
                                     np.full(len(self.names), device, dtype=np.int32))


def _try_nvtx() -> tuple[Callable[[str], Any], Callable[[Any], None]] | None:
    try:
        nvtx = importlib.import_module("nvtx")
    except Exception:  # noqa: BLE001  (absent, or broken on import)
        return None
    push, pop = getattr(nvtx, "push_range", None), getattr(nvtx, "pop_range", None)
    if push is None or pop is None:
        return None
    return (lambda name: push(message=name)), (lambda _h: pop())


def _try_torch_nvtx() -> tuple[Callable[[str], Any], Callable[[Any], None]] | None:
    try:
        torch = importlib.import_module("torch")
        tn = torch.cuda.nvtx
        push, pop = tn.range_push, tn.range_pop
        # CPU-only builds have the functions but raise when called.
        push("jouletrace.probe")
        pop()
    except Exception:  # noqa: BLE001
        return None
    return (lambda name: push(name)), (lambda _h: pop())


def _try_record_function() -> tuple[Callable[[str], Any], Callable[[Any], None]] | None:
    try:
        torch = importlib.import_module("torch")
        rf = torch.profiler.record_function
    except Exception:  # noqa: BLE001
        return None

    def enter(name: str) -> Any:
        ctx = rf(name)
        ctx.__enter__()
        return ctx

    def leave(ctx: Any) -> None:
        ctx.__exit__(None, None, None)

    return enter, leave


_PROBES: dict[str, Callable[[], Any]] = {
    "nvtx": _try_nvtx,
    "torch-nvtx": _try_torch_nvtx,
    "record_function": _try_record_function,
}


def available_backends() -> list[str]:
    """The annotation APIs importable and working in this process (may be empty)."""
    return [name for name, probe in _PROBES.items() if probe() is not None]


class SyncMarkers:
    """Emits sync markers and records when they happened on CLOCK_MONOTONIC.

    ``backend``: "auto" (NVTX through ``nvtx`` or else ``torch.cuda.nvtx``, plus
    ``record_function``, whichever import), one name of :data:`BACKENDS`, or a
    list of them; "none" only records times. An explicitly named backend that
    cannot be used raises :class:`InvalidArgumentError`. ``prefix`` and a
    random ``session`` make the names unique: ``<prefix>:<session>:<n>``.
    ``hold_s`` is how long each range stays open (so that viewers show it).
    """

    def __init__(
        self,
        backend: str | list[str] = "auto",
        *,
        prefix: str = "jouletrace.sync",
        session: str | None = None,
        hold_s: float = 0.0005,
    ) -> None:
        if ":" in prefix:
            raise InvalidArgumentError("prefix must not contain ':'")
        self.prefix = prefix
        self.session = session or os.urandom(4).hex()
        self.hold_ns = int(hold_s * 1e9)
        self._emitters: list[tuple[str, Callable[[str], Any], Callable[[Any], None]]] = []
        wanted = [backend] if isinstance(backend, str) else list(backend)
        if wanted == ["auto"]:
            nv = _try_nvtx()
            if nv is not None:
                self._emitters.append(("nvtx", *nv))
            else:
                tn = _try_torch_nvtx()
                if tn is not None:
                    self._emitters.append(("torch-nvtx", *tn))
            rfn = _try_record_function()
            if rfn is not None:
                self._emitters.append(("record_function", *rfn))
        else:
            for b in wanted:
                if b == "none":
                    continue
                if b not in _PROBES:
                    raise InvalidArgumentError(f"unknown marker backend {b!r}; known: {', '.join(BACKENDS)}")
                em = _PROBES[b]()
                if em is None:
                    raise InvalidArgumentError(
                        f"marker backend {b!r} is not usable here "
                        + ("(pip install nvtx)" if b == "nvtx" else "(needs PyTorch"
                           + (" with CUDA)" if b == "torch-nvtx" else ")"))
                    )
                self._emitters.append((b, *em))
        self._lock = threading.Lock()
        self._names: list[str] = []
        self._edges: list[tuple[int, int, int, int]] = []

    @property
    def backends(self) -> tuple[str, ...]:
        """The annotation APIs in use (empty: times are only recorded)."""
        return tuple(b for b, _, _ in self._emitters)

    def mark(self, label: str | None = None) -> str:
        """Emit one marker now; returns its name. ``label`` is appended to the name."""
        with self._lock:
            name = f"{self.prefix}:{self.session}:{len(self._names)}"
            if label:
                name += f":{label}"
            handles = []
            t0 = time.monotonic_ns()
            for _, open_, _close in self._emitters:
                handles.append(open_(name))
            t1 = time.monotonic_ns()
            if self.hold_ns > 0:
                deadline = t1 + self.hold_ns
                while time.monotonic_ns() < deadline:
                    pass
            t2 = time.monotonic_ns()
            for (_, _open, close), h in zip(reversed(self._emitters), reversed(handles), strict=True):
                close(h)
            t3 = time.monotonic_ns()
            self._names.append(name)
            self._edges.append((t0, t1, t2, t3))
            return name

    __call__ = mark

    def log(self) -> MarkerLog:
        """The markers so far (a snapshot)."""
        with self._lock:
            e = np.array(self._edges, dtype=np.int64).reshape(-1, 4)
            names = list(self._names)
        return MarkerLog(
            names=names,
            start_ns=e[:, 0] + (e[:, 1] - e[:, 0]) // 2,
            start_half_ns=(e[:, 1] - e[:, 0] + 1) // 2,
            end_ns=e[:, 2] + (e[:, 3] - e[:, 2]) // 2,
            end_half_ns=(e[:, 3] - e[:, 2] + 1) // 2,
            backends=self.backends,
        )

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"<SyncMarkers {self.prefix}:{self.session} backends={list(self.backends)} marks={len(self)}>"
