// How the RocksDB store lays out its data. Internal; shared with the tests,
// which damage stored values on purpose.
//
// Column families:
//   log         BE u32 worker + BE u64 index -> an encoded log entry, as given
//   checkpoint  BE u32 worker                 -> checkpoint head (below)
//               BE u32 worker + BE u64 generation + BE u64 chunk
//                                             -> checkpoint chunk (below)
//   copies      BE u32 owner + BE u64 index + BE u64 epoch -> an encoded entry
//   meta        "format"                      -> store format marker (wire::kStoreFormatVersion)
//               "epochs/" + BE u32 worker     -> wire epochs record
//               "committed/" + BE u32 worker  -> wire index record
//               "begun-by/" + BE u32 worker   -> incarnation request value (below)
// Big-endian keys sort by (worker, index) under the default bytewise order,
// so one worker's log is one contiguous key range.
//
// A checkpoint record is stored in chunks of chunk_bytes (the last may be
// shorter), so a part of a record of GiBs is read without reading the rest;
// the head says which chunks make up the latest checkpoint: those of its
// generation. A new checkpoint's chunks are written first, under the next
// generation, in batches of a few tens of MiB (so storing GiBs never holds
// them all in one write batch and memtable); then, in one atomic write, the
// head that names them and the deletion of every other chunk of the worker
// (its predecessor's, and any a crash mid-write left). A crash before that
// leaves the old checkpoint whole.
//
// Checkpoint head: magic "LSCW" (u32), version (u16) 3, epoch (u64), at
// (u64), total_bytes (u64), chunk_bytes (u64), chunk_count (u64),
// generation (u64), all little-endian; chunk_count = ceil(total_bytes /
// chunk_bytes). (Version 1 was the whole record in this value, version 2
// had chunks without generations, written in one batch; stores holding
// them have store format versions 1 and 2 and are refused at open.)
//
// Checkpoint chunk: magic "LSCC" (u32), version (u16) 1, little-endian, then
// bytes [chunk * chunk_bytes, ...) of the record.
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
inline constexpr std::uint16_t kCheckpointValueVersion = 3;
inline constexpr std::uint32_t kCheckpointChunkMagic = 0x4c534343;  // "LSCC"
inline constexpr std::uint16_t kCheckpointChunkVersion = 1;
// Record bytes per chunk this build writes: a few MiB, so a part read reads
// less than a chunk beyond each end of the part, and a chunk is far below
// RocksDB's 4 GiB limit on one value. Readers take the size from the head.
inline constexpr std::uint64_t kCheckpointChunkBytes = std::uint64_t{4} << 20;
// Chunks per write batch while a checkpoint is stored (64 MiB).
inline constexpr std::uint64_t kCheckpointChunksPerBatch = 16;
inline constexpr size_t kCheckpointChunkHeaderSize = 4 + 2;
inline constexpr std::uint32_t kBegunByValueMagic = 0x4c534952;  // "LSIR"
inline constexpr std::uint16_t kBegunByValueVersion = 1;

std::string WorkerKey(WorkerId worker);
std::string LogKey(WorkerId worker, LogIndex index);
std::string CopyKey(WorkerId owner, LogIndex index, Epoch epoch);
bool ParseCopyKey(std::string_view key, WorkerId* owner, LogIndex* index, Epoch* epoch);
std::string EpochsKey(WorkerId worker);
std::string CommittedKey(WorkerId worker);
std::string BegunByKey(WorkerId worker);

// Parses a log key; false if it is not one.
bool ParseLogKey(std::string_view key, WorkerId* worker, LogIndex* index);

struct CheckpointHead {
  Epoch epoch = 0;
  LogIndex at = 0;
  std::uint64_t total_bytes = 0;
  std::uint64_t chunk_bytes = 0;
  std::uint64_t chunk_count = 0;
  std::uint64_t generation = 0;  // in its chunks' keys

  // Record bytes in chunk `chunk` (< chunk_count).
  std::uint64_t BytesOfChunk(std::uint64_t chunk) const {
    return chunk + 1 < chunk_count ? chunk_bytes : total_bytes - chunk * chunk_bytes;
  }
};

// A head for a record of `total_bytes` in chunks of kCheckpointChunkBytes.
CheckpointHead NewCheckpointHead(Epoch epoch, LogIndex at, std::uint64_t total_bytes, std::uint64_t generation);
std::string CheckpointChunkKey(WorkerId worker, std::uint64_t generation, std::uint64_t chunk);
// A key after every chunk key of `worker` (an exclusive range end).
std::string CheckpointChunksEnd(WorkerId worker);
std::string EncodeCheckpointHead(const CheckpointHead& head);
// kCorruption for a damaged head (including a chunk count that does not fit
// the sizes), kFailedPrecondition for another version.
Status DecodeCheckpointHead(std::string_view value, CheckpointHead* out);
// The magic and version in front of every chunk's bytes.
std::string CheckpointChunkHeader();
// The record bytes of a chunk value, which must hold `expected_bytes`:
// kCorruption if it does not, kFailedPrecondition for another version.
// *bytes points into `value`.
Status DecodeCheckpointChunk(std::string_view value, std::uint64_t expected_bytes, std::string_view* bytes);

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
