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
// Big-endian keys sort by (worker, index) under the default bytewise order,
// so one worker's log is one contiguous key range.
//
// Checkpoint value: magic "LSCW" (u32), version (u16), epoch (u64), at (u64),
// all little-endian, then the checkpoint record bytes.
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

inline constexpr std::uint32_t kCheckpointValueMagic = 0x4c534357;  // "LSCW"
inline constexpr std::uint16_t kCheckpointValueVersion = 1;

std::string WorkerKey(WorkerId worker);
std::string LogKey(WorkerId worker, LogIndex index);
std::string CopyKey(WorkerId owner, LogIndex index, Epoch epoch);
bool ParseCopyKey(std::string_view key, WorkerId* owner, LogIndex* index, Epoch* epoch);
std::string EpochsKey(WorkerId worker);
std::string CommittedKey(WorkerId worker);

// Parses a log key; false if it is not one.
bool ParseLogKey(std::string_view key, WorkerId* worker, LogIndex* index);

std::string EncodeCheckpointValue(Epoch epoch, LogIndex at, std::string_view record);
// kCorruption for a damaged value, kFailedPrecondition for another version.
// *record points into `value`.
Status DecodeCheckpointValue(std::string_view value, Epoch* epoch, LogIndex* at, std::string_view* record);

}  // namespace lstash::rocksdb_layout
