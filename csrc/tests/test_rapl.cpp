// RAPL sources against fake trees, with the real Sampler thread: a writer
// thread drives the fake counters through 32-bit and powercap wraps and the
// recorded energy must equal what it wrote. Also the parsing helpers and the
// errors. Run under ASan/UBSan and TSan by tests/native/run.sh.
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "check.hpp"
#include "jouletrace/rapl.hpp"
#include "jouletrace/sampler.hpp"

using namespace jouletrace;

namespace {

// --- a fake machine in a temporary folder -----------------------------------------------

void write_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CHECK(fd >= 0);
  CHECK(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  ::close(fd);
}

void mkdirs(const std::string& path) {
  for (std::size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') ::mkdir(path.substr(0, i).c_str(), 0755);
  }
}

int remove_entry(const char* p, const struct stat*, int, FTW*) { return ::remove(p); }

struct FakeMachine {
  std::string root;
  RaplOptions options;
  std::vector<int> pkg_of;   // cpu -> package
  std::vector<int> core_of;  // cpu -> core id
  std::map<std::string, int> fds;

  FakeMachine(const std::string& vendor, int family, int model, int packages, int cores, int threads,
              unsigned stride) {
    char tmpl[] = "/tmp/jt-rapl-native-XXXXXX";
    CHECK(::mkdtemp(tmpl) != nullptr);
    root = tmpl;
    options.dev_cpu_root = root + "/dev/cpu";
    options.cpu_sysfs_root = root + "/cpu";
    options.cpuinfo_path = root + "/cpuinfo";
    options.powercap_root = root + "/powercap";
    options.perf_root = root + "/power";
    options.msr_stride = stride;
    std::string info;
    const int n = packages * cores * threads;
    for (int cpu = 0; cpu < n; ++cpu) {
      const int core_index = cpu % (packages * cores);  // threads of a core are numbered after all cores
      const int pkg = core_index / cores, core = core_index % cores;
      pkg_of.push_back(pkg);
      core_of.push_back(core);
      info += "processor\t: " + std::to_string(cpu) + "\nvendor_id\t: " + vendor +
              "\ncpu family\t: " + std::to_string(family) + "\nmodel\t\t: " + std::to_string(model) +
              "\nmodel name\t: Fake\nflags\t\t: fpu msr\n\n";
      const std::string topo = options.cpu_sysfs_root + "/cpu" + std::to_string(cpu) + "/topology";
      mkdirs(topo);
      write_file(topo + "/physical_package_id", std::to_string(pkg) + "\n");
      write_file(topo + "/core_id", std::to_string(core) + "\n");
      const std::string dev = options.dev_cpu_root + "/" + std::to_string(cpu);
      mkdirs(dev);
      write_file(dev + "/msr", "");
      CHECK(::truncate((dev + "/msr").c_str(), static_cast<off_t>(0xC001029Cull * stride + 8)) == 0);
    }
    write_file(options.cpuinfo_path, info);
  }
  ~FakeMachine() {
    for (auto& kv : fds) ::close(kv.second);
    ::nftw(root.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  }

  int fd(const std::string& path) {
    auto it = fds.find(path);
    if (it != fds.end()) return it->second;
    const int f = ::open(path.c_str(), O_RDWR);
    CHECK(f >= 0);
    fds[path] = f;
    return f;
  }
  void write_msr(int cpu, std::uint32_t msr, std::uint64_t v) {
    const std::string p = options.dev_cpu_root + "/" + std::to_string(cpu) + "/msr";
    CHECK(::pwrite(fd(p), &v, 8, static_cast<off_t>(msr) * options.msr_stride) == 8);
  }
  // Low 32 bits only, like FakeRapl in Python: one small write.
  void set_counter(int cpu, std::uint32_t msr, std::uint64_t v) {
    const auto low = static_cast<std::uint32_t>(v & 0xFFFFFFFFu);
    const std::string p = options.dev_cpu_root + "/" + std::to_string(cpu) + "/msr";
    CHECK(::pwrite(fd(p), &low, 4, static_cast<off_t>(msr) * options.msr_stride) == 4);
  }
  void add_zone(const std::string& zone, const std::string& name, std::uint64_t uj, std::uint64_t max_uj) {
    const std::string d = options.powercap_root + "/" + zone;
    mkdirs(d);
    write_file(d + "/name", name + "\n");
    write_file(d + "/max_energy_range_uj", std::to_string(max_uj) + "\n");
    write_file(d + "/energy_uj", "0\n");
    set_zone(zone, uj, max_uj);
  }
  void set_zone(const std::string& zone, std::uint64_t uj, std::uint64_t max_uj) {
    char text[32];
    std::snprintf(text, sizeof text, "%020" PRIu64 "\n", uj % (max_uj + 1));
    CHECK(::pwrite(fd(options.powercap_root + "/" + zone + "/energy_uj"), text, 21, 0) == 21);
  }
};

// Runs `steps` on a writer thread while the sampler samples; after each step
// the writer waits for two completed reads, so a read that began after the
// step has finished before the next step: every written value is observed.
void wait_reads(const Sampler& s, std::uint64_t n) {
  const std::uint64_t target = s.reads() + n;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (s.reads() < target) {
    CHECK(std::chrono::steady_clock::now() < give_up);  // liveness only, not a timing assert
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

void drive(Sampler& s, int steps, const std::function<void()>& step) {
  s.start();
  std::thread writer([&] {
    wait_reads(s, 1);  // the first record holds the initial values
    for (int i = 0; i < steps; ++i) {
      step();
      wait_reads(s, 2);
    }
  });
  writer.join();
  s.stop();
}

std::size_t channel_index(const Sampler& s, const std::string& name) {
  const auto& ch = s.source().channels();
  for (std::size_t i = 0; i < ch.size(); ++i) {
    if (ch[i].name == name) return i;
  }
  std::fprintf(stderr, "no channel %s\n", name.c_str());
  CHECK(false);
  return 0;
}

// Monotone, starts and ends at the truth, and (single counters) only written values.
void check_channel(const Sampler& s, const std::string& name, const std::vector<double>& truth, double unit,
                   bool members) {
  const auto store = s.store();
  const std::size_t n = store->size();
  CHECK(n >= 2);
  const double* v = store->channel(channel_index(s, name));
  CHECK(std::fabs(v[0] - truth.front()) <= unit / 2);
  CHECK(std::fabs(v[n - 1] - truth.back()) <= unit / 2);
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(std::isfinite(v[i]));
    if (i > 0) CHECK(v[i] >= v[i - 1]);
    if (members) {
      bool found = false;
      for (double t : truth) found = found || std::fabs(v[i] - t) <= unit / 2;
      CHECK(found);
    }
  }
}

SamplerConfig fast() {
  SamplerConfig c;
  c.rate_hz = 2000;
  c.max_records = 1u << 20;
  return c;
}

// --- the tests ----------------------------------------------------------------------------

void unwrap_matches_reference() {
  std::mt19937_64 rng(7);
  for (std::uint64_t modulus : {std::uint64_t{1} << 32, std::uint64_t{262143328850} + 1, std::uint64_t{1000}}) {
    WrapCounter w;
    w.modulus = modulus;
    std::uint64_t truth = modulus - 3;
    w.reset(truth);
    for (int i = 0; i < 100000; ++i) {
      truth += rng() % modulus;  // less than one wrap between reads
      w.update(truth % modulus);
      CHECK(w.total == truth);
    }
  }
  std::printf("unwrap: ok\n");
}

void parsing() {
  CHECK((parse_cpu_list("0-3,8,10-11\n") == std::vector<int>{0, 1, 2, 3, 8, 10, 11}));
  CHECK((parse_cpu_list("0,24") == std::vector<int>{0, 24}));
  bool threw = false;
  try {
    parse_cpu_list("3-1");
  } catch (const InvalidArgument&) {
    threw = true;
  }
  CHECK(threw);
  const std::vector<std::pair<std::string, std::string>> fmt = {{"event", "config:0-7"}, {"umask", "config:8-15"}};
  CHECK(perf_event_config("event=0x02", fmt) == 0x02);
  CHECK(perf_event_config("event=0x04,umask=0x3", fmt) == 0x0304);
  CHECK(perf_event_config("event=0xAB", {{"event", "config:0-3,8-11"}}) == 0xA0B);
  CHECK(perf_event_config("event=0x05", {}) == 0x05);
  CHECK(intel_dram_fixed_unit_j(6, 0x55) == 15.3e-6);
  CHECK(intel_dram_fixed_unit_j(6, 0x8C) == 0.0);
  CHECK(intel_psys_fixed_unit_j(6, 0x8F) == 1.0);
  const RaplHint h = perf_open_failure(EACCES, 2, "perf_event_open(power/energy-pkg/, cpu 0)", "/usr/bin/python3");
  CHECK(h.reason.find("kernel.perf_event_paranoid is 2") != std::string::npos);
  CHECK(h.fix.find("`sudo sysctl kernel.perf_event_paranoid=0`") != std::string::npos);
  CHECK(h.fix.find("`sudo setcap cap_perfmon=ep /usr/bin/python3`") != std::string::npos);
  const RaplHint u = perf_open_failure(EACCES, INT_MIN, "x", "py");
  CHECK(u.reason.find("unknown") != std::string::npos);
  std::printf("parsing: ok\n");
}

void cpu_model() {
  FakeMachine m("AuthenticAMD", 0x19, 0x11, 1, 1, 1, 8);
  const CpuModel c = read_cpu_model(m.options.cpuinfo_path);
  CHECK(c.vendor == "AuthenticAMD" && c.family == 0x19 && c.model == 0x11 && c.amd_rapl() && !c.hypervisor);
  CHECK(read_cpu_model(m.root + "/none").vendor.empty());
  const std::vector<CpuTopo> t = read_cpu_topology(m.options.cpu_sysfs_root);
  CHECK(t.size() == 1 && t[0].cpu == 0 && t[0].package == 0);
  std::printf("cpu model: ok\n");
}

void msr_intel() {
  // Two packages of a Cascade Lake (fixed DRAM unit), 2 cores each.
  FakeMachine m("GenuineIntel", 6, 0x55, 2, 2, 1, 1);
  const int esu = 14;
  const double unit = std::ldexp(1.0, -esu);
  struct Ctr {
    int cpu;
    std::uint32_t msr;
    std::string channel;
    double unit;
    std::vector<std::uint64_t> ticks;
  };
  std::vector<Ctr> ctrs;
  for (int pkg = 0; pkg < 2; ++pkg) {
    const int lead = pkg * 2;
    m.write_msr(lead, 0x606, (0xAull << 16) | (static_cast<std::uint64_t>(esu) << 8) | 0x3);
    const std::string dev = "cpu" + std::to_string(pkg);
    ctrs.push_back({lead, 0x611, dev + ".package.energy_j", unit, {0xFFFFF000u}});
    ctrs.push_back({lead, 0x639, dev + ".core.energy_j", unit, {0xFFFFFF00u}});
    ctrs.push_back({lead, 0x619, dev + ".dram.energy_j", 15.3e-6, {12345}});
  }
  ctrs.push_back({0, 0x64D, "psys.energy_j", unit, {0x80000000u}});
  for (Ctr& c : ctrs) m.set_counter(c.cpu, c.msr, c.ticks[0]);

  Sampler s(std::make_unique<RaplMsrSource>(m.options), fast());
  CHECK(s.source().channels().size() == ctrs.size());  // uncore reads 0: left out
  for (const Ctr& c : ctrs) {  // each a 32-bit count of its unit, published as such
    const ChannelInfo& info = s.source().channels()[channel_index(s, c.channel)];
    CHECK(info.cumulative && info.counter_bits == 32 && info.wrap_j == std::ldexp(c.unit, 32));
  }
  std::mt19937_64 rng(11);
  drive(s, 40, [&] {
    for (Ctr& c : ctrs) {
      c.ticks.push_back(c.ticks.back() + rng() % (1ull << 30));
      m.set_counter(c.cpu, c.msr, c.ticks.back());
    }
  });
  CHECK(s.errors().kind() == kErrorNone);
  CHECK(s.dropped_ring() == 0);
  for (const Ctr& c : ctrs) {
    CHECK(c.ticks.back() - c.ticks.front() > (1ull << 33));  // several wraps
    std::vector<double> truth;
    for (std::uint64_t t : c.ticks) truth.push_back(static_cast<double>(t) * c.unit);
    check_channel(s, c.channel, truth, c.unit, true);
  }
  std::printf("msr intel: %zu records, ok\n", s.store()->size());
}

void msr_amd() {
  // One AMD package, 3 cores x 2 threads; the per-core counters are summed.
  FakeMachine m("AuthenticAMD", 0x19, 0x11, 1, 3, 2, 8);
  const int esu = 16;
  const double unit = std::ldexp(1.0, -esu);
  m.write_msr(0, 0xC0010299u, (0xAull << 16) | (static_cast<std::uint64_t>(esu) << 8) | 0x3);
  std::vector<std::uint64_t> pkg{0xFFFF0000u};
  std::vector<std::vector<std::uint64_t>> cores(3, std::vector<std::uint64_t>{0xFFFFFFF0u});
  m.set_counter(0, 0xC001029Bu, pkg[0]);
  for (int c = 0; c < 3; ++c) m.set_counter(c, 0xC001029Au, cores[static_cast<std::size_t>(c)][0]);
  for (int c = 3; c < 6; ++c) m.set_counter(c, 0xC001029Au, 0xDEADBEEF);  // sibling threads: never read

  Sampler s(std::make_unique<RaplMsrSource>(m.options), fast());
  CHECK(s.source().channels().size() == 2);
  std::mt19937_64 rng(12);
  drive(s, 40, [&] {
    pkg.push_back(pkg.back() + rng() % (1ull << 30));
    m.set_counter(0, 0xC001029Bu, pkg.back());
    for (int c = 0; c < 3; ++c) {
      auto& v = cores[static_cast<std::size_t>(c)];
      v.push_back(v.back() + rng() % (1ull << 29));
      m.set_counter(c, 0xC001029Au, v.back());
    }
  });
  CHECK(s.errors().kind() == kErrorNone);
  std::vector<double> pkg_truth, core_truth;
  for (std::size_t i = 0; i < pkg.size(); ++i) {
    pkg_truth.push_back(static_cast<double>(pkg[i]) * unit);
    core_truth.push_back(static_cast<double>(cores[0][i] + cores[1][i] + cores[2][i]) * unit);
  }
  check_channel(s, "cpu0.package.energy_j", pkg_truth, unit, true);
  check_channel(s, "cpu0.core.energy_j", core_truth, unit, false);  // a read may fall between core writes
  std::printf("msr amd: ok\n");
}

void powercap() {
  FakeMachine m("GenuineIntel", 6, 0x8C, 1, 2, 1, 1);
  const std::uint64_t max_uj = (1ull << 24) - 1;
  struct Z {
    std::string zone, name, channel;
    std::vector<std::uint64_t> uj;
  };
  std::vector<Z> zones = {{"intel-rapl:0", "package-0", "cpu0.package.energy_j", {max_uj - 10}},
                          {"intel-rapl:0:0", "core", "cpu0.core.energy_j", {max_uj - 20}},
                          {"intel-rapl:0:1", "dram", "cpu0.dram.energy_j", {5}},
                          {"intel-rapl:1", "psys", "psys.energy_j", {max_uj}}};
  for (const Z& z : zones) m.add_zone(z.zone, z.name, z.uj[0], max_uj);
  m.add_zone("intel-rapl-mmio:0", "package-0", 7, max_uj);  // duplicate of intel-rapl:0: skipped

  Sampler s(std::make_unique<RaplPowercapSource>(m.options), fast());
  CHECK(s.source().channels().size() == zones.size());
  for (std::size_t i = 0; i < zones.size(); ++i) {
    const ChannelInfo& info = s.source().channels()[i];
    CHECK(info.name == zones[i].channel);
    CHECK(info.counter_bits == 24 && info.wrap_j == static_cast<double>(max_uj + 1) * 1e-6);  // 0..max uJ
  }
  std::mt19937_64 rng(13);
  drive(s, 40, [&] {
    for (Z& z : zones) {
      z.uj.push_back(z.uj.back() + rng() % (max_uj / 2));
      m.set_zone(z.zone, z.uj.back(), max_uj);
    }
  });
  for (const Z& z : zones) {
    CHECK(z.uj.back() - z.uj.front() > 4 * max_uj);
    std::vector<double> truth;
    for (std::uint64_t u : z.uj) truth.push_back(static_cast<double>(u) / 1e6);
    check_channel(s, z.channel, truth, 1e-6, true);
  }
  std::printf("powercap: ok\n");
}

template <class E, class F>
std::string expect_throw(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  }
  std::fprintf(stderr, "expected an exception\n");
  CHECK(false);
  return "";
}

void errors() {
  FakeMachine m("GenuineIntel", 6, 0x8C, 1, 1, 1, 1);
  // Unit register present, no domain: nothing supported.
  m.write_msr(0, 0x606, 0xA0E03);
  std::string msg = expect_throw<RaplUnavailable>([&] { RaplMsrSource s(m.options); });
  CHECK(msg.find("no RAPL energy MSR reads as supported") != std::string::npos);
  // No msr device: the module is missing.
  ::unlink((m.options.dev_cpu_root + "/0/msr").c_str());
  msg = expect_throw<RaplUnavailable>([&] { RaplMsrSource s(m.options); });
  CHECK(msg.find("msr kernel module is not loaded") != std::string::npos);
  CHECK(msg.find("Fix: `sudo modprobe msr`") != std::string::npos);
  // Nothing at all: "rapl" lists every interface.
  msg = expect_throw<SourceUnavailable>([&] { make_rapl_source("rapl", m.options); });
  CHECK(msg.find("rapl-perf:") != std::string::npos && msg.find("rapl-msr:") != std::string::npos &&
        msg.find("rapl-powercap:") != std::string::npos);
  const RaplProbe p = probe_rapl("rapl", m.options);
  CHECK(!p.usable && !p.reason.empty() && !p.fix.empty());
  expect_throw<InvalidArgument>([&] { make_rapl_source("rapl-nope", m.options); });
  // A fake power PMU whose type this kernel lacks: perf_event_open really runs and refuses.
  mkdirs(m.options.perf_root + "/events");
  write_file(m.options.perf_root + "/type", "2147418112\n");
  write_file(m.options.perf_root + "/cpumask", "0\n");
  write_file(m.options.perf_root + "/events/energy-pkg", "event=0x02\n");
  write_file(m.options.perf_root + "/events/energy-pkg.scale", "2.3283064365386962890625e-10\n");
  write_file(m.options.perf_root + "/events/energy-pkg.unit", "Joules\n");
  const PerfPmuSpec spec = parse_perf_power_pmu(m.options.perf_root);
  CHECK(spec.type == 2147418112u && spec.cpus == std::vector<int>{0} && spec.events.size() == 1);
  CHECK(spec.events[0].config == 2 && spec.events[0].scale == std::ldexp(1.0, -32));
  const RaplProbe perf = probe_rapl("rapl-perf", m.options);
  CHECK(!perf.usable && perf.reason.find("perf_event_open(power/energy-pkg/, cpu 0)") != std::string::npos);
  std::printf("errors: ok\n");
}

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  unwrap_matches_reference();
  parsing();
  cpu_model();
  msr_intel();
  msr_amd();
  powercap();
  errors();
  std::printf("test_rapl: ok\n");
  return 0;
}
