// Unit tests of views/view_math: colormap, scaling, pooling, curves, hit testing.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "views/view_math.h"

using namespace ssalab::views;

namespace {
Rgb hex(uint32_t h) { return {((h >> 16) & 255) / 255.0f, ((h >> 8) & 255) / 255.0f, (h & 255) / 255.0f}; }
const double kNaN = std::numeric_limits<double>::quiet_NaN();
}  // namespace

// ---------------------------------------------------------------- colormap
TEST_CASE("viridis matches the published 9-stop values", "[views][colormap]") {
  // viridis(9) as published by the viridis R package / matplotlib.
  const uint32_t stops[9] = {0x440154, 0x472D7B, 0x3B528B, 0x2C728E, 0x21908C,
                             0x27AD81, 0x5DC863, 0xAADC32, 0xFDE725};
  double worst = 0;
  for (int i = 0; i < 9; ++i) {
    Rgb want = hex(stops[i]), got = viridis(i / 8.0f);
    worst = std::max({worst, std::abs(double(got.r - want.r)), std::abs(double(got.g - want.g)),
                      std::abs(double(got.b - want.b))});
  }
  INFO("max channel error " << worst);
  CHECK(worst < 0.03);
}

TEST_CASE("viridis endpoints, clamping and packing", "[views][colormap]") {
  Rgb lo = viridis(0.0f), hi = viridis(1.0f);
  CHECK(lo.r == Approx(0x44 / 255.0).margin(0.02));
  CHECK(lo.b == Approx(0x54 / 255.0).margin(0.02));
  CHECK(hi.r == Approx(0xFD / 255.0).margin(0.02));
  CHECK(hi.g == Approx(0xE7 / 255.0).margin(0.02));
  // out-of-range and NaN inputs clamp
  CHECK(viridis(-3.0f).g == lo.g);
  CHECK(viridis(7.0f).g == hi.g);
  CHECK(viridis(std::nanf("")).g == lo.g);
  const auto& t = viridis_rgba();
  CHECK((t[0] >> 24) == 255u);
  CHECK((t[255] & 0xFF) == uint32_t(std::lround(hi.r * 255)));  // memory order r, g, b, a
}

TEST_CASE("viridis luminance rises monotonically", "[views][colormap]") {
  // the continuous map strictly
  float prev = -1;
  for (int i = 0; i <= 1024; ++i) {
    float y = luminance(viridis(i / 1024.0f));
    INFO("t = " << i / 1024.0);
    CHECK(y > prev);
    prev = y;
  }
  // the 8-bit table up to rounding (half a level on each channel)
  const auto& t = viridis_rgba();
  prev = -1;
  for (int i = 0; i < 256; ++i) {
    uint32_t c = t[i];
    Rgb rgb{(c & 255) / 255.0f, ((c >> 8) & 255) / 255.0f, ((c >> 16) & 255) / 255.0f};
    float y = luminance(rgb);
    INFO("entry " << i);
    CHECK(y >= prev - 1e-3f);
    prev = y;
  }
  CHECK(luminance(viridis(1)) > 10 * luminance(viridis(0)));
}

