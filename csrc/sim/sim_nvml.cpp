// The simulated GPU: a shared library that exports the NVML entry points
// jouletrace and pynvml call, driven by a schedule of true power.
//
// Configuration lives in `jouletrace-sim.conf` next to the library file (found
// with dladdr), or in the file named by JOULETRACE_SIM_CONFIG. jouletrace.sim
// writes both: it copies this library into a private folder as
// libnvidia-ml.so.1 beside its config, so every copy is an independent GPU set
// that any NVML consumer (another process through LD_LIBRARY_PATH too) sees.
//
// Model, per GPU (all times CLOCK_MONOTONIC ns, so processes agree):
//   true power   p(t) = idle_w + sum of the segments (start, end, watts) covering t
//   true energy  E(t) = integral of p from load_ns (the "driver load") to t
//   sensor updates at u_k = phase_ns + k * update_period_ns
//   energy counter (mJ)       = offset_mj + floor(1000 * E(u)), u = last update <= t  ("full" counter)
//                             = offset_mj + floor(1000 * A(u) * P / W)          ("part_time" counter)
//     where A(t) = integral from load_ns to t of p(s) * [s lies in the last avg_window_ns W of its
//     update period P] ds: the part-time counter adds, per period, the mean power over the
//     period's last W times P (what a sensor that sees only that window integrates).
//   instant power (mW, 186)   = mean of p over [u - avg_window_ns, u]
//   nvmlDeviceGetPowerUsage   = mean of p over [u - power_usage_window_ns, u]
//   each device query busy-waits latency_ns first; faults: lost_after, unsupported.
//   live load: `<config>.live` is an append-only file of 32-byte records (int64 gpu,
//   start_ns, end_ns; float64 watts), in time order per GPU, read on growth by every
//   query; its segments add to the schedule (cheap enough to append one per call).
// The config is read at nvmlInit when it changed; an older config object is
// freed only when the library is unloaded, so a reader on another thread can
// never see it vanish.

#include <dlfcn.h>
#include <nvml.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#define SIM_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

