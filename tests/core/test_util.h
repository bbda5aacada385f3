// Helpers shared by the core unit tests: status assertions, a hand-driven
// clock, a recording listener, store wrappers that inject failures, and a
// tiny in-test "network" that carries TakeFrames() output to Receive().
#pragma once

#include "scratch_dir.h"
#include <gtest/gtest.h>
#include <lstash/status.h>
#include <lstash/store.h>
#include <lstash/types.h>
#include <lstash/worker.h>
#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <mutex>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "wire/format.h"

namespace lstash {

// So that gtest prints task ids readably ("w3#17").
inline void PrintTo(const TaskId& id, std::ostream* os) { *os << ToString(id); }

}  // namespace lstash

#define CORE_ASSERT_OK(expr)                                                              \
  do {                                                                                    \
    ::lstash::Status core_test_status_ = (expr);                                          \
    ASSERT_TRUE(core_test_status_.ok()) << #expr << ": " << core_test_status_.ToString(); \
  } while (0)

#define CORE_EXPECT_OK(expr)                                                              \
  do {                                                                                    \
    ::lstash::Status core_test_status_ = (expr);                                          \
    EXPECT_TRUE(core_test_status_.ok()) << #expr << ": " << core_test_status_.ToString(); \
  } while (0)

#define CORE_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  CORE_ASSERT_OK_AND_ASSIGN_IMPL_(LSTASH_CONCAT_(core_test_result_, __LINE__), lhs, expr)
#define CORE_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr)              \
  auto tmp = (expr);                                                 \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.status().ToString(); \
  lhs = std::move(tmp).value()

