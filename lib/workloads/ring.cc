#include "workloads/ring.h"

#include "workloads/codec.h"

#include <fmt/format.h>


namespace lstash::workloads {
namespace {

enum Kind : std::uint64_t { kToken = 0, kStop = 1 };

// kind, token, hop, send time: the rest of the payload is padding.
constexpr std::size_t kHeader = 4 * 8;

struct Params {
  std::uint32_t workers = 0;
  std::uint32_t tokens = 1;
  bool nondet = false;
  double duration_s = 1;
  std::uint64_t check_laps = 16;
  std::size_t payload_bytes = 64;
  std::int64_t work_nanos = 0;
};

Result<Params> ReadParams(const AppContext& c) {
  Params p;
  p.workers = c.workers;
  try {
    p.tokens = c.config.value("tokens", p.tokens);
    p.nondet = c.config.value("nondet", p.nondet);
    p.duration_s = c.config.value("duration_s", p.duration_s);
    p.check_laps = c.config.value("check_laps", p.check_laps);
    p.payload_bytes = c.config.value("payload_bytes", p.payload_bytes);
    p.work_nanos = static_cast<std::int64_t>(c.config.value("work_us", 0.0) * 1e3);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("ring config: ") + e.what());
  }
  if (p.workers < 2 || p.tokens == 0 || p.tokens > 4096 || p.check_laps == 0 || p.duration_s < 0 ||
      p.payload_bytes < kHeader || p.payload_bytes > (1u << 20) || p.work_nanos < 0) {
    return InvalidArgument(fmt::format("ring: needs 2+ workers, 1..4096 tokens, check_laps > 0, duration_s >= 0, "
                                       "{} <= payload_bytes <= 1 MiB, work_us >= 0",
                                       kHeader));
  }
  return p;
}

class RingApp final : public App {
 public:
  RingApp(WorkerId self, const Params& p) : self_(self), p_(p), runs_(p.tokens), stop_hop_(p.tokens, 0) {}

  Status Execute(Worker& w, const Task& t) override {
    if (t.start) {
      if (self_ != 0) return Status::OK();
      LSTASH_ASSIGN_OR_RETURN(started_, w.Now());
      for (std::uint64_t token = 0; token < p_.tokens; ++token) LSTASH_RETURN_IF_ERROR(Send(w, kToken, token, 1));
      return Status::OK();
    }
    Reader r(t.payload);
    std::uint64_t kind = 0, token = 0, hop = 0, sent = 0;
    if (!r.u64(&kind) || !r.u64(&token) || !r.u64(&hop) || !r.u64(&sent) || kind > kStop || token >= p_.tokens ||
        t.payload.size() != p_.payload_bytes || t.sender != Left()) {
      return Corruption("ring: unexpected task " + ToString(t.id));
    }
    if (!t.replayed) latency_.EndNow(static_cast<std::int64_t>(sent), hop);
    if (kind == kStop) {
      stopped_ = true;
      return Right() == 0 ? Status::OK() : Send(w, kStop, 0, 0);
    }
    if (hop % p_.workers != self_) return Corruption(fmt::format("ring: hop {} of token {} reached worker {}", hop, token, self_));
    if (p_.work_nanos > 0) {  // a longer task: busy, as computation would be
      for (const std::int64_t until = MonoNow() + p_.work_nanos; MonoNow() < until;) {
      }
    }
    if (p_.nondet) {
      LSTASH_ASSIGN_OR_RETURN(const std::uint64_t value, w.Random());
      state_ = Mix(state_, value);
    }
    state_ = Mix(state_, token << 48 ^ hop);
    runs_[token].count += 1;
    runs_[token].hop_sum += hop;
    ++hops_;
    bool last_hop = false;
    if (self_ == 0) {
      LSTASH_ASSIGN_OR_RETURN(last_hop, TimeIsUp(w, hop));
    }
    if (last_hop) {  // the token stops here
      stop_hop_[token] = hop;
      if (++tokens_stopped_ == p_.tokens) {
        stopped_ = true;
        return Send(w, kStop, 0, 0);
      }
      return Status::OK();
    }
    return Send(w, kToken, token, hop + 1);
  }

  std::string Snapshot() const override {
    Writer s;
    for (std::uint64_t v : {std::uint64_t{p_.tokens}, state_, hops_, static_cast<std::uint64_t>(started_),
                            std::uint64_t{expired_}, tokens_stopped_, std::uint64_t{stopped_}}) {
      s.u64(v);
    }
    for (std::uint32_t t = 0; t < p_.tokens; ++t) {
      s.u64(runs_[t].count);
      s.u64(runs_[t].hop_sum);
      s.u64(stop_hop_[t]);
    }
    return s.take();
  }

