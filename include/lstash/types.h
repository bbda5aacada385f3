// Identities and small value types shared by every part of lstash.
#pragma once

#include <lstash/export.h>

#include <compare>
#include <cstdint>
#include <string>

namespace lstash {

// A worker is one member of a job, numbered 0..num_workers-1. The id is
// stable across restarts; the incarnation (Epoch) is not.
using WorkerId = std::uint32_t;

// Incarnation number of a worker. The first incarnation is 1; every restart
// takes the next one from the store, which fences out all older incarnations.
using Epoch = std::uint64_t;

// Position in a worker's log, starting at 1. 0 means "nothing".
using LogIndex = std::uint64_t;

// A task's identity: who submitted it and the submitter's submission
// sequence number. A replaying worker submits the same tasks in the same
// order and so regenerates the same ids; receivers deduplicate on them.
// Sequence 0 is the worker's own start task (see Worker::NextTask).
struct TaskId {
  WorkerId submitter = 0;
  std::uint64_t seq = 0;

  friend auto operator<=>(const TaskId&, const TaskId&) = default;
};

LSTASH_EXPORT std::string ToString(const TaskId& id);  // "w3#17"

// Time source. All time lstash reads goes through a Clock, so tests and the
// deterministic simulator can drive it.
// Thread-safety: implementations must be safe to call from several threads.
class LSTASH_EXPORT Clock {
 public:
  virtual ~Clock();
  // Monotonic nanoseconds, for timeouts and latency.
  virtual std::int64_t MonotonicNanos() = 0;
  // Wall-clock nanoseconds since the Unix epoch, for Worker::Now().
  virtual std::int64_t WallNanos() = 0;
};

// The process-wide real clock. Never null; not owned by the caller.
LSTASH_EXPORT Clock* SystemClock();

}  // namespace lstash
