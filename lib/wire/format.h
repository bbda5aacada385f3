// The wire and storage formats: every record lstash sends or stores.
//
// Each record starts with a magic number (what it is) and a format version
// (how to read it); the rest is laid out as Cereal's portable binary archive
// (little-endian on every host). The codec writes and reads those bytes
// directly -- eight to ten times fewer instructions than going through an
// archive per field, which matters on every message -- and
// tests/wire/format_test.cc proves, with Cereal's own archives, that the
// bytes are exactly what Cereal writes and reads. Decoders validate everything they read:
// truncation, bad magic, unknown version, unknown enum values, and lengths or
// counts that could not fit in the remaining bytes are rejected with
// kCorruption (kFailedPrecondition for an unknown version) before any
// allocation, so a hostile input can make a decoder allocate at most about
// as much as the input's own size.
#pragma once

#include <lstash/status.h>
#include <lstash/store.h>
#include <lstash/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lstash::wire {

inline constexpr std::uint32_t kEntryMagic = 0x4c53454e;       // "LSEN"
inline constexpr std::uint32_t kFrameMagic = 0x4c534652;       // "LSFR"
inline constexpr std::uint32_t kCheckpointMagic = 0x4c53434b;  // "LSCK"
inline constexpr std::uint32_t kMetaMagic = 0x4c534d54;        // "LSMT"
inline constexpr std::uint16_t kFormatVersion = 1;
// The version in a store's format marker: how the store lays out its
// records (which keys hold what), apart from each record's own version.
//   1  a checkpoint is one value
//   2  a checkpoint is a head and chunks (lib/store/rocksdb_layout.h)
//   3  ... and its chunks carry a generation, written before the head
//   4  a checkpoint is a head and a file beside the database
//      (lib/store/checkpoint_file.h)
inline constexpr std::uint16_t kStoreFormatVersion = 4;

// A causal dependency: the owner's log up to `index`, as written by
// incarnations up to `epoch`.
struct Dep {
  WorkerId owner = 0;
  Epoch epoch = 0;
  LogIndex index = 0;
  friend bool operator==(const Dep&, const Dep&) = default;
};

enum class EntryKind : std::uint8_t { kExecute = 1, kValue = 2 };
enum class ValueKind : std::uint8_t { kRandom = 1, kNow = 2, kChoice = 3 };

// One entry of a worker's log.
//   kExecute: the owner ran `task` next (receipt order). The task's payload
//     is inline, or (large payloads) only its size and digest are logged and
//     the submitter keeps the bytes.
//   kValue: the running task obtained a nondeterministic value.
struct LogEntry {
  WorkerId owner = 0;
  Epoch epoch = 0;  // incarnation that created the entry
  LogIndex index = 0;
  EntryKind kind = EntryKind::kExecute;

  // kExecute
  TaskId task;
  std::uint64_t channel_seq = 0;  // position on the submitter->owner channel
  bool start = false;             // the owner's start task
  std::vector<Dep> deps;          // uncommitted lineage the task depended on
  bool payload_inline = true;
  std::string payload;            // when payload_inline
  std::uint64_t payload_size = 0; // when !payload_inline
  std::uint64_t payload_digest = 0;

  // kValue
  ValueKind value_kind = ValueKind::kRandom;
  std::string value;

  friend bool operator==(const LogEntry&, const LogEntry&) = default;
};

void EncodeEntry(const LogEntry& entry, std::string* out);  // replaces *out
Status DecodeEntry(std::string_view bytes, LogEntry* out);

enum class FrameKind : std::uint8_t {
  kTask = 1,             // a submitted task with piggybacked lineage
  kAck = 2,              // receiver -> sender: delivered/released positions
  kRecoveryRequest = 3,  // new incarnation -> everyone: send me my lineage
  kRecoveryReply = 4,    // survivor -> new incarnation: what I hold of yours
  kEpochNotice = 5,      // "I am at this epoch, starting at this index"
};

struct FrameHeader {
  FrameKind kind = FrameKind::kTask;
  WorkerId sender = 0;
  Epoch sender_epoch = 0;
  LogIndex sender_epoch_start = 0;  // 0 while the sender is still gathering
  WorkerId dest = 0;
  Epoch dest_epoch = 0;             // the sender's view of dest's epoch
  friend bool operator==(const FrameHeader&, const FrameHeader&) = default;
};

struct Watermark {
  WorkerId owner = 0;
  LogIndex committed = 0;
  friend bool operator==(const Watermark&, const Watermark&) = default;
};

// A piggybacked or gathered entry: its exact bytes, fully validated, and the
// fields a holder needs (owner, epoch, index, kind; for kExecute also task,
// channel_seq, start, payload_inline and the payload size/digest). deps,
// payload and value are left empty: decode `bytes` with DecodeEntry when the
// whole entry is needed (recovery).
struct WireEntry {
  LogEntry entry;
  std::string bytes;
};

