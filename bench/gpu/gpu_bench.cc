// lstash-gpu-bench: what lstash's logging costs a GPU task, and how fast a
// worker holding GPU state comes back after a crash.
//
//   overhead   a deterministic task (one Linear layer on the device, then a
//              device sync, then a task submitted to itself), run by a Worker
//              in mode none, lineage-stash without digests and lineage-stash
//              with an output digest per task; per-task time, in rounds that
//              alternate the three so drift hits each alike.
//   recovery   a worker with `--state-mib` of device state, checkpointed,
//              then `--replay-tasks` logged tasks (random numbers, a racy
//              scatter-add, raced updates, a layer, digests on), crashed; the
//              new incarnation's time from its start to replay done, in
//              parts, and whether its device state equals the lost one. The
//              new incarnation runs in this process (the store stays open)
//              and, for RocksDB, in a new process that opens the store the
//              lost one left, as after a real crash (CUDA's start included).
//
// Runs on CUDA when a device is present (--backend to choose), else on the
// CPU path with smaller defaults. scripts/gpu-check runs it.
#include <lstash/gpu.h>
#include <lstash/remote_store.h>
#include <lstash/store.h>
#include <lstash/worker.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

namespace lstash {
namespace {

using SteadyClock = std::chrono::steady_clock;
double MsSince(SteadyClock::time_point t) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t).count();
}

[[noreturn]] void Fail(const Status& s, std::string_view what) {
  fmt::print(stderr, "lstash-gpu-bench: {}: {}\n", what, s.ToString());
  std::exit(1);
}
void Must(const Status& s, std::string_view what) {
  if (!s.ok()) Fail(s, what);
}
template <typename T>
T Must(Result<T> r, std::string_view what) {
  if (!r.ok()) Fail(r.status(), what);
  return std::move(r).value();
}

struct Settings {
  std::string backend = "auto";
  int tasks = 0;             // overhead: timed tasks per mode
  std::size_t rows = 0, dim = 0;
  std::size_t state_mib = 0;
  int replay_tasks = 1000;
  std::vector<std::string> stores = {"rocksdb", "memory"};
  bool json = false;
};

// A store for one experiment: an embedded synced RocksDB in a scratch
// directory, a store server (synced RocksDB) in this process reached over
// loopback TCP, or memory.
class ScratchStore {
 public:
  explicit ScratchStore(const std::string& kind) {
    if (kind == "memory") {
      store_ = NewMemoryStore();
      return;
    }
    dir_ = std::filesystem::temp_directory_path() / fmt::format("lstash-gpu-bench-{}-{}", getpid(), serial_++);
    if (kind == "rocksdb") {
      store_ = Must(OpenRocksDbStore(dir_.string()), "open the RocksDB store");
      return;
    }
    StoreServerOptions options;
    options.listen = "tcp://127.0.0.1:0";
    options.data_dir = dir_.string();
    server_ = Must(StoreServer::Start(options), "start the store server");
    store_ = Must(OpenStore("remote:" + server_->endpoint()), "open the remote store");
  }
  ~ScratchStore() {
    store_.reset();
    server_.reset();
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }
  Store* get() { return store_.get(); }

  // Closes this process's use of the store, as a crash would, and says how
  // another process opens it (OpenStore): an embedded RocksDB store is
  // closed, keeping its files; a store server goes on serving.
  std::string Leave() {
    store_.reset();
    return server_ ? "remote:" + server_->endpoint() : "rocksdb:" + dir_.string();
  }

  // Opens "rocksdb:DIR" or "remote:ENDPOINT".
  static Result<std::unique_ptr<Store>> OpenStore(const std::string& spec) {
    if (spec.starts_with("rocksdb:")) return OpenRocksDbStore(spec.substr(8));
    if (spec.starts_with("remote:")) {
      RemoteStoreOptions options;
      options.shards = {spec.substr(7)};
      return OpenRemoteStore(options);
    }
    return Status(Code::kInvalidArgument, "no store '" + spec + "' (rocksdb:DIR or remote:ENDPOINT)");
  }

 private:
  static inline int serial_ = 0;
  std::filesystem::path dir_;
  std::unique_ptr<StoreServer> server_;
  std::unique_ptr<Store> store_;
};

gpu::ContextOptions ContextOptionsFor(const Settings& s) {
  gpu::ContextOptions options;
  if (s.backend != "auto") options.backend = gpu::ParseBackend(s.backend);
  return options;
}

