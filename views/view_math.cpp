#include "views/view_math.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

#include "engine/tokenizer/unicode.h"

namespace ssalab::views {

// ---------------------------------------------------------------- 1. colormap
Rgb viridis(float t) {
  // Horner form of c0 + c1 t + ... + c6 t^6 per channel: a least-squares fit
  // of matplotlib's published viridis table (which is itself sampled from a
  // spline in CAM02-UCS with monotone lightness).
  static const double c[7][3] = {
      {0.2777273272234177, 0.005407344544966578, 0.3340998053353061},
      {0.1050930431085774, 1.404613529898575, 1.384590162594685},
      {-0.3308618287255563, 0.214847559468213, 0.09509516302823659},
      {-4.634230498983486, -5.799100973351585, -19.33244095627987},
      {6.228269936347081, 14.17993336680509, 56.69055260068105},
      {4.776384997670288, -13.74514537774601, -65.35303263337234},
      {-5.435455855934631, 4.645852612178535, 26.3124352495832},
  };
  double x = std::isfinite(t) ? std::clamp(double(t), 0.0, 1.0) : 0.0;
  double out[3];
  for (int ch = 0; ch < 3; ++ch) {
    double acc = c[6][ch];
    for (int i = 5; i >= 0; --i) acc = acc * x + c[i][ch];
    out[ch] = std::clamp(acc, 0.0, 1.0);
  }
  return {float(out[0]), float(out[1]), float(out[2])};
}

uint32_t pack_rgba(Rgb c, float alpha) {
  auto byte = [](float f) { return uint32_t(std::lround(std::clamp(f, 0.0f, 1.0f) * 255.0f)); };
  return byte(c.r) | (byte(c.g) << 8) | (byte(c.b) << 16) | (byte(alpha) << 24);
}

const std::array<uint32_t, 256>& viridis_rgba() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = pack_rgba(viridis(i / 255.0f));
    return t;
  }();
  return table;
}

float luminance(Rgb c) {
  auto lin = [](float u) { return u <= 0.04045f ? u / 12.92f : std::pow((u + 0.055f) / 1.055f, 2.4f); };
  return 0.2126f * lin(c.r) + 0.7152f * lin(c.g) + 0.0722f * lin(c.b);
}

// ---------------------------------------------------------------- 2. scaling
Range auto_range(const float* v, size_t n, Scale s, float log_floor) {
  float mn = std::numeric_limits<float>::infinity(), mx = -mn, min_pos = mn;
  for (size_t i = 0; i < n; ++i) {
    float x = v[i];
    if (!std::isfinite(x)) continue;
    mn = std::min(mn, x);
    mx = std::max(mx, x);
    if (x > 0) min_pos = std::min(min_pos, x);
  }
  if (!(mx >= mn)) return {0, 1};  // no finite value
  if (s == Scale::Linear) {
    Range r{mn >= 0 ? 0.0f : mn, mx};
    if (r.hi <= r.lo) r.hi = r.lo + 1e-12f;
    return r;
  }
  if (!(mx > 0)) return {1e-6f, 1.0f};  // nothing positive to show on a log scale
  Range r{std::max(min_pos, mx * log_floor), mx};
  if (r.hi <= r.lo) r.lo = r.hi * 0.5f;
  return r;
}

float normalize(float v, Scale s, Range r) {
  if (std::isnan(v)) return v;
  float t;
  if (s == Scale::Linear) {
    t = (v - r.lo) / (r.hi - r.lo);
  } else {
    if (v <= 0) return 0.0f;
    t = (std::log(v) - std::log(r.lo)) / (std::log(r.hi) - std::log(r.lo));
  }
  return std::clamp(t, 0.0f, 1.0f);
}

void colorize(const float* v, size_t n, Scale s, Range r, uint32_t* rgba_out) {
  const auto& lut = viridis_rgba();
  for (size_t i = 0; i < n; ++i) {
    float t = normalize(v[i], s, r);
    rgba_out[i] = std::isnan(t) ? kMissingRgba : lut[size_t(std::lround(t * 255.0f))];
  }
}

// ---------------------------------------------------------------- 3. pooling
Grid pool_map(const Grid& src, int cell, Pool mode) {
  cell = std::max(cell, 1);
  Grid out;
  out.rows = (src.rows + cell - 1) / cell;
  out.cols = (src.cols + cell - 1) / cell;
  out.v.assign(size_t(out.rows) * out.cols, 0.0f);
  std::vector<double> acc(out.cols);
  for (int i = 0; i < out.rows; ++i) {
    int r0 = i * cell, r1 = std::min(src.rows, r0 + cell);
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int r = r0; r < r1; ++r) {
      const float* row = src.v.data() + size_t(r) * src.cols;
      for (int c = 0; c < src.cols; ++c) acc[c / cell] += row[c];
    }
    for (int j = 0; j < out.cols; ++j) {
      int c0 = j * cell, c1 = std::min(src.cols, c0 + cell);
      double div = 1.0;
      if (mode == Pool::Mean) div = double(r1 - r0) * (c1 - c0);
      if (mode == Pool::QueryMeanKeySum) div = double(r1 - r0);
      out.v[size_t(i) * out.cols + j] = float(acc[j] / div);
    }
  }
  return out;
}

