// safetensors: bit-exact round trips for every dtype, metadata, validation of
// corrupt files and atomic replacement.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/checkpoint/safetensors.h"
#include "engine/util/error.h"
#include "engine/util/files.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace ssalab;

namespace {

using test::contains;
using test::error_of;
using test::TempDir;

// Same dtype, shape and bytes (NaN payloads and -0.0 included).
bool bit_equal(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  auto ca = a.contiguous(), cb = b.contiguous();
  const size_t bytes = ca.numel() * ca.element_size();
  // an empty tensor's data pointer may be null, which memcmp must not get (UBSan)
  return bytes == 0 || std::memcmp(ca.data_ptr(), cb.data_ptr(), bytes) == 0;
}

// Floats with the awkward values: NaN, infinities, -0, subnormals.
torch::Tensor awkward_floats(torch::ScalarType t) {
  torch::manual_seed(7);
  auto x = torch::randn({5, 7}, torch::kDouble) * 100;
  const double inf = std::numeric_limits<double>::infinity();
  x[0][0] = std::numeric_limits<double>::quiet_NaN();
  x[0][1] = inf;
  x[0][2] = -inf;
  x[0][3] = -0.0;
  x[0][4] = 1e-42;  // subnormal in f32
  return x.to(t);
}

// A file from raw parts: [u64 header length][header][data].
std::string raw_file(const std::string& header, const std::string& data, uint64_t claimed_len = UINT64_MAX) {
  uint64_t n = claimed_len == UINT64_MAX ? header.size() : claimed_len;
  std::string b(reinterpret_cast<const char*>(&n), 8);
  return b + header + data;
}

std::string write_raw(const TempDir& d, const std::string& name, const std::string& bytes) {
  std::string p = d / name;
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

}  // namespace

TEST_CASE("safetensors round-trips every dtype bit-exactly", "[safetensors]") {
  TempDir d;
  NamedTensors ints = {
      {"i64", torch::tensor({std::numeric_limits<int64_t>::min(), int64_t(0), std::numeric_limits<int64_t>::max()})},
      {"i32", torch::arange(-6, 6, torch::kInt).reshape({3, 4})},
      {"i16", torch::tensor({-32768, 0, 32767}, torch::kShort)},
      {"i8", torch::tensor({-128, -1, 127}, torch::kChar)},
      {"u8", torch::tensor({0, 128, 255}, torch::kByte)},
      {"bool", torch::tensor({true, false, true, true})},
      {"scalar", torch::tensor(int64_t(42))},
      {"empty", torch::zeros({0, 3}, torch::kInt)},
  };
  for (auto store : {torch::kFloat, torch::kHalf, torch::kBFloat16, torch::kDouble}) {
    INFO(c10::toString(store));
    NamedTensors all = ints;
    all.emplace_back("floats", awkward_floats(store));
    all.emplace_back("float_scalar", torch::tensor(1.5).to(store));
    std::string p = d / "all.safetensors";
    save_safetensors(p, all, {}, store);
    SafetensorsFile f = load_safetensors(p);
    REQUIRE(f.tensors.size() == all.size());
    CHECK(f.metadata.empty());
    for (const auto& [name, t] : all) {
      INFO(name);
      REQUIRE(f.tensors.count(name));
      const torch::Tensor& got = f.tensors.at(name);
      CHECK(bit_equal(got, t));
      CHECK(got.is_contiguous());
      CHECK(got.device().is_cpu());
    }
  }
}

TEST_CASE("safetensors converts floating tensors to the store dtype only", "[safetensors]") {
  TempDir d;
  std::string p = d / "conv.safetensors";
  auto w = awkward_floats(torch::kFloat);
  auto idx = torch::arange(10, torch::kLong);
  for (auto store : {torch::kHalf, torch::kBFloat16}) {
    INFO(c10::toString(store));
    save_safetensors(p, {{"w", w}, {"d", w.to(torch::kDouble)}, {"idx", idx}}, {}, store);
    SafetensorsFile f = load_safetensors(p);
    CHECK(bit_equal(f.tensors.at("w"), w.to(store)));
    CHECK(bit_equal(f.tensors.at("d"), w.to(torch::kDouble).to(store)));
    CHECK(bit_equal(f.tensors.at("idx"), idx));  // integers keep their dtype
  }
  // non-contiguous input is stored in logical order
  auto t = torch::arange(12, torch::kFloat).reshape({3, 4}).t();
  save_safetensors(p, {{"t", t}});
  CHECK(bit_equal(load_safetensors(p).tensors.at("t"), t.contiguous()));
}

TEST_CASE("safetensors metadata and layout", "[safetensors]") {
  TempDir d;
  std::string p = d / "meta.safetensors";
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "caf\xC3\xA9 \xE6\xBC\xA2 \"quoted\"\n"}, {"empty", ""}};
  save_safetensors(p, {{"b", torch::ones({3}, torch::kByte)}, {"a", torch::ones({2, 2})}}, meta);
  SafetensorsFile f = load_safetensors(p);
  CHECK(f.metadata == meta);

  // header padded to 8 bytes; offsets relative to the data section, no gaps
  std::string bytes = read_file(p);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  auto header = nlohmann::json::parse(bytes.substr(8, n));
  CHECK(header["a"]["dtype"] == "F32");
  CHECK(header["a"]["shape"] == nlohmann::json::array({2, 2}));
  CHECK(header["a"]["data_offsets"] == nlohmann::json::array({0, 16}));
  CHECK(header["b"]["data_offsets"] == nlohmann::json::array({16, 19}));
  CHECK(bytes.size() == 8 + n + 19);
  CHECK(header["__metadata__"]["format"] == "pt");
}

