#include "core/worker_impl.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <future>
#include <random>

namespace lstash {

Listener::~Listener() = default;
Worker::~Worker() = default;

Result<std::optional<std::string>> Worker::TakeRestoredSnapshot() {
  const std::optional<std::uint64_t> size = restored_snapshot_bytes();
  if (!size) return std::optional<std::string>();
  std::string whole;
  whole.reserve(*size);
  LSTASH_RETURN_IF_ERROR(ReadRestoredSnapshot([&](std::string_view part) {
    whole.append(part);
    return Status::OK();
  }));
  return std::optional<std::string>(std::move(whole));
}

EngineSnapshot::EngineSnapshot(std::string bytes) : size_(bytes.size()), bytes_(std::move(bytes)) {}
EngineSnapshot::EngineSnapshot(std::uint64_t size, Writer write) : size_(size), write_(std::move(write)) {}
EngineSnapshot::EngineSnapshot(EngineSnapshot&&) noexcept = default;
EngineSnapshot& EngineSnapshot::operator=(EngineSnapshot&&) noexcept = default;
EngineSnapshot::~EngineSnapshot() = default;

Status EngineSnapshot::WriteTo(const Sink& sink) const {
  if (!write_) return bytes_.empty() ? Status::OK() : sink(bytes_);
  std::uint64_t given = 0;
  LSTASH_RETURN_IF_ERROR(write_([&](std::string_view part) {
    given += part.size();
    return given > size_ ? Status::OK() : sink(part);
  }));
  if (given != size_)
    return Status(Code::kInternal, "engine snapshot: its writer gave " + std::to_string(given) +
                                       " bytes, declared " + std::to_string(size_));
  return Status::OK();
}

Result<std::string> EngineSnapshot::Bytes() const {
  std::string whole;
  whole.reserve(size_);
  LSTASH_RETURN_IF_ERROR(WriteTo([&](std::string_view part) {
    whole.append(part);
    return Status::OK();
  }));
  return whole;
}

std::string_view ModeName(Mode mode) {
  switch (mode) {
    case Mode::kLineageStash: return "lineage-stash";
    case Mode::kWriteFirst: return "write-first";
    case Mode::kNone: return "none";
  }
  return "unknown";
}

std::string_view BreakageName(Breakage breakage) {
  switch (breakage) {
    case Breakage::kNone: return "none";
    case Breakage::kNoPiggyback: return "broken-no-piggyback";
    case Breakage::kNoEventLog: return "broken-no-event-log";
  }
  return "unknown";
}

std::optional<Mode> ParseMode(std::string_view name) {
  for (Mode m : {Mode::kLineageStash, Mode::kWriteFirst, Mode::kNone}) {
    if (name == ModeName(m)) return m;
  }
  return std::nullopt;
}

std::optional<Breakage> ParseBreakage(std::string_view name) {
  for (Breakage b : {Breakage::kNone, Breakage::kNoPiggyback, Breakage::kNoEventLog}) {
    if (name == BreakageName(b)) return b;
  }
  return std::nullopt;
}

std::string_view FailurePointName(FailurePoint p) {
  switch (p) {
    case FailurePoint::kBeforeFlush: return "before-flush";
    case FailurePoint::kAfterFlush: return "after-flush";
    case FailurePoint::kMidForward: return "mid-forward";
    case FailurePoint::kMidRecovery: return "mid-recovery";
    case FailurePoint::kMidCheckpoint: return "mid-checkpoint";
  }
  return "unknown";
}

std::optional<FailurePoint> ParseFailurePoint(std::string_view name) {
  for (FailurePoint p : {FailurePoint::kBeforeFlush, FailurePoint::kAfterFlush, FailurePoint::kMidForward,
                         FailurePoint::kMidRecovery, FailurePoint::kMidCheckpoint}) {
    if (name == FailurePointName(p)) return p;
  }
  return std::nullopt;
}

Result<std::unique_ptr<Worker>> Worker::Open(const WorkerOptions& options, Store* store) {
  if (store == nullptr) return InvalidArgument("Worker::Open: store is null");
  if (options.num_workers == 0 || options.num_workers > core::kMaxWorkers) {
    return InvalidArgument("Worker::Open: num_workers must be 1.." + std::to_string(core::kMaxWorkers) + ", got " +
                           std::to_string(options.num_workers));
  }
  if (options.id >= options.num_workers) {
    return InvalidArgument("Worker::Open: id " + std::to_string(options.id) + " is not below num_workers " +
                           std::to_string(options.num_workers));
  }
  if (options.max_flush_batch == 0) return InvalidArgument("Worker::Open: max_flush_batch must be positive");
  auto w = std::make_unique<core::WorkerImpl>(options, store);
  LSTASH_RETURN_IF_ERROR(w->Init());
  return std::unique_ptr<Worker>(std::move(w));
}

namespace core {

namespace {

constexpr std::size_t kMaxHeldFrames = 4096;
constexpr std::size_t kMaxEarlyFrames = 1024;  // per channel
constexpr std::size_t kMaxResendsPerTick = 1024;
// A resend of a large message waits at least as long as the receiver needs
// to take it in and act on it, at this many nanoseconds per payload byte
// (10: 100 MB/s), so a 25 MB chunk is not resent every backoff period
// while its receiver is still busy with the last one.
constexpr std::int64_t kResendNanosPerPayloadByte = 10;
// Recovery reads a checkpoint's fields in one part of this (more only for a
// long outbox), and a snapshot too large to come with them in parts of this.
constexpr std::uint64_t kCheckpointHeadBytes = 1 << 20;
constexpr std::uint64_t kSnapshotPartBytes = 8 << 20;

std::uint64_t SplitMix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::string U64Bytes(std::uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

std::uint64_t BytesU64(std::string_view s) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8 && i < s.size(); ++i) v |= std::uint64_t(static_cast<unsigned char>(s[i])) << (8 * i);
  return v;
}

std::string_view ValueKindName(wire::ValueKind k) {
  switch (k) {
    case wire::ValueKind::kRandom: return "Random";
    case wire::ValueKind::kNow: return "Now";
    case wire::ValueKind::kChoice: return "Choose";
  }
  return "?";
}

}  // namespace

class WorkerImpl::Locked {
 public:
  explicit Locked(const WorkerImpl* w) : w_(const_cast<WorkerImpl*>(w)), lock_(w_->mu_) {}
  ~Locked() {
    auto callbacks = std::move(w_->callbacks_);
    w_->callbacks_.clear();
    lock_.unlock();
    for (auto& cb : callbacks) cb();
  }
  std::unique_lock<std::mutex>& lock() { return lock_; }

 private:
  WorkerImpl* w_;
  std::unique_lock<std::mutex> lock_;
};

WorkerImpl::WorkerImpl(const WorkerOptions& options, Store* store)
    : options_(options),
      store_(store),
      clock_(options.clock ? options.clock : SystemClock()),
      n_(options.num_workers),
      stash_(options.id, options.num_workers, std::min(options.max_forward, options.num_workers)),
      known_wm_(options.num_workers, 0),
      frontier_(options.num_workers),
      peers_(options.num_workers),
      out_(options.num_workers),
      in_(options.num_workers),
      payloads_needed_(options.num_workers) {
  for (WorkerId w = 0; w < n_; ++w) frontier_[w].owner = w;
  for (auto& ch : out_) ch.wm_sent.assign(n_, 0);
}

WorkerImpl::~WorkerImpl() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  flush_cv_.notify_all();
  commit_cv_.notify_all();
  if (flusher_.joinable()) flusher_.join();
}

Status WorkerImpl::Init() {
  Locked lock(this);
  auto epoch = store_->BeginIncarnation(options_.id);
  if (!epoch.ok()) return epoch.status().WithContext("worker " + std::to_string(options_.id) + ": begin incarnation");
  epoch_ = *epoch;
  if (options_.lease_nanos > 0) {
    LSTASH_RETURN_IF_ERROR(store_->RenewLease(options_.id, epoch_, options_.lease_nanos).WithContext("taking the lease"));
    lease_renewed_at_ = MonoNow();
  }

  for (WorkerId w = 0; w < n_; ++w) {
    auto epochs = store_->Epochs(w);
    if (!epochs.ok()) return epochs.status().WithContext("reading incarnations of worker " + std::to_string(w));
    peers_[w].epochs = std::move(*epochs);
  }
  std::vector<WorkerId> all(n_);
  for (WorkerId w = 0; w < n_; ++w) all[w] = w;
  LSTASH_RETURN_IF_ERROR(store_->ReadCommitted(all, known_wm_));
  committed_ = flushed_upto_ = known_wm_[options_.id];

  rng_state_ = options_.random_seed != 0 ? options_.random_seed : std::random_device{}() * 0x100000001ull;
  rng_state_ ^= (std::uint64_t{options_.id} << 32) ^ (epoch_ * 0x9e3779b97f4a7c15ull);

  if (epoch_ == 1 || options_.mode == Mode::kNone) {
    // A new worker (or one without fault tolerance) starts from nothing.
    epoch_start_ = committed_ + 1;
    LSTASH_RETURN_IF_ERROR(store_->SetEpochStart(options_.id, epoch_, epoch_start_));
    peers_[options_.id].epochs.back().start = epoch_start_;
    log_end_ = position_ = committed_;
    inbox_.push_back(QueuedTask{TaskId{options_.id, 0}, 0, {}, {}, true});
  } else {
    LSTASH_RETURN_IF_ERROR(StartRecovery());
  }

  if (options_.background_flush && lineage_mode()) flusher_ = std::thread([this] { FlusherLoop(); });
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Small helpers

Status WorkerImpl::CheckUsable() const { return health_; }

void WorkerImpl::SetSticky(const Status& s) {
  if (!health_.ok() || s.ok()) return;
  health_ = s;
  spdlog::error("lstash worker {} (epoch {}): {}", options_.id, epoch_, s.ToString());
  if (options_.listener) {
    Listener* l = options_.listener;
    callbacks_.push_back([l, s] { l->OnBackgroundError(s); });
  }
  commit_cv_.notify_all();
}

wire::FrameHeader WorkerImpl::Header(wire::FrameKind kind, WorkerId dest) const {
  wire::FrameHeader h;
  h.kind = kind;
  h.sender = options_.id;
  h.sender_epoch = epoch_;
  h.sender_epoch_start = epoch_start_;
  h.dest = dest;
  h.dest_epoch = peers_[dest].current();
  return h;
}

void WorkerImpl::Queue(WorkerId dest, std::string bytes) {
  frames_.push_back(Frame{dest, std::move(bytes)});
  ++metrics_.frames_sent;
}

Status WorkerImpl::health() const {
  std::lock_guard<std::mutex> lock(mu_);
  return health_;
}

bool WorkerImpl::recovering() const {
  std::lock_guard<std::mutex> lock(mu_);
  return phase_ != Phase::kLive;
}

Metrics WorkerImpl::GetMetrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  Metrics m = metrics_;
  m.stash_entries = stash_.entries();
  m.stash_bytes = stash_.bytes();
  m.log_end = log_end_;
  m.committed = committed_;
  m.recovering = phase_ != Phase::kLive;
  m.outbox_messages = 0;
  m.outbox_bytes = 0;
  for (const auto& ch : out_) {
    m.outbox_messages += ch.outbox.size();
    for (const auto& om : ch.outbox) m.outbox_bytes += om.msg.payload.size();
  }
  return m;
}

