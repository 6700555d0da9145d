// Controls: run (start / pause / resume / stop), what training optimises
// (method, p, alpha, lr), how inference runs (full / sparse, k, block size)
// and checkpoints (save / load a directory). Every button only queues a
// Session command; values shown come back through the snapshot. Settings the
// engine cannot run are disabled with the reason (SpecProblem: the engine's
// spec_problem(), the same function the session asks before it accepts a spec).
#include <imgui.h>
#include <imgui_stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <type_traits>

#include "engine/attention/attention.h"
#include "views/panels_internal.h"
#include "views/views.h"

namespace ssalab::views {

namespace {

// A value edited here and also reported by the engine: after the UI sends a
// command, show what was sent until the snapshot agrees (or 3 s passed).
template <class T>
struct Synced {
  T value{};
  bool pending = false;
  double sent_at = 0;
  void sync(T engine_value, double now) {
    if (pending && (close(engine_value) || now - sent_at > 3.0)) pending = false;
    if (!pending) value = engine_value;
  }
  void sent(double now) {
    pending = true;
    sent_at = now;
  }
  bool close(T v) const {
    if constexpr (std::is_floating_point_v<T>) return std::abs(double(v) - double(value)) <= 1e-9 * std::max(1.0, std::abs(double(v)));
    else return v == value;
  }
};

struct ControlsState {
  Synced<int> method, inference, top_k, block_size;
  Synced<float> p_full, alpha, lr;
  std::string ckpt_path = "runs/gui_checkpoint";
} g_controls;

void section(const char* title) {
  ImGui::Spacing();
  ImGui::TextColored(ImVec4(0.6f, 0.75f, 1.0f, 1.0f), "%s", title);
  ImGui::Separator();
}

void help(const char* text) {
  ImGui::SameLine();
  ImGui::TextDisabled("(?)");
  if (ImGui::IsItemHovered()) ImGui::SetTooltip("%s", text);
}

}  // namespace

std::string SpecProblem(const Snapshot& snap, const SparseSpec& spec, int64_t T) {
  return spec_problem(snap.model, snap.trainable ? &snap.train : nullptr, spec, T);
}

void DrawControls(UiState& ui) {
  if (!ui.show_controls) return;
  PlaceNextWindow("Controls");
  if (!ImGui::Begin("Controls", &ui.show_controls)) {
    ImGui::End();
    return;
  }
  Session* s = ui.session;
  const auto& snap = ui.snap;
  if (!s || !snap) {
    if (!ui.session_problem.empty())
      ImGui::TextColored(ImVec4(1, 0.4f, 0.4f, 1), "no session: %s", ui.session_problem.c_str());
    else
      ImGui::Text("starting the session%s", std::string(size_t(ImGui::GetTime() * 2) % 4, '.').c_str());
    ImGui::End();
    return;
  }
  const double now = ImGui::GetTime();
  g_controls.method.sync(int(snap->train.method), now);
  g_controls.inference.sync(int(snap->inference), now);
  g_controls.top_k.sync(snap->spec.top_k, now);
  g_controls.block_size.sync(snap->spec.block_size, now);
  g_controls.p_full.sync(float(snap->train.p_full), now);
  g_controls.alpha.sync(float(snap->train.alpha), now);
  g_controls.lr.sync(float(snap->train.lr), now);

  // ---- run
  if (!snap->trainable)
    ImGui::TextWrapped("%s is open for inspection: choose k, block size and the rule below; training runs on "
                       "ssalab's own models.", snap->model_source.c_str());
  ImGui::BeginDisabled(!snap->trainable);
  const RunState st = snap->state;
  ImGui::Text("state: %s", to_string(st));
  ImGui::SameLine();
  ImGui::TextDisabled("step %lld / %lld", (long long)snap->step, (long long)snap->total_steps);
  float frac = snap->total_steps > 0 ? float(double(snap->step) / double(snap->total_steps)) : 0.0f;
  ImGui::ProgressBar(std::clamp(frac, 0.0f, 1.0f), ImVec2(-1, 0));
  ImGui::BeginDisabled(st == RunState::Running || st == RunState::Paused);
  if (ImGui::Button("start")) s->start();
  ImGui::EndDisabled();
  ImGui::SameLine();
  ImGui::BeginDisabled(st != RunState::Running);
  if (ImGui::Button("pause")) s->pause();
  ImGui::EndDisabled();
  ImGui::SameLine();
  ImGui::BeginDisabled(st != RunState::Paused);
  if (ImGui::Button("resume")) s->resume();
  ImGui::EndDisabled();
  ImGui::SameLine();
  ImGui::BeginDisabled(st != RunState::Running && st != RunState::Paused);
  if (ImGui::Button("stop")) s->stop();
  ImGui::EndDisabled();
  if (!snap->status.empty()) ImGui::TextWrapped("%s", snap->status.c_str());

  // ---- training
  section("training");
  static const char* kMethods[] = {"full", "moba", "ssa"};
  ImGui::SetNextItemWidth(120);
  if (ImGui::Combo("method", &g_controls.method.value, kMethods, 3)) {
    s->set_method(Method(g_controls.method.value));
    g_controls.method.sent(now);
  }
  help("full: dense attention only.\nmoba: sparse (block top-k) only, no alignment.\nssa: each pass draws full (prob. p) or sparse; "
       "alignment losses at every layer, weighted by alpha.");
  const bool ssa = Method(g_controls.method.value) == Method::Ssa;
  ImGui::BeginDisabled(!ssa);
  ImGui::SetNextItemWidth(160);
  if (ImGui::SliderFloat("p (full)", &g_controls.p_full.value, 0.0f, 1.0f, "%.2f")) {
    s->set_p_full(g_controls.p_full.value);
    g_controls.p_full.sent(now);
  }
  ImGui::SetNextItemWidth(160);
  if (ImGui::SliderFloat("alpha", &g_controls.alpha.value, 0.0f, 50.0f, "%.1f")) {
    s->set_alpha(g_controls.alpha.value);
    g_controls.alpha.sent(now);
  }
  ImGui::EndDisabled();
  if (!ssa && ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled)) ImGui::SetTooltip("only SSA uses p and alpha");
  ImGui::SetNextItemWidth(160);
  if (ImGui::SliderFloat("peak lr", &g_controls.lr.value, 1e-5f, 1e-1f, "%.2e", ImGuiSliderFlags_Logarithmic)) {
    s->set_lr(g_controls.lr.value);
    g_controls.lr.sent(now);
  }
  ImGui::EndDisabled();  // trainable

