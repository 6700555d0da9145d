// Text probe: the text whose attention the other views show. Type or paste a
// text and analyse it, or go back to the default validation sample. Its tokens
// are drawn as chips (only the visible lines, so 32K tokens stay cheap); click
// one to pin it as the query everywhere, click it again or press "unpin" (or
// Esc, or right click on the map) to let go. Chips can be tinted by a per-row
// statistic of the current layer / head, or by what sparse inference costs
// each token: NLL(sparse) - NLL(full), red where sparse attention hurts.
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>
#include <memory>
#include <cmath>

#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

struct Chip {
  float x = 0, w = 0;
  int line = 0;
  std::string text;
};

struct ProbeState {
  std::string text;
  int tint = 1;  // 0 none, 1 AttnSparsity, 2 entropy, 3 sparse NLL cost
  // layout cache
  int64_t version = -1;
  std::vector<std::string> pieces;
  std::vector<Chip> chips;
  std::vector<int> line_start;  // first chip of each line
  float width = -1;
  int64_t last_pinned = -1;
  // tint cache: the rows copied from the analysis (LayerAnalysis::row) only
  // when the analysis, layer, head or statistic changes, not every frame
  std::weak_ptr<const Analysis> tint_analysis;  // weak: a new analysis at a freed one's address is not it
  int tint_layer = -1, tint_head = -2, tint_kind = -1;
  std::vector<float> tint_rows;
} g_text_probe;

bool is_newline(const std::string& piece) { return piece == "<0x0A>" || piece == "\n"; }

void layout(float width) {
  g_text_probe.chips.resize(g_text_probe.pieces.size());
  g_text_probe.line_start.assign(1, 0);
  const float pad = 3, gap = 2;
  float x = 0;
  int line = 0;
  for (size_t i = 0; i < g_text_probe.pieces.size(); ++i) {
    Chip& c = g_text_probe.chips[i];
    c.text = display_piece(g_text_probe.pieces[i]);
    c.w = ImGui::CalcTextSize(c.text.c_str()).x + 2 * pad;
    if (x > 0 && x + c.w > width) {
      ++line;
      x = 0;
      g_text_probe.line_start.push_back(int(i));
    }
    c.x = x;
    c.line = line;
    x += c.w + gap;
    if (is_newline(g_text_probe.pieces[i]) && i + 1 < g_text_probe.pieces.size()) {
      ++line;
      x = 0;
      g_text_probe.line_start.push_back(int(i + 1));
    }
  }
  g_text_probe.width = width;
}

}  // namespace

