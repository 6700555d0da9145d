#include "app/gui/demo.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <future>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/attention/attention.h"
#include "engine/data/corpus.h"
#include "engine/memory/estimate.h"
#include "engine/train/trainer.h"
#include "engine/util/background.h"
#include "views/views.h"

namespace ssalab {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// named, not anonymous: Demo::Impl holds these, and in a unity build this
// file is not the main file of its unit (-Wsubobject-linkage)
namespace demo_steps {

constexpr int kLongTokens = 8192;
constexpr int kMeasureFrames = 300;  // p99 over 300 frames: the 4th-longest, not one outlier

struct Step {
  std::string name;
  std::function<void()> enter;  // once, when the step starts
  std::function<bool()> done;   // polled every frame
  double timeout_s = 60;
  std::string shot;             // screenshot file once done (may be empty)
  std::string measure;          // "live" / "paused": time this many frames once done
};

struct FrameRecord {
  std::string phase;
  int64_t tokens = 0;
  int index = 0;
  double ms = 0, cpu_ms = 0;
  int vertices = 0;
  long minor_faults = 0, preempted = 0;
  std::vector<FramePart> parts;
};

// One of the slowest frames of the run, wherever it fell.
struct SlowFrame {
  double ms = 0, cpu_ms = 0;
  std::string stage;
  int64_t tokens = 0;
  std::vector<FramePart> parts;
};
constexpr size_t kSlowFramesKept = 5;

nlohmann::json parts_json(const std::vector<FramePart>& parts) {
  nlohmann::json j = nlohmann::json::object();
  for (const FramePart& p : parts) j[p.name] = {{"wall_ms", p.wall_ms}, {"cpu_ms", p.cpu_ms}};
  return j;
}

}  // namespace demo_steps
using namespace demo_steps;

struct Demo::Impl {
  GuiOptions opt;
  views::UiState& ui;
  fs::path dir;
  std::vector<Step> steps;
  size_t cur = 0;
  bool entered = false, satisfied = false;
  int settle = 0;
  Clock::time_point t_start = Clock::now(), t_step = Clock::now();
  // measurement
  int measure_left = 0;
  std::vector<FrameRecord> frames;
  std::vector<SlowFrame> slowest;  // longest wall time first
  std::vector<std::future<std::string>> pending_shots;  // screenshots being written
  int64_t frames_seen = 0;
  double startup_ms = -1;
  // results
  nlohmann::json shots = nlohmann::json::array(), stages = nlohmann::json::array();
  std::string error;
  int code = 0;
  bool finished = false;
  // state the steps share
  int k0 = 0, k1 = 0, bs0 = 0, bs1 = 0;
  int64_t saved_step = 0;
  const Analysis* before_open = nullptr;  // the open-model step waits for a new analysis
  uint64_t open_ticket = 0;
  std::future<std::vector<int>> long_tokens;
  float mouse_x = -1, mouse_y = -1;  // synthetic pointer (the hover readout stage)

  Impl(const GuiOptions& o, views::UiState& u) : opt(o), ui(u), dir(o.demo_dir) {}

  Session& session() { return *ui.session; }
  const Snapshot* snap() const { return ui.snap.get(); }
  const Analysis* analysis() const { return ui.snap ? ui.snap->analysis.get() : nullptr; }
  double seconds_since(Clock::time_point t) const { return std::chrono::duration<double>(Clock::now() - t).count(); }

