// The in-memory store: the Store contract with nothing durable, for tests and
// the deterministic simulator. One mutex guards everything; no call blocks on
// I/O, so finer locking would buy nothing.

#include <lstash/store.h>

#include <algorithm>
#include <deque>
#include <limits>
#include <map>
#include <tuple>
#include <mutex>
#include <unordered_map>

#include "store/checks.h"

namespace lstash {

Store::~Store() = default;

Status Store::RenewLease(WorkerId, Epoch, std::int64_t) { return Status::OK(); }

Status Store::PutCheckpoint(WorkerId worker, Epoch epoch, LogIndex at, std::string_view record) {
  return PutCheckpointFrom(worker, epoch, at, record.size(), [record](const auto& sink) { return sink(record); });
}

Result<std::optional<CheckpointPart>> Store::ReadCheckpointPart(WorkerId worker, std::uint64_t offset,
                                                                std::uint64_t max_bytes) {
  CheckpointPart part;
  LSTASH_ASSIGN_OR_RETURN(const bool found, ReadCheckpointPartInto(worker, offset, max_bytes, &part));
  return found ? std::optional<CheckpointPart>(std::move(part)) : std::nullopt;
}

Result<std::optional<StoredCheckpoint>> Store::LatestCheckpoint(WorkerId worker) {
  auto whole = ReadCheckpointPart(worker, 0, std::numeric_limits<std::uint64_t>::max());
  if (!whole.ok()) return whole.status();
  if (!whole->has_value()) return std::optional<StoredCheckpoint>();
  CheckpointPart& c = **whole;
  return std::optional<StoredCheckpoint>(StoredCheckpoint{c.epoch, c.at, std::move(c.bytes)});
}

namespace {

using store_internal::CheckAppendShape;
using store_internal::CheckCheckpointAt;
using store_internal::CheckCheckpointOffset;
using store_internal::CheckContiguous;
using store_internal::CheckFence;

class MemoryStore final : public Store {
 public:
  Result<Epoch> BeginIncarnation(WorkerId worker) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto& epochs = workers_[worker].epochs;
    Epoch next = epochs.empty() ? 1 : epochs.back().epoch + 1;
    epochs.push_back(EpochRecord{next, 0});
    return next;
  }

  Status SetEpochStart(WorkerId worker, Epoch epoch, LogIndex start) override {
    std::lock_guard<std::mutex> lock(mu_);
    WorkerData* w = Find(worker);
    LSTASH_RETURN_IF_ERROR(CheckFence(worker, epoch, CurrentEpoch(w)));
    w->epochs.back().start = start;
    return Status::OK();
  }

  Result<std::vector<EpochRecord>> Epochs(WorkerId worker) override {
    std::lock_guard<std::mutex> lock(mu_);
    WorkerData* w = Find(worker);
    if (w == nullptr) return std::vector<EpochRecord>();
    return w->epochs;
  }

  Status Append(WorkerId worker, Epoch epoch, std::span<const LogRecord> records,
                std::span<const LineageCopy> copies) override {
    LSTASH_RETURN_IF_ERROR(CheckAppendShape(worker, records));
    std::lock_guard<std::mutex> lock(mu_);
    WorkerData* w = Find(worker);
    LSTASH_RETURN_IF_ERROR(CheckFence(worker, epoch, CurrentEpoch(w)));
    LSTASH_RETURN_IF_ERROR(CheckContiguous(worker, records.front().index, w->committed()));
    // Records up to the committed index are already stored (or folded into a
    // checkpoint); committed history is never rewritten.
    for (const LogRecord& r : records) {
      if (r.index > w->committed()) w->log.push_back(r.bytes);
    }
    for (const LineageCopy& c : copies) {
      WorkerData* owner = Find(c.owner);
      if (owner != nullptr && c.index <= owner->committed()) continue;
      copies_[{c.owner, c.index, c.epoch}] = c.bytes;
    }
    // Copies of what this worker has now committed are garbage.
    copies_.erase(copies_.lower_bound({worker, 0, 0}), copies_.upper_bound({worker, w->committed(), ~Epoch{0}}));
    return Status::OK();
  }