Grid dropped_token_map(const Grid& full, const int32_t* selected, int K, int block_size) {
  Grid out = full;
  int T = full.rows;
  int nblocks = (full.cols + block_size - 1) / block_size;
  std::vector<char> keep(nblocks);
  for (int t = 0; t < T; ++t) {
    std::fill(keep.begin(), keep.end(), 0);
    for (int k = 0; k < K; ++k) {
      int32_t b = selected[size_t(t) * K + k];
      if (b >= 0 && b < nblocks) keep[b] = 1;
    }
    float* row = out.v.data() + size_t(t) * out.cols;
    for (int s = 0; s < out.cols; ++s)
      if (keep[s / block_size]) row[s] = 0.0f;
  }
  return out;
}

// ---------------------------------------------------------------- 4. curves
Series finite_points(const std::vector<double>& x, const std::vector<double>& y) {
  Series s;
  size_t n = std::min(x.size(), y.size());
  for (size_t i = 0; i < n; ++i)
    if (std::isfinite(y[i]) && std::isfinite(x[i])) {
      s.x.push_back(x[i]);
      s.y.push_back(y[i]);
    }
  return s;
}

std::vector<double> ema(const std::vector<double>& y, double weight) {
  std::vector<double> out(y.size());
  weight = std::clamp(weight, 0.0, 0.9999);
  double acc = 0, debias = 1;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) {
      out[i] = y[i];
      continue;
    }
    acc = weight * acc + (1 - weight) * y[i];
    debias *= weight;
    out[i] = acc / (1 - debias);
  }
  return out;
}

Envelope downsample(const Series& s, double x0, double x1, int max_points) {
  Envelope e;
  auto first = std::lower_bound(s.x.begin(), s.x.end(), x0);
  auto last = std::upper_bound(s.x.begin(), s.x.end(), x1);
  size_t i0 = size_t(first - s.x.begin()), i1 = size_t(last - s.x.begin());
  if (i1 <= i0) return e;
  auto push = [&e](double x, double y, double lo, double hi) {
    e.x.push_back(x);
    e.y.push_back(y);
    e.lo.push_back(lo);
    e.hi.push_back(hi);
  };
  size_t n = i1 - i0;
  max_points = std::max(max_points, 1);
  if (n < size_t(2 * max_points)) {
    for (size_t i = i0; i < i1; ++i) push(s.x[i], s.y[i], s.y[i], s.y[i]);
    return e;
  }
  push(s.x[i0], s.y[i0], s.y[i0], s.y[i0]);
  double xa = s.x[i0], xb = s.x[i1 - 1];
  double width = (xb - xa) / max_points;
  size_t i = i0 + 1;
  for (int b = 0; b < max_points && i < i1 - 1; ++b) {
    double edge = b + 1 == max_points ? std::numeric_limits<double>::infinity() : xa + width * (b + 1);
    double sx = 0, sy = 0, lo = std::numeric_limits<double>::infinity(), hi = -lo;
    size_t cnt = 0;
    for (; i < i1 - 1 && s.x[i] < edge; ++i, ++cnt) {
      sx += s.x[i];
      sy += s.y[i];
      lo = std::min(lo, s.y[i]);
      hi = std::max(hi, s.y[i]);
    }
    if (cnt) push(sx / cnt, sy / cnt, lo, hi);
  }
  push(s.x[i1 - 1], s.y[i1 - 1], s.y[i1 - 1], s.y[i1 - 1]);
  return e;
}

// ---------------------------------------------------------------- 5. map transform
MapView clamp_view(MapView v, float max_zoom) {
  v.zoom = std::clamp(std::isfinite(v.zoom) ? v.zoom : 1.0f, 1.0f, std::max(1.0f, max_zoom));
  float span = 1.0f / v.zoom;
  v.u0 = std::clamp(std::isfinite(v.u0) ? v.u0 : 0.0f, 0.0f, 1.0f - span);
  v.v0 = std::clamp(std::isfinite(v.v0) ? v.v0 : 0.0f, 0.0f, 1.0f - span);
  return v;
}

MapHit hit_test(const MapView& v, const ScreenRect& r, int n_cells, float px, float py) {
  MapHit h;
  if (!r.contains(px, py) || n_cells <= 0) return h;
  double u = v.u0 + double(px - r.x) / r.w / v.zoom;
  double vv = v.v0 + double(py - r.y) / r.h / v.zoom;
  int col = int(std::floor(u * n_cells)), row = int(std::floor(vv * n_cells));
  if (col < 0 || row < 0 || col >= n_cells || row >= n_cells) return h;
  h.inside = true;
  h.row = row;
  h.col = col;
  return h;
}