// A synchronous store call (write-first mode) retried while the store says
// kUnavailable: a few times at once, then with growing pauses, up to the
// backpressure timeout.
Status WorkerImpl::RetryUnavailable(const std::function<Status()>& call) {
  const std::int64_t deadline = MonoNow() + options_.backpressure_timeout_nanos;
  std::int64_t pause_micros = 100;
  for (int attempt = 0;; ++attempt) {
    Status s = call();
    if (s.code() != Code::kUnavailable) return s;
    ++metrics_.flush_retries;
    // The refusal may be a lapsed lease (the engine thread, which renews it
    // in this mode, was held up): renew it; a fenced incarnation stops here.
    if (options_.lease_nanos > 0) {
      Status renewed = store_->RenewLease(options_.id, epoch_, options_.lease_nanos);
      if (!renewed.ok() && renewed.code() != Code::kUnavailable) return renewed.WithContext("renewing the lease");
      if (renewed.ok()) lease_renewed_at_ = MonoNow();
    }
    if (MonoNow() >= deadline) return s.WithContext("store unavailable past the backpressure timeout");
    if (attempt >= 4) {
      std::this_thread::sleep_for(std::chrono::microseconds(pause_micros));
      pause_micros = std::min<std::int64_t>(pause_micros * 2, 100'000);
    }
  }
}

// ---------------------------------------------------------------------------
// The log

Status WorkerImpl::AppendOwn(wire::LogEntry& entry) {
  entry.owner = options_.id;
  entry.epoch = epoch_;
  entry.index = log_end_ + 1;
  EntryPtr e = MakeEntry(entry);
  if (options_.mode == Mode::kWriteFirst) {
    LogRecord record{e->entry.index, e->bytes};
    Status s = RetryUnavailable(
        [&] { return store_->Append(options_.id, epoch_, std::span<const LogRecord>(&record, 1), {}); });
    if (!s.ok()) {
      SetSticky(s.WithContext("write-first append"));
      return health_;
    }
    committed_ = flushed_upto_ = known_wm_[options_.id] = e->entry.index;
    ++metrics_.commits;
  } else {
    stash_.AppendOwn(e);
    metrics_.stash_bytes_peak = std::max<std::uint64_t>(metrics_.stash_bytes_peak, stash_.bytes());
    if (stash_.bytes() > options_.max_stash_bytes / 2) WakeFlusher();
  }
  log_end_ = position_ = e->entry.index;
  position_epoch_ = epoch_;
  ++metrics_.entries_logged;
  return Status::OK();
}

void WorkerImpl::MergeFrontier(const std::vector<wire::Dep>& deps) {
  for (const auto& d : deps) {
    if (d.owner < n_ && d.owner != options_.id && d.index > frontier_[d.owner].index) frontier_[d.owner] = d;
  }
}

void WorkerImpl::ExecuteBookkeeping(WorkerId sender, std::uint64_t channel_seq, LogIndex index,
                                    bool needs_checkpoint) {
  InChannel& in = in_[sender];
  in.executed = channel_seq;
  if (options_.mode != Mode::kNone) in.unstable.push_back(Unstable{channel_seq, index, needs_checkpoint});
  ++metrics_.tasks_executed;
  if (options_.mode == Mode::kWriteFirst) ReleaseStable();
}

Status WorkerImpl::EndTask() {
  if (!in_task_) return Status::OK();
  in_task_ = false;
  if (phase_ == Phase::kReplaying && replay_cursor_ < replay_log_.size() &&
      replay_log_[replay_cursor_]->entry.kind == wire::EntryKind::kValue) {
    const auto& e = replay_log_[replay_cursor_]->entry;
    SetSticky(Diverged("replayed task ended before drawing the logged " + std::string(ValueKindName(e.value_kind)) +
                       " value at log index " + std::to_string(e.index) +
                       ": the task is not deterministic given its logged events"));
    return health_;
  }
  return Status::OK();
}

Result<std::optional<Task>> WorkerImpl::NextTask() {
  Locked lock(this);
  LSTASH_RETURN_IF_ERROR(CheckUsable());
  LSTASH_RETURN_IF_ERROR(EndTask());
  if (phase_ == Phase::kGathering) return std::optional<Task>();

  if (phase_ == Phase::kReplaying) {
    if (replay_cursor_ == replay_log_.size()) {
      FinishReplay();
    } else {
      const EntryPtr& ep = replay_log_[replay_cursor_];
      const wire::LogEntry& e = ep->entry;
      if (e.kind != wire::EntryKind::kExecute) {
        SetSticky(Diverged("log index " + std::to_string(e.index) + " holds a value where a task was expected"));
        return health_;
      }
      Task task;
      task.id = e.task;
      task.sender = e.task.submitter;
      task.start = e.start;
      task.replayed = true;
      if (e.payload_inline) {
        task.payload = e.payload;
      } else {
        auto it = replay_payloads_.find({e.task.submitter, e.channel_seq});
        if (it == replay_payloads_.end()) {  // its sender will resend it
          spdlog::debug("w{}: replay waits for the payload of {} (channel {})", options_.id, ToString(e.task),
                        e.channel_seq);
          return std::optional<Task>();
        }
        if (it->second.size() != e.payload_size || wire::Digest(it->second) != e.payload_digest) {
          SetSticky(DataLoss("payload of task " + ToString(e.task) + " resent by its sender does not match the logged digest"));
          return health_;
        }
        task.payload = std::move(it->second);
        replay_payloads_.erase(it);
      }
      if (replay_cursor_++ == 0) QueueFailurePoint(FailurePoint::kMidRecovery);
      position_ = e.index;
      position_epoch_ = e.epoch;
      MergeFrontier(e.deps);
      if (!e.start) ExecuteBookkeeping(e.task.submitter, e.channel_seq, e.index, !e.payload_inline);
      ReleaseStable();
      ++metrics_.replayed_tasks;
      ++recovery_.tasks_replayed;
      in_task_ = true;
      return std::optional<Task>(std::move(task));
    }
  }

  if (inbox_.empty()) return std::optional<Task>();
  QueuedTask q = std::move(inbox_.front());
  inbox_.pop_front();
  const bool large = q.payload.size() > options_.inline_payload_limit;
  LogIndex index = log_end_ + 1;
  MergeFrontier(q.deps);
  if (logging()) {
    wire::LogEntry e;
    e.kind = wire::EntryKind::kExecute;
    e.task = q.id;
    e.channel_seq = q.channel_seq;
    e.start = q.start;
    e.deps = std::move(q.deps);
    if (large) {
      e.payload_inline = false;
      e.payload_size = q.payload.size();
      e.payload_digest = wire::Digest(q.payload);
    } else {
      e.payload = std::move(q.payload);  // lent to the encoder, taken back below
    }
    LSTASH_RETURN_IF_ERROR(AppendOwn(e));
    if (!large) q.payload = std::move(e.payload);
  } else {
    index = ~LogIndex{0};  // never stable through the log
  }
  if (!q.start) ExecuteBookkeeping(q.id.submitter, q.channel_seq, index, large || !logging());
  in_task_ = true;
  Task task;
  task.id = q.id;
  task.sender = q.id.submitter;
  task.payload = std::move(q.payload);
  task.start = q.start;
  return std::optional<Task>(std::move(task));
}

void WorkerImpl::FinishReplay() {
  phase_ = Phase::kLive;
  replay_log_.clear();
  replay_cursor_ = 0;
  replay_payloads_.clear();
  for (auto& needed : payloads_needed_) needed.clear();
  recovery_.total_nanos = MonoNow() - recovery_began_;
  metrics_.last_recovery_nanos = recovery_.total_nanos;
  ++metrics_.recoveries;
  if (start_pending_) {
    start_pending_ = false;
    inbox_.push_front(QueuedTask{TaskId{options_.id, 0}, 0, {}, {}, true});
  }
  if (options_.listener) {
    Listener* l = options_.listener;
    RecoveryStats stats = recovery_;
    callbacks_.push_back([l, stats] { l->OnRecoveryEnd(stats); });
  }
}

// Returns a logged value if the running task is being replayed.
Status WorkerImpl::ReplayValue(wire::ValueKind kind, std::string* out, bool* replayed) {
  *replayed = false;
  if (phase_ != Phase::kReplaying) return Status::OK();
  if (replay_cursor_ == replay_log_.size()) {
    FinishReplay();  // the log ends inside this task: the rest of it runs live
    return Status::OK();
  }
  const wire::LogEntry& e = replay_log_[replay_cursor_]->entry;
  if (e.kind != wire::EntryKind::kValue) {
    SetSticky(Diverged("replayed task drew a " + std::string(ValueKindName(kind)) +
                       " value its log does not hold (log index " + std::to_string(e.index) + " is the next task)"));
    return health_;
  }
  if (e.value_kind != kind) {
    SetSticky(Diverged("replayed task drew a " + std::string(ValueKindName(kind)) + " value where its log holds a " +
                       std::string(ValueKindName(e.value_kind)) + " value (log index " + std::to_string(e.index) +
                       ")"));
    return health_;
  }
  *out = e.value;
  *replayed = true;
  ++replay_cursor_;
  position_ = e.index;
  position_epoch_ = e.epoch;
  ++metrics_.replayed_values;
  return Status::OK();
}

Status WorkerImpl::LogValue(wire::ValueKind kind, std::string& value) {
  if (!logging()) return Status::OK();
  wire::LogEntry e;
  e.kind = wire::EntryKind::kValue;
  e.value_kind = kind;
  e.value = std::move(value);  // lent to the encoder, taken back below
  Status s = AppendOwn(e);
  value = std::move(e.value);
  return s;
}

Result<std::string> WorkerImpl::ObtainValue(wire::ValueKind kind, const std::function<std::string()>& produce) {
  {
    Locked lock(this);
    LSTASH_RETURN_IF_ERROR(CheckUsable());
    if (!in_task_) return FailedPrecondition("nondeterministic values may only be drawn while a task runs");
    std::string value;
    bool replayed = false;
    LSTASH_RETURN_IF_ERROR(ReplayValue(kind, &value, &replayed));
    if (replayed) return value;
    if (kind != wire::ValueKind::kChoice) {
      const std::uint64_t v = kind == wire::ValueKind::kRandom ? SplitMix(rng_state_)
                                                               : static_cast<std::uint64_t>(clock_->WallNanos());
      value = U64Bytes(v);
      LSTASH_RETURN_IF_ERROR(LogValue(kind, value));
      return value;
    }
  }
  // A declared choice: the application's producer runs without our lock.
  std::string value = produce();
  Locked lock(this);
  LSTASH_RETURN_IF_ERROR(CheckUsable());
  LSTASH_RETURN_IF_ERROR(LogValue(kind, value));
  return value;
}

Result<std::uint64_t> WorkerImpl::Random() {
  auto v = ObtainValue(wire::ValueKind::kRandom, nullptr);
  if (!v.ok()) return v.status();
  return BytesU64(*v);
}

Result<std::int64_t> WorkerImpl::Now() {
  auto v = ObtainValue(wire::ValueKind::kNow, nullptr);
  if (!v.ok()) return v.status();
  return static_cast<std::int64_t>(BytesU64(*v));
}

Result<std::string> WorkerImpl::Choose(const std::function<std::string()>& produce) {
  if (!produce) return InvalidArgument("Choose: produce is empty");
  return ObtainValue(wire::ValueKind::kChoice, produce);
}

// ---------------------------------------------------------------------------
// Sending

std::vector<wire::Dep> WorkerImpl::CurrentDeps() const {
  std::vector<wire::Dep> deps;
  for (WorkerId w = 0; w < n_; ++w) {
    if (w == options_.id) {
      if (position_ > known_wm_[w]) deps.push_back(wire::Dep{w, position_epoch_, position_});
    } else if (frontier_[w].index > known_wm_[w]) {
      deps.push_back(frontier_[w]);
    }
  }
  return deps;
}

std::vector<wire::Watermark> WorkerImpl::WatermarkDelta(WorkerId dest) {
  std::vector<wire::Watermark> out;
  auto& sent = out_[dest].wm_sent;
  for (WorkerId w = 0; w < n_; ++w) {
    if (known_wm_[w] > sent[w]) {
      out.push_back(wire::Watermark{w, known_wm_[w]});
      sent[w] = known_wm_[w];
    }
  }
  return out;
}

void WorkerImpl::SendTask(WorkerId dest, OutMsg& m) {
  std::vector<std::string_view>& entries = scratch_views_;
  entries.clear();
  std::uint64_t piggy_bytes = 0;
  if (dest != options_.id && lineage_mode() && options_.breakage != Breakage::kNoPiggyback) {
    const std::uint64_t generation = out_[dest].generation;
    if (m.piggyback_generation != generation) {
      m.piggyback.clear();
      stash_.SelectForPeer(dest, &m.piggyback);
      m.piggyback_generation = generation;
    }
    entries.reserve(m.piggyback.size());
    for (const auto& e : m.piggyback) {
      if (e->entry.index <= known_wm_[e->entry.owner]) continue;  // committed since: no need
      entries.push_back(e->bytes);
      piggy_bytes += e->bytes.size();
    }
  }
  std::vector<wire::Watermark> wms;
  if (dest != options_.id && options_.mode != Mode::kNone) wms = WatermarkDelta(dest);
  std::string bytes;
  // The frame also acknowledges the channel the other way.
  in_[dest].ack_due = false;
  wire::EncodeTaskFrame(Header(wire::FrameKind::kTask, dest), m.msg.id.seq, m.msg.channel_seq,
                        ReportedDelivered(dest), in_[dest].released, m.msg.payload, m.msg.deps, entries, wms, &bytes);
  if (spdlog::should_log(spdlog::level::trace)) {
    std::string list;
    for (const auto& e : m.piggyback) list += " " + std::to_string(e->entry.owner) + ":" + std::to_string(e->entry.index);
    spdlog::trace("w{} -> w{} task {} cs {} piggyback{}", options_.id, dest, ToString(m.msg.id), m.msg.channel_seq, list);
  }
  if (m.last_sent != 0) {
    ++metrics_.frames_resent;
    ++m.resends;
  }
  m.last_sent = MonoNow();
  ++metrics_.task_frames;
  metrics_.piggybacked_entries += entries.size();
  metrics_.piggybacked_bytes += piggy_bytes;
  Queue(dest, std::move(bytes));
  if (!entries.empty()) QueueFailurePoint(FailurePoint::kMidForward);
}

Result<TaskId> WorkerImpl::Submit(WorkerId dest, std::string_view payload) {
  Locked lock(this);
  LSTASH_RETURN_IF_ERROR(CheckUsable());
  if (dest >= n_) return InvalidArgument("Submit: no worker " + std::to_string(dest) + " (job has " + std::to_string(n_) + ")");
  if (!in_task_) {
    return FailedPrecondition("Submit outside a running task: replay could not regenerate it "
                              "(put bootstrapping work in the start task)");
  }
  if (lineage_mode() && stash_.bytes() > options_.max_stash_bytes) {
    ++metrics_.backpressure_waits;
    auto full = [&] { return stash_.bytes() > options_.max_stash_bytes && health_.ok() && !stop_; };
    if (options_.background_flush) {
      WakeFlusher();
      auto deadline = std::chrono::nanoseconds(options_.backpressure_timeout_nanos);
      commit_cv_.wait_for(lock.lock(), deadline, [&] { return !full(); });
    }
    LSTASH_RETURN_IF_ERROR(CheckUsable());
    if (full()) {
      return ResourceExhausted("stash holds " + std::to_string(stash_.bytes()) + " bytes, over its cap of " +
                               std::to_string(options_.max_stash_bytes) +
                               (options_.background_flush ? " after waiting for the flusher" : "; call Flush()"));
    }
  }
  TaskId id{options_.id, next_seq_++};
  OutChannel& ch = out_[dest];
  OutMsg m;
  m.msg.dest = dest;
  m.msg.id = id;
  m.msg.channel_seq = ch.next_seq++;
  m.msg.payload.assign(payload);
  ++metrics_.tasks_submitted;
  if (options_.mode == Mode::kNone) {
    SendTask(dest, m);
    return id;
  }
  m.msg.deps = CurrentDeps();
  if (phase_ == Phase::kReplaying) {
    // Regenerating a message sent before the crash: skip what dest consumed
    // for good, keep without sending what it already has.
    if (m.msg.channel_seq <= ch.released) return id;
    if (m.msg.channel_seq <= ch.delivered) {
      ch.outbox.push_back(std::move(m));
      return id;
    }
  }
  SendTask(dest, m);
  ch.outbox.push_back(std::move(m));
  return id;
}

void WorkerImpl::ResendUnacknowledged(WorkerId dest, bool all_now) {
  OutChannel& ch = out_[dest];
  const std::int64_t now = MonoNow();
  std::size_t sent = 0;
  for (auto& m : ch.outbox) {
    if (m.msg.channel_seq <= ch.delivered) continue;
    // Back off a message that keeps going unacknowledged (x2 per resend, up
    // to x16): its receiver may be busy recovering.
    const std::int64_t first_wait = std::max(options_.resend_after_nanos,
                                             static_cast<std::int64_t>(m.msg.payload.size()) * kResendNanosPerPayloadByte);
    const std::int64_t wait = first_wait << std::min<std::uint32_t>(m.resends, 4);
    if (!all_now && m.last_sent != 0 && now - m.last_sent < wait) continue;
    if (++sent > kMaxResendsPerTick) break;
    SendTask(dest, m);
  }
}

std::vector<Frame> WorkerImpl::TakeFrames() {
  std::vector<EntryPtr> evicted;  // freed on this (the engine's) thread, after the lock
  Locked lock(this);
  evicted = stash_.TakeEvicted();
  return std::move(frames_);
}

// Acknowledgements ride on task frames going back; a channel with no traffic
// back is acknowledged here, at most once per tick (like a delayed ACK).
void WorkerImpl::SendDueAcks() {
  for (WorkerId s = 0; s < n_; ++s) {
    InChannel& in = in_[s];
    if (!in.ack_due) continue;
    in.ack_due = false;
    std::string bytes;
    auto wms = s == options_.id ? std::vector<wire::Watermark>() : WatermarkDelta(s);
    wire::EncodeAckFrame(Header(wire::FrameKind::kAck, s), ReportedDelivered(s), in.released, wms, &bytes);
    Queue(s, std::move(bytes));
  }
}

void WorkerImpl::Tick() {
  // Without a flusher thread (write-first), the engine's ticks keep the lease.
  if (!(lineage_mode() && options_.background_flush)) RenewLeaseIfDue();
  Locked lock(this);
  if (options_.mode == Mode::kNone || !health_.ok()) return;
  SendDueAcks();
  for (WorkerId d = 0; d < n_; ++d) ResendUnacknowledged(d, false);
  const std::int64_t now = MonoNow();
  if (phase_ == Phase::kGathering && now - last_request_sent_ >= options_.resend_after_nanos) {
    for (WorkerId p : awaiting_) {
      std::string bytes;
      wire::EncodeHeaderOnlyFrame(Header(wire::FrameKind::kRecoveryRequest, p), &bytes);
      Queue(p, std::move(bytes));
    }
    last_request_sent_ = now;
  }
  PollUnsettledEpochs(now);
}

void WorkerImpl::PollUnsettledEpochs(std::int64_t now) {
  if (unsettled_.empty() || now - last_unsettled_poll_ < options_.resend_after_nanos) return;
  last_unsettled_poll_ = now;
  for (auto it = unsettled_.begin(); it != unsettled_.end();) {
    const WorkerId w = *it;
    auto epochs = store_->Epochs(w);
    if (!epochs.ok() || epochs->empty()) {
      ++it;  // only a hint; the next tick asks again
      continue;
    }
    if (epochs->back().epoch > peers_[w].current()) {
      LearnEpoch(w, epochs->back().epoch);  // superseded meanwhile: learn the newest, with the history
    } else if (epochs->back().start != 0) {
      LearnEpochStart(w, epochs->back().epoch, epochs->back().start);
    }
    const auto& known = peers_[w].epochs;
    it = known.empty() || known.back().start != 0 ? unsettled_.erase(it) : std::next(it);
  }
}

// ---------------------------------------------------------------------------
// Commit progress

void WorkerImpl::AdvanceWatermark(WorkerId owner, LogIndex committed) {
  if (committed <= known_wm_[owner]) return;
  spdlog::trace("w{}: watermark of w{} now {}", options_.id, owner, committed);
  known_wm_[owner] = committed;
  if (owner != options_.id) metrics_.evictions += stash_.EvictRemote(owner, committed);
}

void WorkerImpl::MergeWatermarks(std::span<const wire::Watermark> wms) {
  bool any = false;
  for (const auto& wm : wms) {
    if (wm.owner == options_.id) continue;  // our own comes from the store
    if (wm.committed > known_wm_[wm.owner]) {
      AdvanceWatermark(wm.owner, wm.committed);
      any = true;
    }
  }
  if (any) commit_cv_.notify_all();
}

void WorkerImpl::ReleaseStable() {
  for (WorkerId s = 0; s < n_; ++s) {
    InChannel& in = in_[s];
    while (!in.unstable.empty()) {
      const Unstable& u = in.unstable.front();
      bool stable = u.index <= checkpoint_durable_at_ || (!u.needs_checkpoint && u.index <= committed_);
      if (!stable) break;
      in.released = u.channel_seq;
      in.ack_due = true;
      in.unstable.pop_front();
    }
  }
}

std::uint64_t WorkerImpl::ReportedDelivered(WorkerId sender) const {
  const auto& needed = payloads_needed_[sender];
  return needed.empty() ? in_[sender].delivered : std::min(in_[sender].delivered, *needed.begin() - 1);
}

void WorkerImpl::TrimOutbox(WorkerId dest) {
  OutChannel& ch = out_[dest];
  while (!ch.outbox.empty() && ch.outbox.front().msg.channel_seq <= ch.released) {
    for (const auto& e : ch.outbox.front().piggyback) stash_.ConfirmForward(e, dest);
    ch.outbox.pop_front();
  }
  // Delivered messages: their lineage is now held by dest. Start after the
  // last one already handled, so an ack costs what it acknowledges.
  auto it = std::partition_point(ch.outbox.begin(), ch.outbox.end(),
                                 [&](const OutMsg& m) { return m.msg.channel_seq <= ch.confirmed; });
  for (; it != ch.outbox.end() && it->msg.channel_seq <= ch.delivered; ++it) {
    for (const auto& e : it->piggyback) stash_.ConfirmForward(e, dest);
    it->piggyback.clear();
    ch.confirmed = it->msg.channel_seq;
  }
}

// ---------------------------------------------------------------------------
// Incarnations

WorkerImpl::Validity WorkerImpl::CheckLineage(WorkerId owner, Epoch epoch, LogIndex index) const {
  const auto& epochs = peers_[owner].epochs;
  for (std::size_t i = 0; i < epochs.size(); ++i) {
    const EpochRecord& r = epochs[i];
    if (r.epoch <= epoch) continue;
    if (owner == options_.id && r.epoch == epoch_ && phase_ == Phase::kGathering) continue;  // ourselves, deciding
    if (r.start == 0) {
      if (i + 1 == epochs.size()) return Validity::kUnknown;  // still gathering its lineage
      continue;  // superseded before it began: it wrote nothing
    }
    if (index >= r.start) return Validity::kInvalid;  // a branch the later incarnation did not keep
  }
  return Validity::kValid;
}

void WorkerImpl::LearnEpoch(WorkerId w, Epoch e) {
  if (w == options_.id) {
    SetSticky(FailedPrecondition("worker " + std::to_string(w) + " incarnation " + std::to_string(epoch_) +
                                 " is fenced: incarnation " + std::to_string(e) + " has replaced it"));
    return;
  }
  const Epoch previous = peers_[w].current();
  spdlog::trace("w{}: learns w{} is at epoch {} (was {}), outbox {}", options_.id, w, e, previous, out_[w].outbox.size());
  // The store has the authoritative history, including where superseded
  // incarnations started.
  auto epochs = store_->Epochs(w);
  if (epochs.ok() && !epochs->empty() && epochs->back().epoch >= e) {
    peers_[w].epochs = std::move(*epochs);
  } else {
    peers_[w].epochs.push_back(EpochRecord{e, 0});
  }
  if (previous == 0 && peers_[w].current() == 1) return;  // its first incarnation, which we addressed as epoch 0
  if (options_.listener) {
    Listener* l = options_.listener;
    callbacks_.push_back([l, w, e] { l->OnPeerIncarnation(w, e); });
  }
  // The new incarnation lost its stash and its inbox.
  stash_.ForgetPeer(w);
  OutChannel& ch = out_[w];
  ++ch.generation;
  ch.delivered = 0;
  ch.confirmed = 0;
  std::fill(ch.wm_sent.begin(), ch.wm_sent.end(), 0);
  for (auto& m : ch.outbox) m.last_sent = m.resends = 0;
  in_[w].ack_due = true;
  in_[w].early.clear();  // from the dead incarnation
  awaiting_.erase(w);  // its old incarnation will never answer; the new one holds none of our lineage
  if (phase_ == Phase::kGathering && awaiting_.empty()) CompleteGather();
}

void WorkerImpl::LearnEpochStart(WorkerId w, Epoch e, LogIndex start) {
  if (w == options_.id) return;
  auto& epochs = peers_[w].epochs;
  if (epochs.empty() || epochs.back().epoch != e || epochs.back().start != 0) return;
  epochs.back().start = start;
  metrics_.evictions += stash_.DropRemoteIf(w, [&](const wire::LogEntry& x) { return x.epoch < e && x.index >= start; });
}

// ---------------------------------------------------------------------------
// Receiving

// Every worker a frame names must belong to the job.
Status WorkerImpl::CheckWorkerIds(const wire::DecodedFrame& f) const {
  auto outside = [&](WorkerId w, const char* what) {
    return Corruption(std::string("frame from worker ") + std::to_string(f.header.sender) + " names " + what +
                      " of worker " + std::to_string(w) + ", outside the " + std::to_string(n_) + "-worker job");
  };
  for (const auto& we : f.entries) {
    if (we.entry.owner >= n_) return outside(we.entry.owner, "a log entry");
    if (we.entry.kind == wire::EntryKind::kExecute && we.entry.task.submitter >= n_) {
      return outside(we.entry.task.submitter, "a task");
    }
  }
  for (const auto& d : f.deps) {
    if (d.owner >= n_) return outside(d.owner, "a dependency");
  }
  for (const auto& w : f.watermarks) {
    if (w.owner >= n_) return outside(w.owner, "a watermark");
  }
  return Status::OK();
}

// A peer that has not heard of our first incarnation yet addresses epoch 0.
bool WorkerImpl::AddressedToUs(const wire::FrameHeader& h) const {
  return h.dest_epoch == epoch_ || (epoch_ == 1 && h.dest_epoch == 0);
}

Result<Delivery> WorkerImpl::ReceiveImpl(std::string_view bytes, std::optional<WorkerId> authenticated_sender) {
  Locked lock(this);
  LSTASH_RETURN_IF_ERROR(CheckUsable());
  wire::DecodedFrame& f = decode_scratch_;  // reused: its vectors keep their capacity
  Status s = wire::DecodeFrame(bytes, &f);
  if (s.ok() && (f.header.dest != options_.id || f.header.sender >= n_)) {
    s = Corruption("frame from worker " + std::to_string(f.header.sender) + " addressed to worker " +
                   std::to_string(f.header.dest) + " arrived at worker " + std::to_string(options_.id) + " of " +
                   std::to_string(n_));
  }
  if (s.ok()) s = CheckWorkerIds(f);
  if (s.ok() && authenticated_sender && f.header.sender != *authenticated_sender) {
    s = Corruption("frame claims to come from worker " + std::to_string(f.header.sender) + " but worker " +
                   std::to_string(*authenticated_sender) + " sent it");
  }
  if (!s.ok()) {
    ++metrics_.frames_corrupt;
    if (rejected_logged_++ < 10 || rejected_logged_ % 1000 == 0) {
      spdlog::warn("lstash worker {}: rejected a frame ({} so far): {}", options_.id, metrics_.frames_corrupt,
                   s.ToString());
    }
    return s.WithContext("frame rejected");
  }
  const wire::FrameHeader& h = f.header;
  if (h.sender_epoch > peers_[h.sender].current()) LearnEpoch(h.sender, h.sender_epoch);
  LSTASH_RETURN_IF_ERROR(CheckUsable());
  if (h.sender_epoch < peers_[h.sender].current()) {  // the store may know of a newer one still
    ++metrics_.frames_stale;
    spdlog::debug("w{}: stale frame kind {} from w{} epoch {} (current {})", options_.id, int(h.kind), h.sender,
                  h.sender_epoch, peers_[h.sender].current());
    return Delivery::kStale;
  }
  if (h.sender_epoch_start != 0) LearnEpochStart(h.sender, h.sender_epoch, h.sender_epoch_start);

  switch (h.kind) {
    case wire::FrameKind::kRecoveryRequest:
      if (options_.mode != Mode::kNone) HandleRecoveryRequest(h);
      return Delivery::kControl;
    case wire::FrameKind::kEpochNotice:
      return Delivery::kControl;
    case wire::FrameKind::kRecoveryReply:
      if (phase_ != Phase::kGathering || !AddressedToUs(h)) {
        ++metrics_.frames_stale;
        spdlog::debug("w{}: stale recovery reply from w{} for epoch {}", options_.id, h.sender, h.dest_epoch);
        return Delivery::kStale;
      }
      HandleRecoveryReply(f);
      return Delivery::kControl;
    case wire::FrameKind::kAck:
      if (!AddressedToUs(h)) {
        ++metrics_.frames_stale;
        spdlog::debug("w{}: stale ack from w{} for epoch {}", options_.id, h.sender, h.dest_epoch);
        return Delivery::kStale;
      }
      HandleAck(f);
      return Delivery::kControl;
    case wire::FrameKind::kTask:
      break;
  }
  // A task frame. The sender must know our current incarnation: otherwise it
  // may believe we hold lineage our crash lost.
  if (!AddressedToUs(h)) {
    ++metrics_.frames_stale;
    spdlog::debug("w{}: task frame from w{} addressed to epoch {}", options_.id, h.sender, h.dest_epoch);
    std::string notice;
    wire::EncodeHeaderOnlyFrame(Header(wire::FrameKind::kEpochNotice, h.sender), &notice);
    Queue(h.sender, std::move(notice));
    return Delivery::kStale;
  }
  if (phase_ == Phase::kGathering) {
    if (held_frames_.size() < kMaxHeldFrames) {
      held_frames_.push_back(std::move(f));
    } else {
      ++metrics_.frames_deferred;
    }
    return Delivery::kDeferred;
  }
  return HandleTask(f);
}

// Accepts `f`, then any frames of the same channel that arrived early and are
// now next in line.
Result<Delivery> WorkerImpl::HandleTask(wire::DecodedFrame& f) {
  const WorkerId s = f.header.sender;
  auto r = HandleTaskFrame(f);
  if (!r.ok() || *r != Delivery::kQueued) return r;
  InChannel& in = in_[s];
  while (!in.early.empty() && in.early.begin()->first <= in.delivered + 1) {
    wire::DecodedFrame next = std::move(in.early.begin()->second);
    in.early.erase(in.early.begin());
    if (next.header.sender_epoch == peers_[s].current()) (void)HandleTaskFrame(next);
  }
  return r;
}

Result<Delivery> WorkerImpl::HandleTaskFrame(wire::DecodedFrame& f) {
  const WorkerId s = f.header.sender;
  ApplyAck(s, f.delivered, f.released);
  // Lineage from an incarnation that a later one has replaced: if the later
  // one is still deciding where its history starts we cannot judge it yet;
  // if the lineage lies past that start, the message depends on a lost
  // branch (an orphan) and is dropped.
  auto judge = [&](WorkerId owner, Epoch epoch, LogIndex index) {
    if (owner == options_.id && epoch == epoch_) return index <= log_end_ ? Validity::kValid : Validity::kInvalid;
    return CheckLineage(owner, epoch, index);
  };
  Validity worst = Validity::kValid;
  std::string why;
  auto consider = [&](WorkerId owner, Epoch epoch, LogIndex index, const char* what) {
    Validity v = judge(owner, epoch, index);
    if (v == Validity::kUnknown && owner != options_.id) unsettled_.insert(owner);
    if (v > worst) {
      worst = v;
      why = std::string(what) + " " + std::to_string(owner) + ":" + std::to_string(index) + " of epoch " +
            std::to_string(epoch);
    }
  };
  InChannel& in = in_[s];
  const bool duplicate = f.channel_seq <= in.delivered;
  // A duplicate queues nothing, so it is never dropped whole: its valid
  // lineage is merged below, entry by entry. Its sender counts us as holding
  // that lineage once it sees our ack, and may have sent it only on this
  // frame (a resend after we restarted puts it all on the first message), so
  // the later frames we accept depend on it.
  if (!duplicate) {
    for (const auto& we : f.entries) consider(we.entry.owner, we.entry.epoch, we.entry.index, "entry");
    for (const auto& d : f.deps) consider(d.owner, d.epoch, d.index, "dependency");
  }
  if (worst != Validity::kValid) {
    if (worst == Validity::kUnknown) {
      ++metrics_.frames_deferred;
      spdlog::debug("w{}: frame from w{} deferred: its lineage's owner is still recovering", options_.id, s);
      return Delivery::kDeferred;
    }
    ++metrics_.frames_stale;
    spdlog::debug("w{}: frame from w{} depends on discarded lineage ({})", options_.id, s, why);
    return Delivery::kStale;
  }

  if (!duplicate && f.channel_seq != in.delivered + 1) {
    // Early: an earlier frame is missing. Keep it (within a bound) until the
    // gap is filled, so one loss does not delay every frame behind it.
    ++metrics_.frames_deferred;
    spdlog::debug("w{}: frame from w{} early: channel seq {} after {}", options_.id, s, f.channel_seq, in.delivered);
    if (in.early.size() < kMaxEarlyFrames) in.early.try_emplace(f.channel_seq, std::move(f));
    return Delivery::kDeferred;
  }
  if (!duplicate && lineage_mode() && stash_.bytes() > options_.max_stash_bytes) {
    ++metrics_.frames_deferred;
    return Delivery::kDeferred;
  }
  // Lineage is merged even from a duplicate: a resend may carry entries the
  // first copy did not, and its sender now counts us as holding them.
  MergeWatermarks(f.watermarks);
  for (auto& we : f.entries) {
    const WorkerId owner = we.entry.owner;
    if (duplicate && judge(owner, we.entry.epoch, we.entry.index) != Validity::kValid) continue;
    if (owner == options_.id) {
      stash_.MarkOwnHeld(we.entry.index, s);
    } else if (we.entry.index <= known_wm_[owner]) {
      continue;
    } else {
      auto e = std::make_shared<Entry>();
      e->entry = std::move(we.entry);
      e->bytes = std::move(we.bytes);
      spdlog::trace("w{}: holds {}:{} from w{}", options_.id, e->entry.owner, e->entry.index, s);
      stash_.AddRemote(std::move(e), s);
    }
  }
  metrics_.stash_bytes_peak = std::max<std::uint64_t>(metrics_.stash_bytes_peak, stash_.bytes());
  in.ack_due = true;
  if (duplicate) {
    if (payloads_needed_[s].erase(f.channel_seq)) {
      replay_payloads_.try_emplace({s, f.channel_seq}, std::move(f.payload));  // a replayed task needs it
    }
    ++metrics_.duplicates_dropped;
    return Delivery::kDuplicate;
  }
  inbox_.push_back(QueuedTask{TaskId{s, f.seq}, f.channel_seq, std::move(f.payload), std::move(f.deps), false});
  in.delivered = f.channel_seq;
  return Delivery::kQueued;
}

void WorkerImpl::ApplyAck(WorkerId d, std::uint64_t delivered, std::uint64_t released) {
  OutChannel& ch = out_[d];
  if (delivered <= ch.delivered && released <= ch.released) return;
  spdlog::trace("w{}: ack from w{}: delivered {} released {}", options_.id, d, delivered, released);
  ch.delivered = std::max(ch.delivered, delivered);
  ch.released = std::max(ch.released, released);
  TrimOutbox(d);
}

void WorkerImpl::HandleAck(const wire::DecodedFrame& f) {
  ApplyAck(f.header.sender, f.delivered, f.released);
  MergeWatermarks(f.watermarks);
}

void WorkerImpl::HandleRecoveryRequest(const wire::FrameHeader& h) {
  const WorkerId r = h.sender;
  std::vector<EntryPtr> held = stash_.RemoteOf(r);
  std::vector<std::string_view> entries;
  entries.reserve(held.size());
  for (const auto& e : held) entries.push_back(e->bytes);
  wire::FrameHeader reply = Header(wire::FrameKind::kRecoveryReply, r);
  reply.dest_epoch = h.sender_epoch;
  std::string bytes;
  wire::EncodeRecoveryReplyFrame(reply, ReportedDelivered(r), in_[r].released, entries, &bytes);
  Queue(r, std::move(bytes));
  ResendUnacknowledged(r, true);
}

void WorkerImpl::HandleRecoveryReply(wire::DecodedFrame& f) {
  const WorkerId p = f.header.sender;
  spdlog::debug("w{}: recovery reply from w{} with {} entries ({}..{})", options_.id, p, f.entries.size(),
                f.entries.empty() ? 0 : f.entries.front().entry.index, f.entries.empty() ? 0 : f.entries.back().entry.index);
  for (auto& we : f.entries) {
    const wire::LogEntry& e = we.entry;
    if (e.owner != options_.id || e.index <= position_) continue;
    if (CheckLineage(e.owner, e.epoch, e.index) != Validity::kValid) continue;
    auto [it, inserted] = gathered_.try_emplace(e.index);
    if (inserted) {
      auto ep = std::make_shared<Entry>();
      Status s = wire::DecodeEntry(we.bytes, &ep->entry);  // frames carry validated headers only
      if (!s.ok()) {
        gathered_.erase(it);
        SetSticky(s.WithContext("entry " + std::to_string(e.index) + " from survivor " + std::to_string(p)));
        return;
      }
      ep->bytes = std::move(we.bytes);
      it->second.entry = std::move(ep);
      ++recovery_.from_survivors;
    } else if (it->second.entry->bytes != we.bytes) {
      SetSticky(Corruption("survivor " + std::to_string(p) + " holds a different log entry " +
                           std::to_string(e.index) + " of this worker than another source"));
      return;
    }
    it->second.holders.insert(p);
  }
  OutChannel& ch = out_[p];
  ch.delivered = f.delivered;
  ch.released = std::max(ch.released, f.released);
  TrimOutbox(p);
  awaiting_.erase(p);
  if (awaiting_.empty()) CompleteGather();
}

// ---------------------------------------------------------------------------
// Recovery

Status WorkerImpl::StartRecovery() {
  phase_ = Phase::kGathering;
  recovery_began_ = MonoNow();
  recovery_ = RecoveryStats{};
  recovery_.worker = options_.id;
  recovery_.epoch = epoch_;
  if (options_.listener) {
    Listener* l = options_.listener;
    WorkerId w = options_.id;
    Epoch e = epoch_;
    callbacks_.push_back([l, w, e] { l->OnRecoveryStart(w, e); });
  }

  LSTASH_RETURN_IF_ERROR(LoadCheckpoint());

  std::vector<LogRecord> records;
  LSTASH_RETURN_IF_ERROR(store_->ReadLog(options_.id, position_ + 1, &records));
  for (auto& r : records) {
    auto e = std::make_shared<Entry>();
    Status s = wire::DecodeEntry(r.bytes, &e->entry);
    if (!s.ok()) return s.WithContext("log entry " + std::to_string(r.index) + " in the store");
    if (e->entry.owner != options_.id || e->entry.index != r.index) {
      return Corruption("store returned entry " + std::to_string(e->entry.owner) + "/" + std::to_string(e->entry.index) +
                        " for worker " + std::to_string(options_.id) + " index " + std::to_string(r.index));
    }
    e->bytes = std::move(r.bytes);
    gathered_[r.index].entry = std::move(e);
    ++recovery_.from_store;
  }

  for (WorkerId p = 0; p < n_; ++p) {
    if (p == options_.id) continue;
    awaiting_.insert(p);
    std::string bytes;
    wire::EncodeHeaderOnlyFrame(Header(wire::FrameKind::kRecoveryRequest, p), &bytes);
    Queue(p, std::move(bytes));
  }
  last_request_sent_ = MonoNow();
  if (awaiting_.empty()) CompleteGather();
  return Status::OK();
}

// Reads the latest checkpoint's fields: the first part of its record, and
// more only if they do not fit. The snapshot, which may be GiBs of device
// state, stays in the store for ReadRestoredSnapshot.
Status WorkerImpl::LoadCheckpoint() {
  auto first = store_->ReadCheckpointPart(options_.id, 0, kCheckpointHeadBytes);
  if (!first.ok()) return first.status().WithContext("reading the latest checkpoint");
  if (!first->has_value()) return Status::OK();
  RestoredSnapshot r{(*first)->epoch, (*first)->at, (*first)->total_bytes, {}, std::nullopt};
  std::string head = std::move((*first)->bytes);
  wire::CheckpointRecord c;
  Status decoded;
  while (!(decoded = wire::DecodeCheckpointHead(head, r.record_bytes, &c, &r.extent)).ok() &&
         head.size() < r.record_bytes) {
    // Fields longer than the first part (a long outbox): twice as much.
    CheckpointPart more;
    if (Status s = ReadCheckpointBytes(r, head.size(), std::min(head.size(), r.record_bytes - head.size()), &more);
        !s.ok()) {
      if (s.code() == Code::kCorruption) ++metrics_.corrupt_records;
      return s.WithContext("reading the latest checkpoint");
    }
    head += more.bytes;
  }
  if (decoded.ok() && (c.worker != options_.id || c.num_workers != n_ || c.at != r.at ||
                       c.next_channel_seq.size() != n_ || c.executed_upto.size() != n_)) {
    decoded = Corruption("checkpoint of worker " + std::to_string(c.worker) + " (" + std::to_string(c.num_workers) +
                         " workers, at " + std::to_string(c.at) + ") does not fit worker " + std::to_string(options_.id) +
                         " of a " + std::to_string(n_) + "-worker job");
  }
  if (!decoded.ok()) {
    ++metrics_.corrupt_records;
    return decoded.WithContext("the latest checkpoint in the store");
  }
  if (r.extent.offset + r.extent.size <= head.size()) r.bytes = head.substr(r.extent.offset, r.extent.size);
  restored_snapshot_ = std::move(r);
  position_ = log_end_ = c.at;
  position_epoch_ = c.epoch;
  checkpoint_durable_at_ = c.at;
  recovery_.checkpoint_at = c.at;
  next_seq_ = c.next_seq;
  for (WorkerId w = 0; w < n_; ++w) {
    out_[w].next_seq = c.next_channel_seq[w];
    in_[w].delivered = in_[w].executed = in_[w].released = c.executed_upto[w];
  }
  for (const auto& d : c.frontier) {
    if (d.owner < n_) frontier_[d.owner] = d;
  }
  for (auto& m : c.outbox) {
    if (m.dest >= n_) return Corruption("checkpoint outbox names worker " + std::to_string(m.dest));
    OutMsg om;
    om.msg = std::move(m);
    out_[om.msg.dest].outbox.push_back(std::move(om));
  }
  return Status::OK();
}

Status WorkerImpl::ReadCheckpointBytes(const RestoredSnapshot& r, std::uint64_t offset, std::uint64_t size,
                                       CheckpointPart* part) {
  LSTASH_ASSIGN_OR_RETURN(const bool found, store_->ReadCheckpointPartInto(options_.id, offset, size, part));
  if (!found || part->epoch != r.epoch || part->at != r.at) {
    return Aborted("the checkpoint at " + std::to_string(r.at) + " was replaced while it was read");
  }
  if (part->total_bytes != r.record_bytes || part->bytes.size() != size) {
    return Corruption("the store returned " + std::to_string(part->bytes.size()) + " bytes at offset " +
                      std::to_string(offset) + " of a " + std::to_string(part->total_bytes) +
                      "-byte checkpoint record; " + std::to_string(size) + " bytes of a " +
                      std::to_string(r.record_bytes) + "-byte one were asked for");
  }
  return Status::OK();
}

std::optional<std::uint64_t> WorkerImpl::restored_snapshot_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!restored_snapshot_) return std::nullopt;
  return restored_snapshot_->extent.size;
}

