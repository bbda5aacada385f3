// lstash-demo: a streaming wordcount that survives a crash, checked exactly.
//
//   source ──(lines, routed by Random())──> M mappers ──(word counts, by hash)──> R reducers
//
// Each worker is a thread running an engine loop around its own
// lstash::Worker (background flusher, real clock); all share one RocksDB
// store in a fresh temporary directory (demo/engine.h). The application is
// in demo/wordcount.h: the source replays the input text at --rate lines/s
// for --duration seconds, logging the lines it reads with Worker::Choose;
// mappers split lines into words; reducers count them.
//
// Midway (--kill-at), a worker is killed: its Worker and its application
// state are destroyed, as a real crash loses memory. After --restart-after
// ms it is reopened on the same store; the new incarnation restores its last
// checkpoint, gathers its lineage from the store and the survivors, and
// replays its log with the logged nondeterministic values.
//
// At the end of the stream the reducers' merged counts are compared with a
// direct count of exactly the lines the source emitted: PASS (exit 0) or
// FAIL (exit 1).
#include "demo/engine.h"
#include "demo/util.h"
#include "demo/wordcount.h"

#include <lstash/store.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <unistd.h>

namespace demo {
namespace {

namespace fs = std::filesystem;
using lstash::Status;
using lstash::WorkerId;

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void OnSignal(int) { g_interrupted = 1; }

struct Config {
  double duration = 20;
  double rate = 20000;
  std::uint32_t mappers = 2;
  std::uint32_t reducers = 2;
  std::vector<std::string> inputs;
  std::vector<std::string> kill;  // victims, cycled over the kills
  std::uint32_t kills = 1;
  std::optional<double> kill_at;
  std::int64_t restart_after_ms = 200;
  std::uint32_t checkpoint_every = 2000;
  double tick_ms = 2;
  std::uint32_t f = 1;
  bool no_sync = false;
  bool keep_store = false;
  bool verbose = false;
  std::string json;
};

Status LoadInput(const std::vector<std::string>& files, std::vector<std::string>* lines) {
  for (const auto& path : files) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return lstash::IOError("cannot read " + path);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      lines->push_back(std::move(line));
    }
  }
  if (lines->empty()) return lstash::InvalidArgument("the input has no lines");
  return Status::OK();
}

