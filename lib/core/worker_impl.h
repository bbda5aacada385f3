// WorkerImpl: the lineage stash protocol. See include/lstash/worker.h for the
// contract and docs/protocol.md for the rules and why they suffice.
//
// State, briefly:
//   log        own log entries 1..log_end_; position_ is the last one the
//              running code has consumed (== log_end_ when live; behind it
//              while replaying).
//   stash_     uncommitted own entries and remote copies (core/stash.h).
//   out_[d]    the channel to worker d: next channel sequence number, what d
//              has acknowledged as delivered/released, and the outbox of
//              messages d may still need (sender-based message logging).
//   in_[s]     the channel from worker s: last delivered/executed/released
//              channel sequence numbers, and executed tasks not yet stable.
//   peers_[w]  what we know of w's incarnations (epochs and where each began).
//   known_wm_  commit watermark per worker (from the store and from peers).
//
// Locking: mu_ guards everything; the engine thread takes it for each call,
// the flusher thread around preparing and completing a batch (never during
// store I/O). Listener callbacks are queued under mu_ and run after it is
// released.
#pragma once

#include "core/stash.h"
#include "wire/format.h"

#include <lstash/worker.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

namespace lstash::core {

class WorkerImpl final : public Worker {
 public:
  WorkerImpl(const WorkerOptions& options, Store* store);
  ~WorkerImpl() override;

  Status Init();

  Result<TaskId> Submit(WorkerId dest, std::string_view payload) override;
  Result<Delivery> Receive(std::string_view frame) override { return ReceiveImpl(frame, std::nullopt); }
  Result<Delivery> ReceiveFrom(WorkerId sender, std::string_view frame) override { return ReceiveImpl(frame, sender); }
  Result<std::optional<Task>> NextTask() override;
  Result<std::uint64_t> Random() override;
  Result<std::int64_t> Now() override;
  Result<std::string> Choose(const std::function<std::string()>& produce) override;
  std::vector<Frame> TakeFrames() override;
  void Tick() override;
  Status Checkpoint(EngineSnapshot snapshot) override;
  std::optional<std::uint64_t> restored_snapshot_bytes() const override;
  Status ReadRestoredSnapshot(const std::function<Status(std::string_view part)>& sink) override;
  void PeerDown(WorkerId peer) override;
  Result<std::size_t> Flush() override;
  Status Sync(std::int64_t timeout_nanos) override;
  bool recovering() const override;
  WorkerId id() const override { return options_.id; }
  Epoch epoch() const override { return epoch_; }
  Status health() const override;
  Metrics GetMetrics() const override;

 private:
  enum class Phase { kGathering, kReplaying, kLive };
  enum class Validity { kValid, kUnknown, kInvalid };

  struct QueuedTask {
    TaskId id;
    std::uint64_t channel_seq = 0;
    std::string payload;
    std::vector<wire::Dep> deps;
    bool start = false;
  };
  struct OutMsg {
    wire::OutboxMessage msg;
    // Lineage sent with it, fixed at its first transmission to an incarnation
    // of dest so that every copy carries the same set: dest accepts only one.
    std::vector<EntryPtr> piggyback;
    std::uint64_t piggyback_generation = 0;  // OutChannel::generation it was chosen for; 0 = not yet
    std::int64_t last_sent = 0;       // monotonic nanos; 0 = never
    std::uint32_t resends = 0;        // to dest's current incarnation
  };
  struct OutChannel {
    std::uint64_t generation = 1;  // bumped when dest restarts and loses what we sent
    std::uint64_t next_seq = 1;
    std::uint64_t delivered = 0;  // acknowledged by dest's current incarnation
    std::uint64_t confirmed = 0;  // delivered messages whose lineage we counted as held
    std::uint64_t released = 0;   // dest will never need these again
    std::deque<OutMsg> outbox;    // unreleased, in channel order
    std::vector<LogIndex> wm_sent;  // watermarks last told to dest
  };
  struct Unstable {
    std::uint64_t channel_seq;
    LogIndex index;
    bool needs_checkpoint;  // large payload or unlogged: only a checkpoint makes it stable
  };
  struct InChannel {
    std::uint64_t delivered = 0;
    std::uint64_t executed = 0;
    std::uint64_t released = 0;
    std::deque<Unstable> unstable;
    std::map<std::uint64_t, wire::DecodedFrame> early;  // arrived before the frames before them
    bool ack_due = false;
  };
  struct PeerView {
    std::vector<EpochRecord> epochs;  // oldest first
    Epoch current() const { return epochs.empty() ? 0 : epochs.back().epoch; }
  };
  struct Gathered {
    EntryPtr entry;
    PeerSet holders;
  };
  struct PendingCheckpoint {
    LogIndex at = 0;
    wire::CheckpointRecord record;  // its snapshot field left empty
    EngineSnapshot snapshot{std::string()};
  };
  // Stores `p` for incarnation `epoch`: its fields, then the snapshot's
  // parts as they come (maybe GiBs: never gathered here). The store's errors
  // are returned as is; the engine's snapshot writer's, with context and
  // never as kUnavailable (only the store asks for a retry).
  Status PutCheckpointRecord(const PendingCheckpoint& p, Epoch epoch);