Status WorkerImpl::ReadRestoredSnapshot(const std::function<Status(std::string_view part)>& sink) {
  std::optional<RestoredSnapshot> r;
  {
    std::lock_guard<std::mutex> lock(mu_);
    r = restored_snapshot_;  // small: only a record read whole carries bytes
  }
  if (!r) return FailedPrecondition("worker " + std::to_string(options_.id) + " has no snapshot to restore");
  Status s = !r->bytes ? StreamSnapshot(*r, sink) : r->bytes->empty() ? Status::OK() : sink(*r->bytes);
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> lock(mu_);
  restored_snapshot_.reset();
  return Status::OK();
}

// Reads the next part while `sink` takes this one, so the store's reads
// overlap the engine's copies (to a device). Two buffers take turns: a GiB
// read into a new buffer per part met a page fault per 4 KiB, as many as in
// a copy of the GiB.
Status WorkerImpl::StreamSnapshot(const RestoredSnapshot& r, const std::function<Status(std::string_view)>& sink) {
  const std::uint64_t end = r.extent.offset + r.extent.size;
  const auto read = [this, &r, end](std::uint64_t offset, CheckpointPart* into) {
    return ReadCheckpointBytes(r, offset, std::min(kSnapshotPartBytes, end - offset), into);
  };
  CheckpointPart parts[2];  // outlive `next`, whose destructor waits for a pending read
  std::uint64_t offset = r.extent.offset;
  std::future<Status> next;
  if (offset < end) next = std::async(std::launch::async, read, offset, &parts[0]);
  for (int turn = 0; offset < end; turn ^= 1) {
    if (Status s = next.get(); !s.ok()) {
      if (s.code() == Code::kCorruption) {
        std::lock_guard<std::mutex> lock(mu_);
        ++metrics_.corrupt_records;
      }
      return s.WithContext("reading the snapshot to restore");
    }
    offset += parts[turn].bytes.size();
    if (offset < end) next = std::async(std::launch::async, read, offset, &parts[turn ^ 1]);
    LSTASH_RETURN_IF_ERROR(sink(parts[turn].bytes));
  }
  return Status::OK();
}

