"""Which sources exist, whether each is usable here, and if not why and how to fix it.

The sources are those of :mod:`jouletrace.sampling.registry`: the built-in ones, which
register when their modules are imported below, and any registered since. Probes are cheap,
cached, and never raise: :func:`sources` is safe to call at import time of a tool that uses
jouletrace as its backend.
"""

from __future__ import annotations

# The built-in sources, each registered by its module on import, in the order listed.
from . import nvml as _nvml  # noqa: F401  nvml, sim
from . import rapl as _rapl  # noqa: F401  rapl, rapl-perf, rapl-msr, rapl-powercap
from . import registry
from .registry import SourceInfo

__all__ = ["SourceInfo", "sources"]

#: (registry generation, results) of the last probe of every source.
_cache: tuple[int, tuple[SourceInfo, ...]] | None = None


def _probe(spec: registry.SourceSpec) -> SourceInfo:
    try:
        return spec.probe()
    except Exception as e:  # noqa: BLE001  (a probe never raises; one that does is reported, not raised)
        return SourceInfo(spec.name, spec.description, False, f"its probe failed: {type(e).__name__}: {e}")


def sources(refresh: bool = False) -> list[SourceInfo]:
    """Every known source with whether it is usable here and, if not, why and the fix.

    Results are cached (until a source is registered or removed); ``refresh=True`` probes again.
    """
    global _cache
    gen = registry.generation()
    if refresh or _cache is None or _cache[0] != gen:
        _cache = (gen, tuple(_probe(spec) for spec in registry.specs()))
    return list(_cache[1])
