#include "engine/checkpoint/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "engine/util/error.h"
#include "engine/util/files.h"

// The format stores little-endian bytes and we copy them verbatim.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

namespace ssalab {

namespace {

using json = nlohmann::json;

// Same limit as the reference implementation: a larger header is either
// corrupt or hostile.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

struct DtypeName {
  torch::ScalarType type;  // Undefined: LibTorch 1.13 has no such type
  const char* name;
  uint64_t bytes;
};
constexpr DtypeName kDtypes[] = {
    {torch::kFloat, "F32", 4},  {torch::kHalf, "F16", 2},  {torch::kBFloat16, "BF16", 2}, {torch::kDouble, "F64", 8},
    {torch::kLong, "I64", 8},   {torch::kInt, "I32", 4},   {torch::kShort, "I16", 2},     {torch::kChar, "I8", 1},
    {torch::kByte, "U8", 1},    {torch::kBool, "BOOL", 1},
    {torch::ScalarType::Undefined, "F8_E4M3", 1}, {torch::ScalarType::Undefined, "F8_E5M2", 1},
    {torch::ScalarType::Undefined, "U16", 2},     {torch::ScalarType::Undefined, "U32", 4},
    {torch::ScalarType::Undefined, "U64", 8},
};

const char* dtype_name(torch::ScalarType t) {
  for (const auto& d : kDtypes)
    if (d.type == t && t != torch::ScalarType::Undefined) return d.name;
  return nullptr;
}

const DtypeName* find_dtype(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

// ---------------------------------------------------------------- save

bool is_float(torch::ScalarType t) {
  return t == torch::kFloat || t == torch::kHalf || t == torch::kBFloat16 || t == torch::kDouble;
}

// CPU, contiguous, floating converted to `store`; rejects dtypes the format
// (or this reader) cannot hold.
torch::Tensor prepare(const std::string& path, const std::string& name, const torch::Tensor& t,
                      torch::ScalarType store) {
  if (!t.defined()) throw Error("cannot save " + path + ": tensor '" + name + "' is undefined");
  torch::Tensor out = t.detach().to(torch::kCPU);
  if (is_float(out.scalar_type())) out = out.to(store);
  if (!dtype_name(out.scalar_type()))
    throw Error("cannot save " + path + ": tensor '" + name + "' has unsupported dtype " +
                std::string(c10::toString(out.scalar_type())));
  return out.contiguous();
}

void check_names(const std::string& path, const NamedTensors& tensors) {
  std::set<std::string> seen;
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__")
      throw Error("cannot save " + path + ": invalid tensor name '" + name + "'");
    if (!seen.insert(name).second) throw Error("cannot save " + path + ": duplicate tensor name '" + name + "'");
  }
}

}  // namespace

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata, torch::ScalarType store) {
  if (!is_float(store))
    throw Error("cannot save " + path + ": store dtype must be floating (F32, F16, BF16 or F64)");
  check_names(path, tensors);

  std::vector<std::pair<std::string, torch::Tensor>> prepared;
  prepared.reserve(tensors.size());
  for (const auto& [name, t] : tensors) prepared.emplace_back(name, prepare(path, name, t, store));
  // Widest elements first, then by name: every tensor then starts at an offset
  // aligned to its element size (the header is padded to 8), as in the
  // reference writer, so readers may map the data in place.
  std::stable_sort(prepared.begin(), prepared.end(), [](const auto& a, const auto& b) {
    if (a.second.element_size() != b.second.element_size()) return a.second.element_size() > b.second.element_size();
    return a.first < b.first;
  });

  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : prepared) {
    const uint64_t nbytes = t.numel() * t.element_size();
    header[name] = {{"dtype", dtype_name(t.scalar_type())}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;

  std::string head;
  try {
    head = header.dump();
  } catch (const json::exception& e) {  // names or metadata that are not UTF-8
    throw Error("cannot save " + path + ": " + e.what());
  }
  head.append((8 - head.size() % 8) % 8, ' ');

  // [u64 header length][header JSON][tensor bytes]
  std::string bytes;
  bytes.reserve(8 + head.size() + offset);
  const uint64_t n = head.size();
  bytes.append(reinterpret_cast<const char*>(&n), 8);
  bytes += head;
  for (const auto& [name, t] : prepared)
    if (t.numel() > 0) bytes.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  write_file_atomic(path, bytes);
}

// ---------------------------------------------------------------- load

namespace {

using Entry = SafetensorsEntry;

[[noreturn]] void corrupt(const std::string& path, const std::string& why) {
  throw Error("corrupt safetensors file " + path + ": " + why);
}

uint64_t to_u64(const std::string& path, const std::string& name, const char* field, const json& v) {
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0))
    corrupt(path, "tensor '" + name + "': " + field + " must hold non-negative integers");
  return v.get<uint64_t>();
}