// Copies other workers stored of our entries. Read only once every survivor
// has answered: a survivor drops an entry from its stash only after storing
// its copy, so whatever is missing from its reply is in the store by now.
void WorkerImpl::GatherStoredCopies() {
  std::vector<LineageCopy> copies;
  Status s = store_->ReadCopies(options_.id, position_ + 1, &copies);
  if (!s.ok()) {
    SetSticky(s.WithContext("reading lineage copies"));
    return;
  }
  for (auto& c : copies) {
    if (CheckLineage(options_.id, c.epoch, c.index) != Validity::kValid) continue;  // a discarded branch
    auto e = std::make_shared<Entry>();
    s = wire::DecodeEntry(c.bytes, &e->entry);
    if (!s.ok() || e->entry.owner != options_.id || e->entry.index != c.index || e->entry.epoch != c.epoch) {
      SetSticky(s.ok() ? Corruption("lineage copy " + std::to_string(c.index) + " is not the entry its key names")
                       : s.WithContext("lineage copy " + std::to_string(c.index)));
      return;
    }
    e->bytes = std::move(c.bytes);
    auto [it, inserted] = gathered_.try_emplace(c.index);
    if (inserted) {
      it->second.entry = std::move(e);
      ++recovery_.from_store;
    } else if (it->second.entry->bytes != e->bytes) {
      SetSticky(Corruption("a stored lineage copy of log entry " + std::to_string(c.index) +
                           " differs from another source"));
      return;
    }
  }
}

