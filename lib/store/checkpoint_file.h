// Checkpoint files: where the RocksDB store keeps checkpoint records, one
// file per checkpoint, beside the database (see rocksdb_layout.h). Internal;
// shared with the tests, which damage files on purpose.
//
// A record of GiBs passes through no write-ahead log, memtable or
// compaction: it is written once, synced, and named by the head the store
// then commits in RocksDB; a restore reads a part with one pread into the
// reader's buffer. (Kept in RocksDB, a GiB was written twice, left up to
// 256 MiB of log for the next open to replay, and was compacted while the
// new incarnation read it back.)
//
// File "w<worker>-g<generation>.lsck" in the store's "checkpoints" folder:
//   header, kHeaderBytes (the rest zero): magic "LSCF" (u32), version (u16)
//     1, worker (u32), generation (u64), total_bytes (u64), chunk_bytes
//     (u64), all little-endian;
//   the record's total_bytes bytes;
//   an XXH3-64 digest (u64, little-endian) of each chunk of chunk_bytes
//     (the last may be shorter), so a part is checked without reading the
//     rest of the record.
#pragma once

#include <lstash/status.h>
#include <lstash/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "store/rocksdb_layout.h"

namespace lstash::rocksdb_layout {

inline constexpr char kCheckpointDirectory[] = "checkpoints";
inline constexpr std::uint32_t kCheckpointFileMagic = 0x4c534346;  // "LSCF"
inline constexpr std::uint16_t kCheckpointFileVersion = 1;
// Page-aligned, so the record's bytes are too.
inline constexpr std::uint64_t kCheckpointFileHeaderBytes = 4096;

// Makes the names in `dir` as durable as the files they name.
Status SyncDirectory(const std::string& dir);

std::string CheckpointFileName(WorkerId worker, std::uint64_t generation);
// False for any name CheckpointFileName does not make.
bool ParseCheckpointFileName(std::string_view name, WorkerId* worker, std::uint64_t* generation);
// The size of the file that holds `head`'s record.
std::uint64_t CheckpointFileBytes(const CheckpointHead& head);

// Writes the file of one checkpoint. A writer destroyed before Finish
// succeeded removes what it wrote.
class CheckpointFileWriter {
 public:
  CheckpointFileWriter();
  ~CheckpointFileWriter();
  CheckpointFileWriter(const CheckpointFileWriter&) = delete;
  CheckpointFileWriter& operator=(const CheckpointFileWriter&) = delete;

  // Creates the file of (worker, head.generation) in `dir`, replacing any.
  Status Open(const std::string& dir, WorkerId worker, const CheckpointHead& head);
  // The record's next bytes.
  Status Append(std::string_view bytes);
  // Writes the digests; syncs the file, then the folder. REQUIRES: every
  // byte of the record appended.
  Status Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Bytes [offset, offset + length) of `head`'s record, from its file in
// `dir`, into *out (its buffer reused), every chunk they touch checked
// against its digest. REQUIRES: the range within the record, length > 0.
// *missing is set, and nothing else done, if there is no such file.
// kCorruption for a damaged file, kFailedPrecondition for another version.
Status ReadCheckpointFilePart(const std::string& dir, WorkerId worker, const CheckpointHead& head,
                              std::uint64_t offset, std::uint64_t length, std::string* out, bool* missing);

}  // namespace lstash::rocksdb_layout
