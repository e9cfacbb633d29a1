"""jouletrace: where the energy of AI workloads goes, down to single CUDA kernels.

A native sampler thread reads hardware energy counters (NVIDIA NVML; Intel/AMD
RAPL) at up to tens of kHz into a lock-free ring, with the GIL out of the way;
Python sees the samples as zero-copy read-only numpy arrays.

>>> import jouletrace
>>> with jouletrace.Sampler("sim", rate_hz=1000) as s:   # "nvml" on a GPU machine
...     pass
>>> rec = s.recording()
>>> rec.channels[:2]
['gpu0.energy_j', 'gpu0.power_w']
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING

# `jouletrace.calibrate` and `jouletrace.sources` are the functions; the modules of those names are
# kept for imports (they re-export `jouletrace.energy.calibrate`, `jouletrace.sampling.sources`). Loading them first means a later
# `import jouletrace.sources` finds them loaded and does not rebind the functions' names.
from . import calibrate as _calibrate_module  # noqa: F401
from . import sources as _sources_module  # noqa: F401
from ._default import configure, default_monitor, window
from ._version import __version__
from .energy.calibrate import calibrate
from .energy.measurement import Measurement, WindowEnergies
from .energy.monitor import Monitor
from .energy.recording import Recording
from .energy.repeat import measure
from .energy.sampler import SOURCE_NAMES, Sampler
from .energy.storage import load
from .errors import (
    DeviceLostError,
    InvalidArgumentError,
    JouletraceError,
    PermissionDeniedError,
    RecordingFormatError,
    SourceUnavailableError,
    TraceFormatError,
)
from .sampling.sources import SourceInfo, sources

if TYPE_CHECKING:
    from . import attribute, export, markers, sim
    from .kernels.markers import SyncMarkers

# Submodules loaded on first use (`jouletrace.attribute`, `from jouletrace import sim`), so that
# `import jouletrace` does not pay for the kernel attribution, export, trace importers and
# simulation code; and names defined there (`jouletrace.SyncMarkers`). The one place the root
# package imports lazily.
_LAZY_SUBMODULES = ("attribute", "export", "markers", "sim")
_LAZY_NAMES = {"SyncMarkers": "kernels.markers"}


def __getattr__(name: str) -> object:
    if name in _LAZY_SUBMODULES:
        return _importlib.import_module(f".{name}", __name__)
    if name in _LAZY_NAMES:
        return getattr(_importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "calibrate",
    "measure",
    "__version__",
    "Sampler",
    "Recording",
    "Monitor",
    "window",
    "configure",
    "default_monitor",
    "Measurement",
    "WindowEnergies",
    "load",
    "sources",
    "SourceInfo",
    "SOURCE_NAMES",
    "sim",
    "attribute",
    "export",
    "markers",
    "SyncMarkers",
    "JouletraceError",
    "SourceUnavailableError",
    "PermissionDeniedError",
    "DeviceLostError",
    "InvalidArgumentError",
    "TraceFormatError",
    "RecordingFormatError",
]
