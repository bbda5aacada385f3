// The deterministic simulator: N workers running the real lstash core over an
// in-process network, with a seeded scheduler that picks every message
// delivery, flush, timer, crash and restart.
//
// Everything is single-threaded (workers flush through Worker::Flush()), the
// clock is virtual, and every random choice comes from the seed, so a run is
// a pure function of its SimConfig: a failing seed replays exactly.
//
// Workloads: every one of lib/workloads (wordcount, counter, hashchain,
// allreduce, ring, serving, pipeline), judged by its own checker once the
// job quiesces.
#pragma once

#include <lstash/worker.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lstash::sim {

struct SimConfig {
  std::string workload = "counter";  // a name from workloads::WorkloadNames()
  std::uint64_t seed = 1;
  std::uint32_t workers = 4;
  std::uint32_t f = 1;               // max_forward, and failures allowed at once
  std::uint32_t crashes = 3;         // crash events to inject (each may kill several workers)
  std::uint32_t tokens = 8;          // inputs each worker's start task injects (wordcount: scales the lines)
  std::uint32_t hops = 4;            // how far each input travels (allreduce: rounds)
  std::uint32_t checkpoint_every = 0;  // tasks between checkpoints; 0 = never
  std::uint32_t large_percent = 10;  // % of messages with a payload over the inline limit
  std::uint32_t store_fault_percent = 5;  // % of store appends that lose the request or the response
  std::uint32_t dup_percent = 0;     // % of frame deliveries that leave a copy behind, delivered again later
  std::uint32_t loss_percent = 0;    // % of frames lost in transit (their senders resend)
  // Crashes at named points inside the library (WorkerOptions::
  // failure_point_hook): up to point_crashes of them, each at a random pass
  // through one of these points. Nothing the worker does after the point
  // reaches the store or the network.
  std::vector<FailurePoint> failure_points;
  std::uint32_t point_crashes = 0;
  bool rocksdb = false;              // RocksDB store in a temp dir instead of the memory store
  Mode mode = Mode::kLineageStash;
  Breakage breakage = Breakage::kNone;
  std::uint64_t max_steps = 3'000'000;

  // The command line that reruns exactly this configuration.
  std::string ReplayCommand() const;
};

// The configuration the seed sweep uses for `seed` (2..16 workers, f from 1
// to 3, 1..6 crash events, checkpoints sometimes, RocksDB 1 seed in 8).
SimConfig ConfigFromSeed(const std::string& workload, std::uint64_t seed);

struct SimResult {
  bool completed = false;               // reached quiescence within max_steps
  std::vector<std::string> violations;  // empty: the run was correct
  std::uint64_t steps = 0;
  std::uint64_t crashes = 0;            // workers killed
  std::uint64_t recoveries = 0;         // recoveries finished
  std::uint64_t tasks_executed = 0;
  std::uint64_t tasks_replayed = 0;
  std::uint64_t frames_delivered = 0;
  std::uint64_t frames_duplicated = 0;  // by the network (dup_percent)
  std::uint64_t frames_lost = 0;        // by the network (loss_percent)
  std::uint64_t point_crashes = 0;      // workers killed at a failure point
  std::uint64_t durability_entries_checked = 0;  // acknowledged log entries found again at the end
  std::uint64_t piggybacked_entries = 0;
  std::uint64_t stash_bytes_peak = 0;
  std::vector<double> recovery_ms;      // virtual time from restart to replay done
};

SimResult RunSimulation(const SimConfig& config);

}  // namespace lstash::sim
