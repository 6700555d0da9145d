// Training curves from Snapshot::history: CE of the full and sparse streams,
// total loss, the two SSA alignment losses, validation perplexity, learning
// rate, gradient norm and throughput.
//
// Each curve is smoothed (debiased EMA) at full resolution, then both the raw
// and the smoothed points are reduced to about one point per two pixels with
// a min/max envelope (views/view_math.h: downsample), so spikes stay visible
// and the first and last points are always drawn. The raw trace stays on
// screen under the smoothed one. All charts share one step range: wheel zooms
// at the cursor, drag pans, double click (or "fit") follows training again.
#include <imgui.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

struct CurveDef {
  const char* name;
  double MetricPoint::*field;
  ImU32 color;
};
struct ChartDef {
  const char* title;
  std::vector<CurveDef> curves;
  bool log_y;
};

const ImU32 kBlue = IM_COL32(90, 170, 255, 255), kOrange = IM_COL32(255, 150, 50, 255),
            kGreen = IM_COL32(110, 210, 120, 255), kPink = IM_COL32(255, 90, 150, 255),
            kGrey = IM_COL32(200, 200, 200, 255);

std::vector<ChartDef>& charts() {
  static std::vector<ChartDef> c = {
      {"cross-entropy", {{"full stream", &MetricPoint::ce_full, kBlue}, {"sparse stream", &MetricPoint::ce_sparse, kOrange}}, false},
      {"total loss (CE + alpha * alignment)", {{"loss", &MetricPoint::loss, kGrey}}, false},
      {"alignment (unweighted)", {{"sparsity", &MetricPoint::sparsity_loss, kGreen}, {"commitment", &MetricPoint::commitment_loss, kPink}}, true},
      {"val perplexity", {{"full inference", &MetricPoint::val_ppl_full, kBlue}, {"sparse inference", &MetricPoint::val_ppl_sparse, kOrange}}, true},
      {"learning rate", {{"lr", &MetricPoint::lr, kGreen}}, false},
      {"grad norm (pre-clip)", {{"grad norm", &MetricPoint::grad_norm, kPink}}, true},
      {"tokens / s", {{"tokens/s", &MetricPoint::tokens_per_s, kGrey}}, false},
  };
  return c;
}

struct CurvesState {
  float smoothing = 0.6f;
  bool show_raw = true, show_envelope = true;
  bool follow = true;  // x range = all steps
  double x0 = 0, x1 = 1;
  int columns = 2;
} g_curves;

ImU32 with_alpha(ImU32 c, int alpha) { return (c & 0x00FFFFFFu) | (ImU32(alpha) << 24); }

