"""Integrations: jouletrace inside training scripts, clusters and monitoring.

* :mod:`.torch` — windows that are also ``record_function`` / NVTX ranges, a
  ``torch.profiler`` ``on_trace_ready`` handler that attributes the profiled
  steps' kernels to energy and writes the merged trace.
* :mod:`.huggingface`, :mod:`.lightning` — callbacks that log energy per step
  and epoch (and per token) to the trainer's loggers.
* :mod:`.distributed` — per-rank window energies gathered over
  ``torch.distributed``, each physical GPU counted once.
* :mod:`.prometheus` — an exporter on ``prometheus_client``.

Optional dependencies (torch, prometheus_client, transformers, lightning) are
imported only when used, with a message naming the extra to install.

May import anything in the package; nothing below imports it (``jouletrace.torch`` and
``jouletrace.distributed`` re-export it).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["require"]


def require(module: str, extra: str) -> Any:
    """Import an optional dependency, or raise ImportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this part of jouletrace needs {module.split('.')[0]}: pip install 'jouletrace[{extra}]'"
        ) from exc
