// C++ exceptions of the core, thrown only off the hot path (construction,
// start/stop). The bindings translate each to the matching Python class of
// jouletrace.errors. Messages say what happened and what to do.
#pragma once

#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace jouletrace {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The source cannot be used here (library missing, no device, no driver).
struct SourceUnavailable : Error {
  using Error::Error;
};
// The source exists but the process may not read it; the message names the fix.
struct PermissionDenied : Error {
  using Error::Error;
};
// A device went away (NVML_ERROR_GPU_IS_LOST and friends).
struct DeviceLost : Error {
  using Error::Error;
};
// A caller asked for something that does not exist (device index, option).
struct InvalidArgument : Error {
  using Error::Error;
};

// Kinds for ErrorSlot, mirrored by the Python exception classes.
enum ErrorKind : std::int32_t {
  kErrorNone = 0,
  kErrorGeneric = 1,
  kErrorDeviceLost = 2,
  kErrorUnavailable = 3,
  kErrorPermission = 4,
};

// The first error the sampler thread met, for Python to raise at its next call.
// Written at most once, by the sampler thread, with no allocation: the message
// is formatted into a fixed buffer before the kind is published.
class ErrorSlot {
 public:
  // Sampler thread. Only the first report is kept; later ones are ignored.
  void report(ErrorKind kind, const char* fmt, ...) noexcept __attribute__((format(printf, 3, 4))) {
    bool expected = false;
    if (!claimed_.compare_exchange_strong(expected, true, std::memory_order_relaxed)) return;
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(message_, sizeof message_, fmt, ap);
    va_end(ap);
    kind_.store(kind, std::memory_order_release);  // pairs with the acquire in kind()
  }

  // Any thread.
  ErrorKind kind() const noexcept { return static_cast<ErrorKind>(kind_.load(std::memory_order_acquire)); }
  // Any thread, valid once kind() != kErrorNone.
  std::string message() const { return kind() == kErrorNone ? std::string() : std::string(message_); }

 private:
  std::atomic<bool> claimed_{false};
  std::atomic<std::int32_t> kind_{kErrorNone};
  char message_[512] = {};
};

}  // namespace jouletrace
