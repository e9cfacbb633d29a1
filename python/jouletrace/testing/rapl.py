"""A fake machine for the RAPL sources (:mod:`jouletrace.sampling.rapl`), for tests, benchmarks and demos."""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..sampling.rapl import AMD_MSR, INTEL_MSR

__all__ = ["FakeRapl"]


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
