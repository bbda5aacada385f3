#include "runtime/worker_host.h"

#include "net/faulty_transport.h"
#include "runtime/control.h"
#include "runtime/snapshot_worker.h"
#include "workloads/app.h"

#include <lstash/remote_store.h>
#include <lstash/transport.h>

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <zmq.hpp>

namespace lstash::runtime {
namespace {

constexpr std::int64_t kMs = 1'000'000;
constexpr int kMaxTasksPerTurn = 512;
// A turn of tasks (replay runs many back to back) yields after this long, so
// heartbeats, frames and the coordinator are served in between.
constexpr std::int64_t kMaxTurnNanos = 5'000'000;
constexpr std::int64_t kTickNanos = 2 * kMs;

std::int64_t Mono() { return SystemClock()->MonotonicNanos(); }

// Reports arrive on the Worker's threads; the loop acts on them.
class HostListener final : public Listener {
 public:
  void OnRecoveryEnd(const RecoveryStats& stats) override {
    std::lock_guard<std::mutex> lock(mu_);
    ended_.push_back(stats);
  }
  void OnPeerIncarnation(WorkerId peer, Epoch) override {
    std::lock_guard<std::mutex> lock(mu_);
    new_incarnations_.push_back(peer);
  }
  std::vector<RecoveryStats> TakeRecoveries() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(ended_);
  }
  std::vector<WorkerId> TakeNewIncarnations() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(new_incarnations_);
  }

 private:
  std::mutex mu_;
  std::vector<RecoveryStats> ended_;
  std::vector<WorkerId> new_incarnations_;
};

// The link to the coordinator, on a thread of its own. It keeps heartbeats
// going while the engine thread is busy or blocked (a long replay turn, a
// store call waiting out a store restart): a live process must not be
// declared dead, or several false detections at once could exceed f.
class ControlChannel {
 public:
  ~ControlChannel() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

  Status Open(const std::string& endpoint, const std::string& routing_id, std::int64_t heartbeat_nanos) {
    heartbeat_nanos_ = heartbeat_nanos;
    try {
      socket_ = zmq::socket_t(ctx_, zmq::socket_type::dealer);
      socket_.set(zmq::sockopt::linger, 200);
      socket_.set(zmq::sockopt::routing_id, routing_id);
      socket_.connect(endpoint);
    } catch (const zmq::error_t& e) {
      return Unavailable("connecting to the coordinator at " + endpoint + ": " + e.what());
    }
    thread_ = std::thread([this] { Loop(); });  // the socket is the thread's from here on
    return Status::OK();
  }

  void Send(std::string bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    outbox_.push_back(std::move(bytes));
  }
  // Sent whenever nothing else went out for a heartbeat period.
  void SetKeepalive(std::string bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    keepalive_ = std::move(bytes);
  }
  std::vector<std::string> TakeReceived() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(inbox_);
  }

 private:
  void Loop() {
    std::int64_t last_sent = Mono();
    for (bool last_round = false; !last_round;) {
      last_round = stop_.load();  // one more round sends what was queued before the stop
      std::vector<std::string> out;
      std::string keepalive;
      {
        std::lock_guard<std::mutex> lock(mu_);
        out.swap(outbox_);
        if (out.empty() && Mono() - last_sent >= heartbeat_nanos_) keepalive = keepalive_;
      }
      if (!keepalive.empty()) out.push_back(std::move(keepalive));
      for (const auto& bytes : out) {
        try {
          (void)socket_.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
        } catch (const zmq::error_t& e) {
          spdlog::warn("control message lost: {}", e.what());
        }
      }
      if (!out.empty()) last_sent = Mono();
      try {
        zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, std::chrono::milliseconds(last_round ? 0 : 5));
        zmq::message_t msg;
        while (socket_.recv(msg, zmq::recv_flags::dontwait)) {
          std::lock_guard<std::mutex> lock(mu_);
          inbox_.emplace_back(msg.to_string_view());
        }
      } catch (const zmq::error_t&) {
      }
    }
    socket_.close();
  }

  zmq::context_t ctx_{1};
  zmq::socket_t socket_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::int64_t heartbeat_nanos_ = 50 * kMs;
  std::mutex mu_;
  std::vector<std::string> outbox_, inbox_;
  std::string keepalive_;
};

bool IsFenced(const Status& s) {
  return s.code() == Code::kFailedPrecondition &&
         (s.message().find("fenced") != std::string_view::npos || s.message().find("lease") != std::string_view::npos);
}

class Host {
 public:
  explicit Host(const HostOptions& o) : o_(o) {}

