// Small helpers shared by the RAPL sources (file reading, parsing, messages).
// Internal to the core: not part of the API the bindings use.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace jouletrace::rapl_detail {

// Whole text file; false (and errno in *err) when it cannot be opened or read.
bool read_text(const std::string& path, std::string& out, int* err = nullptr);
std::string trim(const std::string& s);
bool parse_u64(const std::string& text, std::uint64_t& out);  // decimal or 0x hex, whole string
bool parse_int(const std::string& text, int& out);             // decimal, optional sign
bool parse_double(const std::string& text, double& out);

bool exists(const std::string& path);
bool is_dir(const std::string& path);
// Entry names (no . and ..), sorted; empty when the folder cannot be listed.
std::vector<std::string> list_dir(const std::string& path);

// The running executable's real path (for `setcap ... <exe>` fixes).
std::string self_exe();

// A `setcap` fix for the interpreter `exe`, with what it costs: a file
// capability applies to every program that interpreter runs, so the narrower
// way (a copy of the interpreter in a virtual environment kept for jouletrace)
// is shown beside it.
inline std::string setcap_fix(const std::string& cap, const std::string& exe) {
  return "`sudo setcap " + cap + "=ep " + exe + "` (this grants " + cap +
         " to every script that interpreter runs; narrower: a dedicated virtual environment with its own copy "
         "of the interpreter, `python3 -m venv --copies /opt/jouletrace-env && /opt/jouletrace-env/bin/pip install "
         "jouletrace && sudo setcap " + cap + "=ep /opt/jouletrace-env/bin/python3`, used only for jouletrace)";
}
// "EACCES (Permission denied)".
std::string errno_text(int err);

// Hot path: decimal digits at the start of buf[0, n) (leading blanks allowed).
// No allocation. False when there is no digit or the value overflows.
inline bool parse_u64_buf(const char* buf, std::size_t n, std::uint64_t& out) noexcept {
  std::size_t i = 0;
  while (i < n && (buf[i] == ' ' || buf[i] == '\t')) ++i;
  if (i == n || buf[i] < '0' || buf[i] > '9') return false;
  std::uint64_t v = 0;
  for (; i < n && buf[i] >= '0' && buf[i] <= '9'; ++i) {
    const auto d = static_cast<std::uint64_t>(buf[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

// A file descriptor closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const noexcept { return fd_; }
  int release() noexcept {
    const int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_ = -1;
};

}  // namespace jouletrace::rapl_detail
