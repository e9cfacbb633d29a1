"""Measurement (one window) and WindowEnergies (many windows at once).

Keys are devices and domains: ``gpu0``, ``cpu0.package``, ``cpu0.dram``,
``psys`` — a channel name without its ``.energy_j`` / ``.power_w`` suffix.
Energies and uncertainties are joules. ``uncertainty_j`` is the bound of
:mod:`jouletrace.energy.windows` (a coverage bound: the error is within it in at
least 95 % of windows on the simulated GPU).

The total adds the devices that do not contain one another: every key but
RAPL's sub-domains of a package (``.core``, ``.uncore``) and the whole-platform
``psys``. Its uncertainty is the sum of theirs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._optional import require
from ..errors import InvalidArgumentError
from .windows import FLAG_NAMES, flag_names

__all__ = ["Measurement", "PerUnit", "WindowEnergies", "check_work", "counts_in_total"]

#: Keys whose energy is already inside another key's (left out of totals).
_SUBDOMAINS = (".core", ".uncore", ".pp0", ".pp1")


def counts_in_total(key: str) -> bool:
    """Whether a device key's energy adds to the total (not a sub-domain, not psys)."""
    return not (key.endswith(_SUBDOMAINS) or key == "psys" or key.startswith("psys"))


@dataclass
class WindowEnergies:
    """Energies of N windows, one array per device key (see the module docstring).

    ``flags[key]`` is a uint8 bitmask per window (:data:`jouletrace.energy.windows.FLAG_NAMES`).
    """

    t0_ns: np.ndarray
    t1_ns: np.ndarray
    energy_j: dict[str, np.ndarray] = field(default_factory=dict)
    uncertainty_j: dict[str, np.ndarray] = field(default_factory=dict)
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    #: "counter" (cumulative energy channel) or "power" (trapezoid over a power channel).
    method: dict[str, str] = field(default_factory=dict)
    #: The channel each key was computed from.
    channel: dict[str, str] = field(default_factory=dict)
    #: The counter model each key's bound assumed (:class:`jouletrace.sampling.sensor_model.SensorModel` as a dict).
    sensor_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The edge model each counter's bound used ("aligned" or "independent"), and why.
    edges: dict[str, str] = field(default_factory=dict)
    edges_reason: dict[str, str] = field(default_factory=dict)
    #: GPU UUID per key (GPUs only), as NVML reports it.
    uuid: dict[str, str] = field(default_factory=dict)
    #: Window names, when the windows have them (``Monitor`` windows).
    names: list[str | None] | None = None

    def __len__(self) -> int:
        return int(self.t0_ns.shape[0])

    @property
    def keys(self) -> list[str]:
        return list(self.energy_j)

    @property
    def duration_s(self) -> np.ndarray:
        return (self.t1_ns - self.t0_ns).astype(np.float64) * 1e-9

    @property
    def total_j(self) -> np.ndarray:
        """Sum over the keys that count in the total (NaN where one of them is NaN)."""
        out = np.zeros(len(self))
        for k, e in self.energy_j.items():
            if counts_in_total(k):
                out = out + e
        return out

    @property
    def total_uncertainty_j(self) -> np.ndarray:
        out = np.zeros(len(self))
        for k, u in self.uncertainty_j.items():
            if counts_in_total(k):
                out = out + u
        return out

    @property
    def any_flags(self) -> np.ndarray:
        """The union of every key's flags, per window."""
        out = np.zeros(len(self), dtype=np.uint8)
        for f in self.flags.values():
            out |= f
        return out

    def measurement(self, i: int, name: str | None = None) -> Measurement:
        """Window ``i`` as a :class:`Measurement`."""
        if name is None and self.names is not None:
            name = self.names[i]
        m = Measurement(name=name, t0_ns=int(self.t0_ns[i]), t1_ns=int(self.t1_ns[i]))
        m.uuid = dict(self.uuid)
        m._fill(
            {k: float(v[i]) for k, v in self.energy_j.items()},
            {k: float(v[i]) for k, v in self.uncertainty_j.items()},
            {k: flag_names(int(v[i])) for k, v in self.flags.items()},
            dict(self.method),
        )
        m.sensor_model = dict(self.sensor_model)
        m.edges = dict(self.edges)
        return m

    def __getitem__(self, i: int) -> Measurement:
        return self.measurement(i)

    def __iter__(self) -> Iterator[Measurement]:
        return (self.measurement(i) for i in range(len(self)))

    def renamed(self, keys: dict[str, str]) -> WindowEnergies:
        """The same energies with device keys renamed (``{"gpu2": "gpu0"}``); others kept."""
        def ren(d: dict[str, Any]) -> dict[str, Any]:
            return {keys.get(k, k): v for k, v in d.items()}

        return WindowEnergies(
            t0_ns=self.t0_ns, t1_ns=self.t1_ns, energy_j=ren(self.energy_j), uncertainty_j=ren(self.uncertainty_j),
            flags=ren(self.flags), method=ren(self.method), channel=ren(self.channel), uuid=ren(self.uuid),
            names=self.names, sensor_model=ren(self.sensor_model), edges=ren(self.edges),
            edges_reason=ren(self.edges_reason),
        )

    def to_pandas(self) -> Any:
        """One row per window: ``name`` (if known), ``t0_ns``, ``t1_ns``, ``duration_s``,
        ``total_j``, ``total_uncertainty_j``, then ``<key>.energy_j``, ``<key>.uncertainty_j``
        and ``<key>.flags`` (flag names joined by ``|``) per device key. Needs pandas."""
        pd = require("pandas", "WindowEnergies.to_pandas()")
        cols: dict[str, Any] = {}
        if self.names is not None:
            cols["name"] = list(self.names)
        cols.update(t0_ns=self.t0_ns, t1_ns=self.t1_ns, duration_s=self.duration_s,
                    total_j=self.total_j, total_uncertainty_j=self.total_uncertainty_j)
        for k in self.energy_j:
            cols[f"{k}.energy_j"] = self.energy_j[k]
            cols[f"{k}.uncertainty_j"] = self.uncertainty_j[k]
            cols[f"{k}.flags"] = ["|".join(flag_names(int(f))) for f in self.flags[k]]
        return pd.DataFrame(cols)

    def merge(self, other: WindowEnergies) -> None:
        """Add another source's keys for the same windows (a clashing key gets a suffix)."""
        for k in other.energy_j:
            key = k
            n = 2
            while key in self.energy_j:
                key = f"{k}#{n}"
                n += 1
            self.energy_j[key] = other.energy_j[k]
            self.uncertainty_j[key] = other.uncertainty_j[k]
            self.flags[key] = other.flags[k]
            self.method[key] = other.method[k]
            self.channel[key] = other.channel.get(k, k)
            if k in other.sensor_model:
                self.sensor_model[key] = other.sensor_model[k]
            if k in other.edges:
                self.edges[key] = other.edges[k]
                self.edges_reason[key] = other.edges_reason.get(k, "")
            if k in other.uuid:
                self.uuid[key] = other.uuid[k]


