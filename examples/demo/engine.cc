#include "demo/engine.h"

#include <fmt/format.h>

#include <chrono>

namespace demo {

using lstash::Status;
using lstash::Worker;
using lstash::WorkerId;

void EventQueue::Push(Event e) {
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_back(std::move(e));
}

std::vector<Event> EventQueue::TakeAll() {
  std::lock_guard<std::mutex> lock(mu_);
  return std::exchange(events_, {});
}

namespace {

// lstash's callbacks may run on a Worker's flusher thread: only queue events.
class EventListener final : public lstash::Listener {
 public:
  explicit EventListener(EventQueue* events) : events_(events) {}
  void OnRecoveryEnd(const lstash::RecoveryStats& stats) override {
    events_->Push(Event{Event::kRecoveryEnd, stats.worker, WallNanos(), stats.epoch, stats, {}});
  }
  void OnBackgroundError(const Status& status) override {
    events_->Push(Event{Event::kError, 0, WallNanos(), 0, {}, "background flush: " + status.ToString()});
  }

 private:
  EventQueue* events_;
};

}  // namespace

// One worker: its end of the transport, its Worker and app, its thread.
struct Slot {
  Slot(WorkerId w, Role r, std::string n, EventQueue* events) : id(w), role(r), name(std::move(n)), listener(events) {}

  const WorkerId id;
  const Role role;
  const std::string name;

  std::mutex inbox_mu;
  std::condition_variable inbox_cv;
  std::deque<std::string> inbox;  // guarded by inbox_mu
  // Guarded by inbox_mu. A worker that has not started yet counts as up:
  // the network buffers frames for it. Once it crashes, frames to it are lost.
  bool up = true;

  std::atomic<bool> alive{false};             // an incarnation is open
  std::atomic<std::uint64_t> deaths{0};       // crashes so far
  std::atomic<bool> kill_requested{false};
  std::atomic<bool> finished{false};          // its app saw the end of the stream

  // Used by the engine thread; `mu` guards replacing them against
  // ReadTotals/ReadMetrics on the main thread.
  std::mutex mu;
  std::unique_ptr<Worker> worker;
  std::unique_ptr<App> app;
  std::uint64_t flushes_before = 0;  // flush batches of earlier incarnations

  EventListener listener;
  std::thread thread;
};

// The engine loop of one worker. Each step: carry a batch of frames in
// (Receive), run a batch of tasks (NextTask + the app), Tick every 5 ms,
// and send what every call produced (TakeFrames after each call).
class Engine {
 public:
  static constexpr std::size_t kFramesPerStep = 256;
  static constexpr int kTasksPerStep = 64;
  static constexpr std::int64_t kTickEvery = 5 * kMs;

  Engine(Cluster& cluster, Slot& slot) : c_(cluster), s_(slot), seen_deaths_(cluster.size(), 0) {}

