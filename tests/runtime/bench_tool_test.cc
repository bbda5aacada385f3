// lstash-bench, end to end: the JSON it promises (stable keys), the files
// and document it writes, and clear errors for bad input.
#include "runtime/process.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "scratch_dir.h"
#include "tool_process.h"

namespace lstash::runtime {
namespace {

using testing_support::LastJsonLine;
using testing_support::ReadFile;
using testing_support::RunTool;
using testing_support::ScratchDir;
using testing_support::ToolRun;

const std::string kBench = std::string(LSTASH_TOOLS_DIR) + "/lstash-bench";

class BenchTool : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(kBench)) GTEST_SKIP() << "lstash-bench not built (LSTASH_BUILD_BENCH=OFF)";
  }
  ToolRun Bench(std::vector<std::string> args, int timeout_s = 120) {
    args.insert(args.begin(), kBench);
    return RunTool(args, dir_.path() + "/bench.log", timeout_s);
  }
  nlohmann::json Json(const ToolRun& r) {
    auto j = nlohmann::json::parse(LastJsonLine(r.output), nullptr, false);
    return j.is_discarded() ? nlohmann::json() : j;
  }
  // Every mode's stable keys, and its checker's verdict.
  static void ExpectStableKeys(const nlohmann::json& j, const std::string& mode, const std::string& output) {
    ASSERT_TRUE(j["results"].contains(mode)) << mode << ": " << output;
    const auto& m = j["results"][mode];
    EXPECT_GT(m.value("p50_us", 0.0), 0.0) << mode;
    EXPECT_GE(m.value("p99_us", 0.0), m.value("p50_us", 0.0)) << mode;
    EXPECT_GE(m.value("p999_us", 0.0), m.value("p99_us", 0.0)) << mode;
    EXPECT_GT(m.value("throughput", 0.0), 0.0) << mode;
    EXPECT_TRUE(m.value("correct", false)) << mode << ": " << m.dump();
  }
  ScratchDir dir_{"lstash_bench"};
};

TEST_F(BenchTool, RingRunsEveryModeSideBySideAndWritesItsFiles) {
  const std::string out = dir_.path() + "/results";
  ToolRun r = Bench({"--workload", "ring", "--tag", "ring-det", "--workers", "2", "--seconds", "1", "--json", "--out", out});
  ASSERT_EQ(r.code, 0) << r.output;
  const nlohmann::json j = Json(r);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j.value("workload", ""), "ring");
  EXPECT_FALSE(j.value("machine", "").empty());
  for (const char* mode : {"none", "write-first", "lineage-stash", "checkpoint"}) ExpectStableKeys(j, mode, r.output);
  // Only lineage-stash piggybacks lineage.
  EXPECT_GT(j["results"]["lineage-stash"].value("piggyback_entries_per_msg", 0.0), 0.0);
  EXPECT_EQ(j["results"]["none"].value("piggyback_entries_per_msg", 1.0), 0.0);
  for (const char* file : {"ring-det.json", "ring-det.csv", "ring-det-cdf.csv"}) {
    EXPECT_TRUE(std::filesystem::exists(out + "/" + file)) << file;
  }

  // The report: the targets from these results, written between the
  // markers; a second report replaces the first instead of adding to it.
  const std::string doc = dir_.path() + "/benchmarks.md";
  { std::ofstream(doc) << "# Benchmarks\n\nhand-written text\n"; }
  ToolRun rep = Bench({"--report", out, "--doc", doc});
  ASSERT_EQ(rep.code, 0) << rep.output;
  const std::string first = ReadFile(doc);
  EXPECT_NE(first.find("hand-written text"), std::string::npos);
  EXPECT_NE(first.find("| lineage-stash p50 per hop ≤ 1.05 × none"), std::string::npos) << first;
  ASSERT_EQ(Bench({"--report", out, "--doc", doc}).code, 0);
  EXPECT_EQ(ReadFile(doc), first);
}