void WorkerImpl::CompleteGather() {
  if (phase_ != Phase::kGathering) return;
  GatherStoredCopies();
  recovery_.gather_nanos = MonoNow() - recovery_began_;
  if (!health_.ok()) return;

  // The recovered log is the longest gap-free run after the checkpoint.
  LogIndex end = position_;
  while (gathered_.count(end + 1)) ++end;
  spdlog::debug("w{}: gathered {} entries, contiguous to {}, committed {}", options_.id, gathered_.size(), end, committed_);
  if (!gathered_.empty() && gathered_.rbegin()->first > end) {
    Status s = DataLoss("log entry " + std::to_string(end + 1) + " of worker " + std::to_string(options_.id) +
                        " is missing but entry " + std::to_string(gathered_.rbegin()->first) +
                        " survives: more workers failed than max_forward tolerates");
    recovery_.status = s;
    SetSticky(s);
    if (options_.listener) {
      Listener* l = options_.listener;
      RecoveryStats stats = recovery_;
      callbacks_.push_back([l, stats] { l->OnRecoveryEnd(stats); });
    }
    return;
  }
  epoch_start_ = end + 1;
  Status s = store_->SetEpochStart(options_.id, epoch_, epoch_start_);
  if (!s.ok()) {
    SetSticky(s.WithContext("recording where incarnation " + std::to_string(epoch_) + " starts"));
    return;
  }
  peers_[options_.id].epochs.back().start = epoch_start_;
  recovery_.log_end = end;
  log_end_ = end;

  // Uncommitted recovered entries go back into the stash: they are flushed
  // again and forwarded like any own entry.
  stash_.ResetOwn(committed_);
  flushed_upto_ = committed_;
  for (LogIndex i = committed_ + 1; i <= end; ++i) {
    Gathered& g = gathered_[i];
    stash_.AppendOwn(g.entry);
    for (WorkerId p = 0; p < n_; ++p) {
      if (g.holders.contains(p)) stash_.MarkOwnHeld(i, p);
    }
  }
  for (LogIndex i = position_ + 1; i <= end; ++i) {
    const EntryPtr& e = gathered_[i].entry;
    if (e->entry.kind == wire::EntryKind::kExecute && !e->entry.start) {
      InChannel& in = in_[e->entry.task.submitter];
      in.delivered = std::max(in.delivered, e->entry.channel_seq);
      if (!e->entry.payload_inline) payloads_needed_[e->entry.task.submitter].insert(e->entry.channel_seq);
    }
    replay_log_.push_back(e);
  }
  gathered_.clear();
  replay_cursor_ = 0;
  start_pending_ = position_ == 0 && end == 0;  // nothing of this worker survived: start afresh
  phase_ = Phase::kReplaying;

  for (WorkerId p = 0; p < n_; ++p) {
    if (p == options_.id) continue;
    std::string bytes;
    wire::EncodeHeaderOnlyFrame(Header(wire::FrameKind::kEpochNotice, p), &bytes);
    Queue(p, std::move(bytes));
    TrimOutbox(p);
    ResendUnacknowledged(p, true);
  }
  ResendUnacknowledged(options_.id, true);
  auto held = std::move(held_frames_);
  held_frames_.clear();
  for (auto& f : held) {
    // Its sender may have restarted while we gathered.
    if (f.header.sender_epoch < peers_[f.header.sender].current()) {
      ++metrics_.frames_stale;
      continue;
    }
    (void)HandleTask(f);
  }
}

