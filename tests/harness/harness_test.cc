// lstash-harness: its fault lists and usage errors, and a short sweep through
// the command -- every workload in the simulator and on real processes, a
// few seeds each, with the negative controls that must report violations.
// Seeds are fixed; LSTASH_HARNESS_FIRST_SEED moves the sweep.
#include "harness/harness.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "scratch_dir.h"
#include "tool_process.h"

namespace lstash::harness {
namespace {

using testing_support::ScratchDir;

std::uint64_t FirstSeed() {
  const char* env = std::getenv("LSTASH_HARNESS_FIRST_SEED");
  return env != nullptr ? std::strtoull(env, nullptr, 10) : 1;
}

struct HarnessRun {
  int code = -1;
  std::string output;
  nlohmann::json summary;
};

HarnessRun RunHarness(std::vector<std::string> args, int timeout_s = 120) {
  ScratchDir dir("lstash_harness_test");
  std::vector<std::string> argv = {std::string(LSTASH_TOOLS_DIR) + "/lstash-harness", "--json"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto run = testing_support::RunTool(argv, dir.path() + "/out.log", timeout_s);
  HarnessRun r{run.code, run.output, nlohmann::json::parse(testing_support::LastJsonLine(run.output), nullptr, false)};
  return r;
}

void ExpectSummaryShape(const HarnessRun& r) {
  ASSERT_TRUE(r.summary.is_object()) << r.output;
  for (const char* key : {"seed", "workload", "workers", "faults_injected", "recoveries", "violations",
                          "violation_details", "completed", "recovery_ms", "replay"}) {
    EXPECT_TRUE(r.summary.contains(key)) << key << " missing: " << r.output;
  }
  EXPECT_NE(r.summary.value("replay", "").find("lstash-harness"), std::string::npos);
}

void ExpectClean(const HarnessRun& r) {
  ExpectSummaryShape(r);
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.summary.value("violations", -1), 0) << r.output;
  EXPECT_TRUE(r.summary.value("completed", false)) << r.output;
}

TEST(HarnessFaults, ParsesNamesAndCounts) {
  auto f = ParseFaults("kill:3,kill-during-recovery,store-restart,pause");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->size(), 4u);
  EXPECT_EQ((*f)[0].name, "kill");
  EXPECT_EQ((*f)[0].value, "3");
  EXPECT_EQ((*f)[1].name, "kill-during-recovery");
  EXPECT_TRUE((*f)[1].value.empty());
  auto slow = ParseFaults("slow-store:5ms");
  ASSERT_TRUE(slow.ok()) << slow.status().ToString();
  EXPECT_EQ((*slow)[0].value, "5ms");
  auto none = ParseFaults("none");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(HarnessFaults, RefusesUnknownNamesBadValuesAndRepeats) {
  for (const char* bad : {"explode", "kill:many", "kill:-1", "kill:1,kill:2", "pause:x", "slow-store", "slow-store:fast"}) {
    auto f = ParseFaults(bad);
    ASSERT_FALSE(f.ok()) << bad;
    EXPECT_EQ(f.status().code(), Code::kInvalidArgument) << bad;
  }
}

TEST(HarnessFaults, EachRunnerRefusesWhatItCannotInjectYet) {
  HarnessOptions o;
  o.sim = true;
  o.workload = "counter";
  o.faults = {{"pause", ""}};
  EXPECT_EQ(Validate(o).code(), Code::kInvalidArgument);
  o.faults = {{"kill", "2"}, {"store-loss", "10"}};
  EXPECT_TRUE(Validate(o).ok());
  o.faults = {{"dup", "10"}, {"loss", "5"}, {"reorder", ""}, {"delay", "2ms"}};
  EXPECT_TRUE(Validate(o).ok());
  o.faults = {{"after-flush", ""}, {"mid-recovery", "3"}};
  EXPECT_TRUE(Validate(o).ok());
  o.faults = {{"slow-store", "1ms"}};
  EXPECT_EQ(Validate(o).code(), Code::kInvalidArgument) << "the simulator's store has no delay";
  o.faults = {};
  o.workload = "wordcount";
  EXPECT_TRUE(Validate(o).ok());
  o.workers = 2;
  o.workers_given = true;
  EXPECT_EQ(Validate(o).code(), Code::kInvalidArgument) << "wordcount needs a source, a mapper and a reducer";
  o.workers = 5;
  o.sim = false;
  o.faults = {{"kill-at-once", "2"}};
  o.f = 1;
  EXPECT_EQ(Validate(o).code(), Code::kInvalidArgument) << "two at once with f = 1";
  o.f = 2;
  EXPECT_TRUE(Validate(o).ok());
}

TEST(HarnessCommand, BadUsageExitsTwoWithOneLine) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"--workload", "nope"}, {"--faults", "kill:3,bogus"}, {"--workers"}, {"--sim", "--faults", "pause"},
           {"--protocol", "sloppy"}}) {
    HarnessRun r = RunHarness(args, 30);
    EXPECT_EQ(r.code, 2) << r.output;
    EXPECT_EQ(r.output.rfind("lstash-harness: ", 0), 0u) << r.output;
    EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << "one line: " << r.output;
  }
}