// ---------------------------------------------------------------- scaling
TEST_CASE("linear and log normalisation", "[views][scale]") {
  std::vector<float> v = {0.0f, 0.001f, 0.01f, 0.1f, 1.0f, std::nanf("")};
  Range lin = auto_range(v.data(), v.size(), Scale::Linear);
  CHECK(lin.lo == 0.0f);
  CHECK(lin.hi == 1.0f);
  CHECK(normalize(0.5f, Scale::Linear, lin) == Approx(0.5));
  CHECK(normalize(2.0f, Scale::Linear, lin) == 1.0f);
  CHECK(std::isnan(normalize(std::nanf(""), Scale::Linear, lin)));

  Range lg = auto_range(v.data(), v.size(), Scale::Log, 1e-4f);
  CHECK(lg.lo == Approx(0.001f));  // smallest positive value, above the floor
  CHECK(lg.hi == 1.0f);
  // decades are evenly spaced on the log scale
  CHECK(normalize(0.01f, Scale::Log, lg) == Approx(1.0 / 3).margin(1e-5));
  CHECK(normalize(0.1f, Scale::Log, lg) == Approx(2.0 / 3).margin(1e-5));
  CHECK(normalize(0.0f, Scale::Log, lg) == 0.0f);

  std::vector<float> tiny = {1e-12f, 1.0f};
  CHECK(auto_range(tiny.data(), 2, Scale::Log, 1e-4f).lo == Approx(1e-4f));  // floor wins

  std::vector<float> neg = {-2.0f, 2.0f};
  CHECK(auto_range(neg.data(), 2, Scale::Linear).lo == -2.0f);

  std::vector<uint32_t> rgba(v.size());
  colorize(v.data(), v.size(), Scale::Linear, lin, rgba.data());
  CHECK(rgba[0] == viridis_rgba()[0]);
  CHECK(rgba[4] == viridis_rgba()[255]);
  CHECK(rgba[5] == kMissingRgba);
}

// ---------------------------------------------------------------- pooling
TEST_CASE("pool_map with T not a multiple of the cell", "[views][pool]") {
  // 5 x 5 all ones, cells of 2: 3 x 3 with a partial last row/column.
  Grid g{5, 5, std::vector<float>(25, 1.0f)};
  Grid s = pool_map(g, 2, Pool::Sum);
  REQUIRE(s.rows == 3);
  REQUIRE(s.cols == 3);
  CHECK(s.at(0, 0) == 4.0f);
  CHECK(s.at(0, 2) == 2.0f);
  CHECK(s.at(2, 2) == 1.0f);
  Grid m = pool_map(g, 2, Pool::Mean);
  for (float x : m.v) CHECK(x == 1.0f);
  Grid q = pool_map(g, 2, Pool::QueryMeanKeySum);
  CHECK(q.at(0, 0) == 2.0f);  // a query puts 2 units on the 2 keys of the cell
  CHECK(q.at(2, 2) == 1.0f);
  CHECK(q.at(2, 0) == 2.0f);
}

TEST_CASE("pooled attention rows still sum to one", "[views][pool]") {
  // causal uniform attention, T = 7
  int T = 7;
  Grid g{T, T, std::vector<float>(T * T, 0.0f)};
  for (int t = 0; t < T; ++t)
    for (int s = 0; s <= t; ++s) g.v[t * T + s] = 1.0f / (t + 1);
  Grid p = pool_map(g, 3, Pool::QueryMeanKeySum);
  for (int i = 0; i < p.rows; ++i) {
    double sum = 0;
    for (int j = 0; j < p.cols; ++j) sum += p.at(i, j);
    CHECK(sum == Approx(1.0).epsilon(1e-5));
  }
  CHECK(p.at(0, 1) == 0.0f);  // causal: nothing above the diagonal
}

TEST_CASE("dropped mass at token level is exact", "[views][pool]") {
  // T = 4, block size 2, K = 1: every query keeps only its own block.
  int T = 4;
  Grid full{T, T, std::vector<float>(T * T, 0.0f)};
  for (int t = 0; t < T; ++t)
    for (int s = 0; s <= t; ++s) full.v[t * T + s] = 1.0f / (t + 1);
  std::vector<int32_t> sel = {0, 0, 1, 1};
  Grid d = dropped_token_map(full, sel.data(), 1, 2);
  CHECK(d.at(0, 0) == 0.0f);
  CHECK(d.at(2, 0) == Approx(1.0 / 3));
  CHECK(d.at(2, 2) == 0.0f);
  CHECK(d.at(3, 1) == Approx(0.25));
  // row sums of dropped = 1 - sparsity
  CHECK(d.at(3, 0) + d.at(3, 1) == Approx(0.5));
}

