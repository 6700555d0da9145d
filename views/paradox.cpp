// Paradox: models side by side on the same text, one k slider driving all of
// them: their attention maps on one colour scale, per-layer AttnSparsity and
// entropy, and the perplexity of the probe under full and sparse attention at
// this k. By default the three shipped models (FullAttn, MoBA, SSA from
// `ssalab paradox`, in assets/models/) with the perplexities recorded in
// assets/paradox/results.json; any model can join (a folder or a cached hub
// id), and "the paper's four 1B models" puts zen-E's released SSA, FullAttn,
// MoBA and NSA checkpoints side by side when they are in the local HF cache.
// Each model reads the probe text with its own tokenizer. Loading and
// analysis run on the app's background workers
// (engine/util/background.h); the panel polls and never waits.
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>
#include <cmath>
#include <future>
#include <list>

#include <nlohmann/json.hpp>

#include "engine/checkpoint/checkpoint.h"
#include "engine/hub/hub.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/util/background.h"
#include "engine/util/files.h"
#include "views/map_widget.h"
#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

struct ParadoxModel {
  std::string source;    // folder or hub id
  std::string label;     // as the paper names it, or the source
  std::string recorded;  // key in the shipped results.json (full | moba | ssa), "" for others
  std::future<std::shared_ptr<OpenedModel>> loading;
  std::shared_ptr<OpenedModel> model;
  std::string error;
  std::vector<int> tokens;    // the probe in this model's tokenizer
  std::string requested_key;  // what the current analysis was asked for
  std::future<std::shared_ptr<const Analysis>> analyzing;
  std::shared_ptr<const Analysis> analysis;
  std::unique_ptr<MapWidget> map;
};

struct ParadoxState {
  std::list<ParadoxModel> m;  // stable addresses: futures and widgets live in the entries
  nlohmann::json results;     // the shipped models' recorded numbers, if present
  bool shipped_loaded = false;
  int top_k = 16;
  bool sparse_inference = false;
  std::string probe_text;     // what the models' tokens were made from
  bool use_probe = true;      // take the session's probe (again) when it changes
  int max_tokens = 1024;
  std::string add_field;
};
ParadoxState g_paradox;

const char* const kPaper1B[][2] = {
    {"zen-E/FullAttn-1B", "FullAttn-1B"}, {"zen-E/MoBA-1B", "MoBA-1B"}, {"zen-E/NSA-1B", "NSA-1B"}, {"zen-E/SSA-1B", "SSA-1B"}};

bool paper_models_cached() {
  static int cached = -1;  // resolve_model reads directory entries only; once per run is enough
  if (cached < 0) {
    cached = 1;
    for (const auto& p : kPaper1B) try {
        resolve_model(p[0]);
      } catch (const std::exception&) {
        cached = 0;
      }
  }
  return cached == 1;
}

void add_model(const std::string& source, const std::string& label, const std::string& recorded) {
  for (const ParadoxModel& pm : g_paradox.m)
    if (pm.source == source) return;
  ParadoxModel& pm = g_paradox.m.emplace_back();
  pm.source = source;
  pm.label = label.empty() ? source : label;
  pm.recorded = recorded;
  pm.loading = background_workers().submit([source] { return open_with_tokenizer(source); });
}

std::string key_of(const ParadoxModel& pm) {
  return std::to_string(g_paradox.top_k) + (g_paradox.sparse_inference ? "s" : "f") + std::to_string(pm.tokens.size()) + ":" +
         std::to_string(pm.tokens.empty() ? 0 : pm.tokens.front()) + ":" +
         std::to_string(pm.tokens.empty() ? 0 : pm.tokens.back());
}

SparseSpec spec_for(const ParadoxModel& pm) {
  SparseSpec spec = model_sparse_spec(pm.model->ck.config);  // each model's own block size and rule
  spec.top_k = g_paradox.top_k;
  return spec;
}

void start_analysis(ParadoxModel& pm) {
  AnalysisRequest req;
  req.tokens = pm.tokens;
  req.inference = g_paradox.sparse_inference ? AttnMode::Sparse : AttnMode::Full;
  req.spec = spec_for(pm);
  req.token_map_limit = 0;  // block-pooled maps: several at once stay light
  req.token_losses = true;  // the probe's perplexity at this k
  auto model = pm.model;
  pm.requested_key = key_of(pm);
  pm.analyzing = background_workers().submit([model, req]() -> std::shared_ptr<const Analysis> {
    return std::make_shared<const Analysis>(analyze(*model->ck.model, req));
  });
}

