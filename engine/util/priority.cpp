#include "engine/util/priority.h"

#if defined(__linux__)
#include <dirent.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

namespace ssalab {
namespace {
// Linux keeps a nice value per thread: setpriority(PRIO_PROCESS, tid) with a
// thread id changes that thread only (a documented deviation from POSIX).
long current_tid() { return syscall(SYS_gettid); }
}  // namespace

int lower_this_thread_priority(int nice) {
  return setpriority(PRIO_PROCESS, (id_t)current_tid(), nice) == 0 ? 1 : 0;
}

int lower_other_threads_priority(int nice) {
  DIR* dir = opendir("/proc/self/task");
  if (!dir) return 0;
  const long self = current_tid();
  int changed = 0;
  while (const dirent* e = readdir(dir)) {
    char* end = nullptr;
    const long tid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || tid == self) continue;
    if (setpriority(PRIO_PROCESS, (id_t)tid, nice) == 0) ++changed;
  }
  closedir(dir);
  return changed;
}

int this_thread_nice() {
  errno = 0;
  return getpriority(PRIO_PROCESS, (id_t)current_tid());
}

}  // namespace ssalab
#else
namespace ssalab {
int lower_this_thread_priority(int) { return 0; }
int lower_other_threads_priority(int) { return 0; }
int this_thread_nice() { return 0; }
}  // namespace ssalab
#endif
