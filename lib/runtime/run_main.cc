// lstash-run: start a job's store server(s) and worker processes on this
// machine, coordinate it, inject faults, and check the result.
// See docs/operations.md.
#include "runtime/launcher.h"

#include <CLI/CLI.hpp>

#include <sstream>

namespace {

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string part;
  while (std::getline(in, part, ',')) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace lstash;
  using runtime::FaultSpec;
  CLI::App cli{"lstash-run: run a job (by default the streaming wordcount) as separate processes, kill parts of it, "
               "check the result"};
  runtime::RunOptions o;
  std::string mode = "lineage-stash", breakage = "none";
  std::vector<std::string> kill_targets;
  double kill_at = -1, pause_at = -1, pause_for = 1, kill_store_at = -1;
  int kills = 1, kill_store = -1;
  bool during_recovery = false, no_sync = false;
  std::string pause_target;

  cli.add_option("--workload", o.workload, "wordcount | counter | hashchain | allreduce | ring | serving | pipeline")
      ->check(CLI::IsMember({"wordcount", "counter", "hashchain", "allreduce", "ring", "serving", "pipeline"}));
  cli.add_option("--app-settings", o.app_settings,
                 "a JSON object merged over the workload's settings, e.g. '{\"nondet\": true, \"tokens\": 4}' for ring");
  cli.add_option("--workers", o.workers, "worker processes (all but wordcount)")->check(CLI::Range(2, 64));
  cli.add_option("--task-rate", o.task_rate, "tasks per second per worker (all but wordcount)")->check(CLI::Range(1.0, 100000.0));
  cli.add_option("--mappers", o.mappers, "mapper processes")->check(CLI::Range(1, 64));
  cli.add_option("--reducers", o.reducers, "reducer processes")->check(CLI::Range(1, 64));
  cli.add_option("--input", o.input, "text files to count (default: /usr/share/common-licenses/*)");
  cli.add_option("--rate", o.rate, "lines per second")->check(CLI::PositiveNumber);
  cli.add_option("--duration", o.duration_s, "seconds of input")->check(CLI::PositiveNumber);
  cli.add_option("--max-batch", o.max_batch, "most lines per source tick")->check(CLI::Range(1, 1000000));
  cli.add_option("--mode", mode, "lineage-stash | write-first | none");
  cli.add_option("--breakage", breakage, "none | broken-no-piggyback | broken-no-event-log (negative controls)");
  cli.add_option("--f", o.max_forward, "max_forward: peers each entry is forwarded to (0: all)");
  cli.add_option("--global-snapshot-ms", o.global_snapshot_ms,
                 "checkpoint mode, the baseline (with --mode none): a global snapshot this often, global rollback on a failure")
      ->check(CLI::Range(0.0, 3600000.0));
  cli.add_option("--checkpoint-every", o.checkpoint_every, "tasks between a worker's checkpoints (0: never)");
  cli.add_option("--lease-ms", o.lease_ms, "lease on each incarnation's log (0: none)");
  cli.add_option("--heartbeat-ms", o.heartbeat_ms, "worker heartbeat period");
  cli.add_option("--heartbeat-timeout-ms", o.heartbeat_timeout_ms, "missed heartbeats for this long = dead");
  cli.add_option("--restart-delay-ms", o.restart_delay_ms, "wait this long before restarting a dead worker");
  cli.add_option("--kills", kills, "how many times to kill a worker (spread over the run; 0: none)")->check(CLI::Range(0, 100));
  cli.add_option("--kill", kill_targets, "whom to kill: source, mapN, reduceN or a worker id; "
                                         "TARGET,TARGET kills several at once (default: map0, reduce0, ... in turn)");
  cli.add_option("--kill-at", kill_at, "seconds into the run of the first kill (default: half the duration)");
  cli.add_flag("--kill-during-recovery", during_recovery, "kill the target again while it recovers");
  cli.add_option("--kill-store", kill_store, "kill this store shard with SIGKILL (it is restarted)");
  cli.add_option("--kill-store-at", kill_store_at, "seconds into the run of the store kill (default: a third of the duration)");
  cli.add_option("--pause", pause_target, "SIGSTOP this worker (a zombie once replaced), then SIGCONT it");
  cli.add_option("--pause-at", pause_at, "seconds into the run of the pause (default: half the duration)");
  cli.add_option("--pause-for", pause_for, "seconds the paused worker stays stopped");
  cli.add_option("--stores", o.stores, "store server processes (shards)")->check(CLI::Range(1, 64));
  cli.add_option("--transport", o.transport, "ipc (sockets in the run directory) or tcp")->check(CLI::IsMember({"ipc", "tcp"}));
  cli.add_option("--host", o.host, "tcp: the address to listen on");
  cli.add_option("--base-port", o.base_port, "tcp: workers use base+id, stores base+500+k, the coordinator base+999");
  cli.add_option("--run-dir", o.run_dir, "where stores, sockets, keys and logs go (default: a temp dir, removed after)");
  cli.add_flag("--keep", o.keep_run_dir, "keep the run directory");
  cli.add_flag("--curve", o.curve, "authenticate and encrypt every socket with CURVE (keys made in the run dir)");
  cli.add_flag("--no-sync", no_sync, "store servers acknowledge writes before syncing them");
  cli.add_option("--store-delay-ms", o.store_write_delay_ms, "store servers wait this long before each write (a slow store)")
      ->check(CLI::Range(0.0, 10000.0));
  cli.add_option("--net-faults", o.net_faults, "lose, duplicate, reorder or delay the frames workers send, "
                                              "e.g. loss:2,dup:5,reorder:10,delay:5ms (percent; testing)");
  cli.add_option("--net-fault-seed", o.net_fault_seed, "seed of the injected network faults");
  cli.add_option("--bin-dir", o.bin_dir, "directory of lstash-worker and lstash-store (default: next to lstash-run)");
  cli.add_option("--endpoints", o.endpoints, "every worker's transport endpoint, comma-separated, in id order "
                                            "(default: from --transport, --host, --base-port)")->delimiter(',');
  cli.add_option("--store-endpoints", o.store_endpoints,
                 "store servers already running elsewhere, comma-separated (shards); none is started here")
      ->delimiter(',');
  cli.add_option("--coordinator", o.coordinator, "where the coordinator listens (workers connect to it)");
  cli.add_option("--remote", o.remote, "workers started elsewhere, comma-separated: lstash-run prints their command "
                                       "lines and waits for them to join; a supervisor there restarts them")
      ->delimiter(',');
  cli.add_option("--keys", o.keys_dir, "CURVE key directory made by lstash-keygen (worker-N, store-K); enables CURVE");
  cli.add_option("--grace", o.grace_s, "seconds past the duration the job may take to finish");
  cli.add_flag("--json", o.json, "print a JSON summary as the last line");
  cli.add_option("--worker-log", o.worker_log, "workers' log level in RUN_DIR/logs (debug: recovery steps)")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  CLI11_PARSE(cli, argc, argv);

