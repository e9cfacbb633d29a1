"""RAPL: Intel and AMD CPU energy (package, core, uncore, DRAM, platform) on a native thread.

Three kernel interfaces, tried in this order by the source ``rapl``:

* ``rapl-perf``: the perf ``power`` PMU; 64-bit counts, no wrap. Needs
  ``kernel.perf_event_paranoid`` <= 0 or CAP_PERFMON.
* ``rapl-msr``: ``pread`` on ``/dev/cpu/<cpu>/msr``; 32-bit counters unwrapped in
  the core on every read. Needs the ``msr`` module and CAP_SYS_RAWIO.
* ``rapl-powercap``: ``/sys/class/powercap`` zones; ``energy_uj`` wraps at
  ``max_energy_range_uj`` and is unwrapped in the core. Root-only by default
  since Linux 5.10.

Channels are cumulative joules (float64): ``cpuN.package.energy_j``,
``cpuN.core.energy_j``, ``cpuN.uncore.energy_j``, ``cpuN.dram.energy_j`` (N is
the physical package id) and ``psys.energy_j``. core and uncore are parts of
package; dram is not; psys is the whole platform: never add them up.

Source options (all paths, so tests can point them at fake trees):
``dev_cpu_root`` (/dev/cpu), ``powercap_root`` (/sys/class/powercap),
``perf_root`` (/sys/bus/event_source/devices/power), ``cpu_sysfs_root``
(/sys/devices/system/cpu), ``cpuinfo_path`` (/proc/cpuinfo),
``perf_paranoid_path`` (/proc/sys/kernel/perf_event_paranoid), and
``msr_stride`` (bytes of file offset per MSR number: 1 for the real device, 8
for :class:`jouletrace.testing.rapl.FakeRapl` msr files, whose AMD registers would
otherwise overlap).

:class:`jouletrace.testing.rapl.FakeRapl` builds such fake trees (cpuinfo, CPU
topology, msr files, powercap zones, a power PMU folder) for tests, benchmarks and demos.

The four sources register themselves with :mod:`jouletrace.sampling.registry` when this
module is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _core
from ..errors import InvalidArgumentError
from . import registry
from .registry import OpenedSource, SourceInfo, SourceSpec

__all__ = [
    "SOURCES",
    "OPTIONS",
    "make_native_sampler",
    "probe",
    "probe_all",
    "cpu_model",
    "parse_perf_pmu",
    "read_cost",
    "unwrap",
    "INTEL_MSR",
    "AMD_MSR",
]

#: Source name -> what it measures and through what.
SOURCES: dict[str, str] = {
    "rapl": "Intel/AMD CPU package, core, uncore, DRAM and platform energy (RAPL) through the first "
    "interface that works: perf, msr, powercap",
    "rapl-perf": "RAPL through the perf `power` PMU (64-bit counts; needs kernel.perf_event_paranoid <= 0 "
    "or CAP_PERFMON)",
    "rapl-msr": "RAPL through /dev/cpu/*/msr (32-bit counters unwrapped natively; needs the msr module and "
    "CAP_SYS_RAWIO)",
    "rapl-powercap": "RAPL through /sys/class/powercap energy_uj (unwrapped natively; root-only by default "
    "since Linux 5.10)",
}

#: Options every RAPL source takes (paths, plus msr_stride).
OPTIONS = (
    "dev_cpu_root",
    "powercap_root",
    "perf_root",
    "cpu_sysfs_root",
    "cpuinfo_path",
    "perf_paranoid_path",
    "msr_stride",
)

#: MSR numbers of the RAPL registers.
INTEL_MSR = {
    "unit": 0x606,
    "package": 0x611,
    "core": 0x639,
    "uncore": 0x641,
    "dram": 0x619,
    "psys": 0x64D,
}
AMD_MSR = {"unit": 0xC0010299, "core": 0xC001029A, "package": 0xC001029B}


def _native_options(options: Mapping[str, Any], source: str) -> _core.RaplOptions:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidArgumentError(
            f"unknown option(s) for source {source!r}: {', '.join(unknown)}; RAPL sources take {', '.join(OPTIONS)}"
        )
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key == "msr_stride":
            stride = int(value)
            if stride < 1:
                raise InvalidArgumentError(f"msr_stride must be at least 1, got {value!r}")
            out[key] = stride
        else:
            out[key] = os.fspath(value)
    return _core.RaplOptions(**out)


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise InvalidArgumentError(f"unknown RAPL source {source!r}; known: {', '.join(SOURCES)}")


def make_native_sampler(
    source: str, source_options: Mapping[str, Any], common: _core.SamplerConfig | Mapping[str, Any]
) -> _core.Sampler:
    """A ``_core.Sampler`` over ``source`` (what ``jouletrace.Sampler("rapl*", ...)`` calls).

    ``common`` is the native sampler's :class:`jouletrace._core.SamplerConfig` (or its
    fields as a mapping: rate_hz, ring_capacity, spin_ns, drain_period_ns, max_records).
    Raises :class:`SourceUnavailableError` or :class:`PermissionDeniedError` with the
    reason and the exact fix.
    """
    _check_source(source)
    config = common if isinstance(common, _core.SamplerConfig) else _core.SamplerConfig(**common)
    return _core.rapl_sampler(source, _native_options(source_options, source), config)


def probe(source: str = "rapl", **options: Any) -> SourceInfo:
    """Whether ``source`` works here and, if not, why and the fix. Never raises."""
    desc = SOURCES.get(source, "RAPL")
    try:
        _check_source(source)
        usable, reason, fix, detail = _core.rapl_probe(source, _native_options(options, source))
    except Exception as e:  # noqa: BLE001  (a probe never raises)
        return SourceInfo(source, desc, False, f"{type(e).__name__}: {e}", "")
    return SourceInfo(source, desc, bool(usable), str(reason), str(fix), str(detail))


_INTERFACES = ("rapl-perf", "rapl-msr", "rapl-powercap")  # the order in which "rapl" tries them


def probe_all(**options: Any) -> list[SourceInfo]:
    """:func:`probe` for rapl, rapl-perf, rapl-msr and rapl-powercap (what ``jouletrace info`` shows).

    ``rapl`` is derived from the three interfaces (the first usable one, in
    the order the source tries them) rather than probed a second time; when
    none is usable it points at their own reasons instead of repeating them.
    """
    parts = [probe(name, **options) for name in _INTERFACES]
    first = next((p for p in parts if p.usable), None)
    desc = SOURCES["rapl"]
    if first is not None:
        auto = SourceInfo("rapl", desc, True, detail=first.detail)
    else:
        reason = "none of rapl-perf, rapl-msr, rapl-powercap is usable here (each says why below)"
        if any("virtual machine" in p.reason for p in parts):
            reason += "; this is a virtual machine, and hypervisors rarely pass RAPL through"
        fixes = [f"{p.name}: {p.fix}" for p in parts if p.fix]
        auto = SourceInfo("rapl", desc, False, reason, "; or ".join(fixes))
    return [auto, *parts]


def cpu_model(cpuinfo_path: str | os.PathLike[str] = "/proc/cpuinfo") -> dict[str, Any]:
    """Vendor, family, model, hypervisor flag and the fixed DRAM/psys units (0 = from MSR 0x606)."""
    return dict(_core.rapl_cpu_model(os.fspath(cpuinfo_path)))


def parse_perf_pmu(
    perf_root: str | os.PathLike[str] = "/sys/bus/event_source/devices/power",
) -> dict[str, Any]:
    """The power PMU's type, cpumask and events (domain, config, scale in J per count, unit)."""
    return dict(_core.rapl_parse_perf_pmu(os.fspath(perf_root)))