WorkerOptions OneWorker(Mode mode) {
  WorkerOptions o;
  o.num_workers = 1;
  o.mode = mode;
  o.random_seed = 0x6e7b3;
  return o;
}

std::string RandomFloats(std::size_t n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::string bytes(n * sizeof(float), '\0');
  for (std::size_t i = 0; i < n; ++i) {
    const float f = dist(gen);
    std::memcpy(bytes.data() + i * sizeof(float), &f, sizeof f);
  }
  return bytes;
}

// One worker whose every task submits the next to itself.
struct Job {
  // Runs up to `count` tasks (stops early, without running it, at the first
  // live task when `replay_only`); returns how many ran.
  template <typename Body>
  int Run(int count, bool replay_only, Body&& body) {
    int ran = 0;
    while (ran < count) {
      auto task = Must(worker->NextTask(), "next task");
      if (!task) {
        if (!worker->recovering()) break;
        worker->Tick();
        continue;
      }
      if (replay_only && !task->replayed) break;
      body(*task);
      Must(worker->Submit(0, "next").status(), "submit");
      for (Frame& f : worker->TakeFrames()) Must(worker->Receive(f.bytes).status(), "receive");
      ++ran;
    }
    return ran;
  }
  std::unique_ptr<Worker> worker;
};

// --- overhead ---------------------------------------------------------------

struct OverheadMode {
  std::string name;
  Mode mode;
  bool digest;
  std::unique_ptr<ScratchStore> store;
  std::unique_ptr<gpu::Context> context;
  gpu::BufferId x = 0, w = 0, b = 0, y = 0;
  Job job;
  std::vector<double> task_us;
};

nlohmann::json Overhead(const Settings& s) {
  std::vector<OverheadMode> modes;
  modes.push_back({"none", Mode::kNone, false});
  modes.push_back({"lineage-stash", Mode::kLineageStash, false});
  modes.push_back({"lineage-stash+digest", Mode::kLineageStash, true});
  for (OverheadMode& m : modes) {
    m.store = std::make_unique<ScratchStore>(s.stores.front());
    m.context = Must(gpu::Context::Open(ContextOptionsFor(s)), "open the GPU context");
    m.x = Must(m.context->Allocate("x", s.rows * s.dim * 4), "allocate");
    m.w = Must(m.context->Allocate("w", s.dim * s.dim * 4), "allocate");
    m.b = Must(m.context->Allocate("b", s.dim * 4), "allocate");
    m.y = Must(m.context->Allocate("y", s.rows * s.dim * 4), "allocate");
    Must(m.context->Write(m.x, 0, RandomFloats(s.rows * s.dim, 1)), "write");
    Must(m.context->Write(m.w, 0, RandomFloats(s.dim * s.dim, 2)), "write");
    m.job.worker = Must(Worker::Open(OneWorker(m.mode), m.store->get()), "open the worker");
  }
  auto run = [&](OverheadMode& m, int count, bool timed) {
    m.job.Run(count, false, [&](const Task& task) {
      const auto start = SteadyClock::now();
      gpu::TaskScope scope(*m.context, *m.job.worker, task);
      Must(m.context->Linear(m.x, m.w, m.b, m.y, s.rows, s.dim, s.dim, true), "linear");
      const gpu::BufferId outputs[] = {m.y};
      Must(scope.Finish(m.digest ? std::span<const gpu::BufferId>(outputs) : std::span<const gpu::BufferId>()),
           "finish");
      Must(m.context->Synchronize(), "synchronize");
      if (timed) m.task_us.push_back(MsSince(start) * 1000.0);
    });
  };
  for (OverheadMode& m : modes) run(m, std::max(10, s.tasks / 20), false);  // warm up
  constexpr int kRounds = 5;
  for (int round = 0; round < kRounds; ++round)
    for (OverheadMode& m : modes) run(m, s.tasks / kRounds, true);

  nlohmann::json out;
  out["task"] = fmt::format("linear {}x{} by {}x{}, relu, device sync", s.rows, s.dim, s.dim, s.dim);
  out["store"] = s.stores.front();
  double none_mean = 0;
  for (OverheadMode& m : modes) {
    std::vector<double> v = m.task_us;
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double d : v) sum += d;
    const double mean = sum / static_cast<double>(v.size());
    if (m.name == "none") none_mean = mean;
    out["modes"][m.name] = {{"tasks", v.size()},
                            {"mean_us", mean},
                            {"p50_us", v[v.size() / 2]},
                            {"p99_us", v[v.size() * 99 / 100]},
                            {"overhead_vs_none", none_mean > 0 ? mean / none_mean - 1.0 : 0.0}};
  }
  return out;
}

