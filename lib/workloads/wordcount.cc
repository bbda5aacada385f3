#include "workloads/wordcount.h"

#include "workloads/codec.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <unordered_map>

namespace lstash::workloads {
namespace {

constexpr std::int64_t kSec = 1'000'000'000;
constexpr std::size_t kMaxLatencySamples = 2000;  // per heartbeat

struct Topology {
  std::uint32_t mappers = 0;
  std::uint32_t reducers = 0;
  WorkerId Mapper(std::uint32_t m) const { return 1 + m; }
  WorkerId Reducer(std::uint32_t r) const { return 1 + mappers + r; }
};


// Pops the next '\n'-terminated line off `s`.
bool NextLine(std::string_view& s, std::string_view* line) {
  if (s.empty()) return false;
  const std::size_t nl = s.find('\n');
  *line = s.substr(0, nl);
  s.remove_prefix(nl == std::string_view::npos ? s.size() : nl + 1);
  return true;
}

// A fixed hash (FNV-1a), so routing is the same in every incarnation.
std::uint64_t HashWord(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}


// Calls f(word) for each maximal run of ASCII letters and digits, lowercased.
template <typename F>
void ForEachWord(std::string_view line, F&& f) {
  std::string word;
  for (char c : line) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      word.push_back(c);
    } else if (c >= 'A' && c <= 'Z') {
      word.push_back(static_cast<char>(c - 'A' + 'a'));
    } else if (!word.empty()) {
      f(word);
      word.clear();
    }
  }
  if (!word.empty()) f(word);
}

// Payloads: "T"  a source tick (to itself)
//           "E"  end of stream
//           'B' emit-time(8) then lines, each ending in '\n'   (source -> mapper)
//           'W' emit-time(8) then "word count\n" pairs         (mapper -> reducer)

class SourceApp final : public App {
 public:
  SourceApp(Topology topo, std::vector<std::string> lines, double rate, double duration_s, std::uint64_t max_batch,
            std::int64_t tick_nanos)
      : topo_(topo),
        lines_(std::move(lines)),
        rate_(rate),
        duration_s_(duration_s),
        budget_(static_cast<std::uint64_t>(rate * duration_s)),
        max_batch_(max_batch),
        tick_nanos_(tick_nanos) {}

  Status Execute(Worker& w, const Task& t) override {
    if (t.start) {  // bootstrapping belongs in the start task: it is logged too
      LSTASH_ASSIGN_OR_RETURN(start_, w.Now());
      return w.Submit(w.id(), "T").status();
    }
    if (t.payload != "T") return Corruption("source: unexpected task " + ToString(t.id));
    // How many lines are due by now (the clock read is logged).
    LSTASH_ASSIGN_OR_RETURN(const std::int64_t now, w.Now());
    const std::int64_t elapsed = now - start_;
    const double due_lines = elapsed <= 0 ? 0 : static_cast<double>(elapsed) * rate_ / kSec;
    const std::uint64_t due = std::min(budget_, static_cast<std::uint64_t>(due_lines));
    const std::uint64_t n = due > emitted_ ? std::min(due - emitted_, max_batch_) : 0;
    if (n > 0) {
      // Reading the input is the nondeterministic event: live, the lambda
      // reads the lines and lstash logs them; in replay the logged lines
      // come back and the lambda is not called.
      LSTASH_ASSIGN_OR_RETURN(const std::string text, w.Choose([&] { return ReadLines(emitted_, n); }));
      // Each line goes to a mapper drawn from a generator seeded by one
      // logged random value per tick.
      LSTASH_ASSIGN_OR_RETURN(std::uint64_t rng, w.Random());
      std::vector<std::string> batches(topo_.mappers);
      std::string_view rest = text, line;
      std::uint64_t count = 0;
      while (NextLine(rest, &line)) {
        std::string& b = batches[SplitMix(rng) % topo_.mappers];
        if (b.empty()) b.push_back('B'), PutU64(b, static_cast<std::uint64_t>(now));
        b.append(line).push_back('\n');
        ++count;
      }
      for (std::uint32_t m = 0; m < topo_.mappers; ++m) {
        if (!batches[m].empty()) LSTASH_RETURN_IF_ERROR(w.Submit(topo_.Mapper(m), batches[m]).status());
      }
      emitted_ += count;
    }
    if (elapsed >= static_cast<std::int64_t>(duration_s_ * kSec) || emitted_ >= budget_) {
      for (std::uint32_t m = 0; m < topo_.mappers; ++m) LSTASH_RETURN_IF_ERROR(w.Submit(topo_.Mapper(m), "E").status());
      done_ = true;
      return Status::OK();
    }
    return w.Submit(w.id(), "T").status();  // the next tick
  }

