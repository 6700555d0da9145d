// Pieces the panels share among themselves (not used by the main loop).
#pragma once
#include <chrono>
#include <future>
#include "engine/checkpoint/checkpoint.h"
#include "engine/metrics/analysis.h"
#include "engine/tokenizer/tokenizer.h"
#include "views/ui_state.h"

namespace ssalab::views {

// A worker's result can be taken without waiting (the panels poll, never block).
template <class T>
bool is_ready(const std::future<T>& f) {
  return f.valid() && f.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

// A model opened beside the session's (Compare, Paradox), with the tokenizer
// that reads the probe text for it.
struct OpenedModel {
  LoadedCheckpoint ck;
  std::unique_ptr<tokenizer::Tokenizer> tok;
  // `text` in this model's ids, at most `limit`: ssalab's own models trained
  // without BOS; HF folders get what their tokenizer config adds, as
  // transformers would. Throws when an id is outside the model's vocabulary.
  std::vector<int> encode(const std::string& text, size_t limit) const;
};
// Loads a model folder, ssalab checkpoint or cached hub id and its tokenizer
// (open_model.cpp); throws Error naming the problem. Runs on a worker.
std::shared_ptr<OpenedModel> open_with_tokenizer(const std::string& source);

// Default placement of a panel; call right before its ImGui::Begin().
void PlaceNextWindow(const char* name);

// Layer / head / mean / kind / scale pickers (attention_map.cpp).
void DrawMapSettings(UiState& ui, const Analysis* a);
// GL resources, released by ShutdownViews().
void ReleaseAttentionMap();
void ReleaseCompare();      // textures only
void JoinCompareWorkers();  // waits for Compare's loading / analysis futures
void ReleaseParadox();      // textures only
void JoinParadoxWorkers();  // waits for the Paradox panel's futures
void JoinOpenModelWorkers();  // waits for the HF cache listing
void ReleaseSelectedBlocks();  // drops the cached analysis (torch tensors) before exit

// A small line chart drawn with ImDrawList (curves.cpp): series already in
// screen-ready form; y range computed from them.
struct MiniSeries {
  const char* name;
  unsigned color;  // ImU32
  std::vector<double> x, y;
};
void DrawMiniChart(const char* id, const std::vector<MiniSeries>& series, float width, float height);

}  // namespace ssalab::views
