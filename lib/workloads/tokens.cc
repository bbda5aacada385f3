#include "workloads/tokens.h"

#include "workloads/codec.h"

#include <functional>

namespace lstash::workloads {
namespace {

constexpr std::uint64_t kNoActor = 0xffffffffu;

// kToken hops between workers; kDone tells a token's origin it finished;
// kOriginFinished tells every worker that an origin's tokens are all done.
enum Kind : std::uint64_t { kToken = 0, kDone = 1, kOriginFinished = 2 };

struct Msg {
  std::uint64_t kind = kToken;
  std::uint64_t origin = 0;
  std::uint64_t hops = 0;
  std::uint64_t value = 0;
  std::uint64_t from_actor = kNoActor;
  std::uint64_t from_k = 0;
  std::uint64_t pad = 0;
};

constexpr std::size_t kMsgHeader = 7 * 8;

std::string EncodeMsg(const Msg& m) {
  Writer w;
  for (std::uint64_t v : {m.kind, m.origin, m.hops, m.value, m.from_actor, m.from_k, m.pad}) w.u64(v);
  w.bytes(m.pad, 'p');
  return w.take();
}

bool DecodeMsg(std::string_view s, Msg* m) {
  Reader r(s);
  return r.u64(&m->kind) && r.u64(&m->origin) && r.u64(&m->hops) && r.u64(&m->value) && r.u64(&m->from_actor) &&
         r.u64(&m->from_k) && r.u64(&m->pad) && m->kind <= kOriginFinished && s.size() == kMsgHeader + m->pad;
}

void SaveLedger(Writer& w, const Ledger& l) {
  w.u64(l.sent.size());
  for (const auto& [k, v] : l.sent) {
    w.u64(k.first);
    w.u64(k.second);
    w.u64(v.dest);
    w.u64(v.value);
  }
  w.u64(l.applied.size());
  for (const auto& [k, v] : l.applied) {
    w.u64(k.first);
    w.u64(k.second);
    w.u64(v.times);
    w.u64(v.value);
  }
}

bool LoadLedger(Reader& r, Ledger* l) {
  std::uint64_t n = 0, a = 0, b = 0, c = 0, d = 0;
  if (!r.u64(&n)) return false;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (!(r.u64(&a) && r.u64(&b) && r.u64(&c) && r.u64(&d))) return false;
    l->sent[{static_cast<WorkerId>(a), b}] = Ledger::Sent{static_cast<WorkerId>(c), d};
  }
  if (!r.u64(&n)) return false;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (!(r.u64(&a) && r.u64(&b) && r.u64(&c) && r.u64(&d))) return false;
    l->applied[{static_cast<WorkerId>(a), b}] = Ledger::Applied{static_cast<std::uint32_t>(c), d};
  }
  return true;
}

struct Params {
  std::uint32_t workers = 0;
  std::uint32_t tokens = 8;
  std::uint32_t hops = 4;
  std::uint32_t large_percent = 0;
  std::size_t large_bytes = 2048;  // over the default inline limit
  std::int64_t task_interval_nanos = 0;
};

Result<Params> ReadParams(const AppContext& c) {
  Params p;
  p.workers = c.workers;
  try {
    p.tokens = c.config.value("tokens", p.tokens);
    p.hops = c.config.value("hops", p.hops);
    p.large_percent = c.config.value("large_percent", p.large_percent);
    p.large_bytes = c.config.value("large_bytes", p.large_bytes);
    p.task_interval_nanos = static_cast<std::int64_t>(c.config.value("task_interval_ms", 0.0) * 1e6);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("token workload config: ") + e.what());
  }
  if (p.workers == 0 || p.tokens == 0 || p.large_percent > 100) {
    return InvalidArgument("token workload: needs workers > 0, tokens > 0, large_percent <= 100");
  }
  return p;
}

// What counter and hashchain share: routing by logged randomness, padding,
// the ledger, and the termination notices.
class TokenApp : public App {
 public:
  bool Finished() const override { return origins_finished_ == p_.workers; }
  std::int64_t MinTaskIntervalNanos() const override { return p_.task_interval_nanos; }
  void TakeStats(nlohmann::json* stats) override {
    (*stats)["applied"] = ledger_.applied.size();
    (*stats)["tokens_done"] = tokens_done_;
    (*stats)["origins_finished"] = origins_finished_;
  }
  const Ledger& ledger() const { return ledger_; }

