// The desktop app's main loop: poll, new frame, draw each panel, render, swap.
// Everything slow happens elsewhere: training and analysis on the Session's
// worker thread, checkpoint loading and second-model analyses on the
// background workers (engine/util/background.h); a frame only reads the
// latest snapshot.
#include "app/gui/gui.h"

#include <GLFW/glfw3.h>
#include <sys/resource.h>
#include <GL/gl.h>
#include <backends/imgui_impl_glfw.h>
#include <backends/imgui_impl_opengl3.h>
#include <imgui.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cfloat>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <future>
#include <memory>
#include <thread>

#include "app/gui/demo.h"
#include "app/gui/random_use.h"
#include "engine/util/files.h"
#include "engine/util/priority.h"
#include "views/views.h"

namespace ssalab {

namespace {

using Clock = std::chrono::steady_clock;

// CPU time of the calling thread: a frame's own cost, whatever else the
// machine runs (wall time per frame includes waiting for a core).
double thread_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// The calling thread's page faults and involuntary context switches so far.
std::pair<long, long> thread_faults_and_preemptions() {
  rusage r{};
  getrusage(RUSAGE_THREAD, &r);
  return {r.ru_minflt, r.ru_nivcsw};
}

// When this executable's static objects were made: after the dynamic loader
// mapped LibTorch and the other libraries, just before main(). (The kernel's
// process start time would count whatever ran before an exec, such as the
// shell of scripts/run.sh; scripts/time_to_window.sh times the whole way.)
const Clock::time_point g_executable_started = Clock::now();

double ms_since_start() {
  return std::chrono::duration<double, std::milli>(Clock::now() - g_executable_started).count();
}

// Ctrl-C / SIGTERM close the window the normal way (layout saved, engine stopped).
std::atomic<bool> g_quit{false};
extern "C" void on_signal(int) { g_quit = true; }

void glfw_error(int code, const char* msg) { std::fprintf(stderr, "ssalab gui: GLFW error %d: %s\n", code, msg); }

// ~/.config/ssalab/imgui.ini (XDG_CONFIG_HOME honoured), else the working dir.
std::string ini_path() {
  std::string dir = user_config_dir();
  return dir.empty() ? "ssalab_imgui.ini" : dir + "/imgui.ini";
}

void load_fonts(ImGuiIO& io) {
  // Latin, Greek, general punctuation, arrows, block elements (U+2581).
  static const ImWchar ranges[] = {0x0020, 0x024F, 0x0370, 0x03FF, 0x2000, 0x206F, 0x2190, 0x21FF, 0x2500, 0x259F, 0};
  for (const char* path : {"/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                           "/usr/share/fonts/TTF/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"}) {
    if (std::filesystem::exists(path) && io.Fonts->AddFontFromFileTTF(path, 15.0f, nullptr, ranges)) return;
  }
  io.Fonts->AddFontDefault();
}

void style() {
  ImGui::StyleColorsDark();
  ImGuiStyle& s = ImGui::GetStyle();
  s.WindowRounding = 3;
  s.FrameRounding = 2;
  s.WindowPadding = ImVec2(8, 6);
  s.ItemSpacing = ImVec2(7, 5);
}

}  // namespace

int run_gui(const GuiOptions& opt_in) {
  GuiOptions opt = opt_in;
  const bool demo_mode = !opt.demo_dir.empty();
  const bool random_mode = !opt.random_use_dir.empty();
  const std::string models_dir = std::filesystem::absolute("assets/models").string();
  if (random_mode) {
    // Random typing and clicks write files (saves, exports) where the panels'
    // path fields point, relative to the working directory: make that the
    // results folder, after fixing the paths the session needs.
    opt.session.work_dir = std::filesystem::absolute(opt.session.work_dir).string();
    for (std::string* path : {&opt.session.corpus, &opt.session.checkpoint, &opt.session.attach, &opt.compare_checkpoint})
      if (!path->empty() && std::filesystem::exists(*path)) *path = std::filesystem::absolute(*path).string();
    opt.random_use_dir = std::filesystem::absolute(opt.random_use_dir).string();
    std::error_code ec;
    std::filesystem::create_directories(opt.random_use_dir, ec);
    std::filesystem::current_path(opt.random_use_dir, ec);
    if (ec) {
      std::fprintf(stderr, "ssalab gui: cannot use %s: %s\n", opt.random_use_dir.c_str(), ec.message().c_str());
      return 1;
    }
  }
  if (demo_mode) {
    // The demo shows the app, not a good model: small steps keep it short on 2 cores.
    opt.session.probe_tokens = std::max(64, opt.demo_tokens);
    opt.session.train.batch_size = std::min(opt.session.train.batch_size, 4);
    opt.session.train.eval_every = 10;
    opt.session.train.eval_batches = std::min(opt.session.train.eval_batches, 2);
    opt.session.analyze_every = 10;
  }

  // Engine work yields to the UI: library pools that exist already (OpenBLAS
  // starts its threads when it loads) and the session's worker run at a lower
  // priority; the GL threads created below inherit this thread's.
  const int backgrounded = lower_other_threads_priority();
  opt.session.background_priority = true;
  if (demo_mode) std::fprintf(stderr, "ssalab gui: %d library threads run at background priority\n", backgrounded);

  glfwSetErrorCallback(glfw_error);
  if (!glfwInit()) {
    std::fprintf(stderr, "ssalab gui: cannot initialise GLFW (no display? run under xvfb-run for a headless screen)\n");
    return 1;
  }
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 0);
  GLFWwindow* window = glfwCreateWindow(1600, 1000, "ssalab - sparse attention lab", nullptr, nullptr);
  if (!window) {
    std::fprintf(stderr, "ssalab gui: cannot open an OpenGL 3.0 window\n");
    glfwTerminate();
    return 1;
  }
  glfwMakeContextCurrent(window);
  glfwSwapInterval(demo_mode ? 0 : 1);

  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGuiIO& io = ImGui::GetIO();
  static std::string ini;  // ImGui keeps the pointer
  ini = ini_path();
  // the demo and random use start from the default layout and leave the user's alone
  io.IniFilename = demo_mode || random_mode ? nullptr : ini.c_str();
  style();
  ImGui_ImplGlfw_InitForOpenGL(window, true);
  ImGui_ImplOpenGL3_Init("#version 130");
  load_fonts(io);

