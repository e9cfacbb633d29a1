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
for :class:`FakeRapl` msr files, whose AMD registers would otherwise overlap).

:class:`FakeRapl` builds such fake trees (cpuinfo, CPU topology, msr files,
powercap zones, a power PMU folder) for tests, benchmarks and demos.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from . import _core
from .errors import InvalidArgumentError
from .sources import SourceInfo

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
    "FakeRapl",
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


def _native_options(options: Mapping[str, Any], source: str) -> dict[str, Any]:
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
    return out


def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise InvalidArgumentError(f"unknown RAPL source {source!r}; known: {', '.join(SOURCES)}")


def make_native_sampler(source: str, source_options: dict[str, Any], common: dict[str, Any]) -> Any:
    """A ``_core.Sampler`` over ``source`` (what ``jouletrace.Sampler("rapl*", ...)`` calls).

    ``common`` holds the native sampler's rate_hz, ring_capacity, spin_ns,
    drain_period_ns and max_records. Raises :class:`SourceUnavailableError` or
    :class:`PermissionDeniedError` with the reason and the exact fix.
    """
    _check_source(source)
    return _core.rapl_sampler(source, **_native_options(source_options, source), **common)


def probe(source: str = "rapl", **options: Any) -> SourceInfo:
    """Whether ``source`` works here and, if not, why and the fix. Never raises."""
    desc = SOURCES.get(source, "RAPL")
    try:
        _check_source(source)
        usable, reason, fix, detail = _core.rapl_probe(source, **_native_options(options, source))
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
    return dict(_core.rapl_read_cost(source, n=int(n), **_native_options(options, source)))


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


# -- fake trees ----------------------------------------------------------------------------------


