// The global store: the durable home of every worker's committed lineage.
//
// A Store keeps, per worker:
//   - its log: encoded log entries at indices 1, 2, 3, ... Only the worker's
//     live incarnation writes it, always extending a committed prefix
//     (appends may overlap what is committed; overlapping records must be
//     identical). The committed index is the end of that prefix.
//   - its epochs: one record per incarnation, with the log index at which the
//     incarnation started writing new history. BeginIncarnation() fences all
//     older incarnations: their Append/PutCheckpoint fail with
//     kFailedPrecondition from then on (a paused "zombie" cannot write).
//   - its latest checkpoint: an opaque record taken at a log index. Storing a
//     checkpoint deletes the log up to that index (it is garbage). It can be
//     read in parts, so a record of GiBs (device state) streams back into
//     place without a host copy of the whole.
//   - lineage copies: entries of its log that other workers stored alongside
//     their own entries that depend on them, before the owner committed
//     them. A copy is garbage once its owner's committed index passes it;
//     implementations delete garbage copies in the background of appends,
//     and storing a checkpoint deletes the copies it folds.
//
// Every stored value carries a magic number and a format version; a store
// written by an unknown format version is refused when opened.
//
// Two implementations ship: an embedded RocksDB store (durable; what every
// real deployment uses) and an in-memory store (for tests and simulation).
// StoreWrapper forwards every call, so a test can override just one to
// inject a failure.
//
// Thread-safety: all methods may be called concurrently from many threads
// (several workers' flushers share one store).
#pragma once

#include <lstash/export.h>
#include <lstash/status.h>
#include <lstash/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lstash {

// One encoded log entry and its index in its owner's log.
struct LogRecord {
  LogIndex index = 0;
  std::string bytes;
};

// One incarnation of a worker. start == 0 means the incarnation is still
// gathering its lineage and has not decided where its own history begins.
struct EpochRecord {
  Epoch epoch = 0;
  LogIndex start = 0;
};

// A copy of another worker's uncommitted log entry, written atomically with
// the writer's own entries that depend on it, so that the store never holds
// an effect whose cause could still be lost.
struct LineageCopy {
  WorkerId owner = 0;
  Epoch epoch = 0;   // incarnation of the owner that created the entry
  LogIndex index = 0;
  std::string bytes;
};

struct StoredCheckpoint {
  Epoch epoch = 0;     // incarnation that took it
  LogIndex at = 0;     // log entries 1..at are folded into it
  std::string bytes;   // encoded checkpoint record
};

// Bytes [offset, offset + bytes.size()) of a checkpoint record of
// `total_bytes`.
struct CheckpointPart {
  Epoch epoch = 0;
  LogIndex at = 0;
  std::uint64_t total_bytes = 0;
  std::string bytes;
};

class LSTASH_EXPORT Store {
 public:
  virtual ~Store();

  // Starts a new incarnation of `worker` and returns its epoch (1 for the
  // first). Older incarnations are fenced from this point on.
  virtual Result<Epoch> BeginIncarnation(WorkerId worker) = 0;

  // Records where incarnation `epoch` of `worker` starts its own history.
  // Fenced like Append.
  virtual Status SetEpochStart(WorkerId worker, Epoch epoch, LogIndex start) = 0;

  // All incarnations of `worker`, oldest first. Empty if it never started.
  virtual Result<std::vector<EpochRecord>> Epochs(WorkerId worker) = 0;

  // Durably appends `records` (consecutive indices) to `worker`'s log on
  // behalf of incarnation `epoch`, together with `copies` of other workers'
  // entries, in one atomic write. The first index must be at most
  // committed+1. Returns only once the write is as durable as the store
  // promises (synced by default). Copies of entries their owner has already
  // committed are dropped.
  virtual Status Append(WorkerId worker, Epoch epoch, std::span<const LogRecord> records,
                        std::span<const LineageCopy> copies) = 0;

  // Lineage copies of `owner`'s entries with index >= from, by index (then
  // epoch), into *out.
  virtual Status ReadCopies(WorkerId owner, LogIndex from, std::vector<LineageCopy>* out) = 0;

  // Committed log records of `worker` with index >= from, in order, into *out.
  virtual Status ReadLog(WorkerId worker, LogIndex from, std::vector<LogRecord>* out) = 0;

  // Committed index of each worker in `workers`, written to out[i]. A worker
  // with nothing committed reads 0; one whose log was folded into a
  // checkpoint reads at least the checkpoint's index.
  virtual Status ReadCommitted(std::span<const WorkerId> workers, std::span<LogIndex> out) = 0;

  // A checkpoint record given in parts: calling it feeds every byte to
  // `sink`, in order. A store calls it once per attempt to store the record.
  using RecordParts = std::function<Status(const std::function<Status(std::string_view part)>& sink)>;

