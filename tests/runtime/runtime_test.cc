// Integration tests with real processes: lstash-run starts a store server and
// a streaming wordcount (source, 2 mappers, 2 reducers) as separate
// processes, injects a fault, and checks the final counts against a direct
// count. Each test reaps the launcher (which reaps everything it started),
// even when it fails.
#include "runtime/process.h"

#include <lstash/types.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "scratch_dir.h"
#include "tool_process.h"

namespace lstash::runtime {
namespace {

using testing_support::ReadFile;
using testing_support::ScratchDir;
using testing_support::WaitForExit;

struct JobResult {
  int code = -1;
  std::string output;
  nlohmann::json summary;  // the --json line
};

std::int64_t Now() { return SystemClock()->MonotonicNanos(); }

// A running lstash-run (plus --json and a short, light job unless
// overridden), with its output in a scratch directory. The destructor kills
// and reaps it if a test ends early; it reaps everything it started.
class Launcher {
 public:
  explicit Launcher(std::vector<std::string> args) : dir_("lstash_runtime_test") {
    log_ = dir_.path() + "/run.log";
    run_dir_ = dir_.path() + "/run";
    std::vector<std::string> argv = {std::string(LSTASH_TOOLS_DIR) + "/lstash-run", "--json", "--run-dir", run_dir_};
    for (const auto& [flag, value] : {std::pair{"--duration", "6"}, {"--rate", "4000"}, {"--grace", "60"}}) {
      if (std::find(args.begin(), args.end(), flag) == args.end()) argv.insert(argv.end(), {flag, value});
    }
    argv.insert(argv.end(), args.begin(), args.end());
    auto pid = Spawn(argv, log_);
    if (pid.ok()) pid_ = *pid;
    else start_error_ = pid.status().ToString();
  }
  ~Launcher() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);  // its children die with it (PR_SET_PDEATHSIG)
      waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const { return pid_; }
  const std::string& run_dir() const { return run_dir_; }
  std::string output() const { return start_error_.empty() ? ReadFile(log_) : start_error_; }

