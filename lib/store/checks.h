// Argument and fencing checks shared by the store implementations, so that
// every implementation rejects the same calls with the same codes and words.
#pragma once

#include <lstash/status.h>
#include <lstash/store.h>
#include <lstash/types.h>

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>

namespace lstash::store_internal {

// OK if `epoch` is the live incarnation of `worker`. `current` is the
// worker's latest epoch (0 if it never began one).
inline Status CheckFence(WorkerId worker, Epoch epoch, Epoch current) {
  if (epoch == current && current != 0) return Status::OK();
  std::string m = "worker " + std::to_string(worker) + " incarnation " + std::to_string(epoch);
  m += epoch < current ? " is fenced" : " was never begun";
  m += " (current incarnation " + std::to_string(current) + ")";
  return FailedPrecondition(m);
}

// Shape of an Append batch: non-empty, indices from 1, consecutive. Whether
// the batch fits the worker's committed prefix is checked against its state.
inline Status CheckAppendShape(WorkerId worker, std::span<const LogRecord> records) {
  if (records.empty()) {
    return InvalidArgument("append to worker " + std::to_string(worker) + " has no records");
  }
  if (records.front().index == 0) {
    return InvalidArgument("append to worker " + std::to_string(worker) + ": log indices start at 1");
  }
  for (size_t i = 1; i < records.size(); ++i) {
    if (records[i].index != records[i - 1].index + 1) {
      return InvalidArgument("append to worker " + std::to_string(worker) + ": index " +
                             std::to_string(records[i].index) + " does not follow " +
                             std::to_string(records[i - 1].index));
    }
  }
  return Status::OK();
}

// The first record must extend (or overlap) the committed prefix.
inline Status CheckContiguous(WorkerId worker, LogIndex first, LogIndex committed) {
  if (first <= committed + 1) return Status::OK();
  return FailedPrecondition("append to worker " + std::to_string(worker) + " starts at index " +
                            std::to_string(first) + ", leaving a gap after committed index " +
                            std::to_string(committed));
}

// Parts of a checkpoint record that gave `given` bytes where `size` were
// declared.
inline Status CheckRecordSize(WorkerId worker, std::uint64_t size, std::uint64_t given) {
  if (given == size) return Status::OK();
  return InvalidArgument("checkpoint of worker " + std::to_string(worker) + ": its parts gave " +
                         std::to_string(given) + " bytes, not the " + std::to_string(size) + " declared");
}

// A checkpoint record's parts, gathered into one buffer (checked as above).
inline Result<std::string> GatherRecord(WorkerId worker, std::uint64_t size, const Store::RecordParts& parts) {
  std::string record;
  record.reserve(size);
  std::uint64_t given = 0;
  LSTASH_RETURN_IF_ERROR(parts([&](std::string_view part) {
    given += part.size();
    if (given <= size) record.append(part);
    return Status::OK();
  }));
  LSTASH_RETURN_IF_ERROR(CheckRecordSize(worker, size, given));
  return record;
}

// A checkpoint may fold only committed entries, and never moves backwards
// (the entries before the previous one are already gone).
inline Status CheckCheckpointAt(WorkerId worker, LogIndex at, LogIndex committed, LogIndex previous_at) {
  if (at > committed) {
    return FailedPrecondition("checkpoint of worker " + std::to_string(worker) + " at index " +
                              std::to_string(at) + " is beyond its committed index " +
                              std::to_string(committed));
  }
  if (at < previous_at) {
    return FailedPrecondition("checkpoint of worker " + std::to_string(worker) + " at index " +
                              std::to_string(at) + " is older than its latest checkpoint at " +
                              std::to_string(previous_at));
  }
  return Status::OK();
}

// A checkpoint part may start anywhere up to the record's end.
inline Status CheckCheckpointOffset(WorkerId worker, std::uint64_t offset, std::uint64_t total) {
  if (offset <= total) return Status::OK();
  return InvalidArgument("checkpoint of worker " + std::to_string(worker) + " is " + std::to_string(total) +
                         " bytes; no part starts at " + std::to_string(offset));
}

// How many bytes the part from `offset` (REQUIRES offset <= total) of at
// most `max_bytes` holds: fewer than asked only at the record's end.
inline std::uint64_t CheckpointPartBytes(std::uint64_t offset, std::uint64_t max_bytes, std::uint64_t total) {
  return std::min(max_bytes, total - offset);
}

}  // namespace lstash::store_internal