_EMPTY: dict[Any, Any] = {}  # shared, never mutated: a Measurement replaces it, never writes into it


def check_work(units: Mapping[str, Any], window: str | None = None) -> dict[str, float]:
    """Units of work as ``{unit: float}``: each amount a finite number >= 0 (not a bool), each
    unit a non-empty string; otherwise :class:`InvalidArgumentError` naming the window."""
    if not isinstance(units, Mapping):
        raise InvalidArgumentError(
            f"window {window!r}: work must map a unit to an amount, e.g. {{\"tokens\": 512}}; "
            f"got {type(units).__name__}")
    out: dict[str, float] = {}
    for k, v in units.items():
        if not isinstance(k, str) or not k:
            raise InvalidArgumentError(f"window {window!r}: a unit of work is a non-empty string, got {k!r}")
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise InvalidArgumentError(
                f"window {window!r}: work {k!r} must be a number >= 0, got {v!r} ({type(v).__name__})")
        f = float(v)
        if not (f >= 0.0 and math.isfinite(f)):
            raise InvalidArgumentError(f"window {window!r}: work {k!r} must be a finite number >= 0, got {v!r}")
        out[k] = f
    return out


@dataclass(frozen=True)
class PerUnit:
    """Energy per unit of work, direct, with its bound (J per unit)."""

    unit: str
    work: float
    energy_j: float
    bound_j: float

    def __str__(self) -> str:
        return f"{_pm(self.energy_j, self.bound_j)} J per {self.unit.rstrip('s') or self.unit}"


