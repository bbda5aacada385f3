// lstash-run: starts a job on this machine -- its store server(s), its
// worker processes -- and coordinates it: detects a dead worker by its exit
// or by missed heartbeats, starts a new incarnation, tells the survivors,
// reports detection and recovery times, injects the faults asked for, shows
// live progress, and at the end checks the result against a direct
// computation (PASS/FAIL).
#pragma once

#include <lstash/worker.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lstash::runtime {

// A fault to inject. Targets name a worker ("source", "map0", "reduce1" or
// a worker id) or a store shard ("store0").
struct FaultSpec {
  // kCrashAt: the target kills itself at the next pass through a failure
  // point inside the library (`point`, a FailurePointName), armed at at_s;
  // with during_recovery, its next incarnation is started armed instead.
  enum class Kind { kKill, kPause, kCrashAt } kind = Kind::kKill;
  std::string point;
  std::vector<std::string> targets;  // several: at the same moment
  double at_s = 0;                   // seconds after the job started
  double pause_s = 0;                // kPause: how long the target stays stopped
  bool during_recovery = false;      // kKill: wait until the target is recovering, then kill it again
  bool when_all_up = false;          // wait until no worker is down or recovering (keeps failures within f)
};

struct RunOptions {
  // The job: a workload of lib/workloads. wordcount has a source, mappers
  // and reducers; the others have `workers` peers, each running about
  // task_rate tasks per second for duration_s.
  std::string workload = "wordcount";
  std::uint32_t workers = 5;
  double task_rate = 500;
  std::uint32_t mappers = 2;
  std::uint32_t reducers = 2;
  std::vector<std::string> input;  // default: /usr/share/common-licenses/*
  double rate = 20000;             // lines/s
  double duration_s = 20;
  std::uint32_t max_batch = 200;
  std::string app_settings;        // a JSON object merged over the workload's config ({"nondet": true}: lib/workloads)
  // Fault tolerance.
  Mode mode = Mode::kLineageStash;
  Breakage breakage = Breakage::kNone;
  std::uint32_t max_forward = 1;
  std::uint32_t checkpoint_every = 2000;
  // Checkpoint mode (the baseline of coordinated snapshots, with mode
  // kNone): every this often the coordinator starts a global snapshot
  // (Chandy-Lamport markers along every channel); when a worker fails, every
  // worker rolls back to the last complete one. 0: off.
  double global_snapshot_ms = 0;
  double lease_ms = 1000;
  // Failure detection.
  double heartbeat_ms = 50;
  double heartbeat_timeout_ms = 200;
  double restart_delay_ms = 0;
  // Faults.
  std::vector<FaultSpec> faults;
  // Where things run.
  std::uint32_t stores = 1;
  std::string transport = "ipc";  // ipc (in the run directory) or tcp
  std::string host = "127.0.0.1";
  std::uint16_t base_port = 17000;  // tcp: workers base+id, stores base+500+k, coordinator base+999
  std::string run_dir;              // default: a new temp directory, removed at the end
  bool keep_run_dir = false;
  bool curve = false;               // generate keys and authenticate + encrypt every socket
  bool store_sync = true;
  double store_write_delay_ms = 0;  // a slow store: added before each write
  bool ack_journals = false;        // each store server journals what it acknowledged: RUN_DIR/storeK.acks
  std::string net_faults;           // every worker's sent frames: "loss:2,dup:5,reorder:10,delay:5ms"
  std::uint64_t net_fault_seed = 1; // each incarnation of each worker draws from its own seed derived from this
  std::string bin_dir;              // where lstash-worker and lstash-store are (default: next to lstash-run)
  // Across machines (docs/operations.md). Each overrides what lstash-run
  // would otherwise choose or start itself.
  std::vector<std::string> endpoints;        // every worker's transport endpoint, in id order
  std::vector<std::string> store_endpoints;  // store servers already running elsewhere; none is started
  std::string coordinator;                   // where the coordinator listens
  std::vector<std::string> remote;           // workers started elsewhere (and restarted there by a supervisor)
  std::string keys_dir;                      // CURVE keys made by lstash-keygen (worker-N, store-K); enables CURVE
  double grace_s = 60;              // how long past the duration the job may take to finish
  bool json = false;                // a JSON summary as the last line
  bool progress = true;             // a progress line every second
  std::string worker_log = "info";  // lstash-worker --log: what the logs in RUN_DIR/logs hold
};

// One failure of a worker and its recovery, as the job saw it. Times are
// from the fault (or, for a failure not injected, from its detection);
// negative when it did not happen.
struct CrashReport {
  std::string target;       // "map0", ...
  std::string how;          // "killed", "paused" or "failed" (not injected)
  std::string detected_by;  // "exit", "heartbeat" or "new incarnation"
  double detect_ms = -1, restart_ms = -1, recovered_ms = -1;
  double recovery_ms = 0;   // the new incarnation's own measure
  double gather_ms = 0;
  std::uint64_t replayed = 0;
  double latency_p50_ms = 0, latency_p99_ms = 0;  // of batches emitted meanwhile
  double fault_s = 0;       // when it happened, seconds after the job started
  double recovered_s = -1;  // when it had recovered (-1: never)
};

// One latency measurement of the workload (a wordcount batch end to end, a
// ring hop): when it started, seconds after the job started, how long it
// took, and how far the job had come.
struct LatencySample {
  double at_s = 0;
  double latency_us = 0;
  std::uint64_t progress = 0;  // how far the job had come (ring: the hop's number); 0 if not reported
};

struct JobReport {
  int exit_code = 2;        // 0 PASS, 1 FAIL, 2 usage or setup error, 130 interrupted
  std::string error;        // why, when exit_code is 2
  bool completed = false;   // every result arrived and every injected failure recovered in time
  bool results_correct = false;         // the workload's checker found nothing wrong
  std::vector<std::string> violations;  // what it found (or why it could not check)
  std::string verdict;                  // one line: what was checked
  double run_s = 0;
  std::uint64_t emitted = 0;  // wordcount: lines the source emitted
  double latency_p50_ms = 0, latency_p99_ms = 0;
  std::uint64_t stash_bytes_peak = 0;  // the most any one worker reported holding
  std::uint64_t net_faults_injected = 0;  // frames lost, duplicated, reordered or delayed, as last reported
  int zombies_fenced = 0;
  int crash_points_armed_and_down = 0;  // workers armed at a failure point that went down (crash tests)
  std::vector<CrashReport> crashes;
  std::vector<LatencySample> latency_samples;  // in the order they arrived
  // Every worker's last reported counters (Metrics names: tasks_executed,
  // piggybacked_entries, ...), summed over the workers.
  std::map<std::string, std::uint64_t> metric_totals;
};

// Runs the job, printing progress and a summary (and, with options.json,
// a JSON line) to stdout.
JobReport RunJob(const RunOptions& options);

}  // namespace lstash::runtime
