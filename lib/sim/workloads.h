// Simulated applications: what an engine would run on each worker, plus the
// independent checkers that judge their final states.
//
// Apps see lstash only through the public Worker API. Every app records what
// it sent and what it applied (by task id) so the checker can verify
// exactly-once delivery without trusting the library.
#pragma once

#include <lstash/worker.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace lstash::sim {

struct AppParams {
  std::uint32_t workers = 0;
  std::uint32_t tokens = 0;
  std::uint32_t hops = 0;
  std::uint32_t large_percent = 0;
  std::size_t large_bytes = 2048;  // over the default inline limit
};

// Called after each Submit; the simulator may throw SimCrash from it to kill
// the worker in the middle of a task.
using SubmitHook = std::function<void()>;
struct SimCrash {};

class App {
 public:
  virtual ~App() = default;
  virtual Status Execute(Worker& worker, const Task& task, const SubmitHook& hook) = 0;
  virtual std::string Snapshot() const = 0;
  virtual Status Restore(const std::string& bytes) = 0;
};

using TaskKey = std::pair<WorkerId, std::uint64_t>;  // TaskId as a map key

// State common to both workloads: what this worker sent and applied.
struct Ledger {
  struct Sent {
    WorkerId dest = 0;
    std::uint64_t value = 0;
  };
  struct Applied {
    std::uint32_t times = 0;
    std::uint64_t value = 0;
  };
  std::map<TaskKey, Sent> sent;
  std::map<TaskKey, Applied> applied;
};

struct CounterState {
  Ledger ledger;
  std::uint64_t sum = 0;
};

struct ChainState {
  Ledger ledger;
  std::vector<std::uint64_t> chain;    // every state this actor took, in order
  std::vector<std::uint64_t> inputs;   // the inputs that produced them
  struct Observation {
    WorkerId actor;
    std::uint64_t k;  // 1-based position in the actor's chain
    std::uint64_t state;
  };
  std::vector<Observation> observed;
};

std::unique_ptr<App> MakeCounterApp(WorkerId self, const AppParams& params);
std::unique_ptr<App> MakeChainApp(WorkerId self, const AppParams& params);

// Checkers over every worker's final app. Return violation descriptions.
std::vector<std::string> CheckCounter(const std::vector<const App*>& apps);
std::vector<std::string> CheckChain(const std::vector<const App*>& apps);

}  // namespace lstash::sim