void WorkerImpl::PeerDown(WorkerId peer) {
  Locked lock(this);
  if (peer >= n_ || peer == options_.id) return;
  awaiting_.erase(peer);
  spdlog::debug("w{}: peer w{} down", options_.id, peer);
  if (phase_ == Phase::kGathering && awaiting_.empty()) CompleteGather();
}

// ---------------------------------------------------------------------------
// Checkpoints

Status WorkerImpl::PutCheckpointRecord(const PendingCheckpoint& p, Epoch epoch) {
  std::string fields;
  wire::EncodeCheckpointHead(p.record, p.snapshot.size(), &fields);
  Status writer;  // the engine's writer's own error, not the store's
  Status s = store_->PutCheckpointFrom(
      options_.id, epoch, p.at, fields.size() + p.snapshot.size(), [&](const auto& sink) -> Status {
        LSTASH_RETURN_IF_ERROR(sink(fields));
        Status refused;
        writer = p.snapshot.WriteTo([&](std::string_view part) {
          refused = sink(part);
          return refused;
        });
        if (!refused.ok()) writer = Status::OK();
        return writer.ok() ? refused : writer;
      });
  if (writer.ok()) return s;
  // Not retried (the retry is the store's to ask for): no code that invites one.
  if (writer.code() == Code::kUnavailable) writer = Status(Code::kAborted, writer.message());
  return writer.WithContext("writing the engine's snapshot");
}

