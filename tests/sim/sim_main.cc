// lstash-sim: runs the deterministic simulator for one seed (to replay a
// failure) or a sweep of seeds, and reports violations.
#include "sim/sim.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

using lstash::sim::SimConfig;

int main(int argc, char** argv) {
  CLI::App app{"lstash deterministic simulator"};
  SimConfig c;
  std::string mode = "lineage-stash", breakage = "none";
  std::uint64_t sweep = 0;
  bool json = false, from_seed = false;
  app.add_option("--workload", c.workload, "counter | hashchain")->check(CLI::IsMember({"counter", "hashchain"}));
  app.add_option("--seed", c.seed, "seed (printed by a failing run)");
  app.add_flag("--from-seed", from_seed, "derive every parameter from the seed, as the test sweep does");
  app.add_option("--workers", c.workers, "workers (2..256)")->check(CLI::Range(2, 256));
  app.add_option("--f", c.f, "max_forward, and failures allowed at once")->check(CLI::Range(1, 255));
  app.add_option("--crashes", c.crashes, "crash events to inject");
  app.add_option("--tokens", c.tokens, "inputs each worker injects");
  app.add_option("--hops", c.hops, "hops per input");
  app.add_option("--checkpoint-every", c.checkpoint_every, "tasks between checkpoints (0: none)");
  app.add_option("--large-percent", c.large_percent, "% of messages with large payloads")->check(CLI::Range(0, 100));
  app.add_option("--store-faults", c.store_fault_percent, "% of store writes losing request/response")
      ->check(CLI::Range(0, 100));
  app.add_flag("--rocksdb", c.rocksdb, "use an embedded RocksDB store in a temp dir");
  app.add_option("--mode", mode, "lineage-stash | write-first | none");
  app.add_option("--breakage", breakage, "none | broken-no-piggyback | broken-no-event-log (negative controls)");
  app.add_option("--sweep", sweep, "run this many seeds from --seed on, parameters derived from each seed");
  app.add_flag("--json", json, "print a JSON summary as the last line");
  std::string log_level = "warn";
  app.add_option("--log", log_level, "library log level (debug shows every rejected frame)");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::from_str(log_level));

  auto m = lstash::ParseMode(mode);
  if (!m) {
    std::cerr << "lstash-sim: unknown --mode " << mode << "\n";
    return 2;
  }
  c.mode = *m;
  if (breakage == "none") c.breakage = lstash::Breakage::kNone;
  else if (breakage == "broken-no-piggyback") c.breakage = lstash::Breakage::kNoPiggyback;
  else if (breakage == "broken-no-event-log") c.breakage = lstash::Breakage::kNoEventLog;
  else {
    std::cerr << "lstash-sim: unknown --breakage " << breakage << "\n";
    return 2;
  }
  if (c.f >= c.workers) c.f = c.workers - 1;

  std::vector<SimConfig> runs;
  if (sweep == 0) {
    if (from_seed) {
      SimConfig d = lstash::sim::ConfigFromSeed(c.workload, c.seed);
      d.mode = c.mode;
      d.breakage = c.breakage;
      c = d;
    }
    runs.push_back(c);
  } else {
    for (std::uint64_t s = c.seed; s < c.seed + sweep; ++s) {
      SimConfig d = lstash::sim::ConfigFromSeed(c.workload, s);
      d.mode = c.mode;
      d.breakage = c.breakage;
      runs.push_back(d);
    }
  }
  std::uint64_t failed = 0, crashes = 0, recoveries = 0, replayed = 0;
  nlohmann::json failures = nlohmann::json::array();
  for (const auto& run : runs) {
    auto r = lstash::sim::RunSimulation(run);
    crashes += r.crashes;
    recoveries += r.recoveries;
    replayed += r.tasks_replayed;
    if (runs.size() == 1 || !r.violations.empty()) {
      std::printf("seed %llu: %s, %llu steps, %llu tasks (%llu replayed), %llu crashes, %llu recoveries, %zu violations\n",
                  static_cast<unsigned long long>(run.seed), r.violations.empty() ? "ok" : "VIOLATIONS",
                  static_cast<unsigned long long>(r.steps), static_cast<unsigned long long>(r.tasks_executed),
                  static_cast<unsigned long long>(r.tasks_replayed), static_cast<unsigned long long>(r.crashes),
                  static_cast<unsigned long long>(r.recoveries), r.violations.size());
    }
    if (!r.violations.empty()) {
      ++failed;
      for (std::size_t i = 0; i < r.violations.size() && i < 10; ++i) std::printf("  %s\n", r.violations[i].c_str());
      std::printf("  replay: %s\n", run.ReplayCommand().c_str());
      failures.push_back({{"seed", run.seed}, {"replay", run.ReplayCommand()}, {"first", r.violations.front()}});
    }
  }
  std::printf("%zu runs, %llu with violations, %llu crashes, %llu recoveries, %llu tasks replayed\n", runs.size(),
              static_cast<unsigned long long>(failed), static_cast<unsigned long long>(crashes),
              static_cast<unsigned long long>(recoveries), static_cast<unsigned long long>(replayed));
  if (json) {
    nlohmann::json j{{"runs", runs.size()},       {"failed", failed},     {"crashes", crashes},
                     {"recoveries", recoveries},  {"replayed", replayed}, {"failures", failures}};
    std::cout << j.dump() << std::endl;
  }
  return failed ? 1 : 0;
}
