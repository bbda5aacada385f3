#include "runtime/launcher.h"

#include "net/faulty_transport.h"
#include "runtime/control.h"
#include "runtime/process.h"
#include "runtime/worker_host.h"
#include "workloads/app.h"
#include "workloads/wordcount.h"

#include <lstash/curve.h>

#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <zmq.hpp>

namespace lstash::runtime {
namespace {

namespace fs = std::filesystem;
constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kSec = 1'000'000'000;

std::atomic<bool> g_interrupted{false};
void OnSignal(int) { g_interrupted = true; }

std::int64_t Mono() { return SystemClock()->MonotonicNanos(); }
std::int64_t Wall() { return SystemClock()->WallNanos(); }

double PercentileMs(std::vector<std::int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
  return static_cast<double>(v[i]) / kMs;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string s;
  for (const auto& p : parts) s += (s.empty() ? "" : ",") + p;
  return s;
}

// One failure of a worker, from the fault to its recovery.
struct Crash {
  std::string target;
  std::string how;                 // "killed", "paused", ...
  std::string detected_by;         // "exit" or "heartbeat"
  std::int64_t fault_at = 0;       // monotonic
  std::int64_t fault_wall = 0;     // wall clock (latency samples are in wall time)
  std::int64_t detected_at = 0;
  std::int64_t restarted_at = 0;
  std::int64_t recovered_at = 0;
  std::int64_t recovered_wall = 0;
  std::uint64_t replayed = 0;
  double gather_ms = 0, recovery_ms = 0;
  bool recovered = false;
};

struct WorkerSlot {
  WorkerId id = 0;
  std::string name;
  pid_t pid = 0;
  int incarnations = 0;
  bool up = false;          // its current incarnation is believed alive
  bool hello = false;       // the current incarnation said hello
  bool recovering = false;
  Epoch epoch = 0;
  std::int64_t last_heard = 0;
  std::int64_t restart_at = -1;  // pending restart
  int open_crash = -1;           // index into crashes_ while recovering from one
  nlohmann::json metrics;
  nlohmann::json app_stats;  // the last heartbeat's, without latency samples
  std::optional<std::string> result;  // its final app snapshot, in hex
  std::string routing;           // control routing id of the current incarnation
  bool remote = false;           // started (and restarted) elsewhere; joins by saying hello
  std::string armed_point;       // a failure point it will kill itself at (crash test)
  std::string arm_next;          // ... and one its next incarnation starts armed with
};

struct StoreSlot {
  int shard = 0;
  pid_t pid = 0;
  std::string endpoint, dir, log;
  std::int64_t restart_at = -1;
  bool external = false;  // running elsewhere (--store-endpoints); not ours to start
};

// A command line as /bin/sh reads it.
std::string ShellCommand(const std::vector<std::string>& argv) {
  std::string line;
  for (const auto& arg : argv) {
    const bool plain = !arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                             "0123456789_./:,=@%+-") == std::string::npos;
    if (!line.empty()) line += ' ';
    if (plain) {
      line += arg;
      continue;
    }
    line += '\'';
    for (char c : arg) line += c == '\'' ? std::string("'\\''") : std::string(1, c);
    line += '\'';
  }
  return line;
}

class Launcher {
 public:
  explicit Launcher(RunOptions o) : o_(std::move(o)), ctx_(1) {}

  JobReport Run() {
    signal(SIGINT, OnSignal);
    signal(SIGTERM, OnSignal);
    if (Status s = Prepare(); !s.ok()) {
      std::fprintf(stderr, "lstash-run: %s\n", s.ToString().c_str());
      Cleanup();
      report_.exit_code = 2;
      report_.error = s.ToString();
      return report_;
    }
    report_.exit_code = Coordinate();
    Cleanup();
    return report_;
  }

 private:
  // ---------------------------------------------------------------- setup
  // The workload's settings, sized to run for about duration_s.
  Status MakeAppConfig() {
    const double tasks = std::max(1.0, o_.duration_s * o_.task_rate);  // per worker
    const double interval_ms = 1000 / o_.task_rate;
    if (o_.workload == "wordcount") {
      n_workers_ = 1 + o_.mappers + o_.reducers;
      app_config_ = {{"mappers", o_.mappers}, {"reducers", o_.reducers}, {"input", o_.input},
                     {"rate", o_.rate},       {"duration_s", o_.duration_s}, {"max_batch", o_.max_batch}};
    } else if (o_.workload == "counter" || o_.workload == "hashchain") {
      n_workers_ = o_.workers;
      const std::uint32_t tokens = 8;
      app_config_ = {{"tokens", tokens},
                     {"hops", static_cast<std::uint64_t>(std::max(1.0, tasks / tokens - 1))},
                     {"task_interval_ms", interval_ms}};
    } else if (o_.workload == "allreduce") {
      n_workers_ = o_.workers;
      // Ring steps wait on each other, so time bounds the job, not a count.
      app_config_ = {{"rounds", 1'000'000},
                     {"duration_s", o_.duration_s},
                     {"length", std::max<std::uint32_t>(256, o_.workers)},
                     {"task_interval_ms", interval_ms}};
    } else if (o_.workload == "ring") {
      n_workers_ = o_.workers;
      app_config_ = {{"duration_s", o_.duration_s}};
    } else if (o_.workload == "serving") {
      // A client runs two tasks per request: sending it, taking its answer.
      n_workers_ = o_.workers;
      app_config_ = {{"requests", static_cast<std::uint64_t>(std::max(8.0, tasks / 2))}, {"request_interval_ms", interval_ms}};
    } else if (o_.workload == "pipeline") {
      // A stage runs two tasks per minibatch: its activations, its gradient.
      n_workers_ = o_.workers;
      app_config_ = {{"minibatches", static_cast<std::uint64_t>(std::max(8.0, tasks / 2))}, {"task_interval_ms", interval_ms}};
    } else {
      return InvalidArgument("unknown workload '" + o_.workload +
                             "' (known: allreduce, counter, hashchain, pipeline, ring, serving, wordcount)");
    }
    if (!o_.app_settings.empty()) {
      auto settings = nlohmann::json::parse(o_.app_settings, nullptr, /*allow_exceptions=*/false);
      if (!settings.is_object()) return InvalidArgument("--app-settings: not a JSON object: " + o_.app_settings);
      app_config_.merge_patch(settings);
    }
    // Every worker's app must accept the settings: fail here, not in N processes.
    for (WorkerId w = 0; w < n_workers_; ++w) {
      LSTASH_RETURN_IF_ERROR(workloads::MakeApp(o_.workload, {w, n_workers_, app_config_}).status());
    }
    return Status::OK();
  }

