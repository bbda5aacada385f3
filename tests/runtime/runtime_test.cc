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

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "scratch_dir.h"

namespace lstash::runtime {
namespace {

using testing_support::ScratchDir;

struct JobResult {
  int code = -1;
  std::string output;
  nlohmann::json summary;  // the --json line
};

// Runs lstash-run with `args` (plus --json and a short, light job unless
// overridden), bounded by `timeout_s`; kills it if it overruns.
JobResult RunLauncher(std::vector<std::string> args, int timeout_s = 120) {
  ScratchDir dir("lstash_runtime_test");
  const std::string log = dir.path() + "/run.log";
  std::vector<std::string> argv = {std::string(LSTASH_TOOLS_DIR) + "/lstash-run", "--json", "--duration", "6",
                                   "--rate", "4000", "--grace", "60"};
  argv.insert(argv.end(), args.begin(), args.end());
  JobResult r;
  auto pid = Spawn(argv, log);
  if (!pid.ok()) {
    r.output = pid.status().ToString();
    return r;
  }
  const std::int64_t deadline = SystemClock()->MonotonicNanos() + std::int64_t{timeout_s} * 1'000'000'000;
  int status = 0;
  for (;;) {
    const pid_t done = waitpid(*pid, &status, WNOHANG);
    if (done == *pid) break;
    if (SystemClock()->MonotonicNanos() > deadline) {
      kill(*pid, SIGTERM);  // it stops and reaps its children
      waitpid(*pid, &status, 0);
      break;
    }
    usleep(20'000);  // waiting for a child process to finish
  }
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream in(log);
  std::stringstream ss;
  ss << in.rdbuf();
  r.output = ss.str();
  // The summary is the last line.
  std::string last, line;
  std::istringstream lines(r.output);
  while (std::getline(lines, line)) {
    if (!line.empty() && line[0] == '{') last = line;
  }
  r.summary = nlohmann::json::parse(last, nullptr, false);
  return r;
}

void ExpectPass(const JobResult& r) {
  ASSERT_EQ(r.code, 0) << r.output;
  ASSERT_TRUE(r.summary.is_object()) << r.output;
  EXPECT_EQ(r.summary.value("result", ""), "PASS") << r.output;
  EXPECT_EQ(r.summary.value("words_differ", -1), 0) << r.output;
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

TEST(RuntimeJob, BadFlagIsAUsageError) {
  JobResult r = RunLauncher({"--mode", "nonsense"}, 30);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown --mode"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace lstash::runtime