double recorded(const ParadoxModel& pm, const char* key) {
  const auto& r = g_paradox.results;
  if (pm.recorded.empty() || !r.contains("models") || !r["models"].contains(pm.recorded) ||
      !r["models"][pm.recorded][key].is_number())
    return NAN;
  return r["models"][pm.recorded][key].get<double>();
}

double perplexity(const std::vector<float>& nll) {
  if (nll.empty()) return NAN;
  double sum = 0;
  for (float x : nll) sum += x;
  return std::exp(sum / double(nll.size()));
}

}  // namespace

void ParadoxLoad(const std::string& dir) {
  if (g_paradox.shipped_loaded || !file_exists(dir + "/ssa/config.json")) return;
  g_paradox.shipped_loaded = true;
  add_model(dir + "/full", "FullAttn", "full");
  add_model(dir + "/moba", "MoBA", "moba");
  add_model(dir + "/ssa", "SSA", "ssa");
  try {
    std::string results = dir + "/../paradox/results.json";
    if (file_exists(results)) g_paradox.results = nlohmann::json::parse(read_file(results));
  } catch (const std::exception&) {
    g_paradox.results = nullptr;  // the live columns do not need it
  }
}

void ParadoxAdd(UiState& ui, const std::string& source) {
  if (source.empty()) return;
  add_model(source, "", "");
  ui.info("Paradox: loading " + source);
}

bool ParadoxReset(const std::string& dir) {
  g_paradox.m.remove_if([](const ParadoxModel& pm) { return !pm.analyzing.valid() && !pm.loading.valid(); });
  if (!g_paradox.m.empty()) return false;  // a column still loading or analysing: ask again later
  g_paradox.shipped_loaded = false;
  ParadoxLoad(dir);
  return true;
}

bool ParadoxReady() {
  // settled: failed, analysed at the current key, or showing why this k cannot run on its tokens
  return !g_paradox.m.empty() && std::all_of(g_paradox.m.begin(), g_paradox.m.end(), [](const ParadoxModel& pm) {
    if (!pm.error.empty()) return true;
    if (pm.analyzing.valid() || pm.loading.valid()) return false;
    if (pm.analysis && pm.requested_key == key_of(pm)) return true;
    return pm.model && !pm.tokens.empty() && !check_sparse_spec(spec_for(pm), int64_t(pm.tokens.size())).empty();
  });
}

void ReleaseParadox() {
  for (auto& pm : g_paradox.m) pm.map.reset();
}

void JoinParadoxWorkers() { background_workers().wait_idle(); }

