#include "driver/suite.h"

#include "runtime/launcher.h"
#include "runtime/process.h"

#include <lstash/store.h>
#include <lstash/worker.h>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <sstream>
#include <thread>

namespace lstash::bench {
namespace {

namespace fs = std::filesystem;
using runtime::JobReport;
using runtime::LatencySample;
using runtime::RunOptions;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

// The samples of the measured part of a run: the first `warmup` of the
// span (process start, connection set-up) is left out.
std::vector<LatencySample> Steady(const std::vector<LatencySample>& samples, double warmup_fraction) {
  if (samples.empty()) return {};
  double first = samples.front().at_s, last = first;
  for (const auto& s : samples) first = std::min(first, s.at_s), last = std::max(last, s.at_s);
  const double from = first + (last - first) * warmup_fraction;
  std::vector<LatencySample> out;
  for (const auto& s : samples) {
    if (s.at_s >= from) out.push_back(s);
  }
  return out;
}

std::vector<double> Latencies(const std::vector<LatencySample>& samples) {
  std::vector<double> v;
  v.reserve(samples.size());
  for (const auto& s : samples) v.push_back(s.latency_us);
  return v;
}

nlohmann::json LatencyStats(const std::vector<LatencySample>& samples) {
  const std::vector<double> v = Latencies(samples);
  return {{"p50_us", Percentile(v, 0.5)}, {"p99_us", Percentile(v, 0.99)}, {"p999_us", Percentile(v, 0.999)},
          {"samples", v.size()}};
}

// Samples per second over their span.
double Rate(const std::vector<LatencySample>& samples) {
  if (samples.size() < 2) return 0;
  double first = samples.front().at_s, last = first;
  for (const auto& s : samples) first = std::min(first, s.at_s), last = std::max(last, s.at_s);
  return last > first ? static_cast<double>(samples.size()) / (last - first) : 0;
}

std::string Path(const BenchOptions& o, const std::string& suffix) {
  return (fs::path(o.out_dir) / ((o.tag.empty() ? o.workload : o.tag) + suffix)).string();
}

// The latency CDF of each mode, for the plots: one row per quantile.
void WriteCdf(const BenchOptions& o, const std::map<std::string, std::vector<double>>& by_mode) {
  if (o.out_dir.empty() || by_mode.empty()) return;
  std::ofstream out(Path(o, "-cdf.csv"));
  out << "quantile";
  for (const auto& [mode, v] : by_mode) out << "," << mode << "_us";
  out << "\n";
  std::map<std::string, std::vector<double>> sorted = by_mode;
  for (auto& [mode, v] : sorted) std::sort(v.begin(), v.end());
  for (int i = 0; i <= 1000; ++i) {
    const double q = std::min(0.9999, i / 1000.0);
    out << q;
    for (const auto& [mode, v] : sorted) {
      out << "," << (v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))]);
    }
    out << "\n";
  }
}

// One row per mode: the stable keys, then whatever else the mode measured.
void WriteCsv(const BenchOptions& o, const nlohmann::json& results) {
  if (o.out_dir.empty()) return;
  const std::vector<std::string> keys = {"p50_us", "p99_us", "p999_us", "throughput", "detect_ms",
                                         "recover_ms", "back_to_baseline_ms", "replayed"};
  std::ofstream out(Path(o, ".csv"));
  out << "mode";
  for (const auto& k : keys) out << "," << k;
  out << "\n";
  for (const auto& [mode, r] : results.items()) {
    out << mode;
    for (const auto& k : keys) {
      out << ",";
      if (r.contains(k) && r[k].is_number()) out << r[k].dump();
    }
    out << "\n";
  }
}

// The runtime's settings for a mode.
void ApplyMode(const std::string& mode, const BenchOptions& o, RunOptions* r) {
  r->global_snapshot_ms = 0;
  if (mode == "checkpoint") {
    r->mode = Mode::kNone;  // no logging: periodic global snapshots, global rollback
    r->global_snapshot_ms = o.snapshot_interval_ms;
  } else {
    r->mode = *ParseMode(mode);
  }
}

RunOptions BaseRun(const BenchOptions& o, const std::string& workload) {
  RunOptions r;
  r.workload = workload;
  r.workers = o.workers;
  r.duration_s = o.seconds;
  r.max_forward = o.f;
  r.store_write_delay_ms = o.store_delay_ms;
  r.checkpoint_every = o.checkpoint_every;
  r.heartbeat_timeout_ms = o.heartbeat_timeout_ms;
  r.progress = false;
  r.grace_s = 30 + o.seconds;
  return r;
}

nlohmann::json RingSettings(const BenchOptions& o) {
  return {{"nondet", o.nondet}, {"tokens", o.tokens}, {"work_us", o.work_us}};
}

// Runs a job; a setup failure ends the benchmark (it would fail every mode).
JobReport Run(const RunOptions& r, const std::string& what) {
  std::printf("--- %s\n", what.c_str());
  std::fflush(stdout);
  JobReport report = runtime::RunJob(r);
  if (report.exit_code == 2) throw std::runtime_error(what + ": " + report.error);
  return report;
}