// ---------------------------------------------------------------- curves
TEST_CASE("finite_points and EMA", "[views][curves]") {
  Series s = finite_points({1, 2, 3, 4}, {1.0, kNaN, 3.0, std::numeric_limits<double>::infinity()});
  REQUIRE(s.x.size() == 2);
  CHECK(s.x[1] == 3);

  auto e = ema({5, 5, 5, 5}, 0.9);
  for (double v : e) CHECK(v == Approx(5.0));  // debiased: a constant stays constant
  auto raw = ema({1, 2, 3}, 0.0);
  CHECK(raw[2] == 3.0);
  auto step = ema({0, 0, 0, 10, 10, 10}, 0.5);
  CHECK(step[3] > 0.0);
  CHECK(step[3] < 10.0);
  CHECK(step[5] > step[4]);
  auto gap = ema({2, kNaN, 2}, 0.9);
  CHECK(std::isnan(gap[1]));
  CHECK(gap[2] == Approx(2.0));
}

TEST_CASE("downsample keeps first, last and spikes", "[views][curves]") {
  Series s;
  for (int i = 0; i < 10000; ++i) {
    s.x.push_back(i);
    s.y.push_back(i == 4321 ? 100.0 : (i == 777 ? -50.0 : 1.0));
  }
  s.y.front() = 7.0;
  s.y.back() = 9.0;
  Envelope e = downsample(s, 0, 9999, 100);
  REQUIRE(e.size() <= 102);
  REQUIRE(e.size() >= 50);
  CHECK(e.x.front() == 0.0);
  CHECK(e.y.front() == 7.0);
  CHECK(e.x.back() == 9999.0);
  CHECK(e.y.back() == 9.0);
  double top = -1e9, bottom = 1e9;
  for (size_t i = 0; i < e.size(); ++i) {
    top = std::max(top, e.hi[i]);
    bottom = std::min(bottom, e.lo[i]);
    CHECK(e.lo[i] <= e.y[i]);
    CHECK(e.y[i] <= e.hi[i]);
  }
  CHECK(top == 100.0);
  CHECK(bottom == -50.0);
  for (size_t i = 1; i < e.size(); ++i) CHECK(e.x[i] > e.x[i - 1]);
}

TEST_CASE("downsample of a range, and of few points", "[views][curves]") {
  Series s;
  for (int i = 0; i < 1000; ++i) {
    s.x.push_back(i);
    s.y.push_back(i);
  }
  Envelope e = downsample(s, 100.5, 199.5, 10);
  REQUIRE(e.size() > 2);
  CHECK(e.x.front() == 101.0);  // first point inside the range, kept exactly
  CHECK(e.x.back() == 199.0);
  Envelope few = downsample(s, 0, 5, 100);
  REQUIRE(few.size() == 6);
  CHECK(few.y[3] == 3.0);
  CHECK(downsample(s, 2000, 3000, 10).size() == 0);
  CHECK(downsample(Series{}, 0, 1, 10).size() == 0);
}

// ---------------------------------------------------------------- map transform
TEST_CASE("hit test without zoom", "[views][hit]") {
  ScreenRect r{100, 50, 400, 400};
  MapView v;
  MapHit h = hit_test(v, r, 8, 100 + 0.5f, 50 + 0.5f);
  CHECK(h.inside);
  CHECK(h.row == 0);
  CHECK(h.col == 0);
  h = hit_test(v, r, 8, 100 + 399.5f, 50 + 60.0f);  // last column, second row (50 px per cell)
  CHECK(h.col == 7);
  CHECK(h.row == 1);
  CHECK_FALSE(hit_test(v, r, 8, 99.0f, 60.0f).inside);
  CHECK_FALSE(hit_test(v, r, 8, 300.0f, 451.0f).inside);
}