std::int64_t now_ns(clockid_t c) {
  timespec ts{};
  clock_gettime(c, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}

// The averaging windows: the last w ns of each update period p, periods starting at phase.
struct Mask {
  std::int64_t p = 0, w = 0, phase = 0;
  // Time (ns) of [phase, when) that lies in a window (negative before phase); exact integers.
  std::int64_t before(std::int64_t when) const {
    if (p <= 0) return when;
    const std::int64_t d = when - phase;
    const std::int64_t k = floor_div(d, p);
    const std::int64_t r = d - k * p;
    return k * w + std::clamp<std::int64_t>(r - (p - w), 0, w);
  }
};

struct SimGpu {
  std::string name = "NVIDIA H100 80GB HBM3 (simulated)";
  std::string uuid;
  std::string pci = "00000000:01:00.0";
  unsigned arch = NVML_DEVICE_ARCH_HOPPER;
  unsigned power_limit_mw = 700000;
  double idle_w = 60.0;
  bool part_time = false;  // counter integrates only the averaging window of each period
  std::int64_t lost_after_ns = INT64_MAX;
  std::vector<unsigned> unsupported_fields;
  bool energy_call_unsupported = false;
  bool power_call_unsupported = false;
  std::vector<std::pair<std::pair<std::int64_t, std::int64_t>, double>> segments;
  // Piecewise-constant truth: level[k] on [t[k], t[k+1]); energy_j[k] = E(t[k]).
  std::vector<std::int64_t> t;
  std::vector<double> level;
  std::vector<double> energy_j;
  std::vector<double> masked_j;  // A(t[k]): energy inside the averaging windows (J)

  void build(std::int64_t load_ns, const Mask& mask) {
    std::vector<std::pair<std::int64_t, double>> ev;
    for (const auto& s : segments) {
      std::int64_t a = std::max(s.first.first, load_ns), b = s.first.second;
      if (b <= a) continue;
      ev.emplace_back(a, s.second);
      ev.emplace_back(b, -s.second);
    }
    std::sort(ev.begin(), ev.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    t.assign(1, load_ns);
    level.assign(1, idle_w);
    double cur = idle_w;
    for (std::size_t i = 0; i < ev.size();) {
      const std::int64_t at = ev[i].first;
      while (i < ev.size() && ev[i].first == at) cur += ev[i++].second;
      if (at == t.back()) {
        level.back() = cur;
      } else {
        t.push_back(at);
        level.push_back(cur);
      }
    }
    energy_j.assign(t.size(), 0.0);
    masked_j.assign(t.size(), 0.0);
    for (std::size_t k = 1; k < t.size(); ++k) {
      energy_j[k] = energy_j[k - 1] + level[k - 1] * static_cast<double>(t[k] - t[k - 1]) * 1e-9;
      masked_j[k] = masked_j[k - 1] + level[k - 1] * static_cast<double>(mask.before(t[k]) - mask.before(t[k - 1])) * 1e-9;
    }
  }

  std::size_t at(std::int64_t when) const {
    return static_cast<std::size_t>(std::upper_bound(t.begin(), t.end(), when) - t.begin()) - 1;
  }
  double masked_at(std::int64_t when, const Mask& mask) const {
    if (when <= t.front()) return 0.0;
    const std::size_t k = at(when);
    return masked_j[k] + level[k] * static_cast<double>(mask.before(when) - mask.before(t[k])) * 1e-9;
  }

  // True energy since load, J.
  double energy_at(std::int64_t when) const {
    if (when <= t.front()) return 0.0;
    const std::size_t k = at(when);
    return energy_j[k] + level[k] * static_cast<double>(when - t[k]) * 1e-9;
  }

  bool field_unsupported(unsigned f) const {
    return std::find(unsupported_fields.begin(), unsupported_fields.end(), f) != unsupported_fields.end();
  }
};

struct Config {
  std::int64_t update_period_ns = 100'000'000;
  std::int64_t phase_ns = 0;
  std::int64_t avg_window_ns = 25'000'000;
  std::int64_t power_usage_window_ns = 1'000'000'000;
  std::int64_t latency_ns = 0;
  std::int64_t load_ns = 0;
  unsigned long long offset_mj = 0;
  std::string driver_version = "999.99.99-sim";
  std::string nvml_version = "13.999.99-sim";
  std::vector<SimGpu> gpus;

  // Last sensor update at or before `when`.
  std::int64_t last_update(std::int64_t when) const {
    if (update_period_ns <= 0) return when;
    const std::int64_t d = when - phase_ns;
    std::int64_t k = d / update_period_ns;
    if (d < 0 && d % update_period_ns != 0) --k;
    return phase_ns + k * update_period_ns;
  }
  Mask mask() const {
    Mask m;
    m.p = update_period_ns;
    m.w = std::clamp<std::int64_t>(avg_window_ns, 1, std::max<std::int64_t>(update_period_ns, 1));
    m.phase = phase_ns;
    return m;
  }
  // Energy the counter has counted up to update u (J), schedule plus live load of GPU `gi`.
  double counted_j(const SimGpu& g, std::size_t gi, std::int64_t u) const;
  unsigned long long counter_mj(const SimGpu& g, std::size_t gi, std::int64_t when) const {
    return offset_mj + static_cast<unsigned long long>(std::floor(counted_j(g, gi, last_update(when)) * 1000.0));
  }
  unsigned mean_power_mw(const SimGpu& g, std::size_t gi, std::int64_t when, std::int64_t window) const;
};

// -- live load -------------------------------------------------------------------------
// Append-only per-GPU segments. One writer at a time (under g_live_mutex) appends and then
// publishes the count with a release store; readers acquire the count and read only below it.
struct LiveLoad {
  static constexpr std::size_t kCapacity = std::size_t{1} << 18;
  std::unique_ptr<std::int64_t[]> start{new std::int64_t[kCapacity]};
  std::unique_ptr<std::int64_t[]> end{new std::int64_t[kCapacity]};
  std::unique_ptr<double[]> watts{new double[kCapacity]};
  std::unique_ptr<double[]> e_before{new double[kCapacity + 1]};  // energy of segments [0, i) (J)
  std::unique_ptr<double[]> m_before{new double[kCapacity + 1]};  // the same inside the windows
  std::atomic<std::size_t> n{0};

  std::size_t last_started(std::int64_t when, std::size_t count) const {  // count when none
    const auto* b = start.get();
    const auto it = std::upper_bound(b, b + count, when);
    return it == b ? count : static_cast<std::size_t>(it - b) - 1;
  }
  double energy_at(std::int64_t when) const {
    const std::size_t count = n.load(std::memory_order_acquire);  // pairs with append's release
    const std::size_t i = last_started(when, count);
    if (i == count) return 0.0;
    return e_before[i] + watts[i] * static_cast<double>(std::min(when, end[i]) - start[i]) * 1e-9;
  }
  double masked_at(std::int64_t when, const Mask& m) const {
    const std::size_t count = n.load(std::memory_order_acquire);  // pairs with append's release
    const std::size_t i = last_started(when, count);
    if (i == count) return 0.0;
    return m_before[i] + watts[i] * static_cast<double>(m.before(std::min(when, end[i])) - m.before(start[i])) * 1e-9;
  }
  // Writer only (g_live_mutex held). Segments before the previous end are clipped to it.
  void append(std::int64_t a, std::int64_t b, double w, const Mask& m) {
    const std::size_t i = n.load(std::memory_order_relaxed);
    if (i >= kCapacity || !(w >= 0)) return;
    if (i > 0) a = std::max(a, end[i - 1]);
    if (b <= a) return;
    if (i == 0) {
      e_before[0] = 0.0;
      m_before[0] = 0.0;
    }
    start[i] = a;
    end[i] = b;
    watts[i] = w;
    e_before[i + 1] = e_before[i] + w * static_cast<double>(b - a) * 1e-9;
    m_before[i + 1] = m_before[i] + w * static_cast<double>(m.before(b) - m.before(a)) * 1e-9;
    n.store(i + 1, std::memory_order_release);  // pairs with the readers' acquire
  }
};

std::mutex g_live_mutex;
LiveLoad* g_live[64] = {};  // allocated on a GPU's first live segment; freed with the configs
int g_live_fd = -1;
std::uint64_t g_live_offset = 0;
std::atomic<std::uint64_t> g_live_size_seen{0};

double live_energy(std::size_t gi, std::int64_t when) {
  const LiveLoad* l = gi < 64 ? g_live[gi] : nullptr;
  return l == nullptr ? 0.0 : l->energy_at(when);
}
double live_masked(std::size_t gi, std::int64_t when, const Mask& m) {
  const LiveLoad* l = gi < 64 ? g_live[gi] : nullptr;
  return l == nullptr ? 0.0 : l->masked_at(when, m);
}

double Config::counted_j(const SimGpu& g, std::size_t gi, std::int64_t u) const {
  if (g.part_time && update_period_ns > 0) {
    const Mask m = mask();
    const double a = g.masked_at(u, m) + live_masked(gi, u, m);
    return a * static_cast<double>(m.p) / static_cast<double>(m.w);
  }
  return g.energy_at(u) + live_energy(gi, u);
}

unsigned Config::mean_power_mw(const SimGpu& g, std::size_t gi, std::int64_t when, std::int64_t window) const {
    const std::int64_t u = last_update(when);
    if (window <= 0) window = 1;
    const double j = (g.energy_at(u) + live_energy(gi, u)) - (g.energy_at(u - window) + live_energy(gi, u - window));
    return static_cast<unsigned>(std::llround(j / (static_cast<double>(window) * 1e-9) * 1000.0));
}

std::mutex g_mutex;
std::atomic<const Config*> g_config{nullptr};
// Every config ever loaded. Never freed while the process runs: a sampler thread still
// polling at exit() must not see its config destroyed by static destructors; freed
// by the library destructor only when nothing has NVML initialised (a clean dlclose).
auto* g_all_configs = new std::vector<std::unique_ptr<Config>>();
// Why the last config could not be loaded ("<path> line N: ..."), for nvmlErrorString.
char g_diag[512] = "";
std::atomic<int> g_init_count{0};
auto* g_loaded_path = new std::string();
std::int64_t g_loaded_mtime = -1;
std::int64_t g_loaded_size = -1;
std::uint64_t g_loaded_inode = 0;

std::string config_path() {
  if (const char* e = std::getenv("JOULETRACE_SIM_CONFIG"); e != nullptr && e[0] != '\0') return e;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&config_path), &info) != 0 && info.dli_fname != nullptr) {
    std::string p = info.dli_fname;
    const auto slash = p.rfind('/');
    return (slash == std::string::npos ? std::string(".") : p.substr(0, slash)) + "/jouletrace-sim.conf";
  }
  return "jouletrace-sim.conf";
}