  // Runs queued listener callbacks after releasing mu_.
  class Locked;

  // --- helpers; REQUIRES mu_ held ---
  Status CheckUsable() const;
  void SetSticky(const Status& s);
  bool lineage_mode() const { return options_.mode == Mode::kLineageStash; }
  bool logging() const { return options_.mode != Mode::kNone && options_.breakage != Breakage::kNoEventLog; }
  std::int64_t MonoNow() const { return clock_->MonotonicNanos(); }
  wire::FrameHeader Header(wire::FrameKind kind, WorkerId dest) const;
  void Queue(WorkerId dest, std::string bytes);
  // options_.failure_point_hook, run after mu_ is released (with the
  // listener callbacks).
  void QueueFailurePoint(FailurePoint p) {
    if (options_.failure_point_hook) callbacks_.push_back([this, p] { options_.failure_point_hook(p); });
  }
  // REQUIRES mu_ NOT held.
  void FailurePointHere(FailurePoint p) const {
    if (options_.failure_point_hook) options_.failure_point_hook(p);
  }

  Status RetryUnavailable(const std::function<Status()>& call);
  Status AppendOwn(wire::LogEntry& entry);  // takes its deps
  Status LogValue(wire::ValueKind kind, std::string& value);  // no-op unless logging
  Status EndTask();
  Status ReplayValue(wire::ValueKind kind, std::string* out, bool* replayed);
  Result<std::string> ObtainValue(wire::ValueKind kind, const std::function<std::string()>& produce);
  void FinishReplay();
  void ExecuteBookkeeping(WorkerId sender, std::uint64_t channel_seq, LogIndex index, bool needs_checkpoint);
  void MergeFrontier(const std::vector<wire::Dep>& deps);

  std::vector<wire::Dep> CurrentDeps() const;
  void SendTask(WorkerId dest, OutMsg& m);
  void ResendUnacknowledged(WorkerId dest, bool all_now);
  std::vector<wire::Watermark> WatermarkDelta(WorkerId dest);
  void MergeWatermarks(std::span<const wire::Watermark> wms);
  void AdvanceWatermark(WorkerId owner, LogIndex committed);
  void ReleaseStable();
  void TrimOutbox(WorkerId dest);
  // What we tell `sender` we hold: while replaying, not past a large payload
  // we still need it to resend.
  std::uint64_t ReportedDelivered(WorkerId sender) const;

  bool AddressedToUs(const wire::FrameHeader& h) const;
  Status CheckWorkerIds(const wire::DecodedFrame& f) const;
  Validity CheckLineage(WorkerId owner, Epoch epoch, LogIndex index) const;
  void LearnEpoch(WorkerId w, Epoch e);
  void LearnEpochStart(WorkerId w, Epoch e, LogIndex start);
  void PollUnsettledEpochs(std::int64_t now);

  Result<Delivery> ReceiveImpl(std::string_view bytes, std::optional<WorkerId> authenticated_sender);
  Result<Delivery> HandleTask(wire::DecodedFrame& f);
  Result<Delivery> HandleTaskFrame(wire::DecodedFrame& f);
  void HandleAck(const wire::DecodedFrame& f);
  void ApplyAck(WorkerId dest, std::uint64_t delivered, std::uint64_t released);
  void SendDueAcks();
  void HandleRecoveryRequest(const wire::FrameHeader& h);
  void HandleRecoveryReply(wire::DecodedFrame& f);

