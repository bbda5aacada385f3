// The checkpoint-mode baseline's worker: Chandy-Lamport snapshots with
// channel state, rollback, and generations that keep old frames out.
#include "runtime/snapshot_worker.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace lstash::runtime {
namespace {

// Two workers; each task appends its payload to the worker's state.
struct Pair {
  std::string state[2];
  std::unique_ptr<SnapshotWorker> w[2];
  Pair() {
    for (WorkerId i = 0; i < 2; ++i) w[i] = std::make_unique<SnapshotWorker>(i, 2, 1, [this, i] { return state[i]; });
  }
  // Runs every queued task of worker i; frames stay in the worker until
  // Deliver.
  void Run(WorkerId i) {
    for (;;) {
      auto t = w[i]->NextTask();
      ASSERT_TRUE(t.ok());
      if (!t->has_value()) return;
      if ((*t)->start) continue;
      state[i] += (*t)->payload + ";";
    }
  }
  // From inside a running task (Submit refuses otherwise).
  void Send(WorkerId from, const std::string& payload) {
    ASSERT_TRUE(w[from]->Submit(1 - from, payload).ok());
  }
  void Deliver(WorkerId from) {
    for (auto& f : w[from]->TakeFrames()) ASSERT_TRUE(w[f.dest]->ReceiveFrom(from, f.bytes).ok());
  }
};

TEST(SnapshotWorker, SnapshotHoldsStateAndChannelAndRollbackRestoresBoth) {
  Pair p;
  auto start = p.w[0]->NextTask();  // worker 0's start task sends "a"
  ASSERT_TRUE(start.ok() && start->has_value());
  p.Send(0, "a");
  p.Deliver(0);
  p.Run(1);  // "a" is in worker 1's state before the snapshot
  ASSERT_TRUE(p.w[0]->NextTask().ok());
  EXPECT_EQ(p.state[1], "a;");

  // Worker 1 starts snapshot 1; its markers reach worker 0 (which cuts at
  // the first one and marks back) and itself.
  p.w[1]->StartSnapshot(1);
  SnapshotWorker& w0 = *p.w[0];
  EXPECT_EQ(w0.ReceiveFrom(1, "junk").status().code(), Code::kCorruption);  // refused and counted
  EXPECT_EQ(w0.GetMetrics().frames_corrupt, 1u);
  p.Deliver(1);
  p.Run(1);
  p.Run(0);
  p.Deliver(0);  // worker 0's markers: to worker 1 and to itself
  p.Run(1);
  p.Run(0);
  auto done0 = p.w[0]->TakeCompletedSnapshots();
  auto done1 = p.w[1]->TakeCompletedSnapshots();
  ASSERT_EQ(done0.size(), 1u);
  ASSERT_EQ(done1.size(), 1u);
  EXPECT_EQ(done1[0].first, 1u);
  EXPECT_EQ(SnapshotWorker::RecordSnapshotId(done1[0].second).value(), 1u);

  // Later work, then a rollback to snapshot 1 in generation 1.
  p.state[1] += "later;";
  auto back = p.w[1]->RollBack(1, &done1[0].second);
  ASSERT_TRUE(back.ok());
  ASSERT_TRUE(back->has_value());
  EXPECT_EQ(**back, "a;");  // the state at the cut, not the later one

  // A frame of generation 0 (sent before the rollback) is dropped.
  ASSERT_TRUE(p.w[0]->RollBack(0, nullptr).ok());  // still generation 0
  auto s = p.w[0]->NextTask();                       // the start task again
  ASSERT_TRUE(s.ok() && s->has_value() && (*s)->start);
  p.Send(0, "old");
  for (auto& f : p.w[0]->TakeFrames()) EXPECT_EQ(p.w[1]->ReceiveFrom(0, f.bytes).value(), Delivery::kStale);
  EXPECT_EQ(p.w[1]->GetMetrics().frames_stale, 1u);
}

TEST(SnapshotWorker, ChannelStateIsQueuedAgainOnRollback) {
  Pair p;
  // Worker 1 snapshots first; worker 0 then sends "x" before its own cut:
  // "x" arrives at worker 1 after its cut, before worker 0's marker.
  auto start1 = p.w[1]->NextTask();
  ASSERT_TRUE(start1.ok());
  p.w[1]->StartSnapshot(7);
  auto start0 = p.w[0]->NextTask();
  ASSERT_TRUE(start0.ok());
  p.Send(0, "x");
  p.Deliver(0);  // "x" reaches worker 1
  p.Deliver(1);  // worker 1's markers reach worker 0 and itself
  p.Run(0);      // worker 0 takes the marker: its cut, markers out
  p.Deliver(0);
  p.Run(1);  // "x" (recorded: worker 0's marker is behind it), then the markers
  EXPECT_EQ(p.state[1], "x;");
  auto done1 = p.w[1]->TakeCompletedSnapshots();
  ASSERT_EQ(done1.size(), 1u);
  auto back = p.w[1]->RollBack(1, &done1[0].second);
  ASSERT_TRUE(back.ok() && back->has_value());
  EXPECT_EQ(**back, "");  // before "x"...
  p.state[1] = **back;
  p.Run(1);
  EXPECT_EQ(p.state[1], "x;");  // ...which the channel state brings back
}

}  // namespace
}  // namespace lstash::runtime
