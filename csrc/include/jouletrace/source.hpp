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
