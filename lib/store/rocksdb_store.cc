// The RocksDB store: the durable Store every real deployment uses. See
// rocksdb_layout.h for what is stored where.
//
// Each worker's writes (Append, BeginIncarnation, SetEpochStart,
// PutCheckpoint) are serialised by that worker's mutex, held across the
// RocksDB write: the fence check and the write are then one atomic step, so
// once BeginIncarnation returns no older incarnation can write. Different
// workers' writes never share a lock, so their synced writes are group-
// committed by RocksDB. (A store-wide reader/writer lock would do the same,
// but a reader-preferring one lets a steady stream of appends starve
// BeginIncarnation.)
//
// Epochs and committed indexes are cached in memory: the store is their only
// writer, so the cache is exact.

#include <lstash/store.h>
#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/write_batch.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <unordered_map>

#include "store/checkpoint_file.h"
#include "store/checks.h"
#include "store/rocksdb_layout.h"
#include "wire/format.h"

namespace lstash {

namespace rocksdb_layout {

namespace {

void PutBigEndian32(std::uint32_t v, std::string* out) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((v >> shift) & 0xff));
}

void PutBigEndian64(std::uint64_t v, std::string* out) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>((v >> shift) & 0xff));
}

std::uint64_t GetBigEndian(std::string_view bytes) {
  std::uint64_t v = 0;
  for (char c : bytes) v = (v << 8) | static_cast<unsigned char>(c);
  return v;
}

constexpr size_t kCheckpointHeadSize = 4 + 2 + 8 * 6;
constexpr size_t kValuePrefixSize = 4 + 2;

// Chunks of `chunk_bytes` (> 0) that hold `total_bytes`.
std::uint64_t ChunkCount(std::uint64_t total_bytes, std::uint64_t chunk_bytes) {
  return total_bytes / chunk_bytes + (total_bytes % chunk_bytes != 0);
}

}  // namespace

