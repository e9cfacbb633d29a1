// Where drained records live for Python: one column per field, each in its own
// reserved, never-moving address range, committed as it fills.
//
// Why not a growing vector: numpy views hand out raw pointers. A column here
// never moves, so a view taken after N records stays valid while the sampler
// appends record N+1 onwards, and memory in use grows with what was recorded,
// not with the reservation (pages are committed in steps as they fill).
//
// Thread rules: append_* and publish() on the consumer (drain) side only, under
// the sampler's drain lock; size() and the column pointers from any thread.
// Elements [0, size()) are immutable once published.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "jouletrace/record.hpp"

namespace jouletrace {

// One reserved range of address space (PROT_NONE) made readable and writable
// in steps of `commit_step` bytes as it fills.
class ReservedBuffer {
 public:
  ReservedBuffer(std::size_t max_bytes, std::size_t commit_step);
  ~ReservedBuffer();
  ReservedBuffer(const ReservedBuffer&) = delete;
  ReservedBuffer& operator=(const ReservedBuffer&) = delete;

  // Make [0, bytes) usable. False if over the reservation or mprotect failed.
  bool ensure(std::size_t bytes) noexcept;
  void* data() const noexcept { return base_; }
  std::size_t reserved() const noexcept { return reserved_; }
  std::size_t committed() const noexcept { return committed_.load(std::memory_order_relaxed); }

 private:
  void* base_ = nullptr;
  std::size_t reserved_ = 0;
  std::size_t step_ = 0;
  std::atomic<std::size_t> committed_{0};
};

class ColumnStore {
 public:
  // `max_records` bounds the reservation; records beyond it are counted as
  // dropped (storage full), never written over earlier ones.
  ColumnStore(std::size_t n_channels, std::size_t max_records);

  std::size_t n_channels() const noexcept { return n_channels_; }
  std::size_t max_records() const noexcept { return max_records_; }

  // Consumer side. Copies one record into the columns; false when full.
  bool append(const Record& r) noexcept;
  // Consumer side. Makes everything appended so far visible to size() readers.
  void publish() noexcept { published_.store(pending_, std::memory_order_release); }

  // Any thread: number of published records.
  std::size_t size() const noexcept { return published_.load(std::memory_order_acquire); }

  const std::int64_t* t_ns() const noexcept { return static_cast<const std::int64_t*>(t_mid_.data()); }
  const std::int64_t* t_before_ns() const noexcept { return static_cast<const std::int64_t*>(t_before_.data()); }
  const std::int64_t* t_after_ns() const noexcept { return static_cast<const std::int64_t*>(t_after_.data()); }
  const std::uint64_t* seq() const noexcept { return static_cast<const std::uint64_t*>(seq_.data()); }
  const std::int32_t* status() const noexcept { return static_cast<const std::int32_t*>(status_.data()); }
  const double* channel(std::size_t i) const noexcept { return static_cast<const double*>(values_[i]->data()); }

  // Bytes committed across all columns (what the recording costs in memory).
  std::size_t committed_bytes() const noexcept;
  std::size_t reserved_bytes() const noexcept;

 private:
  std::size_t n_channels_;
  std::size_t max_records_;
  std::size_t pending_ = 0;  // consumer only
  std::atomic<std::size_t> published_{0};
  ReservedBuffer t_mid_, t_before_, t_after_, seq_, status_;
  std::vector<std::unique_ptr<ReservedBuffer>> values_;
};

}  // namespace jouletrace
