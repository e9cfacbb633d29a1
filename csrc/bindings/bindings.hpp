#pragma once

#include <pybind11/pybind11.h>

#include <string>

namespace jouletrace::py_bind {

// The binding of each C++ struct that crosses into Python (SamplerConfig,
// NvmlOptions, RaplOptions, ChannelInfo) is written once, as a class with
// keyword construction, read-only attributes and a repr; every factory takes
// the object (see bind_sampler.cpp and bind_rapl.cpp).

// Python's repr of a value, for the reprs of the bound structs.
template <class T>
std::string py_repr(const T& v) {
  return pybind11::repr(pybind11::cast(v)).template cast<std::string>();
}

void bind_errors(pybind11::module_& m);
void bind_sampler(pybind11::module_& m);
void bind_rapl(pybind11::module_& m);
void bind_bench(pybind11::module_& m);
}  // namespace jouletrace::py_bind