def read_cost(source: str = "rapl", n: int = 100_000, **options: Any) -> dict[str, Any]:
    """Time ``n`` back-to-back native reads of a RAPL source (no sampler thread): ns per read."""
    _check_source(source)
    return dict(_core.rapl_read_cost(source, n=int(n), options=_native_options(options, source)))


def unwrap(raw: Any, modulus: int = 2**32) -> np.ndarray:
    """Reference (numpy) of the core's unwrapping: raw counter readings -> exact cumulative counts.

    ``raw`` are successive readings of a counter that wraps at ``modulus``
    (2**32 for the RAPL MSRs, ``max_energy_range_uj + 1`` for powercap), at
    least one per wrap period. Returns uint64 counts: the first reading plus
    every forward difference, so ``unwrap(raw) * unit_j`` is what the core
    reports as joules. The core does this natively on every read; this is
    here to hold it to account in tests.
    """
    m = np.uint64(modulus)
    r = np.asarray(raw, dtype=np.uint64) % m
    if r.size == 0:
        return r
    now, last = r[1:], r[:-1]
    # The forward step; a smaller reading means the counter wrapped once.
    d = np.where(now >= last, now - np.minimum(now, last), now + (m - last))
    out = np.empty_like(r)
    out[0] = r[0]
    np.cumsum(d, out=out[1:])
    out[1:] += r[0]
    return out


def _spec(name: str) -> SourceSpec:
    def open_(options: dict[str, Any], config: _core.SamplerConfig) -> OpenedSource:
        return OpenedSource(make_native_sampler(name, options, config))

    def probe_() -> SourceInfo:
        # "rapl" is derived from the three interfaces (probe_all), not probed as a fourth.
        return probe_all()[0] if name == "rapl" else probe(name)

    return SourceSpec(name, SOURCES[name], open_, probe_, options=frozenset(OPTIONS), hardware=True,
                      default=name == "rapl", parts=_INTERFACES if name == "rapl" else ())


for _name in SOURCES:  # rapl, rapl-perf, rapl-msr, rapl-powercap: the order `jouletrace info` lists them
    registry.register(_spec(_name))
del _name