void draw_chart(ChartDef& def, const std::vector<MetricPoint>& hist, double x0, double x1, float width, float height) {
  ImGui::PushID(def.title);
  ImVec2 p0 = ImGui::GetCursorScreenPos();
  ImGui::InvisibleButton("chart", ImVec2(width, height));
  const bool hovered = ImGui::IsItemHovered(), active = ImGui::IsItemActive();
  ImDrawList* dl = ImGui::GetWindowDrawList();
  const float pad_l = 58, pad_b = 16, pad_t = 18;
  ImVec2 a(p0.x + pad_l, p0.y + pad_t), b(p0.x + width - 6, p0.y + height - pad_b);
  dl->AddRectFilled(p0, ImVec2(p0.x + width, p0.y + height), IM_COL32(24, 24, 28, 255));
  dl->AddRectFilled(a, b, IM_COL32(16, 16, 19, 255));
  ImGuiIO& io = ImGui::GetIO();
  if (x1 <= x0) x1 = x0 + 1;

  // Data: finite points -> EMA at full resolution -> downsample both.
  const int max_pts = std::max(8, int((b.x - a.x) / 2));
  struct Prepared {
    const CurveDef* def;
    Series raw, smooth;
    Envelope env, env_smooth;
  };
  std::vector<Prepared> prep;
  std::vector<double> xs(hist.size());
  for (size_t i = 0; i < hist.size(); ++i) xs[i] = double(hist[i].step);
  double ylo = INFINITY, yhi = -INFINITY;
  int hidden = 0;  // values a log axis cannot show
  for (const CurveDef& c : def.curves) {
    std::vector<double> ys(hist.size());
    for (size_t i = 0; i < hist.size(); ++i) ys[i] = hist[i].*(c.field);
    Prepared p{&c, finite_points(xs, ys), {}, {}, {}};
    if (def.log_y) {  // keep positive values only on a log axis
      Series pos;
      for (size_t i = 0; i < p.raw.x.size(); ++i)
        if (p.raw.y[i] > 0) {
          pos.x.push_back(p.raw.x[i]);
          pos.y.push_back(std::log10(p.raw.y[i]));
        } else {
          ++hidden;
        }
      p.raw = pos;
    }
    p.smooth.x = p.raw.x;
    p.smooth.y = ema(p.raw.y, g_curves.smoothing);
    p.env = downsample(p.raw, x0, x1, max_pts);
    p.env_smooth = downsample(p.smooth, x0, x1, max_pts);
    const Envelope& e = g_curves.show_raw ? p.env : p.env_smooth;
    for (size_t i = 0; i < e.size(); ++i) {
      ylo = std::min(ylo, g_curves.show_envelope || !g_curves.show_raw ? e.lo[i] : e.y[i]);
      yhi = std::max(yhi, g_curves.show_envelope || !g_curves.show_raw ? e.hi[i] : e.y[i]);
    }
    prep.push_back(std::move(p));
  }
  if (!(yhi >= ylo)) {
    ylo = 0;
    yhi = 1;
  }
  if (yhi - ylo < 1e-12) {
    ylo -= 0.5 * std::max(std::abs(ylo) * 0.1, 1e-6);
    yhi += 0.5 * std::max(std::abs(yhi) * 0.1, 1e-6);
  }
  const double ypad = 0.05 * (yhi - ylo);
  ylo -= ypad;
  yhi += ypad;
  auto X = [&](double x) { return float(a.x + (x - x0) / (x1 - x0) * (b.x - a.x)); };
  auto Y = [&](double y) { return float(b.y - (y - ylo) / (yhi - ylo) * (b.y - a.y)); };

  dl->PushClipRect(a, b, true);
  for (size_t ci = 0; ci < prep.size(); ++ci) {
    const Prepared& p = prep[ci];
    // earlier curves drawn thicker, so equal curves (the two alignment losses
    // have the same value; only their gradients differ) both stay visible
    const float thick = 2.0f + 2.0f * float(prep.size() - 1 - ci);
    const ImU32 c = p.def->color;
    if (g_curves.show_raw && g_curves.show_envelope)
      for (size_t i = 0; i + 1 < p.env.size(); ++i) {
        if (p.env.hi[i] == p.env.lo[i] && p.env.hi[i + 1] == p.env.lo[i + 1]) continue;
        ImVec2 q[4] = {ImVec2(X(p.env.x[i]), Y(p.env.hi[i])), ImVec2(X(p.env.x[i + 1]), Y(p.env.hi[i + 1])),
                       ImVec2(X(p.env.x[i + 1]), Y(p.env.lo[i + 1])), ImVec2(X(p.env.x[i]), Y(p.env.lo[i]))};
        dl->AddConvexPolyFilled(q, 4, with_alpha(c, 45));
      }
    std::vector<ImVec2> pts;
    if (g_curves.show_raw) {
      pts.clear();
      for (size_t i = 0; i < p.env.size(); ++i) pts.emplace_back(X(p.env.x[i]), Y(p.env.y[i]));
      if (pts.size() == 1) dl->AddCircleFilled(pts[0], 2, with_alpha(c, 110));
      if (pts.size() > 1) dl->AddPolyline(pts.data(), int(pts.size()), with_alpha(c, 110), 0, 1.0f);
    }
    pts.clear();
    for (size_t i = 0; i < p.env_smooth.size(); ++i) pts.emplace_back(X(p.env_smooth.x[i]), Y(p.env_smooth.y[i]));
    if (pts.size() == 1) dl->AddCircleFilled(pts[0], 1.5f + thick / 2, c);
    if (pts.size() > 1) dl->AddPolyline(pts.data(), int(pts.size()), c, 0, thick);
  }
  dl->PopClipRect();

  // Labels: title (+ legend when it fits on the title line, else inside the
  // plot's top right corner), y extent, x extent.
  char buf[64];
  auto fmt_y = [&](double y) {  // short labels: they share the left margin with nothing else
    double v = def.log_y ? std::pow(10.0, y) : y, m = std::abs(v);
    if (m >= 1000 && m < 1e6) std::snprintf(buf, sizeof buf, "%.0f", v);
    else if (m != 0 && (m < 1e-3 || m >= 1e6)) std::snprintf(buf, sizeof buf, "%.1e", v);
    else std::snprintf(buf, sizeof buf, "%.3g", v);
    return buf;
  };
  const ImU32 text = IM_COL32(190, 190, 190, 255);
  std::string title = std::string(def.title) + (def.log_y ? " (log)" : "");
  dl->AddText(ImVec2(p0.x + 4, p0.y + 2), IM_COL32(235, 235, 235, 255), title.c_str());
  if (def.curves.size() > 1) {
    float legend_w = 0;
    for (const Prepared& p : prep) legend_w += ImGui::CalcTextSize(p.def->name).x + 24;
    const float title_end = p0.x + 4 + ImGui::CalcTextSize(title.c_str()).x + 12;
    const bool inline_legend = title_end + legend_w < p0.x + width;
    float tx = inline_legend ? title_end : b.x - legend_w - 2;
    const float ty = inline_legend ? p0.y + 2 : a.y + 2;
    if (!inline_legend)
      dl->AddRectFilled(ImVec2(tx - 4, ty - 1), ImVec2(b.x, ty + ImGui::GetTextLineHeight() + 1), IM_COL32(16, 16, 19, 220));
    for (const Prepared& p : prep) {
      dl->AddRectFilled(ImVec2(tx, ty + 5), ImVec2(tx + 10, ty + 9), p.def->color);
      dl->AddText(ImVec2(tx + 13, ty), text, p.def->name);
      tx += ImGui::CalcTextSize(p.def->name).x + 24;
    }
  }
  if (hidden > 0) {
    std::snprintf(buf, sizeof buf, "%d values <= 0 not shown on the log axis", hidden);
    dl->AddText(ImVec2(a.x + 4, b.y - ImGui::GetTextLineHeight() - 1), IM_COL32(150, 150, 150, 255), buf);
  }
  dl->AddText(ImVec2(p0.x + 2, a.y), text, fmt_y(yhi - ypad));
  dl->AddText(ImVec2(p0.x + 2, b.y - ImGui::GetTextLineHeight()), text, fmt_y(ylo + ypad));
  std::snprintf(buf, sizeof buf, "%.0f", x0);
  dl->AddText(ImVec2(a.x, b.y + 1), text, buf);
  std::snprintf(buf, sizeof buf, "step %.0f", x1);
  dl->AddText(ImVec2(b.x - ImGui::CalcTextSize(buf).x, b.y + 1), text, buf);
  bool any = false;
  for (const Prepared& p : prep) any |= p.raw.x.size() > 0;
  if (!any) dl->AddText(ImVec2(a.x + 8, a.y + 8), IM_COL32(140, 140, 140, 255), "no data yet");

  // Interaction and hover readout.
  if (hovered && io.MousePos.x >= a.x && io.MousePos.x <= b.x) {
    double xm = x0 + (io.MousePos.x - a.x) / (b.x - a.x) * (x1 - x0);
    if (io.MouseWheel != 0) {
      double f = std::pow(0.8, io.MouseWheel);
      g_curves.x0 = xm - (xm - x0) * f;
      g_curves.x1 = xm + (x1 - xm) * f;
      g_curves.follow = false;
    }
    if (ImGui::IsMouseDoubleClicked(ImGuiMouseButton_Left)) g_curves.follow = true;
    dl->AddLine(ImVec2(io.MousePos.x, a.y), ImVec2(io.MousePos.x, b.y), IM_COL32(255, 255, 255, 60));
    ImGui::BeginTooltip();
    bool header = false;
    for (const Prepared& p : prep) {
      if (p.raw.x.empty()) continue;
      size_t i = size_t(std::lower_bound(p.raw.x.begin(), p.raw.x.end(), xm) - p.raw.x.begin());
      if (i == p.raw.x.size() || (i > 0 && xm - p.raw.x[i - 1] < p.raw.x[i] - xm)) i = i ? i - 1 : 0;
      double rv = def.log_y ? std::pow(10.0, p.raw.y[i]) : p.raw.y[i];
      double sv = def.log_y ? std::pow(10.0, p.smooth.y[i]) : p.smooth.y[i];
      if (!header) {
        ImGui::Text("step %.0f", p.raw.x[i]);
        header = true;
      }
      ImGui::TextColored(ImGui::ColorConvertU32ToFloat4(p.def->color), "%s: %.5g (smoothed %.5g)", p.def->name, rv, sv);
    }
    if (!header) ImGui::TextDisabled("no data");
    ImGui::EndTooltip();
  }
  if (active && ImGui::IsMouseDragging(ImGuiMouseButton_Left, 2.0f)) {
    double dx = -io.MouseDelta.x / (b.x - a.x) * (x1 - x0);
    g_curves.x0 = x0 + dx;
    g_curves.x1 = x1 + dx;
    g_curves.follow = false;
  }
  ImGui::PopID();
}

}  // namespace

