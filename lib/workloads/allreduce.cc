#include "workloads/allreduce.h"

#include "workloads/codec.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <map>

namespace lstash::workloads {
namespace {

// 256 MiB of floats: a 2-worker chunk still fits the transport's frames.
constexpr std::uint64_t kMaxLength = std::uint64_t{1} << 26;

struct Params {
  std::uint32_t workers = 0;
  std::uint64_t rounds = 4;      // at most
  double duration_s = 0;         // > 0: worker 0 ends the job after the round running at this time
  std::uint64_t length = 64;
  std::int64_t task_interval_nanos = 0;
};

Result<Params> ReadParams(const AppContext& c) {
  Params p;
  p.workers = c.workers;
  try {
    p.rounds = c.config.value("rounds", p.rounds);
    p.length = c.config.value("length", p.length);
    p.duration_s = c.config.value("duration_s", 0.0);
    p.task_interval_nanos = static_cast<std::int64_t>(c.config.value("task_interval_ms", 0.0) * 1e6);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("allreduce config: ") + e.what());
  }
  if (p.workers < 2 || p.rounds == 0 || p.length < p.workers || p.length > kMaxLength || p.duration_s < 0) {
    return InvalidArgument(fmt::format("allreduce: needs 2+ workers, rounds > 0 and workers <= length <= 2^26 "
                                       "(workers {}, rounds {}, length {})", p.workers, p.rounds, p.length));
  }
  return p;
}

using Vec = std::vector<float>;

// Element i of a round's input: draw i of the round's seed, in [-1, 1), plus
// half of the previous result's element i. One element at a time, so the
// checker needs no vector per worker.
float Input(std::uint64_t seed, std::uint64_t i, float previous) {
  std::uint64_t state = seed + i * kSplitMixGamma;
  const float fresh = static_cast<float>(SplitMix(state) >> 40) / static_cast<float>(1u << 24) * 2.0f - 1.0f;
  return fresh + 0.5f * previous;
}

// XXH3 of the floats as f32s encodes them, the same on every machine.
std::uint64_t Digest(const Vec& v) {
  if constexpr (std::endian::native == std::endian::little) {
    return XXH3_64bits(v.data(), v.size() * sizeof(float));
  } else {
    Writer w;
    w.f32s(v);
    const std::string bytes = w.take();
    return XXH3_64bits(bytes.data(), bytes.size());
  }
}

std::size_t ChunkBegin(std::uint64_t k, std::uint64_t workers, std::uint64_t length) { return k * length / workers; }

class AllreduceApp final : public App {
 public:
  AllreduceApp(WorkerId self, const Params& p) : self_(self), p_(p) {}

  const std::vector<std::uint64_t>& seeds() const { return seeds_; }
  const std::vector<std::uint64_t>& digests() const { return digests_; }

  Status Execute(Worker& w, const Task& t) override {
    const bool live = !t.replayed;
    if (t.start) {
      if (p_.duration_s > 0 && self_ == 0) {
        LSTASH_ASSIGN_OR_RETURN(start_, w.Now());
      }
      return StartRound(w, live);
    }
    Reader r(t.payload);
    std::uint64_t round = 0, step = 0;
    if (!r.u64(&round) || !r.u64(&step) || round >= p_.rounds || step >= 2 * (p_.workers - 1ull) ||
        t.sender != Left()) {
      return Corruption("allreduce: unexpected task " + ToString(t.id));
    }
    // Steps arrive in order on a FIFO channel; any that come early wait
    // (copied: a chunk may be 50 MB, so only then).
    if (round != round_ || step != step_) {
      pending_[{round, step}] = std::string(r.rest());
      return Status::OK();
    }
    LSTASH_RETURN_IF_ERROR(Step(w, r.rest(), live));
    for (auto it = pending_.find({round_, step_}); it != pending_.end(); it = pending_.find({round_, step_})) {
      const std::string chunk = std::move(it->second);
      pending_.erase(it);
      LSTASH_RETURN_IF_ERROR(Step(w, chunk, live));
    }
    return Status::OK();
  }

  bool Finished() const override { return finished_; }
  std::int64_t MinTaskIntervalNanos() const override { return p_.task_interval_nanos; }
  void TakeStats(nlohmann::json* stats) override {
    latency_.TakeInto(stats);  // per live round
    (*stats)["rounds"] = digests_.size();
  }