  Status Restore(const std::string& bytes) override {
    Reader r(bytes);
    std::uint64_t tokens = 0, started = 0, expired = 0, stopped = 0;
    if (!r.u64(&tokens) || tokens != p_.tokens || !r.u64(&state_) || !r.u64(&hops_) || !r.u64(&started) ||
        !r.u64(&expired) || !r.u64(&tokens_stopped_) || !r.u64(&stopped)) {
      return Corruption("ring snapshot");
    }
    started_ = static_cast<std::int64_t>(started);
    expired_ = expired != 0;
    stopped_ = stopped != 0;
    for (std::uint32_t t = 0; t < p_.tokens; ++t) {
      if (!r.u64(&runs_[t].count) || !r.u64(&runs_[t].hop_sum) || !r.u64(&stop_hop_[t])) return Corruption("ring snapshot");
    }
    return r.done() ? Status::OK() : Corruption("ring snapshot: trailing bytes");
  }

  bool Finished() const override { return stopped_; }

  void TakeStats(nlohmann::json* stats) override {
    latency_.TakeInto(stats);  // per live hop, by the hop's number
    (*stats)["hops"] = hops_;
  }

  struct Run {
    std::uint64_t count = 0, hop_sum = 0;
  };
  WorkerId self() const { return self_; }
  std::uint32_t workers() const { return p_.workers; }
  const std::vector<Run>& runs() const { return runs_; }
  const std::vector<std::uint64_t>& stop_hops() const { return stop_hop_; }
  bool stopped() const { return stopped_; }

 private:
  WorkerId Left() const { return (self_ + p_.workers - 1) % p_.workers; }
  WorkerId Right() const { return (self_ + 1) % p_.workers; }

  Status Send(Worker& w, std::uint64_t kind, std::uint64_t token, std::uint64_t hop) {
    Writer m;
    m.u64(kind);
    m.u64(token);
    m.u64(hop);
    m.u64(static_cast<std::uint64_t>(MonoNow()));
    m.bytes(p_.payload_bytes - kHeader, 'r');
    return w.Submit(Right(), m.take()).status();
  }

  // Worker 0 reads the (logged) clock once every check_laps laps of a token.
  Result<bool> TimeIsUp(Worker& w, std::uint64_t hop) {
    if (!expired_ && hop % (p_.workers * p_.check_laps) == 0) {
      LSTASH_ASSIGN_OR_RETURN(const std::int64_t now, w.Now());
      expired_ = now - started_ >= static_cast<std::int64_t>(p_.duration_s * 1e9);
    }
    return expired_;
  }

  const WorkerId self_;
  const Params p_;
  std::uint64_t state_ = 0, hops_ = 0, tokens_stopped_ = 0;
  std::int64_t started_ = 0;
  bool expired_ = false, stopped_ = false;
  std::vector<Run> runs_;
  std::vector<std::uint64_t> stop_hop_;  // worker 0: the hop each token stopped at
  LatencySamples latency_;
};

}  // namespace

Result<std::unique_ptr<App>> MakeRingApp(const AppContext& context) {
  LSTASH_ASSIGN_OR_RETURN(Params p, ReadParams(context));
  return std::unique_ptr<App>(new RingApp(context.self, p));
}

std::vector<std::string> CheckRing(const std::vector<const App*>& apps) {
  std::vector<std::string> violations;
  std::vector<const RingApp*> ring;
  for (const App* a : apps) {
    ring.push_back(dynamic_cast<const RingApp*>(a));
    if (ring.back() == nullptr) return {"ring: not a ring app"};
  }
  if (ring.empty()) return {"ring: no workers"};
  const std::uint64_t n = ring[0]->workers();
  const auto& stop = ring[0]->stop_hops();
  for (const RingApp* a : ring) {
    if (!a->stopped()) violations.push_back(fmt::format("w{} never learned the ring stopped", a->self()));
    for (std::size_t t = 0; t < stop.size(); ++t) {
      // Hops h in 1..H with h mod n == w: first, first + n, ...
      const std::uint64_t w = a->self(), h = stop[t], first = w == 0 ? n : w;
      const std::uint64_t count = h >= first ? (h - first) / n + 1 : 0;
      const std::uint64_t sum = count * first + n * (count * (count - 1) / 2);
      const auto& run = a->runs()[t];
      if (run.count != count || run.hop_sum != sum) {
        violations.push_back(fmt::format("w{} token {}: ran {} hops (sum {}), expected {} (sum {}) for a token stopped "
                                         "at hop {}", w, t, run.count, run.hop_sum, count, sum, h));
      }
    }
  }
  return violations;
}

}  // namespace lstash::workloads
