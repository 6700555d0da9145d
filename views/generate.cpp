// Generate: a prompt, the session's model generating after it with a KV
// cache (Session::generate, a token per worker turn), and for the token being
// generated what it attends to: the context as a strip of blocks coloured by
// full attention's mass, the blocks sparse selection picks outlined, and the
// share of the mass they keep. Full or sparse attention; k, block size and
// rule are the Controls' (the session's selection).
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>
#include <cstdio>

#include "engine/session/session.h"
#include "views/panels_internal.h"
#include "views/view_math.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

struct GenerateSettings {
  std::string prompt = "The tutorial explains how";
  int sparse = 1;  // 1 sparse, 0 full (radio buttons)
  int max_new_tokens = 64;
  float temperature = 0.0f, top_p = 1.0f;
  int seed = 0;
  int layer = -1;  // -1: the mean over layers
  int group = 0;   // KV group whose selection is outlined
};
GenerateSettings g_gen;

// The text of block j's tokens (prompt and generated), for the tooltip.
std::string block_text(const GenerationState& g, int64_t j, int block_size) {
  std::string out;
  const int64_t n_prompt = int64_t(g.prompt_pieces.size());
  for (int64_t t = j * block_size; t < (j + 1) * block_size; ++t) {
    if (t < n_prompt) out += g.prompt_pieces[size_t(t)];
    else if (t - n_prompt < int64_t(g.new_pieces.size())) out += g.new_pieces[size_t(t - n_prompt)];
  }
  return out;
}

void draw_controls(UiState& ui, const GenerationState* g) {
  ImGui::InputTextMultiline("##prompt", &g_gen.prompt, ImVec2(-1, ImGui::GetTextLineHeight() * 3.5f));
  ImGui::RadioButton("sparse", &g_gen.sparse, 1);
  ImGui::SameLine();
  ImGui::RadioButton("full", &g_gen.sparse, 0);
  ImGui::SameLine();
  ImGui::SetNextItemWidth(120);
  ImGui::SliderInt("new tokens", &g_gen.max_new_tokens, 1, 1024);
  ImGui::SameLine();
  ImGui::SetNextItemWidth(90);
  ImGui::SliderFloat("temperature", &g_gen.temperature, 0.0f, 2.0f, g_gen.temperature == 0 ? "0 (greedy)" : "%.2f");
  ImGui::SameLine();
  ImGui::SetNextItemWidth(80);
  ImGui::SliderFloat("top-p", &g_gen.top_p, 0.05f, 1.0f, "%.2f");
  ImGui::SameLine();
  ImGui::SetNextItemWidth(70);
  ImGui::InputInt("seed", &g_gen.seed, 0);
  const bool running = g && g->running;
  if (ImGui::Button(running ? "Restart" : "Generate") && ui.session) {
    GenerationRequest r;
    r.prompt = g_gen.prompt;
    r.mode = g_gen.sparse == 1 ? AttnMode::Sparse : AttnMode::Full;
    r.max_new_tokens = g_gen.max_new_tokens;
    r.sampling = {double(g_gen.temperature), double(g_gen.top_p), uint64_t(std::max(0, g_gen.seed))};
    ui.session->generate(r);
  }
  if (running) {
    ImGui::SameLine();
    if (ImGui::Button("Stop") && ui.session) ui.session->stop_generation();
  }
  if (ui.snap) {
    const SparseSpec& s = ui.snap->spec;
    ImGui::SameLine();
    ImGui::TextDisabled("selection from Controls: k %d, block %d, %s", s.top_k, s.block_size, to_string(s.rule));
  }
}

void draw_output(const GenerationState& g) {
  ImGui::Text("%s attention, %zu prompt tokens, %zu generated, %.1f tokens/s (prefill %.3f s)%s%s",
              to_string(g.request.mode), g.prompt_ids.size(), g.new_ids.size(), g.tokens_per_second(),
              g.prefill_seconds, g.running ? "  generating..." : "  ", g.running ? "" : g.stop_reason.c_str());
  ImGui::BeginChild("##text", ImVec2(0, ImGui::GetContentRegionAvail().y * 0.45f), true);
  ImGui::PushTextWrapPos(0.0f);
  ImGui::TextDisabled("%s", g.request.prompt.c_str());
  ImGui::TextUnformatted(g.text.c_str());
  // the tokens one by one, whitespace made visible
  std::string pieces;
  for (const std::string& p : g.new_pieces) {
    std::string shown;
    for (char c : p) shown += c == '\n' ? std::string("\\n") : c == '\t' ? std::string("\\t") : std::string(1, c);
    pieces += (pieces.empty() ? "" : " | ") + shown;
  }
  if (!pieces.empty()) ImGui::TextDisabled("tokens: %s", pieces.c_str());
  ImGui::PopTextWrapPos();
  if (g.running) ImGui::SetScrollHereY(1.0f);
  ImGui::EndChild();
}

