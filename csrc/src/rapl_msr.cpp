// rapl-msr: the RAPL energy status MSRs read with pread on /dev/cpu/<cpu>/msr.
//
// Intel (family 6): unit 0x606 (energy status unit, bits 12:8: 1/2^ESU J),
// package 0x611, core/PP0 0x639, uncore/PP1 0x641, DRAM 0x619 (a fixed
// 15.3 uJ unit on the server models of intel_dram_fixed_unit_j), psys 0x64D
// (platform: read once, from the first package).
// AMD family 17h+ and Hygon 18h: unit 0xC0010299, package 0xC001029B, and the
// per-core 0xC001029A, summed here over the cores of each package.
//
// One CPU per package (the lowest-numbered) reads the package-wide registers;
// on AMD one thread per core reads the core register. Every counter is 32
// bits wide and unwrapped on each read. A domain that fails to read (EIO) or
// reads 0 at construction is not supported by this CPU and is left out.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "jouletrace/rapl.hpp"
#include "jouletrace/rapl_util.hpp"

namespace jouletrace {

using namespace rapl_detail;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr std::uint64_t kMask32 = 0xFFFFFFFFu;

constexpr std::uint32_t kIntelUnit = 0x606, kIntelPkg = 0x611, kIntelPP0 = 0x639, kIntelPP1 = 0x641,
                        kIntelDram = 0x619, kIntelPsys = 0x64D;
constexpr std::uint32_t kAmdUnit = 0xC0010299u, kAmdCore = 0xC001029Au, kAmdPkg = 0xC001029Bu;

std::string hex(std::uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%X", v);
  return b;
}

std::string fmt_unit(double j) {
  char b[40];
  std::snprintf(b, sizeof b, "%.9g", j);
  return b;
}

}  // namespace

struct RaplMsrSource::Counter {
  int fd = -1;
  int cpu = -1;
  off_t offset = 0;
  WrapCounter wrap;
  bool ok = true;
};

struct RaplMsrSource::Channel {
  std::size_t first = 0;  // counters_[first, first + count) are summed
  std::size_t count = 0;
  double unit_j = 0;
};

