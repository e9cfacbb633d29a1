#include "jouletrace/nvml_source.hpp"

#include <dlfcn.h>
#include <link.h>
#include <nvml.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "jouletrace/clock.hpp"

namespace jouletrace {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr const char* kDefaultLibrary = "libnvidia-ml.so.1";

// Field ids (nvml.h). 83 and 191 are the same counter under two names; some
// drivers answer only one of them.
constexpr unsigned kFieldEnergy = NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION;  // 83, mJ
constexpr unsigned kFieldEnergyAlt = 191;                                // NVML_FI_DEV_ENERGY, mJ
constexpr unsigned kFieldPowerInstant = 186;                             // NVML_FI_DEV_POWER_INSTANT, mW

double field_to_double(const nvmlFieldValue_t& f) noexcept {
  switch (f.valueType) {
    case NVML_VALUE_TYPE_DOUBLE: return f.value.dVal;
    case NVML_VALUE_TYPE_UNSIGNED_INT: return static_cast<double>(f.value.uiVal);
    case NVML_VALUE_TYPE_UNSIGNED_LONG: return static_cast<double>(f.value.ulVal);
    case NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: return static_cast<double>(f.value.ullVal);
    case NVML_VALUE_TYPE_SIGNED_LONG_LONG: return static_cast<double>(f.value.sllVal);
    case NVML_VALUE_TYPE_SIGNED_INT: return static_cast<double>(f.value.siVal);
    case NVML_VALUE_TYPE_UNSIGNED_SHORT: return static_cast<double>(f.value.usVal);
    default: return kNaN;
  }
}

bool file_exists(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0;
}

}  // namespace

std::string nvml_library_path(const std::string& library) {
  if (!library.empty()) return library;
  const char* env = std::getenv("JOULETRACE_NVML_LIBRARY");
  if (env != nullptr && env[0] != '\0') return env;
  return kDefaultLibrary;
}

struct NvmlSource::Impl {
  // The entry points we use, typed from the real nvml.h.
  void* lib = nullptr;
  bool initialised = false;
  decltype(&nvmlInit_v2) Init = nullptr;
  decltype(&nvmlShutdown) Shutdown = nullptr;
  decltype(&nvmlErrorString) ErrorString = nullptr;
  decltype(&nvmlDeviceGetCount_v2) GetCount = nullptr;
  decltype(&nvmlDeviceGetHandleByIndex_v2) GetHandle = nullptr;
  decltype(&nvmlDeviceGetName) GetName = nullptr;
  decltype(&nvmlDeviceGetUUID) GetUUID = nullptr;
  decltype(&nvmlDeviceGetFieldValues) GetFieldValues = nullptr;
  decltype(&nvmlDeviceGetTotalEnergyConsumption) GetTotalEnergy = nullptr;
  decltype(&nvmlDeviceGetPowerUsage) GetPowerUsage = nullptr;
  // Optional: metadata only.
  decltype(&nvmlSystemGetDriverVersion) GetDriverVersion = nullptr;
  decltype(&nvmlSystemGetNVMLVersion) GetNvmlVersion = nullptr;
  decltype(&nvmlDeviceGetArchitecture) GetArchitecture = nullptr;
  decltype(&nvmlDeviceGetPciInfo_v3) GetPciInfo = nullptr;
  decltype(&nvmlDeviceGetEnforcedPowerLimit) GetPowerLimit = nullptr;

  struct Gpu {
    int index = 0;
    nvmlDevice_t handle{};
    std::string label;               // "GPU 0 (NVIDIA H100, GPU-...)" for messages
    nvmlFieldValue_t fields[2]{};    // what one nvmlDeviceGetFieldValues call reads
    int n_fields = 0;
    int energy_slot = -1, power_slot = -1;  // index into fields, or -1
    bool energy_call = false, power_call = false;  // fed by the dedicated call instead
    int ch_energy = -1, ch_power = -1, ch_energy_ts = -1, ch_power_ts = -1;
    bool lost = false;
  };
  std::vector<Gpu> gpus;

  const char* err(nvmlReturn_t r) const noexcept { return ErrorString != nullptr ? ErrorString(r) : "NVML error"; }

