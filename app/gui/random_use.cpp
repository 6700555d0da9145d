#include "app/gui/random_use.h"

#include <imgui.h>
#include <imgui_internal.h>  // the open windows' rectangles, to aim the pointer at panels
#include <malloc.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cfloat>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "views/views.h"

namespace ssalab {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// named, not anonymous: RandomUse::Impl holds these (unity builds, see demo.cpp)
namespace random_use_parts {

constexpr double kHangMs = 1000;        // a frame longer than this is a hang
constexpr double kStuckSeconds = 30;    // no frame for this long: abort with a backtrace
// Resident memory at rest after the random phase may exceed that before by this much.
// The slack follows the spread of runs without a leak (session 11, seed 1, this 2-core VM):
// 410 -> 454 MiB alone, 457 -> 525 beside a test, 409 -> 576 in a CI run beside others;
// what stays after malloc_trim varies with how the worker threads' arenas were used.
constexpr double kRestGrowth = 1.2, kRestSlackMib = 160;

// Resident memory of this process, MiB.
double resident_mib() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return double(resident) * double(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

struct ActionRecord {
  double t = 0;
  std::string kind, detail;
};

struct LongFrame {
  double wall_ms = 0, cpu_ms = 0, t = 0;
  std::vector<std::string> recent_actions;  // what happened just before it
};

// A button or key held for a number of frames, then released.
struct Held {
  int frames_left = 0;
  int index = -1;
};

}  // namespace random_use_parts
using namespace random_use_parts;

struct RandomUse::Impl {
  GuiOptions opt;
  views::UiState& ui;
  std::string models_dir;
  fs::path dir;
  std::mt19937_64 rng;
  Clock::time_point t_start = Clock::now();
  double duration_s;

  // synthetic input state
  float mouse_x = 100, mouse_y = 100;
  Held button, key;
  bool ctrl = false, shift = false;
  bool random_input = false;  // only in the random phase
  int drag_frames = 0;  // > 0: dragging, moving the pointer each frame
  float drag_dx = 0, drag_dy = 0;
  float wheel = 0;
  double next_engine_action_s = 3;

  // what happened
  std::vector<ActionRecord> actions;
  std::map<std::string, int> action_counts;
  std::vector<LongFrame> longest;  // longest wall time first, at most 5
  int64_t frames = 0, frames_over_limit = 0;
  std::vector<std::pair<double, double>> rss;  // (seconds, MiB)
  double next_rss_s = 0;
  int64_t first_step = -1, training_steps = 0, analyses_shown = 0;
  const Analysis* last_analysis = nullptr;
  int models_opened = 0;
  std::string error;
  int code = 0;
  std::atomic<bool> finished{false};

  // watchdog: aborts the UI thread if no frame arrives for kStuckSeconds
  std::atomic<int64_t> last_frame_ns{0};
  std::atomic<bool> stop_watchdog{false};
  std::mutex watchdog_mutex;  // guards last_action too
  std::condition_variable watchdog_cv;
  std::string last_action = "-";
  pthread_t ui_thread = pthread_self();
  std::thread watchdog;

  Impl(const GuiOptions& o, views::UiState& u, std::string models)
      : opt(o), ui(u), models_dir(std::move(models)), dir(o.random_use_dir), rng(o.random_use_seed),
        duration_s(o.random_use_seconds) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    last_frame_ns = now_ns();
    watchdog = std::thread([this] { watch(); });
  }
  ~Impl() {
    {
      std::lock_guard<std::mutex> lock(watchdog_mutex);
      stop_watchdog = true;
    }
    watchdog_cv.notify_all();
    watchdog.join();
  }

