// Helpers shared by the test areas: a scratch folder that cleans up after
// itself, and the message of an expected ssalab::Error.
#pragma once
#include <cstdlib>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "engine/util/error.h"
#include "engine/util/files.h"

namespace ssalab::test {

// A fresh folder under /tmp for one test, removed with everything in it
// afterwards (also when a test took its write permission away).
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "ssalab_test") {
    static int counter = 0;
    path = std::filesystem::temp_directory_path() /
           (prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    remove_tree(path.string());
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
    remove_tree(path.string());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes `bytes` to `rel` (creating folders) and returns the full path.
  std::string file(const std::string& rel, const std::string& bytes) const {
    std::filesystem::path p = path / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  std::string str() const { return path.string(); }
};

// Message of the Error thrown by f (fails the test when nothing is thrown).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  FAIL("expected ssalab::Error");
  return {};
}

inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// The last `n` bytes of a file (a child process's log for INFO); "" when unreadable.
inline std::string file_tail(const std::string& path, size_t n = 3000) {
  std::ifstream f(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return s.size() > n ? s.substr(s.size() - n) : s;
}

#if defined(SSALAB_BINARY) && defined(SSALAB_SOURCE_DIR)
// The app's GUI tests run `ssalab gui ARGS` under xvfb-run, from the source
// dir (so the session's token cache in runs/ is reused), output to `log`.
inline bool xvfb_run_available() { return std::system("command -v xvfb-run > /dev/null 2>&1") == 0; }
inline int run_gui_under_xvfb(const std::string& args, const std::string& log) {
  const std::string cmd = std::string("cd '") + SSALAB_SOURCE_DIR + "' && xvfb-run -a -s '-screen 0 1600x1000x24' '" +
                          SSALAB_BINARY + "' gui " + args + " > '" + log + "' 2>&1";
  return std::system(cmd.c_str());
}
#endif

}  // namespace ssalab::test
