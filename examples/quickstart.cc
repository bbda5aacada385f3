// lstash quickstart: two workers in one thread, a crash, and an exact replay.
//
// Worker 0's start task sends three tasks to worker 1. Each draws a random
// number -- a nondeterministic event, which lstash logs -- and reports it back
// to worker 0, so worker 0 has now *observed* it. Then worker 1 crashes
// before anything reached the store (we never flush). Its new incarnation
// gathers its lineage from worker 0's stash (it was piggybacked on the
// replies), replays its log, and draws the very same numbers: no orphans.
#include <lstash/store.h>
#include <lstash/worker.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>

using namespace lstash;

template <typename T>
T Must(Result<T> r) {  // this example stops at the first error
  if (!r.ok()) std::fprintf(stderr, "error: %s\n", r.status().ToString().c_str()), std::exit(1);
  return std::move(r).value();
}

std::unique_ptr<Worker> workers[2];
std::map<std::string, std::uint64_t> original, replayed;  // task payload -> value drawn

// The application: what a task of worker w does. It must be deterministic
// given its payload and the values lstash hands it.
void Execute(Worker& w, const Task& t) {
  if (w.id() == 0) {
    if (t.start) {  // bootstrapping goes in the start task, so it is logged too
      for (int i = 0; i < 3; ++i) Must(w.Submit(1, "task " + std::to_string(i)));
    }
    return;  // replies from worker 1 need no action
  }
  if (t.start) return;
  const std::uint64_t v = Must(w.Random());  // live: drawn and logged; replay: the logged value
  (t.replayed ? replayed : original)[t.payload] = v;
  Must(w.Submit(0, t.payload + " drew " + std::to_string(v)));
}

// A tiny engine: run ready tasks and carry frames until nothing moves.
void RunUntilQuiet() {
  for (bool moved = true; moved;) {
    moved = false;
    for (auto& w : workers) {
      while (auto t = Must(w->NextTask())) Execute(*w, *t), moved = true;
      for (Frame& f : w->TakeFrames()) Must(workers[f.dest]->Receive(f.bytes)), moved = true;
    }
  }
}

struct PrintRecovery : Listener {
  void OnRecoveryEnd(const RecoveryStats& s) override {
    std::printf("worker %u recovered (epoch %llu): %llu tasks replayed, %llu log entries from survivors, %llu from the store\n",
                s.worker, (unsigned long long)s.epoch, (unsigned long long)s.tasks_replayed,
                (unsigned long long)s.from_survivors, (unsigned long long)s.from_store);
  }
};

int main() {
  auto store = NewMemoryStore();  // OpenRocksDbStore(dir) for a durable one
  PrintRecovery listener;
  WorkerOptions options;
  options.num_workers = 2;
  options.background_flush = false;  // we never call Flush(): the store stays empty
  options.listener = &listener;
  auto open = [&](WorkerId id) { options.id = id, workers[id] = Must(Worker::Open(options, store.get())); };

  open(0), open(1);
  RunUntilQuiet();

  workers[1].reset();  // crash: worker 1's memory -- its stash included -- is gone
  open(1);             // a new incarnation on the same store recovers
  RunUntilQuiet();

  bool same = original.size() == 3 && original == replayed;
  for (const auto& [task, v] : original) {
    std::printf("%s: drew %llu, replay drew %llu\n", task.c_str(), (unsigned long long)v,
                (unsigned long long)(replayed.count(task) ? replayed[task] : 0));
  }
  std::printf("%s\n", same ? "OK: the replayed values equal the originals" : "FAILED: replay differs");
  return same ? 0 : 1;
}
