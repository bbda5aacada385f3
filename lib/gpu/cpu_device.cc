// The CPU path: the same kernels as the CUDA backend, computing the same bits
// (kernel_math.h). Its racy kernels take their order from a generator seeded
// by the OS, standing in for a GPU's scheduler, so their nondeterminism is
// real here too and the logging that tames it is exercised without a device.
#include "gpu/device.h"
#include "gpu/kernel_math.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>

namespace lstash::gpu {
namespace {

class CpuDevice final : public Device {
 public:
  CpuDevice() : scheduler_(std::random_device{}()) {}

  Backend backend() const override { return Backend::kCpu; }
  std::string name() const override { return "cpu"; }
  void* stream() override { return nullptr; }

  Result<void*> Allocate(std::size_t bytes) override {
    // Zeroed now, not on first touch (as calloc would): device memory is
    // committed when allocated, so the CPU path's timings put the cost there.
    auto p = AllocateHost(bytes);
    if (p.ok()) std::memset(p.value(), 0, bytes);
    return p;
  }
  void Free(void* p) override { std::free(p); }
  // Not zeroed: a snapshot's copies overwrite all of it.
  Result<void*> AllocateHost(std::size_t bytes) override {
    void* p = std::malloc(bytes == 0 ? 1 : bytes);
    if (p == nullptr) return Status(Code::kResourceExhausted, "out of host memory");
    return p;
  }
  void FreeHost(void* p) override { std::free(p); }

  Status CopyIn(void* dst, const void* src, std::size_t bytes) override { return Copy(dst, src, bytes); }
  Status CopyOut(void* dst, const void* src, std::size_t bytes) override { return Copy(dst, src, bytes); }
  Status BeginCopyOut(void* dst, const void* src, std::size_t bytes) override { return Copy(dst, src, bytes); }
  Status WaitCopies() override { return Status::OK(); }

  Status Linear(const float* x, const float* w, const float* b, float* y, std::size_t rows, std::size_t in,
                std::size_t out, bool relu) override {
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t o = 0; o < out; ++o) y[r * out + o] = math::LinearAt(x, w, b, r, o, in, out, relu);
    return Status::OK();
  }

  Status LinearBackward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                        std::size_t rows, std::size_t in, std::size_t out) override {
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t k = 0; k < in; ++k) dx[r * in + k] = math::LinearDxAt(dy, w, r, k, out);
    for (std::size_t k = 0; k < in; ++k)
      for (std::size_t o = 0; o < out; ++o) dw[k * out + o] = math::LinearDwAt(x, dy, k, o, rows, in, out);
    for (std::size_t o = 0; o < out; ++o) db[o] = math::LinearDbAt(dy, o, rows, out);
    return Status::OK();
  }

  Status ReluBackward(const float* y, float* dy, std::size_t n) override {
    for (std::size_t i = 0; i < n; ++i) dy[i] = math::ReluGrad(y[i], dy[i]);
    return Status::OK();
  }

  Status Axpby(float a, const float* x, float b, float* y, std::size_t n) override {
    for (std::size_t i = 0; i < n; ++i) y[i] = math::AxpbyAt(a, x[i], b, y[i]);
    return Status::OK();
  }

  Status FillUniform(float* out, std::size_t n, std::uint64_t key, std::uint64_t offset) override {
    for (std::size_t i = 0; i < n; ++i) out[i] = math::UniformAt(key, offset, i);
    return Status::OK();
  }

  Result<std::uint64_t> Digest(const void* p, std::size_t bytes) override {
    const auto* data = static_cast<const unsigned char*>(p);
    std::uint64_t sum = 0;
    const std::size_t words = (bytes + 7) / 8;
    for (std::size_t i = 0; i < words; ++i) sum += math::DigestTerm(math::WordAt(data, bytes, i), i);
    return math::DigestFinish(sum, bytes);
  }

  Status ScatterAdd(const float* values, const std::uint32_t* index, std::size_t n, float* out,
                    std::size_t out_len) override {
    for (std::size_t i = 0; i < n; ++i)
      if (index[i] >= out_len) return Status(Code::kInvalidArgument, "scatter-add index past the output");
    for (std::uint32_t i : ScheduledOrder(n)) out[index[i]] = math::Add(out[index[i]], values[i]);
    return Status::OK();
  }

  Result<std::vector<std::uint32_t>> Race(float* state, std::size_t n, std::span<const AffineUpdate> updates) override {
    std::vector<std::uint32_t> order = ScheduledOrder(updates.size());
    if (Status s = ApplyInOrder(state, n, updates, order); !s.ok()) return s;
    return order;
  }

  Status ApplyInOrder(float* state, std::size_t n, std::span<const AffineUpdate> updates,
                      std::span<const std::uint32_t> order) override {
    for (std::size_t i = 0; i < n; ++i)
      for (std::uint32_t u : order) state[i] = math::Affine(state[i], updates[u].scale, updates[u].shift);
    return Status::OK();
  }

  Status Synchronize() override { return Status::OK(); }

 private:
  static Status Copy(void* dst, const void* src, std::size_t bytes) {
    if (bytes != 0) std::memmove(dst, src, bytes);
    return Status::OK();
  }

  // The order a GPU's scheduler might have run n racing pieces of work in.
  std::vector<std::uint32_t> ScheduledOrder(std::size_t n) {
    std::vector<std::uint32_t> order(n);
    std::iota(order.begin(), order.end(), 0u);
    std::shuffle(order.begin(), order.end(), scheduler_);
    return order;
  }

  std::mt19937_64 scheduler_;
};

}  // namespace

std::unique_ptr<Device> MakeCpuDevice() { return std::make_unique<CpuDevice>(); }

}  // namespace lstash::gpu
