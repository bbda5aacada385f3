#include "workloads/pipeline.h"

#include "workloads/gpu_common.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>
#include <optional>

namespace lstash::workloads {
namespace {

constexpr std::uint32_t kMagic = 0x4c535050;  // "LSPP"

enum Pass : std::uint64_t { kForward = 1, kBackward = 2 };

struct Params {
  std::uint32_t stages = 0;
  std::string backend;
  std::uint64_t minibatches = 16;
  std::uint64_t batch = 8;
  std::uint64_t in = 16, hidden = 16, out = 4;
  float lr = 0.05f;
  std::uint64_t seed = 11;
  std::int64_t task_interval_nanos = 0;
};

Result<Params> ReadParams(const AppContext& c) {
  Params p;
  p.stages = c.workers;
  LSTASH_ASSIGN_OR_RETURN(p.backend, ReadBackend(c.config, "pipeline"));
  try {
    p.minibatches = c.config.value("minibatches", p.minibatches);
    p.batch = c.config.value("batch", p.batch);
    p.in = c.config.value("in", p.in);
    p.hidden = c.config.value("hidden", p.hidden);
    p.out = c.config.value("out", p.out);
    p.lr = static_cast<float>(c.config.value("lr", 0.05));
    p.seed = c.config.value("seed", p.seed);
    p.task_interval_nanos = static_cast<std::int64_t>(c.config.value("task_interval_ms", 0.0) * 1e6);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument(std::string("pipeline config: ") + e.what());
  }
  auto dim_ok = [](std::uint64_t d) { return d >= 1 && d <= 4096; };
  if (p.stages < 2 || p.minibatches == 0 || p.minibatches > (1u << 20) || !dim_ok(p.batch) || !dim_ok(p.in) ||
      !dim_ok(p.hidden) || !dim_ok(p.out) || !(p.lr > 0) || p.task_interval_nanos < 0) {
    return InvalidArgument("pipeline: needs 2+ workers (stages), 1..2^20 minibatches, 1..4096 for batch, in, hidden "
                           "and out, lr > 0 and task_interval_ms >= 0");
  }
  return p;
}

struct Op {
  std::uint64_t pass = kForward, minibatch = 0;
};

// Stage `stage`'s operations in 1F1B order (see pipeline.h).
std::vector<Op> Schedule(std::uint32_t stage, std::uint32_t stages, std::uint64_t minibatches) {
  const std::uint64_t warmup = std::min<std::uint64_t>(stages - 1 - stage, minibatches);
  std::vector<Op> ops;
  for (std::uint64_t m = 0; m < warmup; ++m) ops.push_back({kForward, m});
  for (std::uint64_t i = 0; warmup + i < minibatches; ++i) {
    ops.push_back({kForward, warmup + i});
    ops.push_back({kBackward, i});
  }
  for (std::uint64_t m = minibatches - warmup; m < minibatches; ++m) ops.push_back({kBackward, m});
  return ops;
}

// What a stage sends on: activations to the next stage, gradients to the previous.
struct Message {
  WorkerId dest = 0;
  std::uint64_t pass = kForward, minibatch = 0;
  std::string bytes;
};

// One stage's layer and schedule on a context: a worker's, or one stage of
// the checker's reference run.
class Stage {
 public:
  static Result<std::unique_ptr<Stage>> Create(gpu::Context& context, const Params& p, std::uint32_t index) {
    auto s = std::unique_ptr<Stage>(new Stage(context, p, index));
    LSTASH_RETURN_IF_ERROR(s->Allocate());
    return s;
  }

  // An input from a neighbour, kept until its operation runs.
  Status Deliver(std::uint64_t pass, std::uint64_t minibatch, std::string bytes) {
    const bool forward = pass == kForward;
    const bool from_neighbour = forward ? !first() : pass == kBackward && !last();
    if (!from_neighbour || minibatch >= p_.minibatches ||
        bytes.size() != p_.batch * (forward ? in_ : out_) * sizeof(float)) {
      return Corruption(fmt::format("pipeline stage {}: an unexpected input", index_));
    }
    if (minibatch < Consumed(pass) || !pending_.emplace(std::pair{pass, minibatch}, std::move(bytes)).second) {
      return Corruption(fmt::format("pipeline stage {}: minibatch {}'s {} input arrived twice", index_, minibatch,
                                    forward ? "forward" : "backward"));
    }
    return Status::OK();
  }

  bool done() const { return next_ == ops_.size(); }

