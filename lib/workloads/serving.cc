#include "workloads/serving.h"

#include "workloads/gpu_common.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>
#include <set>

namespace lstash::workloads {
namespace {

constexpr std::uint32_t kMagic = 0x4c535356;  // "LSSV"
constexpr WorkerId kServer = 0;

enum Kind : std::uint64_t { kRequest = 1, kResponse = 2, kSendNext = 3 };

struct Params {
  std::uint32_t workers = 0;
  std::string backend;
  std::uint64_t requests = 32;
  std::int64_t request_interval_nanos = 1'000'000;
  std::uint64_t max_batch = 8;
  std::int64_t window_nanos = 2'000'000;
  std::uint64_t in = 16, hidden = 32, out = 8;
  std::uint64_t seed = 7;

  std::uint64_t total_requests() const { return requests * (workers - 1); }
};

Result<Params> ReadParams(const AppContext& c) {
  Params p;
  p.workers = c.workers;
  LSTASH_ASSIGN_OR_RETURN(p.backend, ReadBackend(c.config, "serving"));
  try {
    p.requests = c.config.value("requests", p.requests);
    p.request_interval_nanos = static_cast<std::int64_t>(c.config.value("request_interval_ms", 1.0) * 1e6);
    p.max_batch = c.config.value("max_batch", p.max_batch);
    p.window_nanos = static_cast<std::int64_t>(c.config.value("window_ms", 2.0) * 1e6);
    p.in = c.config.value("in", p.in);
    p.hidden = c.config.value("hidden", p.hidden);
    p.out = c.config.value("out", p.out);
    p.seed = c.config.value("seed", p.seed);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("serving config: ") + e.what());
  }
  auto dim_ok = [](std::uint64_t d) { return d >= 1 && d <= 4096; };
  if (p.workers < 2 || p.requests == 0 || p.requests > (1u << 20) || p.max_batch == 0 || p.max_batch > 1024 ||
      p.window_nanos < 0 || p.request_interval_nanos < 0 || !dim_ok(p.in) || !dim_ok(p.hidden) || !dim_ok(p.out)) {
    return InvalidArgument(
        "serving: needs 2+ workers (a server and clients), 1..2^20 requests, 1..1024 max_batch, "
        "window_ms >= 0, request_interval_ms >= 0 and 1..4096 for in, hidden and out");
  }
  return p;
}

// Request (client, seq)'s input: the client sends it, the checker derives it again.
std::vector<float> RequestInput(const Params& p, std::uint64_t client, std::uint64_t seq) {
  return SeededFloats(Mix(Mix(p.seed, client), seq), p.in, 1.0f);
}

struct RequestKey {
  std::uint64_t client = 0, seq = 0;
  auto operator<=>(const RequestKey&) const = default;
};
using Composition = std::vector<RequestKey>;

void PutComposition(Writer& w, const Composition& batch) {
  w.u64(batch.size());
  for (const RequestKey& k : batch) {
    w.u64(k.client);
    w.u64(k.seq);
  }
}

bool GetComposition(Reader& r, std::uint64_t max_batch, Composition* batch) {
  std::uint64_t n = 0;
  if (!r.u64(&n) || n == 0 || n > max_batch) return false;
  batch->assign(n, {});
  for (RequestKey& k : *batch) {
    if (!r.u64(&k.client) || !r.u64(&k.seq)) return false;
  }
  return true;
}

// The model on one context: the server's, or the checker's reference.
class ServingModel {
 public:
  static Result<std::unique_ptr<ServingModel>> Create(gpu::Context& context, const Params& p) {
    auto m = std::unique_ptr<ServingModel>(new ServingModel(context, p));
    LSTASH_RETURN_IF_ERROR(m->Allocate());
    return m;
  }