  Status Prepare() {
    if (o_.workload == "wordcount" && o_.input.empty()) {
      std::vector<std::string> files;
      std::error_code ec;
      for (const auto& e : fs::directory_iterator("/usr/share/common-licenses", ec)) {
        if (e.is_regular_file()) files.push_back(e.path().string());
      }
      std::sort(files.begin(), files.end());
      if (files.empty()) return InvalidArgument("no input: /usr/share/common-licenses is empty; pass --input FILE...");
      o_.input = files;
    }
    LSTASH_RETURN_IF_ERROR(MakeAppConfig());
    LSTASH_RETURN_IF_ERROR(net::ParseNetFaults(o_.net_faults).status().WithContext("--net-faults"));
    if (o_.bin_dir.empty()) o_.bin_dir = SelfDirectory();
    for (const char* tool : {"lstash-worker", "lstash-store"}) {
      if (!fs::exists(fs::path(o_.bin_dir) / tool)) {
        return InvalidArgument(fmt::format("{} not found in {} (use --bin-dir)", tool, o_.bin_dir));
      }
    }
    if (o_.run_dir.empty()) {
      std::string tmpl = (fs::temp_directory_path() / "lstash-run-XXXXXX").string();
      if (mkdtemp(tmpl.data()) == nullptr) return IOError("cannot create a run directory");
      o_.run_dir = tmpl;
      remove_run_dir_ = !o_.keep_run_dir;
    }
    fs::create_directories(fs::path(o_.run_dir) / "logs");

    const std::uint32_t n = n_workers_;
    if (!o_.endpoints.empty() && o_.endpoints.size() != n) {
      return InvalidArgument(fmt::format("--endpoints lists {} endpoints but the job has {} workers", o_.endpoints.size(), n));
    }
    for (std::uint32_t w = 0; w < n; ++w) {
      WorkerSlot s;
      s.id = w;
      s.name = workloads::WorkerName(o_.workload, app_config_, w);
      workers_.push_back(s);
      endpoints_.push_back(!o_.endpoints.empty()    ? o_.endpoints[w]
                           : o_.transport == "tcp" ? fmt::format("tcp://{}:{}", o_.host, o_.base_port + w)
                                                   : fmt::format("ipc://{}/w{}.sock", o_.run_dir, w));
    }
    const std::uint32_t stores = o_.store_endpoints.empty() ? o_.stores : static_cast<std::uint32_t>(o_.store_endpoints.size());
    for (std::uint32_t k = 0; k < stores; ++k) {
      StoreSlot s;
      s.shard = static_cast<int>(k);
      s.external = !o_.store_endpoints.empty();
      s.endpoint = s.external              ? o_.store_endpoints[k]
                   : o_.transport == "tcp" ? fmt::format("tcp://{}:{}", o_.host, o_.base_port + 500 + k)
                                           : fmt::format("ipc://{}/store{}.sock", o_.run_dir, k);
      s.dir = (fs::path(o_.run_dir) / fmt::format("store{}", k)).string();
      s.log = (fs::path(o_.run_dir) / "logs" / fmt::format("store{}.log", k)).string();
      stores_.push_back(s);
      shard_endpoints_.push_back(s.endpoint);
    }
    LSTASH_RETURN_IF_ERROR(CheckTargets());
    if (!o_.keys_dir.empty()) {
      if (!fs::is_directory(o_.keys_dir)) return InvalidArgument("--keys " + o_.keys_dir + ": not a directory");
      keys_dir_ = o_.keys_dir;
    } else if (o_.curve) {
      LSTASH_RETURN_IF_ERROR(MakeKeys());
    }
    coordinator_ = !o_.coordinator.empty()  ? o_.coordinator
                   : o_.transport == "tcp" ? fmt::format("tcp://{}:{}", o_.host, o_.base_port + 999)
                                           : fmt::format("ipc://{}/coordinator.sock", o_.run_dir);
    try {
      control_ = zmq::socket_t(ctx_, zmq::socket_type::router);
      control_.set(zmq::sockopt::linger, 0);
      control_.bind(coordinator_);
    } catch (const zmq::error_t& e) {
      return Unavailable("binding the coordinator at " + coordinator_ + ": " + e.what());
    }
    for (auto& s : stores_) {
      if (!s.external) LSTASH_RETURN_IF_ERROR(StartStore(s, /*wait=*/true));
    }
    start_ = Mono();
    start_wall_ = Wall();
    const std::string shape = o_.workload == "wordcount" ? fmt::format("wordcount: source, {} mappers, {} reducers", o_.mappers, o_.reducers)
                                                         : fmt::format("{}: {}", o_.workload, app_config_.dump());
    std::printf("lstash-run: %zu workers (%s), %zu store server(s), %s; run dir %s\n", workers_.size(), shape.c_str(),
                stores_.size(), std::string(ModeName(o_.mode)).c_str(), o_.run_dir.c_str());
    for (auto& w : workers_) {
      if (w.remote) {
        LSTASH_RETURN_IF_ERROR(AnnounceRemote(w));
      } else {
        LSTASH_RETURN_IF_ERROR(StartWorker(w));
      }
    }
    std::fflush(stdout);
    return Status::OK();
  }