  std::string Snapshot() const override {
    Writer w;
    w.u64(round_);
    w.u64(step_);
    w.u64(stop_seen_);
    w.u64(finished_);
    w.u64(static_cast<std::uint64_t>(start_));
    w.u64(acc_.size());
    w.f32s(acc_);
    for (const auto* list : {&seeds_, &digests_}) {
      w.u64(list->size());
      for (std::uint64_t x : *list) w.u64(x);
    }
    w.u64(pending_.size());
    for (const auto& [key, chunk] : pending_) {
      w.u64(key.first);
      w.u64(key.second);
      w.u64(chunk.size());
      w.raw(chunk);
    }
    return w.take();
  }

  Status Restore(const std::string& bytes) override {
    Reader r(bytes);
    std::uint64_t stop = 0, finished = 0, start = 0;
    std::uint64_t length = 0;
    bool ok = r.u64(&round_) && r.u64(&step_) && r.u64(&stop) && r.u64(&finished) && r.u64(&start) &&
              r.u64(&length) && (length == 0 || length == p_.length);
    stop_seen_ = stop != 0;
    finished_ = finished != 0;
    start_ = static_cast<std::int64_t>(start);
    acc_.assign(ok ? length : 0, 0.0f);
    ok = ok && r.f32s(acc_);
    for (auto* list : {&seeds_, &digests_}) {
      std::uint64_t n = 0;
      ok = ok && r.u64(&n) && n <= p_.rounds;
      list->assign(ok ? n : 0, 0);
      for (std::uint64_t& x : *list) ok = ok && r.u64(&x);
    }
    std::uint64_t n = 0;
    ok = ok && r.u64(&n);
    pending_.clear();
    for (std::uint64_t i = 0; ok && i < n; ++i) {
      std::uint64_t round = 0, step = 0, size = 0;
      ok = r.u64(&round) && r.u64(&step) && r.u64(&size) && size <= r.rest().size();
      if (ok) {
        pending_[{round, step}] = std::string(r.rest().substr(0, size));
        r = Reader(r.rest().substr(size));
      }
    }
    if (!ok || !r.done()) return Corruption("allreduce snapshot");
    return Status::OK();
  }

 private:
  WorkerId Left() const { return (self_ + p_.workers - 1) % p_.workers; }
  WorkerId Right() const { return (self_ + 1) % p_.workers; }
  std::uint64_t Mod(std::int64_t k) const { return static_cast<std::uint64_t>((k % p_.workers + p_.workers) % p_.workers); }

  Status StartRound(Worker& w, bool live) {
    LSTASH_ASSIGN_OR_RETURN(const std::uint64_t seed, w.Random());
    seeds_.push_back(seed);
    if (acc_.empty()) acc_.assign(p_.length, 0.0f);  // round 0 adds half of nothing
    for (std::size_t i = 0; i < acc_.size(); ++i) acc_[i] = Input(seed, i, acc_[i]);  // acc_ held the last result
    entered_ = live ? MonoNow() : -1;
    step_ = 0;
    // Worker 0 decides whether this round is the last (its clock read is
    // logged); the decision rides on every message of the round, and the
    // ring carries it to every worker before the round ends.
    stop_seen_ = round_ + 1 == p_.rounds;
    if (self_ == 0 && p_.duration_s > 0 && !stop_seen_) {
      LSTASH_ASSIGN_OR_RETURN(const std::int64_t now, w.Now());
      stop_seen_ = now - start_ >= static_cast<std::int64_t>(p_.duration_s * 1e9);
    }
    return SendChunk(w, 0, self_);  // reduce-scatter starts with our own chunk
  }

  Status SendChunk(Worker& w, std::uint64_t step, std::uint64_t k) {
    const std::size_t begin = ChunkBegin(k, p_.workers, p_.length), end = ChunkBegin(k + 1, p_.workers, p_.length);
    Writer out;
    out.reserve(3 * 8 + (end - begin) * sizeof(float));
    out.u64(round_);
    out.u64(step);
    out.u64(stop_seen_);
    out.f32s(std::span<const float>(acc_).subspan(begin, end - begin));
    return w.Submit(Right(), out.take()).status();
  }

