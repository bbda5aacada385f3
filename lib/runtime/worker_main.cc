// lstash-worker: one worker process of a job (normally started by lstash-run;
// see docs/operations.md to start one by hand on another machine).
#include "runtime/worker_host.h"

#include <lstash/curve.h>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

int main(int argc, char** argv) {
  using namespace lstash;
  CLI::App cli{"lstash worker process"};
  runtime::HostOptions o;
  std::string app_config = "{}", mode = "lineage-stash", breakage = "none", keys;
  double lease_ms = 1000, heartbeat_ms = 50, store_deadline_s = 10;
  cli.add_option("--id", o.id, "this worker's id")->required();
  cli.add_option("--endpoints", o.endpoints, "every worker's transport endpoint, comma-separated, in id order")
      ->required()
      ->delimiter(',');
  cli.add_option("--store", o.store_shards, "store server endpoints (shards), comma-separated")->required()->delimiter(',');
  cli.add_option("--coordinator", o.coordinator, "coordinator endpoint (lstash-run)");
  cli.add_option("--app", o.app, "application");
  cli.add_option("--app-config", app_config, "application settings (JSON)");
  cli.add_option("--mode", mode, "lineage-stash | write-first | none");
  cli.add_option("--breakage", breakage, "none | broken-no-piggyback | broken-no-event-log (tests only)");
  cli.add_option("--f", o.max_forward, "max_forward (0: all peers)");
  cli.add_option("--checkpoint-every", o.checkpoint_every, "tasks between checkpoints (0: never)");
  cli.add_option("--lease-ms", lease_ms, "lease on this incarnation's log (0: none)");
  cli.add_option("--heartbeat-ms", heartbeat_ms, "heartbeat period");
  cli.add_option("--store-deadline-s", store_deadline_s, "give up on an unreachable store after this long");
  cli.add_option("--keys", keys, "CURVE key directory (worker-N, store-K key pairs); enables CURVE");
  cli.add_option("--net-faults", o.net_faults, "inject faults on the frames this worker sends, e.g. "
                                              "loss:2,dup:5,reorder:10,delay:5ms (testing)");
  cli.add_option("--net-fault-seed", o.net_fault_seed, "seed of the injected network faults");
  cli.add_flag("--global-snapshots", o.global_snapshots,
               "checkpoint mode (the baseline): global snapshots and rollback, no lstash logging");
  cli.add_option("--crash-at", o.crash_at, "crash test: SIGKILL this process at the first pass through a failure point")
      ->check(CLI::IsMember({"before-flush", "after-flush", "mid-forward", "mid-recovery", "mid-checkpoint"}));
  std::string log_level = "info";
  cli.add_option("--log", log_level, "log level (debug: recovery steps, peers, stale frames)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  CLI11_PARSE(cli, argc, argv);

  if (o.id >= o.endpoints.size()) {
    std::fprintf(stderr, "lstash-worker: --id %u but only %zu endpoints\n", o.id, o.endpoints.size());
    return 2;
  }
  o.app_config = nlohmann::json::parse(app_config, nullptr, false);
  if (o.app_config.is_discarded()) {
    std::fprintf(stderr, "lstash-worker: --app-config is not valid JSON\n");
    return 2;
  }
  auto m = ParseMode(mode);
  if (!m) {
    std::fprintf(stderr, "lstash-worker: unknown --mode %s\n", mode.c_str());
    return 2;
  }
  o.mode = *m;
  auto b = ParseBreakage(breakage);
  if (!b) {
    std::fprintf(stderr, "lstash-worker: unknown --breakage %s\n", breakage.c_str());
    return 2;
  }
  o.breakage = *b;
  o.lease_nanos = static_cast<std::int64_t>(lease_ms * 1e6);
  o.heartbeat_nanos = static_cast<std::int64_t>(heartbeat_ms * 1e6);
  o.store_deadline_nanos = static_cast<std::int64_t>(store_deadline_s * 1e9);
  if (!keys.empty()) {
    const std::string self = "worker-" + std::to_string(o.id);
    auto own = ReadCurveKeyPair(keys, self);
    if (!own.ok()) {
      std::fprintf(stderr, "lstash-worker: %s\n", own.status().ToString().c_str());
      return 2;
    }
    CurveSecurity t;
    t.own = *own;
    for (std::size_t w = 0; w < o.endpoints.size(); ++w) {
      auto pub = ReadCurvePublicKey(keys, "worker-" + std::to_string(w));
      if (!pub.ok()) {
        std::fprintf(stderr, "lstash-worker: %s\n", pub.status().ToString().c_str());
        return 2;
      }
      t.server_keys.push_back(*pub);
      t.allowed_clients.push_back(*pub);
    }
    CurveSecurity s;
    s.own = *own;
    for (std::size_t k = 0; k < o.store_shards.size(); ++k) {
      auto pub = ReadCurvePublicKey(keys, "store-" + std::to_string(k));
      if (!pub.ok()) {
        std::fprintf(stderr, "lstash-worker: %s\n", pub.status().ToString().c_str());
        return 2;
      }
      s.server_keys.push_back(*pub);
    }
    o.transport_curve = t;
    o.store_curve = s;
  }
  spdlog::set_pattern("[%H:%M:%S.%e] [%l] %v");
  spdlog::set_level(spdlog::level::from_str(log_level));
  return runtime::RunWorkerHost(o);
}