Entry parse_entry(const std::string& path, const std::string& name, const json& v, uint64_t data_size) {
  if (!v.is_object()) corrupt(path, "entry '" + name + "' is not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!v.contains(key)) corrupt(path, "tensor '" + name + "' has no " + key);
  Entry e;
  e.name = name;
  const json& dt = v["dtype"];
  const DtypeName* known = dt.is_string() ? find_dtype(dt.get<std::string>()) : nullptr;
  if (!known) corrupt(path, "tensor '" + name + "' has unknown dtype " + dt.dump());
  e.dtype = known->name;
  e.type = known->type;

  const json& shape = v["shape"];
  if (!shape.is_array()) corrupt(path, "tensor '" + name + "': shape is not a list");
  // numel with overflow guard: a hostile shape must not wrap around
  uint64_t numel = 1;
  bool overflow = false;
  for (const json& d : shape) {
    uint64_t n = to_u64(path, name, "shape", d);
    if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) overflow = true;
    if (n != 0 && numel > std::numeric_limits<uint64_t>::max() / n) overflow = true;
    numel *= n;
    e.shape.push_back(static_cast<int64_t>(n));
  }

  const json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2) corrupt(path, "tensor '" + name + "': data_offsets is not [begin, end]");
  e.begin = to_u64(path, name, "data_offsets", off[0]);
  e.end = to_u64(path, name, "data_offsets", off[1]);
  if (e.begin > e.end || e.end > data_size)
    corrupt(path, "tensor '" + name + "': data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                      "] outside the data section (" + std::to_string(data_size) + " bytes)");
  const uint64_t elem = known->bytes;
  if (overflow || numel > std::numeric_limits<uint64_t>::max() / elem || numel * elem != e.end - e.begin)
    corrupt(path, "tensor '" + name + "': shape " + shape.dump() + " of " + dt.get<std::string>() + " needs " +
                      (overflow ? std::string("too many") : std::to_string(numel * elem)) + " bytes but data_offsets give " +
                      std::to_string(e.end - e.begin));
  return e;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& v) {
  if (!v.is_object()) corrupt(path, "__metadata__ is not an object");
  std::map<std::string, std::string> out;
  for (const auto& [k, val] : v.items()) {
    if (!val.is_string()) corrupt(path, "__metadata__ value for '" + k + "' is not a string");
    out[k] = val.get<std::string>();
  }
  return out;
}

void check_no_overlap(const std::string& path, std::vector<Entry> entries) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < entries.size(); ++i)
    if (entries[i].begin < entries[i - 1].end)
      corrupt(path, "tensors '" + entries[i - 1].name + "' and '" + entries[i].name + "' overlap");
}