std::string rest_of(std::istringstream& in) {
  std::string s;
  std::getline(in, s);
  const auto b = s.find_first_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b);
}

// Note why a config is refused; nvmlErrorString(NVML_ERROR_UNKNOWN) then says it.
Config* refuse(Config* c, const std::string& path, int line, const char* what) {
  delete c;
  std::snprintf(g_diag, sizeof g_diag, "simulated GPU config %s line %d: %s (rewrite it with jouletrace.sim.SimGPU)",
                path.c_str(), line, what);
  return nullptr;
}

// Parse the config; nullptr if missing or malformed (nvmlInit then fails and
// nvmlErrorString says which line and why).
Config* parse(const std::string& path) {
  std::ifstream f(path);
  if (!f) return nullptr;
  auto* c = new Config();
  std::string line;
  int lineno = 0;
  auto gpu = [c](long i) -> SimGpu* {
    if (i < 0 || static_cast<std::size_t>(i) >= c->gpus.size()) return nullptr;
    return &c->gpus[static_cast<std::size_t>(i)];
  };
  while (std::getline(f, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string key;
    in >> key;
    long i = -1;
    if (key == "gpu_count") {
      long n = 0;
      in >> n;
      if (n < 0 || n > 64) return refuse(c, path, lineno, "gpu_count must be 0..64");
      c->gpus.resize(static_cast<std::size_t>(n));
      for (std::size_t k = 0; k < c->gpus.size(); ++k) {
        char u[64];
        std::snprintf(u, sizeof u, "GPU-5117e000-0000-4000-8000-%012zx", k);
        c->gpus[k].uuid = u;
        char p[32];
        std::snprintf(p, sizeof p, "00000000:%02zX:00.0", k + 1);
        c->gpus[k].pci = p;
      }
    } else if (key == "update_period_ns") in >> c->update_period_ns;
    else if (key == "phase_ns") in >> c->phase_ns;
    else if (key == "avg_window_ns") in >> c->avg_window_ns;
    else if (key == "power_usage_window_ns") in >> c->power_usage_window_ns;
    else if (key == "latency_ns") in >> c->latency_ns;
    else if (key == "load_ns") in >> c->load_ns;
    else if (key == "offset_mj") in >> c->offset_mj;
    else if (key == "driver_version") c->driver_version = rest_of(in);
    else if (key == "nvml_version") c->nvml_version = rest_of(in);
    else {
      in >> i;
      SimGpu* g = gpu(i);
      if (g == nullptr) return refuse(c, path, lineno, "unknown key, or a GPU index beyond gpu_count");
      if (key == "name") g->name = rest_of(in);
      else if (key == "uuid") g->uuid = rest_of(in);
      else if (key == "pci") g->pci = rest_of(in);
      else if (key == "arch") in >> g->arch;
      else if (key == "power_limit_mw") in >> g->power_limit_mw;
      else if (key == "idle_w") in >> g->idle_w;
      else if (key == "counter") {
        const std::string what = rest_of(in);
        if (what == "full") g->part_time = false;
        else if (what == "part_time") g->part_time = true;
        else return refuse(c, path, lineno, "counter must be 'full' or 'part_time'");
      }
      else if (key == "lost_after_ns") in >> g->lost_after_ns;
      else if (key == "unsupported_field") { unsigned fid = 0; in >> fid; g->unsupported_fields.push_back(fid); }
      else if (key == "unsupported_call") {
        std::string what = rest_of(in);
        if (what == "energy") g->energy_call_unsupported = true;
        else if (what == "power") g->power_call_unsupported = true;
      } else if (key == "segment") {
        std::int64_t a = 0, b = 0;
        double w = 0;
        in >> a >> b >> w;
        g->segments.push_back({{a, b}, w});
      } else {
        return refuse(c, path, lineno, "unknown key");
      }
    }
    if (in.fail()) return refuse(c, path, lineno, "a value is missing or not a number");
    in >> std::ws;
    if (!in.eof()) return refuse(c, path, lineno, "unexpected text after the value (units are not allowed)");
  }
  if (c->update_period_ns < 0 || c->avg_window_ns < 0 || c->power_usage_window_ns < 0 || c->latency_ns < 0) {
    return refuse(c, path, lineno, "periods, windows and latency must be >= 0");
  }
  for (const auto& g : c->gpus) {
    if (!(g.idle_w >= 0)) return refuse(c, path, lineno, "idle_w must be >= 0");
    for (const auto& seg : g.segments) {
      if (!(seg.second >= 0)) return refuse(c, path, lineno, "segment watts must be >= 0");
    }
  }
  for (auto& g : c->gpus) g.build(c->load_ns, c->mask());
  g_diag[0] = '\0';
  return c;
}

const Config* cfg() { return g_config.load(std::memory_order_acquire); }

std::string live_path() { return config_path() + ".live"; }

// Take in live segments appended since the last look (any thread; cheap when nothing grew).
void poll_live(const Config* c) {
  if (g_live_fd < 0) return;
  struct stat st {};
  if (::fstat(g_live_fd, &st) != 0) return;
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < g_live_size_seen.load(std::memory_order_acquire) + 32) return;  // pairs with the store below
  std::lock_guard<std::mutex> lock(g_live_mutex);
  const Mask m = c->mask();
  unsigned char rec[32];
  while (g_live_offset + 32 <= size &&
         ::pread(g_live_fd, rec, sizeof rec, static_cast<off_t>(g_live_offset)) == static_cast<ssize_t>(sizeof rec)) {
    std::int64_t gi = 0, a = 0, b = 0;
    double w = 0;
    std::memcpy(&gi, rec, 8);
    std::memcpy(&a, rec + 8, 8);
    std::memcpy(&b, rec + 16, 8);
    std::memcpy(&w, rec + 24, 8);
    g_live_offset += 32;
    if (gi < 0 || gi >= 64 || static_cast<std::size_t>(gi) >= c->gpus.size()) continue;
    if (g_live[gi] == nullptr) g_live[gi] = new LiveLoad();
    g_live[gi]->append(a, b, w, m);
  }
  g_live_size_seen.store(g_live_offset, std::memory_order_release);
}