class Measurement:
    """The energy of one window: per device key, total, uncertainty and flags.

    Attributes: ``name``, ``t0_ns``, ``t1_ns`` (CLOCK_MONOTONIC ns),
    ``duration_s``, ``energy_j`` and ``uncertainty_j`` (dicts per key, J),
    ``total_j``, ``total_uncertainty_j``, ``flags`` (the union of every key's
    flag names), ``channel_flags`` (per key) and ``method`` (per key:
    "counter" or "power").

    A Measurement from :class:`jouletrace.Monitor` is computed on first use of
    an energy attribute (so that ``end_window`` costs microseconds); that first
    use may block for up to about three sensor update periods after the window's
    end (~0.3 s on NVML) while the sensor's next updates arrive (see
    :meth:`resolve`); ``ready`` says whether it would.

    Also: ``uuid`` (GPU UUID per key), ``work`` (units of work done, e.g.
    tokens) and :meth:`energy_per`, ``provisional`` (computed without waiting:
    may still change), ``available`` / ``unavailable_reason`` (nothing could be
    measured here: energies NaN, bounds infinite).
    """

    # Slots, and the empty mappings shared until a result fills them: a Monitor makes one of
    # these per window on the caller's thread, so it costs one small allocation, no more.
    __slots__ = ("name", "t0_ns", "t1_ns", "_energy", "_unc", "_flags", "_method", "_resolver",
                 "_sensor_model", "_edges", "_ready", "_work", "_uuid", "provisional",
                 "wait_capped", "unavailable_reason", "_stack", "__weakref__")

    def __init__(self, name: str | None = None, t0_ns: int = 0, t1_ns: int | None = None) -> None:
        self.name = name
        self.t0_ns = t0_ns if type(t0_ns) is int else int(t0_ns)
        self.t1_ns = None if t1_ns is None else int(t1_ns)
        self._energy: dict[str, float] | None = None
        self._unc: dict[str, float] = _EMPTY
        self._flags: dict[str, tuple[str, ...]] = _EMPTY
        self._method: dict[str, str] = _EMPTY
        self._resolver: Callable[[bool], None] | None = None
        self._sensor_model: dict[str, dict[str, Any]] | None = None
        self._edges: dict[str, str] | None = None
        self._ready: Callable[[int], bool] | None = None
        self._work: dict[str, float] = _EMPTY
        self._uuid: dict[str, str] | None = None
        #: True when computed without waiting for the updates after the end (values may change).
        self.provisional = False
        #: True when the wait for the sensor's updates after the end hit the Monitor's wall-clock cap
        #: (``Monitor.wait_cap_s``: its sampler thread was starved) and the end was extrapolated.
        self.wait_capped = False
        #: Why nothing was measured (no usable source here), else None.
        self.unavailable_reason: str | None = None
        self._stack: list[Measurement] | None = None  # the Monitor's open-window stack holding it

    @property
    def sensor_model(self) -> dict[str, dict[str, Any]]:
        """Per counter key: the sensor model its bound assumed."""
        if self._sensor_model is None:
            self._sensor_model = {}
        return self._sensor_model

    @sensor_model.setter
    def sensor_model(self, value: dict[str, dict[str, Any]]) -> None:
        self._sensor_model = value

    @property
    def edges(self) -> dict[str, str]:
        """Per counter key: the edge model used (``aligned`` or ``independent``)."""
        if self._edges is None:
            self._edges = {}
        return self._edges

    @edges.setter
    def edges(self, value: dict[str, str]) -> None:
        self._edges = value

    @property
    def uuid(self) -> dict[str, str]:
        """GPU UUID per device key."""
        if self._uuid is None:
            self._uuid = {}
        return self._uuid

    @uuid.setter
    def uuid(self, value: dict[str, str]) -> None:
        self._uuid = value

    # -- state ---------------------------------------------------------------------
    @property
    def open(self) -> bool:
        """True until the window has ended."""
        return self.t1_ns is None

    @property
    def resolved(self) -> bool:
        """True once the energies are known (perhaps ``provisional``)."""
        return self._energy is not None

    @property
    def ready(self) -> bool:
        """Whether reading the energies now returns at once (final values, no waiting)."""
        if self._energy is not None and not self.provisional:
            return True
        if self.t1_ns is None:
            return False
        return self._ready is None or self._ready(self.t1_ns)

    @property
    def available(self) -> bool:
        """False when nothing could measure this window (``unavailable_reason`` says why)."""
        return self.unavailable_reason is None

    # -- work ------------------------------------------------------------------------
    def add_work(self, **units: float) -> Measurement:
        """Add units of work done in the window (``m.add_work(tokens=4096, samples=8)``).

        Amounts are numbers >= 0 (an int, a float, a numpy scalar; not a bool);
        anything else raises :class:`InvalidArgumentError` and adds nothing.
        """
        checked = check_work(units, self.name)
        work = dict(self._work)
        for k, v in checked.items():
            work[k] = work.get(k, 0.0) + v
        self._work = work
        return self

    @property
    def work(self) -> dict[str, float]:
        """Units of work done in the window (``{"tokens": 4096.0}``)."""
        return dict(self._work)

    def energy_per(self, unit: str) -> float:
        """Total joules per unit of work (``m.energy_per("tokens")``); NaN if none was recorded."""
        n = self._work.get(unit, 0.0)
        return self.total_j / n if n > 0 else float("nan")

    def per(self, unit: str) -> PerUnit:
        """Energy per unit of work with its bound: ``m.per("tokens").energy_j``, ``.bound_j``.

        Direct, like the window's energy: the total and its bound divided by the
        work (an exact count). Raises :class:`InvalidArgumentError` when the window
        recorded no such work (it says which units it has).
        """
        n = self._work.get(unit, 0.0)
        if not n > 0:
            have = ", ".join(sorted(self._work)) or "none"
            raise InvalidArgumentError(
                f"window {self.name!r} recorded no {unit!r} (its units of work: {have}); pass "
                f"work={{{unit!r}: N}} to the window, begin_window, end_window, or call add_work")
        return PerUnit(unit, n, self.total_j / n, self.total_uncertainty_j / n)

    def _fill(
        self,
        energy: dict[str, float],
        unc: dict[str, float],
        flags: dict[str, tuple[str, ...]],
        method: dict[str, str],
    ) -> None:
        self._unc = unc
        self._flags = flags
        self._method = method
        self._energy = energy  # last: marks the measurement resolved

    def resolve(self, wait: bool = True) -> Measurement:
        """Compute the energies now (idempotent) and return self.

        For a Monitor window, ``wait=True`` (what attribute access does) first
        waits, up to about three sensor update periods after the window's end,
        for the counter updates that bracket its end; ``wait=False`` computes
        at once, extrapolating past the last update (flag ``extrapolated``).
        """
        if self._energy is not None and not (wait and self.provisional):
            return self
        if self.t1_ns is None:
            raise RuntimeError(f"window {self.name!r} is still open; end it before reading its energy")
        if self._resolver is None:
            raise RuntimeError("this Measurement has no data to compute its energy from")
        self._resolver(wait)
        return self

    def _need(self) -> None:
        if self._energy is None:
            self.resolve(True)

    # -- results -------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        if self.t1_ns is None:
            return float("nan")
        return (self.t1_ns - self.t0_ns) * 1e-9

    @property
    def energy_j(self) -> dict[str, float]:
        self._need()
        return dict(self._energy or {})

    @property
    def uncertainty_j(self) -> dict[str, float]:
        self._need()
        return dict(self._unc)

    @property
    def method(self) -> dict[str, str]:
        self._need()
        return dict(self._method)

    @property
    def channel_flags(self) -> dict[str, tuple[str, ...]]:
        self._need()
        return dict(self._flags)

    @property
    def flags(self) -> tuple[str, ...]:
        """Every flag set on any key, in :data:`FLAG_NAMES` order."""
        self._need()
        seen = {f for fl in self._flags.values() for f in fl}
        extra = (("provisional",) * self.provisional + ("wait_capped",) * self.wait_capped
                 + ("unavailable",) * (self.unavailable_reason is not None))
        return tuple(n for n in FLAG_NAMES.values() if n in seen) + extra

    @property
    def total_j(self) -> float:
        self._need()
        if self.unavailable_reason is not None:
            return float("nan")
        return float(sum(v for k, v in (self._energy or {}).items() if counts_in_total(k)))

    @property
    def total_uncertainty_j(self) -> float:
        self._need()
        if self.unavailable_reason is not None:
            return float("inf")
        return float(sum(v for k, v in self._unc.items() if counts_in_total(k)))

    @property
    def mean_power_w(self) -> float:
        d = self.duration_s
        return self.total_j / d if d > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Plain values (JSON-able)."""
        self._need()
        return {
            "name": self.name,
            "t0_ns": self.t0_ns,
            "t1_ns": self.t1_ns,
            "duration_s": self.duration_s,
            "energy_j": self.energy_j,
            "uncertainty_j": self.uncertainty_j,
            "total_j": self.total_j,
            "total_uncertainty_j": self.total_uncertainty_j,
            "flags": list(self.flags),
            "channel_flags": {k: list(v) for k, v in self._flags.items()},
            "method": self.method,
            "sensor_model": self.sensor_model,
            "edges": self.edges,
            "uuid": dict(self.uuid),
            "work": self.work,
            "provisional": self.provisional,
            "wait_capped": self.wait_capped,
            "unavailable_reason": self.unavailable_reason,
        }

    # -- text ------------------------------------------------------------------------
    def __str__(self) -> str:
        title = self.name if self.name is not None else "window"
        if self.t1_ns is None:
            return f"{title}: open (started at {self.t0_ns} ns)"
        self._need()
        if self.unavailable_reason is not None:
            return f"{title}: {self.duration_s:.6g} s, energy unavailable ({self.unavailable_reason})"
        lines = [f"{title}: {self.duration_s:.6g} s, {_pm(self.total_j, self.total_uncertainty_j)} J total"]
        if self.provisional:
            lines[0] += " (provisional: computed before the sensor updated after the end)"
        if self.wait_capped:
            lines[0] += " (wait_capped: its sampler was starved; the end is extrapolated)"
        width = max((len(k) for k in self._energy or {}), default=0)
        for k, e in (self._energy or {}).items():
            note = self._method.get(k, "")
            if not counts_in_total(k):
                note += ", not in total"
            fl = self._flags.get(k, ())
            if fl:
                note += "; " + ", ".join(fl)
            lines.append(f"  {k:<{width}}  {_pm(e, self._unc.get(k, float('nan')))} J  ({note})")
        return "\n".join(lines)

    def __repr__(self) -> str:
        if self.t1_ns is None:
            return f"<Measurement {self.name!r} open>"
        if self._energy is None:
            return f"<Measurement {self.name!r} {self.duration_s:.6g} s, not computed yet>"
        return (
            f"<Measurement {self.name!r} {self.duration_s:.6g} s "
            f"{_pm(self.total_j, self.total_uncertainty_j)} J flags={list(self.flags)}>"
        )


def _pm(value: float, err: float) -> str:
    """'123.4 ± 0.5' with as many decimals as the uncertainty deserves."""
    if not np.isfinite(value):
        return "nan"
    if not np.isfinite(err) or err <= 0:
        return f"{value:.6g}"
    decimals = max(0, int(-np.floor(np.log10(err))) + 1)
    decimals = min(decimals, 9)
    return f"{value:.{decimals}f} ± {err:.{decimals}f}"