  // Stores a record of `size` bytes, given in `parts`, as `worker`'s latest
  // checkpoint, taken at log index `at` (REQUIRES at <= committed index), and
  // deletes log entries 1..at. Parts that fail (their error is returned) or
  // that do not add up to `size` (kInvalidArgument) store nothing. The
  // RocksDB store writes the parts as they come, so a record of GiBs is
  // never one buffer; the others gather them first.
  virtual Status PutCheckpointFrom(WorkerId worker, Epoch epoch, LogIndex at, std::uint64_t size,
                                   const RecordParts& parts) = 0;
  // The same for a record in one buffer.
  Status PutCheckpoint(WorkerId worker, Epoch epoch, LogIndex at, std::string_view record);

  // Up to `max_bytes` of `worker`'s latest checkpoint record, from byte
  // `offset` on (fewer only at the record's end; none from its end), into
  // *part; false if it has no checkpoint. kInvalidArgument for an offset
  // past the end. part->bytes is replaced, its buffer reused: a reader of
  // many parts passes the same few, as fresh memory costs a page fault per
  // 4 KiB (a GiB read into new buffers met one per page).
  // A reader of several parts checks that epoch and at stay the same: a
  // newer checkpoint may have replaced the one it began on.
  virtual Result<bool> ReadCheckpointPartInto(WorkerId worker, std::uint64_t offset, std::uint64_t max_bytes,
                                              CheckpointPart* part) = 0;
  // The same in a new part, or nullopt if it has no checkpoint.
  Result<std::optional<CheckpointPart>> ReadCheckpointPart(WorkerId worker, std::uint64_t offset,
                                                           std::uint64_t max_bytes);

  // The latest checkpoint of `worker`, whole, or nullopt if none.
  Result<std::optional<StoredCheckpoint>> LatestCheckpoint(WorkerId worker);

  // Renews the lease of incarnation `epoch` of `worker` for `duration_nanos`
  // from now (the store's clock); kFailedPrecondition if `epoch` is fenced.
  // A store that enforces leases (the store server) answers
  // Append/SetEpochStart/PutCheckpoint from an incarnation whose lease ran
  // out with kUnavailable until it renews: an incarnation that was silent
  // (paused, partitioned) must check with the store before writing again,
  // and learns there if it was replaced. Stores inside one process need no
  // leases: the default returns OK.
  virtual Status RenewLease(WorkerId worker, Epoch epoch, std::int64_t duration_nanos);
};

// Forwards every call to a target (not owned), so tests can override one.
class LSTASH_EXPORT StoreWrapper : public Store {
 public:
  explicit StoreWrapper(Store* target) : target_(target) {}
  Store* target() const { return target_; }

  Result<Epoch> BeginIncarnation(WorkerId w) override { return target_->BeginIncarnation(w); }
  Status SetEpochStart(WorkerId w, Epoch e, LogIndex s) override { return target_->SetEpochStart(w, e, s); }
  Result<std::vector<EpochRecord>> Epochs(WorkerId w) override { return target_->Epochs(w); }
  Status Append(WorkerId w, Epoch e, std::span<const LogRecord> r, std::span<const LineageCopy> c) override {
    return target_->Append(w, e, r, c);
  }
  Status ReadCopies(WorkerId owner, LogIndex from, std::vector<LineageCopy>* out) override {
    return target_->ReadCopies(owner, from, out);
  }
  Status ReadLog(WorkerId w, LogIndex from, std::vector<LogRecord>* out) override {
    return target_->ReadLog(w, from, out);
  }
  Status ReadCommitted(std::span<const WorkerId> ws, std::span<LogIndex> out) override {
    return target_->ReadCommitted(ws, out);
  }
  Status PutCheckpointFrom(WorkerId w, Epoch e, LogIndex at, std::uint64_t size, const RecordParts& parts) override {
    return target_->PutCheckpointFrom(w, e, at, size, parts);
  }
  Result<bool> ReadCheckpointPartInto(WorkerId w, std::uint64_t offset, std::uint64_t max_bytes,
                                      CheckpointPart* part) override {
    return target_->ReadCheckpointPartInto(w, offset, max_bytes, part);
  }
  Status RenewLease(WorkerId w, Epoch e, std::int64_t duration_nanos) override {
    return target_->RenewLease(w, e, duration_nanos);
  }

 private:
  Store* target_;
};

struct RocksDbStoreOptions {
  // Durability of each Append: true syncs the write-ahead log before
  // returning (survives power loss); false survives a process crash only.
  bool sync = true;
  // Create the database if it does not exist.
  bool create_if_missing = true;
};

// Opens (or creates) an embedded RocksDB store in directory `path`.
// Fails with kFailedPrecondition if the directory holds a store of an
// unknown format version, kIOError if RocksDB cannot open it.
LSTASH_EXPORT Result<std::unique_ptr<Store>> OpenRocksDbStore(const std::string& path,
                                                              const RocksDbStoreOptions& options = {});

// A store that lives in memory; same semantics, nothing durable.
LSTASH_EXPORT std::unique_ptr<Store> NewMemoryStore();

}  // namespace lstash