void spin(std::int64_t ns) {
  if (ns <= 0) return;
  const std::int64_t until = now_ns(CLOCK_MONOTONIC) + ns;
  while (now_ns(CLOCK_MONOTONIC) < until) {
  }
}

// Common entry of every device query: checks, latency, the time it samples.
nvmlReturn_t enter(nvmlDevice_t dev, const Config*& c, const SimGpu*& g, std::int64_t& when) {
  if (g_init_count.load(std::memory_order_acquire) <= 0) return NVML_ERROR_UNINITIALIZED;
  c = cfg();
  const auto idx = reinterpret_cast<std::uintptr_t>(dev);
  if (c == nullptr || idx == 0 || idx > c->gpus.size()) return NVML_ERROR_INVALID_ARGUMENT;
  g = &c->gpus[idx - 1];
  poll_live(c);
  spin(c->latency_ns);
  when = now_ns(CLOCK_MONOTONIC);
  if (when >= g->lost_after_ns) return NVML_ERROR_GPU_IS_LOST;
  return NVML_SUCCESS;
}

nvmlReturn_t copy_str(const std::string& s, char* out, unsigned len) {
  if (out == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (s.size() + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
  std::memcpy(out, s.c_str(), s.size() + 1);
  return NVML_SUCCESS;
}

}  // namespace

// On dlclose with NVML shut down, nothing can read a config any more: free them (keeps
// leak checkers quiet). At exit() with a sampler still running they stay allocated.
__attribute__((destructor)) static void sim_unload() {
  if (g_init_count.load(std::memory_order_acquire) == 0) {
    delete g_all_configs;
    delete g_loaded_path;
    for (auto*& l : g_live) {
      delete l;
      l = nullptr;
    }
    if (g_live_fd >= 0) ::close(g_live_fd);
    g_live_fd = -1;
    g_all_configs = nullptr;
    g_loaded_path = nullptr;
  }
}

SIM_EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int /*flags*/) {
  std::lock_guard<std::mutex> lock(g_mutex);
  const std::string path = config_path();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return NVML_ERROR_DRIVER_NOT_LOADED;
  const std::int64_t mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  // A rewrite through rename (what jouletrace.sim does) changes the inode even within one mtime tick.
  if (cfg() == nullptr || path != *g_loaded_path || mtime != g_loaded_mtime || st.st_size != g_loaded_size ||
      static_cast<std::uint64_t>(st.st_ino) != g_loaded_inode) {
    Config* c = parse(path);
    if (c == nullptr) return NVML_ERROR_UNKNOWN;
    g_all_configs->emplace_back(c);
    g_config.store(c, std::memory_order_release);  // the previous one is kept alive on purpose
    *g_loaded_path = path;
    g_loaded_mtime = mtime;
    g_loaded_size = st.st_size;
    g_loaded_inode = static_cast<std::uint64_t>(st.st_ino);
  }
  if (g_live_fd < 0) g_live_fd = ::open(live_path().c_str(), O_RDONLY | O_CLOEXEC);
  g_init_count.fetch_add(1, std::memory_order_acq_rel);
  return NVML_SUCCESS;
}

