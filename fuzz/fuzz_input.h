// Helpers for the fuzz targets (libFuzzer): the input as a file where the
// code under test reads files, and the rule every target checks: bad input
// ends in ssalab::Error (a clear message), never in a crash, a hang, another
// exception type, or an allocation out of proportion to the input (the
// sanitizers and libFuzzer's -rss_limit_mb / -malloc_limit_mb catch those).
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace ssalab::fuzz {

// An in-memory file (memfd) rewritten with each input; path() opens it
// anew through /proc, as a path on disk would be.
class MemoryFile {
 public:
  explicit MemoryFile(const char* name) : fd_(memfd_create(name, 0)) {
    if (fd_ < 0) std::abort();
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  const std::string& write(const uint8_t* data, size_t size) {
    if (ftruncate(fd_, 0) != 0 || (size && pwrite(fd_, data, size, 0) != ssize_t(size))) std::abort();
    return path_;
  }

 private:
  int fd_;
  std::string path_;
};

// A scratch folder under /dev/shm (memory), one per process, starting as a
// copy of `seed_dir` (a fixture model folder) when given.
inline std::string scratch_folder(const std::string& seed_dir = "") {
  namespace fs = std::filesystem;
  fs::path dir = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  dir /= "ssalab-fuzz-" + std::to_string(getpid());
  fs::remove_all(dir);
  fs::create_directories(dir);
  if (!seed_dir.empty()) fs::copy(seed_dir, dir, fs::copy_options::recursive);
  return dir.string();
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// The fixtures folder of the source tree (SSALAB_SOURCE_DIR, set by CMake).
inline std::string fixture(const std::string& rel) { return std::string(SSALAB_SOURCE_DIR) + "/tests/fixtures/" + rel; }

}  // namespace ssalab::fuzz
