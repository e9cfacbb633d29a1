#pragma once

#include <pybind11/pybind11.h>

namespace jouletrace::py_bind {
void bind_errors(pybind11::module_& m);
void bind_sampler(pybind11::module_& m);
void bind_rapl(pybind11::module_& m);
void bind_bench(pybind11::module_& m);
}  // namespace jouletrace::py_bind