  template <class F>
  void need(F& fn, const char* sym, const std::string& path) {
    fn = reinterpret_cast<F>(dlsym(lib, sym));
    if (fn == nullptr) {
      throw SourceUnavailable("NVML library " + path + " lacks " + sym +
                              ": it is too old or not NVML. Update the NVIDIA driver (R450 or newer), "
                              "or point JOULETRACE_NVML_LIBRARY at a current libnvidia-ml.so.1");
    }
  }
  template <class F>
  void want(F& fn, const char* sym) {
    fn = reinterpret_cast<F>(dlsym(lib, sym));
  }

  void mark_lost(Gpu& g, ErrorSlot& errors, nvmlReturn_t r) noexcept {
    g.lost = true;
    errors.report(kErrorDeviceLost,
                  "%s became unreachable at t=%lld ns CLOCK_MONOTONIC (%s): its channels read NaN "
                  "from then on and every sample before is kept. Check nvidia-smi and the kernel log "
                  "(Xid errors); the GPU may need a reset",
                  g.label.c_str(), static_cast<long long>(monotonic_ns()), err(r));
  }
};

namespace {
bool is_lost(nvmlReturn_t r) { return r == NVML_ERROR_GPU_IS_LOST; }

[[noreturn]] void throw_for(nvmlReturn_t r, const std::string& what, const char* text) {
  std::string msg = what + ": " + text + " (NVML error " + std::to_string(static_cast<int>(r)) + ")";
  switch (r) {
    case NVML_ERROR_NO_PERMISSION:
      throw PermissionDenied(msg + ". The process may not talk to the NVIDIA driver: check the "
                                   "permissions of /dev/nvidia* (group video/render) or run in a "
                                   "container started with the NVIDIA runtime");
    case NVML_ERROR_DRIVER_NOT_LOADED:
      throw SourceUnavailable(msg + ". The NVIDIA kernel driver is not loaded: install it or run "
                                    "`nvidia-smi` to see why; use Sampler('sim') to try jouletrace without a GPU");
    case NVML_ERROR_GPU_IS_LOST:
      throw DeviceLost(msg + ". Check nvidia-smi and the kernel log (Xid errors)");
    case NVML_ERROR_INVALID_ARGUMENT:
      throw InvalidArgument(msg);
    default:
      throw SourceUnavailable(msg);
  }
}
}  // namespace