  static int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - t_start).count(); }

  void watch() {
    std::unique_lock<std::mutex> lock(watchdog_mutex);
    while (!stop_watchdog) {
      watchdog_cv.wait_for(lock, std::chrono::seconds(1));
      if (stop_watchdog || finished) break;
      const double stuck = double(now_ns() - last_frame_ns.load()) / 1e9;
      if (stuck > kStuckSeconds) {
        std::fprintf(stderr, "[random-use] HANG: the UI thread drew no frame for %.0f s; last action: %s\n", stuck,
                     last_action.c_str());
        std::fflush(stderr);
        pthread_kill(ui_thread, SIGABRT);  // the crash handler prints the UI thread's backtrace
        return;
      }
    }
  }

  double uniform(double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); }
  int pick(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng); }
  bool chance(double p) { return uniform(0, 1) < p; }

  void note(const std::string& kind, const std::string& detail = "") {
    actions.push_back({elapsed(), kind, detail});
    ++action_counts[kind];
    std::lock_guard<std::mutex> lock(watchdog_mutex);
    last_action = kind + " " + detail;
  }

  // A point inside one of the open panels (menus and popups included) most
  // of the time, anywhere in the window otherwise.
  void aim(float window_w, float window_h) {
    std::vector<ImRect> panels;
    for (ImGuiWindow* w : GImGui->Windows)
      if (w->Active && !w->Hidden && !(w->Flags & ImGuiWindowFlags_ChildWindow) && w->Size.x > 4 && w->Size.y > 4)
        panels.push_back(w->Rect());
    if (!panels.empty() && chance(0.85)) {
      // popups and menus are last in the list: favour the newest
      const ImRect r = chance(0.3) ? panels.back() : panels[pick(int(panels.size()))];
      mouse_x = float(uniform(r.Min.x, r.Max.x));
      mouse_y = float(uniform(r.Min.y, r.Max.y));
    } else {
      mouse_x = float(uniform(0, window_w));
      mouse_y = float(uniform(0, window_h));
    }
  }

  void input(ImGuiIO& io, float window_w, float window_h) {
    if (finished || !random_input) {
      io.MousePos = ImVec2(-FLT_MAX, -FLT_MAX);
      return;
    }
    // release what was held long enough
    if (button.index >= 0 && --button.frames_left <= 0 && drag_frames <= 0) {
      io.MouseDown[button.index] = false;
      button.index = -1;
    }
    if (key.index >= 0 && --key.frames_left <= 0) {
      io.KeysDown[key.index] = false;
      key.index = -1;
      ctrl = shift = false;
    }
    if (drag_frames > 0) {
      --drag_frames;
      mouse_x = std::clamp(mouse_x + drag_dx, 0.f, window_w - 1);
      mouse_y = std::clamp(mouse_y + drag_dy, 0.f, window_h - 1);
    } else if (button.index < 0 && key.index < 0) {
      act_on_input(io, window_w, window_h);
    }
    io.MousePos = ImVec2(mouse_x, mouse_y);
    if (button.index >= 0) io.MouseDown[button.index] = true;
    if (key.index >= 0) io.KeysDown[key.index] = true;
    io.KeyCtrl = ctrl;
    io.KeyShift = shift;
    io.MouseWheel += wheel;
    wheel = 0;
  }

  void act_on_input(ImGuiIO& io, float window_w, float window_h) {
    const double r = uniform(0, 1);
    if (r < 0.30) {
      aim(window_w, window_h);
      note("move");
    } else if (r < 0.50) {  // left click, sometimes a double click's first half
      aim(window_w, window_h);
      button = {1, 0};  // down for one frame
      note("click");
    } else if (r < 0.55) {
      aim(window_w, window_h);
      button = {1, 1};
      note("right click");
    } else if (r < 0.65) {  // drag: sliders, splitters, the map's pan, window moves
      aim(window_w, window_h);
      button = {1, 0};
      drag_frames = 3 + pick(20);
      drag_dx = float(uniform(-25, 25));
      drag_dy = float(uniform(-12, 12));
      note("drag");
    } else if (r < 0.72) {
      aim(window_w, window_h);
      wheel = float(uniform(-3, 3));
      note("wheel");
    } else if (r < 0.85) {
      static const ImGuiKey_ keys[] = {ImGuiKey_Tab, ImGuiKey_LeftArrow, ImGuiKey_RightArrow, ImGuiKey_UpArrow,
                                       ImGuiKey_DownArrow, ImGuiKey_PageUp, ImGuiKey_PageDown, ImGuiKey_Home,
                                       ImGuiKey_End, ImGuiKey_Delete, ImGuiKey_Backspace, ImGuiKey_Space,
                                       ImGuiKey_Enter, ImGuiKey_Escape, ImGuiKey_KeyPadEnter, ImGuiKey_A,
                                       ImGuiKey_C, ImGuiKey_V, ImGuiKey_X, ImGuiKey_Y, ImGuiKey_Z};
      const ImGuiKey_ k = keys[pick(int(sizeof(keys) / sizeof(keys[0])))];
      const int index = io.KeyMap[k];
      if (index >= 0 && index < int(IM_ARRAYSIZE(io.KeysDown))) {
        key = {1 + pick(3), index};
        ctrl = chance(0.25);
        shift = chance(0.15);
        note("key", std::to_string(int(k)) + (ctrl ? "+ctrl" : "") + (shift ? "+shift" : ""));
      }
    } else if (r < 0.93) {  // typing: printable text, digits, now and then any code point
      const int n = 1 + pick(12);
      for (int i = 0; i < n; ++i) {
        const unsigned c = chance(0.9) ? unsigned(' ' + pick(95)) : unsigned(1 + pick(0x2FFF));
        io.AddInputCharacter(c);
      }
      note("type", std::to_string(n) + " characters");
    }  // else: a frame without input
  }

  // What a user does through the panels, every second or two.
  void engine_action() {
    Session* s = ui.session;
    const auto snap = ui.snap;
    if (!s || !snap) return;
    const std::string checkpoint = (dir / "checkpoint").string();
    const double r = uniform(0, 1);
    if (r < 0.12) {
      // keep training running most of the time: resume / start, now and then pause or stop
      const double q = uniform(0, 1);
      if (q < 0.6) {
        if (snap->state == RunState::Idle || snap->state == RunState::Done) s->start();
        else s->resume();
        note("train", "start/resume");
      } else if (q < 0.9) {
        s->pause();
        note("train", "pause");
      } else {
        s->stop();
        note("train", "stop");
      }
    } else if (r < 0.24) {
      const int k = pick(3) == 0 ? pick(200) - 10 : 1 + pick(24);  // impossible values too
      s->set_top_k(k);
      note("set k", std::to_string(k));
    } else if (r < 0.32) {
      static const int sizes[] = {0, 1, 2, 4, 8, 16, 32, 64, 128, 1000};
      const int bs = sizes[pick(10)];
      s->set_block_size(bs);
      note("set block size", std::to_string(bs));
    } else if (r < 0.37) {
      const int m = pick(3);
      s->set_method(m == 0 ? Method::Full : m == 1 ? Method::Moba : Method::Ssa);
      s->set_inference(chance(0.5) ? AttnMode::Full : AttnMode::Sparse);
      s->set_selection_rule(chance(0.5) ? SelectionRule::TopK : SelectionRule::NsaChunked);
      note("set method/inference/rule", std::to_string(m));
    } else if (r < 0.47) {
      std::string text;
      const int words = pick(3) == 0 ? pick(1200) : 5 + pick(80);
      static const char* vocab[] = {"the", "attention", "block", "of", "sparse", "model", "and", "a", "token",
                                    "ü", "数据", "\xff\xfe", "", "\n", "  ", "!!", "1234567"};
      for (int i = 0; i < words; ++i) text += std::string(vocab[pick(17)]) + " ";
      s->set_probe_text(text);
      note("set probe text", std::to_string(text.size()) + " bytes");
    } else if (r < 0.51) {
      std::vector<int> ids(size_t(1 + pick(700)));
      const int vocab = std::max(1, snap->model.vocab_size);
      for (int& id : ids) id = pick(vocab);
      if (chance(0.3)) ids[size_t(pick(int(ids.size())))] = chance(0.5) ? -1 : vocab + pick(1000);  // out of range
      s->set_probe_tokens(ids);
      note("set probe tokens", std::to_string(ids.size()));
    } else if (r < 0.57) {
      if (snap->trainable) {
        s->save(checkpoint);
        note("save", checkpoint);
      }
    } else if (r < 0.65) {  // load / unload a second model in Compare
      const double q = uniform(0, 1);
      const std::string what = q < 0.4 ? checkpoint : q < 0.6 ? models_dir + "/ssa" : q < 0.7 ? "/nonexistent/model" : "";
      views::CompareLoad(ui, what);
      note("compare", what.empty() ? "unload" : what);
    } else if (r < 0.71) {  // replace the session's model
      const double q = uniform(0, 1);
      const std::string what = q < 0.4 ? checkpoint : q < 0.75 ? models_dir + "/" + (chance(0.5) ? "moba" : "full")
                                                                : "/nonexistent/model";
      views::OpenModel(ui, what);
      ++models_opened;
      note("open model", what);
    } else if (r < 0.75) {
      if (chance(0.5)) {
        ui.show_paradox = true;
        views::ParadoxLoad(models_dir);
        note("paradox", "shipped models");
      } else {
        views::ParadoxAdd(ui, chance(0.7) ? checkpoint : "/nonexistent/model");
        note("paradox", "add");
      }
    } else if (r < 0.80) {
      const int which = pick(3);
      if (which == 0) (void)views::ExportMetricsCsv(ui, (dir / "metrics.csv").string());
      if (which == 1) (void)views::ExportLayerCsv(ui, (dir / "layers.csv").string());
      if (which == 2) (void)views::ExportMapPng((dir / "map.png").string());  // written on a worker
      note("export", std::to_string(which));
    } else if (r < 0.88) {
      bool* panels[] = {&ui.show_map, &ui.show_blocks, &ui.show_layers, &ui.show_curves, &ui.show_controls,
                        &ui.show_probe, &ui.show_compare, &ui.show_export, &ui.show_log, &ui.show_paradox,
                        &ui.show_open_model, &ui.show_generate};
      bool* p = panels[pick(12)];
      *p = !*p;
      note("toggle panel");
    } else if (r < 0.90) {
      views::ResetLayout();
      note("reset layout");
    } else if (r < 0.94) {  // generate (impossible settings too), or stop it
      if (chance(0.25)) {
        s->stop_generation();
        note("generate", "stop");
      } else {
        GenerationRequest g;
        static const char* words[] = {"the", "block", "", "ü", "\n", "attention", "数据", "sparse"};
        for (int i = pick(40); i > 0; --i) g.prompt += std::string(words[pick(8)]) + " ";
        g.mode = chance(0.5) ? AttnMode::Full : AttnMode::Sparse;
        g.max_new_tokens = pick(5) == 0 ? pick(3) - 1 : 1 + pick(64);
        g.sampling.temperature = pick(4) == 0 ? -1.0 : uniform(0, 2);
        g.sampling.top_p = pick(6) == 0 ? 0.0 : uniform(0.05, 1);
        g.sampling.seed = uint64_t(pick(1000));
        ui.show_generate = true;
        s->generate(g);
        note("generate", std::to_string(g.prompt.size()) + " bytes, " + std::to_string(g.max_new_tokens) + " tokens");
      }
    } else {
      // what the map and the query pickers set
      if (const Analysis* a = snap->analysis.get()) {
        ui.layer = pick(std::max(1, a->num_layers));
        ui.head = pick(std::max(1, a->num_heads));
        ui.pinned = chance(0.3) ? -1 : pick(int(std::max<int64_t>(1, a->T)));
      }
      ui.kind = views::MapKind(pick(3));
      ui.mean_heads = chance(0.3);
      note("map settings");
    }
  }

  void keep_longest(const FrameCost& c) {
    if (longest.size() == 5 && c.wall_ms <= longest.back().wall_ms) return;
    LongFrame f{c.wall_ms, c.cpu_ms, elapsed(), {}};
    for (size_t i = actions.size() >= 4 ? actions.size() - 4 : 0; i < actions.size(); ++i)
      f.recent_actions.push_back(actions[i].kind + " " + actions[i].detail);
    longest.insert(std::upper_bound(longest.begin(), longest.end(), f,
                                    [](const LongFrame& x, const LongFrame& y) { return x.wall_ms > y.wall_ms; }),
                   std::move(f));
    if (longest.size() > 5) longest.pop_back();
  }

  // --- the run's phases ----------------------------------------------------
  // start: train a few steps and save them as the baseline model;
  // rest "before": the app in a fixed state, resident memory measured;
  // random: random input and panel actions for the set time;
  // rest "after": the same fixed state, memory measured again.
  enum class Phase { Start, RestBefore, Random, RestAfter };
  Phase phase = Phase::Start;
  int sub = 0;  // step within a phase
  Clock::time_point t_sub = Clock::now(), random_started;
  const Analysis* analysis_mark = nullptr;
  uint64_t open_ticket = 0;
  int k0 = 0, bs0 = 0;
  double rest_mib[2] = {0, 0};
  static constexpr const char* kRestProbe =
      "Sparse attention keeps a few blocks of keys for every query. The rest of the context is dropped, and the "
      "model has to put its attention mass where the selection looks. A model trained with full attention spreads "
      "its mass thinly over many tokens; one trained only with sparse attention, oddly, spreads it even more. "
      "Sparse Sparse Attention trains both streams and aligns them, so that the blocks a query keeps hold most of "
      "what it would have read anyway. The lab shows this for every layer and head: the share of the mass inside "
      "the chosen blocks, the entropy of each row, the mass on the first token, and what sparse inference drops. "
      "Turn k up and the dropped mass falls; halve the block size and the selection becomes finer. Pin a query to "
      "see the blocks it picked, their scores and the attention it really paid to each of them.";

  std::string baseline() const { return (dir / "baseline").string(); }
  double sub_seconds() const { return std::chrono::duration<double>(Clock::now() - t_sub).count(); }
  void next_sub() {
    ++sub;
    t_sub = Clock::now();
  }

  // Returns true when the phase is complete.
  bool run_start() {
    Session& s = *ui.session;
    const Snapshot& snap = *ui.snap;
    if (sub == 0 && snap.analysis && snap.state == RunState::Idle) {
      k0 = snap.spec.top_k;
      bs0 = snap.spec.block_size;
      s.start();
      note("train", "start");
      next_sub();
    } else if (sub == 1 && snap.step >= 3) {
      s.pause();
      s.save(baseline());
      note("save", "baseline");
      next_sub();
    } else if (sub == 2) {
      if (!snap.error.empty() && snap.status.rfind("saved", 0) != 0) fail("saving the baseline: " + snap.error);
      return snap.status.rfind("saved", 0) == 0;
    }
    if (sub_seconds() > 180) fail("the session did not start training");
    return false;
  }

  // The fixed state memory is compared in: training paused, no Compare
  // model, the shipped Paradox models only, the baseline model open with the
  // first k and block size, full inference and a fixed probe, all analysed.
  bool run_rest(int which) {
    Session& s = *ui.session;
    const Snapshot& snap = *ui.snap;
    switch (sub) {
      case 0:
        s.pause();
        views::CompareLoad(ui, "");
        s.set_top_k(k0);
        s.set_block_size(bs0);
        s.set_inference(AttnMode::Full);
        open_ticket = views::OpenModel(ui, baseline());
        next_sub();
        break;
      case 1:
        if (views::ParadoxReset(models_dir)) next_sub();
        break;
      case 2:
        if (snap.loads_done < open_ticket) break;
        if (snap.model_source != baseline()) fail("the baseline did not open again: " + snap.error);
        analysis_mark = snap.analysis.get();
        s.set_probe_text(kRestProbe);
        next_sub();
        break;
      case 3:
        // the probe as the session decodes it back (its tokens may be extended to the probe length)
        if (snap.analysis && snap.analysis.get() != analysis_mark &&
            snap.probe_text.find("Sparse attention keeps a few blocks") != std::string::npos && snap.loading.empty() &&
            views::ParadoxReady())
          next_sub();
        else if (sub_seconds() > 170)
          fail(std::string("at rest, waiting for: ") + (snap.analysis.get() == analysis_mark ? "the analysis; " : "") +
               (snap.loading.empty() ? "" : "a load; ") + (views::ParadoxReady() ? "" : "the Paradox models; ") +
               "probe: " + snap.probe_text.substr(0, 60));
        break;
      case 4:
        if (sub_seconds() < 2) break;  // the last textures uploaded, the workers idle
        malloc_trim(0);  // what the allocator keeps but no longer uses is not a leak
        rest_mib[which] = resident_mib();
        rss.emplace_back(elapsed(), rest_mib[which]);
        std::fprintf(stderr, "[random-use] at rest %s the random phase: %.0f MiB resident\n",
                     which == 0 ? "before" : "after", rest_mib[which]);
        return true;
    }
    if (sub_seconds() > 180) fail("the app did not come to rest (step " + std::to_string(sub) + ")");
    return false;
  }

  void fail(const std::string& why) {
    if (error.empty()) error = why;
  }

  void count_progress() {
    const Snapshot& snap = *ui.snap;
    if (first_step >= 0 && snap.step > first_step) training_steps += snap.step - first_step;  // a model opened since restarts the count
    first_step = snap.step;
    if (snap.analysis.get() != last_analysis) ++analyses_shown;
    last_analysis = snap.analysis.get();
  }

  bool after_frame(const FrameCost& previous) {
    if (finished) return true;
    last_frame_ns = now_ns();
    const double t = elapsed();
    if (frames++ > 0) {  // the first call has no previous frame; the first frame compiles shaders
      keep_longest(previous);
      if (previous.wall_ms > kHangMs && frames > 2) {
        ++frames_over_limit;
        fail("a frame took " + std::to_string(int(previous.wall_ms)) + " ms (limit " + std::to_string(int(kHangMs)) +
             ") after: " + (actions.empty() ? "-" : actions.back().kind));
      }
    }
    if (t >= next_rss_s) {
      rss.emplace_back(t, resident_mib());
      next_rss_s = t + 0.5;
    }
    if (!ui.session) fail("no session: " + ui.session_problem);
    if (ui.session && ui.snap && error.empty()) {
      count_progress();
      switch (phase) {
        case Phase::Start:
          if (run_start()) phase = Phase::RestBefore, sub = 0, t_sub = Clock::now();
          break;
        case Phase::RestBefore:
          if (run_rest(0)) {
            phase = Phase::Random;
            random_started = Clock::now();
            ui.session->resume();
            note("train", "resume");
          }
          break;
        case Phase::Random:
          random_input = true;
          if (t >= next_engine_action_s) {
            engine_action();
            next_engine_action_s = t + uniform(0.5, 2.0);
          }
          if (std::chrono::duration<double>(Clock::now() - random_started).count() >= duration_s) {
            random_input = false;
            phase = Phase::RestAfter, sub = 0, t_sub = Clock::now();
          }
          break;
        case Phase::RestAfter:
          if (run_rest(1)) {
            write_results();
            finished = true;
            return true;
          }
          break;
      }
    }
    if (!error.empty()) {
      write_results();
      finished = true;
      return true;
    }
    return false;
  }

  void write_results() {
    std::ofstream acsv(dir / "actions.csv");
    acsv << "seconds,kind,detail\n";
    for (const ActionRecord& a : actions) acsv << a.t << ',' << a.kind << ",\"" << a.detail << "\"\n";
    std::ofstream rcsv(dir / "rss.csv");
    rcsv << "seconds,resident_mib\n";
    for (const auto& [t, mib] : rss) rcsv << t << ',' << mib << '\n';

    // Steady memory: the same state before and after the random phase, each
    // measured at rest after malloc_trim.
    double peak = 0;
    for (const auto& r : rss) peak = std::max(peak, r.second);
    const double allowed = rest_mib[0] * kRestGrowth + kRestSlackMib;
    if (error.empty() && rest_mib[1] > allowed)
      error = "resident memory grew: " + std::to_string(int(rest_mib[1])) + " MiB at rest after the random phase, " +
              std::to_string(int(rest_mib[0])) + " MiB before (allowed " + std::to_string(int(allowed)) + ")";

    int errors_seen = 0;
    nlohmann::json last_messages = nlohmann::json::array();
    for (const views::Message& m : ui.log) {
      errors_seen += m.error;
      last_messages.push_back((m.error ? "error: " : "") + m.text.substr(0, 300));
    }
    nlohmann::json slow = nlohmann::json::array();
    for (const LongFrame& f : longest)
      slow.push_back({{"wall_ms", f.wall_ms}, {"cpu_ms", f.cpu_ms}, {"seconds", f.t}, {"after", f.recent_actions}});
    int input_actions = 0, panel_actions = 0;
    static const std::vector<std::string> input_kinds = {"move", "click", "right click", "drag", "wheel", "key", "type"};
    for (const auto& [kind, n] : action_counts)
      (std::find(input_kinds.begin(), input_kinds.end(), kind) != input_kinds.end() ? input_actions : panel_actions) += n;
    nlohmann::json summary = {
        {"ok", error.empty()},
        {"error", error},
        {"seed", opt.random_use_seed},
        {"seconds", elapsed()},
        {"frames", frames},
        {"frames_over_1s", frames_over_limit},
        {"actions", actions.size()},
        {"input_actions", input_actions},
        {"panel_actions", panel_actions},
        {"actions_by_kind", action_counts},
        {"models_opened", models_opened},
        {"training_steps", training_steps},
        {"final_status", ui.snap ? ui.snap->status : std::string("-")},
        {"analyses_shown", analyses_shown},
        {"map_uploads", views::CurrentMapInfo().uploads},
        {"error_messages_shown", errors_seen},
        {"last_messages", last_messages},
        {"longest_frames", slow},
        {"random_seconds", duration_s},
        {"resident_mib",
         {{"start", rss.empty() ? 0.0 : rss.front().second},
          {"peak", peak},
          {"at_rest_before", rest_mib[0]},
          {"at_rest_after", rest_mib[1]},
          {"allowed_after", allowed}}},
        {"note", "at rest: training paused, the baseline model open, no Compare model, the shipped Paradox models, "
                 "a fixed probe analysed, after malloc_trim; memory is steady when at_rest_after <= 1.2 * "
                 "at_rest_before + 160 MiB"}};
    std::ofstream(dir / "summary.json") << summary.dump(2) << '\n';
    std::fprintf(stderr,
                 "[random-use] %s: %.0f s, %lld frames, %zu actions (%d input, %d through panels), longest frame "
                 "%.0f ms, resident memory at rest %.0f MiB before, %.0f MiB after, %.0f MiB peak\n",
                 error.empty() ? "passed" : ("FAILED: " + error).c_str(), elapsed(), (long long)frames,
                 actions.size(), input_actions, panel_actions, longest.empty() ? 0.0 : longest.front().wall_ms,
                 rest_mib[0], rest_mib[1], peak);
    code = error.empty() ? 0 : 1;
  }
};

RandomUse::RandomUse(const GuiOptions& opt, views::UiState& ui, std::string models_dir)
    : impl_(std::make_unique<Impl>(opt, ui, std::move(models_dir))) {}
RandomUse::~RandomUse() = default;

void RandomUse::input(ImGuiIO& io, float window_w, float window_h) { impl_->input(io, window_w, window_h); }
bool RandomUse::after_frame(const FrameCost& previous) { return impl_->after_frame(previous); }
int RandomUse::exit_code() const { return impl_->code; }

}  // namespace ssalab
