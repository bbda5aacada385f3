// Workloads: the task code an engine runs on each worker, with the checkers
// that judge a finished job. The same apps run in the deterministic
// simulator (lib/sim) and as worker processes (lib/runtime), so a workload
// means the same thing in both.
//
//   wordcount  source -> mappers -> reducers (the lineage stash paper's
//              streaming job); reducers' counts must equal a direct count.
//   counter    workers pass increments around; each applied exactly once.
//   hashchain  order-sensitive actors, state = H(state, input) in arrival
//              order; no observed state may lie off its actor's final chain.
//   allreduce  rounds of ring allreduce of float vectors; every worker's
//              result must equal, bit for bit, the sum in ring order.
//   serving    a GPU server batching clients' requests by arrival time;
//              every answer exactly once and bit for bit the reference's.
//   pipeline   pipeline-parallel GPU training (1F1B); every stage's weights
//              bit for bit those of a failure-free run.
//
// Apps see lstash only through the public Worker API and record what they
// sent and applied, so a checker judges them without trusting the library.
#pragma once

#include <lstash/status.h>
#include <lstash/worker.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace lstash::workloads {

// The task code of one worker. Execute must be deterministic given the task's
// payload and the values it obtains from the Worker (Now, Random, Choose);
// what it measures besides (latency) goes into TakeStats and must not affect
// its state or output.
class App {
 public:
  virtual ~App() = default;
  virtual Status Execute(Worker& worker, const Task& task) = 0;
  virtual std::string Snapshot() const = 0;
  virtual Status Restore(const std::string& bytes) = 0;
  // True once this worker's part of the job is done: its state is final.
  virtual bool Finished() const = 0;
  // Measurements since the last call, merged into the next heartbeat.
  virtual void TakeStats(nlohmann::json* /*stats*/) {}
  // A worker process runs this worker's live tasks at most this often (a
  // source pacing itself); replay, and the simulator, run at full speed.
  virtual std::int64_t MinTaskIntervalNanos() const { return 0; }
};

// The measurement clocks, for what an app reports through TakeStats. The
// monotonic one is one clock for every process on the machine, so a
// measurement may start in one worker and end in another. They never feed
// an app's state.
inline std::int64_t MonoNow() { return SystemClock()->MonotonicNanos(); }
inline std::int64_t WallNow() { return SystemClock()->WallNanos(); }

// Latencies an app measures, reported through TakeStats as "latency": one
// [start wall nanos, latency nanos, progress] triple per sample, the form
// the launcher reads.
class LatencySamples {
 public:
  // A measurement that started at `start` (MonoNow()) ends now; `progress`
  // says how far the job was (a hop, a round, a request).
  void EndNow(std::int64_t start, std::uint64_t progress) {
    const std::int64_t latency = MonoNow() - start;
    samples_.push_back({WallNow() - latency, latency, progress});
  }
  // Moves the samples so far into (*stats)["latency"].
  void TakeInto(nlohmann::json* stats) {
    nlohmann::json latency = nlohmann::json::array();
    for (const auto& [start_wall, nanos, progress] : samples_) latency.push_back({start_wall, nanos, progress});
    samples_.clear();
    (*stats)["latency"] = std::move(latency);
  }

 private:
  struct Sample {
    std::int64_t start_wall, latency;
    std::uint64_t progress;
  };
  std::vector<Sample> samples_;
};

struct AppContext {
  WorkerId self = 0;
  std::uint32_t workers = 0;
  nlohmann::json config;  // the workload's settings (see each Make* below)
};

// "wordcount", "counter", "hashchain", "allreduce", "ring", "serving", "pipeline".
const std::vector<std::string>& WorkloadNames();

// kInvalidArgument for an unknown name or a bad config.
Result<std::unique_ptr<App>> MakeApp(const std::string& workload, const AppContext& context);

// "source", "map0", "reduce1" for wordcount; "w3" otherwise.
std::string WorkerName(const std::string& workload, const nlohmann::json& config, WorkerId id);

struct Verdict {
  std::vector<std::string> violations;  // empty: the job's result is correct
  std::string summary;                  // one line: what was checked
};

// Judges every worker's final app (apps[w] is worker w's).
Verdict Check(const std::string& workload, const nlohmann::json& config, const std::vector<const App*>& apps);

// Hex, so that a snapshot travels inside JSON.
std::string ToHex(std::string_view bytes);
Result<std::string> FromHex(std::string_view hex);

}  // namespace lstash::workloads
