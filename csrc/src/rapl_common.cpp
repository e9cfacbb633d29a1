// What the three RAPL interfaces share: CPU model and topology, file helpers,
// the errors that carry a fix, the "rapl" choice and the probe.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>

#include "jouletrace/rapl.hpp"
#include "jouletrace/rapl_util.hpp"

namespace jouletrace {

namespace {
std::string join_message(const std::string& why, const std::string& how) {
  if (how.empty()) return why;
  std::string m = why;
  while (!m.empty() && (m.back() == '.' || m.back() == ' ')) m.pop_back();
  return m + ". Fix: " + how;
}
}  // namespace

RaplUnavailable::RaplUnavailable(const std::string& why, const std::string& how)
    : SourceUnavailable(join_message(why, how)), RaplHint{why, how} {}
RaplPermissionDenied::RaplPermissionDenied(const std::string& why, const std::string& how)
    : PermissionDenied(join_message(why, how)), RaplHint{why, how} {}

namespace rapl_detail {

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}
Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

bool read_text(const std::string& path, std::string& out, int* err) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (err) *err = errno;
    return false;
  }
  out.clear();
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (err) *err = errno;
      return false;
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
    if (out.size() > (1u << 22)) break;  // no sysfs or procfs file we read is this big
  }
  if (err) *err = 0;
  return true;
}

std::string trim(const std::string& s) {
  std::size_t b = 0, e = s.size();
  while (b < e && std::strchr(" \t\r\n", s[b]) != nullptr) ++b;
  while (e > b && std::strchr(" \t\r\n", s[e - 1]) != nullptr) --e;
  return s.substr(b, e - b);
}

bool parse_u64(const std::string& text, std::uint64_t& out) {
  const std::string t = trim(text);
  if (t.empty() || t[0] == '-' || t[0] == '+') return false;
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(t.c_str(), &end, 0);
  if (errno != 0 || end == t.c_str() || *end != '\0') return false;
  out = v;
  return true;
}

bool parse_int(const std::string& text, int& out) {
  const std::string t = trim(text);
  if (t.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(t.c_str(), &end, 10);
  if (errno != 0 || end == t.c_str() || *end != '\0' || v < INT32_MIN || v > INT32_MAX) return false;
  out = static_cast<int>(v);
  return true;
}

bool parse_double(const std::string& text, double& out) {
  const std::string t = trim(text);
  if (t.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  if (errno != 0 || end == t.c_str() || *end != '\0') return false;
  out = v;
  return true;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = ::opendir(path.c_str());
  if (d == nullptr) return names;
  while (const dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    names.emplace_back(e->d_name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "<your python executable>";
  return std::string(buf, static_cast<std::size_t>(n));
}

std::string errno_text(int err) {
  const char* name = nullptr;
  switch (err) {
    case EACCES: name = "EACCES"; break;
    case EPERM: name = "EPERM"; break;
    case ENOENT: name = "ENOENT"; break;
    case EIO: name = "EIO"; break;
    case ENXIO: name = "ENXIO"; break;
    case ENODEV: name = "ENODEV"; break;
    case EINVAL: name = "EINVAL"; break;
    case EOPNOTSUPP: name = "EOPNOTSUPP"; break;
    case EMFILE: name = "EMFILE"; break;
    case EBUSY: name = "EBUSY"; break;
    default: break;
  }
  const std::string text = std::strerror(err);
  return name != nullptr ? std::string(name) + " (" + text + ")" : "errno " + std::to_string(err) + " (" + text + ")";
}

}  // namespace rapl_detail

using namespace rapl_detail;

// --- CPU model --------------------------------------------------------------------

std::string CpuModel::describe() const {
  if (vendor.empty()) return "an unknown CPU";
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s family 0x%x model 0x%x", vendor.c_str(), static_cast<unsigned>(family),
                static_cast<unsigned>(model));
  std::string s = buf;
  if (!model_name.empty()) s += " (" + model_name + ")";
  return s;
}

CpuModel read_cpu_model(const std::string& cpuinfo_path) {
  CpuModel m;
  std::string text;
  if (!read_text(cpuinfo_path, text)) return m;
  std::size_t pos = 0;
  bool seen_processor = false;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    const std::string line = text.substr(pos, eol - pos);
    pos = eol + 1;
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) {
      if (seen_processor && trim(line).empty() && !m.vendor.empty()) break;  // end of the first CPU
      continue;
    }
    const std::string key = trim(line.substr(0, colon));
    const std::string value = trim(line.substr(colon + 1));
    if (key == "processor") {
      if (seen_processor) break;
      seen_processor = true;
    } else if (key == "vendor_id") {
      m.vendor = value;
    } else if (key == "cpu family") {
      parse_int(value, m.family);
    } else if (key == "model") {
      parse_int(value, m.model);
    } else if (key == "model name") {
      m.model_name = value;
    } else if (key == "flags") {
      const std::string padded = " " + value + " ";
      m.hypervisor = padded.find(" hypervisor ") != std::string::npos;
    }
  }
  return m;
}

