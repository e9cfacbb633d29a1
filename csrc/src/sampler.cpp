#include "jouletrace/sampler.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <new>
#include <string>

namespace jouletrace {

namespace {

// The sampler thread's scheduling slice (sampler.hpp): the kernel's shortest.
constexpr std::int64_t kWakeSliceNs = 100'000;

// struct sched_attr of sched_setattr(2) (glibc wraps neither call before 2.41).
struct SchedAttr {
  std::uint32_t size;
  std::uint32_t sched_policy;
  std::uint64_t sched_flags;
  std::int32_t sched_nice;
  std::uint32_t sched_priority;
  std::uint64_t sched_runtime;
  std::uint64_t sched_deadline;
  std::uint64_t sched_period;
};

// Asks for a short slice for the calling thread, keeping its policy and nice value; returns
// the slice the kernel reports back (0 where the kernel has no custom slices, or refused).
std::int64_t request_wake_slice() noexcept {
#if defined(SYS_sched_setattr) && defined(SYS_sched_getattr)
  SchedAttr attr;
  std::memset(&attr, 0, sizeof attr);
  if (syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0) != 0 || attr.sched_policy != SCHED_OTHER) return 0;
  attr.size = sizeof attr;
  attr.sched_flags = 0;
  attr.sched_runtime = kWakeSliceNs;
  if (syscall(SYS_sched_setattr, 0, &attr, 0) != 0) return 0;
  std::memset(&attr, 0, sizeof attr);
  if (syscall(SYS_sched_getattr, 0, &attr, sizeof attr, 0) != 0) return 0;
  // Kernels before custom slices report their default slice or 0: only an exact echo counts.
  return attr.sched_runtime == static_cast<std::uint64_t>(kWakeSliceNs) ? kWakeSliceNs : 0;
#else
  return 0;
#endif
}

constexpr double kMinRateHz = 1.0;
constexpr double kMaxRateHz = 100000.0;
// Longest single sleep: bounds how long stop() waits at low rates.
constexpr std::int64_t kMaxSleepChunkNs = 20'000'000;
constexpr std::int64_t kClockPairEveryNs = 1'000'000'000;

std::size_t next_pow2(std::size_t n) {
  std::size_t p = 2;
  while (p < n) p <<= 1;
  return p;
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

std::unique_ptr<ColumnStore> make_store(std::size_t n_channels, std::size_t max_records) {
  // Reserve address space; halve on failure (a low RLIMIT_AS, say), down to 1 M records.
  for (std::size_t n = max_records;; n /= 2) {
    try {
      return std::make_unique<ColumnStore>(n_channels, n);
    } catch (const Error&) {
      if (n / 2 < (std::size_t{1} << 20)) throw;
    }
  }
}

// Every live Sampler, for the fork handlers. Guarded by registry_mutex(); only
// constructors, destructors and the handlers touch it (never the hot path).
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}
std::vector<Sampler*>& registry() {
  static std::vector<Sampler*> r;
  return r;
}

}  // namespace

// Lock order everywhere: lifecycle_mutex_ -> drain_wait_mutex_ -> drain_mutex_
// -> clock_mutex_ (each path takes a subset, in this order, or one at a time),
// so taking all four here cannot deadlock with a sampler's own threads.
void Sampler::fork_prepare() noexcept {
  registry_mutex().lock();
  for (Sampler* s : registry()) {
    s->lifecycle_mutex_.lock();
    s->drain_wait_mutex_.lock();
    s->drain_mutex_.lock();
    s->clock_mutex_.lock();
    s->fork_hold_.store(true, std::memory_order_seq_cst);  // pairs with the check in sample_loop
    while (s->in_read_.load(std::memory_order_seq_cst)) std::this_thread::yield();
  }
}

void Sampler::fork_parent() noexcept {
  for (Sampler* s : registry()) {
    s->fork_hold_.store(false, std::memory_order_release);
    s->clock_mutex_.unlock();
    s->drain_mutex_.unlock();
    s->drain_wait_mutex_.unlock();
    s->lifecycle_mutex_.unlock();
  }
  registry_mutex().unlock();
}