  // Every named worker exists, and the faults target what this launcher
  // runs itself.
  Status CheckTargets() {
    for (const auto& name : o_.remote) {
      WorkerSlot* w = Target(name);
      if (w == nullptr) return InvalidArgument("--remote " + name + ": no such worker");
      w->remote = true;
    }
    for (const auto& f : o_.faults) {
      for (const auto& t : f.targets) {
        if (t.rfind("store", 0) == 0) {
          const int k = std::atoi(t.c_str() + 5);
          if (k < 0 || k >= static_cast<int>(stores_.size())) return InvalidArgument("no store server " + t.substr(5));
          if (stores_[k].external) return InvalidArgument("cannot kill store " + t.substr(5) + ": it runs elsewhere");
          continue;
        }
        WorkerSlot* w = Target(t);
        if (w == nullptr) return InvalidArgument("no worker named " + t + " (source, mapN, reduceN or an id)");
        if (w->remote) return InvalidArgument("cannot kill or pause " + t + ": it runs elsewhere (--remote)");
      }
    }
    return Status::OK();
  }

  // A remote worker is started by hand or by a supervisor elsewhere: write
  // out its command line.
  Status AnnounceRemote(const WorkerSlot& w) {
    const std::string command = ShellCommand(WorkerArgv(w));
    const std::string path = (fs::path(o_.run_dir) / (w.name + ".command")).string();
    std::ofstream out(path);
    out << command << "\n";
    if (!out) return IOError("cannot write " + path);
    std::printf("waiting for %s to join; start it (and restart it whenever it exits) with:\n  %s\n", w.name.c_str(),
                command.c_str());
    return Status::OK();
  }

  Status MakeKeys() {
    const std::string dir = (fs::path(o_.run_dir) / "keys").string();
    std::vector<std::string> names;
    for (std::uint32_t w = 0; w < n_workers_; ++w) names.push_back(fmt::format("worker-{}", w));
    for (std::uint32_t k = 0; k < o_.stores; ++k) names.push_back(fmt::format("store-{}", k));
    for (const auto& name : names) {
      LSTASH_ASSIGN_OR_RETURN(auto keys, GenerateCurveKeyPair());
      LSTASH_RETURN_IF_ERROR(WriteCurveKeyPair(keys, dir, name));
    }
    keys_dir_ = dir;
    return Status::OK();
  }