// What every mode's result object holds besides its latencies.
void AddJobFacts(const JobReport& rep, nlohmann::json* m) {
  (*m)["correct"] = rep.results_correct;
  if (!rep.results_correct) (*m)["violations"] = rep.violations;
  const auto total = [&](const char* k) {
    auto it = rep.metric_totals.find(k);
    return it == rep.metric_totals.end() ? 0.0 : static_cast<double>(it->second);
  };
  const double frames = total("task_frames");
  (*m)["piggyback_entries_per_msg"] = frames > 0 ? total("piggybacked_entries") / frames : 0;
  (*m)["piggyback_bytes_per_msg"] = frames > 0 ? total("piggybacked_bytes") / frames : 0;
  (*m)["stash_bytes_peak"] = rep.stash_bytes_peak;
}

// A run's latency percentiles (past its warm-up), what it did besides, and
// its steady latencies (for the CDF).
nlohmann::json Summarize(const JobReport& rep, std::vector<double>* steady_latencies) {
  const auto steady = Steady(rep.latency_samples, 0.1);
  nlohmann::json m = LatencyStats(steady);
  m["throughput"] = Rate(steady);
  AddJobFacts(rep, &m);
  if (steady_latencies) *steady_latencies = Latencies(steady);
  return m;
}

void PrintRow(const std::string& mode, const nlohmann::json& m) {
  std::printf("%-14s p50 %9.1f us  p99 %9.1f us  p99.9 %9.1f us  %10.0f /s%s\n", mode.c_str(),
              m.value("p50_us", 0.0), m.value("p99_us", 0.0), m.value("p999_us", 0.0), m.value("throughput", 0.0),
              m.value("correct", true) ? "" : "  RESULT WRONG");
  std::fflush(stdout);
}

// ------------------------------------------------------------------ ring
// Runs `workload` with `app_settings` once per mode without faults, or
// --rounds times, the modes taking turns; each mode's latencies past each
// run's warm-up pooled and summarized, its rate the mean of its runs', its
// CDF written. `what` names a run.
nlohmann::json EveryMode(const BenchOptions& o, const std::string& workload, const nlohmann::json& app_settings,
                         const std::function<std::string(const std::string& mode)>& what) {
  struct Pooled {
    std::vector<LatencySample> steady;
    double rate_sum = 0;
    JobReport facts;  // correctness, violations and counters of every run
  };
  std::map<std::string, Pooled> pooled;
  for (std::uint32_t round = 1; round <= o.rounds; ++round) {
    for (const auto& mode : o.modes) {
      RunOptions r = BaseRun(o, workload);
      ApplyMode(mode, o, &r);
      r.app_settings = app_settings.dump();
      r.faults.clear();
      const std::string name = o.rounds == 1 ? what(mode) : fmt::format("{} (round {} of {})", what(mode), round, o.rounds);
      const JobReport rep = Run(r, name);
      const std::vector<LatencySample> steady = Steady(rep.latency_samples, 0.1);
      Pooled& p = pooled[mode];
      if (round == 1) p.facts.results_correct = true;
      p.steady.insert(p.steady.end(), steady.begin(), steady.end());
      p.rate_sum += Rate(steady);
      p.facts.results_correct = p.facts.results_correct && rep.results_correct;
      p.facts.violations.insert(p.facts.violations.end(), rep.violations.begin(), rep.violations.end());
      p.facts.stash_bytes_peak = std::max(p.facts.stash_bytes_peak, rep.stash_bytes_peak);
      for (const auto& [k, v] : rep.metric_totals) p.facts.metric_totals[k] += v;
    }
  }
  nlohmann::json results = nlohmann::json::object();
  std::map<std::string, std::vector<double>> cdf;
  for (const auto& mode : o.modes) {
    const Pooled& p = pooled[mode];
    nlohmann::json m = LatencyStats(p.steady);
    m["throughput"] = p.rate_sum / o.rounds;
    m["runs"] = o.rounds;
    AddJobFacts(p.facts, &m);
    PrintRow(mode, m);
    results[mode] = m;
    cdf[mode] = Latencies(p.steady);
  }
  WriteCdf(o, cdf);
  return results;
}

// Throughput: hops per second.
nlohmann::json Ring(const BenchOptions& o) {
  return EveryMode(o, "ring", RingSettings(o), [&](const std::string& mode) {
    return fmt::format("ring, {}: {} workers, {} s, {}, f={}, store +{} ms", mode, o.workers, o.seconds,
                       o.nondet ? "nondeterministic" : "deterministic", o.f == 0 ? "all" : std::to_string(o.f),
                       o.store_delay_ms);
  });
}

