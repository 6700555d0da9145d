// One exception type for everything a user can get wrong (files, settings,
// numerics). Messages name the thing at fault so the CLI and the GUI can show
// them as they are.
#pragma once
#include <stdexcept>
#include <string>

namespace ssalab {

struct Error : std::runtime_error {
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace ssalab
