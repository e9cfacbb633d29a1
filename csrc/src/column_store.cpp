#include "jouletrace/column_store.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <string>

#include "jouletrace/errors.hpp"

namespace jouletrace {

namespace {
std::size_t page_size() {
  static const std::size_t p = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return p;
}
std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }
}  // namespace

ReservedBuffer::ReservedBuffer(std::size_t max_bytes, std::size_t commit_step) {
  step_ = round_up(std::max<std::size_t>(commit_step, 1), page_size());
  max_bytes_ = round_up(std::max<std::size_t>(max_bytes, 1), page_size());
  fd_ = static_cast<int>(memfd_create("jouletrace-column", MFD_CLOEXEC));
  if (fd_ >= 0) {
    const std::size_t first = std::min(max_bytes_, round_up(kInitialReserve, page_size()));
    void* p = mmap(nullptr, first, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd_, 0);
    if (p != MAP_FAILED) {
      maps_[0] = p;
      map_bytes_[0] = first;
      n_maps_.store(1, std::memory_order_relaxed);
      base_.store(p, std::memory_order_release);
      return;
    }
    close(fd_);
    fd_ = -1;
  }
  // Address space only: PROT_NONE + MAP_NORESERVE is not charged against the
  // commit limit, even with strict overcommit.
  void* p = mmap(nullptr, max_bytes_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    throw Error("could not reserve " + std::to_string(max_bytes_ >> 20) +
                " MiB of address space for samples (" + std::strerror(errno) +
                "); pass a smaller max_samples= to the Sampler");
  }
  maps_[0] = p;
  map_bytes_[0] = max_bytes_;
  n_maps_.store(1, std::memory_order_relaxed);
  base_.store(p, std::memory_order_release);
}

ReservedBuffer::~ReservedBuffer() {
  for (int i = 0; i < n_maps_.load(std::memory_order_relaxed); ++i) munmap(maps_[i], map_bytes_[i]);
  if (fd_ >= 0) close(fd_);
}

std::size_t ReservedBuffer::reserved() const noexcept {
  std::size_t total = 0;
  const int n = n_maps_.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i) total += map_bytes_[i];
  return total;
}

bool ReservedBuffer::grow(std::size_t bytes) noexcept {
  // Map the file again, larger, elsewhere; the old mapping keeps serving old views.
  const int n = n_maps_.load(std::memory_order_relaxed);
  if (n >= kMaxMappings) return false;
  std::size_t want = std::max(map_bytes_[n - 1] * 2, round_up(bytes, page_size()));
  want = std::min(want, max_bytes_);
  void* p = mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd_, 0);
  if (p == MAP_FAILED) return false;
  maps_[n] = p;
  map_bytes_[n] = want;
  n_maps_.store(n + 1, std::memory_order_release);
  // Before the records that need it are published (ColumnStore::publish is a
  // release): a reader that sees them sees this mapping too.
  base_.store(p, std::memory_order_release);
  return true;
}

bool ReservedBuffer::ensure(std::size_t bytes) noexcept {
  const std::size_t have = committed_.load(std::memory_order_relaxed);
  if (bytes <= have) return true;
  if (bytes > max_bytes_) return false;
  const std::size_t want = std::min(max_bytes_, round_up(bytes, step_));
  if (fd_ < 0) {
    if (mprotect(static_cast<char*>(base_.load(std::memory_order_relaxed)) + have, want - have,
                 PROT_READ | PROT_WRITE) != 0) {
      return false;
    }
  } else {
    // Grow the file first (its pages are allocated when first written), then the mapping if needed.
    if (ftruncate(fd_, static_cast<off_t>(want)) != 0) return false;
    if (want > map_bytes_[n_maps_.load(std::memory_order_relaxed) - 1] && !grow(want)) return false;
  }
  committed_.store(want, std::memory_order_relaxed);
  return true;
}