  std::string Snapshot() const override {
    return std::to_string(start_) + " " + std::to_string(emitted_) + " " + (done_ ? "1" : "0");
  }
  Status Restore(const std::string& bytes) override {
    std::istringstream in(bytes);
    int done = 0;
    if (!(in >> start_ >> emitted_ >> done)) return Corruption("source snapshot");
    done_ = done != 0;
    return Status::OK();
  }
  bool Finished() const override { return done_; }
  void TakeStats(nlohmann::json* stats) override { (*stats)["emitted"] = emitted_; }
  std::uint64_t emitted() const { return emitted_; }
  std::int64_t MinTaskIntervalNanos() const override { return tick_nanos_; }

 private:
  // Lines [from, from + n) of the input, replayed in a loop.
  std::string ReadLines(std::uint64_t from, std::uint64_t n) const {
    std::string s;
    for (std::uint64_t i = from; i < from + n; ++i) s.append(lines_[i % lines_.size()]).push_back('\n');
    return s;
  }

  const Topology topo_;
  const std::vector<std::string> lines_;
  const double rate_;
  const double duration_s_;
  const std::uint64_t budget_;
  const std::uint64_t max_batch_;
  const std::int64_t tick_nanos_;
  std::int64_t start_ = 0;
  std::uint64_t emitted_ = 0;
  bool done_ = false;
};

class MapperApp final : public App {
 public:
  explicit MapperApp(Topology topo) : topo_(topo) {}

  Status Execute(Worker& w, const Task& t) override {
    if (t.start) return Status::OK();
    std::string_view p = t.payload;
    if (p == "E") {
      for (std::uint32_t r = 0; r < topo_.reducers; ++r) LSTASH_RETURN_IF_ERROR(w.Submit(topo_.Reducer(r), "E").status());
      eos_ = true;
      return Status::OK();
    }
    std::uint64_t emitted = 0;
    if (p.empty() || p[0] != 'B' || (p.remove_prefix(1), !GetU64(p, &emitted))) {
      return Corruption("mapper: bad payload of " + ToString(t.id));
    }
    // std::map, not unordered_map: a replayed task must submit byte-for-byte
    // the same payloads.
    std::vector<std::map<std::string, std::uint64_t>> counts(topo_.reducers);
    std::string_view line;
    while (NextLine(p, &line)) {
      ++lines_;
      ForEachWord(line, [&](const std::string& word) { ++counts[HashWord(word) % topo_.reducers][word]; });
    }
    for (std::uint32_t r = 0; r < topo_.reducers; ++r) {
      if (counts[r].empty()) continue;
      std::string out(1, 'W');
      PutU64(out, emitted);
      for (const auto& [word, n] : counts[r]) out.append(word).append(" ").append(std::to_string(n)).push_back('\n');
      LSTASH_RETURN_IF_ERROR(w.Submit(topo_.Reducer(r), out).status());
    }
    return Status::OK();
  }

  std::string Snapshot() const override { return std::to_string(lines_) + " " + (eos_ ? "1" : "0"); }
  Status Restore(const std::string& bytes) override {
    std::istringstream in(bytes);
    int eos = 0;
    if (!(in >> lines_ >> eos)) return Corruption("mapper snapshot");
    eos_ = eos != 0;
    return Status::OK();
  }
  bool Finished() const override { return eos_; }

