// Small raster charts for reports (line charts with markers), written as PNG.
// No plotting library ships in Debian for C++, so this draws axes, ticks,
// lines and a legend itself; text comes from stb_easy_font's quads.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ssalab {

struct ChartSeries {
  std::string name;
  std::vector<double> x, y;  // NaN y values leave a gap
  uint32_t rgb = 0x1f77b4;   // 0xRRGGBB
  bool dashed = false;
};

struct Chart {
  std::string title, x_label, y_label;
  std::vector<ChartSeries> series;
  bool log_x = false;
  int width = 720, height = 420;
};

// RGBA pixels (width * height), row-major, top row first.
std::vector<uint32_t> render_chart(const Chart& c);
void write_chart_png(const std::string& path, const Chart& c);

// RGBA pixels (row-major, top row first) to a PNG file, written atomically.
void write_png_atomic(const std::string& path, const uint32_t* rgba, int width, int height);

// A distinct colour per model, the same in every chart of a report.
uint32_t series_color(int i);

}  // namespace ssalab
