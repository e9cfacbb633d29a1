// Lock-free single-producer/single-consumer ring of fixed power-of-two capacity.
//
// Layout follows the classic design: the producer's index and its cached copy
// of the consumer's index share one cache line, the consumer's index and its
// cached copy of the producer's index another, the slots a third region. Each
// side therefore touches the other's line only when its cached copy says the
// ring is full (producer) or empty (consumer).
//
// Indices run freely (64-bit, never wrapped by hand); a slot is index & mask.
// When the ring is full the producer's claim fails: the caller drops the new
// record and counts it. An unread record is never overwritten.
//
// Thread rules: try_claim/publish/try_push only on the producer thread;
// front/pop/size_approx(consumer) only on the consumer thread (or under a lock
// that serialises every consumer). capacity() anywhere.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <type_traits>

#include "jouletrace/config.hpp"
#include "jouletrace/record.hpp"

namespace jouletrace {

template <class T>
class SpscRing {
  static_assert(std::is_trivially_copyable_v<T>, "ring slots are copied as bytes");

 public:
  explicit SpscRing(std::size_t capacity) : capacity_(capacity), mask_(capacity - 1) {
    if (capacity < 2 || (capacity & (capacity - 1)) != 0) {
      throw std::invalid_argument("ring capacity must be a power of two >= 2");
    }
    slots_ = std::unique_ptr<T[]>(new T[capacity]);
  }

  SpscRing(const SpscRing&) = delete;
  SpscRing& operator=(const SpscRing&) = delete;

  std::size_t capacity() const noexcept { return capacity_; }

  // Producer: a slot to fill in place, or nullptr when the ring is full.
  T* try_claim() noexcept {
    const std::uint64_t w = write_.load(std::memory_order_relaxed);  // only we store it
    if (w - read_cache_ == capacity_) {
      // pairs with the release store in pop(): the slot at read_ has been read
      read_cache_ = read_.load(std::memory_order_acquire);
      if (w - read_cache_ == capacity_) return nullptr;
    }
    return &slots_[w & mask_];
  }

  // Producer: make the slot returned by the last try_claim() visible.
  void publish() noexcept {
    const std::uint64_t w = write_.load(std::memory_order_relaxed);
    // pairs with the acquire load in front(): the slot's bytes happen-before
    write_.store(w + 1, std::memory_order_release);
  }

  // Producer: copy `v` in; false (and nothing written) when full.
  bool try_push(const T& v) noexcept {
    T* slot = try_claim();
    if (slot == nullptr) return false;
    *slot = v;
    publish();
    return true;
  }

  // Consumer: the oldest unread record, or nullptr when empty.
  const T* front() noexcept {
    const std::uint64_t r = read_.load(std::memory_order_relaxed);  // only we store it
    if (r == write_cache_) {
      // pairs with the release store in publish()
      write_cache_ = write_.load(std::memory_order_acquire);
      if (r == write_cache_) return nullptr;
    }
    return &slots_[r & mask_];
  }

  // Consumer: release the record returned by front().
  void pop() noexcept {
    const std::uint64_t r = read_.load(std::memory_order_relaxed);
    // pairs with the acquire load in try_claim(): we are done reading the slot
    read_.store(r + 1, std::memory_order_release);
  }

  // Consumer: records currently readable (exact for the consumer, a lower bound
  // of what the producer will have published by the time it is used).
  std::size_t size_approx() const noexcept {
    const std::uint64_t w = write_.load(std::memory_order_acquire);
    const std::uint64_t r = read_.load(std::memory_order_relaxed);
    return static_cast<std::size_t>(w - r);
  }

 private:
  const std::size_t capacity_;
  const std::uint64_t mask_;
  std::unique_ptr<T[]> slots_;

  // Producer's line.
  alignas(kCacheLine) std::atomic<std::uint64_t> write_{0};
  std::uint64_t read_cache_ = 0;  // producer's copy of read_

  // Consumer's line.
  alignas(kCacheLine) std::atomic<std::uint64_t> read_{0};
  std::uint64_t write_cache_ = 0;  // consumer's copy of write_

  // Keep whatever follows the ring in memory off the consumer's line.
  alignas(kCacheLine) char tail_pad_[1] = {};
};

static_assert(std::atomic<std::uint64_t>::is_always_lock_free);

}  // namespace jouletrace

namespace jouletrace {
// The two index lines are cache-line aligned, so the ring object is too.
static_assert(alignof(SpscRing<Record>) == kCacheLine);
}  // namespace jouletrace
