// Project-wide constants of the native core. No pybind11 here (see STYLE.md).
#pragma once

#include <cstddef>

namespace jouletrace {

// Size used to keep independently written atomics on their own cache lines.
// 64 bytes on every x86-64 and most AArch64 parts we target; fixed rather than
// std::hardware_destructive_interference_size so the ABI does not depend on the
// compiler's tuning flags.
inline constexpr std::size_t kCacheLine = 64;

// Upper bound on channels one source may produce per read. 8 GPUs x 4 channels
// (energy, power, and NVML's own timestamp of each) fit; RAPL on 4 sockets x 5
// domains fits.
inline constexpr std::size_t kMaxChannels = 32;

}  // namespace jouletrace