void PutLittleEndian(std::uint64_t v, int size, std::string* out) {
  for (int i = 0; i < size; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t GetLittleEndian(std::string_view bytes) {
  std::uint64_t v = 0;
  for (size_t i = bytes.size(); i > 0; --i) v = (v << 8) | static_cast<unsigned char>(bytes[i - 1]);
  return v;
}

Status CheckValuePrefix(std::string_view value, std::uint32_t magic, std::uint16_t version, std::string_view what) {
  if (value.size() < kValuePrefixSize || GetLittleEndian(value.substr(0, 4)) != magic) {
    return Corruption("stored " + std::string(what) + " has a bad magic number or is truncated (" +
                      std::to_string(value.size()) + " bytes)");
  }
  auto seen = GetLittleEndian(value.substr(4, 2));
  if (seen != version) {
    return FailedPrecondition("stored " + std::string(what) + " has format version " + std::to_string(seen) +
                              " (this build reads version " + std::to_string(version) + ")");
  }
  return Status::OK();
}

std::string WorkerKey(WorkerId worker) {
  std::string key;
  PutBigEndian32(worker, &key);
  return key;
}

std::string LogKey(WorkerId worker, LogIndex index) {
  std::string key;
  key.reserve(12);
  PutBigEndian32(worker, &key);
  PutBigEndian64(index, &key);
  return key;
}

std::string CopyKey(WorkerId owner, LogIndex index, Epoch epoch) {
  std::string key;
  key.reserve(20);
  PutBigEndian32(owner, &key);
  PutBigEndian64(index, &key);
  PutBigEndian64(epoch, &key);
  return key;
}

bool ParseCopyKey(std::string_view key, WorkerId* owner, LogIndex* index, Epoch* epoch) {
  if (key.size() != 20) return false;
  *owner = static_cast<WorkerId>(GetBigEndian(key.substr(0, 4)));
  *index = GetBigEndian(key.substr(4, 8));
  *epoch = GetBigEndian(key.substr(12));
  return true;
}

std::string EpochsKey(WorkerId worker) {
  std::string key(kEpochsPrefix);
  PutBigEndian32(worker, &key);
  return key;
}

std::string CommittedKey(WorkerId worker) {
  std::string key(kCommittedPrefix);
  PutBigEndian32(worker, &key);
  return key;
}

std::string BegunByKey(WorkerId worker) {
  std::string key(kBegunByPrefix);
  PutBigEndian32(worker, &key);
  return key;
}

std::string EncodeBegunByValue(const BegunBy& begun_by) {
  std::string value;
  value.reserve(4 + 2 + 8 + 8 + 8);
  PutLittleEndian(kBegunByValueMagic, 4, &value);
  PutLittleEndian(kBegunByValueVersion, 2, &value);
  PutLittleEndian(begun_by.epoch, 8, &value);
  PutLittleEndian(begun_by.client_id, 8, &value);
  PutLittleEndian(begun_by.request_id, 8, &value);
  return value;
}

Status DecodeBegunByValue(std::string_view value, BegunBy* out) {
  constexpr size_t kSize = 4 + 2 + 8 + 8 + 8;
  LSTASH_RETURN_IF_ERROR(CheckValuePrefix(value, kBegunByValueMagic, kBegunByValueVersion, "incarnation request"));
  if (value.size() != kSize) {
    return Corruption("stored incarnation request has " + std::to_string(value.size()) + " bytes, not " +
                      std::to_string(kSize));
  }
  out->epoch = GetLittleEndian(value.substr(6, 8));
  out->client_id = GetLittleEndian(value.substr(14, 8));
  out->request_id = GetLittleEndian(value.substr(22, 8));
  return Status::OK();
}

bool ParseLogKey(std::string_view key, WorkerId* worker, LogIndex* index) {
  if (key.size() != 12) return false;
  *worker = static_cast<WorkerId>(GetBigEndian(key.substr(0, 4)));
  *index = GetBigEndian(key.substr(4));
  return true;
}

CheckpointHead NewCheckpointHead(Epoch epoch, LogIndex at, std::uint64_t total_bytes, std::uint64_t generation) {
  return CheckpointHead{
      epoch, at, total_bytes, kCheckpointChunkBytes, ChunkCount(total_bytes, kCheckpointChunkBytes), generation};
}

std::string EncodeCheckpointHead(const CheckpointHead& head) {
  std::string value;
  value.reserve(kCheckpointHeadSize);
  PutLittleEndian(kCheckpointValueMagic, 4, &value);
  PutLittleEndian(kCheckpointValueVersion, 2, &value);
  PutLittleEndian(head.epoch, 8, &value);
  PutLittleEndian(head.at, 8, &value);
  PutLittleEndian(head.total_bytes, 8, &value);
  PutLittleEndian(head.chunk_bytes, 8, &value);
  PutLittleEndian(head.chunk_count, 8, &value);
  PutLittleEndian(head.generation, 8, &value);
  return value;
}

Status DecodeCheckpointHead(std::string_view value, CheckpointHead* out) {
  LSTASH_RETURN_IF_ERROR(CheckValuePrefix(value, kCheckpointValueMagic, kCheckpointValueVersion, "checkpoint head"));
  if (value.size() != kCheckpointHeadSize) {
    return Corruption("stored checkpoint head has " + std::to_string(value.size()) + " bytes, not " +
                      std::to_string(kCheckpointHeadSize));
  }
  CheckpointHead head;
  head.epoch = GetLittleEndian(value.substr(6, 8));
  head.at = GetLittleEndian(value.substr(14, 8));
  head.total_bytes = GetLittleEndian(value.substr(22, 8));
  head.chunk_bytes = GetLittleEndian(value.substr(30, 8));
  head.chunk_count = GetLittleEndian(value.substr(38, 8));
  head.generation = GetLittleEndian(value.substr(46, 8));
  if (head.chunk_bytes == 0 || head.chunk_count != ChunkCount(head.total_bytes, head.chunk_bytes)) {
    return Corruption("stored checkpoint head counts " + std::to_string(head.chunk_count) + " chunks of " +
                      std::to_string(head.chunk_bytes) + " bytes for a record of " + std::to_string(head.total_bytes) +
                      " bytes");
  }
  *out = head;
  return Status::OK();
}

}  // namespace rocksdb_layout

namespace {

namespace layout = rocksdb_layout;
using store_internal::CheckAppendShape;
using store_internal::CheckCheckpointAt;
using store_internal::CheckCheckpointOffset;
using store_internal::CheckContiguous;
using store_internal::CheckFence;
using store_internal::CheckRecordSize;
using store_internal::CheckpointPartBytes;

constexpr LogIndex kCopyCollectionStride = 4096;

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  std::string m(what);
  m += ": ";
  m += s.ToString();
  return s.IsCorruption() ? Corruption(m) : IOError(m);
}

std::string_view View(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

class RocksDbStore final : public Store, public layout::ServerOps {
 public:
  static Result<std::unique_ptr<Store>> Open(const std::string& path, const RocksDbStoreOptions& options);

  ~RocksDbStore() override {
    for (rocksdb::ColumnFamilyHandle* h : handles_) {
      rocksdb::Status s = db_->DestroyColumnFamilyHandle(h);
      if (!s.ok()) spdlog::warn("lstash store {}: releasing a column family: {}", path_, s.ToString());
    }
    rocksdb::Status s = db_->Close();
    if (!s.ok()) spdlog::warn("lstash store {}: close: {}", path_, s.ToString());
  }

  Result<Epoch> BeginIncarnation(WorkerId worker) override { return Begin(worker, nullptr); }

  Result<Epoch> BeginIncarnationForRequest(WorkerId worker, std::uint64_t client_id,
                                           std::uint64_t request_id) override {
    layout::BegunBy begun_by{0, client_id, request_id};
    return Begin(worker, &begun_by);
  }

  Status DropCopies(WorkerId owner, LogIndex upto) override {
    const std::string what = "dropping lineage copies of worker " + std::to_string(owner);
    rocksdb::WriteBatch batch;
    rocksdb::Status s = batch.DeleteRange(copies_cf_, layout::CopyKey(owner, 0, 0),
                                          layout::CopyKey(owner, upto, ~Epoch{0}) + '\0');
    if (!s.ok()) return FromRocks(s, what);
    return Write(&batch, options_.sync, what);
  }

  Status SetEpochStart(WorkerId worker, Epoch epoch, LogIndex start) override {
    WorkerState* ws = Find(worker);
    if (ws == nullptr) return CheckFence(worker, epoch, 0);
    std::lock_guard<std::mutex> lock(ws->mu);
    LSTASH_RETURN_IF_ERROR(CheckFence(worker, epoch, ws->current_epoch()));
    std::vector<EpochRecord> epochs = ws->epochs;
    epochs.back().start = start;
    LSTASH_RETURN_IF_ERROR(WriteEpochs(worker, epochs));
    std::lock_guard<std::mutex> epochs_lock(ws->epochs_mu);
    ws->epochs = std::move(epochs);
    return Status::OK();
  }

  Result<std::vector<EpochRecord>> Epochs(WorkerId worker) override {
    WorkerState* ws = Find(worker);
    if (ws == nullptr) return std::vector<EpochRecord>();
    std::lock_guard<std::mutex> epochs_lock(ws->epochs_mu);
    return ws->epochs;
  }

  Status Append(WorkerId worker, Epoch epoch, std::span<const LogRecord> records,
                std::span<const LineageCopy> copies) override {
    LSTASH_RETURN_IF_ERROR(CheckAppendShape(worker, records));
    WorkerState* ws = Find(worker);
    if (ws == nullptr) return CheckFence(worker, epoch, 0);
    std::lock_guard<std::mutex> lock(ws->mu);
    LSTASH_RETURN_IF_ERROR(CheckFence(worker, epoch, ws->current_epoch()));
    LogIndex committed = ws->committed.load(std::memory_order_relaxed);
    LSTASH_RETURN_IF_ERROR(CheckContiguous(worker, records.front().index, committed));
    LogIndex last = records.back().index;
    const std::string what = "append to worker " + std::to_string(worker);

    rocksdb::WriteBatch batch;
    rocksdb::Status s;
    // Records up to the committed index are already stored (or folded into
    // a checkpoint); committed history is never rewritten.
    for (const LogRecord& r : records) {
      if (r.index <= committed) continue;
      s = batch.Put(log_cf_, layout::LogKey(worker, r.index), r.bytes);
      if (!s.ok()) return FromRocks(s, what);
    }
    for (const LineageCopy& c : copies) {
      WorkerState* owner = Find(c.owner);
      if (owner != nullptr && c.index <= owner->committed.load(std::memory_order_acquire)) continue;
      s = batch.Put(copies_cf_, layout::CopyKey(c.owner, c.index, c.epoch), c.bytes);
      if (!s.ok()) return FromRocks(s, what);
    }
    bool collect = false;
    if (last > committed) {
      std::string index_record;
      wire::EncodeIndex(last, &index_record);
      s = batch.Put(meta_cf_, layout::CommittedKey(worker), index_record);
      if (!s.ok()) return FromRocks(s, what);
      // Copies of what this worker now commits are garbage. One range delete
      // per kCopyCollectionStride committed entries, not per append: range
      // tombstones pile up faster than compaction clears them otherwise.
      if (last - ws->copies_collected_upto >= kCopyCollectionStride) {
        s = batch.DeleteRange(copies_cf_, layout::CopyKey(worker, 0, 0),
                              layout::CopyKey(worker, last, ~Epoch{0}) + '\0');
        if (!s.ok()) return FromRocks(s, what);
        collect = true;
      }
    }
    if (batch.Count() == 0) return Status::OK();
    LSTASH_RETURN_IF_ERROR(Write(&batch, options_.sync, what));
    if (last > committed) ws->committed.store(last, std::memory_order_release);
    if (collect) ws->copies_collected_upto = last;
    return Status::OK();
  }

  Status ReadCopies(WorkerId owner, LogIndex from, std::vector<LineageCopy>* out) override {
    out->clear();
    std::string start = layout::CopyKey(owner, from, 0);
    std::string limit = layout::WorkerKey(owner + 1);
    rocksdb::Slice limit_slice(limit);
    rocksdb::ReadOptions read_options;
    if (owner != ~WorkerId{0}) read_options.iterate_upper_bound = &limit_slice;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, copies_cf_));
    for (it->Seek(start); it->Valid(); it->Next()) {
      LineageCopy c;
      if (!layout::ParseCopyKey(View(it->key()), &c.owner, &c.index, &c.epoch) || c.owner != owner) {
        return Corruption("lstash store " + path_ + ": malformed lineage copy key for worker " + std::to_string(owner));
      }
      c.bytes = it->value().ToString();
      out->push_back(std::move(c));
    }
    if (!it->status().ok()) return FromRocks(it->status(), "reading lineage copies of worker " + std::to_string(owner));
    return Status::OK();
  }

  Status ReadLog(WorkerId worker, LogIndex from, std::vector<LogRecord>* out) override {
    out->clear();
    std::string start = layout::LogKey(worker, from);
    std::string limit = layout::LogKey(worker, ~LogIndex{0}) + '\0';  // past the worker's last key
    rocksdb::Slice limit_slice(limit);
    rocksdb::ReadOptions read_options;
    read_options.iterate_upper_bound = &limit_slice;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, log_cf_));
    for (it->Seek(start); it->Valid(); it->Next()) {
      WorkerId key_worker = 0;
      LogIndex index = 0;
      if (!layout::ParseLogKey(View(it->key()), &key_worker, &index) || key_worker != worker) {
        return Corruption("lstash store " + path_ + ": malformed log key in worker " + std::to_string(worker) +
                          "'s log");
      }
      out->push_back(LogRecord{index, it->value().ToString()});
    }
    if (!it->status().ok()) return FromRocks(it->status(), "reading the log of worker " + std::to_string(worker));
    return Status::OK();
  }

  Status ReadCommitted(std::span<const WorkerId> workers, std::span<LogIndex> out) override {
    if (out.size() != workers.size()) {
      return InvalidArgument("ReadCommitted: " + std::to_string(workers.size()) + " workers but " +
                             std::to_string(out.size()) + " outputs");
    }
    std::shared_lock<std::shared_mutex> lock(map_mu_);
    for (size_t i = 0; i < workers.size(); ++i) {
      auto it = workers_.find(workers[i]);
      out[i] = it == workers_.end() ? 0 : it->second->committed.load(std::memory_order_acquire);
    }
    return Status::OK();
  }

  Status PutCheckpointFrom(WorkerId worker, Epoch epoch, LogIndex at, std::uint64_t size,
                           const RecordParts& parts) override {
    WorkerState* ws = Find(worker);
    if (ws == nullptr) return CheckFence(worker, epoch, 0);
    std::lock_guard<std::mutex> lock(ws->mu);
    LSTASH_RETURN_IF_ERROR(CheckFence(worker, epoch, ws->current_epoch()));
    std::string what = "checkpoint of worker " + std::to_string(worker);

    // The previous checkpoint bounds this one from below (see checks.h), and
    // its generation comes before this one's.
    layout::CheckpointHead previous;
    rocksdb::PinnableSlice previous_value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), checkpoint_cf_, layout::WorkerKey(worker), &previous_value);
    if (s.ok()) {
      LSTASH_RETURN_IF_ERROR(layout::DecodeCheckpointHead(View(previous_value), &previous).WithContext(what));
    } else if (!s.IsNotFound()) {
      return FromRocks(s, what);
    }
    LSTASH_RETURN_IF_ERROR(CheckCheckpointAt(worker, at, ws->committed.load(std::memory_order_relaxed), previous.at));

    // The file first, as the parts come, under a generation no head names
    // yet (see rocksdb_layout.h).
    const layout::CheckpointHead head = layout::NewCheckpointHead(epoch, at, size, previous.generation + 1);
    layout::CheckpointFileWriter file;
    LSTASH_RETURN_IF_ERROR(file.Open(checkpoint_dir_, worker, head).WithContext(what));
    std::uint64_t given = 0;
    const Status fed = parts([&](std::string_view part) -> Status {
      given += part.size();
      if (given > size) return Status::OK();  // refused below
      return file.Append(part).WithContext(what);
    });
    LSTASH_RETURN_IF_ERROR(fed);
    LSTASH_RETURN_IF_ERROR(CheckRecordSize(worker, size, given));
    LSTASH_RETURN_IF_ERROR(file.Finish().WithContext(what));
    // Then, in one write, the head that names it.
    rocksdb::WriteBatch batch;
    s = batch.Put(checkpoint_cf_, layout::WorkerKey(worker), layout::EncodeCheckpointHead(head));
    if (!s.ok()) return FromRocks(s, what);
    if (at > 0) {
      // Keys (worker, 0) .. (worker, at) inclusive: the end key sorts just
      // after (worker, at).
      s = batch.DeleteRange(log_cf_, layout::LogKey(worker, 0), layout::LogKey(worker, at) + '\0');
      if (!s.ok()) return FromRocks(s, what);
      // Copies of what the checkpoint folds are garbage too. (Collected here
      // rather than on every append: a range tombstone per write would pile
      // up faster than compaction clears them.)
      s = batch.DeleteRange(copies_cf_, layout::CopyKey(worker, 0, 0), layout::CopyKey(worker, at, ~Epoch{0}) + '\0');
      if (!s.ok()) return FromRocks(s, what);
    }
    LSTASH_RETURN_IF_ERROR(Write(&batch, /*sync=*/true, what));
    RemoveCheckpointFiles(worker, head.generation);
    return Status::OK();
  }

  Result<bool> ReadCheckpointPartInto(WorkerId worker, std::uint64_t offset, std::uint64_t max_bytes,
                                      CheckpointPart* part) override {
    const std::string what = "checkpoint of worker " + std::to_string(worker);
    // A newer checkpoint may replace this one, and remove its file, between
    // reading the head and opening the file: then the newer one is read.
    constexpr int kTries = 8;
    std::optional<std::uint64_t> generation_missing;
    for (int tries = 1;; ++tries) {
      rocksdb::PinnableSlice value;
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), checkpoint_cf_, layout::WorkerKey(worker), &value);
      if (s.IsNotFound()) return false;
      if (!s.ok()) return FromRocks(s, what);
      layout::CheckpointHead head;
      LSTASH_RETURN_IF_ERROR(layout::DecodeCheckpointHead(View(value), &head).WithContext(what));
      if (head.generation == generation_missing) {
        return Corruption(what + ": its file " + checkpoint_dir_ + "/" +
                          layout::CheckpointFileName(worker, head.generation) + " is missing");
      }
      LSTASH_RETURN_IF_ERROR(CheckCheckpointOffset(worker, offset, head.total_bytes));
      part->epoch = head.epoch;
      part->at = head.at;
      part->total_bytes = head.total_bytes;
      const std::uint64_t length = CheckpointPartBytes(offset, max_bytes, head.total_bytes);
      if (length == 0) {
        part->bytes.clear();
        return true;
      }
      bool missing = false;
      LSTASH_RETURN_IF_ERROR(layout::ReadCheckpointFilePart(checkpoint_dir_, worker, head, offset, length,
                                                            &part->bytes, &missing)
                                 .WithContext(what));
      if (!missing) return true;
      if (tries == kTries) return Unavailable(what + ": replaced " + std::to_string(kTries) + " times while read");
      generation_missing = head.generation;
    }
  }

 private:
  struct WorkerState {
    // Serialises the worker's writes; held across the RocksDB write.
    std::mutex mu;
    // Lets Epochs() read without waiting behind a write.
    std::mutex epochs_mu;
    // Written holding both mu and epochs_mu, so either suffices to read.
    std::vector<EpochRecord> epochs;  // GUARDED_BY(mu, epochs_mu)
    // Written under mu; read lock-free by ReadCommitted.
    std::atomic<LogIndex> committed{0};
    // Copies of this worker's entries up to here are deleted.
    LogIndex copies_collected_upto = 0;  // GUARDED_BY(mu)

    // REQUIRES: mu held.
    Epoch current_epoch() const { return epochs.empty() ? 0 : epochs.back().epoch; }
  };

  RocksDbStore(std::string path, const RocksDbStoreOptions& options, rocksdb::DB* db,
               std::vector<rocksdb::ColumnFamilyHandle*> handles)
      : path_(std::move(path)),
        checkpoint_dir_(path_ + "/" + layout::kCheckpointDirectory),
        options_(options),
        db_(db),
        handles_(std::move(handles)),
        log_cf_(handles_[1]),
        checkpoint_cf_(handles_[2]),
        meta_cf_(handles_[3]),
        copies_cf_(handles_[4]) {}

  Status CheckFormat();
  Status LoadMeta();
  // Makes the checkpoint folder, and removes the files no head names: a
  // crash left them, before their head or before they were removed.
  Status OpenCheckpointDirectory();

  // Removes the checkpoint files of `worker` but that of `generation`.
  // Best effort: one left is removed when the store is next opened.
  void RemoveCheckpointFiles(WorkerId worker, std::uint64_t generation) {
    Result<int> removed = RemoveCheckpointFilesIf(
        [&](WorkerId file_worker, std::uint64_t file_generation) -> Result<bool> {
          return file_worker == worker && file_generation != generation;
        });
    if (!removed.ok()) spdlog::warn("lstash store {}: {}", path_, removed.status().ToString());
  }

  // Removes the checkpoint files for which `stale(worker, generation)`
  // holds, and says how many; files of other names stay.
  Result<int> RemoveCheckpointFilesIf(const std::function<Result<bool>(WorkerId, std::uint64_t)>& stale) {
    std::error_code ec;
    int removed = 0;
    for (std::filesystem::directory_iterator it(checkpoint_dir_, ec), end; !ec && it != end; it.increment(ec)) {
      WorkerId worker = 0;
      std::uint64_t generation = 0;
      if (!layout::ParseCheckpointFileName(it->path().filename().string(), &worker, &generation)) continue;
      LSTASH_ASSIGN_OR_RETURN(const bool remove, stale(worker, generation));
      std::error_code remove_ec;
      if (remove && std::filesystem::remove(it->path(), remove_ec)) ++removed;
    }
    if (ec) return IOError("listing " + checkpoint_dir_ + ": " + ec.message());
    return removed;
  }

  // BeginIncarnation; with `begun_by`, idempotent per request (ServerOps).
  Result<Epoch> Begin(WorkerId worker, layout::BegunBy* begun_by) {
    WorkerState* ws = FindOrCreate(worker);
    std::lock_guard<std::mutex> lock(ws->mu);
    if (begun_by != nullptr && !ws->epochs.empty()) {
      rocksdb::PinnableSlice value;
      rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_cf_, layout::BegunByKey(worker), &value);
      if (s.ok()) {
        layout::BegunBy stored;
        LSTASH_RETURN_IF_ERROR(layout::DecodeBegunByValue(View(value), &stored)
                                   .WithContext("lstash store " + path_ + ": worker " + std::to_string(worker)));
        // Only the live incarnation's request: an older one's retry must not
        // be handed an epoch that is already fenced.
        if (stored.client_id == begun_by->client_id && stored.request_id == begun_by->request_id &&
            stored.epoch == ws->current_epoch()) {
          return stored.epoch;
        }
      } else if (!s.IsNotFound()) {
        return FromRocks(s, "incarnation request of worker " + std::to_string(worker));
      }
    }
    std::vector<EpochRecord> epochs = ws->epochs;
    Epoch next = epochs.empty() ? 1 : epochs.back().epoch + 1;
    epochs.push_back(EpochRecord{next, 0});
    if (begun_by != nullptr) begun_by->epoch = next;
    // Synced whatever options_.sync says: a fence that is lost in a crash
    // would let a zombie write again.
    LSTASH_RETURN_IF_ERROR(WriteEpochs(worker, epochs, begun_by));
    std::lock_guard<std::mutex> epochs_lock(ws->epochs_mu);
    ws->epochs = std::move(epochs);
    return next;
  }

  WorkerState* Find(WorkerId worker) {
    std::shared_lock<std::shared_mutex> lock(map_mu_);
    auto it = workers_.find(worker);
    return it == workers_.end() ? nullptr : it->second.get();
  }

  WorkerState* FindOrCreate(WorkerId worker) {
    if (WorkerState* ws = Find(worker)) return ws;
    std::unique_lock<std::shared_mutex> lock(map_mu_);
    auto& slot = workers_[worker];
    if (slot == nullptr) slot = std::make_unique<WorkerState>();
    return slot.get();
  }

  // With `begun_by`, records in the same write which request began the
  // latest incarnation.
  Status WriteEpochs(WorkerId worker, const std::vector<EpochRecord>& epochs,
                     const layout::BegunBy* begun_by = nullptr) {
    std::string record;
    wire::EncodeEpochs(epochs, &record);
    rocksdb::WriteBatch batch;
    std::string what = "epochs of worker " + std::to_string(worker);
    rocksdb::Status s = batch.Put(meta_cf_, layout::EpochsKey(worker), record);
    if (!s.ok()) return FromRocks(s, what);
    if (begun_by != nullptr) {
      s = batch.Put(meta_cf_, layout::BegunByKey(worker), layout::EncodeBegunByValue(*begun_by));
      if (!s.ok()) return FromRocks(s, what);
    }
    return Write(&batch, /*sync=*/true, what);
  }

  Status Write(rocksdb::WriteBatch* batch, bool sync, std::string_view what) {
    rocksdb::WriteOptions write_options;
    write_options.sync = sync;
    rocksdb::Status s = db_->Write(write_options, batch);
    if (!s.ok()) return FromRocks(s, what);
    return Status::OK();
  }

  const std::string path_;
  const std::string checkpoint_dir_;
  const RocksDbStoreOptions options_;
  const std::unique_ptr<rocksdb::DB> db_;
  // default, log, checkpoint, meta, copies; released before db_ is closed.
  const std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* const log_cf_;
  rocksdb::ColumnFamilyHandle* const checkpoint_cf_;
  rocksdb::ColumnFamilyHandle* const meta_cf_;
  rocksdb::ColumnFamilyHandle* const copies_cf_;

  // Workers are added (never removed) by BeginIncarnation and LoadMeta, so a
  // WorkerState* stays valid without the lock.
  std::shared_mutex map_mu_;
  std::unordered_map<WorkerId, std::unique_ptr<WorkerState>> workers_;  // GUARDED_BY(map_mu_)
};

