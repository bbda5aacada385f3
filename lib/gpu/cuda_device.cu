// The CUDA backend. Every provided kernel runs on one main stream, in the
// order the host queued it, except the raced updates (one stream each, on
// purpose) and snapshot copies (a copy stream, so the host does not wait).
// The arithmetic is kernel_math.h's, shared with the CPU path.
#include "gpu/device.h"
#include "gpu/kernel_math.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

namespace lstash::gpu {
namespace {

constexpr int kThreads = 256;
constexpr unsigned kDigestBlocks = 4096;  // enough to fill any current device; each block loops

Status CudaError(cudaError_t error, const char* what) {
  return Status(error == cudaErrorMemoryAllocation ? Code::kResourceExhausted : Code::kInternal,
                std::string("cuda: ") + what + ": " + cudaGetErrorString(error));
}
#define LSTASH_CUDA(call, what)                                 \
  do {                                                          \
    if (cudaError_t lstash_error = (call); lstash_error != cudaSuccess) \
      return CudaError(lstash_error, what);                     \
  } while (0)

unsigned Blocks(std::size_t n) {
  const std::size_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks == 0 ? 1 : (blocks > 65535 * 16 ? 65535 * 16 : blocks));
}

#define LSTASH_FOR_EACH(i, n) \
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < (n); i += std::size_t{gridDim.x} * blockDim.x)

__global__ void LinearKernel(const float* x, const float* w, const float* b, float* y, std::size_t rows,
                             std::size_t in, std::size_t out, bool relu) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < rows * out;
       i += std::size_t{gridDim.x} * blockDim.x)
    y[i] = math::LinearAt(x, w, b, i / out, i % out, in, out, relu);
}

__global__ void LinearBackwardKernel(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                                     std::size_t rows, std::size_t in, std::size_t out) {
  // One grid for all three gradients: dx's elements, then dw's, then db's.
  LSTASH_FOR_EACH(i, rows * in + in * out + out) {
    if (i < rows * in) {
      dx[i] = math::LinearDxAt(dy, w, i / in, i % in, out);
    } else if (i < rows * in + in * out) {
      const std::size_t j = i - rows * in;
      dw[j] = math::LinearDwAt(x, dy, j / out, j % out, rows, in, out);
    } else {
      const std::size_t o = i - rows * in - in * out;
      db[o] = math::LinearDbAt(dy, o, rows, out);
    }
  }
}

__global__ void ReluBackwardKernel(const float* y, float* dy, std::size_t n) {
  LSTASH_FOR_EACH(i, n) dy[i] = math::ReluGrad(y[i], dy[i]);
}

__global__ void AxpbyKernel(float a, const float* x, float b, float* y, std::size_t n) {
  LSTASH_FOR_EACH(i, n) y[i] = math::AxpbyAt(a, x[i], b, b == 0.0f ? 0.0f : y[i]);
}

__global__ void FillUniformKernel(float* out, std::size_t n, std::uint64_t key, std::uint64_t offset) {
  LSTASH_FOR_EACH(i, n) out[i] = math::UniformAt(key, offset, i);
}

// Device-side state of a digest: the running sum and how many blocks are
// done. The last block to finish publishes the sum to `result` (mapped host
// memory, so no copy is queued after the kernel) and zeroes both for the
// next digest, so no memset is queued before it either.
struct DigestAccumulator {
  unsigned long long sum;
  unsigned blocks_done;
};

__global__ void DigestKernel(const unsigned char* p, std::size_t bytes, DigestAccumulator* acc,
                             volatile unsigned long long* result) {
  const std::size_t words = (bytes + 7) / 8, full = bytes / 8;
  unsigned long long local = 0;
  LSTASH_FOR_EACH(i, words) {
    // cudaMalloc'd buffers are 256-byte aligned, so full words load whole.
    const std::uint64_t word = i < full ? reinterpret_cast<const std::uint64_t*>(p)[i] : math::WordAt(p, bytes, i);
    local += math::DigestTerm(word, i);
  }
  for (int delta = 16; delta > 0; delta /= 2) local += __shfl_down_sync(0xffffffffu, local, delta);
  if ((threadIdx.x & 31) == 0 && local != 0) atomicAdd(&acc->sum, local);
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0 && atomicAdd(&acc->blocks_done, 1u) == gridDim.x - 1) {
    *result = atomicExch(&acc->sum, 0ull);
    acc->blocks_done = 0;
    __threadfence_system();
  }
}

__global__ void ScatterAddKernel(const float* values, const std::uint32_t* index, std::size_t n, float* out,
                                 std::size_t out_len, volatile unsigned* bad_index) {
  LSTASH_FOR_EACH(i, n) {
    if (index[i] >= out_len)
      *bad_index = 1;  // a plain store: atomics on mapped host memory need not exist
    else
      atomicAdd(&out[index[i]], values[i]);  // the order of these is the nondeterminism
  }
}

