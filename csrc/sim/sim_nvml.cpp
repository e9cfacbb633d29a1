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
//   energy counter (mJ)       = offset_mj + floor(1000 * E(u)), u = last update <= t
//   instant power (mW, 186)   = mean of p over [u - avg_window_ns, u]
//   nvmlDeviceGetPowerUsage   = mean of p over [u - power_usage_window_ns, u]
//   each device query busy-waits latency_ns first; faults: lost_after, unsupported.
// The config is read at nvmlInit when it changed; an older config object is
// freed only when the library is unloaded, so a reader on another thread can
// never see it vanish.

#include <dlfcn.h>
#include <nvml.h>
#include <sys/stat.h>
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

struct SimGpu {
  std::string name = "NVIDIA H100 80GB HBM3 (simulated)";
  std::string uuid;
  std::string pci = "00000000:01:00.0";
  unsigned arch = NVML_DEVICE_ARCH_HOPPER;
  unsigned power_limit_mw = 700000;
  double idle_w = 60.0;
  std::int64_t lost_after_ns = INT64_MAX;
  std::vector<unsigned> unsupported_fields;
  bool energy_call_unsupported = false;
  bool power_call_unsupported = false;
  std::vector<std::pair<std::pair<std::int64_t, std::int64_t>, double>> segments;
  // Piecewise-constant truth: level[k] on [t[k], t[k+1]); energy_j[k] = E(t[k]).
  std::vector<std::int64_t> t;
  std::vector<double> level;
  std::vector<double> energy_j;

  void build(std::int64_t load_ns) {
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
    for (std::size_t k = 1; k < t.size(); ++k) {
      energy_j[k] = energy_j[k - 1] + level[k - 1] * static_cast<double>(t[k] - t[k - 1]) * 1e-9;
    }
  }

  // True energy since load, J.
  double energy_at(std::int64_t when) const {
    if (when <= t.front()) return 0.0;
    const std::size_t k = static_cast<std::size_t>(std::upper_bound(t.begin(), t.end(), when) - t.begin()) - 1;
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
  unsigned long long counter_mj(const SimGpu& g, std::int64_t when) const {
    return offset_mj + static_cast<unsigned long long>(std::floor(g.energy_at(last_update(when)) * 1000.0));
  }
  unsigned mean_power_mw(const SimGpu& g, std::int64_t when, std::int64_t window) const {
    const std::int64_t u = last_update(when);
    if (window <= 0) window = 1;
    const double j = g.energy_at(u) - g.energy_at(u - window);
    return static_cast<unsigned>(std::llround(j / (static_cast<double>(window) * 1e-9) * 1000.0));
  }
};

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
  for (auto& g : c->gpus) g.build(c->load_ns);
  g_diag[0] = '\0';
  return c;
}

const Config* cfg() { return g_config.load(std::memory_order_acquire); }

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
  *energy = c->counter_mj(*g, when);
  return NVML_SUCCESS;
}

SIM_EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int* power) {
  SIM_ENTER(device);
  if (power == nullptr) return NVML_ERROR_INVALID_ARGUMENT;
  if (g->power_call_unsupported) return NVML_ERROR_NOT_SUPPORTED;
  *power = c->mean_power_mw(*g, when, c->power_usage_window_ns);
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
        f.value.ullVal = c->counter_mj(*g, when);
        f.nvmlReturn = NVML_SUCCESS;
        break;
      case 186:  // NVML_FI_DEV_POWER_INSTANT
        f.valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        f.value.uiVal = c->mean_power_mw(*g, when, c->avg_window_ns);
        f.nvmlReturn = NVML_SUCCESS;
        break;
      case 185:  // NVML_FI_DEV_POWER_AVERAGE
        f.valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
        f.value.uiVal = c->mean_power_mw(*g, when, c->power_usage_window_ns);
        f.nvmlReturn = NVML_SUCCESS;
        break;
      default:
        f.nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
    }
  }
  return NVML_SUCCESS;
}