// ------------------------------------------------------------- wordcount
nlohmann::json Wordcount(const BenchOptions& o) {
  nlohmann::json results = nlohmann::json::object();
  std::map<std::string, std::vector<double>> cdf;
  for (const auto& mode : o.modes) {
    auto run = [&](double rate) {
      RunOptions r = BaseRun(o, "wordcount");
      ApplyMode(mode, o, &r);
      r.rate = rate;
      r.faults.clear();
      return Run(r, fmt::format("wordcount, {}: {:.0f} lines/s for {} s", mode, rate, o.seconds));
    };
    JobReport rep = run(o.rate);
    nlohmann::json m = Summarize(rep, &cdf[mode]);
    m["throughput"] = rep.emitted / std::max(1e-9, rep.run_s);  // lines per second, start to finish
    m["offered_rate"] = o.rate;
    PrintRow(mode, m);
    // Sustainable: the highest offered rate the job keeps up with -- the
    // source emits at least 95% of the lines due (it stops at the end of
    // its time, not of its input), the job ends within 1.5 s of it, and the
    // p99 stays under 250 ms.
    double sustainable = 0;
    for (double rate : o.sweep_rates) {
      JobReport s = rate == o.rate ? rep : run(rate);
      const double p99 = Percentile(Latencies(Steady(s.latency_samples, 0.1)), 0.99);
      const double emitted_share = static_cast<double>(s.emitted) / (rate * o.seconds);
      const bool kept_up = s.results_correct && emitted_share >= 0.95 && s.run_s <= o.seconds + 1.5 && p99 <= 250'000;
      std::printf("  %.0f lines/s: emitted %.0f%% of the lines due, ran %.1f s, p99 %.1f ms: %s\n", rate,
                  emitted_share * 100, s.run_s, p99 / 1e3, kept_up ? "kept up" : "fell behind");
      if (!kept_up) break;
      sustainable = rate;
    }
    if (!o.sweep_rates.empty()) m["sustainable_rate"] = sustainable;
    results[mode] = m;
  }
  WriteCdf(o, cdf);
  return results;
}

// ------------------------------------------------------------- piggyback
nlohmann::json Piggyback(const BenchOptions& o) {
  nlohmann::json points = nlohmann::json::array();
  std::vector<double> works = o.quick ? std::vector<double>{0, 1000} : std::vector<double>{0, 100, 1000, 10000};
  std::vector<std::uint32_t> fs;
  for (std::uint32_t f = 1; f < o.workers; ++f) fs.push_back(f);
  if (o.quick) fs = {1, o.workers - 1};
  std::ofstream csv;
  if (!o.out_dir.empty()) {
    csv.open(Path(o, "-points.csv"));
    csv << "f,work_us,entries_per_msg,bytes_per_msg,p50_us\n";
  }
  for (double work : works) {
    for (std::uint32_t f : fs) {
      BenchOptions b = o;
      b.f = f;
      b.work_us = work;
      b.nondet = true;
      RunOptions r = BaseRun(b, "ring");
      ApplyMode("lineage-stash", b, &r);
      r.app_settings = RingSettings(b).dump();
      // Long tasks run fewer hops: give them time for a few hundred.
      r.duration_s = std::max(o.seconds, work * 1e-6 * o.workers * 300);
      JobReport rep = Run(r, fmt::format("piggyback: nondeterministic ring, {} workers, f={}, tasks of {} us", o.workers, f, work));
      nlohmann::json m = Summarize(rep, nullptr);
      m["f"] = f;
      m["work_us"] = work;
      std::printf("  f=%u, tasks of %g us: %.2f entries, %.0f bytes piggybacked per message\n", f, work,
                  m["piggyback_entries_per_msg"].get<double>(), m["piggyback_bytes_per_msg"].get<double>());
      if (csv.is_open()) {
        csv << f << "," << work << "," << m["piggyback_entries_per_msg"].dump() << "," << m["piggyback_bytes_per_msg"].dump()
            << "," << m["p50_us"].dump() << "\n";
      }
      points.push_back(m);
    }
  }
  return {{"lineage-stash", {{"points", points}}}};
}

// -------------------------------------------------------------- recovery
// In 50 ms buckets around the kill: hops per second and median latency.
void WriteTimeline(const BenchOptions& o, const std::string& mode, const std::vector<LatencySample>& samples, double kill_s) {
  if (o.out_dir.empty()) return;
  std::map<long, std::vector<double>> buckets;
  for (const auto& s : samples) buckets[static_cast<long>(std::floor((s.at_s - kill_s) / 0.05))].push_back(s.latency_us);
  std::ofstream out(Path(o, "-timeline-" + mode + ".csv"));
  out << "t_ms,hops_per_s,p50_us,max_us\n";
  if (buckets.empty()) return;
  for (long b = buckets.begin()->first; b <= buckets.rbegin()->first; ++b) {
    auto it = buckets.find(b);
    const std::vector<double> v = it == buckets.end() ? std::vector<double>() : it->second;
    out << b * 50 << "," << v.size() / 0.05 << "," << Percentile(v, 0.5) << ","
        << (v.empty() ? 0 : *std::max_element(v.begin(), v.end())) << "\n";
  }
}

