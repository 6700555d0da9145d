#include "engine/report/chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include <stb_easy_font.h>
#include <stb_image_write.h>

#include "engine/util/error.h"
#include "engine/util/files.h"

namespace ssalab {

uint32_t series_color(int i) {
  static const uint32_t palette[] = {0x1f77b4, 0xd62728, 0x2ca02c, 0xff7f0e, 0x9467bd, 0x8c564b};
  return palette[i % 6];
}

namespace {

struct Canvas {
  int w, h;
  std::vector<uint32_t> px;
  Canvas(int w_, int h_) : w(w_), h(h_), px(size_t(w_) * h_, 0xFFFFFFFFu) {}
  void set(int x, int y, uint32_t rgb) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    // 0xRRGGBB -> RGBA bytes in memory order (little-endian uint32 0xAABBGGRR)
    px[size_t(y) * w + x] = 0xFF000000u | ((rgb & 0xFF) << 16) | (rgb & 0xFF00) | ((rgb >> 16) & 0xFF);
  }
  void rect(int x0, int y0, int x1, int y1, uint32_t rgb) {
    for (int y = std::min(y0, y1); y <= std::max(y0, y1); ++y)
      for (int x = std::min(x0, x1); x <= std::max(x0, x1); ++x) set(x, y, rgb);
  }
  void line(double x0, double y0, double x1, double y1, uint32_t rgb, int thick, bool dashed) {
    const int n = int(std::max(std::abs(x1 - x0), std::abs(y1 - y0))) + 1;
    for (int i = 0; i <= n; ++i) {
      if (dashed && (i / 6) % 2) continue;
      double t = double(i) / n;
      int x = int(std::lround(x0 + t * (x1 - x0))), y = int(std::lround(y0 + t * (y1 - y0)));
      rect(x - thick / 2, y - thick / 2, x + (thick - 1) / 2, y + (thick - 1) / 2, rgb);
    }
  }
  // stb_easy_font draws 1-unit quads; `scale` enlarges them.
  void text(int x, int y, const std::string& s, uint32_t rgb, int scale = 1, bool vertical = false) {
    static char buf[60000];
    int quads = stb_easy_font_print(0, 0, const_cast<char*>(s.c_str()), nullptr, buf, sizeof buf);
    for (int q = 0; q < quads; ++q) {
      const float* v0 = reinterpret_cast<const float*>(buf + (q * 4 + 0) * 16);
      const float* v2 = reinterpret_cast<const float*>(buf + (q * 4 + 2) * 16);
      for (int yy = int(v0[1] * scale); yy < int(v2[1] * scale); ++yy)
        for (int xx = int(v0[0] * scale); xx < int(v2[0] * scale); ++xx)
          vertical ? set(x + yy, y - xx, rgb) : set(x + xx, y + yy, rgb);
    }
  }
};

int text_width(const std::string& s, int scale) { return stb_easy_font_width(const_cast<char*>(s.c_str())) * scale; }

std::string tick_label(double v) {
  char b[32];
  double a = std::abs(v);
  if (a != 0 && (a < 1e-2 || a >= 1e5)) std::snprintf(b, sizeof b, "%.1e", v);
  else if (a >= 100 || std::abs(v - std::round(v)) < 1e-9) std::snprintf(b, sizeof b, "%.0f", v);
  else std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

// ~5 "nice" ticks covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi) {
  double span = hi - lo;
  if (!(span > 0)) return {lo};
  double step = std::pow(10.0, std::floor(std::log10(span / 5)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (span / (step * m) <= 6) {
      step *= m;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * span; v += step) t.push_back(std::abs(v) < 1e-12 ? 0 : v);
  return t;
}

}  // namespace

std::vector<uint32_t> render_chart(const Chart& c) {
  Canvas cv(c.width, c.height);
  const int left = 70, right = 20, top = 40, bottom = 55;
  const int pw = c.width - left - right, ph = c.height - top - bottom;
  auto fx = [&](double x) { return c.log_x ? std::log2(x) : x; };
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (auto& s : c.series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, fx(s.x[i])), x1 = std::max(x1, fx(s.x[i]));
      y0 = std::min(y0, s.y[i]), y1 = std::max(y1, s.y[i]);
    }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (x1 == x0) x0 -= 1, x1 += 1;
  double pad = (y1 - y0) * 0.08;
  if (pad == 0) pad = std::max(1e-3, std::abs(y0) * 0.1);
  y0 -= pad, y1 += pad;
  auto px = [&](double x) { return left + (fx(x) - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + ph - (y - y0) / (y1 - y0) * ph; };

  const uint32_t ink = 0x222222, grid = 0xE4E4E4;
  for (double t : nice_ticks(y0, y1)) {
    int y = int(py(t));
    cv.rect(left, y, left + pw, y, grid);
    std::string l = tick_label(t);
    cv.text(left - 6 - text_width(l, 1), y - 3, l, ink);
  }
  std::vector<double> xt;
  if (c.log_x)
    for (double e = std::ceil(x0); e <= x1 + 1e-9; e += 1) xt.push_back(std::pow(2.0, e));
  else
    xt = nice_ticks(x0, x1);
  for (double t : xt) {
    int x = int(px(t));
    cv.rect(x, top, x, top + ph, grid);
    std::string l = tick_label(t);
    cv.text(x - text_width(l, 1) / 2, top + ph + 6, l, ink);
  }
  cv.rect(left, top, left, top + ph, ink);
  cv.rect(left, top + ph, left + pw, top + ph, ink);
  cv.text((c.width - text_width(c.title, 2)) / 2, 10, c.title, ink, 2);
  cv.text(left + (pw - text_width(c.x_label, 1)) / 2, c.height - 22, c.x_label, ink);
  cv.text(12, top + ph / 2 + text_width(c.y_label, 1) / 2, c.y_label, ink, 1, /*vertical=*/true);

  for (auto& s : c.series) {
    bool have_prev = false;
    double ppx = 0, ppy = 0;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) {
        have_prev = false;
        continue;
      }
      double X = px(s.x[i]), Y = py(s.y[i]);
      if (have_prev) cv.line(ppx, ppy, X, Y, s.rgb, 2, s.dashed);
      cv.rect(int(X) - 3, int(Y) - 3, int(X) + 3, int(Y) + 3, s.rgb);
      ppx = X, ppy = Y, have_prev = true;
    }
  }
  // legend, top right inside the plot
  int ly = top + 8;
  for (auto& s : c.series) {
    int lx = left + pw - 150;
    cv.line(lx, ly + 3, lx + 24, ly + 3, s.rgb, 2, s.dashed);
    cv.text(lx + 30, ly, s.name, ink);
    ly += 14;
  }
  return cv.px;
}

void write_png_atomic(const std::string& path, const uint32_t* rgba, int width, int height) {
  std::string bytes;
  stbi_write_png_to_func(
      [](void* ctx, void* data, int size) { static_cast<std::string*>(ctx)->append(static_cast<char*>(data), size); },
      &bytes, width, height, 4, rgba, width * 4);
  if (bytes.empty()) throw Error("PNG encoding failed for " + path);
  write_file_atomic(path, bytes);
}

void write_chart_png(const std::string& path, const Chart& c) {
  std::vector<uint32_t> px = render_chart(c);
  write_png_atomic(path, px.data(), c.width, c.height);
}

}  // namespace ssalab
