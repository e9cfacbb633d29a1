"""Sampling: which devices to read, as the framework numbers them.

(``Sampler`` and the source probes still live at the top of the package,
``jouletrace/_sampler.py`` and ``jouletrace/sources.py``; they move here with
the packaging issue.)
"""

from __future__ import annotations

from .devices import GpuDevice, nvml_devices, select_gpus

__all__ = ["GpuDevice", "nvml_devices", "select_gpus"]