// The context as blocks: colour = full attention's mass (this layer's heads,
// or all layers', averaged), outline = the blocks sparse selection picks.
void draw_context(const GenerationState& g) {
  if (!g.trace) return;
  const StepTrace& t = *g.trace;
  if (t.blocks < 1 || t.heads < 1) return;
  ImGui::SetNextItemWidth(140);
  ImGui::SliderInt("layer", &g_gen.layer, -1, t.layers - 1, g_gen.layer < 0 ? "mean of all" : "%d");
  g_gen.layer = std::min(g_gen.layer, t.layers - 1);
  ImGui::SameLine();
  ImGui::SetNextItemWidth(100);
  ImGui::SliderInt("KV group", &g_gen.group, 0, t.kv_heads - 1);
  g_gen.group = std::clamp(g_gen.group, 0, t.kv_heads - 1);
  const int l0 = g_gen.layer < 0 ? 0 : g_gen.layer, l1 = g_gen.layer < 0 ? t.layers : g_gen.layer + 1;
  std::vector<float> mass(size_t(t.blocks), 0.f);
  double kept = 0;
  for (int l = l0; l < l1; ++l)
    for (int h = 0; h < t.heads; ++h) {
      kept += t.kept_mass[size_t(l * t.heads + h)];
      for (int j = 0; j < t.blocks; ++j)
        mass[size_t(j)] += t.block_mass[(size_t(l) * t.heads + h) * t.blocks + j] / float((l1 - l0) * t.heads);
    }
  kept /= double((l1 - l0) * t.heads);
  ImGui::SameLine();
  ImGui::Text("token %lld attends over %lld tokens in %d blocks; sparse keeps %.1f%% of full attention's mass",
              (long long)t.position, (long long)t.context, t.blocks, 100.0 * kept);
  // outlined: the group's selection in the chosen layer (layer 0's for the mean)
  std::vector<char> picked(size_t(t.blocks), 0);
  const int sl = g_gen.layer < 0 ? 0 : g_gen.layer;
  for (int j = 0; j < t.top_k; ++j) {
    int64_t b = t.selected[(size_t(sl) * t.kv_heads + g_gen.group) * t.top_k + j];
    if (b >= 0 && b < t.blocks) picked[size_t(b)] = 1;
  }
  std::vector<uint32_t> rgba(mass.size());
  colorize(mass.data(), mass.size(), Scale::Log, auto_range(mass.data(), mass.size(), Scale::Log), rgba.data());
  const float avail = ImGui::GetContentRegionAvail().x;
  const float cell = std::clamp(avail / float(t.blocks), 6.0f, 18.0f);
  const int per_row = std::max(1, int(avail / cell));
  const int rows = (t.blocks + per_row - 1) / per_row;
  ImGui::BeginChild("##blocks", ImVec2(0, 0), false);
  ImDrawList* dl = ImGui::GetWindowDrawList();
  const ImVec2 origin = ImGui::GetCursorScreenPos();
  ImGui::InvisibleButton("##strip", ImVec2(per_row * cell, std::max(1, rows) * cell));
  const bool hovered = ImGui::IsItemHovered();
  const ImVec2 mouse = ImGui::GetIO().MousePos;
  for (int j = 0; j < t.blocks; ++j) {
    const ImVec2 a(origin.x + (j % per_row) * cell, origin.y + (j / per_row) * cell);
    const ImVec2 b(a.x + cell - 1, a.y + cell - 1);
    dl->AddRectFilled(a, b, rgba[size_t(j)] | 0xFF000000u);
    if (picked[size_t(j)]) dl->AddRect(a, b, IM_COL32(255, 60, 60, 255), 0.0f, 0, 2.0f);
    if (hovered && mouse.x >= a.x && mouse.x < b.x && mouse.y >= a.y && mouse.y < b.y) {
      ImGui::BeginTooltip();
      ImGui::Text("block %d: tokens %d..%d, mass %.4f%s", j, j * t.block_size, (j + 1) * t.block_size - 1,
                  mass[size_t(j)], picked[size_t(j)] ? ", selected" : "");
      ImGui::PushTextWrapPos(ImGui::GetFontSize() * 30);
      ImGui::TextUnformatted(block_text(g, j, t.block_size).c_str());
      ImGui::PopTextWrapPos();
      ImGui::EndTooltip();
    }
  }
  ImGui::EndChild();
}

}  // namespace

void DrawGenerate(UiState& ui) {
  if (!ui.show_generate) return;
  PlaceNextWindow("Generate");
  if (!ImGui::Begin("Generate", &ui.show_generate)) {
    ImGui::End();
    return;
  }
  const GenerationState* g = ui.snap && ui.snap->generation ? ui.snap->generation.get() : nullptr;
  draw_controls(ui, g);
  if (g) {
    draw_output(*g);
    draw_context(*g);
  } else {
    ImGui::TextDisabled("Type a prompt and press Generate: the model writes after it, a token at a time, with a KV "
                        "cache; below, the context as blocks, coloured by the attention of the token being generated "
                        "and outlined where sparse attention reads.");
  }
  ImGui::End();
}

}  // namespace ssalab::views
