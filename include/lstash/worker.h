// Worker: one member of a job, and the owner of its lineage stash.
//
// An engine makes one Worker per worker process (or thread) and calls it at
// four moments:
//
//   1. Submit(dest, payload)   sending a task/message to a peer. Returns the
//                              task's id; the frame to send -- the payload
//                              plus the uncommitted lineage it depends on --
//                              comes out of TakeFrames(), the one path for
//                              everything the Worker sends.
//   2. Receive(frame)          a frame arrived. Lineage is merged, duplicates
//                              are dropped, a new task is queued.
//   3. NextTask()              the engine is ready to run a task. Live, the
//                              oldest queued task is returned and its receipt
//                              is logged; in replay, the logged one.
//   4. Random(), Now(),        the running task needs a nondeterministic
//      Choose(produce)         value. Live, it is produced and logged; in
//                              replay, the logged value is returned.
//
// The Worker never does network I/O itself (it is "sans-IO"): everything to
// send, including its own acknowledgements, resends and recovery requests,
// comes out of TakeFrames(), and the engine carries those bytes to the
// destination worker's Receive(). Call Tick() every few milliseconds: it
// resends what was not acknowledged and sends the acknowledgements that could
// not ride on a task frame going back (an engine that never ticks never
// acknowledges, and its peers' outboxes grow).
//
// A minimal engine loop (examples/quickstart.cc is a complete program):
//
//   auto worker = lstash::Worker::Open(options, store).value();  // check ok() first
//   if (auto snapshot = worker->TakeRestoredSnapshot().value()) app.Restore(*snapshot);
//   // (GiBs of state: ReadRestoredSnapshot streams it in parts instead)
//   for (;;) {
//     for (auto& bytes : network.Poll()) (void)worker->Receive(bytes);
//     while (auto task = worker->NextTask().value()) app.Run(*worker, *task);
//     if (tick_due) worker->Tick();
//     for (auto& f : worker->TakeFrames()) network.Send(f.dest, f.bytes);
//   }
//
// Guarantee (mode kLineageStash, with at most `max_forward` workers failed at
// once -- see docs/protocol.md for what counts as "at once"): no orphans. Any
// effect a surviving worker has observed of a nondeterministic event of a
// failed worker is recovered, so the failed worker's replay makes the same
// choices; receivers drop resent outputs by task id, so each task's effects
// are applied exactly once. Tasks must be deterministic given their payload
// and the values they obtain from Random/Now/Choose.
//
// Threading: one engine thread calls the methods of a Worker; they are not
// safe to call concurrently with each other. GetMetrics(), health() and
// recovering() may be called from any thread. The background flusher (if enabled) is the Worker's own thread;
// listener callbacks may run on it, never under a lock of the Worker.
//
// Ownership: the Worker does not own the Store, Clock or Listener passed in
// its options; they must outlive it.
#pragma once

#include <lstash/export.h>
#include <lstash/status.h>
#include <lstash/store.h>
#include <lstash/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lstash {

enum class Mode : unsigned char {
  kLineageStash,  // log asynchronously, piggyback uncommitted lineage (default)
  kWriteFirst,    // log synchronously to the store before acting (baseline)
  kNone,          // no fault tolerance (the floor)
};

// Deliberate protocol breakage, for negative controls in tests and the
// failure-injection harness only. A correct checker reports violations when
// either is on.
enum class Breakage : unsigned char {
  kNone,
  kNoPiggyback,  // never forward lineage with messages
  kNoEventLog,   // never log receipt order or nondeterministic values
};

