// TaskScope: each nondeterministic outcome of a task's GPU work goes through
// one Worker call, so it is logged live and fed back in replay. The code
// below never asks whether it is replaying: Worker::Choose runs `produce`
// live and returns the logged bytes in replay, and each step does whatever
// `produce` did not.
#include "gpu/context_impl.h"
#include "gpu/kernel_math.h"

#include <spdlog/spdlog.h>

#include <fmt/format.h>

#include <array>
#include <numeric>

namespace lstash::gpu {

struct TaskScope::Impl {
  ContextImpl& context;
  Worker& worker;
  TaskId task;
  std::optional<std::uint64_t> philox_key;  // drawn (logged) on first use
  std::uint64_t philox_offset = 0;          // in Philox blocks
  bool replayed = false;
};

TaskScope::TaskScope(Context& context, Worker& worker, const Task& task)
    : impl_(new Impl{static_cast<ContextImpl&>(context), worker, task.id, std::nullopt, 0, task.replayed}) {}

TaskScope::~TaskScope() = default;

namespace {

std::string EncodeU32s(std::span<const std::uint32_t> values) {
  std::string out(values.size() * 4, '\0');
  for (std::size_t i = 0; i < values.size(); ++i)
    for (int b = 0; b < 4; ++b) out[i * 4 + b] = static_cast<char>((values[i] >> (8 * b)) & 0xff);
  return out;
}

// A logged launch order: a permutation of 0..n-1, or nullopt.
std::optional<std::vector<std::uint32_t>> DecodeOrder(std::string_view bytes, std::size_t n) {
  if (bytes.size() != n * 4) return std::nullopt;
  std::vector<std::uint32_t> order(n);
  std::vector<bool> seen(n, false);
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t v = 0;
    for (int b = 0; b < 4; ++b) v |= std::uint32_t{static_cast<unsigned char>(bytes[i * 4 + b])} << (8 * b);
    if (v >= n || seen[v]) return std::nullopt;
    seen[v] = true;
    order[i] = v;
  }
  return order;
}

Status Diverged(const TaskId& task, std::string_view what) {
  return Status(Code::kDiverged, fmt::format("gpu task {}: {}", ToString(task), what));
}

}  // namespace

Status TaskScope::FillUniform(BufferId out, std::size_t count) {
  auto p = impl_->context.Span(out, count * sizeof(float), "fill-uniform");
  if (!p.ok()) return p.status();
  if (!impl_->philox_key) {
    auto seed = impl_->worker.Random();
    if (!seed.ok()) return seed.status();
    impl_->philox_key = seed.value();
  }
  const std::uint64_t offset = impl_->philox_offset;
  impl_->philox_offset += math::UniformBlocks(count);
  return impl_->context.device().FillUniform(static_cast<float*>(p.value()), count, *impl_->philox_key, offset);
}

Status TaskScope::RaceUpdates(BufferId state, std::span<const AffineUpdate> updates) {
  auto size = impl_->context.Size(state);
  if (!size.ok()) return size.status();
  const std::size_t n = size.value() / sizeof(float);
  float* p = static_cast<float*>(impl_->context.device_pointer(state));
  Device& device = impl_->context.device();
  impl_->context.UpdateStats([&](Stats& s) { s.raced_launches += updates.size(); });
  if (impl_->context.breakage() == GpuBreakage::kNoOrderLog) {
    // Negative control: nothing is logged, so replay can only assume launch order.
    if (!impl_->replayed) {
      auto order = device.Race(p, n, updates);
      return order.ok() ? Status::OK() : order.status();
    }
    std::vector<std::uint32_t> launch_order(updates.size());
    std::iota(launch_order.begin(), launch_order.end(), 0u);
    return device.ApplyInOrder(p, n, updates, launch_order);
  }
  Status raced;
  bool ran = false;
  auto logged = impl_->worker.Choose([&]() -> std::string {
    ran = true;
    auto order = device.Race(p, n, updates);
    if (!order.ok()) {
      raced = order.status();
      return {};
    }
    return EncodeU32s(order.value());
  });
  if (!logged.ok()) return logged.status();
  if (ran) return raced;
  auto order = DecodeOrder(logged.value(), updates.size());
  if (!order) return Diverged(impl_->task, "the logged launch order does not fit these updates");
  return device.ApplyInOrder(p, n, updates, *order);
}

