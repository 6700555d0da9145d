// Selected blocks of one query (the pinned one, else the hovered one, else the
// last token): the group-summed selection score of every past block, the k
// blocks picked, the forced local block, and the full-attention mass of this
// head on each block, from query_detail().
#include <imgui.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "engine/util/background.h"
#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

// Which query's detail: query_detail() runs LibTorch ops (a matmul over the
// whole context), so it runs on a background worker, never in a frame.
struct DetailKey {
  const Analysis* analysis = nullptr;
  int layer = -1, head = -1;
  int64_t query = -1;
  bool operator==(const DetailKey& o) const {
    return analysis == o.analysis && layer == o.layer && head == o.head && query == o.query;
  }
};
struct DetailResult {
  QueryDetail detail;
  std::string error;
};
struct DetailCache {
  DetailKey shown_key, pending_key;
  // the analyses of both keys stay alive, so no new analysis can reuse their address
  std::shared_ptr<const Analysis> shown_analysis, pending_analysis;
  DetailResult shown;
  std::future<DetailResult> pending;     // at most one in flight
};
DetailCache g_cache;

// Starts the detail of `key` when none is computing; adopts a finished one.
void refresh_detail(const std::shared_ptr<const Analysis>& a, const DetailKey& key) {
  if (g_cache.pending.valid() && g_cache.pending.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    g_cache.shown = g_cache.pending.get();
    g_cache.shown_key = g_cache.pending_key;
    g_cache.shown_analysis = std::move(g_cache.pending_analysis);
  }
  if (g_cache.pending.valid() || key == g_cache.shown_key) return;
  g_cache.pending_analysis = a;
  g_cache.pending_key = key;
  g_cache.pending = background_workers().submit([a, key] {
    DetailResult r;
    try {
      r.detail = query_detail(*a, key.layer, key.head, key.query);
    } catch (const std::exception& e) {
      r.error = e.what();
    }
    return r;
  });
}

const ImU32 kLocal = IM_COL32(255, 140, 0, 255);
const ImU32 kPicked = IM_COL32(255, 60, 120, 255);
const ImU32 kOther = IM_COL32(90, 120, 170, 255);

// Bars for values[0..n); colour by selection slot (-1 none, 0 local, >0 picked).
// Returns the block under the mouse or -1.
int bar_chart(const char* id, const std::vector<float>& values, const std::vector<int>& slot_of, size_t n_bars,
              float width, float height) {
  ImGui::PushID(id);
  ImVec2 p0 = ImGui::GetCursorScreenPos();
  ImGui::InvisibleButton("bars", ImVec2(width, height));
  bool hovered = ImGui::IsItemHovered();
  ImDrawList* dl = ImGui::GetWindowDrawList();
  dl->AddRectFilled(p0, ImVec2(p0.x + width, p0.y + height), IM_COL32(20, 20, 24, 255));
  float vmax = 1e-12f;
  for (size_t j = 0; j < values.size() && j < n_bars; ++j)
    if (std::isfinite(values[j])) vmax = std::max(vmax, values[j]);
  const float bw = width / std::max<size_t>(n_bars, 1);
  // Two passes: all bars, then the selected ones at least 3 px wide on top, so
  // picks stay visible when there are more blocks than pixels (long probes).
  // With more blocks than pixels the first pass draws one bar per pixel
  // column, the tallest of its blocks: the same picture, and the vertices
  // (which software GL transforms on the UI thread) stay within the width.
  const size_t shown = std::min(values.size(), n_bars);
  if (bw < 1.0f && shown > 0) {
    const int columns = std::max(1, int(width));
    for (int c = 0; c < columns; ++c) {
      const size_t j0 = size_t(c) * shown / columns, j1 = std::max(j0 + 1, size_t(c + 1) * shown / columns);
      float v = 0;
      for (size_t j = j0; j < j1 && j < shown; ++j)
        if (std::isfinite(values[j])) v = std::max(v, values[j]);
      const float h = (height - 2) * v / vmax;
      dl->AddRectFilled(ImVec2(p0.x + c, p0.y + height - h), ImVec2(p0.x + c + 1, p0.y + height), kOther);
    }
  }
  for (int pass = bw < 1.0f ? 1 : 0; pass < 2; ++pass)
    for (size_t j = 0; j < shown; ++j) {
      int s = j < slot_of.size() ? slot_of[j] : -1;
      if (pass == 1 && s < 0) continue;
      float v = std::isfinite(values[j]) ? values[j] : 0.0f;
      float h = (height - 2) * v / vmax;
      ImU32 c = s == 0 ? kLocal : (s > 0 ? kPicked : kOther);
      float x0 = p0.x + j * bw, x1 = std::max(x0 + (pass ? 3.0f : 1.0f), x0 + bw - (bw > 4 ? 1.0f : 0.0f));
      dl->AddRectFilled(ImVec2(x0, p0.y + height - std::max(h, pass ? 2.0f : 0.0f)), ImVec2(x1, p0.y + height), c);
    }
  char buf[32];
  std::snprintf(buf, sizeof buf, "max %.3g", vmax);
  dl->AddText(ImVec2(p0.x + 4, p0.y + 2), IM_COL32(200, 200, 200, 200), buf);
  int hovered_block = -1;
  if (hovered && n_bars > 0) {
    hovered_block = int((ImGui::GetIO().MousePos.x - p0.x) / bw);
    if (hovered_block < 0 || size_t(hovered_block) >= n_bars) hovered_block = -1;
  }
  ImGui::PopID();
  return hovered_block;
}

}  // namespace