  // Runs one batch of `rows` requests (`inputs`: rows x in floats); the
  // answers are then in Answers(rows).
  Status Run(std::string_view inputs, std::size_t rows) {
    gpu::Context& c = context_;
    const float rows_f = static_cast<float>(rows);
    LSTASH_RETURN_IF_ERROR(c.Write(x_, 0, inputs));
    LSTASH_RETURN_IF_ERROR(c.Linear(x_, w1_, b1_, h_, rows, p_.in, p_.hidden, /*relu=*/true));
    // The batch's column sums: a row of ones times h.
    LSTASH_RETURN_IF_ERROR(c.Linear(ones_, h_, zero_hidden_, sum_, 1, rows, p_.hidden, false));
    LSTASH_RETURN_IF_ERROR(c.Axpby(0.1f / rows_f, sum_, 0.9f, running_, p_.hidden));
    LSTASH_RETURN_IF_ERROR(c.Linear(running_, w3_, b2_, bias_, 1, p_.hidden, p_.out, false));
    return c.Linear(h_, w2_, bias_, y_, rows, p_.hidden, p_.out, false);
  }

  Result<std::string> Answers(std::size_t rows) {
    LSTASH_ASSIGN_OR_RETURN(std::string y, context_.Read(y_));
    y.resize(rows * p_.out * sizeof(float));
    return y;
  }

  // What a batch changes: its answers and the running statistics.
  std::array<gpu::BufferId, 2> outputs() const { return {y_, running_}; }

 private:
  ServingModel(gpu::Context& context, const Params& p) : context_(context), p_(p) {}

  Status Allocate() {
    const std::uint64_t s = p_.seed;
    const std::uint64_t b = p_.max_batch;
    auto floats = [](std::size_t n, float value) { return FloatBytes(std::vector<float>(n, value)); };
    struct Init {
      gpu::BufferId* id;
      const char* name;
      std::string bytes;
    };
    const Init buffers[] = {
        {&w1_, "w1", FloatBytes(SeededFloats(Mix(s, 1), p_.in * p_.hidden, 0.5f))},
        {&b1_, "b1", FloatBytes(SeededFloats(Mix(s, 2), p_.hidden, 0.1f))},
        {&w2_, "w2", FloatBytes(SeededFloats(Mix(s, 3), p_.hidden * p_.out, 0.5f))},
        {&b2_, "b2", FloatBytes(SeededFloats(Mix(s, 4), p_.out, 0.1f))},
        {&w3_, "w3", FloatBytes(SeededFloats(Mix(s, 5), p_.hidden * p_.out, 0.5f))},
        {&running_, "running", floats(p_.hidden, 0.0f)},
        {&x_, "x", floats(b * p_.in, 0.0f)},
        {&h_, "h", floats(b * p_.hidden, 0.0f)},
        {&ones_, "ones", floats(b, 1.0f)},
        {&zero_hidden_, "zero_hidden", floats(p_.hidden, 0.0f)},
        {&sum_, "sum", floats(p_.hidden, 0.0f)},
        {&bias_, "bias", floats(p_.out, 0.0f)},
        {&y_, "y", floats(b * p_.out, 0.0f)},
    };
    for (const Init& i : buffers) {
      LSTASH_ASSIGN_OR_RETURN(*i.id, Upload(context_, i.name, i.bytes));
    }
    return Status::OK();
  }

  gpu::Context& context_;
  const Params p_;
  gpu::BufferId w1_ = 0, b1_ = 0, w2_ = 0, b2_ = 0, w3_ = 0, running_ = 0;  // the model
  gpu::BufferId x_ = 0, h_ = 0, ones_ = 0, zero_hidden_ = 0, sum_ = 0, bias_ = 0, y_ = 0;  // scratch
};

// Worker 0: batches the requests and answers them.
class ServerApp final : public App {
 public:
  static Result<std::unique_ptr<App>> Create(const Params& p) {
    LSTASH_ASSIGN_OR_RETURN(auto context, OpenContext(p.backend, "serving"));
    auto app = std::unique_ptr<ServerApp>(new ServerApp(p, std::move(context)));
    LSTASH_ASSIGN_OR_RETURN(app->model_, ServingModel::Create(*app->context_, p));
    return std::unique_ptr<App>(std::move(app));
  }

