// Sampler bindings and the zero-copy hand-off of sample columns to numpy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "jouletrace/nvml_source.hpp"
#include "jouletrace/sampler.hpp"

namespace py = pybind11;

namespace jouletrace::py_bind {

namespace {

// A read-only 1-D view of `n` elements at `data`, whose base is `owner` (a
// capsule holding the ColumnStore alive). pybind11 does not copy when a base
// is given; numpy then reports OWNDATA=False and the base chain ends here.
template <class T>
py::array view(const T* data, std::size_t n, const py::object& owner) {
  py::array_t<T> a({static_cast<py::ssize_t>(n)}, {static_cast<py::ssize_t>(sizeof(T))}, data, owner);
  py::detail::array_proxy(a.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  return std::move(a);
}

py::dict columns(const Sampler& s) {
  auto store = s.store();
  const std::size_t n = store->size();  // acquire: elements [0, n) are complete
  // The capsule owns one reference to the store; every array below shares it.
  auto* keep = new std::shared_ptr<const ColumnStore>(store);
  py::capsule owner(keep, [](void* p) { delete static_cast<std::shared_ptr<const ColumnStore>*>(p); });
  py::dict d;
  d["t_ns"] = view(store->t_ns(), n, owner);
  d["t_before_ns"] = view(store->t_before_ns(), n, owner);
  d["t_after_ns"] = view(store->t_after_ns(), n, owner);
  d["seq"] = view(store->seq(), n, owner);
  d["status"] = view(store->status(), n, owner);
  py::dict values;
  const auto& ch = s.source().channels();
  for (std::size_t i = 0; i < ch.size(); ++i) values[py::str(ch[i].name)] = view(store->channel(i), n, owner);
  d["values"] = values;
  return d;
}

}  // namespace

void bind_sampler(py::module_& m) {
  py::class_<Sampler>(m, "Sampler", "One native sampling thread over one source (see jouletrace.Sampler)")
      .def_static(
          "nvml",
          [](const std::string& library, const std::vector<int>& gpus, bool timestamps, const std::string& source_name,
             double rate_hz, std::size_t ring_capacity, std::int64_t spin_ns, std::int64_t drain_period_ns,
             std::size_t max_records) {
            NvmlOptions o;
            o.library = library;
            o.gpus = gpus;
            o.timestamps = timestamps;
            o.source_name = source_name;
            const SamplerConfig c = sampler_config(rate_hz, ring_capacity, spin_ns, drain_period_ns, max_records);
            // Arguments are converted; NVML init may block on the driver, so
            // let other Python threads run meanwhile. Nothing here touches
            // Python objects.
            py::gil_scoped_release nogil;
            return std::make_unique<Sampler>(std::make_unique<NvmlSource>(o), c);
          },
          py::arg("library") = "", py::arg("gpus") = std::vector<int>{}, py::arg("timestamps") = true,
          py::arg("source_name") = "nvml", py::arg("rate_hz") = 1000.0, py::arg("ring_capacity") = 0,
          py::arg("spin_ns") = -1, py::arg("drain_period_ns") = 0, py::arg("max_records") = 0)
      // start/stop create and join threads: release the GIL so a Python
      // thread can run while we wait (the sampler threads never take it).
      .def("start", &Sampler::start, py::call_guard<py::gil_scoped_release>())
      .def("stop", &Sampler::stop, py::call_guard<py::gil_scoped_release>())
      .def("drain", &Sampler::drain, py::call_guard<py::gil_scoped_release>())
      .def("set_drain_paused", &Sampler::set_drain_paused)
      .def("inject_for_test", &Sampler::inject_for_test, py::arg("n"), py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("running", &Sampler::running)
      .def_property_readonly("source_name", [](const Sampler& s) { return s.source().name(); })
      .def_property_readonly("channels",
                             [](const Sampler& s) {
                               std::vector<std::pair<std::string, bool>> out;
                               for (const auto& c : s.source().channels()) out.emplace_back(c.name, c.cumulative);
                               return out;
                             })
      .def_property_readonly("metadata", [](const Sampler& s) { return s.source().metadata(); })
      .def_property_readonly("config",
                             [](const Sampler& s) {
                               const auto& c = s.config();
                               py::dict d;
                               d["rate_hz"] = c.rate_hz;
                               d["ring_capacity"] = c.ring_capacity;
                               d["spin_ns"] = c.spin_ns;
                               d["drain_period_ns"] = c.drain_period_ns;
                               d["max_records"] = c.max_records;
                               return d;
                             })
      .def_property_readonly("reads", &Sampler::reads)
      .def_property_readonly("dropped_ring", &Sampler::dropped_ring)
      .def_property_readonly("dropped_storage", &Sampler::dropped_storage)
      .def_property_readonly("missed_deadlines", &Sampler::missed_deadlines)
      .def_property_readonly("size", [](const Sampler& s) { return s.store()->size(); })
      .def_property_readonly("committed_bytes", [](const Sampler& s) { return s.store()->committed_bytes(); })
      // The store is shared (a capsule may own it too); releasing only zeroes published pages.
      .def("release_before", [](Sampler& s, std::size_t n) { std::const_pointer_cast<ColumnStore>(s.store())->release_before(n); },
           py::arg("n"), py::call_guard<py::gil_scoped_release>(),
           "Give back the memory of records [0, n) (whole pages); views over them read zeros afterwards")
      .def_property_readonly("reserved_bytes", [](const Sampler& s) { return s.store()->reserved_bytes(); })
      .def("error",
           [](const Sampler& s) -> py::object {
             const ErrorKind k = s.errors().kind();
             if (k == kErrorNone) return py::none();
             return py::make_tuple(static_cast<int>(k), s.errors().message());
           })
      .def("clock_pairs",
           [](const Sampler& s, std::size_t start) {
             const auto pairs = s.clock_pairs(start);
             py::array_t<std::int64_t> a({static_cast<py::ssize_t>(pairs.size()), static_cast<py::ssize_t>(3)});
             auto w = a.mutable_unchecked<2>();
             for (std::size_t i = 0; i < pairs.size(); ++i) {
               const auto r = static_cast<py::ssize_t>(i);
               w(r, 0) = pairs[i].monotonic_ns;
               w(r, 1) = pairs[i].realtime_ns;
               w(r, 2) = pairs[i].uncertainty_ns;
             }
             return a;
           },
           py::arg("start") = 0)
      .def_property_readonly("clock_pairs_taken", &Sampler::clock_pairs_taken)
      .def_property_readonly("clock_pairs_released", &Sampler::clock_pairs_released)
      .def("release_clock_pairs_before", &Sampler::release_clock_pairs_before, py::arg("n"),
           "Give back clock pairs [0, n) (numbered from the first taken); clock_pairs(start) leaves them out")
      .def("add_clock_pair_for_test",
           [](Sampler& s, std::int64_t mono, std::int64_t real, std::int64_t unc) {
             if (unc < 0) throw InvalidArgument("add_clock_pair_for_test: uncertainty_ns must be >= 0");
             s.add_clock_pair_for_test(ClockPair{mono, real, unc});
           },
           py::arg("monotonic_ns"), py::arg("realtime_ns"), py::arg("uncertainty_ns"))
      .def("columns", &columns,
           "Read-only numpy views of every published record (no copy; the views keep the memory alive)");

  m.def("nvml_library_path", &nvml_library_path, py::arg("library") = "");
  m.def("monotonic_ns", &monotonic_ns);
  m.def("take_clock_pair", [] {
    const ClockPair p = take_clock_pair();
    return py::make_tuple(p.monotonic_ns, p.realtime_ns, p.uncertainty_ns);
  });
}

}  // namespace jouletrace::py_bind
