// The generated part of docs/benchmarks.md: everything between the two
// markers below is rewritten from the JSON results of scripts/bench.
#include "driver/suite.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

namespace lstash::bench {
namespace {

namespace fs = std::filesystem;
constexpr std::string_view kBegin = "<!-- lstash-bench: generated from here -->";
constexpr std::string_view kEnd = "<!-- lstash-bench: generated up to here -->";
const std::vector<std::string> kModeOrder = {"none", "write-first", "lineage-stash", "checkpoint"};

// How a workload's modes were run, when in rounds (lstash-bench --rounds).
std::string Rounds(const nlohmann::json& settings) {
  const unsigned rounds = settings.value("rounds", 1u);
  if (rounds <= 1) return "";
  return fmt::format(" The modes took turns, {} rounds of {:.0f} s each; a mode's latencies are pooled over its "
                     "rounds, its rate is their mean.",
                     rounds, settings.value("seconds", 0.0));
}

// DIR/NAME.json if it parses and holds `key` (lstash-bench's files hold
// "results", lstash-gpu-bench's "overhead").
std::optional<nlohmann::json> Load(const std::string& dir, const std::string& name, const char* key = "results") {
  std::ifstream in(fs::path(dir) / (name + ".json"));
  if (!in) return std::nullopt;
  auto j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.contains(key)) return std::nullopt;
  return j;
}

// A number from results[mode][key], if measured.
std::optional<double> Get(const std::optional<nlohmann::json>& j, const std::string& mode, const std::string& key) {
  if (!j || !(*j)["results"].contains(mode)) return std::nullopt;
  const auto& m = (*j)["results"][mode];
  if (!m.contains(key) || !m[key].is_number()) return std::nullopt;
  return m[key].get<double>();
}

std::string Num(std::optional<double> v, const char* format = "{:.1f}") {
  return v ? fmt::format(fmt::runtime(format), *v) : "—";
}

// The allreduce point of results[side] for (workers, mb), if measured.
const nlohmann::json* AllreducePoint(const std::optional<nlohmann::json>& j, const std::string& side, std::uint32_t workers,
                                     std::uint64_t mb) {
  if (!j || !(*j)["results"].contains(side) || !(*j)["results"][side].contains("points")) return nullptr;
  for (const auto& p : (*j)["results"][side]["points"]) {
    if (p.value("workers", 0u) == workers && p.value("mb", 0ull) == mb) return &p;
  }
  return nullptr;
}

// Only a run that ended with its results checked has a median call.
std::optional<double> MedianMs(const nlohmann::json* point) {
  if (!point || !point->contains("p50_us") || point->value("calls", 0) == 0 || !point->value("correct", true)) {
    return std::nullopt;
  }
  return (*point)["p50_us"].get<double>() / 1e3;
}

class Doc {
 public:
  void Line(const std::string& s = "") { out_ << s << "\n"; }
  std::string str() const { return out_.str(); }

  // A target: its measured ratio against the bound, and the verdict.
  void Target(const std::string& what, std::optional<double> a, std::optional<double> b, bool at_most, double bound) {
    if (!a || !b || *b == 0) {
      Line(fmt::format("| {} | not measured | — |", what));
      return;
    }
    const double ratio = *a / *b;
    const bool met = at_most ? ratio <= bound : ratio >= bound;
    Line(fmt::format("| {} | {:.2f}× ({} / {}) | **{}** |", what, ratio, Num(a), Num(b), met ? "met" : "missed"));
  }

  void LatencyTable(const std::string& title, const std::optional<nlohmann::json>& j) {
    if (!j) return;
    Line("**" + title + "**");
    Line();
    Line("| mode | p50 µs | p99 µs | p99.9 µs | per second | entries piggybacked per message | result |");
    Line("|---|---|---|---|---|---|---|");
    for (const auto& mode : kModeOrder) {
      if (!(*j)["results"].contains(mode)) continue;
      const auto& m = (*j)["results"][mode];
      Line(fmt::format("| {} | {} | {} | {} | {} | {} | {} |", mode, Num(Get(j, mode, "p50_us")), Num(Get(j, mode, "p99_us")),
                       Num(Get(j, mode, "p999_us")), Num(Get(j, mode, "throughput"), "{:.0f}"),
                       Num(Get(j, mode, "piggyback_entries_per_msg"), "{:.2f}"),
                       m.value("correct", false) ? "checked" : "WRONG"));
    }
    Line();
  }

