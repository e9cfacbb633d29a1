// rapl-powercap: the kernel's RAPL zones under /sys/class/powercap.
//
// Zones are `<type>:<a>` (a package, or psys) with subzones `<type>:<a>:<b>`
// (core, uncore, dram of that package), for the control types intel-rapl
// (Intel and AMD, through the MSRs), intel-rapl-tpmi (Intel, through TPMI) and
// amd. What a zone measures comes from its `name` file. `energy_uj` is a
// counter in microjoules that wraps at `max_energy_range_uj` (it takes values
// 0..max); it is unwrapped here on every read. intel-rapl-mmio zones repeat the
// package domain of intel-rapl on client parts and are skipped, and a domain
// already seen under another control type is not counted twice.
//
// The channels keep the kernel's hierarchy apart: core and uncore are parts
// of package, dram is not, psys is the platform. Nothing is summed.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <limits>
#include <set>

#include "jouletrace/rapl.hpp"
#include "jouletrace/rapl_util.hpp"

namespace jouletrace {

using namespace rapl_detail;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const char* const kControlTypes[] = {"intel-rapl", "intel-rapl-tpmi", "amd"};

bool known_type(const std::string& t) {
  for (const char* k : kControlTypes) {
    if (t == k) return true;
  }
  return false;
}

// "intel-rapl:0:1" -> type "intel-rapl", indices {0, 1}. False when not a zone name.
bool split_zone(const std::string& name, std::string& type, std::vector<int>& idx) {
  const std::size_t colon = name.find(':');
  if (colon == std::string::npos || colon == 0) return false;
  type = name.substr(0, colon);
  idx.clear();
  std::size_t pos = colon + 1;
  while (pos <= name.size()) {
    std::size_t next = name.find(':', pos);
    if (next == std::string::npos) next = name.size();
    int v = 0;
    if (!parse_int(name.substr(pos, next - pos), v) || v < 0) return false;
    idx.push_back(v);
    pos = next + 1;
  }
  return idx.size() == 1 || idx.size() == 2;
}

// "package-3" -> "cpu3"; "package-0-die-1" -> "cpu0die1". "" when not a package name.
std::string package_device(const std::string& zone_name) {
  if (zone_name.compare(0, 8, "package-") != 0) return "";
  const std::string rest = zone_name.substr(8);
  const std::size_t die = rest.find("-die-");
  int pkg = 0, d = 0;
  if (die == std::string::npos) return parse_int(rest, pkg) ? "cpu" + std::to_string(pkg) : "";
  if (!parse_int(rest.substr(0, die), pkg) || !parse_int(rest.substr(die + 5), d)) return "";
  return "cpu" + std::to_string(pkg) + "die" + std::to_string(d);
}

int domain_rank(const std::string& domain) {
  if (domain == "package") return 0;
  if (domain == "core") return 1;
  if (domain == "uncore") return 2;
  if (domain == "dram") return 3;
  return 4;
}

}  // namespace

struct RaplPowercapSource::Zone {
  int fd = -1;
  WrapCounter wrap;
};