Status WorkerImpl::Checkpoint(EngineSnapshot snapshot) {
  Locked lock(this);
  LSTASH_RETURN_IF_ERROR(CheckUsable());
  if (phase_ == Phase::kGathering) return FailedPrecondition("Checkpoint while gathering lineage: nothing has run yet");
  LSTASH_RETURN_IF_ERROR(EndTask());
  if (options_.mode == Mode::kNone) return Status::OK();

  wire::CheckpointRecord c;
  c.worker = options_.id;
  c.epoch = epoch_;
  c.at = position_;
  c.num_workers = n_;
  c.next_seq = next_seq_;
  c.next_channel_seq.resize(n_);
  c.executed_upto.resize(n_);
  for (WorkerId w = 0; w < n_; ++w) {
    c.next_channel_seq[w] = out_[w].next_seq;
    c.executed_upto[w] = in_[w].executed;
    if (w != options_.id && frontier_[w].index > 0) c.frontier.push_back(frontier_[w]);
    for (const auto& m : out_[w].outbox) c.outbox.push_back(m.msg);
  }
  PendingCheckpoint p;
  p.at = c.at;
  p.record = std::move(c);
  p.snapshot = std::move(snapshot);
  if (options_.mode == Mode::kWriteFirst) {
    Status s = RetryUnavailable([&] { return PutCheckpointRecord(p, epoch_); });
    if (!s.ok()) {
      SetSticky(s.WithContext("checkpoint"));
      return health_;
    }
    if (options_.failure_point_hook) {
      // Only this (the engine) thread changes state in write-first mode.
      lock.lock().unlock();
      options_.failure_point_hook(FailurePoint::kMidCheckpoint);
      lock.lock().lock();
    }
    checkpoint_durable_at_ = p.at;
    ++metrics_.checkpoints;
    ReleaseStable();
    return Status::OK();
  }
  pending_checkpoint_ = std::move(p);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Flushing

bool WorkerImpl::FlushWorkReady() const {
  if (flush_in_progress_) return false;
  if (flushed_upto_ < log_end_ && stash_.has_own()) return true;
  return pending_checkpoint_ && pending_checkpoint_->at <= committed_;
}

// Own entries in log order, plus copies of the remote entries they depend on
// that are not known committed and that we hold. Written atomically, the
// store never holds an effect whose cause could still be lost; a dependency
// we do not hold was already confirmed at f peers (or is committed), so it
// survives any f failures without our copy.
WorkerImpl::Batch WorkerImpl::PrepareBatch() {
  Batch batch;
  if (!stash_.has_own()) return batch;
  LogIndex i = std::max(flushed_upto_ + 1, stash_.own_begin());
  const LogIndex last = std::min(log_end_, stash_.own_end());
  std::vector<LogIndex> need(n_, 0);
  for (; i <= last && batch.own.size() < options_.max_flush_batch; ++i) {
    const EntryPtr& e = stash_.own(i);
    for (const auto& d : e->entry.deps) {
      if (d.owner != options_.id && d.owner < n_ && d.index > known_wm_[d.owner]) {
        need[d.owner] = std::max(need[d.owner], d.index);
      }
    }
    batch.own.push_back(e);
  }
  for (WorkerId o = 0; o < n_; ++o) {
    if (need[o] == 0) continue;
    for (EntryPtr& e : stash_.RemoteOf(o, known_wm_[o] + 1, need[o])) batch.copied.push_back(std::move(e));
  }
  return batch;
}

// Entries are immutable: their bytes are copied into the store's records
// without holding the Worker's lock.
void WorkerImpl::Batch::BuildRecords() {
  records.reserve(own.size());
  for (const auto& e : own) records.push_back(LogRecord{e->entry.index, e->bytes});
  copies.reserve(copied.size());
  for (const auto& e : copied) copies.push_back(LineageCopy{e->entry.owner, e->entry.epoch, e->entry.index, e->bytes});
}

void WorkerImpl::CompleteBatch(const Batch& batch, const Status& s, std::int64_t nanos) {
  flush_in_progress_ = false;
  if (!s.ok()) {
    flushed_upto_ = committed_;
    if (s.code() == Code::kUnavailable) {
      ++metrics_.flush_retries;
      lease_renewed_at_ = 0;  // the refusal may be a lapsed lease: renew first
    } else {
      SetSticky(s.WithContext("flushing log entries " + std::to_string(batch.records.front().index) + ".." +
                              std::to_string(batch.records.back().index)));
    }
    return;
  }
  const LogIndex last = batch.records.back().index;
  if (last > committed_) {
    metrics_.commits += last - committed_;
    committed_ = last;
  }
  known_wm_[options_.id] = std::max(known_wm_[options_.id], committed_);
  ++metrics_.flush_batches;
  metrics_.flushed_entries += batch.records.size();
  metrics_.lineage_copies += batch.copies.size();
  metrics_.flush_nanos_total += static_cast<std::uint64_t>(nanos);
  metrics_.flush_nanos_max = std::max<std::uint64_t>(metrics_.flush_nanos_max, static_cast<std::uint64_t>(nanos));
  metrics_.evictions += stash_.EvictOwn(committed_);
  for (const auto& e : batch.copied) metrics_.evictions += stash_.EvictRemoteEntry(e);  // durable now
  ReleaseStable();
  commit_cv_.notify_all();
}

void WorkerImpl::PollWatermarks() {
  std::vector<WorkerId> all(n_);
  for (WorkerId w = 0; w < n_; ++w) all[w] = w;
  std::vector<LogIndex> wm(n_);
  if (!store_->ReadCommitted(all, wm).ok()) return;  // only a hint; the next poll may succeed
  Locked lock(this);
  bool any = false;
  for (WorkerId w = 0; w < n_; ++w) {
    if (w == options_.id || wm[w] <= known_wm_[w]) continue;
    AdvanceWatermark(w, wm[w]);
    any = true;
  }
  if (any) commit_cv_.notify_all();
}

void WorkerImpl::RenewLeaseIfDue() {
  if (options_.lease_nanos <= 0) return;
  const std::int64_t now = MonoNow();
  Epoch epoch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (now - lease_renewed_at_ < options_.lease_nanos / 3) return;
    epoch = epoch_;
  }
  Status s = store_->RenewLease(options_.id, epoch, options_.lease_nanos);
  Locked lock(this);
  if (s.ok()) {
    lease_renewed_at_ = now;
  } else if (s.code() != Code::kUnavailable) {
    SetSticky(s.WithContext("renewing the lease"));
  }
}