  // The next operation's input is here (a first stage makes its own data,
  // a last stage's backward follows its forward).
  bool Ready() const {
    if (done()) return false;
    const Op& op = ops_[next_];
    if (op.pass == kForward ? first() : last()) return true;
    return pending_.count({op.pass, op.minibatch}) > 0;
  }

  // Runs the next operation. REQUIRES: Ready().
  Result<std::optional<Message>> RunNext() {
    const Op op = ops_[next_];
    const std::size_t slot = op.minibatch % slots_.size();
    const Slot& s = slots_[slot];
    gpu::Context& c = context_;
    std::optional<Message> out;
    if (op.pass == kForward) {
      LSTASH_RETURN_IF_ERROR(c.Write(s.x, 0, first() ? FloatBytes(MinibatchInput(op.minibatch)) : Take(op)));
      LSTASH_RETURN_IF_ERROR(c.Axpby(1.0f, w_, 0.0f, s.w, in_ * out_));  // the weights this minibatch sees
      LSTASH_RETURN_IF_ERROR(c.Linear(s.x, w_, b_, s.y, p_.batch, in_, out_, /*relu=*/!last()));
      if (!last()) {
        LSTASH_ASSIGN_OR_RETURN(std::string y, c.Read(s.y));
        out = Message{index_ + 1, kForward, op.minibatch, std::move(y)};
      }
    } else {
      const std::size_t n = p_.batch * out_;
      if (last()) {  // d(mean squared error)/dy = 2 (y - target) / n
        const float scale = 2.0f / static_cast<float>(n);
        LSTASH_RETURN_IF_ERROR(c.Write(target_, 0, FloatBytes(Target(op.minibatch))));
        LSTASH_RETURN_IF_ERROR(c.Axpby(scale, s.y, 0.0f, dy_, n));
        LSTASH_RETURN_IF_ERROR(c.Axpby(-scale, target_, 1.0f, dy_, n));
      } else {
        LSTASH_RETURN_IF_ERROR(c.Write(dy_, 0, Take(op)));
        LSTASH_RETURN_IF_ERROR(c.ReluBackward(s.y, dy_, n));
      }
      LSTASH_RETURN_IF_ERROR(c.LinearBackward(s.x, s.w, dy_, dx_, dw_, db_, p_.batch, in_, out_));
      LSTASH_RETURN_IF_ERROR(c.Axpby(-p_.lr, dw_, 1.0f, w_, in_ * out_));
      LSTASH_RETURN_IF_ERROR(c.Axpby(-p_.lr, db_, 1.0f, b_, out_));
      if (!first()) {
        LSTASH_ASSIGN_OR_RETURN(std::string dx, c.Read(dx_));
        out = Message{index_ - 1, kBackward, op.minibatch, std::move(dx)};
      }
    }
    ++next_;
    return out;
  }

  std::array<gpu::BufferId, 2> weights() const { return {w_, b_}; }

  Result<std::string> WeightBytes() const {
    LSTASH_ASSIGN_OR_RETURN(std::string w, context_.Read(w_));
    LSTASH_ASSIGN_OR_RETURN(std::string b, context_.Read(b_));
    return w + b;
  }

  // The host half of the stage's state (the device half is the context's).
  void Save(Writer& s) const {
    s.u64(next_);
    s.u64(pending_.size());
    for (const auto& [key, bytes] : pending_) {
      s.u64(key.first);
      s.u64(key.second);
      s.str(bytes);
    }
  }

  bool Load(Reader& r) {
    std::uint64_t next = 0, n = 0;
    if (!r.u64(&next) || next > ops_.size() || !r.u64(&n)) return false;
    next_ = next;
    pending_.clear();
    for (std::uint64_t i = 0; i < n; ++i) {
      std::uint64_t pass = 0, minibatch = 0;
      std::string bytes;
      if (!r.u64(&pass) || !r.u64(&minibatch) || !r.str(&bytes)) return false;
      pending_[{pass, minibatch}] = std::move(bytes);
    }
    return true;
  }

 private:
  Stage(gpu::Context& context, const Params& p, std::uint32_t index)
      : context_(context),
        p_(p),
        index_(index),
        in_(first() ? p.in : p.hidden),
        out_(last() ? p.out : p.hidden),
        ops_(Schedule(index, p.stages, p.minibatches)),
        // At most S - index minibatches are in flight at this stage.
        slots_(std::min<std::uint64_t>(p.stages - index, p.minibatches)) {}

  bool first() const { return index_ == 0; }
  bool last() const { return index_ + 1 == p_.stages; }