// The regular files under /usr/share/common-licenses, sorted by name
// (symbolic links there only duplicate other files).
std::vector<std::string> DefaultInputs() {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/share/common-licenses", ec)) {
    if (e.is_regular_file() && !e.is_symlink()) files.push_back(e.path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

// Progress lines redraw in place on a terminal; elsewhere one per second.
class Printer {
 public:
  Printer() : tty_(isatty(STDOUT_FILENO) != 0) {}
  void Progress(const std::string& line) {
    if (tty_) {
      std::fputs(("\r\033[K" + line).c_str(), stdout);
      showing_ = true;
    } else {
      std::puts(line.c_str());
    }
    std::fflush(stdout);
  }
  void Line(const std::string& line) {
    if (showing_) std::fputs("\n", stdout), showing_ = false;  // keep the last progress line
    std::puts(line.c_str());
    std::fflush(stdout);
  }

 private:
  bool tty_;
  bool showing_ = false;
};

struct Kill {
  WorkerId victim = 0;
  double at_s = 0;  // scheduled, seconds into the run
  std::int64_t killed = 0, started = 0, recovered = 0;  // wall nanos; 0: not yet
  lstash::Epoch epoch = 0;
  lstash::RecoveryStats stats;
  bool measured = false;
  std::size_t batches = 0;
  double p50 = 0, p99 = 0, max = 0;

  // Latency of the records emitted while the victim was down or recovering.
  void Measure(LatencyLog& log) {
    auto lat = log.EmittedIn(killed, recovered);
    batches = lat.size();
    p50 = PercentileMs(lat, 0.50);
    p99 = PercentileMs(lat, 0.99);
    max = lat.empty() ? 0 : static_cast<double>(lat.back()) / kMs;
    measured = true;
  }
};

class Demo {
 public:
  explicit Demo(Config cfg) : cfg_(std::move(cfg)) {}

  int Run() {
    if (int rc = Setup(); rc != 0) {
      Cleanup();
      return rc;
    }
    cluster_->Start();
    Loop();
    const std::int64_t end = WallNanos();
    cluster_->Stop();
    auto rest = out_.latency.Since(&latency_cursor_);
    all_latencies_.insert(all_latencies_.end(), rest.begin(), rest.end());
    const bool pass = Check();
    Summarize(end, pass);
    Cleanup();
    return pass ? 0 : 1;
  }

 private:
  void Cleanup() {
    // The Workers first (their flushers use the store), then the store.
    cluster_.reset();
    store_.reset();
    if (dir_.empty()) return;
    if (cfg_.keep_store) {
      out_printer_.Line("store kept at " + dir_.string());
    } else {
      std::error_code ec;
      fs::remove_all(dir_, ec);
    }
  }

  double Secs(std::int64_t t) const { return static_cast<double>(t - t0_) / kSec; }

  int Setup() {
    Topology& topo = spec_.topology;
    topo.mappers = cfg_.mappers;
    topo.reducers = cfg_.reducers;
    spec_.rate = cfg_.rate;
    spec_.duration_s = cfg_.duration;
    spec_.line_budget = static_cast<std::uint64_t>(cfg_.rate * cfg_.duration);
    // A tick carries rate * tick lines; one that runs late may catch up by
    // up to 20 ticks' worth.
    spec_.max_batch = std::max<std::uint64_t>(64, static_cast<std::uint64_t>(20 * cfg_.rate * cfg_.tick_ms / 1000));

    inputs_ = cfg_.inputs.empty() ? DefaultInputs() : cfg_.inputs;
    if (inputs_.empty()) {
      fmt::print(stderr, "lstash-demo: no input: /usr/share/common-licenses is missing; pass --input FILE...\n");
      return 2;
    }
    if (Status s = LoadInput(inputs_, &spec_.lines); !s.ok()) {
      fmt::print(stderr, "lstash-demo: {}\n", s.ToString());
      return 2;
    }

    // The store: RocksDB in a fresh temporary directory.
    std::string tmpl = (fs::temp_directory_path() / "lstash-demo-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) {
      fmt::print(stderr, "lstash-demo: cannot create a temporary directory in {}\n", fs::temp_directory_path().string());
      return 2;
    }
    dir_ = tmpl;
    lstash::RocksDbStoreOptions so;
    so.sync = !cfg_.no_sync;
    auto store = lstash::OpenRocksDbStore((dir_ / "db").string(), so);
    if (!store.ok()) {
      fmt::print(stderr, "lstash-demo: opening the store: {}\n", store.status().ToString());
      return 2;
    }
    store_ = std::move(*store);

    EngineOptions eo;
    eo.max_forward = cfg_.f;
    eo.checkpoint_every = cfg_.checkpoint_every;
    eo.restart_after_nanos = cfg_.restart_after_ms * kMs;
    eo.tick_nanos = static_cast<std::int64_t>(cfg_.tick_ms * kMs);
    cluster_ = std::make_unique<Cluster>(spec_, eo, store_.get(), &out_);

    // The kill schedule: victims cycle over --kill (default map0, reduce0,
    // map1, reduce1, ...); the first at --kill-at (default: kills spread
    // evenly over the run), the rest evenly after it.
    std::vector<WorkerId> victims;
    for (const auto& k : cfg_.kill) {
      auto v = cluster_->Find(k);
      if (!v) {
        fmt::print(stderr, "lstash-demo: --kill {}: no such worker (source, map0..map{}, reduce0..reduce{} or 0..{})\n",
                   k, topo.mappers - 1, topo.reducers - 1, topo.workers() - 1);
        return 2;
      }
      victims.push_back(*v);
    }
    for (std::uint32_t i = 0; victims.empty() && i < std::max(topo.mappers, topo.reducers); ++i) {
      if (i < topo.mappers) victims.push_back(topo.Mapper(i));
      if (i < topo.reducers) victims.push_back(topo.Reducer(i));
    }
    kills_.resize(cfg_.kills);
    for (std::uint32_t i = 0; i < cfg_.kills; ++i) {
      kills_[i].victim = victims[i % victims.size()];
      kills_[i].at_s = cfg_.kill_at ? *cfg_.kill_at + i * (cfg_.duration - *cfg_.kill_at) / cfg_.kills
                                    : cfg_.duration * (i + 1) / (cfg_.kills + 1);
    }

    out_printer_.Line(fmt::format(
        "lstash-demo: wordcount, 1 source -> {} mappers -> {} reducers ({} workers, f={}); {} lines from {} file(s) "
        "at {:.0f} lines/s for {:.0f} s",
        topo.mappers, topo.reducers, topo.workers(), cfg_.f == 0 ? topo.workers() - 1 : cfg_.f, spec_.lines.size(),
        inputs_.size(), cfg_.rate, cfg_.duration));
    out_printer_.Line(fmt::format("store: RocksDB at {} ({} writes); checkpoints every {} tasks", dir_.string(),
                                  cfg_.no_sync ? "unsynced" : "synced", cfg_.checkpoint_every));
    for (const auto& k : kills_) {
      out_printer_.Line(fmt::format("plan: kill {} at {:.1f} s, restart it {} ms later", cluster_->name(k.victim),
                                    k.at_s, cfg_.restart_after_ms));
    }
    t0_ = WallNanos();
    return 0;
  }

  // Until every reducer has seen the end of the stream (or an error).
  void Loop() {
    std::int64_t next_progress = t0_ + kSec;
    last_progress_ = t0_;
    const std::int64_t deadline = t0_ + static_cast<std::int64_t>((cfg_.duration + 60) * kSec);
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      const std::int64_t now = WallNanos();
      HandleEvents();
      if (cluster_->failed() || !errors_.empty()) return;
      if (g_interrupted) {
        errors_.push_back("interrupted");
        return;
      }
      ReportRecoveryLatency(now);

      bool all_done = active_ == nullptr;
      for (std::uint32_t r = 0; r < spec_.topology.reducers; ++r) {
        all_done = all_done && cluster_->Finished(spec_.topology.Reducer(r));
      }
      if (all_done) {
        finished_ = true;
        return;
      }
      MaybeKill(now);
      if (now >= next_progress) {
        Progress();
        next_progress = std::max(next_progress + kSec, WallNanos() + kSec / 2);
      }
      if (now > deadline) {
        errors_.push_back(fmt::format("timed out: the stream did not end within {:.0f} s", cfg_.duration + 60));
        return;
      }
    }
  }

  void MaybeKill(std::int64_t now) {
    if (active_ || next_kill_ >= kills_.size()) return;
    if (now < t0_ + static_cast<std::int64_t>(kills_[next_kill_].at_s * kSec)) return;
    if (cluster_->Finished(Topology::kSource)) {
      out_printer_.Line(fmt::format("*** the stream has ended: kill of {} skipped", cluster_->name(kills_[next_kill_].victim)));
      kills_.resize(next_kill_);
      return;
    }
    active_ = &kills_[next_kill_++];
    cluster_->Kill(active_->victim);
  }

  void HandleEvents() {
    for (auto& e : cluster_->TakeEvents()) {
      const std::string& name = cluster_->name(e.worker);
      switch (e.kind) {
        case Event::kKilled:
          if (active_) active_->killed = e.at;
          out_printer_.Line(fmt::format("*** {:6.2f}s  killed {} (worker {}) {}: its Worker, stash and state are gone",
                                        Secs(e.at), name, e.worker, e.text));
          break;
        case Event::kStarted:
          if (e.epoch <= 1) break;  // a first start, not a restart
          if (active_) active_->started = e.at, active_->epoch = e.epoch;
          out_printer_.Line(fmt::format("*** {:6.2f}s  {} restarted as incarnation {}: recovering", Secs(e.at), name, e.epoch));
          break;
        case Event::kRecoveryEnd: {
          const lstash::RecoveryStats& st = e.stats;
          if (active_ && active_->victim == e.worker) {
            active_->recovered = e.at;
            active_->stats = st;
            active_ = nullptr;
          }
          out_printer_.Line(fmt::format(
              "*** {:6.2f}s  {} recovered in {:.1f} ms (lineage gathered in {:.1f} ms): {} tasks replayed, log "
              "{}..{} ({} entries from the store, {} from survivors){}",
              Secs(e.at), name, static_cast<double>(st.total_nanos) / kMs, static_cast<double>(st.gather_nanos) / kMs,
              st.tasks_replayed, st.checkpoint_at + 1, st.log_end, st.from_store, st.from_survivors,
              st.checkpoint_at ? fmt::format(" after the checkpoint at {}", st.checkpoint_at) : ", no checkpoint"));
          if (!st.status.ok()) errors_.push_back(name + " recovery: " + st.status.ToString());
          break;
        }
        case Event::kError:
          errors_.push_back(e.text);
          out_printer_.Line("*** error: " + e.text);
          break;
      }
    }
  }

  // Once a recovery has been over for a second (time for its backlog to
  // drain), the latency of what was emitted from the kill to its end.
  void ReportRecoveryLatency(std::int64_t now) {
    for (auto& k : kills_) {
      if (k.recovered == 0 || k.measured || now < k.recovered + kSec) continue;
      k.Measure(out_.latency);
      if (k.batches == 0) {
        out_printer_.Line(fmt::format("*** no batches were emitted from the kill of {} to the end of its recovery",
                                      cluster_->name(k.victim)));
      } else {
        out_printer_.Line(fmt::format("*** latency of the {} batches emitted from the kill of {} to the end of its "
                                      "recovery: p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms",
                                      k.batches, cluster_->name(k.victim), k.p50, k.p99, k.max));
      }
    }
  }

  void Progress() {
    // GetMetrics may wait while a worker holds its lock: read the clock after.
    const Cluster::Totals t = cluster_->ReadTotals();
    const std::int64_t now = WallNanos();
    auto lat = out_.latency.Since(&latency_cursor_);
    all_latencies_.insert(all_latencies_.end(), lat.begin(), lat.end());
    const double dt = static_cast<double>(now - last_progress_) / kSec;
    const std::uint64_t emitted = out_.emitted;
    std::string state;
    if (active_) state = fmt::format(" | {} {}", cluster_->name(active_->victim), active_->started ? "recovering" : "down");
    out_printer_.Progress(fmt::format(
        "[{:5.1f}s] {:6.0f} lines/s | latency p50 {:6.2f} ms p99 {:7.2f} ms | stash {:5} entries | {:4.0f} flushes/s{}",
        Secs(now), static_cast<double>(emitted - last_emitted_) / dt, PercentileMs(lat, 0.5), PercentileMs(lat, 0.99),
        t.stash_entries, static_cast<double>(t.flush_batches - last_flushes_) / dt, state));
    last_emitted_ = emitted;
    last_flushes_ = t.flush_batches;
    last_progress_ = now;
  }

  // The reducers' merged counts against a direct count of exactly the lines
  // the source emitted: lines [0, emitted) of the input replayed in a loop.
  bool Check() {
    if (!finished_) {
      emitted_ = out_.emitted;
      return false;
    }
    emitted_ = SourceEmitted(cluster_->app(Topology::kSource));
    const std::uint64_t L = spec_.lines.size();
    for (std::uint64_t j = 0; j < L; ++j) {
      const std::uint64_t times = emitted_ / L + (j < emitted_ % L ? 1 : 0);
      if (times) ForEachWord(spec_.lines[j], [&](const std::string& w) { expected_[w] += times; });
    }
    std::unordered_map<std::string, std::uint64_t> counted;
    for (std::uint32_t r = 0; r < spec_.topology.reducers; ++r) {
      for (const auto& [w, n] : ReducerCounts(cluster_->app(spec_.topology.Reducer(r)))) counted[w] += n;
    }
    auto compare = [&](const std::string& w, std::uint64_t want, std::uint64_t got) {
      if (want == got) return;
      ++differing_;
      if (examples_.size() < 5) examples_.push_back(fmt::format("'{}': expected {}, counted {}", w, want, got));
    };
    for (const auto& [w, n] : expected_) {
      words_ += n;
      auto it = counted.find(w);
      compare(w, n, it == counted.end() ? 0 : it->second);
    }
    for (const auto& [w, n] : counted) {
      if (!expected_.count(w)) compare(w, 0, n);
    }
    return errors_.empty() && differing_ == 0;
  }

  void Summarize(std::int64_t end, bool pass) {
    Printer& o = out_printer_;
    std::vector<std::int64_t> sorted = all_latencies_;
    const double p50 = PercentileMs(sorted, 0.5), p99 = PercentileMs(sorted, 0.99);
    o.Line(fmt::format("done in {:.1f} s: the source emitted {} lines ({:.0f} lines/s over {:.0f} s); end-to-end "
                       "latency p50 {:.2f} ms, p99 {:.2f} ms over {} batches",
                       Secs(end), emitted_, static_cast<double>(emitted_) / cfg_.duration, cfg_.duration, p50, p99,
                       all_latencies_.size()));
    for (auto& k : kills_) {
      if (k.recovered == 0) continue;
      if (!k.measured) k.Measure(out_.latency);
      o.Line(fmt::format("crash of {}: killed at {:.2f}s, incarnation {} started at {:.2f}s, recovered at {:.2f}s "
                         "({:.1f} ms, {} tasks replayed); latency meanwhile p50 {:.1f} ms, p99 {:.1f} ms",
                         cluster_->name(k.victim), Secs(k.killed), k.epoch, Secs(k.started), Secs(k.recovered),
                         static_cast<double>(k.stats.total_nanos) / kMs, k.stats.tasks_replayed, k.p50, k.p99));
    }
    if (cfg_.verbose) {
      o.Line("lstash metrics per worker (this incarnation): tasks run/replayed | frames sent/resent/deferred/stale | "
             "duplicates dropped | piggybacked entries per task frame | flushes (mean ms) | checkpoints | stash peak");
      for (const auto& [name, m] : cluster_->ReadMetrics()) {
        o.Line(fmt::format("  {:8} {}/{} | {}/{}/{}/{} | {} | {:.2f} | {} ({:.2f} ms) | {} | {} B", name,
                           m.tasks_executed, m.replayed_tasks, m.frames_sent, m.frames_resent, m.frames_deferred,
                           m.frames_stale, m.duplicates_dropped,
                           m.task_frames ? static_cast<double>(m.piggybacked_entries) / static_cast<double>(m.task_frames) : 0.0,
                           m.flush_batches,
                           m.flush_batches ? static_cast<double>(m.flush_nanos_total) / static_cast<double>(m.flush_batches) / kMs : 0.0,
                           m.checkpoints, m.stash_bytes_peak));
      }
    }
    for (const auto& e : errors_) o.Line("error: " + e);
    if (pass) {
      o.Line(fmt::format("PASS: the reducers' counts equal a direct count of the {} emitted lines ({} words, {} "
                         "distinct, 0 differ)",
                         emitted_, words_, expected_.size()));
    } else if (finished_) {
      o.Line(fmt::format("FAIL: {} words differ from a direct count of the {} emitted lines ({} distinct words)",
                         differing_, emitted_, expected_.size()));
      for (const auto& ex : examples_) o.Line("  " + ex);
    } else {
      o.Line("FAIL: the stream did not finish");
    }
    if (!cfg_.json.empty()) WriteJson(pass, p50, p99);
  }

  void WriteJson(bool pass, double p50, double p99) {
    nlohmann::json j;
    j["pass"] = pass;
    j["config"] = {{"mappers", cfg_.mappers},
                   {"reducers", cfg_.reducers},
                   {"f", cfg_.f},
                   {"duration_s", cfg_.duration},
                   {"rate", cfg_.rate},
                   {"checkpoint_every", cfg_.checkpoint_every},
                   {"sync", !cfg_.no_sync},
                   {"restart_after_ms", cfg_.restart_after_ms},
                   {"tick_ms", cfg_.tick_ms}};
    j["lines_emitted"] = emitted_;
    j["lines_per_s"] = static_cast<double>(emitted_) / cfg_.duration;
    j["words"] = words_;
    j["distinct_words"] = expected_.size();
    j["differing_words"] = differing_;
    j["latency_ms"] = {{"p50", p50}, {"p99", p99}, {"batches", all_latencies_.size()}};
    j["kills"] = nlohmann::json::array();
    for (const auto& k : kills_) {
      j["kills"].push_back({{"worker", cluster_->name(k.victim)},
                            {"killed_s", k.killed ? Secs(k.killed) : 0.0},
                            {"restarted_s", k.started ? Secs(k.started) : 0.0},
                            {"recovered_s", k.recovered ? Secs(k.recovered) : 0.0},
                            {"epoch", k.epoch},
                            {"recovery_ms", static_cast<double>(k.stats.total_nanos) / kMs},
                            {"gather_ms", static_cast<double>(k.stats.gather_nanos) / kMs},
                            {"tasks_replayed", k.stats.tasks_replayed},
                            {"checkpoint_at", k.stats.checkpoint_at},
                            {"from_store", k.stats.from_store},
                            {"from_survivors", k.stats.from_survivors},
                            {"latency_ms", {{"p50", k.p50}, {"p99", k.p99}, {"max", k.max}, {"batches", k.batches}}}});
    }
    j["errors"] = errors_;
    if (cfg_.json == "-") {
      std::cout << j.dump(2) << std::endl;
      return;
    }
    std::ofstream f(cfg_.json);
    f << j.dump(2) << "\n";
    if (!f) fmt::print(stderr, "lstash-demo: cannot write {}\n", cfg_.json);
  }

  const Config cfg_;
  Printer out_printer_;
  StreamSpec spec_;
  Measurements out_;
  std::vector<std::string> inputs_;
  fs::path dir_;
  std::unique_ptr<lstash::Store> store_;
  std::unique_ptr<Cluster> cluster_;

  std::int64_t t0_ = 0;
  std::vector<Kill> kills_;
  std::size_t next_kill_ = 0;
  Kill* active_ = nullptr;  // the kill whose recovery has not ended yet
  std::vector<std::string> errors_;
  bool finished_ = false;

  std::size_t latency_cursor_ = 0;
  std::vector<std::int64_t> all_latencies_;
  std::int64_t last_progress_ = 0;
  std::uint64_t last_emitted_ = 0, last_flushes_ = 0;

  std::uint64_t emitted_ = 0, words_ = 0, differing_ = 0;
  std::unordered_map<std::string, std::uint64_t> expected_;
  std::vector<std::string> examples_;
};

}  // namespace
}  // namespace demo