NvmlSource::NvmlSource(const NvmlOptions& options) : name_(options.source_name), impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  const std::string path = nvml_library_path(options.library);
  const bool explicit_path = path.find('/') != std::string::npos;
  if (explicit_path && !file_exists(path)) {
    throw SourceUnavailable("NVML library " + path + " does not exist (from nvml_library= or "
                            "JOULETRACE_NVML_LIBRARY): fix the path or unset it");
  }
  m.lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (m.lib == nullptr) {
    const char* e = dlerror();
    throw SourceUnavailable("could not load the NVML library " + path + " (" + (e ? e : "unknown") +
                            "). Install the NVIDIA driver, or set JOULETRACE_NVML_LIBRARY / "
                            "nvml_library= to the path of libnvidia-ml.so.1; Sampler('sim') "
                            "runs without a GPU");
  }
  std::string loaded = path;
  if (link_map* lm = nullptr; dlinfo(m.lib, RTLD_DI_LINKMAP, &lm) == 0 && lm != nullptr && lm->l_name != nullptr &&
                              lm->l_name[0] != '\0') {
    loaded = lm->l_name;
  }
  try {
    m.need(m.Init, "nvmlInit_v2", path);
    m.need(m.Shutdown, "nvmlShutdown", path);
    m.need(m.ErrorString, "nvmlErrorString", path);
    m.need(m.GetCount, "nvmlDeviceGetCount_v2", path);
    m.need(m.GetHandle, "nvmlDeviceGetHandleByIndex_v2", path);
    m.need(m.GetName, "nvmlDeviceGetName", path);
    m.need(m.GetUUID, "nvmlDeviceGetUUID", path);
    m.need(m.GetTotalEnergy, "nvmlDeviceGetTotalEnergyConsumption", path);
    m.need(m.GetPowerUsage, "nvmlDeviceGetPowerUsage", path);
    m.want(m.GetFieldValues, "nvmlDeviceGetFieldValues");
    m.want(m.GetDriverVersion, "nvmlSystemGetDriverVersion");
    m.want(m.GetNvmlVersion, "nvmlSystemGetNVMLVersion");
    m.want(m.GetArchitecture, "nvmlDeviceGetArchitecture");
    m.want(m.GetPciInfo, "nvmlDeviceGetPciInfo_v3");
    m.want(m.GetPowerLimit, "nvmlDeviceGetEnforcedPowerLimit");

    if (nvmlReturn_t r = m.Init(); r != NVML_SUCCESS) throw_for(r, "nvmlInit failed", m.err(r));
    m.initialised = true;

    metadata_.emplace_back("nvml.library", loaded);
    char buf[256];
    if (m.GetNvmlVersion && m.GetNvmlVersion(buf, sizeof buf) == NVML_SUCCESS) metadata_.emplace_back("nvml.version", buf);
    if (m.GetDriverVersion && m.GetDriverVersion(buf, sizeof buf) == NVML_SUCCESS)
      metadata_.emplace_back("nvml.driver_version", buf);

    unsigned count = 0;
    if (nvmlReturn_t r = m.GetCount(&count); r != NVML_SUCCESS) throw_for(r, "nvmlDeviceGetCount failed", m.err(r));
    if (count == 0) {
      throw SourceUnavailable("NVML found no GPU. Check `nvidia-smi` and CUDA_VISIBLE_DEVICES-independent "
                              "visibility (containers need --gpus); Sampler('sim') runs without a GPU");
    }
    std::vector<int> wanted;
    for (int idx : options.gpus) {  // a GPU named twice is read once
      if (std::find(wanted.begin(), wanted.end(), idx) == wanted.end()) wanted.push_back(idx);
    }
    if (wanted.empty()) {
      for (unsigned i = 0; i < count; ++i) wanted.push_back(static_cast<int>(i));
    }
    for (int idx : wanted) {
      if (idx < 0 || static_cast<unsigned>(idx) >= count) {
        throw InvalidArgument("GPU index " + std::to_string(idx) + " does not exist: NVML sees " +
                              std::to_string(count) + " GPU(s), indices 0.." + std::to_string(count - 1) +
                              " (NVML indices, not CUDA_VISIBLE_DEVICES numbering)");
      }
    }

    for (int idx : wanted) {
      Impl::Gpu g;
      g.index = idx;
      const std::string dev = "gpu" + std::to_string(idx);
      if (nvmlReturn_t r = m.GetHandle(static_cast<unsigned>(idx), &g.handle); r != NVML_SUCCESS) {
        throw_for(r, "nvmlDeviceGetHandleByIndex(" + std::to_string(idx) + ") failed", m.err(r));
      }
      std::string gname = "unknown", uuid = "unknown";
      if (m.GetName(g.handle, buf, sizeof buf) == NVML_SUCCESS) gname = buf;
      if (m.GetUUID(g.handle, buf, sizeof buf) == NVML_SUCCESS) uuid = buf;
      g.label = "GPU " + std::to_string(idx) + " (" + gname + ", " + uuid + ")";
      metadata_.emplace_back(dev + ".name", gname);
      metadata_.emplace_back(dev + ".uuid", uuid);
      metadata_.emplace_back(dev + ".index", std::to_string(idx));
      unsigned arch = 0;
      bool hopper_or_newer = false;
      if (m.GetArchitecture) {
        nvmlDeviceArchitecture_t a{};
        if (m.GetArchitecture(g.handle, &a) == NVML_SUCCESS) {
          arch = static_cast<unsigned>(a);
          hopper_or_newer = arch >= NVML_DEVICE_ARCH_HOPPER && arch != 0xffffffffu;
          metadata_.emplace_back(dev + ".architecture", std::to_string(arch));
        }
      }
      if (m.GetPciInfo) {
        nvmlPciInfo_t pci{};
        if (m.GetPciInfo(g.handle, &pci) == NVML_SUCCESS) metadata_.emplace_back(dev + ".pci_bus_id", pci.busId);
      }
      if (m.GetPowerLimit) {
        unsigned mw = 0;
        if (m.GetPowerLimit(g.handle, &mw) == NVML_SUCCESS)
          metadata_.emplace_back(dev + ".power_limit_w", std::to_string(mw / 1000.0));
      }

      // Probe which call can feed each channel, field values first.
      auto probe_field = [&](unsigned field) -> bool {
        if (!m.GetFieldValues) return false;
        nvmlFieldValue_t f{};
        f.fieldId = field;
        nvmlReturn_t r = m.GetFieldValues(g.handle, 1, &f);
        if (is_lost(r) || is_lost(f.nvmlReturn)) throw_for(NVML_ERROR_GPU_IS_LOST, g.label, m.err(NVML_ERROR_GPU_IS_LOST));
        return r == NVML_SUCCESS && f.nvmlReturn == NVML_SUCCESS;
      };
      std::string energy_feed, power_feed;
      if (probe_field(kFieldEnergy)) {
        g.energy_slot = g.n_fields;
        g.fields[g.n_fields++].fieldId = kFieldEnergy;
        energy_feed = "nvmlDeviceGetFieldValues(NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION=83)";
      } else if (probe_field(kFieldEnergyAlt)) {
        g.energy_slot = g.n_fields;
        g.fields[g.n_fields++].fieldId = kFieldEnergyAlt;
        energy_feed = "nvmlDeviceGetFieldValues(NVML_FI_DEV_ENERGY=191)";
      } else {
        unsigned long long mj = 0;
        nvmlReturn_t r = m.GetTotalEnergy(g.handle, &mj);
        if (is_lost(r)) throw_for(r, g.label, m.err(r));
        if (r == NVML_SUCCESS) {
          g.energy_call = true;
          energy_feed = "nvmlDeviceGetTotalEnergyConsumption";
        }
      }
      if (probe_field(kFieldPowerInstant)) {
        g.power_slot = g.n_fields;
        g.fields[g.n_fields++].fieldId = kFieldPowerInstant;
        power_feed = "nvmlDeviceGetFieldValues(NVML_FI_DEV_POWER_INSTANT=186)";
      } else {
        unsigned mw = 0;
        nvmlReturn_t r = m.GetPowerUsage(g.handle, &mw);
        if (is_lost(r)) throw_for(r, g.label, m.err(r));
        if (r == NVML_SUCCESS) {
          g.power_call = true;
          power_feed = "nvmlDeviceGetPowerUsage";
          if (hopper_or_newer) {
            metadata_.emplace_back(dev + ".power_avg_w.note",
                                   "nvmlDeviceGetPowerUsage on Hopper and newer is a 1-second moving "
                                   "average, not instant power: do not use it for short windows");
          }
        }
      }
      if (energy_feed.empty() && power_feed.empty()) {
        throw SourceUnavailable(g.label + " reports neither an energy counter nor power "
                                "(NVML_ERROR_NOT_SUPPORTED): energy needs Volta or newer; select other GPUs with gpus=");
      }
      auto add = [&](const std::string& n, bool cumulative) {
        channels_.push_back(ChannelInfo{n, cumulative});
        return static_cast<int>(channels_.size() - 1);
      };
      if (!energy_feed.empty()) {
        g.ch_energy = add(dev + ".energy_j", true);
        // Every feed is NVML's unsigned long long of millijoules since the driver loaded.
        channels_[static_cast<std::size_t>(g.ch_energy)].counter_bits = 64;
        channels_[static_cast<std::size_t>(g.ch_energy)].wrap_j = std::ldexp(1e-3, 64);
        metadata_.emplace_back(dev + ".energy_j.feed", energy_feed);
      } else {
        metadata_.emplace_back(dev + ".energy_j.feed", "not supported by this GPU");
      }
      if (!power_feed.empty()) {
        // Instant power (field 186) is `power_w`; nvmlDeviceGetPowerUsage is an average
        // (1 s on Hopper) and is named `power_avg_w` so nobody mistakes one for the other.
        const std::string pch = dev + (g.power_call ? ".power_avg_w" : ".power_w");
        g.ch_power = add(pch, false);
        metadata_.emplace_back(pch + ".feed", power_feed);
      } else {
        metadata_.emplace_back(dev + ".power_w.feed", "not supported by this GPU");
      }
      if (options.timestamps) {
        if (g.energy_slot >= 0) g.ch_energy_ts = add(dev + ".energy_ts_us", false);
        if (g.power_slot >= 0) g.ch_power_ts = add(dev + ".power_ts_us", false);
      }
      m.gpus.push_back(g);
    }
    if (channels_.size() > kMaxChannels) {
      throw InvalidArgument(std::to_string(channels_.size()) + " channels exceed the " +
                            std::to_string(kMaxChannels) + " one sampler can carry: select fewer GPUs with "
                            "gpus= or pass timestamps=False");
    }
  } catch (...) {
    if (m.initialised) m.Shutdown();
    dlclose(m.lib);
    m.lib = nullptr;
    throw;
  }
}

