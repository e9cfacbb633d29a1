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
imported only when used; torch and prometheus_client through
:func:`jouletrace._optional.require`, whose message names the feature and the extra to install.

May import anything in the package; nothing below imports it (``jouletrace.torch`` and
``jouletrace.distributed`` re-export it).
"""

from __future__ import annotations

# The one helper for optional dependencies, importable here as before.
from .._optional import require

__all__ = ["require"]
