"""Energy per CUDA kernel (kept for imports): see :mod:`jouletrace.kernels.attribution`."""

from __future__ import annotations

from .kernels.alignment import Alignment, align, device_channels
from .kernels.attribution import (
    Attribution,
    LaunchEnergies,
    NameEnergies,
    attribute,
    attribute_launches,
    attribute_names,
    interval_matrix,
    nnls,
    share_times,
)

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
