// The worker host: one worker process of a job. It runs an application's
// tasks around a lstash::Worker, carries its frames over the ZeroMQ
// Transport, keeps its log in the store server(s), and reports to the
// coordinator (lstash-run): hello, heartbeats with statistics, recovery,
// results. lstash-worker is its command line.
#pragma once

#include <lstash/curve.h>
#include <lstash/worker.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lstash::runtime {

struct HostOptions {
  WorkerId id = 0;
  std::vector<std::string> endpoints;     // transport: endpoints[w] is worker w's
  std::vector<std::string> store_shards;  // store servers
  std::string coordinator;                // control endpoint; empty: none
  std::string app = "wordcount";
  nlohmann::json app_config;
  Mode mode = Mode::kLineageStash;
  Breakage breakage = Breakage::kNone;
  std::uint32_t max_forward = 0;
  std::uint32_t checkpoint_every = 0;           // tasks between checkpoints; 0: never
  std::int64_t lease_nanos = 1'000'000'000;     // 0: no lease
  std::int64_t heartbeat_nanos = 50'000'000;
  std::int64_t store_deadline_nanos = 10'000'000'000;
  std::optional<CurveSecurity> transport_curve;  // server_keys[w]: worker w's key
  std::optional<CurveSecurity> store_curve;      // server_keys[k]: store shard k's key
  std::string crash_at;                          // a failure point (FailurePointName): the process kills itself there
  std::string net_faults;                        // faults on frames this worker sends (net/faulty_transport.h)
  std::uint64_t net_fault_seed = 1;
  // Checkpoint mode, the baseline (runtime/snapshot_worker.h): no lstash
  // Worker; global snapshots and rollbacks when the coordinator says.
  bool global_snapshots = false;
};

// Exit codes of a worker process.
inline constexpr int kExitDone = 0;      // finished, or told to shut down
inline constexpr int kExitError = 1;     // setup failed or a task failed
inline constexpr int kExitFenced = 3;    // a newer incarnation replaced this one

int RunWorkerHost(const HostOptions& options);

}  // namespace lstash::runtime
