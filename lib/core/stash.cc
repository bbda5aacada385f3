#include "core/stash.h"

#include <algorithm>

namespace lstash::core {

EntryPtr MakeEntry(wire::LogEntry& entry) {
  auto e = std::make_shared<Entry>();
  wire::EncodeEntry(entry, &e->bytes);
  // The bytes hold everything; keep the header and deps, leave the payload
  // and value with the caller.
  wire::LogEntry& kept = e->entry;
  kept.owner = entry.owner;
  kept.epoch = entry.epoch;
  kept.index = entry.index;
  kept.kind = entry.kind;
  kept.task = entry.task;
  kept.channel_seq = entry.channel_seq;
  kept.start = entry.start;
  kept.deps = std::move(entry.deps);
  kept.payload_inline = entry.payload_inline;
  kept.payload_size = entry.payload_size;
  kept.payload_digest = entry.payload_digest;
  kept.value_kind = entry.value_kind;
  return e;
}

Stash::Stash(WorkerId self, std::uint32_t num_workers, std::uint32_t max_forward)
    : self_(self),
      max_forward_(max_forward == 0 ? num_workers : max_forward),
      cursor_(num_workers, 0) {}

void Stash::Arrive(Slot* slot) {
  slot->arrival = arrival_base_ + arrival_.size();
  arrival_.push_back(slot);
  bytes_ += slot->entry->bytes.size();
}

void Stash::Depart(Slot* slot) {
  arrival_[slot->arrival - arrival_base_] = nullptr;
  bytes_ -= slot->entry->bytes.size();
  evicted_.push_back(std::move(slot->entry));
}

void Stash::TrimArrivals() {
  while (!arrival_.empty() && arrival_.front() == nullptr) {
    arrival_.pop_front();
    ++arrival_base_;
  }
}

void Stash::AppendOwn(EntryPtr e, WorkerId holder) {
  if (own_.empty()) own_first_ = e->entry.index;
  own_.emplace_back();
  Slot* slot = &own_.back();
  slot->entry = std::move(e);
  if (holder != kNoHolder) slot->holders.insert(holder);
  Arrive(slot);
}

void Stash::ResetOwn(LogIndex after) {
  for (auto& slot : own_) Depart(&slot);
  own_.clear();
  own_first_ = after + 1;
  TrimArrivals();
}

void Stash::MarkOwnHeld(LogIndex index, WorkerId peer) {
  if (own_.empty() || index < own_first_ || index > own_end()) return;
  own_[index - own_first_].holders.insert(peer);
}

bool Stash::AddRemote(EntryPtr e, WorkerId from) {
  auto key = std::make_pair(e->entry.owner, e->entry.index);
  auto [it, inserted] = remote_.try_emplace(key);
  if (!inserted) {
    it->second.holders.insert(from);
    return false;
  }
  it->second.entry = std::move(e);
  it->second.holders.insert(from);
  Arrive(&it->second);
  return true;
}

void Stash::MarkRemoteHeld(WorkerId owner, LogIndex index, WorkerId from) {
  auto it = remote_.find({owner, index});
  if (it != remote_.end()) it->second.holders.insert(from);
}

std::vector<EntryPtr> Stash::RemoteOf(WorkerId owner, LogIndex from, LogIndex to) const {
  std::vector<EntryPtr> out;
  for (auto it = remote_.lower_bound({owner, from}); it != remote_.end() && it->first.first == owner; ++it) {
    if (it->first.second > to) break;
    out.push_back(it->second.entry);
  }
  return out;
}

bool Stash::EvictRemoteEntry(const EntryPtr& e) {
  auto it = remote_.find({e->entry.owner, e->entry.index});
  if (it == remote_.end() || it->second.entry != e) return false;
  Depart(&it->second);
  remote_.erase(it);
  TrimArrivals();
  return true;
}

std::size_t Stash::EvictOwn(LogIndex committed) {
  std::size_t n = 0;
  while (!own_.empty() && own_first_ <= committed) {
    Depart(&own_.front());
    own_.pop_front();
    ++own_first_;
    ++n;
  }
  if (n) TrimArrivals();
  return n;
}

std::size_t Stash::EvictRemote(WorkerId owner, LogIndex committed) {
  auto first = remote_.lower_bound({owner, 0});
  auto last = remote_.upper_bound({owner, committed});
  std::size_t n = 0;
  for (auto it = first; it != last; ++it, ++n) Depart(&it->second);
  remote_.erase(first, last);
  if (n) TrimArrivals();
  return n;
}

std::size_t Stash::DropRemoteIf(WorkerId owner, const std::function<bool(const wire::LogEntry&)>& doomed) {
  std::size_t n = 0;
  for (auto it = remote_.lower_bound({owner, 0}); it != remote_.end() && it->first.first == owner;) {
    if (doomed(it->second.entry->entry)) {
      Depart(&it->second);
      it = remote_.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  if (n) TrimArrivals();
  return n;
}

void Stash::SelectForPeer(WorkerId dest, std::vector<EntryPtr>* out) {
  std::uint64_t& cursor = cursor_[dest];
  cursor = std::max(cursor, arrival_base_);
  const std::uint64_t end = arrival_base_ + arrival_.size();
  for (; cursor < end; ++cursor) {
    Slot* slot = arrival_[cursor - arrival_base_];
    if (slot == nullptr || slot->holders.contains(dest)) continue;
    if (slot->entry->entry.owner == dest) continue;  // the owner gathers its own on recovery
    if (slot->confirmed >= max_forward_) continue;
    slot->holders.insert(dest);
    out->push_back(slot->entry);
  }
}

void Stash::ConfirmForward(const EntryPtr& e, WorkerId dest) {
  const WorkerId owner = e->entry.owner;
  const LogIndex index = e->entry.index;
  Slot* slot = nullptr;
  if (owner == self_) {
    if (!own_.empty() && index >= own_first_ && index <= own_end()) slot = &own_[index - own_first_];
  } else {
    auto it = remote_.find({owner, index});
    if (it != remote_.end()) slot = &it->second;
  }
  if (slot != nullptr && slot->entry == e && !slot->forwarded.contains(dest)) {
    slot->forwarded.insert(dest);
    ++slot->confirmed;
  }
}

void Stash::ForgetPeer(WorkerId peer) {
  auto forget = [&](Slot& slot) {
    slot.holders.erase(peer);
    if (slot.forwarded.contains(peer)) {
      slot.forwarded.erase(peer);
      --slot.confirmed;
    }
  };
  for (auto& slot : own_) forget(slot);
  for (auto& [key, slot] : remote_) forget(slot);
  // Every peer looks at every entry again: those skipped because `peer`
  // completed their f confirmed copies may need forwarding now.
  std::fill(cursor_.begin(), cursor_.end(), arrival_base_);
}

}  // namespace lstash::core