// Back at baseline: the end of the first 20 ms window after the kill in
// which hops arrived at least half as often as in the 2 s before the kill,
// with a median latency within 1.25x of the median then. Windows go by
// arrival (send + latency): a hop that waited out the failure arrives late.
double BackToBaselineMs(const std::vector<LatencySample>& samples, double kill_s) {
  constexpr double kWindow = 0.02;
  std::vector<double> before;
  std::vector<std::pair<double, double>> after;  // (arrival, latency)
  for (const auto& s : samples) {
    const double arrival = s.at_s + s.latency_us / 1e6;
    if (arrival < kill_s && arrival >= kill_s - 2) before.push_back(s.latency_us);
    if (arrival >= kill_s) after.emplace_back(arrival, s.latency_us);
  }
  if (before.empty() || after.empty()) return -1;
  std::sort(after.begin(), after.end());
  const double baseline = Percentile(before, 0.5), baseline_rate = static_cast<double>(before.size()) / 2;
  for (double t = kill_s; t + kWindow <= after.back().first; t += 0.005) {
    std::vector<double> v;
    for (auto it = std::lower_bound(after.begin(), after.end(), std::make_pair(t, 0.0));
         it != after.end() && it->first < t + kWindow; ++it) {
      v.push_back(it->second);
    }
    if (static_cast<double>(v.size()) >= 0.5 * baseline_rate * kWindow && Percentile(v, 0.5) <= 1.25 * baseline) {
      return (t + kWindow - kill_s) * 1e3;
    }
  }
  return -1;
}

// Caught up: when the job, once recovered, first got further than it had
// before the kill (ring: a hop numbered past the highest hop sent before
// it). What a rollback re-executes counts here; replay re-runs only the
// failed worker's own history, before "recovered".
double CaughtUpMs(const std::vector<LatencySample>& samples, double kill_s, double recovered_s) {
  std::uint64_t before = 0;
  for (const auto& s : samples) {
    if (s.at_s < kill_s) before = std::max(before, s.progress);
  }
  double first = -1;
  for (const auto& s : samples) {
    if (s.at_s >= recovered_s && s.progress > before && (first < 0 || s.at_s < first)) first = s.at_s;
  }
  return first < 0 ? -1 : (first - kill_s) * 1e3;
}

