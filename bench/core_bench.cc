// Microbenchmarks of the core: the per-task cost of record-and-forward in
// each mode, and the flusher's group-commit throughput into RocksDB.
// Results and the commands that produced them: docs/benchmarks.md.
#include <lstash/store.h>
#include <lstash/worker.h>

#include <benchmark/benchmark.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>

namespace lstash {
namespace {

std::string TempDir(const std::string& tag) {
  auto dir = std::filesystem::temp_directory_path() /
             ("lstash-bench-" + tag + "-" + std::to_string(std::random_device{}()));
  std::filesystem::remove_all(dir);
  return dir.string();
}

// Two workers passing one task back and forth in a single thread: every
// iteration is one hop (receive, log the receipt, draw a random value, submit
// to the peer with its piggybacked lineage). Frames move by hand; the
// flushers run in the background as in production.
class PingPong {
 public:
  PingPong(Mode mode, Store* store) {
    for (WorkerId w = 0; w < 2; ++w) {
      WorkerOptions o;
      o.id = w;
      o.num_workers = 2;
      o.mode = mode;
      o.random_seed = 1 + w;
      auto r = Worker::Open(o, store);
      if (!r.ok()) std::abort();
      workers_[w] = std::move(*r);
    }
    // Worker 0's start task sends the first message.
    auto start = workers_[0]->NextTask();
    if (!start.ok() || !start->has_value()) std::abort();
    if (!workers_[0]->Submit(1, payload_).ok()) std::abort();
    Move(0);
    if (!workers_[1]->NextTask().ok()) std::abort();  // worker 1's start task
    Move(1);
  }

  // One hop: the worker holding the message runs it and sends it on.
  void Hop() {
    Worker& w = *workers_[turn_];
    auto task = w.NextTask();
    if (!task.ok() || !task->has_value()) std::abort();
    auto r = w.Random();
    if (!r.ok()) std::abort();
    if (!w.Submit(1 - turn_, payload_).ok()) std::abort();
    Move(turn_);
    turn_ = 1 - turn_;
    if (++hops_ % 256 == 0) {
      workers_[0]->Tick();
      workers_[1]->Tick();
      Move(0);
      Move(1);
    }
  }

  Metrics metrics(WorkerId w) const { return workers_[w]->GetMetrics(); }

 private:
  void Move(WorkerId from) {
    for (auto& f : workers_[from]->TakeFrames()) {
      if (!workers_[f.dest]->Receive(f.bytes).ok()) std::abort();
    }
  }

  std::unique_ptr<Worker> workers_[2];
  std::string payload_ = std::string(100, 'x');
  WorkerId turn_ = 1;
  std::uint64_t hops_ = 0;
};

void RecordAndForward(benchmark::State& state, Mode mode, bool rocksdb) {
  std::string dir;
  std::unique_ptr<Store> store;
  if (rocksdb) {
    dir = TempDir("rf");
    store = std::move(*OpenRocksDbStore(dir));
  } else {
    store = NewMemoryStore();
  }
  {
    PingPong pp(mode, store.get());
    for (int i = 0; i < 1000; ++i) pp.Hop();  // warm up into steady state
    for (auto _ : state) pp.Hop();
    Metrics m = pp.metrics(0);
    state.counters["piggyback_per_msg"] =
        m.task_frames ? static_cast<double>(m.piggybacked_entries) / static_cast<double>(m.task_frames) : 0;
    state.counters["stash_entries"] = static_cast<double>(m.stash_entries);
    state.SetItemsProcessed(state.iterations());
  }
  store.reset();
  if (!dir.empty()) std::filesystem::remove_all(dir);
}

void BM_RecordAndForward_None(benchmark::State& s) { RecordAndForward(s, Mode::kNone, false); }
void BM_RecordAndForward_LineageStash(benchmark::State& s) { RecordAndForward(s, Mode::kLineageStash, false); }
void BM_RecordAndForward_LineageStash_RocksDB(benchmark::State& s) { RecordAndForward(s, Mode::kLineageStash, true); }
void BM_RecordAndForward_WriteFirst_RocksDB(benchmark::State& s) { RecordAndForward(s, Mode::kWriteFirst, true); }
BENCHMARK(BM_RecordAndForward_None);
BENCHMARK(BM_RecordAndForward_LineageStash);
BENCHMARK(BM_RecordAndForward_LineageStash_RocksDB);
BENCHMARK(BM_RecordAndForward_WriteFirst_RocksDB)->Iterations(2000);

// The flusher alone: one worker logs ~100-byte entries as fast as it can and
// waits until they are committed, synced, in embedded RocksDB. Reported as
// committed entries per second (wall clock).
void BM_FlusherThroughput_RocksDBSynced(benchmark::State& state) {
  const std::string dir = TempDir("flush");
  auto store = std::move(*OpenRocksDbStore(dir));
  WorkerOptions o;
  o.id = 0;
  o.num_workers = 1;
  o.max_flush_batch = static_cast<std::size_t>(state.range(0));
  o.max_stash_bytes = std::size_t{1} << 30;
  auto w = std::move(*Worker::Open(o, store.get()));
  if (!w->NextTask().ok()) std::abort();  // the start task: values are drawn inside it
  const std::string value(70, 'v');        // + header: a ~100-byte stored entry
  const auto produce = [&] { return value; };
  constexpr int kPerIteration = 100'000;
  for (auto _ : state) {
    for (int i = 0; i < kPerIteration; ++i) {
      if (!w->Choose(produce).ok()) std::abort();
    }
    if (!w->Sync(60'000'000'000).ok()) std::abort();
  }
  Metrics m = w->GetMetrics();
  state.SetItemsProcessed(state.iterations() * kPerIteration);
  state.counters["entries_per_batch"] =
      m.flush_batches ? static_cast<double>(m.flushed_entries) / static_cast<double>(m.flush_batches) : 0;
  state.counters["flush_ms_mean"] =
      m.flush_batches ? static_cast<double>(m.flush_nanos_total) / static_cast<double>(m.flush_batches) / 1e6 : 0;
  w.reset();
  store.reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_FlusherThroughput_RocksDBSynced)->Arg(1000)->Arg(4096)->Arg(16384)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace lstash