  std::vector<float> MinibatchInput(std::uint64_t m) const {
    return SeededFloats(Mix(Mix(p_.seed, 1), m), p_.batch * p_.in, 1.0f);
  }
  std::vector<float> Target(std::uint64_t m) const {
    return SeededFloats(Mix(Mix(p_.seed, 2), m), p_.batch * p_.out, 1.0f);
  }

  // Operations of `pass` already run (each pass runs its minibatches in order).
  std::uint64_t Consumed(std::uint64_t pass) const {
    return static_cast<std::uint64_t>(
        std::count_if(ops_.begin(), ops_.begin() + static_cast<std::ptrdiff_t>(next_), [&](const Op& o) { return o.pass == pass; }));
  }

  std::string Take(const Op& op) {
    auto it = pending_.find({op.pass, op.minibatch});
    std::string bytes = std::move(it->second);
    pending_.erase(it);
    return bytes;
  }

  Status Allocate() {
    auto zeros = [&](std::string name, std::size_t floats) -> Result<gpu::BufferId> {
      return Upload(context_, name, std::string(floats * sizeof(float), '\0'));
    };
    LSTASH_ASSIGN_OR_RETURN(w_, Upload(context_, "w", FloatBytes(SeededFloats(Mix(Mix(p_.seed, 3), index_), in_ * out_, 0.5f))));
    LSTASH_ASSIGN_OR_RETURN(b_, zeros("b", out_));
    LSTASH_ASSIGN_OR_RETURN(dy_, zeros("dy", p_.batch * out_));
    LSTASH_ASSIGN_OR_RETURN(dx_, zeros("dx", p_.batch * in_));
    LSTASH_ASSIGN_OR_RETURN(dw_, zeros("dw", in_ * out_));
    LSTASH_ASSIGN_OR_RETURN(db_, zeros("db", out_));
    if (last()) {
      LSTASH_ASSIGN_OR_RETURN(target_, zeros("target", p_.batch * out_));
    }
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      LSTASH_ASSIGN_OR_RETURN(slots_[i].x, zeros(fmt::format("x{}", i), p_.batch * in_));
      LSTASH_ASSIGN_OR_RETURN(slots_[i].y, zeros(fmt::format("y{}", i), p_.batch * out_));
      LSTASH_ASSIGN_OR_RETURN(slots_[i].w, zeros(fmt::format("w{}", i), in_ * out_));
    }
    return Status::OK();
  }

  // A minibatch in flight: its input, its output and the weights it saw.
  struct Slot {
    gpu::BufferId x = 0, y = 0, w = 0;
  };

  gpu::Context& context_;
  const Params p_;
  const std::uint32_t index_;
  const std::uint64_t in_, out_;
  const std::vector<Op> ops_;
  std::vector<Slot> slots_;
  gpu::BufferId w_ = 0, b_ = 0, dy_ = 0, dx_ = 0, dw_ = 0, db_ = 0, target_ = 0;
  std::size_t next_ = 0;                                                  // in ops_
  std::map<std::pair<std::uint64_t, std::uint64_t>, std::string> pending_;  // (pass, minibatch): early inputs
};

class PipelineApp final : public App {
 public:
  static Result<std::unique_ptr<App>> Create(const Params& p, WorkerId self) {
    LSTASH_ASSIGN_OR_RETURN(auto context, OpenContext(p.backend, "pipeline"));
    auto app = std::unique_ptr<PipelineApp>(new PipelineApp(p, self, std::move(context)));
    LSTASH_ASSIGN_OR_RETURN(app->stage_, Stage::Create(*app->context_, p, self));
    return std::unique_ptr<App>(std::move(app));
  }

  Status Execute(Worker& w, const Task& t) override {
    if (!t.start) {
      Reader r(t.payload);
      std::uint64_t pass = 0, minibatch = 0;
      if (!GetHeader(r, kMagic) || !r.u64(&pass) || !r.u64(&minibatch) ||
          t.sender != (pass == kForward ? self_ - 1 : self_ + 1)) {
        return Corruption("pipeline: unexpected task " + ToString(t.id));
      }
      LSTASH_RETURN_IF_ERROR(stage_->Deliver(pass, minibatch, std::string(r.rest())));
      if (auto sent = forward_at_.find(minibatch); pass == kBackward && sent != forward_at_.end()) {
        latency_.EndNow(sent->second, minibatch);
        forward_at_.erase(sent);
      }
    }
    // Every operation whose input is here, each a GPU task of its own.
    while (stage_->Ready()) {
      gpu::TaskScope scope(*context_, w, t);
      LSTASH_ASSIGN_OR_RETURN(std::optional<Message> out, stage_->RunNext());
      const auto weights = stage_->weights();
      LSTASH_RETURN_IF_ERROR(scope.Finish(weights));
      if (!out) continue;
      Writer m;
      PutHeader(m, kMagic);
      m.u64(out->pass);
      m.u64(out->minibatch);
      m.raw(out->bytes);
      LSTASH_RETURN_IF_ERROR(w.Submit(out->dest, m.take()).status());
      if (self_ == 0 && out->pass == kForward) forward_at_[out->minibatch] = MonoNow();
    }
    return Status::OK();
  }

