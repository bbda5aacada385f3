#include "sim/sim.h"

#include "storeserver/ack_journal.h"
#include "workloads/app.h"
#include "wire/format.h"

#include <lstash/store.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <map>
#include <random>
#include <set>
#include <sstream>

namespace lstash::sim {
namespace {

constexpr std::int64_t kMillis = 1'000'000;

std::uint64_t Mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The workload's settings for a simulated run: small, so that a run takes
// milliseconds.
nlohmann::json AppConfig(const SimConfig& c) {
  if (c.workload == "wordcount") {
    const std::uint32_t mappers = std::max<std::uint32_t>(1, (c.workers - 1) / 2);
    return {{"mappers", mappers},   {"reducers", c.workers - 1 - mappers},
            {"generated_lines", 97}, {"rate", 100.0 * c.tokens * c.hops},
            {"duration_s", 0.2},    {"max_batch", 7}};
  }
  if (c.workload == "allreduce") return {{"rounds", c.hops}, {"length", std::max<std::uint32_t>(16, c.workers)}};
  // The GPU workloads on the CPU path (the same bits as CUDA), small.
  if (c.workload == "serving") {  // windows of a few virtual milliseconds
    return {{"backend", "cpu"}, {"requests", c.tokens + c.hops}, {"max_batch", 4}, {"window_ms", 2.0},
            {"in", 8}, {"hidden", 16}, {"out", 4}};
  }
  if (c.workload == "pipeline") {
    return {{"backend", "cpu"}, {"minibatches", 2 * c.tokens}, {"batch", 4}, {"in", 8}, {"hidden", 8}, {"out", 4}};
  }
  if (c.workload == "ring") {  // virtual time: a few laps per token
    return {{"tokens", c.tokens}, {"nondet", c.hops % 2 == 1}, {"duration_s", 0.002 * c.hops}, {"check_laps", 1}};
  }
  return {{"tokens", c.tokens}, {"hops", c.hops}, {"large_percent", c.large_percent}};
}

class SimClock final : public Clock {
 public:
  std::int64_t MonotonicNanos() override { return now; }
  std::int64_t WallNanos() override { return 1'700'000'000'000'000'000 + now; }
  std::int64_t now = kMillis;
};

// Loses store requests or responses, as a network between a worker and a
// store server would. Seeded: part of the simulation's determinism.
class FaultyStore final : public StoreWrapper {
 public:
  // `journal` records every write the store acknowledged to a worker (not
  // those whose answer was "lost"): the durability check's evidence.
  FaultyStore(Store* target, std::uint64_t seed, std::uint32_t percent, store_journal::AckJournal* journal)
      : StoreWrapper(target), rng_(seed), percent_(percent), journal_(journal) {}

  // The incarnation died at a failure point: nothing it writes from now on
  // reaches the store.
  void Kill(WorkerId w, Epoch e) { dead_.insert({w, e}); }

  Status SetEpochStart(WorkerId w, Epoch e, LogIndex start) override {
    if (dead_.count({w, e})) return Unavailable("injected: the process died at a failure point");
    return target()->SetEpochStart(w, e, start);
  }

  Status Append(WorkerId w, Epoch e, std::span<const LogRecord> r, std::span<const LineageCopy> c) override {
    Status s = Write(w, e, "append", [&] { return target()->Append(w, e, r, c); });
    if (s.ok()) journal_->RecordAppend(w, e, r);
    return s;
  }

  Status PutCheckpointFrom(WorkerId w, Epoch e, LogIndex at, std::uint64_t size, const RecordParts& parts) override {
    Status s = Write(w, e, "checkpoint", [&] { return target()->PutCheckpointFrom(w, e, at, size, parts); });
    if (s.ok()) journal_->RecordCheckpoint(w, e, at);
    return s;
  }

 private:
  enum class Fault { kNone, kLoseRequest, kLoseResponse };

  // `write`, unless the incarnation is dead or the dice lose its request or
  // its response. OK only when the store acted and the worker hears so.
  template <typename F>
  Status Write(WorkerId w, Epoch e, const char* what, F&& write) {
    if (dead_.count({w, e})) return Unavailable("injected: the process died at a failure point");
    switch (Roll()) {
      case Fault::kLoseRequest: return Unavailable(std::string("injected: ") + what + " request lost");
      case Fault::kLoseResponse: {
        Status s = write();
        return s.ok() ? Unavailable(std::string("injected: ") + what + " response lost") : s;
      }
      case Fault::kNone: break;
    }
    return write();
  }