class FakeRapl:
    """A fake machine for the RAPL sources, under ``root``.

    Writes a ``cpuinfo`` file, a CPU topology (``cpu/cpuN/topology``), one
    sparse msr file per CPU (``dev/cpu/N/msr``, values at ``msr * msr_stride``,
    read with pread like the real device), and on request powercap zones and a
    power PMU folder. :meth:`options` gives the source options pointing at it.

    Counters are written as their low 32 bits (4 bytes), and ``energy_uj`` as
    fixed-width text, so that a concurrent reader sees either the old or the new
    value: on an ordinary file a pread racing a pwrite is not atomic in general,
    but an aligned-enough write this small stays within one cache line.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        vendor: str = "GenuineIntel",
        family: int = 6,
        model: int = 0x8C,
        model_name: str = "Fake CPU",
        packages: int = 1,
        cores_per_package: int = 2,
        threads_per_core: int = 1,
        hypervisor: bool = False,
        msr_stride: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.vendor = vendor
        self.packages = packages
        self.cores_per_package = cores_per_package
        self.threads_per_core = threads_per_core
        self.msr_stride = (
            msr_stride if msr_stride is not None else (1 if vendor == "GenuineIntel" else 8)
        )
        self.cpuinfo_path = self.root / "cpuinfo"
        self.cpu_sysfs_root = self.root / "cpu"
        self.dev_cpu_root = self.root / "dev" / "cpu"
        self.powercap_root = self.root / "powercap"
        self.perf_root = self.root / "power"
        self.root.mkdir(parents=True, exist_ok=True)
        #: (cpu, package, core) for every CPU; threads of a core are numbered after all cores.
        self.cpus: list[tuple[int, int, int]] = []
        n_cores = packages * cores_per_package
        for t in range(threads_per_core):
            for p in range(packages):
                for c in range(cores_per_package):
                    self.cpus.append((t * n_cores + p * cores_per_package + c, p, c))
        self.cpus.sort()
        flags = "fpu msr" + (" hypervisor" if hypervisor else "")
        lines = []
        for cpu, pkg, core in self.cpus:
            lines += [
                f"processor\t: {cpu}",
                f"vendor_id\t: {vendor}",
                f"cpu family\t: {family}",
                f"model\t\t: {model}",
                f"model name\t: {model_name}",
                f"physical id\t: {pkg}",
                f"core id\t\t: {core}",
                f"flags\t\t: {flags}",
                "",
            ]
        self.cpuinfo_path.write_text("\n".join(lines) + "\n")
        for cpu, pkg, core in self.cpus:
            topo = self.cpu_sysfs_root / f"cpu{cpu}" / "topology"
            topo.mkdir(parents=True, exist_ok=True)
            (topo / "physical_package_id").write_text(f"{pkg}\n")
            (topo / "core_id").write_text(f"{core}\n")
            (topo / "die_id").write_text("0\n")
            d = self.dev_cpu_root / str(cpu)
            d.mkdir(parents=True, exist_ok=True)
            # Sparse, and long enough that every register of the vendor reads
            # 8 bytes (0 until written), like the device.
            regs = INTEL_MSR if vendor == "GenuineIntel" else AMD_MSR
            with open(d / "msr", "wb") as msr:
                msr.truncate(max(regs.values()) * self.msr_stride + 8)
        self._fds: dict[Path, int] = {}
        self._zones: dict[str, tuple[Path, int]] = {}

    # -- helpers -----------------------------------------------------------------------------
    def lead_cpu(self, package: int) -> int:
        """The lowest-numbered CPU of a package (the one rapl-msr reads package registers on)."""
        return min(cpu for cpu, pkg, _ in self.cpus if pkg == package)

    def core_cpus(self, package: int) -> list[int]:
        """The lowest-numbered thread of each core of a package (what AMD's per-core counter is read on)."""
        first: dict[int, int] = {}
        for cpu, pkg, core in self.cpus:
            if pkg == package:
                first.setdefault(core, cpu)
        return sorted(first.values())

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = os.open(path, os.O_RDWR)
            self._fds[path] = fd
        return fd

    def close(self) -> None:
        """Close the file descriptors the writers keep open."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> FakeRapl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- msr ---------------------------------------------------------------------------------------
    def msr_path(self, cpu: int) -> Path:
        return self.dev_cpu_root / str(cpu) / "msr"

    def write_msr(self, cpu: int, msr: int, value: int) -> None:
        """All 64 bits of one register (unit registers, initial values)."""
        os.pwrite(
            self._fd(self.msr_path(cpu)),
            struct.pack("<Q", value & (2**64 - 1)),
            msr * self.msr_stride,
        )

    def set_counter(self, cpu: int, msr: int, value: int) -> None:
        """A 32-bit energy counter: writes ``value mod 2**32`` into the low 4 bytes only."""
        os.pwrite(
            self._fd(self.msr_path(cpu)), struct.pack("<I", value % 2**32), msr * self.msr_stride
        )

    def set_energy_unit(self, cpu: int, esu: int) -> None:
        """The unit register (Intel 0x606 or AMD 0xC0010299): energy unit 1/2**esu J, power 1/8 W, time 976 us."""
        reg = AMD_MSR["unit"] if self.vendor != "GenuineIntel" else INTEL_MSR["unit"]
        self.write_msr(cpu, reg, (0xA << 16) | ((esu & 0x1F) << 8) | 0x3)

    # -- powercap ------------------------------------------------------------------------------------
    def add_zone(
        self,
        zone: str,
        name: str,
        energy_uj: int,
        max_energy_range_uj: int,
        *,
        nested: bool = False,
    ) -> Path:
        """A powercap zone such as ``intel-rapl:0`` (name ``package-0``) or ``intel-rapl:0:2`` (``dram``).

        Subzones sit at the top level like in /sys/class/powercap, or inside
        their parent with ``nested=True``.
        """
        parts = zone.split(":")
        if nested and len(parts) == 3:
            d = self.powercap_root / ":".join(parts[:2]) / zone
        else:
            d = self.powercap_root / zone
        d.mkdir(parents=True, exist_ok=True)
        (d / "name").write_text(name + "\n")
        (d / "max_energy_range_uj").write_text(f"{max_energy_range_uj}\n")
        (d / "energy_uj").write_text(self._uj_text(energy_uj, max_energy_range_uj))
        (d / "enabled").write_text("1\n")
        self._zones[zone] = (d, max_energy_range_uj)
        return d

    @staticmethod
    def _uj_text(energy_uj: int, max_uj: int) -> str:
        return f"{energy_uj % (max_uj + 1):020d}\n"

    def set_zone(self, zone: str, energy_uj: int) -> None:
        """Writes ``energy_uj mod (max_energy_range_uj + 1)`` (the counter wraps past max)."""
        d, max_uj = self._zones[zone]
        os.pwrite(self._fd(d / "energy_uj"), self._uj_text(energy_uj, max_uj).encode(), 0)

    # -- perf ------------------------------------------------------------------------------------------
    def make_perf_pmu(
        self,
        *,
        type: int = 4242,
        cpumask: str | None = None,
        events: Mapping[str, tuple[str, float]] | None = None,
        formats: Mapping[str, str] | None = None,
    ) -> Path:
        """A power PMU folder: ``type``, ``cpumask``, ``format/`` and ``events/`` with ``.scale``/``.unit``."""
        if cpumask is None:
            cpumask = ",".join(str(self.lead_cpu(p)) for p in range(self.packages))
        if events is None:
            scale = 2.0**-32
            events = {
                "energy-pkg": ("event=0x02", scale),
                "energy-cores": ("event=0x01", scale),
                "energy-ram": ("event=0x03", scale),
            }
        if formats is None:
            formats = {"event": "config:0-7"}
        d = self.perf_root
        (d / "events").mkdir(parents=True, exist_ok=True)
        (d / "format").mkdir(parents=True, exist_ok=True)
        (d / "type").write_text(f"{type}\n")
        (d / "cpumask").write_text(cpumask + "\n")
        for name, spec in formats.items():
            (d / "format" / name).write_text(spec + "\n")
        for name, (text, scale) in events.items():
            (d / "events" / name).write_text(text + "\n")
            (d / "events" / f"{name}.scale").write_text(f"{scale!r}\n")
            (d / "events" / f"{name}.unit").write_text("Joules\n")
        return d

    # -- options ----------------------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """Source options that point every RAPL root at this fake machine."""
        return {
            "dev_cpu_root": str(self.dev_cpu_root),
            "powercap_root": str(self.powercap_root),
            "perf_root": str(self.perf_root),
            "cpu_sysfs_root": str(self.cpu_sysfs_root),
            "cpuinfo_path": str(self.cpuinfo_path),
            "msr_stride": self.msr_stride,
        }
