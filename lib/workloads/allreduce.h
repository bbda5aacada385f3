// allreduce: rounds of ring allreduce over float vectors. Each round, every
// worker draws a fresh vector from one logged random seed, adds half of the
// previous round's result (so an error carries forward), and the ring sums
// the vectors: W-1 reduce-scatter steps, then W-1 allgather steps, each
// worker sending one chunk to its right-hand neighbour per step.
//
// Float addition is not associative, so the sum depends on the order the
// ring adds in; the checker recomputes every round in that order from the
// logged seeds and compares every worker's result bit for bit, through its
// digest (XXH3 of the floats): a finished worker keeps only its digests, so
// a result of 100 MB need not travel to the checker.
//
// Each live round reports its time as a latency sample (TakeStats):
// [wall nanos when this worker entered the round (its input ready), nanos
// until it held the result, the round's number].
//
// Config: rounds (4: at most), duration_s (0: run every round; else worker 0
// makes the round running at that time the last, and the ring tells every
// worker), length (64; at least the number of workers, at most 2^26 floats),
// task_interval_ms (0).
#pragma once

#include "workloads/app.h"

namespace lstash::workloads {

Result<std::unique_ptr<App>> MakeAllreduceApp(const AppContext& context);
std::vector<std::string> CheckAllreduce(const nlohmann::json& config, const std::vector<const App*>& apps);

}  // namespace lstash::workloads