std::size_t ReservedBuffer::release_before(std::size_t bytes) noexcept {
  const std::size_t upto = std::min(bytes, committed_.load(std::memory_order_relaxed)) / page_size() * page_size();
  const std::size_t done = released_.load(std::memory_order_relaxed);
  if (upto <= done) return done;
  bool ok;
  if (fd_ >= 0) {
    // Frees the file's pages; every mapping of them then reads zeros.
    ok = fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(done),
                   static_cast<off_t>(upto - done)) == 0;
  } else {
    ok = madvise(static_cast<char*>(base_.load(std::memory_order_relaxed)) + done, upto - done,
                 MADV_DONTNEED) == 0;
  }
  if (!ok) return done;  // memory stays in use; nothing is lost
  released_.store(upto, std::memory_order_relaxed);
  return upto;
}

namespace {
// 1 MiB steps: small enough that memory follows the recording closely, large
// enough that mprotect runs once per ~128 k records per column.
constexpr std::size_t kCommitStep = 1u << 20;
}  // namespace

ColumnStore::ColumnStore(std::size_t n_channels, std::size_t max_records)
    : n_channels_(n_channels),
      max_records_(max_records),
      t_mid_(max_records * sizeof(std::int64_t), kCommitStep),
      t_before_(max_records * sizeof(std::int64_t), kCommitStep),
      t_after_(max_records * sizeof(std::int64_t), kCommitStep),
      seq_(max_records * sizeof(std::uint64_t), kCommitStep),
      status_(max_records * sizeof(std::int32_t), kCommitStep) {
  if (n_channels > kMaxChannels) throw InvalidArgument("too many channels for one source");
  values_.reserve(n_channels);
  for (std::size_t i = 0; i < n_channels; ++i) {
    values_.push_back(std::make_unique<ReservedBuffer>(max_records * sizeof(double), kCommitStep));
  }
}

bool ColumnStore::append(const Record& r) noexcept {
  const std::size_t i = pending_;
  if (i >= max_records_) return false;
  const std::size_t n = i + 1;
  bool ok = t_mid_.ensure(n * 8) && t_before_.ensure(n * 8) && t_after_.ensure(n * 8) &&
            seq_.ensure(n * 8) && status_.ensure(n * 4);
  for (std::size_t c = 0; ok && c < n_channels_; ++c) ok = values_[c]->ensure(n * 8);
  if (!ok) return false;
  static_cast<std::int64_t*>(t_before_.data())[i] = r.t_before_ns;
  static_cast<std::int64_t*>(t_after_.data())[i] = r.t_after_ns;
  // Midpoint of the read, computed without overflow.
  static_cast<std::int64_t*>(t_mid_.data())[i] = r.t_before_ns + (r.t_after_ns - r.t_before_ns) / 2;
  static_cast<std::uint64_t*>(seq_.data())[i] = r.seq;
  static_cast<std::int32_t*>(status_.data())[i] = r.status;
  for (std::size_t c = 0; c < n_channels_; ++c) static_cast<double*>(values_[c]->data())[i] = r.values[c];
  pending_ = n;
  return true;
}

void ColumnStore::release_before(std::size_t n) noexcept {
  n = std::min(n, size());
  t_mid_.release_before(n * 8);
  t_before_.release_before(n * 8);
  t_after_.release_before(n * 8);
  seq_.release_before(n * 8);
  status_.release_before(n * 4);
  for (auto& v : values_) v->release_before(n * 8);
}

std::size_t ColumnStore::committed_bytes() const noexcept {
  std::size_t total = t_mid_.committed() + t_before_.committed() + t_after_.committed() +
                      seq_.committed() + status_.committed();
  total -= t_mid_.released() + t_before_.released() + t_after_.released() + seq_.released() + status_.released();
  for (const auto& v : values_) total += v->committed() - v->released();
  return total;
}

std::size_t ColumnStore::reserved_bytes() const noexcept {
  std::size_t total = t_mid_.reserved() + t_before_.reserved() + t_after_.reserved() +
                      seq_.reserved() + status_.reserved();
  for (const auto& v : values_) total += v->reserved();
  return total;
}

}  // namespace jouletrace
