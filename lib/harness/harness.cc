#include "harness/harness.h"

#include "runtime/launcher.h"
#include "sim/sim.h"
#include "storeserver/ack_journal.h"

#include <fmt/format.h>

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <random>
#include <set>
#include <sstream>

namespace lstash::harness {
namespace {

// What each runner can inject today. The simulator's scheduler picks when
// each frame is delivered, and lets later frames overtake, so "reorder" and
// "delay" there ask for what it does anyway.
const std::set<std::string> kSimFaults = {"kill",         "store-loss",  "reorder",     "delay",
                                          "dup",          "loss",        "before-flush", "after-flush",
                                          "mid-forward",  "mid-recovery", "mid-checkpoint"};
const std::set<std::string> kProcessFaults = {"kill",        "kill-at-once",  "kill-during-recovery", "store-restart",
                                              "pause",       "slow-store",    "dup",                  "delay",
                                              "reorder",     "loss",          "before-flush",         "after-flush",
                                              "mid-forward", "mid-recovery",  "mid-checkpoint"};
// Crash tests at named failure points inside the library (FailurePoint).
const std::set<std::string> kFailurePoints = {"before-flush", "after-flush", "mid-forward", "mid-recovery", "mid-checkpoint"};
// Percentages of frames for the transport faults given without a value.
constexpr std::uint32_t kDefaultDupPercent = 5, kDefaultLossPercent = 2, kDefaultReorderPercent = 10;
const std::set<std::string> kKnownFaults = {"kill",         "kill-at-once", "kill-during-recovery", "store-restart",
                                            "pause",        "store-loss",   "reorder",              "dup",
                                            "delay",        "loss",         "slow-store",           "before-flush",
                                            "after-flush",  "mid-forward",  "mid-recovery",         "mid-checkpoint"};
const std::set<std::string> kWorkloads = {"allreduce", "counter", "hashchain", "pipeline", "ring", "serving", "wordcount"};

std::string JoinSet(const std::set<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

const Fault* Find(const std::vector<Fault>& faults, const std::string& name) {
  for (const auto& f : faults) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

// The value of NAME:VALUE as a count (VALUE absent: `fallback`).
std::uint32_t Count(const Fault* f, std::uint32_t fallback) {
  return f == nullptr || f->value.empty() ? fallback : static_cast<std::uint32_t>(std::stoul(f->value));
}

bool IsCount(const std::string& s) {
  return !s.empty() && s.size() <= 6 && s.find_first_not_of("0123456789") == std::string::npos;
}

// "5ms", "5" (milliseconds) or "500us": a duration in milliseconds.
std::optional<double> Milliseconds(const std::string& s) {
  std::string digits = s;
  double scale = 1;
  if (digits.ends_with("ms")) {
    digits.resize(digits.size() - 2);
  } else if (digits.ends_with("us")) {
    digits.resize(digits.size() - 2);
    scale = 1e-3;
  }
  if (!IsCount(digits)) return std::nullopt;
  return std::stod(digits) * scale;
}

struct Protocol {
  Mode mode = Mode::kLineageStash;
  Breakage breakage = Breakage::kNone;
};

// A mode, or a breakage of lineage-stash (a negative control).
std::optional<Protocol> ParseProtocol(const std::string& name) {
  if (auto m = ParseMode(name)) return Protocol{*m, Breakage::kNone};
  if (auto b = ParseBreakage(name); b && *b != Breakage::kNone) return Protocol{Mode::kLineageStash, *b};
  return std::nullopt;
}

void CheckMemory(std::uint64_t stash_bytes_peak, HarnessResult* r) {
  const std::size_t cap = WorkerOptions{}.max_stash_bytes;
  if (stash_bytes_peak > cap) {
    r->violations.push_back(fmt::format("memory: a worker's stash held {} bytes, over its cap of {}", stash_bytes_peak, cap));
  }
}

// Every write a store server acknowledged is still in its store, now that
// every process is gone (read straight from the RocksDB directory).
void CheckDurability(const std::string& run_dir, std::uint32_t stores, HarnessResult* r) {
  for (std::uint32_t k = 0; k < stores; ++k) {
    const std::string dir = fmt::format("{}/store{}", run_dir, k);
    auto store = OpenRocksDbStore(dir);
    auto report = store.ok() ? store_journal::CheckDurability(dir + ".acks", store->get())
                             : Result<store_journal::DurabilityReport>(store.status());
    if (!report.ok()) {
      r->violations.push_back(fmt::format("durability: cannot check store {}: {}", k, report.status().ToString()));
      continue;
    }
    r->durability_entries_checked += report->entries_checked;
    r->violations.insert(r->violations.end(), report->violations.begin(), report->violations.end());
  }
}

Result<HarnessResult> RunSim(const HarnessOptions& o, const Protocol& p) {
  sim::SimConfig c = sim::ConfigFromSeed(o.workload, o.seed);
  if (o.workers_given) c.workers = o.workers;
  if (o.f_given) c.f = o.f;
  if (o.faults_given) {
    c.crashes = Count(Find(o.faults, "kill"), 0);
    c.store_fault_percent = Count(Find(o.faults, "store-loss"), 0);
    c.dup_percent = Count(Find(o.faults, "dup"), Find(o.faults, "dup") ? kDefaultDupPercent : 0);
    c.loss_percent = Count(Find(o.faults, "loss"), Find(o.faults, "loss") ? kDefaultLossPercent : 0);
    for (const auto& point : kFailurePoints) {
      const Fault* f = Find(o.faults, point);
      if (f == nullptr) continue;
      c.failure_points.push_back(*ParseFailurePoint(point));
      c.point_crashes = std::max(c.point_crashes, Count(f, 2));
    }
    if (!c.failure_points.empty() && c.checkpoint_every == 0) c.checkpoint_every = 5;  // checkpoints to crash in
  }
  c.f = std::min(c.f, c.workers - 1);
  c.mode = p.mode;
  c.breakage = p.breakage;
  sim::SimResult s = sim::RunSimulation(c);
  HarnessResult r;
  r.workers = c.workers;
  r.completed = s.completed;
  r.faults_injected = s.crashes + s.frames_duplicated + s.frames_lost;  // crashes include those at failure points
  r.recoveries = s.recoveries;
  r.violations = s.violations;
  r.recovery_ms = s.recovery_ms;
  r.durability_entries_checked = s.durability_entries_checked;
  if (!s.completed) r.violations.push_back(fmt::format("liveness: no quiescence within {} steps", c.max_steps));
  CheckMemory(s.stash_bytes_peak, &r);
  return r;
}

Result<HarnessResult> RunProcesses(const HarnessOptions& o, const Protocol& p) {
  runtime::RunOptions ro;
  ro.workload = o.workload;
  ro.workers = o.workers;
  ro.mappers = (o.workers - 1) / 2;
  ro.reducers = o.workers - 1 - ro.mappers;
  ro.duration_s = o.duration_s;
  ro.rate = 5000;
  ro.mode = p.mode;
  ro.breakage = p.breakage;
  ro.max_forward = o.f;
  ro.bin_dir = o.bin_dir;
  ro.grace_s = 15;  // the liveness bound past the end of input
  ro.checkpoint_every = 300;  // checkpoints often enough to crash in the middle of some
  // Logs at debug level, kept when the run fails.
  std::string run_dir = (std::filesystem::temp_directory_path() / fmt::format("lstash-harness-{}-XXXXXX", o.seed)).string();
  if (mkdtemp(run_dir.data()) == nullptr) return IOError("cannot create a run directory in " + run_dir);
  ro.run_dir = run_dir;
  ro.worker_log = "debug";
  ro.ack_journals = true;

  std::vector<std::string> names;
  for (WorkerId w = 0; w < o.workers; ++w) names.push_back(std::to_string(w));
  std::mt19937_64 rng(o.seed);
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto pick = [&] { return names[rng() % names.size()]; };

  // Worker failures: kills, a pause, K at once, crashes at failure points.
  // Each gets a slot of its own in the middle 60% of the run, at a random
  // point in the slot's first half, and waits until no worker is down or
  // recovering: at most f workers fail at once, as the protocol requires.
  // (A crash at a failure point is armed in its slot and fires at the
  // target's next pass through the point.)
  std::vector<std::vector<runtime::FaultSpec>> events;  // each: specs injected together
  auto kill = [&](const std::string& target) {
    runtime::FaultSpec f;
    f.targets = {target};
    return f;
  };
  for (std::uint32_t i = 0, kills = Count(Find(o.faults, "kill"), o.faults_given ? 0 : 1); i < kills; ++i) {
    events.push_back({kill(pick())});
  }
  if (const Fault* at_once = Find(o.faults, "kill-at-once")) {
    std::vector<std::string> pool = names;
    std::shuffle(pool.begin(), pool.end(), rng);
    runtime::FaultSpec f;
    f.targets.assign(pool.begin(), pool.begin() + Count(at_once, o.f));
    events.push_back({f});
  }
  if (Find(o.faults, "pause")) {
    runtime::FaultSpec f = kill(pick());
    f.kind = runtime::FaultSpec::Kind::kPause;
    f.pause_s = 1.0;
    events.push_back({f});
  }
  for (const auto& point : kFailurePoints) {
    if (!Find(o.faults, point)) continue;
    runtime::FaultSpec f = kill(pick());
    f.kind = runtime::FaultSpec::Kind::kCrashAt;
    f.point = point;
    if (point == "mid-recovery") {  // kill it, and its next incarnation dies replaying
      f.during_recovery = true;
      events.push_back({f, kill(f.targets[0])});
    } else {
      events.push_back({f});
    }
  }
  std::shuffle(events.begin(), events.end(), rng);
  const bool again_during_recovery = Find(o.faults, "kill-during-recovery") != nullptr;
  bool again_added = false;
  for (std::size_t i = 0; i < events.size(); ++i) {
    const double slot = 0.6 * o.duration_s / static_cast<double>(events.size());
    const double at = 0.2 * o.duration_s + slot * static_cast<double>(i) + uniform(0.05, 0.5) * slot;
    for (runtime::FaultSpec f : events[i]) {
      f.at_s = at;
      f.when_all_up = !f.during_recovery;
      ro.faults.push_back(f);
      if (again_during_recovery && !again_added && f.kind == runtime::FaultSpec::Kind::kKill && f.targets.size() == 1) {
        runtime::FaultSpec again = f;  // the same target, killed again while it recovers
        again.during_recovery = true;
        again.when_all_up = false;
        again.at_s = f.at_s + 0.001;
        ro.faults.push_back(again);
        again_added = true;
      }
    }
  }
  if (const Fault* slow = Find(o.faults, "slow-store")) ro.store_write_delay_ms = *Milliseconds(slow->value);
  // Transport faults, on every frame every worker sends.
  std::string net;
  auto add = [&](const std::string& entry) { net += (net.empty() ? "" : ",") + entry; };
  if (const Fault* f = Find(o.faults, "dup")) add(fmt::format("dup:{}", Count(f, kDefaultDupPercent)));
  if (const Fault* f = Find(o.faults, "loss")) add(fmt::format("loss:{}", Count(f, kDefaultLossPercent)));
  if (const Fault* f = Find(o.faults, "reorder")) add(fmt::format("reorder:{}", Count(f, kDefaultReorderPercent)));
  if (const Fault* f = Find(o.faults, "delay")) add(fmt::format("delay:{}us", static_cast<long>(*Milliseconds(f->value) * 1000)));
  ro.net_faults = net;
  ro.net_fault_seed = o.seed;
  const bool store_restart = Find(o.faults, "store-restart") != nullptr;
  if (store_restart) {
    runtime::FaultSpec f;
    f.at_s = uniform(0.2, 0.7) * o.duration_s;
    f.targets = {"store0"};
    ro.faults.push_back(f);
  }

  runtime::JobReport job = runtime::RunJob(ro);
  if (job.exit_code == 2 || job.exit_code == 130) {
    std::error_code ec;
    std::filesystem::remove_all(run_dir, ec);
    return Unavailable(job.error.empty() ? "the job was interrupted" : job.error);
  }
  HarnessResult r;
  r.workers = o.workers;
  r.completed = job.completed;
  // A crash at mid-recovery happens inside the recovery of an earlier kill,
  // so it has no crash report of its own.
  std::uint64_t crash_reports_at_points = 0;
  for (const auto& c : job.crashes) crash_reports_at_points += c.how.rfind("crashed at ", 0) == 0;
  r.faults_injected = job.crashes.size() + (store_restart ? 1 : 0) + job.net_faults_injected +
                      (job.crash_points_armed_and_down - crash_reports_at_points);
  for (const auto& c : job.crashes) {
    if (c.recovered_ms < 0) continue;
    ++r.recoveries;
    r.recovery_ms.push_back(c.recovery_ms);
  }
  if (!job.completed) {
    r.violations.push_back(fmt::format("liveness: the job did not finish within {} s of its {} s of input",
                                       ro.grace_s, ro.duration_s));
  }
  r.violations.insert(r.violations.end(), job.violations.begin(), job.violations.end());
  CheckMemory(job.stash_bytes_peak, &r);
  CheckDurability(run_dir, ro.stores, &r);
  std::error_code ec;
  if (r.violations.empty()) {
    std::filesystem::remove_all(run_dir, ec);
  } else {
    r.kept_logs = run_dir + "/logs";
  }
  return r;
}

}  // namespace

Result<std::vector<Fault>> ParseFaults(const std::string& list) {
  std::vector<Fault> faults;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty() || item == "none") continue;
    Fault f;
    const auto colon = item.find(':');
    f.name = item.substr(0, colon);
    if (colon != std::string::npos) f.value = item.substr(colon + 1);
    if (!kKnownFaults.count(f.name)) {
      return InvalidArgument("--faults: unknown fault '" + f.name + "' (known: " + JoinSet(kKnownFaults) + ")");
    }
    const bool duration = f.name == "delay" || f.name == "slow-store";
    if (duration && !Milliseconds(f.value)) {
      return InvalidArgument("--faults: '" + item + "': give a delay such as " + f.name + ":1ms");
    }
    if (!duration && colon != std::string::npos && !IsCount(f.value)) {
      return InvalidArgument("--faults: '" + item + "': the value must be a count");
    }
    const bool percent = f.name == "dup" || f.name == "loss" || f.name == "reorder" || f.name == "store-loss";
    if (percent && !f.value.empty() && std::stoul(f.value) > 100) {
      return InvalidArgument("--faults: '" + item + "': a percentage of frames, 0..100");
    }
    if (Find(faults, f.name)) return InvalidArgument("--faults: '" + f.name + "' is given twice");
    faults.push_back(f);
  }
  return faults;
}

Status Validate(const HarnessOptions& o) {
  const char* where = o.sim ? "in the simulator (--sim)" : "on real processes";
  if (!kWorkloads.count(o.workload)) {
    return InvalidArgument(fmt::format("--workload {}: unknown (known: {})", o.workload, JoinSet(kWorkloads)));
  }
  const std::uint32_t min_workers = o.workload == "wordcount" ? 3 : 2;
  if (!ParseProtocol(o.protocol)) return InvalidArgument("--protocol " + o.protocol + ": unknown");
  const auto& supported = o.sim ? kSimFaults : kProcessFaults;
  for (const auto& f : o.faults) {
    if (!supported.count(f.name)) {
      return InvalidArgument(fmt::format("--faults: '{}' cannot be injected {} yet (supported: {})", f.name, where,
                                         JoinSet(supported)));
    }
  }
  if (o.sim) {
    if (o.workers_given && (o.workers < min_workers || o.workers > 256)) {
      return InvalidArgument(fmt::format("--workers: {}..256 for {} with --sim", min_workers, o.workload));
    }
  } else {
    if (o.workers < min_workers || o.workers > 64) {
      return InvalidArgument(fmt::format("--workers: {}..64 for {}{}", min_workers, o.workload,
                                         o.workload == "wordcount" ? " (a source, mappers, reducers)" : ""));
    }
    if (const Fault* k = Find(o.faults, "kill-at-once"); k && (Count(k, o.f) > o.f || Count(k, o.f) > o.workers)) {
      return InvalidArgument(fmt::format("--faults kill-at-once:{} exceeds f = {} (more failures at once than the "
                                         "job tolerates)", Count(k, o.f), o.f));
    }
    if (o.duration_s <= 0) return InvalidArgument("--duration must be positive");
  }
  if (o.f_given && o.f == 0) return InvalidArgument("--f must be at least 1");
  if (Find(o.faults, "kill-during-recovery") && Count(Find(o.faults, "kill"), 0) == 0) {
    return InvalidArgument("--faults: kill-during-recovery needs kill:N (it kills a killed worker again)");
  }
  return Status::OK();
}

std::string HarnessOptions::ReplayCommand() const {
  std::ostringstream s;
  s << "build/bin/lstash-harness --workload " << workload << " --seed " << seed;
  if (!sim || workers_given) s << " --workers " << workers;
  if (!sim || f_given) s << " --f " << f;
  if (faults_given) {
    std::string list;
    for (const auto& fault : faults) list += (list.empty() ? "" : ",") + fault.name + (fault.value.empty() ? "" : ":" + fault.value);
    s << " --faults " << (list.empty() ? "none" : list);
  }
  if (sim) s << " --sim";
  else s << " --duration " << duration_s;
  s << " --protocol " << protocol;
  return s.str();
}

Result<HarnessResult> Run(const HarnessOptions& options) {
  LSTASH_RETURN_IF_ERROR(Validate(options));
  const Protocol p = *ParseProtocol(options.protocol);
  return options.sim ? RunSim(options, p) : RunProcesses(options, p);
}

}  // namespace lstash::harness
