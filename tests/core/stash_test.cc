// Unit tests of lstash::core::Stash (lib/core/stash.h): byte accounting,
// remote-entry deduplication and holders, and the forwarding rules
// (never to the owner, never twice to a peer, at most f confirmed copies).

#include "core/stash.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "wire/format.h"

namespace lstash::core {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

EntryPtr Value(WorkerId owner, LogIndex index, std::size_t value_size, Epoch epoch = 1) {
  wire::LogEntry e;
  e.owner = owner;
  e.epoch = epoch;
  e.index = index;
  e.kind = wire::EntryKind::kValue;
  e.value_kind = wire::ValueKind::kChoice;
  e.value = std::string(value_size, static_cast<char>('a' + index % 26));
  return MakeEntry(e);
}

// "owner:index" of each selected entry, in order.
std::vector<std::string> Select(Stash& s, WorkerId dest) {
  std::vector<EntryPtr> out;
  s.SelectForPeer(dest, &out);
  std::vector<std::string> names;
  for (const auto& e : out) names.push_back(std::to_string(e->entry.owner) + ":" + std::to_string(e->entry.index));
  return names;
}

TEST(StashPeerSetTest, InsertEraseContainsSize) {
  PeerSet s;
  EXPECT_EQ(s.size(), 0u);
  s.insert(0);
  s.insert(63);
  s.insert(64);
  s.insert(255);
  s.insert(64);  // idempotent
  EXPECT_EQ(s.size(), 4u);
  EXPECT_TRUE(s.contains(0));
  EXPECT_TRUE(s.contains(63));
  EXPECT_TRUE(s.contains(64));
  EXPECT_TRUE(s.contains(255));
  EXPECT_FALSE(s.contains(1));
  EXPECT_FALSE(s.contains(128));
  s.erase(63);
  EXPECT_FALSE(s.contains(63));
  EXPECT_EQ(s.size(), 3u);
}

TEST(StashTest, MakeEntryEncodesTheEntryAndKeepsItsHeader) {
  EntryPtr e = Value(2, 7, 10);
  wire::LogEntry decoded;
  ASSERT_TRUE(wire::DecodeEntry(e->bytes, &decoded).ok());
  EXPECT_EQ(decoded.value, std::string(10, static_cast<char>('a' + 7)));
  // The value lives only in the bytes; the rest is kept decoded.
  EXPECT_TRUE(e->entry.value.empty());
  decoded.value.clear();
  EXPECT_EQ(decoded, e->entry);
}

TEST(StashTest, AppendOwnAndEvictOwnAccountBytes) {
  Stash s(/*self=*/0, /*num_workers=*/4, /*max_forward=*/0);
  EXPECT_FALSE(s.has_own());
  EXPECT_EQ(s.entries(), 0u);
  EXPECT_EQ(s.bytes(), 0u);

  EntryPtr e1 = Value(0, 1, 10), e2 = Value(0, 2, 200), e3 = Value(0, 3, 3000);
  s.AppendOwn(e1);
  s.AppendOwn(e2);
  s.AppendOwn(e3);
  EXPECT_TRUE(s.has_own());
  EXPECT_EQ(s.entries(), 3u);
  EXPECT_EQ(s.bytes(), e1->bytes.size() + e2->bytes.size() + e3->bytes.size());
  EXPECT_EQ(s.own_begin(), 1u);
  EXPECT_EQ(s.own_end(), 3u);
  EXPECT_EQ(s.own(2), e2);

  EXPECT_EQ(s.EvictOwn(0), 0u);
  EXPECT_EQ(s.entries(), 3u);

  EXPECT_EQ(s.EvictOwn(2), 2u);
  EXPECT_EQ(s.entries(), 1u);
  EXPECT_EQ(s.bytes(), e3->bytes.size());
  EXPECT_EQ(s.own_begin(), 3u);
  EXPECT_EQ(s.own_end(), 3u);

  EXPECT_EQ(s.EvictOwn(2), 0u);  // already gone
  EXPECT_EQ(s.EvictOwn(10), 1u);
  EXPECT_FALSE(s.has_own());
  EXPECT_EQ(s.entries(), 0u);
  EXPECT_EQ(s.bytes(), 0u);

  // The own run restarts wherever the next entry is.
  EntryPtr e4 = Value(0, 4, 5);
  s.AppendOwn(e4);
  EXPECT_EQ(s.own_begin(), 4u);
  EXPECT_EQ(s.own_end(), 4u);
  EXPECT_EQ(s.bytes(), e4->bytes.size());
}

TEST(StashTest, ResetOwnDropsTheRunAndItsBytes) {
  Stash s(0, 3, 0);
  EntryPtr r = Value(1, 1, 50);
  s.AddRemote(r, 1);
  s.AppendOwn(Value(0, 1, 10));
  s.AppendOwn(Value(0, 2, 10));
  s.ResetOwn(5);
  EXPECT_FALSE(s.has_own());
  EXPECT_EQ(s.own_begin(), 6u);
  EXPECT_EQ(s.entries(), 1u);  // remote entries are untouched
  EXPECT_EQ(s.bytes(), r->bytes.size());
  s.AppendOwn(Value(0, 6, 10));
  EXPECT_EQ(s.own_begin(), 6u);
  EXPECT_EQ(s.own_end(), 6u);
  EXPECT_THAT(Select(s, 2), ElementsAre("1:1", "0:6"));
}

TEST(StashTest, AddRemoteDeduplicatesAndRecordsHolders) {
  Stash s(/*self=*/0, /*num_workers=*/4, 0);
  EntryPtr r = Value(1, 1, 40);
  EntryPtr same = Value(1, 1, 40);  // another copy of 1:1, from another peer
  EXPECT_TRUE(s.AddRemote(r, /*from=*/1));
  EXPECT_FALSE(s.AddRemote(same, /*from=*/2));
  EXPECT_EQ(s.entries(), 1u);
  EXPECT_EQ(s.bytes(), r->bytes.size());  // counted once
  auto held = s.RemoteOf(1);
  ASSERT_EQ(held.size(), 1u);
  EXPECT_EQ(held[0], r);  // the first copy is kept

  // 1 owns it, 2 sent it to us: only 3 may still receive it.
  EXPECT_THAT(Select(s, 1), IsEmpty());
  EXPECT_THAT(Select(s, 2), IsEmpty());
  EXPECT_THAT(Select(s, 3), ElementsAre("1:1"));
}

TEST(StashTest, MarkRemoteHeldExcludesThatPeer) {
  Stash s(0, 4, 0);
  s.AddRemote(Value(1, 1, 8), 1);
  s.MarkRemoteHeld(1, 1, 3);
  s.MarkRemoteHeld(1, 99, 2);  // not held: ignored
  EXPECT_THAT(Select(s, 3), IsEmpty());
  EXPECT_THAT(Select(s, 2), ElementsAre("1:1"));
}

TEST(StashTest, MarkOwnHeldAndAppendHolderExcludeThatPeer) {
  Stash s(0, 4, 0);
  s.AppendOwn(Value(0, 1, 8));
  s.AppendOwn(Value(0, 2, 8), /*holder_or_self=*/3);
  s.MarkOwnHeld(1, 2);
  s.MarkOwnHeld(7, 1);  // out of range: ignored
  EXPECT_THAT(Select(s, 1), ElementsAre("0:1", "0:2"));
  EXPECT_THAT(Select(s, 2), ElementsAre("0:2"));
  EXPECT_THAT(Select(s, 3), ElementsAre("0:1"));
}

TEST(StashTest, SelectForPeerNeverReturnsAnEntryToItsOwner) {
  Stash s(/*self=*/0, 4, 0);
  s.AddRemote(Value(2, 1, 8), /*from=*/1);
  s.AddRemote(Value(3, 5, 8), /*from=*/1);
  EXPECT_THAT(Select(s, 2), ElementsAre("3:5"));
  EXPECT_THAT(Select(s, 3), ElementsAre("2:1"));
}

TEST(StashTest, SelectForPeerNeverSendsAnEntryTwiceToOnePeer) {
  Stash s(0, 4, 0);
  s.AppendOwn(Value(0, 1, 8));
  s.AppendOwn(Value(0, 2, 8));
  EXPECT_THAT(Select(s, 1), ElementsAre("0:1", "0:2"));
  EXPECT_THAT(Select(s, 1), IsEmpty());
  s.AppendOwn(Value(0, 3, 8));
  s.AddRemote(Value(2, 1, 8), 2);
  EXPECT_THAT(Select(s, 1), ElementsAre("0:3", "2:1"));  // only what is new, in arrival order
  EXPECT_THAT(Select(s, 1), IsEmpty());
  // Another peer still gets everything (but not 2's own entry).
  EXPECT_THAT(Select(s, 3), ElementsAre("0:1", "0:2", "0:3", "2:1"));
}

TEST(StashTest, EvictedEntriesAreNotSelected) {
  Stash s(0, 3, 0);
  s.AppendOwn(Value(0, 1, 8));
  s.AppendOwn(Value(0, 2, 8));
  s.AddRemote(Value(1, 1, 8), 1);
  s.AddRemote(Value(1, 2, 8), 1);
  EXPECT_EQ(s.EvictOwn(1), 1u);
  EXPECT_EQ(s.EvictRemote(1, 1), 1u);
  EXPECT_THAT(Select(s, 2), ElementsAre("0:2", "1:2"));
}

TEST(StashTest, InFlightCopiesDoNotCountAgainstMaxForward) {
  Stash s(0, 4, /*max_forward=*/1);
  EntryPtr e = Value(0, 1, 8);
  s.AppendOwn(e);
  EXPECT_THAT(Select(s, 1), ElementsAre("0:1"));
  // Not confirmed yet: a copy in flight dies with its sender, so it may
  // still go to another peer.
  EXPECT_THAT(Select(s, 2), ElementsAre("0:1"));
}

TEST(StashTest, ConfirmForwardEnforcesMaxForward) {
  Stash s(0, 4, /*max_forward=*/1);
  EntryPtr e = Value(0, 1, 8);
  s.AppendOwn(e);
  EXPECT_THAT(Select(s, 1), ElementsAre("0:1"));
  s.ConfirmForward(e, 1);
  EXPECT_THAT(Select(s, 2), IsEmpty());
  EXPECT_THAT(Select(s, 3), IsEmpty());
  // A newer entry is forwarded again.
  s.AppendOwn(Value(0, 2, 8));
  EXPECT_THAT(Select(s, 2), ElementsAre("0:2"));
}

TEST(StashTest, MaxForwardTwoNeedsTwoConfirmations) {
  Stash s(0, 5, /*max_forward=*/2);
  EntryPtr r = Value(3, 1, 8);
  s.AddRemote(r, 3);  // from its owner
  EXPECT_THAT(Select(s, 1), ElementsAre("3:1"));
  s.ConfirmForward(r, 1);
  EXPECT_THAT(Select(s, 2), ElementsAre("3:1"));  // one confirmed copy: room for another
  s.ConfirmForward(r, 2);
  EXPECT_THAT(Select(s, 4), IsEmpty());  // two confirmed copies: f reached
}

TEST(StashTest, ConfirmForwardIgnoresAnotherCopyOfTheEntry) {
  Stash s(0, 4, 1);
  EntryPtr e = Value(0, 1, 8);
  s.AppendOwn(e);
  EXPECT_THAT(Select(s, 1), ElementsAre("0:1"));
  s.ConfirmForward(Value(0, 1, 8), 1);  // same position, different object
  EXPECT_THAT(Select(s, 2), ElementsAre("0:1"));
}

TEST(StashTest, ForgetPeerMakesEntriesSelectableAgain) {
  Stash s(0, 4, 0);
  s.AppendOwn(Value(0, 1, 8));
  s.AddRemote(Value(2, 1, 8), /*from=*/1);  // peer 1 sent it to us
  EXPECT_THAT(Select(s, 1), ElementsAre("0:1"));
  EXPECT_THAT(Select(s, 1), IsEmpty());
  s.ForgetPeer(1);  // peer 1 restarted and lost everything
  EXPECT_THAT(Select(s, 1), ElementsAre("0:1", "2:1"));
}

TEST(StashTest, ForgetPeerReleasesItsConfirmedCopies) {
  Stash s(0, 4, /*max_forward=*/1);
  EntryPtr e = Value(0, 1, 8);
  s.AppendOwn(e);
  EXPECT_THAT(Select(s, 1), ElementsAre("0:1"));
  s.ConfirmForward(e, 1);
  s.ForgetPeer(1);  // its copy is gone: it no longer counts against f
  EXPECT_THAT(Select(s, 2), ElementsAre("0:1"));
}

TEST(StashTest, RemoteOfIsInIndexOrderAndEvictRemoteCountsBytes) {
  Stash s(0, 4, 0);
  EntryPtr a3 = Value(1, 3, 30), a1 = Value(1, 1, 10), a2 = Value(1, 2, 20), b1 = Value(2, 1, 5);
  s.AddRemote(a3, 1);
  s.AddRemote(b1, 2);
  s.AddRemote(a1, 1);
  s.AddRemote(a2, 1);
  auto of1 = s.RemoteOf(1);
  ASSERT_EQ(of1.size(), 3u);
  EXPECT_EQ(of1[0], a1);
  EXPECT_EQ(of1[1], a2);
  EXPECT_EQ(of1[2], a3);
  EXPECT_EQ(s.RemoteOf(3).size(), 0u);

  EXPECT_EQ(s.EvictRemote(1, 2), 2u);
  EXPECT_EQ(s.entries(), 2u);
  EXPECT_EQ(s.bytes(), a3->bytes.size() + b1->bytes.size());
  ASSERT_EQ(s.RemoteOf(1).size(), 1u);
  EXPECT_EQ(s.RemoteOf(1)[0], a3);
  EXPECT_EQ(s.RemoteOf(2).size(), 1u);  // other owners untouched
}

TEST(StashTest, DropRemoteIfDropsOnlyMatchingEntriesOfThatOwner) {
  Stash s(0, 4, 0);
  EntryPtr old5 = Value(1, 5, 8, /*epoch=*/1), old6 = Value(1, 6, 8, 1), old4 = Value(1, 4, 8, 1);
  EntryPtr other = Value(2, 6, 8, 1);
  s.AddRemote(old4, 1);
  s.AddRemote(old5, 1);
  s.AddRemote(old6, 1);
  s.AddRemote(other, 2);
  auto doomed = [](const wire::LogEntry& e) { return e.epoch < 2 && e.index >= 5; };
  EXPECT_EQ(s.DropRemoteIf(1, doomed), 2u);
  EXPECT_EQ(s.entries(), 2u);
  EXPECT_EQ(s.bytes(), old4->bytes.size() + other->bytes.size());
  ASSERT_EQ(s.RemoteOf(1).size(), 1u);
  EXPECT_EQ(s.RemoteOf(1)[0], old4);
  EXPECT_THAT(Select(s, 3), ElementsAre("1:4", "2:6"));
}

}  // namespace
}  // namespace lstash::core
