// serving and pipeline outside the simulator: their settings, snapshots,
// and checkers that must fail when an answer or a weight is off.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <lstash/gpu.h>
#include <lstash/store.h>
#include <lstash/worker.h>

#include <memory>
#include <string>
#include <vector>

#include "core/test_util.h"
#include "workloads/app.h"

namespace lstash::workloads {
namespace {

using ::testing::HasSubstr;

// A failure-free job on hand-driven workers: each round every worker runs
// one task, its frames go straight to their receivers, and the clock moves
// 1 ms.
class Job {
 public:
  Job(const std::string& workload, std::uint32_t workers, nlohmann::json config)
      : workload_(workload), config_(std::move(config)), store_(NewMemoryStore()) {
    for (WorkerId w = 0; w < workers; ++w) {
      WorkerOptions o = coretest::HandDrivenOptions(w, workers, &clock_, nullptr);
      o.mode = Mode::kNone;
      auto worker = Worker::Open(o, store_.get());
      auto app = MakeApp(workload, {w, workers, config_});
      EXPECT_TRUE(worker.ok() && app.ok()) << worker.status().ToString() << " " << app.status().ToString();
      if (!worker.ok() || !app.ok()) return;
      workers_.push_back(std::move(worker).value());
      apps_.push_back(std::move(app).value());
    }
  }

  Status Run() {
    for (int round = 0; round < 100000; ++round) {
      bool all_finished = true;
      for (std::size_t w = 0; w < workers_.size(); ++w) {
        auto task = workers_[w]->NextTask();
        if (!task.ok()) return task.status();
        if (task.value()) LSTASH_RETURN_IF_ERROR(apps_[w]->Execute(*workers_[w], *task.value()));
        for (Frame& f : workers_[w]->TakeFrames()) LSTASH_RETURN_IF_ERROR(workers_[f.dest]->Receive(f.bytes).status());
        all_finished = all_finished && apps_[w]->Finished();
      }
      if (all_finished) return Status::OK();
      clock_.Advance(coretest::kMillis);
    }
    return Internal("the job did not finish");
  }

  std::vector<std::string> Check(const nlohmann::json& config) const {
    std::vector<const App*> apps;
    for (const auto& a : apps_) apps.push_back(a.get());
    return workloads::Check(workload_, config, apps).violations;
  }

  App& app(WorkerId w) { return *apps_[w]; }
  const nlohmann::json& config() const { return config_; }

 private:
  std::string workload_;
  nlohmann::json config_;
  coretest::FakeClock clock_;
  std::unique_ptr<Store> store_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::unique_ptr<App>> apps_;
};

TEST(GpuWorkloadSettings, BackendIsCheckedAndAMissingDeviceExplained) {
  for (const char* workload : {"serving", "pipeline"}) {
    SCOPED_TRACE(workload);
    auto bad = MakeApp(workload, {0, 3, {{"backend", "tpu"}}});
    EXPECT_EQ(bad.status().code(), Code::kInvalidArgument);
    EXPECT_THAT(std::string(bad.status().message()), HasSubstr("auto, cpu, cuda"));
    EXPECT_EQ(MakeApp(workload, {0, 1, nlohmann::json::object()}).status().code(), Code::kInvalidArgument) << "needs 2+ workers";
    EXPECT_TRUE(MakeApp(workload, {0, 3, {{"backend", "cpu"}}}).ok());
    EXPECT_TRUE(MakeApp(workload, {0, 3, nlohmann::json::object()}).ok()) << "auto: the CPU path without a device";
    const gpu::DeviceInfo device = gpu::ProbeCuda();
    if (device.present) continue;
    auto cuda = MakeApp(workload, {0, 3, {{"backend", "cuda"}}});
    EXPECT_EQ(cuda.status().code(), Code::kUnavailable);
    EXPECT_THAT(std::string(cuda.status().message()), HasSubstr(device.why_absent));
  }
}

TEST(GpuWorkloadServing, AnswersEveryRequestAndTheCheckerCatchesAFlippedBit) {
  Job job("serving", 4, {{"backend", "cpu"}, {"requests", 12}, {"max_batch", 4}, {"window_ms", 1.5}, {"in", 8},
                         {"hidden", 16}, {"out", 4}});
  CORE_ASSERT_OK(job.Run());
  EXPECT_THAT(job.Check(job.config()), ::testing::IsEmpty());
  // 36 requests: both rules closed batches (max_batch alone would make 9).
  nlohmann::json stats;
  job.app(0).TakeStats(&stats);
  EXPECT_GT(stats.value("batches", 0), 9) << "the window closed none";
  EXPECT_LT(stats.value("batches", 0), 36) << "no batch held two requests";

  // A snapshot restores into a fresh app; a bad header is refused.
  const std::string server = job.app(0).Snapshot();
  auto fresh = MakeApp("serving", {0, 4, job.config()});
  ASSERT_TRUE(fresh.ok());
  CORE_EXPECT_OK((*fresh)->Restore(server));
  std::string bad_magic = server;
  bad_magic[7] ^= 1;
  EXPECT_EQ((*fresh)->Restore(bad_magic).code(), Code::kCorruption);

  // The last byte of client 1's last answer (its snapshot ends with the
  // count of extra answers, 8 bytes).
  std::string client = job.app(1).Snapshot();
  client[client.size() - 9] ^= 1;
  CORE_ASSERT_OK(job.app(1).Restore(client));
  auto v = job.Check(job.config());
  ASSERT_EQ(v.size(), 1u);
  EXPECT_THAT(v[0], HasSubstr("client 1 request 11"));
  EXPECT_THAT(v[0], HasSubstr("differs from the reference"));
}

TEST(GpuWorkloadPipeline, TrainsTheReferenceWeightsAndTheCheckerCatchesAnotherRun) {
  Job job("pipeline", 3, {{"backend", "cpu"}, {"minibatches", 10}, {"batch", 4}, {"in", 8}, {"hidden", 8}, {"out", 4}});
  CORE_ASSERT_OK(job.Run());
  EXPECT_THAT(job.Check(job.config()), ::testing::IsEmpty());

  const std::string stage = job.app(1).Snapshot();
  auto fresh = MakeApp("pipeline", {1, 3, job.config()});
  ASSERT_TRUE(fresh.ok());
  CORE_EXPECT_OK((*fresh)->Restore(stage));
  EXPECT_EQ((*fresh)->Restore(stage.substr(0, stage.size() - 1)).code(), Code::kCorruption);

  // Judged against a reference with another learning rate, every stage differs.
  nlohmann::json other = job.config();
  other["lr"] = 0.04;
  EXPECT_EQ(job.Check(other).size(), 3u);
}

}  // namespace
}  // namespace lstash::workloads