// Recovery time against lineage length, in one process: a worker runs N
// tasks (each draws a logged random value) on an embedded synced RocksDB
// store, crashes without a checkpoint, and its next incarnation gathers
// its log and replays it.
nlohmann::json ReplayScaling(const BenchOptions& o) {
  struct Stats : Listener {
    void OnRecoveryEnd(const RecoveryStats& s) override { stats = s; }
    RecoveryStats stats;
  };
  nlohmann::json points = nlohmann::json::array();
  std::ofstream csv;
  if (!o.out_dir.empty()) {
    csv.open(Path(o, "-lineage.csv"));
    csv << "tasks,recover_ms,gather_ms,replay_rate\n";
  }
  for (std::uint64_t n : o.lineage_tasks) {
    std::string dir = (fs::temp_directory_path() / "lstash-bench-XXXXXX").string();
    if (mkdtemp(dir.data()) == nullptr) throw std::runtime_error("cannot create a temporary directory");
    auto store = OpenRocksDbStore(dir);
    if (!store.ok()) throw std::runtime_error(store.status().ToString());
    Stats listener;
    WorkerOptions wo;
    wo.num_workers = 1;
    wo.listener = &listener;
    auto must = [](const Status& s) {
      if (!s.ok()) throw std::runtime_error("replay scaling: " + s.ToString());
    };
    // Each task draws a value and passes the chain on to the worker itself.
    auto run = [&](Worker& w, bool until_recovered, std::uint64_t limit) {
      std::uint64_t ran = 0;
      for (;;) {
        auto t = w.NextTask();
        must(t.status());
        if (!t->has_value()) {
          for (auto& f : w.TakeFrames()) must(w.Receive(f.bytes).status());
          if (until_recovered ? !w.recovering() : ran >= limit) return;
          continue;
        }
        must(w.Random().status());
        if (ran++ < limit) must(w.Submit(0, std::string(64, 'x')).status());
      }
    };
    {
      auto w = Worker::Open(wo, store->get());
      must(w.status());
      run(**w, false, n);
      must((*w)->Sync(60'000'000'000));
    }  // the crash: the stash is gone, the store keeps what was flushed
    const auto t0 = std::chrono::steady_clock::now();
    auto w = Worker::Open(wo, store->get());
    must(w.status());
    run(**w, true, n);
    const double total_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const RecoveryStats& s = listener.stats;
    const double replay_s = (static_cast<double>(s.total_nanos - s.gather_nanos)) / 1e9;
    nlohmann::json p{{"tasks", n},
                     {"replayed", s.tasks_replayed},
                     {"recover_ms", total_ms},
                     {"gather_ms", s.gather_nanos / 1e6},
                     {"replay_rate", replay_s > 0 ? static_cast<double>(s.tasks_replayed) / replay_s : 0}};
    std::printf("  lineage of %llu tasks: recovered in %.1f ms (gathered in %.1f ms), %.0f tasks/s replayed\n",
                static_cast<unsigned long long>(n), total_ms, s.gather_nanos / 1e6, p["replay_rate"].get<double>());
    if (csv.is_open()) csv << n << "," << total_ms << "," << s.gather_nanos / 1e6 << "," << p["replay_rate"].dump() << "\n";
    points.push_back(p);
    w->reset();
    store->reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  return points;
}

nlohmann::json Recovery(const BenchOptions& o) {
  nlohmann::json results = nlohmann::json::object();
  const double kill_at = o.seconds / 2;
  for (const auto& mode : o.modes) {
    RunOptions r = BaseRun(o, "ring");
    ApplyMode(mode, o, &r);
    r.app_settings = RingSettings(o).dump();
    runtime::FaultSpec kill;
    kill.targets = {"w1"};
    kill.at_s = kill_at;
    r.faults = {kill};
    JobReport rep = Run(r, fmt::format("recovery, {}: ring of {} workers, w1 killed at {} s, heartbeat timeout {} ms",
                                       mode, o.workers, kill_at, o.heartbeat_timeout_ms));
    nlohmann::json m = Summarize(rep, nullptr);
    if (!rep.crashes.empty()) {
      const auto& c = rep.crashes.front();
      m["detect_ms"] = c.detect_ms;
      m["recover_ms"] = c.recovered_ms;
      m["back_to_baseline_ms"] = BackToBaselineMs(rep.latency_samples, c.fault_s);
      m["caught_up_ms"] = c.recovered_s < 0 ? -1 : CaughtUpMs(rep.latency_samples, c.fault_s, c.recovered_s);
      m["replayed"] = c.replayed;
      const double replay_s = (c.recovery_ms - c.gather_ms) / 1e3;
      m["replay_rate"] = replay_s > 0 ? static_cast<double>(c.replayed) / replay_s : 0;
      m["gather_ms"] = c.gather_ms;
      WriteTimeline(o, mode, rep.latency_samples, c.fault_s);
      std::printf("%-14s detected %.1f ms, recovered %.1f ms, back at baseline latency %.1f ms, caught up %.1f ms "
                  "after the kill; %llu tasks replayed (%.0f/s)%s\n",
                  mode.c_str(), c.detect_ms, c.recovered_ms, m["back_to_baseline_ms"].get<double>(),
                  m["caught_up_ms"].get<double>(),
                  static_cast<unsigned long long>(c.replayed), m["replay_rate"].get<double>(),
                  rep.results_correct ? "" : "  RESULT WRONG");
    }
    results[mode] = m;
  }
  if (!o.lineage_tasks.empty()) {
    std::printf("--- recovery time against lineage length (one process, embedded synced RocksDB)\n");
    results["lineage-stash"]["lineage"] = ReplayScaling(o);
  }
  return results;
}

// ------------------------------------------------------------- allreduce
constexpr std::uint64_t kFloatsPerMib = 1024 * 1024 / sizeof(float);
constexpr double kAllreduceTimeoutMs = 5000, kAllreduceLeaseMs = 30000;

// The median as the OpenMPI program takes it (the middle two averaged).
double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The time of each allreduce call, in µs: from when the last worker entered
// the round (its input ready) to when the last worker held the result. The
// OpenMPI program starts every call after a barrier and takes the slowest
// rank's time: the same span. Warm-up rounds are left out, and so is a round
// some worker did not time (it ran it in replay).
std::vector<double> CallTimesUs(const std::vector<LatencySample>& samples, std::uint32_t workers, std::uint64_t warmup) {
  struct Span {
    double entered = 0, left = 0;
    std::uint32_t seen = 0;
  };
  std::map<std::uint64_t, Span> rounds;
  for (const auto& s : samples) {
    if (s.progress < warmup) continue;
    Span& r = rounds[s.progress];
    const double left = s.at_s + s.latency_us / 1e6;
    r.entered = r.seen == 0 ? s.at_s : std::max(r.entered, s.at_s);
    r.left = r.seen == 0 ? left : std::max(r.left, left);
    ++r.seen;
  }
  std::vector<double> v;
  for (const auto& [round, r] : rounds) {
    if (r.seen == workers) v.push_back((r.left - r.entered) * 1e6);
  }
  return v;
}

// Throughput of an allreduce: MiB reduced per second at the median call.
double MibPerSecond(std::uint64_t mb, double p50_us) { return p50_us > 0 ? static_cast<double>(mb) / (p50_us / 1e6) : 0; }

// One (workers, size) point of ours.
nlohmann::json CallStats(std::uint32_t workers, std::uint64_t mb, const std::vector<double>& calls_us) {
  const double p50 = Median(calls_us);
  return {{"workers", workers},
          {"mb", mb},
          {"calls", calls_us.size()},
          {"p50_us", p50},
          {"p99_us", Percentile(calls_us, 0.99)},
          {"p999_us", Percentile(calls_us, 0.999)},
          {"mean_us", calls_us.empty() ? 0 : std::accumulate(calls_us.begin(), calls_us.end(), 0.0) / calls_us.size()},
          {"min_us", calls_us.empty() ? 0 : *std::min_element(calls_us.begin(), calls_us.end())},
          {"max_us", calls_us.empty() ? 0 : *std::max_element(calls_us.begin(), calls_us.end())},
          {"throughput", MibPerSecond(mb, p50)}};
}

// OpenMPI's MPI_Allreduce on `ranks` ranks through scripts/mpi-allreduce,
// with our sizes, warm-up and calls: {"points": [...]} in our units, or
// {"error": why not}.
nlohmann::json RunOpenMpi(const BenchOptions& o, std::uint32_t ranks) {
  if (o.mpi_script.empty() || !fs::exists(o.mpi_script)) {
    return {{"error", "OpenMPI not found: no scripts/mpi-allreduce at '" + o.mpi_script + "' (--mpi-script)"}};
  }
  std::string log = (fs::temp_directory_path() / "lstash-bench-mpi-XXXXXX").string();
  const int fd = mkstemp(log.data());
  if (fd < 0) throw std::runtime_error("cannot create a temporary file");
  close(fd);
  // The script looks for lstash-mpi-allreduce beside this lstash-bench.
  const std::vector<std::string> argv = {"/usr/bin/env", "LSTASH_BIN_DIR=" + runtime::SelfDirectory(), o.mpi_script,
                                         "--ranks", std::to_string(ranks), "--", "--mb", fmt::format("{}", fmt::join(o.sizes_mb, ",")),
                                         "--iterations", std::to_string(o.iterations), "--warmup", std::to_string(o.warmup)};
  auto pid = runtime::Spawn(argv, log);
  if (!pid.ok()) throw std::runtime_error("running " + o.mpi_script + ": " + pid.status().ToString());
  int status = 0;
  waitpid(*pid, &status, 0);
  std::ifstream in(log);
  nlohmann::json points = nlohmann::json::array();
  std::string last_words;  // what it said besides its results
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("p50_ms")) {  // only a summary comes back: median, mean, min, max
      const std::uint64_t mb = j.value("mb", 0ull);
      nlohmann::json p{{"workers", ranks}, {"mb", mb}, {"calls", j.value("iterations", 0)}};
      for (const std::string key : {"p50", "mean", "min", "max"}) p[key + "_us"] = j.value(key + "_ms", 0.0) * 1e3;
      p["throughput"] = MibPerSecond(mb, p["p50_us"]);
      points.push_back(p);
    } else if (!line.empty()) {
      last_words = line;
    }
  }
  std::error_code ec;
  fs::remove(log, ec);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (code == 2) return {{"error", "OpenMPI not found: " + last_words}};  // the script's setup errors: no mpirun, no binary
  if (code != 0) return {{"error", fmt::format("OpenMPI run failed (exit {}): {}", code, last_words)}, {"points", points}};
  return {{"points", points}};
}

// The point of `points` for (workers, mb), if there is one.
const nlohmann::json* FindPoint(const nlohmann::json& points, std::uint32_t workers, std::uint64_t mb) {
  for (const auto& p : points) {
    if (p.value("workers", 0u) == workers && p.value("mb", 0ull) == mb) return &p;
  }
  return nullptr;
}

nlohmann::json Allreduce(const BenchOptions& o) {
  nlohmann::json results = nlohmann::json::object(), mpi_points = nlohmann::json::array();
  std::string mpi_error;
  std::ofstream csv;
  if (!o.out_dir.empty()) {
    csv.open(Path(o, "-points.csv"));
    csv << "mode,workers,mb,p50_us,p99_us,p999_us,mean_us,min_us,max_us,throughput_mib_s,vs_openmpi,correct\n";
  }
  const auto write_row = [&](const std::string& mode, const nlohmann::json& p) {
    if (!csv.is_open()) return;
    csv << mode << "," << p["workers"] << "," << p["mb"];
    for (const char* k : {"p50_us", "p99_us", "p999_us", "mean_us", "min_us", "max_us", "throughput", "vs_openmpi"}) {
      csv << "," << (p.contains(k) ? p[k].dump() : "");
    }
    csv << "," << (p.value("correct", true) ? "true" : "false") << "\n";
  };
  for (std::uint32_t n : o.worker_counts) {
    std::printf("--- OpenMPI MPI_Allreduce: %u ranks, %s MiB, %u calls after %u warm-up\n", n,
                fmt::format("{}", fmt::join(o.sizes_mb, ", ")).c_str(), o.iterations, o.warmup);
    std::fflush(stdout);
    const nlohmann::json mpi = RunOpenMpi(o, n);
    if (mpi.contains("error")) {
      mpi_error = mpi["error"];
      std::printf("%s\n", mpi_error.c_str());
    }
    for (const auto& p : mpi.value("points", nlohmann::json::array())) {
      std::printf("%-14s %u workers %4llu MiB: p50 %10.2f ms\n", "OpenMPI", n,
                  static_cast<unsigned long long>(p.value("mb", 0ull)), p.value("p50_us", 0.0) / 1e3);
      write_row("openmpi", p);
      mpi_points.push_back(p);
    }
    for (std::uint64_t mb : o.sizes_mb) {
      const nlohmann::json* peer = FindPoint(mpi_points, n, mb);
      for (const auto& mode : o.modes) {
        if (mode == "checkpoint" && mb > o.checkpoint_max_mb) {
          const std::string why = fmt::format("not run above {} MiB (--checkpoint-max-mb): a snapshot writes every "
                                              "worker's vector to the store, and at 100 MiB one write outlasted the "
                                              "store's 10 s deadline, so the job rolled back for ever", o.checkpoint_max_mb);
          std::printf("%-14s %u workers %4llu MiB: %s\n", mode.c_str(), n, static_cast<unsigned long long>(mb), why.c_str());
          results[mode]["points"].push_back({{"workers", n}, {"mb", mb}, {"skipped", why}});
          continue;
        }
        RunOptions r = BaseRun(o, "allreduce");
        r.workers = n;
        ApplyMode(mode, o, &r);
        r.app_settings = nlohmann::json{{"rounds", o.warmup + o.iterations},
                                        {"duration_s", 0},
                                        {"length", mb * kFloatsPerMib},
                                        {"task_interval_ms", 0}}
                             .dump();
        // The job ends after its rounds; this only bounds a run gone wrong.
        r.grace_s = 60 + 0.3 * static_cast<double>(mb * (o.warmup + o.iterations));
        // No failures here, and a step of a 100 MB round holds a worker's
        // engine thread for a second or more: detection and leases (which
        // checkpoint mode renews between tasks) must outlast it.
        r.heartbeat_timeout_ms = std::max(o.heartbeat_timeout_ms, kAllreduceTimeoutMs);
        r.lease_ms = kAllreduceLeaseMs;
        JobReport rep = Run(r, fmt::format("allreduce, {}: {} workers, {} MiB, {} calls after {} warm-up", mode, n, mb,
                                           o.iterations, o.warmup));
        nlohmann::json p = CallStats(n, mb, CallTimesUs(rep.latency_samples, n, o.warmup));
        AddJobFacts(rep, &p);
        // Large frames wait long for their acknowledgement: resent copies cost.
        p["frames_resent"] = rep.metric_totals["frames_resent"];
        if (peer && p["p50_us"].get<double>() > 0) {
          p["openmpi_p50_us"] = (*peer)["p50_us"];
          p["vs_openmpi"] = p["p50_us"].get<double>() / (*peer)["p50_us"].get<double>();
        }
        std::printf("%-14s %u workers %4llu MiB: p50 %10.2f ms  max %10.2f ms  %8.0f MiB/s%s%s\n", mode.c_str(), n,
                    static_cast<unsigned long long>(mb), p["p50_us"].get<double>() / 1e3, p["max_us"].get<double>() / 1e3,
                    p["throughput"].get<double>(),
                    p.contains("vs_openmpi") ? fmt::format("  {:.2f}x OpenMPI", p["vs_openmpi"].get<double>()).c_str() : "",
                    p.value("correct", false) ? "" : "  RESULT WRONG");
        std::fflush(stdout);
        write_row(mode, p);
        results[mode]["points"].push_back(p);
      }
    }
  }
  // A side's stable keys are those of its largest vector on the most workers.
  const auto headline = [&](nlohmann::json& side) {
    const nlohmann::json* top = nullptr;
    for (const auto& p : side["points"]) {
      if (p.contains("skipped")) continue;
      if (!top || std::make_pair(p.value("workers", 0u), p.value("mb", 0ull)) >=
                      std::make_pair(top->value("workers", 0u), top->value("mb", 0ull))) {
        top = &p;
      }
    }
    if (!top) return;
    for (const char* k : {"workers", "mb", "p50_us", "p99_us", "p999_us", "throughput"}) {
      if (top->contains(k)) side[k] = (*top)[k];
    }
  };
  for (auto& [mode, side] : results.items()) {
    bool correct = true;
    for (const auto& p : side["points"]) correct = correct && (p.contains("skipped") || p.value("correct", false));
    side["correct"] = correct;
    headline(side);
  }
  nlohmann::json openmpi{{"found", mpi_error.rfind("OpenMPI not found", 0) != 0}, {"points", mpi_points}};
  if (!mpi_error.empty()) openmpi["error"] = mpi_error;
  headline(openmpi);
  results["openmpi"] = openmpi;
  return results;
}

}  // namespace