RaplPowercapSource::RaplPowercapSource(const RaplOptions& o) {
  const std::string& root = o.powercap_root;
  if (!is_dir(root)) {
    throw RaplUnavailable(root + " does not exist: this kernel has no powercap framework (CONFIG_POWERCAP) or sysfs "
                                 "is not mounted there",
                          "use a kernel with CONFIG_POWERCAP and CONFIG_INTEL_RAPL, or pass powercap_root=");
  }

  // Every zone folder: the flat list of /sys/class/powercap, and subzones
  // nested in their parent (the layout under /sys/devices/virtual/powercap).
  struct Found {
    std::string dir, zone, type;
    std::vector<int> idx;
  };
  std::vector<Found> found;
  std::set<std::string> seen_dirs;
  std::vector<std::string> skipped;
  for (const std::string& name : list_dir(root)) {
    std::string type;
    std::vector<int> idx;
    if (!split_zone(name, type, idx)) continue;
    if (!known_type(type)) {
      skipped.push_back(name + (type == "intel-rapl-mmio" ? " (repeats the package domain of intel-rapl)"
                                                           : " (not a RAPL control type)"));
      continue;
    }
    if (seen_dirs.insert(name).second) found.push_back({root + "/" + name, name, type, idx});
    if (idx.size() == 1) {
      for (const std::string& sub : list_dir(root + "/" + name)) {
        std::string st;
        std::vector<int> si;
        if (!split_zone(sub, st, si) || st != type || si.size() != 2 || si[0] != idx[0]) continue;
        if (seen_dirs.insert(sub).second) found.push_back({root + "/" + name + "/" + sub, sub, st, si});
      }
    }
  }
  if (found.empty()) {
    throw RaplUnavailable("no RAPL zones under " + root + " (intel-rapl:*, intel-rapl-tpmi:*): the RAPL powercap "
                              "driver is not loaded, or this CPU has no RAPL",
                          "`sudo modprobe intel_rapl_msr` (Intel and AMD; intel_rapl_tpmi on Intel Granite Rapids "
                          "and later)");
  }

  // What each zone measures.
  struct Entry {
    std::string channel, device, domain, dir, zone;
    std::uint64_t max_uj = 0;
    bool has_max = false;
    bool full_range = false;  // max_energy_range_uj is 2**64 - 1: a whole 64-bit counter
  };
  std::vector<Entry> entries;
  auto zone_name = [](const std::string& dir) {
    std::string t;
    return read_text(dir + "/name", t) ? trim(t) : std::string();
  };
  for (const Found& f : found) {
    const std::string zname = zone_name(f.dir);
    std::string device, domain;
    if (f.idx.size() == 1) {
      if (zname == "psys") {
        device = "psys";
        domain = "psys";
      } else if (!(device = package_device(zname)).empty()) {
        domain = "package";
      }
    } else if (zname == "core" || zname == "uncore" || zname == "dram") {
      // The parent is the package this subzone belongs to.
      std::string parent = root + "/" + f.type + ":" + std::to_string(f.idx[0]);
      device = package_device(zone_name(parent));
      domain = zname;
    }
    if (device.empty()) {
      skipped.push_back(f.zone + " (name '" + zname + "' is not a domain jouletrace knows)");
      continue;
    }
    Entry e;
    e.device = device;
    e.domain = domain;
    e.channel = device == "psys" ? "psys.energy_j" : device + "." + domain + ".energy_j";
    e.dir = f.dir;
    e.zone = f.zone;
    std::string t;
    const bool max_read = read_text(f.dir + "/max_energy_range_uj", t) && parse_u64(t, e.max_uj) && e.max_uj > 0;
    e.has_max = max_read && e.max_uj < std::numeric_limits<std::uint64_t>::max();  // max + 1 must not wrap to 0
    e.full_range = max_read && !e.has_max;
    entries.push_back(e);
  }
  // Packages in order, their domains in order, psys last.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    const bool pa = a.device == "psys", pb = b.device == "psys";
    if (pa != pb) return pb;
    if (a.device != b.device) {
      if (a.device.size() != b.device.size()) return a.device.size() < b.device.size();  // cpu2 before cpu10
      return a.device < b.device;
    }
    return domain_rank(a.domain) < domain_rank(b.domain);
  });

  struct CloseOnThrow {
    std::vector<Zone>& zones;
    bool armed = true;
    ~CloseOnThrow() {
      if (!armed) return;
      for (const Zone& z : zones) ::close(z.fd);
      zones.clear();
    }
  } guard{zones_};

  note("rapl.interface", "powercap (" + root + ")");
  std::set<std::string> channel_names;
  for (const Entry& e : entries) {
    if (!channel_names.insert(e.channel).second) {
      skipped.push_back(e.zone + " (" + e.channel + " already comes from another zone)");
      continue;
    }
    const std::string path = e.dir + "/energy_uj";
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
      const int err = errno;
      if (err == EACCES || err == EPERM) {
        throw RaplPermissionDenied(
            path + ": " + errno_text(err) +
                ": energy_uj is readable by root only (Linux 5.10 and later, against the PLATYPUS side channel, "
                "CVE-2020-8694)",
            "let a group of yours read it: /etc/udev/rules.d/99-jouletrace-powercap.rules with ACTION==\"add\", "
            "SUBSYSTEM==\"powercap\", RUN+=\"/bin/chgrp energy /sys%p/energy_uj\", RUN+=\"/bin/chmod g+r "
            "/sys%p/energy_uj\" (then `sudo groupadd -f energy && sudo usermod -aG energy $USER` and reboot); for this "
            "boot only: `sudo chgrp energy " + root + "/*/energy_uj && sudo chmod g+r " + root + "/*/energy_uj`");
      }
      skipped.push_back(e.zone + " (" + path + ": " + errno_text(err) + ")");
      continue;
    }
    char buf[32];
    const ssize_t n = ::pread(fd.get(), buf, sizeof buf, 0);
    std::uint64_t v = 0;
    if (n <= 0 || !parse_u64_buf(buf, static_cast<std::size_t>(n), v)) {
      skipped.push_back(e.zone + " (" + path + " does not read as a number: " +
                        (n < 0 ? errno_text(errno) : std::string("empty")) + ")");
      continue;
    }
    Zone z;
    z.wrap.modulus = e.has_max ? e.max_uj + 1 : std::numeric_limits<std::uint64_t>::max();
    z.wrap.reset(v);
    z.fd = fd.release();
    zones_.push_back(z);
    // energy_uj takes the values 0..max: a counter of max + 1 microjoules (the
    // bits that range needs), or a whole 64-bit one; unknown without the file.
    ChannelInfo info{e.channel, true};
    if (e.has_max) {
      std::uint64_t bits = 0;
      while (bits < 64 && (e.max_uj >> bits) != 0) ++bits;
      info.counter_bits = static_cast<unsigned>(bits);
      info.wrap_j = (static_cast<double>(e.max_uj) + 1.0) * 1e-6;
    } else if (e.full_range) {
      info.counter_bits = 64;
      info.wrap_j = std::ldexp(1e-6, 64);
    }
    channels_.push_back(info);
    note(e.channel.substr(0, e.channel.size() - 9) + ".zone", e.dir);
    note(e.channel.substr(0, e.channel.size() - 9) + ".max_energy_range_uj",
         e.has_max ? std::to_string(e.max_uj) : "unknown (not unwrapped)");
  }
  for (std::size_t i = 0; i < skipped.size(); ++i) note("rapl.skipped_zone." + std::to_string(i), skipped[i]);
  if (channels_.empty()) {
    std::string why = "no readable RAPL zone under " + root;
    for (const std::string& s : skipped) why += "; " + s;
    throw RaplUnavailable(why, "");
  }
  if (channels_.size() > kMaxChannels) {
    throw InvalidArgument(std::to_string(channels_.size()) + " RAPL channels exceed the " +
                          std::to_string(kMaxChannels) + " one sampler can carry");
  }
  note("rapl.note", "core and uncore are parts of package; dram is not; psys is the whole platform: do not add them up");
  guard.armed = false;
}

RaplPowercapSource::~RaplPowercapSource() {
  for (const Zone& z : zones_) ::close(z.fd);
}

std::int32_t RaplPowercapSource::read(double* out, ErrorSlot& errors) noexcept {
  std::int32_t status = kStatusOk;
  for (std::size_t i = 0; i < zones_.size(); ++i) {
    Zone& z = zones_[i];
    char buf[32];
    const ssize_t n = ::pread(z.fd, buf, sizeof buf, 0);
    std::uint64_t v = 0;
    if (n > 0 && parse_u64_buf(buf, static_cast<std::size_t>(n), v)) {
      z.wrap.update(v);
      out[i] = static_cast<double>(z.wrap.total) / 1e6;  // uJ -> J
      continue;
    }
    out[i] = kNaN;
    status = kStatusPartial;
    if (n < 0 && (errno == EACCES || errno == EPERM)) {
      errors.report(kErrorPermission,
                    "reading a powercap energy_uj was refused during the recording (errno %d): channel %zu reads NaN "
                    "from then on",
                    errno, i);
    }
  }
  return status;
}

}  // namespace jouletrace
