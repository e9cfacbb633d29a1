"""The NVML sources: NVIDIA GPUs (``nvml``) and the simulated GPU (``sim``), both read by the
native NVML source (``csrc/src/nvml_source.cpp``, NVML loaded with ``dlopen``).

Options:

* ``nvml``: ``gpus=[0, 1]`` (NVML indices; default all), ``nvml_library=PATH`` (default
  ``$JOULETRACE_NVML_LIBRARY`` or ``libnvidia-ml.so.1``), ``timestamps=True`` (also keep NVML's
  own per-field timestamps as ``gpuN.energy_ts_us`` / ``gpuN.power_ts_us``, µs since 1970).
* ``sim``: ``sim=SimGPU(...)`` (default: one idle simulated H100), ``gpus``, ``timestamps``.
  The simulated GPU is a library with NVML's exports, so it goes through the same code.

Both register themselves with :mod:`jouletrace.sampling.registry` when this module is imported.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from .. import _core
from ..errors import InvalidArgumentError, JouletraceError
from . import registry
from .registry import OpenedSource, SourceInfo, SourceSpec

__all__ = ["NVML", "SIM", "open_nvml", "open_sim", "probe_nvml", "probe_sim"]

_NVML_DESCRIPTION = "NVIDIA GPUs through NVML: energy counter (mJ) and instant power"
_SIM_DESCRIPTION = ("simulated GPU (a stand-in NVML library with a known power schedule); no hardware "
                    "needed")


def _gpu_list(gpus: int | Iterable[int] | None) -> list[int]:
    if gpus is None:
        return []
    return [int(g) for g in ([gpus] if isinstance(gpus, int) else gpus)]


def open_nvml(options: dict[str, Any], config: _core.SamplerConfig) -> OpenedSource:
    """A native sampler over NVML's GPUs (``Sampler("nvml", ...)``)."""
    lib = options.get("nvml_library")
    native = _core.Sampler.nvml(
        _core.NvmlOptions(
            library="" if lib is None else os.fspath(lib),
            gpus=_gpu_list(options.get("gpus")),
            timestamps=bool(options.get("timestamps", True)),
            source_name="nvml",
        ),
        config,
    )
    return OpenedSource(native)


def open_sim(options: dict[str, Any], config: _core.SamplerConfig) -> OpenedSource:
    """A native sampler over a simulated GPU (``Sampler("sim", sim=SimGPU(...))``)."""
    # The simulated GPU's Python side is loaded only when a simulation is asked for
    # (`import jouletrace` stays without it; tests/test_layout.py).
    from .sim import SimGPU

    sim = options.get("sim")
    if sim is None:
        sim = SimGPU()
    if not isinstance(sim, SimGPU):
        raise InvalidArgumentError(f"sim= must be a jouletrace.sampling.sim.SimGPU, got {type(sim).__name__}")
    native = _core.Sampler.nvml(
        _core.NvmlOptions(
            library=str(sim.library_path),
            gpus=_gpu_list(options.get("gpus")),
            timestamps=bool(options.get("timestamps", True)),
            source_name="sim",
        ),
        config,
    )
    return OpenedSource(native, sim=sim)


def probe_nvml(library: str | None = None, source: str = "nvml") -> SourceInfo:
    """Whether NVML (``library``, else the default one) works here, with its GPUs; never raises."""
    try:
        s = _core.Sampler.nvml(_core.NvmlOptions(library=library or "", source_name=source),
                               _core.SamplerConfig(rate_hz=1.0, max_records=1024))
    except JouletraceError as e:
        msg = str(e)
        fix = "install the NVIDIA driver, or set JOULETRACE_NVML_LIBRARY=/path/to/libnvidia-ml.so.1"
        if "permission" in msg.lower():
            fix = "give this user access to /dev/nvidia* (group video/render), or use the NVIDIA container runtime"
        return SourceInfo(source, _NVML_DESCRIPTION, False, msg, fix)
    except Exception as e:  # noqa: BLE001  (a probe never raises)
        return SourceInfo(source, _NVML_DESCRIPTION, False, f"{type(e).__name__}: {e}", "")
    meta = dict(s.metadata)
    names = [v for k, v in meta.items() if k.endswith(".name")]
    detail = f"{len(names)} GPU(s): " + ", ".join(names)
    return SourceInfo(source, _NVML_DESCRIPTION, True, detail=detail)


def probe_sim() -> SourceInfo:
    """Whether the simulated GPU's library is installed; never raises."""
    from .sim import library_file  # loaded only when asked for, as in open_sim

    try:
        path = library_file()
    except JouletraceError as e:
        return SourceInfo("sim", _SIM_DESCRIPTION, False, str(e), "reinstall jouletrace: pip install .")
    return SourceInfo("sim", _SIM_DESCRIPTION, True, detail=str(path))


NVML = registry.register(SourceSpec(
    "nvml", _NVML_DESCRIPTION, open_nvml, probe_nvml,
    options=frozenset({"gpus", "nvml_library", "timestamps"}), hardware=True, default=True,
))
SIM = registry.register(SourceSpec(
    "sim", _SIM_DESCRIPTION, open_sim, probe_sim,
    options=frozenset({"gpus", "sim", "timestamps"}), hardware=False,
))