Status TaskScope::RunNondeterministic(std::span<const BufferId> outputs, const std::function<Status()>& kernel) {
  ContextImpl& context = impl_->context;
  if (context.breakage() == GpuBreakage::kNoOutputLog) return kernel();  // negative control: replay recomputes
  std::vector<std::size_t> sizes;
  std::size_t total = 0;
  for (BufferId b : outputs) {
    auto size = context.Size(b);
    if (!size.ok()) return size.status();
    sizes.push_back(size.value());
    total += size.value();
  }
  Status ran_status;
  bool ran = false;
  // The output bytes ride in the stash like any logged value: to the store
  // by the background flusher, off the task's critical path.
  auto logged = impl_->worker.Choose([&]() -> std::string {
    ran = true;
    if (ran_status = kernel(); !ran_status.ok()) return {};
    std::string bytes;
    bytes.reserve(total);
    for (BufferId b : outputs) {
      auto out = context.Read(b);
      if (!out.ok()) {
        ran_status = out.status();
        return {};
      }
      bytes += out.value();
    }
    return bytes;
  });
  if (!logged.ok()) return logged.status();
  if (ran) {
    if (ran_status.ok()) context.UpdateStats([&](Stats& s) { s.logged_output_bytes += total; });
    return ran_status;
  }
  const std::string& bytes = logged.value();
  if (bytes.size() != total) return Diverged(impl_->task, "the logged output does not fit these output buffers");
  std::size_t at = 0;
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    if (Status s = context.Write(outputs[i], 0, std::string_view(bytes).substr(at, sizes[i])); !s.ok()) return s;
    at += sizes[i];
  }
  context.UpdateStats([&](Stats& s) { s.restored_output_bytes += total; });
  return Status::OK();
}

Status TaskScope::ScatterAdd(BufferId values, BufferId index, std::size_t count, BufferId out) {
  ContextImpl& context = impl_->context;
  auto pv = context.Span(values, count * sizeof(float), "scatter-add values");
  auto pi = context.Span(index, count * sizeof(std::uint32_t), "scatter-add index");
  auto out_bytes = context.Size(out);
  for (const auto* p : {&pv, &pi})
    if (!p->ok()) return p->status();
  if (!out_bytes.ok()) return out_bytes.status();
  const BufferId outputs[] = {out};
  return RunNondeterministic(outputs, [&] {
    return context.device().ScatterAdd(static_cast<const float*>(pv.value()),
                                       static_cast<const std::uint32_t*>(pi.value()), count,
                                       static_cast<float*>(context.device_pointer(out)),
                                       out_bytes.value() / sizeof(float));
  });
}

Result<std::string> TaskScope::ChooseAlgorithm(const std::function<std::string()>& pick) {
  return impl_->worker.Choose(pick);
}

Status TaskScope::Finish(std::span<const BufferId> outputs, OnDivergence policy) {
  ContextImpl& context = impl_->context;
  context.UpdateStats([](Stats& s) { ++s.tasks; });
  if (outputs.empty()) return Status::OK();
  std::uint64_t digest = 0;
  for (BufferId b : outputs) {
    auto d = context.Digest(b);
    if (!d.ok()) return d.status();
    digest = math::Mix64(digest ^ d.value());
  }
  const std::string computed = EncodeU32s(std::array{static_cast<std::uint32_t>(digest), static_cast<std::uint32_t>(digest >> 32)});
  auto logged = impl_->worker.Choose([&] { return computed; });  // live: logs it; replay: the logged one
  if (!logged.ok()) return logged.status();
  context.UpdateStats([](Stats& s) { ++s.digests; });
  if (logged.value() == computed) return Status::OK();
  context.UpdateStats([](Stats& s) { ++s.divergences; });
  const std::string what = fmt::format("replayed output digest {:016x} differs from the logged one", digest);
  if (policy == OnDivergence::kFail) return Diverged(impl_->task, what);
  spdlog::warn("gpu task {}: {} (accepted: OnDivergence::kReport)", ToString(impl_->task), what);
  return Status::OK();
}

}  // namespace lstash::gpu