int main(int argc, char** argv) {
  demo::Config cfg;
  double kill_at = -1;
  CLI::App cli{"lstash-demo: a streaming wordcount (1 source, M mappers, R reducers, a thread each) with a worker "
               "crash and recovery midway, checked exactly against a direct count"};
  cli.add_option("--duration", cfg.duration, "seconds of input to stream")->capture_default_str()->check(CLI::PositiveNumber);
  cli.add_option("--rate", cfg.rate, "input lines per second")->capture_default_str()->check(CLI::PositiveNumber);
  cli.add_option("--mappers", cfg.mappers, "mapper workers")->capture_default_str()->check(CLI::Range(1, 64));
  cli.add_option("--reducers", cfg.reducers, "reducer workers")->capture_default_str()->check(CLI::Range(1, 64));
  cli.add_option("--input", cfg.inputs, "input text files (default: the files in /usr/share/common-licenses)")
      ->check(CLI::ExistingFile);
  cli.add_option("--kill", cfg.kill,
                 "worker(s) to kill, cycled over the kills: source, mapN, reduceN or a worker id "
                 "(default: map0, then reduce0, map1, ...)");
  cli.add_option("--kills", cfg.kills, "number of sequential kills (0: none)")->capture_default_str();
  cli.add_option("--kill-at", kill_at, "seconds into the run of the first kill (default: duration/(kills+1))");
  cli.add_option("--restart-after", cfg.restart_after_ms, "ms a killed worker stays dead (failure detection)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cli.add_option("--checkpoint-every", cfg.checkpoint_every, "tasks between mapper/reducer checkpoints (0: never)")
      ->capture_default_str();
  cli.add_option("--tick-ms", cfg.tick_ms, "ms between source ticks")->capture_default_str()->check(CLI::PositiveNumber);
  cli.add_option("--f", cfg.f, "max_forward: peers each uncommitted entry is forwarded to (0: all)")->capture_default_str();
  cli.add_flag("--no-sync", cfg.no_sync, "unsynced store writes (survive a process crash, not a power cut)");
  cli.add_flag("--keep-store", cfg.keep_store, "keep the store directory at exit");
  cli.add_flag("-v,--verbose", cfg.verbose, "print each worker's lstash metrics at the end");
  cli.add_option("--json", cfg.json, "write a JSON summary to this file ('-': stdout)");
  CLI11_PARSE(cli, argc, argv);
  if (kill_at >= 0) {
    if (kill_at >= cfg.duration) {
      std::fprintf(stderr, "lstash-demo: --kill-at must be less than --duration\n");
      return 2;
    }
    cfg.kill_at = kill_at;
  }
  std::signal(SIGINT, demo::OnSignal);
  std::signal(SIGTERM, demo::OnSignal);
  return demo::Demo(std::move(cfg)).Run();
}
