// The fault-injecting Transport decorator (lib/net/faulty_transport.h) over
// real ZeroMQ transports on ipc:// endpoints. No sleeps: every wait is a
// bounded poll loop, and held frames are timed with a hand-driven clock.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <lstash/transport.h>

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/test_util.h"
#include "net/faulty_transport.h"
#include "net/net_test_util.h"

namespace lstash::net {
namespace {

using coretest::FakeClock;
using coretest::kMillis;
using nettest::Endpoints;
using nettest::kPatience;
using nettest::Options;
using nettest::PollFor;
using nettest::PollUntil;
using ::testing::HasSubstr;

NetFaults Faults(std::string_view spec, std::uint64_t seed) {
  auto f = ParseNetFaults(spec);
  EXPECT_TRUE(f.ok()) << spec << ": " << f.status().ToString();
  NetFaults faults = f.ok() ? *f : NetFaults{};
  faults.seed = seed;
  return faults;
}

std::unique_ptr<Transport> OpenPlain(const Endpoints& ep, WorkerId self) {
  auto t = Transport::Open(Options(self, ep.list()));
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? std::move(t).value() : nullptr;
}

std::vector<std::string> BytesFrom(const std::vector<Incoming>& got, WorkerId from) {
  std::vector<std::string> bytes;
  for (const auto& in : got) {
    if (in.from == from) bytes.push_back(in.bytes);
  }
  return bytes;
}

std::vector<std::string> Numbered(const std::string& prefix, int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back(prefix + std::to_string(i));
  return v;
}

// Polls `sender` without waiting (releasing what its clock says is due) and
// `receiver` for `duration` of real time.
void PumpFor(Transport& sender, Transport& receiver, std::vector<Incoming>* got, std::chrono::milliseconds duration) {
  const auto end = nettest::Clock::now() + duration;
  std::vector<Incoming> ignored;
  while (nettest::Clock::now() < end) {
    EXPECT_TRUE(sender.Poll(0, &ignored).ok());
    EXPECT_TRUE(receiver.Poll(10 * kMillis, got).ok());
  }
}

// Worker 0 sends through the wrapper (seed 3) to worker 1, a plain transport.
struct Link {
  explicit Link(std::string_view spec, Clock* clock = SystemClock(), std::size_t workers = 2) : ep(workers) {
    if (!ep.ok()) return;
    sender = WrapWithFaults(OpenPlain(ep, 0), Faults(spec, 3), clock);
    receiver = OpenPlain(ep, 1);
  }
  bool ok() const { return sender && receiver; }