// Points inside the Worker where a crash test may kill the process
// (WorkerOptions::failure_point_hook). Each fires on the thread that reaches
// it, outside the Worker's lock.
enum class FailurePoint : unsigned char {
  // Flush round (Flush(), Sync() without a flusher, or the background
  // flusher; lineage-stash mode only): a batch of own entries was taken from
  // the stash and marked in flight, and is about to go to Store::Append.
  kBeforeFlush,
  // Store::Append acknowledged that batch; the Worker has not yet recorded
  // it as committed nor evicted it from the stash (nor released the inputs
  // it makes stable). Fires only after a successful write.
  kAfterFlush,
  // A task frame carrying piggybacked lineage was built and queued (Submit,
  // or a resend from Tick/Receive/recovery); fires as that call returns,
  // once per such frame, before TakeFrames() hands the frame out.
  kMidForward,
  // Recovery gathered its lineage and NextTask() has just taken the first
  // replayed task; fires before NextTask returns it. Once per recovery that
  // has at least one task to replay (none fires if the recovered log after
  // the checkpoint is empty).
  kMidRecovery,
  // Store::PutCheckpoint acknowledged a checkpoint (the store deletes the log
  // up to it atomically with storing it); the Worker has not yet recorded it
  // as durable nor released the inputs it covers, so senders still keep
  // those messages. Lineage-stash mode: in a flush round, after the batch
  // (if any). Write-first mode: inside Checkpoint(), with the lock dropped
  // around the call.
  kMidCheckpoint,
};

LSTASH_EXPORT std::string_view ModeName(Mode mode);  // "lineage-stash", ...
LSTASH_EXPORT std::string_view BreakageName(Breakage breakage);
LSTASH_EXPORT std::optional<Mode> ParseMode(std::string_view name);
LSTASH_EXPORT std::optional<Breakage> ParseBreakage(std::string_view name);  // the inverse of BreakageName
// "before-flush", "after-flush", "mid-forward", "mid-recovery", "mid-checkpoint".
LSTASH_EXPORT std::string_view FailurePointName(FailurePoint p);
LSTASH_EXPORT std::optional<FailurePoint> ParseFailurePoint(std::string_view name);  // the inverse

struct RecoveryStats {
  WorkerId worker = 0;
  Epoch epoch = 0;
  LogIndex checkpoint_at = 0;   // 0 if none
  LogIndex log_end = 0;         // last recovered log index
  std::uint64_t from_store = 0;      // entries read from the store
  std::uint64_t from_survivors = 0;  // entries only survivors held
  std::uint64_t tasks_replayed = 0;
  std::int64_t gather_nanos = 0;     // start to lineage gathered
  std::int64_t total_nanos = 0;      // start to replay finished
  Status status;                     // not OK if lineage was missing
};

// Callbacks from a Worker. Default implementations do nothing. They run on
// the engine thread or the flusher thread, never under a Worker lock, and
// must not call back into the Worker.
class LSTASH_EXPORT Listener {
 public:
  virtual ~Listener();
  virtual void OnRecoveryStart(WorkerId /*worker*/, Epoch /*epoch*/) {}
  virtual void OnRecoveryEnd(const RecoveryStats& /*stats*/) {}
  // A background (flush) error. It is sticky: the Worker reports it from
  // every later call as well.
  virtual void OnBackgroundError(const Status& /*status*/) {}
  // A new incarnation of `peer` was heard from, on the thread that called
  // Receive, before any frame for it is queued. An engine whose connection
  // may still reach the old process (paused, partitioned) reconnects now.
  virtual void OnPeerIncarnation(WorkerId /*peer*/, Epoch /*epoch*/) {}
};

struct WorkerOptions {
  WorkerId id = 0;
  std::uint32_t num_workers = 0;  // REQUIRES: id < num_workers

  Mode mode = Mode::kLineageStash;

  // f: how many peers each stash entry is forwarded to, at most. The job
  // then tolerates up to f workers failed at once. 0 means all peers.
  std::uint32_t max_forward = 0;

  // Cap on stash bytes. When full, Submit() waits for the flusher (up to
  // backpressure_timeout of real time, then kResourceExhausted); Receive()
  // drops task frames, which their senders resend.
  std::size_t max_stash_bytes = 64u << 20;
  std::int64_t backpressure_timeout_nanos = 5'000'000'000;

