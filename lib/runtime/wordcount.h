// The streaming wordcount (the lineage stash paper's workload), as a job of
// separate worker processes:
//
//   source (worker 0) --lines, routed by Random()--> mappers 1..M
//                     --word counts, by hash--> reducers M+1..M+R
//
// Config (JSON): mappers, reducers, input (file paths, read in order and
// replayed in a loop), rate (lines/s), duration_s, max_batch (lines per
// source tick), tick_ms (the source's pace).
#pragma once

#include "runtime/app.h"

#include <map>
#include <string>
#include <vector>

namespace lstash::runtime {

Result<std::unique_ptr<App>> MakeWordcount(const AppContext& context);

// The input lines the config names, in the order the source emits them.
Result<std::vector<std::string>> WordcountInput(const nlohmann::json& config);

// The counts of the first `lines` lines of `input` (looped), computed
// directly: what the job's reducers must end with.
std::map<std::string, std::uint64_t> WordcountExpected(const std::vector<std::string>& input, std::uint64_t lines);

}  // namespace lstash::runtime
