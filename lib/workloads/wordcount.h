// The streaming wordcount (the lineage stash paper's workload):
//
//   source (worker 0) --lines, routed by Random()--> mappers 1..M
//                     --word counts, by hash--> reducers M+1..M+R
//
// Config (JSON): mappers, reducers, input (file paths, read in order and
// replayed in a loop) or generated_lines (N lines made up on the spot),
// rate (lines/s), duration_s, max_batch (lines per source tick), tick_ms
// (the source's pace).
#pragma once

#include "workloads/app.h"

#include <map>
#include <string>
#include <vector>

namespace lstash::workloads {

Result<std::unique_ptr<App>> MakeWordcount(const AppContext& context);

// The input lines the config names, in the order the source emits them.
Result<std::vector<std::string>> WordcountInput(const nlohmann::json& config);

// The counts of the first `lines` lines of `input` (looped), computed
// directly: what the job's reducers must end with.
std::map<std::string, std::uint64_t> WordcountExpected(const std::vector<std::string>& input, std::uint64_t lines);

// The reducers' counts against a direct count of what the source emitted.
std::vector<std::string> CheckWordcount(const nlohmann::json& config, const std::vector<const App*>& apps,
                                        std::string* summary);

}  // namespace lstash::workloads
