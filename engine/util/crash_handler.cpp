#include "engine/util/crash_handler.h"

#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

namespace ssalab {

namespace {

// Everything the handler prints is prepared here, before any crash: a signal
// handler may only call async-signal-safe functions (write, not printf/new).
char g_command[4096];
size_t g_command_len = 0;
char g_alt_stack[64 * 1024];
constexpr int kSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};

void say(const char* text, size_t len) {
  while (len > 0) {
    ssize_t n = ::write(STDERR_FILENO, text, len);
    if (n <= 0) return;
    text += n;
    len -= size_t(n);
  }
}
void say(const char* text) { say(text, std::strlen(text)); }

void say_hex(uintptr_t v) {
  char buf[2 + 2 * sizeof v + 1];
  size_t i = sizeof buf;
  buf[--i] = 0;
  do {
    buf[--i] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v && i > 2);
  buf[--i] = 'x';
  buf[--i] = '0';
  say(buf + i);
}

const char* signal_name(int sig) {
  switch (sig) {
    case SIGSEGV: return "SIGSEGV (invalid memory access)";
    case SIGBUS: return "SIGBUS (bad memory access, e.g. a mapped file that shrank)";
    case SIGFPE: return "SIGFPE (arithmetic error)";
    case SIGILL: return "SIGILL (illegal instruction: a library built for another CPU?)";
    case SIGABRT: return "SIGABRT (abort: a failed check in a library)";
  }
  return "a fatal signal";
}

extern "C" void on_fatal_signal(int sig, siginfo_t* info, void*) {
  say("\nssalab: crashed with ");
  say(signal_name(sig));
  if (sig != SIGABRT && info) {
    say(" at address ");
    say_hex(reinterpret_cast<uintptr_t>(info->si_addr));
  }
  say("\ncommand: ");
  say(g_command, g_command_len);
  say("\nbacktrace (innermost first; addresses resolve with addr2line -e BINARY):\n");
  void* frames[64];
  const int n = backtrace(frames, 64);
  backtrace_symbols_fd(frames, n, STDERR_FILENO);
  // SA_RESETHAND restored the default action: die of the same signal
  raise(sig);
}

}  // namespace

void install_crash_handler(int argc, const char* const* argv) {
  std::string cmd;
  for (int i = 0; i < argc; ++i) {
    if (i) cmd += ' ';
    const std::string arg = argv[i] ? argv[i] : "";
    const bool plain = !arg.empty() && arg.find_first_of(" \t\n'\"\\$`") == std::string::npos;
    if (plain) {
      cmd += arg;
    } else {  // quoted so it can be pasted back into a shell
      cmd += '\'';
      for (char c : arg) cmd += c == '\'' ? std::string("'\\''") : std::string(1, c);
      cmd += '\'';
    }
  }
  g_command_len = std::min(cmd.size(), sizeof g_command);
  std::memcpy(g_command, cmd.data(), g_command_len);

  // backtrace() loads libgcc on its first call, which allocates: do it now
  void* warm[2];
  backtrace(warm, 2);

  // the alternate stack serves this (the main) thread: enough for a stack
  // overflow of the main thread, where most deep recursion would run
  stack_t ss{};
  ss.ss_sp = g_alt_stack;
  ss.ss_size = sizeof g_alt_stack;
  sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = on_fatal_signal;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (int sig : kSignals) sigaction(sig, &sa, nullptr);
}

}  // namespace ssalab