RaplMsrSource::RaplMsrSource(const RaplOptions& o) : dev_cpu_root_(o.dev_cpu_root) {
  const CpuModel cpu = read_cpu_model(o.cpuinfo_path);
  const bool intel = cpu.intel() && cpu.family == 6;
  const bool amd = cpu.amd_rapl();
  if (!intel && !amd) {
    throw RaplUnavailable("the RAPL MSRs are known for Intel family 6 and AMD family 17h or later; " + o.cpuinfo_path +
                              " says this is " + cpu.describe(),
                          "use rapl-perf or rapl-powercap, which the kernel keeps up to date for new CPUs");
  }
  if (o.msr_stride == 0) throw InvalidArgument("msr_stride must be at least 1");
  const std::vector<CpuTopo> topo = read_cpu_topology(o.cpu_sysfs_root);

  // The destructor does not run when the constructor throws: close what we opened.
  struct CloseOnThrow {
    std::vector<int>& fds;
    bool armed = true;
    ~CloseOnThrow() {
      if (!armed) return;
      for (int fd : fds) ::close(fd);
      fds.clear();
    }
  } guard{fds_};

  // package -> lowest CPU; (package, core) -> lowest CPU of that core.
  std::map<int, int> lead;
  std::map<int, std::map<int, int>> cores;
  for (const CpuTopo& t : topo) {
    lead.emplace(t.package, t.cpu);  // sorted by cpu: the first seen is the lowest
    cores[t.package].emplace(t.core, t.cpu);
  }

  const std::string exe = self_exe();
  std::map<int, int> fd_of;  // cpu -> fd
  auto open_cpu = [&](int c) -> int {
    if (auto it = fd_of.find(c); it != fd_of.end()) return it->second;
    const std::string path = o.dev_cpu_root + "/" + std::to_string(c) + "/msr";
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
      const int e = errno;
      if (e == EACCES) {
        throw RaplPermissionDenied(
            path + ": " + errno_text(e) + ": this user may not open the msr device",
            "let a group read the msr devices, e.g. /etc/udev/rules.d/99-jouletrace-msr.rules with SUBSYSTEM==\"msr\", "
            "GROUP=\"msr\", MODE=\"0640\" (then `sudo groupadd -f msr && sudo usermod -aG msr $USER && sudo udevadm "
            "trigger`), and grant the interpreter the capability the msr driver checks: " +
                setcap_fix("cap_sys_rawio", exe) + "; or use the perf route (rapl-perf), which needs no capability "
                "with kernel.perf_event_paranoid=0");
      }
      if (e == EPERM) {
        throw RaplPermissionDenied(path + ": " + errno_text(e) + ": the msr driver requires CAP_SYS_RAWIO",
                                   setcap_fix("cap_sys_rawio", exe) +
                                       " (the interpreter's real path; a virtualenv's python is a link to it unless "
                                       "made with --copies); or use the perf route (rapl-perf), which needs no "
                                       "capability with kernel.perf_event_paranoid=0");
      }
      if (e == ENOENT || e == ENXIO || e == ENODEV) {
        std::string why = path + " does not exist: the msr kernel module is not loaded";
        if (!is_dir(o.dev_cpu_root)) why = o.dev_cpu_root + " does not exist: the msr kernel module is not loaded";
        throw RaplUnavailable(why,
                              "`sudo modprobe msr` (at every boot: `echo msr | sudo tee /etc/modules-load.d/msr.conf`); "
                              "in a container, also pass the devices (--device /dev/cpu/" + std::to_string(c) + "/msr)");
      }
      throw RaplUnavailable(path + ": open failed: " + errno_text(e), "");
    }
    fds_.push_back(fd.get());
    fd_of[c] = fd.release();
    return fd_of[c];
  };

  auto offset_of = [&](std::uint32_t msr) { return static_cast<off_t>(msr) * static_cast<off_t>(o.msr_stride); };
  // One register read at construction: 8 bytes, or the errno (EIO: not supported).
  auto read_reg = [&](int fd, std::uint32_t msr, std::uint64_t& v) -> int {
    const ssize_t n = ::pread(fd, &v, sizeof v, offset_of(msr));
    if (n == static_cast<ssize_t>(sizeof v)) return 0;
    return n < 0 ? errno : EIO;  // a short read (a fake file that ends early) counts as unsupported
  };

  struct Pending {
    std::string name;
    std::vector<Counter> counters;
    double unit_j;
  };
  std::vector<Pending> pending;
  auto add_domain = [&](const std::string& ch, std::uint32_t msr, const std::vector<int>& cpus, double unit_j) {
    Pending p{ch, {}, unit_j};
    std::uint64_t sum = 0;
    for (int c : cpus) {
      Counter k;
      k.fd = open_cpu(c);
      k.cpu = c;
      k.offset = offset_of(msr);
      std::uint64_t v = 0;
      if (const int e = read_reg(k.fd, msr, v); e != 0) {
        note(ch + ".msr", hex(msr) + " not supported here (" + errno_text(e) + " on cpu " + std::to_string(c) +
                              "): left out");
        return;
      }
      k.wrap.reset(v & kMask32);
      sum += k.wrap.last;
      p.counters.push_back(k);
    }
    if (sum == 0) {
      note(ch + ".msr", hex(msr) + " reads 0: not supported here, left out");
      return;
    }
    std::string where = hex(msr) + (cpus.size() == 1 ? " on cpu " + std::to_string(cpus[0])
                                                      : " summed over " + std::to_string(cpus.size()) + " cores");
    note(ch + ".msr", where);
    note(ch + ".unit_j", fmt_unit(unit_j));
    pending.push_back(std::move(p));
  };

  note("rapl.interface", "msr (pread on " + o.dev_cpu_root + "/<cpu>/msr)");
  note("rapl.cpu", cpu.describe());
  bool psys_done = false;
  for (const auto& [pkg, lead_cpu] : lead) {
    const int fd = open_cpu(lead_cpu);
    const std::uint32_t unit_msr = intel ? kIntelUnit : kAmdUnit;
    std::uint64_t unit_raw = 0;
    if (const int e = read_reg(fd, unit_msr, unit_raw); e != 0) {
      throw RaplUnavailable(o.dev_cpu_root + "/" + std::to_string(lead_cpu) + "/msr: reading the RAPL unit register " +
                                hex(unit_msr) + " failed with " + errno_text(e) +
                                ": this CPU does not expose RAPL through MSRs",
                            "");
    }
    const auto esu = static_cast<int>((unit_raw >> 8) & 0x1F);
    const double unit_j = std::ldexp(1.0, -esu);
    const std::string dev = "cpu" + std::to_string(pkg);
    if (intel) {
      add_domain(dev + ".package.energy_j", kIntelPkg, {lead_cpu}, unit_j);
      add_domain(dev + ".core.energy_j", kIntelPP0, {lead_cpu}, unit_j);
      add_domain(dev + ".uncore.energy_j", kIntelPP1, {lead_cpu}, unit_j);
      const double dram_fixed = intel_dram_fixed_unit_j(cpu.family, cpu.model);
      add_domain(dev + ".dram.energy_j", kIntelDram, {lead_cpu}, dram_fixed > 0 ? dram_fixed : unit_j);
      if (!psys_done) {
        psys_done = true;
        const double psys_fixed = intel_psys_fixed_unit_j(cpu.family, cpu.model);
        add_domain("psys.energy_j", kIntelPsys, {lead_cpu}, psys_fixed > 0 ? psys_fixed : unit_j);
      }
    } else {
      add_domain(dev + ".package.energy_j", kAmdPkg, {lead_cpu}, unit_j);
      std::vector<int> core_cpus;
      for (const auto& kv : cores[pkg]) core_cpus.push_back(kv.second);
      add_domain(dev + ".core.energy_j", kAmdCore, core_cpus, unit_j);
    }
  }

  // psys goes last, after every package's domains.
  std::stable_partition(pending.begin(), pending.end(), [](const Pending& p) { return p.name != "psys.energy_j"; });
  for (Pending& p : pending) {
    Channel c;
    c.first = counters_.size();
    c.count = p.counters.size();
    c.unit_j = p.unit_j;
    for (Counter& k : p.counters) counters_.push_back(k);
    chans_.push_back(c);
    // Each register is a 32-bit count of energy units (a summed channel's
    // registers wrap one by one, each after the same energy).
    channels_.push_back(ChannelInfo{p.name, true, 32, std::ldexp(p.unit_j, 32)});
  }
  if (channels_.empty()) {
    throw RaplUnavailable("no RAPL energy MSR reads as supported on " + cpu.describe(), "");
  }
  if (channels_.size() > kMaxChannels) {
    throw InvalidArgument(std::to_string(channels_.size()) + " RAPL channels exceed the " +
                          std::to_string(kMaxChannels) + " one sampler can carry");
  }
  note("rapl.note", "core and uncore are parts of package; dram is not; psys is the whole platform: do not add them up");
  guard.armed = false;
}