 private:
  std::ostringstream out_;
};

}  // namespace

bool WriteReport(const std::string& dir, const std::string& doc_path) {
  const auto det = Load(dir, "ring-det"), delay1 = Load(dir, "ring-det-delay1"), delay5 = Load(dir, "ring-det-delay5");
  const auto nondet1 = Load(dir, "ring-nondet-f1"), nondet2 = Load(dir, "ring-nondet-f2"),
             nondet_all = Load(dir, "ring-nondet-fall");
  const auto wordcount = Load(dir, "wordcount"), recovery = Load(dir, "recovery"), piggyback = Load(dir, "piggyback");
  const auto allreduce = Load(dir, "allreduce");
  const auto serving = Load(dir, "serving"), pipeline = Load(dir, "pipeline");
  // lstash-gpu-bench's results, one file per device (scripts/gpu-check).
  std::vector<std::pair<std::string, nlohmann::json>> gpu_benches;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("gpu-bench-") && name.ends_with(".json")) {
      if (auto j = Load(dir, name.substr(0, name.size() - 5), "overhead")) gpu_benches.emplace_back(name, *j);
    }
  }
  std::sort(gpu_benches.begin(), gpu_benches.end());
  const nlohmann::json openmpi = allreduce ? (*allreduce)["results"].value("openmpi", nlohmann::json::object())
                                           : nlohmann::json::object();
  const std::vector<std::uint32_t> allreduce_workers =
      allreduce ? (*allreduce)["settings"].value("worker_counts", std::vector<std::uint32_t>{}) : std::vector<std::uint32_t>{};
  const std::vector<std::uint64_t> allreduce_mb =
      allreduce ? (*allreduce)["settings"].value("sizes_mb", std::vector<std::uint64_t>{}) : std::vector<std::uint64_t>{};
  if (!det) {
    std::fprintf(stderr, "lstash-bench --report: %s/ring-det.json is missing or unreadable (run scripts/bench)\n", dir.c_str());
    return false;
  }
  Doc d;
  d.Line(std::string(kBegin));
  d.Line();
  d.Line("## End-to-end, every mode side by side (`scripts/bench`)");
  d.Line();
  d.Line(fmt::format("Generated by `scripts/bench{}` on {}. Every row of a table comes from one run of "
                     "`lstash-bench`, its modes one after another on real processes (a store server and one process "
                     "per worker, ipc sockets, synced RocksDB, heartbeats every 50 ms). The raw results are in "
                     "`bench/results/` (JSON and CSV).",
                     (*det)["settings"].value("quick", false) ? " --quick" : "", (*det).value("machine", "?")));
  d.Line();
  d.Line("### Targets");
  d.Line();
  d.Line("| target | measured | verdict |");
  d.Line("|---|---|---|");
  d.Target("lineage-stash p50 per hop ≤ 1.05 × none (deterministic ring)", Get(det, "lineage-stash", "p50_us"),
           Get(det, "none", "p50_us"), true, 1.05);
  d.Target("lineage-stash p99 per hop ≤ 1.10 × none", Get(det, "lineage-stash", "p99_us"), Get(det, "none", "p99_us"), true, 1.10);
  d.Target("write-first p50 ≥ 3 × lineage-stash p50", Get(det, "write-first", "p50_us"), Get(det, "lineage-stash", "p50_us"),
           false, 3);
  d.Target("nondeterministic ring, f = all: p50 ≤ 1.25 × deterministic ring", Get(nondet_all, "lineage-stash", "p50_us"),
           Get(det, "lineage-stash", "p50_us"), true, 1.25);
  const auto caught_up = Get(recovery, "lineage-stash", "caught_up_ms");
  d.Line(fmt::format("| recovery, kill to back at baseline < 1 s (200 ms heartbeat timeout) | {} ms | **{}** |",
                     Num(Get(recovery, "lineage-stash", "back_to_baseline_ms")),
                     Get(recovery, "lineage-stash", "back_to_baseline_ms").value_or(1e9) < 1000 ? "met" : "missed"));
  d.Line(fmt::format("| replay ≥ 200,000 tasks/s (the killed worker's replay) | {} tasks/s | **{}** |",
                     Num(Get(recovery, "lineage-stash", "replay_rate"), "{:.0f}"),
                     Get(recovery, "lineage-stash", "replay_rate").value_or(0) >= 200000 ? "met" : "missed"));
  d.Target("checkpoint mode's recovery (kill to caught up) ≥ 10 × lineage-stash's", Get(recovery, "checkpoint", "caught_up_ms"),
           caught_up, false, 10);
  // Each worker count is a target of its own: the same run, the median call.
  const std::string allreduce_target = "allreduce 100 MB: lineage-stash ≤ 1.10 × OpenMPI";
  if (!allreduce) {
    d.Line("| " + allreduce_target + " | not measured: no allreduce.json (`scripts/bench`) | — |");
  } else if (!openmpi.value("found", false)) {
    d.Line("| " + allreduce_target + " | not measured: " + openmpi.value("error", "OpenMPI not found") + " | — |");
  } else if (std::find(allreduce_mb.begin(), allreduce_mb.end(), 100) == allreduce_mb.end()) {
    d.Line("| " + allreduce_target + " | not measured: this run had no 100 MiB vectors | — |");
  } else {
    for (std::uint32_t n : allreduce_workers) {
      const std::string what = fmt::format("allreduce 100 MB, {} workers: lineage-stash ≤ 1.10 × OpenMPI (median call, ms)", n);
      const nlohmann::json* ls = AllreducePoint(allreduce, "lineage-stash", n, 100);
      const auto mpi_ms = MedianMs(AllreducePoint(allreduce, "openmpi", n, 100));
      if (ls && !MedianMs(ls) && mpi_ms) {
        d.Line(fmt::format("| {} | lineage-stash did not finish (OpenMPI {:.1f}) | **missed** |", what, *mpi_ms));
      } else {
        d.Target(what, MedianMs(ls), mpi_ms, true, 1.10);
      }
    }
  }
  d.Target(fmt::format("serving ({}): lineage-stash p99 ≤ 1.05 × none", serving ? (*serving)["settings"].value("backend", "?") : "—"),
           Get(serving, "lineage-stash", "p99_us"), Get(serving, "none", "p99_us"), true, 1.05);
  for (const auto& [name, g] : gpu_benches) {
    if (g.value("backend", "") != "cuda") continue;  // the GPU targets are set for a device
    const nlohmann::json& modes = g["overhead"]["modes"];
    const auto overhead = [&](const char* mode) {
      return modes.contains(mode) ? std::optional<double>(modes[mode].value("mean_us", 0.0)) : std::nullopt;
    };
    const std::string device = g.value("device", "?");
    d.Target("GPU task (" + device + "): lineage-stash ≤ 1.03 × none, digests off", overhead("lineage-stash"),
             overhead("none"), true, 1.03);
    d.Target("GPU task (" + device + "): lineage-stash ≤ 1.10 × none, a digest every task", overhead("lineage-stash+digest"),
             overhead("none"), true, 1.10);
    for (const auto& r : g.value("recovery", nlohmann::json::array())) {
      const double total = r.value("total_ms", 0.0);
      d.Line(fmt::format("| GPU worker recovery ({}, {} store, {} process): {} MiB of device state + {} tasks < 1 s "
                         "from the new incarnation's start | {:.0f} ms | **{}** |",
                         device, r.value("store", "?"), r.value("process", "same") == "new" ? "a new" : "the same",
                         r.value("state_mib", 0), r.value("tasks_replayed", 0), total,
                         total < 1000 && r.value("verified", false) ? "met" : "missed"));
    }
  }
  d.Line();
  d.Line("### The paper's numbers beside ours");
  d.Line();
  d.Line("The original ran on 64 nodes on AWS; ours is one 2-core machine with 4 worker processes, so absolute "
         "times differ; the ratios are what compare.");
  d.Line();
  d.Line("| measure | paper: lineage stash | paper: WriteFirst | ours: lineage-stash | ours: write-first | ours: none |");
  d.Line("|---|---|---|---|---|---|");
  auto ms = [](std::optional<double> us) { return us ? std::optional<double>(*us / 1e3) : std::nullopt; };
  auto row = [&](const std::string& what, const std::string& paper_ls, const std::string& paper_wf,
                 const std::optional<nlohmann::json>& j) {
    d.Line(fmt::format("| {} | {} | {} | {} / {} ms | {} / {} ms | {} / {} ms |", what, paper_ls, paper_wf,
                       Num(ms(Get(j, "lineage-stash", "p50_us")), "{:.3f}"), Num(ms(Get(j, "lineage-stash", "p99_us")), "{:.3f}"),
                       Num(ms(Get(j, "write-first", "p50_us")), "{:.3f}"), Num(ms(Get(j, "write-first", "p99_us")), "{:.3f}"),
                       Num(ms(Get(j, "none", "p50_us")), "{:.3f}"), Num(ms(Get(j, "none", "p99_us")), "{:.3f}")));
  };
  row("per-hop latency p50 / p99, deterministic, store +0 ms", "0.48 / 0.58 ms", "0.96 / 1.12 ms", det);
  row("same, store +1 ms", "—", "—", delay1);
  row("same, store +5 ms", "0.48 / 0.58 ms", "5.87 / 6.11 ms", delay5);
  row("nondeterministic, f = 1 (paper: f = 8)", "0.68 / 1.05 ms", "1.72 / 2.13 ms", nondet1);
  row("nondeterministic, f = 2", "—", "—", nondet2);
  row("nondeterministic, f = all", "4.01 / 7.8 ms", "1.72 / 2.13 ms", nondet_all);
  d.Line();
  d.Line("### Ring: per-hop latency");
  d.Line();
  d.Line("One token travels around a ring of 4 worker processes; a hop's latency runs from the sender's `Submit` "
         "to the receiver's task start. Deterministic tasks log only their receipt; nondeterministic ones also draw "
         "a logged random value.");
  d.Line();
  d.LatencyTable("deterministic, f = 1, store +0 ms", det);
  d.LatencyTable("deterministic, f = 1, store +1 ms", delay1);
  d.LatencyTable("deterministic, f = 1, store +5 ms", delay5);
  d.LatencyTable("nondeterministic, f = 1", nondet1);
  d.LatencyTable("nondeterministic, f = 2", nondet2);
  d.LatencyTable("nondeterministic, f = all", nondet_all);
  d.Line("![per-hop latency CDF](../bench/results/ring-det-cdf.png)");
  d.Line();
  if (wordcount) {
    d.Line("### Streaming wordcount");
    d.Line();
    d.Line(fmt::format("A source, 2 mappers and 2 reducers at {:.0f} lines/s offered; latency is end to end per "
                       "batch, throughput is lines emitted per second of the whole run.",
                       (*wordcount)["settings"].value("rate", 0.0)));
    d.Line();
    d.LatencyTable("wordcount", wordcount);
    d.Line("| mode | sustainable lines/s (the highest rate tried at which the source emitted ≥ 95% of the lines due, the job "
           "ended within 1.5 s of its input and p99 ≤ 250 ms) |");
    d.Line("|---|---|");
    for (const auto& mode : kModeOrder) {
      if (auto s = Get(wordcount, mode, "sustainable_rate")) d.Line(fmt::format("| {} | {:.0f} |", mode, *s));
    }
    d.Line();
  }
  if (recovery) {
    d.Line("### Recovery");
    d.Line();
    d.Line(fmt::format("The ring ({} s), worker w1 killed with SIGKILL halfway; detection by process exit or a {} ms "
                       "heartbeat timeout. *Recovered*: the replacement has replayed (lineage-stash, write-first) or "
                       "every worker has rolled back (checkpoint, global snapshots every {} ms). *Back at baseline*: "
                       "the end of the first 20 ms window in which hops arrive at half the earlier rate or more with "
                       "a median within 1.25× of the earlier one. *Caught up*: the first hop past the furthest one "
                       "before the kill, once recovered (a rollback re-runs the work since its snapshot).",
                       (*recovery)["settings"].value("seconds", 0.0), (*recovery)["settings"].value("heartbeat_timeout_ms", 0.0),
                       (*recovery)["settings"].value("snapshot_interval_ms", 0.0)));
    d.Line();
    d.Line("| mode | detected ms | recovered ms | back at baseline ms | caught up ms | tasks replayed | replay tasks/s |");
    d.Line("|---|---|---|---|---|---|---|");
    for (const auto& mode : kModeOrder) {
      if (!(*recovery)["results"].contains(mode) || !Get(recovery, mode, "detect_ms")) continue;
      d.Line(fmt::format("| {} | {} | {} | {} | {} | {} | {} |", mode, Num(Get(recovery, mode, "detect_ms")),
                         Num(Get(recovery, mode, "recover_ms")), Num(Get(recovery, mode, "back_to_baseline_ms")),
                         Num(Get(recovery, mode, "caught_up_ms")), Num(Get(recovery, mode, "replayed"), "{:.0f}"),
                         Num(Get(recovery, mode, "replay_rate"), "{:.0f}")));
    }
    d.Line();
    d.Line("![recovery timeline: throughput](../bench/results/recovery-timeline.png)");
    d.Line();
    d.Line("![recovery timeline: latency](../bench/results/recovery-latency.png)");
    d.Line();
    const auto& ls = (*recovery)["results"]["lineage-stash"];
    if (ls.contains("lineage")) {
      d.Line("Recovery time against the lineage since the last checkpoint (one process, embedded synced RocksDB: a "
             "worker runs N tasks that each draw a logged random value, crashes, and its next incarnation gathers "
             "and replays them):");
      d.Line();
      d.Line("| tasks since the checkpoint | recovered in ms | of which gathering ms | replay tasks/s |");
      d.Line("|---|---|---|---|");
      for (const auto& p : ls["lineage"]) {
        d.Line(fmt::format("| {} | {:.1f} | {:.1f} | {:.0f} |", p.value("tasks", 0ull), p.value("recover_ms", 0.0),
                           p.value("gather_ms", 0.0), p.value("replay_rate", 0.0)));
      }
      d.Line();
      d.Line("![recovery time against lineage length](../bench/results/recovery-lineage.png)");
      d.Line();
    }
  }
  if (piggyback) {
    d.Line("### Piggybacked lineage");
    d.Line();
    d.Line("The nondeterministic ring in lineage-stash mode: what each task message carries, against `f` and the "
           "task's duration.");
    d.Line();
    d.Line("| f | task µs | entries per message | bytes per message | p50 µs |");
    d.Line("|---|---|---|---|---|");
    for (const auto& p : (*piggyback)["results"]["lineage-stash"]["points"]) {
      d.Line(fmt::format("| {} | {:.0f} | {:.2f} | {:.0f} | {:.1f} |", p.value("f", 0u), p.value("work_us", 0.0),
                         p.value("piggyback_entries_per_msg", 0.0), p.value("piggyback_bytes_per_msg", 0.0),
                         p.value("p50_us", 0.0)));
    }
    d.Line();
    d.Line("![piggybacked bytes against f](../bench/results/piggyback.png)");
    d.Line();
  }
  if (allreduce) {
    const auto& settings = (*allreduce)["settings"];
    d.Line("### Allreduce against OpenMPI");
    d.Line();
    d.Line(fmt::format("Ring allreduce of float vectors over worker processes (reduce-scatter, then allgather, one chunk "
                       "per step to the right-hand neighbour; each round's input drawn from one logged random seed plus "
                       "half the previous result, and every result checked bit for bit): {} calls after {} warm-up per "
                       "size. OpenMPI's `MPI_Allreduce` (`scripts/mpi-allreduce`: shared memory, stock settings) runs "
                       "in the same `lstash-bench` run with the same sizes and calls. A call lasts from when the last "
                       "worker entered it (its input ready) to when the last one held the result — OpenMPI's program "
                       "times the slowest rank after a barrier, the same span. Median call in ms:",
                       settings.value("iterations", 0), settings.value("warmup", 0)));
    d.Line();
    if (!openmpi.value("found", false)) {
      d.Line("**" + openmpi.value("error", std::string("OpenMPI not found")) + "**");
      d.Line();
    }
    std::string header = "| workers | MiB |", rule = "|---|---|";
    for (const auto& mode : kModeOrder) {
      if ((*allreduce)["results"].contains(mode)) header += " " + mode + " |", rule += "---|";
    }
    d.Line(header + " OpenMPI | lineage-stash / OpenMPI |");
    d.Line(rule + "---|---|");
    std::string skipped;  // why a mode was not run at some size
    bool unfinished = false;
    for (std::uint32_t n : allreduce_workers) {
      for (std::uint64_t mb : allreduce_mb) {
        std::string cells = fmt::format("| {} | {} |", n, mb);
        for (const auto& mode : kModeOrder) {
          if (!(*allreduce)["results"].contains(mode)) continue;
          const nlohmann::json* p = AllreducePoint(allreduce, mode, n, mb);
          if (p && p->contains("skipped")) {
            cells += " not run¹ |";
            skipped = (*p)["skipped"];
            continue;
          }
          if (p && !p->value("correct", false)) {
            // The launcher's words for a job whose workers never all reported.
            const bool ended = p->value("violations", nlohmann::json::array()).dump().find("not every worker reported") ==
                               std::string::npos;
            cells += ended ? " " + Num(MedianMs(p), "{:.2f}") + " WRONG |" : " did not finish² |";
            unfinished = unfinished || !ended;
            continue;
          }
          cells += " " + Num(MedianMs(p), "{:.2f}") + " |";
        }
        const nlohmann::json* ls = AllreducePoint(allreduce, "lineage-stash", n, mb);
        cells += fmt::format(" {} | {} |", Num(MedianMs(AllreducePoint(allreduce, "openmpi", n, mb)), "{:.2f}"),
                           ls && ls->contains("vs_openmpi") ? fmt::format("{:.2f}×", (*ls)["vs_openmpi"].get<double>()) : "—");
        d.Line(cells);
      }
    }
    d.Line();
    if (!skipped.empty()) {
      d.Line("¹ Checkpoint mode " + skipped + ".");
      d.Line();
    }
    if (unfinished) {
      d.Line("² The job did not end within its time (its `violations` and `frames_resent` in allreduce.json say what "
             "it did instead).");
      d.Line();
    }
  }
  if (serving) {
    const nlohmann::json& settings = (*serving)["settings"];
    d.Line("### GPU serving");
    d.Line();
    // Runs before request_interval_ms was recorded paced one task per 1000 / request_rate ms.
    const double interval_ms = settings.value("request_interval_ms", 1000 / settings.value("request_rate", 1000.0));
    d.Line(fmt::format("On {}: worker 0 serves a small MLP (backend `{}`) to {} clients; a client runs one task every "
                       "{:.1f} ms, sending a request or taking an answer. The server batches by arrival (up to 8 "
                       "requests, 2 ms window; receipt order and clock reads logged) and checks each batch's output "
                       "digest on replay. Latency runs from a client's request to its taking the answer, batching "
                       "and the client's pacing included; every answer was checked bit for bit against the CPU "
                       "reference.{}",
                       (*serving).value("machine", "?"), settings.value("backend", "?"), settings.value("workers", 0u) - 1,
                       interval_ms, Rounds(settings)));
    d.Line();
    d.LatencyTable("serving", serving);
  }
  if (pipeline) {
    d.Line("### GPU pipeline training");
    d.Line();
    d.Line(fmt::format("On {}: {} stages (backend `{}`), one layer each, 1F1B with weight stashing at full speed; "
                       "latency is a minibatch's round trip at stage 0 (forward out, gradient back), so the rate is "
                       "minibatches per second. Every stage's final weights were checked bit for bit against a "
                       "failure-free CPU run.{}",
                       (*pipeline).value("machine", "?"), (*pipeline)["settings"].value("workers", 0u),
                       (*pipeline)["settings"].value("backend", "?"), Rounds((*pipeline)["settings"])));
    d.Line();
    d.LatencyTable("pipeline", pipeline);
  }
  for (const auto& [name, g] : gpu_benches) {
    d.Line("### GPU tasks on " + g.value("device", std::string("?")) + " (`scripts/gpu-check`)");
    d.Line();
    d.Line(fmt::format("`lstash-gpu-bench` ({}), one worker. Overhead: a deterministic task ({}) run back to back, the "
                       "modes alternating in rounds:",
                       name, g["overhead"].value("task", "?")));
    d.Line();
    d.Line("| mode | mean µs | p50 µs | p99 µs | over none |");
    d.Line("|---|---|---|---|---|");
    for (const char* mode : {"none", "lineage-stash", "lineage-stash+digest"}) {
      if (!g["overhead"]["modes"].contains(mode)) continue;
      const nlohmann::json& m = g["overhead"]["modes"][mode];
      d.Line(fmt::format("| {} | {:.1f} | {:.1f} | {:.1f} | {:+.2f}% |", mode, m.value("mean_us", 0.0),
                         m.value("p50_us", 0.0), m.value("p99_us", 0.0), 100 * m.value("overhead_vs_none", 0.0)));
    }
    d.Line();
    d.Line("Recovery of a worker holding device state, checkpointed, then logged tasks (random numbers, a racy "
           "scatter-add, raced updates, a layer, digests on), killed; times from the new incarnation's start. In "
           "the same process the store stays open and CUDA is started already; a new process starts from nothing "
           "and opens the embedded RocksDB store the lost one left, or connects to the store server (`remote`: "
           "in the benchmark's process, over loopback TCP), which outlives its workers:");
    d.Line();
    d.Line("| store | new incarnation in | device state MiB | tasks replayed | process start ms | context ms | "
           "store open ms | worker open ms | restore ms (page faults) | replay ms | total ms | device state |");
    d.Line("|---|---|---|---|---|---|---|---|---|---|---|---|");
    const auto ms_of = [](const nlohmann::json& r, const char* key) {
      return r.contains(key) ? fmt::format("{:.1f}", r[key].get<double>()) : std::string("not measured");
    };
    for (const auto& r : g.value("recovery", nlohmann::json::array())) {
      const bool new_process = r.value("process", "same") == "new";
      const std::string faults =
          r.contains("restore_page_faults") ? fmt::format(" ({})", r["restore_page_faults"].get<long>()) : "";
      d.Line(fmt::format("| {} | {} | {} | {} | {} | {:.1f} | {} | {:.1f} | {:.1f}{} | {:.1f} | {:.1f} | {} |",
                         r.value("store", "?"), new_process ? "a new process" : "the same process",
                         r.value("state_mib", 0), r.value("tasks_replayed", 0),
                         new_process ? ms_of(r, "process_start_ms") : "—", r.value("context_ms", 0.0),
                         new_process ? ms_of(r, "store_open_ms") : "—", r.value("worker_open_ms", 0.0),
                         r.value("restore_ms", 0.0), faults, r.value("replay_ms", 0.0), r.value("total_ms", 0.0),
                         r.value("verified", false) ? "equal, bit for bit" : "DIFFERENT"));
    }
    d.Line();
    d.Line("Taking that checkpoint: the engine thread's share (the first snapshot allocates its host copies; the "
           "next reuses them), and the time until the checkpoint was durable:");
    d.Line();
    d.Line("| store | engine ms, first | engine ms, next | durable ms |");
    d.Line("|---|---|---|---|");
    for (const auto& r : g.value("recovery", nlohmann::json::array())) {
      const std::string run = r.value("store", "?") + (r.value("process", "same") == "new" ? ", the new process's run" : "");
      d.Line(fmt::format("| {} | {} | {} | {} |", run, ms_of(r, "checkpoint_engine_ms"),
                         ms_of(r, "checkpoint_again_engine_ms"), ms_of(r, "checkpoint_ms")));
    }
    d.Line();
  }
  d.Line(std::string(kEnd));

  // Replace the generated part of the document (or append it).
  std::string text;
  {
    std::ifstream in(doc_path);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  const auto b = text.find(kBegin), e = text.find(kEnd);
  if (b != std::string::npos && e != std::string::npos && e > b) {
    const auto end_of_line = text.find('\n', e);
    text = text.substr(0, b) + d.str() + (end_of_line == std::string::npos ? "" : text.substr(end_of_line + 1));
  } else {
    text += "\n" + d.str();
  }
  std::ofstream out(doc_path);
  out << text;
  if (!out) {
    std::fprintf(stderr, "lstash-bench --report: cannot write %s\n", doc_path.c_str());
    return false;
  }
  std::printf("wrote %s\n", doc_path.c_str());
  return true;
}

}  // namespace lstash::bench