TEST_CASE("hit test under zoom and pan round-trips cell centres", "[views][hit]") {
  ScreenRect r{10, 20, 512, 512};
  int n = 64;
  MapView v{4.0f, 0.25f, 0.5f};  // shows cells 16..31 (keys) x 32..47 (queries)
  v = clamp_view(v, 64);
  for (int row = 32; row < 48; ++row)
    for (int col = 16; col < 32; col += 3) {
      float px, py;
      map_to_screen(v, r, (col + 0.5f) / n, (row + 0.5f) / n, &px, &py);
      MapHit h = hit_test(v, r, n, px, py);
      REQUIRE(h.inside);
      CHECK(h.row == row);
      CHECK(h.col == col);
    }
  float px, py;
  map_to_screen(v, r, 0.25f, 0.5f, &px, &py);
  CHECK(px == Approx(10));
  CHECK(py == Approx(20));
}

TEST_CASE("zoom_at keeps the point under the cursor; views stay inside the map", "[views][hit]") {
  ScreenRect r{0, 0, 400, 400};
  int n = 1000;
  MapView v;
  float cx = 123, cy = 321;
  MapHit before = hit_test(v, r, n, cx, cy);
  MapView z = zoom_at(v, r, cx, cy, 8.0f, 100);
  CHECK(z.zoom == 8.0f);
  MapHit after = hit_test(z, r, n, cx, cy);
  CHECK(std::abs(after.row - before.row) <= 1);
  CHECK(std::abs(after.col - before.col) <= 1);

  MapView far = pan_by(z, r, -1e6f, -1e6f, 100);  // drag far right/down: clamps to the corner
  CHECK(far.u0 == Approx(1.0f - 1.0f / 8));
  CHECK(far.v0 == Approx(1.0f - 1.0f / 8));
  MapView out = zoom_at(z, r, cx, cy, 1e-3f, 100);  // zoom out fully
  CHECK(out.zoom == 1.0f);
  CHECK(out.u0 == 0.0f);
  CHECK(clamp_view(MapView{1000.0f, 0, 0}, 50).zoom == 50.0f);
}

TEST_CASE("cell_tokens clips the last cell", "[views][hit]") {
  TokenRange a = cell_tokens(0, 16, 100);
  CHECK(a.first == 0);
  CHECK(a.last == 16);
  TokenRange b = cell_tokens(6, 16, 100);
  CHECK(b.first == 96);
  CHECK(b.last == 100);
}

// ---------------------------------------------------------------- statistics, text
TEST_CASE("percentiles", "[views][stats]") {
  std::vector<double> v;
  for (int i = 1; i <= 100; ++i) v.push_back(101 - i);
  CHECK(percentile(v, 50) == 50.0);
  CHECK(percentile(v, 99) == 99.0);
  CHECK(percentile(v, 100) == 100.0);
  CHECK(percentile(v, 0) == 1.0);
  CHECK(percentile({3.0}, 99) == 3.0);
  CHECK(std::isnan(percentile({}, 50)));
}

TEST_CASE("display_piece", "[views][text]") {
  CHECK(display_piece("\xE2\x96\x81the") == " the");
  CHECK(display_piece("<0x0A>") == "\\n");
  CHECK(display_piece("<0x41>") == "<0x41>");
  CHECK(display_piece("<0xZZ>") == "<0xZZ>");
  CHECK(display_piece("a\tb") == "a\\tb");
  CHECK(display_piece(std::string("x\x01", 2)) == "x\\x01");
  CHECK(display_piece("caf\xC3\xA9") == "caf\xC3\xA9");  // UTF-8 passes through
  // byte-level BPE pieces (GPT-2 / Llama 3 / Qwen vocabularies) show as text
  CHECK(display_piece("\xC4\xA0the") == " the");         // "Ġthe"
  CHECK(display_piece("\xC4\x8A") == "\\n");             // "Ċ" = byte 0x0A
  CHECK(display_piece("\xC3\xA6\xC4\xB9\xC2\xA5") == "\xE6\x97\xA5");  // "æĹ¥": the bytes of U+65E5
  CHECK(display_piece("\xC3\xA6\xC4\xB9") == "\xC3\xA6\xC4\xB9");      // half a character: shown as stored
}
