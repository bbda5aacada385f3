// How the RocksDB store lays out its data. Internal; shared with the tests,
// which damage stored values on purpose.
//
// Column families:
//   log         BE u32 worker + BE u64 index -> an encoded log entry, as given
//   checkpoint  BE u32 worker                 -> checkpoint head (below)
//   copies      BE u32 owner + BE u64 index + BE u64 epoch -> an encoded entry
//   meta        "format"                      -> store format marker (wire::kStoreFormatVersion)
//               "epochs/" + BE u32 worker     -> wire epochs record
//               "committed/" + BE u32 worker  -> wire index record
//               "begun-by/" + BE u32 worker   -> incarnation request value (below)
// Big-endian keys sort by (worker, index) under the default bytewise order,
// so one worker's log is one contiguous key range.
//
// A checkpoint record is kept in a file of its own beside the database
// (checkpoint_file.h), named by worker and generation; the head says which
// generation is the latest checkpoint. A new checkpoint's file is written
// and synced first, under the next generation; then, in one synced write,
// the head that names it (with the log and lineage copies it folds deleted);
// then the files of other generations are removed. A crash before the head
// leaves the old checkpoint whole, and its file is removed when the store
// is next opened.
//
// Checkpoint head: magic "LSCW" (u32), version (u16) 4, epoch (u64), at
// (u64), total_bytes (u64), chunk_bytes (u64), chunk_count (u64),
// generation (u64), all little-endian; chunk_count = ceil(total_bytes /
// chunk_bytes). (Version 1 was the whole record in this value, versions 2
// and 3 named chunks kept in this family; stores holding them have store
// format versions 1 to 3 and are refused at open.)
//
// Incarnation request value: magic "LSIR" (u32), version (u16), epoch (u64),
// client id (u64), request id (u64), all little-endian: which store-server
// request began the worker's latest incarnation (written in the same synced
// batch as its epochs record by BeginIncarnationForRequest, so a retry of
// that request after a server restart gets the same epoch). Builds that do
// not know the key skip it when loading.
#pragma once

#include <lstash/status.h>
#include <lstash/store.h>
#include <lstash/types.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace lstash::rocksdb_layout {

inline constexpr char kLogFamily[] = "log";
inline constexpr char kCheckpointFamily[] = "checkpoint";
inline constexpr char kMetaFamily[] = "meta";
inline constexpr char kCopiesFamily[] = "copies";

inline constexpr char kFormatKey[] = "format";
inline constexpr std::string_view kEpochsPrefix = "epochs/";
inline constexpr std::string_view kCommittedPrefix = "committed/";
inline constexpr std::string_view kBegunByPrefix = "begun-by/";

inline constexpr std::uint32_t kCheckpointValueMagic = 0x4c534357;  // "LSCW"
inline constexpr std::uint16_t kCheckpointValueVersion = 4;
// Record bytes per digested chunk this build writes: small, as a part that
// cuts a chunk reads all of it to check it, and the worker's parts begin
// wherever the snapshot does in the record; large enough that the digest
// table stays a small fraction (1/8192) of the record. Readers take the
// size from the head.
inline constexpr std::uint64_t kCheckpointChunkBytes = std::uint64_t{64} << 10;
inline constexpr std::uint32_t kBegunByValueMagic = 0x4c534952;  // "LSIR"
inline constexpr std::uint16_t kBegunByValueVersion = 1;

std::string WorkerKey(WorkerId worker);
std::string LogKey(WorkerId worker, LogIndex index);
std::string CopyKey(WorkerId owner, LogIndex index, Epoch epoch);
bool ParseCopyKey(std::string_view key, WorkerId* owner, LogIndex* index, Epoch* epoch);
std::string EpochsKey(WorkerId worker);
std::string CommittedKey(WorkerId worker);
std::string BegunByKey(WorkerId worker);

void PutLittleEndian(std::uint64_t v, int size, std::string* out);
std::uint64_t GetLittleEndian(std::string_view bytes);
// The magic number and format version in front of a stored `what`:
// kCorruption for another magic or too few bytes, kFailedPrecondition for
// another version.
Status CheckValuePrefix(std::string_view value, std::uint32_t magic, std::uint16_t version, std::string_view what);

// Parses a log key; false if it is not one.
bool ParseLogKey(std::string_view key, WorkerId* worker, LogIndex* index);

struct CheckpointHead {
  Epoch epoch = 0;
  LogIndex at = 0;
  std::uint64_t total_bytes = 0;
  std::uint64_t chunk_bytes = 0;
  std::uint64_t chunk_count = 0;
  std::uint64_t generation = 0;  // in its file's name

  // Record bytes in chunk `chunk` (< chunk_count).
  std::uint64_t BytesOfChunk(std::uint64_t chunk) const {
    return chunk + 1 < chunk_count ? chunk_bytes : total_bytes - chunk * chunk_bytes;
  }
};

// A head for a record of `total_bytes` in chunks of kCheckpointChunkBytes.
CheckpointHead NewCheckpointHead(Epoch epoch, LogIndex at, std::uint64_t total_bytes, std::uint64_t generation);
std::string EncodeCheckpointHead(const CheckpointHead& head);
// kCorruption for a damaged head (including a chunk count that does not fit
// the sizes), kFailedPrecondition for another version.
Status DecodeCheckpointHead(std::string_view value, CheckpointHead* out);

struct BegunBy {
  Epoch epoch = 0;
  std::uint64_t client_id = 0;
  std::uint64_t request_id = 0;
};
std::string EncodeBegunByValue(const BegunBy& begun_by);
// kCorruption for a damaged value, kFailedPrecondition for another version.
Status DecodeBegunByValue(std::string_view value, BegunBy* out);

// What the store server (lib/storeserver) needs of a RocksDB store beyond
// the Store interface. Every store OpenRocksDbStore returns implements it.
class ServerOps {
 public:
  virtual ~ServerOps() = default;

  // BeginIncarnation on behalf of request (client_id, request_id), made
  // idempotent: if the worker's live incarnation was begun by that same
  // request, returns its epoch and begins nothing. The request ids are
  // stored durably with the new epoch, so this holds across restarts.
  virtual Result<Epoch> BeginIncarnationForRequest(WorkerId worker, std::uint64_t client_id,
                                                   std::uint64_t request_id) = 0;

  // Deletes the lineage copies of `owner` with index <= upto. For a shard
  // that holds copies of a worker whose log lives on another shard (which
  // therefore never learns that the owner committed them).
  virtual Status DropCopies(WorkerId owner, LogIndex upto) = 0;
};

// The ServerOps of a store opened by OpenRocksDbStore; nullptr for any other.
ServerOps* GetServerOps(Store* store);

}  // namespace lstash::rocksdb_layout
