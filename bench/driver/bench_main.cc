// lstash-bench: the end-to-end benchmark driver. Runs one workload on real
// processes in each fault tolerance mode, one after another in one run, and
// reports latency percentiles, throughput and recovery times side by side.
//
//   lstash-bench --workload ring [--modes none,lineage-stash] [--workers 4]
//                [--seconds 5] [--quick] [--json] [--out bench/results]
//   lstash-bench --workload allreduce [--sizes-mb 1,10,100] [--workers 4]
//   lstash-bench --report bench/results --doc docs/benchmarks.md
//
// scripts/bench runs the whole suite and draws the plots.
#include "driver/suite.h"

#include <lstash/worker.h>

#include <CLI/CLI.hpp>

#include <cstdio>
#include <filesystem>
#include <set>

namespace {

const std::vector<std::string> kModes = {"none", "write-first", "lineage-stash", "checkpoint"};
const std::set<std::string> kWorkloads = {"ring", "wordcount", "piggyback", "recovery", "allreduce", "serving",
                                          "pipeline"};

}  // namespace

int main(int argc, char** argv) {
  using lstash::bench::BenchOptions;
  CLI::App cli{"lstash-bench: fault tolerance modes side by side on real processes"};
  BenchOptions o;
  bool json = false;
  std::string report_dir, doc;
  cli.add_option("--workload", o.workload, "ring | wordcount | piggyback | recovery | allreduce | serving | pipeline");
  cli.add_option("--modes", o.modes, "comma-separated: none, write-first, lineage-stash, checkpoint (default: the "
                                     "workload's)")
      ->delimiter(',');
  auto* workers = cli.add_option("--workers", o.workers, "worker processes (ring, piggyback, recovery; allreduce: this "
                                                         "count only, instead of 2 and 4)")
                      ->check(CLI::Range(2, 16));
  cli.add_option("--seconds", o.seconds, "length of each run")->check(CLI::Range(0.5, 600.0));
  cli.add_option("--rounds", o.rounds,
                 "ring, serving, pipeline: run every mode in turn this many times, pooling each mode's latencies")
      ->check(CLI::Range(1, 100));
  cli.add_flag("--quick", o.quick, "fewer points and shorter runs: a smoke test of the suite");
  cli.add_flag("--json", json, "print one JSON object as the last line");
  cli.add_option("--out", o.out_dir, "also write TAG.json and TAG.csv (and plot data) into this directory");
  cli.add_option("--tag", o.tag, "file name stem in --out (default: the workload)");
  cli.add_flag("--nondet", o.nondet, "ring: each task also draws a logged random value");
  cli.add_option("--f", o.f, "max_forward: peers each stash entry is forwarded to (0: all)");
  cli.add_option("--store-delay-ms", o.store_delay_ms, "added before each store write")->check(CLI::Range(0.0, 1000.0));
  cli.add_option("--tokens", o.tokens, "ring: tokens travelling at once")->check(CLI::Range(1, 4096));
  cli.add_option("--work-us", o.work_us, "ring: busy work per task, in microseconds")->check(CLI::Range(0.0, 1e6));
  cli.add_option("--rate", o.rate, "wordcount: lines per second offered")->check(CLI::PositiveNumber);
  cli.add_option("--sweep-rates", o.sweep_rates, "wordcount: rates tried for the sustainable throughput")->delimiter(',');
  cli.add_option("--request-rate", o.request_rate, "serving: requests per second per client")->check(CLI::Range(1.0, 1e5));
  cli.add_option("--minibatch-rate", o.minibatch_rate, "pipeline: minibatches to train per second of --seconds")
      ->check(CLI::Range(1.0, 1e5));
  cli.add_option("--backend", o.backend, "serving, pipeline: the GPU backend")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cli.add_option("--heartbeat-timeout-ms", o.heartbeat_timeout_ms, "recovery: failure detection")->check(CLI::PositiveNumber);
  cli.add_option("--checkpoint-every", o.checkpoint_every, "tasks between a worker's own checkpoints (lineage-stash, write-first)");
  cli.add_option("--snapshot-interval-ms", o.snapshot_interval_ms, "checkpoint mode: time between global snapshots")
      ->check(CLI::Range(10.0, 60000.0));
  cli.add_option("--lineage-tasks", o.lineage_tasks, "recovery: lineage lengths for recovery time against lineage")
      ->delimiter(',');
  cli.add_option("--sizes-mb", o.sizes_mb, "allreduce: vector sizes in MiB of floats (default 1,10,100; --quick 1,10)")
      ->delimiter(',')
      ->check(CLI::Range(1, 256));
  auto* iterations = cli.add_option("--iterations", o.iterations, "allreduce: timed calls per size (default 5; --quick 3)")
                         ->check(CLI::Range(1, 1000));
  cli.add_option("--warmup", o.warmup, "allreduce: untimed calls before the timed ones (default 1)")
      ->check(CLI::Range(0, 100));
  cli.add_option("--checkpoint-max-mb", o.checkpoint_max_mb,
                 "allreduce: the largest vector checkpoint mode runs with (default 10; its snapshots of 100 MB "
                 "outlast the store's deadline)");
  o.mpi_script = LSTASH_MPI_SCRIPT;
  cli.add_option("--mpi-script", o.mpi_script, "allreduce: scripts/mpi-allreduce, which runs OpenMPI beside (default: "
                                               "this source tree's)");
  cli.add_option("--report", report_dir, "write the benchmarks document from the JSON results in this directory");
  cli.add_option("--doc", doc, "with --report: the document to update (default docs/benchmarks.md)");
  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return cli.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "lstash-bench: %s\n", e.what());
    return 2;
  }

  if (!report_dir.empty()) {
    return lstash::bench::WriteReport(report_dir, doc.empty() ? "docs/benchmarks.md" : doc) ? 0 : 1;
  }
  if (!kWorkloads.count(o.workload)) {
    std::fprintf(stderr, "lstash-bench: --workload must be one of ring, wordcount, piggyback, recovery, allreduce, serving, pipeline (got '%s')\n",
                 o.workload.c_str());
    return 2;
  }
  if (o.modes.empty()) {
    o.modes = o.workload == "recovery" ? std::vector<std::string>{"lineage-stash", "write-first", "checkpoint"} : kModes;
  }
  for (const auto& m : o.modes) {
    if (std::find(kModes.begin(), kModes.end(), m) == kModes.end()) {
      std::fprintf(stderr, "lstash-bench: unknown mode '%s' (none, write-first, lineage-stash, checkpoint)\n", m.c_str());
      return 2;
    }
    if (o.workload == "recovery" && m == "none") {
      std::fprintf(stderr, "lstash-bench: mode none cannot recover from a failure; leave it out of --modes\n");
      return 2;
    }
  }
  if (o.rounds > 1 && o.workload != "ring" && o.workload != "serving" && o.workload != "pipeline") {
    std::fprintf(stderr, "lstash-bench: --rounds applies to ring, serving and pipeline, not %s\n", o.workload.c_str());
    return 2;
  }
  if (o.f >= o.workers) o.f = 0;
  if (o.workload == "recovery" && o.lineage_tasks.empty()) {
    o.lineage_tasks = o.quick ? std::vector<std::uint64_t>{1000, 10000, 100000}
                              : std::vector<std::uint64_t>{1000, 10000, 100000, 1000000};
  }
  if (o.workload == "allreduce") {
    if (o.sizes_mb.empty()) o.sizes_mb = o.quick ? std::vector<std::uint64_t>{1, 10} : std::vector<std::uint64_t>{1, 10, 100};
    o.worker_counts = workers->count() ? std::vector<std::uint32_t>{o.workers} : std::vector<std::uint32_t>{2, 4};
    if (o.quick && !iterations->count()) o.iterations = 3;
  }
  if (!o.out_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.out_dir, ec);
    if (ec) {
      std::fprintf(stderr, "lstash-bench: cannot create %s: %s\n", o.out_dir.c_str(), ec.message().c_str());
      return 2;
    }
  }
  std::printf("lstash-bench %s on %s\n", o.workload.c_str(), lstash::bench::MachineDescription().c_str());
  try {
    const nlohmann::json out = lstash::bench::RunBenchmark(o);
    if (json) std::printf("%s\n", out.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lstash-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
