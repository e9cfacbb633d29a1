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

// One column's memory: a range of address space that never moves once a
// pointer into it is handed out, made usable in steps of `commit_step` bytes.
//
// The pages live in an anonymous memory file (memfd). The first mapping
// reserves a little address space (kInitialReserve); when the column outgrows
// it, the file is mapped again, twice as large, at a new address, and data()
// returns the new mapping. The old mapping stays (until the buffer dies) and
// shows the very same pages, so views handed out earlier stay valid and
// nothing is copied; address space grows with the recording (at most twice
// what it needs), not with `max_bytes`. Without memfd (very old kernels,
// seccomp), the whole `max_bytes` is reserved up front as PROT_NONE instead.
//
// Pages are shared with a child after fork(): a forked child must not append
// (Sampler refuses to restart there).
class ReservedBuffer {
 public:
  static constexpr std::size_t kInitialReserve = std::size_t{4} << 20;

  ReservedBuffer(std::size_t max_bytes, std::size_t commit_step);
  ~ReservedBuffer();
  ReservedBuffer(const ReservedBuffer&) = delete;
  ReservedBuffer& operator=(const ReservedBuffer&) = delete;

  // Consumer side. Make [0, bytes) usable. False if over `max_bytes` or the
  // system refused (no memory, no address space); nothing changes then.
  bool ensure(std::size_t bytes) noexcept;
  // Any thread (acquire): the current mapping. Pointers from earlier calls stay valid.
  void* data() const noexcept { return base_.load(std::memory_order_acquire); }
  std::size_t reserved() const noexcept;  // address space held now, all mappings
  std::size_t committed() const noexcept { return committed_.load(std::memory_order_relaxed); }
  // Any thread, for bytes no appender writes any more (below the published size).
  // Gives the memory of whole pages in [0, bytes) back to the system; their
  // addresses stay mapped and read as zeros from then on (views over them stay
  // valid but no longer hold the data). Idempotent; returns the bytes released so far.
  std::size_t release_before(std::size_t bytes) noexcept;
  std::size_t released() const noexcept { return released_.load(std::memory_order_relaxed); }

 private:
  bool grow(std::size_t bytes) noexcept;

  static constexpr int kMaxMappings = 64;  // doublings from 4 MiB to 2^40 * 8 bytes fit
  int fd_ = -1;                            // the memfd; -1: one PROT_NONE reservation of max_bytes
  std::atomic<void*> base_{nullptr};
  std::size_t max_bytes_ = 0;
  std::size_t step_ = 0;
  std::atomic<std::size_t> committed_{0};
  std::atomic<std::size_t> released_{0};  // page-aligned prefix given back (release_before)
  // Every mapping made (the last is base_); unmapped in the destructor. Consumer side only.
  void* maps_[kMaxMappings] = {};
  std::size_t map_bytes_[kMaxMappings] = {};
  std::atomic<int> n_maps_{0};
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

  // Any thread. Gives back the memory of records [0, n) (whole pages only), for a
  // run whose older records are kept elsewhere (streamed to a file). n is capped at
  // size(): published records are immutable, so nothing writes there any more.
  // Views over released records read zeros. Serialised by the caller (one releaser).
  void release_before(std::size_t n) noexcept;

  // Bytes committed across all columns (what the recording costs in memory),
  // less what release_before gave back.
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