// --- recovery ---------------------------------------------------------------

struct RecoveryApp {
  static constexpr std::size_t kNoise = 4096, kBins = 64, kSmall = 4096, kRows = 8, kDim = 64;

  RecoveryApp(gpu::Context& c, std::size_t state_bytes) : context(c) {
    state = Must(c.Allocate("state", state_bytes), "allocate the device state");
    noise = Must(c.Allocate("noise", kNoise * 4), "allocate");
    index = Must(c.Allocate("index", kNoise * 4), "allocate");
    hist = Must(c.Allocate("hist", kBins * 4), "allocate");
    small = Must(c.Allocate("small", kSmall * 4), "allocate");
    x = Must(c.Allocate("x", kRows * kDim * 4), "allocate");
    w = Must(c.Allocate("w", kDim * kDim * 4), "allocate");
    b = Must(c.Allocate("b", kDim * 4), "allocate");
    y = Must(c.Allocate("y", kRows * kDim * 4), "allocate");
  }

  // The start task: weights and indices from the host, the state from the
  // logged random stream.
  void Start(Worker& worker, const Task& task, std::size_t state_floats) {
    std::string bins(kNoise * 4, '\0');
    for (std::uint32_t i = 0; i < kNoise; ++i) {
      const std::uint32_t bin = (i * 2654435761u) % kBins;
      std::memcpy(bins.data() + i * 4, &bin, 4);
    }
    Must(context.Write(index, 0, bins), "write");
    Must(context.Write(w, 0, RandomFloats(kDim * kDim, 3)), "write");
    gpu::TaskScope scope(context, worker, task);
    Must(scope.FillUniform(state, state_floats), "fill the state");
    Must(scope.Finish(), "finish");
  }

  void Step(Worker& worker, const Task& task) {
    gpu::TaskScope scope(context, worker, task);
    Must(scope.FillUniform(noise, kNoise), "fill");
    Must(scope.FillUniform(x, kRows * kDim), "fill");
    Must(scope.ScatterAdd(noise, index, kNoise, hist), "scatter-add");
    const gpu::AffineUpdate updates[] = {{1.5f, 0.25f}, {0.5f, -1.0f}, {-1.25f, 2.0f}, {0.75f, 0.5f}};
    Must(scope.RaceUpdates(small, updates), "race");
    Must(context.Linear(x, w, b, y, kRows, kDim, kDim, true), "linear");
    const gpu::BufferId outputs[] = {hist, small, y};
    Must(scope.Finish(outputs), "finish");
  }

  std::uint64_t Digest() {
    std::uint64_t d = 0;
    for (gpu::BufferId id : {state, hist, small, y}) d = d * 1000003 + Must(context.Digest(id), "digest");
    return d;
  }

  gpu::Context& context;
  gpu::BufferId state, noise, index, hist, small, x, w, b, y;
};

// What the lost incarnation left behind, besides its store.
struct Lost {
  std::uint64_t digest = 0;  // of its device state when it died
  nlohmann::json checkpoint;  // how long taking its checkpoint took
};

