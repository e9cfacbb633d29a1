// rapl-perf: the kernel's `power` perf PMU (perf_event_open).
//
// The PMU's sysfs folder (/sys/bus/event_source/devices/power) gives its
// `type`, a `cpumask` with one CPU per package, the `format/` of the config
// fields and `events/`: energy-pkg, energy-cores, energy-gpu (uncore/PP1),
// energy-ram (DRAM) and energy-psys, each with a `.scale` (joules per count,
// 2^-32 typically; the kernel already applies the fixed DRAM unit of the
// server models) and a `.unit` ("Joules"). One event is opened per package and
// domain (psys once) and read with read(): a 64-bit count that the kernel
// keeps unwrapped, counting from zero at open.
//
// CPU-wide events need kernel.perf_event_paranoid <= 0 or CAP_PERFMON.
#include <linux/perf_event.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "jouletrace/rapl.hpp"
#include "jouletrace/rapl_util.hpp"

namespace jouletrace {

using namespace rapl_detail;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct KnownEvent {
  const char* event;
  const char* domain;
};
constexpr KnownEvent kKnown[] = {
    {"energy-pkg", "package"}, {"energy-cores", "core"}, {"energy-gpu", "uncore"},
    {"energy-ram", "dram"},    {"energy-psys", "psys"},
};

int domain_rank(const std::string& d) {
  for (std::size_t i = 0; i < sizeof kKnown / sizeof kKnown[0]; ++i) {
    if (d == kKnown[i].domain) return static_cast<int>(i);
  }
  return 99;
}

std::string read_required(const std::string& path, const std::string& root) {
  std::string t;
  int err = 0;
  if (!read_text(path, t, &err)) {
    throw RaplUnavailable(path + " cannot be read (" + errno_text(err) + "): " + root +
                              " is not a complete perf PMU folder",
                          "");
  }
  return trim(t);
}

long perf_event_open(perf_event_attr* attr, int cpu) {
  return ::syscall(__NR_perf_event_open, attr, -1 /* any process */, cpu, -1 /* no group */,
                   PERF_FLAG_FD_CLOEXEC);
}

}  // namespace

std::uint64_t perf_event_config(const std::string& event_text,
                                const std::vector<std::pair<std::string, std::string>>& formats) {
  std::uint64_t config = 0;
  const std::string text = trim(event_text);
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    const std::string term = trim(text.substr(pos, comma - pos));
    pos = comma + 1;
    if (term.empty()) continue;
    const std::size_t eq = term.find('=');
    const std::string key = trim(term.substr(0, eq));
    std::uint64_t value = 1;
    if (eq != std::string::npos && !parse_u64(term.substr(eq + 1), value)) {
      throw InvalidArgument("perf event term '" + term + "' in '" + event_text + "' has no number");
    }
    std::string format;
    for (const auto& [name, spec] : formats) {
      if (name == key) format = trim(spec);
    }
    if (format.empty()) {
      if (key == "event" || key == "config") {
        format = "config:0-63";  // no format/ folder: the value is the config
      } else {
        throw InvalidArgument("perf event term '" + key + "' has no format/ entry in the PMU");
      }
    }
    const std::size_t colon = format.find(':');
    if (colon == std::string::npos || trim(format.substr(0, colon)) != "config") {
      throw InvalidArgument("perf format '" + format + "' of '" + key + "' is not in config (config1/config2 unsupported)");
    }
    // "config:0-7" or "config:0-7,32-35" or "config:5": value bits fill the ranges in order.
    std::uint64_t rest = value;
    for (int bit : parse_cpu_list(format.substr(colon + 1))) {
      if (bit > 63) throw InvalidArgument("perf format '" + format + "' names bit " + std::to_string(bit));
      config |= (rest & 1u) << bit;
      rest >>= 1;
    }
    if (rest != 0) throw InvalidArgument("perf event term '" + term + "' does not fit its format '" + format + "'");
  }
  return config;
}

