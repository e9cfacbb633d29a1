// The extension module: only calls the bind_* functions, one per area.
#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "jouletrace native core: sampler threads, SPSC ring, zero-copy sample columns";
  jouletrace::py_bind::bind_errors(m);
  jouletrace::py_bind::bind_sampler(m);
  jouletrace::py_bind::bind_rapl(m);
  jouletrace::py_bind::bind_bench(m);
}