Result<std::size_t> WorkerImpl::FlushRound() {
  RenewLeaseIfDue();
  PollWatermarks();
  Batch batch;
  std::optional<PendingCheckpoint> checkpoint;
  Epoch epoch;
  {
    Locked lock(this);
    LSTASH_RETURN_IF_ERROR(CheckUsable());
    if (flush_in_progress_) return std::size_t{0};
    batch = PrepareBatch();
    if (!batch.own.empty()) {
      flush_in_progress_ = true;
      flushed_upto_ = batch.own.back()->entry.index;
    }
    epoch = epoch_;
  }
  if (!batch.own.empty()) {
    batch.BuildRecords();
    FailurePointHere(FailurePoint::kBeforeFlush);
    const std::int64_t t0 = clock_->MonotonicNanos();
    Status s = store_->Append(options_.id, epoch, batch.records, batch.copies);
    const std::int64_t t1 = clock_->MonotonicNanos();
    if (s.ok()) FailurePointHere(FailurePoint::kAfterFlush);
    Locked lock(this);
    CompleteBatch(batch, s, t1 - t0);
    if (!s.ok() && s.code() != Code::kUnavailable) return health_;
    if (!s.ok()) return s;
  }
  {
    Locked lock(this);
    if (pending_checkpoint_ && pending_checkpoint_->at <= committed_) {
      checkpoint = std::move(pending_checkpoint_);
      pending_checkpoint_.reset();
      checkpoint_in_flight_ = true;  // Sync waits for it too
    }
  }
  if (checkpoint) {
    Status s = PutCheckpointRecord(*checkpoint, epoch);
    // Unless it is to be retried, the snapshot goes (with what it holds:
    // a GPU context's host copies) before Sync can see the checkpoint done,
    // so the engine's next snapshot finds them free.
    if (s.code() != Code::kUnavailable) checkpoint->snapshot = EngineSnapshot(std::string());
    if (s.ok()) FailurePointHere(FailurePoint::kMidCheckpoint);
    Locked lock(this);
    checkpoint_in_flight_ = false;
    commit_cv_.notify_all();
    if (s.ok()) {
      checkpoint_durable_at_ = std::max(checkpoint_durable_at_, checkpoint->at);
      ++metrics_.checkpoints;
      ReleaseStable();
    } else if (s.code() == Code::kUnavailable) {
      ++metrics_.flush_retries;
      lease_renewed_at_ = 0;
      if (!pending_checkpoint_) pending_checkpoint_ = std::move(checkpoint);
    } else {
      SetSticky(s.WithContext("storing checkpoint at " + std::to_string(checkpoint->at)));
      return health_;
    }
  }
  return batch.own.size();
}

Result<std::size_t> WorkerImpl::Flush() {
  if (options_.background_flush || !lineage_mode()) return std::size_t{0};
  return FlushRound();
}

void WorkerImpl::WakeFlusher() {
  flush_soon_ = true;
  flush_cv_.notify_one();
}

void WorkerImpl::FlusherLoop() {
  std::int64_t backoff = 0;
  const auto interval = std::chrono::nanoseconds(std::max<std::int64_t>(options_.flush_interval_nanos, 0));
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Group commit: gather what arrives during one interval into a batch.
      flush_cv_.wait_for(lock, interval, [&] { return stop_ || flush_soon_; });
      flush_soon_ = false;
      if (stop_ || !health_.ok()) return;
    }
    auto r = FlushRound();
    if (!r.ok() && r.status().code() == Code::kUnavailable) {
      backoff = std::min<std::int64_t>(backoff ? backoff * 2 : 1, 100);
      std::unique_lock<std::mutex> lock(mu_);
      flush_cv_.wait_for(lock, std::chrono::milliseconds(backoff), [&] { return stop_; });
    } else {
      backoff = 0;
    }
  }
}

Status WorkerImpl::Sync(std::int64_t timeout_nanos) {
  // Real time: the flusher is a real thread (or this one), whatever Clock
  // the options inject.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_nanos);
  if (!lineage_mode()) return CheckUsable();
  for (;;) {
    {
      Locked lock(this);
      LSTASH_RETURN_IF_ERROR(CheckUsable());
      if (committed_ >= log_end_ && !pending_checkpoint_ && !checkpoint_in_flight_) return Status::OK();
      if (options_.background_flush) {
        WakeFlusher();
        commit_cv_.wait_until(lock.lock(), std::min(deadline, std::chrono::steady_clock::now() +
                                                                  std::chrono::milliseconds(1)));
        LSTASH_RETURN_IF_ERROR(CheckUsable());
        if (committed_ >= log_end_ && !pending_checkpoint_ && !checkpoint_in_flight_) return Status::OK();
      }
    }
    if (!options_.background_flush) {
      auto r = FlushRound();
      if (!r.ok() && r.status().code() != Code::kUnavailable) return r.status();
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      Locked lock(this);
      return DeadlineExceeded("Sync: log committed to " + std::to_string(committed_) + " of " +
                              std::to_string(log_end_) + " before the timeout");
    }
  }
}

}  // namespace core
}  // namespace lstash