  Endpoints ep;
  std::unique_ptr<Transport> sender;
  std::unique_ptr<Transport> receiver;
};

// ---------------------------------------------------------------------------
// ParseNetFaults

TEST(FaultyTransportTest, ParseAcceptsGoodSpecs) {
  struct Case {
    std::string spec;
    NetFaults want;  // seed stays 1
  };
  const std::vector<Case> cases = {
      {"", {}},
      {"none", {}},
      {"loss:0", {}},
      {"loss:2,dup:5,reorder:10,delay:5ms", {2, 5, 10, 5 * kMillis}},
      {"delay:500us", {0, 0, 0, 500'000}},
      {"delay:7", {0, 0, 0, 7 * kMillis}},
      {"reorder:100,loss:100", {100, 0, 100, 0}},
  };
  for (const auto& c : cases) {
    auto f = ParseNetFaults(c.spec);
    ASSERT_TRUE(f.ok()) << "'" << c.spec << "': " << f.status().ToString();
    EXPECT_EQ(f->loss_percent, c.want.loss_percent) << c.spec;
    EXPECT_EQ(f->dup_percent, c.want.dup_percent) << c.spec;
    EXPECT_EQ(f->reorder_percent, c.want.reorder_percent) << c.spec;
    EXPECT_EQ(f->delay_nanos, c.want.delay_nanos) << c.spec;
    EXPECT_EQ(f->seed, 1u) << c.spec;
    EXPECT_EQ(f->any(), c.want.any()) << c.spec;
  }
  EXPECT_FALSE(NetFaults{}.any());
  EXPECT_TRUE((NetFaults{0, 0, 0, 1}).any());
}

TEST(FaultyTransportTest, ParseRejectsBadSpecsNamingTheEntry) {
  const std::map<std::string, std::vector<std::string>> bad = {
      {"loss:101", {"'loss:101'", "0 to 100"}},
      {"dup:5,jitter:3", {"'jitter:3'", "unknown fault"}},
      {"loss:abc", {"'loss:abc'", "percentage"}},
      {"loss:-1", {"'loss:-1'", "percentage"}},
      {"loss:", {"'loss:'", "percentage"}},
      {"loss", {"'loss'", "NAME:VALUE"}},
      {"loss:2,", {"''", "empty entry"}},
      {",loss:2", {"''", "empty entry"}},
      {"delay:5s", {"'delay:5s'", "delay:5ms"}},
      {"delay:ms", {"'delay:ms'", "delay:5ms"}},
      {"delay:1.5ms", {"'delay:1.5ms'", "delay:5ms"}},
      {"delay:99999999999", {"'delay:99999999999'", "delay:5ms"}},
      {"loss:2,dup:1,loss:3", {"'loss:3'", "'loss' is given twice"}},
      {"none,loss:1", {"'none'", "NAME:VALUE"}},
  };
  for (const auto& [spec, words] : bad) {
    auto f = ParseNetFaults(spec);
    ASSERT_FALSE(f.ok()) << spec << " was accepted";
    EXPECT_EQ(f.status().code(), Code::kInvalidArgument) << spec;
    const std::string message(f.status().message());
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    for (const auto& w : words) EXPECT_THAT(message, HasSubstr(w)) << spec;
  }
}

TEST(FaultyTransportTest, WithoutFaultsTheInnerTransportIsReturned) {
  Endpoints ep(1);
  ASSERT_TRUE(ep.ok());
  auto inner = OpenPlain(ep, 0);
  ASSERT_NE(inner, nullptr);
  Transport* raw = inner.get();
  auto t = WrapWithFaults(std::move(inner), NetFaults{});
  EXPECT_EQ(t.get(), raw);
  const NetFaultCounts c = GetNetFaultCounts(*t);
  EXPECT_EQ(c.dropped + c.duplicated + c.reordered + c.delayed, 0u);
}

// ---------------------------------------------------------------------------
// Faults over real sockets: worker 0 sends through the wrapper to worker 1.

TEST(FaultyTransportTest, TotalLossDeliversNothingAndCountsDrops) {
  Link link("loss:100", SystemClock(), 3);
  ASSERT_TRUE(link.ok());
  auto& sender = link.sender;
  auto& receiver = link.receiver;
  auto marker = OpenPlain(link.ep, 2);  // a plain peer, to show the receiver is listening
  ASSERT_TRUE(marker);
  for (const auto& b : Numbered("lost", 20)) NET_ASSERT_OK(sender->Send(1, b));
  NET_ASSERT_OK(marker->Send(1, "marker"));

  std::vector<std::vector<Incoming>> got;
  ASSERT_TRUE(PollUntil({sender.get(), receiver.get(), marker.get()}, &got,
                        [&] { return !BytesFrom(got[1], 2).empty(); }));
  PollFor(*receiver, &got[1], std::chrono::milliseconds(100));
  EXPECT_TRUE(BytesFrom(got[1], 0).empty()) << "a frame from worker 0 arrived";
  EXPECT_EQ(GetNetFaultCounts(*sender).dropped, 20u);
  EXPECT_EQ(sender->GetMetrics().sent, 0u) << "dropped frames reached the inner transport";
}

TEST(FaultyTransportTest, TotalDuplicationDeliversEveryFrameTwice) {
  Link link("dup:100");
  ASSERT_TRUE(link.ok());
  auto& sender = link.sender;
  auto& receiver = link.receiver;
  const auto frames = Numbered("dup", 10);
  for (const auto& b : frames) NET_ASSERT_OK(sender->Send(1, b));

  std::vector<std::vector<Incoming>> got;
  ASSERT_TRUE(PollUntil({sender.get(), receiver.get()}, &got, [&] { return got[1].size() >= 20; }))
      << got[1].size() << " frames arrived";
  PollFor(*receiver, &got[1], std::chrono::milliseconds(50));
  std::map<std::string, int> seen;
  for (const auto& b : BytesFrom(got[1], 0)) ++seen[b];
  ASSERT_EQ(seen.size(), frames.size());
  for (const auto& b : frames) EXPECT_EQ(seen[b], 2) << b;
  EXPECT_EQ(GetNetFaultCounts(*sender).duplicated, 10u);
  EXPECT_EQ(sender->GetMetrics().sent, 20u);  // GetMetrics is the inner transport's
}

TEST(FaultyTransportTest, TotalReorderDeliversEveryFrameOutOfOrder) {
  Link link("reorder:100");
  ASSERT_TRUE(link.ok());
  auto& sender = link.sender;
  auto& receiver = link.receiver;
  const auto frames = Numbered("r", 9);  // odd: the last one leaves when it times out
  for (const auto& b : frames) NET_ASSERT_OK(sender->Send(1, b));

  std::vector<std::vector<Incoming>> got;
  ASSERT_TRUE(PollUntil({sender.get(), receiver.get()}, &got, [&] { return got[1].size() >= frames.size(); }))
      << got[1].size() << " frames arrived";
  PollFor(*receiver, &got[1], std::chrono::milliseconds(50));
  const auto order = BytesFrom(got[1], 0);
  EXPECT_NE(order, frames) << "frames arrived in send order";
  EXPECT_EQ(std::multiset<std::string>(order.begin(), order.end()),
            std::multiset<std::string>(frames.begin(), frames.end()));
  EXPECT_GT(GetNetFaultCounts(*sender).reordered, 0u);
}

TEST(FaultyTransportTest, DelayHoldsEachFrameUntilItIsDue) {
  FakeClock clock;
  Link link("delay:20ms", &clock);
  ASSERT_TRUE(link.ok());
  auto& sender = link.sender;
  auto& receiver = link.receiver;
  const auto frames = Numbered("d", 10);
  for (const auto& b : frames) NET_ASSERT_OK(sender->Send(1, b));
  EXPECT_EQ(GetNetFaultCounts(*sender).delayed, frames.size());

  // The clock has not moved: nothing may leave, however long we poll.
  std::vector<Incoming> got;
  PumpFor(*sender, *receiver, &got, std::chrono::milliseconds(100));
  EXPECT_EQ(sender->GetMetrics().sent, 0u);
  EXPECT_TRUE(got.empty());

  // Halfway: some frames (random delays, fixed seed) are due, not all.
  clock.Advance(10 * kMillis);
  std::vector<Incoming> ignored;
  NET_ASSERT_OK(sender->Poll(0, &ignored));
  const std::uint64_t halfway = sender->GetMetrics().sent;
  EXPECT_GT(halfway, 0u);
  EXPECT_LT(halfway, frames.size());
  std::vector<std::vector<Incoming>> polled;
  ASSERT_TRUE(PollUntil({receiver.get()}, &polled, [&] { return polled[0].size() >= halfway; }));
  PumpFor(*sender, *receiver, &polled[0], std::chrono::milliseconds(50));
  EXPECT_EQ(polled[0].size(), halfway) << "a frame left before it was due";

  // At the full delay every frame has left, each exactly once.
  clock.Advance(10 * kMillis);
  NET_ASSERT_OK(sender->Poll(0, &ignored));
  EXPECT_EQ(sender->GetMetrics().sent, frames.size());
  ASSERT_TRUE(PollUntil({receiver.get()}, &polled, [&] { return polled[0].size() >= frames.size(); }));
  PumpFor(*sender, *receiver, &polled[0], std::chrono::milliseconds(50));
  const auto all = BytesFrom(polled[0], 0);
  EXPECT_EQ(std::multiset<std::string>(all.begin(), all.end()),
            std::multiset<std::string>(frames.begin(), frames.end()));
}

TEST(FaultyTransportTest, PollWakesForAHeldFrameInsteadOfSleepingPastIt) {
  Endpoints ep(1);
  ASSERT_TRUE(ep.ok());
  auto t = WrapWithFaults(OpenPlain(ep, 0), Faults("delay:20ms", 3));
  ASSERT_TRUE(t);
  NET_ASSERT_OK(t->Send(0, "to-self"));
  ASSERT_EQ(GetNetFaultCounts(*t).delayed, 1u);
  // The frame is due within 20 ms; a Poll that slept its whole timeout
  // before releasing it would take kPatience.
  const auto start = nettest::Clock::now();
  std::vector<Incoming> got;
  for (int i = 0; i < 3 && got.empty(); ++i) {  // a Poll may end early; the frame is due long before kPatience
    NET_ASSERT_OK(t->Poll(std::chrono::nanoseconds(kPatience).count(), &got));
  }
  const auto waited = nettest::Clock::now() - start;
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, "to-self");
  EXPECT_LT(waited, std::chrono::seconds(2));
}

TEST(FaultyTransportTest, ReconnectDropsFramesHeldForThatPeer) {
  FakeClock clock;
  Link link("delay:20ms", &clock);
  ASSERT_TRUE(link.ok());
  auto& sender = link.sender;
  auto& receiver = link.receiver;
  for (const auto& b : Numbered("old", 5)) NET_ASSERT_OK(sender->Send(1, b));
  NET_ASSERT_OK(sender->Reconnect(1));
  clock.Advance(50 * kMillis);
  std::vector<Incoming> ignored;
  NET_ASSERT_OK(sender->Poll(0, &ignored));
  EXPECT_EQ(sender->GetMetrics().sent, 0u) << "a frame held for the old connection left";

  NET_ASSERT_OK(sender->Send(1, "new"));
  clock.Advance(50 * kMillis);
  NET_ASSERT_OK(sender->Poll(0, &ignored));
  EXPECT_EQ(sender->GetMetrics().sent, 1u);
  std::vector<std::vector<Incoming>> got;
  ASSERT_TRUE(PollUntil({receiver.get()}, &got, [&] { return !got[0].empty(); }));
  PollFor(*receiver, &got[0], std::chrono::milliseconds(50));
  EXPECT_EQ(BytesFrom(got[0], 0), std::vector<std::string>{"new"});
}

TEST(FaultyTransportTest, SameSeedMakesTheSameDecisions) {
  // Workers 0 and 2 send with seed 7, worker 3 with seed 8, all to worker 1.
  Endpoints ep(4);
  ASSERT_TRUE(ep.ok());
  auto receiver = OpenPlain(ep, 1);
  std::map<WorkerId, std::unique_ptr<Transport>> senders;
  senders[0] = WrapWithFaults(OpenPlain(ep, 0), Faults("loss:50", 7));
  senders[2] = WrapWithFaults(OpenPlain(ep, 2), Faults("loss:50", 7));
  senders[3] = WrapWithFaults(OpenPlain(ep, 3), Faults("loss:50", 8));
  ASSERT_TRUE(receiver && senders[0] && senders[2] && senders[3]);
  constexpr int kFrames = 200;
  for (const auto& [w, t] : senders) {
    for (const auto& b : Numbered("f", kFrames)) NET_ASSERT_OK(t->Send(1, b));
  }
  std::map<WorkerId, std::size_t> expected;
  for (const auto& [w, t] : senders) expected[w] = kFrames - GetNetFaultCounts(*t).dropped;

  std::vector<std::vector<Incoming>> got;
  ASSERT_TRUE(PollUntil({receiver.get()}, &got, [&] {
    for (const auto& [w, n] : expected) {
      if (BytesFrom(got[0], w).size() < n) return false;
    }
    return true;
  }));
  PollFor(*receiver, &got[0], std::chrono::milliseconds(50));
  std::map<WorkerId, std::set<std::string>> delivered;
  for (const auto& [w, n] : expected) {
    const auto b = BytesFrom(got[0], w);
    delivered[w] = std::set<std::string>(b.begin(), b.end());
    EXPECT_EQ(b.size(), n) << "worker " << w;
    EXPECT_EQ(delivered[w].size(), n) << "worker " << w;
  }
  EXPECT_GT(delivered[0].size(), kFrames / 4u);
  EXPECT_LT(delivered[0].size(), kFrames * 3u / 4);
  EXPECT_EQ(delivered[0], delivered[2]);
  EXPECT_NE(delivered[0], delivered[3]) << "another seed made the same choices";
}

}  // namespace
}  // namespace lstash::net