  Status StartRecovery();
  Status LoadCheckpoint();
  // The snapshot recovery restores, read from the store in parts.
  struct RestoredSnapshot {
    Epoch epoch = 0;  // of the checkpoint holding it, to notice a newer one
    LogIndex at = 0;
    std::uint64_t record_bytes = 0;
    wire::SnapshotExtent extent;
    std::optional<std::string> bytes;  // when Open read the record whole
  };
  // Bytes [offset, offset + size) of the checkpoint holding `r`, into *part
  // (its buffer reused), checked (kCorruption for a part that does not fit;
  // the caller counts it).
  Status ReadCheckpointBytes(const RestoredSnapshot& r, std::uint64_t offset, std::uint64_t size, CheckpointPart* part);
  Status StreamSnapshot(const RestoredSnapshot& r, const std::function<Status(std::string_view)>& sink);
  void CompleteGather();
  void GatherStoredCopies();

  // Flushing. PrepareBatch/CompleteBatch hold mu_; the store call between
  // them does not.
  bool FlushWorkReady() const;
  struct Batch {
    std::vector<EntryPtr> own;       // own entries, consecutive
    std::vector<EntryPtr> copied;    // remote entries they depend on
    std::vector<LogRecord> records;  // what is written: built from own and
    std::vector<LineageCopy> copies; // copied outside the lock
    void BuildRecords();
  };
  Batch PrepareBatch();
  void CompleteBatch(const Batch& batch, const Status& s, std::int64_t nanos);
  Result<std::size_t> FlushRound();  // REQUIRES mu_ NOT held
  void PollWatermarks();             // REQUIRES mu_ NOT held
  void RenewLeaseIfDue();            // REQUIRES mu_ NOT held
  void FlusherLoop();
  void WakeFlusher();  // REQUIRES mu_ held

  // --- immutable after construction ---
  const WorkerOptions options_;
  Store* const store_;
  Clock* const clock_;
  const std::uint32_t n_;

  mutable std::mutex mu_;
  std::condition_variable flush_cv_;   // work for the flusher
  std::condition_variable commit_cv_;  // something was committed
  std::vector<std::function<void()>> callbacks_;

  Epoch epoch_ = 0;
  LogIndex epoch_start_ = 0;  // where this incarnation's own history begins; 0 while gathering
  Phase phase_ = Phase::kLive;
  Status health_;

  // Log.
  LogIndex log_end_ = 0;
  LogIndex position_ = 0;
  Epoch position_epoch_ = 0;
  LogIndex committed_ = 0;
  LogIndex flushed_upto_ = 0;  // handed to the store (>= committed_)
  LogIndex checkpoint_durable_at_ = 0;
  std::optional<PendingCheckpoint> pending_checkpoint_;
  bool checkpoint_in_flight_ = false;  // taken by a flush round, not yet answered by the store
  bool flush_in_progress_ = false;

  Stash stash_;
  std::vector<LogIndex> known_wm_;
  std::vector<wire::Dep> frontier_;  // per owner: furthest entry in our causal past
  std::vector<PeerView> peers_;
  std::vector<OutChannel> out_;
  std::vector<InChannel> in_;

  std::uint64_t next_seq_ = 1;
  std::deque<QueuedTask> inbox_;
  bool in_task_ = false;
  std::uint64_t rng_state_ = 0;

  std::vector<Frame> frames_;
  std::vector<std::string_view> scratch_views_;  // SendTask's piggyback list, reused
  wire::DecodedFrame decode_scratch_;             // Receive's frame, reused

  // Recovery.
  std::set<WorkerId> awaiting_;
  std::int64_t last_request_sent_ = 0;
  // Peers whose newest incarnation had not fixed its start when we learned of
  // it, and whose older lineage a deferred frame carries. The peer may never
  // send to us (a ring), so Tick asks the store until the start is known.
  std::set<WorkerId> unsettled_;
  std::int64_t last_unsettled_poll_ = 0;
  std::map<LogIndex, Gathered> gathered_;
  std::vector<wire::DecodedFrame> held_frames_;  // task frames that arrived while gathering
  std::vector<EntryPtr> replay_log_;
  std::size_t replay_cursor_ = 0;
  std::map<std::pair<WorkerId, std::uint64_t>, std::string> replay_payloads_;  // large payloads by (sender, channel seq)
  std::vector<std::set<std::uint64_t>> payloads_needed_;  // per sender: channel seqs replay still lacks
  std::optional<RestoredSnapshot> restored_snapshot_;
  bool start_pending_ = false;
  RecoveryStats recovery_;
  std::int64_t recovery_began_ = 0;

  Metrics metrics_;
  std::uint64_t rejected_logged_ = 0;

  std::int64_t lease_renewed_at_ = 0;  // monotonic nanos, clock_
  bool stop_ = false;
  bool flush_soon_ = false;  // wake the flusher before its interval ends
  std::thread flusher_;
};

}  // namespace lstash::core
