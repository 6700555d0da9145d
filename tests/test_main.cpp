// Catch2 v2 runner, compiled once and shared by every test executable. A
// crash prints a backtrace before the process dies, so a segfault on a
// machine we cannot log into (the GPU machine) still says where it happened.
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_NO_POSIX_SIGNALS
#include <catch2/catch.hpp>

#include <execinfo.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ucontext.h>

static void print_backtrace_and_die(int sig, siginfo_t* info, void* ctx) {
  static const char msg[] = "\n*** fatal signal, backtrace:\n";
  (void)!::write(2, msg, sizeof msg - 1);
  void* frames[64];
  int n = ::backtrace(frames, 64);
  ::backtrace_symbols_fd(frames, n, 2);
  // the faulting instruction and its caller, which backtrace() may not reach
  const auto* uc = static_cast<const ucontext_t*>(ctx);
  const auto pc = uintptr_t(uc->uc_mcontext.gregs[REG_RIP]);
  const auto sp = reinterpret_cast<const uintptr_t*>(uc->uc_mcontext.gregs[REG_RSP]);
  std::fprintf(stderr, "fault address %p, pc %p, [sp] %p [sp+8] %p\n", info->si_addr, (void*)pc, (void*)sp[0],
               (void*)sp[1]);
  void* near[3] = {(void*)pc, (void*)sp[0], (void*)sp[1]};
  ::backtrace_symbols_fd(near, 3, 2);
  if (std::getenv("SSALAB_CRASH_MAPS")) {
    FILE* maps = std::fopen("/proc/self/maps", "r");
    for (char line[512]; maps && std::fgets(line, sizeof line, maps);) std::fputs(line, stderr);
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

int main(int argc, char** argv) {
  struct sigaction sa {};
  sa.sa_sigaction = print_backtrace_and_die;
  sa.sa_flags = SA_SIGINFO;
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) sigaction(sig, &sa, nullptr);
  return Catch::Session().run(argc, argv);
}