void DrawMiniChart(const char* id, const std::vector<MiniSeries>& series, float width, float height) {
  ImGui::PushID(id);
  ImVec2 p0 = ImGui::GetCursorScreenPos();
  ImGui::Dummy(ImVec2(width, height));
  ImDrawList* dl = ImGui::GetWindowDrawList();
  dl->AddRectFilled(p0, ImVec2(p0.x + width, p0.y + height), IM_COL32(20, 20, 24, 255));
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]);
      y1 = std::max(y1, s.y[i]);
    }
  if (!(x1 >= x0)) {
    ImGui::PopID();
    return;
  }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 - y0 < 1e-9) {
    y0 -= 0.05;
    y1 += 0.05;
  }
  const float pad_t = 16, pad_b = 4, pad_l = 4;
  auto X = [&](double x) { return float(p0.x + pad_l + (x - x0) / (x1 - x0) * (width - 2 * pad_l)); };
  auto Y = [&](double y) { return float(p0.y + height - pad_b - (y - y0) / (y1 - y0) * (height - pad_t - pad_b)); };
  char buf[96];
  for (const auto& s : series) {
    std::vector<ImVec2> pts;
    for (size_t i = 0; i < s.x.size(); ++i)
      if (std::isfinite(s.y[i])) pts.emplace_back(X(s.x[i]), Y(s.y[i]));
    if (pts.size() > 1) dl->AddPolyline(pts.data(), int(pts.size()), s.color, 0, 2.0f);
    for (const ImVec2& p : pts) dl->AddCircleFilled(p, 2.0f, s.color);
    std::snprintf(buf, sizeof buf, "%s  %.3f .. %.3f", s.name, y0, y1);
    dl->AddText(ImVec2(p0.x + 4, p0.y + 1), s.color, buf);
  }
  ImGui::PopID();
}

