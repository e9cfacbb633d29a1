"""RAPL read cost per interface, and the sampler's CPU cost at 1 kHz over a RAPL source.

Read cost: n back-to-back native ``Source::read`` calls (no sampler thread)
through ``_core.rapl_read_cost``, for every interface that works here: the
real ones when ``jouletrace.sampling.rapl.probe`` says they are usable, and always the
fake trees of :class:`jouletrace.testing.rapl.FakeRapl` (a regular file standing in for
``/dev/cpu/N/msr``, a directory for ``/sys/class/powercap``), which exercise the
same code path with page-cache reads instead of the kernel's. Next to it, what
the Python poll that other tools do costs on the same fake powercap files
(open, read, parse ``energy_uj`` of each zone from Python per sample).

CPU cost: the ``jt-sampler`` thread's CPU time (schedstat) over a few seconds at
1 kHz on the fake msr source, split into time inside the reads and the rest,
next to the floor of a native thread that only sleeps on the same deadlines.

    python bench/bench_rapl.py [--reads 200000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jouletrace
from jouletrace import _core
from jouletrace.sampling import rapl
from jouletrace.sampling.rapl import AMD_MSR, INTEL_MSR
from jouletrace.testing.rapl import FakeRapl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sampler_timing import _thread_cpu_ns  # noqa: E402  (one copy of the /proc reader)


def fake_intel(root: Path, packages: int) -> FakeRapl:
    """Intel server: package, core, DRAM per package, psys once."""
    f = FakeRapl(root, family=6, model=0x55, packages=packages, cores_per_package=8)
    for p in range(packages):
        c = f.lead_cpu(p)
        f.set_energy_unit(c, 14)
        for dom in ("package", "core", "dram"):
            f.set_counter(c, INTEL_MSR[dom], 1000 + p)
    f.set_counter(0, INTEL_MSR["psys"], 1000)
    return f


def fake_amd(root: Path, cores: int) -> FakeRapl:
    """AMD: package, and the per-core counter of every core (one pread each)."""
    f = FakeRapl(
        root,
        vendor="AuthenticAMD",
        family=0x19,
        model=0x11,
        cores_per_package=cores,
        threads_per_core=2,
    )
    f.set_energy_unit(0, 16)
    f.set_counter(0, AMD_MSR["package"], 1000)
    for c in f.core_cpus(0):
        f.set_counter(c, AMD_MSR["core"], 1000 + c)
    return f


def fake_powercap(root: Path, packages: int) -> FakeRapl:
    f = FakeRapl(root, packages=packages)
    for p in range(packages):
        f.add_zone(f"intel-rapl:{p}", f"package-{p}", 1000, 2**38 - 1)
        f.add_zone(f"intel-rapl:{p}:0", "core", 1000, 2**38 - 1)
        f.add_zone(f"intel-rapl:{p}:1", "dram", 1000, 2**38 - 1)
    f.add_zone(f"intel-rapl:{packages}", "psys", 1000, 2**38 - 1)
    return f


def python_powercap_poll_ns(f: FakeRapl, n: int) -> float:
    """ns per sample of the usual Python poll: open + read + int() of every zone's energy_uj."""
    files = sorted(str(p) for p in f.powercap_root.glob("*/energy_uj"))
    t0 = time.perf_counter_ns()
    for _ in range(n):
        for path in files:
            with open(path) as fh:
                int(fh.read())
    return (time.perf_counter_ns() - t0) / n


