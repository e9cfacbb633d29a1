"""The simulated GPU: a stand-in NVML library with a power schedule you choose.

A :class:`SimGPU` writes a configuration file and a private copy of the
simulated library (named ``libnvidia-ml.so.1``) into its own folder. Anything
that loads that library — jouletrace's NVML source through
``Sampler("sim", sim=...)``, or pynvml in another process started with
:meth:`SimGPU.env` — sees the same simulated GPUs.

Model (all times CLOCK_MONOTONIC ns, so every process agrees):

* true power ``p(t)`` = ``idle_w`` + the sum of the segments (start_ns, end_ns,
  watts) that cover ``t``;
* true energy ``E(t)`` = integral of ``p`` from ``load_ns`` (driver load) to ``t``;
* the sensor updates at ``phase_ns + k * update_period_s``; between updates it
  repeats the last value;
* energy counter (mJ, field 83/191 and ``nvmlDeviceGetTotalEnergyConsumption``)
  = ``offset_mj + floor(1000 * E(u))`` with ``u`` the last update (``counter="full"``),
  or, for a *part-time* counter (``counter="part_time"``, what A100/H100 may have:
  DESIGN.md §4), ``offset_mj + floor(1000 * A(u) * P / W)`` where ``A`` integrates
  ``p`` only over the last ``avg_window_s`` ``W`` of each update period ``P``: each
  period adds the mean power over its averaging window times the period;
* instant power (field 186, mW) = mean of ``p`` over ``[u - avg_window_s, u]``;
  ``nvmlDeviceGetPowerUsage`` the same over ``power_usage_window_s`` (1 s on Hopper);
* every device query busy-waits ``latency_s`` first; faults: a GPU lost from
  a given time on, a field or call reported as not supported;
* *live load* (:meth:`SimGPU.live_segment`): segments appended to a binary log
  that the library reads on growth at every query, for loads decided while a
  sampler runs (a callable "running" on the simulated GPU, a calibration's
  pulses). One append costs microseconds, not a rewrite of the configuration.

:meth:`SimGPU.true_energy` gives the exact energy of any interval, so tests
assert accuracy instead of assuming it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._optional import require
from ..errors import InvalidArgumentError, SourceUnavailableError

__all__ = ["SimGPU", "library_file", "COUNTER_KINDS", "FIELD_ENERGY", "FIELD_ENERGY_ALT", "FIELD_POWER_INSTANT"]

#: What a simulated energy counter integrates: every instant, or only each period's averaging window.
COUNTER_KINDS = ("full", "part_time")
_LIVE_RECORD = struct.Struct("<qqqd")  # gpu, start_ns, end_ns, watts: the library's 32-byte record

FIELD_ENERGY = 83
FIELD_ENERGY_ALT = 191
FIELD_POWER_INSTANT = 186

_LIB_NAME = "libjouletrace_simnvml.so"


def library_file() -> Path:
    """The simulated NVML library shipped with the package."""
    p = Path(__file__).resolve().parent.parent / "_lib" / _LIB_NAME  # jouletrace/_lib
    if not p.exists():
        raise SourceUnavailableError(
            f"the simulated GPU library is missing ({p}); reinstall jouletrace "
            "(`pip install .`) so that the native build installs it"
        )
    return p


@dataclass
class _Gpu:
    name: str
    uuid: str
    pci: str
    idle_w: float
    arch: int = 9
    counter: str = "full"
    power_limit_mw: int = 700_000
    lost_after_ns: int | None = None
    unsupported_fields: list[int] = field(default_factory=list)
    unsupported_calls: list[str] = field(default_factory=list)
    starts: list[np.ndarray] = field(default_factory=list)
    ends: list[np.ndarray] = field(default_factory=list)
    watts: list[np.ndarray] = field(default_factory=list)
    live: list[tuple[int, int, float]] = field(default_factory=list)
    _truth: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    _masked: np.ndarray | None = None
    _live: tuple[np.ndarray, ...] | None = None

    def segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.starts:
            z = np.zeros(0, dtype=np.int64)
            return z, z, np.zeros(0)
        return (np.concatenate(self.starts), np.concatenate(self.ends), np.concatenate(self.watts))

    def truth(self, load_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Breakpoints t, power level on [t[k], t[k+1]), energy E(t[k]) in J."""
        if self._truth is None:
            s, e, w = self.segments()
            s = np.maximum(s, load_ns)
            keep = e > s
            s, e, w = s[keep], e[keep], w[keep]
            times = np.concatenate([s, e])
            deltas = np.concatenate([w, -w])
            order = np.argsort(times, kind="stable")
            times, deltas = times[order], deltas[order]
            uniq, first = np.unique(times, return_index=True)
            step = np.add.reduceat(deltas, first) if len(times) else np.zeros(0)
            t = np.concatenate([[load_ns], uniq]).astype(np.int64)
            lv = self.idle_w + np.concatenate([[0.0], np.cumsum(step)])
            if len(uniq) and uniq[0] == load_ns:  # a change exactly at load time
                t, lv = t[1:], lv[1:]
            ej = np.concatenate([[0.0], np.cumsum(lv[:-1] * np.diff(t).astype(np.float64) * 1e-9)])
            self._truth = (t, lv, ej)
            self._masked = None
        return self._truth

    def masked(self, load_ns: int, mask: _Mask) -> np.ndarray:
        """A(t[k]): the energy inside the averaging windows up to each breakpoint (J)."""
        t, lv, _ = self.truth(load_ns)
        if self._masked is None:
            self._masked = np.concatenate([[0.0], np.cumsum(lv[:-1] * np.diff(mask.before(t)).astype(np.float64) * 1e-9)])
        return self._masked

    def live_arrays(self, mask: _Mask) -> tuple[np.ndarray, ...]:
        """Live segments as the library holds them: start, end, watts, energy and windowed energy before each."""
        if self._live is None:
            a = np.array([x[0] for x in self.live], dtype=np.int64)
            b = np.array([x[1] for x in self.live], dtype=np.int64)
            w = np.array([x[2] for x in self.live], dtype=np.float64)
            e = np.concatenate([[0.0], np.cumsum(w * (b - a).astype(np.float64) * 1e-9)])
            m = np.concatenate([[0.0], np.cumsum(w * (mask.before(b) - mask.before(a)).astype(np.float64) * 1e-9)])
            self._live = (a, b, w, e, m)
        return self._live