void ReleaseSelectedBlocks() { g_cache = DetailCache{}; }

void DrawSelectedBlocks(UiState& ui) {
  if (!ui.show_blocks) return;
  PlaceNextWindow("Selected blocks");
  if (!ImGui::Begin("Selected blocks", &ui.show_blocks)) {
    ImGui::End();
    return;
  }
  std::shared_ptr<const Analysis> a = ui.snap ? ui.snap->analysis : nullptr;
  if (!a || a->layers.empty() || a->T <= 0) {
    ImGui::TextDisabled("no analysis yet");
    ImGui::End();
    return;
  }
  int64_t q = ui.focus_query();
  const char* why = ui.pinned >= 0 ? "pinned" : (q >= 0 ? "hovered" : "last token");
  if (q < 0 || q >= a->T) {
    q = a->T - 1;
    why = "last token";
  }
  int layer = std::clamp(ui.layer, 0, a->num_layers - 1);
  int head = std::clamp(ui.head, 0, a->num_heads - 1);

  refresh_detail(a, DetailKey{a.get(), layer, head, q});
  if (!(g_cache.shown_key == DetailKey{a.get(), layer, head, q})) {
    // the previous query's bars stay up while this one computes, if they
    // belong to the same analysis; a new analysis waits a frame or two
    if (g_cache.shown_key.analysis != a.get()) {
      ImGui::TextDisabled("computing the blocks of query %lld ...", (long long)q);
      ImGui::End();
      return;
    }
    q = g_cache.shown_key.query;
    layer = g_cache.shown_key.layer;
    head = g_cache.shown_key.head;
    why = "updating";
  }
  if (!g_cache.shown.error.empty()) {
    ImGui::TextColored(ImVec4(1, 0.4f, 0.4f, 1), "query_detail failed: %s", g_cache.shown.error.c_str());
    ImGui::End();
    return;
  }
  const QueryDetail& d = g_cache.shown.detail;
  std::string piece;
  if (ui.snap && int64_t(ui.snap->probe_pieces.size()) == a->T) piece = display_piece(ui.snap->probe_pieces[q]);
  ImGui::Text("query %lld '%s' (%s)  layer %d  head %d (kv group %d)  own block %lld", (long long)q, piece.c_str(),
              why, layer, head, d.kv_head, (long long)d.own_block);
  if (ui.pinned >= 0) {
    ImGui::SameLine();
    if (ImGui::SmallButton("unpin")) ui.pinned = -1;
  }
  if (ui.mean_heads) ImGui::TextDisabled("(the map shows the mean over heads; this panel shows head %d)", head);

  // slot of each block in the selection
  size_t nb = d.block_mass.size();
  std::vector<int> slot_of(std::max(nb, d.block_scores.size()), -1);
  double kept = 0;
  int n_picked = 0;
  for (size_t s = 0; s < d.selected.size(); ++s) {
    int32_t b = d.selected[s];
    if (b < 0 || size_t(b) >= slot_of.size()) continue;
    slot_of[b] = int(s);
    if (size_t(b) < nb) kept += d.block_mass[b];
    ++n_picked;
  }
  ImGui::Text("k = %d (%d filled)  kept mass %.3f  dropped %.3f  sparsity %.3f  entropy %.3f nats",
              int(d.selected.size()), n_picked, kept, 1.0 - kept, d.sparsity, d.entropy);

  const float width = ImGui::GetContentRegionAvail().x;
  // room for: two captions, the legend and a table of up to 5 rows
  const float line = ImGui::GetTextLineHeightWithSpacing();
  const float table_h = (std::min<size_t>(d.selected.size(), 5) + 1) * (line + 2) + 4;
  const float h = std::max(48.0f, (ImGui::GetContentRegionAvail().y - 3 * line - table_h) * 0.5f);
  const size_t n_bars = std::max<size_t>(nb, 1);
  ImGui::TextDisabled("full-attention mass per block (this head)");
  int hb1 = bar_chart("mass", d.block_mass, slot_of, n_bars, width, std::min(h, 150.0f));
  ImGui::TextDisabled("selection score per past block (softmax over blocks, summed over the KV group)");
  int hb2 = bar_chart("score", d.block_scores, slot_of, n_bars, width, std::min(h, 150.0f));
  int hb = hb1 >= 0 ? hb1 : hb2;
  if (hb >= 0) {
    const int bs = a->spec.block_size;
    ImGui::BeginTooltip();
    ImGui::Text("block %d: tokens %d-%lld", hb, hb * bs, std::min<long long>((long long)(hb + 1) * bs, (long long)q + 1) - 1);
    if (size_t(hb) < d.block_mass.size()) ImGui::Text("mass  %.4f", d.block_mass[hb]);
    if (size_t(hb) < d.block_scores.size()) ImGui::Text("score %.4f", d.block_scores[hb]);
    int s = size_t(hb) < slot_of.size() ? slot_of[hb] : -1;
    ImGui::Text(s == 0 ? "selected: local block (forced)" : (s > 0 ? "selected: slot %d" : "not selected"), s);
    ImGui::EndTooltip();
  }
  // legend
  auto swatch = [](ImU32 c, const char* label) {
    ImVec2 p = ImGui::GetCursorScreenPos();
    float s = ImGui::GetTextLineHeight();
    ImGui::GetWindowDrawList()->AddRectFilled(p, ImVec2(p.x + s, p.y + s), c);
    ImGui::Dummy(ImVec2(s, s));
    ImGui::SameLine();
    ImGui::TextUnformatted(label);
    ImGui::SameLine(0, 16);
  };
  swatch(kLocal, "local block (forced)");
  swatch(kPicked, "picked by score");
  swatch(kOther, "not selected");
  ImGui::NewLine();

  if (ImGui::BeginTable("picks", 5, ImGuiTableFlags_Borders | ImGuiTableFlags_RowBg | ImGuiTableFlags_ScrollY |
                                        ImGuiTableFlags_SizingStretchSame)) {
    ImGui::TableSetupScrollFreeze(0, 1);
    ImGui::TableSetupColumn("slot");
    ImGui::TableSetupColumn("block");
    ImGui::TableSetupColumn("tokens");
    ImGui::TableSetupColumn("score");
    ImGui::TableSetupColumn("mass");
    ImGui::TableHeadersRow();
    const int bs = a->spec.block_size;
    for (size_t s = 0; s < d.selected.size(); ++s) {
      int32_t b = d.selected[s];
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::Text(s == 0 ? "0 (local)" : "%d", int(s));
      ImGui::TableNextColumn();
      if (b < 0) {
        ImGui::TextDisabled("empty");
        continue;
      }
      ImGui::Text("%d", b);
      ImGui::TableNextColumn();
      ImGui::Text("%d-%lld", b * bs, std::min<long long>((long long)(b + 1) * bs, (long long)q + 1) - 1);
      ImGui::TableNextColumn();
      if (size_t(b) < d.block_scores.size()) ImGui::Text("%.4f", d.block_scores[b]);
      else ImGui::TextDisabled("-");
      ImGui::TableNextColumn();
      if (size_t(b) < d.block_mass.size()) ImGui::Text("%.4f", d.block_mass[b]);
    }
    ImGui::EndTable();
  }
  ImGui::End();
}

}  // namespace ssalab::views