void DrawParadox(UiState& ui) {
  for (auto& pm : g_paradox.m) {
    if (is_ready(pm.loading)) {
      try {
        pm.model = pm.loading.get();
        if (pm.model->ck.state) g_paradox.max_tokens = std::max(64, pm.model->ck.state->train.seq_len);
      } catch (const std::exception& e) {
        pm.error = std::string("cannot load ") + pm.source + ": " + e.what();
        ui.error(pm.error);
      }
    }
    if (is_ready(pm.analyzing)) {
      try {
        pm.analysis = pm.analyzing.get();
      } catch (const std::exception& e) {
        pm.error = pm.label + ": analysis failed: " + e.what();
        ui.error(pm.error);
      }
    }
  }
  if (g_paradox.use_probe && ui.snap && !ui.snap->probe_text.empty() && ui.snap->probe_text != g_paradox.probe_text) {
    g_paradox.probe_text = ui.snap->probe_text;
    for (auto& pm : g_paradox.m) pm.tokens.clear();
  }
  for (auto& pm : g_paradox.m)
    if (pm.model && pm.tokens.empty() && !g_paradox.probe_text.empty()) {
      try {
        pm.tokens = pm.model->encode(g_paradox.probe_text, size_t(g_paradox.max_tokens));
      } catch (const std::exception& e) {
        pm.error = pm.label + ": cannot encode the probe: " + e.what();
      }
    }
  // Every model analyses the same k; an impossible k for one model says so in its column.
  for (auto& pm : g_paradox.m) {
    if (!pm.model || pm.tokens.empty() || pm.analyzing.valid() || key_of(pm) == pm.requested_key) continue;
    if (check_sparse_spec(spec_for(pm), int64_t(pm.tokens.size())).empty()) start_analysis(pm);
  }

  if (!ui.show_paradox) return;
  PlaceNextWindow("Paradox");
  if (!ImGui::Begin("Paradox", &ui.show_paradox)) {
    ImGui::End();
    return;
  }
  // the models: remove, add, the paper's four
  ParadoxModel* remove = nullptr;
  for (auto& pm : g_paradox.m) {
    ImGui::PushID(&pm);
    if (ImGui::SmallButton("x")) remove = &pm;
    ImGui::PopID();
    ImGui::SameLine();
    ImGui::TextUnformatted(pm.label.c_str());
    if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", pm.model ? pm.model->ck.plan.summary().c_str() : pm.source.c_str());
    ImGui::SameLine();
  }
  ImGui::SetNextItemWidth(220);
  const bool enter = ImGui::InputTextWithHint("##add", "add: folder or hub id", &g_paradox.add_field,
                                              ImGuiInputTextFlags_EnterReturnsTrue);
  ImGui::SameLine();
  if ((ImGui::SmallButton("add") || enter) && !g_paradox.add_field.empty()) {
    ParadoxAdd(ui, g_paradox.add_field);
    g_paradox.add_field.clear();
  }
  ImGui::SameLine();
  ImGui::BeginDisabled(!paper_models_cached());
  if (ImGui::SmallButton("the paper's four 1B models")) {
    g_paradox.m.remove_if([](const ParadoxModel& pm) { return !pm.analyzing.valid() && !pm.loading.valid(); });
    for (const auto& p : kPaper1B) add_model(p[0], p[1], "");
  }
  ImGui::EndDisabled();
  if (!paper_models_cached() && ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled))
    ImGui::SetTooltip("zen-E/{SSA,FullAttn,MoBA,NSA}-1B are not all in %s", hf_hub_cache_dir().c_str());
  if (remove && !remove->analyzing.valid() && !remove->loading.valid())
    g_paradox.m.remove_if([remove](const ParadoxModel& pm) { return &pm == remove; });

  if (g_paradox.m.empty()) {
    ImGui::TextDisabled("no models: add one above, or run `ssalab paradox --ship assets/models` for the shipped three");
    ImGui::End();
    return;
  }
  int nblocks = 1 << 30;
  for (auto& pm : g_paradox.m)
    if (pm.model && !pm.tokens.empty())
      nblocks = std::min(nblocks, int((pm.tokens.size() + spec_for(pm).block_size - 1) / spec_for(pm).block_size));
  if (nblocks == 1 << 30) nblocks = 1;
  ImGui::SetNextItemWidth(160);
  ImGui::SliderInt("k (all models)", &g_paradox.top_k, 1, std::max(1, nblocks));
  ImGui::SameLine();
  ImGui::Checkbox("sparse inference", &g_paradox.sparse_inference);
  ImGui::SameLine();
  ImGui::Checkbox("follow the probe text", &g_paradox.use_probe);
  ImGui::SameLine();
  ImGui::SetNextItemWidth(120);
  if (ImGui::InputInt("tokens", &g_paradox.max_tokens, 64, 512)) {
    g_paradox.max_tokens = std::clamp(g_paradox.max_tokens, 16, 32768);
    for (auto& pm : g_paradox.m) pm.tokens.clear();
  }

  // the maps, one colour scale
  MapRequest req{ui.layer, ui.head, ui.mean_heads, ui.kind, false};
  Range shared{INFINITY, -INFINITY};
  for (auto& pm : g_paradox.m) {
    if (!pm.map) pm.map = std::make_unique<MapWidget>();
    MapRequest own = req;
    if (pm.analysis && !pm.analysis->layers.empty()) own.layer = std::min(req.layer, int(pm.analysis->layers.size()) - 1);
    pm.map->set_image(pm.analysis, own, ui.scale);
    if (pm.map->ready()) shared = {std::min(shared.lo, pm.map->own_range().lo), std::max(shared.hi, pm.map->own_range().hi)};
  }
  for (auto& pm : g_paradox.m) pm.map->set_colors(std::isfinite(shared.lo) ? &shared : nullptr);
  const float table_h = float(4 + g_paradox.m.size()) * ImGui::GetTextLineHeightWithSpacing();
  const ImVec2 avail = ImGui::GetContentRegionAvail();
  const float n = float(g_paradox.m.size());
  const float size = std::max(48.0f, std::min((avail.x - 70) / n - 8, avail.y - table_h - 2 * ImGui::GetTextLineHeightWithSpacing()));
  bool first = true;
  for (auto& pm : g_paradox.m) {
    if (!first) ImGui::SameLine();
    first = false;
    ImGui::BeginGroup();
    ImGui::TextUnformatted(pm.label.c_str());
    if (!pm.error.empty()) {
      ImGui::PushTextWrapPos(ImGui::GetCursorPosX() + size);
      ImGui::TextColored(ImVec4(1, 0.4f, 0.4f, 1), "%s", pm.error.c_str());
      ImGui::PopTextWrapPos();
    } else if (!pm.model) {
      ImGui::TextDisabled("loading ...");
    } else if (pm.analyzing.valid()) {
      ImGui::TextDisabled("analysing %zu tokens ...", pm.tokens.size());
    } else if (std::string why = check_sparse_spec(spec_for(pm), int64_t(pm.tokens.size())); !why.empty()) {
      ImGui::TextColored(ImVec4(1, 0.7f, 0.3f, 1), "%s", why.c_str());
    }
    pm.map->draw(pm.source.c_str(), ui, size, true);
    ImGui::EndGroup();
  }
  ImGui::SameLine();
  g_paradox.m.back().map->draw_colorbar(size);

  if (ImGui::BeginTable("paradox", 8, ImGuiTableFlags_Borders | ImGuiTableFlags_SizingStretchSame)) {
    for (const char* h : {"model", "tokens / block / rule", "AttnSparsity", "entropy (nats)", "probe ppl full",
                          "probe ppl sparse at k", "recorded ppl full", "recorded ppl sparse (trained k)"})
      ImGui::TableSetupColumn(h);
    ImGui::TableHeadersRow();
    for (auto& pm : g_paradox.m) {
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::TextUnformatted(pm.label.c_str());
      ImGui::TableNextColumn();
      if (pm.model) {
        SparseSpec spec = spec_for(pm);
        ImGui::Text("%zu / %d / %s", pm.tokens.size(), spec.block_size, to_string(spec.rule));
      }
      const Analysis* a = pm.analysis.get();
      ImGui::TableNextColumn();
      if (a) ImGui::Text("%.3f", a->mean_sparsity());
      ImGui::TableNextColumn();
      if (a) ImGui::Text("%.3f", a->mean_entropy());
      ImGui::TableNextColumn();
      if (a && !a->nll_full.empty()) ImGui::Text("%.3f", perplexity(a->nll_full));
      ImGui::TableNextColumn();
      if (a && !a->nll_sparse.empty()) ImGui::Text("%.3f", perplexity(a->nll_sparse));
      const double f = recorded(pm, "ppl_full"), s = recorded(pm, "ppl_sparse");
      ImGui::TableNextColumn();
      if (std::isfinite(f)) ImGui::Text("%.3f", f);
      ImGui::TableNextColumn();
      if (std::isfinite(s)) ImGui::Text("%.3f (%+.2f%%)", s, std::isfinite(f) ? 100 * (s / f - 1) : 0.0);
    }
    ImGui::EndTable();
  }
  // per-layer AttnSparsity / entropy of the live analyses
  size_t layers = 0;
  for (auto& pm : g_paradox.m)
    if (pm.analysis) layers = std::max(layers, pm.analysis->layers.size());
  if (layers && ImGui::BeginTable("layers", int(g_paradox.m.size()) + 1, ImGuiTableFlags_Borders | ImGuiTableFlags_SizingStretchSame)) {
    ImGui::TableSetupColumn("layer: AttnSparsity / entropy (nats)");
    for (auto& pm : g_paradox.m) ImGui::TableSetupColumn(pm.label.c_str());
    ImGui::TableHeadersRow();
    for (size_t l = 0; l < layers; ++l) {
      ImGui::TableNextRow();
      ImGui::TableNextColumn();
      ImGui::Text("L%zu", l);
      for (auto& pm : g_paradox.m) {
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
  ImGui::TextDisabled("probe ppl: this text, these tokens, this k; recorded: `ssalab paradox` (assets/paradox/report.md)");
  ImGui::End();
}

}  // namespace ssalab::views
