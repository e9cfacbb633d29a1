// Micro-benchmarks of the core that must run without Python in the loop.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <sys/prctl.h>
#include <time.h>

#include <chrono>
#include <string>
#include <thread>

#include "bindings.hpp"
#include "jouletrace/clock.hpp"
#include "jouletrace/errors.hpp"
#include "jouletrace/record.hpp"
#include "jouletrace/ring.hpp"

namespace py = pybind11;

namespace jouletrace::py_bind {

namespace {

inline void fill(Record* slot, std::uint64_t i, int channels) noexcept {
  slot->t_before_ns = static_cast<std::int64_t>(i);
  slot->t_after_ns = static_cast<std::int64_t>(i);
  slot->seq = i;
  slot->status = 0;
  for (int c = 0; c < channels; ++c) slot->values[c] = static_cast<double>(i);
}

// Two figures for `n` records of `channels` values:
//  - ns_per_push: what the sampler thread pays per record (claim, fill,
//    publish) when the ring has room, as in a healthy run: the ring holds all
//    n records and nobody consumes while we time.
//  - ns_per_record_streaming: producer and consumer threads at full speed
//    through a ring of `capacity` (throughput, bounded by cache-line transfers
//    between the cores), and how often the producer found the ring full.
py::dict ring_push(std::uint64_t n, std::size_t capacity, int channels) {
  if (n == 0 || channels < 0 || static_cast<std::size_t>(channels) > kMaxChannels) {
    throw InvalidArgument("ring_push needs n > 0 and 0 <= channels <= " + std::to_string(kMaxChannels));
  }
  if (capacity < 2 || (capacity & (capacity - 1)) != 0) throw InvalidArgument("capacity must be a power of two >= 2");
  double ns_per_push = 0;
  double ns_streaming = 0;
  std::uint64_t full = 0;
  {
    py::gil_scoped_release nogil;  // pure C++ below
    {
      std::size_t cap = 2;
      while (cap < n) cap <<= 1;
      SpscRing<Record> big(cap);
      // One lap first: the sampler reuses its ring cyclically, so its pages are
      // resident after the first second; time pushes, not page faults.
      for (std::uint64_t i = 0; i < cap; ++i) {
        fill(big.try_claim(), i, channels);
        big.publish();
        big.pop();
      }
      const std::int64_t t0 = monotonic_ns();
      for (std::uint64_t i = 0; i < n; ++i) {
        Record* slot = big.try_claim();
        fill(slot, i, channels);
        big.publish();
      }
      ns_per_push = static_cast<double>(monotonic_ns() - t0) / static_cast<double>(n);
    }
    SpscRing<Record> ring(capacity);
    std::thread consumer([&] {
      std::uint64_t got = 0;
      while (got < n) {
        if (ring.front() != nullptr) {
          ++got;
          ring.pop();
        }
      }
    });
    const std::int64_t t0 = monotonic_ns();
    for (std::uint64_t i = 0; i < n; ++i) {
      Record* slot;
      while ((slot = ring.try_claim()) == nullptr) ++full;
      fill(slot, i, channels);
      ring.publish();
    }
    consumer.join();
    ns_streaming = static_cast<double>(monotonic_ns() - t0) / static_cast<double>(n);
  }
  py::dict d;
  d["ns_per_push"] = ns_per_push;
  d["ns_per_record_streaming"] = ns_streaming;
  d["full_retries"] = full;
  d["records"] = n;
  return d;
}

// The floor under any sampler: a thread that only sleeps on absolute
// CLOCK_MONOTONIC deadlines at `rate_hz` (timer slack 1 ns, like the sampler)
// and does nothing else. Returns its CPU time per wall second, in percent.
double sleep_loop_cpu_pct(double rate_hz, double seconds) {
  py::gil_scoped_release nogil;
  double pct = 0;
  std::thread t([&] {
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    const auto period = static_cast<std::int64_t>(1e9 / rate_hz);
    timespec c0{}, c1{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    const std::int64_t start = monotonic_ns();
    const std::int64_t end = start + static_cast<std::int64_t>(seconds * 1e9);
    for (std::int64_t d = start + period; d < end; d += period) {
      const timespec ts = from_ns(d);
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    pct = 100.0 * static_cast<double>(to_ns(c1) - to_ns(c0)) / static_cast<double>(monotonic_ns() - start);
  });
  t.join();
  return pct;
}

}  // namespace

void bind_bench(py::module_& m) {
  py::module_ b = m.def_submodule("bench", "native micro-benchmarks (used by bench/)");
  b.def("sleep_loop_cpu_pct", &sleep_loop_cpu_pct, py::arg("rate_hz") = 1000.0, py::arg("seconds") = 2.0);
  b.def("ring_push", &ring_push, py::arg("n") = 10'000'000, py::arg("capacity") = 65536, py::arg("channels") = 4);
}

}  // namespace jouletrace::py_bind
