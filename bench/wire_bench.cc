// Microbenchmarks of the wire codec. The task-frame encoder runs once per
// submitted message, so its cost with a few piggybacked entries is the
// number that matters; the per-entry counters show how it scales.
#include "wire/format.h"

#include <benchmark/benchmark.h>

#include <string>
#include <string_view>
#include <vector>

namespace lstash::wire {
namespace {

// An execute entry with a 100-byte inline payload and one dependency.
LogEntry ExecuteEntry100() {
  LogEntry e;
  e.owner = 3;
  e.epoch = 2;
  e.index = 12345;
  e.kind = EntryKind::kExecute;
  e.task = TaskId{1, 777};
  e.channel_seq = 42;
  e.deps = {Dep{1, 1, 700}};
  e.payload = std::string(100, 'p');
  return e;
}

// A value entry whose encoding is about 100 bytes (64-byte value), the
// size of a typical piggybacked entry.
LogEntry ValueEntry100() {
  LogEntry e;
  e.owner = 3;
  e.epoch = 2;
  e.index = 12346;
  e.kind = EntryKind::kValue;
  e.value_kind = ValueKind::kRandom;
  e.value = std::string(64, 'v');
  return e;
}

FrameHeader TaskHeader() {
  FrameHeader h;
  h.kind = FrameKind::kTask;
  h.sender = 1;
  h.sender_epoch = 2;
  h.sender_epoch_start = 100;
  h.dest = 3;
  h.dest_epoch = 2;
  return h;
}

void BM_EncodeEntry(benchmark::State& state, const LogEntry& entry) {
  std::string out;
  for (auto _ : state) {
    EncodeEntry(entry, &out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * out.size()));
}
BENCHMARK_CAPTURE(BM_EncodeEntry, execute_payload100, ExecuteEntry100());
BENCHMARK_CAPTURE(BM_EncodeEntry, value100, ValueEntry100());

void BM_DecodeEntry(benchmark::State& state, const LogEntry& entry) {
  std::string bytes;
  EncodeEntry(entry, &bytes);
  LogEntry out;
  for (auto _ : state) {
    Status s = DecodeEntry(bytes, &out);
    benchmark::DoNotOptimize(s);
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes.size()));
}
BENCHMARK_CAPTURE(BM_DecodeEntry, execute_payload100, ExecuteEntry100());
BENCHMARK_CAPTURE(BM_DecodeEntry, value100, ValueEntry100());

// What a task frame carries: a 100-byte payload, one dep, two watermarks
// and range(0) piggybacked entries of about 100 bytes each.
struct TaskFrameInputs {
  explicit TaskFrameInputs(int num_entries) : encoded(static_cast<std::size_t>(num_entries)) {
    for (std::string& e : encoded) EncodeEntry(ValueEntry100(), &e);
    views.assign(encoded.begin(), encoded.end());
  }
  std::string payload = std::string(100, 'x');
  std::vector<Dep> deps = {Dep{2, 1, 55}};
  std::vector<Watermark> watermarks = {Watermark{0, 10}, Watermark{2, 54}};
  std::vector<std::string> encoded;
  std::vector<std::string_view> views;

  void Encode(std::string* out) const {
    EncodeTaskFrame(TaskHeader(), 9001, 17, 0, 0, payload, deps, views, watermarks, out);
  }
};

void SetEntryCounters(benchmark::State& state, std::size_t frame_bytes) {
  const double entries = static_cast<double>(state.range(0));
  // entries/s, and its inverse: seconds of frame work per piggybacked entry.
  state.counters["entries"] = benchmark::Counter(entries, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["per_entry"] =
      benchmark::Counter(entries, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * frame_bytes));
}

void BM_EncodeTaskFrame(benchmark::State& state) {
  const TaskFrameInputs inputs(static_cast<int>(state.range(0)));
  std::string out;
  for (auto _ : state) {
    inputs.Encode(&out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  SetEntryCounters(state, out.size());
}
BENCHMARK(BM_EncodeTaskFrame)->Arg(0)->Arg(1)->Arg(2)->Arg(8)->Arg(64);

// The worker encodes each frame into a new string, so the first write of
// every byte lands in fresh memory; range(0) is the task payload's size.
void BM_EncodeTaskFrameFresh(benchmark::State& state) {
  const TaskFrameInputs inputs(2);
  const std::string payload(static_cast<std::size_t>(state.range(0)), 'x');
  std::size_t size = 0;
  for (auto _ : state) {
    std::string out;
    EncodeTaskFrame(TaskHeader(), 9001, 17, 0, 0, payload, inputs.deps, inputs.views, inputs.watermarks, &out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
    size = out.size();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}
BENCHMARK(BM_EncodeTaskFrameFresh)->Arg(100)->Arg(64 << 10);

void BM_DecodeTaskFrame(benchmark::State& state) {
  const TaskFrameInputs inputs(static_cast<int>(state.range(0)));
  std::string bytes;
  inputs.Encode(&bytes);
  DecodedFrame out;
  for (auto _ : state) {
    Status s = DecodeFrame(bytes, &out);
    benchmark::DoNotOptimize(s);
    benchmark::DoNotOptimize(out);
  }
  SetEntryCounters(state, bytes.size());
}
BENCHMARK(BM_DecodeTaskFrame)->Arg(0)->Arg(1)->Arg(2)->Arg(8)->Arg(64);

}  // namespace
}  // namespace lstash::wire