TEST_F(BenchTool, RecoveryReportsDetectionRecoveryAndReplay) {
  ToolRun r = Bench({"--workload", "recovery", "--modes", "lineage-stash", "--workers", "3", "--seconds", "2",
                     "--lineage-tasks", "1000", "--json"});
  ASSERT_EQ(r.code, 0) << r.output;
  const nlohmann::json j = Json(r);
  const auto& m = j["results"]["lineage-stash"];
  ASSERT_TRUE(m.is_object()) << r.output;
  EXPECT_GE(m.value("detect_ms", -1.0), 0.0) << m.dump();
  EXPECT_GE(m.value("recover_ms", -1.0), m.value("detect_ms", -1.0)) << m.dump();
  EXPECT_GE(m.value("back_to_baseline_ms", -1.0), 0.0) << m.dump();
  EXPECT_GT(m.value("replayed", 0), 0) << m.dump();
  EXPECT_TRUE(m.value("correct", false)) << m.dump();
  ASSERT_EQ(m["lineage"].size(), 1u) << m.dump();
  EXPECT_GE(m["lineage"][0].value("replayed", 0), 1000) << m.dump();
}

// OpenMPI is left out (a script that is not there) so the test is quick
// and the same on machines without it; the run must say so, not fail.
TEST_F(BenchTool, AllreduceTimesEveryModeAndSaysWhenOpenMpiIsMissing) {
  const std::string out = dir_.path() + "/results";
  ToolRun r = Bench({"--workload", "allreduce", "--quick", "--sizes-mb", "1", "--workers", "2", "--mpi-script",
                     dir_.path() + "/no-mpi-allreduce", "--json", "--out", out});
  ASSERT_EQ(r.code, 0) << r.output;
  const nlohmann::json j = Json(r);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j.value("workload", ""), "allreduce");
  for (const char* mode : {"none", "write-first", "lineage-stash", "checkpoint"}) {
    ExpectStableKeys(j, mode, r.output);
    const auto& m = j["results"][mode];
    ASSERT_EQ(m["points"].size(), 1u) << m.dump();
    EXPECT_EQ(m["points"][0].value("calls", 0), 3) << m.dump();  // --quick: 3 timed calls after 1 warm-up
  }
  const auto& mpi = j["results"]["openmpi"];
  EXPECT_FALSE(mpi.value("found", true)) << mpi.dump();
  EXPECT_NE(mpi.value("error", "").find("OpenMPI not found"), std::string::npos) << mpi.dump();
  for (const char* file : {"allreduce.json", "allreduce.csv", "allreduce-points.csv"}) {
    EXPECT_TRUE(std::filesystem::exists(out + "/" + file)) << file;
  }

  // The document says so too (the report needs a ring result; an empty one will do).
  { std::ofstream(out + "/ring-det.json") << R"({"workload": "ring", "settings": {}, "results": {}})"; }
  const std::string doc = dir_.path() + "/benchmarks.md";
  ASSERT_EQ(Bench({"--report", out, "--doc", doc}).code, 0);
  const std::string text = ReadFile(doc);
  EXPECT_NE(text.find("| allreduce 100 MB: lineage-stash ≤ 1.10 × OpenMPI | not measured: OpenMPI not found"),
            std::string::npos) << text;
  EXPECT_NE(text.find("| 2 | 1 |"), std::string::npos) << text;  // the table's one row
}