 private:
  const Topology topo_;
  std::uint64_t lines_ = 0;
  bool eos_ = false;
};

class ReducerApp final : public App {
 public:
  explicit ReducerApp(Topology topo) : topo_(topo) {}

  Status Execute(Worker&, const Task& t) override {
    if (t.start) return Status::OK();
    std::string_view p = t.payload;
    if (p == "E") {
      ++eos_;
      return Status::OK();
    }
    std::uint64_t emitted = 0;
    if (p.empty() || p[0] != 'W' || (p.remove_prefix(1), !GetU64(p, &emitted))) {
      return Corruption("reducer: bad payload of " + ToString(t.id));
    }
    std::string_view line;
    while (NextLine(p, &line)) {
      const std::size_t sp = line.find(' ');
      if (sp == std::string_view::npos) return Corruption("reducer: bad pair in " + ToString(t.id));
      counts_[std::string(line.substr(0, sp))] += std::strtoull(std::string(line.substr(sp + 1)).c_str(), nullptr, 10);
    }
    // Measurement only (not state): a replayed batch was measured the first time.
    if (!t.replayed && samples_.size() < kMaxLatencySamples) {
      const std::int64_t applied = SystemClock()->WallNanos();
      samples_.push_back({static_cast<std::int64_t>(emitted), applied - static_cast<std::int64_t>(emitted)});
    }
    ++batches_;
    return Status::OK();
  }

  // The snapshot: "eos\n" then "word count\n" per word.
  std::string Snapshot() const override {
    std::string s = std::to_string(eos_) + "\n";
    for (const auto& [word, n] : counts_) s.append(word).append(" ").append(std::to_string(n)).push_back('\n');
    return s;
  }
  Status Restore(const std::string& bytes) override {
    std::istringstream in(bytes);
    counts_.clear();
    if (!(in >> eos_)) return Corruption("reducer snapshot");
    std::string word;
    std::uint64_t n = 0;
    while (in >> word >> n) counts_[word] = n;
    if (!in.eof()) return Corruption("reducer snapshot");
    return Status::OK();
  }
  bool Finished() const override { return eos_ >= topo_.mappers; }
  void TakeStats(nlohmann::json* stats) override {
    // [emitted wall nanos, end-to-end latency nanos] per batch.
    nlohmann::json lat = nlohmann::json::array();
    for (const auto& [emitted, latency] : samples_) lat.push_back({emitted, latency});
    (*stats)["latency"] = std::move(lat);
    (*stats)["batches"] = batches_;
    samples_.clear();
  }
  const std::unordered_map<std::string, std::uint64_t>& counts() const { return counts_; }

 private:
  const Topology topo_;
  std::unordered_map<std::string, std::uint64_t> counts_;
  std::uint32_t eos_ = 0;
  std::uint64_t batches_ = 0;
  std::vector<std::pair<std::int64_t, std::int64_t>> samples_;
};

// Lines of words from a small vocabulary, the same on every run: input for
// the simulator and tests, which read no files.
std::vector<std::string> GeneratedLines(std::uint64_t count) {
  static const char* const kWords[] = {"lineage", "stash", "replay", "epoch",  "flush", "commit", "orphan",
                                       "causal",  "log",   "worker", "store",  "frame", "peer",   "crash"};
  std::vector<std::string> lines;
  std::uint64_t rng = 42;
  for (std::uint64_t i = 0; i < count; ++i) {
    std::string line;
    for (std::uint64_t k = 1 + SplitMix(rng) % 9; k > 0; --k) {
      line.append(kWords[SplitMix(rng) % std::size(kWords)]).append(k > 1 ? " " : "");
    }
    lines.push_back(std::move(line));
  }
  return lines;
}

}  // namespace

