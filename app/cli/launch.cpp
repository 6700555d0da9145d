#include "app/cli/launch.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>

#include "engine/util/error.h"

namespace ssalab::cli {

namespace {

// A TCP port nobody listens on now, for rank 0's rendezvous.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error("cannot open a socket to find a free port: " + std::string(std::strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  if (!ok) throw Error("cannot find a free port on 127.0.0.1: " + std::string(std::strerror(errno)));
  return ntohs(a.sin_port);
}

std::vector<pid_t> g_children;  // for the forwarding signal handler

void forward_signal(int sig) {
  for (pid_t p : g_children)
    if (p > 0) ::kill(p, sig);
}

std::string describe(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return "was killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "exited with status " + std::to_string(WEXITSTATUS(status));
}

int exit_code(int status) { return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status); }

}  // namespace

std::vector<std::string> without_nproc(int argc, char** argv) {
  std::vector<std::string> out;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc") {
      ++i;  // and its value
      continue;
    }
    if (a.rfind("--nproc=", 0) == 0) continue;
    out.push_back(a);
  }
  return out;
}

int launch_local_ranks(int nproc, const std::vector<std::string>& args) {
  if (nproc < 1) throw Error("--nproc must be >= 1, got " + std::to_string(nproc));
  const std::string port = std::to_string(free_port());
  std::fprintf(stderr, "[launch] %d processes on this machine, rendezvous at 127.0.0.1:%s\n", nproc, port.c_str());
  std::fflush(stderr);
  g_children.assign(nproc, -1);
  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) throw Error("cannot start rank " + std::to_string(r) + ": " + std::strerror(errno));
    if (pid == 0) {
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", port.c_str(), 1);
      std::vector<char*> av;
      for (const std::string& a : args) av.push_back(const_cast<char*>(a.c_str()));
      av.push_back(nullptr);
      ::execv("/proc/self/exe", av.data());
      std::fprintf(stderr, "[launch] cannot run %s: %s\n", args[0].c_str(), std::strerror(errno));
      ::_exit(127);
    }
    g_children[r] = pid;
  }
  // Ctrl-C reaches the children through the terminal; a SIGTERM sent to the
  // launcher alone (a scheduler ending the job) is passed on
  std::signal(SIGTERM, forward_signal);

  using clock = std::chrono::steady_clock;
  constexpr auto kGrace = std::chrono::seconds(60);
  int running = nproc, first_failure = 0;
  clock::time_point failed_at{};
  while (running > 0) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, first_failure ? WNOHANG : 0);
    if (pid < 0 && errno == EINTR) continue;
    if (pid < 0) break;
    if (pid == 0) {  // a rank failed; the others have not ended yet
      if (clock::now() - failed_at > kGrace) {
        std::fprintf(stderr, "[launch] stopping the ranks still running %lld s after the failure\n",
                     (long long)kGrace.count());
        forward_signal(SIGKILL);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    int rank = 0;
    while (rank < nproc && g_children[rank] != pid) ++rank;
    if (rank == nproc) continue;
    g_children[rank] = -1;
    --running;
    if (status != 0) {
      std::fprintf(stderr, "[launch] rank %d (pid %d) %s\n", rank, int(pid), describe(status).c_str());
      if (!first_failure) {
        first_failure = exit_code(status);
        failed_at = clock::now();
      }
    }
  }
  std::signal(SIGTERM, SIG_DFL);
  if (first_failure) std::fprintf(stderr, "[launch] the run failed; its last checkpoint is as rank 0 last wrote it\n");
  return first_failure;
}

}  // namespace ssalab::cli
