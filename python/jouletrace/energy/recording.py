"""Recording: the samples a sampler hands over, with their metadata, and their energy.

The columns, channels and clock pairs are :class:`jouletrace.sampling.samples.Samples`
(read-only zero-copy views of the native columns; ``t_ns`` CLOCK_MONOTONIC ns);
a Recording adds what turns them into energy: where each counter update happened
(:meth:`Recording.updates`), windows, power timelines, the sensor model, saving.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._optional import require
from ..errors import InvalidArgumentError
from ..sampling.counters import counter_width
from ..sampling.samples import STATUS_NAMES, Samples
from ..sampling.sensor_model import SensorModel, models_for
from . import archive, windows
from .measurement import Measurement, WindowEnergies
from .updates import Updates

__all__ = ["Recording", "STATUS_NAMES"]


class Recording(Samples):
    """Samples of one source (times, channels, units, drops, metadata) and their energy."""

    # Per-channel caches (the arrays are read-only, so they never go stale); the constructor is
    # Samples'.
    @functools.cached_property
    def _updates(self) -> dict[str, Updates]:
        return {}

    @functools.cached_property
    def _quantum(self) -> dict[str, float]:
        return {}

    def update_period_ns(self, channel: str) -> float | None:
        """The sensor update period seen on ``channel`` (ns; median time between value changes).

        Computed on first use (O(n)) and cached in ``metadata["observed_update_period_ns"]``.
        """
        cache = self.metadata.setdefault("observed_update_period_ns", {})
        if channel not in cache:
            cache[channel] = windows.infer_update_period(self.t_ns, self[channel])
        return cache[channel]

    # -- sensors --------------------------------------------------------------------
    def characterize(self, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """What the recording says about each channel's sensor, stored in ``metadata["sensors"]``.

        Per channel: ``update_period_ns``, ``updates``, ``resolved`` (polled at
        least twice as fast as the sensor); counters add ``quantum_j`` and
        ``update_timing``; power channels add ``averaged`` (True when each reading
        is the mean over the whole sensor period, False for an instant reading
        that sees part of it, None when the load was too steady to tell). See
        :func:`jouletrace.energy.windows.characterize`.
        """
        sensors = self.metadata.get("sensors")
        if sensors is not None and not refresh and set(sensors) >= set(self.channels):
            return sensors
        sensors = {}
        periods = self.metadata.setdefault("observed_update_period_ns", {})
        for ch in self.channels:
            counter = None
            if not self._cumulative[ch] and ch.endswith("_w"):
                key = ch.rsplit(".", 1)[0]
                if f"{key}.energy_j" in self._values and self._cumulative.get(f"{key}.energy_j"):
                    counter = (self.t_ns, self[f"{key}.energy_j"])
            info = windows.characterize(self.t_ns, self[ch], self._cumulative[ch], counter=counter)
            if counter is not None and info.get("averaged") and self.sensor_model(key).counter != "full":
                # The readings match the counter's interval means; but a part-time counter sees
                # the same part of each period as a part-time power reading, so the match proves
                # nothing unless the counter is known to be full-period.
                info["averaged"] = None
                info["averaged_note"] = (f"readings match the counter, whose model is "
                                         f"{self.sensor_model(key).label()}: not evidence of a full-period average")
            if self._cumulative[ch]:
                info["update_timing"] = self.updates(ch).method
            sensors[ch] = info
            periods[ch] = info["update_period_ns"]
        self.metadata["sensors"] = sensors
        return sensors

    def updates(self, channel: str) -> Updates:
        """When each update of the counter ``channel`` happened, with its uncertainty (cached).

        The one placement that windows, per-launch and per-name kernel energies,
        :meth:`power` and exported counter tracks all use: NVML's timestamps where
        they are informative, else a fitted periodic grid, else the sample brackets
        (:mod:`jouletrace.energy.updates`). ``channel`` may be a device key
        (``"gpu0"``) with an energy counter.
        """
        if channel not in self._values and f"{channel}.energy_j" in self._values:
            channel = f"{channel}.energy_j"
        if not self.is_cumulative(channel):
            raise InvalidArgumentError(f"{channel!r} is not a cumulative counter; updates are placed for counters only")
        u = self._updates.get(channel)
        if u is None:
            u = windows.locate_updates(
                self.t_ns,
                self[channel],
                t_before_ns=self.t_before_ns,
                t_after_ns=self.t_after_ns,
                update_period_ns=self.update_period_ns(channel),
                update_times_ns=self._update_times(channel),
                seq=self.seq,
            )
            self._updates[channel] = u
        return u

    def _update_times(self, channel: str) -> np.ndarray | None:
        """The sensor's own timestamps of ``channel`` (NVML), as CLOCK_MONOTONIC ns, if recorded."""
        if not channel.endswith("_j"):
            return None
        ts_channel = channel[: -len("_j")] + "_ts_us"
        if ts_channel not in self._values or len(self.clock_pairs) == 0:
            return None
        us = np.asarray(self[ts_channel], dtype=np.float64)
        good = np.isfinite(us) & (us > 0)
        out = np.full(us.shape, np.nan)
        if good.any():
            epoch_ns = us[good].astype(np.int64) * 1000
            out[good] = self.to_monotonic_ns(epoch_ns).astype(np.float64)
        return out

    def _quantum_j(self, channel: str) -> float:
        q = self._quantum.get(channel)
        if q is None:
            q = self._quantum[channel] = windows.counter_quantum(self[channel])
        return q

    def sensor_model(self, key: str) -> SensorModel:
        """The energy-counter model of device ``key`` (``"gpu0"`` or a channel of it) that bounds assume.

        Stated when the recording was made (``metadata["sensor_model"]``: user
        override, simulated, measured by calibration, or published facts; see
        :mod:`jouletrace.sampling.sensor_model`); for a recording that states none, the
        published default for its device (an NVIDIA counter: ``"unknown"``), or,
        naming no architecture either, ``"full"`` with source ``"unstated"``.
        """
        key = key[: -len(".energy_j")] if key.endswith(".energy_j") else key
        stated = (self.metadata.get("sensor_model") or {}).get(key)
        if isinstance(stated, dict):
            return SensorModel.from_dict(stated)
        dev = self.metadata.get("device")
        dev = dev if isinstance(dev, dict) else {}
        src = str(self.metadata.get("source", ""))
        d = SensorModel.from_dict(models_for(dev, src, [key])[key])
        if d.source == "published" and d.counter == "unknown" and f"{key}.architecture" not in dev:
            return SensorModel("full", "unstated", detail="the recording states no sensor model and names no "
                               "architecture: bounded as a full-period counter")
        return d

    def set_sensor_model(self, key: str, counter: str, **known: Any) -> SensorModel:
        """Override device ``key``'s counter model (source ``"user"``): ``"full"``, ``"part_time"`` or ``"unknown"``.

        ``known`` may give ``update_period_ns``, ``avg_window_ns`` and ``detail``.
        Later energies use it; it is kept in the metadata (and in a saved file).
        """
        model = SensorModel(counter, "user", **known)
        self.metadata.setdefault("sensor_model", {})[key] = model.to_dict()
        return model

    # -- energy -----------------------------------------------------------------------
    def energy_sources(self, channels: Sequence[str] | None = None) -> dict[str, tuple[str, str]]:
        """Device key -> (channel, method) that energies are computed from.

        A device's cumulative ``*.energy_j`` counter ("counter") when it has one,
        else its ``*.power_w`` (or ``*.power_avg_w``) channel ("power"). ``channels``
        keeps only the listed keys (``"gpu0"``) or channels (``"gpu0.power_w"``
        forces the power method for that device).
        """
        src: dict[str, tuple[str, str]] = {}
        for ch in self.channels:
            if ch.endswith(".energy_j") and self._cumulative[ch]:
                src[ch[: -len(".energy_j")]] = (ch, "counter")
        for suffix in (".power_w", ".power_avg_w"):
            for ch in self.channels:
                if ch.endswith(suffix) and not self._cumulative[ch]:
                    src.setdefault(ch[: -len(suffix)], (ch, "power"))
        if channels is None:
            return src
        picked: dict[str, tuple[str, str]] = {}
        for c in [channels] if isinstance(channels, str) else channels:
            if c in src:
                picked[c] = src[c]
            elif c in self._values:
                key, _, _ = c.rpartition(".")
                if self._cumulative[c]:
                    picked[key] = (c, "counter")
                elif c.endswith("_w"):
                    picked[key] = (c, "power")
                else:
                    raise InvalidArgumentError(f"channel {c!r} is neither an energy counter nor a power channel")
            else:
                raise InvalidArgumentError(
                    f"no device or channel {c!r} in this recording; devices: {', '.join(src) or 'none'}"
                )
        return picked

    def energies(
        self, t0s: Any, t1s: Any, channels: Sequence[str] | None = None, *, edges: str = "auto"
    ) -> WindowEnergies:
        """Energy of N windows ``[t0s[i], t1s[i]]`` (CLOCK_MONOTONIC ns) per device, vectorised.

        Returns a :class:`~jouletrace.energy.measurement.WindowEnergies` with one array
        per device key: ``energy_j``, ``uncertainty_j`` (the bound) and ``flags``
        (uint8 bitmasks). Counters are interpolated between their located
        updates; power channels integrated by trapezoid. The method and its bound
        are described in :mod:`jouletrace.energy.windows`. Each counter's bound follows
        the device's :meth:`sensor_model` (a part-time or unknown counter adds the
        unseen part of every period); ``out.sensor_model[key]`` says which model was
        assumed. ``edges="auto"`` (the default) chooses the edge model from the
        windows' relation to the sensor's updates (:func:`jouletrace.energy.windows.choose_edges`);
        ``out.edges[key]`` and ``out.edges_reason[key]`` say which and why. ``edges="aligned"`` is for windows that open and close where the load changes
        (program steps, kernels): their bound allows a power step at each edge
        that the sensor never showed, up to the device's power limit
        (``gpuN.power_limit_w``). ``edges="independent"`` gives the tighter,
        statistical bound for windows placed without regard to the load (a fixed
        time grid, random windows); it can fail for windows synchronised with a
        load that repeats at about the sensor's period.
        """
        # The same checks as the numerics: NaN/inf edges refused, floats rounded, t1 >= t0.
        a, b, _ = windows._windows(np.atleast_1d(np.asarray(t0s)), np.atleast_1d(np.asarray(t1s)))
        out = WindowEnergies(t0_ns=a, t1_ns=b)
        for key, (ch, method) in self.energy_sources(channels).items():
            if method == "counter":
                model = self.sensor_model(key)
                upd = self.updates(ch)
                chosen, why = (windows.choose_edges(a, b, upd) if edges == "auto"
                               else (edges, "asked for by the caller"))
                out.sensor_model[key] = model.to_dict()
                out.edges[key] = chosen
                out.edges_reason[key] = why
                e, u, f = windows.counter_energy(
                    self.t_ns,
                    self[ch],
                    a,
                    b,
                    updates=upd,
                    quantum_j=self._quantum_j(ch),
                    edges=chosen,
                    max_power_w=self.power_limit_w(key),
                    counter=model.counter,
                    seen_fraction=model.seen_fraction,
                )
            else:
                # Whether the power sensor averages over its whole period (the bound needs it).
                sensors = self.characterize()
                averaged = sensors.get(ch, {}).get("averaged")
                e, u, f = windows.power_energy(
                    self.t_ns, self[ch], a, b, update_period_ns=self.update_period_ns(ch), averaged=averaged
                )
            if method == "counter" and self._may_wrap_unseen(ch):
                e, u, f = self._flag_pauses(a, b, e, u, f)
            out.energy_j[key] = e
            out.uncertainty_j[key] = u
            out.flags[key] = f
            out.method[key] = method
            out.channel[key] = ch
        return out

    #: A sampler pause longer than this may hide a wrap of a counter narrower than 64 bits
    #: (the smallest RAPL unit, 15.3 µJ, wraps its 32-bit MSR after 65 kJ: 65 s at 1 kW per package).
    PAUSE_WRAP_RISK_NS = 1_000_000_000

    def _may_wrap_unseen(self, channel: str) -> bool:
        """Whether the counter can wrap while nothing reads it (its source says how wide it is).

        Reads only ``_cumulative`` and ``metadata`` (a BlockRecording shares it).
        """
        return bool(self._cumulative.get(channel, False)) and counter_width(self.metadata, channel).wraps

    def _flag_pauses(self, a: np.ndarray, b: np.ndarray, e: np.ndarray, u: np.ndarray,
                     f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Windows across a long sampler pause: flagged, uncertainty infinite (energy is a lower bound)."""
        pauses = [(int(p0), int(p1)) for p0, p1 in self.metadata.get("pauses") or []
                  if int(p1) - int(p0) > self.PAUSE_WRAP_RISK_NS]
        if not pauses:
            return e, u, f
        u = np.array(u, dtype=np.float64, copy=True)
        f = np.array(f, copy=True)
        for p0, p1 in pauses:
            hit = (a < p1) & (b > p0)
            u[hit] = np.inf
            f[hit] |= windows.FLAG_SPANS_PAUSE
        return e, u, f

    def energy(
        self,
        t0_ns: int,
        t1_ns: int,
        channels: Sequence[str] | None = None,
        *,
        name: str | None = None,
        edges: str = "auto",
    ) -> Measurement:
        """Energy of the window ``[t0_ns, t1_ns]`` (CLOCK_MONOTONIC ns) as a Measurement.

        Per device key (``gpu0``, ``cpu0.package``, ...): joules, the bound,
        the flags and the method; see :meth:`energies`.
        """
        return self.energies([int(t0_ns)], [int(t1_ns)], channels, edges=edges).measurement(0, name=name)

    def power_limit_w(self, key: str) -> float | None:
        """The device's power limit (W) from the source metadata (NVML), if known."""
        dev = self.metadata.get("device")
        if not isinstance(dev, dict):
            return None
        try:
            limit = float(dev.get(f"{key}.power_limit_w", "nan"))
        except (TypeError, ValueError):
            return None
        return limit if np.isfinite(limit) and limit > 0 else None

    def power(self, channel: str) -> tuple[np.ndarray, np.ndarray]:
        """A power timeline ``(t_ns, watts)`` for a device key or channel.

        A power channel (``gpu0.power_w``) gives its valid samples. A counter
        (``gpu0.energy_j``) gives the mean power over each interval between two
        located counter updates, at the interval's middle. A device key
        (``gpu0``) uses its power channel, or derives power from its counter
        where it has none.
        """
        ch = channel
        if ch not in self._values:
            for cand in (f"{channel}.power_w", f"{channel}.power_avg_w", f"{channel}.energy_j"):
                if cand in self._values:
                    ch = cand
                    break
            else:
                self[channel]  # raises the KeyError that names the channels
        if self._cumulative[ch]:
            return windows.derive_power(self.t_ns, self[ch], updates=self.updates(ch))
        v = np.asarray(self[ch])
        ok = np.isfinite(v)
        return np.asarray(self.t_ns)[ok], v[ok]

    # -- persistence -----------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, compress: bool = False) -> str:
        """Write the recording to ``path`` (npz with JSON metadata; see :mod:`jouletrace.energy.storage`).

        The file appears complete or not at all (written to a temporary name,
        then renamed). Returns the path written.
        """
        return archive.save(self, path, compress=compress)

    def to_pandas(self) -> Any:
        """The samples as a pandas DataFrame (needs pandas).

        Columns: ``t_ns``, ``t_before_ns``, ``t_after_ns``, ``seq``, ``status``
        and one per channel; the index is the epoch time of each sample (UTC)
        when the recording holds clock pairs. ``df.attrs["metadata"]`` holds the
        metadata.
        """
        pd = require("pandas", "Recording.to_pandas()")
        cols: dict[str, Any] = {
            "t_ns": np.asarray(self.t_ns),
            "t_before_ns": np.asarray(self.t_before_ns),
            "t_after_ns": np.asarray(self.t_after_ns),
            "seq": np.asarray(self.seq),
            "status": np.asarray(self.status),
        }
        for ch in self.channels:
            cols[ch] = np.asarray(self[ch])
        df = pd.DataFrame(cols)
        if len(self.clock_pairs):
            df.index = pd.to_datetime(self.to_epoch_ns(self.t_ns), unit="ns", utc=True)
            df.index.name = "time"
        df.attrs["metadata"] = self.metadata
        return df