void DrawCurves(UiState& ui) {
  if (!ui.show_curves) return;
  PlaceNextWindow("Curves");
  if (!ImGui::Begin("Curves", &ui.show_curves, ImGuiWindowFlags_NoScrollWithMouse | ImGuiWindowFlags_NoScrollbar)) {
    ImGui::End();
    return;
  }
  ImVec2 wp = ImGui::GetWindowPos(), ws = ImGui::GetWindowSize();
  ui.curves_rect = ScreenRect{wp.x, wp.y, ws.x, ws.y};
  static const std::vector<MetricPoint> kEmpty;
  const std::vector<MetricPoint>& hist = ui.snap ? ui.snap->history : kEmpty;

  ImGui::SetNextItemWidth(120);
  ImGui::SliderFloat("smoothing", &g_curves.smoothing, 0.0f, 0.99f, "%.2f");
  ImGui::SameLine();
  ImGui::Checkbox("raw", &g_curves.show_raw);
  ImGui::SameLine();
  ImGui::BeginDisabled(!g_curves.show_raw);
  ImGui::Checkbox("min/max", &g_curves.show_envelope);
  ImGui::EndDisabled();
  ImGui::SameLine();
  double first = hist.empty() ? 0.0 : double(hist.front().step), last = hist.empty() ? 1.0 : double(hist.back().step);
  if (last <= first) last = first + 1;
  if (g_curves.follow) {
    g_curves.x0 = first;
    g_curves.x1 = last;
  }
  float range[2] = {float(g_curves.x0), float(g_curves.x1)};
  ImGui::SetNextItemWidth(170);
  if (ImGui::DragFloatRange2("steps", &range[0], &range[1], std::max(1.0f, float(last - first) / 200), float(first),
                             float(last), "%.0f", "%.0f")) {
    g_curves.x0 = range[0];
    g_curves.x1 = std::max(range[1], range[0] + 1);
    g_curves.follow = false;
  }
  ImGui::SameLine();
  if (ImGui::Button("fit")) g_curves.follow = true;
  ImGui::SameLine();
  ImGui::TextDisabled("%zu points", hist.size());

  const int cols = ImGui::GetContentRegionAvail().x > 700 ? 3 : 2;
  const int n = int(charts().size());
  const int rows = (n + cols - 1) / cols;
  const float spacing = ImGui::GetStyle().ItemSpacing.x;
  const float w = (ImGui::GetContentRegionAvail().x - spacing * (cols - 1)) / cols;
  const float h = std::max(80.0f, (ImGui::GetContentRegionAvail().y - ImGui::GetStyle().ItemSpacing.y * (rows - 1)) / rows);
  for (int i = 0; i < n; ++i) {
    if (i % cols) ImGui::SameLine();
    draw_chart(charts()[size_t(i)], hist, g_curves.x0, g_curves.x1, w, h);
  }
  ImGui::End();
}

}  // namespace ssalab::views
