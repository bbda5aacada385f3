// lstash-harness: runs a workload with faults chosen from a seed, on real
// processes (through the launcher, lib/runtime) or in the deterministic
// simulator (lib/sim), and checks the run: exactly-once results, no
// orphans, liveness, the stash's memory cap, and that every write the store
// acknowledged is still in it. See docs/reliability.md.
#pragma once

#include <lstash/status.h>
#include <lstash/worker.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lstash::harness {

// One entry of --faults: NAME or NAME:VALUE.
struct Fault {
  std::string name;   // "kill", "pause", ...
  std::string value;  // as given; empty if none
};

struct HarnessOptions {
  std::string workload = "wordcount";
  std::uint32_t workers = 5;
  std::vector<Fault> faults;
  std::uint64_t seed = 1;
  bool sim = false;
  double duration_s = 10;  // real processes: seconds of input
  std::uint32_t f = 1;
  std::string protocol = "lineage-stash";  // or write-first, none, broken-no-piggyback, broken-no-event-log
  std::string bin_dir;                     // lstash-worker and lstash-store (default: next to the harness)
  bool workers_given = false, f_given = false, faults_given = false;  // else, in --sim, from the seed

  // The command line that reruns exactly this run.
  std::string ReplayCommand() const;
};

// Parses "kill:3,pause,store-restart". kInvalidArgument names the bad entry.
Result<std::vector<Fault>> ParseFaults(const std::string& list);

// Checks the options against what the chosen runner supports.
Status Validate(const HarnessOptions& options);

struct HarnessResult {
  std::uint32_t workers = 0;  // as run (in --sim, possibly from the seed)
  bool completed = false;
  std::uint64_t faults_injected = 0;
  std::uint64_t recoveries = 0;
  std::vector<std::string> violations;
  std::vector<double> recovery_ms;
  std::string kept_logs;  // real processes: where a failing run's logs were kept
  std::uint64_t durability_entries_checked = 0;  // acknowledged log entries found again at the end
};

// Runs it. The status is not OK only if the run could not be carried out
// (a setup error), not for violations.
Result<HarnessResult> Run(const HarnessOptions& options);

}  // namespace lstash::harness
