// A Sampler owns one source, one sampling thread, one ring and one drain
// thread that moves records from the ring into a ColumnStore.
//
//   sampler thread:  wait for deadline -> t_before -> source.read -> t_after -> ring
//   drain thread:    every drain period, ring -> column store (memory grows with the run)
//
// The sampler thread wakes on absolute CLOCK_MONOTONIC deadlines
// (clock_nanosleep TIMER_ABSTIME, optional spin before the deadline). A read
// late by less than one period still happens (late); deadlines passed by a
// whole period or more are counted as missed and skipped, never caught up in a
// burst, and so is a deadline less than half a period after the start of the
// read before it (after a stall, no two reads back to back). Hence reads +
// missed_deadlines = elapsed periods, and consecutive reads start at least half
// a period apart. The sampler thread asks the kernel for a short scheduling
// slice (sched_setattr, SCHED_OTHER with sched_runtime = 100 us; EEVDF, Linux
// >= 6.12): a waking task with a shorter slice preempts the running one at
// once instead of waiting out its slice, so other busy threads of the program
// (a streaming writer, the training loop) do not delay its reads. It is no
// priority: its share of the CPU stays a normal thread's. Older kernels ignore
// it; wake_slice_ns() says what the kernel granted (0: none, or
// SamplerConfig::wake_slice off). The thread never throws:
// errors go to an ErrorSlot that Python reads at its next call.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "jouletrace/clock.hpp"
#include "jouletrace/column_store.hpp"
#include "jouletrace/errors.hpp"
#include "jouletrace/ring.hpp"
#include "jouletrace/source.hpp"

namespace jouletrace {

struct SamplerConfig {
  double rate_hz = 1000.0;            // 1 Hz .. 100 kHz
  std::size_t ring_capacity = 0;      // records; 0 = about one second of samples, power of two
  std::int64_t spin_ns = -1;          // busy-wait this long before each deadline; -1 = auto
  std::int64_t drain_period_ns = 0;   // 0 = auto (a quarter of the ring's time span, 1..50 ms)
  std::size_t max_records = 0;        // storage bound; 0 = a week at rate_hz, capped
  bool wake_slice = true;             // ask for a short scheduling slice (header); false = kernel default
};

class Sampler {
 public:
  Sampler(std::unique_ptr<Source> source, SamplerConfig config);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;

  // Lifecycle, from any one controlling thread. Both idempotent; stop() joins
  // both threads and drains the ring completely. A stopped sampler may be
  // started again: records keep appending to the same store.
  //
  // fork(): the threads of a running sampler do not exist in the child. Fork
  // handlers (pthread_atfork, registered by the first Sampler) hold every
  // sampler's locks across the fork, so none is copied locked, and in the child
  // mark each sampler stopped and forget the parent's threads and condition
  // variable without joining or destroying them. In the child, running() is
  // false, stop() and the destructor return at once, what was recorded before
  // the fork stays readable, and start() refuses (its storage pages are shared
  // with the parent): a new Sampler samples afresh.
  void start();
  void stop();
  bool running() const noexcept { return running_.load(std::memory_order_acquire); }

  // Move everything in the ring into the store now (any thread).
  void drain();
  // Test hook: push `n` synthetic records (t = i us, channel c = i + c)
  // through the ring into the store, as the sampler thread would, draining
  // whenever the ring fills. Only while stopped (the ring has one producer).
  void inject_for_test(std::uint64_t n);
  // Test hook: stall the drain thread so the ring fills and drops are counted.
  void set_drain_paused(bool paused) noexcept { drain_paused_.store(paused, std::memory_order_release); }

  const Source& source() const noexcept { return *source_; }
  const SamplerConfig& config() const noexcept { return config_; }
  std::shared_ptr<const ColumnStore> store() const noexcept { return store_; }

  std::uint64_t reads() const noexcept { return reads_.load(std::memory_order_relaxed); }
  std::uint64_t dropped_ring() const noexcept { return dropped_ring_.load(std::memory_order_relaxed); }
  std::uint64_t dropped_storage() const noexcept { return dropped_storage_.load(std::memory_order_relaxed); }
  std::uint64_t missed_deadlines() const noexcept { return missed_.load(std::memory_order_relaxed); }
  // The scheduling slice the kernel granted the sampler thread (header), 0 if none or not started.
  std::int64_t wake_slice_ns() const noexcept { return wake_slice_ns_.load(std::memory_order_relaxed); }
  const ErrorSlot& errors() const noexcept { return errors_; }
  // Pairs [start, end) taken so far, numbered from the first pair ever taken (a streaming writer
  // asks only for the new ones); pairs released are left out.
  std::vector<ClockPair> clock_pairs(std::size_t start = 0) const;
  // Pairs taken in all, and how many of the first were released (held: [released, taken)).
  std::size_t clock_pairs_taken() const;
  std::size_t clock_pairs_released() const;
  // Give back pairs [0, n) (clamped to those taken): a pair a second grows without bound
  // (24 bytes each, ~14 MB a week); a streaming writer that wrote them out keeps only those its
  // in-memory view converts with. Any thread but the sampler's (which never touches the pairs).
  void release_clock_pairs_before(std::size_t n);
  // Test hook: record `p` as if taken now (a long run's pairs in no time).
  void add_clock_pair_for_test(const ClockPair& p);

 private:
  void sample_loop() noexcept;
  void drain_loop() noexcept;
  void drain_locked() noexcept;
  void add_clock_pair();
  void sleep_until(std::int64_t deadline_ns) const noexcept;
  // pthread_atfork handlers over every live sampler (see start()).
  static void fork_prepare() noexcept;
  static void fork_parent() noexcept;
  static void fork_child() noexcept;

  std::unique_ptr<Source> source_;
  SamplerConfig config_;
  std::int64_t period_ns_;
  std::size_t n_channels_;
  SpscRing<Record> ring_;
  std::shared_ptr<ColumnStore> store_;
  ErrorSlot errors_;

  std::thread sample_thread_;
  std::thread drain_thread_;
  std::mutex lifecycle_mutex_;  // start/stop
  std::atomic<bool> running_{false};
  std::atomic<bool> stop_requested_{false};
  bool inherited_ = false;  // this process is a fork() child of the one that made it (lifecycle_mutex_)

  std::mutex drain_mutex_;  // serialises every consumer of ring_
  std::mutex drain_wait_mutex_;
  std::condition_variable drain_cv_;
  std::atomic<bool> drain_paused_{false};

  mutable std::mutex clock_mutex_;
  std::vector<ClockPair> clock_pairs_;
  std::size_t clock_pairs_released_ = 0;  // clock_pairs_[0] is pair number clock_pairs_released_
  std::int64_t last_clock_pair_ns_ = 0;  // drain thread only

  // Fork handshake (seq_cst, a Dekker pair): fork_prepare sets fork_hold_ then
  // waits while in_read_; the sampler thread sets in_read_ then checks
  // fork_hold_ before each read. So no fork copies a source mid-read (holding
  // a lock of its library that the child could never take).
  std::atomic<bool> fork_hold_{false};
  std::atomic<bool> in_read_{false};

  // Written by the sampler thread only (relaxed: counters, not synchronisation).
  std::uint64_t next_seq_ = 0;  // sampler thread only
  std::atomic<std::uint64_t> reads_{0};
  std::atomic<std::uint64_t> dropped_ring_{0};
  std::atomic<std::uint64_t> missed_{0};
  std::atomic<std::int64_t> wake_slice_ns_{0};
  // Written by the drain side.
  std::atomic<std::uint64_t> dropped_storage_{0};
};

}  // namespace jouletrace
