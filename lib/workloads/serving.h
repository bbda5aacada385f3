// serving: a GPU inference server with dynamic batching (as in Nexus,
// Shen et al., SOSP'19). Worker 0 is the server: it holds a small MLP's
// weights (made from a fixed seed) as device buffers. Workers 1.. are
// clients, each sending `requests` requests whose input vectors are derived
// from (client, seq), one per task at a paced rate.
//
// Batching: the server reads the clock (a logged Now()) as each request
// arrives. A request arriving more than window_ms after its batch opened
// closes that batch first and opens the next; a batch also closes at
// max_batch requests, and when the job's last request has arrived. So
// receipt order and clock reads, both logged, decide every batch.
//
// The model keeps running statistics, as batch normalization does:
//   h = relu(x W1 + b1)                          per request of the batch
//   r = 0.9 r + (0.1 / B) sum_batch(h)           on the device, across batches
//   y = h W2 + (r W3 + b2)
// so each answer depends on its own batch's composition and on every batch
// before it: a replay that composed a batch differently would answer
// differently. Each batch runs in a gpu::TaskScope whose Finish digests y
// and r (logged live, checked on replay). Each response reports its batch:
// number, composition, and the request's row in it.
//
// Checker: every request answered exactly once; every batch reported with
// one composition, batches numbered 0.. without gaps, each request in
// exactly one; and every answer bit for bit what the checker's reference
// (the same model on the CPU path, batches replayed in order) computes.
//
// Config: backend ("auto" | "cpu" | "cuda"), requests (32 per client),
// request_interval_ms (1: a client runs a task at most this often, sending
// a request or taking a response), max_batch (8), window_ms (2), in (16),
// hidden (32), out (8), seed (7: weights and inputs).
#pragma once

#include "workloads/app.h"

namespace lstash::workloads {

Result<std::unique_ptr<App>> MakeServingApp(const AppContext& context);
std::vector<std::string> CheckServing(const nlohmann::json& config, const std::vector<const App*>& apps);

}  // namespace lstash::workloads
