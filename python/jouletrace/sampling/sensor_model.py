"""What a recording assumes about each energy counter: full-period, part-time or unknown, and why.

An energy counter that refreshes every update period ``P`` may integrate all of
each period (*full-period*) or only the averaging window ``W`` of it, scaled to
the period (*part-time*; A100 and H100 instant power sees ~25 % of the time, and
whether their counters do the same is not documented: DESIGN.md §4). The bound
of a window energy depends on which (:mod:`jouletrace.energy.windows`), so every
recording states, per device key, a :class:`SensorModel`:

* ``counter``: ``"full"``, ``"part_time"`` or ``"unknown"`` (bounded like part-time);
* ``source``: where that came from, in order of precedence: ``"user"`` (an
  override, :meth:`jouletrace.Recording.set_sensor_model`), ``"simulated"`` (the
  simulated GPU states its configuration unless made to hide it), ``"measured"`` (a
  calibration of this GPU, :mod:`jouletrace.energy.calibrate`, found by UUID in the sensor
  file, where a user-given model can be saved too), ``"published"`` (the facts of :mod:`jouletrace.sampling.sensors` for the
  architecture: RAPL counters integrate continuously; NVIDIA counters are unknown);
  ``"unstated"``: a recording that states no model and names no architecture (made
  before jouletrace recorded one, or synthesised in a test) is bounded as a
  full-period counter, as it was then, and says so;
* ``update_period_ns`` and ``avg_window_ns`` when known.

The sensor file is a small JSON object ``{"<GPU UUID>": {model}, ...}`` at
``$JOULETRACE_SENSOR_FILE`` if set, else ``$XDG_CONFIG_HOME/jouletrace/sensors.json``
(``~/.config/jouletrace/sensors.json``). ``jouletrace info --measure --save`` and
``jouletrace.energy.calibrate(..., save=True)`` write it; a recording reads it when it is made.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from .sensors import ARCH_NAMES

__all__ = ["SensorModel", "COUNTERS", "SOURCES", "sensor_file", "load_saved", "save_model", "published",
           "models_for"]

COUNTERS = ("full", "part_time", "unknown")
SOURCES = ("user", "measured", "simulated", "published", "unstated")


@dataclass(frozen=True)
class SensorModel:
    """One device's energy-counter model (module docstring)."""

    counter: str
    source: str
    update_period_ns: float | None = None
    avg_window_ns: float | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.counter not in COUNTERS:
            raise InvalidArgumentError(f"counter must be one of {COUNTERS}, got {self.counter!r}")
        if self.source not in SOURCES:
            raise InvalidArgumentError(f"source must be one of {SOURCES}, got {self.source!r}")

    @property
    def part_time_possible(self) -> bool:
        """True unless the counter is known to integrate all of each period."""
        return self.counter != "full"

    @property
    def seen_fraction(self) -> float | None:
        """``W / P`` when both are known (a part-time counter's share of the time seen)."""
        if self.counter == "part_time" and self.update_period_ns and self.avg_window_ns:
            return min(1.0, float(self.avg_window_ns) / float(self.update_period_ns))
        return None

    def label(self) -> str:
        """Short text for tables: ``part_time (measured)``."""
        return f"{self.counter} ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensorModel:
        keys = {"counter", "source", "update_period_ns", "avg_window_ns", "detail"}
        return cls(**{k: v for k, v in d.items() if k in keys})


def sensor_file() -> Path:
    """Where calibrations are kept (module docstring)."""
    env = os.environ.get("JOULETRACE_SENSOR_FILE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "jouletrace" / "sensors.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_saved(uuid: str | None) -> SensorModel | None:
    """The saved model of the GPU with this UUID, if any (a broken file reads as empty)."""
    if not uuid:
        return None
    d = _read(sensor_file()).get(uuid)
    if not isinstance(d, dict):
        return None
    try:
        return SensorModel.from_dict(d)
    except (InvalidArgumentError, TypeError):
        return None


def save_model(uuid: str, model: SensorModel) -> Path:
    """Keep ``model`` for the GPU ``uuid`` in the sensor file (atomically); returns the path."""
    if model.source not in ("measured", "user"):
        raise InvalidArgumentError("only measured or user-given models are saved")
    path = sensor_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read(path)
    data[uuid] = model.to_dict()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".sensors-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def published(key: str, arch: int | None = None, source_name: str = "") -> SensorModel:
    """The default for a device without a measurement (module docstring)."""
    if source_name.startswith("rapl") or key.startswith(("cpu", "psys")):
        return SensorModel("full", "published", detail="RAPL counters accumulate energy continuously (Intel SDM)")
    arch_name = ARCH_NAMES.get(arch if arch is not None else -1, "unknown architecture")
    return SensorModel(
        "unknown", "published",
        detail=f"{arch_name}: whether the NVML energy counter integrates all of each update period or only the "
               "sampled ~25 % is not documented (Yang, Adamek, Armour, SC'24); calibrate with "
               "`jouletrace info --measure --save`",
    )


def models_for(device_meta: dict[str, Any], source_name: str, keys: list[str],
               simulated: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """The model of each device key at recording time: measured (by UUID), simulated, or published."""
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        model = SensorModel.from_dict(simulated[key]) if simulated and key in simulated else None
        if model is None:
            model = load_saved(device_meta.get(f"{key}.uuid"))
        if model is None:
            try:
                arch = int(device_meta[f"{key}.architecture"])
            except (KeyError, TypeError, ValueError):
                arch = None
            model = published(key, arch, source_name)
        out[key] = model.to_dict()
    return out
