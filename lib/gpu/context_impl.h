// gpu::Context's one implementation: the registry of named device buffers
// over a Device, snapshots, and the stats TaskScope adds to.
#pragma once

#include "gpu/device.h"

#include <lstash/gpu.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace lstash::gpu {

class ContextImpl final : public Context {
 public:
  ContextImpl(std::unique_ptr<Device> device, GpuBreakage breakage);
  ~ContextImpl() override;

  Backend backend() const override { return device_->backend(); }
  std::string device_name() const override { return device_->name(); }

  Result<BufferId> Allocate(std::string_view name, std::size_t bytes) override;
  Result<std::size_t> Size(BufferId buffer) const override;
  Status Write(BufferId buffer, std::size_t offset, std::string_view bytes) override;
  Result<std::string> Read(BufferId buffer) override;
  void* device_pointer(BufferId buffer) override;
  void* cuda_stream() override { return device_->stream(); }

  Status Linear(BufferId x, BufferId w, BufferId b, BufferId y, std::size_t rows, std::size_t in, std::size_t out,
                bool relu) override;
  Status LinearBackward(BufferId x, BufferId w, BufferId dy, BufferId dx, BufferId dw, BufferId db, std::size_t rows,
                        std::size_t in, std::size_t out) override;
  Status ReluBackward(BufferId y, BufferId dy, std::size_t n) override;
  Status Axpby(float a, BufferId x, float b, BufferId y, std::size_t n) override;
  Result<std::uint64_t> Digest(BufferId buffer) override;

  Result<EngineSnapshot> Snapshot() override;
  Status Restore(std::string_view snapshot) override;
  Status RestoreFrom(Worker& worker) override;

  Status Synchronize() override { return device_->Synchronize(); }
  Stats GetStats() const override;

  // For TaskScope.
  Device& device() { return *device_; }
  GpuBreakage breakage() const { return breakage_; }
  // The buffer's pointer if it holds at least `bytes`; else an error naming it.
  Result<void*> Span(BufferId buffer, std::size_t bytes, std::string_view what);
  // Span for several float buffers at once: {buffer, floats} pairs.
  Result<std::vector<float*>> Floats(std::initializer_list<std::pair<BufferId, std::size_t>> buffers,
                                     std::string_view what);
  template <typename F>
  void UpdateStats(F&& update) {
    std::lock_guard lock(stats_mu_);
    update(stats_);
  }

 private:
  class Restorer;
  struct Staging;
  struct Buffer {
    std::string name;
    std::size_t bytes = 0;
    void* data = nullptr;
  };
  const Buffer* Find(BufferId buffer) const;

  std::shared_ptr<Device> device_;  // shared with snapshots not yet written
  GpuBreakage breakage_;
  std::vector<Buffer> buffers_;  // BufferId = index
  // Host copies for snapshots: the newest set, reused by the next snapshot
  // unless one not yet written still holds it.
  std::shared_ptr<Staging> staging_;
  std::shared_ptr<std::atomic<std::uint64_t>> staging_bytes_;  // in all live sets
  mutable std::mutex stats_mu_;  // GetStats may be called from any thread
  Stats stats_;
};

}  // namespace lstash::gpu