SIM_EXPORT nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

SIM_EXPORT nvmlReturn_t nvmlShutdown(void) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_init_count.load(std::memory_order_acquire) <= 0) return NVML_ERROR_UNINITIALIZED;
  g_init_count.fetch_sub(1, std::memory_order_acq_rel);
  return NVML_SUCCESS;
}

SIM_EXPORT const char* nvmlErrorString(nvmlReturn_t r) {
  switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded (simulated GPU: config file missing)";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_UNKNOWN: return g_diag[0] != '\0' ? g_diag : "Unknown Error";
    default: return "Unknown Error";
  }
}

SIM_EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char* version, unsigned int length) {
  const Config* c = cfg();
  if (g_init_count.load() <= 0 || c == nullptr) return NVML_ERROR_UNINITIALIZED;
  return copy_str(c->driver_version, version, length);
}

SIM_EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char* version, unsigned int length) {
  const Config* c = cfg();
  if (g_init_count.load() <= 0 || c == nullptr) return NVML_ERROR_UNINITIALIZED;
  return copy_str(c->nvml_version, version, length);
}

SIM_EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int* count) {
  const Config* c = cfg();
  if (g_init_count.load() <= 0 || c == nullptr) return NVML_ERROR_UNINITIALIZED;
  if (count == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *count = static_cast<unsigned>(c->gpus.size());
  return NVML_SUCCESS;
}

SIM_EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t* device) {
  const Config* c = cfg();
  if (g_init_count.load() <= 0 || c == nullptr) return NVML_ERROR_UNINITIALIZED;
  if (device == nullptr || index >= c->gpus.size()) return NVML_ERROR_INVALID_ARGUMENT;
  *device = reinterpret_cast<nvmlDevice_t>(static_cast<std::uintptr_t>(index) + 1);
  return NVML_SUCCESS;
}

