// RAPL sources: CPU package, core, uncore, DRAM and platform (psys) energy of
// Intel and AMD processors, through the three interfaces the kernel offers:
//
//   rapl-perf      perf_event_open on the `power` PMU: 64-bit counts, no wrap
//   rapl-msr       pread on /dev/cpu/<cpu>/msr: 32-bit counters, unwrapped here
//   rapl-powercap  /sys/class/powercap zones: energy_uj, wraps at max_energy_range_uj
//   rapl           the first of perf, msr, powercap that works here
//
// Channels are cumulative joules (float64), `cpuN.package.energy_j`,
// `cpuN.core.energy_j`, `cpuN.uncore.energy_j`, `cpuN.dram.energy_j` (N is the
// physical package id) and `psys.energy_j`. core and uncore are parts of
// package; dram is not; psys is the whole platform. Never add them up.
//
// Wrapping counters are unwrapped in the source on every read: exact (integer
// ticks) as long as the sampler reads at least once per wrap period, which is
// minutes for RAPL. Every root (/dev/cpu, /sys/class/powercap, the power PMU's
// sysfs folder, /sys/devices/system/cpu, /proc/cpuinfo) is an option, so tests
// point them at fake trees.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jouletrace/errors.hpp"
#include "jouletrace/source.hpp"

namespace jouletrace {

struct RaplOptions {
  std::string dev_cpu_root = "/dev/cpu";
  std::string powercap_root = "/sys/class/powercap";
  std::string perf_root = "/sys/bus/event_source/devices/power";
  std::string cpu_sysfs_root = "/sys/devices/system/cpu";
  std::string cpuinfo_path = "/proc/cpuinfo";
  std::string perf_paranoid_path = "/proc/sys/kernel/perf_event_paranoid";
  // Bytes of file offset per MSR number. The msr driver takes the MSR number
  // as the offset (1). A fake msr file needs 8: AMD's RAPL registers have
  // adjacent numbers (0xC0010299..0xC001029B) and would overlap byte-wise.
  unsigned msr_stride = 1;
};

// Errors that keep the reason and the fix apart (for `jouletrace info`); the
// what() of the core exception they also are reads "<reason>. Fix: <fix>".
struct RaplHint {
  std::string reason;
  std::string fix;
};
struct RaplUnavailable : SourceUnavailable, RaplHint {
  RaplUnavailable(const std::string& why, const std::string& how);
};
struct RaplPermissionDenied : PermissionDenied, RaplHint {
  RaplPermissionDenied(const std::string& why, const std::string& how);
};

// --- CPU model ------------------------------------------------------------------

// What /proc/cpuinfo says about the first CPU listed.
struct CpuModel {
  std::string vendor;  // "GenuineIntel", "AuthenticAMD", "HygonGenuine"; "" when unknown
  int family = -1;
  int model = -1;
  std::string model_name;
  bool hypervisor = false;  // the `hypervisor` flag: a virtual machine

  bool intel() const { return vendor == "GenuineIntel"; }
  // AMD family 17h and later, and Hygon 18h: the AMD RAPL MSRs.
  bool amd_rapl() const { return (vendor == "AuthenticAMD" && family >= 0x17) || (vendor == "HygonGenuine" && family == 0x18); }
  std::string describe() const;  // "GenuineIntel family 6 model 0x55 (Intel Xeon ...)"
};

// Never throws: an unreadable file gives an empty vendor.
CpuModel read_cpu_model(const std::string& cpuinfo_path);

// Intel models whose DRAM counter does not use the unit of MSR 0x606 but a
// fixed 15.3 uJ (Haswell-EP, Broadwell-EP, Skylake-SP/Cascade Lake/Cooper Lake,
// Ice Lake-SP/-D, Xeon Phi KNL/KNM). 0 = use 0x606.
double intel_dram_fixed_unit_j(int family, int model);
// Intel models whose psys counter has a fixed unit instead of 0x606's
// (Sapphire Rapids, Emerald Rapids: 1 J, as the kernel's rapl driver has it).
// 0 = use 0x606.
double intel_psys_fixed_unit_j(int family, int model);

// --- topology -------------------------------------------------------------------

struct CpuTopo {
  int cpu = -1;
  int package = -1;  // topology/physical_package_id
  int die = 0;       // topology/die_id (0 when absent)
  int core = -1;     // topology/core_id (unique within a package)
};

// Online CPUs under cpu_sysfs_root (cpu<N>/topology/...), sorted by cpu.
// Throws RaplUnavailable when none can be read.
std::vector<CpuTopo> read_cpu_topology(const std::string& cpu_sysfs_root);

// "0-3,8,10-11" -> {0,1,2,3,8,10,11}. Throws InvalidArgument on malformed text.
std::vector<int> parse_cpu_list(const std::string& text);

// --- unwrapping -----------------------------------------------------------------

// A counter that wraps at `modulus` (2^32 for the RAPL MSRs, max_energy_range_uj
// + 1 for powercap), accumulated into an exact 64-bit total. Correct as long as
// less than one modulus passes between updates.
struct WrapCounter {
  std::uint64_t modulus = std::uint64_t{1} << 32;
  std::uint64_t last = 0;   // last raw value, already reduced below modulus
  std::uint64_t total = 0;  // unwrapped: the first raw value plus every delta since