  void build() {
    const int short_T = std::max(64, opt.demo_tokens);
    steps.push_back({"session ready", [] {},
                     [this] { return ui.session && analysis() && snap()->state == RunState::Idle; }, 300, "", ""});
    steps.push_back({"train",
                     [this] {
                       session().start();
                       ui.layer = analysis()->num_layers - 1;
                       ui.head = 0;
                       ui.kind = views::MapKind::Full;
                       ui.scale = views::Scale::Log;
                     },
                     [this] {
                       const Analysis* a = analysis();
                       return snap()->step >= 10 && a && ui.analysis_history.size() >= 2;
                     },
                     150, "01_training.png", ""});
    steps.push_back({"short probe, sparse map, live",
                     [this, short_T] {
                       ui.pinned = short_T * 4 / 5;
                       ui.kind = views::MapKind::Sparse;
                       k0 = snap()->spec.top_k;
                     },
                     [this, short_T] { return analysis() && analysis()->T == short_T; }, 60, "", "live"});
    steps.push_back({"short probe, paused",
                     [this] { session().pause(); },
                     [this] { return snap()->state == RunState::Paused; }, 60, "", "paused"});
    steps.push_back({"sparse map at k", [] {}, [] { return true; }, 10, "", ""});
    steps.back().shot = "02_sparse_k.png";
    steps.push_back({"sparse map at 2k",
                     [this] {
                       const int64_t T = analysis()->T;
                       const int bs = snap()->spec.block_size;
                       k1 = k0 * 2;
                       while (k1 > k0 && !views::SpecProblem(*snap(), SparseSpec{bs, k1}, T).empty()) --k1;
                       if (k1 == k0) k1 = std::max(1, k0 / 2);  // k is at its largest: halve it instead
                       session().set_top_k(k1);
                     },
                     [this] { return spec_ok() && analysis() && analysis()->spec.top_k == k1; }, 60, "03_sparse_2k.png", ""});
    steps.push_back({"block size changed, dropped mass",
                     [this] {
                       // a smaller block: more, finer blocks for the same k. On
                       // the GPU a larger one: the kernels take blocks of 16 to
                       // 64 tokens, and a block of 8 would send the later 8K
                       // probe to LibTorch (10.8 s against about 0.2 s)
                       const int current = snap()->spec.block_size;
                       const bool on_gpu = resolve_device(snap()->train.device).is_cuda();
                       const int first = on_gpu ? current * 2 : current / 2, second = on_gpu ? current / 2 : current * 2;
                       bs1 = first;
                       if (bs1 < 1 || !views::SpecProblem(*snap(), SparseSpec{bs1, snap()->spec.top_k}, analysis()->T).empty())
                         bs1 = second;
                       session().set_block_size(bs1);
                       ui.kind = views::MapKind::Dropped;
                     },
                     [this] { return spec_ok() && analysis() && analysis()->spec.block_size == bs1; }, 60, "04_dropped_bs.png",
                     ""});
    steps.push_back({"export and save",
                     [this] {
                       pending_shots.push_back(views::ExportMapPng((dir / "map_dropped.png").string()));
                       report(views::ExportMetricsCsv(ui, (dir / "metrics.csv").string()));
                       report(views::ExportLayerCsv(ui, (dir / "layers.csv").string()));
                       report(views::ExportMetricsJson(ui, (dir / "metrics.json").string()));
                       ui.captures.push_back({(dir / "curves.png").string(), false, ui.curves_rect});
                       saved_step = snap()->step;
                       session().save((dir / "checkpoint").string());
                     },
                     [this] {
                       if (!snap()->error.empty()) fail("save failed: " + snap()->error);
                       return snap()->status.rfind("saved", 0) == 0;
                     },
                     60, "", ""});
    steps.push_back({"compare with the saved checkpoint",
                     [this] {
                       ui.kind = views::MapKind::Full;
                       views::CompareLoad(ui, (dir / "checkpoint").string());
                       session().resume();
                     },
                     [this] { return views::CompareReady() && snap()->step >= saved_step + 10; }, 90, "", ""});
    // The pointer over the map: hover readout, and the hovered query drives the
    // selected-blocks overlay and panel (nothing pinned).
    steps.push_back({"hover readout",
                     [this] {
                       ui.pinned = -1;
                       const views::ScreenRect& r = ui.map_rect;
                       mouse_x = r.x + 0.42f * r.w;
                       mouse_y = r.y + 0.71f * r.h;
                     },
                     [this] { return ui.hovered >= 0; }, 20, "05_compare_hover.png", ""});
    steps.push_back({"pointer away", [this] { mouse_x = mouse_y = -1; }, [] { return true; }, 10, "", ""});
    steps.push_back({"tokens for the long probe",
                     [this] {
                       views::CompareLoad(ui, "");  // keep the long phase to one analysis at a time
                       session().pause();
                       std::string tok_path = (dir / "checkpoint" / "tokenizer.model").string();
                       std::string corpus = opt.session.corpus.empty() ? default_corpus_path() : opt.session.corpus;
                       long_tokens = background_workers().submit([tok_path, corpus] {
                         Tokenizer tok = Tokenizer::load(tok_path);
                         std::vector<int> ids;
                         for (const Document& d : read_corpus(corpus)) {
                           std::vector<int> part = tok.encode(d.text);
                           ids.insert(ids.end(), part.begin(), part.end());
                           if (ids.size() >= size_t(kLongTokens)) break;
                         }
                         if (ids.size() < size_t(kLongTokens)) throw std::runtime_error("corpus has fewer than 8192 tokens");
                         ids.resize(kLongTokens);
                         return ids;
                       });
                     },
                     [this] {
                       if (long_tokens.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
                       try {
                         session().set_probe_tokens(long_tokens.get());
                       } catch (const std::exception& e) {
                         fail(std::string("long probe: ") + e.what());
                       }
                       return true;
                     },
                     60, "", ""});
    // Training pauses while the long probe is analysed (on a CPU that analysis
    // is the slow part of the demo), then frames are timed paused and live.
    steps.push_back({"long probe, paused",
                     [this] {
                       ui.pinned = kLongTokens * 4 / 5;
                       ui.kind = views::MapKind::Full;
                     },
                     [this] { return analysis() && analysis()->T == kLongTokens; }, 400, "06_probe8192.png",
                     "paused"});
    steps.push_back({"long probe, live", [this] { session().resume(); },
                     [this] { return snap()->state == RunState::Running; }, 120, "", "live"});
    steps.push_back({"stop", [this] { session().stop(); }, [] { return true; }, 10, "", ""});
    // the shipped FullAttn / MoBA / SSA models in the Paradox view (when present)
    steps.push_back({"paradox view",
                     [this] {
                       ui.show_paradox = true;
                       views::ParadoxLoad(opt.paradox_models);
                     },
                     [this] { return !has_paradox_models() || views::ParadoxReady(); }, 180, "07_paradox.png", ""});
    // File > Open model: the saved checkpoint replaces the session's model
    // through the panel (background load, then the probe analysed again)
    steps.push_back({"open model",
                     [this] {
                       ui.show_paradox = false;
                       ui.show_open_model = true;
                       before_open = analysis();
                       open_ticket = views::OpenModel(ui, (dir / "checkpoint").string());
                     },
                     [this] {
                       const auto s = snap();
                       if (s->loads_done < open_ticket) return false;
                       if (s->model_source != (dir / "checkpoint").string()) fail("open model failed: " + s->error);
                       return s->analysis && s->analysis.get() != before_open;
                     },
                     120, "08_open_model.png", ""});
    // Generate: sparse decoding with the cache after a prompt, streamed; the
    // shot shows the text and the blocks the last token attended to
    steps.push_back({"generate",
                     [this] {
                       ui.show_open_model = false;
                       ui.show_generate = true;
                       GenerationRequest r;
                       // a few hundred tokens of the probe, so selection leaves blocks out
                       const std::string& probe = snap()->probe_text;
                       size_t n = std::min<size_t>(probe.size(), 1500);
                       while (n < probe.size() && (static_cast<unsigned char>(probe[n]) & 0xC0) == 0x80) --n;
                       r.prompt = n > 0 ? probe.substr(0, n) : "The tutorial explains how";
                       r.mode = AttnMode::Sparse;
                       r.max_new_tokens = 48;
                       session().generate(r);
                     },
                     [this] {
                       const auto s = snap();
                       if (!s->error.empty()) fail("generate failed: " + s->error);
                       return s->generation && !s->generation->running && !s->generation->new_ids.empty();
                     },
                     60, "09_generate.png", ""});
  }

  bool has_paradox_models() const { return fs::exists(fs::path(opt.paradox_models) / "ssa" / "config.json"); }

  // The model demo (a model given with --model): no training, the model is
  // inspected. Per probe length: random token ids of the model's vocabulary
  // (seeded), the first analysis, a k change and a block-size change (each a
  // selection-only re-analysis on the kept q and k), the spec restored, and
  // frames timed paused. Then the Paradox view on --paradox-models.
  void build_model_demo() {
    steps.push_back({"model open",
                     [] {},
                     [this] {
                       const Snapshot* s = snap();
                       if (!s) return false;
                       if (s->model_source.empty() && !s->error.empty()) {
                         fail("the model did not open: " + s->error);
                         return true;
                       }
                       return analysis() && s->state == RunState::Idle && !s->model_source.empty();
                     },
                     900, "01_model.png", ""});
    int shot = 2;
    auto name = [&shot](const std::string& what, int T) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%02d_%s_%d.png", shot++, what.c_str(), T);
      return std::string(buf);
    };
    for (int T : opt.demo_lengths) {
      steps.push_back({"probe of " + std::to_string(T) + " tokens",
                       [this, T] {
                         k0 = snap()->spec.top_k;
                         bs0 = snap()->spec.block_size;
                         std::mt19937 draw(static_cast<uint32_t>(T));
                         std::vector<int> ids(static_cast<size_t>(T));
                         for (int& id : ids) id = int(draw() % uint32_t(snap()->model.vocab_size));
                         session().set_probe_tokens(ids);
                         ui.pinned = T * 4 / 5;
                         ui.kind = views::MapKind::Full;
                         ui.scale = views::Scale::Log;
                       },
                       [this, T] { return spec_ok() && analysis() && analysis()->T == T; }, 600, name("probe", T),
                       "paused"});
      steps.push_back({"k halved at " + std::to_string(T),
                       [this, T] {
                         k1 = std::max(1, k0 / 2);
                         report(views::SpecProblem(*snap(), SparseSpec{bs0, k1, snap()->spec.rule}, T));
                         session().set_top_k(k1);
                         ui.kind = views::MapKind::Sparse;
                       },
                       [this, T] { return spec_ok() && analysis() && analysis()->T == T && analysis()->spec.top_k == k1; },
                       120, name("k", T), ""});
      steps.push_back({"block size doubled at " + std::to_string(T),
                       [this, T] {
                         bs1 = bs0 * 2;
                         report(views::SpecProblem(*snap(), SparseSpec{bs1, k1, snap()->spec.rule}, T));
                         session().set_block_size(bs1);
                         ui.kind = views::MapKind::Dropped;
                       },
                       [this, T] {
                         return spec_ok() && analysis() && analysis()->T == T && analysis()->spec.block_size == bs1;
                       },
                       120, name("block", T), ""});
      steps.push_back({"spec restored at " + std::to_string(T),
                       [this] {
                         session().set_block_size(bs0);
                         session().set_top_k(k0);
                       },
                       [this, T] {
                         const Analysis* a = analysis();
                         return spec_ok() && a && a->T == T && a->spec.top_k == k0 && a->spec.block_size == bs0;
                       },
                       120, "", ""});
    }
    steps.push_back({"paradox view",
                     [this] {
                       ui.show_paradox = true;
                       views::ParadoxLoad(opt.paradox_models);
                     },
                     [this] { return !has_paradox_models() || views::ParadoxReady(); }, 600, name("paradox", 0), ""});
  }

