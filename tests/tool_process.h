// Running this tree's command-line tools from tests: start one with its
// output in a file, wait for it (bounded), read what it wrote.
#pragma once

#include "runtime/process.h"

#include <lstash/types.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace lstash::testing_support {

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Waits for `pid` to exit; past `timeout_s` sends SIGTERM (a launcher then
// stops and reaps its children) and waits. Returns the exit code, or 128 +
// the signal.
inline int WaitForExit(pid_t pid, int timeout_s) {
  const std::int64_t deadline = SystemClock()->MonotonicNanos() + std::int64_t{timeout_s} * 1'000'000'000;
  int status = 0;
  for (;;) {
    if (waitpid(pid, &status, WNOHANG) == pid) break;
    if (SystemClock()->MonotonicNanos() > deadline) {
      kill(pid, SIGTERM);
      waitpid(pid, &status, 0);
      break;
    }
    usleep(20'000);  // waiting for a child process to finish
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The last line of `output` that is a JSON object (a tool's --json summary).
inline std::string LastJsonLine(const std::string& output) {
  std::string last, line;
  std::istringstream lines(output);
  while (std::getline(lines, line)) {
    if (!line.empty() && line[0] == '{') last = line;
  }
  return last;
}

struct ToolRun {
  int code = -1;
  std::string output;  // stdout and stderr together
};

// Runs `argv` to completion with its output in `log_path`.
inline ToolRun RunTool(const std::vector<std::string>& argv, const std::string& log_path, int timeout_s) {
  ToolRun r;
  auto pid = runtime::Spawn(argv, log_path);
  if (!pid.ok()) {
    r.output = pid.status().ToString();
    return r;
  }
  r.code = WaitForExit(*pid, timeout_s);
  r.output = ReadFile(log_path);
  return r;
}

}  // namespace lstash::testing_support
