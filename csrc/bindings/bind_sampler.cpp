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
  const SamplerConfig dc;  // the C++ defaults are the Python ones
  py::class_<SamplerConfig>(m, "SamplerConfig",
                            "How a Sampler samples: rate, ring, spin, drain period, storage bound (0 or -1 = auto), "
                            "and whether its thread asks for a short scheduling slice")
      .def(py::init([](double rate_hz, std::size_t ring_capacity, std::int64_t spin_ns, std::int64_t drain_period_ns,
                       std::size_t max_records, bool wake_slice) {
             SamplerConfig c;
             c.rate_hz = rate_hz;
             c.ring_capacity = ring_capacity;
             c.spin_ns = spin_ns;
             c.drain_period_ns = drain_period_ns;
             c.max_records = max_records;
             c.wake_slice = wake_slice;
             return c;
           }),
           py::kw_only(), py::arg("rate_hz") = dc.rate_hz, py::arg("ring_capacity") = dc.ring_capacity,
           py::arg("spin_ns") = dc.spin_ns, py::arg("drain_period_ns") = dc.drain_period_ns,
           py::arg("max_records") = dc.max_records, py::arg("wake_slice") = dc.wake_slice)
      .def_readonly("rate_hz", &SamplerConfig::rate_hz, "samples per second, 1 .. 100000")
      .def_readonly("ring_capacity", &SamplerConfig::ring_capacity, "records; 0 = about one second, a power of two")
      .def_readonly("spin_ns", &SamplerConfig::spin_ns, "busy-wait before each deadline; -1 = auto")
      .def_readonly("drain_period_ns", &SamplerConfig::drain_period_ns, "ring to storage every ...; 0 = auto")
      .def_readonly("max_records", &SamplerConfig::max_records, "storage bound; 0 = a week at rate_hz, capped")
      .def_readonly("wake_slice", &SamplerConfig::wake_slice,
                    "the sampler thread asks the kernel for a short scheduling slice (ARCHITECTURE.md)")
      .def("to_dict",
           [](const SamplerConfig& c) {
             py::dict d;
             d["rate_hz"] = c.rate_hz;
             d["ring_capacity"] = c.ring_capacity;
             d["spin_ns"] = c.spin_ns;
             d["drain_period_ns"] = c.drain_period_ns;
             d["max_records"] = c.max_records;
             d["wake_slice"] = c.wake_slice;
             return d;
           })
      .def("__eq__",
           [](const SamplerConfig& a, const SamplerConfig& b) {
             return a.rate_hz == b.rate_hz && a.ring_capacity == b.ring_capacity && a.spin_ns == b.spin_ns &&
                    a.drain_period_ns == b.drain_period_ns && a.max_records == b.max_records &&
                    a.wake_slice == b.wake_slice;
           },
           py::is_operator())
      .def("__repr__", [](const SamplerConfig& c) {
        return "SamplerConfig(rate_hz=" + py_repr(c.rate_hz) + ", ring_capacity=" + std::to_string(c.ring_capacity) +
               ", spin_ns=" + std::to_string(c.spin_ns) + ", drain_period_ns=" + std::to_string(c.drain_period_ns) +
               ", max_records=" + std::to_string(c.max_records) + ", wake_slice=" + (c.wake_slice ? "True" : "False") +
               ")";
      });

  const NvmlOptions dn;
  py::class_<NvmlOptions>(m, "NvmlOptions", "Which NVML library and GPUs an NVML source reads, and what it calls itself")
      .def(py::init([](const std::string& library, const std::vector<int>& gpus, bool timestamps,
                       const std::string& source_name) {
             NvmlOptions o;
             o.library = library;
             o.gpus = gpus;
             o.timestamps = timestamps;
             o.source_name = source_name;
             return o;
           }),
           py::kw_only(), py::arg("library") = dn.library, py::arg("gpus") = dn.gpus,
           py::arg("timestamps") = dn.timestamps, py::arg("source_name") = dn.source_name)
      .def_readonly("library", &NvmlOptions::library, "path of the NVML library; '' = $JOULETRACE_NVML_LIBRARY or "
                                                      "libnvidia-ml.so.1")
      .def_readonly("gpus", &NvmlOptions::gpus, "NVML indices; empty = all")
      .def_readonly("timestamps", &NvmlOptions::timestamps, "also record NVML's own per-field timestamps")
      .def_readonly("source_name", &NvmlOptions::source_name, "the source's name in recordings ('nvml', 'sim', ...)")
      .def("__repr__", [](const NvmlOptions& o) {
        return "NvmlOptions(library=" + py_repr(o.library) + ", gpus=" + py_repr(o.gpus) +
               ", timestamps=" + py_repr(o.timestamps) + ", source_name=" + py_repr(o.source_name) + ")";
      });

  py::class_<ChannelInfo>(m, "ChannelInfo",
                          "One channel of a source: its name, whether it is a counter, and the counter's width")
      .def_readonly("name", &ChannelInfo::name, "<device>.<quantity>_<unit>")
      .def_readonly("cumulative", &ChannelInfo::cumulative, "a counter (energy) rather than a level (power)")
      .def_readonly("counter_bits", &ChannelInfo::counter_bits,
                    "width of the hardware counter (bits its range needs); 0 for a level or when unknown")
      .def_readonly("wrap_j", &ChannelInfo::wrap_j, "energy after which the hardware counter wraps (J); 0 = unknown")
      .def("__repr__", [](const ChannelInfo& c) {
        return "ChannelInfo(name=" + py_repr(c.name) + ", cumulative=" + py_repr(c.cumulative) +
               ", counter_bits=" + std::to_string(c.counter_bits) + ", wrap_j=" + py_repr(c.wrap_j) + ")";
      });

  py::class_<Sampler>(m, "Sampler", "One native sampling thread over one source (see jouletrace.Sampler)")
      .def_static(
          "nvml",
          [](const NvmlOptions& options, const SamplerConfig& config) {
            // Copies of the arguments, made with the GIL held; NVML init may block
            // on the driver, so let other Python threads run meanwhile. Nothing
            // below touches Python objects.
            NvmlOptions o = options;
            SamplerConfig c = config;
            py::gil_scoped_release nogil;
            return std::make_unique<Sampler>(std::make_unique<NvmlSource>(o), c);
          },
          "A native Sampler over NVML (or a library with its exports, such as the simulated GPU)",
          py::arg("options") = NvmlOptions(), py::arg("config") = SamplerConfig())
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
      .def_property_readonly("channel_info", [](const Sampler& s) { return s.source().channels(); },
                             "Every channel with its counter width, as the source publishes it")
      .def_property_readonly("metadata", [](const Sampler& s) { return s.source().metadata(); })
      .def_property_readonly("config", [](const Sampler& s) { return s.config(); },
                             "The settings in force (the auto ones resolved), a copy")
      .def_property_readonly("reads", &Sampler::reads)
      .def_property_readonly("dropped_ring", &Sampler::dropped_ring)
      .def_property_readonly("dropped_storage", &Sampler::dropped_storage)
      .def_property_readonly("missed_deadlines", &Sampler::missed_deadlines)
      .def_property_readonly("wake_slice_ns", &Sampler::wake_slice_ns,
                             "The scheduling slice the kernel granted the sampler thread (ARCHITECTURE.md), 0 if none")
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
