// Fixtures of the tokenizer tests: the real tokenizer files (gzipped) and the
// synthetic variants of tests/fixtures/tokenizers/variants.json, built the
// way make_reference.py builds them, and the reference ids HF made.
#pragma once
#include <zlib.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <string>

#include "engine/tokenizer/hf_tokenizer.h"

#ifndef SSALAB_SOURCE_DIR
#error "SSALAB_SOURCE_DIR must name the repository root"
#endif

namespace ssalab::tokenizer::test {

inline std::string fixture_dir() { return std::string(SSALAB_SOURCE_DIR) + "/tests/fixtures/tokenizers"; }

// A file, gunzipped when it is gzip (zlib reads plain files as they are).
inline std::string read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path);
  std::string out;
  char buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
  gzclose(f);
  if (n < 0) throw std::runtime_error("cannot read " + path);
  return out;
}

inline const nlohmann::json& reference() {
  static const nlohmann::json ref = nlohmann::json::parse(read_gz(fixture_dir() + "/reference.json.gz"));
  return ref;
}

inline const nlohmann::json& real_json(const std::string& name) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(name);
  if (it == cache.end())
    it = cache.emplace(name, nlohmann::json::parse(read_gz(fixture_dir() + "/" + name + "/tokenizer.json.gz"))).first;
  return it->second;
}

inline bool is_real(const std::string& name) {
  return name == "gpt2" || name == "llama2" || name == "llama3" || name == "qwen3";
}

// The tokenizer.json text of a real tokenizer or a variant.
inline std::string tokenizer_json(const std::string& name) {
  if (is_real(name)) return real_json(name).dump();
  static const nlohmann::json variants = nlohmann::json::parse(read_gz(fixture_dir() + "/variants.json"));
  const nlohmann::json& v = variants.at(name);
  nlohmann::json j = real_json(v.at("base").get<std::string>());
  for (auto it = v.at("set").begin(); it != v.at("set").end(); ++it) j[it.key()] = it.value();
  return j.dump();
}

// with_config: read the folder's tokenizer_config.json too (real files only).
inline const HfTokenizer& fixture_tokenizer(const std::string& name, bool with_config = false) {
  static std::map<std::pair<std::string, bool>, std::unique_ptr<HfTokenizer>> cache;
  auto& slot = cache[{name, with_config}];
  if (!slot) {
    std::string config;
    const std::string config_path = fixture_dir() + "/" + name + "/tokenizer_config.json";
    if (with_config) config = read_gz(config_path);
    slot = std::make_unique<HfTokenizer>(tokenizer_json(name), name + "/tokenizer.json", config, config_path);
  }
  return *slot;
}

// A one-stage tokenizer.json around a tiny vocabulary, for stage tests.
inline std::string tiny_json(const nlohmann::json& overrides) {
  nlohmann::json j = {{"version", "1.0"},
                      {"added_tokens", nlohmann::json::array()},
                      {"normalizer", nullptr},
                      {"pre_tokenizer", nullptr},
                      {"post_processor", nullptr},
                      {"decoder", nullptr},
                      {"model",
                       {{"type", "BPE"},
                        {"vocab", {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}}},
                        {"merges", {"a b", "ab c"}}}}};
  for (auto it = overrides.begin(); it != overrides.end(); ++it) j[it.key()] = it.value();
  return j.dump();
}

}  // namespace ssalab::tokenizer::test
