"""Which sources exist, whether each is usable here, and if not why and how to fix it.

Probes are cheap, cached, and never raise: :func:`sources` is safe to call at
import time of a tool that uses jouletrace as its backend.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..errors import JouletraceError

__all__ = ["SourceInfo", "sources"]


@dataclass(frozen=True)
class SourceInfo:
    """One source: its name, what it measures, and whether it works here."""

    name: str
    description: str
    usable: bool
    #: Why it is not usable (empty when usable): the underlying error, verbatim.
    reason: str = ""
    #: The exact command or setting that fixes it (empty when usable or unknown).
    fix: str = ""
    #: Devices or domains found, when usable (e.g. "2 GPUs: NVIDIA H100 ...").
    detail: str = ""


def _probe_nvml(library: str | None = None, source: str = "nvml") -> SourceInfo:
    from .. import _core

    desc = "NVIDIA GPUs through NVML: energy counter (mJ) and instant power"
    try:
        s = _core.Sampler.nvml(library=library or "", source_name=source, rate_hz=1.0, max_records=1024)
    except JouletraceError as e:
        msg = str(e)
        fix = "install the NVIDIA driver, or set JOULETRACE_NVML_LIBRARY=/path/to/libnvidia-ml.so.1"
        if "permission" in msg.lower():
            fix = "give this user access to /dev/nvidia* (group video/render), or use the NVIDIA container runtime"
        return SourceInfo(source, desc, False, msg, fix)
    except Exception as e:  # noqa: BLE001  (a probe never raises)
        return SourceInfo(source, desc, False, f"{type(e).__name__}: {e}", "")
    meta = dict(s.metadata)
    names = [v for k, v in meta.items() if k.endswith(".name")]
    detail = f"{len(names)} GPU(s): " + ", ".join(names)
    return SourceInfo(source, desc, True, detail=detail)


def _probe_sim() -> SourceInfo:
    desc = "simulated GPU (a stand-in NVML library with a known power schedule); no hardware needed"
    try:
        from .sim import library_file

        path = library_file()
    except JouletraceError as e:
        return SourceInfo("sim", desc, False, str(e), "reinstall jouletrace: pip install .")
    return SourceInfo("sim", desc, True, detail=str(path))


def _probe_rapl() -> list[SourceInfo]:
    try:
        from . import rapl
    except ImportError:
        desc = "Intel/AMD CPU package, core and DRAM energy (RAPL)"
        why = "RAPL sources are not part of this build of jouletrace yet"
        return [SourceInfo(n, desc, False, why, "") for n in ("rapl", "rapl-perf", "rapl-msr", "rapl-powercap")]
    return rapl.probe_all()


@functools.lru_cache(maxsize=1)
def _cached() -> tuple[SourceInfo, ...]:
    return (_probe_nvml(), _probe_sim(), *_probe_rapl())


def sources(refresh: bool = False) -> list[SourceInfo]:
    """Every known source with whether it is usable here and, if not, why and the fix.

    Results are cached; ``refresh=True`` probes again.
    """
    if refresh:
        _cached.cache_clear()
    return list(_cached())
