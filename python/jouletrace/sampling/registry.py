"""The source registry: every source by name, with its description, its probe and how to open it.

A source is one Python module plus its native part. The module describes each source it
offers as a :class:`SourceSpec` and calls :func:`register` when it is imported; from then on
``jouletrace.Sampler(name)``, :func:`jouletrace.sources`, ``jouletrace info``, ``jouletrace
record --source name`` and ``Monitor(sources=[name])`` know it, and no other module names it.
The built-in sources register from :mod:`jouletrace.sampling.nvml` (``nvml``, ``sim``) and
:mod:`jouletrace.sampling.rapl` (``rapl``, ``rapl-perf``, ``rapl-msr``, ``rapl-powercap``),
which :mod:`jouletrace.sampling.sources` imports. ARCHITECTURE.md, "Adding a source", says
what a new one needs.

``open`` receives the source's own options (already checked against ``options``) and the
sampler settings as one :class:`jouletrace._core.SamplerConfig`, and returns the native
sampler in an :class:`OpenedSource`. ``probe`` says whether the source works here and, if
not, why and the fix; it never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _core
from ..errors import InvalidArgumentError

__all__ = ["SourceInfo", "SourceSpec", "OpenedSource", "register", "unregister", "lookup", "specs", "names"]


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


@dataclass(frozen=True)
class OpenedSource:
    """What a source's ``open`` returns: the native sampler, and what else the Sampler keeps."""

    #: The native sampler thread over the source (not started).
    native: _core.Sampler
    #: The :class:`jouletrace.sampling.sim.SimGPU` behind a simulated source (``Sampler.sim``; its
    #: sensor models are the recording's), else None.
    sim: Any = None


@dataclass(frozen=True)
class SourceSpec:
    """One source as the registry holds it."""

    #: The name users pass (``Sampler(name)``, ``--source name``).
    name: str
    #: What it measures and through what (one line; ``jouletrace info`` shows it).
    description: str
    #: ``open(options, config) -> OpenedSource``; raises the source's own errors (unavailable,
    #: permission denied: each with the fix).
    open: Callable[[dict[str, Any], _core.SamplerConfig], OpenedSource]
    #: ``probe() -> SourceInfo``; cheap, never raises.
    probe: Callable[[], SourceInfo]
    #: The options ``open`` takes; anything else is refused before it is called.
    options: frozenset[str] = field(default_factory=frozenset)
    #: Real hardware (False for a simulation).
    hardware: bool = True
    #: Sampled by ``jouletrace record`` without ``--source`` when usable.
    default: bool = False
    #: The sources this one picks among (``rapl``: its three interfaces); where it is not
    #: usable, they say why, so messages list them rather than it.
    parts: tuple[str, ...] = ()


_SPECS: dict[str, SourceSpec] = {}
#: Bumped by every change, so cached probe results know they are stale.
_generation = 0


def register(spec: SourceSpec, *, replace: bool = False) -> SourceSpec:
    """Add ``spec`` under its name (after those registered before it). Returns it.

    A name already taken is refused unless ``replace=True`` (which keeps its place).
    """
    global _generation
    if not isinstance(spec, SourceSpec):
        raise InvalidArgumentError(f"register() takes a SourceSpec, got {type(spec).__name__}")
    if not spec.name or spec.name != spec.name.strip() or "," in spec.name:
        raise InvalidArgumentError(f"a source name must be non-empty, without spaces at its ends or commas: "
                                   f"{spec.name!r}")
    if spec.name in _SPECS and not replace:
        raise InvalidArgumentError(f"a source named {spec.name!r} is already registered (replace=True replaces it)")
    _SPECS[spec.name] = spec
    _generation += 1
    return spec


def unregister(name: str) -> None:
    """Remove the source ``name`` (a test's, say); an unknown name is an error."""
    global _generation
    if name not in _SPECS:
        raise InvalidArgumentError(f"no source named {name!r} is registered")
    del _SPECS[name]
    _generation += 1


def lookup(name: str) -> SourceSpec:
    """The source ``name``; an unknown name is an :class:`InvalidArgumentError` listing the known ones."""
    spec = _SPECS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise InvalidArgumentError(
            f"unknown source {name!r}; known sources: {', '.join(_SPECS) or 'none'} "
            "(`jouletrace info` says which are usable here)"
        )
    return spec


def specs() -> list[SourceSpec]:
    """Every registered source, in the order registered."""
    return list(_SPECS.values())


def names() -> tuple[str, ...]:
    """The names of every registered source, in the order registered."""
    return tuple(_SPECS)


def generation() -> int:
    """A number that changes whenever a source is registered or removed."""
    return _generation