 protected:
  TokenApp(WorkerId self, const Params& p) : self_(self), p_(p) {}

  // Sends `m` to `dest`, or to a worker drawn from the logged randomness.
  Status Send(Worker& w, Msg m, std::optional<WorkerId> dest = std::nullopt) {
    LSTASH_ASSIGN_OR_RETURN(const std::uint64_t r, w.Random());
    const WorkerId to = dest ? *dest : static_cast<WorkerId>(r % p_.workers);
    m.pad = (r >> 40) % 100 < p_.large_percent ? p_.large_bytes : 0;
    LSTASH_ASSIGN_OR_RETURN(const TaskId id, w.Submit(to, EncodeMsg(m)));
    ledger_.sent[{id.submitter, id.seq}] = Ledger::Sent{to, m.value};
    return Status::OK();
  }

  Status Inject(Worker& w, const std::function<Result<std::uint64_t>()>& value) {
    for (std::uint32_t i = 0; i < p_.tokens; ++i) {
      LSTASH_ASSIGN_OR_RETURN(const std::uint64_t v, value());
      Msg m;
      m.origin = self_;
      m.hops = p_.hops;
      m.value = v;
      LSTASH_RETURN_IF_ERROR(Send(w, m));
    }
    return Status::OK();
  }

  // Records the task in the ledger. *token: it is a token for the caller to
  // apply (else it was a notice, handled here).
  Status Apply(Worker& w, const Task& t, Msg* m, bool* token) {
    if (!DecodeMsg(t.payload, m)) return Corruption("app: undecodable payload of " + ToString(t.id));
    auto& a = ledger_.applied[{t.id.submitter, t.id.seq}];
    ++a.times;
    a.value = m->value;
    *token = m->kind == kToken;
    if (m->kind == kDone && ++tokens_done_ == p_.tokens) {
      for (WorkerId d = 0; d < p_.workers; ++d) {
        Msg f;
        f.kind = kOriginFinished;
        f.origin = self_;
        LSTASH_RETURN_IF_ERROR(Send(w, f, d));
      }
    }
    if (m->kind == kOriginFinished) ++origins_finished_;
    return Status::OK();
  }

  // After the token's last stop: tell its origin.
  Status Done(Worker& w, const Msg& token) {
    Msg d;
    d.kind = kDone;
    d.origin = token.origin;
    return Send(w, d, static_cast<WorkerId>(token.origin));
  }

  // A value from outside the log's control: differs between incarnations,
  // so only its logged copy makes replay agree.
  std::string External() { return std::to_string(external_++ * 7919 + self_); }

  void SaveBase(Writer& w) const {
    SaveLedger(w, ledger_);
    w.u64(tokens_done_);
    w.u64(origins_finished_);
  }
  bool LoadBase(Reader& r) {
    ledger_ = Ledger{};
    return LoadLedger(r, &ledger_) && r.u64(&tokens_done_) && r.u64(&origins_finished_);
  }

  const WorkerId self_;
  const Params p_;
  std::uint64_t external_ = 0;  // deliberately not in the snapshot

 private:
  Ledger ledger_;
  std::uint64_t tokens_done_ = 0, origins_finished_ = 0;
};

class CounterApp final : public TokenApp {
 public:
  CounterApp(WorkerId self, const Params& p) : TokenApp(self, p) {}
  std::uint64_t sum() const { return sum_; }

  Status Execute(Worker& w, const Task& t) override {
    if (t.start) {
      return Inject(w, [&]() -> Result<std::uint64_t> {
        LSTASH_ASSIGN_OR_RETURN(const std::uint64_t r, w.Random());
        return 1 + (r >> 20) % 1000;
      });
    }
    Msg m;
    bool token = false;
    LSTASH_RETURN_IF_ERROR(Apply(w, t, &m, &token));
    sum_ += m.value;
    if (!token) return Status::OK();
    if (m.hops == 0) return Done(w, m);
    LSTASH_ASSIGN_OR_RETURN(const std::uint64_t r, w.Random());
    std::uint64_t amount = 1 + (r >> 20) % 1000;
    if (r % 4 == 0) {  // now and then the amount also depends on the clock
      LSTASH_ASSIGN_OR_RETURN(const std::int64_t now, w.Now());
      amount = 1 + (amount + static_cast<std::uint64_t>(now) / 1000) % 1000;
    }
    if (r % 5 == 0) {  // ... or on an external input the app declares
      LSTASH_ASSIGN_OR_RETURN(const std::string c, w.Choose([this] { return External(); }));
      amount = 1 + (amount + c.size() * 13 + static_cast<unsigned char>(c.back())) % 1000;
    }
    Msg next = m;
    next.hops = m.hops - 1;
    next.value = amount;
    return Send(w, next);
  }

