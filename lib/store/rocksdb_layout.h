// How the RocksDB store lays out its data. Internal; shared with the tests,
// which damage stored values on purpose.
//
// Column families:
//   log         BE u32 worker + BE u64 index -> an encoded log entry, as given
//   checkpoint  BE u32 worker                 -> checkpoint value (below)
//   copies      BE u32 owner + BE u64 index + BE u64 epoch -> an encoded entry
//   meta        "format"                      -> wire format marker
//               "epochs/" + BE u32 worker     -> wire epochs record
//               "committed/" + BE u32 worker  -> wire index record
//               "begun-by/" + BE u32 worker   -> incarnation request value (below)
// Big-endian keys sort by (worker, index) under the default bytewise order,
// so one worker's log is one contiguous key range.
//
// Checkpoint value: magic "LSCW" (u32), version (u16), epoch (u64), at (u64),
// all little-endian, then the checkpoint record bytes.
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
inline constexpr std::uint16_t kCheckpointValueVersion = 1;
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

std::string EncodeCheckpointValue(Epoch epoch, LogIndex at, std::string_view record);
// kCorruption for a damaged value, kFailedPrecondition for another version.
// *record points into `value`.
Status DecodeCheckpointValue(std::string_view value, Epoch* epoch, LogIndex* at, std::string_view* record);

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
