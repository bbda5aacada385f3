// The application: a streaming wordcount, written against lstash's task
// model. This is the code a user of lstash writes; the engine (engine.h)
// runs it.
//
//   source ──(lines, routed by Random())──> M mappers ──(word counts, by hash)──> R reducers
//
// Tasks must be deterministic given their payload and the values lstash
// hands them (Now, Random, Choose): a recovering worker re-runs them and must
// make the same submissions. What they do besides -- reading the real clock
// to measure latency -- must not affect their state or their output.
#pragma once

#include "demo/util.h"

#include <lstash/worker.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace demo {

// What every task may read: the topology, the input and the stream's pace.
struct Topology {
  std::uint32_t mappers = 0;
  std::uint32_t reducers = 0;
  std::uint32_t workers() const { return 1 + mappers + reducers; }
  static constexpr lstash::WorkerId kSource = 0;
  lstash::WorkerId Mapper(std::uint32_t m) const { return 1 + m; }
  lstash::WorkerId Reducer(std::uint32_t r) const { return 1 + mappers + r; }
};

struct StreamSpec {
  Topology topology;
  std::vector<std::string> lines;  // the input, replayed in a loop
  double rate = 0;                 // lines per second
  double duration_s = 0;
  std::uint64_t line_budget = 0;   // rate * duration
  std::uint64_t max_batch = 0;     // most lines one tick emits
};

// End-to-end latency samples: (source emit time, reducer apply time), wall nanos.
class LatencyLog {
 public:
  void Add(std::int64_t emitted, std::int64_t applied);
  // Latencies of the samples added since *cursor, which it advances.
  std::vector<std::int64_t> Since(std::size_t* cursor);
  // Latencies of the records emitted in [from, to].
  std::vector<std::int64_t> EmittedIn(std::int64_t from, std::int64_t to);

 private:
  struct Sample {
    std::int64_t emitted;
    std::int64_t applied;
  };
  std::mutex mu_;
  std::vector<Sample> samples_;
};

// Measurements the apps report; not part of their state.
struct Measurements {
  LatencyLog latency;
  std::atomic<std::uint64_t> emitted{0};  // lines the source has emitted
};

class App {
 public:
  virtual ~App() = default;
  virtual lstash::Status Execute(lstash::Worker& w, const lstash::Task& t) = 0;
  virtual std::string Snapshot() const = 0;
  virtual lstash::Status Restore(const std::string& bytes) = 0;
  virtual bool Finished() const = 0;  // saw (or, at the source, sent) end of stream
};

enum class Role { kSource, kMapper, kReducer };

std::unique_ptr<App> MakeApp(Role role, const StreamSpec& spec, Measurements* out);

// Final state, read once the engines have stopped.
std::uint64_t SourceEmitted(const App& source);
const std::unordered_map<std::string, std::uint64_t>& ReducerCounts(const App& reducer);

}  // namespace demo