  Fault Roll() {
    if (rng_() % 100 >= percent_) return Fault::kNone;
    return rng_() % 2 ? Fault::kLoseRequest : Fault::kLoseResponse;
  }
  std::mt19937_64 rng_;
  std::uint32_t percent_;
  std::set<std::pair<WorkerId, Epoch>> dead_;
  store_journal::AckJournal* journal_;
};

struct SimCrash {};

// What the app sees of its Worker: the real one, except that the simulator
// may kill the worker right after a Submit, in the middle of a task.
class CrashingWorker final : public Worker {
 public:
  CrashingWorker(Worker* inner, int crash_after_submits) : inner_(inner), crash_after_(crash_after_submits) {}
  Result<TaskId> Submit(WorkerId dest, std::string_view payload) override {
    auto id = inner_->Submit(dest, payload);
    if (crash_after_ >= 0 && submits_++ == crash_after_) throw SimCrash{};
    return id;
  }
  Result<Delivery> Receive(std::string_view f) override { return inner_->Receive(f); }
  Result<Delivery> ReceiveFrom(WorkerId s, std::string_view f) override { return inner_->ReceiveFrom(s, f); }
  Result<std::optional<Task>> NextTask() override { return inner_->NextTask(); }
  Result<std::uint64_t> Random() override { return inner_->Random(); }
  Result<std::int64_t> Now() override { return inner_->Now(); }
  Result<std::string> Choose(const std::function<std::string()>& p) override { return inner_->Choose(p); }
  std::vector<Frame> TakeFrames() override { return inner_->TakeFrames(); }
  void Tick() override { inner_->Tick(); }
  Status Checkpoint(EngineSnapshot snapshot) override { return inner_->Checkpoint(std::move(snapshot)); }
  std::optional<std::uint64_t> restored_snapshot_bytes() const override { return inner_->restored_snapshot_bytes(); }
  Status ReadRestoredSnapshot(const std::function<Status(std::string_view)>& sink) override {
    return inner_->ReadRestoredSnapshot(sink);
  }
  void PeerDown(WorkerId peer) override { inner_->PeerDown(peer); }
  Result<std::size_t> Flush() override { return inner_->Flush(); }
  Status Sync(std::int64_t timeout_nanos) override { return inner_->Sync(timeout_nanos); }
  bool recovering() const override { return inner_->recovering(); }
  WorkerId id() const override { return inner_->id(); }
  Epoch epoch() const override { return inner_->epoch(); }
  Status health() const override { return inner_->health(); }
  Metrics GetMetrics() const override { return inner_->GetMetrics(); }

 private:
  Worker* inner_;
  int crash_after_;
  int submits_ = 0;
};

class Simulation {
 public:
  explicit Simulation(const SimConfig& c) : c_(c), rng_(Mix64(c.seed)), nodes_(c.workers) {
    channels_.resize(std::size_t{c.workers} * c.workers);
    for (WorkerId w = 0; w < c.workers; ++w) nodes_[w].listener.sim = this, nodes_[w].listener.w = w;
  }

