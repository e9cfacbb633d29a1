#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>

#include "jouletrace/sampler.hpp"

namespace jouletrace::py_bind {

// The sampler settings every Sampler factory takes, in the same keyword order.
inline SamplerConfig sampler_config(double rate_hz, std::size_t ring_capacity, std::int64_t spin_ns,
                                    std::int64_t drain_period_ns, std::size_t max_records) {
  SamplerConfig c;
  c.rate_hz = rate_hz;
  c.ring_capacity = ring_capacity;
  c.spin_ns = spin_ns;
  c.drain_period_ns = drain_period_ns;
  c.max_records = max_records;
  return c;
}

void bind_errors(pybind11::module_& m);
void bind_sampler(pybind11::module_& m);
void bind_rapl(pybind11::module_& m);
void bind_bench(pybind11::module_& m);
}  // namespace jouletrace::py_bind