TEST_CASE("safetensors rejects corrupt files with a clear error", "[safetensors]") {
  TempDir d;
  const std::string f32x4 = std::string(16, '\0');
  auto expect_error = [&](const std::string& name, const std::string& bytes, const std::string& what) {
    std::string p = write_raw(d, name, bytes);
    std::string msg = error_of([&] { load_safetensors(p); });
    INFO(msg);
    CHECK(contains(msg, p));
    CHECK(contains(msg, what));
  };
  SECTION("missing file") {
    CHECK(contains(error_of([&] { load_safetensors(d / "missing.safetensors"); }), "missing.safetensors"));
  }
  SECTION("shorter than the length prefix") { expect_error("short", "abc", "truncated"); }
  SECTION("header length beyond the file") {
    expect_error("huge", raw_file("{}", "", uint64_t(1) << 40), "header length");
    expect_error("long", raw_file("{}      ", "", 100), "header length");
  }
  SECTION("header not JSON") { expect_error("notjson", raw_file("{\"a\": [1, 2", ""), "JSON"); }
  SECTION("header not an object") { expect_error("array", raw_file("[1, 2]  ", ""), "object"); }
  SECTION("unknown dtype") {
    expect_error("dtype", raw_file(R"({"x":{"dtype":"C64","shape":[2],"data_offsets":[0,16]}})", f32x4), "unknown dtype");
  }
  SECTION("missing field") {
    expect_error("field", raw_file(R"({"x":{"dtype":"F32","data_offsets":[0,16]}})", f32x4), "shape");
  }
  SECTION("offsets outside the data") {
    expect_error("range", raw_file(R"({"x":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", f32x4), "outside");
    expect_error("reversed", raw_file(R"({"x":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", f32x4), "outside");
    expect_error("negative", raw_file(R"({"x":{"dtype":"F32","shape":[4],"data_offsets":[-4,12]}})", f32x4), "non-negative");
  }
  SECTION("byte count disagrees with the shape") {
    expect_error("count", raw_file(R"({"x":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", f32x4), "needs 12 bytes");
    expect_error("overflow",
                 raw_file(R"({"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})", f32x4),
                 "too many");
  }
  SECTION("overlapping tensors") {
    expect_error("overlap",
                 raw_file(R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                          f32x4),
                 "overlap");
  }
  SECTION("metadata values must be strings") {
    expect_error("meta", raw_file(R"({"__metadata__":{"step":3}})", ""), "__metadata__");
  }
  SECTION("bool bytes other than 0/1") {
    expect_error("bool", raw_file(R"({"x":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", "\x01\x07"), "BOOL");
  }
  SECTION("a valid file cut short") {
    std::string p = d / "good.safetensors";
    save_safetensors(p, {{"w", torch::randn({64, 64})}});
    std::string bytes = read_file(p);
    expect_error("cut", bytes.substr(0, bytes.size() - 100), "outside");
    expect_error("cut_header", bytes.substr(0, 30), "header length");
  }
  SECTION("a hand-made valid file loads") {
    std::string p = write_raw(d, "ok", raw_file(R"({"x":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})", f32x4));
    CHECK(bit_equal(load_safetensors(p).tensors.at("x"), torch::zeros({2, 2}, torch::kInt)));
  }
}

TEST_CASE("safetensors save rejects bad input and replaces files atomically", "[safetensors]") {
  TempDir d;
  std::string p = d / "model.safetensors";
  auto w = torch::randn({4, 4});
  save_safetensors(p, {{"w", w}}, {{"v", "1"}});
  const std::string before = read_file(p);

  SECTION("bad input leaves the previous file intact") {
    CHECK_THROWS_AS(save_safetensors(p, {{"w", w}, {"w", w}}), Error);                           // duplicate
    CHECK_THROWS_AS(save_safetensors(p, {{"__metadata__", w}}), Error);                          // reserved
    CHECK_THROWS_AS(save_safetensors(p, {{"c", torch::zeros({2}, torch::kComplexFloat)}}), Error);  // no dtype
    CHECK_THROWS_AS(save_safetensors(p, {{"w", w}}, {}, torch::kLong), Error);                   // store not float
    CHECK_THROWS_AS(save_safetensors(p, {{"u", torch::Tensor()}}), Error);                       // undefined
    CHECK(read_file(p) == before);
  }
  SECTION("target is an existing directory") {
    fs::create_directories(d / "dir.safetensors/inner");
    CHECK_THROWS_AS(save_safetensors(d / "dir.safetensors", {{"w", w}}), Error);
    CHECK(fs::is_directory(d / "dir.safetensors/inner"));
    for (const auto& e : fs::directory_iterator(d.path))  // no temp file left behind
      CHECK_FALSE(contains(e.path().filename().string(), ".tmp"));
  }
  SECTION("directory not writable") {
    if (::geteuid() == 0) {
      // root ignores permission bits; procfs refuses new files even for root
      CHECK_THROWS_AS(save_safetensors("/proc/ssalab_test.safetensors", {{"w", w}}), Error);
    } else {
      fs::permissions(d.path, fs::perms::owner_read | fs::perms::owner_exec);
      CHECK_THROWS_AS(save_safetensors(p, {{"w", w * 2}}), Error);
      fs::permissions(d.path, fs::perms::owner_all);
      CHECK(read_file(p) == before);
    }
  }
  SECTION("a successful save replaces the file") {
    save_safetensors(p, {{"w", w * 2}});
    CHECK(bit_equal(load_safetensors(p).tensors.at("w"), w * 2));
  }
}