  // ---- inference
  section("inference (analysis)");
  int mode = g_controls.inference.value;
  bool changed = ImGui::RadioButton("full", &mode, int(AttnMode::Full));
  ImGui::SameLine();
  changed |= ImGui::RadioButton("sparse", &mode, int(AttnMode::Sparse));
  help("which stream feeds the next layer while the probe is analysed; maps always compare\nthe full row with the top-k selection");
  if (changed) {
    g_controls.inference.value = mode;
    s->set_inference(AttnMode(mode));
    g_controls.inference.sent(now);
  }
  // The length the spec must run on: the probe being analysed.
  int64_t T = snap->analysis ? snap->analysis->T : int64_t(snap->probe_pieces.size());
  if (T <= 0) T = snap->model.max_position;
  const int bs = g_controls.block_size.value;
  static const int kSizes[] = {4, 8, 16, 32, 64, 128, 256};
  // What can run depends on T, the block size and the training config only;
  // recomputed when those change (the checks build strings and may throw).
  struct SpecCache {
    int64_t T = -1;
    int bs = -1, seq_len = -1, method = -1, k = -1;
    int k_max = 0;
    std::string why_k, why_size[7];
    int k_max_size[7] = {};
  };
  static SpecCache c;
  const int method_key = snap->trainable ? int(snap->train.method) : -2;  // inspection: no training rules
  if (c.T != T || c.bs != bs || c.seq_len != snap->train.seq_len || c.method != method_key || c.k != g_controls.top_k.value) {
    c.T = T;
    c.bs = bs;
    c.seq_len = snap->train.seq_len;
    c.method = method_key;
    c.k = g_controls.top_k.value;
    auto k_max_for = [&](int size) {
      int best = 0;
      for (int k = 1; k <= 128; ++k)
        if (SpecProblem(*snap, SparseSpec{size, k}, T).empty()) best = k;
        else if (best > 0) break;  // valid k form a prefix 1..k_max
      return best;
    };
    c.k_max = k_max_for(bs);
    c.why_k = SpecProblem(*snap, SparseSpec{bs, g_controls.top_k.value}, T);
    for (int i = 0; i < 7; ++i) {
      c.why_size[i] = SpecProblem(*snap, SparseSpec{kSizes[i], 1}, T);
      c.k_max_size[i] = c.why_size[i].empty() ? k_max_for(kSizes[i]) : 0;
    }
  }
  const int k_max = c.k_max;
  if (k_max > 0) {
    int k = std::clamp(g_controls.top_k.value, 1, k_max);
    ImGui::SetNextItemWidth(160);
    if (ImGui::SliderInt("k (blocks)", &k, 1, k_max)) {
      g_controls.top_k.value = k;
      s->set_top_k(k);
      g_controls.top_k.sent(now);
    }
    help("blocks each query attends to, the forced local block included;\nreceptive field = k x block size.\n"
         "The slider stops at the largest k that runs on the probe and on the training sequences.");
  } else {
    ImGui::TextColored(ImVec4(1, 0.5f, 0.3f, 1), "no k runs with block size %d on %lld tokens", bs, (long long)T);
  }
  ImGui::TextDisabled("block size");
  for (int i = 0; i < 7; ++i) {
    const int size = kSizes[i];
    const std::string& why = c.why_size[i];
    ImGui::SameLine();
    ImGui::BeginDisabled(!why.empty());
    char label[16];
    std::snprintf(label, sizeof label, "%d", size);
    if (ImGui::Selectable(label, size == bs, 0, ImGui::CalcTextSize("256"))) {
      // Shrink k first when it does not fit the new size (commands apply in order,
      // and the engine refuses a spec that cannot run).
      const int best = std::min(g_controls.top_k.value, c.k_max_size[i]);
      if (best != g_controls.top_k.value) {
        g_controls.top_k.value = best;
        s->set_top_k(best);
        g_controls.top_k.sent(now);
      }
      g_controls.block_size.value = size;
      s->set_block_size(size);
      g_controls.block_size.sent(now);
    }
    ImGui::EndDisabled();
    if (!why.empty() && ImGui::IsItemHovered(ImGuiHoveredFlags_AllowWhenDisabled)) ImGui::SetTooltip("%s", why.c_str());
  }
  // the selection rule: exact top-k, or the released checkpoints' chunked top-k
  int rule = snap->spec.rule == SelectionRule::NsaChunked ? 1 : 0;
  ImGui::SetNextItemWidth(160);
  if (ImGui::Combo("selection rule", &rule, "topk\0nsa-chunked\0"))
    s->set_selection_rule(rule == 1 ? SelectionRule::NsaChunked : SelectionRule::TopK);
  help("topk: the k blocks of highest group-summed score (the paper's text).\n"
       "nsa-chunked: what the released checkpoints' kernel computes: k/2 blocks from the\n"
       "completed 16-block chunks and k/2 from the query's own chunk (same as topk for k < 16).");
  // the precision of the pooled block keys the selection scores against
  int pooled = snap->spec.pooled_keys == PooledKeys::Bf16 ? 1 : 0;
  ImGui::SetNextItemWidth(160);
  if (ImGui::Combo("pooled keys", &pooled, "fp32\0bf16\0"))
    s->set_pooled_keys(pooled == 1 ? PooledKeys::Bf16 : PooledKeys::Fp32);
  help("fp32: each block's mean key in fp32 (what ssalab trains with).\n"
       "bf16: that mean rounded to bf16, as the released checkpoints' kernel pools;\n"
       "near-ties can pick other blocks. A decoding cache then stores half the bytes.");
  const std::string& why_k = c.why_k;
  ImGui::Text("receptive field %d tokens of %lld", g_controls.top_k.value * bs, (long long)T);
  if (!why_k.empty()) ImGui::TextColored(ImVec4(1, 0.5f, 0.3f, 1), "k %d: %s", g_controls.top_k.value, why_k.c_str());
  if (!snap->spec_problem.empty())
    ImGui::TextColored(ImVec4(1, 0.4f, 0.4f, 1), "engine: %s", snap->spec_problem.c_str());

  // ---- checkpoint
  section("checkpoint");
  ImGui::SetNextItemWidth(-1);
  ImGui::InputTextWithHint("##ckpt", "checkpoint directory", &g_controls.ckpt_path);
  ImGui::BeginDisabled(g_controls.ckpt_path.empty());
  ImGui::BeginDisabled(!snap->trainable);
  if (ImGui::Button("save")) {
    s->save(g_controls.ckpt_path);
    ui.info("saving checkpoint to " + g_controls.ckpt_path);
  }
  ImGui::EndDisabled();
  ImGui::SameLine();
  if (ImGui::Button("load")) OpenModel(ui, g_controls.ckpt_path);
  ImGui::EndDisabled();
  ImGui::SameLine();
  ImGui::TextDisabled("errors appear in the status line");
  ImGui::End();
}

}  // namespace ssalab::views