@dataclass(frozen=True)
class _Mask:
    """The averaging windows: the last ``w`` ns of each update period ``p`` (the library's Mask)."""

    p: int
    w: int
    phase: int

    def before(self, t: np.ndarray) -> np.ndarray:
        """Time (ns, int64) of [phase, t) inside a window; exact integers like the library."""
        t = np.asarray(t, dtype=np.int64)
        if self.p <= 0:
            return t
        d = t - self.phase
        k = np.floor_divide(d, self.p)
        r = d - k * self.p
        return k * self.w + np.clip(r - (self.p - self.w), 0, self.w)


class SimGPU:
    """A set of simulated GPUs behind a private copy of the simulated NVML library.

    Parameters are in SI units with the unit in the name. ``idle_w`` is one value
    or one per GPU. ``load_ns`` is the CLOCK_MONOTONIC time the counter starts
    from (0 = boot, like a driver loaded at boot).
    """

    def __init__(
        self,
        gpus: int = 1,
        *,
        update_period_s: float = 0.1,
        avg_window_s: float = 0.025,
        power_usage_window_s: float = 1.0,
        latency_s: float = 0.0,
        idle_w: float | Sequence[float] = 60.0,
        phase_ns: int = 0,
        load_ns: int = 0,
        offset_mj: int = 0,
        names: Sequence[str] | None = None,
        arch: int = 9,
        counter: str | Sequence[str] = "full",
        publish_counter: bool = True,
        directory: str | os.PathLike[str] | None = None,
    ) -> None:
        if gpus < 1 or gpus > 64:
            raise InvalidArgumentError(f"gpus must be 1..64, got {gpus}")
        if update_period_s < 0 or avg_window_s < 0 or latency_s < 0:
            raise InvalidArgumentError("periods, windows and latency must be >= 0")
        idle_a = np.asarray(idle_w, dtype=np.float64)
        idle = [float(idle_a)] * gpus if idle_a.ndim == 0 else [float(x) for x in idle_a]
        if len(idle) != gpus:
            raise InvalidArgumentError(f"idle_w has {len(idle)} values for {gpus} GPUs")
        self.update_period_ns = int(round(update_period_s * 1e9))
        self.avg_window_ns = int(round(avg_window_s * 1e9))
        self.power_usage_window_ns = int(round(power_usage_window_s * 1e9))
        self.latency_ns = int(round(latency_s * 1e9))
        self.phase_ns = int(phase_ns)
        self.load_ns = int(load_ns)
        self.offset_mj = int(offset_mj)
        kinds = [counter] * gpus if isinstance(counter, str) else list(counter)
        if len(kinds) != gpus or any(k not in COUNTER_KINDS for k in kinds):
            raise InvalidArgumentError(f"counter must be one of {COUNTER_KINDS} or one per GPU, got {counter!r}")
        #: Whether recordings of this simulation state the counter kind as a known fact
        #: (source "simulated"); False makes it an unknown sensor, as an H100 is until calibrated.
        self.publish_counter = bool(publish_counter)
        self._gpus = [
            _Gpu(
                counter=kinds[i],
                name=(names[i] if names else "NVIDIA H100 80GB HBM3 (simulated)"),
                uuid=f"GPU-5117e000-0000-4000-8000-{i:012x}",
                pci=f"00000000:{i + 1:02X}:00.0",
                idle_w=idle[i],
                arch=arch,
            )
            for i in range(gpus)
        ]
        self._owns_dir = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="jouletrace-sim-") if directory is None else directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # The private folder goes when this object does (or at exit), if we made it.
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.directory), True) if self._owns_dir else None
        self.library_path = self.directory / "libnvidia-ml.so.1"
        self.config_path = self.directory / "jouletrace-sim.conf"
        self.live_path = self.directory / "jouletrace-sim.conf.live"
        shutil.copyfile(library_file(), self.library_path)
        self.live_path.write_bytes(b"")
        self._live_fd: int | None = None
        self.write()

    # -- schedule -------------------------------------------------------------
    @property
    def gpu_count(self) -> int:
        return len(self._gpus)

    def _gpu(self, gpu: int) -> _Gpu:
        if not 0 <= gpu < len(self._gpus):
            raise InvalidArgumentError(f"simulated GPU {gpu} does not exist (0..{len(self._gpus) - 1})")
        return self._gpus[gpu]

    def add_segment(self, start_ns: int, end_ns: int, watts: float, gpu: int = 0) -> None:
        """Add ``watts`` on top of idle power over [start_ns, end_ns) (CLOCK_MONOTONIC)."""
        self.add_segments([start_ns], [end_ns], [watts], gpu=gpu)

    def add_segments(self, start_ns: npt.ArrayLike, end_ns: npt.ArrayLike, watts: npt.ArrayLike, gpu: int = 0) -> None:
        """Vectorised :meth:`add_segment`; segments may overlap (their watts add)."""
        s = np.asarray(start_ns, dtype=np.int64).ravel()
        e = np.asarray(end_ns, dtype=np.int64).ravel()
        w = np.broadcast_to(np.asarray(watts, dtype=np.float64), s.shape).copy()
        if s.shape != e.shape:
            raise InvalidArgumentError("start_ns and end_ns differ in length")
        g = self._gpu(gpu)
        g.starts.append(s)
        g.ends.append(e)
        g.watts.append(w)
        g._truth = None
        self.write()

    def live_segment(self, start_ns: int, end_ns: int, watts: float, gpu: int = 0) -> tuple[int, int]:
        """Add ``watts`` over [start_ns, end_ns) through the live log; returns the segment as kept.

        Live segments of a GPU follow each other in time: one that begins before
        the previous one ended is clipped to start there (the library does the
        same). A sampler already running sees it at its next read; append it
        before ``start_ns`` is past (a counter update read before the append
        would not count it). Costs one small write (microseconds).
        """
        g = self._gpu(gpu)
        a, b, w = int(start_ns), int(end_ns), float(watts)
        if not w >= 0:
            raise InvalidArgumentError("watts must be >= 0")
        if g.live:
            a = max(a, g.live[-1][1])
        if b <= a:
            return a, a
        if self._live_fd is None:
            self._live_fd = os.open(self.live_path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        os.write(self._live_fd, _LIVE_RECORD.pack(gpu, a, b, w))
        g.live.append((a, b, w))
        g._live = None
        return a, b

    def set_counter(self, gpu: int, counter: str) -> None:
        """Make GPU ``gpu``'s energy counter "full" or "part_time" (module docstring)."""
        if counter not in COUNTER_KINDS:
            raise InvalidArgumentError(f"counter must be one of {COUNTER_KINDS}, got {counter!r}")
        self._gpu(gpu).counter = counter
        self.write()

    def counter(self, gpu: int = 0) -> str:
        """The kind of GPU ``gpu``'s energy counter: "full" or "part_time"."""
        return self._gpu(gpu).counter

    def sensor_model(self, gpu: int = 0) -> dict[str, object]:
        """The sensor as configured, in the form recordings state it (:mod:`jouletrace.sampling.sensor_model`)."""
        return {"counter": self._gpu(gpu).counter, "source": "simulated",
                "update_period_ns": self.update_period_ns, "avg_window_ns": self.avg_window_ns}

    def lose(self, gpu: int, at_ns: int) -> None:
        """From CLOCK_MONOTONIC ``at_ns`` on, every query of ``gpu`` returns NVML_ERROR_GPU_IS_LOST."""
        self._gpu(gpu).lost_after_ns = int(at_ns)
        self.write()

    def unsupported_field(self, gpu: int, field_id: int) -> None:
        """Report ``field_id`` (e.g. 186, instant power) as NVML_ERROR_NOT_SUPPORTED."""
        self._gpu(gpu).unsupported_fields.append(int(field_id))
        self.write()

    def unsupported_call(self, gpu: int, what: str) -> None:
        """``what`` = "energy" (nvmlDeviceGetTotalEnergyConsumption) or "power" (nvmlDeviceGetPowerUsage)."""
        if what not in ("energy", "power"):
            raise InvalidArgumentError("what must be 'energy' or 'power'")
        self._gpu(gpu).unsupported_calls.append(what)
        self.write()

    # -- files ------------------------------------------------------------------
    def write(self) -> Path:
        """Write the configuration (atomically) and return the library path."""
        lines = [
            "# jouletrace simulated GPU configuration (written by jouletrace.sampling.sim)",
            f"gpu_count {len(self._gpus)}",
            f"update_period_ns {self.update_period_ns}",
            f"phase_ns {self.phase_ns}",
            f"avg_window_ns {self.avg_window_ns}",
            f"power_usage_window_ns {self.power_usage_window_ns}",
            f"latency_ns {self.latency_ns}",
            f"load_ns {self.load_ns}",
            f"offset_mj {self.offset_mj}",
        ]
        for i, g in enumerate(self._gpus):
            lines += [
                f"name {i} {g.name}",
                f"uuid {i} {g.uuid}",
                f"pci {i} {g.pci}",
                f"arch {i} {g.arch}",
                f"power_limit_mw {i} {g.power_limit_mw}",
                f"idle_w {i} {g.idle_w!r}",
                f"counter {i} {g.counter}",
            ]
            if g.lost_after_ns is not None:
                lines.append(f"lost_after_ns {i} {g.lost_after_ns}")
            lines += [f"unsupported_field {i} {f}" for f in g.unsupported_fields]
            lines += [f"unsupported_call {i} {c}" for c in g.unsupported_calls]
            s, e, w = g.segments()
            lines += [f"segment {i} {a} {b} {x!r}" for a, b, x in zip(s.tolist(), e.tolist(), w.tolist(), strict=False)]
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.config_path)
        return self.library_path

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a child process whose NVML (pynvml, ...) should be this simulation."""
        env = dict(os.environ if base is None else base)
        old = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = str(self.directory) + (os.pathsep + old if old else "")
        env["JOULETRACE_NVML_LIBRARY"] = str(self.library_path)
        return env

    def use_in_pynvml(self) -> None:
        """Point this process's pynvml (nvidia-ml-py) at this simulation.

        For another process, pass :meth:`env` to it instead. Call before
        ``pynvml.nvmlInit()``; pynvml's cached function pointers are reset so a
        previous library is forgotten.
        """
        pynvml: Any = require("pynvml", "SimGPU.use_in_pynvml()")
        pynvml.nvmlLib = ctypes.CDLL(str(self.library_path))
        cache = getattr(pynvml, "_nvmlGetFunctionPointer_cache", None)
        if isinstance(cache, dict):
            cache.clear()

    def close(self) -> None:
        """Remove the private folder (only if this object made it)."""
        if self._live_fd is not None:
            os.close(self._live_fd)
            self._live_fd = None
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> SimGPU:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ground truth -----------------------------------------------------------
    def _mask(self) -> _Mask:
        p = self.update_period_ns
        return _Mask(p, int(np.clip(self.avg_window_ns, 1, max(p, 1))), self.phase_ns)

    def _schedule_at(self, q: np.ndarray, gpu: int, masked: bool) -> np.ndarray:
        g = self._gpu(gpu)
        t, lv, ej = g.truth(self.load_ns)
        m = self._mask()
        k = np.searchsorted(t, q, side="right") - 1
        before = q <= t[0]
        k = np.clip(k, 0, len(t) - 1)
        if masked:
            out = g.masked(self.load_ns, m)[k] + lv[k] * (m.before(q) - m.before(t[k])).astype(np.float64) * 1e-9
        else:
            out = ej[k] + lv[k] * (q - t[k]).astype(np.float64) * 1e-9
        return np.where(before, 0.0, out)

    def _live_at(self, q: np.ndarray, gpu: int, masked: bool) -> np.ndarray:
        g = self._gpu(gpu)
        if not g.live:
            return np.zeros(q.shape)
        m = self._mask()
        a, b, w, e, mm = g.live_arrays(m)
        i = np.searchsorted(a, q, side="right") - 1
        none = i < 0
        i = np.clip(i, 0, a.size - 1)
        upto = np.minimum(q, b[i])
        if masked:
            out = mm[i] + w[i] * (m.before(upto) - m.before(a[i])).astype(np.float64) * 1e-9
        else:
            out = e[i] + w[i] * (upto - a[i]).astype(np.float64) * 1e-9
        return np.where(none, 0.0, out)

    def true_energy_at(self, t_ns: npt.ArrayLike, gpu: int = 0) -> np.ndarray:
        """Exact energy (J) since ``load_ns`` at CLOCK_MONOTONIC ``t_ns`` (vectorised; live load included)."""
        q = np.asarray(t_ns, dtype=np.int64)
        return self._schedule_at(q, gpu, False) + self._live_at(q, gpu, False)

    def true_energy(self, t0_ns: npt.ArrayLike, t1_ns: npt.ArrayLike, gpu: int = 0) -> np.ndarray:
        """Exact energy (J) over [t0_ns, t1_ns] (vectorised)."""
        return self.true_energy_at(t1_ns, gpu) - self.true_energy_at(t0_ns, gpu)

    def true_power(self, t_ns: npt.ArrayLike, gpu: int = 0) -> np.ndarray:
        """Exact power (W) at ``t_ns`` (vectorised; live load included)."""
        g = self._gpu(gpu)
        t, lv, _ = g.truth(self.load_ns)
        q = np.asarray(t_ns, dtype=np.int64)
        k = np.clip(np.searchsorted(t, q, side="right") - 1, 0, len(t) - 1)
        out = lv[k]
        if g.live:
            a, b, w, _, _ = g.live_arrays(self._mask())
            i = np.clip(np.searchsorted(a, q, side="right") - 1, 0, a.size - 1)
            out = out + np.where((q >= a[i]) & (q < b[i]), w[i], 0.0)
        return out

    def last_update_ns(self, t_ns: npt.ArrayLike) -> np.ndarray:
        """The sensor's last update at or before ``t_ns``."""
        q = np.asarray(t_ns, dtype=np.int64)
        if self.update_period_ns <= 0:
            return q
        return self.phase_ns + np.floor_divide(q - self.phase_ns, self.update_period_ns) * self.update_period_ns

    def sensor_energy_j(self, t_ns: npt.ArrayLike, gpu: int = 0) -> np.ndarray:
        """What the simulated counter reports at ``t_ns``, in J (the sensor model, for tests).

        Computed as the library computes it (the same operations in the same order),
        so the two agree exactly, for both counter kinds.
        """
        u = np.asarray(self.last_update_ns(t_ns), dtype=np.int64)
        if self._gpu(gpu).counter == "part_time" and self.update_period_ns > 0:
            m = self._mask()
            a = self._schedule_at(u, gpu, True) + self._live_at(u, gpu, True)
            e = a * float(m.p) / float(m.w)
        else:
            e = self._schedule_at(u, gpu, False) + self._live_at(u, gpu, False)
        return (self.offset_mj + np.floor(e * 1000.0)) / 1000.0

    def __repr__(self) -> str:
        return (
            f"SimGPU(gpus={len(self._gpus)}, update_period_s={self.update_period_ns / 1e9}, "
            f"avg_window_s={self.avg_window_ns / 1e9}, dir={str(self.directory)!r})"
        )