// The GPU workloads (serving, pipeline): the CPU path here (a device, where there is one, in
// scripts/gpu-check); every answer checked bit for bit in each mode.
TEST_F(BenchTool, GpuWorkloadsMeasureEveryModeAndAreChecked) {
  ToolRun r = Bench({"--workload", "serving", "--modes", "none,lineage-stash", "--workers", "3", "--seconds", "1",
                     "--request-rate", "200", "--backend", "cpu", "--json"});
  ASSERT_EQ(r.code, 0) << r.output;
  const nlohmann::json j = Json(r);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j.value("workload", ""), "serving");
  EXPECT_EQ(j["settings"].value("backend", ""), "cpu");
  for (const char* mode : {"none", "lineage-stash"}) ExpectStableKeys(j, mode, r.output);
  EXPECT_GT(j["results"]["lineage-stash"].value("piggyback_entries_per_msg", 0.0), 0.0);
  EXPECT_EQ(Bench({"--workload", "serving", "--backend", "tpu"}).code, 2);

  // In two rounds, the modes taking turns: each mode's latencies pooled,
  // more than one run of 20 minibatches gives.
  r = Bench({"--workload", "pipeline", "--modes", "none,lineage-stash", "--workers", "2", "--seconds", "1",
             "--minibatch-rate", "20", "--backend", "cpu", "--rounds", "2", "--json"});
  ASSERT_EQ(r.code, 0) << r.output;
  const nlohmann::json p = Json(r);
  ASSERT_TRUE(p.is_object()) << r.output;
  EXPECT_EQ(p.value("workload", ""), "pipeline");
  EXPECT_EQ(p["settings"].value("rounds", 0), 2);
  for (const char* mode : {"none", "lineage-stash"}) {
    ExpectStableKeys(p, mode, r.output);
    EXPECT_EQ(p["results"][mode].value("runs", 0), 2) << mode;
    EXPECT_GT(p["results"][mode].value("samples", 0), 20) << mode;
  }
  EXPECT_NE(r.output.find("(round 2 of 2)"), std::string::npos) << r.output;
}

// lstash-gpu-bench on the CPU path: every recovery, in this process and in
// a new one (that opens the store the lost one left, or connects to the
// store server), brings the device state back bit for bit.
TEST_F(BenchTool, GpuBenchRecoversInThisProcessAndInANewOneBitForBit) {
  const std::string gpu_bench = std::string(LSTASH_TOOLS_DIR) + "/lstash-gpu-bench";
  ToolRun r = RunTool({gpu_bench, "--quick", "--backend", "cpu", "--stores", "rocksdb,memory,remote", "--json"},
                      dir_.path() + "/gpu-bench.log", 120);
  ASSERT_EQ(r.code, 0) << r.output;
  const nlohmann::json j = Json(r);
  ASSERT_TRUE(j.is_object()) << r.output;
  EXPECT_EQ(j.value("backend", ""), "cpu");
  std::vector<std::string> runs;
  for (const nlohmann::json& rec : j["recovery"]) {
    runs.push_back(rec.value("store", "?") + "/" + rec.value("process", "?"));
    EXPECT_TRUE(rec.value("verified", false)) << rec.dump();
    EXPECT_EQ(rec.value("tasks_replayed", 0), 50) << rec.dump();
    EXPECT_GE(rec.value("total_ms", 0.0), rec.value("restore_ms", 0.0) + rec.value("replay_ms", 0.0)) << rec.dump();
    if (rec.value("process", "") == "new") {
      EXPECT_GT(rec.value("process_start_ms", 0.0), 0.0) << rec.dump();
      EXPECT_GT(rec.value("store_open_ms", 0.0), 0.0) << rec.dump();
    }
  }
  EXPECT_EQ(runs, (std::vector<std::string>{"rocksdb/same", "memory/same", "remote/same", "rocksdb/new", "remote/new"}));

  r = RunTool({gpu_bench, "--quick", "--stores", "rocksdb,tape"}, dir_.path() + "/gpu-bench-bad.log", 60);
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown store 'tape'"), std::string::npos) << r.output;
}

TEST_F(BenchTool, BadInputIsAClearError) {
  ToolRun r = Bench({"--workload", "ring", "--modes", "none,bogus"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("unknown mode 'bogus'"), std::string::npos) << r.output;
  r = Bench({"--workload", "recovery", "--modes", "none"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("mode none cannot recover"), std::string::npos) << r.output;
  r = Bench({"--workload", "allreduce", "--sizes-mb", "1,0"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("--sizes-mb"), std::string::npos) << r.output;
  r = Bench({"--workload", "allreduce", "--sizes-mb", "ten"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("--sizes-mb"), std::string::npos) << r.output;
  r = Bench({"--workload", "wordcount", "--rounds", "2"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("--rounds applies to ring, serving and pipeline"), std::string::npos) << r.output;
  r = Bench({"--workload", "nonsense"});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("--workload must be one of"), std::string::npos) << r.output;
  r = Bench({"--report", dir_.path(), "--doc", dir_.path() + "/doc.md"});
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("ring-det.json is missing"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace lstash::runtime
