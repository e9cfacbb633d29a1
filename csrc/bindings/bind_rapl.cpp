// RAPL bindings: the sampler factory, the probe, and the parsing helpers the
// Python layer and the tests use (CPU model, perf PMU description).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "bindings.hpp"
#include "jouletrace/clock.hpp"
#include "jouletrace/rapl.hpp"
#include "jouletrace/sampler.hpp"

namespace py = pybind11;

namespace jouletrace::py_bind {

void bind_rapl(py::module_& m) {
  const RaplOptions dr;  // the C++ defaults are the Python ones
  py::class_<RaplOptions>(m, "RaplOptions",
                          "Where a RAPL source finds its files (every root an option, so tests use fake trees)")
      .def(py::init([](const std::string& dev_cpu_root, const std::string& powercap_root, const std::string& perf_root,
                       const std::string& cpu_sysfs_root, const std::string& cpuinfo_path,
                       const std::string& perf_paranoid_path, unsigned msr_stride) {
             RaplOptions o;
             o.dev_cpu_root = dev_cpu_root;
             o.powercap_root = powercap_root;
             o.perf_root = perf_root;
             o.cpu_sysfs_root = cpu_sysfs_root;
             o.cpuinfo_path = cpuinfo_path;
             o.perf_paranoid_path = perf_paranoid_path;
             o.msr_stride = msr_stride;
             return o;
           }),
           py::kw_only(), py::arg("dev_cpu_root") = dr.dev_cpu_root, py::arg("powercap_root") = dr.powercap_root,
           py::arg("perf_root") = dr.perf_root, py::arg("cpu_sysfs_root") = dr.cpu_sysfs_root,
           py::arg("cpuinfo_path") = dr.cpuinfo_path, py::arg("perf_paranoid_path") = dr.perf_paranoid_path,
           py::arg("msr_stride") = dr.msr_stride)
      .def_readonly("dev_cpu_root", &RaplOptions::dev_cpu_root, "the msr devices: <root>/<cpu>/msr")
      .def_readonly("powercap_root", &RaplOptions::powercap_root, "the powercap zones")
      .def_readonly("perf_root", &RaplOptions::perf_root, "the perf power PMU's sysfs folder")
      .def_readonly("cpu_sysfs_root", &RaplOptions::cpu_sysfs_root, "CPU topology: <root>/cpu<N>/topology")
      .def_readonly("cpuinfo_path", &RaplOptions::cpuinfo_path, "/proc/cpuinfo or a fake of it")
      .def_readonly("perf_paranoid_path", &RaplOptions::perf_paranoid_path, "kernel.perf_event_paranoid")
      .def_readonly("msr_stride", &RaplOptions::msr_stride,
                    "bytes of file offset per MSR number: 1 for the msr driver, 8 for fake msr files")
      .def("__repr__", [](const RaplOptions& o) {
        return "RaplOptions(dev_cpu_root=" + py_repr(o.dev_cpu_root) + ", powercap_root=" + py_repr(o.powercap_root) +
               ", perf_root=" + py_repr(o.perf_root) + ", cpu_sysfs_root=" + py_repr(o.cpu_sysfs_root) +
               ", cpuinfo_path=" + py_repr(o.cpuinfo_path) + ", perf_paranoid_path=" + py_repr(o.perf_paranoid_path) +
               ", msr_stride=" + std::to_string(o.msr_stride) + ")";
      });

  m.def(
      "rapl_sampler",
      [](const std::string& source, const RaplOptions& options, const SamplerConfig& config) {
        // Copies made with the GIL held; discovery below only touches files and
        // system calls, never Python objects, so other Python threads may run
        // meanwhile.
        const RaplOptions o = options;
        const SamplerConfig c = config;
        py::gil_scoped_release nogil;
        return std::make_unique<Sampler>(make_rapl_source(source, o), c);
      },
      "A native Sampler over a RAPL source (rapl, rapl-perf, rapl-msr, rapl-powercap)", py::arg("source"),
      py::arg("options") = RaplOptions(), py::arg("config") = SamplerConfig());

  m.def(
      "rapl_probe",
      [](const std::string& source, const RaplOptions& options) {
        const RaplOptions o = options;
        RaplProbe p;
        {
          py::gil_scoped_release nogil;  // files and system calls only; never throws
          p = probe_rapl(source, o);
        }
        return py::make_tuple(p.usable, p.reason, p.fix, p.detail);
      },
      "(usable, reason, fix, detail) for one RAPL source; never raises", py::arg("source"),
      py::arg("options") = RaplOptions());

  m.def(
      "rapl_read_cost",
      [](const std::string& source, std::uint64_t n, const RaplOptions& options) {
        const RaplOptions o = options;
        double ns = 0;
        std::string name;
        std::size_t channels = 0;
        {
          py::gil_scoped_release nogil;  // pure C++ below
          std::unique_ptr<RaplSource> s = make_rapl_source(source, o);
          name = s->name();
          channels = s->channels().size();
          ErrorSlot errors;
          double out[kMaxChannels];
          const std::int64_t t0 = monotonic_ns();
          for (std::uint64_t i = 0; i < n; ++i) s->read(out, errors);
          const std::int64_t t1 = monotonic_ns();
          ns = n == 0 ? 0.0 : static_cast<double>(t1 - t0) / static_cast<double>(n);
        }
        py::dict d;
        d["source"] = name;
        d["channels"] = channels;
        d["reads"] = n;
        d["ns_per_read"] = ns;
        return d;
      },
      "Time n back-to-back reads of a RAPL source (no sampler): ns per read", py::arg("source"),
      py::arg("n") = 100000, py::arg("options") = RaplOptions());

  m.def(
      "rapl_cpu_model",
      [](const std::string& cpuinfo_path) {
        const CpuModel c = read_cpu_model(cpuinfo_path);
        py::dict d;
        d["vendor"] = c.vendor;
        d["family"] = c.family;
        d["model"] = c.model;
        d["model_name"] = c.model_name;
        d["hypervisor"] = c.hypervisor;
        d["amd_rapl"] = c.amd_rapl();
        d["dram_fixed_unit_j"] = c.intel() ? intel_dram_fixed_unit_j(c.family, c.model) : 0.0;
        d["psys_fixed_unit_j"] = c.intel() ? intel_psys_fixed_unit_j(c.family, c.model) : 0.0;
        return d;
      },
      "What /proc/cpuinfo (or a fake of it) says about the CPU, for the RAPL unit tables",
      py::arg("cpuinfo_path") = "/proc/cpuinfo");

  m.def(
      "rapl_parse_perf_pmu",
      [](const std::string& perf_root) {
        const PerfPmuSpec s = parse_perf_power_pmu(perf_root);
        py::dict d;
        d["type"] = s.type;
        d["cpus"] = s.cpus;
        py::list events;
        for (const PerfEventSpec& e : s.events) {
          py::dict ev;
          ev["event"] = e.event;
          ev["domain"] = e.domain;
          ev["config"] = e.config;
          ev["scale"] = e.scale;
          ev["unit"] = e.unit;
          events.append(ev);
        }
        d["events"] = events;
        return d;
      },
      "The power PMU's type, cpumask and RAPL events (config, scale, unit) from its sysfs folder",
      py::arg("perf_root") = "/sys/bus/event_source/devices/power");

  m.def(
      "rapl_perf_open_failure",
      [](int err, int paranoid, const std::string& what, const std::string& exe) {
        const RaplHint h = perf_open_failure(err, paranoid, what, exe);
        return py::make_tuple(h.reason, h.fix);
      },
      "(reason, fix) for a perf_event_open failure with errno `err` at a paranoid level", py::arg("err"),
      py::arg("paranoid"), py::arg("what") = "perf_event_open", py::arg("exe") = "python");
}

}  // namespace jouletrace::py_bind
