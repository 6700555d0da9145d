// The crash handler (engine/util/crash_handler.h) in a forked child that
// really crashes: the message names the signal, the command line comes back
// quoted as given, a backtrace follows, and the child still dies of the
// signal it got (exit status unchanged for shells and core dumps).
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <string>

#include "engine/util/crash_handler.h"

namespace {

struct Crash {
  int signal = 0;
  std::string stderr_text;
};

// Runs `crash` in a child with the handler installed; returns how it died.
Crash crash_in_child(const std::function<void()>& crash) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    const char* argv[] = {"ssalab", "eval", "my model", "--k", "4"};
    ssalab::install_crash_handler(5, argv);
    crash();
    _exit(0);  // not reached
  }
  close(fds[1]);
  Crash c;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) c.stderr_text.append(buf, size_t(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFSIGNALED(status)) c.signal = WTERMSIG(status);
  return c;
}

}  // namespace

TEST_CASE("a segmentation fault prints the signal, the command line and a backtrace", "[crash]") {
  Crash c = crash_in_child([] {
    // volatile both ways: the compiler can neither see the null nor drop the
    // store as dead (the child _exit()s right after)
    volatile int* volatile nowhere = nullptr;
    *nowhere = 1;
  });
  INFO(c.stderr_text);
  CHECK(c.signal == SIGSEGV);
  CHECK(c.stderr_text.find("crashed with SIGSEGV") != std::string::npos);
  CHECK(c.stderr_text.find("at address 0x0") != std::string::npos);
  CHECK(c.stderr_text.find("command: ssalab eval 'my model' --k 4") != std::string::npos);
  CHECK(c.stderr_text.find("backtrace") != std::string::npos);
  CHECK(c.stderr_text.find("test_") != std::string::npos);  // a frame of this binary (-rdynamic names)
}

TEST_CASE("an abort is reported and still ends the process with SIGABRT", "[crash]") {
  Crash c = crash_in_child([] { std::abort(); });
  INFO(c.stderr_text);
  CHECK(c.signal == SIGABRT);
  CHECK(c.stderr_text.find("crashed with SIGABRT") != std::string::npos);
  CHECK(c.stderr_text.find("command: ssalab eval") != std::string::npos);
}

TEST_CASE("a stack overflow is reported from the alternate stack", "[crash]") {
  Crash c = crash_in_child([] {
    std::function<int(int)> deep = [&deep](int n) {
      volatile char pad[4096];
      pad[0] = char(n);
      return deep(n + 1) + pad[0];
    };
    deep(0);
  });
  INFO(c.stderr_text.substr(0, 2000));
  CHECK(c.signal == SIGSEGV);
  CHECK(c.stderr_text.find("crashed with SIGSEGV") != std::string::npos);
}