  std::string Snapshot() const override {
    Writer w;
    SaveBase(w);
    w.u64(sum_);
    return w.take();
  }

  Status Restore(const std::string& bytes) override {
    Reader r(bytes);
    if (!LoadBase(r) || !r.u64(&sum_) || !r.done()) return Corruption("counter snapshot");
    return Status::OK();
  }

 private:
  std::uint64_t sum_ = 0;
};

class ChainApp final : public TokenApp {
 public:
  struct Observation {
    WorkerId actor;
    std::uint64_t k;  // 1-based position in the actor's chain
    std::uint64_t state;
  };
  ChainApp(WorkerId self, const Params& p) : TokenApp(self, p) {}
  const std::vector<std::uint64_t>& chain() const { return chain_; }
  const std::vector<std::uint64_t>& inputs() const { return inputs_; }
  const std::vector<Observation>& observed() const { return observed_; }

  Status Execute(Worker& w, const Task& t) override {
    if (t.start) return Inject(w, [&] { return w.Random(); });
    Msg m;
    bool token = false;
    LSTASH_RETURN_IF_ERROR(Apply(w, t, &m, &token));
    if (!token) return Status::OK();
    if (m.from_actor != kNoActor) observed_.push_back(Observation{static_cast<WorkerId>(m.from_actor), m.from_k, m.value});
    std::uint64_t input = m.value;
    if (m.value % 3 == 0) {  // some inputs are salted with a declared external choice
      LSTASH_ASSIGN_OR_RETURN(const std::string c, w.Choose([this] { return External(); }));
      input ^= std::hash<std::string>{}(c);
    }
    const std::uint64_t next = Mix(chain_.empty() ? 0 : chain_.back(), input);
    chain_.push_back(next);
    inputs_.push_back(input);
    if (m.hops == 0) return Done(w, m);
    Msg out = m;
    out.hops = m.hops - 1;
    out.value = next;
    out.from_actor = self_;
    out.from_k = chain_.size();
    return Send(w, out);
  }

  std::string Snapshot() const override {
    Writer w;
    SaveBase(w);
    w.u64(chain_.size());
    for (std::size_t i = 0; i < chain_.size(); ++i) {
      w.u64(chain_[i]);
      w.u64(inputs_[i]);
    }
    w.u64(observed_.size());
    for (const auto& o : observed_) {
      w.u64(o.actor);
      w.u64(o.k);
      w.u64(o.state);
    }
    return w.take();
  }

  Status Restore(const std::string& bytes) override {
    Reader r(bytes);
    chain_.clear();
    inputs_.clear();
    observed_.clear();
    std::uint64_t n = 0, a = 0, b = 0, c = 0;
    bool ok = LoadBase(r) && r.u64(&n);
    for (std::uint64_t i = 0; ok && i < n; ++i) {
      ok = r.u64(&a) && r.u64(&b);
      chain_.push_back(a);
      inputs_.push_back(b);
    }
    ok = ok && r.u64(&n);
    for (std::uint64_t i = 0; ok && i < n; ++i) {
      ok = r.u64(&a) && r.u64(&b) && r.u64(&c);
      observed_.push_back(Observation{static_cast<WorkerId>(a), b, c});
    }
    if (!ok || !r.done()) return Corruption("chain snapshot");
    return Status::OK();
  }

 private:
  std::vector<std::uint64_t> chain_;   // every state this actor took, in order
  std::vector<std::uint64_t> inputs_;  // the inputs that produced them
  std::vector<Observation> observed_;
};