Result<std::vector<std::string>> WordcountInput(const nlohmann::json& config) {
  if (config.contains("generated_lines")) {
    const std::uint64_t n = config.value("generated_lines", 0ull);
    if (n == 0 || n > 10'000'000) return InvalidArgument("wordcount: generated_lines must be 1..10^7");
    return GeneratedLines(n);
  }
  if (!config.contains("input") || !config["input"].is_array() || config["input"].empty()) {
    return InvalidArgument("wordcount: config has no input files");
  }
  std::vector<std::string> lines;
  for (const auto& path : config["input"]) {
    if (!path.is_string()) return InvalidArgument("wordcount: input entries must be file paths");
    std::ifstream in(path.get<std::string>());
    if (!in) return InvalidArgument("wordcount: cannot read input file " + path.get<std::string>());
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
  }
  if (lines.empty()) return InvalidArgument("wordcount: the input files hold no lines");
  return lines;
}

std::map<std::string, std::uint64_t> WordcountExpected(const std::vector<std::string>& input, std::uint64_t lines) {
  std::map<std::string, std::uint64_t> counts;
  for (std::uint64_t i = 0; i < lines; ++i) {
    ForEachWord(input[i % input.size()], [&](const std::string& word) { ++counts[word]; });
  }
  return counts;
}

Result<std::unique_ptr<App>> MakeWordcount(const AppContext& context) {
  const nlohmann::json& c = context.config;
  Topology topo;
  topo.mappers = c.value("mappers", 2u);
  topo.reducers = c.value("reducers", 2u);
  if (topo.mappers == 0 || topo.reducers == 0 || 1 + topo.mappers + topo.reducers != context.workers) {
    return InvalidArgument("wordcount: " + std::to_string(topo.mappers) + " mappers and " +
                           std::to_string(topo.reducers) + " reducers need " +
                           std::to_string(1 + topo.mappers + topo.reducers) + " workers, the job has " +
                           std::to_string(context.workers));
  }
  if (context.self == 0) {
    LSTASH_ASSIGN_OR_RETURN(auto lines, WordcountInput(c));
    const double rate = c.value("rate", 20000.0);
    const double duration = c.value("duration_s", 20.0);
    if (rate <= 0 || duration <= 0) return InvalidArgument("wordcount: rate and duration_s must be positive");
    return std::unique_ptr<App>(std::make_unique<SourceApp>(topo, std::move(lines), rate, duration,
                                                            c.value("max_batch", 200u),
                                                            c.value("tick_ms", 2.0) * 1'000'000));
  }
  if (context.self <= topo.mappers) return std::unique_ptr<App>(std::make_unique<MapperApp>(topo));
  return std::unique_ptr<App>(std::make_unique<ReducerApp>(topo));
}

std::vector<std::string> CheckWordcount(const nlohmann::json& config, const std::vector<const App*>& apps,
                                        std::string* summary) {
  auto input = WordcountInput(config);
  if (!input.ok()) return {input.status().ToString()};
  const std::uint32_t mappers = config.value("mappers", 2u);
  const std::uint64_t emitted = static_cast<const SourceApp*>(apps[0])->emitted();
  std::map<std::string, std::uint64_t> got;
  for (std::size_t w = 1 + mappers; w < apps.size(); ++w) {
    for (const auto& [word, n] : static_cast<const ReducerApp*>(apps[w])->counts()) got[word] += n;
  }
  const auto expected = WordcountExpected(*input, emitted);
  std::vector<std::string> v;
  std::uint64_t differ = 0, words = 0;
  for (const auto& [word, n] : expected) words += n;
  auto compare = [&](const std::string& word, std::uint64_t want, std::uint64_t have) {
    if (want == have) return;
    if (differ++ < 5) v.push_back(fmt::format("exactly-once: '{}' counted {} times, a direct count says {}", word, have, want));
  };
  for (const auto& [word, n] : expected) compare(word, n, got.count(word) ? got.at(word) : 0);
  for (const auto& [word, n] : got) {
    if (!expected.count(word)) compare(word, 0, n);
  }
  if (differ > 5) v.push_back(fmt::format("exactly-once: {} words differ in all", differ));
  *summary = fmt::format("the reducers' counts {} a direct count of the {} emitted lines ({} words, {} distinct, {} differ)",
                         differ ? "differ from" : "equal", emitted, words, expected.size(), differ);
  return v;
}

}  // namespace lstash::workloads