  int Run() {
    if (Status s = Setup(); !s.ok()) {
      spdlog::error("worker {}: {}", o_.id, s.ToString());
      Report({{"type", "fatal"}, {"message", s.ToString()}});
      return IsFenced(s) ? kExitFenced : kExitError;
    }
    Report({{"type", "hello"}, {"pid", static_cast<long>(getpid())}, {"recovering", worker_->recovering() || awaiting_rollback_}});
    // Sets the keepalive the control thread repeats: the first turn may be
    // one long task (allreduce's first 100 MB round), and without it the
    // coordinator would hear nothing until that task ends.
    Heartbeat();
    return Loop();
  }

 private:
  Status Setup() {
    RemoteStoreOptions so;
    so.shards = o_.store_shards;
    so.deadline_nanos = o_.store_deadline_nanos;
    so.curve = o_.store_curve;
    LSTASH_ASSIGN_OR_RETURN(store_, OpenRemoteStore(so));

    if (o_.global_snapshots) return SetupCheckpointMode();
    WorkerOptions wo;
    wo.id = o_.id;
    wo.num_workers = static_cast<std::uint32_t>(o_.endpoints.size());
    wo.mode = o_.mode;
    wo.breakage = o_.breakage;
    wo.max_forward = o_.max_forward;
    wo.lease_nanos = o_.lease_nanos;
    wo.listener = &listener_;
    if (auto p = ParseFailurePoint(o_.crash_at)) armed_ = static_cast<int>(*p);
    wo.failure_point_hook = [this](FailurePoint p) {
      if (armed_.load() != static_cast<int>(p)) return;
      std::fprintf(stderr, "worker %u: crash test: SIGKILL at %s\n", o_.id, std::string(FailurePointName(p)).c_str());
      raise(SIGKILL);
    };
    LSTASH_ASSIGN_OR_RETURN(worker_, Worker::Open(wo, store_.get()));

    LSTASH_ASSIGN_OR_RETURN(app_, NewApp());
    LSTASH_ASSIGN_OR_RETURN(auto snapshot, worker_->TakeRestoredSnapshot());
    if (snapshot) LSTASH_RETURN_IF_ERROR(app_->Restore(*snapshot));
    return Connect();
  }

  // Checkpoint mode: the worker's log in the store holds its snapshot
  // records, one per entry, written by this incarnation.
  Status SetupCheckpointMode() {
    LSTASH_ASSIGN_OR_RETURN(const Epoch epoch, store_->BeginIncarnation(o_.id));
    LogIndex committed = 0;
    const WorkerId self = o_.id;
    LSTASH_RETURN_IF_ERROR(store_->ReadCommitted({&self, 1}, {&committed, 1}));
    LSTASH_RETURN_IF_ERROR(store_->SetEpochStart(o_.id, epoch, committed + 1));
    next_record_ = committed + 1;
    auto worker = std::make_unique<SnapshotWorker>(o_.id, static_cast<std::uint32_t>(o_.endpoints.size()), epoch,
                                                   [this] { return app_->Snapshot(); });
    snapshots_ = worker.get();
    worker_ = std::move(worker);
    awaiting_rollback_ = epoch > 1;  // a replacement starts from the snapshot the coordinator names
    LSTASH_ASSIGN_OR_RETURN(app_, NewApp());
    return Connect();
  }

  Result<std::unique_ptr<workloads::App>> NewApp() const {
    return workloads::MakeApp(o_.app, {o_.id, static_cast<std::uint32_t>(o_.endpoints.size()), o_.app_config});
  }

  // Rolls this worker back to snapshot `k` (0: the start) in `generation`.
  Status RollBack(std::uint64_t generation, std::uint64_t k) {
    std::optional<std::string> record;
    if (k > 0) {
      std::vector<LogRecord> records;
      LSTASH_RETURN_IF_ERROR(store_->ReadLog(o_.id, 1, &records));
      for (auto& r : records) {
        auto id = SnapshotWorker::RecordSnapshotId(r.bytes);
        if (id.ok() && *id == k) record = std::move(r.bytes);
      }
      if (!record) return DataLoss("snapshot " + std::to_string(k) + " of worker " + std::to_string(o_.id) + " is not in the store");
    }
    LSTASH_ASSIGN_OR_RETURN(auto state, snapshots_->RollBack(generation, record ? &*record : nullptr));
    LSTASH_ASSIGN_OR_RETURN(app_, NewApp());
    if (state) LSTASH_RETURN_IF_ERROR(app_->Restore(*state));
    awaiting_rollback_ = false;
    result_sent_ = false;
    Report({{"type", "rolled_back"}, {"generation", generation}, {"to", k}});
    return Status::OK();
  }