// Exactly-once: everything in a sender's final ledger was applied once by its
// destination with the same value, and nothing else was applied.
void CheckLedgers(const std::vector<const Ledger*>& ledgers, std::vector<std::string>* v) {
  const WorkerId n = static_cast<WorkerId>(ledgers.size());
  for (WorkerId s = 0; s < n; ++s) {
    for (const auto& [key, sent] : ledgers[s]->sent) {
      const std::string id = "w" + std::to_string(key.first) + "#" + std::to_string(key.second);
      if (sent.dest >= n) {
        v->push_back("task " + id + " sent to a worker that does not exist");
        continue;
      }
      auto it = ledgers[sent.dest]->applied.find(key);
      if (it == ledgers[sent.dest]->applied.end()) {
        v->push_back("lost: task " + id + " sent to worker " + std::to_string(sent.dest) + " was never applied");
      } else if (it->second.times != 1) {
        v->push_back("duplicate: task " + id + " applied " + std::to_string(it->second.times) + " times by worker " +
                     std::to_string(sent.dest));
      } else if (it->second.value != sent.value) {
        v->push_back("orphan: worker " + std::to_string(sent.dest) + " applied task " + id + " with value " +
                     std::to_string(it->second.value) + " but its sender's history sent " +
                     std::to_string(sent.value));
      }
    }
  }
  for (WorkerId d = 0; d < n; ++d) {
    for (const auto& [key, applied] : ledgers[d]->applied) {
      const std::string id = "w" + std::to_string(key.first) + "#" + std::to_string(key.second);
      if (key.first >= n) {
        v->push_back("worker " + std::to_string(d) + " applied task " + id + " from a worker that does not exist");
        continue;
      }
      auto it = ledgers[key.first]->sent.find(key);
      if (it == ledgers[key.first]->sent.end() || it->second.dest != d) {
        v->push_back("orphan: worker " + std::to_string(d) + " applied task " + id +
                     " that its sender's final history never sent to it");
      }
    }
  }
}


}  // namespace

Result<std::unique_ptr<App>> MakeCounterApp(const AppContext& context) {
  LSTASH_ASSIGN_OR_RETURN(const Params p, ReadParams(context));
  return std::unique_ptr<App>(std::make_unique<CounterApp>(context.self, p));
}

Result<std::unique_ptr<App>> MakeChainApp(const AppContext& context) {
  LSTASH_ASSIGN_OR_RETURN(const Params p, ReadParams(context));
  return std::unique_ptr<App>(std::make_unique<ChainApp>(context.self, p));
}

std::vector<std::string> CheckCounter(const std::vector<const App*>& apps) {
  std::vector<std::string> v;
  std::vector<const Ledger*> ledgers;
  for (const App* a : apps) ledgers.push_back(&static_cast<const CounterApp*>(a)->ledger());
  CheckLedgers(ledgers, &v);
  for (std::size_t w = 0; w < apps.size(); ++w) {
    const auto* app = static_cast<const CounterApp*>(apps[w]);
    std::uint64_t total = 0;
    for (const auto& [key, a] : app->ledger().applied) total += a.value * a.times;
    if (total != app->sum()) {
      v.push_back("worker " + std::to_string(w) + " sum " + std::to_string(app->sum()) +
                  " differs from its applied increments " + std::to_string(total));
    }
  }
  return v;
}

std::vector<std::string> CheckChain(const std::vector<const App*>& apps) {
  std::vector<std::string> v;
  std::vector<const ChainApp*> actors;
  std::vector<const Ledger*> ledgers;
  for (const App* a : apps) {
    actors.push_back(static_cast<const ChainApp*>(a));
    ledgers.push_back(&actors.back()->ledger());
  }
  CheckLedgers(ledgers, &v);
  for (std::size_t w = 0; w < actors.size(); ++w) {
    const ChainApp& s = *actors[w];
    // The chain is the fold of H over the inputs, in the order applied.
    std::uint64_t state = 0;
    for (std::size_t i = 0; i < s.chain().size(); ++i) {
      state = Mix(state, s.inputs()[i]);
      if (state != s.chain()[i]) {
        v.push_back("actor " + std::to_string(w) + " chain position " + std::to_string(i + 1) +
                    " is not H(previous, input)");
        break;
      }
    }
    // Every state anyone observed lies on the actor's one final chain.
    for (const auto& o : s.observed()) {
      if (o.actor >= actors.size()) {
        v.push_back("worker " + std::to_string(w) + " observed a nonexistent actor");
        continue;
      }
      const auto& chain = actors[o.actor]->chain();
      if (o.k == 0 || o.k > chain.size() || chain[o.k - 1] != o.state) {
        v.push_back("fork: worker " + std::to_string(w) + " observed actor " + std::to_string(o.actor) + " state #" +
                    std::to_string(o.k) + " = " + std::to_string(o.state) + ", not on the actor's final chain of " +
                    std::to_string(chain.size()) + " states");
      }
    }
  }
  return v;
}

}  // namespace lstash::workloads