RaplMsrSource::~RaplMsrSource() {
  for (int fd : fds_) ::close(fd);
}

std::int32_t RaplMsrSource::read(double* out, ErrorSlot& errors) noexcept {
  std::int32_t status = kStatusOk;
  for (Counter& c : counters_) {
    std::uint64_t raw = 0;
    const ssize_t n = ::pread(c.fd, &raw, sizeof raw, c.offset);
    if (n == static_cast<ssize_t>(sizeof raw)) {
      c.wrap.update(raw & kMask32);
      c.ok = true;
      continue;
    }
    c.ok = false;
    const int e = n < 0 ? errno : EIO;
    if (e == EACCES || e == EPERM) {
      errors.report(kErrorPermission,
                    "reading %s/%d/msr was refused (errno %d) during the recording: its channels read NaN from then "
                    "on. Check the device's permissions and the interpreter's CAP_SYS_RAWIO",
                    dev_cpu_root_.c_str(), c.cpu, e);
    } else if (e == ENXIO || e == ENODEV) {
      errors.report(kErrorUnavailable,
                    "CPU %d went offline during the recording (reading %s/%d/msr: errno %d): its RAPL channels read "
                    "NaN while it is offline",
                    c.cpu, dev_cpu_root_.c_str(), c.cpu, e);
    }
  }
  for (std::size_t i = 0; i < chans_.size(); ++i) {
    const Channel& ch = chans_[i];
    std::uint64_t ticks = 0;
    bool ok = true;
    for (std::size_t k = ch.first; k < ch.first + ch.count; ++k) {
      ok = ok && counters_[k].ok;
      ticks += counters_[k].wrap.total;
    }
    if (ok) {
      out[i] = static_cast<double>(ticks) * ch.unit_j;
    } else {
      out[i] = kNaN;
      status = kStatusPartial;
    }
  }
  return status;
}

}  // namespace jouletrace