Result<std::unique_ptr<Store>> RocksDbStore::Open(const std::string& path, const RocksDbStoreOptions& options) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = true;
  db_options.IncreaseParallelism(2);
  // Every append also rewrites a meta key, and a WAL file lives until every
  // family with data in it has flushed: without a bound, the small meta
  // family would hold gigabytes of log WAL (and its replay time) hostage.
  db_options.max_total_wal_size = 256 << 20;

  // The log takes nearly all writes; the other families are small.
  rocksdb::ColumnFamilyOptions log_options;
  log_options.write_buffer_size = 64 << 20;

  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {layout::kLogFamily, log_options},
      {layout::kCheckpointFamily, rocksdb::ColumnFamilyOptions()},
      {layout::kMetaFamily, rocksdb::ColumnFamilyOptions()},
      {layout::kCopiesFamily, rocksdb::ColumnFamilyOptions()},
  };
  rocksdb::DB* db = nullptr;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status s = rocksdb::DB::Open(db_options, path, families, &handles, &db);
  if (!s.ok()) return IOError("cannot open lstash store at " + path + ": " + s.ToString());

  std::unique_ptr<RocksDbStore> store(new RocksDbStore(path, options, db, std::move(handles)));
  LSTASH_RETURN_IF_ERROR(store->CheckFormat());
  LSTASH_RETURN_IF_ERROR(store->LoadMeta());
  LSTASH_RETURN_IF_ERROR(store->OpenCheckpointDirectory());
  return std::unique_ptr<Store>(std::move(store));
}

