// Child processes for the launcher: start with output to a log file, signal,
// reap. Every child dies with its launcher (PR_SET_PDEATHSIG), so a launcher
// killed with SIGKILL leaves nothing behind.
#pragma once

#include <lstash/status.h>

#include <sys/types.h>

#include <string>
#include <vector>

namespace lstash::runtime {

// Starts `argv` (argv[0] is the program path) with stdout and stderr
// appended to `log_path`. Returns the child's pid.
Result<pid_t> Spawn(const std::vector<std::string>& argv, const std::string& log_path);

// A child that ended: its pid and how (exit code, or 128 + signal).
struct Exited {
  pid_t pid = 0;
  int code = 0;
  bool signaled = false;
};

// Reaps every child that has ended, without waiting.
std::vector<Exited> ReapExited();

// SIGTERM to each pid, then SIGKILL to those still alive after
// `grace_nanos`; reaps them all.
void StopAll(const std::vector<pid_t>& pids, std::int64_t grace_nanos);

// The directory of the running executable (to find sibling tools).
std::string SelfDirectory();

}  // namespace lstash::runtime