  Status Execute(Worker& w, const Task& t) override {
    if (t.start) return Status::OK();
    Reader r(t.payload);
    std::uint64_t kind = 0, seq = 0;
    if (!GetHeader(r, kMagic) || !r.u64(&kind) || kind != kRequest || !r.u64(&seq) || t.sender == kServer ||
        t.sender >= p_.workers || seq >= p_.requests || r.rest().size() != p_.in * sizeof(float)) {
      return Corruption("serving: unexpected task at the server " + ToString(t.id));
    }
    LSTASH_ASSIGN_OR_RETURN(const std::int64_t now, w.Now());
    if (!pending_.empty() && now - opened_at_ > p_.window_nanos) LSTASH_RETURN_IF_ERROR(RunBatch(w, t));
    if (pending_.empty()) opened_at_ = now;
    pending_.push_back({{t.sender, seq}, std::string(r.rest())});
    ++received_;
    if (pending_.size() == p_.max_batch || received_ == p_.total_requests()) return RunBatch(w, t);
    return Status::OK();
  }

  bool Finished() const override { return received_ == p_.total_requests() && pending_.empty(); }
  void TakeStats(nlohmann::json* stats) override { (*stats)["batches"] = batches_; }

  std::string Snapshot() const override {
    Writer s;
    PutHeader(s, kMagic);
    s.u64(received_);
    s.u64(batches_);
    s.u64(static_cast<std::uint64_t>(opened_at_));
    s.u64(pending_.size());
    for (const Pending& q : pending_) {
      s.u64(q.key.client);
      s.u64(q.key.seq);
      s.str(q.input);
    }
    PutDeviceState(s, *context_);
    return s.take();
  }

  Status Restore(const std::string& bytes) override {
    Reader r(bytes);
    std::uint64_t opened = 0, n = 0;
    bool ok = GetHeader(r, kMagic) && r.u64(&received_) && r.u64(&batches_) && r.u64(&opened) && r.u64(&n) &&
              n < p_.max_batch;
    opened_at_ = static_cast<std::int64_t>(opened);
    pending_.assign(ok ? n : 0, {});
    for (Pending& q : pending_) ok = ok && r.u64(&q.key.client) && r.u64(&q.key.seq) && r.str(&q.input);
    if (!ok) return Corruption("serving server snapshot");
    LSTASH_RETURN_IF_ERROR(GetDeviceState(r, *context_, "serving server"));
    return r.done() ? Status::OK() : Corruption("serving server snapshot: trailing bytes");
  }

  std::uint64_t batches() const { return batches_; }

 private:
  ServerApp(const Params& p, std::unique_ptr<gpu::Context> context) : p_(p), context_(std::move(context)) {}

  // Runs the pending batch as one GPU task and answers each of its requests.
  Status RunBatch(Worker& w, const Task& t) {
    Composition batch;
    std::string inputs;
    for (const Pending& q : pending_) {
      batch.push_back(q.key);
      inputs += q.input;
    }
    gpu::TaskScope scope(*context_, w, t);
    LSTASH_RETURN_IF_ERROR(model_->Run(inputs, batch.size()));
    const auto outputs = model_->outputs();
    LSTASH_RETURN_IF_ERROR(scope.Finish(outputs));
    LSTASH_ASSIGN_OR_RETURN(const std::string answers, model_->Answers(batch.size()));
    const std::size_t row_bytes = p_.out * sizeof(float);
    for (std::size_t row = 0; row < batch.size(); ++row) {
      Writer m;
      PutHeader(m, kMagic);
      m.u64(kResponse);
      m.u64(batches_);
      m.u64(row);
      PutComposition(m, batch);
      m.raw(std::string_view(answers).substr(row * row_bytes, row_bytes));
      LSTASH_RETURN_IF_ERROR(w.Submit(static_cast<WorkerId>(batch[row].client), m.take()).status());
    }
    ++batches_;
    pending_.clear();
    return Status::OK();
  }

  struct Pending {
    RequestKey key;
    std::string input;  // in floats
  };

  const Params p_;
  std::unique_ptr<gpu::Context> context_;
  std::unique_ptr<ServingModel> model_;
  std::uint64_t received_ = 0, batches_ = 0;
  std::int64_t opened_at_ = 0;  // when the pending batch's first request arrived (logged)
  std::vector<Pending> pending_;
};

// A response as a client received it.
struct Answer {
  std::uint64_t batch = 0, row = 0;
  Composition composition;
  std::string output;  // out floats
};

// Workers 1..: send requests, keep the answers for the checker.
class ClientApp final : public App {
 public:
  ClientApp(WorkerId self, const Params& p) : self_(self), p_(p) {}

