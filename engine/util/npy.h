// NumPy .npy files (format version 1.0) for the arrays `ssalab analyze`
// writes: float32, int32 and int64, C order. No Debian package writes them
// from C++, and the format is one short header before the raw data. Written
// atomically like every other output.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ssalab {

void write_npy(const std::string& path, const float* data, const std::vector<int64_t>& shape);
void write_npy(const std::string& path, const int32_t* data, const std::vector<int64_t>& shape);
void write_npy(const std::string& path, const int64_t* data, const std::vector<int64_t>& shape);

// Reads back what write_npy wrote (tests): the shape and the raw bytes; throws
// Error on anything else. `descr` receives the dtype ("<f4", "<i4", "<i8").
std::vector<char> read_npy(const std::string& path, std::vector<int64_t>* shape, std::string* descr);

}  // namespace ssalab