  // The engine refused a spec: fail now with its reason instead of timing out.
  bool spec_ok() {
    if (snap() && !snap()->spec_problem.empty()) fail("engine refused the spec: " + snap()->spec_problem);
    return error.empty();
  }

  void report(const std::string& err) {
    if (!err.empty()) fail(err);
  }
  void fail(const std::string& why) {
    if (error.empty()) error = why;
  }

  void screenshot(const std::string& file, int fbw, int fbh, float sx, float sy) {
    pending_shots.push_back(views::SaveFramebufferPng((dir / file).string(), nullptr, fbw, fbh, sx, sy));
    const views::ScreenRect& r = ui.map_rect;
    nlohmann::json s = {{"file", file},
                        {"stage", steps[cur].name},
                        {"map_rect", {int(r.x * sx), int(r.y * sy), int(r.w * sx), int(r.h * sy)}},
                        {"kind", views::to_string(ui.kind)},
                        {"layer", ui.layer},
                        {"head", ui.head},
                        {"pinned", ui.pinned}};
    if (const Analysis* a = analysis()) {
      s["tokens"] = a->T;
      s["top_k"] = a->spec.top_k;
      s["block_size"] = a->spec.block_size;
    }
    shots.push_back(s);
  }

  void write_results() {
    for (std::future<std::string>& shot : pending_shots) report(shot.get());  // encoded on a worker
    std::ofstream csv(dir / "frame_times.csv");
    csv << "phase,probe_tokens,frame,wall_ms,cpu_ms,vertices,minor_faults,preempted\n";
    for (const FrameRecord& f : frames)
      csv << f.phase << ',' << f.tokens << ',' << f.index << ',' << f.ms << ',' << f.cpu_ms << ',' << f.vertices << ','
          << f.minor_faults << ',' << f.preempted << '\n';
    // {"512": {"live": {...}, "paused": {...}}, "8192": {...}}
    std::map<std::string, std::map<std::string, std::pair<std::vector<double>, std::vector<double>>>> by;
    for (const FrameRecord& f : frames) {
      auto& v = by[std::to_string(f.tokens)][f.phase];
      v.first.push_back(f.ms);
      v.second.push_back(f.cpu_ms);
    }
    // the UI thread's CPU ms per part of the frame, same grouping
    std::map<std::string, std::map<std::string, std::map<std::string, std::vector<double>>>> part_cpu;
    std::map<std::string, std::map<std::string, std::vector<double>>> vertices;
    for (const FrameRecord& f : frames) {
      for (const FramePart& p : f.parts) part_cpu[std::to_string(f.tokens)][f.phase][p.name].push_back(p.cpu_ms);
      vertices[std::to_string(f.tokens)][f.phase].push_back(f.vertices);
    }
    nlohmann::json ft = nlohmann::json::object();
    for (const auto& [tokens, phases] : by)
      for (const auto& [phase, v] : phases) {
        nlohmann::json parts = nlohmann::json::object();
        for (const auto& [name, cpu] : part_cpu[tokens][phase])
          parts[name] = {{"median_cpu_ms", views::percentile(cpu, 50)}, {"p99_cpu_ms", views::percentile(cpu, 99)},
                         {"max_cpu_ms", views::percentile(cpu, 100)}};
        ft[tokens][phase] = {{"frames", v.first.size()},
                             {"median_ms", views::percentile(v.first, 50)},
                             {"p99_ms", views::percentile(v.first, 99)},
                             {"max_ms", views::percentile(v.first, 100)},
                             {"median_cpu_ms", views::percentile(v.second, 50)},
                             {"p99_cpu_ms", views::percentile(v.second, 99)},
                             {"median_vertices", views::percentile(vertices[tokens][phase], 50)},
                             {"parts", parts}};
      }
    nlohmann::json slow = nlohmann::json::array();
    for (const SlowFrame& f : slowest)
      slow.push_back({{"wall_ms", f.ms}, {"cpu_ms", f.cpu_ms}, {"stage", f.stage}, {"probe_tokens", f.tokens},
                      {"parts", parts_json(f.parts)}});
    nlohmann::json summary = {{"ok", error.empty()},
                              {"error", error},
                              {"seconds", seconds_since(t_start)},
                              {"frame_ms", ft},
                              {"frames_drawn", frames_seen},
                              {"longest_frames", slow},
                              {"startup_ms", startup_ms},
                              {"screenshots", shots},
                              {"stages", stages},
                              {"analyses", analyses},
                              {"gpu_peak_allocated_gb", gpu_peak_allocated_bytes() / 1e9},
                              {"map_uploads", views::CurrentMapInfo().uploads},
                              {"note", "wall ms: poll to swap, includes waiting for a core; cpu ms: the UI thread's "
                                       "CPU time in the frame (software GL rasterises on other threads)"}};
    std::ofstream(dir / "summary.json") << summary.dump(2) << '\n';
    std::fprintf(stderr, "[demo] %s in %.1f s; results in %s\n", error.empty() ? "done" : ("FAILED: " + error).c_str(),
                 seconds_since(t_start), dir.string().c_str());
    code = error.empty() ? 0 : 1;
  }

