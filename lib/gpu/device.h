// The raw operations a backend provides: memory, copies and the kernels.
// gpu::Context (context.cc) keeps the registry of named buffers, snapshots
// and stats on top; TaskScope (task_scope.cc) does the logging. Pointers are
// device pointers on CUDA and host pointers on the CPU path.
#pragma once

#include <lstash/gpu.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace lstash::gpu {

class Device {
 public:
  virtual ~Device() = default;
  virtual Backend backend() const = 0;
  virtual std::string name() const = 0;
  virtual void* stream() = 0;  // cudaStream_t of the provided kernels; nullptr on CPU

  virtual Result<void*> Allocate(std::size_t bytes) = 0;  // zero-filled
  virtual void Free(void* p) = 0;
  // Host memory for snapshots: pinned on CUDA, so copies into it run async.
  virtual Result<void*> AllocateHost(std::size_t bytes) = 0;
  virtual void FreeHost(void* p) = 0;

  // Ordered after the kernels queued before; CopyIn returns once `src` may be
  // reused, CopyOut once `dst` holds the bytes.
  virtual Status CopyIn(void* dst, const void* src, std::size_t bytes) = 0;
  virtual Status CopyOut(void* dst, const void* src, std::size_t bytes) = 0;
  // Snapshot copies: queued on a copy stream behind the kernels queued so
  // far, into host memory from AllocateHost; kernels queued later wait for
  // them. WaitCopies blocks until they are done; it (and FreeHost) may be
  // called from another thread than the rest: a snapshot's writer runs on
  // the worker's flusher.
  virtual Status BeginCopyOut(void* host_dst, const void* src, std::size_t bytes) = 0;
  virtual Status WaitCopies() = 0;

  virtual Status Linear(const float* x, const float* w, const float* b, float* y, std::size_t rows, std::size_t in,
                        std::size_t out, bool relu) = 0;
  virtual Status LinearBackward(const float* x, const float* w, const float* dy, float* dx, float* dw, float* db,
                                std::size_t rows, std::size_t in, std::size_t out) = 0;
  virtual Status ReluBackward(const float* y, float* dy, std::size_t n) = 0;
  virtual Status Axpby(float a, const float* x, float b, float* y, std::size_t n) = 0;
  virtual Status FillUniform(float* out, std::size_t n, std::uint64_t key, std::uint64_t offset) = 0;
  virtual Result<std::uint64_t> Digest(const void* p, std::size_t bytes) = 0;
  // out[index[i]] += values[i], in an order that varies between runs.
  // kInvalidArgument if an index is past out_len (nothing is promised of out).
  virtual Status ScatterAdd(const float* values, const std::uint32_t* index, std::size_t n, float* out,
                            std::size_t out_len) = 0;
  // Applies every update to state[0..n) racing; returns the order they took
  // (order[k] = which update was applied k-th).
  virtual Result<std::vector<std::uint32_t>> Race(float* state, std::size_t n,
                                                  std::span<const AffineUpdate> updates) = 0;
  // The same updates in a given order (a permutation), without racing.
  virtual Status ApplyInOrder(float* state, std::size_t n, std::span<const AffineUpdate> updates,
                              std::span<const std::uint32_t> order) = 0;

  virtual Status Synchronize() = 0;
};

std::unique_ptr<Device> MakeCpuDevice();
// kUnavailable when built without CUDA or no device is present.
Result<std::unique_ptr<Device>> MakeCudaDevice(int ordinal, int streams);
DeviceInfo ProbeCudaDevice();

}  // namespace lstash::gpu