PerfPmuSpec parse_perf_power_pmu(const std::string& root) {
  if (!is_dir(root)) {
    throw RaplUnavailable(root + " does not exist: the kernel offers no RAPL perf PMU (`power`) on this machine",
                          "RAPL perf events need an Intel CPU with RAPL (Linux 3.14+) or AMD family 17h+ (Linux 5.8+) "
                          "and CONFIG_PERF_EVENTS_INTEL_RAPL");
  }
  PerfPmuSpec spec;
  std::uint64_t type = 0;
  const std::string type_text = read_required(root + "/type", root);
  if (!parse_u64(type_text, type) || type > UINT32_MAX) {
    throw InvalidArgument(root + "/type is not a PMU type number: '" + type_text + "'");
  }
  spec.type = static_cast<std::uint32_t>(type);
  spec.cpus = parse_cpu_list(read_required(root + "/cpumask", root));
  if (spec.cpus.empty()) throw RaplUnavailable(root + "/cpumask is empty: the PMU has no CPU to count on", "");

  std::vector<std::pair<std::string, std::string>> formats;
  for (const std::string& f : list_dir(root + "/format")) {
    std::string t;
    if (read_text(root + "/format/" + f, t)) formats.emplace_back(f, trim(t));
  }
  const std::string events_dir = root + "/events";
  const std::vector<std::string> names = list_dir(events_dir);
  for (const std::string& n : names) {
    if (n.find('.') != std::string::npos) continue;  // .scale, .unit, .snapshot, ...
    std::string domain;
    for (const KnownEvent& k : kKnown) {
      if (n == k.event) domain = k.domain;
    }
    if (domain.empty()) continue;
    PerfEventSpec e;
    e.event = n;
    e.domain = domain;
    e.config = perf_event_config(read_required(events_dir + "/" + n, root), formats);
    std::string t;
    if (!read_text(events_dir + "/" + n + ".scale", t) || !parse_double(t, e.scale) || !(e.scale > 0)) {
      throw InvalidArgument(events_dir + "/" + n + ".scale is missing or not a positive number");
    }
    if (read_text(events_dir + "/" + n + ".unit", t)) e.unit = trim(t);
    if (!e.unit.empty() && e.unit != "Joules") {
      throw InvalidArgument(events_dir + "/" + n + ".unit is '" + e.unit + "', not Joules");
    }
    spec.events.push_back(e);
  }
  if (spec.events.empty()) {
    throw RaplUnavailable(root + "/events lists no RAPL energy event (energy-pkg, energy-cores, energy-ram, ...)", "");
  }
  std::stable_sort(spec.events.begin(), spec.events.end(),
                   [](const PerfEventSpec& a, const PerfEventSpec& b) { return domain_rank(a.domain) < domain_rank(b.domain); });
  return spec;
}

RaplHint perf_open_failure(int err, int paranoid, const std::string& what, const std::string& exe) {
  RaplHint h;
  const std::string level = paranoid == INT_MIN ? std::string("unknown (unreadable)") : std::to_string(paranoid);
  const std::string sysctl =
      "`sudo sysctl kernel.perf_event_paranoid=0` (to keep it: `echo kernel.perf_event_paranoid=0 | sudo tee "
      "/etc/sysctl.d/99-jouletrace.conf`)";
  const std::string setcap = setcap_fix("cap_perfmon", exe);
  if (paranoid != INT_MIN && paranoid <= 0) {
    h.reason = what + " failed with " + errno_text(err) + " although kernel.perf_event_paranoid is " + level +
               ": a security module (SELinux, AppArmor, lockdown) or a container's seccomp policy refuses "
               "perf_event_open";
    h.fix = "allow perf_event_open for this process (in a container: --cap-add PERFMON, or a seccomp profile that "
            "permits it), or grant the interpreter CAP_PERFMON: " + setcap;
  } else {
    h.reason = what + " failed with " + errno_text(err) + ": kernel.perf_event_paranoid is " + level +
               ", and CPU-wide events such as RAPL need 0 or lower, or CAP_PERFMON";
    h.fix = sysctl + ", or grant the interpreter CAP_PERFMON: " + setcap;
  }
  return h;
}

struct RaplPerfSource::Event {
  int fd = -1;
  double scale = 0;
};

