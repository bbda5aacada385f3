// Microbenchmarks of the core: the per-task cost of record-and-forward in
// each mode, and the flusher's group-commit throughput into RocksDB.
// Results and the commands that produced them: docs/benchmarks.md.
#include "core/stash.h"
#include "wire/format.h"

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
  // inline_flush: no flusher threads; Hop() flushes every 256 hops itself,
  // so all the work is on one thread and counted in its CPU time.
  PingPong(Mode mode, Store* store, bool inline_flush = false) : inline_flush_(inline_flush) {
    for (WorkerId w = 0; w < 2; ++w) {
      WorkerOptions o;
      o.id = w;
      o.num_workers = 2;
      o.mode = mode;
      o.random_seed = 1 + w;
      o.background_flush = !inline_flush;
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
      for (auto& worker : workers_) {
        if (inline_flush_ && !worker->Flush().ok()) std::abort();
        worker->Tick();
      }
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

  const bool inline_flush_;
  std::unique_ptr<Worker> workers_[2];
  std::string payload_ = std::string(100, 'x');
  WorkerId turn_ = 1;
  std::uint64_t hops_ = 0;
};

void RecordAndForward(benchmark::State& state, Mode mode, bool rocksdb, bool inline_flush = false) {
  std::string dir;
  std::unique_ptr<Store> store;
  if (rocksdb) {
    dir = TempDir("rf");
    store = std::move(*OpenRocksDbStore(dir));
  } else {
    store = NewMemoryStore();
  }
  {
    PingPong pp(mode, store.get(), inline_flush);
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
// Everything on one thread, flushing included: the whole CPU cost per task.
void BM_RecordAndForward_LineageStash_InlineFlush(benchmark::State& s) {
  RecordAndForward(s, Mode::kLineageStash, false, true);
}
void BM_RecordAndForward_LineageStash_RocksDB(benchmark::State& s) { RecordAndForward(s, Mode::kLineageStash, true); }
void BM_RecordAndForward_WriteFirst_RocksDB(benchmark::State& s) { RecordAndForward(s, Mode::kWriteFirst, true); }
BENCHMARK(BM_RecordAndForward_None);
BENCHMARK(BM_RecordAndForward_LineageStash);
BENCHMARK(BM_RecordAndForward_LineageStash_InlineFlush);
BENCHMARK(BM_RecordAndForward_LineageStash_RocksDB);
BENCHMARK(BM_RecordAndForward_WriteFirst_RocksDB)->Iterations(2000);

// The stash's own record-and-forward work for one task, isolated from the
// rest of the Worker: record the task's receipt (an Execute entry with a
// 100-byte payload) and one random value, choose the lineage the next
// message carries (the peer lacks both entries), encode the message with it,
// and -- as the store's acknowledgements would -- evict what was committed.
void BM_StashRecordAndForward(benchmark::State& state) {
  core::Stash stash(/*self=*/0, /*num_workers=*/2, /*max_forward=*/0);
  const std::string payload(100, 'x');
  std::vector<core::EntryPtr> piggyback;
  std::vector<std::string_view> views;
  std::string frame;
  wire::FrameHeader header;
  header.sender = 0;
  header.dest = 1;
  header.sender_epoch = header.dest_epoch = header.sender_epoch_start = 1;
  LogIndex next = 1;
  std::uint64_t seq = 1;
  for (auto _ : state) {
    wire::LogEntry receipt;
    receipt.owner = 0;
    receipt.epoch = 1;
    receipt.index = next++;
    receipt.kind = wire::EntryKind::kExecute;
    receipt.task = TaskId{1, seq};
    receipt.channel_seq = seq;
    receipt.deps = {wire::Dep{1, 1, seq}};
    receipt.payload = payload;
    stash.AppendOwn(core::MakeEntry(receipt));
    wire::LogEntry value;
    value.owner = 0;
    value.epoch = 1;
    value.index = next++;
    value.kind = wire::EntryKind::kValue;
    value.value = std::string(8, 'r');
    stash.AppendOwn(core::MakeEntry(value));

    piggyback.clear();
    stash.SelectForPeer(1, &piggyback);
    views.clear();
    for (const auto& e : piggyback) views.push_back(e->bytes);
    const wire::Dep deps[] = {wire::Dep{0, 1, next - 1}};
    wire::EncodeTaskFrame(header, seq, seq, seq, 0, payload, deps, views, {}, &frame);
    benchmark::DoNotOptimize(frame.data());
    ++seq;
    if (seq % 64 == 0) {  // commit acknowledged: evict
      stash.EvictOwn(next - 1);
      benchmark::DoNotOptimize(stash.TakeEvicted());
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_StashRecordAndForward);

// The flusher: a worker's ~100-byte entries group-committed into embedded
// RocksDB with synced writes, as committed entries per second.
//   Flush      the flush path alone: entries are logged untimed, then timed
//              Flush() rounds (batches of up to the argument) commit them.
//   Background the background flusher while the engine thread keeps logging
//              (timed from the first entry to Sync() returning).
Result<std::unique_ptr<Worker>> FlushWorker(Store* store, std::size_t batch, bool background) {
  WorkerOptions o;
  o.id = 0;
  o.num_workers = 1;
  o.max_flush_batch = batch;
  o.max_stash_bytes = std::size_t{1} << 30;
  o.background_flush = background;
  auto w = Worker::Open(o, store);
  if (w.ok() && !(*w)->NextTask().ok()) std::abort();  // values are drawn inside the start task
  return w;
}

constexpr int kFlushEntries = 100'000;
const std::string kValue70(70, 'v');  // + the entry header: ~100 stored bytes

void BM_Flush_RocksDBSynced(benchmark::State& state) {
  const std::string dir = TempDir("flush");
  auto store = std::move(*OpenRocksDbStore(dir));
  auto w = std::move(*FlushWorker(store.get(), static_cast<std::size_t>(state.range(0)), false));
  const auto produce = [] { return kValue70; };
  for (auto _ : state) {
    state.PauseTiming();
    for (int i = 0; i < kFlushEntries; ++i) {
      if (!w->Choose(produce).ok()) std::abort();
    }
    state.ResumeTiming();
    for (;;) {
      auto r = w->Flush();
      if (!r.ok()) std::abort();
      if (*r == 0) break;
    }
  }
  Metrics m = w->GetMetrics();
  state.SetItemsProcessed(state.iterations() * kFlushEntries);
  state.counters["entries_per_batch"] =
      m.flush_batches ? static_cast<double>(m.flushed_entries) / static_cast<double>(m.flush_batches) : 0;
  state.counters["sync_ms_mean"] =
      m.flush_batches ? static_cast<double>(m.flush_nanos_total) / static_cast<double>(m.flush_batches) / 1e6 : 0;
  w.reset();
  store.reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_Flush_RocksDBSynced)->Arg(1000)->Arg(4096)->Arg(16384)->UseRealTime()->Unit(benchmark::kMillisecond);

void BM_FlushBackground_RocksDBSynced(benchmark::State& state) {
  const std::string dir = TempDir("flushbg");
  auto store = std::move(*OpenRocksDbStore(dir));
  auto w = std::move(*FlushWorker(store.get(), static_cast<std::size_t>(state.range(0)), true));
  const auto produce = [] { return kValue70; };
  for (auto _ : state) {
    for (int i = 0; i < kFlushEntries; ++i) {
      if (!w->Choose(produce).ok()) std::abort();
    }
    if (!w->Sync(60'000'000'000).ok()) std::abort();
    benchmark::DoNotOptimize(w->TakeFrames());  // frees evicted entries, as an engine loop would
  }
  Metrics m = w->GetMetrics();
  state.SetItemsProcessed(state.iterations() * kFlushEntries);
  state.counters["entries_per_batch"] =
      m.flush_batches ? static_cast<double>(m.flushed_entries) / static_cast<double>(m.flush_batches) : 0;
  w.reset();
  store.reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_FlushBackground_RocksDBSynced)->Arg(4096)->Arg(16384)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace lstash