def sampler_cpu(options: dict[str, Any], rate: float, seconds: float) -> dict[str, float]:
    s = jouletrace.Sampler("rapl-msr", rate_hz=rate, **options)
    s.start()
    time.sleep(0.2)
    r0 = len(s.recording())
    c0, d0, t0 = _thread_cpu_ns("jt-sampler"), _thread_cpu_ns("jt-drain"), time.monotonic_ns()
    time.sleep(seconds)
    c1, d1, t1 = _thread_cpu_ns("jt-sampler"), _thread_cpu_ns("jt-drain"), time.monotonic_ns()
    rec = s.recording()
    s.stop()
    reads = float((rec.t_after_ns[r0:] - rec.t_before_ns[r0:]).sum())
    wall = float(t1 - t0)
    floor = float(_core.bench.sleep_loop_cpu_pct(rate, max(seconds, 1.0)))
    sampler = 100.0 * (c1 - c0) / wall
    inside = 100.0 * reads / wall
    return {
        "sampler_pct": sampler,
        "reads_pct": inside,
        "overhead_pct": sampler - inside,
        "sleep_floor_pct": floor,
        "beyond_floor_pct": sampler - inside - floor,
        "drain_pct": 100.0 * (d1 - d0) / wall,
        "missed_deadlines": float(s.missed_deadlines),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reads", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    n = args.reads
    res: dict[str, Any] = {"read_cost": [], "real": {}}
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    )

    # Real interfaces, where this machine has them.
    for info in rapl.probe_all()[1:]:
        if info.usable:
            r = rapl.read_cost(info.name, n=n)
            res["real"][info.name] = r
        else:
            res["real"][info.name] = {"usable": False, "reason": info.reason}

    with tempfile.TemporaryDirectory(prefix="jt-bench-rapl-") as tmp:
        root = Path(tmp)
        cases = [
            ("rapl-msr", "fake msr, Intel, 1 package (4 counters)", fake_intel(root / "i1", 1), 4),
            ("rapl-msr", "fake msr, Intel, 2 packages (7 counters)", fake_intel(root / "i2", 2), 7),
            (
                "rapl-msr",
                "fake msr, AMD, 1 package x 16 cores (17 counters)",
                fake_amd(root / "a16", 16),
                17,
            ),
            (
                "rapl-powercap",
                "fake powercap, 1 package (4 zones)",
                fake_powercap(root / "p1", 1),
                4,
            ),
            (
                "rapl-powercap",
                "fake powercap, 2 packages (7 zones)",
                fake_powercap(root / "p2", 2),
                7,
            ),
        ]
        for source, label, f, counters in cases:
            r = rapl.read_cost(source, n=n, **f.options())
            row = {"label": label, "source": source, "counters": counters, **r}
            row["ns_per_counter"] = r["ns_per_read"] / counters
            if source == "rapl-powercap":
                py = python_powercap_poll_ns(f, max(n // 10, 1000))
                row["python_poll_ns"] = py
                row["python_ratio"] = py / r["ns_per_read"]
            res["read_cost"].append(row)
        cpu_fake = fake_intel(root / "cpu", 1)
        res["cpu"] = sampler_cpu(cpu_fake.options(), 1000.0, args.seconds)
        for _, _, f, _ in cases:
            f.close()
        cpu_fake.close()

    print("\nRead cost (native Source::read, back to back, no sampler thread)")
    print(
        "| interface | channels | µs per read | ns per counter | Python poll of the same files | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in res["real"].items():
        if r.get("usable", True):
            print(f"| {name} (real) | {r['channels']} | {r['ns_per_read'] / 1000:.2f} | | | |")
        else:
            print(f"| {name} (real) | not usable here: {r['reason'][:90]}... | | | | |")
    for r in res["read_cost"]:
        py = f"{r['python_poll_ns'] / 1000:.1f} µs" if "python_poll_ns" in r else ""
        ratio = f"{r['python_ratio']:.1f}x" if "python_ratio" in r else ""
        print(
            f"| {r['label']} | {r['channels']} | {r['ns_per_read'] / 1000:.2f} | {r['ns_per_counter']:.0f} | {py} | {ratio} |"
        )
    c = res["cpu"]
    print("\nSampler CPU cost at 1 kHz, rapl-msr on the fake Intel tree (4 counters)")
    print("| what | % of one core |")
    print("|---|---|")
    print(f"| sampler thread, total (schedstat) | {c['sampler_pct']:.2f} |")
    print(f"| of which inside source reads | {c['reads_pct']:.2f} |")
    print(
        f"| floor: a native thread that only sleeps on the same 1 kHz deadlines | {c['sleep_floor_pct']:.2f} |"
    )
    print(f"| jouletrace beyond that floor and the reads | {c['beyond_floor_pct']:.2f} |")
    print(f"| drain thread | {c['drain_pct']:.2f} |")
    print(f"(missed deadlines during the run: {int(c['missed_deadlines'])})")
    return res


def test_bench_rapl_script_runs() -> None:
    """pytest bench/bench_rapl.py: the script end to end, briefly (figures come from running it directly)."""
    res = main(["--reads", "2000", "--seconds", "0.3"])
    assert len(res["read_cost"]) == 5 and all(r["ns_per_read"] > 0 for r in res["read_cost"])


if __name__ == "__main__":
    main()
