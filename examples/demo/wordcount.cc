#include "demo/wordcount.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <sstream>

namespace demo {

using lstash::Status;
using lstash::Task;
using lstash::Worker;

void LatencyLog::Add(std::int64_t emitted, std::int64_t applied) {
  std::lock_guard<std::mutex> lock(mu_);
  samples_.push_back(Sample{emitted, applied});
}

std::vector<std::int64_t> LatencyLog::Since(std::size_t* cursor) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::int64_t> out;
  for (std::size_t i = *cursor; i < samples_.size(); ++i) out.push_back(samples_[i].applied - samples_[i].emitted);
  *cursor = samples_.size();
  return out;
}

std::vector<std::int64_t> LatencyLog::EmittedIn(std::int64_t from, std::int64_t to) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::int64_t> out;
  for (const auto& s : samples_) {
    if (s.emitted >= from && s.emitted <= to) out.push_back(s.applied - s.emitted);
  }
  return out;
}

namespace {

// Payloads: "T"  a source tick (to itself)
//           "E"  end of stream
//           'B' emit-time(8) then lines, each ending in '\n'   (source -> mapper)
//           'W' emit-time(8) then "word count\n" pairs         (mapper -> reducer)

class SourceApp final : public App {
 public:
  SourceApp(const StreamSpec& spec, Measurements* out) : spec_(spec), out_(out) {}

  Status Execute(Worker& w, const Task& t) override {
    const Topology& topo = spec_.topology;
    if (t.start) {  // bootstrapping belongs in the start task: it is logged too
      LSTASH_ASSIGN_OR_RETURN(start_, w.Now());
      return w.Submit(w.id(), "T").status();
    }
    if (t.payload != "T") return lstash::Corruption("source: unexpected task " + lstash::ToString(t.id));

    // How many lines are due by now (the clock read is logged).
    LSTASH_ASSIGN_OR_RETURN(const std::int64_t now, w.Now());
    const std::int64_t elapsed = now - start_;
    const double due_lines = elapsed <= 0 ? 0 : static_cast<double>(elapsed) * spec_.rate / kSec;
    const std::uint64_t due = std::min(spec_.line_budget, static_cast<std::uint64_t>(due_lines));
    const std::uint64_t n = due > emitted_ ? std::min(due - emitted_, spec_.max_batch) : 0;
    if (n > 0) {
      // Reading the input is the nondeterministic event: live, the lambda
      // reads the lines and lstash logs them; in replay the logged lines come
      // back and the lambda is not called.
      LSTASH_ASSIGN_OR_RETURN(const std::string text, w.Choose([&] { return ReadLines(emitted_, n); }));
      // Each line goes to a mapper drawn from a generator seeded by one
      // logged random value per tick.
      LSTASH_ASSIGN_OR_RETURN(std::uint64_t rng, w.Random());
      std::vector<std::string> batches(topo.mappers);
      std::string_view rest = text, line;
      std::uint64_t count = 0;
      while (NextLine(rest, &line)) {
        std::string& b = batches[SplitMix(rng) % topo.mappers];
        if (b.empty()) b.push_back('B'), PutU64(b, static_cast<std::uint64_t>(now));
        b.append(line).push_back('\n');
        ++count;
      }
      for (std::uint32_t m = 0; m < topo.mappers; ++m) {
        if (!batches[m].empty()) LSTASH_RETURN_IF_ERROR(w.Submit(topo.Mapper(m), batches[m]).status());
      }
      emitted_ += count;
      out_->emitted = emitted_;
    }
    if (elapsed >= static_cast<std::int64_t>(spec_.duration_s * kSec) || emitted_ >= spec_.line_budget) {
      for (std::uint32_t m = 0; m < topo.mappers; ++m) LSTASH_RETURN_IF_ERROR(w.Submit(topo.Mapper(m), "E").status());
      done_ = true;
      return Status::OK();
    }
    return w.Submit(w.id(), "T").status();  // the next tick
  }