  // Task payloads up to this size travel inside the logged task record;
  // larger ones are kept by the sender until the receiver's checkpoint
  // covers them (sender-based message logging) and only their digest is
  // logged.
  std::size_t inline_payload_limit = 1024;

  // true: a background thread flushes the stash (group commit). false: the
  // engine calls Flush() itself (deterministic tests, custom threading).
  bool background_flush = true;
  std::size_t max_flush_batch = 4096;  // entries per store write
  // The background flusher writes at most this often (group commit), sooner
  // when the stash passes half its cap or someone waits in Sync().
  std::int64_t flush_interval_nanos = 1'000'000;

  // Unacknowledged frames are resent after this long (on Tick()).
  std::int64_t resend_after_nanos = 50'000'000;

  // Lease on this incarnation's log (Store::RenewLease), renewed by the
  // flusher every third of it. A store that enforces leases refuses this
  // incarnation's writes once the lease has run out (the Worker then reports
  // a sticky kFailedPrecondition). 0: no lease.
  std::int64_t lease_nanos = 0;

  Clock* clock = nullptr;          // nullptr: SystemClock()
  std::uint64_t random_seed = 0;   // live random values; 0: seeded from the OS
  Listener* listener = nullptr;    // optional

  Breakage breakage = Breakage::kNone;  // tests only

  // Crash testing only (empty: none; costs one branch per point). Called at
  // each FailurePoint, on the thread that reaches it -- the flusher thread
  // for kBeforeFlush/kAfterFlush/kMidCheckpoint when background_flush is
  // true, otherwise the engine thread -- and never under a Worker lock. A
  // crash test kills the process from it (e.g. raise(SIGKILL)) or records
  // the point. It must not call back into the Worker, except for the
  // thread-safe GetMetrics(), health() and recovering().
  std::function<void(FailurePoint)> failure_point_hook;
};

// A task handed to the engine by NextTask().
struct Task {
  TaskId id;
  WorkerId sender = 0;
  std::string payload;
  bool start = false;     // the worker's start task (see NextTask)
  bool replayed = false;  // re-executed from the log during recovery
};

// Bytes to deliver to worker `dest` (to its Worker::Receive).
struct Frame {
  WorkerId dest = 0;
  std::string bytes;
};

enum class Delivery : unsigned char {
  kQueued,     // a new task, now queued for NextTask()
  kDuplicate,  // a task already received or applied; dropped
  kControl,    // an acknowledgement or recovery message, consumed
  kDeferred,   // dropped for now (backpressure, recovery in progress,
               // out of order); the sender will resend it
  kStale,      // from a fenced incarnation, or addressed to one; dropped
};

// Counters a user can read at any time. Monotonic unless noted.
struct Metrics {
  std::uint64_t stash_entries = 0;  // now
  std::uint64_t stash_bytes = 0;    // now
  std::uint64_t stash_bytes_peak = 0;
  std::uint64_t outbox_messages = 0;  // now: sent, not yet released by receivers
  std::uint64_t outbox_bytes = 0;     // now
  std::uint64_t entries_logged = 0;
  std::uint64_t tasks_submitted = 0;
  std::uint64_t tasks_executed = 0;
  std::uint64_t frames_sent = 0;
  std::uint64_t frames_resent = 0;
  std::uint64_t piggybacked_entries = 0;  // over all task frames sent
  std::uint64_t piggybacked_bytes = 0;
  std::uint64_t task_frames = 0;          // task frames sent (for per-message averages)
  std::uint64_t duplicates_dropped = 0;
  std::uint64_t frames_deferred = 0;
  std::uint64_t frames_stale = 0;
  std::uint64_t frames_corrupt = 0;
  std::uint64_t corrupt_records = 0;  // read from the store and refused
  std::uint64_t flush_batches = 0;
  std::uint64_t flushed_entries = 0;
  std::uint64_t flush_nanos_total = 0;
  std::uint64_t flush_nanos_max = 0;
  std::uint64_t flush_retries = 0;
  std::uint64_t lineage_copies = 0;       // remote entries stored with our own that depend on them
  std::uint64_t commits = 0;              // own entries acknowledged by the store
  std::uint64_t evictions = 0;
  std::uint64_t backpressure_waits = 0;
  std::uint64_t checkpoints = 0;
  std::uint64_t recoveries = 0;
  std::uint64_t replayed_tasks = 0;
  std::uint64_t replayed_values = 0;
  std::int64_t last_recovery_nanos = 0;
  LogIndex log_end = 0;        // now
  LogIndex committed = 0;      // now
  bool recovering = false;     // now
};

