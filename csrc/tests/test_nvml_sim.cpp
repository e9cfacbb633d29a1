// The NVML source against the simulated GPU library, through dlopen, as in
// production. Checks the sensor model's bounds, the fallbacks and a lost GPU
// while a sampler runs. ASan/UBSan and TSan.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include "check.hpp"
#include "jouletrace/clock.hpp"
#include "jouletrace/nvml_source.hpp"
#include "jouletrace/sampler.hpp"

using namespace jouletrace;

namespace {

std::string write_config(const std::string& body) {
  char tmpl[] = "/tmp/jt-sim-test-XXXXXX";
  const int fd = mkstemp(tmpl);
  CHECK(fd >= 0);
  close(fd);
  std::ofstream(tmpl) << body;
  setenv("JOULETRACE_SIM_CONFIG", tmpl, 1);
  return tmpl;
}

const char* channel_feed(const NvmlSource& s, const std::string& key) {
  static std::string v;
  for (const auto& kv : s.metadata()) {
    if (kv.first == key) {
      v = kv.second;
      return v.c_str();
    }
  }
  return "";
}

void constant_power() {
  // 200 W from load time 0 on; counter updates every 10 ms.
  const std::string path = write_config(
      "gpu_count 1\nupdate_period_ns 10000000\navg_window_ns 2500000\nload_ns 0\nidle_w 0 200\n");
  NvmlOptions o;
  o.library = JT_SIM_LIBRARY;
  NvmlSource s(o);
  CHECK(s.channels().size() == 4);
  CHECK(s.channels()[0].name == "gpu0.energy_j");
  CHECK(s.channels()[1].name == "gpu0.power_w");
  CHECK(s.channels()[0].counter_bits == 64 && s.channels()[0].wrap_j == std::ldexp(1e-3, 64));  // NVML's mJ
  CHECK(!s.channels()[1].cumulative && s.channels()[1].counter_bits == 0 && s.channels()[1].wrap_j == 0);
  CHECK(std::string(channel_feed(s, "gpu0.energy_j.feed")).find("=83") != std::string::npos);
  ErrorSlot err;
  double v[kMaxChannels];
  for (int i = 0; i < 50; ++i) {
    const std::int64_t t0 = monotonic_ns();
    CHECK(s.read(v, err) == kStatusOk);
    const std::int64_t t1 = monotonic_ns();
    // counter = floor(1000 * 200 W * u) mJ with u the last 10 ms update <= t
    const double hi = 200.0 * static_cast<double>(t1) * 1e-9;
    const double lo = 200.0 * (static_cast<double>(t0) * 1e-9 - 0.010) - 0.001;
    CHECK(v[0] <= hi + 1e-9 && v[0] >= lo);
    CHECK(std::fabs(v[1] - 200.0) <= 0.001);  // whole mW of a mean over a long integral
    std::this_thread::sleep_for(std::chrono::microseconds(700));
  }
  unlink(path.c_str());
}

void fallbacks_and_loss() {
  const std::int64_t lose_at = monotonic_ns() + 150'000'000;
  const std::string path = write_config(
      "gpu_count 2\nupdate_period_ns 1000000\nload_ns 0\nunsupported_field 0 186\nunsupported_field 0 83\n"
      "lost_after_ns 1 " + std::to_string(lose_at) + "\n");
  NvmlOptions o;
  o.library = JT_SIM_LIBRARY;
  auto src = std::make_unique<NvmlSource>(o);
  CHECK(std::string(channel_feed(*src, "gpu0.power_avg_w.feed")) == "nvmlDeviceGetPowerUsage");
  CHECK(std::string(channel_feed(*src, "gpu0.energy_j.feed")).find("=191") != std::string::npos);
  CHECK(std::string(channel_feed(*src, "gpu0.power_avg_w.note")).find("1-second") != std::string::npos);
  SamplerConfig c;
  c.rate_hz = 2000;
  Sampler s(std::move(src), c);
  s.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  s.stop();
  CHECK(s.errors().kind() == kErrorDeviceLost);
  CHECK(s.errors().message().find("GPU 1") != std::string::npos);
  auto st = s.store();
  std::size_t before = 0, after = 0;
  for (std::size_t i = 0; i < st->size(); ++i) {
    // channel layout: gpu0 energy, power, energy_ts; gpu1 energy, power, energy_ts, power_ts
    if (st->t_after_ns()[i] < lose_at) {
      CHECK(st->status()[i] == kStatusOk);
      CHECK(!std::isnan(st->channel(3)[i]));
      ++before;
    } else if (st->t_before_ns()[i] > lose_at) {
      CHECK(st->status()[i] == kStatusDeviceLost);
      CHECK(std::isnan(st->channel(3)[i]));
      CHECK(!std::isnan(st->channel(0)[i]));  // the other GPU keeps going
      ++after;
    }
  }
  CHECK(before > 100 && after > 100);
  unlink(path.c_str());
}

void missing_library() {
  NvmlOptions o;
  o.library = "/nonexistent/libnvidia-ml.so.1";
  bool threw = false;
  try {
    NvmlSource s(o);
  } catch (const SourceUnavailable& e) {
    threw = std::string(e.what()).find("does not exist") != std::string::npos;
  }
  CHECK(threw);
}

}  // namespace

int main() {
  constant_power();
  fallbacks_and_loss();
  missing_library();
  std::printf("test_nvml_sim: ok\n");
  return 0;
}
