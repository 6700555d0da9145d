// safetensors files (the Hugging Face format): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
// {str: str}}, then the raw little-endian tensor bytes. No Debian package
// reads or writes it from C++, so this is ours.
#pragma once
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

namespace ssalab {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// Writes atomically (temp file + rename). `store` converts floating tensors
// (kFloat32, kFloat16, kBFloat16, or kFloat64 to keep doubles); integer and
// bool tensors keep their dtype. Throws Error on duplicate or reserved names
// and on dtypes the format lacks (complex, ...); the old file stays intact.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {},
                      torch::ScalarType store = torch::kFloat32);

struct SafetensorsFile {
  std::map<std::string, torch::Tensor> tensors;  // CPU tensors in their stored dtype
  std::map<std::string, std::string> metadata;
};
// Throws Error naming the file and the problem: missing, truncated, header
// not JSON, unknown dtype, offsets outside the data or overlapping, shape
// and byte count disagreeing.
SafetensorsFile load_safetensors(const std::string& path);

}  // namespace ssalab