  auto m = ParseMode(mode);
  if (!m) {
    std::fprintf(stderr, "lstash-run: unknown --mode %s\n", mode.c_str());
    return 2;
  }
  o.mode = *m;
  auto b = ParseBreakage(breakage);
  if (!b) {
    std::fprintf(stderr, "lstash-run: unknown --breakage %s\n", breakage.c_str());
    return 2;
  }
  o.breakage = *b;
  o.store_sync = !no_sync;

  // Kills: spread over the run, targets in turn unless named.
  std::vector<std::string> rota;
  if (o.workload != "wordcount") {
    for (std::uint32_t i = 1; i < o.workers; ++i) rota.push_back("w" + std::to_string(i));
  }
  for (std::uint32_t i = 0; o.workload == "wordcount" && i < std::max(o.mappers, o.reducers); ++i) {
    if (i < o.mappers) rota.push_back("map" + std::to_string(i));
    if (i < o.reducers) rota.push_back("reduce" + std::to_string(i));
  }
  for (int i = 0; i < kills; ++i) {
    FaultSpec f;
    f.kind = FaultSpec::Kind::kKill;
    f.targets = Split(kill_targets.empty() ? rota[i % rota.size()] : kill_targets[i % kill_targets.size()]);
    const double first = kill_at >= 0 ? kill_at : o.duration_s / 2;
    f.at_s = kills == 1 ? first : first + (o.duration_s * 0.9 - first) * i / (kills - 1);
    o.faults.push_back(f);
    if (during_recovery) {
      FaultSpec again = f;
      again.during_recovery = true;
      again.at_s = f.at_s + 0.001;
      o.faults.push_back(again);
    }
  }
  if (kill_store >= 0) {
    FaultSpec f;
    f.targets = {"store" + std::to_string(kill_store)};
    f.at_s = kill_store_at >= 0 ? kill_store_at : o.duration_s / 3;
    o.faults.push_back(f);
  }
  if (!pause_target.empty()) {
    FaultSpec f;
    f.kind = FaultSpec::Kind::kPause;
    f.targets = {pause_target};
    f.at_s = pause_at >= 0 ? pause_at : o.duration_s / 2;
    f.pause_s = pause_for;
    o.faults.push_back(f);
  }
  return runtime::RunJob(o).exit_code;
}