  // progress line every 10 s (the demo runs headless)
  Clock::time_point t_progress = Clock::now();
  int progress_frames = 0;
  double progress_ms = 0;
  void progress(double frame_ms) {
    ++progress_frames;
    progress_ms += frame_ms;
    if (seconds_since(t_progress) < 10) return;
    std::fprintf(stderr, "[demo] %5.1f s    step %lld, %s; %d frames, %.1f ms/frame\n", seconds_since(t_start),
                 ui.snap ? (long long)ui.snap->step : -1LL, ui.snap ? ui.snap->status.c_str() : "-", progress_frames,
                 progress_ms / std::max(1, progress_frames));
    t_progress = Clock::now();
    progress_frames = 0;
    progress_ms = 0;
  }

  // Keeps the kSlowFramesKept longest frames of the whole run.
  void note_slow(const FrameCost& c) {
    if (slowest.size() == kSlowFramesKept && c.wall_ms <= slowest.back().ms) return;
    const Analysis* a = analysis();
    SlowFrame f{c.wall_ms, c.cpu_ms, cur < steps.size() ? steps[cur].name : "end", a ? a->T : 0, c.parts};
    slowest.insert(std::upper_bound(slowest.begin(), slowest.end(), f,
                                    [](const SlowFrame& x, const SlowFrame& y) { return x.ms > y.ms; }),
                   std::move(f));
    if (slowest.size() > kSlowFramesKept) slowest.pop_back();
  }