double intel_dram_fixed_unit_j(int family, int model) {
  if (family != 6) return 0.0;
  switch (model) {
    case 0x3F:  // Haswell-EP/EX
    case 0x4F:  // Broadwell-EP/EX
    case 0x55:  // Skylake-SP, Cascade Lake, Cooper Lake
    case 0x6A:  // Ice Lake-SP
    case 0x6C:  // Ice Lake-D
    case 0x57:  // Xeon Phi Knights Landing
    case 0x85:  // Xeon Phi Knights Mill
      return 15.3e-6;
    default:
      return 0.0;
  }
}

double intel_psys_fixed_unit_j(int family, int model) {
  if (family != 6) return 0.0;
  switch (model) {
    case 0x8F:  // Sapphire Rapids
    case 0xCF:  // Emerald Rapids
      return 1.0;
    default:
      return 0.0;
  }
}

// --- topology ---------------------------------------------------------------------

std::vector<int> parse_cpu_list(const std::string& text) {
  std::vector<int> cpus;
  const std::string t = trim(text);
  std::size_t pos = 0;
  while (pos < t.size()) {
    std::size_t comma = t.find(',', pos);
    if (comma == std::string::npos) comma = t.size();
    const std::string item = trim(t.substr(pos, comma - pos));
    pos = comma + 1;
    if (item.empty()) continue;
    const std::size_t dash = item.find('-');
    int lo = 0, hi = 0;
    const bool ok = dash == std::string::npos
                        ? parse_int(item, lo) && (hi = lo, true)
                        : parse_int(item.substr(0, dash), lo) && parse_int(item.substr(dash + 1), hi);
    if (!ok || lo < 0 || hi < lo || hi - lo > 65535) throw InvalidArgument("malformed CPU list '" + text + "'");
    for (int c = lo; c <= hi; ++c) cpus.push_back(c);
  }
  return cpus;
}

std::vector<CpuTopo> read_cpu_topology(const std::string& root) {
  std::vector<CpuTopo> cpus;
  for (const std::string& name : list_dir(root)) {
    if (name.size() < 4 || name.compare(0, 3, "cpu") != 0) continue;
    int cpu = -1;
    if (name.find_first_not_of("0123456789", 3) != std::string::npos || !parse_int(name.substr(3), cpu)) continue;
    const std::string dir = root + "/" + name;
    std::string text;
    if (read_text(dir + "/online", text) && trim(text) == "0") continue;
    CpuTopo t;
    t.cpu = cpu;
    if (!read_text(dir + "/topology/physical_package_id", text) || !parse_int(text, t.package)) continue;
    if (read_text(dir + "/topology/die_id", text)) parse_int(text, t.die);
    if (!read_text(dir + "/topology/core_id", text) || !parse_int(text, t.core)) t.core = cpu;
    cpus.push_back(t);
  }
  std::sort(cpus.begin(), cpus.end(), [](const CpuTopo& a, const CpuTopo& b) { return a.cpu < b.cpu; });
  if (cpus.empty()) {
    throw RaplUnavailable("no CPU topology under " + root +
                              " (cpu<N>/topology/physical_package_id): cannot tell which CPU belongs to which package",
                          "mount sysfs at /sys, or pass cpu_sysfs_root= pointing at it");
  }
  return cpus;
}