void DrawTextProbe(UiState& ui) {
  if (!ui.show_probe) return;
  PlaceNextWindow("Text probe");
  if (!ImGui::Begin("Text probe", &ui.show_probe)) {
    ImGui::End();
    return;
  }
  Session* s = ui.session;
  ImGui::InputTextMultiline("##text", &g_text_probe.text, ImVec2(-1, ImGui::GetTextLineHeight() * 4.5f));
  ImGui::BeginDisabled(!s || g_text_probe.text.empty());
  if (ImGui::Button("analyse this text")) {
    s->set_probe_text(g_text_probe.text);
    ui.pinned = -1;
    ui.info("probe text set (" + std::to_string(g_text_probe.text.size()) + " bytes)");
  }
  ImGui::EndDisabled();
  ImGui::SameLine();
  ImGui::BeginDisabled(!s);
  if (ImGui::Button("default sample")) {
    s->set_probe_text("");
    ui.pinned = -1;
  }
  ImGui::EndDisabled();
  ImGui::SameLine();
  ImGui::SetNextItemWidth(120);
  ImGui::Combo("tint", &g_text_probe.tint, "none\0AttnSparsity\0entropy\0sparse NLL cost\0");

  const auto& snap = ui.snap;
  std::shared_ptr<const Analysis> a = snap ? snap->analysis : nullptr;
  // Pinned query line: obvious unpin.
  if (ui.pinned >= 0) {
    std::string piece = snap && size_t(ui.pinned) < snap->probe_pieces.size()
                            ? display_piece(snap->probe_pieces[size_t(ui.pinned)]) : "";
    ImGui::TextColored(ImVec4(1, 0.35f, 0.6f, 1), "pinned query: %lld '%s'", (long long)ui.pinned, piece.c_str());
    ImGui::SameLine();
    if (ImGui::Button("unpin (Esc)")) ui.pinned = -1;
  } else {
    ImGui::TextDisabled("click a token (or a map row) to pin it as the query");
  }
  if (!snap || snap->probe_pieces.empty()) {
    ImGui::TextDisabled("no probe tokens yet");
    ImGui::End();
    return;
  }
  ImGui::TextDisabled("%zu tokens", snap->probe_pieces.size());

  // Relayout when the pieces or the width changed.
  ImGui::BeginChild("tokens", ImVec2(0, 0), true);
  const float width = ImGui::GetContentRegionAvail().x;
  if (snap->version != g_text_probe.version) {
    g_text_probe.version = snap->version;
    if (snap->probe_pieces != g_text_probe.pieces) {
      g_text_probe.pieces = snap->probe_pieces;
      g_text_probe.width = -1;
    }
  }
  if (std::abs(width - g_text_probe.width) > 0.5f) layout(width);

  // Per-row tint values.
  const float* tint = nullptr;
  Range tr{0, 1};
  // sparse NLL cost of token t (predicted at row t-1); token 0 has none
  std::vector<float> cost;
  float cost_scale = 1;
  if (a && g_text_probe.tint == 3 && a->T == int64_t(g_text_probe.pieces.size()) && a->nll_sparse.size() + 1 == size_t(a->T) &&
      a->nll_full.size() == a->nll_sparse.size()) {
    cost.assign(size_t(a->T), NAN);
    for (size_t t = 1; t < cost.size(); ++t) cost[t] = a->nll_sparse[t - 1] - a->nll_full[t - 1];
    std::vector<double> mags;
    for (size_t t = 1; t < cost.size(); ++t) mags.push_back(std::abs(cost[t]));
    cost_scale = std::max(1e-3f, float(percentile(mags, 98)));
  }
  if (a && (g_text_probe.tint == 1 || g_text_probe.tint == 2) && a->T == int64_t(g_text_probe.pieces.size()) && !a->layers.empty()) {
    const int layer = std::clamp(ui.layer, 0, a->num_layers - 1);
    const int head = ui.mean_heads ? -1 : std::clamp(ui.head, 0, a->num_heads - 1);
    ProbeState& p = g_text_probe;
    if (p.tint_analysis.lock() != a || p.tint_layer != layer || p.tint_head != head || p.tint_kind != p.tint) {
      p.tint_rows = a->layers[layer].row(p.tint == 1 ? RowStat::Sparsity : RowStat::Entropy, head);
      const size_t T = size_t(a->T);
      if (head < 0 && p.tint_rows.size() == T * a->num_heads) {  // the mean over heads
        std::vector<float> mean(T, 0.0f);
        for (int h = 0; h < a->num_heads; ++h)
          for (size_t t = 0; t < T; ++t) mean[t] += p.tint_rows[h * T + t] / a->num_heads;
        p.tint_rows = std::move(mean);
      }
      p.tint_analysis = a, p.tint_layer = layer, p.tint_head = head, p.tint_kind = p.tint;
    }
    const size_t T = size_t(a->T);
    if (p.tint_rows.size() == T) {
      tint = p.tint_rows.data();
      if (p.tint == 2) tr = auto_range(tint, T, Scale::Linear);
    }
  }

  const float line_h = ImGui::GetTextLineHeight() + 4;
  // Scroll to a query pinned elsewhere (the map).
  // (waits until the pinned token exists: a query pinned for the next probe)
  if (ui.pinned != g_text_probe.last_pinned && (ui.pinned < 0 || size_t(ui.pinned) < g_text_probe.chips.size())) {
    if (ui.pinned >= 0) {
      float y = g_text_probe.chips[size_t(ui.pinned)].line * line_h;
      if (y < ImGui::GetScrollY() || y > ImGui::GetScrollY() + ImGui::GetWindowHeight() - 2 * line_h)
        ImGui::SetScrollY(std::max(0.0f, y - 2 * line_h));
    }
    g_text_probe.last_pinned = ui.pinned;
  }
  ImDrawList* dl = ImGui::GetWindowDrawList();
  const ImVec2 mouse = ImGui::GetIO().MousePos;
  const bool child_hovered = ImGui::IsWindowHovered();
  ImGuiListClipper clipper;
  clipper.Begin(int(g_text_probe.line_start.size()), line_h);
  int64_t hover = -1;
  while (clipper.Step()) {
    for (int line = clipper.DisplayStart; line < clipper.DisplayEnd; ++line) {
      ImVec2 p = ImGui::GetCursorScreenPos();
      size_t first = size_t(g_text_probe.line_start[line]);
      size_t last = line + 1 < int(g_text_probe.line_start.size()) ? size_t(g_text_probe.line_start[line + 1]) : g_text_probe.chips.size();
      for (size_t i = first; i < last; ++i) {
        const Chip& c = g_text_probe.chips[i];
        ImVec2 c0(p.x + c.x, p.y), c1(p.x + c.x + c.w, p.y + line_h - 2);
        ImU32 bg = IM_COL32(45, 48, 58, 255);
        if (tint) {
          float t = normalize(tint[i], Scale::Linear, tr);
          if (!std::isnan(t)) bg = (viridis_rgba()[size_t(std::lround(t * 255))] & 0x00FFFFFFu) | 0x90000000u;
        } else if (!cost.empty() && !std::isnan(cost[i])) {
          // red: sparse attention makes this token less likely; green: more likely
          const float m = std::min(1.0f, std::abs(cost[i]) / cost_scale);
          const int alpha = int(40 + 200 * m);
          bg = cost[i] > 0 ? IM_COL32(220, 60, 50, alpha) : IM_COL32(60, 180, 90, alpha);
        }
        dl->AddRectFilled(c0, c1, bg, 2.0f);
        const bool is_pinned = int64_t(i) == ui.pinned, is_hovered = int64_t(i) == ui.hovered;
        if (is_pinned) dl->AddRect(c0, c1, IM_COL32(255, 60, 120, 255), 2.0f, 0, 2.0f);
        else if (is_hovered) dl->AddRect(c0, c1, IM_COL32(255, 255, 255, 200), 2.0f);
        dl->AddText(ImVec2(c0.x + 3, c0.y + 1), IM_COL32(235, 235, 235, 255), c.text.c_str());
        if (child_hovered && mouse.x >= c0.x && mouse.x < c1.x && mouse.y >= c0.y && mouse.y < c1.y) hover = int64_t(i);
      }
      ImGui::Dummy(ImVec2(width, line_h));
    }
  }
  clipper.End();
  if (hover >= 0) {
    ui.hover_next = hover;
    ImGui::BeginTooltip();
    ImGui::Text("token %lld", (long long)hover);
    if (a && hover < int64_t(a->tokens.size())) ImGui::Text("id %d", a->tokens[size_t(hover)]);
    if (tint) ImGui::Text("%s %.3f", g_text_probe.tint == 1 ? "AttnSparsity" : "entropy (nats)", tint[hover]);
    if (!cost.empty() && hover > 0)
      ImGui::Text("NLL full %.3f, sparse %.3f nats (cost %+.3f)", a->nll_full[size_t(hover - 1)],
                  a->nll_sparse[size_t(hover - 1)], cost[size_t(hover)]);
    ImGui::TextDisabled(hover == ui.pinned ? "click: unpin" : "click: pin as query");
    ImGui::EndTooltip();
    if (ImGui::IsMouseClicked(ImGuiMouseButton_Left)) ui.pinned = hover == ui.pinned ? -1 : hover;
  }
  ImGui::EndChild();
  ImGui::End();
}

}  // namespace ssalab::views
