"""Sampling: reading the hardware counters — the first layer of the data flow (ARCHITECTURE.md).

Owns :mod:`.sampler` (``Sampler``: the native sampler thread and its ring, seen from
Python, handing over :class:`~.samples.Samples`), :mod:`.samples` (the columns, channels,
clock pairs and metadata of a run), :mod:`.clock` (the one clock-pair converter),
:mod:`.registry` (every source by name: its probe, how to open it, its description),
:mod:`.sources` (which sources are usable here and why), the sources themselves
(:mod:`.nvml`: nvml and sim; :mod:`.rapl`: the RAPL sources), :mod:`.sim` (the simulated
GPU's Python side), :mod:`.counters` (each counter's width, as its source publishes it),
:mod:`.devices` (which devices to read, as the framework numbers them), :mod:`.sensors` and
:mod:`.sensor_model` (what each counter is known to do).

May import: ``jouletrace._core``, :mod:`jouletrace.errors` and the package's private
helpers (``_input``, ``_safe_output``, ``_optional``, ``_table``, ``_version``); nothing above
it. What the energy layer adds to a sampler (a ``Recording``, streaming) it adds from above:
:class:`jouletrace.energy.sampler.Sampler` subclasses this layer's ``Sampler``.
"""

from __future__ import annotations

from .devices import GpuDevice, nvml_devices, select_gpus

__all__ = ["GpuDevice", "nvml_devices", "select_gpus"]