  // Writes the snapshots this worker completed and tells the coordinator.
  Status StoreSnapshots() {
    for (auto& [k, record] : snapshots_->TakeCompletedSnapshots()) {
      const LogRecord r{next_record_, std::move(record)};
      LSTASH_RETURN_IF_ERROR(store_->Append(o_.id, snapshots_->epoch(), {&r, 1}, {}));
      ++next_record_;
      Report({{"type", "snapshot_done"}, {"snapshot", k}, {"generation", snapshots_->generation()}});
    }
    return Status::OK();
  }

  // Checkpoint mode has no flusher to keep the lease on the worker's log.
  Status RenewLeaseIfDue() {
    const std::int64_t now = Mono();
    if (o_.lease_nanos <= 0 || now - lease_renewed_ < o_.lease_nanos / 3) return Status::OK();
    lease_renewed_ = now;
    return store_->RenewLease(o_.id, snapshots_->epoch(), o_.lease_nanos);
  }

  Status Connect() {
    TransportOptions to;
    to.self = o_.id;
    to.endpoints = o_.endpoints;
    to.curve = o_.transport_curve;
    LSTASH_ASSIGN_OR_RETURN(transport_, Transport::Open(to));
    LSTASH_ASSIGN_OR_RETURN(net::NetFaults faults, net::ParseNetFaults(o_.net_faults));
    faults.seed = o_.net_fault_seed;
    transport_ = net::WrapWithFaults(std::move(transport_), faults);

    if (!o_.coordinator.empty()) {
      control_ = std::make_unique<ControlChannel>();
      LSTASH_RETURN_IF_ERROR(control_->Open(o_.coordinator, "w" + std::to_string(o_.id) + "." + std::to_string(getpid()),
                                            o_.heartbeat_nanos));
    }
    return Status::OK();
  }

  std::string Encode(nlohmann::json message) const {
    message["id"] = o_.id;
    message["epoch"] = worker_ ? worker_->epoch() : 0;
    return EncodeControl(message);
  }

  void Report(nlohmann::json message) {
    if (control_) control_->Send(Encode(std::move(message)));
  }

  // Messages from the coordinator. Returns false on shutdown.
  bool HandleControl() {
    if (!control_) return true;
    for (const auto& bytes : control_->TakeReceived()) {
      nlohmann::json m;
      if (!DecodeControl(bytes, &m).ok()) continue;
      const std::string type = m["type"];
      if (type == "shutdown") return false;
      if (type == "peer_down") worker_->PeerDown(m.value("peer", 0u));
      if (snapshots_ && type == "snapshot" && !awaiting_rollback_) snapshots_->StartSnapshot(m.value("snapshot", 0ull));
      if (snapshots_ && type == "rollback") {
        if (Status s = RollBack(m.value("generation", 0ull), m.value("to", 0ull)); !s.ok()) {
          rollback_error_ = s;
          return true;
        }
      }
      if (type == "arm") {  // a crash test: die at the next pass through this point
        if (auto p = ParseFailurePoint(m.value("point", ""))) armed_ = static_cast<int>(*p);
      }
    }
    return true;
  }

  void Heartbeat() {
    Metrics m = worker_->GetMetrics();
    TransportMetrics t = transport_->GetMetrics();
    const net::NetFaultCounts nf = net::GetNetFaultCounts(*transport_);
    nlohmann::json stats;
    app_->TakeStats(&stats);
    nlohmann::json beat{{"type", "heartbeat"},
            {"recovering", m.recovering},
            {"metrics",
             {{"stash_entries", m.stash_entries},
              {"stash_bytes", m.stash_bytes},
              {"flush_batches", m.flush_batches},
              {"tasks_executed", m.tasks_executed},
              {"replayed_tasks", m.replayed_tasks},
              {"piggybacked_entries", m.piggybacked_entries},
              {"piggybacked_bytes", m.piggybacked_bytes},
              {"task_frames", m.task_frames},
              {"frames_corrupt", m.frames_corrupt},
              {"frames_stale", m.frames_stale},
              {"outbox_messages", m.outbox_messages},
              {"transport_rejected", t.rejected},
              {"frames_resent", m.frames_resent},
              {"frames_deferred", m.frames_deferred},
              {"log_end", m.log_end},
              {"committed", m.committed},
              {"duplicates_dropped", m.duplicates_dropped},
              {"net_faults", nf.dropped + nf.duplicated + nf.reordered + nf.delayed}}},
            {"app", std::move(stats)}};
    if (!control_) return;
    control_->Send(Encode(beat));
    beat.erase("app");  // the keepalive repeats the state, not the latency samples
    control_->SetKeepalive(Encode(std::move(beat)));
  }