void Sampler::fork_child() noexcept {
  for (Sampler* s : registry()) {
    // Only the forking thread exists here. The std::thread objects name the
    // parent's threads (joining or destroying them would hang or terminate) and
    // the parent's drain thread may be a waiter of drain_cv_ (destroying it
    // would wait for that waiter for ever): replace them in place, unjoined and
    // undestroyed. Allocation-free.
    new (&s->sample_thread_) std::thread();
    new (&s->drain_thread_) std::thread();
    new (&s->drain_cv_) std::condition_variable();
    s->running_.store(false, std::memory_order_relaxed);
    s->inherited_ = true;
    s->stop_requested_.store(false, std::memory_order_relaxed);
    s->fork_hold_.store(false, std::memory_order_relaxed);
    s->in_read_.store(false, std::memory_order_relaxed);
    s->clock_mutex_.unlock();
    s->drain_mutex_.unlock();
    s->drain_wait_mutex_.unlock();
    s->lifecycle_mutex_.unlock();
  }
  registry_mutex().unlock();
}

Sampler::Sampler(std::unique_ptr<Source> source, SamplerConfig config)
    : source_(std::move(source)),
      config_(config),
      period_ns_(0),
      n_channels_(0),
      ring_([&] {
        if (!(config.rate_hz >= kMinRateHz && config.rate_hz <= kMaxRateHz)) {
          throw InvalidArgument("rate_hz must be between 1 and 100000, got " + std::to_string(config.rate_hz));
        }
        if (config.ring_capacity == 0) {
          return next_pow2(std::max<std::size_t>(1024, static_cast<std::size_t>(config.rate_hz)));
        }
        if (config.ring_capacity < 2 || (config.ring_capacity & (config.ring_capacity - 1)) != 0) {
          throw InvalidArgument("ring_capacity must be a power of two >= 2, got " +
                                std::to_string(config.ring_capacity));
        }
        return config.ring_capacity;
      }()) {
  if (!source_) throw InvalidArgument("no source");
  n_channels_ = source_->channels().size();
  if (n_channels_ > kMaxChannels) {
    throw InvalidArgument("source " + source_->name() + " has " + std::to_string(n_channels_) +
                          " channels; at most " + std::to_string(kMaxChannels) +
                          " per sampler: select fewer devices");
  }
  period_ns_ = std::llround(1e9 / config_.rate_hz);
  config_.ring_capacity = ring_.capacity();
  if (config_.spin_ns < 0) {
    // Spin only above 1 kHz: there wake-up jitter is a large part of the
    // period. At 1 kHz and below the sleep alone is accurate enough and the
    // thread's CPU cost stays near zero.
    config_.spin_ns = period_ns_ < 1'000'000 ? std::min<std::int64_t>(period_ns_ / 4, 20'000) : 0;
  }
  config_.spin_ns = std::min(config_.spin_ns, period_ns_);
  if (config_.drain_period_ns <= 0) {
    const auto span_ns = static_cast<std::int64_t>(static_cast<double>(ring_.capacity()) * 1e9 / config_.rate_hz);
    config_.drain_period_ns = std::clamp<std::int64_t>(span_ns / 4, 1'000'000, 50'000'000);
  }
  // Each column reserves max_records * 8 bytes of address space: keep that product far
  // from overflow (2^40 records is 35 years at 1 kHz).
  if (config_.max_records > (std::size_t{1} << 40)) {
    throw InvalidArgument("max_samples must be at most 2**40, got " + std::to_string(config_.max_records));
  }
  if (config_.max_records == 0) {
    const double week = config_.rate_hz * 7 * 86400;
    config_.max_records = static_cast<std::size_t>(std::clamp(week, double(1u << 20), double(1u << 31)));
  }
  store_ = make_store(n_channels_, config_.max_records);
  config_.max_records = store_->max_records();
  static const int atfork = pthread_atfork(&Sampler::fork_prepare, &Sampler::fork_parent, &Sampler::fork_child);
  if (atfork != 0) throw Error("pthread_atfork failed: " + std::to_string(atfork));
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry().push_back(this);
}

Sampler::~Sampler() {
  try {
    stop();
  } catch (...) {
    // Destructors must not throw; stop() only throws if joining fails.
  }
  std::lock_guard<std::mutex> lock(registry_mutex());
  auto& r = registry();
  r.erase(std::remove(r.begin(), r.end(), this), r.end());
}

void Sampler::start() {
  std::lock_guard<std::mutex> lock(lifecycle_mutex_);
  if (running_.load(std::memory_order_relaxed)) return;
  if (inherited_) {
    // Its storage pages are shared with the parent, which may still be appending.
    throw InvalidArgument("this sampler was created before fork() and belongs to the parent process; "
                          "create a new Sampler in this process");
  }
  stop_requested_.store(false, std::memory_order_release);
  add_clock_pair();
  drain_thread_ = std::thread([this] { drain_loop(); });
  try {
    sample_thread_ = std::thread([this] { sample_loop(); });
  } catch (...) {
    stop_requested_.store(true, std::memory_order_release);
    drain_cv_.notify_all();
    drain_thread_.join();
    throw;
  }
  running_.store(true, std::memory_order_release);
}

void Sampler::stop() {
  std::lock_guard<std::mutex> lock(lifecycle_mutex_);
  if (!running_.load(std::memory_order_relaxed)) return;
  {
    std::lock_guard<std::mutex> wait_lock(drain_wait_mutex_);
    stop_requested_.store(true, std::memory_order_release);  // pairs with loads in both loops
  }
  drain_cv_.notify_all();
  sample_thread_.join();
  drain_thread_.join();
  drain();  // the ring is empty after this: nothing recorded is lost
  add_clock_pair();
  running_.store(false, std::memory_order_release);
}

void Sampler::inject_for_test(std::uint64_t n) {
  std::lock_guard<std::mutex> lock(lifecycle_mutex_);
  if (running_.load(std::memory_order_relaxed)) throw InvalidArgument("inject_for_test needs a stopped sampler");
  for (std::uint64_t i = 0; i < n; ++i) {
    Record* slot = ring_.try_claim();
    if (slot == nullptr) {
      drain();
      slot = ring_.try_claim();
    }
    const std::uint64_t seq = next_seq_++;
    slot->t_before_ns = static_cast<std::int64_t>(seq) * 1000;
    slot->t_after_ns = slot->t_before_ns + 10;
    slot->seq = seq;
    slot->status = kStatusOk;
    for (std::size_t c = 0; c < n_channels_; ++c) slot->values[c] = static_cast<double>(seq) + static_cast<double>(c);
    ring_.publish();
    reads_.store(seq + 1, std::memory_order_relaxed);
  }
  drain();
}

void Sampler::drain() {
  std::lock_guard<std::mutex> lock(drain_mutex_);
  drain_locked();
}

void Sampler::drain_locked() noexcept {
  std::uint64_t lost = 0;
  while (const Record* r = ring_.front()) {
    if (!store_->append(*r)) ++lost;
    ring_.pop();
  }
  store_->publish();
  if (lost != 0) dropped_storage_.fetch_add(lost, std::memory_order_relaxed);
}

void Sampler::add_clock_pair() {
  const ClockPair p = take_clock_pair();
  std::lock_guard<std::mutex> lock(clock_mutex_);
  clock_pairs_.push_back(p);
  last_clock_pair_ns_ = p.monotonic_ns;
}

void Sampler::add_clock_pair_for_test(const ClockPair& p) {
  std::lock_guard<std::mutex> lock(clock_mutex_);
  clock_pairs_.push_back(p);
}

std::vector<ClockPair> Sampler::clock_pairs(std::size_t start) const {
  std::lock_guard<std::mutex> lock(clock_mutex_);
  const std::size_t from = start > clock_pairs_released_ ? start - clock_pairs_released_ : 0;
  if (from >= clock_pairs_.size()) return {};
  return std::vector<ClockPair>(clock_pairs_.begin() + static_cast<std::ptrdiff_t>(from), clock_pairs_.end());
}

std::size_t Sampler::clock_pairs_taken() const {
  std::lock_guard<std::mutex> lock(clock_mutex_);
  return clock_pairs_released_ + clock_pairs_.size();
}

std::size_t Sampler::clock_pairs_released() const {
  std::lock_guard<std::mutex> lock(clock_mutex_);
  return clock_pairs_released_;
}

void Sampler::release_clock_pairs_before(std::size_t n) {
  std::lock_guard<std::mutex> lock(clock_mutex_);
  if (n <= clock_pairs_released_) return;
  const std::size_t k = std::min(n - clock_pairs_released_, clock_pairs_.size());
  clock_pairs_.erase(clock_pairs_.begin(), clock_pairs_.begin() + static_cast<std::ptrdiff_t>(k));
  clock_pairs_released_ += k;
  // The capacity follows what is held (erase keeps it): a vector grown over a long span without
  // releases gives its memory back once released.
  if (clock_pairs_.capacity() > 2 * clock_pairs_.size() + 1024) clock_pairs_.shrink_to_fit();
}

void Sampler::sleep_until(std::int64_t deadline_ns) const noexcept {
  const std::int64_t wake_ns = deadline_ns - config_.spin_ns;
  for (;;) {
    const std::int64_t now = monotonic_ns();
    if (now >= wake_ns) break;
    const timespec ts = from_ns(std::min(wake_ns, now + kMaxSleepChunkNs));
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);  // EINTR: loop re-checks
    if (stop_requested_.load(std::memory_order_acquire)) return;
  }
  while (monotonic_ns() < deadline_ns) cpu_relax();
}

