// lstash-bench: end-to-end benchmarks on real processes, every fault
// tolerance mode side by side in one run (docs/benchmarks.md).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace lstash::bench {

struct BenchOptions {
  std::string workload;                 // ring, wordcount, piggyback, recovery, allreduce, serving, pipeline
  std::vector<std::string> modes;       // none, write-first, lineage-stash, checkpoint
  std::uint32_t workers = 4;
  double seconds = 5;
  // ring, serving, pipeline: every mode in turn, this many times, each
  // mode's latencies pooled (a drift of the machine falls on every mode).
  std::uint32_t rounds = 1;
  bool quick = false;
  // ring / piggyback / recovery
  bool nondet = false;
  std::uint32_t f = 1;                  // max_forward; 0: all peers
  double store_delay_ms = 0;
  std::uint32_t tokens = 1;
  double work_us = 0;
  // wordcount
  double rate = 20000;                  // lines/s offered
  std::vector<double> sweep_rates;      // sustainable throughput: the rates tried
  // allreduce: every size on every worker count, OpenMPI beside
  std::vector<std::uint64_t> sizes_mb;       // MiB of floats
  std::vector<std::uint32_t> worker_counts;
  std::uint32_t iterations = 5;              // timed calls per size, after `warmup` untimed ones
  std::uint32_t warmup = 1;                  // the first call also sets up connections and memory
  std::string mpi_script;                    // scripts/mpi-allreduce (missing: "OpenMPI not found")
  // Checkpoint mode writes every worker's whole vector to the store at each
  // snapshot; above this size, here, one such write outlasts the store's
  // 10 s deadline and the run never ends, so it is not run (and says so).
  std::uint64_t checkpoint_max_mb = 10;
  // serving, pipeline
  double request_rate = 500;            // serving: requests/s per client
  double minibatch_rate = 200;          // pipeline: minibatches per second of --seconds
  std::string backend = "auto";         // gpu backend: auto, cpu, cuda
  // recovery
  double heartbeat_timeout_ms = 200;
  std::uint32_t checkpoint_every = 2000;     // tasks between a worker's checkpoints
  double snapshot_interval_ms = 1000;        // checkpoint mode: between global snapshots
  std::vector<std::uint64_t> lineage_tasks;  // recovery time against lineage length
  std::string out_dir;                  // where JSON and CSV go (empty: nowhere)
  std::string tag;                      // file name stem (default: the workload)
};

// The machine it runs on, in words: CPU model, cores, memory, kernel.
std::string MachineDescription();

// Runs one benchmark; returns {"workload", "machine", "results": {mode: {...}}}.
// Progress goes to stdout as it runs.
nlohmann::json RunBenchmark(const BenchOptions& options);

// Writes RESULTS_DIR's JSON files out as the generated part of the
// benchmarks document: the targets with their verdicts, the tables, the
// plots and the paper's numbers beside ours. Returns false (and says why on
// stderr) if it cannot.
bool WriteReport(const std::string& results_dir, const std::string& doc_path);

}  // namespace lstash::bench
