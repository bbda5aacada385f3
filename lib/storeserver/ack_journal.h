// The acknowledgement journal: a store server's record of every write it
// acknowledged, for the failure-injection harness's durability check ("no
// entry the store acknowledged is missing afterwards").
//
// A text file: the line "lstash-acks 1" (magic and format version), then one
// line per acknowledged write, appended after the write is durable and before
// its answer is sent:
//   a WORKER EPOCH INDEX DIGEST   a log entry (DIGEST: wire::Digest of its bytes, hex)
//   c WORKER EPOCH AT             a checkpoint taken at AT
// A process killed mid-line leaves a last line without '\n': that write was
// never acknowledged, and the check ignores it.
#pragma once

#include <lstash/status.h>
#include <lstash/store.h>

#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace lstash::store_journal {

class AckJournal {
 public:
  // Appends to `path` (created with its header line if missing).
  static Result<std::unique_ptr<AckJournal>> Open(const std::string& path);
  ~AckJournal();

  // Thread-safe. Each call is one write(2): it survives the process's death.
  void RecordAppend(WorkerId worker, Epoch epoch, std::span<const LogRecord> records);
  void RecordCheckpoint(WorkerId worker, Epoch epoch, LogIndex at);

 private:
  explicit AckJournal(int fd) : fd_(fd) {}
  void Write(const std::string& lines);
  std::mutex mu_;
  int fd_;
};

struct DurabilityReport {
  std::uint64_t entries_checked = 0;      // acknowledged log entries
  std::uint64_t checkpoints_checked = 0;  // acknowledged checkpoints
  std::vector<std::string> violations;    // at most 20, then a count
};

// Every write the journal at `path` records must be in `store`: a log entry
// in the log (same bytes) or folded into a later checkpoint; a checkpoint at
// or before the latest one. kCorruption for a journal that is not one.
Result<DurabilityReport> CheckDurability(const std::string& path, Store* store);

}  // namespace lstash::store_journal