std::string MachineDescription() {
  std::string cpu = "unknown CPU";
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);) {
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  double mem_gb = 0;
  std::ifstream meminfo("/proc/meminfo");
  for (std::string key; meminfo >> key;) {
    if (key == "MemTotal:") {
      double kb = 0;
      meminfo >> kb;
      mem_gb = kb / (1024 * 1024);
      break;
    }
  }
  utsname u{};
  uname(&u);
  return fmt::format("{} cores ({}), {:.0f} GB, {} {}", std::thread::hardware_concurrency(), cpu, mem_gb, u.sysname,
                     u.release);
}

// --------------------------------------------------------------- serving
// Worker 0 serves a small MLP on the GPU (the CPU path without one), the
// other workers are clients; latency runs from a client's Submit of a
// request to its taking the answer, batching window included.
nlohmann::json Serving(const BenchOptions& o) {
  const std::uint64_t requests = static_cast<std::uint64_t>(std::max(8.0, o.seconds * o.request_rate));
  // A client runs one task per interval, sending a request or taking an
  // answer: two tasks per request.
  const double interval_ms = 1000 / (2 * o.request_rate);
  const nlohmann::json settings{{"requests", requests}, {"request_interval_ms", interval_ms}, {"backend", o.backend}};
  return EveryMode(o, "serving", settings, [&](const std::string& mode) {
    return fmt::format("serving, {}: 1 server + {} clients, {:.0f} requests/s each, {} requests each, backend {}", mode,
                       o.workers - 1, o.request_rate, requests, o.backend);
  });
}

