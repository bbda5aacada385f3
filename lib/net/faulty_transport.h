// A Transport decorator that loses, duplicates, reorders and delays the
// frames this side sends, to test the Worker's resending and deduplication
// over real sockets. Faults are drawn from a seeded std::mt19937_64, so a
// given sequence of Sends gets the same decisions every run.
//
// Held frames (delayed or reordered) wait here and leave on later Send or
// Poll calls, in order of their due time; Poll shortens its wait so that none
// leaves later than its due time (plus ZeroMQ's 1 ms poll resolution). A held
// frame the inner transport refuses when it leaves is lost, as on a network
// (the inner metrics count the refusal).
//
// Threading: as Transport (one thread).
#pragma once

#include <lstash/status.h>
#include <lstash/transport.h>
#include <lstash/types.h>

#include <cstdint>
#include <memory>
#include <string_view>

namespace lstash::net {

struct NetFaults {
  std::uint32_t loss_percent = 0;     // frames dropped (the Worker resends what is not acknowledged)
  std::uint32_t dup_percent = 0;      // frames sent twice
  std::uint32_t reorder_percent = 0;  // frames held back until just after the next frame to the same peer
                                      // leaves (or max(delay_nanos, 5 ms) has passed)
  std::int64_t delay_nanos = 0;       // each frame held for a uniform random 0..delay_nanos
  std::uint64_t seed = 1;

  bool any() const;
};

// "loss:2,dup:5,reorder:10,delay:5ms": percentages 0..100; delay as 5ms,
// 500us or a bare number of milliseconds. "" or "none": no faults. The seed
// is not part of the spec. kInvalidArgument, naming the entry, for unknown
// names, bad numbers, percentages over 100 and names given twice.
Result<NetFaults> ParseNetFaults(std::string_view spec);

// Wraps `inner` (REQUIRES: not null). Faults apply to frames this side
// sends; dropped frames still return OK (the network lost them). `clock`
// (not owned, outlives the result) times held frames. Without any() faults,
// returns `inner` itself.
std::unique_ptr<Transport> WrapWithFaults(std::unique_ptr<Transport> inner, const NetFaults& faults,
                                          Clock* clock = SystemClock());

struct NetFaultCounts {
  std::uint64_t dropped = 0;
  std::uint64_t duplicated = 0;  // frames sent twice (each counted once)
  std::uint64_t reordered = 0;
  std::uint64_t delayed = 0;     // copies held for a nonzero delay
};

// What the wrapper injected so far; zeros for a transport that
// WrapWithFaults did not wrap.
NetFaultCounts GetNetFaultCounts(const Transport& transport);

}  // namespace lstash::net