  // Step step_ of round round_ arrived from the left with `chunk`.
  Status Step(Worker& w, std::string_view chunk, bool live) {
    const std::uint64_t n = p_.workers;
    Reader flag(chunk);
    std::uint64_t stop = 0;
    if (!flag.u64(&stop)) return Corruption("allreduce: a step without its stop flag");
    stop_seen_ = stop_seen_ || stop != 0;
    chunk = flag.rest();
    const bool scatter = step_ < n - 1;
    // Reduce-scatter step s carries chunk self-1-s; allgather step a, self-a.
    const std::uint64_t k = scatter ? Mod(std::int64_t(self_) - 1 - std::int64_t(step_))
                                    : Mod(std::int64_t(self_) - std::int64_t(step_ - (n - 1)));
    const std::size_t begin = ChunkBegin(k, n, p_.length), end = ChunkBegin(k + 1, n, p_.length);
    if (chunk.size() != 4 * (end - begin)) return Corruption("allreduce: a chunk of the wrong size");
    const std::span<float> mine = std::span<float>(acc_).subspan(begin, end - begin);
    if (scatter) {
      received_.resize(mine.size());
      Reader(chunk).f32s(received_);
      for (std::size_t i = 0; i < mine.size(); ++i) mine[i] = mine[i] + received_[i];
    } else {
      Reader(chunk).f32s(mine);
    }
    ++step_;
    if (step_ < 2 * (n - 1)) return SendChunk(w, step_, k);  // pass it on (the last scatter step starts the gather)
    // The round is done: every chunk holds the sum.
    if (live && entered_ >= 0) latency_.EndNow(entered_, round_);
    digests_.push_back(Digest(acc_));
    if (stop_seen_) {
      finished_ = true;
      acc_ = Vec();  // the digests are the result from here on
      return Status::OK();
    }
    ++round_;
    return StartRound(w, live);
  }

  const WorkerId self_;
  const Params p_;
  std::uint64_t round_ = 0, step_ = 0;  // the step expected next from the left
  bool stop_seen_ = false;              // this round is the last
  bool finished_ = false;
  std::int64_t start_ = 0;              // worker 0: when the job started (logged)
  // This round's vector as it is summed; between rounds, the last result
  // (the next round's input adds half of it); empty once finished.
  Vec acc_;
  std::vector<std::uint64_t> seeds_;    // per round, logged
  std::vector<std::uint64_t> digests_;  // per finished round
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::string> pending_;  // early steps
  Vec received_;                        // a scatter step's incoming chunk, decoded
  // Measurements, not state: when this worker entered the round (monotonic;
  // -1 if it did so in replay), and the rounds timed since TakeStats.
  std::int64_t entered_ = -1;
  LatencySamples latency_;
};

}  // namespace

Result<std::unique_ptr<App>> MakeAllreduceApp(const AppContext& context) {
  LSTASH_ASSIGN_OR_RETURN(const Params p, ReadParams(context));
  return std::unique_ptr<App>(std::make_unique<AllreduceApp>(context.self, p));
}

std::vector<std::string> CheckAllreduce(const nlohmann::json& config, const std::vector<const App*>& apps) {
  std::vector<std::string> v;
  AppContext context{0, static_cast<std::uint32_t>(apps.size()), config};
  auto p = ReadParams(context);
  if (!p.ok()) return {p.status().ToString()};
  std::vector<const AllreduceApp*> workers;
  for (const App* a : apps) workers.push_back(static_cast<const AllreduceApp*>(a));
  // Every worker must have run the same rounds (worker 0 chose how many).
  const std::uint64_t rounds = workers[0]->digests().size();
  if (rounds == 0 || rounds > p->rounds) v.push_back(fmt::format("allreduce: worker 0 finished {} rounds", rounds));
  for (std::size_t w = 0; w < workers.size(); ++w) {
    if (workers[w]->digests().size() != rounds || workers[w]->seeds().size() != rounds) {
      v.push_back(fmt::format("allreduce: worker {} finished {} rounds, worker 0 {}", w, workers[w]->digests().size(), rounds));
    }
  }
  if (!v.empty()) return v;
  // The reference: each chunk summed around the ring from its owner, as the
  // ring does (chunk k starts at worker k, each next worker adds its own);
  // every worker's input adds half of the reference's previous round, so an
  // element needs only its own previous sum and the sum is built in place.
  const std::uint64_t n = workers.size();
  Vec sum(p->length, 0.0f);
  for (std::uint64_t round = 0; round < rounds; ++round) {
    for (std::uint64_t k = 0; k < n; ++k) {
      for (std::size_t i = ChunkBegin(k, n, p->length); i < ChunkBegin(k + 1, n, p->length); ++i) {
        const float previous = sum[i];
        float s = Input(workers[k]->seeds()[round], i, previous);
        for (std::uint64_t j = 1; j < n; ++j) s = Input(workers[(k + j) % n]->seeds()[round], i, previous) + s;
        sum[i] = s;
      }
    }
    const std::uint64_t want = Digest(sum);
    for (std::uint64_t w = 0; w < n; ++w) {
      if (workers[w]->digests()[round] != want) {
        v.push_back(fmt::format("allreduce: worker {} round {} result differs from the ring sum of the logged inputs",
                                w, round));
      }
    }
    if (v.size() > 20) break;
  }
  return v;
}

}  // namespace lstash::workloads