  int Loop() {
    std::int64_t next_tick = 0, next_heartbeat = 0, last_live_task = 0;
    std::uint32_t since_checkpoint = 0;
    std::vector<Incoming> incoming;
    for (;;) {
      // Run what is ready.
      int ran = 0;
      const std::int64_t interval = app_->MinTaskIntervalNanos();
      const std::int64_t turn_ends = Mono() + kMaxTurnNanos;
      while (!awaiting_rollback_ && ran < kMaxTasksPerTurn && Mono() < turn_ends) {
        const bool replaying = worker_->recovering();
        if (!replaying && interval > 0 && Mono() - last_live_task < interval) break;
        auto task = worker_->NextTask();
        if (!task.ok()) return Fail(task.status());
        if (!task->has_value()) break;
        Status s = app_->Execute(*worker_, **task);
        if (!s.ok()) return Fail(s.WithContext("task " + ToString((*task)->id)));
        ++ran;
        if (!(*task)->replayed) last_live_task = Mono();
        if (o_.checkpoint_every && ++since_checkpoint >= o_.checkpoint_every) {
          since_checkpoint = 0;
          if (Status c = worker_->Checkpoint(app_->Snapshot()); !c.ok()) return Fail(c);
        }
      }
      const std::int64_t now = Mono();
      if (now >= next_tick) {
        worker_->Tick();
        next_tick = now + kTickNanos;
      }
      for (auto& f : worker_->TakeFrames()) (void)transport_->Send(f.dest, f.bytes);  // the Worker resends what is lost
      if (!worker_->health().ok()) return Fail(worker_->health());
      if (snapshots_) {
        Status st = StoreSnapshots();
        if (st.ok()) st = RenewLeaseIfDue();
        if (!st.ok()) return Fail(st);
      }

      for (const auto& r : listener_.TakeRecoveries()) {
        Report({{"type", "recovered"},
                {"replayed", r.tasks_replayed},
                {"gather_ms", r.gather_nanos / 1e6},
                {"total_ms", r.total_nanos / 1e6},
                {"from_store", r.from_store},
                {"from_survivors", r.from_survivors},
                {"ok", r.status.ok()},
                {"status", r.status.ToString()}});
      }
      if (!result_sent_ && !awaiting_rollback_ && !worker_->recovering() && app_->Finished()) {
        Heartbeat();  // the last statistics go first
        Report({{"type", "result"}, {"snapshot", workloads::ToHex(app_->Snapshot())}});
        result_sent_ = true;
      }
      if (now >= next_heartbeat) {
        Heartbeat();
        next_heartbeat = now + o_.heartbeat_nanos;
      }
      if (!HandleControl()) {
        (void)worker_->Sync(2'000'000'000);
        return kExitDone;
      }
      if (!rollback_error_.ok()) return Fail(rollback_error_);
      incoming.clear();
      const std::int64_t wait = ran > 0 ? 0 : std::min<std::int64_t>(kMs, std::max<std::int64_t>(0, next_tick - now));
      if (Status s = transport_->Poll(wait, &incoming); !s.ok()) return Fail(s);
      for (const auto& in : incoming) (void)worker_->ReceiveFrom(in.from, in.bytes);  // rejects are counted
      // Before anything is sent to it: our connection may still reach the
      // old process (a paused one keeps its listening socket).
      for (WorkerId peer : listener_.TakeNewIncarnations()) (void)transport_->Reconnect(peer);
    }
  }

  int Fail(const Status& s) {
    const bool fenced = IsFenced(s);
    if (fenced) {
      spdlog::warn("worker {} incarnation {}: fenced, exiting: {}", o_.id, worker_ ? worker_->epoch() : 0,
                   s.ToString());
    } else {
      spdlog::error("worker {}: {}", o_.id, s.ToString());
    }
    Report({{"type", fenced ? "fenced" : "fatal"}, {"message", s.ToString()}});
    return fenced ? kExitFenced : kExitError;
  }

  const HostOptions o_;
  HostListener listener_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<workloads::App> app_;
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<ControlChannel> control_;
  std::atomic<int> armed_{-1};  // a FailurePoint to die at; the flusher thread reads it
  bool result_sent_ = false;
  // Checkpoint mode only.
  SnapshotWorker* snapshots_ = nullptr;  // worker_, when it is one
  bool awaiting_rollback_ = false;
  LogIndex next_record_ = 1;
  std::int64_t lease_renewed_ = 0;
  Status rollback_error_;
};

}  // namespace

int RunWorkerHost(const HostOptions& options) {
  Host host(options);
  return host.Run();
}

}  // namespace lstash::runtime
