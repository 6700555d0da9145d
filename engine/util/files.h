// Small file helpers. Every write that could replace data a user already has
// goes through write_file_atomic: the bytes land in a temporary file next to
// the target, are flushed to disk, and only then renamed over it, so a failed
// or interrupted write leaves the previous file intact.
#pragma once
#include <string>

namespace ssalab {

std::string read_file(const std::string& path);  // throws Error naming the path
void write_file_atomic(const std::string& path, const std::string& bytes);

// Replaces directory `final_dir` by the fully written `staged_dir`. The old
// directory is moved aside first and removed only after the rename succeeded;
// recover_directory() puts it back if a crash left only the aside copy.
void commit_directory(const std::string& staged_dir, const std::string& final_dir);
void recover_directory(const std::string& final_dir);

bool file_exists(const std::string& path);
// Deletes a file or a directory tree; a missing path is fine. Returns false if
// something could not be removed. (Not std::filesystem::remove_all: PyTorch's
// libtorch.so exports a copy of it that crashes when our code binds to it.)
bool remove_tree(const std::string& path);
void make_dirs(const std::string& path);

// The app's settings folder, created when missing: $XDG_CONFIG_HOME/ssalab,
// else ~/.config/ssalab; "" when there is no home or it cannot be created.
std::string user_config_dir();

}  // namespace ssalab
