#include "sim/workloads.h"

#include <cstring>
#include <set>
#include <sstream>

namespace lstash::sim {
namespace {

constexpr std::uint32_t kNoActor = 0xffffffffu;

// Minimal fixed-width serialisation for app payloads and snapshots.
class Writer {
 public:
  void u64(std::uint64_t v) { buf_.append(reinterpret_cast<const char*>(&v), sizeof v); }
  void bytes(std::size_t n, char fill) { buf_.append(n, fill); }
  std::string take() { return std::move(buf_); }

 private:
  std::string buf_;
};

class Reader {
 public:
  explicit Reader(std::string_view s) : s_(s) {}
  bool u64(std::uint64_t* v) {
    if (s_.size() < sizeof *v) return false;
    std::memcpy(v, s_.data(), sizeof *v);
    s_.remove_prefix(sizeof *v);
    return true;
  }
  bool done() const { return s_.empty(); }

 private:
  std::string_view s_;
};

struct Msg {
  std::uint64_t hops = 0;
  std::uint64_t value = 0;
  std::uint64_t from_actor = kNoActor;
  std::uint64_t from_k = 0;
  std::uint64_t pad = 0;
};

std::string EncodeMsg(const Msg& m) {
  Writer w;
  w.u64(m.hops);
  w.u64(m.value);
  w.u64(m.from_actor);
  w.u64(m.from_k);
  w.u64(m.pad);
  w.bytes(m.pad, 'p');
  return w.take();
}

bool DecodeMsg(std::string_view s, Msg* m) {
  Reader r(s);
  return r.u64(&m->hops) && r.u64(&m->value) && r.u64(&m->from_actor) && r.u64(&m->from_k) && r.u64(&m->pad) &&
         s.size() == 5 * 8 + m->pad;
}

std::uint64_t Mix(std::uint64_t state, std::uint64_t input) {
  std::uint64_t z = state * 0x9e3779b97f4a7c15ull + input + 0x632be59bd9b4e019ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
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

// Shared machinery: random routing, payload padding, ledger keeping.
class AppBase : public App {
 protected:
  AppBase(WorkerId self, const AppParams& p) : self_(self), p_(p) {}

  // Sends `m` to a destination drawn from the worker's logged randomness.
  Status Send(Worker& w, Msg m, const SubmitHook& hook, Ledger* ledger) {
    auto r = w.Random();
    if (!r.ok()) return r.status();
    const WorkerId dest = static_cast<WorkerId>(*r % p_.workers);
    m.pad = (*r >> 40) % 100 < p_.large_percent ? p_.large_bytes : 0;
    auto id = w.Submit(dest, EncodeMsg(m));
    if (!id.ok()) return id.status();
    ledger->sent[{id->submitter, id->seq}] = Ledger::Sent{dest, m.value};
    hook();
    return Status::OK();
  }

  static Status Apply(const Task& t, Ledger* ledger, Msg* m) {
    if (!DecodeMsg(t.payload, m)) return Corruption("app: undecodable payload of " + ToString(t.id));
    auto& a = ledger->applied[{t.id.submitter, t.id.seq}];
    ++a.times;
    a.value = m->value;
    return Status::OK();
  }

  // A value from outside the log's control: differs between incarnations,
  // so only its logged copy makes replay agree.
  std::string External() { return std::to_string(external_++ * 7919 + self_); }

  const WorkerId self_;
  const AppParams p_;
  std::uint64_t external_ = 0;  // deliberately not in the snapshot
};

class CounterApp final : public AppBase {
 public:
  CounterApp(WorkerId self, const AppParams& p) : AppBase(self, p) {}
  const CounterState& state() const { return s_; }

  Status Execute(Worker& w, const Task& t, const SubmitHook& hook) override {
    if (t.start) {
      for (std::uint32_t i = 0; i < p_.tokens; ++i) {
        auto r = w.Random();
        if (!r.ok()) return r.status();
        LSTASH_RETURN_IF_ERROR(Send(w, Msg{p_.hops, 1 + (*r >> 20) % 1000}, hook, &s_.ledger));
      }
      return Status::OK();
    }
    Msg m;
    LSTASH_RETURN_IF_ERROR(Apply(t, &s_.ledger, &m));
    s_.sum += m.value;
    if (m.hops == 0) return Status::OK();
    auto r = w.Random();
    if (!r.ok()) return r.status();
    std::uint64_t amount = 1 + (*r >> 20) % 1000;
    if (*r % 4 == 0) {  // now and then the amount also depends on the clock
      auto now = w.Now();
      if (!now.ok()) return now.status();
      amount = 1 + (amount + static_cast<std::uint64_t>(*now) / 1000) % 1000;
    }
    if (*r % 5 == 0) {  // ... or on an external input the app declares
      auto c = w.Choose([this] { return External(); });
      if (!c.ok()) return c.status();
      amount = 1 + (amount + c->size() * 13 + static_cast<unsigned char>(c->back())) % 1000;
    }
    return Send(w, Msg{m.hops - 1, amount}, hook, &s_.ledger);
  }

  std::string Snapshot() const override {
    Writer w;
    SaveLedger(w, s_.ledger);
    w.u64(s_.sum);
    return w.take();
  }

  Status Restore(const std::string& bytes) override {
    Reader r(bytes);
    s_ = CounterState{};
    if (!LoadLedger(r, &s_.ledger) || !r.u64(&s_.sum) || !r.done()) return Corruption("counter snapshot");
    return Status::OK();
  }

 private:
  CounterState s_;
};

class ChainApp final : public AppBase {
 public:
  ChainApp(WorkerId self, const AppParams& p) : AppBase(self, p) {}
  const ChainState& state() const { return s_; }

  Status Execute(Worker& w, const Task& t, const SubmitHook& hook) override {
    if (t.start) {
      for (std::uint32_t i = 0; i < p_.tokens; ++i) {
        auto v = w.Random();
        if (!v.ok()) return v.status();
        LSTASH_RETURN_IF_ERROR(Send(w, Msg{p_.hops, *v}, hook, &s_.ledger));
      }
      return Status::OK();
    }
    Msg m;
    LSTASH_RETURN_IF_ERROR(Apply(t, &s_.ledger, &m));
    if (m.from_actor != kNoActor) {
      s_.observed.push_back(ChainState::Observation{static_cast<WorkerId>(m.from_actor), m.from_k, m.value});
    }
    std::uint64_t input = m.value;
    if (m.value % 3 == 0) {  // some inputs are salted with a declared external choice
      auto c = w.Choose([this] { return External(); });
      if (!c.ok()) return c.status();
      input ^= std::hash<std::string>{}(*c);
    }
    const std::uint64_t next = Mix(s_.chain.empty() ? 0 : s_.chain.back(), input);
    s_.chain.push_back(next);
    s_.inputs.push_back(input);
    if (m.hops == 0) return Status::OK();
    return Send(w, Msg{m.hops - 1, next, self_, s_.chain.size()}, hook, &s_.ledger);
  }

  std::string Snapshot() const override {
    Writer w;
    SaveLedger(w, s_.ledger);
    w.u64(s_.chain.size());
    for (std::size_t i = 0; i < s_.chain.size(); ++i) {
      w.u64(s_.chain[i]);
      w.u64(s_.inputs[i]);
    }
    w.u64(s_.observed.size());
    for (const auto& o : s_.observed) {
      w.u64(o.actor);
      w.u64(o.k);
      w.u64(o.state);
    }
    return w.take();
  }

  Status Restore(const std::string& bytes) override {
    Reader r(bytes);
    s_ = ChainState{};
    std::uint64_t n = 0, a = 0, b = 0, c = 0;
    bool ok = LoadLedger(r, &s_.ledger) && r.u64(&n);
    for (std::uint64_t i = 0; ok && i < n; ++i) {
      ok = r.u64(&a) && r.u64(&b);
      s_.chain.push_back(a);
      s_.inputs.push_back(b);
    }
    ok = ok && r.u64(&n);
    for (std::uint64_t i = 0; ok && i < n; ++i) {
      ok = r.u64(&a) && r.u64(&b) && r.u64(&c);
      s_.observed.push_back(ChainState::Observation{static_cast<WorkerId>(a), b, c});
    }
    if (!ok || !r.done()) return Corruption("chain snapshot");
    return Status::OK();
  }

 private:
  ChainState s_;
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

std::unique_ptr<App> MakeCounterApp(WorkerId self, const AppParams& params) {
  return std::make_unique<CounterApp>(self, params);
}

std::unique_ptr<App> MakeChainApp(WorkerId self, const AppParams& params) {
  return std::make_unique<ChainApp>(self, params);
}

std::vector<std::string> CheckCounter(const std::vector<const App*>& apps) {
  std::vector<std::string> v;
  std::vector<const Ledger*> ledgers;
  for (const App* a : apps) ledgers.push_back(&static_cast<const CounterApp*>(a)->state().ledger);
  CheckLedgers(ledgers, &v);
  for (std::size_t w = 0; w < apps.size(); ++w) {
    const auto& s = static_cast<const CounterApp*>(apps[w])->state();
    std::uint64_t total = 0;
    for (const auto& [key, a] : s.ledger.applied) total += a.value * a.times;
    if (total != s.sum) {
      v.push_back("worker " + std::to_string(w) + " sum " + std::to_string(s.sum) + " differs from its applied increments " +
                  std::to_string(total));
    }
  }
  return v;
}

std::vector<std::string> CheckChain(const std::vector<const App*>& apps) {
  std::vector<std::string> v;
  std::vector<const ChainState*> states;
  std::vector<const Ledger*> ledgers;
  for (const App* a : apps) {
    states.push_back(&static_cast<const ChainApp*>(a)->state());
    ledgers.push_back(&states.back()->ledger);
  }
  CheckLedgers(ledgers, &v);
  for (std::size_t w = 0; w < states.size(); ++w) {
    const ChainState& s = *states[w];
    // The chain is the fold of H over the inputs, in the order applied.
    std::uint64_t state = 0;
    for (std::size_t i = 0; i < s.chain.size(); ++i) {
      state = Mix(state, s.inputs[i]);
      if (state != s.chain[i]) {
        v.push_back("actor " + std::to_string(w) + " chain position " + std::to_string(i + 1) +
                    " is not H(previous, input)");
        break;
      }
    }
    // Every state anyone observed lies on the actor's one final chain.
    for (const auto& o : s.observed) {
      if (o.actor >= states.size()) {
        v.push_back("worker " + std::to_string(w) + " observed a nonexistent actor");
        continue;
      }
      const auto& chain = states[o.actor]->chain;
      if (o.k == 0 || o.k > chain.size() || chain[o.k - 1] != o.state) {
        v.push_back("fork: worker " + std::to_string(w) + " observed actor " + std::to_string(o.actor) + " state #" +
                    std::to_string(o.k) + " = " + std::to_string(o.state) + ", not on the actor's final chain of " +
                    std::to_string(chain.size()) + " states");
      }
    }
  }
  return v;
}

}  // namespace lstash::sim
