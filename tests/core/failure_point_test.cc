// Tests of the crash-testing hook (WorkerOptions::failure_point_hook,
// FailurePoint): where each point fires, in what order, outside the Worker's
// lock, and that a crash at each point is survivable with exactly-once
// effects. Driven by hand (manual Flush, fake clock), like worker_test.cc.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <lstash/status.h>
#include <lstash/store.h>
#include <lstash/worker.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/test_util.h"
#include "wire/format.h"

namespace lstash {
namespace {

using coretest::FakeClock;
using coretest::kMillis;
using coretest::PiggybackOf;
using coretest::RecordingListener;
using coretest::Select;
using ::testing::ElementsAre;

constexpr FailurePoint kAllPoints[] = {FailurePoint::kBeforeFlush, FailurePoint::kAfterFlush,
                                       FailurePoint::kMidForward, FailurePoint::kMidRecovery,
                                       FailurePoint::kMidCheckpoint};

std::string Name(FailurePoint p) { return std::string(FailurePointName(p)); }

// ---------------------------------------------------------------------------
// Names

TEST(FailurePointNameTest, NamesRoundTripAndUnknownNamesAreRejected) {
  std::vector<std::string> names;
  for (FailurePoint p : kAllPoints) {
    names.push_back(Name(p));
    auto parsed = ParseFailurePoint(FailurePointName(p));
    ASSERT_TRUE(parsed.has_value()) << FailurePointName(p);
    EXPECT_EQ(*parsed, p) << FailurePointName(p);
  }
  EXPECT_THAT(names, ElementsAre("before-flush", "after-flush", "mid-forward", "mid-recovery", "mid-checkpoint"));
  for (std::string_view bad : {"", "unknown", "before_flush", "Before-Flush", "mid-forward ", "kMidForward",
                               "mid", "mid-checkpoint\n", "none"}) {
    EXPECT_FALSE(ParseFailurePoint(bad).has_value()) << "'" << bad << "'";
  }
}

// ---------------------------------------------------------------------------
// Shared fixture

class FailurePointTest : public ::testing::Test {
 protected:
  WorkerOptions Options(WorkerId id, std::uint32_t n) {
    return coretest::HandDrivenOptions(id, n, &clock_, &listener_);
  }

  std::unique_ptr<Worker> Open(const WorkerOptions& o, Store* store) {
    auto w = Worker::Open(o, store);
    EXPECT_TRUE(w.ok()) << "Open worker " << o.id << ": " << w.status().ToString();
    return w.ok() ? std::move(*w) : nullptr;
  }

  FakeClock clock_;
  std::unique_ptr<Store> store_ = NewMemoryStore();
  RecordingListener listener_;
};

// ---------------------------------------------------------------------------
// 1. Each point fires, in order, where its name says

// The hook logs "w<id>:<point>" and, through the thread-safe GetMetrics()
// (which takes the Worker's lock, so a hook run under it would deadlock),
// what the Worker had recorded when the point was reached. The test logs
// the calls it makes, so the order of points against calls is checked too.
class FailurePointOrderTest : public FailurePointTest {
 protected:
  WorkerOptions Hooked(WorkerId id, std::uint32_t n, Worker** self) {
    WorkerOptions o = Options(id, n);
    o.max_forward = 1;
    o.failure_point_hook = [this, id, self](FailurePoint p) {
      std::string line = "w" + std::to_string(id) + ":" + Name(p);
      if (*self != nullptr) {
        Metrics m = (*self)->GetMetrics();
        line += " committed=" + std::to_string(m.committed) + " checkpoints=" + std::to_string(m.checkpoints);
        if (p == FailurePoint::kMidRecovery) line += std::string(" recovering=") + ((*self)->recovering() ? "1" : "0");
      }
      std::lock_guard<std::mutex> lock(mu_);
      log_.push_back(std::move(line));
      threads_.insert(std::this_thread::get_id());
    };
    return o;
  }
  void Mark(const std::string& call) {
    std::lock_guard<std::mutex> lock(mu_);
    log_.push_back(call);
  }
  std::vector<std::string> TakeLog() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(log_);
  }

