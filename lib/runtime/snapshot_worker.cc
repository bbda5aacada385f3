#include "runtime/snapshot_worker.h"

#include "workloads/codec.h"

#include <algorithm>
#include <utility>

namespace lstash::runtime {
namespace {

using workloads::GetU64;
using workloads::PutU64;

// Every frame and record starts with a magic number and a format version.
constexpr std::string_view kFrameMagic = "LSCP";
constexpr std::string_view kRecordMagic = "LSSR";
constexpr char kVersion = 1;
constexpr std::size_t kMaxFuture = 100'000;

bool TakeHeader(std::string_view& s, std::string_view magic) {
  if (s.size() < magic.size() + 1 || s.substr(0, magic.size()) != magic || s[magic.size()] != kVersion) return false;
  s.remove_prefix(magic.size() + 1);
  return true;
}

bool TakeBytes(std::string_view& s, std::string* out) {
  std::uint64_t len = 0;
  if (!GetU64(s, &len) || len > s.size()) return false;
  out->assign(s.substr(0, len));
  s.remove_prefix(len);
  return true;
}

}  // namespace

SnapshotWorker::SnapshotWorker(WorkerId id, std::uint32_t workers, Epoch epoch, std::function<std::string()> snapshot_app)
    : id_(id), n_(workers), epoch_(epoch), snapshot_app_(std::move(snapshot_app)), rng_(0x9e3779b97f4a7c15ull * (id + 1) ^ epoch) {
  inbox_.push_back(Item{false, id_, 0, 0, {}, true});
}

void SnapshotWorker::SendFrame(WorkerId dest, bool marker, std::uint64_t snapshot, std::string_view payload) {
  std::string f(kFrameMagic);
  f.push_back(kVersion);
  f.push_back(marker ? 'M' : 'T');
  PutU64(f, generation_);
  PutU64(f, id_);
  PutU64(f, snapshot);
  PutU64(f, next_seq_++);
  f.append(payload);
  frames_.push_back(Frame{dest, std::move(f)});
  ++metrics_.frames_sent;
}

Result<TaskId> SnapshotWorker::Submit(WorkerId dest, std::string_view payload) {
  if (dest >= n_) return InvalidArgument("Submit: no worker " + std::to_string(dest));
  if (!in_task_) return FailedPrecondition("Submit outside a running task");
  const TaskId id{id_, next_seq_};
  SendFrame(dest, false, 0, payload);
  ++metrics_.tasks_submitted;
  ++metrics_.task_frames;
  return id;
}

Result<Delivery> SnapshotWorker::ReceiveFrom(WorkerId from, std::string_view frame) {
  std::string_view s = frame;
  std::uint64_t generation = 0, sender = 0, snapshot = 0, seq = 0;
  const bool ok = TakeHeader(s, kFrameMagic) && !s.empty() && (s[0] == 'M' || s[0] == 'T');
  const bool marker = ok && s[0] == 'M';
  if (ok) s.remove_prefix(1);
  if (!ok || !GetU64(s, &generation) || !GetU64(s, &sender) || !GetU64(s, &snapshot) || !GetU64(s, &seq) ||
      sender != from) {
    ++metrics_.frames_corrupt;
    return Corruption("checkpoint-mode frame from worker " + std::to_string(from) + ": bad header");
  }
  if (generation < generation_) {  // sent before the last rollback
    ++metrics_.frames_stale;
    return Delivery::kStale;
  }
  if (generation > generation_) {  // the sender rolled back first: ours is on its way
    if (future_.size() >= kMaxFuture) return ResourceExhausted("too many frames of a later generation");
    future_.push_back(Early{from, std::string(frame)});
    return Delivery::kDeferred;
  }
  inbox_.push_back(Item{marker, from, seq, snapshot, std::string(s), false});
  return marker ? Delivery::kControl : Delivery::kQueued;
}

void SnapshotWorker::Begin(std::uint64_t k) {
  last_started_ = active_ = k;
  app_state_ = snapshot_app_();
  closed_.assign(n_, false);
  recorded_.clear();
  for (WorkerId d = 0; d < n_; ++d) SendFrame(d, true, k, {});  // behind everything sent before
}

void SnapshotWorker::StartSnapshot(std::uint64_t k) {
  if (k > last_started_) Begin(k);
}

Result<std::optional<Task>> SnapshotWorker::NextTask() {
  in_task_ = false;
  while (!inbox_.empty()) {
    Item item = std::move(inbox_.front());
    inbox_.pop_front();
    if (item.marker) {
      if (item.snapshot > last_started_) Begin(item.snapshot);  // the first marker of a snapshot
      if (item.snapshot != active_) continue;                     // an abandoned one
      closed_[item.sender] = true;
      if (std::find(closed_.begin(), closed_.end(), false) != closed_.end()) continue;
      std::string record(kRecordMagic);
      record.push_back(kVersion);
      PutU64(record, active_);
      PutU64(record, app_state_.size());
      record += app_state_;
      PutU64(record, recorded_.size());
      for (const Item& r : recorded_) {
        PutU64(record, r.sender);
        PutU64(record, r.payload.size());
        record += r.payload;
      }
      completed_.emplace_back(active_, std::move(record));
      active_ = 0;
      recorded_.clear();
      continue;
    }
    if (active_ != 0 && !item.start && !closed_[item.sender]) recorded_.push_back(item);  // in the channel at the cut
    in_task_ = true;
    ++metrics_.tasks_executed;
    Task t;
    t.id = TaskId{item.sender, item.seq};
    t.sender = item.sender;
    t.payload = std::move(item.payload);
    t.start = item.start;
    return std::optional<Task>(std::move(t));
  }
  return std::optional<Task>();
}

Result<std::uint64_t> SnapshotWorker::Random() {
  if (!in_task_) return FailedPrecondition("Random outside a running task");
  return workloads::SplitMix(rng_);
}

Result<std::int64_t> SnapshotWorker::Now() {
  if (!in_task_) return FailedPrecondition("Now outside a running task");
  return SystemClock()->WallNanos();
}

std::vector<std::pair<std::uint64_t, std::string>> SnapshotWorker::TakeCompletedSnapshots() { return std::move(completed_); }

Result<std::uint64_t> SnapshotWorker::RecordSnapshotId(const std::string& record) {
  std::string_view s = record;
  std::uint64_t k = 0;
  if (!TakeHeader(s, kRecordMagic) || !GetU64(s, &k)) return Corruption("not a snapshot record (bad magic or version)");
  return k;
}

Result<std::optional<std::string>> SnapshotWorker::RollBack(std::uint64_t generation, const std::string* record) {
  std::deque<Item> queued;
  std::optional<std::string> app;
  if (record == nullptr) {
    queued.push_back(Item{false, id_, 0, 0, {}, true});
  } else {
    std::string_view s = *record;
    std::uint64_t k = 0, count = 0;
    std::string state;
    if (!TakeHeader(s, kRecordMagic) || !GetU64(s, &k) || !TakeBytes(s, &state) || !GetU64(s, &count)) {
      return Corruption("snapshot record: bad header");
    }
    for (std::uint64_t i = 0; i < count; ++i) {
      Item item;
      std::uint64_t sender = 0;
      if (!GetU64(s, &sender) || sender >= n_ || !TakeBytes(s, &item.payload)) return Corruption("snapshot record: bad channel state");
      item.sender = static_cast<WorkerId>(sender);
      item.seq = next_seq_ + i;  // ids only need to be unique here
      queued.push_back(std::move(item));
    }
    if (!s.empty()) return Corruption("snapshot record: trailing bytes");
    app = std::move(state);
  }
  generation_ = generation;
  inbox_ = std::move(queued);
  frames_.clear();
  active_ = 0;
  recorded_.clear();
  in_task_ = false;
  // Frames that arrived early: this generation's are next in line, older
  // ones are dropped, later ones wait again.
  for (auto& early : std::exchange(future_, {})) (void)ReceiveFrom(early.sender, early.frame);
  return app;
}

}  // namespace lstash::runtime