// An engine's snapshot, handed to Worker::Checkpoint: its bytes, or -- for
// GiBs of (device) state -- its size and a writer the Worker calls later, on
// the thread that flushes (the background flusher, if enabled), so that
// gathering and encoding the state costs the engine thread nothing. The
// writer feeds exactly `size` bytes to `sink`, in order, straight into the
// store (RocksDB writes them as they come: the state is never one more host
// buffer). It is called once per attempt to store the checkpoint (again
// after the store asked for a retry; never if a newer checkpoint replaces
// this one first), must not call the Worker, and is destroyed once no
// longer needed, on that thread, freeing what it holds.
class LSTASH_EXPORT EngineSnapshot {
 public:
  using Sink = std::function<Status(std::string_view part)>;
  using Writer = std::function<Status(const Sink& sink)>;

  EngineSnapshot(std::string bytes);  // NOLINT: implicit, bytes are a snapshot
  EngineSnapshot(const char* bytes) : EngineSnapshot(std::string(bytes)) {}  // NOLINT
  EngineSnapshot(std::uint64_t size, Writer write);
  EngineSnapshot(EngineSnapshot&&) noexcept;
  EngineSnapshot& operator=(EngineSnapshot&&) noexcept;
  ~EngineSnapshot();

  std::uint64_t size() const { return size_; }
  // Feeds the bytes to `sink` (on every call). A writer's error is returned
  // as is; one that gives other than size() bytes is kInternal (and `sink`
  // never gets more than size()).
  Status WriteTo(const Sink& sink) const;
  // The bytes, whole (WriteTo into one string).
  Result<std::string> Bytes() const;

 private:
  std::uint64_t size_ = 0;
  std::string bytes_;
  Writer write_;
};

class LSTASH_EXPORT Worker {
 public:
  // Opens this worker's incarnation against `store` (not owned; must outlive
  // the Worker). If the store shows an earlier incarnation, the Worker starts
  // in recovery: it fences the old incarnation, loads the latest checkpoint
  // (see TakeRestoredSnapshot), and asks every peer not reported down (see
  // PeerDown) for the lineage they hold about it. Replay then runs through
  // NextTask() like live work.
  static Result<std::unique_ptr<Worker>> Open(const WorkerOptions& options, Store* store);

  virtual ~Worker();

  // 1. Submits a task with `payload` to worker `dest` (dest may be this
  // worker). REQUIRES: called while running a task (between NextTask
  // returning it and the next NextTask call), so replay regenerates it.
  virtual Result<TaskId> Submit(WorkerId dest, std::string_view payload) = 0;

  // 2. Handles a frame from the network. A frame that fails validation is
  // rejected with kCorruption and counted; nothing else changes.
  virtual Result<Delivery> Receive(std::string_view frame) = 0;
  // The same, for a frame whose sender the transport authenticated: a frame
  // claiming another sender is rejected (kCorruption, counted).
  virtual Result<Delivery> ReceiveFrom(WorkerId authenticated_sender, std::string_view frame) = 0;

