// Per-layer metrics: a layer x head heatmap of one statistic of the latest
// analysis (AttnSparsity, dropped mass, entropy, sink mass, KL), the mean over
// heads per layer as bars, and how the mean sparsity / entropy moved over the
// analyses seen so far. Click a cell to show that layer and head in the map.
#include <imgui.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>
#include <optional>

#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

// Each layer's selection locality for the analysis on screen, computed when
// first hovered (a pass over the layer's selections) and kept until the
// analysis changes.
struct LocalityCache {
  const Analysis* of = nullptr;  // with its wall time: a new analysis may reuse a freed one's address
  double of_seconds = -1;
  std::vector<std::optional<SelectionLocality>> layers;
  const SelectionLocality* get(const Analysis& a, int layer) {
    if (of != &a || of_seconds != a.seconds) of = &a, of_seconds = a.seconds, layers.assign(a.layers.size(), {});
    if (a.layers[layer].selected.empty()) return nullptr;
    if (!layers[layer]) layers[layer] = layer_selection_locality(a, layer);
    return &*layers[layer];
  }
};
LocalityCache g_locality;

struct Metric {
  const char* name;
  const char* help;
  bool unit_range;  // fixed [0, 1] colour range
  double (*get)(const HeadStats&);
};
const Metric kMetrics[] = {
    {"AttnSparsity", "full-attention mass inside the query's top-k blocks (higher = more concentrated)", true,
     [](const HeadStats& s) { return s.sparsity; }},
    {"dropped", "1 - AttnSparsity: full-attention mass the selection drops", true,
     [](const HeadStats& s) { return s.dropped; }},
    {"entropy (nats)", "entropy of the full-attention row, natural log", false,
     [](const HeadStats& s) { return s.entropy; }},
    {"sink: token 0", "full-attention mass on the first token", true,
     [](const HeadStats& s) { return s.sink_token; }},
    {"sink: block 0", "full-attention mass on the first block", true,
     [](const HeadStats& s) { return s.sink_block; }},
    {"KL(sparse||full)", "= -log AttnSparsity, mean over rows", false,
     [](const HeadStats& s) { return s.kl_sparse_full; }},
};
int g_metric = 0;

}  // namespace