RaplPerfSource::RaplPerfSource(const RaplOptions& o) {
  const PerfPmuSpec spec = parse_perf_power_pmu(o.perf_root);

  // cpumask CPU -> device name; the package from the topology.
  std::map<int, CpuTopo> topo_of;
  try {
    for (const CpuTopo& t : read_cpu_topology(o.cpu_sysfs_root)) topo_of[t.cpu] = t;
  } catch (const Error&) {
    // Without topology the n-th cpumask CPU stands for package n.
  }
  std::map<int, int> per_package;
  for (int c : spec.cpus) {
    if (auto it = topo_of.find(c); it != topo_of.end()) ++per_package[it->second.package];
  }
  std::vector<std::string> device(spec.cpus.size());
  for (std::size_t i = 0; i < spec.cpus.size(); ++i) {
    const auto it = topo_of.find(spec.cpus[i]);
    if (it == topo_of.end()) {
      device[i] = "cpu" + std::to_string(i);
    } else if (per_package[it->second.package] > 1) {  // one CPU per die: name the die
      device[i] = "cpu" + std::to_string(it->second.package) + "die" + std::to_string(it->second.die);
    } else {
      device[i] = "cpu" + std::to_string(it->second.package);
    }
  }

  struct CloseOnThrow {
    std::vector<Event>& events;
    bool armed = true;
    ~CloseOnThrow() {
      if (!armed) return;
      for (const Event& e : events) ::close(e.fd);
      events.clear();
    }
  } guard{events_};

  int paranoid = INT_MIN;
  {
    std::string t;
    if (read_text(o.perf_paranoid_path, t)) parse_int(t, paranoid);
  }
  note("rapl.interface", "perf (power PMU type " + std::to_string(spec.type) + ", " + o.perf_root + ")");
  std::string first_failure;
  int first_errno = 0;
  // Packages in order, their domains in order, psys (from the first CPU only) last.
  auto open_one = [&](const PerfEventSpec& e, std::size_t i) {
    const std::string channel = e.domain == "psys" ? "psys.energy_j" : device[i] + "." + e.domain + ".energy_j";
    perf_event_attr attr;
    std::memset(&attr, 0, sizeof attr);
    attr.type = spec.type;
    attr.size = sizeof attr;
    attr.config = e.config;
    const int cpu = spec.cpus[i];
    const long fd = perf_event_open(&attr, cpu);
    const std::string what = "perf_event_open(power/" + e.event + "/, cpu " + std::to_string(cpu) + ")";
    if (fd < 0) {
      const int err = errno;
      if (err == EACCES || err == EPERM) {
        const RaplHint h = perf_open_failure(err, paranoid, what, self_exe());
        throw RaplPermissionDenied(h.reason, h.fix);
      }
      if (err == EMFILE || err == ENFILE) {
        throw RaplUnavailable(what + " failed with " + errno_text(err) + ": out of file descriptors",
                              "raise the open-file limit (ulimit -n)");
      }
      // ENOENT, EINVAL, EOPNOTSUPP, ENODEV: this event does not count here.
      note(channel.substr(0, channel.size() - 9) + ".perf", what + " failed with " + errno_text(err) + ": left out");
      if (first_failure.empty()) {
        first_failure = what + " failed with " + errno_text(err);
        first_errno = err;
      }
      return;
    }
    Event ev;
    ev.fd = static_cast<int>(fd);
    ev.scale = e.scale;
    events_.push_back(ev);
    // The kernel keeps a 64-bit count (it unwraps the 32-bit register itself).
    channels_.push_back(ChannelInfo{channel, true, 64, std::ldexp(e.scale, 64)});
    char scale[40];
    std::snprintf(scale, sizeof scale, "%.17g", e.scale);
    note(channel.substr(0, channel.size() - 9) + ".perf", "power/" + e.event + "/ config " + std::to_string(e.config) +
                                                               " on cpu " + std::to_string(cpu) + ", scale " + scale +
                                                               " J");
  };
  for (std::size_t i = 0; i < spec.cpus.size(); ++i) {
    for (const PerfEventSpec& e : spec.events) {
      if (e.domain != "psys") open_one(e, i);
    }
  }
  for (const PerfEventSpec& e : spec.events) {
    if (e.domain == "psys") open_one(e, 0);
  }
  if (channels_.empty()) {
    throw RaplUnavailable("no RAPL perf event could be opened: " + first_failure +
                              (first_errno == ENOENT ? " (no PMU of type " + std::to_string(spec.type) + " in this kernel)"
                                               : std::string()),
                          "");
  }
  if (channels_.size() > kMaxChannels) {
    throw InvalidArgument(std::to_string(channels_.size()) + " RAPL channels exceed the " +
                          std::to_string(kMaxChannels) + " one sampler can carry");
  }
  note("rapl.note", "core and uncore are parts of package; dram is not; psys is the whole platform: do not add them up");
  guard.armed = false;
}

RaplPerfSource::~RaplPerfSource() {
  for (const Event& e : events_) ::close(e.fd);
}

std::int32_t RaplPerfSource::read(double* out, ErrorSlot& errors) noexcept {
  std::int32_t status = kStatusOk;
  for (std::size_t i = 0; i < events_.size(); ++i) {
    std::uint64_t count = 0;
    const ssize_t n = ::read(events_[i].fd, &count, sizeof count);
    if (n == static_cast<ssize_t>(sizeof count)) {
      out[i] = static_cast<double>(count) * events_[i].scale;
      continue;
    }
    out[i] = kNaN;
    status = kStatusPartial;
    if (n < 0 && errno == ENODEV) {
      errors.report(kErrorUnavailable, "a RAPL perf event stopped counting (its CPU went offline): channel %zu reads "
                                       "NaN from then on", i);
    }
  }
  return status;
}

}  // namespace jouletrace
