// Clocks. Every sample time in jouletrace is CLOCK_MONOTONIC in integer ns.
#pragma once

#include <cstdint>
#include <ctime>

namespace jouletrace {

inline std::int64_t to_ns(const timespec& ts) noexcept {
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

inline timespec from_ns(std::int64_t ns) noexcept {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1000000000LL);
  ts.tv_nsec = static_cast<long>(ns % 1000000000LL);
  return ts;
}

// CLOCK_MONOTONIC now, ns. vDSO call: no syscall, no allocation.
inline std::int64_t monotonic_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return to_ns(ts);
}

inline std::int64_t realtime_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return to_ns(ts);
}

// One (CLOCK_MONOTONIC, CLOCK_REALTIME) correspondence. The realtime read is
// bracketed by two monotonic reads; `monotonic_ns` is their midpoint and
// `uncertainty_ns` their distance (the pair is exact to within it).
struct ClockPair {
  std::int64_t monotonic_ns;
  std::int64_t realtime_ns;
  std::int64_t uncertainty_ns;
};

inline ClockPair take_clock_pair() noexcept {
  // Take the tightest of a few brackets: a preemption between the reads would
  // otherwise widen the uncertainty for no reason.
  ClockPair best{0, 0, INT64_MAX};
  for (int i = 0; i < 5; ++i) {
    const std::int64_t m0 = monotonic_ns();
    const std::int64_t r = realtime_ns();
    const std::int64_t m1 = monotonic_ns();
    if (m1 - m0 < best.uncertainty_ns) best = ClockPair{m0 + (m1 - m0) / 2, r, m1 - m0};
  }
  return best;
}

}  // namespace jouletrace