// One raced update, one block: take a ticket, wait for that turn, apply the
// update to the whole state, pass the turn on. The ticket order is the order
// the updates took effect in.
__global__ void RaceKernel(float* state, std::size_t n, float scale, float shift, std::uint32_t id,
                           unsigned* counters, std::uint32_t* order) {
  __shared__ unsigned ticket;
  if (threadIdx.x == 0) {
    ticket = atomicAdd(&counters[0], 1u);
    while (atomicAdd(&counters[1], 0u) != ticket) __nanosleep(64);
    __threadfence();
    order[ticket] = id;
  }
  __syncthreads();
  for (std::size_t i = threadIdx.x; i < n; i += blockDim.x)
    state[i] = math::Affine(__ldcg(&state[i]), scale, shift);  // __ldcg: past L1, which other SMs' writes miss
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(&counters[1], 1u);
}

__global__ void ApplyInOrderKernel(float* state, std::size_t n, const AffineUpdate* updates,
                                   const std::uint32_t* order, std::size_t count) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n; i += std::size_t{gridDim.x} * blockDim.x) {
    float v = state[i];
    for (std::size_t k = 0; k < count; ++k) v = math::Affine(v, updates[order[k]].scale, updates[order[k]].shift);
    state[i] = v;
  }
}

class CudaDevice final : public Device {
 public:
  ~CudaDevice() override {
    cudaDeviceSynchronize();
    cudaFree(digest_);
    cudaFree(race_tickets_);
    cudaFreeHost(const_cast<Mapped*>(mapped_));
    cudaFree(table_);
    for (cudaStream_t s : race_streams_) cudaStreamDestroy(s);
    cudaStreamDestroy(copy_);
    cudaStreamDestroy(main_);
  }

  static Result<std::unique_ptr<Device>> Open(int ordinal, int streams) {
    std::unique_ptr<CudaDevice> device(new CudaDevice());
    if (Status s = device->Init(ordinal, streams); !s.ok()) return s;
    return std::unique_ptr<Device>(std::move(device));
  }

  Backend backend() const override { return Backend::kCuda; }
  std::string name() const override { return name_; }
  void* stream() override { return main_; }

  Result<void*> Allocate(std::size_t bytes) override {
    void* p = nullptr;
    LSTASH_CUDA(cudaMalloc(&p, bytes == 0 ? 1 : bytes), "allocate device memory");
    LSTASH_CUDA(cudaMemsetAsync(p, 0, bytes, main_), "zero device memory");
    return p;
  }
  void Free(void* p) override {
    cudaStreamSynchronize(main_);
    cudaFree(p);
  }
  Result<void*> AllocateHost(std::size_t bytes) override {
    void* p = nullptr;
    LSTASH_CUDA(cudaMallocHost(&p, bytes == 0 ? 1 : bytes), "allocate pinned host memory");
    return p;
  }
  void FreeHost(void* p) override { cudaFreeHost(p); }