  void reset(std::uint64_t raw) noexcept {
    last = raw % modulus;
    total = last;
  }
  void update(std::uint64_t raw) noexcept {
    raw %= modulus;
    total += raw >= last ? raw - last : raw + (modulus - last);
    last = raw;
  }
};

// --- perf power PMU ---------------------------------------------------------------

struct PerfEventSpec {
  std::string event;   // "energy-pkg"
  std::string domain;  // "package", "core", "uncore", "dram", "psys"
  std::uint64_t config = 0;
  double scale = 0;    // joules per count (from <event>.scale)
  std::string unit;    // <event>.unit ("Joules")
};

struct PerfPmuSpec {
  std::uint32_t type = 0;
  std::vector<int> cpus;  // cpumask: one CPU per package (or die)
  std::vector<PerfEventSpec> events;
};

// Parses type, cpumask, format/ and events/ under perf_root. Throws
// RaplUnavailable when the folder or a required file is missing, and
// InvalidArgument when a file is malformed.
PerfPmuSpec parse_perf_power_pmu(const std::string& perf_root);

// Builds the config value of one event from its events/ text ("event=0x02" or
// "event=0x02,umask=0x1") and the PMU's format/ fields ({"event", "config:0-7"}).
std::uint64_t perf_event_config(const std::string& event_text,
                                const std::vector<std::pair<std::string, std::string>>& formats);

// Why perf_event_open failed with `err` and the fix, given the paranoid level
// (INT32_MIN when unknown) and the interpreter path for setcap.
RaplHint perf_open_failure(int err, int paranoid, const std::string& what, const std::string& exe);

// --- sources ----------------------------------------------------------------------

// What the three interfaces share: fixed channels and metadata.
class RaplSource : public Source {
 public:
  const std::vector<ChannelInfo>& channels() const override { return channels_; }
  std::vector<std::pair<std::string, std::string>> metadata() const override { return metadata_; }
  // Construction time only (not thread-safe with a running sampler).
  void note(const std::string& key, const std::string& value) { metadata_.emplace_back(key, value); }

 protected:
  std::vector<ChannelInfo> channels_;
  std::vector<std::pair<std::string, std::string>> metadata_;
};

class RaplMsrSource final : public RaplSource {
 public:
  explicit RaplMsrSource(const RaplOptions& options);
  ~RaplMsrSource() override;
  std::string name() const override { return "rapl-msr"; }
  std::int32_t read(double* out, ErrorSlot& errors) noexcept override;

  struct Counter;
  struct Channel;

 private:
  std::vector<int> fds_;  // one per CPU read, closed by the destructor
  std::vector<Counter> counters_;
  std::vector<Channel> chans_;
  std::string dev_cpu_root_;
};

class RaplPowercapSource final : public RaplSource {
 public:
  explicit RaplPowercapSource(const RaplOptions& options);
  ~RaplPowercapSource() override;
  std::string name() const override { return "rapl-powercap"; }
  std::int32_t read(double* out, ErrorSlot& errors) noexcept override;

  struct Zone;

 private:
  std::vector<Zone> zones_;
};

class RaplPerfSource final : public RaplSource {
 public:
  explicit RaplPerfSource(const RaplOptions& options);
  ~RaplPerfSource() override;
  std::string name() const override { return "rapl-perf"; }
  std::int32_t read(double* out, ErrorSlot& errors) noexcept override;

  struct Event;

 private:
  std::vector<Event> events_;
};

// "rapl" (perf, then msr, then powercap: the first that works), "rapl-perf",
// "rapl-msr" or "rapl-powercap". Throws InvalidArgument for another name, and
// RaplUnavailable / RaplPermissionDenied with the reason and the fix.
std::unique_ptr<RaplSource> make_rapl_source(const std::string& source, const RaplOptions& options);

// Whether `source` works here and, if not, why and the fix. Never throws.
struct RaplProbe {
  bool usable = false;
  std::string reason;
  std::string fix;
  std::string detail;  // when usable: the interface and its channels
};
RaplProbe probe_rapl(const std::string& source, const RaplOptions& options) noexcept;

}  // namespace jouletrace
