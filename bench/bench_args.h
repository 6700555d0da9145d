// Command-line helpers the benchmark programs share.
#pragma once
#include <sstream>
#include <string>
#include <vector>

namespace ssalab::bench {

// "8192,32768" -> {8192, 32768}; throws std::invalid_argument on a non-number.
inline std::vector<int> int_list(const std::string& s) {
  std::vector<int> v;
  std::stringstream in(s);
  for (std::string x; std::getline(in, x, ',');) v.push_back(std::stoi(x));
  return v;
}

// "a,b,c" -> {"a", "b", "c"}; "" -> {}.
inline std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream in(s);
  for (std::string x; std::getline(in, x, ',');) v.push_back(x);
  return v;
}

}  // namespace ssalab::bench