  bool Finished() const override { return stage_->done(); }
  // Stage 0's round trips, forward out to gradient back, by minibatch.
  void TakeStats(nlohmann::json* stats) override { latency_.TakeInto(stats); }
  std::int64_t MinTaskIntervalNanos() const override { return p_.task_interval_nanos; }

  std::string Snapshot() const override {
    Writer s;
    PutHeader(s, kMagic);
    stage_->Save(s);
    PutDeviceState(s, *context_);
    return s.take();
  }

  Status Restore(const std::string& bytes) override {
    Reader r(bytes);
    if (!GetHeader(r, kMagic) || !stage_->Load(r)) return Corruption("pipeline snapshot");
    LSTASH_RETURN_IF_ERROR(GetDeviceState(r, *context_, "pipeline"));
    return r.done() ? Status::OK() : Corruption("pipeline snapshot: trailing bytes");
  }

  WorkerId self() const { return self_; }
  Result<std::string> WeightBytes() const { return stage_->WeightBytes(); }

 private:
  PipelineApp(const Params& p, WorkerId self, std::unique_ptr<gpu::Context> context)
      : p_(p), self_(self), context_(std::move(context)) {}

  const Params p_;
  const WorkerId self_;
  std::unique_ptr<gpu::Context> context_;
  std::unique_ptr<Stage> stage_;
  std::map<std::uint64_t, std::int64_t> forward_at_;  // minibatch -> when stage 0 sent it (measurement only)
  LatencySamples latency_;
};

}  // namespace

Result<std::unique_ptr<App>> MakePipelineApp(const AppContext& context) {
  LSTASH_ASSIGN_OR_RETURN(const Params p, ReadParams(context));
  return PipelineApp::Create(p, context.self);
}

std::vector<std::string> CheckPipeline(const nlohmann::json& config, const std::vector<const App*>& apps) {
  auto p = ReadParams({0, static_cast<std::uint32_t>(apps.size()), config});
  if (!p.ok()) return {p.status().ToString()};
  // The reference: the same stages on the CPU path, run one after another
  // until none can go on, each message handed straight to its receiver.
  std::vector<std::unique_ptr<gpu::Context>> contexts;
  std::vector<std::unique_ptr<Stage>> stages;
  for (std::uint32_t s = 0; s < p->stages; ++s) {
    auto context = OpenContext("cpu", "pipeline checker");
    if (!context.ok()) return {context.status().ToString()};
    auto stage = Stage::Create(**context, *p, s);
    if (!stage.ok()) return {stage.status().ToString()};
    contexts.push_back(std::move(context).value());
    stages.push_back(std::move(stage).value());
  }
  for (bool progress = true; progress;) {
    progress = false;
    for (auto& stage : stages) {
      while (stage->Ready()) {
        auto out = stage->RunNext();
        Status s = out.ok() && *out ? stages[(*out)->dest]->Deliver((*out)->pass, (*out)->minibatch, std::move((*out)->bytes))
                                    : out.status();
        if (!s.ok()) return {"pipeline checker: " + s.ToString()};
        progress = true;
      }
    }
  }
  std::vector<std::string> v;
  for (std::uint32_t s = 0; s < p->stages; ++s) {
    const auto* app = dynamic_cast<const PipelineApp*>(apps[s]);
    if (app == nullptr) return {"pipeline: not pipeline apps"};
    if (!stages[s]->done()) return {fmt::format("pipeline checker: the reference run stalled at stage {}", s)};
    auto want = stages[s]->WeightBytes();
    auto got = app->WeightBytes();
    if (!want.ok() || !got.ok()) {
      v.push_back(fmt::format("pipeline: stage {}'s weights: {}", s, (got.ok() ? want : got).status().ToString()));
    } else if (!app->Finished()) {
      v.push_back(fmt::format("pipeline: stage {} did not finish its schedule", s));
    } else if (*got != *want) {
      v.push_back(fmt::format("pipeline: stage {}'s final weights differ from the failure-free run's", s));
    }
  }
  return v;
}

}  // namespace lstash::workloads