  // Waits (bounded) until `path_or_log` -- the log if empty -- contains `text`.
  bool WaitFor(const std::string& text, int timeout_s, const std::string& path = "") const {
    const std::int64_t deadline = Now() + std::int64_t{timeout_s} * 1'000'000'000;
    while (Now() < deadline) {
      if (ReadFile(path.empty() ? log_ : path).find(text) != std::string::npos) return true;
      if (pid_ <= 0 || Exited()) return false;
      usleep(20'000);  // polling a file another process writes
    }
    return false;
  }

  // Whether it has exited (it stays unreaped for Wait).
  bool Exited() const {
    siginfo_t info{};
    return waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid != 0;
  }

  // Waits for it to exit (SIGTERM past `timeout_s`: it then stops and reaps
  // its children) and collects the result.
  JobResult Wait(int timeout_s = 120) {
    JobResult r;
    if (pid_ <= 0) {
      r.output = start_error_;
      return r;
    }
    r.code = WaitForExit(pid_, timeout_s);
    pid_ = 0;
    r.output = ReadFile(log_);
    r.summary = nlohmann::json::parse(testing_support::LastJsonLine(r.output), nullptr, false);
    return r;
  }

 private:
  ScratchDir dir_;
  std::string log_, run_dir_, start_error_;
  pid_t pid_ = 0;
};

JobResult RunLauncher(std::vector<std::string> args, int timeout_s = 120) {
  Launcher launcher(std::move(args));
  return launcher.Wait(timeout_s);
}

// Processes whose command line mentions `text` (the run directory of a job
// is in every one of its processes' arguments).
std::vector<pid_t> ProcessesMentioning(const std::string& text) {
  std::vector<pid_t> found;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = ReadFile(e.path().string() + "/cmdline");
    if (cmdline.find(text) != std::string::npos) found.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return found;
}

void ExpectPass(const JobResult& r) {
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_TRUE(r.summary.is_object()) << r.output;
  EXPECT_EQ(r.summary.value("result", ""), "PASS") << r.output;
  EXPECT_TRUE(r.summary["violations"].is_array() && r.summary["violations"].empty()) << r.output;
  EXPECT_NE(r.summary.value("verdict", "").find(" 0 differ"), std::string::npos) << r.output;
  EXPECT_GT(r.summary.value("emitted", 0), 0) << r.output;
}

// Every injected failure was detected and recovered from.
void ExpectRecovered(const JobResult& r, std::size_t crashes) {
  ASSERT_TRUE(r.summary.contains("crashes")) << r.output;
  ASSERT_EQ(r.summary["crashes"].size(), crashes) << r.output;
  for (const auto& c : r.summary["crashes"]) {
    EXPECT_GE(c.value("detect_ms", -1.0), 0.0) << c.dump();
    EXPECT_GE(c.value("recovered_ms", -1.0), 0.0) << c.dump();
  }
}

TEST(RuntimeJob, NoFaultsExactCounts) {
  JobResult r = RunLauncher({"--kills", "0"});
  ExpectPass(r);
  EXPECT_EQ(r.summary["crashes"].size(), 0u);
}

TEST(RuntimeJob, KillAWorkerMidStreamExactCounts) {
  JobResult r = RunLauncher({"--kills", "1", "--kill", "map0", "--kill-at", "3"});
  ExpectPass(r);
  ExpectRecovered(r, 1);
  EXPECT_EQ(r.summary["crashes"][0].value("detected_by", ""), "exit");
}

TEST(RuntimeJob, KillTwoAtOnceWithF2) {
  JobResult r = RunLauncher({"--f", "2", "--kills", "1", "--kill", "map1,reduce0", "--kill-at", "3"});
  ExpectPass(r);
  ExpectRecovered(r, 2);
}

TEST(RuntimeJob, KillDuringRecovery) {
  JobResult r = RunLauncher({"--kills", "1", "--kill", "reduce1", "--kill-at", "3", "--kill-during-recovery"});
  ExpectPass(r);
  ASSERT_TRUE(r.summary.contains("crashes"));
  EXPECT_GE(r.summary["crashes"].size(), 1u);
  EXPECT_NE(r.output.find("while it recovers"), std::string::npos) << r.output;
}

TEST(RuntimeJob, KillTheStoreServer) {
  JobResult r = RunLauncher({"--kills", "0", "--kill-store", "0", "--kill-store-at", "2"});
  ExpectPass(r);
  EXPECT_NE(r.output.find("killed store server 0"), std::string::npos) << r.output;
}

TEST(RuntimeJob, PausedWorkerIsReplacedAndFenced) {
  // map0 stops (SIGSTOP) past its heartbeat timeout and lease, is replaced,
  // then resumes: its writes and frames are refused and it exits fenced.
  JobResult r = RunLauncher({"--kills", "0", "--pause", "map0", "--pause-at", "2", "--pause-for", "1.5", "--lease-ms", "300"});
  ExpectPass(r);
  ExpectRecovered(r, 1);
  EXPECT_EQ(r.summary["crashes"][0].value("detected_by", ""), "heartbeat");
  EXPECT_GE(r.summary.value("zombies_fenced", 0), 1) << r.output;
}

TEST(RuntimeJob, CurveEverywhere) {
  JobResult r = RunLauncher({"--curve", "--kills", "1", "--kill", "reduce0", "--kill-at", "3"});
  ExpectPass(r);
  ExpectRecovered(r, 1);
}

TEST(RuntimeJob, NegativeControlModeNoneFailsTheCheck) {
  // Without fault tolerance a killed mapper loses what it held and its
  // channels restart from scratch: the check must say FAIL, not PASS.
  JobResult r = RunLauncher({"--mode", "none", "--kills", "1", "--kill", "map0", "--kill-at", "3", "--grace", "3"});
  EXPECT_EQ(r.code, 1) << r.output;
  ASSERT_TRUE(r.summary.is_object()) << r.output;
  EXPECT_EQ(r.summary.value("result", ""), "FAIL") << r.output;
}

// Checkpoint mode (the benchmark baseline): a failure rolls every worker
// back to the last global snapshot, channel state included; the counts must
// still be exact.
TEST(RuntimeJob, CheckpointModeRollsEveryWorkerBackAndCountsStayExact) {
  JobResult r = RunLauncher({"--mode", "none", "--global-snapshot-ms", "300", "--kills", "1", "--kill", "map0",
                             "--kill-at", "3"});
  ExpectPass(r);
  ExpectRecovered(r, 1);
  EXPECT_NE(r.output.find("global rollback to snapshot"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("global rollback to snapshot 0 "), std::string::npos) << "no snapshot completed: " << r.output;
}

TEST(RuntimeJob, CheckpointModeRingWithAKill) {
  JobResult r = RunLauncher({"--workload", "ring", "--workers", "3", "--duration", "4", "--mode", "none",
                             "--global-snapshot-ms", "200", "--kills", "1", "--kill", "w1", "--kill-at", "2"});
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.summary.value("result", ""), "PASS") << r.output;
  ExpectRecovered(r, 1);
}

TEST(RuntimeJob, RemoteWorkerJoinsOverTcpAndIsRestartedByItsSupervisor) {
  // reduce1 "runs on another machine": lstash-run does not start it but
  // writes its command line; this test plays the supervisor there, starting
  // it, killing it, and starting it again.
  const int base_port = 20000 + static_cast<int>(getpid() % 9) * 1000;
  Launcher launcher({"--transport", "tcp", "--base-port", std::to_string(base_port), "--remote", "reduce1",
                     "--kills", "0"});
  ASSERT_GT(launcher.pid(), 0) << launcher.output();
  const std::string command_file = launcher.run_dir() + "/reduce1.command";
  ASSERT_TRUE(launcher.WaitFor("lstash-worker", 30, command_file)) << launcher.output();
  const std::string command = "exec " + ReadFile(command_file);
  std::vector<pid_t> started;
  auto first = Spawn({"/bin/sh", "-c", command}, launcher.run_dir() + "/logs/remote-reduce1.0.log");
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  started.push_back(*first);
  ASSERT_TRUE(launcher.WaitFor("[  2.0s]", 60)) << launcher.output();
  kill(*first, SIGKILL);
  waitpid(*first, nullptr, 0);
  auto second = Spawn({"/bin/sh", "-c", command}, launcher.run_dir() + "/logs/remote-reduce1.1.log");
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  started.push_back(*second);
  JobResult r = launcher.Wait();
  StopAll(started, 2'000'000'000);
  ExpectPass(r);
  ExpectRecovered(r, 1);
  EXPECT_NE(r.output.find("reduce1 rejoined (incarnation 2)"), std::string::npos) << r.output;
}

TEST(RuntimeJob, InterruptStopsEveryProcess) {
  Launcher launcher({"--duration", "60", "--kills", "0"});
  ASSERT_GT(launcher.pid(), 0) << launcher.output();
  ASSERT_TRUE(launcher.WaitFor("[  1.0s]", 60)) << launcher.output();
  EXPECT_GE(ProcessesMentioning(launcher.run_dir()).size(), 6u);  // 5 workers, a store (and the launcher)
  kill(launcher.pid(), SIGINT);
  JobResult r = launcher.Wait(30);
  EXPECT_EQ(r.code, 130) << r.output;
  EXPECT_NE(r.output.find("interrupted; stopping every process"), std::string::npos) << r.output;
  EXPECT_TRUE(ProcessesMentioning(launcher.run_dir()).empty()) << r.output;
}

TEST(RuntimeJob, BadFlagIsAUsageError) {
  JobResult r = RunLauncher({"--mode", "nonsense"}, 30);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown --mode"), std::string::npos) << r.output;
  r = RunLauncher({"--workload", "ring", "--app-settings", "[1, 2"}, 30);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("--app-settings: not a JSON object"), std::string::npos) << r.output;
  r = RunLauncher({"--workload", "ring", "--app-settings", "{\"tokens\": 0}"}, 30);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("ring: needs"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace lstash::runtime