  std::string Snapshot() const override { return fmt::format("{} {} {}", start_, emitted_, done_ ? 1 : 0); }
  Status Restore(const std::string& bytes) override {
    std::istringstream in(bytes);
    int done = 0;
    if (!(in >> start_ >> emitted_ >> done)) return lstash::Corruption("source snapshot");
    done_ = done != 0;
    out_->emitted = emitted_;
    return Status::OK();
  }
  bool Finished() const override { return done_; }
  std::uint64_t emitted() const { return emitted_; }

 private:
  // Lines [from, from + n) of the input, replayed in a loop.
  std::string ReadLines(std::uint64_t from, std::uint64_t n) const {
    std::string s;
    for (std::uint64_t i = from; i < from + n; ++i) s.append(spec_.lines[i % spec_.lines.size()]).push_back('\n');
    return s;
  }

  const StreamSpec& spec_;
  Measurements* out_;
  std::int64_t start_ = 0;
  std::uint64_t emitted_ = 0;
  bool done_ = false;
};

class MapperApp final : public App {
 public:
  explicit MapperApp(const StreamSpec& spec) : topo_(spec.topology) {}

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
      return lstash::Corruption("mapper: bad payload of " + lstash::ToString(t.id));
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

  std::string Snapshot() const override { return fmt::format("{} {}", lines_, eos_ ? 1 : 0); }
  Status Restore(const std::string& bytes) override {
    std::istringstream in(bytes);
    int eos = 0;
    if (!(in >> lines_ >> eos)) return lstash::Corruption("mapper snapshot");
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
  ReducerApp(const StreamSpec& spec, Measurements* out) : topo_(spec.topology), out_(out) {}

  Status Execute(Worker&, const Task& t) override {
    if (t.start) return Status::OK();
    std::string_view p = t.payload;
    if (p == "E") {
      ++eos_;
      return Status::OK();
    }
    std::uint64_t emitted = 0;
    if (p.empty() || p[0] != 'W' || (p.remove_prefix(1), !GetU64(p, &emitted))) {
      return lstash::Corruption("reducer: bad payload of " + lstash::ToString(t.id));
    }
    std::string_view line;
    while (NextLine(p, &line)) {
      const std::size_t sp = line.find(' ');
      if (sp == std::string_view::npos) return lstash::Corruption("reducer: bad pair in " + lstash::ToString(t.id));
      counts_[std::string(line.substr(0, sp))] += std::strtoull(std::string(line.substr(sp + 1)).c_str(), nullptr, 10);
    }
    // Measurement only. A replayed batch was measured the first time round.
    if (!t.replayed) out_->latency.Add(static_cast<std::int64_t>(emitted), WallNanos());
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
    if (!(in >> eos_)) return lstash::Corruption("reducer snapshot");
    std::string word;
    std::uint64_t n = 0;
    while (in >> word >> n) counts_[word] = n;
    if (!in.eof()) return lstash::Corruption("reducer snapshot");
    return Status::OK();
  }
  bool Finished() const override { return eos_ >= topo_.mappers; }
  const std::unordered_map<std::string, std::uint64_t>& counts() const { return counts_; }

 private:
  const Topology topo_;
  Measurements* out_;
  std::unordered_map<std::string, std::uint64_t> counts_;
  std::uint32_t eos_ = 0;
};

}  // namespace

std::unique_ptr<App> MakeApp(Role role, const StreamSpec& spec, Measurements* out) {
  switch (role) {
    case Role::kSource: return std::make_unique<SourceApp>(spec, out);
    case Role::kMapper: return std::make_unique<MapperApp>(spec);
    case Role::kReducer: return std::make_unique<ReducerApp>(spec, out);
  }
  return nullptr;
}

std::uint64_t SourceEmitted(const App& source) { return static_cast<const SourceApp&>(source).emitted(); }

const std::unordered_map<std::string, std::uint64_t>& ReducerCounts(const App& reducer) {
  return static_cast<const ReducerApp&>(reducer).counts();
}

}  // namespace demo