  void Run() {
    if (!Open()) return;
    while (!c_.stop_) {
      if (s_.kill_requested) {
        Crash();
        // Failure detection takes a while; the worker stays dead meanwhile.
        const std::int64_t until = MonoNanos() + c_.options_.restart_after_nanos;
        while (!c_.stop_ && MonoNanos() < until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        if (c_.stop_ || !Open()) return;
        continue;
      }
      if (!Step()) return;
    }
  }

 private:
  bool Fail(const std::string& what, const Status& status) {
    c_.Fail(s_.name + ": " + what + ": " + status.ToString());
    return false;
  }

  void Pump() { c_.Send(s_.worker->TakeFrames()); }

  // Opens an incarnation. The first starts afresh; a later one recovers:
  // restore the app from the checkpoint's snapshot, then replay runs through
  // NextTask like live work.
  bool Open() {
    lstash::WorkerOptions o;
    o.id = s_.id;
    o.num_workers = c_.size();
    o.max_forward = c_.options_.max_forward;
    o.background_flush = true;
    o.listener = &s_.listener;
    auto opened = Worker::Open(o, c_.store_);
    if (!opened.ok()) return Fail("open", opened.status());
    std::unique_ptr<Worker> w = std::move(*opened);
    std::unique_ptr<App> app = MakeApp(s_.role, c_.spec_, c_.out_);
    if (auto snapshot = w->TakeRestoredSnapshot()) {
      Status st = app->Restore(*snapshot);
      if (!st.ok()) return Fail("restoring the snapshot", st);
    }
    // A recovering worker must not wait for the lineage of dead peers.
    for (WorkerId p = 0; p < c_.size(); ++p) {
      if (p == s_.id) continue;
      seen_deaths_[p] = c_.slots_[p]->deaths;
      if (seen_deaths_[p] > 0 && !c_.slots_[p]->alive) w->PeerDown(p);
    }
    since_checkpoint_ = 0;
    const lstash::Epoch epoch = w->epoch();
    {
      std::lock_guard<std::mutex> lock(s_.mu);
      s_.worker = std::move(w);
      s_.app = std::move(app);
    }
    s_.finished = s_.app->Finished();
    {
      std::lock_guard<std::mutex> lock(s_.inbox_mu);
      s_.up = true;
    }
    s_.alive = true;
    Pump();
    c_.events_.Push(Event{Event::kStarted, s_.id, WallNanos(), epoch, {}, {}});
    return true;
  }

  // A crash: the Worker (its stash, outbox and unsent frames) and the app's
  // state are gone, and so is everything in flight to this worker.
  void Crash() {
    {
      std::lock_guard<std::mutex> lock(s_.inbox_mu);
      s_.up = false;
      s_.inbox.clear();
    }
    s_.alive = false;
    lstash::Metrics m;
    {
      std::lock_guard<std::mutex> lock(s_.mu);
      m = s_.worker->GetMetrics();
      s_.flushes_before += m.flush_batches;
      s_.worker.reset();
      s_.app.reset();
    }
    s_.finished = false;
    ++s_.deaths;
    s_.kill_requested = false;
    c_.events_.Push(Event{Event::kKilled, s_.id, WallNanos(), 0, {},
                          fmt::format("at log index {} ({} committed, {} tasks run, {} checkpoints stored)", m.log_end,
                                      m.committed, m.tasks_executed, m.checkpoints)});
  }

  bool Step() {
    Worker& w = *s_.worker;
    for (WorkerId p = 0; p < c_.size(); ++p) {  // peers that died since the last step
      const std::uint64_t d = c_.slots_[p]->deaths;
      if (p != s_.id && d != seen_deaths_[p]) seen_deaths_[p] = d, w.PeerDown(p);
    }

    // Frames: at most a batch per step, so that tasks (a replay above all)
    // keep running while a burst of resends arrives.
    std::vector<std::string> frames;
    {
      std::lock_guard<std::mutex> lock(s_.inbox_mu);
      while (!s_.inbox.empty() && frames.size() < kFramesPerStep) {
        frames.push_back(std::move(s_.inbox.front()));
        s_.inbox.pop_front();
      }
    }
    for (const auto& f : frames) {
      auto r = w.Receive(f);
      if (!r.ok() && r.status().code() != lstash::Code::kCorruption) return Fail("receive", r.status());
      Pump();
    }

    // Tasks. The source paces itself: one tick per tick_nanos while live (a
    // replay, if it crashed, runs at full speed).
    bool ran = false;
    const bool paced = s_.role == Role::kSource && !w.recovering();
    if (!paced || MonoNanos() - last_task_ >= c_.options_.tick_nanos) {
      for (int i = 0; i < kTasksPerStep; ++i) {
        auto t = w.NextTask();
        if (!t.ok()) return Fail("next task", t.status());
        if (!t->has_value()) break;
        Status st = s_.app->Execute(w, **t);
        if (!st.ok()) return Fail("task " + lstash::ToString((*t)->id), st);
        ran = true;
        last_task_ = MonoNanos();
        s_.finished = s_.app->Finished();
        const std::uint32_t every = c_.options_.checkpoint_every;
        if (every != 0 && s_.role != Role::kSource && ++since_checkpoint_ >= every) {
          since_checkpoint_ = 0;
          Status cs = w.Checkpoint(s_.app->Snapshot());  // asynchronous: the flusher stores it
          if (!cs.ok()) return Fail("checkpoint", cs);
        }
        Pump();
        if (paced) break;
      }
    }
    Pump();

    const std::int64_t now = MonoNanos();
    if (now - last_tick_ >= kTickEvery) {
      w.Tick();
      Pump();
      last_tick_ = now;
    }
    if (Status h = w.health(); !h.ok()) return Fail("worker health", h);

    if (!ran && frames.empty()) {  // idle: wait for a frame (or the next tick)
      std::unique_lock<std::mutex> lock(s_.inbox_mu);
      s_.inbox_cv.wait_for(lock, std::chrono::microseconds(500),
                           [&] { return !s_.inbox.empty() || c_.stop_ || s_.kill_requested; });
    }
    return true;
  }

  Cluster& c_;
  Slot& s_;
  std::vector<std::uint64_t> seen_deaths_;
  std::uint32_t since_checkpoint_ = 0;
  std::int64_t last_task_ = 0;
  std::int64_t last_tick_ = 0;
};

Cluster::Cluster(const StreamSpec& spec, const EngineOptions& options, lstash::Store* store, Measurements* out)
    : spec_(spec), options_(options), store_(store), out_(out) {
  const Topology& t = spec.topology;
  slots_.push_back(std::make_unique<Slot>(Topology::kSource, Role::kSource, "source", &events_));
  for (std::uint32_t m = 0; m < t.mappers; ++m) {
    slots_.push_back(std::make_unique<Slot>(t.Mapper(m), Role::kMapper, fmt::format("map{}", m), &events_));
  }
  for (std::uint32_t r = 0; r < t.reducers; ++r) {
    slots_.push_back(std::make_unique<Slot>(t.Reducer(r), Role::kReducer, fmt::format("reduce{}", r), &events_));
  }
}

Cluster::~Cluster() {
  Stop();
  CloseWorkers();
}

void Cluster::Start() {
  for (auto& slot : slots_) {
    Slot* s = slot.get();
    s->thread = std::thread([this, s] { Engine(*this, *s).Run(); });
  }
}

void Cluster::Kill(WorkerId worker) {
  Slot& s = *slots_[worker];
  s.kill_requested = true;
  s.inbox_cv.notify_all();
}

void Cluster::Stop() {
  stop_ = true;
  for (auto& slot : slots_) slot->inbox_cv.notify_all();
  for (auto& slot : slots_) {
    if (slot->thread.joinable()) slot->thread.join();
  }
}

void Cluster::CloseWorkers() {
  for (auto& slot : slots_) {
    std::lock_guard<std::mutex> lock(slot->mu);
    slot->worker.reset();
  }
}

bool Cluster::Finished(WorkerId worker) const { return slots_[worker]->finished; }
const std::string& Cluster::name(WorkerId worker) const { return slots_[worker]->name; }
const App& Cluster::app(WorkerId worker) const { return *slots_[worker]->app; }

std::optional<WorkerId> Cluster::Find(const std::string& name_or_id) const {
  for (const auto& slot : slots_) {
    if (slot->name == name_or_id || std::to_string(slot->id) == name_or_id) return slot->id;
  }
  return std::nullopt;
}

Cluster::Totals Cluster::ReadTotals() {
  Totals t;
  for (auto& slot : slots_) {
    std::lock_guard<std::mutex> lock(slot->mu);
    t.flush_batches += slot->flushes_before;
    if (!slot->worker) continue;
    const lstash::Metrics m = slot->worker->GetMetrics();
    t.stash_entries += m.stash_entries;
    t.flush_batches += m.flush_batches;
  }
  return t;
}

std::vector<std::pair<std::string, lstash::Metrics>> Cluster::ReadMetrics() {
  std::vector<std::pair<std::string, lstash::Metrics>> out;
  for (auto& slot : slots_) {
    std::lock_guard<std::mutex> lock(slot->mu);
    if (slot->worker) out.emplace_back(slot->name, slot->worker->GetMetrics());
  }
  return out;
}

// The in-process network. Frames to a dead worker are dropped.
void Cluster::Send(std::vector<lstash::Frame> frames) {
  for (auto& f : frames) {
    Slot& d = *slots_[f.dest];
    std::lock_guard<std::mutex> lock(d.inbox_mu);
    if (!d.up) continue;
    d.inbox.push_back(std::move(f.bytes));
    d.inbox_cv.notify_one();
  }
}

void Cluster::Fail(const std::string& what) {
  events_.Push(Event{Event::kError, 0, WallNanos(), 0, {}, what});
  failed_ = true;
}

}  // namespace demo