  ~Simulation() {
    for (auto& n : nodes_) n.worker.reset();
    faulty_.reset();
    store_.reset();
    journal_.reset();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  SimResult Run();

 private:
  struct SimListener final : Listener {
    Simulation* sim = nullptr;
    WorkerId w = 0;
    void OnRecoveryEnd(const RecoveryStats&) override {
      ++sim->result_.recoveries;
      sim->result_.recovery_ms.push_back(double(sim->clock_.now - sim->nodes_[w].started_at) / kMillis);
    }
  };

  struct Node {
    std::unique_ptr<Worker> worker;
    std::unique_ptr<workloads::App> app;
    SimListener listener;
    bool up = false;
    bool hit = false;  // died at a failure point during this step; crashed at its end
    Epoch epoch = 0;
    std::int64_t started_at = 0;
    std::uint32_t since_checkpoint = 0;
    LogIndex log_end_seen = 0;  // furthest log index this worker ever created
    // While failed: what its lost stash could have held, and when.
    bool failed = false;
    std::vector<LogIndex> frontier_at_crash;
    std::vector<Epoch> epochs_at_crash;
  };

  std::uint64_t Rand(std::uint64_t n) { return n ? rng_() % n : 0; }
  bool Chance(std::uint32_t percent) { return Rand(100) < percent; }
  void Violation(std::string v) { result_.violations.push_back(std::move(v)); }

  Status Start(WorkerId w);
  void Crash(WorkerId w);
  void Pump(WorkerId w);
  void Deliver();
  bool RunTask(WorkerId w, bool allow_crash);  // true if a task ran
  void FlushStep(WorkerId w, bool allow_crash);
  void TickAll(std::int64_t advance);
  bool Healed(const Node& n);
  std::uint32_t FailedCount();
  bool CanCrash() { return crashes_left_ > 0 && FailedCount() < c_.f; }
  void OnFailurePoint(WorkerId w, FailurePoint p);
  void CrashThoseHit();
  void CrashSome();
  bool Quiescent();
  std::size_t InFlight() const {
    std::size_t n = 0;
    for (const auto& ch : channels_) n += ch.size();
    return n;
  }
  std::deque<std::string>& Channel(WorkerId from, WorkerId to) { return channels_[from * c_.workers + to]; }

  const SimConfig c_;
  std::mt19937_64 rng_;
  SimClock clock_;
  std::string dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<store_journal::AckJournal> journal_;
  std::unique_ptr<FaultyStore> faulty_;
  std::vector<Node> nodes_;
  std::vector<std::deque<std::string>> channels_;
  std::uint32_t crashes_left_ = 0;
  std::uint32_t point_crashes_left_ = 0;
  std::size_t next_point_ = 0;  // index into c_.failure_points of the one that may kill next
  bool points_armed_ = false;  // failure points may kill now (not while checking quiescence)
  SimResult result_;
  bool aborted_ = false;
};

Status Simulation::Start(WorkerId w) {
  Node& n = nodes_[w];
  WorkerOptions o;
  o.id = w;
  o.num_workers = c_.workers;
  o.mode = c_.mode;
  o.max_forward = c_.f;
  o.background_flush = false;
  o.clock = &clock_;
  o.random_seed = Mix64(c_.seed * 1000003 + w) | 1;
  o.listener = &n.listener;
  o.breakage = c_.breakage;
  o.resend_after_nanos = 30 * kMillis;
  if (!c_.failure_points.empty()) o.failure_point_hook = [this, w](FailurePoint p) { OnFailurePoint(w, p); };
  auto worker = Worker::Open(o, faulty_.get());
  if (!worker.ok()) return worker.status().WithContext("opening worker " + std::to_string(w));
  n.worker = std::move(*worker);
  n.epoch = n.worker->epoch();
  n.hit = false;
  LSTASH_ASSIGN_OR_RETURN(n.app, workloads::MakeApp(c_.workload, {w, c_.workers, AppConfig(c_)}));
  LSTASH_ASSIGN_OR_RETURN(auto snapshot, n.worker->TakeRestoredSnapshot());
  if (snapshot) LSTASH_RETURN_IF_ERROR(n.app->Restore(*snapshot));
  spdlog::debug("sim: step {} start w{} epoch {}", result_.steps, w, n.worker->epoch());
  n.up = true;
  n.started_at = clock_.now;
  n.since_checkpoint = 0;
  for (WorkerId d = 0; d < c_.workers; ++d) {
    if (!nodes_[d].up) n.worker->PeerDown(d);
  }
  Pump(w);
  return Status::OK();
}

void Simulation::Crash(WorkerId w) {
  Node& n = nodes_[w];
  if (!n.up) return;
  spdlog::debug("sim: step {} crash w{} epoch {}", result_.steps, w, n.worker->epoch());
  n.log_end_seen = std::max(n.log_end_seen, n.worker->GetMetrics().log_end);
  n.worker.reset();  // its stash, inbox and unsent frames die with it
  n.app.reset();
  n.up = false;
  n.failed = true;
  n.frontier_at_crash.assign(c_.workers, 0);
  n.epochs_at_crash.assign(c_.workers, 0);
  for (WorkerId o = 0; o < c_.workers; ++o) {
    Node& other = nodes_[o];
    if (other.up) other.log_end_seen = std::max(other.log_end_seen, other.worker->GetMetrics().log_end);
    n.frontier_at_crash[o] = other.log_end_seen;
    auto epochs = store_->Epochs(o);
    if (epochs.ok() && !epochs->empty()) n.epochs_at_crash[o] = epochs->back().epoch;
  }
  // Messages queued *to* the dead worker are lost; its own in-flight
  // messages still arrive (they are on the wire).
  for (WorkerId s = 0; s < c_.workers; ++s) Channel(s, w).clear();
  ++result_.crashes;
  for (WorkerId o = 0; o < c_.workers; ++o) {
    if (nodes_[o].up) {
      nodes_[o].worker->PeerDown(w);
      Pump(o);
    }
  }
}

void Simulation::Pump(WorkerId w) {
  if (nodes_[w].hit) return;  // its frames die with it
  for (auto& f : nodes_[w].worker->TakeFrames()) Channel(w, f.dest).push_back(std::move(f.bytes));
}

void Simulation::Deliver() {
  std::vector<std::size_t> busy;
  for (std::size_t i = 0; i < channels_.size(); ++i) {
    if (!channels_[i].empty()) busy.push_back(i);
  }
  if (busy.empty()) return;
  auto& ch = channels_[busy[Rand(busy.size())]];
  const WorkerId to = static_cast<WorkerId>((&ch - channels_.data()) % c_.workers);
  // Mostly FIFO; now and then a later frame overtakes.
  std::size_t pick = ch.size() > 1 && Chance(2) ? Rand(ch.size()) : 0;
  std::string frame = std::move(ch[pick]);
  ch.erase(ch.begin() + static_cast<std::ptrdiff_t>(pick));
  if (c_.loss_percent && Chance(c_.loss_percent)) {
    ++result_.frames_lost;
    return;
  }
  if (c_.dup_percent && Chance(c_.dup_percent)) {  // the copy arrives later, maybe after newer frames
    ++result_.frames_duplicated;
    ch.insert(ch.begin() + static_cast<std::ptrdiff_t>(Rand(ch.size() + 1)), frame);
  }
  if (!nodes_[to].up) return;
  ++result_.frames_delivered;
  auto r = nodes_[to].worker->Receive(frame);
  if (!r.ok()) {
    Violation("worker " + std::to_string(to) + " rejected a frame from a correct peer: " + r.status().ToString());
    aborted_ = true;
    return;
  }
  Pump(to);
}

bool Simulation::RunTask(WorkerId w, bool allow_crash) {
  Node& n = nodes_[w];
  auto t = n.worker->NextTask();
  if (!t.ok()) {
    Violation("worker " + std::to_string(w) + ": " + t.status().ToString());
    aborted_ = true;
    return false;
  }
  if (!t->has_value()) {
    Pump(w);
    return false;
  }
  if (n.hit) return true;  // died handing out the task (mid-recovery)
  // Sometimes die in the middle of the task, after its k-th submit.
  int crash_after = allow_crash && Chance(3) ? static_cast<int>(Rand(3)) : -1;
  CrashingWorker worker(n.worker.get(), crash_after);
  Status s;
  try {
    s = n.app->Execute(worker, **t);
  } catch (const SimCrash&) {
    --crashes_left_;
    Crash(w);
    return true;
  }
  if (!s.ok()) {
    Violation("worker " + std::to_string(w) + " task " + ToString((*t)->id) + ": " + s.ToString());
    aborted_ = true;
    return true;
  }
  ++result_.tasks_executed;
  if ((*t)->replayed) ++result_.tasks_replayed;
  if (c_.checkpoint_every && ++n.since_checkpoint >= c_.checkpoint_every) {
    n.since_checkpoint = 0;
    Status cs = n.worker->Checkpoint(n.app->Snapshot());
    if (!cs.ok()) {
      Violation("worker " + std::to_string(w) + " checkpoint: " + cs.ToString());
      aborted_ = true;
      return true;
    }
  }
  Pump(w);
  return true;
}

void Simulation::FlushStep(WorkerId w, bool allow_crash) {
  auto r = nodes_[w].worker->Flush();
  if (!r.ok() && r.status().code() != Code::kUnavailable) {
    Violation("worker " + std::to_string(w) + " flush: " + r.status().ToString());
    aborted_ = true;
    return;
  }
  if (allow_crash && Chance(5)) {  // die after the store acted, before anyone heard
    --crashes_left_;
    Crash(w);
    return;
  }
  Pump(w);
}

// Called from inside the library, on this thread: marks the worker dead at
// this point. The store refuses its writes from here on, Pump drops its
// frames, and the step's end crashes it.
void Simulation::OnFailurePoint(WorkerId w, FailurePoint p) {
  Node& n = nodes_[w];
  if (!points_armed_ || n.hit || point_crashes_left_ == 0) return;
  // One point at a time is live, chosen at random, so that rarely passed
  // points (mid-checkpoint) get their turn beside frequent ones (mid-forward).
  // mid-recovery is passed once per recovery; the others over and over.
  if (p != c_.failure_points[next_point_] || !Chance(p == FailurePoint::kMidRecovery ? 50 : 5)) return;
  const bool already_failed = FailedCount() > 0 && n.failed;  // dying again while it recovers adds no failure
  if (!already_failed && FailedCount() >= c_.f) return;
  next_point_ = Rand(c_.failure_points.size());
  spdlog::debug("sim: step {} w{} dies at {}", result_.steps, w, FailurePointName(p));
  n.hit = true;
  faulty_->Kill(w, n.epoch);
  --point_crashes_left_;
  ++result_.point_crashes;
}

void Simulation::CrashThoseHit() {
  for (WorkerId w = 0; w < c_.workers; ++w) {
    if (nodes_[w].up && nodes_[w].hit) Crash(w);
  }
}

void Simulation::TickAll(std::int64_t advance) {
  clock_.now += advance;
  for (WorkerId w = 0; w < c_.workers; ++w) {
    if (!nodes_[w].up) continue;
    nodes_[w].worker->Tick();
    Pump(w);
  }
}

// A crashed worker stops counting against f once it is back and everything
// its lost stash could have held is committed, or was discarded by its
// owner's recovery.
bool Simulation::Healed(const Node& n) {
  if (!n.up || n.worker->recovering()) return false;
  std::vector<WorkerId> all(c_.workers);
  for (WorkerId o = 0; o < c_.workers; ++o) all[o] = o;
  std::vector<LogIndex> committed(c_.workers);
  if (!store_->ReadCommitted(all, committed).ok()) return false;
  for (WorkerId o = 0; o < c_.workers; ++o) {
    LogIndex need = n.frontier_at_crash[o];
    auto epochs = store_->Epochs(o);
    if (!epochs.ok()) return false;
    for (const auto& e : *epochs) {
      if (e.epoch <= n.epochs_at_crash[o]) continue;
      if (e.start == 0) {
        if (&e == &epochs->back()) return false;
        continue;
      }
      need = std::min(need, e.start - 1);
    }
    if (committed[o] < need) return false;
  }
  return true;
}

std::uint32_t Simulation::FailedCount() {
  std::uint32_t count = 0;
  for (auto& n : nodes_) {
    if (n.failed && Healed(n)) n.failed = false;
    count += n.failed;
  }
  return count;
}

void Simulation::CrashSome() {
  // Several at once, up to the budget; recovering workers are favoured so
  // that crashes during recovery are common.
  const std::uint32_t budget = c_.f - FailedCount();
  const std::uint32_t k = 1 + static_cast<std::uint32_t>(Rand(budget));
  for (std::uint32_t i = 0; i < k; ++i) {
    std::vector<WorkerId> up, recovering;
    for (WorkerId w = 0; w < c_.workers; ++w) {
      if (!nodes_[w].up || nodes_[w].failed) continue;
      up.push_back(w);
      if (nodes_[w].worker->recovering()) recovering.push_back(w);
    }
    if (up.empty()) break;
    WorkerId victim = !recovering.empty() && Chance(50) ? recovering[Rand(recovering.size())] : up[Rand(up.size())];
    Crash(victim);
  }
  --crashes_left_;
}

bool Simulation::Quiescent() {
  points_armed_ = false;
  for (auto& n : nodes_) {
    if (!n.up || n.worker->recovering()) return false;
  }
  if (InFlight()) return false;
  for (WorkerId w = 0; w < c_.workers; ++w) {
    auto& worker = *nodes_[w].worker;
    for (int i = 0; i < 1000; ++i) {
      auto r = worker.Flush();
      if (r.ok() && *r == 0) break;
    }
    Pump(w);
    if (RunTask(w, false) || aborted_) return false;
  }
  TickAll(1000 * kMillis);  // past any resend backoff
  return InFlight() == 0;
}

SimResult Simulation::Run() {
  // A scratch directory: the acknowledgement journal, and the RocksDB store.
  dir_ = (std::filesystem::temp_directory_path() /
          ("lstash-sim-" + std::to_string(c_.seed) + "-" + std::to_string(Mix64(reinterpret_cast<std::uintptr_t>(this)))))
             .string();
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  auto journal = store_journal::AckJournal::Open(dir_ + "/acks");
  if (!journal.ok()) {
    Violation("opening the acknowledgement journal: " + journal.status().ToString());
    return result_;
  }
  journal_ = std::move(*journal);
  if (c_.rocksdb) {
    RocksDbStoreOptions so;
    so.sync = false;  // a crash here is a worker crash, not a power cut
    auto s = OpenRocksDbStore(dir_ + "/db", so);
    if (!s.ok()) {
      Violation("opening the RocksDB store: " + s.status().ToString());
      return result_;
    }
    store_ = std::move(*s);
  } else {
    store_ = NewMemoryStore();
  }
  faulty_ = std::make_unique<FaultyStore>(store_.get(), Mix64(c_.seed ^ 0x5707e), c_.store_fault_percent, journal_.get());
  for (WorkerId w = 0; w < c_.workers; ++w) {
    Status s = Start(w);
    if (!s.ok()) {
      Violation(s.ToString());
      return result_;
    }
  }
  crashes_left_ = c_.crashes;
  point_crashes_left_ = c_.point_crashes;
  if (!c_.failure_points.empty()) next_point_ = Rand(c_.failure_points.size());
  // Crashes are spread over the first stretch of the run.
  const std::uint64_t crash_window = 400 + 60ull * c_.workers * c_.tokens;
  for (result_.steps = 0; result_.steps < c_.max_steps && !aborted_; ++result_.steps) {
    CrashThoseHit();
    const bool may_crash = result_.steps < crash_window && CanCrash();
    points_armed_ = result_.steps < crash_window;
    if (may_crash && Chance(1)) {
      CrashSome();
      continue;
    }
    std::vector<WorkerId> down;
    for (WorkerId w = 0; w < c_.workers; ++w) {
      if (!nodes_[w].up) down.push_back(w);
    }
    if (!down.empty() && Chance(8)) {
      WorkerId w = down[Rand(down.size())];
      Status s = Start(w);
      if (!s.ok()) {
        Violation(s.ToString());
        break;
      }
      continue;
    }
    std::vector<WorkerId> up;
    for (WorkerId w = 0; w < c_.workers; ++w) {
      if (nodes_[w].up) up.push_back(w);
    }
    const std::uint64_t roll = Rand(100);
    if (roll < 55) {
      Deliver();
    } else if (roll < 80) {
      if (!up.empty()) RunTask(up[Rand(up.size())], may_crash);
    } else if (roll < 92) {
      if (!up.empty()) FlushStep(up[Rand(up.size())], may_crash);
    } else {
      TickAll(static_cast<std::int64_t>(1 + Rand(5)) * kMillis);
    }
    if (result_.steps >= crash_window && down.empty() && result_.steps % 64 == 0 && Quiescent()) {
      result_.completed = true;
      break;
    }
  }
  if (aborted_) return result_;
  if (!result_.completed) {
    std::string state;
    for (WorkerId w = 0; w < c_.workers; ++w) {
      const Node& n = nodes_[w];
      state += " w" + std::to_string(w) + "=";
      if (!n.up) {
        state += "down";
        continue;
      }
      Metrics m = n.worker->GetMetrics();
      state += std::string(n.worker->recovering() ? "recovering" : "live") + "(log " + std::to_string(m.log_end) +
               ", committed " + std::to_string(m.committed) + ", outbox " + std::to_string(m.outbox_messages) +
               ", deferred " + std::to_string(m.frames_deferred) + ", stale " + std::to_string(m.frames_stale) + ")";
    }
    std::map<std::string, std::size_t> kinds;  // what is in flight, by kind and route
    for (std::size_t i = 0; i < channels_.size(); ++i) {
      for (const auto& bytes : channels_[i]) {
        wire::DecodedFrame f;
        if (!wire::DecodeFrame(bytes, &f).ok()) continue;
        ++kinds["k" + std::to_string(int(f.header.kind)) + " w" + std::to_string(f.header.sender) + "->w" +
                std::to_string(f.header.dest)];
      }
    }
    std::string top;
    for (const auto& [k, count] : kinds) {
      if (count > 100) top += " [" + k + "]x" + std::to_string(count);
    }
    Violation("liveness: the job did not quiesce within " + std::to_string(c_.max_steps) + " steps (" +
              std::to_string(InFlight()) + " frames in flight" + top + "):" + state);
    return result_;
  }
  std::vector<const workloads::App*> apps;
  for (WorkerId w = 0; w < c_.workers; ++w) {
    Status h = nodes_[w].worker->health();
    if (!h.ok()) Violation("worker " + std::to_string(w) + " unhealthy: " + h.ToString());
    Metrics m = nodes_[w].worker->GetMetrics();
    result_.piggybacked_entries += m.piggybacked_entries;
    result_.stash_bytes_peak = std::max<std::uint64_t>(result_.stash_bytes_peak, m.stash_bytes_peak);
    apps.push_back(nodes_[w].app.get());
  }
  for (WorkerId w = 0; w < c_.workers; ++w) {
    if (!nodes_[w].app->Finished()) Violation("worker " + std::to_string(w) + " quiesced without finishing its part");
  }
  auto v = workloads::Check(c_.workload, AppConfig(c_), apps).violations;
  result_.violations.insert(result_.violations.end(), v.begin(), v.end());
  // Durability: every write the store acknowledged is still there.
  auto durable = store_journal::CheckDurability(dir_ + "/acks", store_.get());
  if (!durable.ok()) {
    Violation("durability: " + durable.status().ToString());
  } else {
    result_.durability_entries_checked = durable->entries_checked;
    result_.violations.insert(result_.violations.end(), durable->violations.begin(), durable->violations.end());
  }
  return result_;
}

}  // namespace

std::string SimConfig::ReplayCommand() const {
  std::ostringstream s;
  s << "build/bin/lstash-harness --sim --workload " << workload << " --seed " << seed << " --workers " << workers
    << " --f " << f << " --faults kill:" << crashes << ",store-loss:" << store_fault_percent
    << (dup_percent ? ",dup:" + std::to_string(dup_percent) : "") << (loss_percent ? ",loss:" + std::to_string(loss_percent) : "");
  for (FailurePoint p : failure_points) s << "," << FailurePointName(p) << ":" << point_crashes;
  s
    << " --protocol "
    << (breakage != Breakage::kNone ? BreakageName(breakage) : ModeName(mode));
  return s.str();
}

SimConfig ConfigFromSeed(const std::string& workload, std::uint64_t seed) {
  std::mt19937_64 r(Mix64(seed) ^ std::hash<std::string>{}(workload));
  SimConfig c;
  c.workload = workload;
  c.seed = seed;
  c.workers = (workload == "wordcount" ? 3 : 2) + static_cast<std::uint32_t>(r() % 15);
  c.f = 1 + static_cast<std::uint32_t>(r() % std::min<std::uint32_t>(3, c.workers - 1));
  c.crashes = 1 + static_cast<std::uint32_t>(r() % 6);
  c.tokens = 2 + static_cast<std::uint32_t>(r() % 7);
  c.hops = 2 + static_cast<std::uint32_t>(r() % 5);
  const std::uint32_t checkpoints[] = {0, 0, 3, 10};
  c.checkpoint_every = checkpoints[r() % 4];
  const std::uint32_t large[] = {0, 10, 30};
  c.large_percent = large[r() % 3];
  const std::uint32_t faults[] = {0, 5, 20};
  c.store_fault_percent = faults[r() % 3];
  c.rocksdb = seed % 8 == 0;
  return c;
}

SimResult RunSimulation(const SimConfig& config) {
  Simulation sim(config);
  return sim.Run();
}

}  // namespace lstash::sim