  Status Execute(Worker& w, const Task& t) override {
    if (t.start) return SendNext(w);
    Reader r(t.payload);
    std::uint64_t kind = 0;
    if (!GetHeader(r, kMagic) || !r.u64(&kind)) return Corruption("serving: not a serving task " + ToString(t.id));
    if (kind == kSendNext && t.sender == self_) return SendNext(w);
    Answer a;
    if (kind != kResponse || t.sender != kServer || !r.u64(&a.batch) || !r.u64(&a.row) ||
        !GetComposition(r, p_.max_batch, &a.composition) || a.row >= a.composition.size() ||
        a.composition[a.row].client != self_ || a.composition[a.row].seq >= p_.requests ||
        r.rest().size() != p_.out * sizeof(float)) {
      return Corruption("serving: unexpected task at a client " + ToString(t.id));
    }
    a.output = std::string(r.rest());
    const std::uint64_t seq = a.composition[a.row].seq;
    // A second answer is kept aside for the checker to report.
    if (!answers_.emplace(seq, a).second) extra_answers_.push_back(seq);
    if (auto sent = sent_at_.find(seq); sent != sent_at_.end()) {
      latency_.EndNow(sent->second, seq);
      sent_at_.erase(sent);
    }
    return Status::OK();
  }

  bool Finished() const override { return sent_ == p_.requests && answers_.size() == p_.requests; }
  std::int64_t MinTaskIntervalNanos() const override { return p_.request_interval_nanos; }
  void TakeStats(nlohmann::json* stats) override {
    (*stats)["answered"] = answers_.size();
    latency_.TakeInto(stats);  // request to answer, by request seq
  }

  std::string Snapshot() const override {
    Writer s;
    PutHeader(s, kMagic);
    s.u64(sent_);
    s.u64(answers_.size());
    for (const auto& [seq, a] : answers_) {
      s.u64(seq);
      s.u64(a.batch);
      s.u64(a.row);
      PutComposition(s, a.composition);
      s.str(a.output);
    }
    s.u64(extra_answers_.size());
    for (std::uint64_t seq : extra_answers_) s.u64(seq);
    return s.take();
  }

  Status Restore(const std::string& bytes) override {
    Reader r(bytes);
    std::uint64_t n = 0;
    bool ok = GetHeader(r, kMagic) && r.u64(&sent_) && r.u64(&n) && n <= p_.requests;
    answers_.clear();
    for (std::uint64_t i = 0; ok && i < n; ++i) {
      std::uint64_t seq = 0;
      Answer a;
      ok = r.u64(&seq) && r.u64(&a.batch) && r.u64(&a.row) && GetComposition(r, p_.max_batch, &a.composition) &&
           r.str(&a.output);
      answers_[seq] = std::move(a);
    }
    ok = ok && r.u64(&n) && n <= p_.requests;
    extra_answers_.assign(ok ? n : 0, 0);
    for (std::uint64_t& seq : extra_answers_) ok = ok && r.u64(&seq);
    return ok && r.done() ? Status::OK() : Corruption("serving client snapshot");
  }

  WorkerId self() const { return self_; }
  const std::map<std::uint64_t, Answer>& answers() const { return answers_; }
  const std::vector<std::uint64_t>& extra_answers() const { return extra_answers_; }

 private:
  // One request, then a task to self for the next: the paced loop.
  Status SendNext(Worker& w) {
    if (sent_ == p_.requests) return Status::OK();
    Writer m;
    PutHeader(m, kMagic);
    m.u64(kRequest);
    m.u64(sent_);
    m.raw(FloatBytes(RequestInput(p_, self_, sent_)));
    LSTASH_RETURN_IF_ERROR(w.Submit(kServer, m.take()).status());
    sent_at_[sent_] = MonoNow();
    if (++sent_ == p_.requests) return Status::OK();
    Writer next;
    PutHeader(next, kMagic);
    next.u64(kSendNext);
    return w.Submit(self_, next.take()).status();
  }

  const WorkerId self_;
  const Params p_;
  std::uint64_t sent_ = 0;
  std::map<std::uint64_t, Answer> answers_;    // by request seq
  std::vector<std::uint64_t> extra_answers_;  // seqs answered again
  // Measurement only (never in state or output): when each request went out.
  std::map<std::uint64_t, std::int64_t> sent_at_;
  LatencySamples latency_;
};

}  // namespace