TEST(HarnessSweep, SimulatorWorkloadsStayCorrect) {
  const std::uint64_t first = FirstSeed();
  for (const char* workload : {"counter", "hashchain", "wordcount", "allreduce"}) {
    for (std::uint64_t seed = first; seed < first + 3; ++seed) {
      HarnessRun r = RunHarness({"--sim", "--workload", workload, "--seed", std::to_string(seed)});
      SCOPED_TRACE(std::string(workload) + " seed " + std::to_string(seed));
      ExpectClean(r);
      EXPECT_EQ(r.summary.value("recoveries", 0u), r.summary["recovery_ms"].size());
    }
    // The network duplicating and losing frames as well.
    HarnessRun r = RunHarness({"--sim", "--workload", workload, "--seed", std::to_string(first), "--faults",
                               "kill:3,dup:10,loss:5"});
    SCOPED_TRACE(std::string(workload) + " with dup and loss");
    ExpectClean(r);
    EXPECT_GT(r.summary.value("durability_entries_checked", 0), 0) << r.output;
    EXPECT_GT(r.summary.value("faults_injected", 0), 3) << r.output;
  }
}

TEST(HarnessSweep, NegativeControlsReportViolationsInTheSimulator) {
  // With piggybacking or event logging switched off, some seeds must lose or
  // contradict results, and the harness must say so (exit 1).
  const std::uint64_t first = FirstSeed();
  for (const char* protocol : {"broken-no-piggyback", "broken-no-event-log"}) {
    int caught = 0;
    for (std::uint64_t seed = first; seed < first + 20 && caught == 0; ++seed) {
      HarnessRun r = RunHarness({"--sim", "--workload", "hashchain", "--seed", std::to_string(seed), "--protocol", protocol});
      ExpectSummaryShape(r);
      if (r.summary.value("violations", 0) > 0) {
        EXPECT_EQ(r.code, 1) << r.output;
        EXPECT_FALSE(r.summary["violation_details"].empty());
        ++caught;
      }
    }
    EXPECT_GT(caught, 0) << protocol << ": no seed of 20 was caught";
  }
}

TEST(HarnessSweep, WordcountOnRealProcessesUnderMixedFaults) {
  const std::uint64_t seed = FirstSeed();
  HarnessRun r = RunHarness({"--workload", "wordcount", "--seed", std::to_string(seed), "--duration", "6", "--faults",
                             "kill:2,kill-during-recovery,pause"});
  ExpectClean(r);
  EXPECT_GE(r.summary.value("faults_injected", 0), 3) << r.output;
  EXPECT_GE(r.summary.value("recoveries", 0), 3) << r.output;
}

TEST(HarnessSweep, WordcountOnRealProcessesTwoAtOnceAndAStoreRestart) {
  const std::uint64_t seed = FirstSeed() + 1;
  HarnessRun r = RunHarness({"--workload", "wordcount", "--seed", std::to_string(seed), "--duration", "6", "--f", "2",
                             "--faults", "kill-at-once:2,store-restart,slow-store:1ms"});
  ExpectClean(r);
  EXPECT_EQ(r.summary.value("faults_injected", 0), 3) << r.output;
  EXPECT_EQ(r.summary.value("recoveries", 0), 2) << r.output;
  // Every write the store acknowledged, across its restart, was found again.
  EXPECT_GT(r.summary.value("durability_entries_checked", 0), 100) << r.output;
}

