// ring: the lineage stash paper's latency microbenchmark. Tokens travel
// around a ring of workers, one hop per task; every hop measures its
// latency (from the sender's Submit to the receiver's task start).
//
//   nondet false  a task calls nothing nondeterministic: the only logged
//                 events are the receipts lstash logs for every task.
//   nondet true   each task also draws Random() and folds it into the
//                 worker's state: one more logged event per hop.
//
// Worker 0 starts `tokens` tokens and reads the clock (a logged Now()) every
// `check_laps` laps of a token; once duration_s has passed it stops each
// token as it comes round, then tells the ring to finish. Any mode and any
// fault sees the same kind of work, and the checker knows exactly which
// hops each worker must have run: token t's hops 1..H(t), hop h at worker
// h mod W, each exactly once.
//
// Config: tokens (1), nondet (false), duration_s (1), check_laps (16),
// payload_bytes (64: the task's size on the wire), work_us (0: busy work
// per task, to model longer tasks).
#pragma once

#include "workloads/app.h"

namespace lstash::workloads {

Result<std::unique_ptr<App>> MakeRingApp(const AppContext& context);
std::vector<std::string> CheckRing(const std::vector<const App*>& apps);

}  // namespace lstash::workloads