#define SIM_ENTER(dev)                                 \
  const Config* c = nullptr;                           \
  const SimGpu* g = nullptr;                           \
  std::int64_t when = 0;                               \
  if (nvmlReturn_t r_ = enter(dev, c, g, when); r_ != NVML_SUCCESS) return r_

SIM_EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char* name, unsigned int length) {
  SIM_ENTER(device);
  return copy_str(g->name, name, length);
}

SIM_EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char* uuid, unsigned int length) {
  SIM_ENTER(device);
  return copy_str(g->uuid, uuid, length);
}

SIM_EXPORT nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, nvmlDeviceArchitecture_t* arch) {
  SIM_ENTER(device);
  if (arch == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *arch = g->arch;
  return NVML_SUCCESS;
}

SIM_EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t* pci) {
  SIM_ENTER(device);
  if (pci == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  std::memset(pci, 0, sizeof *pci);
  std::snprintf(pci->busId, sizeof pci->busId, "%s", g->pci.c_str());
  std::snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%s", g->pci.c_str());
  unsigned domain = 0, bus = 0, devno = 0;
  if (std::sscanf(g->pci.c_str(), "%x:%x:%x", &domain, &bus, &devno) == 3) {
    pci->domain = domain;
    pci->bus = bus;
    pci->device = devno;
  }
  pci->pciDeviceId = 0x233010de;
  return NVML_SUCCESS;
}

SIM_EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int* limit) {
  SIM_ENTER(device);
  if (limit == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  *limit = g->power_limit_mw;
  return NVML_SUCCESS;
}

SIM_EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int* limit) {
  return nvmlDeviceGetEnforcedPowerLimit(device, limit);
}