  Status ReadCopies(WorkerId owner, LogIndex from, std::vector<LineageCopy>* out) override {
    out->clear();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = copies_.lower_bound({owner, from, 0}); it != copies_.end() && std::get<0>(it->first) == owner;
         ++it) {
      out->push_back(LineageCopy{owner, std::get<2>(it->first), std::get<1>(it->first), it->second});
    }
    return Status::OK();
  }

  Status ReadLog(WorkerId worker, LogIndex from, std::vector<LogRecord>* out) override {
    out->clear();
    std::lock_guard<std::mutex> lock(mu_);
    WorkerData* w = Find(worker);
    if (w == nullptr) return Status::OK();
    LogIndex first = from > w->log_base ? from : w->log_base + 1;
    for (LogIndex i = first; i <= w->committed(); ++i) {
      out->push_back(LogRecord{i, w->log[i - w->log_base - 1]});
    }
    return Status::OK();
  }

  Status ReadCommitted(std::span<const WorkerId> workers, std::span<LogIndex> out) override {
    if (out.size() != workers.size()) {
      return InvalidArgument("ReadCommitted: " + std::to_string(workers.size()) + " workers but " +
                             std::to_string(out.size()) + " outputs");
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < workers.size(); ++i) {
      WorkerData* w = Find(workers[i]);
      out[i] = w == nullptr ? 0 : w->committed();
    }
    return Status::OK();
  }

  Status PutCheckpointFrom(WorkerId worker, Epoch epoch, LogIndex at, std::uint64_t size,
                           const RecordParts& parts) override {
    auto record = store_internal::GatherRecord(worker, size, parts);  // not under the store's lock
    if (!record.ok()) return record.status();
    std::lock_guard<std::mutex> lock(mu_);
    WorkerData* w = Find(worker);
    LSTASH_RETURN_IF_ERROR(CheckFence(worker, epoch, CurrentEpoch(w)));
    LogIndex previous_at = w->checkpoint ? w->checkpoint->at : 0;
    LSTASH_RETURN_IF_ERROR(CheckCheckpointAt(worker, at, w->committed(), previous_at));
    while (w->log_base < at) {
      w->log.pop_front();
      ++w->log_base;
    }
    w->checkpoint = StoredCheckpoint{epoch, at, std::move(record).value()};

    return Status::OK();
  }

  Result<bool> ReadCheckpointPartInto(WorkerId worker, std::uint64_t offset, std::uint64_t max_bytes,
                                      CheckpointPart* part) override {
    std::lock_guard<std::mutex> lock(mu_);
    WorkerData* w = Find(worker);
    if (w == nullptr || !w->checkpoint) return false;
    const StoredCheckpoint& c = *w->checkpoint;
    LSTASH_RETURN_IF_ERROR(CheckCheckpointOffset(worker, offset, c.bytes.size()));
    part->epoch = c.epoch;
    part->at = c.at;
    part->total_bytes = c.bytes.size();
    part->bytes.assign(c.bytes, offset, std::min<std::uint64_t>(max_bytes, c.bytes.size()));
    return true;
  }

 private:
  struct WorkerData {
    std::vector<EpochRecord> epochs;
    // The log holds exactly indices log_base+1 .. committed(): appends only
    // extend the committed prefix and checkpoints only drop from its front.
    LogIndex log_base = 0;  // index folded into the latest checkpoint
    std::deque<std::string> log;
    std::optional<StoredCheckpoint> checkpoint;

    LogIndex committed() const { return log_base + log.size(); }
  };

  // REQUIRES: mu_ held.
  WorkerData* Find(WorkerId worker) {
    auto it = workers_.find(worker);
    return it == workers_.end() ? nullptr : &it->second;
  }

  static Epoch CurrentEpoch(const WorkerData* w) {
    return w == nullptr || w->epochs.empty() ? 0 : w->epochs.back().epoch;
  }

  std::mutex mu_;
  std::unordered_map<WorkerId, WorkerData> workers_;  // GUARDED_BY(mu_)
  std::map<std::tuple<WorkerId, LogIndex, Epoch>, std::string> copies_;  // GUARDED_BY(mu_)
};

}  // namespace

std::unique_ptr<Store> NewMemoryStore() { return std::make_unique<MemoryStore>(); }

}  // namespace lstash
