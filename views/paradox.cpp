// Paradox: the three shipped models (FullAttn, MoBA, SSA from `ssalab
// paradox`, in assets/models/) side by side on the same text, with one k
// slider driving all three: their attention maps, per-layer AttnSparsity and
// entropy, and what each loses when switched to sparse attention (the
// perplexities recorded in assets/paradox/results.json). Loading and analysis
// run on the app's background workers (engine/util/background.h); the panel
// polls and never waits.
#include <imgui.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <future>

#include "engine/checkpoint/checkpoint.h"
#include "engine/util/files.h"
#include "engine/util/background.h"
#include "views/map_widget.h"
#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

struct ParadoxModel {
  const char* name;   // full | moba | ssa
  const char* label;  // as the paper says
  std::future<std::shared_ptr<LoadedCheckpoint>> loading;
  std::shared_ptr<LoadedCheckpoint> model;
  std::future<std::shared_ptr<const Analysis>> analyzing;
  std::shared_ptr<const Analysis> analysis;
  std::unique_ptr<MapWidget> map;
};

struct ParadoxState {
  std::string dir;  // folder with full/ moba/ ssa/
  std::array<ParadoxModel, 3> m{{{"full", "FullAttn"}, {"moba", "MoBA"}, {"ssa", "SSA"}}};
  nlohmann::json results;  // the report's numbers, if present
  int top_k = 16;
  bool sparse_inference = false;
  std::vector<int> tokens;    // the probe in the shipped tokenizer
  std::string requested_key;  // what the current analyses were asked for
  std::string error;
  int max_tokens = 1024;
};
ParadoxState g;

std::string key_of(const ParadoxState& s) {
  return std::to_string(s.top_k) + (s.sparse_inference ? "s" : "f") + std::to_string(s.tokens.size()) + ":" +
         std::to_string(s.tokens.empty() ? 0 : s.tokens.front()) + ":" + std::to_string(s.tokens.empty() ? 0 : s.tokens.back());
}

// The session's probe, re-encoded with the shipped tokenizer.
std::vector<int> encode_probe(const Snapshot& snap, const Tokenizer& tok, int limit) {
  std::string text;
  for (const std::string& p : snap.probe_pieces) {
    std::string d = p;
    for (size_t pos; (pos = d.find("\xE2\x96\x81")) != std::string::npos;) d.replace(pos, 3, " ");
    text += d;
  }
  std::vector<int> ids = tok.encode(text);
  if (int(ids.size()) > limit) ids.resize(size_t(limit));
  return ids;
}

void start_analyses() {
  for (auto& pm : g.m) {
    if (!pm.model || pm.analyzing.valid()) continue;
    AnalysisRequest req;
    req.tokens = g.tokens;
    req.inference = g.sparse_inference ? AttnMode::Sparse : AttnMode::Full;
    req.spec = model_sparse_spec(pm.model->config);  // each model's own rule
    req.spec.top_k = g.top_k;
    req.token_map_limit = 0;  // block-pooled maps: three at once stay light
    auto model = pm.model;
    pm.analyzing = background_workers().submit([model, req]() -> std::shared_ptr<const Analysis> {
      return std::make_shared<const Analysis>(analyze(*model->model, req));
    });
  }
  g.requested_key = key_of(g);
}

double recorded(const char* model, const char* key) {
  const auto& r = g.results;
  if (!r.contains("models") || !r["models"].contains(model) || !r["models"][model][key].is_number()) return NAN;
  return r["models"][model][key].get<double>();
}

double recorded_at_k(const char* model, int k) {
  const auto& r = g.results;
  if (!r.contains("models") || !r["models"].contains(model)) return NAN;
  for (auto& p : r["models"][model]["sweep_k"])
    if (p["top_k"] == k && p["ppl"].is_number()) return p["ppl"].get<double>();
  return NAN;
}

}  // namespace