namespace lstash::coretest {

inline constexpr std::int64_t kMillis = 1'000'000;

// A clock that moves only when the test says so.
class FakeClock final : public Clock {
 public:
  std::int64_t MonotonicNanos() override { return mono.load(); }
  std::int64_t WallNanos() override { return wall.load(); }
  void Advance(std::int64_t nanos) {
    mono += nanos;
    wall += nanos;
  }
  std::atomic<std::int64_t> mono{1'000 * kMillis};
  std::atomic<std::int64_t> wall{1'700'000'000'000'000'000};
};

// Options for a worker the test drives by hand: no flusher thread (the test
// calls Flush()), `clock`, a fixed random seed per worker, 50 ms resends.
inline WorkerOptions HandDrivenOptions(WorkerId id, std::uint32_t n, Clock* clock, Listener* listener) {
  WorkerOptions o;
  o.id = id;
  o.num_workers = n;
  o.background_flush = false;
  o.clock = clock;
  o.random_seed = 0x5eed0000 + id;
  o.resend_after_nanos = 50 * kMillis;
  o.listener = listener;
  return o;
}

class RecordingListener final : public Listener {
 public:
  void OnRecoveryStart(WorkerId worker, Epoch epoch) override {
    std::lock_guard<std::mutex> lock(mu_);
    starts_.emplace_back(worker, epoch);
  }
  void OnRecoveryEnd(const RecoveryStats& stats) override {
    std::lock_guard<std::mutex> lock(mu_);
    ends_.push_back(stats);
  }
  void OnBackgroundError(const Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    errors_.push_back(status);
  }
  void OnPeerIncarnation(WorkerId peer, Epoch epoch) override {
    std::lock_guard<std::mutex> lock(mu_);
    peer_incarnations_.emplace_back(peer, epoch);
  }
  std::vector<std::pair<WorkerId, Epoch>> peer_incarnations() const {
    std::lock_guard<std::mutex> lock(mu_);
    return peer_incarnations_;
  }
  std::vector<std::pair<WorkerId, Epoch>> starts() const {
    std::lock_guard<std::mutex> lock(mu_);
    return starts_;
  }
  std::vector<RecoveryStats> ends() const {
    std::lock_guard<std::mutex> lock(mu_);
    return ends_;
  }
  std::vector<Status> errors() const {
    std::lock_guard<std::mutex> lock(mu_);
    return errors_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<WorkerId, Epoch>> starts_;
  std::vector<std::pair<WorkerId, Epoch>> peer_incarnations_;
  std::vector<RecoveryStats> ends_;
  std::vector<Status> errors_;
};

// Fails Append on demand: a permanent kIOError, or kUnavailable a given
// number of times.
class ScriptedStore final : public StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Status Append(WorkerId w, Epoch e, std::span<const LogRecord> r, std::span<const LineageCopy> c) override {
    ++appends;
    if (io_error.load()) return IOError("injected append failure");
    int left = unavailable_appends.load();
    while (left > 0) {
      if (unavailable_appends.compare_exchange_weak(left, left - 1)) return Unavailable("injected: store away");
    }
    return target()->Append(w, e, r, c);
  }
  std::atomic<bool> io_error{false};
  std::atomic<int> unavailable_appends{0};
  std::atomic<int> appends{0};
};

// Append blocks until the test opens the gate (no sleeps: the test waits on
// a condition variable for the flusher to arrive).
class GatedStore final : public StoreWrapper {
 public:
  using StoreWrapper::StoreWrapper;
  Status Append(WorkerId w, Epoch e, std::span<const LogRecord> r, std::span<const LineageCopy> c) override {
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++entered_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return open_; });
    }
    return target()->Append(w, e, r, c);
  }
  void OpenGate() {
    std::lock_guard<std::mutex> lock(mu_);
    open_ = true;
    cv_.notify_all();
  }
  // True once `n` appends have reached the gate (waits up to 10 s).
  bool WaitEntered(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [&] { return entered_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int entered_ = 0;
};

// Opens the gate when it goes out of scope, so a failing assertion never
// leaves a flusher blocked inside Append (the Worker's destructor joins it).
class GateOpener {
 public:
  explicit GateOpener(GatedStore* store) : store_(store) {}
  ~GateOpener() { store_->OpenGate(); }
  GateOpener(const GateOpener&) = delete;
  GateOpener& operator=(const GateOpener&) = delete;

 private:
  GatedStore* store_;
};

using testing_support::ScratchDir;

inline wire::DecodedFrame Decode(std::string_view bytes) {
  wire::DecodedFrame f;
  Status s = wire::DecodeFrame(bytes, &f);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return f;
}

inline wire::FrameKind KindOf(std::string_view bytes) { return Decode(bytes).header.kind; }

// The frames in `frames` going to `dest` of kind `kind`, in order.
inline std::vector<std::string> Select(const std::vector<Frame>& frames, WorkerId dest, wire::FrameKind kind) {
  std::vector<std::string> out;
  for (const auto& f : frames) {
    if (f.dest == dest && KindOf(f.bytes) == kind) out.push_back(f.bytes);
  }
  return out;
}

// Indices of the piggybacked entries of a task frame, as "owner:index".
inline std::vector<std::string> PiggybackOf(std::string_view task_frame) {
  std::vector<std::string> out;
  for (const auto& e : Decode(task_frame).entries) {
    out.push_back(std::to_string(e.entry.owner) + ":" + std::to_string(e.entry.index));
  }
  return out;
}

// An in-test network: frames taken from a worker wait in one FIFO queue
// until delivered. A worker that is down (nullptr) loses frames sent to it;
// its own frames already queued still arrive.
class Net {
 public:
  explicit Net(std::uint32_t n) : nodes_(n, nullptr) {}

  void Attach(WorkerId id, Worker* w) { nodes_[id] = w; }
  // The worker crashed: frames queued to it are lost.
  void Detach(WorkerId id) {
    nodes_[id] = nullptr;
    std::deque<Frame> keep;
    for (auto& f : queue_) {
      if (f.dest != id) keep.push_back(std::move(f));
    }
    queue_ = std::move(keep);
  }

  void Pump(WorkerId from) {
    if (nodes_[from] == nullptr) return;
    for (auto& f : nodes_[from]->TakeFrames()) queue_.push_back(std::move(f));
  }
  void PumpAll() {
    for (WorkerId w = 0; w < nodes_.size(); ++w) Pump(w);
  }

  // Ticks every live worker (acknowledgements without traffic back go out on
  // Tick) and pumps its frames. The clock is not moved.
  void TickAll() {
    for (WorkerId w = 0; w < nodes_.size(); ++w) {
      if (nodes_[w] == nullptr) continue;
      nodes_[w]->Tick();
      Pump(w);
    }
  }

  // Delivers until no frame is left, ticking everyone whenever the network
  // goes quiet. Every Receive must succeed. Returns how many frames were
  // delivered.
  int DeliverAll() {
    int delivered = 0;
    PumpAll();
    for (int round = 0; round < 1000; ++round) {
      if (queue_.empty()) TickAll();
      if (queue_.empty()) break;
      while (!queue_.empty()) {
        Frame f = std::move(queue_.front());
        queue_.pop_front();
        Worker* w = nodes_[f.dest];
        if (w == nullptr) continue;
        auto r = w->Receive(f.bytes);
        EXPECT_TRUE(r.ok()) << "worker " << f.dest << " rejected a frame: " << r.status().ToString();
        ++delivered;
        Pump(f.dest);
      }
    }
    return delivered;
  }

  std::deque<Frame>& queue() { return queue_; }

 private:
  std::vector<Worker*> nodes_;
  std::deque<Frame> queue_;
};

}  // namespace lstash::coretest