  Status CopyIn(void* dst, const void* src, std::size_t bytes) override {
    // From pageable memory this returns once `src` is staged. (Staging 1 GiB
    // through our own pinned double buffer measured no faster on an H200.)
    LSTASH_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, main_), "copy to device");
    return Status::OK();
  }
  Status CopyOut(void* dst, const void* src, std::size_t bytes) override {
    LSTASH_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, main_), "copy to host");
    LSTASH_CUDA(cudaStreamSynchronize(main_), "copy to host");
    return Status::OK();
  }
  Status BeginCopyOut(void* dst, const void* src, std::size_t bytes) override {
    LSTASH_CUDA(cudaEventRecord(main_ready_, main_), "snapshot: mark");
    LSTASH_CUDA(cudaStreamWaitEvent(copy_, main_ready_), "snapshot: order the copy");
    LSTASH_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, copy_), "snapshot: copy to host");
    LSTASH_CUDA(cudaEventRecord(copy_done_, copy_), "snapshot: mark");
    LSTASH_CUDA(cudaStreamWaitEvent(main_, copy_done_), "snapshot: order later kernels");
    return Status::OK();
  }
  Status WaitCopies() override {
    // Called on the worker's flusher thread too (a snapshot's writer): its
    // current device is set for it, as on the engine thread.
    LSTASH_CUDA(cudaSetDevice(ordinal_), "snapshot: select the device");
    LSTASH_CUDA(cudaStreamSynchronize(copy_), "snapshot: wait for the copies");
    return Status::OK();
  }

  Status Linear(const float* x, const float* w, const float* b, float* y, std::size_t rows, std::size_t in,
                std::size_t out, bool relu) override {
    LinearKernel<<<Blocks(rows * out), kThreads, 0, main_>>>(x, w, b, y, rows, in, out, relu);
    LSTASH_CUDA(cudaGetLastError(), "linear");
    return Status::OK();
  }

  Status LinearBackward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                        std::size_t rows, std::size_t in, std::size_t out) override {
    LinearBackwardKernel<<<Blocks(rows * in + in * out + out), kThreads, 0, main_>>>(x, w, dy, dx, dw, db, rows, in, out);
    LSTASH_CUDA(cudaGetLastError(), "linear backward");
    return Status::OK();
  }

  Status ReluBackward(const float* y, float* dy, std::size_t n) override {
    ReluBackwardKernel<<<Blocks(n), kThreads, 0, main_>>>(y, dy, n);
    LSTASH_CUDA(cudaGetLastError(), "relu backward");
    return Status::OK();
  }

  Status Axpby(float a, const float* x, float b, float* y, std::size_t n) override {
    AxpbyKernel<<<Blocks(n), kThreads, 0, main_>>>(a, x, b, y, n);
    LSTASH_CUDA(cudaGetLastError(), "axpby");
    return Status::OK();
  }

  Status FillUniform(float* out, std::size_t n, std::uint64_t key, std::uint64_t offset) override {
    FillUniformKernel<<<Blocks(n), kThreads, 0, main_>>>(out, n, key, offset);
    LSTASH_CUDA(cudaGetLastError(), "fill-uniform");
    return Status::OK();
  }

  Result<std::uint64_t> Digest(const void* p, std::size_t bytes) override {
    const unsigned blocks = std::min(Blocks((bytes + 7) / 8), kDigestBlocks);
    DigestKernel<<<blocks, kThreads, 0, main_>>>(static_cast<const unsigned char*>(p), bytes, digest_, &mapped_->digest);
    LSTASH_CUDA(cudaGetLastError(), "digest");
    LSTASH_CUDA(cudaStreamSynchronize(main_), "digest");
    return math::DigestFinish(mapped_->digest, bytes);
  }

  Status ScatterAdd(const float* values, const std::uint32_t* index, std::size_t n, float* out,
                    std::size_t out_len) override {
    mapped_->bad_indices = 0;
    ScatterAddKernel<<<Blocks(n), kThreads, 0, main_>>>(values, index, n, out, out_len, &mapped_->bad_indices);
    LSTASH_CUDA(cudaGetLastError(), "scatter-add");
    LSTASH_CUDA(cudaStreamSynchronize(main_), "scatter-add");
    if (mapped_->bad_indices != 0) return Status(Code::kInvalidArgument, "scatter-add index past the output");
    return Status::OK();
  }

  Result<std::vector<std::uint32_t>> Race(float* state, std::size_t n, std::span<const AffineUpdate> updates) override {
    if (Status s = EnsureTable(updates.size()); !s.ok()) return s;
    unsigned* counters = race_tickets_;
    LSTASH_CUDA(cudaMemsetAsync(counters, 0, 2 * sizeof(unsigned), main_), "race: reset tickets");
    LSTASH_CUDA(cudaEventRecord(main_ready_, main_), "race: mark");
    for (cudaStream_t s : race_streams_) LSTASH_CUDA(cudaStreamWaitEvent(s, main_ready_), "race: order");
    for (std::size_t k = 0; k < updates.size(); ++k) {
      RaceKernel<<<1, 1024, 0, race_streams_[k % race_streams_.size()]>>>(
          state, n, updates[k].scale, updates[k].shift, static_cast<std::uint32_t>(k), counters, order_);
      LSTASH_CUDA(cudaGetLastError(), "race");
    }
    for (std::size_t i = 0; i < race_streams_.size(); ++i) {
      LSTASH_CUDA(cudaEventRecord(race_done_[i], race_streams_[i]), "race: mark");
      LSTASH_CUDA(cudaStreamWaitEvent(main_, race_done_[i]), "race: join");
    }
    std::vector<std::uint32_t> order(updates.size());
    if (Status s = CopyOut(order.data(), order_, order.size() * sizeof(std::uint32_t)); !s.ok()) return s;
    return order;
  }

  Status ApplyInOrder(float* state, std::size_t n, std::span<const AffineUpdate> updates,
                      std::span<const std::uint32_t> order) override {
    if (Status s = EnsureTable(updates.size()); !s.ok()) return s;
    if (Status s = CopyIn(updates_, updates.data(), updates.size_bytes()); !s.ok()) return s;
    if (Status s = CopyIn(order_, order.data(), order.size_bytes()); !s.ok()) return s;
    ApplyInOrderKernel<<<Blocks(n), kThreads, 0, main_>>>(state, n, updates_, order_, order.size());
    LSTASH_CUDA(cudaGetLastError(), "apply in order");
    return Status::OK();
  }

  Status Synchronize() override {
    LSTASH_CUDA(cudaStreamSynchronize(main_), "synchronize");
    LSTASH_CUDA(cudaStreamSynchronize(copy_), "synchronize");
    return Status::OK();
  }

 private:
  CudaDevice() = default;

  Status Init(int ordinal, int streams) {
    ordinal_ = ordinal;
    LSTASH_CUDA(cudaSetDevice(ordinal), "select the device");
    cudaDeviceProp prop{};
    LSTASH_CUDA(cudaGetDeviceProperties(&prop, ordinal), "read the device's properties");
    name_ = std::string(prop.name) + " (cuda:" + std::to_string(ordinal) + ")";
    LSTASH_CUDA(cudaStreamCreateWithFlags(&main_, cudaStreamNonBlocking), "create a stream");
    LSTASH_CUDA(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking), "create a stream");
    race_streams_.resize(streams);
    race_done_.resize(streams);
    for (int i = 0; i < streams; ++i) {
      LSTASH_CUDA(cudaStreamCreateWithFlags(&race_streams_[i], cudaStreamNonBlocking), "create a stream");
      LSTASH_CUDA(cudaEventCreateWithFlags(&race_done_[i], cudaEventDisableTiming), "create an event");
    }
    LSTASH_CUDA(cudaEventCreateWithFlags(&main_ready_, cudaEventDisableTiming), "create an event");
    LSTASH_CUDA(cudaEventCreateWithFlags(&copy_done_, cudaEventDisableTiming), "create an event");
    LSTASH_CUDA(cudaMalloc(&digest_, sizeof *digest_), "allocate scratch");
    LSTASH_CUDA(cudaMemset(digest_, 0, sizeof *digest_), "zero scratch");
    LSTASH_CUDA(cudaMalloc(&race_tickets_, 2 * sizeof(unsigned)), "allocate scratch");
    Mapped* mapped = nullptr;
    LSTASH_CUDA(cudaHostAlloc(&mapped, sizeof(Mapped), cudaHostAllocMapped), "allocate mapped memory");
    mapped_ = mapped;
    return Status::OK();
  }

  // Device room for `count` updates and an order of that length.
  Status EnsureTable(std::size_t count) {
    if (count <= table_capacity_) return Status::OK();
    LSTASH_CUDA(cudaStreamSynchronize(main_), "grow the update table");
    cudaFree(table_);
    table_ = nullptr;
    LSTASH_CUDA(cudaMalloc(&table_, count * (sizeof(AffineUpdate) + sizeof(std::uint32_t))), "grow the update table");
    updates_ = static_cast<AffineUpdate*>(table_);
    order_ = reinterpret_cast<std::uint32_t*>(updates_ + count);
    table_capacity_ = count;
    return Status::OK();
  }

  std::string name_;
  int ordinal_ = 0;
  cudaStream_t main_ = nullptr, copy_ = nullptr;
  std::vector<cudaStream_t> race_streams_;
  std::vector<cudaEvent_t> race_done_;
  cudaEvent_t main_ready_ = nullptr, copy_done_ = nullptr;
  // Results kernels write straight to the host (mapped memory: unified
  // addressing makes the host pointer valid on the device).
  struct Mapped {
    unsigned long long digest;
    unsigned bad_indices;
  };
  volatile Mapped* mapped_ = nullptr;
  DigestAccumulator* digest_ = nullptr;
  unsigned* race_tickets_ = nullptr;
  void* table_ = nullptr;
  AffineUpdate* updates_ = nullptr;
  std::uint32_t* order_ = nullptr;
  std::size_t table_capacity_ = 0;
};

}  // namespace

Result<std::unique_ptr<Device>> MakeCudaDevice(int ordinal, int streams) {
  const DeviceInfo info = ProbeCudaDevice();
  if (!info.present) return Status(Code::kUnavailable, "no CUDA device: " + info.why_absent);
  return CudaDevice::Open(ordinal, streams);
}

DeviceInfo ProbeCudaDevice() {
  DeviceInfo info;
  int count = 0;
  if (cudaError_t error = cudaGetDeviceCount(&count); error != cudaSuccess) {
    info.why_absent = cudaGetErrorString(error);
    cudaGetLastError();  // clear it, so it does not surface from a later call
    return info;
  }
  if (count == 0) {
    info.why_absent = "no CUDA-capable device";
    return info;
  }
  cudaDeviceProp prop{};
  if (cudaError_t error = cudaGetDeviceProperties(&prop, 0); error != cudaSuccess) {
    info.why_absent = cudaGetErrorString(error);
    return info;
  }
  info.present = true;
  info.name = prop.name;
  info.memory_bytes = prop.totalGlobalMem;
  return info;
}

}  // namespace lstash::gpu
