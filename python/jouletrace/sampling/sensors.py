"""What is known of NVIDIA GPU power sensors, by architecture (the facts of DESIGN.md §4).

These are published measurements and NVML documentation, not guarantees:
``jouletrace info --measure`` and :meth:`jouletrace.Recording.characterize`
measure the sensor of the GPU at hand.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SensorFacts", "facts_for"]

#: NVML's nvmlDeviceArchitecture_t values.
ARCH_NAMES = {2: "Kepler", 3: "Maxwell", 4: "Pascal", 5: "Volta", 6: "Turing", 7: "Ampere", 8: "Ada",
              9: "Hopper", 10: "Blackwell"}


@dataclass(frozen=True)
class SensorFacts:
    architecture: str
    energy_counter: str
    instant_power: str
    power_usage: str
    accuracy: str
    sources: str


_GENERIC_COUNTER = ("mJ since driver load, 64-bit; updates about every 100 ms "
                    "(10 to 100 ms reported by model)")


def facts_for(arch: int | None, name: str = "") -> SensorFacts:
    """The published facts for an NVML architecture number (and device name)."""
    arch_name = ARCH_NAMES.get(arch or -1, "unknown")
    if arch is not None and 2 <= arch < 5:
        return SensorFacts(arch_name, "not available before Volta (NVML_ERROR_NOT_SUPPORTED)",
                           "field 186 needs NVML 12.2 (R535) or newer", "board power, model-dependent averaging",
                           "unknown", "nvml.h")
    if arch is not None and arch >= 9:
        return SensorFacts(
            arch_name,
            _GENERIC_COUNTER,
            "field 186 (NVML 12.2+): on H100 PCIe it updates every ~100 ms and averages only ~21-25 ms "
            "of each period (25 % of the time seen)",
            "nvmlDeviceGetPowerUsage is a 1-second moving average on Hopper: never use it for short windows",
            "not published for Hopper; A100: about -5.5 % vs an external meter in steady state",
            "nvml.h; Yang, Adamek, Armour (SC'24); ML.ENERGY / Zeus",
        )
    accuracy = "about -5.5 % vs an external meter in steady state (A100)" if "A100" in name else "not published"
    return SensorFacts(
        arch_name,
        _GENERIC_COUNTER,
        "field 186 (NVML 12.2+): update period and averaging window vary by model; measure with --measure",
        "nvmlDeviceGetPowerUsage: averaged board power; the window varies by model",
        accuracy,
        "nvml.h; Yang, Adamek, Armour (SC'24); ML.ENERGY / Zeus",
    )