SIM_EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long* energy) {
  SIM_ENTER(device);
  if (energy == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (g->energy_call_unsupported) return NVML_ERROR_NOT_SUPPORTED;
  *energy = c->counter_mj(*g, reinterpret_cast<std::uintptr_t>(device) - 1, when);
  return NVML_SUCCESS;
}

SIM_EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int* power) {
  SIM_ENTER(device);
  if (power == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (g->power_call_unsupported) return NVML_ERROR_NOT_SUPPORTED;
  *power = c->mean_power_mw(*g, reinterpret_cast<std::uintptr_t>(device) - 1, when, c->power_usage_window_ns);
  return NVML_SUCCESS;
}

SIM_EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount, nvmlFieldValue_t* values) {
  const Config* c = nullptr;
  const SimGpu* g = nullptr;
  std::int64_t when = 0;
  const nvmlReturn_t r = enter(device, c, g, when);
  if (r == NVML_ERROR_GPU_IS_LOST && values != nullptr) {
    for (int i = 0; i < valuesCount; ++i) values[i].nvmlReturn = NVML_ERROR_GPU_IS_LOST;
  }
  if (r != NVML_SUCCESS) return r;
  if (values == nullptr || valuesCount < 0) return NVML_ERROR_INVALID_ARGUMENT;
  const std::int64_t u = c->last_update(when);
  // NVML stamps a value with the wall clock of the moment it was sampled.
  const long long stamp_us = (now_ns(CLOCK_REALTIME) - (when - u)) / 1000;
  for (int i = 0; i < valuesCount; ++i) {
    nvmlFieldValue_t& f = values[i];
    f.timestamp = stamp_us;
    f.latencyUsec = c->latency_ns / 1000;
    if (g->field_unsupported(f.fieldId)) {
      f.nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
      continue;
    }
    switch (f.fieldId) {
      case NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
      case 191:  // NVML_FI_DEV_ENERGY
        f.valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
        f.value.ullVal = c->counter_mj(*g, reinterpret_cast<std::uintptr_t>(device) - 1, when);
        f.nvmlReturn = NVML_SUCCESS;
        break;
      case 186:  // NVML_FI_DEV_POWER_INSTANT
        f.valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        f.value.uiVal = c->mean_power_mw(*g, reinterpret_cast<std::uintptr_t>(device) - 1, when, c->avg_window_ns);
        f.nvmlReturn = NVML_SUCCESS;
        break;
      case 185:  // NVML_FI_DEV_POWER_AVERAGE
        f.valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        f.value.uiVal = c->mean_power_mw(*g, reinterpret_cast<std::uintptr_t>(device) - 1, when, c->power_usage_window_ns);
        f.nvmlReturn = NVML_SUCCESS;
        break;
      default:
        f.nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
    }
  }
  return NVML_SUCCESS;
}
