// The stash: a worker's in-memory copy of uncommitted lineage.
//
// It holds two kinds of entries:
//   own     entries of this worker's log not yet known committed, in index
//           order (a contiguous run);
//   remote  entries of other workers' logs that arrived piggybacked on
//           messages, kept until their owner's commit watermark passes them.
// For each entry it tracks which peers hold it (they sent it to us, or we
// forwarded it to them), so nothing is forwarded twice to the same peer, and
// how many peers we forwarded it to, so no entry goes to more than f peers.
//
// Forwarding walks entries in arrival order with a cursor per peer: each
// entry is considered once per peer, which keeps Submit() proportional to
// what is new rather than to the stash size.
//
// Not thread-safe: the Worker guards it with its mutex.
#pragma once

#include "wire/format.h"

#include <lstash/types.h>

#include <array>
#include <bit>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

namespace lstash::core {

inline constexpr std::uint32_t kMaxWorkers = 256;

// A set of worker ids below kMaxWorkers.
class PeerSet {
 public:
  bool contains(WorkerId w) const { return (words_[w >> 6] >> (w & 63)) & 1u; }
  void insert(WorkerId w) { words_[w >> 6] |= std::uint64_t{1} << (w & 63); }
  void erase(WorkerId w) { words_[w >> 6] &= ~(std::uint64_t{1} << (w & 63)); }
  std::uint32_t size() const {
    std::uint32_t n = 0;
    for (auto word : words_) n += static_cast<std::uint32_t>(std::popcount(word));
    return n;
  }

 private:
  std::array<std::uint64_t, kMaxWorkers / 64> words_{};
};

// An immutable log entry: its encoded bytes (what is stored and sent) and,
// decoded, its header and deps. The payload and value live only in the
// bytes (as for entries that arrive piggybacked, see wire::WireEntry); a
// recovering worker decodes the bytes when it needs them.
struct Entry {
  wire::LogEntry entry;
  std::string bytes;
};
using EntryPtr = std::shared_ptr<const Entry>;

// Encodes `entry`; takes its deps, leaves its payload and value to the caller.
EntryPtr MakeEntry(wire::LogEntry& entry);

class Stash {
 public:
  Stash(WorkerId self, std::uint32_t num_workers, std::uint32_t max_forward);

  // Own entries. REQUIRES: e->entry.index == own_end() + 1.
  void AppendOwn(EntryPtr e, WorkerId holder_or_self = kNoHolder);
  LogIndex own_begin() const { return own_first_; }  // first own index held
  LogIndex own_end() const { return own_first_ + own_.size() - 1; }  // last own index held
  bool has_own() const { return !own_.empty(); }
  const EntryPtr& own(LogIndex index) const { return own_[index - own_first_].entry; }
  // Resets the own run to start after `index` (used when recovery rebuilds it).
  void ResetOwn(LogIndex after);
  // Marks `peer` as holding own entry `index` (it sent it back to us).
  void MarkOwnHeld(LogIndex index, WorkerId peer);

  // Remote entries. Returns true if the entry was new.
  bool AddRemote(EntryPtr e, WorkerId from);
  // Marks `from` as holding remote entry (owner, index) if we have it.
  void MarkRemoteHeld(WorkerId owner, LogIndex index, WorkerId from);
  // Remote entries of `owner` with index in [from, to], in index order.
  std::vector<EntryPtr> RemoteOf(WorkerId owner, LogIndex from = 0, LogIndex to = ~LogIndex{0}) const;
  // Drops remote entry `e` if the stash still holds it (it is durable now).
  bool EvictRemoteEntry(const EntryPtr& e);

  // Drops own entries with index <= committed. Returns how many.
  std::size_t EvictOwn(LogIndex committed);
  // Drops remote entries of `owner` with index <= committed. Returns how many.
  std::size_t EvictRemote(WorkerId owner, LogIndex committed);
  // Drops remote entries of `owner` for which `doomed(entry)` is true.
  std::size_t DropRemoteIf(WorkerId owner, const std::function<bool(const wire::LogEntry&)>& doomed);

  // Entries to piggyback on a message to `dest`: not held by dest (nor on
  // their way to it), not yet confirmed at f peers, not owned by dest. Marks
  // them as held by dest.
  void SelectForPeer(WorkerId dest, std::vector<EntryPtr>* out);

  // `dest` acknowledged a message that carried `e`: one more confirmed copy.
  // Only confirmed copies count against f, because a copy still in flight
  // dies with its sender.
  void ConfirmForward(const EntryPtr& e, WorkerId dest);

  // `peer` restarted and lost its stash: forget that it holds anything, and
  // let every peer reconsider every entry (one that `peer`'s copy kept from
  // others may need forwarding again).
  void ForgetPeer(WorkerId peer);

  std::size_t entries() const { return own_.size() + remote_.size(); }
  std::size_t bytes() const { return bytes_; }

  // Entries dropped since the last call. The caller destroys them where it
  // likes: the Worker frees them on the engine thread, which allocated most
  // of them (cross-thread frees contend in the allocator).
  std::vector<EntryPtr> TakeEvicted() { return std::move(evicted_); }

  static constexpr WorkerId kNoHolder = ~WorkerId{0};

 private:
  struct Slot {
    EntryPtr entry;
    std::uint64_t arrival = 0;  // position in arrival_
    PeerSet holders;            // peers known to hold it, or sent it
    PeerSet forwarded;          // peers that acknowledged our copy (counts against f)
    std::uint32_t confirmed = 0;  // forwarded.size(), kept to avoid counting bits
  };

  void Arrive(Slot* slot);
  void Depart(Slot* slot);
  void TrimArrivals();

  const WorkerId self_;
  const std::uint32_t max_forward_;

  std::deque<Slot> own_;
  LogIndex own_first_ = 1;
  std::map<std::pair<WorkerId, LogIndex>, Slot> remote_;

  // Slots in arrival order; nullptr where an entry has been evicted.
  std::deque<Slot*> arrival_;
  std::uint64_t arrival_base_ = 0;     // arrival number of arrival_.front()
  std::vector<std::uint64_t> cursor_;  // per peer: next arrival number to consider
  std::size_t bytes_ = 0;
  std::vector<EntryPtr> evicted_;
};

}  // namespace lstash::core
