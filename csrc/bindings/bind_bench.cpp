// Micro-benchmarks of the core that must run without Python in the loop.
#include <pybind11/pybind11.h>

#include <chrono>
#include <thread>

#include "bindings.hpp"
#include "jouletrace/clock.hpp"
#include "jouletrace/record.hpp"
#include "jouletrace/ring.hpp"

namespace py = pybind11;

namespace jouletrace::py_bind {

namespace {

// Producer pushes n records (claim, fill the header and `channels` values,
// publish) while a consumer thread pops them. Returns the producer's ns per
// push and how often it found the ring full (those pushes are retried).
py::dict ring_push(std::uint64_t n, std::size_t capacity, int channels) {
  double ns_per_push = 0;
  std::uint64_t full = 0;
  {
    py::gil_scoped_release nogil;  // pure C++ below
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
      slot->t_before_ns = static_cast<std::int64_t>(i);
      slot->t_after_ns = static_cast<std::int64_t>(i);
      slot->seq = i;
      slot->status = 0;
      for (int c = 0; c < channels; ++c) slot->values[c] = static_cast<double>(i);
      ring.publish();
    }
    const std::int64_t t1 = monotonic_ns();
    consumer.join();
    ns_per_push = static_cast<double>(t1 - t0) / static_cast<double>(n);
  }
  py::dict d;
  d["ns_per_push"] = ns_per_push;
  d["full_retries"] = full;
  d["records"] = n;
  return d;
}

}  // namespace

void bind_bench(py::module_& m) {
  py::module_ b = m.def_submodule("bench", "native micro-benchmarks (used by bench/)");
  b.def("ring_push", &ring_push, py::arg("n") = 10'000'000, py::arg("capacity") = 65536, py::arg("channels") = 4);
}

}  // namespace jouletrace::py_bind
