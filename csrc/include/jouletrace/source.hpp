// A Source knows one kind of hardware and reads all its channels in one go.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "jouletrace/errors.hpp"
#include "jouletrace/record.hpp"

namespace jouletrace {

struct ChannelInfo {
  std::string name;  // <device>.<quantity>_<unit>, e.g. "gpu0.energy_j"
  bool cumulative;   // a counter (energy) rather than a level (power)
  // Counters only: the hardware counter the channel is read from, as the source
  // knows it (0 for a level, or where the source cannot tell).
  //   counter_bits  its width: 32 for the RAPL MSRs, 64 for perf counts and for
  //                 NVML's total energy in mJ; for a counter that wraps at a
  //                 range that is not a power of two (powercap's
  //                 max_energy_range_uj), the bits that range needs.
  //   wrap_j        the energy after which it wraps (modulus x unit), in joules.
  // The source unwraps it on every read; a reader that stops reading for longer
  // than one wrap takes (a sampler paused) cannot see how many wraps it missed.
  unsigned counter_bits = 0;
  double wrap_j = 0;
};

class Source {
 public:
  virtual ~Source() = default;

  // Short name ("nvml", "sim", "rapl-msr", ...).
  virtual std::string name() const = 0;

  // Fixed for the life of the source; at most kMaxChannels.
  virtual const std::vector<ChannelInfo>& channels() const = 0;

  // Hot path, sampler thread only. Writes one value per channel into `out`
  // (NaN where a channel could not be read) and returns a Status. Never
  // allocates, locks or throws. Problems that Python must hear about (a device
  // lost, a permission revoked) are reported once through `errors`.
  virtual std::int32_t read(double* out, ErrorSlot& errors) noexcept = 0;

  // Off the hot path: what was learned at construction (versions, device
  // names, which call feeds which channel). Keys are dotted names.
  virtual std::vector<std::pair<std::string, std::string>> metadata() const = 0;
};

}  // namespace jouletrace
