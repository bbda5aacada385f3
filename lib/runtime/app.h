// Applications a worker host runs (the task code of a job), and the registry
// lstash-worker picks them from by name.
#pragma once

#include <lstash/status.h>
#include <lstash/worker.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <optional>
#include <string>

namespace lstash::runtime {

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
  // True once this worker's part of the job is done.
  virtual bool Finished() const = 0;
  // Measurements since the last call, merged into the next heartbeat.
  virtual void TakeStats(nlohmann::json* /*stats*/) {}
  // What this worker reports when Finished() (e.g. a reducer's counts).
  virtual std::optional<nlohmann::json> Result() const { return std::nullopt; }
  // The host runs this worker's live tasks at most this often (a source
  // pacing itself by ticking); replay runs at full speed.
  virtual std::int64_t MinTaskIntervalNanos() const { return 0; }
};

struct AppContext {
  WorkerId self = 0;
  std::uint32_t workers = 0;
  nlohmann::json config;  // the job's application settings
};

// kInvalidArgument for an unknown name or a bad config.
Result<std::unique_ptr<App>> MakeApp(const std::string& name, const AppContext& context);

}  // namespace lstash::runtime
