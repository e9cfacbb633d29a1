// Sampler with a synthetic source: deadlines, record order, drop counting with
// a stalled consumer, idempotent start/stop, error slot. ASan/UBSan and TSan.
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <thread>

#include "check.hpp"
#include "jouletrace/clock.hpp"
#include "jouletrace/sampler.hpp"

using namespace jouletrace;

namespace {

// A counter that advances by 1 J per read and a power channel equal to the
// read number; reports a device loss once after `lose_after` reads.
class CountingSource final : public Source {
 public:
  explicit CountingSource(std::uint64_t lose_after = UINT64_MAX) : lose_after_(lose_after) {
    channels_ = {{"fake0.energy_j", true}, {"fake0.power_w", false}};
  }
  std::string name() const override { return "fake"; }
  const std::vector<ChannelInfo>& channels() const override { return channels_; }
  std::int32_t read(double* out, ErrorSlot& errors) noexcept override {
    const std::uint64_t i = n_++;
    if (i >= lose_after_) {
      errors.report(kErrorDeviceLost, "fake device lost after %llu reads", static_cast<unsigned long long>(i));
      out[0] = out[1] = std::nan("");
      return kStatusDeviceLost;
    }
    out[0] = static_cast<double>(i);
    out[1] = static_cast<double>(i) * 2;
    return kStatusOk;
  }
  std::vector<std::pair<std::string, std::string>> metadata() const override { return {}; }