  Status StartStore(StoreSlot& s, bool wait) {
    std::vector<std::string> argv = {(fs::path(o_.bin_dir) / "lstash-store").string(), "--listen", s.endpoint,
                                     "--data", s.dir};
    if (!o_.store_sync) argv.push_back("--no-sync");
    if (o_.store_write_delay_ms > 0) argv.insert(argv.end(), {"--write-delay-ms", fmt::format("{}", o_.store_write_delay_ms)});
    if (o_.ack_journals) argv.insert(argv.end(), {"--ack-journal", s.dir + ".acks"});
    if (!keys_dir_.empty()) {
      argv.insert(argv.end(), {"--keys", keys_dir_, "--name", fmt::format("store-{}", s.shard)});
    }
    const auto log_size = fs::exists(s.log) ? fs::file_size(s.log) : 0;
    LSTASH_ASSIGN_OR_RETURN(s.pid, Spawn(argv, s.log));
    if (!wait) return Status::OK();
    // Bounded wait for its "listening" line.
    const std::int64_t deadline = Mono() + 15 * kSec;
    while (Mono() < deadline) {
      std::ifstream in(s.log);
      in.seekg(static_cast<std::streamoff>(log_size));
      std::string line;
      while (std::getline(in, line)) {
        if (line.find("listening") != std::string::npos) return Status::OK();
      }
      for (const auto& e : ReapExited()) {
        if (e.pid == s.pid) return Unavailable(fmt::format("store server {} exited with {} (see {})", s.shard, e.code, s.log));
      }
      usleep(10'000);  // waiting for a child to start, not synchronising a test
    }
    return Unavailable(fmt::format("store server {} did not start within 15 s (see {})", s.shard, s.log));
  }

  std::vector<std::string> WorkerArgv(const WorkerSlot& w) const {
    std::vector<std::string> argv = {(fs::path(o_.bin_dir) / "lstash-worker").string(),
                                     "--id", std::to_string(w.id),
                                     "--endpoints", Join(endpoints_),
                                     "--store", Join(shard_endpoints_),
                                     "--coordinator", coordinator_,
                                     "--app", o_.workload,
                                     "--app-config", app_config_.dump(),
                                     "--mode", std::string(ModeName(o_.mode)),
                                     "--f", std::to_string(o_.max_forward),
                                     "--checkpoint-every", std::to_string(o_.checkpoint_every),
                                     "--lease-ms", fmt::format("{}", o_.lease_ms),
                                     "--heartbeat-ms", fmt::format("{}", o_.heartbeat_ms)};
    if (o_.breakage != Breakage::kNone) argv.insert(argv.end(), {"--breakage", std::string(BreakageName(o_.breakage))});
    if (!keys_dir_.empty()) argv.insert(argv.end(), {"--keys", keys_dir_});
    if (o_.worker_log != "info") argv.insert(argv.end(), {"--log", o_.worker_log});
    if (!w.arm_next.empty()) argv.insert(argv.end(), {"--crash-at", w.arm_next});
    if (o_.global_snapshot_ms > 0) argv.push_back("--global-snapshots");
    if (!o_.net_faults.empty()) {
      argv.insert(argv.end(), {"--net-faults", o_.net_faults, "--net-fault-seed",
                               std::to_string(o_.net_fault_seed * 1000003 + w.id * 1009 + w.incarnations)});
    }
    return argv;
  }

  Status StartWorker(WorkerSlot& w) {
    const std::vector<std::string> argv = WorkerArgv(w);
    const std::string log = (fs::path(o_.run_dir) / "logs" / fmt::format("{}.{}.log", w.name, w.incarnations)).string();
    LSTASH_ASSIGN_OR_RETURN(w.pid, Spawn(argv, log));
    w.armed_point = std::move(w.arm_next);
    w.arm_next.clear();
    ++w.incarnations;
    w.up = true;
    w.hello = false;
    w.recovering = w.incarnations > 1;
    w.last_heard = Mono();
    w.restart_at = -1;
    w.routing = fmt::format("w{}.{}", w.id, w.pid);
    return Status::OK();
  }

  // ---------------------------------------------------------- the loop
  int Coordinate() {
    std::int64_t next_progress = start_ + kSec;
    std::uint64_t last_emitted = 0, last_flushes = 0;
    std::vector<std::int64_t> second_latencies;
    const std::int64_t give_up = start_ + static_cast<std::int64_t>((o_.duration_s + o_.grace_s) * kSec);
    for (;;) {
      if (g_interrupted) {
        std::printf("\nlstash-run: interrupted; stopping every process\n");
        return 130;
      }
      const std::int64_t now = Mono();
      ReceiveControl(&second_latencies);
      HandleExits(now);
      CheckHeartbeats(now);
      InjectFaults(now);
      RestartDue(now);
      TriggerSnapshot(now);
      if (now >= next_progress) {
        if (o_.progress) Progress(now, &last_emitted, &last_flushes, &second_latencies);
        second_latencies.clear();
        next_progress += kSec;
      }
      if (Done()) return Finish();
      if (now > give_up) {
        std::printf("\nFAIL: the job did not finish within %.0f s of its %.0f s duration\n", o_.grace_s, o_.duration_s);
        // Where each worker stands, for diagnosis (its last heartbeat).
        for (const auto& w : workers_) {
          std::printf("  %s: %s, incarnation %d, epoch %llu, result %s; %s\n", w.name.c_str(),
                      !w.up ? "down" : w.recovering ? "recovering" : "live", w.incarnations,
                      static_cast<unsigned long long>(w.epoch),
                      w.result ? "in" : "missing", (w.metrics.dump() + " " + w.app_stats.dump()).c_str());
        }
        failed_liveness_ = true;
        return Finish();
      }
      zmq::pollitem_t item{static_cast<void*>(control_), 0, ZMQ_POLLIN, 0};
      try {
        zmq::poll(&item, 1, std::chrono::milliseconds(2));
      } catch (const zmq::error_t&) {
      }
    }
  }

  WorkerSlot* ByRouting(const std::string& routing) {
    for (auto& w : workers_) {
      if (w.routing == routing) return &w;
    }
    return nullptr;
  }

  // The hello of a remote worker's incarnation: it becomes the current one.
  // A newer incarnation arriving before the old one was found dead means the
  // old one is (its supervisor restarted it).
  WorkerSlot* JoinRemote(const std::string& routing, const nlohmann::json& hello) {
    const WorkerId id = hello.value("id", ~WorkerId{0});
    if (id >= workers_.size() || !workers_[id].remote) return nullptr;
    WorkerSlot& w = workers_[id];
    if (hello.value("epoch", Epoch{0}) < w.epoch) return nullptr;  // an older incarnation, late
    if (w.up) WorkerDown(w, "new incarnation", Mono());
    w.routing = routing;
    w.up = true;
    w.restart_at = -1;
    if (++w.incarnations > 1) std::printf("*** %6.2fs  %s rejoined (incarnation %d)\n", Secs(Mono()), w.name.c_str(), w.incarnations);
    return &w;
  }

  void SendTo(const std::string& routing, const nlohmann::json& message) {
    const std::string bytes = EncodeControl(message);
    try {
      control_.send(zmq::buffer(routing), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      control_.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {
    }
  }

  void NotifyPeerDown(WorkerId down) {
    for (auto& w : workers_) {
      if (w.up && w.hello && w.id != down) SendTo(w.routing, {{"type", "peer_down"}, {"peer", down}});
    }
  }

  void ReceiveControl(std::vector<std::int64_t>* latencies) {
    for (int i = 0; i < 1000; ++i) {
      zmq::message_t routing, body;
      try {
        if (!control_.recv(routing, zmq::recv_flags::dontwait)) return;
        if (!routing.more() || !control_.recv(body, zmq::recv_flags::dontwait)) continue;
      } catch (const zmq::error_t&) {
        return;
      }
      nlohmann::json m;
      if (!DecodeControl(body.to_string_view(), &m).ok()) continue;
      const std::string type = m["type"];
      WorkerSlot* w = ByRouting(routing.to_string());
      if (w == nullptr && type == "hello") w = JoinRemote(routing.to_string(), m);
      if (w == nullptr) {
        if (type == "fenced") std::printf("*** a replaced incarnation of worker %u was fenced: %s\n",
                                          m.value("id", 0u), m.value("message", "").c_str());
        continue;  // an older incarnation (a zombie) or a stranger
      }
      w->last_heard = Mono();
      w->epoch = m.value("epoch", w->epoch);
      if (type == "hello") {
        w->hello = true;
        w->recovering = m.value("recovering", false);
        for (const auto& other : workers_) {
          if (!other.up && other.id != w->id) SendTo(w->routing, {{"type", "peer_down"}, {"peer", other.id}});
        }
        if (w->recovering && o_.global_snapshot_ms > 0) SendRollback(*w);
        if (w->open_crash >= 0) {
          crashes_[w->open_crash].restarted_at = Mono();
          if (!w->recovering) {  // mode none: it starts afresh, with nothing to replay
            Crash& c = crashes_[w->open_crash];
            c.recovered = true;
            c.recovered_at = c.restarted_at;
            c.recovered_wall = Wall();
            w->open_crash = -1;
          }
        }
      } else if (type == "heartbeat") {
        w->recovering = m.value("recovering", false);
        w->metrics = m["metrics"];
        report_.stash_bytes_peak = std::max<std::uint64_t>(report_.stash_bytes_peak, w->metrics.value("stash_bytes", 0ull));
        const auto& app = m["app"];
        if (app.is_object()) {
          w->app_stats = app;
          w->app_stats.erase("latency");
        }
        if (app.contains("emitted")) emitted_ = app["emitted"].get<std::uint64_t>();
        if (app.contains("latency")) {
          for (const auto& pair : app["latency"]) {
            const std::int64_t emitted_wall = pair[0], latency = pair[1];
            latencies->push_back(latency);
            all_latencies_.push_back(latency);
            samples_.push_back({emitted_wall, latency, pair.size() > 2 ? pair[2].get<std::uint64_t>() : 0});
          }
        }
      } else if (type == "recovered") {
        w->recovering = false;
        if (w->open_crash >= 0) {
          Crash& c = crashes_[w->open_crash];
          c.recovered = true;
          c.recovered_at = Mono();
          c.recovered_wall = Wall();
          c.replayed = m.value("replayed", 0ull);
          c.gather_ms = m.value("gather_ms", 0.0);
          c.recovery_ms = m.value("total_ms", 0.0);
          std::printf("*** %6.2fs  %s recovered in %.1f ms (lineage gathered in %.1f ms): %llu tasks replayed"
                      " (%llu entries from the store, %llu from survivors)%s\n",
                      Secs(c.recovered_at), w->name.c_str(), c.recovery_ms, c.gather_ms,
                      static_cast<unsigned long long>(c.replayed), m.value("from_store", 0ull),
                      m.value("from_survivors", 0ull), m.value("ok", true) ? "" : " -- NOT OK");
          w->open_crash = -1;
        }
      } else if (type == "result") {
        w->result = m.value("snapshot", "");
      } else if (type == "snapshot_done") {
        if (m.value("generation", 0ull) == generation_) {
          const std::uint64_t k = m.value("snapshot", 0ull);
          auto& done = snapshot_done_[k];
          done.insert(w->id);
          if (done.size() == workers_.size()) {  // complete: it and any older one are settled
            last_snapshot_ = std::max(last_snapshot_, k);
            snapshot_done_.erase(snapshot_done_.begin(), snapshot_done_.upper_bound(k));
          }
        }
      } else if (type == "rolled_back") {
        if (m.value("generation", 0ull) == generation_) RolledBack(*w);
      } else if (type == "fatal" || type == "fenced") {
        std::printf("*** %s (%s): %s\n", w->name.c_str(), type.c_str(), m.value("message", "").c_str());
      }
    }
  }

  double Secs(std::int64_t mono) const { return static_cast<double>(mono - start_) / kSec; }
  // Whether the fault's moment is known (a kill or a pause), not only its detection.
  static bool Timed(const Crash& c) { return c.how == "killed" || c.how == "paused"; }

  void WorkerDown(WorkerSlot& w, const std::string& detected_by, std::int64_t now) {
    w.up = false;
    w.hello = false;
    w.routing.clear();
    const std::string armed = std::move(w.armed_point);
    w.armed_point.clear();
    if (!armed.empty()) {  // it may have died there; a kill by other means looks the same from here
      ++report_.crash_points_armed_and_down;
      std::printf("*** %6.2fs  %s (armed at %s) is down\n", Secs(now), w.name.c_str(), armed.c_str());
    }
    int ci = w.open_crash;
    if (ci < 0) {  // a failure we did not inject (or a crash test's, at a point of its own choosing)
      crashes_.push_back(Crash{w.name, armed.empty() ? "failed" : "crashed at " + armed, "", now, Wall()});
      ci = static_cast<int>(crashes_.size()) - 1;
      w.open_crash = ci;
    }
    Crash& c = crashes_[ci];
    if (c.detected_at == 0) {
      c.detected_at = now;
      c.detected_by = detected_by;
      if (!Timed(c)) {  // when it failed is unknown
        std::printf("*** %6.2fs  %s down (%s)\n", Secs(now), w.name.c_str(), detected_by.c_str());
      } else {
        std::printf("*** %6.2fs  %s down (%s), detected after %.1f ms\n", Secs(now), w.name.c_str(),
                    detected_by.c_str(), static_cast<double>(now - c.fault_at) / kMs);
      }
    }
    NotifyPeerDown(w.id);
    w.restart_at = now + static_cast<std::int64_t>(o_.restart_delay_ms * kMs);
    if (o_.global_snapshot_ms > 0) StartRollback();
  }

  // ------------------------------------------------ checkpoint mode
  // Every worker goes back to the last complete global snapshot, in a new
  // generation; results reported before are void.
  void StartRollback() {
    ++generation_;
    rolled_back_.clear();
    std::printf("*** %6.2fs  global rollback to snapshot %llu (generation %llu)\n", Secs(Mono()),
                static_cast<unsigned long long>(last_snapshot_), static_cast<unsigned long long>(generation_));
    for (auto& w : workers_) {
      w.result.reset();
      if (w.up && w.hello) SendRollback(w);
    }
  }

  void SendRollback(const WorkerSlot& w) {
    SendTo(w.routing, {{"type", "rollback"}, {"generation", generation_}, {"to", last_snapshot_}});
  }

  // When every worker has rolled back, the failures are recovered.
  void RolledBack(WorkerSlot& w) {
    rolled_back_.insert(w.id);
    w.recovering = false;
    if (rolled_back_.size() < workers_.size()) return;
    for (auto& slot : workers_) {
      if (slot.open_crash < 0) continue;
      Crash& c = crashes_[slot.open_crash];
      c.recovered = true;
      c.recovered_at = Mono();
      c.recovered_wall = Wall();
      std::printf("*** %6.2fs  every worker rolled back to snapshot %llu: %s recovered\n", Secs(c.recovered_at),
                  static_cast<unsigned long long>(last_snapshot_), slot.name.c_str());
      slot.open_crash = -1;
    }
  }

  // Starts the next global snapshot at every worker, when all are up.
  void TriggerSnapshot(std::int64_t now) {
    if (o_.global_snapshot_ms <= 0 || now < next_snapshot_at_) return;
    next_snapshot_at_ = now + static_cast<std::int64_t>(o_.global_snapshot_ms * kMs);
    for (const auto& w : workers_) {
      if (!w.up || !w.hello || w.recovering) return;
    }
    ++snapshot_id_;
    for (const auto& w : workers_) SendTo(w.routing, {{"type", "snapshot"}, {"snapshot", snapshot_id_}});
  }

  void HandleExits(std::int64_t now) {
    for (const auto& e : ReapExited()) {
      bool known = false;
      for (auto& w : workers_) {
        if (w.pid == e.pid) {
          known = true;
          w.pid = 0;
          if (w.up) {
            if (stopping_) w.up = false;  // told to shut down
            else WorkerDown(w, "exit", now);
          }
        }
      }
      for (auto& s : stores_) {
        if (s.pid == e.pid) {
          known = true;
          s.pid = 0;
          if (!stopping_) {
            std::printf("*** %6.2fs  store server %d exited (%d); restarting it on the same data\n", Secs(now), s.shard,
                        e.code);
            s.restart_at = now + static_cast<std::int64_t>(o_.restart_delay_ms * kMs);
          }
        }
      }
      if (!known) {
        const bool fenced = e.code == kExitFenced;
        std::printf("*** %6.2fs  a replaced incarnation (pid %d) exited with %d%s\n", Secs(now), e.pid, e.code,
                    fenced ? ": fenced, as it should be" : "");
        if (fenced) ++zombies_fenced_;
      }
    }
  }

  void CheckHeartbeats(std::int64_t now) {
    for (auto& w : workers_) {
      if (!w.up || (w.pid == 0 && !w.remote)) continue;
      // A new process gets longer to say hello (it connects to the store first).
      const std::int64_t limit = w.hello ? static_cast<std::int64_t>(o_.heartbeat_timeout_ms * kMs) : 10 * kSec;
      if (now - w.last_heard > limit) {
        // Unreachable but maybe alive (paused, partitioned): replace it
        // without killing it; the store and the peers fence it.
        if (w.pid > 0) zombie_pids_.push_back(w.pid);
        w.pid = 0;
        WorkerDown(w, "heartbeat", now);
      }
    }
  }

  WorkerSlot* Target(const std::string& name) {
    for (auto& w : workers_) {
      if (w.name == name || std::to_string(w.id) == name) return &w;
    }
    return nullptr;
  }

  void InjectFaults(std::int64_t now) {
    for (std::size_t i = 0; i < o_.faults.size(); ++i) {
      FaultSpec& f = o_.faults[i];
      if (fault_done_.count(i)) continue;
      if (now < start_ + static_cast<std::int64_t>(f.at_s * kSec)) continue;
      std::vector<WorkerSlot*> targets;
      bool store_fault = false;
      for (const auto& t : f.targets) {
        if (t.rfind("store", 0) == 0) {
          store_fault = true;
          const int k = std::atoi(t.c_str() + 5);
          if (k >= 0 && k < static_cast<int>(stores_.size()) && stores_[k].pid > 0) {
            kill(stores_[k].pid, SIGKILL);
            std::printf("*** %6.2fs  killed store server %d (SIGKILL)\n", Secs(now), k);
          }
          continue;
        }
        WorkerSlot* w = Target(t);
        if (w != nullptr) targets.push_back(w);
      }
      if (store_fault && targets.empty()) {
        fault_done_.insert(i);
        continue;
      }
      // Every target must be running (and, for during_recovery, recovering).
      bool ready = !targets.empty();
      for (auto* w : targets) ready = ready && w->up && w->pid > 0 && (!f.during_recovery || (w->hello && w->recovering));
      if (f.when_all_up) {
        for (const auto& w : workers_) ready = ready && w.up && w.hello && !w.recovering;
      }
      if (f.kind == FaultSpec::Kind::kCrashAt && f.during_recovery) {  // arms the next incarnation, whenever it starts
        fault_done_.insert(i);
        for (auto* w : targets) w->arm_next = f.point;
        continue;
      }
      if (!ready) continue;
      fault_done_.insert(i);
      if (f.kind == FaultSpec::Kind::kCrashAt) {
        for (auto* w : targets) {
          SendTo(w->routing, {{"type", "arm"}, {"point", f.point}});
          w->armed_point = f.point;
          std::printf("*** %6.2fs  armed %s to crash at %s\n", Secs(now), w->name.c_str(), f.point.c_str());
        }
        continue;
      }
      for (auto* w : targets) {
        const bool pause = f.kind == FaultSpec::Kind::kPause;
        kill(w->pid, pause ? SIGSTOP : SIGKILL);
        if (w->open_crash < 0) {
          crashes_.push_back(Crash{w->name, pause ? "paused" : "killed", "", now, Wall()});
          w->open_crash = static_cast<int>(crashes_.size()) - 1;
        }
        std::printf("*** %6.2fs  %s %s (%s)%s\n", Secs(now), pause ? "paused" : "killed", w->name.c_str(),
                    pause ? "SIGSTOP" : "SIGKILL", f.during_recovery ? " while it recovers" : "");
        if (pause) resumes_.push_back({now + static_cast<std::int64_t>(f.pause_s * kSec), w->pid});
      }
    }
    for (auto it = resumes_.begin(); it != resumes_.end();) {
      if (now >= it->first) {
        kill(it->second, SIGCONT);
        std::printf("*** %6.2fs  resumed pid %d (SIGCONT)\n", Secs(now), it->second);
        it = resumes_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void RestartDue(std::int64_t now) {
    for (auto& w : workers_) {
      if (w.remote || w.up || w.restart_at < 0 || now < w.restart_at || w.pid != 0) continue;
      if (Status s = StartWorker(w); !s.ok()) {
        std::printf("*** cannot restart %s: %s\n", w.name.c_str(), s.ToString().c_str());
        w.restart_at = now + kSec;
        continue;
      }
      std::printf("*** %6.2fs  %s restarted (incarnation %d): recovering\n", Secs(now), w.name.c_str(), w.incarnations);
    }
    for (auto& s : stores_) {
      if (s.restart_at < 0 || now < s.restart_at) continue;
      s.restart_at = -1;
      if (Status st = StartStore(s, /*wait=*/false); !st.ok()) std::printf("*** cannot restart store: %s\n", st.ToString().c_str());
    }
  }

  void Progress(std::int64_t now, std::uint64_t* last_emitted, std::uint64_t* last_flushes,
                std::vector<std::int64_t>* latencies) {
    std::string down;
    for (const auto& w : workers_) {
      if (!w.up) down += " " + w.name + (w.remote && w.incarnations == 0 ? " not joined" : " down");
      else if (w.recovering) down += " " + w.name + " recovering";
    }
    const std::uint64_t stash = SumMetric("stash_entries"), flushes = SumMetric("flush_batches");
    const std::uint64_t tasks = SumMetric("tasks_executed");
    const std::string rate = o_.workload == "wordcount" ? fmt::format("{:7} lines/s", emitted_ - *last_emitted)
                                                        : fmt::format("{:7} tasks/s", tasks - std::min(tasks, last_tasks_));
    last_tasks_ = tasks;
    const std::string latency = latencies->empty() ? "" : fmt::format(" | latency p50 {:7.2f} ms p99 {:8.2f} ms",
                                                                     PercentileMs(*latencies, 0.5), PercentileMs(*latencies, 0.99));
    const std::string line = fmt::format("[{:5.1f}s] {}{} | stash {:6} entries | {:5} flushes/s{}", Secs(now), rate, latency,
                                         stash, flushes - std::min(flushes, *last_flushes), down);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    *last_emitted = emitted_;
    *last_flushes = flushes;
    latencies->clear();
  }

  // A counter summed over every worker's last heartbeat.
  std::uint64_t SumMetric(const char* key) const {
    std::uint64_t sum = 0;
    for (const auto& w : workers_) {
      if (w.metrics.is_object()) sum += w.metrics.value(key, 0ull);
    }
    return sum;
  }

  bool Done() const {
    for (const auto& w : workers_) {
      if (!w.result) return false;
    }
    for (const auto& c : crashes_) {
      if (!c.recovered && c.how != "failed") return false;  // wait for every injected failure to recover
    }
    return true;
  }

  int Finish() {
    stopping_ = true;
    for (auto& w : workers_) {
      if (w.up && w.hello) SendTo(w.routing, {{"type", "shutdown"}});
    }
    // Give the workers a moment to exit on their own.
    const std::int64_t deadline = Mono() + 3 * kSec;
    while (Mono() < deadline) {
      HandleExits(Mono());
      bool any = false;
      for (const auto& w : workers_) any = any || w.pid > 0;
      if (!any) break;
      usleep(5000);  // reaping children
    }

    std::string missing;
    for (const auto& w : workers_) {
      if (!w.result) missing += " " + w.name;
    }
    const bool have_all = missing.empty();
    if (have_all) {
      // Rebuild every worker's final app from its snapshot and let the
      // workload's checker judge them.
      std::vector<std::unique_ptr<workloads::App>> apps;
      std::vector<const workloads::App*> views;
      for (const auto& w : workers_) {
        auto app = workloads::MakeApp(o_.workload, {w.id, n_workers_, app_config_});
        auto bytes = workloads::FromHex(*w.result);
        Status s = !app.ok() ? app.status() : !bytes.ok() ? bytes.status() : (*app)->Restore(*bytes);
        if (!s.ok()) {
          report_.violations.push_back(w.name + "'s result: " + s.ToString());
          continue;
        }
        views.push_back(app->get());
        apps.push_back(std::move(*app));
      }
      if (report_.violations.empty()) {
        workloads::Verdict v = workloads::Check(o_.workload, app_config_, views);
        report_.violations = std::move(v.violations);
        report_.verdict = std::move(v.summary);
      }
    } else {
      report_.violations.push_back("not every worker reported its result (missing:" + missing + ")");
    }
    const bool pass = have_all && report_.violations.empty() && !failed_liveness_;
    report_.completed = have_all && !failed_liveness_;
    report_.results_correct = have_all && report_.violations.empty();
    report_.latency_p50_ms = PercentileMs(all_latencies_, 0.5);
    report_.latency_p99_ms = PercentileMs(all_latencies_, 0.99);
    report_.zombies_fenced = zombies_fenced_;
    report_.net_faults_injected = SumMetric("net_faults");
    report_.emitted = emitted_;
    for (const auto& w : workers_) {
      if (!w.metrics.is_object()) continue;
      for (const auto& [key, value] : w.metrics.items()) {
        if (value.is_number_unsigned()) report_.metric_totals[key] += value.get<std::uint64_t>();
      }
    }
    report_.latency_samples.reserve(samples_.size());
    for (const auto& [emitted_wall, latency, progress] : samples_) {
      report_.latency_samples.push_back(
          {static_cast<double>(emitted_wall - start_wall_) / kSec, static_cast<double>(latency) / 1e3, progress});
    }

    const double run_s = Secs(Mono());
    report_.run_s = run_s;
    if (o_.workload == "wordcount") {
      std::printf("\ndone in %.1f s: the source emitted %llu lines; end-to-end latency p50 %.2f ms, p99 %.2f ms\n", run_s,
                  static_cast<unsigned long long>(emitted_), PercentileMs(all_latencies_, 0.5),
                  PercentileMs(all_latencies_, 0.99));
    } else {
      std::printf("\ndone in %.1f s\n", run_s);
    }
    nlohmann::json crashes = nlohmann::json::array();
    for (const auto& c : crashes_) {
      std::vector<std::int64_t> during;
      for (const auto& [emitted_wall, latency, progress] : samples_) {
        if (emitted_wall >= c.fault_wall && (!c.recovered || emitted_wall <= c.recovered_wall)) during.push_back(latency);
      }
      const double detect_ms = c.detected_at ? static_cast<double>(c.detected_at - c.fault_at) / kMs : -1;
      const double restart_ms = c.restarted_at ? static_cast<double>(c.restarted_at - c.fault_at) / kMs : -1;
      const double recovered_ms = c.recovered ? static_cast<double>(c.recovered_at - c.fault_at) / kMs : -1;
      const bool injected = Timed(c);  // else its times count from its detection
      const std::string meanwhile = during.empty() ? "" : fmt::format("; latency meanwhile p50 {:.2f} ms, p99 {:.2f} ms",
                                                                      PercentileMs(during, 0.5), PercentileMs(during, 0.99));
      std::printf("%s %s: detected %s (%s), new incarnation up after %.1f ms, recovered after %.1f ms "
                  "(recovery itself %.1f ms, %llu tasks replayed)%s\n",
                  c.how.c_str(), c.target.c_str(),
                  injected ? fmt::format("after {:.1f} ms", detect_ms).c_str() : "at an unknown time after it failed",
                  c.detected_by.c_str(), restart_ms, recovered_ms, c.recovery_ms,
                  static_cast<unsigned long long>(c.replayed), meanwhile.c_str());
      report_.crashes.push_back(CrashReport{c.target, c.how, c.detected_by, detect_ms, restart_ms, recovered_ms,
                                            c.recovery_ms, c.gather_ms, c.replayed, PercentileMs(during, 0.5),
                                            PercentileMs(during, 0.99), Secs(c.fault_at),
                                            c.recovered ? Secs(c.recovered_at) : -1});
      const CrashReport& r = report_.crashes.back();
      crashes.push_back({{"target", r.target},
                         {"how", r.how},
                         {"detected_by", r.detected_by},
                         {"detect_ms", r.detect_ms},
                         {"restart_ms", r.restart_ms},
                         {"recovered_ms", r.recovered_ms},
                         {"recovery_ms", r.recovery_ms},
                         {"gather_ms", r.gather_ms},
                         {"replayed", r.replayed},
                         {"latency_p50_ms", r.latency_p50_ms},
                         {"latency_p99_ms", r.latency_p99_ms}});
    }
    if (zombies_fenced_) std::printf("%d replaced incarnation(s) exited fenced\n", zombies_fenced_);
    if (pass) {
      std::printf("PASS: %s\n", report_.verdict.c_str());
    } else {
      std::printf("FAIL: %s\n", report_.verdict.empty() ? "the job's result could not be checked" : report_.verdict.c_str());
      for (const auto& v : report_.violations) std::printf("  %s\n", v.c_str());
    }
    if (o_.json) {
      nlohmann::json j{{"result", pass ? "PASS" : "FAIL"},
                       {"workload", o_.workload},
                       {"emitted", emitted_},
                       {"verdict", report_.verdict},
                       {"violations", report_.violations},
                       {"run_s", run_s},
                       {"latency_p50_ms", PercentileMs(all_latencies_, 0.5)},
                       {"latency_p99_ms", PercentileMs(all_latencies_, 0.99)},
                       {"zombies_fenced", zombies_fenced_},
                       {"crashes", crashes}};
      std::printf("%s\n", j.dump().c_str());
    }
    std::fflush(stdout);
    return pass ? 0 : 1;
  }

  void Cleanup() {
    stopping_ = true;
    std::vector<pid_t> pids;
    for (const auto& w : workers_) pids.push_back(w.pid);
    for (const auto& s : stores_) pids.push_back(s.pid);
    for (pid_t p : zombie_pids_) pids.push_back(p);
    StopAll(pids, 2 * kSec);
    (void)ReapExited();
    if (remove_run_dir_) {
      std::error_code ec;
      fs::remove_all(o_.run_dir, ec);
    } else if (!o_.run_dir.empty()) {
      std::printf("run directory kept: %s\n", o_.run_dir.c_str());
    }
  }

  RunOptions o_;
  JobReport report_;
  zmq::context_t ctx_;
  zmq::socket_t control_;
  nlohmann::json app_config_;
  std::vector<WorkerSlot> workers_;
  std::vector<StoreSlot> stores_;
  std::vector<std::string> endpoints_, shard_endpoints_;
  std::string coordinator_, keys_dir_;
  bool remove_run_dir_ = false;
  bool stopping_ = false;
  bool failed_liveness_ = false;
  std::int64_t start_ = 0, start_wall_ = 0;
  std::uint64_t emitted_ = 0;
  std::uint32_t n_workers_ = 0;
  std::uint64_t last_tasks_ = 0;
  std::vector<Crash> crashes_;
  std::set<std::size_t> fault_done_;
  std::vector<std::pair<std::int64_t, pid_t>> resumes_;
  std::vector<pid_t> zombie_pids_;
  int zombies_fenced_ = 0;
  std::vector<std::int64_t> all_latencies_;
  struct Sample {
    std::int64_t emitted_wall, latency;
    std::uint64_t progress;
  };
  std::vector<Sample> samples_;
  // Checkpoint mode.
  std::uint64_t generation_ = 0, snapshot_id_ = 0, last_snapshot_ = 0;
  std::int64_t next_snapshot_at_ = 0;
  std::map<std::uint64_t, std::set<WorkerId>> snapshot_done_;
  std::set<WorkerId> rolled_back_;
};

}  // namespace

JobReport RunJob(const RunOptions& options) {
  Launcher launcher(options);
  return launcher.Run();
}

}  // namespace lstash::runtime
