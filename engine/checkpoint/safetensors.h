// safetensors files (the Hugging Face format): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__":
// {str: str}}, then the raw little-endian tensor bytes. No Debian package
// reads or writes it from C++, so this is ours.
#pragma once
#include <map>
#include <memory>
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

// ---------------------------------------------------------------- headers and mapping
// A model's weights are checked from the headers alone, then used from a
// memory map of the file: nothing is read or allocated before the config
// and the headers agree and the memory the model needs is known.

// One tensor as its file's header describes it.
struct SafetensorsEntry {
  std::string name;
  std::string dtype;        // as written: "BF16", "F32", "F8_E4M3", ...
  torch::ScalarType type;   // LibTorch's type, or Undefined (F8_*, U16, U32, U64)
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range in the data section
  uint64_t bytes() const { return end - begin; }
  int64_t numel() const;
};

struct SafetensorsHeader {
  std::string path;
  uint64_t file_size = 0, data_start = 0;  // data_start: 8 + header length
  std::vector<SafetensorsEntry> entries;   // in the header's order
  std::map<std::string, std::string> metadata;
};
// Reads and checks the header only (the same checks as load_safetensors:
// offsets inside the file, byte counts that match the shapes, no overlaps).
// Dtypes LibTorch lacks (F8_E4M3, F8_E5M2, U16, U32, U64) are listed with
// type Undefined, so a loader can name them; unknown names are corrupt.
SafetensorsHeader read_safetensors_header(const std::string& path);

// A whole file mapped into memory, private and copy-on-write (PROT_READ |
// PROT_WRITE, MAP_PRIVATE): pages are read from the file when touched, a
// write to a tensor never reaches the file, and clean pages can be dropped by
// the kernel under pressure. Tensors made by tensor() keep the mapping alive.
class MappedSafetensors {
 public:
  explicit MappedSafetensors(SafetensorsHeader header);  // throws Error naming the file
  const SafetensorsHeader& header() const { return header_; }
  // The entry's bytes as a CPU tensor of its stored dtype, without a copy
  // (a copy only when the data is not aligned to its element size).
  torch::Tensor tensor(const SafetensorsEntry& e) const;
  // The process no longer needs the entry's pages (it was converted): they
  // leave its resident set, and are read again from the file if touched.
  void release(const SafetensorsEntry& e) const;

 private:
  struct Mapping;
  std::shared_ptr<Mapping> map_;
  SafetensorsHeader header_;
};

}  // namespace ssalab