// -------------------------------------------------------------- pipeline
// One training stage per worker (GPU when present), 1F1B at full speed;
// latency is a minibatch's round trip at stage 0, from its forward pass
// leaving to its gradient coming back, so throughput is minibatches/s.
nlohmann::json Pipeline(const BenchOptions& o) {
  const std::uint64_t minibatches = static_cast<std::uint64_t>(std::max(16.0, o.seconds * o.minibatch_rate));
  const nlohmann::json settings{{"minibatches", minibatches}, {"task_interval_ms", 0}, {"backend", o.backend}};
  return EveryMode(o, "pipeline", settings, [&](const std::string& mode) {
    return fmt::format("pipeline, {}: {} stages, {} minibatches, backend {}", mode, o.workers, minibatches, o.backend);
  });
}

nlohmann::json RunBenchmark(const BenchOptions& o) {
  nlohmann::json results;
  if (o.workload == "ring") results = Ring(o);
  else if (o.workload == "wordcount") results = Wordcount(o);
  else if (o.workload == "piggyback") results = Piggyback(o);
  else if (o.workload == "recovery") results = Recovery(o);
  else if (o.workload == "allreduce") results = Allreduce(o);
  else if (o.workload == "serving") results = Serving(o);
  else if (o.workload == "pipeline") results = Pipeline(o);
  else throw std::runtime_error("unknown workload " + o.workload);
  nlohmann::json out{{"workload", o.workload},
                     {"machine", MachineDescription()},
                     {"settings",
                      {{"workers", o.workers}, {"seconds", o.seconds}, {"rounds", o.rounds}, {"nondet", o.nondet},
                       {"f", o.f},
                       {"store_delay_ms", o.store_delay_ms}, {"tokens", o.tokens}, {"work_us", o.work_us},
                       {"rate", o.rate}, {"heartbeat_timeout_ms", o.heartbeat_timeout_ms},
                       {"checkpoint_every", o.checkpoint_every}, {"snapshot_interval_ms", o.snapshot_interval_ms},
                       {"request_rate", o.request_rate}, {"request_interval_ms", 1000 / (2 * o.request_rate)},
                       {"minibatch_rate", o.minibatch_rate},
                       {"backend", o.backend}, {"quick", o.quick}}},
                     {"results", results}};
  if (o.workload == "allreduce") {
    out["settings"].merge_patch({{"sizes_mb", o.sizes_mb}, {"worker_counts", o.worker_counts},
                                 {"iterations", o.iterations}, {"warmup", o.warmup},
                                 {"heartbeat_timeout_ms", std::max(o.heartbeat_timeout_ms, kAllreduceTimeoutMs)},
                                 {"lease_ms", kAllreduceLeaseMs}});
    // The target: lineage-stash's median call against OpenMPI's at 100 MiB.
    const nlohmann::json none = nlohmann::json::object();
    for (const auto& p : results.value("lineage-stash", none).value("points", nlohmann::json::array())) {
      if (p.value("mb", 0ull) == 100 && p.contains("vs_openmpi")) {
        out["lineage_stash_vs_openmpi_100mb"][std::to_string(p.value("workers", 0u))] = p["vs_openmpi"];
      }
    }
  }
  if (!o.out_dir.empty()) {
    std::ofstream(Path(o, ".json")) << out.dump(1) << "\n";
    WriteCsv(o, results);
  }
  return out;
}

}  // namespace lstash::bench