  // Every analysis the session published, with what it cost (issue 11 asks
  // for the first analysis and the re-analysis after a k change).
  const Analysis* last_recorded = nullptr;
  nlohmann::json analyses = nlohmann::json::array();
  void record_analysis() {
    const Analysis* a = analysis();
    if (!a || a == last_recorded) return;
    last_recorded = a;
    analyses.push_back({{"stage", cur < steps.size() ? steps[cur].name : "end"},
                        {"tokens", a->T},
                        {"inference", to_string(a->inference)},
                        {"block_size", a->spec.block_size},
                        {"top_k", a->spec.top_k},
                        {"seconds", a->seconds},
                        {"on_kept_qk", a->qk_reused},
                        {"bf16_autocast", a->bf16_autocast},
                        // a slider's change is published twice: its statistics,
                        // then with the sparse stream's token losses (seconds include them)
                        {"token_losses", !a->nll_sparse.empty()},
                        {"by_gpu_kernels", !a->layers.empty() && a->layers[0].by_kernels},
                        {"from_kept_rows", !a->layers.empty() && a->layers[0].from_kept_rows}});
  }

  bool frame(int fbw, int fbh, float sx, float sy, const FrameCost& previous) {
    if (finished) return true;
    progress(previous.wall_ms);
    record_analysis();
    if (frames_seen++ > 0) note_slow(previous);  // the first call has no previous frame
    if (measure_left > 0) {
      const Analysis* a = analysis();
      frames.push_back({steps[cur].measure, a ? a->T : 0, kMeasureFrames - measure_left, previous.wall_ms,
                        previous.cpu_ms, previous.vertices, previous.minor_faults, previous.preempted,
                        previous.parts});
      if (--measure_left == 0) next();
    }
    if (!error.empty() || cur >= steps.size()) {
      write_results();
      finished = true;
      return true;
    }
    if (measure_left > 0) return false;
    Step& s = steps[cur];
    if (!entered) {
      if (!ui.session) {
        fail("no session: " + ui.session_problem);
        return false;
      }
      if (!ui.snap) return false;
      std::fprintf(stderr, "[demo] %5.1f s  %s\n", seconds_since(t_start), s.name.c_str());
      entered = true;
      satisfied = false;
      t_step = Clock::now();
      try {
        s.enter();
      } catch (const std::exception& e) {
        fail(s.name + ": " + e.what());
      }
      return false;
    }
    if (!satisfied) {
      if (ui.snap && s.done()) {
        satisfied = true;
        settle = 3;  // let textures upload and the layout settle
      } else if (seconds_since(t_step) > s.timeout_s) {
        fail("timed out at '" + s.name + "'" + (ui.snap ? " (status: " + ui.snap->status + ")" : ""));
      }
      return false;
    }
    if (settle-- > 0) return false;
    if (!s.shot.empty()) screenshot(s.shot, fbw, fbh, sx, sy);
    if (!s.measure.empty()) {
      measure_left = kMeasureFrames;
      return false;
    }
    next();
    return false;
  }

  void next() {
    stages.push_back({{"name", steps[cur].name}, {"seconds", seconds_since(t_step)}});
    ++cur;
    entered = false;
  }
};

Demo::Demo(const GuiOptions& opt, views::UiState& ui) : impl_(std::make_unique<Impl>(opt, ui)) {
  std::error_code ec;
  fs::create_directories(impl_->dir, ec);
  if (opt.session.checkpoint.empty()) impl_->build();
  else impl_->build_model_demo();
}

Demo::~Demo() = default;

bool Demo::after_render(int fb_width, int fb_height, float scale_x, float scale_y, const FrameCost& previous) {
  return impl_->frame(fb_width, fb_height, scale_x, scale_y, previous);
}

void Demo::first_frame_drawn(double ms_since_start) {
  impl_->startup_ms = ms_since_start;
}

int Demo::exit_code() const { return impl_->code; }

bool Demo::measuring() const { return impl_->measure_left > 0; }

void Demo::mouse(float* x, float* y) const {
  *x = impl_->mouse_x;
  *y = impl_->mouse_y;
}

}  // namespace ssalab
