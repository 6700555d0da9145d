// What the stage files share: JSON access that names the place of a bad
// value, and GPT-2's byte <-> character table.
#include "engine/tokenizer/stages.h"

#include <nlohmann/json.hpp>

#include <array>

#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode.h"

namespace ssalab::tokenizer {

using json = nlohmann::json;

void JsonPlace::fail(const std::string& message) const {
  throw TokenizerError(file + ": at " + (pointer.empty() ? std::string("/") : pointer) + ": " + message);
}

const json& field(const json& obj, const char* key, const JsonPlace& at) {
  if (!obj.is_object()) at.fail("expected a JSON object, found " + std::string(obj.type_name()));
  auto it = obj.find(key);
  if (it == obj.end()) at.fail(std::string("missing key \"") + key + "\"");
  return *it;
}

std::string string_field(const json& obj, const char* key, const JsonPlace& at) {
  const json& v = field(obj, key, at);
  if (!v.is_string()) at.at(key).fail("expected a string, found " + std::string(v.type_name()));
  return v.get<std::string>();
}

bool bool_field(const json& obj, const char* key, const JsonPlace& at, bool fallback) {
  if (!obj.is_object()) at.fail("expected a JSON object, found " + std::string(obj.type_name()));
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) at.at(key).fail("expected true or false, found " + std::string(it->type_name()));
  return it->get<bool>();
}

std::string type_of(const json& obj, const JsonPlace& at) { return string_field(obj, "type", at); }

void unknown_type(const std::string& stage, const std::string& type, const std::vector<const char*>& supported,
                  const JsonPlace& at) {
  std::string list;
  for (const char* s : supported) list += (list.empty() ? "" : ", ") + std::string(s);
  at.at("type").fail("unsupported " + stage + " type \"" + type + "\" (supported: " + list + ")");
}

// ---------------------------------------------------------------- byte level

namespace {

// GPT-2's table: printable bytes map to themselves, the other 68 to U+0100...
struct ByteTable {
  std::array<std::string, 256> to_char;
  std::array<int16_t, 324> to_byte;  // code points below 0x144
  ByteTable() {
    to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const char32_t c = printable ? char32_t(b) : char32_t(256 + n++);
      unicode::append_utf8(to_char[b], c);
      to_byte[c] = int16_t(b);
    }
  }
};

const ByteTable& byte_table() {
  static const ByteTable table;
  return table;
}

}  // namespace

const std::string& byte_to_char(unsigned char b) { return byte_table().to_char[b]; }

int char_to_byte(char32_t c) { return c < 324 ? byte_table().to_byte[c] : -1; }

}  // namespace ssalab::tokenizer