void Sampler::sample_loop() noexcept {
  // Timer slack defaults to 50 us for normal threads: every wake-up would be
  // late by up to that much. 1 ns asks the kernel for its best.
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  pthread_setname_np(pthread_self(), "jt-sampler");
  wake_slice_ns_.store(config_.wake_slice ? request_wake_slice() : 0, std::memory_order_relaxed);

  double scratch[kMaxChannels];  // read target when the ring is full
  std::int64_t deadline = monotonic_ns();
  while (!stop_requested_.load(std::memory_order_acquire)) {
    sleep_until(deadline);
    if (stop_requested_.load(std::memory_order_acquire)) break;
    in_read_.store(true, std::memory_order_seq_cst);  // pairs with fork_prepare
    if (fork_hold_.load(std::memory_order_seq_cst)) {
      // A fork is under way: stay out of the source until it is done (the
      // deadlines passed meanwhile are skipped and counted below).
      in_read_.store(false, std::memory_order_seq_cst);
      while (fork_hold_.load(std::memory_order_acquire)) std::this_thread::yield();
      continue;
    }

    Record* slot = ring_.try_claim();
    double* out = slot != nullptr ? slot->values : scratch;
    const std::int64_t t0 = monotonic_ns();
    const std::int32_t status = source_->read(out, errors_);
    const std::int64_t t1 = monotonic_ns();
    in_read_.store(false, std::memory_order_release);
    const std::uint64_t seq = next_seq_++;
    reads_.store(seq + 1, std::memory_order_relaxed);
    if (slot != nullptr) {
      slot->t_before_ns = t0;
      slot->t_after_ns = t1;
      slot->seq = seq;
      slot->status = status;
      slot->reserved = 0;
      ring_.publish();
    } else {
      dropped_ring_.fetch_add(1, std::memory_order_relaxed);
    }

    deadline += period_ns_;
    // The next deadline must be no more than one period behind now (whole
    // periods that went by are skipped, not caught up in a burst) and at least
    // half a period after this read began (a read that was itself late, after
    // a stall, is not followed by another one straight away). Every deadline
    // skipped is counted as missed: reads + missed = elapsed periods.
    const std::int64_t now = monotonic_ns();
    const std::int64_t earliest = std::max(now - period_ns_ + 1, t0 + period_ns_ / 2);
    if (deadline < earliest) {
      const std::int64_t skipped = (earliest - deadline + period_ns_ - 1) / period_ns_;
      missed_.fetch_add(static_cast<std::uint64_t>(skipped), std::memory_order_relaxed);
      deadline += skipped * period_ns_;
    }
  }
}

void Sampler::drain_loop() noexcept {
  pthread_setname_np(pthread_self(), "jt-drain");
  const auto period = std::chrono::nanoseconds(config_.drain_period_ns);
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(drain_wait_mutex_);
      drain_cv_.wait_for(lock, period, [this] { return stop_requested_.load(std::memory_order_acquire); });
    }
    if (stop_requested_.load(std::memory_order_acquire)) return;
    if (!drain_paused_.load(std::memory_order_acquire)) drain();
    if (monotonic_ns() - last_clock_pair_ns_ >= kClockPairEveryNs) {
      try {
        add_clock_pair();
      } catch (...) {
        // Out of memory for one more pair: skip it, the next second tries again.
      }
    }
  }
}

}  // namespace jouletrace
