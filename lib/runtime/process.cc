#include "runtime/process.h"

#include <lstash/types.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace lstash::runtime {

Result<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  if (argv.empty()) return InvalidArgument("Spawn: no program");
  const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return IOError("cannot open log " + log_path + ": " + std::strerror(errno));
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(log);
    return IOError(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // The child: die with the launcher, write to the log, become the program.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);  // the launcher died before prctl
    dup2(log, STDOUT_FILENO);
    dup2(log, STDERR_FILENO);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    execv(args[0], args.data());
    const char* msg = "exec failed\n";
    (void)!write(STDERR_FILENO, msg, std::strlen(msg));
    _exit(127);
  }
  close(log);
  return pid;
}

std::vector<Exited> ReapExited() {
  std::vector<Exited> out;
  for (;;) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    Exited e;
    e.pid = pid;
    if (WIFEXITED(status)) {
      e.code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      e.signaled = true;
      e.code = 128 + WTERMSIG(status);
    }
    out.push_back(e);
  }
  return out;
}

void StopAll(const std::vector<pid_t>& pids, std::int64_t grace_nanos) {
  for (pid_t p : pids) {
    if (p > 0) kill(p, SIGTERM);
  }
  for (pid_t p : pids) {
    if (p > 0) kill(p, SIGCONT);  // a paused child cannot act on SIGTERM
  }
  const std::int64_t deadline = SystemClock()->MonotonicNanos() + grace_nanos;
  std::vector<pid_t> alive(pids.begin(), pids.end());
  while (!alive.empty() && SystemClock()->MonotonicNanos() < deadline) {
    std::vector<pid_t> still;
    for (pid_t p : alive) {
      if (p <= 0) continue;
      int status = 0;
      const pid_t r = waitpid(p, &status, WNOHANG);
      if (r == 0) still.push_back(p);
    }
    alive.swap(still);
    if (!alive.empty()) usleep(5000);  // polling a child's exit, not synchronising a test
  }
  for (pid_t p : alive) {
    kill(p, SIGKILL);
    int status = 0;
    waitpid(p, &status, 0);
  }
}

std::string SelfDirectory() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

}  // namespace lstash::runtime