 private:
  std::vector<ChannelInfo> channels_;
  std::uint64_t n_ = 0;
  std::uint64_t lose_after_;
};

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

void steady_run() {
  SamplerConfig c;
  c.rate_hz = 5000;
  c.ring_capacity = 64;  // far smaller than the run: the drain thread must keep up
  c.drain_period_ns = 1'000'000;
  Sampler s(std::make_unique<CountingSource>(), c);
  s.start();
  s.start();  // idempotent
  // A second consumer, as Python's recording() is: drain() from another thread
  // while the drain thread runs (serialised by the drain lock; TSan checks it).
  std::atomic<bool> done{false};
  std::thread other([&] {
    while (!done.load()) {
      s.drain();
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
  const std::int64_t t_start = monotonic_ns();
  sleep_ms(300);
  done.store(true);
  other.join();
  s.stop();
  s.stop();  // idempotent
  const std::int64_t t_stop = monotonic_ns();
  auto st = s.store();
  const std::size_t n = st->size();
  std::printf("steady: %zu records, %llu dropped, %llu missed\n", n,
              static_cast<unsigned long long>(s.dropped_ring()), static_cast<unsigned long long>(s.missed_deadlines()));
  CHECK(n == s.reads() - s.dropped_ring());
  // Reads plus skipped deadlines account for every period of the run (the first
  // read happens at start, so allow a couple at the edges).
  const std::int64_t first = st->t_before_ns()[0], last = st->t_before_ns()[n - 1];
  const auto periods = static_cast<std::int64_t>((last - first) / 200'000);  // 5 kHz
  const auto accounted = static_cast<std::int64_t>(n - 1 + s.missed_deadlines());
  CHECK(accounted >= periods - 2 && accounted <= (t_stop - first) / 200'000 + 2);  // see stalls_on_one_cpu
  CHECK(last - first > (t_stop - t_start) / 2);  // and the run really lasted
  for (std::size_t i = 0; i < n; ++i) {
    CHECK(st->t_before_ns()[i] <= st->t_after_ns()[i]);
    CHECK(st->t_ns()[i] >= st->t_before_ns()[i] && st->t_ns()[i] <= st->t_after_ns()[i]);
    if (i > 0) {
      CHECK(st->seq()[i] > st->seq()[i - 1]);
      CHECK(st->t_before_ns()[i] - st->t_before_ns()[i - 1] >= 100'000);  // half a period, even after stalls
    }
    CHECK(st->channel(0)[i] == static_cast<double>(st->seq()[i]));
  }
  CHECK(s.clock_pairs().size() >= 2);
  CHECK(s.errors().kind() == kErrorNone);

  // Restart appends to the same store.
  s.start();
  sleep_ms(50);
  s.stop();
  CHECK(s.store()->size() > n);
}

void stalled_consumer() {
  SamplerConfig c;
  c.rate_hz = 20000;
  c.ring_capacity = 16;
  Sampler s(std::make_unique<CountingSource>(), c);
  s.set_drain_paused(true);
  s.start();
  sleep_ms(100);
  s.stop();  // drains what the ring holds
  auto st = s.store();
  std::printf("stalled: %zu stored, %llu dropped of %llu reads\n", st->size(),
              static_cast<unsigned long long>(s.dropped_ring()), static_cast<unsigned long long>(s.reads()));
  CHECK(s.dropped_ring() > 0);
  CHECK(st->size() == 16);  // the first 16 reads, never overwritten
  for (std::size_t i = 0; i < st->size(); ++i) CHECK(st->seq()[i] == i);
  CHECK(st->size() + s.dropped_ring() == s.reads());
}

void error_slot() {
  SamplerConfig c;
  c.rate_hz = 2000;
  Sampler s(std::make_unique<CountingSource>(50), c);
  s.start();
  sleep_ms(100);
  CHECK(s.errors().kind() == kErrorDeviceLost);  // visible while still running
  s.stop();
  CHECK(s.errors().message().find("lost after 50") != std::string::npos);
  auto st = s.store();
  CHECK(st->size() > 50);
  CHECK(st->status()[49] == kStatusOk && st->channel(0)[49] == 49.0);  // kept
  CHECK(st->status()[50] == kStatusDeviceLost && std::isnan(st->channel(0)[50]));
}

void storage_bound() {
  SamplerConfig c;
  c.rate_hz = 10000;
  c.max_records = 100;
  Sampler s(std::make_unique<CountingSource>(), c);
  s.start();
  sleep_ms(50);
  s.stop();
  CHECK(s.store()->size() == 100);
  CHECK(s.dropped_storage() + 100 + s.dropped_ring() == s.reads());
  for (std::size_t i = 0; i < 100; ++i) CHECK(s.store()->seq()[i] == i);
}

// Clock pairs released by a streaming writer: numbering stays absolute, memory follows what is held.
void clock_pair_release() {
  SamplerConfig c;
  c.rate_hz = 1000;
  Sampler s(std::make_unique<CountingSource>(), c);
  for (std::int64_t i = 0; i < 100000; ++i) {  // ~28 h of pairs, a second apart
    s.add_clock_pair_for_test(ClockPair{i * 1'000'000'000, i * 1'000'000'000 + 7, 40});
    if (i % 500 == 499) s.release_clock_pairs_before(static_cast<std::size_t>(i) - 10);
  }
  CHECK(s.clock_pairs_taken() == 100000);
  CHECK(s.clock_pairs_released() == 99989);
  const auto held = s.clock_pairs(0);
  CHECK(held.size() == 11);
  CHECK(held.front().monotonic_ns == 99989LL * 1'000'000'000);
  CHECK(s.clock_pairs(99990).size() == 10 && s.clock_pairs(99990).front().monotonic_ns == 99990LL * 1'000'000'000);
  CHECK(s.clock_pairs(100000).empty());
  s.release_clock_pairs_before(10);  // already released: nothing happens
  CHECK(s.clock_pairs_released() == 99989);
  s.release_clock_pairs_before(1'000'000);  // past the end: every pair held so far
  CHECK(s.clock_pairs_released() == 100000 && s.clock_pairs(0).empty());
}

// The sampler thread shares one CPU with a busy thread, so the scheduler stalls
// it for whole time slices (milliseconds, many periods). After each stall the
// next read must still come at least half a period after the one before (no
// reads back to back), with every skipped deadline counted.
void stalls_on_one_cpu() {
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu() >= 0 ? sched_getcpu() : 0, &one);
  cpu_set_t all;
  CHECK(sched_getaffinity(0, sizeof(all), &all) == 0);
  CHECK(sched_setaffinity(0, sizeof(one), &one) == 0);  // threads created from here inherit it
  SamplerConfig c;
  c.rate_hz = 20000;  // 50 us
  Sampler s(std::make_unique<CountingSource>(), c);
  std::atomic<bool> done{false};
  std::thread busy([&] {
    while (!done.load(std::memory_order_relaxed)) {
    }
  });
  s.start();
  sleep_ms(200);
  s.stop();
  const std::int64_t t_stop = monotonic_ns();
  done.store(true);
  busy.join();
  CHECK(sched_setaffinity(0, sizeof(all), &all) == 0);
  auto st = s.store();
  const std::size_t n = st->size();
  CHECK(n > 10);
  std::int64_t closest = INT64_MAX;
  for (std::size_t i = 1; i < n; ++i) closest = std::min(closest, st->t_before_ns()[i] - st->t_before_ns()[i - 1]);
  const auto periods = (st->t_before_ns()[n - 1] - st->t_before_ns()[0]) / 50'000;
  const auto accounted = static_cast<std::int64_t>(n - 1 + s.missed_deadlines());
  std::printf("stalls: %zu records, %llu missed, closest reads %lld ns apart\n", n,
              static_cast<unsigned long long>(s.missed_deadlines()), static_cast<long long>(closest));
  CHECK(closest >= 25'000);
  // Deadlines skipped after the last read (a stall just before stop) count too,
  // so the upper bound runs to the stop.
  CHECK(accounted >= periods - 2 && accounted <= (t_stop - st->t_before_ns()[0]) / 50'000 + 2);
}

}  // namespace

int main() {
  stalls_on_one_cpu();
  steady_run();
  stalled_consumer();
  error_slot();
  storage_bound();
  clock_pair_release();
  std::printf("test_sampler: ok\n");
  return 0;
}