Result<std::unique_ptr<App>> MakeServingApp(const AppContext& context) {
  LSTASH_ASSIGN_OR_RETURN(const Params p, ReadParams(context));
  if (context.self == kServer) return ServerApp::Create(p);
  return std::unique_ptr<App>(std::make_unique<ClientApp>(context.self, p));
}

std::vector<std::string> CheckServing(const nlohmann::json& config, const std::vector<const App*>& apps) {
  auto p = ReadParams({0, static_cast<std::uint32_t>(apps.size()), config});
  if (!p.ok()) return {p.status().ToString()};
  const auto* server = dynamic_cast<const ServerApp*>(apps[0]);
  std::vector<const ClientApp*> clients;
  for (std::size_t i = 1; i < apps.size(); ++i) clients.push_back(dynamic_cast<const ClientApp*>(apps[i]));
  if (server == nullptr || std::count(clients.begin(), clients.end(), nullptr) > 0) return {"serving: not serving apps"};
  std::vector<std::string> v;
  auto full = [&v] { return v.size() >= 20; };

  // Every request answered exactly once, each batch reported with one composition.
  std::map<std::uint64_t, Composition> batches;
  std::map<RequestKey, const Answer*> answer_of;
  for (const ClientApp* c : clients) {
    for (std::uint64_t seq : c->extra_answers()) {
      v.push_back(fmt::format("serving: client {} request {} answered more than once", c->self(), seq));
    }
    for (std::uint64_t seq = 0; seq < p->requests && !full(); ++seq) {
      if (!c->answers().count(seq)) v.push_back(fmt::format("serving: client {} request {} never answered", c->self(), seq));
    }
    for (const auto& [seq, a] : c->answers()) {
      answer_of[{c->self(), seq}] = &a;
      auto [it, fresh] = batches.emplace(a.batch, a.composition);
      if (!fresh && it->second != a.composition && !full()) {
        v.push_back(fmt::format("serving: batch {} reported with two compositions (client {} request {})", a.batch,
                                c->self(), seq));
      }
    }
  }
  if (!v.empty()) return v;
  if (batches.size() != server->batches() || batches.rbegin()->first + 1 != batches.size()) {
    return {fmt::format("serving: the server ran {} batches, the answers report {} numbered up to {}", server->batches(),
                        batches.size(), batches.rbegin()->first)};
  }
  std::set<RequestKey> batched;
  for (const auto& [number, batch] : batches) {
    for (const RequestKey& k : batch) {
      if (!batched.insert(k).second && !full()) {
        v.push_back(fmt::format("serving: client {} request {} is in two batches", k.client, k.seq));
      }
    }
  }
  if (!v.empty()) return v;

  // The reference: the same model on the CPU path, batch after batch.
  auto context = OpenContext("cpu", "serving checker");
  if (!context.ok()) return {context.status().ToString()};
  auto model = ServingModel::Create(**context, *p);
  if (!model.ok()) return {model.status().ToString()};
  for (const auto& [number, batch] : batches) {
    std::string inputs;
    for (const RequestKey& k : batch) inputs += FloatBytes(RequestInput(*p, k.client, k.seq));
    Status s = (*model)->Run(inputs, batch.size());
    auto answers = s.ok() ? (*model)->Answers(batch.size()) : Result<std::string>(s);
    if (!answers.ok()) return {"serving checker: " + answers.status().ToString()};
    const std::size_t row_bytes = p->out * sizeof(float);
    for (std::size_t row = 0; row < batch.size() && !full(); ++row) {
      auto answer = answer_of.find(batch[row]);
      if (answer == answer_of.end()) {
        v.push_back(fmt::format("serving: batch {} holds client {} request {}, which no client sent", number,
                                batch[row].client, batch[row].seq));
      } else if (answer->second->output != answers->substr(row * row_bytes, row_bytes)) {
        v.push_back(fmt::format("serving: client {} request {} (batch {} row {}): the answer differs from the "
                                "reference", batch[row].client, batch[row].seq, number, row));
      }
    }
  }
  return v;
}

}  // namespace lstash::workloads
