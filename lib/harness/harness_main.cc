// lstash-harness: a workload under seeded faults, on real processes or in
// the simulator, checked for lost, duplicated or contradicted results.
// See docs/reliability.md.
#include "harness/harness.h"
#include "runtime/process.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

int main(int argc, char** argv) {
  using namespace lstash;
  harness::HarnessOptions o;
  std::string faults;
  bool json = false;
  CLI::App cli{"lstash-harness: run a workload under faults chosen from a seed and check the result"};
  cli.add_option("--workload", o.workload, "wordcount, counter, hashchain, allreduce, ring, serving, pipeline");
  auto* workers = cli.add_option("--workers", o.workers, "worker processes (--sim: simulated workers; default from the seed)");
  auto* fault_list = cli.add_option("--faults", faults,
                                    "comma list: kill[:N], kill-at-once[:K], kill-during-recovery, store-restart, pause, "
                                    "slow-store:MS (real processes); kill[:N], store-loss[:PERCENT], reorder (--sim); none");
  cli.add_option("--seed", o.seed, "seed: chooses fault times, targets and (--sim) everything else");
  cli.add_flag("--sim", o.sim, "run in the deterministic simulator instead of real processes");
  cli.add_option("--duration", o.duration_s, "real processes: seconds of input");
  auto* f = cli.add_option("--f", o.f, "max_forward: failures tolerated at once");
  cli.add_option("--protocol", o.protocol,
                 "lineage-stash | write-first | none | broken-no-piggyback | broken-no-event-log (negative controls)");
  cli.add_option("--bin-dir", o.bin_dir, "where lstash-worker and lstash-store are (default: next to lstash-harness)");
  cli.add_flag("--json", json, "print a JSON summary as the last line");
  std::string log_level = "warn";
  cli.add_option("--log", log_level, "library log level in this process (--sim: debug and trace follow every frame)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return cli.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "lstash-harness: %s\n", e.what());
    return 2;
  }
  o.workers_given = workers->count() > 0;
  o.f_given = f->count() > 0;
  o.faults_given = fault_list->count() > 0;
  auto parsed = harness::ParseFaults(faults);
  if (!parsed.ok()) {
    std::fprintf(stderr, "lstash-harness: %s\n", std::string(parsed.status().message()).c_str());
    return 2;
  }
  o.faults = *parsed;
  if (Status s = harness::Validate(o); !s.ok()) {
    std::fprintf(stderr, "lstash-harness: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (o.bin_dir.empty()) o.bin_dir = runtime::SelfDirectory();
  spdlog::set_level(spdlog::level::from_str(log_level));

  const std::string replay = o.ReplayCommand();
  std::printf("lstash-harness: seed %llu; replay with: %s\n", static_cast<unsigned long long>(o.seed), replay.c_str());
  std::fflush(stdout);
  auto r = harness::Run(o);
  if (!r.ok()) {
    std::fprintf(stderr, "lstash-harness: %s\n", r.status().ToString().c_str());
    return 2;
  }
  std::printf("%s: %llu faults injected, %llu recoveries, %zu violations%s\n",
              r->violations.empty() && r->completed ? "OK" : "VIOLATIONS",
              static_cast<unsigned long long>(r->faults_injected), static_cast<unsigned long long>(r->recoveries),
              r->violations.size(), r->completed ? "" : " (did not complete)");
  for (std::size_t i = 0; i < r->violations.size() && i < 20; ++i) std::printf("  %s\n", r->violations[i].c_str());
  if (!r->violations.empty()) std::printf("  replay: %s\n", replay.c_str());
  if (!r->kept_logs.empty()) std::printf("  logs (workers at debug level): %s\n", r->kept_logs.c_str());
  if (json) {
    constexpr std::size_t kMaxDetails = 50;
    std::vector<std::string> details(r->violations.begin(),
                                     r->violations.begin() + std::min(r->violations.size(), kMaxDetails));
    if (r->violations.size() > kMaxDetails) details.push_back(fmt::format("... and {} more", r->violations.size() - kMaxDetails));
    nlohmann::json j{{"seed", o.seed},
                     {"workload", o.workload},
                     {"workers", r->workers},
                     {"sim", o.sim},
                     {"protocol", o.protocol},
                     {"faults_injected", r->faults_injected},
                     {"recoveries", r->recoveries},
                     {"violations", r->violations.size()},
                     {"violation_details", details},
                     {"completed", r->completed},
                     {"recovery_ms", r->recovery_ms},
                     {"replay", replay}};
    if (!r->kept_logs.empty()) j["logs"] = r->kept_logs;
    j["durability_entries_checked"] = r->durability_entries_checked;
    std::cout << j.dump() << std::endl;
  }
  return r->violations.empty() && r->completed ? 0 : 1;
}