// The other workloads as processes, each under a different mix, with the
// transport losing, duplicating, reordering and delaying frames.
TEST(HarnessSweep, TokenAndAllreduceWorkloadsOnRealProcesses) {
  const std::uint64_t seed = FirstSeed();
  const std::vector<std::vector<std::string>> runs = {
      {"--workload", "counter", "--workers", "4", "--faults", "kill:1,dup,loss"},
      {"--workload", "hashchain", "--workers", "4", "--faults", "kill:1,kill-during-recovery,reorder,delay:2ms"},
      {"--workload", "allreduce", "--workers", "4", "--f", "2", "--faults", "kill-at-once:2,loss:3"}};
  for (auto args : runs) {
    SCOPED_TRACE(args[1]);
    args.insert(args.end(), {"--seed", std::to_string(seed), "--duration", "3"});
    HarnessRun r = RunHarness(args);
    ExpectClean(r);
    EXPECT_GE(r.summary.value("recoveries", 0), 1) << r.output;
    EXPECT_GT(r.summary.value("faults_injected", 0), 2) << "the transport faults are counted too: " << r.output;
  }
}

// Crash tests at the library's named failure points: each armed worker
// kills itself there; the job must still be exactly-once.
TEST(HarnessSweep, CrashesAtNamedFailurePoints) {
  HarnessRun r = RunHarness({"--workload", "hashchain", "--workers", "4", "--seed", std::to_string(FirstSeed()),
                             "--duration", "5", "--faults",
                             "before-flush,after-flush,mid-forward,mid-checkpoint,mid-recovery"});
  ExpectClean(r);
  // mid-recovery adds a kill of its own; a point the worker never passes
  // again before the end (mid-checkpoint late in a run) may not fire.
  EXPECT_GE(r.summary.value("faults_injected", 0), 5) << r.output;
  EXPECT_GE(r.summary.value("recoveries", 0), 4) << r.output;
}

// The GPU workloads as processes (on the CPU path without a device). The
// harness draws the first kill's target first, from mt19937_64(seed): the
// serving run takes the first seed that kills the server, and its output
// must say so.
TEST(HarnessServing, ServerKilledMidStream) {
  const std::uint32_t workers = 3;
  std::uint64_t seed = FirstSeed();
  while (std::mt19937_64(seed)() % workers != 0) ++seed;
  HarnessRun r = RunHarness({"--workload", "serving", "--workers", std::to_string(workers), "--seed",
                             std::to_string(seed), "--duration", "3", "--faults", "kill:1"});
  ExpectClean(r);
  EXPECT_NE(r.output.find("killed w0"), std::string::npos) << "the server was to be killed: " << r.output;
  EXPECT_GE(r.summary.value("recoveries", 0), 1) << r.output;
}

TEST(HarnessPipeline, StageKilledMidTraining) {
  HarnessRun r = RunHarness({"--workload", "pipeline", "--workers", "3", "--seed", std::to_string(FirstSeed()),
                             "--duration", "3", "--faults", "kill:1"});
  ExpectClean(r);
  EXPECT_GE(r.summary.value("recoveries", 0), 1) << r.output;
}

TEST(HarnessSweep, NegativeControlOnRealProcesses) {
  // Mode none cannot recover a killed worker's state: not a clean run.
  HarnessRun r = RunHarness({"--workload", "wordcount", "--seed", std::to_string(FirstSeed()), "--duration", "4",
                             "--faults", "kill:1", "--protocol", "none"});
  ExpectSummaryShape(r);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_GT(r.summary.value("violations", 0), 0) << r.output;
  // A failing real run keeps every process's log for diagnosis.
  const std::filesystem::path logs = r.summary.value("logs", "");
  ASSERT_FALSE(logs.empty()) << r.output;
  EXPECT_TRUE(std::filesystem::exists(logs / "map0.0.log")) << logs;
  std::error_code ec;
  std::filesystem::remove_all(logs.parent_path(), ec);

  // Without event logging, a replayed counter worker draws other values than
  // its first incarnation sent on: the checker (or liveness) must say so.
  r = RunHarness({"--workload", "counter", "--workers", "4", "--seed", std::to_string(FirstSeed()), "--duration", "3",
                  "--faults", "kill:2", "--protocol", "broken-no-event-log"});
  ExpectSummaryShape(r);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_GT(r.summary.value("violations", 0), 0) << r.output;
  std::filesystem::remove_all(std::filesystem::path(r.summary.value("logs", "")).parent_path(), ec);
}

}  // namespace
}  // namespace lstash::harness