void DrawLayerMetrics(UiState& ui) {
  if (!ui.show_layers) return;
  PlaceNextWindow("Per-layer metrics");
  if (!ImGui::Begin("Per-layer metrics", &ui.show_layers)) {
    ImGui::End();
    return;
  }
  std::shared_ptr<const Analysis> a = ui.snap ? ui.snap->analysis : nullptr;
  ImGui::SetNextItemWidth(160);
  if (ImGui::BeginCombo("metric", kMetrics[g_metric].name)) {
    for (int i = 0; i < int(std::size(kMetrics)); ++i)
      if (ImGui::Selectable(kMetrics[i].name, i == g_metric)) g_metric = i;
    ImGui::EndCombo();
  }
  ImGui::SameLine();
  ImGui::TextDisabled("(?)");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s.\nHead figures are means over query rows where selection is a real choice (t >= k x block size).", kMetrics[g_metric].help);
  if (!a || a->layers.empty()) {
    ImGui::TextDisabled("no analysis yet");
    ImGui::End();
    return;
  }
  ImGui::SameLine();
  ImGui::TextDisabled("step %lld  T %lld  mean sparsity %.3f  mean entropy %.2f nats", (long long)ui.snap->step,
                      (long long)a->T, a->mean_sparsity(), a->mean_entropy());

  const Metric& m = kMetrics[g_metric];
  const int L = int(a->layers.size()), H = a->num_heads;
  std::vector<double> vals(size_t(L) * H, NAN);
  double vmin = INFINITY, vmax = -INFINITY;
  for (int l = 0; l < L; ++l)
    for (int h = 0; h < H && h < int(a->layers[l].heads.size()); ++h) {
      double v = m.get(a->layers[l].heads[h]);
      vals[size_t(l) * H + h] = v;
      if (std::isfinite(v)) {
        vmin = std::min(vmin, v);
        vmax = std::max(vmax, v);
      }
    }
  Range r = m.unit_range ? Range{0, 1} : Range{float(std::min(0.0, vmin)), float(std::max(vmax, 1e-9))};

  // Heatmap: rows = layers, columns = heads; bars at the right = mean over heads.
  ImVec2 avail = ImGui::GetContentRegionAvail();
  const float label_w = 56, bar_w = std::min(160.0f, avail.x * 0.25f);
  const float trend_h = std::min(110.0f, avail.y * 0.3f);
  const float cell_h = std::clamp((avail.y - trend_h - 3 * ImGui::GetTextLineHeightWithSpacing()) / L, 6.0f, 40.0f);
  const float cell_w = std::clamp((avail.x - label_w - bar_w - 16) / H, 4.0f, 80.0f);
  ImVec2 p0 = ImGui::GetCursorScreenPos();
  ImDrawList* dl = ImGui::GetWindowDrawList();
  ImGui::InvisibleButton("heat", ImVec2(label_w + cell_w * H + bar_w + 16, cell_h * L + ImGui::GetTextLineHeight()));
  const bool hovered = ImGui::IsItemHovered();
  const bool clicked = ImGui::IsItemClicked();
  const ImVec2 mouse = ImGui::GetIO().MousePos;
  const float gx = p0.x + label_w, gy = p0.y + ImGui::GetTextLineHeight();
  char buf[32];
  for (int h = 0; h < H; h += std::max(1, int(24 / cell_w))) {
    std::snprintf(buf, sizeof buf, "h%d", h);
    dl->AddText(ImVec2(gx + h * cell_w + 1, p0.y), IM_COL32(170, 170, 170, 255), buf);
  }
  int hl = -1, hh = -1;
  for (int l = 0; l < L; ++l) {
    std::snprintf(buf, sizeof buf, "L%d", l);
    dl->AddText(ImVec2(p0.x, gy + l * cell_h + 0.5f * (cell_h - ImGui::GetTextLineHeight())),
                l == ui.layer ? IM_COL32(255, 255, 255, 255) : IM_COL32(170, 170, 170, 255), buf);
    double sum = 0;
    int cnt = 0;
    for (int h = 0; h < H; ++h) {
      double v = vals[size_t(l) * H + h];
      ImVec2 c0(gx + h * cell_w, gy + l * cell_h), c1(c0.x + cell_w - 1, c0.y + cell_h - 1);
      float t = normalize(float(v), Scale::Linear, r);
      dl->AddRectFilled(c0, c1, std::isnan(t) ? kMissingRgba : viridis_rgba()[size_t(std::lround(t * 255))]);
      if (cell_w > 34 && cell_h > ImGui::GetTextLineHeight()) {
        std::snprintf(buf, sizeof buf, "%.2f", v);
        dl->AddText(ImVec2(c0.x + 3, c0.y + 0.5f * (cell_h - ImGui::GetTextLineHeight())),
                    t > 0.6f ? IM_COL32(0, 0, 0, 255) : IM_COL32(255, 255, 255, 255), buf);
      }
      if (l == ui.layer && (h == ui.head || ui.mean_heads)) dl->AddRect(c0, c1, IM_COL32(255, 60, 120, 255), 0, 0, 2);
      if (hovered && mouse.x >= c0.x && mouse.x < c1.x + 1 && mouse.y >= c0.y && mouse.y < c1.y + 1) {
        hl = l;
        hh = h;
      }
      if (std::isfinite(v)) {
        sum += v;
        ++cnt;
      }
    }
    // mean over heads as a bar
    double mean = cnt ? sum / cnt : 0;
    float bx = gx + H * cell_w + 12;
    float frac = std::clamp(float((mean - r.lo) / (r.hi - r.lo)), 0.0f, 1.0f);
    dl->AddRectFilled(ImVec2(bx, gy + l * cell_h + 1), ImVec2(bx + frac * (bar_w - 44), gy + (l + 1) * cell_h - 2),
                      IM_COL32(90, 160, 200, 255));
    std::snprintf(buf, sizeof buf, "%.3f", mean);
    dl->AddText(ImVec2(bx + frac * (bar_w - 44) + 3, gy + l * cell_h + 0.5f * (cell_h - ImGui::GetTextLineHeight())),
                IM_COL32(220, 220, 220, 255), buf);
  }
  dl->AddText(ImVec2(gx + H * cell_w + 12, p0.y), IM_COL32(170, 170, 170, 255), "mean over heads");
  if (hl >= 0) {
    const HeadStats& s = a->layers[hl].heads[hh];
    ImGui::BeginTooltip();
    ImGui::Text("layer %d head %d", hl, hh);
    ImGui::Text("AttnSparsity %.4f  dropped %.4f", s.sparsity, s.dropped);
    ImGui::Text("entropy %.3f nats", s.entropy);
    ImGui::Text("sink token %.4f  sink block %.4f", s.sink_token, s.sink_block);
    ImGui::Text("KL(sparse||full) %.4f", s.kl_sparse_full);
    if (const SelectionLocality* loc = g_locality.get(*a, hl))
      ImGui::Text("layer %d: neighbours share %.0f%% of their blocks;\n%d queries select %.1f distinct blocks",
                  hl, 100 * loc->neighbour_overlap, loc->tile, loc->tile_union);
    ImGui::TextDisabled("click: show in the attention map");
    ImGui::EndTooltip();
    if (clicked) {
      ui.layer = hl;
      ui.head = hh;
      ui.mean_heads = false;
    }
  }

  // Trend over the analyses seen in this session (same text length).
  if (ui.analysis_history.size() >= 1) {
    std::vector<MiniSeries> s(2);
    s[0] = {"mean AttnSparsity", IM_COL32(255, 200, 60, 255), {}, {}};
    s[1] = {"mean entropy (nats)", IM_COL32(120, 200, 255, 255), {}, {}};
    for (const auto& p : ui.analysis_history) {
      s[0].x.push_back(double(p.step));
      s[0].y.push_back(p.sparsity);
      s[1].x.push_back(double(p.step));
      s[1].y.push_back(p.entropy);
    }
    float w = 0.5f * ImGui::GetContentRegionAvail().x - 4;
    DrawMiniChart("trend_sparsity", {s[0]}, w, trend_h);
    ImGui::SameLine();
    DrawMiniChart("trend_entropy", {s[1]}, w, trend_h);
  }
  ImGui::End();
}

}  // namespace ssalab::views