void read_exact(std::ifstream& in, const std::string& path, uint64_t pos, void* dst, uint64_t n) {
  in.seekg(static_cast<std::streamoff>(pos));
  in.read(static_cast<char*>(dst), static_cast<std::streamsize>(n));
  if (!in || static_cast<uint64_t>(in.gcount()) != n) throw Error("read error on " + path);
}

}  // namespace

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsHeader read_safetensors_header(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw Error("file not found: " + path);
  if (!std::filesystem::is_regular_file(path, ec)) throw Error("not a regular file: " + path);
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  if (ec) throw Error("cannot stat " + path + ": " + ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);

  // [u64 header length][header JSON][data]
  if (file_size < 8) corrupt(path, "truncated (" + std::to_string(file_size) + " bytes, need at least 8)");
  uint64_t header_len = 0;
  read_exact(in, path, 0, &header_len, 8);
  if (header_len > kMaxHeaderBytes || header_len > file_size - 8)
    corrupt(path, "header length " + std::to_string(header_len) + " exceeds the file (" + std::to_string(file_size) +
                      " bytes); truncated or not a safetensors file");
  std::string head(header_len, '\0');
  read_exact(in, path, 8, head.data(), header_len);
  SafetensorsHeader out;
  out.path = path;
  out.file_size = file_size;
  out.data_start = 8 + header_len;
  const uint64_t data_size = file_size - out.data_start;

  json header;
  try {
    header = json::parse(head);
  } catch (const json::exception& e) {
    corrupt(path, std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) corrupt(path, "header is not a JSON object");

  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__")
      out.metadata = parse_metadata(path, v);
    else
      out.entries.push_back(parse_entry(path, name, v, data_size));
  }
  check_no_overlap(path, out.entries);
  return out;
}

SafetensorsFile load_safetensors(const std::string& path) {
  SafetensorsHeader h = read_safetensors_header(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path);
  SafetensorsFile out;
  out.metadata = h.metadata;
  // Read straight into freshly allocated tensors: they own their memory and
  // nothing else of the file stays in RAM.
  for (const Entry& e : h.entries) {
    if (e.type == torch::ScalarType::Undefined)
      corrupt(path, "tensor '" + e.name + "' has dtype " + e.dtype + ", which LibTorch cannot hold");
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.type));
    if (e.end > e.begin) read_exact(in, path, h.data_start + e.begin, t.data_ptr(), e.end - e.begin);
    if (e.type == torch::kBool) {
      // torch assumes bool bytes are 0/1; anything else is undefined behaviour
      const auto* b = static_cast<const uint8_t*>(t.data_ptr());
      for (int64_t i = 0; i < t.numel(); ++i)
        if (b[i] > 1) corrupt(path, "tensor '" + e.name + "': BOOL byte other than 0/1");
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

// ---------------------------------------------------------------- mapping

struct MappedSafetensors::Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr) ::munmap(addr, size);
  }
};

MappedSafetensors::MappedSafetensors(SafetensorsHeader header) : header_(std::move(header)) {
  const std::string& path = header_.path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || uint64_t(st.st_size) != header_.file_size) {
    ::close(fd);
    throw Error(path + " changed while it was being read");
  }
  void* addr = ::mmap(nullptr, header_.file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping keeps the file
  if (addr == MAP_FAILED) throw Error("cannot map " + path + " into memory: " + std::strerror(err));
  map_ = std::make_shared<Mapping>();
  map_->addr = addr;
  map_->size = header_.file_size;
}

torch::Tensor MappedSafetensors::tensor(const SafetensorsEntry& e) const {
  if (e.type == torch::ScalarType::Undefined)
    throw Error(header_.path + ": tensor '" + e.name + "' has dtype " + e.dtype + ", which LibTorch cannot hold");
  char* data = static_cast<char*>(map_->addr) + header_.data_start + e.begin;
  const auto opts = torch::TensorOptions().dtype(e.type);
  if (reinterpret_cast<uintptr_t>(data) % c10::elementSize(e.type) != 0) {
    torch::Tensor t = torch::empty(e.shape, opts);  // misaligned writer: one copy
    if (e.bytes() > 0) std::memcpy(t.data_ptr(), data, e.bytes());  // an empty tensor may have no data pointer
    return t;
  }
  std::shared_ptr<Mapping> keep = map_;
  return torch::from_blob(data, e.shape, [keep](void*) {}, opts);
}

void MappedSafetensors::release(const SafetensorsEntry& e) const {
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t base = reinterpret_cast<uintptr_t>(map_->addr);
  uintptr_t lo = base + header_.data_start + e.begin, hi = base + header_.data_start + e.end;
  lo = (lo + page - 1) / page * page;  // whole pages inside the entry only:
  hi = hi / page * page;               // its neighbours may still be in use
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

}  // namespace ssalab
