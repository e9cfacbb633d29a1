"""Energy per CUDA kernel: a profiler trace lined up with a recording, energy per launch and per name.

Three steps, each usable alone:

1. **Alignment** (:func:`align`): trace times onto the recording's CLOCK_MONOTONIC.
2. **Per name, statistically** (:func:`attribute_names`): mean power and energy per
   launch of every kernel name, with a confidence interval, from many launches.
3. **Per launch, directly** (:func:`attribute_launches`): the counter interpolated
   over each launch, with a bound; below the sensor's resolution for nearly every
   kernel, and flagged so.

:func:`attribute` does all three.

The package's modules: :mod:`..alignment` (step 1 and device matching),
:mod:`.sweep` (share times, the concurrency rule), :mod:`.nnls`, :mod:`.names`
(step 2), :mod:`.launches` (step 3), :mod:`.tables` (the result tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...energy.recording import Recording
from ..alignment import Alignment, align, device_channels
from ..traces.table import KernelTable
from .launches import attribute_launches
from .names import attribute_names
from .nnls import nnls
from .sweep import interval_matrix, share_times
from .tables import LaunchEnergies, NameEnergies

__all__ = [
    "Alignment",
    "align",
    "nnls",
    "share_times",
    "interval_matrix",
    "NameEnergies",
    "LaunchEnergies",
    "Attribution",
    "device_channels",
    "attribute_names",
    "attribute_launches",
    "attribute",
]


@dataclass
class Attribution:
    """What :func:`attribute` found: the alignment, per-name (statistical) and per-launch (direct) tables."""

    alignment: Alignment
    names: NameEnergies
    launches: LaunchEnergies | None

    def summary(self, limit: int = 15) -> str:
        a = self.alignment
        lines = [
            f"alignment: {a.method}, uncertainty {a.uncertainty_ns / 1e3:.1f} µs",
            "per kernel name (statistical: counter intervals regressed on each name's time):",
            self.names.to_text(limit),
        ]
        for dev, m in self.names.meta.get("devices", {}).items():
            lines.append(
                f"device {dev} ({m.get('channel')}, {m.get('device_mapping')}): idle "
                f"{m.get('idle_power_w', float('nan')):.1f} W, {m.get('intervals')} intervals"
            )
        return "\n".join(lines)


def attribute(
    recording: Recording,
    kernels: KernelTable,
    *,
    markers: Any = None,
    alignment: Alignment | None = None,
    launches: bool = True,
    **name_options: Any,
) -> Attribution:
    """Align, then attribute per name (statistical) and, with ``launches=True``, per launch (direct)."""
    if alignment is None:
        alignment = align(kernels, recording, markers=markers)
    device_map = name_options.get("device_map")
    names = attribute_names(recording, kernels, alignment=alignment, **name_options)
    per_launch = attribute_launches(recording, kernels, alignment=alignment, device_map=device_map) if launches else None
    return Attribution(alignment, names, per_launch)