Status RocksDbStore::OpenCheckpointDirectory() {
  const std::string what = "lstash store at " + path_;
  std::error_code ec;
  const bool made = std::filesystem::create_directory(checkpoint_dir_, ec);
  if (ec) return IOError(what + ": making " + checkpoint_dir_ + ": " + ec.message());
  // Synced into its parent, as a file in it is synced into it.
  if (made) LSTASH_RETURN_IF_ERROR(layout::SyncDirectory(path_).WithContext(what));
  Result<int> removed = RemoveCheckpointFilesIf([&](WorkerId worker, std::uint64_t generation) -> Result<bool> {
    rocksdb::PinnableSlice value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), checkpoint_cf_, layout::WorkerKey(worker), &value);
    if (s.IsNotFound()) return true;
    if (!s.ok()) return FromRocks(s, "checkpoint head of worker " + std::to_string(worker));
    layout::CheckpointHead head;
    // A damaged head is reported when its checkpoint is read; its file stays.
    if (!layout::DecodeCheckpointHead(View(value), &head).ok()) return false;
    return head.generation != generation;
  });
  if (!removed.ok()) return removed.status().WithContext(what);
  if (*removed > 0) spdlog::info("{}: removed {} checkpoint files no head names", what, *removed);
  return Status::OK();
}