  views::UiState ui;
  ui.persist_settings = !demo_mode && !random_mode;
  // The shipped FullAttn / MoBA / SSA models open in the Paradox view; the
  // scripted demo keeps its fixed layout without it.
  ui.show_paradox = !demo_mode;
  views::SetModelsDevice(opt.session.train.device);  // beside the session's model
  if (!demo_mode) views::ParadoxLoad(models_dir);
  std::unique_ptr<Session> session;
  try {
    session = std::make_unique<Session>(opt.session);  // returns at once; the worker prepares data
    ui.session = session.get();
  } catch (const std::exception& e) {
    ui.session_problem = e.what();
    ui.error(std::string("cannot start the session: ") + e.what());
  }
  if (!opt.compare_checkpoint.empty()) views::CompareLoad(ui, opt.compare_checkpoint);
  std::unique_ptr<Demo> demo = demo_mode ? std::make_unique<Demo>(opt, ui) : nullptr;
  std::unique_ptr<RandomUse> random_use = random_mode ? std::make_unique<RandomUse>(opt, ui, models_dir) : nullptr;

  int exit_code = 0;
  FrameCost cost, last_cost;  // this frame's parts as they run; the previous frame's
  bool first_frame = true;
  // PNG captures being encoded on a worker: reported in the log when written.
  std::vector<std::pair<std::string, std::future<std::string>>> pending_captures;
  auto report_captures = [&](bool wait) {
    for (auto it = pending_captures.begin(); it != pending_captures.end();) {
      if (!wait && it->second.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        ++it;
        continue;
      }
      const std::string err = it->second.get();
      if (err.empty()) ui.info("wrote " + it->first);
      else ui.error("capture failed: " + err);
      it = pending_captures.erase(it);
    }
  };
  // Runs one part of the frame and notes its wall and CPU time.
  auto timed = [&cost](const char* name, auto&& part) {
    const Clock::time_point w0 = Clock::now();
    const double c0 = thread_cpu_ms();
    part();
    cost.parts.push_back({name, std::chrono::duration<double, std::milli>(Clock::now() - w0).count(),
                          thread_cpu_ms() - c0});
  };
  const auto frame_budget = std::chrono::microseconds(16667);  // at most ~60 frames/s, vsync or not
  // Idle frames cost CPU that training needs (2 cores, software GL under Xvfb):
  // after input or a new snapshot draw at full rate for a few frames, else
  // wait for events up to 250 ms (4 frames/s keeps spinners and futures moving).
  int active_frames = 10;
  int64_t last_version = -1;
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  while (!glfwWindowShouldClose(window) && !g_quit) {
    const bool lazy = active_frames <= 0 && !(demo && demo->measuring()) && !random_use;
    if (lazy) {
      const Clock::time_point w0 = Clock::now();
      glfwWaitEventsTimeout(0.25);
      if (Clock::now() - w0 < std::chrono::milliseconds(240)) active_frames = 10;  // woken by an event
    } else {
      glfwPollEvents();
      --active_frames;
    }
    const Clock::time_point t0 = Clock::now();
    const double cpu0 = thread_cpu_ms();
    const auto [faults0, preempted0] = thread_faults_and_preemptions();
    cost.parts.clear();
    timed("new frame", [&] {
      ImGui_ImplOpenGL3_NewFrame();
      ImGui_ImplGlfw_NewFrame();
      if (demo) {  // the pointer of a headless screen is wherever the demo puts it
        float mx, my;
        demo->mouse(&mx, &my);
        io.MousePos = mx < 0 ? ImVec2(-FLT_MAX, -FLT_MAX) : ImVec2(mx, my);
      }
      if (random_use) random_use->input(io, io.DisplaySize.x, io.DisplaySize.y);
      ImGui::NewFrame();
    });

    timed("snapshot", [&] { views::BeginFrameState(ui); });
    if (ui.snap && ui.snap->version != last_version) {
      last_version = ui.snap->version;
      active_frames = std::max(active_frames, 3);
    }
    if (io.WantTextInput || ImGui::IsAnyMouseDown()) active_frames = std::max(active_frames, 2);
    if (ImGui::IsKeyPressed(ImGui::GetKeyIndex(ImGuiKey_Escape)) && !io.WantTextInput) ui.pinned = -1;
    timed("menu bar", [&] { views::DrawMenuBar(ui); });
    timed("controls", [&] { views::DrawControls(ui); });
    timed("export", [&] { views::DrawExport(ui); });
    timed("text probe", [&] { views::DrawTextProbe(ui); });
    timed("attention map", [&] { views::DrawAttentionMap(ui); });
    timed("selected blocks", [&] { views::DrawSelectedBlocks(ui); });
    timed("curves", [&] { views::DrawCurves(ui); });
    timed("layer metrics", [&] { views::DrawLayerMetrics(ui); });
    timed("compare", [&] { views::DrawCompare(ui); });
    timed("paradox", [&] { views::DrawParadox(ui); });
    timed("open model", [&] { views::DrawOpenModel(ui); });
    timed("generate", [&] { views::DrawGenerate(ui); });
    timed("status bar", [&] { views::DrawStatusBar(ui); });

    int fb_w = 0, fb_h = 0;
    timed("render", [&] {
      ImGui::Render();
      glfwGetFramebufferSize(window, &fb_w, &fb_h);
      glViewport(0, 0, fb_w, fb_h);
      glClearColor(0.09f, 0.09f, 0.11f, 1.0f);
      glClear(GL_COLOR_BUFFER_BIT);
      ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
      cost.vertices = ImGui::GetDrawData()->TotalVtxCount;
    });

    // PNG captures requested this frame read the back buffer before the swap.
    timed("captures", [&] {
      for (const views::CaptureRequest& c : ui.captures)
        pending_captures.emplace_back(c.path, views::SaveFramebufferPng(c.path, c.whole_window ? nullptr : &c.rect,
                                                                        fb_w, fb_h, io.DisplayFramebufferScale.x,
                                                                        io.DisplayFramebufferScale.y));
      ui.captures.clear();
      report_captures(false);
    });
    if (demo && demo->after_render(fb_w, fb_h, io.DisplayFramebufferScale.x, io.DisplayFramebufferScale.y,
                                   last_cost)) {
      exit_code = demo->exit_code();
      glfwSetWindowShouldClose(window, 1);
    }
    if (random_use && random_use->after_frame(last_cost)) {
      exit_code = random_use->exit_code();
      glfwSetWindowShouldClose(window, 1);
    }
    timed("swap", [&] { glfwSwapBuffers(window); });
    if (first_frame) {
      first_frame = false;
      const double startup = ms_since_start();
      std::fprintf(stderr, "ssalab gui: first frame drawn %.2f s after start-up (libraries loaded)\n", startup / 1e3);
      if (demo) demo->first_frame_drawn(startup);
    }

    const Clock::duration work = Clock::now() - t0;
    cost.wall_ms = std::chrono::duration<double, std::milli>(work).count();
    cost.cpu_ms = thread_cpu_ms() - cpu0;
    const auto [faults1, preempted1] = thread_faults_and_preemptions();
    cost.minor_faults = faults1 - faults0;
    cost.preempted = preempted1 - preempted0;
    std::swap(cost, last_cost);
    ui.frame_ms.push_back(float(last_cost.wall_ms));
    if (ui.frame_ms.size() > 4096) ui.frame_ms.erase(ui.frame_ms.begin(), ui.frame_ms.begin() + 2048);
    if (work < frame_budget) std::this_thread::sleep_for(frame_budget - work);
  }

  // Shutdown: GL and ImGui first (the files of the demo are written by now),
  // then the engine threads. A running analysis of a long probe cannot be
  // interrupted and may take minutes on a CPU; after a grace period the
  // process exits without waiting for it (checkpoints are written atomically).
  report_captures(true);  // PNGs asked for are on disk before the process goes
  glfwHideWindow(window);
  if (session) session->pause();
  views::ShutdownViews();
  demo.reset();
  random_use.reset();
  ImGui_ImplOpenGL3_Shutdown();
  ImGui_ImplGlfw_Shutdown();
  ImGui::DestroyContext();
  glfwDestroyWindow(window);
  glfwTerminate();
  auto joined = std::async(std::launch::async, [&session] {
    views::JoinViewWorkers();
    session.reset();  // joins the worker after its current step / analysis
  });
  if (joined.wait_for(std::chrono::seconds(demo_mode || random_mode ? 3 : 10)) != std::future_status::ready) {
    std::fprintf(stderr, "ssalab gui: the engine is still busy (analysis of a long probe); exiting without waiting\n");
    std::fflush(nullptr);
    std::_Exit(exit_code);
  }
  return exit_code;
}

}  // namespace ssalab