NvmlSource::~NvmlSource() {
  if (impl_ && impl_->lib != nullptr) {
    if (impl_->initialised) impl_->Shutdown();
    dlclose(impl_->lib);
  }
}

std::int32_t NvmlSource::read(double* out, ErrorSlot& errors) noexcept {
  Impl& m = *impl_;
  std::int32_t status = kStatusOk;
  auto worse = [&status](std::int32_t s) {
    if (s > status) status = s;
  };
  for (Impl::Gpu& g : m.gpus) {
    double energy = kNaN, power = kNaN, energy_ts = kNaN, power_ts = kNaN;
    if (!g.lost && g.n_fields > 0) {
      const nvmlReturn_t r = m.GetFieldValues(g.handle, g.n_fields, g.fields);
      if (r == NVML_SUCCESS) {
        for (int i = 0; i < g.n_fields; ++i) {
          const nvmlFieldValue_t& f = g.fields[i];
          if (f.nvmlReturn != NVML_SUCCESS) {
            if (is_lost(f.nvmlReturn)) m.mark_lost(g, errors, f.nvmlReturn);
            worse(kStatusPartial);
            continue;
          }
          const double v = field_to_double(f) / 1000.0;  // mJ -> J, mW -> W
          if (std::isnan(v)) {  // a value type this build does not know: not a reading
            worse(kStatusPartial);
            continue;
          }
          const double ts = static_cast<double>(f.timestamp);
          if (i == g.energy_slot) {
            energy = v;
            energy_ts = ts;
          } else if (i == g.power_slot) {
            power = v;
            power_ts = ts;
          }
        }
      } else if (is_lost(r)) {
        m.mark_lost(g, errors, r);
      } else {
        worse(kStatusPartial);
      }
    }
    if (!g.lost && g.energy_call) {
      unsigned long long mj = 0;
      const nvmlReturn_t r = m.GetTotalEnergy(g.handle, &mj);
      if (r == NVML_SUCCESS) {
        energy = static_cast<double>(mj) / 1000.0;
      } else if (is_lost(r)) {
        m.mark_lost(g, errors, r);
      } else {
        worse(kStatusPartial);
      }
    }
    if (!g.lost && g.power_call) {
      unsigned mw = 0;
      const nvmlReturn_t r = m.GetPowerUsage(g.handle, &mw);
      if (r == NVML_SUCCESS) {
        power = static_cast<double>(mw) / 1000.0;
      } else if (is_lost(r)) {
        m.mark_lost(g, errors, r);
      } else {
        worse(kStatusPartial);
      }
    }
    if (g.lost) {
      energy = power = energy_ts = power_ts = kNaN;
      worse(kStatusDeviceLost);
    }
    if (g.ch_energy >= 0) out[g.ch_energy] = energy;
    if (g.ch_power >= 0) out[g.ch_power] = power;
    if (g.ch_energy_ts >= 0) out[g.ch_energy_ts] = energy_ts;
    if (g.ch_power_ts >= 0) out[g.ch_power_ts] = power_ts;
  }
  return status;
}

}  // namespace jouletrace