// Writes the format marker into a new store; refuses a store written by
// another format version, or a database that holds data but no marker.
Status RocksDbStore::CheckFormat() {
  std::string marker;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), meta_cf_, layout::kFormatKey, &marker);
  if (s.ok()) {
    Status st = wire::CheckFormatMarker(marker);
    if (!st.ok()) return st.WithContext("lstash store at " + path_);
    return Status::OK();
  }
  if (!s.IsNotFound()) return FromRocks(s, "lstash store at " + path_ + ": reading the format marker");

  for (rocksdb::ColumnFamilyHandle* h : handles_) {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), h));
    it->SeekToFirst();
    if (!it->status().ok()) return FromRocks(it->status(), "lstash store at " + path_);
    if (it->Valid()) {
      return FailedPrecondition("lstash store at " + path_ + " holds data in column family '" + h->GetName() +
                                "' but has no format marker: not an lstash store");
    }
  }
  wire::EncodeFormatMarker(&marker);
  rocksdb::WriteOptions write_options;
  write_options.sync = true;
  s = db_->Put(write_options, meta_cf_, layout::kFormatKey, marker);
  if (!s.ok()) return FromRocks(s, "lstash store at " + path_ + ": writing the format marker");
  return Status::OK();
}

// Fills the epoch and committed-index caches.
Status RocksDbStore::LoadMeta() {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_cf_));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    std::string_view key = View(it->key());
    std::string_view value = View(it->value());
    bool is_epochs = key.starts_with(layout::kEpochsPrefix);
    bool is_committed = key.starts_with(layout::kCommittedPrefix);
    // The format marker, and incarnation requests (read when needed).
    if (!is_epochs && !is_committed) continue;
    std::string_view worker_bytes = key.substr(is_epochs ? layout::kEpochsPrefix.size()
                                                         : layout::kCommittedPrefix.size());
    if (worker_bytes.size() != 4) return Corruption("lstash store at " + path_ + ": malformed meta key");
    WorkerId worker = 0;
    for (char c : worker_bytes) worker = (worker << 8) | static_cast<unsigned char>(c);

    WorkerState* ws = FindOrCreate(worker);
    std::lock_guard<std::mutex> lock(ws->mu);
    if (is_epochs) {
      std::vector<EpochRecord> epochs;
      LSTASH_RETURN_IF_ERROR(wire::DecodeEpochs(value, &epochs)
                                 .WithContext("lstash store at " + path_ + ": epochs of worker " +
                                              std::to_string(worker)));
      std::lock_guard<std::mutex> epochs_lock(ws->epochs_mu);
      ws->epochs = std::move(epochs);
    } else {
      LogIndex committed = 0;
      LSTASH_RETURN_IF_ERROR(wire::DecodeIndex(value, &committed)
                                 .WithContext("lstash store at " + path_ + ": committed index of worker " +
                                              std::to_string(worker)));
      ws->committed.store(committed, std::memory_order_release);
    }
  }
  if (!it->status().ok()) return FromRocks(it->status(), "lstash store at " + path_ + ": loading metadata");
  return Status::OK();
}

}  // namespace

Result<std::unique_ptr<Store>> OpenRocksDbStore(const std::string& path, const RocksDbStoreOptions& options) {
  return RocksDbStore::Open(path, options);
}

rocksdb_layout::ServerOps* rocksdb_layout::GetServerOps(Store* store) {
  return dynamic_cast<RocksDbStore*>(store);
}

}  // namespace lstash
