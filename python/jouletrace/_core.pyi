"""Type stubs for the native core (csrc/bindings)."""

from typing import Any

import numpy as np
import numpy.typing as npt

ERROR_NONE: int
ERROR_GENERIC: int
ERROR_DEVICE_LOST: int
ERROR_UNAVAILABLE: int
ERROR_PERMISSION: int
STATUS_OK: int
STATUS_PARTIAL: int
STATUS_DEVICE_LOST: int
STATUS_ERROR: int
MAX_CHANNELS: int

class Sampler:
    @staticmethod
    def nvml(
        library: str = "",
        gpus: list[int] = ...,
        timestamps: bool = True,
        source_name: str = "nvml",
        rate_hz: float = 1000.0,
        ring_capacity: int = 0,
        spin_ns: int = -1,
        drain_period_ns: int = 0,
        max_records: int = 0,
    ) -> Sampler: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def drain(self) -> None: ...
    def set_drain_paused(self, paused: bool, /) -> None: ...
    def inject_for_test(self, n: int) -> None: ...
    @property
    def running(self) -> bool: ...
    @property
    def source_name(self) -> str: ...
    @property
    def channels(self) -> list[tuple[str, bool]]: ...
    @property
    def metadata(self) -> list[tuple[str, str]]: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def reads(self) -> int: ...
    @property
    def dropped_ring(self) -> int: ...
    @property
    def dropped_storage(self) -> int: ...
    @property
    def missed_deadlines(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def committed_bytes(self) -> int: ...
    @property
    def reserved_bytes(self) -> int: ...
    def release_before(self, n: int) -> None: ...
    def error(self) -> tuple[int, str] | None: ...
    def clock_pairs(self, start: int = 0) -> npt.NDArray[np.int64]: ...
    def columns(self) -> dict[str, Any]: ...

def rapl_sampler(
    source: str,
    dev_cpu_root: str = "",
    powercap_root: str = "",
    perf_root: str = "",
    cpu_sysfs_root: str = "",
    cpuinfo_path: str = "",
    perf_paranoid_path: str = "",
    msr_stride: int = 1,
    rate_hz: float = 1000.0,
    ring_capacity: int = 0,
    spin_ns: int = -1,
    drain_period_ns: int = 0,
    max_records: int = 0,
) -> Sampler: ...
def rapl_probe(
    source: str,
    dev_cpu_root: str = "",
    powercap_root: str = "",
    perf_root: str = "",
    cpu_sysfs_root: str = "",
    cpuinfo_path: str = "",
    perf_paranoid_path: str = "",
    msr_stride: int = 1,
) -> tuple[bool, str, str, str]: ...
def rapl_read_cost(
    source: str,
    n: int = 100000,
    dev_cpu_root: str = "",
    powercap_root: str = "",
    perf_root: str = "",
    cpu_sysfs_root: str = "",
    cpuinfo_path: str = "",
    perf_paranoid_path: str = "",
    msr_stride: int = 1,
) -> dict[str, Any]: ...
def rapl_cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> dict[str, Any]: ...
def rapl_parse_perf_pmu(perf_root: str = "/sys/bus/event_source/devices/power") -> dict[str, Any]: ...
def rapl_perf_open_failure(err: int, paranoid: int, what: str = "perf_event_open", exe: str = "python") -> tuple[str, str]: ...
def nvml_library_path(library: str = "") -> str: ...
def monotonic_ns() -> int: ...
def take_clock_pair() -> tuple[int, int, int]: ...

class bench:
    @staticmethod
    def sleep_loop_cpu_pct(rate_hz: float = 1000.0, seconds: float = 2.0) -> float: ...
    @staticmethod
    def ring_push(n: int = 10_000_000, capacity: int = 65536, channels: int = 4) -> dict[str, float]: ...