struct DecodedFrame {
  FrameHeader header;
  // kTask
  std::uint64_t seq = 0;          // TaskId{header.sender, seq}
  std::uint64_t channel_seq = 0;
  std::string payload;
  std::vector<Dep> deps;
  // kTask, kRecoveryReply
  std::vector<WireEntry> entries;
  // kTask, kAck
  std::vector<Watermark> watermarks;
  // kTask, kAck, kRecoveryReply: the sender's acknowledgement of the channel
  // in the other direction (dest -> sender): the last channel sequence number
  // it holds, and the last it will never need resent.
  std::uint64_t delivered = 0;
  std::uint64_t released = 0;
};

// Encoders append to *out (after clearing it). `entries` are already-encoded
// entries (EncodeEntry output), copied verbatim.
void EncodeTaskFrame(const FrameHeader& header, std::uint64_t seq, std::uint64_t channel_seq,
                     std::uint64_t delivered, std::uint64_t released, std::string_view payload,
                     std::span<const Dep> deps, std::span<const std::string_view> entries,
                     std::span<const Watermark> watermarks, std::string* out);
void EncodeAckFrame(const FrameHeader& header, std::uint64_t delivered, std::uint64_t released,
                    std::span<const Watermark> watermarks, std::string* out);
void EncodeRecoveryReplyFrame(const FrameHeader& header, std::uint64_t delivered, std::uint64_t released,
                              std::span<const std::string_view> entries, std::string* out);
// kRecoveryRequest and kEpochNotice have no body.
void EncodeHeaderOnlyFrame(const FrameHeader& header, std::string* out);

// Validates and decodes any frame, including every nested entry.
Status DecodeFrame(std::string_view bytes, DecodedFrame* out);

// Encodes a (decoded) frame with the encoder for its kind; for a frame
// DecodeFrame accepted, returns exactly the bytes it was decoded from.
void EncodeFrame(const DecodedFrame& frame, std::string* out);

// A message the sender keeps until the receiver no longer needs it.
struct OutboxMessage {
  WorkerId dest = 0;
  TaskId id;
  std::uint64_t channel_seq = 0;
  std::string payload;
  std::vector<Dep> deps;
  friend bool operator==(const OutboxMessage&, const OutboxMessage&) = default;
};

// Library state saved with an engine snapshot. Vectors indexed by worker id
// have num_workers elements.
struct CheckpointRecord {
  WorkerId worker = 0;
  Epoch epoch = 0;
  LogIndex at = 0;
  std::uint32_t num_workers = 0;
  std::uint64_t next_seq = 0;                     // next TaskId.seq to submit
  std::vector<std::uint64_t> next_channel_seq;    // per destination
  std::vector<std::uint64_t> executed_upto;       // per sender: last channel seq run
  std::vector<Dep> frontier;                      // causal frontier, per owner (sparse)
  std::vector<OutboxMessage> outbox;              // unreleased sent messages
  std::string snapshot;                           // the engine's bytes
  friend bool operator==(const CheckpointRecord&, const CheckpointRecord&) = default;
};

void EncodeCheckpoint(const CheckpointRecord& record, std::string* out);
// The record up to its snapshot's bytes: every field, then the snapshot's
// length, `snapshot_size`. The snapshot's bytes follow (the record's last
// field), so GiBs of them can be written after it in parts.
void EncodeCheckpointHead(const CheckpointRecord& record, std::uint64_t snapshot_size, std::string* out);
Status DecodeCheckpoint(std::string_view bytes, CheckpointRecord* out);
// Where a checkpoint record's snapshot (its last field) lies in it.
struct SnapshotExtent {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
};
// Every field but the snapshot (left empty) from `head`, the first bytes of
// a record of `total` bytes, and where the snapshot lies; so GiBs of engine
// state can be read later, in parts. kCorruption if `head` is too short to
// hold the fields (when it is all of the record, the record is corrupt).
Status DecodeCheckpointHead(std::string_view head, std::uint64_t total, CheckpointRecord* out,
                            SnapshotExtent* snapshot);

// Store metadata records (used by store implementations).
void EncodeEpochs(std::span<const EpochRecord> epochs, std::string* out);
Status DecodeEpochs(std::string_view bytes, std::vector<EpochRecord>* out);
void EncodeIndex(LogIndex index, std::string* out);  // e.g. a committed index
Status DecodeIndex(std::string_view bytes, LogIndex* out);
// The store's format marker: magic + kStoreFormatVersion, nothing else.
void EncodeFormatMarker(std::string* out);
Status CheckFormatMarker(std::string_view bytes);  // kFailedPrecondition if another version

// 64-bit digest of a payload (xxHash3).
std::uint64_t Digest(std::string_view bytes);

}  // namespace lstash::wire
