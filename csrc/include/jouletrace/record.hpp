// The record the sampler thread pushes through the ring: one per source read.
#pragma once

#include <cstdint>
#include <type_traits>

#include "jouletrace/config.hpp"

namespace jouletrace {

// Per-record status. A record is always pushed, also when the read failed, so
// the timeline shows the failure where it happened.
enum Status : std::int32_t {
  kStatusOk = 0,
  kStatusPartial = 1,     // some channels could not be read this time: they are NaN
  kStatusDeviceLost = 2,  // a device is gone (e.g. NVML_ERROR_GPU_IS_LOST): its channels are NaN
  kStatusError = 3,       // the read failed as a whole: all channels are NaN
};

// Cache-line aligned: neighbouring slots never share a line, so the producer
// filling slot i+1 does not invalidate the line the consumer is reading.
struct alignas(kCacheLine) Record {
  std::int64_t t_before_ns;  // CLOCK_MONOTONIC just before the source read
  std::int64_t t_after_ns;   // CLOCK_MONOTONIC just after it
  std::uint64_t seq;         // read number since the sampler was made (gaps = drops)
  std::int32_t status;       // a Status
  std::uint32_t reserved;
  double values[kMaxChannels];  // channel values in the source's units (J, W, ...)
};

static_assert(std::is_trivially_copyable_v<Record>);
static_assert(std::is_standard_layout_v<Record>);
static_assert(sizeof(Record) % kCacheLine == 0);
static_assert(sizeof(Record) == 32 + 8 * kMaxChannels + 32);  // 288 bytes of data, padded to 320

}  // namespace jouletrace
