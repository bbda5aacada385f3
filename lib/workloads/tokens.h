// The token workloads, counter and hashchain: each worker's start task
// injects `tokens` tokens that hop between workers chosen by logged
// randomness, `hops` times each. A token's last stop tells its origin; an
// origin whose tokens are all done tells every worker; a worker is finished
// once every origin has told it -- so each worker knows locally when its
// state is final, on real processes as in the simulator.
//
// Config: tokens (8), hops (4), large_percent (0: % of messages padded past
// the inline payload limit), large_bytes (2048), task_interval_ms (0).
#pragma once

#include "workloads/app.h"

#include <map>

namespace lstash::workloads {

using TaskKey = std::pair<WorkerId, std::uint64_t>;  // TaskId as a map key

// What a worker sent and applied, by task id: the exactly-once evidence.
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

Result<std::unique_ptr<App>> MakeCounterApp(const AppContext& context);
Result<std::unique_ptr<App>> MakeChainApp(const AppContext& context);

// Checkers over every worker's final app. Return violation descriptions.
std::vector<std::string> CheckCounter(const std::vector<const App*>& apps);
std::vector<std::string> CheckChain(const std::vector<const App*>& apps);

}  // namespace lstash::workloads
