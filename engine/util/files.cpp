#include "engine/util/files.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/util/error.h"

namespace fs = std::filesystem;

namespace ssalab {

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw Error("file not found: " + path);
  if (fs::is_directory(path, ec)) throw Error("expected a file but found a directory: " + path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open " + path + ": " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error("read error on " + path);
  return ss.str();
}

static void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  fs::path target(path);
  if (target.has_parent_path()) make_dirs(target.parent_path().string());
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw Error("cannot write " + path + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw Error("failed writing " + path + ": " + std::strerror(e) + " (previous file left intact)");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw Error("failed flushing " + path + ": " + std::strerror(e) + " (previous file left intact)");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw Error("failed replacing " + path + ": " + std::strerror(e));
  }
  fsync_path(target.has_parent_path() ? target.parent_path().string() : ".", true);
}

void commit_directory(const std::string& staged_dir, const std::string& final_dir) {
  std::error_code ec;
  std::string aside = final_dir + ".prev";
  remove_tree(aside);
  bool had_old = fs::exists(final_dir, ec);
  if (had_old) {
    fs::rename(final_dir, aside, ec);
    if (ec) throw Error("cannot move old " + final_dir + " aside: " + ec.message());
  }
  fs::rename(staged_dir, final_dir, ec);
  if (ec) {
    std::error_code ec2;
    if (had_old) fs::rename(aside, final_dir, ec2);
    throw Error("cannot install " + final_dir + ": " + ec.message() + " (previous copy kept)");
  }
  remove_tree(aside);
  fs::path p(final_dir);
  fsync_path(p.has_parent_path() ? p.parent_path().string() : ".", true);
}

void recover_directory(const std::string& final_dir) {
  std::error_code ec;
  std::string aside = final_dir + ".prev";
  if (!fs::exists(final_dir, ec) && fs::exists(aside, ec)) fs::rename(aside, final_dir, ec);
}

bool remove_tree(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return errno == ENOENT;
  // depth-first, without following links: children go before their folder
  auto remove_one = [](const char* p, const struct stat*, int, struct FTW*) { return ::remove(p) == 0 ? 0 : -1; };
  return ::nftw(path.c_str(), remove_one, 16, FTW_DEPTH | FTW_PHYS) == 0;
}

bool file_exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

void make_dirs(const std::string& path) {
  if (path.empty()) return;
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec) throw Error("cannot create directory " + path + ": " + ec.message());
}

std::string user_config_dir() {
  const char* xdg = std::getenv("XDG_CONFIG_HOME");
  const char* home = std::getenv("HOME");
  std::string dir;
  if (xdg && *xdg) dir = std::string(xdg) + "/ssalab";
  else if (home && *home) dir = std::string(home) + "/.config/ssalab";
  if (dir.empty()) return "";
  try {
    make_dirs(dir);
  } catch (const Error&) {
    return "";
  }
  return dir;
}

}  // namespace ssalab