// --- the "rapl" choice and the probe --------------------------------------------------

namespace {

std::string vm_note(const RaplOptions& o) {
  const CpuModel m = read_cpu_model(o.cpuinfo_path);
  if (!m.hypervisor) return "";
  return "This is a virtual machine (the hypervisor flag is set in " + o.cpuinfo_path +
         "): hypervisors rarely pass RAPL through, so measure on bare metal or on the host";
}

std::unique_ptr<RaplSource> make_one(const std::string& source, const RaplOptions& options) {
  if (source == "rapl-perf") return std::make_unique<RaplPerfSource>(options);
  if (source == "rapl-msr") return std::make_unique<RaplMsrSource>(options);
  if (source == "rapl-powercap") return std::make_unique<RaplPowercapSource>(options);
  throw InvalidArgument("unknown RAPL source '" + source +
                        "': use rapl (the first that works of perf, msr, powercap), rapl-perf, rapl-msr or rapl-powercap");
}

}  // namespace

namespace {

std::string strip_dot(std::string s) {
  while (!s.empty() && (s.back() == '.' || s.back() == ' ')) s.pop_back();
  return s;
}

// One interface; an unavailable one says so when this is a virtual machine.
std::unique_ptr<RaplSource> make_checked(const std::string& source, const RaplOptions& options, bool add_vm) {
  try {
    return make_one(source, options);
  } catch (const RaplUnavailable& e) {
    const std::string vm = add_vm ? vm_note(options) : std::string();
    if (vm.empty()) throw;
    throw RaplUnavailable(strip_dot(e.reason) + ". " + vm, e.fix);
  }
}

}  // namespace

std::unique_ptr<RaplSource> make_rapl_source(const std::string& source, const RaplOptions& options) {
  if (source != "rapl") return make_checked(source, options, true);
  struct Failure {
    std::string source, reason, fix;
    bool permission;
  };
  std::vector<Failure> failures;
  for (const char* name : {"rapl-perf", "rapl-msr", "rapl-powercap"}) {
    try {
      std::unique_ptr<RaplSource> s = make_checked(name, options, false);
      s->note("rapl.requested", "rapl (perf, then msr, then powercap: the first that works)");
      for (const Failure& f : failures) s->note("rapl.skipped." + f.source, f.reason);
      return s;
    } catch (const RaplPermissionDenied& e) {
      failures.push_back({name, e.reason, e.fix, true});
    } catch (const RaplUnavailable& e) {
      failures.push_back({name, e.reason, e.fix, false});
    } catch (const PermissionDenied& e) {
      failures.push_back({name, e.what(), "", true});
    } catch (const Error& e) {
      failures.push_back({name, e.what(), "", false});
    }
  }
  std::string reason = "no RAPL interface is usable here";
  std::string fix;
  bool permission = false;
  for (const Failure& f : failures) {
    reason += "; " + f.source + ": " + strip_dot(f.reason);
    if (!f.fix.empty()) fix += (fix.empty() ? "" : "; or ") + f.source + ": " + f.fix;
    permission = permission || f.permission;
  }
  const std::string vm = vm_note(options);
  if (!vm.empty()) reason += ". " + vm;
  // A permission problem is the one the user can fix; report it as such.
  if (permission) throw RaplPermissionDenied(reason, fix);
  throw RaplUnavailable(reason, fix);
}

RaplProbe probe_rapl(const std::string& source, const RaplOptions& options) noexcept {
  RaplProbe p;
  try {
    const std::unique_ptr<RaplSource> s = make_rapl_source(source, options);
    p.usable = true;
    p.detail = s->name() + ":";
    for (const ChannelInfo& c : s->channels()) p.detail += " " + c.name;
  } catch (const RaplHint& h) {
    p.reason = h.reason;
    p.fix = h.fix;
  } catch (const std::exception& e) {
    p.reason = e.what();
  } catch (...) {
    p.reason = "unknown error";
  }
  return p;
}

}  // namespace jouletrace
