#include "engine/util/npy.h"

#include <cstring>

#include "engine/util/error.h"
#include "engine/util/files.h"

namespace ssalab {

static std::string npy_bytes(const char* descr, size_t elem, const void* data, const std::vector<int64_t>& shape) {
  size_t count = 1;
  std::string dims;
  for (int64_t d : shape) {
    if (d < 0) throw Error("npy: negative dimension");
    count *= size_t(d);
    dims += std::to_string(d) + ", ";
  }
  if (shape.size() == 1) dims.pop_back();  // "(5,)"
  else if (!dims.empty()) dims.resize(dims.size() - 2);
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  // magic (6) + version (2) + header length (2) + header + padding + '\n' is a multiple of 64
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += char(1);
  out += char(0);
  const uint16_t len = uint16_t(header.size());
  out += char(len & 0xff);
  out += char(len >> 8);
  out += header;
  out.append(static_cast<const char*>(data), count * elem);
  return out;
}

void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  write_file_atomic(path, npy_bytes("<f4", sizeof(float), data, shape));
}
void write_npy(const std::string& path, const int32_t* data, const std::vector<int64_t>& shape) {
  write_file_atomic(path, npy_bytes("<i4", sizeof(int32_t), data, shape));
}
void write_npy(const std::string& path, const int64_t* data, const std::vector<int64_t>& shape) {
  write_file_atomic(path, npy_bytes("<i8", sizeof(int64_t), data, shape));
}

std::vector<char> read_npy(const std::string& path, std::vector<int64_t>* shape, std::string* descr) {
  std::string s = read_file(path);
  auto bad = [&](const std::string& why) { return Error(path + ": not a .npy file we wrote (" + why + ")"); };
  if (s.size() < 10 || s.compare(0, 6, "\x93NUMPY") != 0 || s[6] != 1) throw bad("magic");
  const size_t len = size_t(uint8_t(s[8])) | size_t(uint8_t(s[9])) << 8;
  if (10 + len > s.size()) throw bad("header length");
  const std::string header = s.substr(10, len);
  const size_t d = header.find("'descr': '"), sh = header.find("'shape': (");
  if (d == std::string::npos || sh == std::string::npos) throw bad("header");
  *descr = header.substr(d + 10, 3);
  shape->clear();
  size_t count = 1;
  for (size_t p = sh + 10; p < header.size() && header[p] != ')';) {
    if (header[p] == ',' || header[p] == ' ') {
      ++p;
      continue;
    }
    size_t used = 0;
    const int64_t dim = std::stoll(header.substr(p), &used);
    shape->push_back(dim);
    count *= size_t(dim);
    p += used;
  }
  const size_t elem = *descr == "<f4" || *descr == "<i4" ? 4 : *descr == "<i8" ? 8 : 0;
  if (!elem) throw bad("dtype " + *descr);
  if (s.size() - 10 - len != count * elem) throw bad("data size");
  return std::vector<char>(s.begin() + long(10 + len), s.end());
}

}  // namespace ssalab
