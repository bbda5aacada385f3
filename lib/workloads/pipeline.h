// pipeline: pipeline-parallel training (as in PipeDream, Narayanan et al.,
// SOSP'19). Each worker is a stage holding one layer's weights on its
// device: stage 0 makes minibatches from a seed, activations flow forward,
// the last stage takes the gradient of the mean squared error against a
// target made from the same seed, gradients flow back, and every stage
// applies SGD with its own gradient.
//
// Schedule: 1F1B with weight stashing. Stage s of S runs a fixed sequence
// of operations: S-1-s forwards to fill the pipeline, then forward and
// backward alternately, then the remaining backwards. An operation runs as
// soon as its input is there (activations from s-1, gradients from s+1);
// inputs that arrive early wait in the stage's state. A forward stashes the
// weights it used; its backward takes the gradient through those (one
// weight version for both passes) and applies it to the current weights.
// The sequence, not message timing, decides which weights each operation
// sees, so a failure-free run is well defined. Each operation runs in a
// gpu::TaskScope whose Finish digests the stage's weights (checked on
// replay).
//
// Checker: every stage's final weights are, bit for bit, those of a
// failure-free run of the same schedule computed in the checker's process
// on the CPU path.
//
// Config: backend ("auto" | "cpu" | "cuda"), minibatches (16), batch (8
// rows), in (16), hidden (16), out (4), lr (0.05), seed (11: data and
// initial weights), task_interval_ms (0).
#pragma once

#include "workloads/app.h"

namespace lstash::workloads {

Result<std::unique_ptr<App>> MakePipelineApp(const AppContext& context);
std::vector<std::string> CheckPipeline(const nlohmann::json& config, const std::vector<const App*>& apps);

}  // namespace lstash::workloads