void map_to_screen(const MapView& v, const ScreenRect& r, float u, float vv, float* px, float* py) {
  *px = r.x + (u - v.u0) * v.zoom * r.w;
  *py = r.y + (vv - v.v0) * v.zoom * r.h;
}

MapView zoom_at(const MapView& v, const ScreenRect& r, float px, float py, float factor, float max_zoom) {
  float fx = (px - r.x) / r.w, fy = (py - r.y) / r.h;
  float u = v.u0 + fx / v.zoom, vv = v.v0 + fy / v.zoom;
  MapView out = v;
  out.zoom = std::clamp(v.zoom * factor, 1.0f, std::max(1.0f, max_zoom));
  out.u0 = u - fx / out.zoom;
  out.v0 = vv - fy / out.zoom;
  return clamp_view(out, max_zoom);
}

MapView pan_by(const MapView& v, const ScreenRect& r, float dx, float dy, float max_zoom) {
  MapView out = v;
  out.u0 -= dx / r.w / v.zoom;
  out.v0 -= dy / r.h / v.zoom;
  return clamp_view(out, max_zoom);
}

TokenRange cell_tokens(int cell, int cell_size, int64_t T) {
  TokenRange r;
  r.first = std::min<int64_t>(int64_t(cell) * cell_size, T);
  r.last = std::min<int64_t>(r.first + cell_size, T);
  return r;
}

// ---------------------------------------------------------------- 6. statistics
double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::sort(v.begin(), v.end());
  double rank = std::ceil(std::clamp(p, 0.0, 100.0) / 100.0 * double(v.size()));
  size_t idx = rank < 1 ? 0 : size_t(rank) - 1;
  return v[std::min(idx, v.size() - 1)];
}

// ---------------------------------------------------------------- 7. text
namespace {

// Byte-level BPE (GPT-2, Llama 3, Qwen) stores each byte of a token as one
// printable character: bytes that print as themselves (33-126, 161-172,
// 174-255) keep their code point, the other 68 take U+0100.. in byte order.
// Returns the bytes when every character of `piece` is in that alphabet and
// the bytes are valid UTF-8 text; else nullopt.
std::optional<std::string> byte_level_text(const std::string& piece) {
  auto prints_as_itself = [](unsigned b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174; };
  static const std::array<int, 68> kShifted = [&] {
    std::array<int, 68> bytes{};
    int n = 0;
    for (unsigned b = 0; b < 256; ++b)
      if (!prints_as_itself(b)) bytes[size_t(n++)] = int(b);
    return bytes;
  }();
  std::string bytes;
  for (size_t i = 0; i < piece.size();) {
    const unsigned char c = static_cast<unsigned char>(piece[i]);
    unsigned cp;
    if (c < 0x80) {
      cp = c, i += 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < piece.size()) {
      cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(piece[i + 1]) & 0x3Fu), i += 2;
    } else {
      return std::nullopt;  // three-byte characters and up are outside the alphabet
    }
    if (cp < 256 && prints_as_itself(cp)) bytes += char(cp);
    else if (cp >= 256 && cp < 256 + 68) bytes += char(kShifted[cp - 256]);
    else return std::nullopt;
  }
  if (tokenizer::unicode::find_invalid(bytes) != std::string::npos) return std::nullopt;
  return bytes;
}

}  // namespace

std::string display_piece(const std::string& piece_in) {
  static const std::string kMarker = "\xE2\x96\x81";  // U+2581, sentencepiece's word boundary
  const std::string piece = byte_level_text(piece_in).value_or(piece_in);
  std::string out;
  out.reserve(piece.size());
  if (piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>' &&
      std::isxdigit(static_cast<unsigned char>(piece[3])) && std::isxdigit(static_cast<unsigned char>(piece[4]))) {
    int byte = std::stoi(piece.substr(3, 2), nullptr, 16);
    if (byte == '\n') return "\\n";
    if (byte == '\t') return "\\t";
    if (byte == '\r') return "\\r";
    return piece;
  }
  for (size_t i = 0; i < piece.size(); ++i) {
    if (piece.compare(i, kMarker.size(), kMarker) == 0) {
      out += ' ';
      i += kMarker.size() - 1;
      continue;
    }
    unsigned char ch = static_cast<unsigned char>(piece[i]);
    if (ch == '\n') out += "\\n";
    else if (ch == '\t') out += "\\t";
    else if (ch == '\r') out += "\\r";
    else if (ch < 0x20 || ch == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", ch);
      out += buf;
    } else {
      out += char(ch);
    }
  }
  return out;
}

}  // namespace ssalab::views
