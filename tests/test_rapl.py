"""RAPL sources against fake trees: energy truth through 32-bit and powercap wraps, the
interface choice, the perf PMU description, and the messages for every way it can fail.

A test thread writes known energy into fake msr files and powercap zones while a
native sampler reads them; the recording's per-domain energy must equal what
was written. Between two writes the thread waits until the sampler has finished
a read that began after the first write, so every written value is seen (the
"at least one read per wrap" condition holds by construction, not by timing).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import jouletrace
from jouletrace.errors import InvalidArgumentError, SourceUnavailableError
from jouletrace.sampling import rapl
from jouletrace.sampling.rapl import AMD_MSR, INTEL_MSR
from jouletrace.testing.rapl import FakeRapl

PYTHON_DIR = Path(jouletrace.__file__).resolve().parent.parent


@pytest.fixture
def fake_root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "machine"


def wait_for_reads(s: jouletrace.Sampler, n: int, timeout_s: float = 20.0) -> None:
    """Block until the sampler has completed `n` more reads (a liveness bound, not a timing assert)."""
    target = s.reads + n
    end = time.monotonic() + timeout_s
    while s.reads < target:
        if time.monotonic() > end:
            raise AssertionError(f"the sampler stopped reading ({s.reads} < {target})")
        time.sleep(0.0002)


def drive(s: jouletrace.Sampler, steps: list[Callable[[], None]]) -> None:
    """Run each step on a test thread, each followed by two completed reads, while `s` samples."""
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            wait_for_reads(s, 1)  # the first record holds the initial values
            for step in steps:
                step()
                # The read that completes second after this point began after the write.
                wait_for_reads(s, 2)
        except BaseException as e:  # noqa: BLE001  (re-raised on the main thread)
            errors.append(e)

    with s:
        t = threading.Thread(target=writer, name="rapl-writer")
        t.start()
        t.join()
        wait_for_reads(s, 2)
    if errors:
        raise errors[0]


def check_cumulative(
    values: np.ndarray, truth: list[float], unit: float, exact_members: bool
) -> None:
    """Monotone, ends at the truth, and (for a single counter) every sample is a value that was written."""
    assert np.all(np.isfinite(values))
    assert np.all(np.diff(values) >= 0), "cumulative energy went backwards"
    assert values[0] == pytest.approx(truth[0], abs=unit / 2)
    assert values[-1] == pytest.approx(truth[-1], abs=unit / 2)
    if exact_members:
        written = np.asarray(truth)
        nearest = np.abs(values[:, None] - written[None, :]).min(axis=1)
        assert nearest.max() <= unit / 2, "a sample is not a value the test wrote"
    else:
        assert values.min() >= truth[0] - unit / 2 and values.max() <= truth[-1] + unit / 2


# -- CPU model and the DRAM unit table ---------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "family", "model", "dram", "psys", "amd"),
    [
        ("GenuineIntel", 6, 0x55, 15.3e-6, 0.0, False),  # Skylake-SP / Cascade Lake
        ("GenuineIntel", 6, 0x3F, 15.3e-6, 0.0, False),  # Haswell-EP
        ("GenuineIntel", 6, 0x6A, 15.3e-6, 0.0, False),  # Ice Lake-SP
        ("GenuineIntel", 6, 0x56, 0.0, 0.0, False),  # Broadwell-DE: DRAM unit from 0x606
        ("GenuineIntel", 6, 0x8F, 0.0, 1.0, False),  # Sapphire Rapids: psys in joules
        ("GenuineIntel", 6, 0x8C, 0.0, 0.0, False),  # Tiger Lake client
        ("AuthenticAMD", 0x19, 0x11, 0.0, 0.0, True),
        ("AuthenticAMD", 0x17, 0x31, 0.0, 0.0, True),
        ("AuthenticAMD", 0x15, 0x02, 0.0, 0.0, False),  # Bulldozer: no RAPL MSRs
        ("HygonGenuine", 0x18, 0x01, 0.0, 0.0, True),
    ],
)
def test_cpu_model_and_unit_tables(fake_root, vendor, family, model, dram, psys, amd):
    f = FakeRapl(fake_root, vendor=vendor, family=family, model=model, hypervisor=True)
    m = rapl.cpu_model(f.cpuinfo_path)
    assert (m["vendor"], m["family"], m["model"], m["model_name"]) == (
        vendor,
        family,
        model,
        "Fake CPU",
    )
    assert m["hypervisor"] is True
    assert m["dram_fixed_unit_j"] == dram
    assert m["psys_fixed_unit_j"] == psys
    assert m["amd_rapl"] is amd


def test_cpu_model_of_missing_file_is_unknown(tmp_path):
    m = rapl.cpu_model(tmp_path / "nope")
    assert m["vendor"] == "" and m["family"] == -1 and m["hypervisor"] is False


# -- the numpy reference of the unwrapping ---------------------------------------------------------


def test_unwrap_reference():
    raw = [2**32 - 10, 2**32 - 1, 5, 2**31, 2**32 - 1, 0]
    assert rapl.unwrap(raw).tolist() == [
        2**32 - 10,
        2**32 - 1,
        2**32 + 5,
        2**32 + 2**31,
        2**33 - 1,
        2**33,
    ]
    m = 1000
    assert rapl.unwrap([990, 999, 3, 500, 2], modulus=m).tolist() == [990, 999, 1003, 1500, 2002]


# -- rapl-msr ---------------------------------------------------------------------------------------------


def test_msr_intel_through_32bit_wraps(fake_root):
    """Two packages of a Skylake-SP (fixed DRAM unit), package/core/DRAM/psys through several wraps."""
    rng = random.Random(1)
    with FakeRapl(fake_root, family=6, model=0x55, packages=2, cores_per_package=2) as f:
        esu = 14  # 61 uJ
        unit = 2.0**-esu
        counters: dict[tuple[int, str], int] = {}
        for p in range(2):
            c = f.lead_cpu(p)
            f.set_energy_unit(c, esu)
            for dom, start in (("package", 2**32 - 5000), ("core", 2**32 - 77), ("dram", 123456)):
                counters[(c, dom)] = start
                f.set_counter(c, INTEL_MSR[dom], start)
        counters[(0, "psys")] = 2**31
        f.set_counter(0, INTEL_MSR["psys"], 2**31)
        # uncore (0x641) stays 0 on both packages: not supported, must be left out.

        s = jouletrace.Sampler("rapl-msr", rate_hz=2000, **f.options())
        assert s.channels == [
            "cpu0.package.energy_j",
            "cpu0.core.energy_j",
            "cpu0.dram.energy_j",
            "cpu1.package.energy_j",
            "cpu1.core.energy_j",
            "cpu1.dram.energy_j",
            "psys.energy_j",
        ]
        meta = s.source_metadata()
        assert "left out" in meta["cpu0.uncore.energy_j.msr"]
        assert meta["cpu1.package.energy_j.msr"] == f"0x611 on cpu {f.lead_cpu(1)}"
        assert float(meta["cpu0.dram.energy_j.unit_j"]) == pytest.approx(15.3e-6)

        truth: dict[tuple[int, str], list[int]] = {k: [v] for k, v in counters.items()}

        def step() -> None:
            for key in counters:
                counters[key] += rng.randrange(0, 2**30)
                truth[key].append(counters[key])
                f.set_counter(key[0], INTEL_MSR[key[1]], counters[key])

        drive(s, [step] * 40)
        rec = s.recording()

    assert s.dropped == 0
    for (cpu, dom), ticks in truth.items():
        assert ticks[-1] - ticks[0] > 2**33, "the test must drive each counter through wraps"
        pkg = 0 if cpu == f.lead_cpu(0) else 1
        name = "psys.energy_j" if dom == "psys" else f"cpu{pkg}.{dom}.energy_j"
        u = 15.3e-6 if dom == "dram" else unit
        check_cumulative(rec[name], [t * u for t in ticks], u, exact_members=True)
        # The numpy reference of the unwrap gives the same totals from the raw 32-bit values.
        ref = rapl.unwrap([t % 2**32 for t in ticks])
        assert int(ref[-1]) == ticks[-1]
        assert rec[name][-1] == pytest.approx(int(ref[-1]) * u, abs=u / 2)


def test_msr_amd_per_core_sum_through_wraps(fake_root):
    """AMD family 19h, 4 cores x 2 threads: package counter, and the per-core counter summed over cores."""
    rng = random.Random(2)
    with FakeRapl(
        fake_root,
        vendor="AuthenticAMD",
        family=0x19,
        model=0x11,
        cores_per_package=4,
        threads_per_core=2,
    ) as f:
        assert f.msr_stride == 8  # the AMD registers are adjacent MSR numbers
        esu = 16  # 15.3 uJ, AMD's usual unit
        unit = 2.0**-esu
        lead = f.lead_cpu(0)
        f.set_energy_unit(lead, esu)
        cores = f.core_cpus(0)
        assert len(cores) == 4
        pkg = [2**32 - 999]
        per_core = {c: [2**32 - 100 * (i + 1)] for i, c in enumerate(cores)}
        f.set_counter(lead, AMD_MSR["package"], pkg[0])
        for c, v in per_core.items():
            f.set_counter(c, AMD_MSR["core"], v[0])
        # Sibling threads' files hold garbage in the core register: they must not be read.
        for cpu, _, _ in f.cpus:
            if cpu not in cores:
                f.set_counter(cpu, AMD_MSR["core"], 0xDEADBEEF)

        s = jouletrace.Sampler("rapl-msr", rate_hz=2000, **f.options())
        assert s.channels == ["cpu0.package.energy_j", "cpu0.core.energy_j"]
        assert s.source_metadata()["cpu0.core.energy_j.msr"] == "0xC001029A summed over 4 cores"

        def step() -> None:
            pkg.append(pkg[-1] + rng.randrange(0, 2**30))
            f.set_counter(lead, AMD_MSR["package"], pkg[-1])
            for c, v in per_core.items():
                v.append(v[-1] + rng.randrange(0, 2**29))
                f.set_counter(c, AMD_MSR["core"], v[-1])

        drive(s, [step] * 40)
        rec = s.recording()

    assert pkg[-1] - pkg[0] > 2**33
    check_cumulative(
        rec["cpu0.package.energy_j"], [t * unit for t in pkg], unit, exact_members=True
    )
    core_truth = [sum(v[i] for v in per_core.values()) * unit for i in range(len(pkg))]
    # A read may land between two per-core writes: the sum is then between two written sums.
    check_cumulative(rec["cpu0.core.energy_j"], core_truth, unit, exact_members=False)


def test_msr_without_rapl_registers_is_unavailable(fake_root):
    f = FakeRapl(fake_root)
    # Every register reads 0: the unit register is there, no energy domain is.
    with pytest.raises(SourceUnavailableError, match="no RAPL energy MSR reads as supported"):
        jouletrace.Sampler("rapl-msr", **f.options())
    # The unit register itself fails (the driver's EIO; here a file that ends early).
    for cpu, _, _ in f.cpus:
        os.truncate(f.msr_path(cpu), 0)
    with pytest.raises(
        SourceUnavailableError, match=r"RAPL unit register 0x606 failed .*does not expose RAPL"
    ):
        jouletrace.Sampler("rapl-msr", **f.options())


def test_msr_module_missing(fake_root):
    f = FakeRapl(fake_root)
    for cpu, _, _ in f.cpus:
        f.msr_path(cpu).unlink()
    with pytest.raises(SourceUnavailableError) as e:
        jouletrace.Sampler("rapl-msr", **f.options())
    assert "msr kernel module is not loaded" in str(e.value)
    assert "sudo modprobe msr" in str(e.value)
    info = rapl.probe("rapl-msr", **f.options())
    assert (
        not info.usable
        and "not loaded" in info.reason
        and info.fix.startswith("`sudo modprobe msr`")
    )


def test_msr_on_unknown_vendor(fake_root):
    f = FakeRapl(fake_root, vendor="AuthenticAMD", family=0x15, model=2)
    with pytest.raises(SourceUnavailableError, match="AMD family 17h or later"):
        jouletrace.Sampler("rapl-msr", **f.options())


# -- rapl-powercap ------------------------------------------------------------------------------------------


def test_powercap_zones_through_wraps(fake_root):
    """package + core/uncore/dram subzones (flat and nested), psys, an mmio duplicate; each wraps."""
    rng = random.Random(3)
    max_uj = 2**26 - 1  # wraps every ~67 J
    with FakeRapl(fake_root, packages=2) as f:
        zones = {
            "intel-rapl:0": ("package-0", "cpu0.package.energy_j", False),
            "intel-rapl:0:0": ("core", "cpu0.core.energy_j", False),
            "intel-rapl:0:1": ("dram", "cpu0.dram.energy_j", True),  # only inside its parent
            "intel-rapl:1": ("package-1", "cpu1.package.energy_j", False),
            "intel-rapl:1:0": ("uncore", "cpu1.uncore.energy_j", False),
            "intel-rapl:2": ("psys", "psys.energy_j", False),
        }
        energy = {}
        for i, (zone, (name, _, nested)) in enumerate(zones.items()):
            energy[zone] = [max_uj - 1000 * (i + 1)]
            f.add_zone(zone, name, energy[zone][0], max_uj, nested=nested)
        # Repeats package-0 through MMIO: skipped, never counted twice.
        f.add_zone("intel-rapl-mmio:0", "package-0", 5, max_uj)

        s = jouletrace.Sampler("rapl-powercap", rate_hz=2000, **f.options())
        assert s.channels == [
            "cpu0.package.energy_j",
            "cpu0.core.energy_j",
            "cpu0.dram.energy_j",
            "cpu1.package.energy_j",
            "cpu1.uncore.energy_j",
            "psys.energy_j",
        ]
        meta = s.source_metadata()
        assert any(
            "intel-rapl-mmio:0" in v for k, v in meta.items() if k.startswith("rapl.skipped_zone")
        )
        assert meta["cpu0.package.max_energy_range_uj"] == str(max_uj)

        def step() -> None:
            for zone, e in energy.items():
                e.append(e[-1] + rng.randrange(0, max_uj // 2))
                f.set_zone(zone, e[-1])

        drive(s, [step] * 40)
        rec = s.recording()

    for zone, (_, channel, _) in zones.items():
        uj = energy[zone]
        assert uj[-1] - uj[0] > 4 * (max_uj + 1), "the test must drive each zone through wraps"
        check_cumulative(rec[channel], [u / 1e6 for u in uj], 1e-6, exact_members=True)
        ref = rapl.unwrap([u % (max_uj + 1) for u in uj], modulus=max_uj + 1)
        assert int(ref[-1]) == uj[-1]


def test_powercap_missing_root_and_empty_root(tmp_path):
    with pytest.raises(SourceUnavailableError, match="CONFIG_POWERCAP"):
        jouletrace.Sampler("rapl-powercap", powercap_root=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceUnavailableError, match="modprobe intel_rapl_msr"):
        jouletrace.Sampler("rapl-powercap", powercap_root=tmp_path / "empty")


# -- rapl-perf ------------------------------------------------------------------------------------------------


def test_perf_pmu_description(fake_root):
    f = FakeRapl(fake_root, packages=2)
    f.make_perf_pmu(
        type=27,
        cpumask="0,2",
        events={
            "energy-pkg": ("event=0x02", 2.0**-32),
            "energy-cores": ("event=0x01", 2.0**-32),
            "energy-ram": ("event=0x03", 2.0**-16),
            "energy-gpu": ("event=0x04,umask=0x3", 2.0**-32),
            "energy-psys": ("event=0x05", 2.0**-32),
            "cycles-foo": ("event=0x09", 1.0),  # not a RAPL event: ignored
        },
        formats={"event": "config:0-7", "umask": "config:8-15"},
    )
    pmu = rapl.parse_perf_pmu(f.perf_root)
    assert pmu["type"] == 27
    assert pmu["cpus"] == [0, 2]
    by = {e["event"]: e for e in pmu["events"]}
    assert [e["domain"] for e in pmu["events"]] == ["package", "core", "uncore", "dram", "psys"]
    assert by["energy-pkg"]["config"] == 0x02
    assert by["energy-gpu"]["config"] == 0x0304
    assert by["energy-ram"]["scale"] == 2.0**-16
    assert by["energy-pkg"]["scale"] == 2.0**-32
    assert all(e["unit"] == "Joules" for e in pmu["events"])


def test_perf_format_with_split_bit_ranges(fake_root):
    f = FakeRapl(fake_root)
    f.make_perf_pmu(
        events={"energy-pkg": ("event=0xAB", 1e-6)}, formats={"event": "config:0-3,8-11"}
    )
    assert rapl.parse_perf_pmu(f.perf_root)["events"][0]["config"] == 0xA0B


def test_perf_pmu_malformed(fake_root):
    f = FakeRapl(fake_root)
    d = f.make_perf_pmu(events={"energy-pkg": ("event=0x02", 2.0**-32)})
    (d / "events" / "energy-pkg.unit").write_text("Watts\n")
    with pytest.raises(InvalidArgumentError, match="not Joules"):
        rapl.parse_perf_pmu(d)
    (d / "events" / "energy-pkg.unit").write_text("Joules\n")
    (d / "events" / "energy-pkg.scale").unlink()
    with pytest.raises(InvalidArgumentError, match="scale is missing"):
        rapl.parse_perf_pmu(d)
    with pytest.raises(SourceUnavailableError, match="no RAPL perf PMU"):
        rapl.parse_perf_pmu(fake_root / "absent")


def test_perf_with_a_type_this_kernel_lacks(fake_root):
    """The parse succeeds; perf_event_open is really called and refuses the made-up PMU type."""
    f = FakeRapl(fake_root)
    f.make_perf_pmu(type=0x7FFF0000)
    info = rapl.probe("rapl-perf", **f.options())
    assert not info.usable
    if "perf_event_paranoid" in info.reason:  # refused before the type was even looked at
        assert "sysctl kernel.perf_event_paranoid=0" in info.fix
    else:
        assert "perf_event_open(power/energy-pkg/, cpu 0) failed" in info.reason


def test_perf_real_power_pmu():
    """The system call on the real power PMU, where this machine has one and lets us use it."""
    info = rapl.probe("rapl-perf")
    if not info.usable:
        pytest.skip(f"rapl-perf is not usable here: {info.reason}")
    with jouletrace.Sampler("rapl-perf", rate_hz=1000) as s:
        wait_for_reads(s, 300)
    rec = s.recording()
    pkg = [c for c in rec.channels if c.endswith(".package.energy_j")]
    assert pkg, rec.channels
    for c in rec.channels:
        v = rec[c]
        assert np.all(np.isfinite(v)) and np.all(np.diff(v) >= 0)
    assert rec[pkg[0]][-1] > rec[pkg[0]][0], "a running CPU package uses energy"


def test_perf_permission_messages():
    reason, fix = jouletrace._core.rapl_perf_open_failure(
        13, 2, "perf_event_open(power/energy-pkg/, cpu 0)", "/x/py"
    )
    assert (
        "EACCES" in reason
        and "kernel.perf_event_paranoid is 2" in reason
        and "0 or lower" in reason
    )
    assert (
        "`sudo sysctl kernel.perf_event_paranoid=0`" in fix
        and "`sudo setcap cap_perfmon=ep /x/py`" in fix
    )
    reason, fix = jouletrace._core.rapl_perf_open_failure(1, -1, "perf_event_open", "/x/py")
    assert "security module" in reason and "seccomp" in reason
    assert "sysctl" not in fix and "cap_perfmon" in fix


# -- the choice, probes and diagnostics -------------------------------------------------------------------------


def _intel_with_msr(f: FakeRapl) -> None:
    f.set_energy_unit(0, 14)
    f.set_counter(0, INTEL_MSR["package"], 1000)


def test_rapl_picks_perf_then_msr_then_powercap(fake_root):
    f = FakeRapl(fake_root)
    f.make_perf_pmu(type=0x7FFF0000)  # present but unusable here
    f.add_zone("intel-rapl:0", "package-0", 10, 2**32 - 1)
    s = jouletrace.Sampler("rapl", **f.options())
    assert s._native.source_name == "rapl-powercap"
    meta = s.source_metadata()
    assert "rapl.skipped.rapl-perf" in meta and "rapl.skipped.rapl-msr" in meta

    _intel_with_msr(f)
    s = jouletrace.Sampler("rapl", **f.options())
    assert s._native.source_name == "rapl-msr"
    assert "rapl.skipped.rapl-powercap" not in s.source_metadata()
    native = rapl.probe("rapl", **f.options())
    assert native.detail.startswith("rapl-msr:")
    # What `jouletrace info` shows for "rapl" (derived from the three) is the native choice.
    derived = rapl.probe_all(**f.options())[0]
    assert derived.name == "rapl" and derived.usable and derived.detail == native.detail


def test_nothing_usable_in_a_vm_says_why(fake_root):
    f = FakeRapl(fake_root, hypervisor=True)
    for cpu, _, _ in f.cpus:
        f.msr_path(cpu).unlink()
    with pytest.raises(SourceUnavailableError) as e:
        jouletrace.Sampler("rapl", **f.options())
    msg = str(e.value)
    for part in (
        "rapl-perf:",
        "rapl-msr:",
        "rapl-powercap:",
        "virtual machine",
        "sudo modprobe msr",
    ):
        assert part in msg
    infos = {i.name: i for i in rapl.probe_all(**f.options())}
    assert set(infos) == {"rapl", "rapl-perf", "rapl-msr", "rapl-powercap"}
    assert not any(i.usable for i in infos.values())
    assert "virtual machine" in infos["rapl-msr"].reason
    assert infos["rapl-msr"].fix.startswith("`sudo modprobe msr`")
    assert "each says why below" in infos["rapl"].reason and "virtual machine" in infos["rapl"].reason
    assert "rapl-msr: `sudo modprobe msr`" in infos["rapl"].fix


def test_sources_and_info_list_rapl_with_reasons():
    infos = {i.name: i for i in jouletrace.sources(refresh=True)}
    for name in ("rapl", "rapl-perf", "rapl-msr", "rapl-powercap"):
        i = infos[name]
        assert i.description == rapl.SOURCES[name]
        assert i.usable or i.reason, f"{name} is unusable without a reason"
    from jouletrace.cli import main

    assert main(["info"]) == 0


def test_unknown_option_and_source(fake_root):
    with pytest.raises(InvalidArgumentError, match="unknown option.*gpus"):
        jouletrace.Sampler("rapl-msr", gpus=[0])
    with pytest.raises(InvalidArgumentError, match="unknown RAPL source"):
        rapl.make_native_sampler("rapl-foo", {}, {"rate_hz": 10.0})
    assert not rapl.probe("rapl-foo").usable


# -- permissions -----------------------------------------------------------------------------------------------------

# Runs in a child process without the capabilities that bypass file modes and
# perf restrictions (so the tests also work, and mean the same, when run as root).
_CHILD = r"""
import ctypes, json, sys
class Hdr(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
libc = ctypes.CDLL(None, use_errno=True)
hdr, data = Hdr(0x20080522, 0), (Data * 2)()
assert libc.capget(ctypes.byref(hdr), data) == 0
# CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_SYS_RAWIO, CAP_SYS_ADMIN, CAP_PERFMON
for cap in (1, 2, 3, 17, 21, 38):
    data[cap // 32].effective &= ~(1 << (cap % 32))
    data[cap // 32].permitted &= ~(1 << (cap % 32))
assert libc.capset(ctypes.byref(hdr), data) == 0, ctypes.get_errno()
import jouletrace
from jouletrace.sampling import rapl
source, options = sys.argv[1], json.loads(sys.argv[2])
out = {}
try:
    jouletrace.Sampler(source, rate_hz=10, **options)
    out["error"] = None
except jouletrace.JouletraceError as e:
    out["error"] = [type(e).__name__, str(e)]
info = rapl.probe(source, **options)
out["probe"] = [info.usable, info.reason, info.fix]
print(json.dumps(out))
"""


def run_unprivileged(source: str, options: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, source, json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def shared_root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="jt-rapl-"))
    try:
        yield d
    finally:
        for p in sorted(d.rglob("*"), reverse=True):
            if p.is_file():
                p.chmod(0o600)
        subprocess.run(["rm", "-rf", str(d)], check=True)


def test_msr_permission_denied_names_the_fix(shared_root):
    f = FakeRapl(shared_root)
    _intel_with_msr(f)
    f.close()
    for cpu, _, _ in f.cpus:
        f.msr_path(cpu).chmod(0)
    out = run_unprivileged("rapl-msr", f.options())
    cls, msg = out["error"]
    assert cls == "PermissionDeniedError"
    assert f"{f.msr_path(0)}: EACCES" in msg
    assert 'SUBSYSTEM=="msr"' in msg and "sudo setcap cap_sys_rawio=ep " in msg
    usable, reason, fix = out["probe"]
    assert (
        not usable
        and "EACCES" in reason
        and "cap_sys_rawio" in fix
        and "cap_sys_rawio" not in reason
    )


def test_powercap_permission_denied_names_the_fix(shared_root):
    f = FakeRapl(shared_root)
    d = f.add_zone("intel-rapl:0", "package-0", 10, 2**32 - 1)
    # Linux 5.10+ makes it 0400 root: unreadable for anyone else. Mode 0 is the
    # same for this (capability-less) child whoever owns the file.
    (d / "energy_uj").chmod(0)
    out = run_unprivileged("rapl-powercap", f.options())
    cls, msg = out["error"]
    assert cls == "PermissionDeniedError"
    assert "energy_uj is readable by root only" in msg and "CVE-2020-8694" in msg
    assert 'SUBSYSTEM=="powercap"' in msg and "chmod g+r" in msg
    usable, reason, fix = out["probe"]
    assert not usable and "udev" in fix and "root" in reason


def test_perf_permission_denied_names_the_fix(shared_root):
    paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    if paranoid <= 0:
        pytest.skip(
            f"kernel.perf_event_paranoid is {paranoid} here: perf_event_open does not refuse a process "
            "without CAP_PERFMON, so the permission path cannot be provoked"
        )
    f = FakeRapl(shared_root)
    f.make_perf_pmu()
    out = run_unprivileged("rapl-perf", f.options())
    cls, msg = out["error"]
    assert cls == "PermissionDeniedError"
    assert f"kernel.perf_event_paranoid is {paranoid}" in msg
    assert "`sudo sysctl kernel.perf_event_paranoid=0`" in msg and "cap_perfmon=ep" in msg
    assert out["probe"][0] is False


# -- side by side with NVML -------------------------------------------------------------------------------------------


def test_rapl_and_nvml_samplers_side_by_side(fake_root, make_sim):
    rng = random.Random(4)
    with FakeRapl(fake_root) as f:
        _intel_with_msr(f)
        ticks = [1000]
        gpu = jouletrace.Sampler("sim", rate_hz=1000, sim=make_sim())
        cpu = jouletrace.Sampler("rapl-msr", rate_hz=250, **f.options())

        def step() -> None:
            ticks.append(ticks[-1] + rng.randrange(0, 2**31))
            f.set_counter(0, INTEL_MSR["package"], ticks[-1])

        with gpu:
            drive(cpu, [step] * 20)
        g, c = gpu.recording(), cpu.recording()
    unit = 2.0**-14
    check_cumulative(
        c["cpu0.package.energy_j"], [t * unit for t in ticks], unit, exact_members=True
    )
    assert len(g.t_ns) > 0 and "gpu0.energy_j" in g.channels
    # The two ran at the same time, each at its own rate.
    assert g.t_ns[0] < c.t_ns[-1] and c.t_ns[0] < g.t_ns[-1]
    assert gpu.rate_hz == 1000 and cpu.rate_hz == 250


def test_powercap_range_of_2_64_minus_1_does_not_crash(fake_root):
    """max_energy_range_uj = 2**64 - 1 (a 64-bit counter): no modulus overflow, energy read as written."""
    f = FakeRapl(fake_root)
    f.add_zone("intel-rapl:0", "package-0", 5_000_000, 2**64 - 1)
    info = rapl.probe("rapl-powercap", **f.options())
    assert info.usable, info.reason
    s = jouletrace.Sampler("rapl-powercap", rate_hz=500, **f.options())
    with s:
        wait_for_reads(s, 3)
    rec = s.recording()
    assert np.all(rec["cpu0.package.energy_j"] == 5.0)


def test_max_samples_out_of_range_is_a_clear_error(make_sim):
    with pytest.raises(jouletrace.InvalidArgumentError, match="max_samples must be at most 2\\*\\*40"):
        jouletrace.Sampler("sim", sim=make_sim(), max_samples=2**62)


def test_window_across_a_long_pause_of_a_rapl_sampler_is_flagged(fake_root, monkeypatch):
    """A 32-bit counter can wrap unseen while nothing reads it: such windows say so."""
    from jouletrace.energy.recording import Recording

    monkeypatch.setattr(Recording, "PAUSE_WRAP_RISK_NS", 50_000_000)  # keep the test short
    f = FakeRapl(fake_root)
    _intel_with_msr(f)
    s = jouletrace.Sampler("rapl-msr", rate_hz=500, **f.options())
    ticks = 1000
    s.start()
    for _ in range(3):
        ticks += 1 << 20
        f.set_counter(0, INTEL_MSR["package"], ticks)
        wait_for_reads(s, 3)
    s.stop()
    t_pause = time.monotonic_ns()
    f.set_counter(0, INTEL_MSR["package"], ticks + (1 << 31))  # while stopped: could have wrapped
    time.sleep(0.1)
    s.start()
    wait_for_reads(s, 5)
    s.stop()
    rec = s.recording()
    (pause,) = rec.metadata["pauses"]
    assert pause[0] <= t_pause <= pause[1]
    before, after = int(rec.t_ns[2]), int(rec.t_ns[-1])
    m = rec.energy(before, after)
    assert "spans_unsampled_pause" in m.flags and m.uncertainty_j["cpu0.package"] == float("inf")
    inside = rec.energy(int(rec.t_ns[0]), int(rec.t_ns[3]))  # a window before the pause is not flagged
    assert "spans_unsampled_pause" not in inside.flags
