// The engine: runs each worker of the wordcount in its own thread, around
// its own lstash::Worker, over an in-process transport, and crashes and
// restarts workers on request.
//
// The transport is one mutex-protected inbox of frame bytes per worker.
// Frames to a worker that has crashed (and until its new incarnation is
// open) are lost, as is everything in its inbox when it crashes.
#pragma once

#include "demo/wordcount.h"

#include <lstash/store.h>
#include <lstash/worker.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace demo {

struct EngineOptions {
  std::uint32_t max_forward = 1;       // WorkerOptions::max_forward
  std::uint32_t checkpoint_every = 0;  // mapper/reducer tasks between checkpoints; 0: never
  std::int64_t restart_after_nanos = 0;  // how long a killed worker stays dead
  std::int64_t tick_nanos = 0;           // the source runs one tick per this long
};

// What the engine threads tell the main thread.
struct Event {
  enum Kind { kKilled, kStarted, kRecoveryEnd, kError } kind;
  lstash::WorkerId worker = 0;
  std::int64_t at = 0;  // wall nanos
  lstash::Epoch epoch = 0;
  lstash::RecoveryStats stats;
  std::string text;
};

class EventQueue {
 public:
  void Push(Event e);
  std::vector<Event> TakeAll();

 private:
  std::mutex mu_;
  std::vector<Event> events_;
};

struct Slot;

class Cluster {
 public:
  // `spec`, `store` and `out` must outlive the Cluster.
  Cluster(const StreamSpec& spec, const EngineOptions& options, lstash::Store* store, Measurements* out);
  ~Cluster();

  void Start();
  // Crashes `worker` (between two engine calls) and restarts it after
  // restart_after_nanos. Reported through events.
  void Kill(lstash::WorkerId worker);
  // Stops every engine thread. Workers stay open (see CloseWorkers).
  void Stop();
  // Destroys the Workers: do this before the store goes away.
  void CloseWorkers();

  std::vector<Event> TakeEvents() { return events_.TakeAll(); }
  bool failed() const { return failed_; }
  bool Finished(lstash::WorkerId worker) const;

  const std::string& name(lstash::WorkerId worker) const;
  std::optional<lstash::WorkerId> Find(const std::string& name_or_id) const;
  std::uint32_t size() const { return static_cast<std::uint32_t>(slots_.size()); }

  // Sums over the live workers, safe while running (GetMetrics is the one
  // Worker call that may come from any thread).
  struct Totals {
    std::uint64_t stash_entries = 0;
    std::uint64_t flush_batches = 0;  // including earlier incarnations
  };
  Totals ReadTotals();
  // Each live worker's metrics (this incarnation).
  std::vector<std::pair<std::string, lstash::Metrics>> ReadMetrics();

  // After Stop(): a worker's application state.
  const App& app(lstash::WorkerId worker) const;

 private:
  friend class Engine;
  void Send(std::vector<lstash::Frame> frames);
  void Fail(const std::string& what);

  const StreamSpec& spec_;
  const EngineOptions options_;
  lstash::Store* const store_;
  Measurements* const out_;
  std::vector<std::unique_ptr<Slot>> slots_;
  EventQueue events_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
};

}  // namespace demo