// The first incarnation: checkpoints `state_mib` of device state, runs the
// logged tasks, and dies (its worker, context and device memory go).
Lost RunUntilCrash(const Settings& s, Store* store) {
  const std::size_t state_bytes = s.state_mib << 20, state_floats = state_bytes / 4;
  auto context = Must(gpu::Context::Open(ContextOptionsFor(s)), "open the GPU context");
  RecoveryApp app(*context, state_bytes);
  Job job{Must(Worker::Open(OneWorker(Mode::kLineageStash), store), "open the worker")};
  auto start = Must(job.worker->NextTask(), "start task");
  app.Start(*job.worker, *start, state_floats);
  Must(job.worker->Submit(0, "next").status(), "submit");
  const auto t = SteadyClock::now();
  Must(job.worker->Checkpoint(Must(context->Snapshot(), "snapshot")), "checkpoint");
  const double engine_ms = MsSince(t);  // what the engine waits for; the flusher stores it
  Must(job.worker->Sync(300'000'000'000), "checkpoint durable");
  const double durable_ms = MsSince(t);
  const auto again = SteadyClock::now();  // the steady state: host copies allocated, reused
  Must(job.worker->Checkpoint(Must(context->Snapshot(), "snapshot")), "checkpoint again");
  const double again_engine_ms = MsSince(again);
  Must(job.worker->Sync(300'000'000'000), "checkpoint again durable");
  for (Frame& f : job.worker->TakeFrames()) Must(job.worker->Receive(f.bytes).status(), "receive");
  job.Run(s.replay_tasks, false, [&](const Task& task) { app.Step(*job.worker, task); });
  Must(job.worker->Sync(60'000'000'000), "log durable");
  return {app.Digest(),
          {{"checkpoint_ms", durable_ms},
           {"checkpoint_engine_ms", engine_ms},
           {"checkpoint_again_engine_ms", again_engine_ms}}};
}

// Memory a process touches for the first time costs a page fault per 4 KiB
// (about 15 us each on the VM of docs/benchmarks.md: more than copying it).
long MinorPageFaults() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_minflt;
}

// The new incarnation, timed from `start` (its process's spawn, or the crash
// when it runs in the same process) to replay done. With `store` null it
// opens the store `store_spec` names itself, as a new process must.
nlohmann::json Recover(const Settings& s, SteadyClock::time_point start, Store* store, const std::string& store_spec,
                       std::uint64_t lost_digest) {
  const auto ms = [start](SteadyClock::time_point t) {
    return std::chrono::duration<double, std::milli>(t - start).count();
  };
  const auto began = SteadyClock::now();
  auto context = Must(gpu::Context::Open(ContextOptionsFor(s)), "open the GPU context");
  RecoveryApp app(*context, s.state_mib << 20);
  const auto context_at = SteadyClock::now();
  std::unique_ptr<Store> opened;
  if (store == nullptr) {
    opened = Must(ScratchStore::OpenStore(store_spec), "open the store");
    store = opened.get();
  }
  const auto store_at = SteadyClock::now();
  Job job{Must(Worker::Open(OneWorker(Mode::kLineageStash), store), "reopen the worker")};
  const auto open_at = SteadyClock::now();
  if (!job.worker->restored_snapshot_bytes()) Fail(Status(Code::kDataLoss, "no checkpoint"), "recovery");
  const long faults_before = MinorPageFaults();
  Must(context->RestoreFrom(*job.worker), "restore the device state");
  const auto restored_at = SteadyClock::now();
  const long restore_page_faults = MinorPageFaults() - faults_before;
  const int replayed = job.Run(s.replay_tasks + 1, true, [&](const Task& task) { app.Step(*job.worker, task); });
  Must(context->Synchronize(), "synchronize");
  const auto done_at = SteadyClock::now();
  const gpu::Stats stats = context->GetStats();
  return {{"state_mib", s.state_mib},
          {"tasks_replayed", replayed},
          {"process_start_ms", ms(began)},
          {"context_ms", ms(context_at) - ms(began)},
          {"store_open_ms", ms(store_at) - ms(context_at)},
          {"worker_open_ms", ms(open_at) - ms(store_at)},
          {"restore_ms", ms(restored_at) - ms(open_at)},
          {"restore_page_faults", restore_page_faults},
          {"replay_ms", ms(done_at) - ms(restored_at)},
          {"total_ms", ms(done_at)},
          {"replay_tasks_per_s", replayed / (ms(done_at) - ms(restored_at)) * 1000.0},
          {"divergences", stats.divergences},
          {"restored_output_bytes", stats.restored_output_bytes},
          {"verified", app.Digest() == lost_digest}};
}

std::int64_t SteadyNanos(SteadyClock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// Runs this program again as the new incarnation (--recover) on the store
// `store_spec` names, and returns what it measured. The steady clock is
// CLOCK_MONOTONIC, one clock for all processes, so the child times itself
// from the moment its parent spawned it.
nlohmann::json RecoverInNewProcess(const Settings& s, const std::string& store_spec, std::uint64_t lost_digest) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  int out[2];  // the child's stdout; close-on-exec, so the child keeps only the copy on its stdout
  if (pipe2(out, O_CLOEXEC) != 0) Fail(Status(Code::kInternal, std::strerror(errno)), "pipe");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  const auto spawned = SteadyClock::now();
  std::vector<std::string> args = {self,
                                   "--backend", s.backend,
                                   "--state-mib", std::to_string(s.state_mib),
                                   "--replay-tasks", std::to_string(s.replay_tasks),
                                   "--recover", store_spec,
                                   "--lost-digest", std::to_string(lost_digest),
                                   "--started-ns", std::to_string(SteadyNanos(spawned))};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int spawn_error = posix_spawn(&pid, self.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (spawn_error != 0) Fail(Status(Code::kInternal, std::strerror(spawn_error)), "start the new incarnation");
  std::string printed;
  char buffer[4096];
  for (ssize_t n; (n = read(out[0], buffer, sizeof buffer)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    printed.append(buffer, static_cast<std::size_t>(n));
  }
  close(out[0]);
  int wait_status = 0;
  while (waitpid(pid, &wait_status, 0) < 0 && errno == EINTR) {
  }
  while (!printed.empty() && printed.back() == '\n') printed.pop_back();
  const std::size_t last_line = printed.rfind('\n');
  nlohmann::json r = nlohmann::json::parse(last_line == std::string::npos ? printed : printed.substr(last_line + 1),
                                           nullptr, /*allow_exceptions=*/false);
  if (!WIFEXITED(wait_status) || r.is_discarded() || !r.is_object())
    Fail(Status(Code::kInternal, fmt::format("it exited with status {:#x} and printed '{}'", wait_status, printed)),
         "the new incarnation's process");
  return r;
}

// One recovery experiment: `where` is "same" (the new incarnation runs in
// this process, its store still open) or "new" (a new process, which opens
// the embedded store the lost one left, or connects to the store server).
nlohmann::json Recovery(const Settings& s, const std::string& store_kind, const std::string& where) {
  ScratchStore store(store_kind);
  const Lost lost = RunUntilCrash(s, store.get());
  nlohmann::json r;
  if (where == "new") {
    r = RecoverInNewProcess(s, store.Leave(), lost.digest);
  } else {
    r = Recover(s, SteadyClock::now(), store.get(), "", lost.digest);
  }
  r["store"] = store_kind;
  r["process"] = where;
  r.update(lost.checkpoint);
  return r;
}

int Main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress shows as it happens, also into a pipe or file
  Settings s;
  bool quick = false;
  std::string stores = "rocksdb,memory";
  CLI::App cli{"lstash-gpu-bench: GPU tasks' logging overhead and recovery time"};
  cli.add_option("--backend", s.backend, "auto, cpu or cuda")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cli.add_option("--tasks", s.tasks, "overhead: timed tasks per mode (default 2000 on CUDA, 300 on CPU)")
      ->check(CLI::Range(5, 10'000'000));
  cli.add_option("--rows", s.rows, "overhead: the layer's batch rows")->check(CLI::Range(1, 1 << 16));
  cli.add_option("--dim", s.dim, "overhead: the layer's width")->check(CLI::Range(1, 1 << 16));
  cli.add_option("--state-mib", s.state_mib, "recovery: device state (default 1024 on CUDA, 64 on CPU)")
      ->check(CLI::Range(1, 1 << 20));
  cli.add_option("--replay-tasks", s.replay_tasks, "recovery: logged tasks since the checkpoint")
      ->check(CLI::Range(1, 10'000'000));
  cli.add_option("--stores", stores,
                 "recovery: stores to try, of rocksdb (embedded), remote (a store server on loopback TCP) and memory "
                 "(the first also serves overhead)");
  cli.add_flag("--quick", quick, "small sizes, for tests");
  cli.add_flag("--json", s.json, "print one JSON object as the last line");
  // The new incarnation's process of a recovery run (RecoverInNewProcess); not in --help.
  std::string recover_store;
  std::uint64_t lost_digest = 0;
  std::int64_t started_ns = 0;
  cli.add_option("--recover", recover_store)->group("");
  cli.add_option("--lost-digest", lost_digest)->group("");
  cli.add_option("--started-ns", started_ns)->group("");
  CLI11_PARSE(cli, argc, argv);
  if (!recover_store.empty()) {
    const SteadyClock::time_point started{std::chrono::nanoseconds(started_ns)};
    const nlohmann::json r = Recover(s, started, nullptr, recover_store, lost_digest);
    fmt::print("{}\n", r.dump());
    return r["verified"].get<bool>() ? 0 : 1;
  }
  s.stores.clear();
  for (std::string_view rest = stores; !rest.empty();) {
    const std::size_t comma = rest.find(',');
    const std::string kind(rest.substr(0, comma));
    if (kind != "rocksdb" && kind != "remote" && kind != "memory") {
      fmt::print(stderr, "lstash-gpu-bench: --stores: unknown store '{}' (rocksdb, remote, memory)\n", kind);
      return 2;
    }
    s.stores.push_back(kind);
    rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
  }
  if (s.stores.empty()) {
    fmt::print(stderr, "lstash-gpu-bench: --stores is empty\n");
    return 2;
  }

  const gpu::DeviceInfo device = gpu::ProbeCuda();
  if (s.backend == "cuda" && !device.present) {
    fmt::print(stderr, "lstash-gpu-bench: --backend cuda, but no CUDA device: {}\n", device.why_absent);
    return 2;
  }
  const bool cuda = s.backend == "cuda" || (s.backend == "auto" && device.present);
  if (s.tasks == 0) s.tasks = quick ? 20 : cuda ? 2000 : 300;
  if (s.rows == 0) s.rows = quick ? 8 : cuda ? 256 : 32;
  if (s.dim == 0) s.dim = quick ? 32 : cuda ? 1024 : 256;
  if (s.state_mib == 0) s.state_mib = quick ? 1 : cuda ? 1024 : 64;
  if (quick) s.replay_tasks = std::min(s.replay_tasks, 50);

  nlohmann::json report;
  report["backend"] = cuda ? "cuda" : "cpu";
  report["device"] = cuda ? device.name : "cpu (no CUDA device: " + device.why_absent + ")";
  fmt::print("lstash-gpu-bench on {}\n", report["device"].get<std::string>());
  fmt::print("overhead: {} tasks per mode...\n", s.tasks);
  report["overhead"] = Overhead(s);
  for (const char* name : {"none", "lineage-stash", "lineage-stash+digest"}) {
    const nlohmann::json& m = report["overhead"]["modes"][name];
    fmt::print("  {:<22} mean {:9.1f} us  p50 {:9.1f} us  p99 {:9.1f} us  overhead {:+6.2f}%\n", name,
               m["mean_us"].get<double>(), m["p50_us"].get<double>(), m["p99_us"].get<double>(),
               100 * m["overhead_vs_none"].get<double>());
  }
  // Every store with the new incarnation in this process (the store stays
  // open), then every durable one as after a real crash: a new process opens
  // the embedded store the lost one left, or connects to the store server,
  // which outlives its workers.
  std::vector<std::pair<std::string, std::string>> runs;
  for (const std::string& kind : s.stores) runs.emplace_back(kind, "same");
  for (const std::string& kind : s.stores) {
    if (kind != "memory") runs.emplace_back(kind, "new");
  }
  for (const auto& [kind, where] : runs) {
    fmt::print("recovery: {} MiB of device state + {} logged tasks, {} store, new incarnation in {} process...\n",
               s.state_mib, s.replay_tasks, kind, where == "new" ? "a new" : "the same");
    nlohmann::json r = Recovery(s, kind, where);
    fmt::print("  {:.1f} ms from the new incarnation's start (process start {:.1f}, context {:.1f}, store open {:.1f}, "
               "worker open {:.1f}, restore {:.1f}, replay {:.1f} for {} tasks); device state {}\n",
               r["total_ms"].get<double>(), r["process_start_ms"].get<double>(), r["context_ms"].get<double>(),
               r["store_open_ms"].get<double>(), r["worker_open_ms"].get<double>(), r["restore_ms"].get<double>(),
               r["replay_ms"].get<double>(), r["tasks_replayed"].get<int>(),
               r["verified"].get<bool>() ? "bit-for-bit equal to the lost one" : "DIFFERENT from the lost one");
    fmt::print("  (the restore met {} page faults)\n", r["restore_page_faults"].get<long>());
    fmt::print("  (its checkpoint: {:.1f} ms of the engine's time, {:.1f} ms until durable; the next one {:.1f} ms "
               "of the engine's time)\n",
               r["checkpoint_engine_ms"].get<double>(), r["checkpoint_ms"].get<double>(),
               r["checkpoint_again_engine_ms"].get<double>());
    report["recovery"].push_back(r);
  }
  bool verified = true;
  for (const auto& r : report["recovery"]) verified = verified && r["verified"].get<bool>();
  if (s.json) fmt::print("{}\n", report.dump());
  return verified ? 0 : 1;
}

}  // namespace
}  // namespace lstash

int main(int argc, char** argv) { return lstash::Main(argc, argv); }