  // 3. The next task to run, or nullopt if none is ready. Calling it ends the
  // task returned by the previous call. The first task of a worker's life is
  // its start task (Task::start): put bootstrapping there (seeding work,
  // opening sources) so that it is logged and replayed like any task.
  virtual Result<std::optional<Task>> NextTask() = 0;

  // 4. Nondeterministic values for the running task. REQUIRES: a task is
  // running.
  virtual Result<std::uint64_t> Random() = 0;
  virtual Result<std::int64_t> Now() = 0;  // wall-clock nanoseconds
  // A value the application declares nondeterministic (an input read, a
  // scheduling decision). Live, `produce` is called and its result logged;
  // in replay, the logged bytes are returned and `produce` is not called.
  virtual Result<std::string> Choose(const std::function<std::string()>& produce) = 0;

  // Frames to send now, in order. Call after every other call (it also
  // frees, on the engine thread, what the flusher evicted).
  virtual std::vector<Frame> TakeFrames() = 0;

  // Timers: resends unacknowledged frames (backing off, up to 16x
  // resend_after, for a message that stays unacknowledged), sends pending
  // acknowledgements, and re-asks peers while gathering lineage. Commit
  // progress reaches peers piggybacked on frames and through each worker's
  // own polls of the store.
  virtual void Tick() = 0;

  // Hands the library a snapshot of the engine's state as of now (after the
  // running task; ends it). Once it is durable, recovery starts from it and
  // the log before it is deleted. Asynchronous unless mode is kWriteFirst
  // (then a deferred snapshot is written inside this call). A deferred
  // snapshot whose writer fails fails the Worker, as a store error would
  // (with the writer's error; kAborted for its kUnavailable: not retried).
  virtual Status Checkpoint(EngineSnapshot snapshot) = 0;

  // The size of the engine snapshot a recovering worker must restore before
  // running tasks, or nullopt if recovery starts from the beginning (or the
  // snapshot was read). Open() reads only the checkpoint's own fields; the
  // snapshot stays in the store until it is read.
  virtual std::optional<std::uint64_t> restored_snapshot_bytes() const = 0;

  // Streams that snapshot into `sink`, in order, in parts of a few MiB read
  // from the store while `sink` handles the part before, so GiBs of (device)
  // state come back without a host copy of the whole. Once it returns OK the
  // snapshot has been read. kFailedPrecondition if there is none; kAborted if
  // a newer checkpoint replaced it; kCorruption if the store returns a part
  // that does not fit (counted in Metrics::corrupt_records); `sink`'s own
  // error as is. After an error it may be read again from its start.
  virtual Status ReadRestoredSnapshot(const std::function<Status(std::string_view part)>& sink) = 0;

  // The snapshot whole (read as ReadRestoredSnapshot does), or nullopt if
  // there is none.
  Result<std::optional<std::string>> TakeRestoredSnapshot();

  // Tells a recovering worker that `peer`'s incarnation is dead (or fenced),
  // so it does not wait for its reply.
  virtual void PeerDown(WorkerId peer) = 0;

  // With background_flush == false: writes one batch of stash entries (and a
  // pending checkpoint) to the store. Returns the number of entries written;
  // kUnavailable if the store is away for now (retry later; health() stays
  // OK); any other error is sticky. With background_flush == true it is a
  // no-op returning 0.
  virtual Result<std::size_t> Flush() = 0;

  // Blocks until every entry logged so far and any pending checkpoint are
  // committed, or `timeout_nanos` of real (steady-clock) time pass
  // (kDeadlineExceeded). With background_flush == false it flushes inline.
  virtual Status Sync(std::int64_t timeout_nanos) = 0;

  // True while recovering (gathering lineage or replaying the log).
  // Thread-safe, like health() and GetMetrics().
  virtual bool recovering() const = 0;
  virtual WorkerId id() const = 0;
  virtual Epoch epoch() const = 0;
  // The sticky error, if a background flush failed or replay diverged.
  virtual Status health() const = 0;
  virtual Metrics GetMetrics() const = 0;
};

}  // namespace lstash
