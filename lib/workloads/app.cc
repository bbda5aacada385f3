#include "workloads/app.h"

#include "workloads/allreduce.h"
#include "workloads/pipeline.h"
#include "workloads/ring.h"
#include "workloads/serving.h"
#include "workloads/tokens.h"
#include "workloads/wordcount.h"

#include <fmt/format.h>

namespace lstash::workloads {

const std::vector<std::string>& WorkloadNames() {
  static const std::vector<std::string> names = {"allreduce", "counter", "hashchain", "pipeline", "ring", "serving", "wordcount"};
  return names;
}

Result<std::unique_ptr<App>> MakeApp(const std::string& workload, const AppContext& context) {
  if (workload == "wordcount") return MakeWordcount(context);
  if (workload == "counter") return MakeCounterApp(context);
  if (workload == "hashchain") return MakeChainApp(context);
  if (workload == "allreduce") return MakeAllreduceApp(context);
  if (workload == "ring") return MakeRingApp(context);
  if (workload == "serving") return MakeServingApp(context);
  if (workload == "pipeline") return MakePipelineApp(context);
  return InvalidArgument("unknown workload '" + workload +
                         "' (known: allreduce, counter, hashchain, pipeline, ring, serving, wordcount)");
}

std::string WorkerName(const std::string& workload, const nlohmann::json& config, WorkerId id) {
  if (workload != "wordcount") return fmt::format("w{}", id);
  const std::uint32_t mappers = config.value("mappers", 2u);
  if (id == 0) return "source";
  return id <= mappers ? fmt::format("map{}", id - 1) : fmt::format("reduce{}", id - 1 - mappers);
}

Verdict Check(const std::string& workload, const nlohmann::json& config, const std::vector<const App*>& apps) {
  Verdict v;
  if (workload == "wordcount") {
    v.violations = CheckWordcount(config, apps, &v.summary);
    return v;
  }
  if (workload == "counter") v.violations = CheckCounter(apps);
  else if (workload == "hashchain") v.violations = CheckChain(apps);
  else if (workload == "allreduce") v.violations = CheckAllreduce(config, apps);
  else if (workload == "ring") v.violations = CheckRing(apps);
  else if (workload == "serving") v.violations = CheckServing(config, apps);
  else if (workload == "pipeline") v.violations = CheckPipeline(config, apps);
  else v.violations = {"unknown workload '" + workload + "'"};
  const char* what = workload == "ring" ? "every hop of every token run exactly once, at its worker"
                     : workload == "serving" ? "every request answered exactly once, bit for bit as the reference answers its batch"
                     : workload == "pipeline" ? "every stage's weights equal a failure-free training run's, bit for bit"
                     : workload == "allreduce" ? "every round's result equals the ring sum of the logged inputs, bit for bit"
                     : workload == "hashchain" ? "every task applied exactly once, every observed state on its actor's chain"
                                               : "every task applied exactly once, each sum its applied increments";
  v.summary = fmt::format("{} over {} workers: {}", workload, apps.size(),
                          v.violations.empty() ? what : fmt::format("{} violation(s)", v.violations.size()));
  return v;
}

std::string ToHex(std::string_view bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    s.push_back(kDigits[c >> 4]);
    s.push_back(kDigits[c & 15]);
  }
  return s;
}

Result<std::string> FromHex(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() % 2) return Corruption("hex of odd length");
  std::string s(hex.size() / 2, '\0');
  for (std::size_t i = 0; i < s.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Corruption("not hex");
    s[i] = static_cast<char>(hi << 4 | lo);
  }
  return s;
}

}  // namespace lstash::workloads
