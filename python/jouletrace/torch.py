"""``jouletrace.torch``: PyTorch integration (see :mod:`jouletrace.integrations.torch`).

``window``, ``ProfilerEnergy`` (an ``on_trace_ready`` handler), and the trainer
callbacks ``JouletraceCallback`` (Hugging Face) and
``JouletraceLightningCallback`` (Lightning, imported on first use).
"""

from __future__ import annotations

from typing import Any

from .integrations.huggingface import JouletraceCallback
from .integrations.torch import EnergyWindow, ProfilerEnergy, TraceEnergy, cuda_sync, window

__all__ = ["window", "EnergyWindow", "ProfilerEnergy", "TraceEnergy", "cuda_sync", "JouletraceCallback",
           "JouletraceLightningCallback"]  # noqa: F822  (module __getattr__)


def __getattr__(name: str) -> Any:
    if name == "JouletraceLightningCallback":  # imports Lightning, if installed: only when asked for
        from .integrations.lightning import JouletraceLightningCallback

        return JouletraceLightningCallback
    raise AttributeError(f"module 'jouletrace.torch' has no attribute {name!r}")
