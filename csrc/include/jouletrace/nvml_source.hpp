// NVML source: GPU energy counter and instant power through a dlopen'ed NVML.
//
// The library is found as libnvidia-ml.so.1 unless a path is given (option or
// JOULETRACE_NVML_LIBRARY). Nothing links against NVML at build time, so the
// same wheel imports on a machine without a GPU. The simulated GPU is a
// library with the same exports and goes through exactly this code.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "jouletrace/source.hpp"

namespace jouletrace {

struct NvmlOptions {
  std::string library;              // "" = $JOULETRACE_NVML_LIBRARY or libnvidia-ml.so.1
  std::vector<int> gpus;            // NVML indices; empty = all
  bool timestamps = true;           // also record NVML's own per-field timestamps (us since 1970)
  std::string source_name = "nvml";  // "sim" when the library is the simulated GPU
};

class NvmlSource final : public Source {
 public:
  explicit NvmlSource(const NvmlOptions& options);
  ~NvmlSource() override;

  std::string name() const override { return name_; }
  const std::vector<ChannelInfo>& channels() const override { return channels_; }
  std::int32_t read(double* out, ErrorSlot& errors) noexcept override;
  std::vector<std::pair<std::string, std::string>> metadata() const override { return metadata_; }

  struct Impl;

 private:
  std::string name_;
  std::vector<ChannelInfo> channels_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::unique_ptr<Impl> impl_;
};

// Resolve which file would be loaded for `library` ("" = default rules).
std::string nvml_library_path(const std::string& library);

}  // namespace jouletrace