  std::mutex mu_;
  std::vector<std::string> log_;
  std::set<std::thread::id> threads_;
};

TEST_F(FailurePointOrderTest, EveryPointFiresInOrderOnTheCallingThreadOutsideTheLock) {
  Worker* a_ptr = nullptr;
  Worker* b_ptr = nullptr;
  auto a = Open(Hooked(0, 2, &a_ptr), store_.get());
  auto b = Open(Hooked(1, 2, &b_ptr), store_.get());
  ASSERT_TRUE(a && b);
  a_ptr = a.get();
  b_ptr = b.get();

  // A: start task (1), a random value (2), a message to B carrying 0:1, 0:2.
  Mark("A.NextTask");
  ASSERT_TRUE(a->NextTask().value().has_value());
  ASSERT_TRUE(a->Random().ok());
  Mark("A.Submit");
  ASSERT_TRUE(a->Submit(1, "m1").ok());
  Mark("A.TakeFrames");
  auto to_b = Select(a->TakeFrames(), 1, wire::FrameKind::kTask);
  ASSERT_EQ(to_b.size(), 1u);
  EXPECT_THAT(PiggybackOf(to_b[0]), ElementsAre("0:1", "0:2"));
  // Checkpoint (pending) and a flush that writes the batch, then the
  // checkpoint, in one round.
  Mark("A.Checkpoint");
  CORE_ASSERT_OK(a->Checkpoint("snap@2"));
  Mark("A.Flush");
  auto flushed = a->Flush();
  ASSERT_TRUE(flushed.ok()) << flushed.status().ToString();
  EXPECT_EQ(*flushed, 2u);
  EXPECT_EQ(a->GetMetrics().checkpoints, 1u);
  EXPECT_THAT(TakeLog(),
              ElementsAre("A.NextTask", "A.Submit", "w0:mid-forward committed=0 checkpoints=0", "A.TakeFrames",
                          "A.Checkpoint", "A.Flush",
                          // Not yet recorded as committed at either flush point...
                          "w0:before-flush committed=0 checkpoints=0", "w0:after-flush committed=0 checkpoints=0",
                          // ...and the checkpoint, durable, not yet counted.
                          "w0:mid-checkpoint committed=2 checkpoints=0"));

  // B runs m1 and answers with its own (uncommitted) lineage; A runs the
  // answer (3) and draws a value (4); A flushes: no checkpoint pending, so
  // no mid-checkpoint.
  ASSERT_EQ(b->Receive(to_b[0]).value(), Delivery::kQueued);
  ASSERT_TRUE(b->NextTask().value().has_value());  // start
  auto m1 = b->NextTask().value();
  ASSERT_TRUE(m1.has_value());
  ASSERT_EQ(m1->payload, "m1");
  Mark("B.Submit");
  ASSERT_TRUE(b->Submit(0, "r1").ok());
  auto to_a = Select(b->TakeFrames(), 0, wire::FrameKind::kTask);
  ASSERT_EQ(to_a.size(), 1u);
  EXPECT_THAT(PiggybackOf(to_a[0]), ElementsAre("1:1", "1:2"));
  ASSERT_EQ(a->Receive(to_a[0]).value(), Delivery::kQueued);
  auto r1 = a->NextTask().value();
  ASSERT_TRUE(r1.has_value());
  const std::uint64_t value = a->Random().value();
  Mark("A.Flush");
  flushed = a->Flush();
  ASSERT_TRUE(flushed.ok()) << flushed.status().ToString();
  EXPECT_EQ(*flushed, 2u);
  Mark("A.Flush(nothing to write)");
  EXPECT_EQ(a->Flush().value(), 0u);
  EXPECT_THAT(TakeLog(), ElementsAre("B.Submit", "w1:mid-forward committed=0 checkpoints=0", "A.Flush",
                                     "w0:before-flush committed=2 checkpoints=1",
                                     "w0:after-flush committed=2 checkpoints=1", "A.Flush(nothing to write)"));

  // A crashes and recovers: checkpoint at 2, entries 3..4 from the store.
  a_ptr = nullptr;
  a.reset();
  Mark("A.Open");
  a = Open(Hooked(0, 2, &a_ptr), store_.get());
  ASSERT_NE(a, nullptr);
  a_ptr = a.get();
  ASSERT_TRUE(a->recovering());
  EXPECT_EQ(a->TakeRestoredSnapshot().value(), std::optional<std::string>("snap@2"));
  // Gathering: B answers A's request (and resends r1 to the new
  // incarnation, carrying its lineage: B's mid-forward, not checked here).
  for (auto& f : a->TakeFrames()) {
    if (f.dest == 1) {
      ASSERT_TRUE(b->Receive(f.bytes).ok());
    }
  }
  for (auto& f : b->TakeFrames()) {
    if (f.dest == 0) {
      ASSERT_TRUE(a->Receive(f.bytes).ok());
    }
  }
  Mark("A.NextTask(replay)");
  auto replayed = a->NextTask().value();
  ASSERT_TRUE(replayed.has_value());
  EXPECT_TRUE(replayed->replayed);
  EXPECT_EQ(replayed->payload, "r1");
  EXPECT_EQ(a->Random().value(), value);
  Mark("A.NextTask(end of replay)");
  EXPECT_FALSE(a->NextTask().value().has_value());
  EXPECT_FALSE(a->recovering());
  CORE_EXPECT_OK(a->health());
  std::vector<std::string> after_open;
  for (auto& line : TakeLog()) {
    if (line.rfind("w1:mid-forward", 0) != 0) after_open.push_back(line);
  }
  EXPECT_THAT(after_open, ElementsAre("A.Open", "A.NextTask(replay)",
                                      "w0:mid-recovery committed=4 checkpoints=0 recovering=1",
                                      "A.NextTask(end of replay)"));
  {
    std::lock_guard<std::mutex> lock(mu_);
    EXPECT_THAT(threads_, ElementsAre(std::this_thread::get_id())) << "background_flush is false: one thread";
  }
}

TEST_F(FailurePointOrderTest, WithBackgroundFlushTheFlushPointsFireOnTheFlusherThread) {
  Worker* a_ptr = nullptr;
  // a_ptr stays null: the hook reads no metrics from the flusher thread.
  WorkerOptions o = Hooked(0, 1, &a_ptr);
  o.background_flush = true;
  o.flush_interval_nanos = 3'600'000 * kMillis;  // the flusher runs only when Sync wakes it
  auto a = Open(o, store_.get());
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->NextTask().value().has_value());
  ASSERT_TRUE(a->Random().ok());
  CORE_ASSERT_OK(a->Checkpoint("snap"));
  CORE_ASSERT_OK(a->Sync(10'000 * kMillis));
  a.reset();  // joins the flusher: its round, checkpoint included, is over
  std::vector<std::string> points;
  for (auto& line : TakeLog()) points.push_back(line.substr(0, line.find(' ')));
  EXPECT_THAT(points, ElementsAre("w0:before-flush", "w0:after-flush", "w0:mid-checkpoint"));
  std::lock_guard<std::mutex> lock(mu_);
  ASSERT_EQ(threads_.size(), 1u);
  EXPECT_NE(*threads_.begin(), std::this_thread::get_id());
}

// Sync must not return while the flusher's checkpoint write is unanswered:
// the flusher is held at mid-checkpoint (the write done, not yet recorded).
TEST_F(FailurePointTest, SyncWaitsForACheckpointTheFlusherHasTakenButNotFinished) {
  std::promise<void> reached, release;
  std::shared_future<void> released = release.get_future().share();
  WorkerOptions o = Options(0, 1);
  o.background_flush = true;
  o.flush_interval_nanos = 3'600'000 * kMillis;  // the flusher runs only when Sync wakes it
  o.failure_point_hook = [&](FailurePoint p) {
    if (p != FailurePoint::kMidCheckpoint) return;
    reached.set_value();
    released.wait();
  };
  auto a = Open(o, store_.get());
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(a->NextTask().value().has_value());
  ASSERT_TRUE(a->Random().ok());
  CORE_ASSERT_OK(a->Checkpoint("snap"));
  std::thread first_sync([&] { (void)a->Sync(10'000 * kMillis); });  // wakes the flusher
  reached.get_future().wait();
  EXPECT_EQ(a->Sync(50 * kMillis).code(), Code::kDeadlineExceeded) << "the checkpoint is still in flight";
  EXPECT_EQ(a->GetMetrics().checkpoints, 0u);
  release.set_value();
  first_sync.join();
  CORE_ASSERT_OK(a->Sync(10'000 * kMillis));
  EXPECT_EQ(a->GetMetrics().checkpoints, 1u);
}

TEST_F(FailurePointOrderTest, WriteFirstCheckpointPointFiresInsideCheckpointWithoutTheLock) {
  Worker* a_ptr = nullptr;
  WorkerOptions o = Hooked(0, 1, &a_ptr);
  o.mode = Mode::kWriteFirst;
  auto a = Open(o, store_.get());
  ASSERT_NE(a, nullptr);
  a_ptr = a.get();
  ASSERT_TRUE(a->NextTask().value().has_value());
  ASSERT_TRUE(a->Random().ok());
  Mark("A.Checkpoint");
  CORE_ASSERT_OK(a->Checkpoint("snap"));
  Mark("A.Flush");
  EXPECT_EQ(a->Flush().value(), 0u);
  EXPECT_EQ(a->GetMetrics().checkpoints, 1u);
  EXPECT_THAT(TakeLog(), ElementsAre("A.Checkpoint", "w0:mid-checkpoint committed=2 checkpoints=0", "A.Flush"));
}

// ---------------------------------------------------------------------------
// 3. A crash at a point is survivable, with exactly-once effects

// The store as a killed incarnation sees it: once its process is "dead"
// (the hook fired at the chosen point), nothing it writes reaches the store,
// as if the process had died at that instant. Reads pass through.
class KillableStore final : public StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  std::atomic<bool> dead{false};

  Result<Epoch> BeginIncarnation(WorkerId w) override {
    if (dead) return Killed();
    return target()->BeginIncarnation(w);
  }
  Status SetEpochStart(WorkerId w, Epoch e, LogIndex s) override {
    return dead ? Killed() : target()->SetEpochStart(w, e, s);
  }
  Status Append(WorkerId w, Epoch e, std::span<const LogRecord> r, std::span<const LineageCopy> c) override {
    return dead ? Killed() : target()->Append(w, e, r, c);
  }
  Status PutCheckpointFrom(WorkerId w, Epoch e, LogIndex at, std::uint64_t size, const RecordParts& parts) override {
    return dead ? Killed() : target()->PutCheckpointFrom(w, e, at, size, parts);
  }
  Status RenewLease(WorkerId w, Epoch e, std::int64_t d) override {
    return dead ? Killed() : target()->RenewLease(w, e, d);
  }

 private:
  static Status Killed() { return IOError("the process was killed at a failure point"); }
};

// Where the incarnation dies: at the `hit`-th time `point` is reached (1 =
// the first), or never (nullopt).
struct Kill {
  std::optional<FailurePoint> point;
  int hit = 1;
};

struct CrashCase {
  const char* name;
  std::vector<Kill> kills;  // one per incarnation of A, in order; then A runs to the end
};
void PrintTo(const CrashCase& c, std::ostream* os) { *os << c.name; }

// A (0) and B (1) play ping-pong for kRounds rounds. A's task k draws a
// random value r and sends "a<k>:<r>" to B; B answers "b a<k>:<r>"; A checks
// the answer is to its latest message and starts round k+1. A flushes after
// every other round and checkpoints (then flushes) every third live round,
// each time after a<k> left with the lineage the flush writes; its state
// (the round) is its snapshot. B flushes after each task. Only A
// is killed. The test passes frames by hand, one at a time, checking after
// every call into A whether it died; a dead A's untaken frames are lost.
class FailurePointCrashTest : public FailurePointTest, public ::testing::WithParamInterface<CrashCase> {
 protected:
  static constexpr int kRounds = 8;

  void OpenA() {
    const std::size_t incarnation = a_incarnations_++;
    std::optional<Kill> kill;
    if (incarnation < GetParam().kills.size()) kill = GetParam().kills[incarnation];
    a_store_ = std::make_unique<KillableStore>(store_.get());
    WorkerOptions o = Options(0, 2);
    o.max_forward = 1;
    if (kill && kill->point) {
      KillableStore* s = a_store_.get();
      auto hits = std::make_shared<int>(0);
      const FailurePoint target = *kill->point;
      const int at = kill->hit;
      o.failure_point_hook = [this, s, hits, target, at](FailurePoint p) {
        if (s->dead) return;  // a killed process reaches nothing more
        if (p == target && ++*hits == at) {
          s->dead = true;
          ++kills_;
        }
      };
    }
    a_ = Open(o, a_store_.get());
    ASSERT_NE(a_, nullptr);
    auto snapshot = a_->TakeRestoredSnapshot().value();
    a_round_ = snapshot ? std::stoi(*snapshot) : 0;
  }

  // After every call into A: if it died, abandon it and start the next
  // incarnation. Returns true if A died.
  bool CheckA() {
    if (!a_store_->dead) return false;
    a_.reset();  // abandoned: no further calls, its untaken frames are lost
    std::deque<Frame> keep;
    for (auto& f : net_) {
      if (f.dest != 0) keep.push_back(std::move(f));  // what was in flight to it is lost
    }
    net_ = std::move(keep);
    OpenA();
    return true;
  }

  void TakeA() {
    for (auto& f : a_->TakeFrames()) net_.push_back(std::move(f));
  }
  void TakeB() {
    for (auto& f : b_->TakeFrames()) net_.push_back(std::move(f));
  }

  // Runs A's next task, if any. Returns false if none ran (or A died).
  bool StepA() {
    auto next = a_->NextTask();
    if (CheckA()) return false;
    if (!next.ok()) {
      ADD_FAILURE() << "A NextTask: " << next.status().ToString();
      return false;
    }
    if (!next->has_value()) return false;
    const Task& task = **next;
    if (!task.start) {
      const std::string expected = "b a" + std::to_string(a_round_) + ":";
      if (task.payload.rfind(expected, 0) != 0) {
        violations_.push_back("A in round " + std::to_string(a_round_) + " ran " + task.payload);
      }
    }
    if (a_round_ < kRounds) {
      ++a_round_;
      auto r = a_->Random();
      if (CheckA()) return false;
      if (!r.ok()) {
        ADD_FAILURE() << "A Random: " << r.status().ToString();
        return false;
      }
      const std::string payload = "a" + std::to_string(a_round_) + ":" + std::to_string(*r);
      auto id = a_->Submit(1, payload);
      if (CheckA()) return false;
      if (!id.ok()) {
        ADD_FAILURE() << "A Submit: " << id.status().ToString();
        return false;
      }
      a_sent_[*id] = payload;  // the latest incarnation's history wins
      TakeA();  // a<k> leaves with A's unflushed lineage before A flushes
      if (!task.replayed && a_round_ % 3 == 0) {
        Status s = a_->Checkpoint(std::to_string(a_round_));
        if (CheckA()) return false;
        EXPECT_TRUE(s.ok()) << s.ToString();
      }
      if (a_round_ % 2 == 0 || a_round_ % 3 == 0) {
        auto f = a_->Flush();
        if (CheckA()) return false;
        EXPECT_TRUE(f.ok()) << f.status().ToString();
      }
    }
    TakeA();
    return !CheckA();
  }

  bool StepB() {
    auto next = b_->NextTask();
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    if (!next.ok() || !next->has_value()) return false;
    const Task& task = **next;
    EXPECT_FALSE(task.replayed);
    if (!task.start) {
      b_ran_.push_back(task.payload);
      EXPECT_TRUE(b_->Submit(0, "b " + task.payload).ok());
    }
    auto f = b_->Flush();
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    TakeB();
    return true;
  }

  // Delivers one frame. Returns false if none was waiting.
  bool DeliverOne() {
    if (net_.empty()) return false;
    Frame f = std::move(net_.front());
    net_.pop_front();
    if (f.dest == 0) {
      auto r = a_->Receive(f.bytes);
      if (CheckA()) return true;
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      TakeA();
      CheckA();
    } else {
      auto r = b_->Receive(f.bytes);
      EXPECT_TRUE(r.ok()) << r.status().ToString();
      TakeB();
    }
    return true;
  }

  bool Done() const {
    return a_round_ == kRounds && b_ran_.size() >= kRounds && !a_->recovering() && net_.empty();
  }

  void Run() {
    b_ = Open(Options(1, 2), store_.get());
    ASSERT_NE(b_, nullptr);
    OpenA();
    for (int step = 0; step < 5000 && a_ != nullptr && !::testing::Test::HasFailure(); ++step) {
      bool progress = false;
      while (DeliverOne()) progress = true;
      while (StepA()) progress = true;
      while (StepB()) progress = true;
      if (progress) continue;
      if (Done()) break;
      // Quiet: let resends and acknowledgements go out.
      clock_.Advance(100 * kMillis);
      a_->Tick();
      if (CheckA()) continue;
      TakeA();
      if (CheckA()) continue;
      b_->Tick();
      TakeB();
    }
  }

  std::unique_ptr<KillableStore> a_store_;
  std::unique_ptr<Worker> a_, b_;
  std::deque<Frame> net_;
  std::size_t a_incarnations_ = 0;
  int kills_ = 0;
  int a_round_ = 0;
  std::map<TaskId, std::string> a_sent_;  // by task id: what A's latest history submitted
  std::vector<std::string> b_ran_;
  std::vector<std::string> violations_;
};

TEST_P(FailurePointCrashTest, RecoversWithExactlyOnceEffects) {
  Run();
  ASSERT_FALSE(HasFatalFailure());
  int expected_kills = 0;
  for (const Kill& k : GetParam().kills) expected_kills += k.point ? 1 : 0;
  EXPECT_EQ(kills_, expected_kills) << "the run never reached every kill point";
  EXPECT_EQ(a_incarnations_, GetParam().kills.size() + 1);
  ASSERT_NE(a_, nullptr);
  CORE_EXPECT_OK(a_->health());
  CORE_EXPECT_OK(b_->health());
  EXPECT_FALSE(a_->recovering());
  EXPECT_EQ(a_round_, kRounds);
  EXPECT_THAT(violations_, ::testing::IsEmpty());
  // B ran each of A's messages exactly once, in order, with the values A's
  // final history holds (replay regenerated the same ones).
  ASSERT_EQ(b_ran_.size(), static_cast<std::size_t>(kRounds));
  for (int k = 1; k <= kRounds; ++k) {
    const TaskId id{0, static_cast<std::uint64_t>(k)};
    ASSERT_TRUE(a_sent_.count(id)) << ToString(id);
    EXPECT_EQ(b_ran_[k - 1], a_sent_[id]) << "round " << k;
  }
  for (const auto& end : listener_.ends()) CORE_EXPECT_OK(end.status);
  EXPECT_GE(listener_.ends().size(), 1u) << "A recovered";
}

INSTANTIATE_TEST_SUITE_P(
    Points, FailurePointCrashTest,
    ::testing::Values(
        CrashCase{"BeforeFlush", {Kill{FailurePoint::kBeforeFlush, 2}}},
        CrashCase{"AfterFlush", {Kill{FailurePoint::kAfterFlush, 2}}},
        CrashCase{"MidForward", {Kill{FailurePoint::kMidForward, 3}}},
        CrashCase{"MidCheckpoint", {Kill{FailurePoint::kMidCheckpoint, 1}}},
        CrashCase{"SecondMidCheckpoint", {Kill{FailurePoint::kMidCheckpoint, 2}}},
        CrashCase{"MidRecovery", {Kill{FailurePoint::kAfterFlush, 2}, Kill{FailurePoint::kMidRecovery, 1}}},
        CrashCase{"MidRecoveryFromACheckpoint",
                  {Kill{FailurePoint::kMidForward, 5}, Kill{FailurePoint::kMidRecovery, 1}}},
        CrashCase{"EveryPointInTurn",
                  {Kill{FailurePoint::kMidForward, 2}, Kill{FailurePoint::kMidRecovery, 1},
                   Kill{FailurePoint::kBeforeFlush, 1}, Kill{FailurePoint::kAfterFlush, 1},
                   Kill{FailurePoint::kMidCheckpoint, 1}}}),
    [](const ::testing::TestParamInfo<CrashCase>& param_info) { return std::string(param_info.param.name); });

}  // namespace
}  // namespace lstash