void ParadoxLoad(const std::string& dir) {
  if (!g.dir.empty() || !file_exists(dir + "/ssa/config.json")) return;
  g.dir = dir;
  for (auto& pm : g.m) {
    std::string path = dir + "/" + pm.name;
    pm.loading = background_workers().submit([path] { return std::make_shared<LoadedCheckpoint>(load_checkpoint(path)); });
  }
  try {
    std::string results = dir + "/../paradox/results.json";
    if (file_exists(results)) g.results = nlohmann::json::parse(read_file(results));
  } catch (const std::exception& e) {
    g.error = std::string("cannot read the paradox report: ") + e.what();
  }
}

bool ParadoxReady() {
  return std::all_of(g.m.begin(), g.m.end(),
                     [](const ParadoxModel& pm) { return pm.analysis && !pm.analyzing.valid(); });
}

void ReleaseParadox() {
  for (auto& pm : g.m) pm.map.reset();
}

void JoinParadoxWorkers() { background_workers().wait_idle(); }

void DrawParadox(UiState& ui) {
  for (auto& pm : g.m) {
    if (is_ready(pm.loading)) {
      try {
        pm.model = pm.loading.get();
        if (pm.model->state) g.max_tokens = std::max(64, pm.model->state->train.seq_len);
      } catch (const std::exception& e) {
        g.error = std::string("cannot load ") + pm.name + ": " + e.what();
        ui.error(g.error);
      }
    }
    if (is_ready(pm.analyzing)) {
      try {
        pm.analysis = pm.analyzing.get();
      } catch (const std::exception& e) {
        g.error = std::string(pm.label) + ": analysis failed: " + e.what();
        ui.error(g.error);
      }
    }
  }
  const bool all_loaded = g.m[0].model && g.m[1].model && g.m[2].model;
  const bool busy = std::any_of(g.m.begin(), g.m.end(), [](const ParadoxModel& pm) { return pm.analyzing.valid(); });
  if (all_loaded && ui.snap && !ui.snap->probe_pieces.empty() && g.tokens.empty())
    g.tokens = encode_probe(*ui.snap, g.m[2].model->tokenizer, g.max_tokens);

  if (!ui.show_paradox) return;
  PlaceNextWindow("Paradox");
  if (!ImGui::Begin("Paradox", &ui.show_paradox)) {
    ImGui::End();
    return;
  }
  if (g.dir.empty()) {
    ImGui::TextDisabled("no shipped models found (assets/models/{full,moba,ssa}); run `ssalab paradox --ship DIR`");
    ImGui::End();
    return;
  }
  if (!all_loaded) {
    ImGui::TextDisabled("loading the three models from %s ...", g.dir.c_str());
    if (!g.error.empty()) ImGui::TextColored(ImVec4(1, 0.4f, 0.4f, 1), "%s", g.error.c_str());
    ImGui::End();
    return;
  }
  const int bs = g.m[2].model->config.block_size;
  const int nblocks = g.tokens.empty() ? 1 : int((g.tokens.size() + bs - 1) / bs);
  ImGui::SetNextItemWidth(160);
  ImGui::SliderInt("k (all three)", &g.top_k, 1, std::max(1, nblocks));
  ImGui::SameLine();
  ImGui::Checkbox("sparse inference", &g.sparse_inference);
  ImGui::SameLine();
  if (ImGui::Button("use the probe text")) g.tokens.clear();
  ImGui::SameLine();
  ImGui::TextDisabled("%zu tokens, block %d, receptive field %d", g.tokens.size(), bs, bs * g.top_k);
  if (!g.tokens.empty() && !busy && key_of(g) != g.requested_key) {
    std::string problem = check_sparse_spec({bs, g.top_k}, int64_t(g.tokens.size()));
    if (problem.empty()) start_analyses();
    else ImGui::TextColored(ImVec4(1, 0.7f, 0.3f, 1), "%s", problem.c_str());
  }
  if (busy) ImGui::TextDisabled("analysing ...");

  // three maps on one colour scale
  MapRequest req{ui.layer, ui.head, ui.mean_heads, ui.kind, false};
  Range shared{INFINITY, -INFINITY};
  for (auto& pm : g.m) {
    if (!pm.map) pm.map = std::make_unique<MapWidget>();
    if (pm.analysis && !pm.analysis->layers.empty()) req.layer = std::min(req.layer, int(pm.analysis->layers.size()) - 1);
    pm.map->set_image(pm.analysis, req, ui.scale);
    if (pm.map->ready()) shared = {std::min(shared.lo, pm.map->own_range().lo), std::max(shared.hi, pm.map->own_range().hi)};
  }
  for (auto& pm : g.m) pm.map->set_colors(std::isfinite(shared.lo) ? &shared : nullptr);
  const float table_h = 9 * ImGui::GetTextLineHeightWithSpacing();
  ImVec2 avail = ImGui::GetContentRegionAvail();
  float size = std::max(48.0f, std::min((avail.x - 70) / 3 - 8, avail.y - table_h));
  for (size_t i = 0; i < g.m.size(); ++i) {
    if (i) ImGui::SameLine();
    ImGui::BeginGroup();
    ImGui::TextUnformatted(g.m[i].label);
    g.m[i].map->draw(g.m[i].name, ui, size, true);
    ImGui::EndGroup();
  }
  ImGui::SameLine();
  g.m[2].map->draw_colorbar(size);

  if (ImGui::BeginTable("paradox", 7, ImGuiTableFlags_Borders | ImGuiTableFlags_SizingStretchSame)) {
    for (const char* h : {"model", "AttnSparsity", "entropy (nats)", "ppl full", "ppl sparse (trained k)",
                          "sparse / full", "ppl at this k"})
      ImGui::TableSetupColumn(h);
    ImGui::TableHeadersRow();
    for (auto& pm : g.m) {
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::TextUnformatted(pm.label);
      ImGui::TableNextColumn();
      if (pm.analysis) ImGui::Text("%.3f", pm.analysis->mean_sparsity());
      ImGui::TableNextColumn();
      if (pm.analysis) ImGui::Text("%.3f", pm.analysis->mean_entropy());
      double f = recorded(pm.name, "ppl_full"), s = recorded(pm.name, "ppl_sparse"), at_k = recorded_at_k(pm.name, g.top_k);
      ImGui::TableNextColumn();
      if (std::isfinite(f)) ImGui::Text("%.3f", f);
      ImGui::TableNextColumn();
      if (std::isfinite(s)) ImGui::Text("%.3f", s);
      ImGui::TableNextColumn();
      if (std::isfinite(f) && std::isfinite(s)) ImGui::Text("%+.2f%%", 100 * (s / f - 1));
      ImGui::TableNextColumn();
      if (std::isfinite(at_k)) ImGui::Text("%.3f", at_k);
      else ImGui::TextDisabled("not in sweep");
    }
    ImGui::EndTable();
  }
  // per-layer AttnSparsity of the live analyses
  if (g.m[2].analysis && ImGui::BeginTable("layers", 4, ImGuiTableFlags_Borders | ImGuiTableFlags_SizingStretchSame)) {
    ImGui::TableSetupColumn("layer: AttnSparsity / entropy (nats)");
    for (auto& pm : g.m) ImGui::TableSetupColumn(pm.label);
    ImGui::TableHeadersRow();
    for (size_t l = 0; l < g.m[2].analysis->layers.size(); ++l) {
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::Text("L%zu", l);
      for (auto& pm : g.m) {
        ImGui::TableNextColumn();
        if (!pm.analysis || l >= pm.analysis->layers.size()) continue;
        double sparsity = 0, entropy = 0;
        const auto& heads = pm.analysis->layers[l].heads;
        for (auto& h : heads) sparsity += h.sparsity / heads.size(), entropy += h.entropy / heads.size();
        ImGui::Text("%.3f / %.2f", sparsity, entropy);
      }
    }
    ImGui::EndTable();
  }
  ImGui::TextDisabled("ppl columns: recorded by `ssalab paradox` (assets/paradox/report.md)");
  ImGui::End();
}

}  // namespace ssalab::views
