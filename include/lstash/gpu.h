// GPU tasks: device state a worker can lose and get back by replay.
//
// When a worker that drives a GPU dies, its CUDA context and every byte of
// device memory die with it. A gpu::Context holds that state as named device
// buffers, registered as worker state: Snapshot() copies them out for a
// checkpoint (asynchronously, into pinned host memory; the worker's flusher
// encodes them) and RestoreFrom() puts them back on recovery, streamed from
// the store. A gpu::TaskScope wraps one task's GPU work and logs, through
// the task's Worker, every nondeterministic thing the GPU does, so replay
// regenerates the same device state:
//
//   random numbers    Philox4x32-10 from a logged seed and a counter offset
//                     that advances deterministically within the task;
//   launch order      updates raced on several streams take tickets on the
//                     device; the ticket order is logged and replay applies
//                     the updates in it;
//   library choices   ChooseAlgorithm: the pick is logged (Worker::Choose);
//   racy kernels      a kernel whose output is nondeterministic by nature
//                     (floating-point atomics) is declared so; its output
//                     bytes are logged and replay restores them instead of
//                     recomputing.
//
// Divergence detection: Finish() digests the task's output buffers on the
// device (a 64-bit digest, the same on every backend); live, the digest is
// logged; in replay it is recomputed and compared. A mismatch fails the task
// (kDiverged, the default) or is counted and reported.
//
// Two backends with the same semantics: CUDA, and a CPU path used when no
// device is present. The provided kernels compute bit for bit the same floats
// on both (no fused multiply-add, fixed summation order), so a worker can
// even recover on the other backend. The CPU path's racy kernels draw their
// order from the OS, as a GPU's scheduler would, so the logging that tames
// them is exercised on machines without a GPU.
//
// Threading: one Context per worker, used from the worker's engine thread.
// No CUDA header is needed to use this API; device_pointer() and
// cuda_stream() hand raw handles to engines that launch their own kernels.
#pragma once

#include <lstash/export.h>
#include <lstash/status.h>
#include <lstash/worker.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lstash::gpu {

enum class Backend : unsigned char { kCpu, kCuda };
LSTASH_EXPORT std::string_view BackendName(Backend backend);  // "cpu", "cuda"
LSTASH_EXPORT std::optional<Backend> ParseBackend(std::string_view name);

struct DeviceInfo {
  bool present = false;
  std::string name;           // e.g. "NVIDIA H100 80GB HBM3"
  std::size_t memory_bytes = 0;
  std::string why_absent;     // when !present: "built without CUDA", "no CUDA driver", ...
};
// The first CUDA device, or why there is none. Cheap; never fails.
LSTASH_EXPORT DeviceInfo ProbeCuda();

// What replay does with a task whose output digest differs from the log.
enum class OnDivergence : unsigned char {
  kFail,    // the task fails with kDiverged (default: loud)
  kReport,  // counted in Stats::divergences and reported; the task goes on
};

// Deliberate breakage for negative controls (tests only).
enum class GpuBreakage : unsigned char {
  kNone,
  kNoOutputLog,  // racy kernels' outputs are not logged; replay recomputes them
  kNoOrderLog,   // raced launch order is not logged; replay uses launch order
};

struct ContextOptions {
  std::optional<Backend> backend;  // nullopt: CUDA when a device is present, else CPU
  int device = 0;                  // CUDA device ordinal
  int streams = 4;                 // streams for raced launches (>= 1)
  GpuBreakage breakage = GpuBreakage::kNone;
};

using BufferId = std::uint32_t;

// One update of a raced launch: state[i] = state[i] * scale + shift for all i.
// Two such updates do not commute, so the final state tells their order.
struct AffineUpdate {
  float scale = 1.0f;
  float shift = 0.0f;
};

struct Stats {
  std::uint64_t tasks = 0;           // TaskScopes finished
  std::uint64_t digests = 0;         // output digests logged or checked
  std::uint64_t divergences = 0;     // replayed digests that differed
  std::uint64_t logged_output_bytes = 0;  // racy kernels' outputs logged
  std::uint64_t restored_output_bytes = 0;
  std::uint64_t raced_launches = 0;
  std::uint64_t snapshots = 0;
  std::uint64_t snapshot_bytes = 0;
  std::uint64_t snapshot_host_bytes = 0;  // host memory holding snapshots' copies now
  std::uint64_t restores = 0;
  std::uint64_t corrupt_snapshots = 0;  // refused by Restore or RestoreFrom
};

class LSTASH_EXPORT Context {
 public:
  // kUnavailable if CUDA was asked for and no device is present (the message
  // says why); kInvalidArgument for bad options.
  static Result<std::unique_ptr<Context>> Open(const ContextOptions& options);
  virtual ~Context();

  virtual Backend backend() const = 0;
  virtual std::string device_name() const = 0;

  // Device buffers registered as worker state, zero-filled. Names are unique
  // and identify a buffer in snapshots.
  virtual Result<BufferId> Allocate(std::string_view name, std::size_t bytes) = 0;
  virtual Result<std::size_t> Size(BufferId buffer) const = 0;
  virtual Status Write(BufferId buffer, std::size_t offset, std::string_view bytes) = 0;
  virtual Result<std::string> Read(BufferId buffer) = 0;  // waits for queued work
  // For engines' own kernels: a device pointer (a host pointer on the CPU
  // backend) and the cudaStream_t the provided kernels run on (nullptr on
  // CPU). Work an engine launches itself must keep the determinism rules.
  virtual void* device_pointer(BufferId buffer) = 0;
  virtual void* cuda_stream() = 0;

  // Deterministic kernels (the same bits on every backend).
  // y[r][o] = b[o] + sum_k x[r][k] * w[k][o] (k ascending), then max(0, .) if relu.
  // x: rows x in, w: in x out, b: out, y: rows x out; all float32.
  virtual Status Linear(BufferId x, BufferId w, BufferId b, BufferId y, std::size_t rows, std::size_t in,
                        std::size_t out, bool relu) = 0;
  // The gradients of Linear (before any relu; see ReluBackward) for
  // dy (rows x out): dx = dy w^T, dw = x^T dy, db = column sums of dy, each
  // sum in ascending index order.
  virtual Status LinearBackward(BufferId x, BufferId w, BufferId dy, BufferId dx, BufferId dw, BufferId db,
                                std::size_t rows, std::size_t in, std::size_t out) = 0;
  // dy[i] = 0 where y[i] <= 0 (y: relu's output), for n floats.
  virtual Status ReluBackward(BufferId y, BufferId dy, std::size_t n) = 0;
  // y = a * x + b * y over n floats (b == 0: y's old values are not read).
  virtual Status Axpby(float a, BufferId x, float b, BufferId y, std::size_t n) = 0;
  // The 64-bit digest of a buffer's bytes, computed where the buffer lives.
  virtual Result<std::uint64_t> Digest(BufferId buffer) = 0;

  // Checkpoints: every registered buffer (names, sizes, bytes) in one record
  // with a magic number and a format version. Snapshot queues the
  // device-to-host copies into pinned host memory and returns at once, with
  // a deferred EngineSnapshot for Worker::Checkpoint: the worker's flusher
  // waits for the copies and encodes the record, off the engine thread.
  // Kernels queued later are ordered after the copies. Each snapshot holds
  // pinned memory the size of the buffers (Stats::snapshot_host_bytes) until
  // it is gone (stored, or dropped); then the next snapshot reuses the set.
  // EngineSnapshot::Bytes() gives the record at once.
  virtual Result<EngineSnapshot> Snapshot() = 0;
  // Replaces the contents of the buffers named in the snapshot, which must
  // be registered with the same sizes. A bad record is refused (kCorruption,
  // or kFailedPrecondition for a version or buffers that do not fit; counted
  // in Stats::corrupt_snapshots) and nothing changes.
  virtual Status Restore(std::string_view snapshot) = 0;
  // The same for the snapshot a recovering worker holds, streamed from the
  // store to the device in parts (Worker::ReadRestoredSnapshot): no host
  // copy of GiBs of state. The record's table is checked against the
  // buffers and its size before any buffer changes; a digest mismatch shows
  // only at the end, after the buffers were written (the recovery fails).
  virtual Status RestoreFrom(Worker& worker) = 0;

  virtual Status Synchronize() = 0;
  virtual Stats GetStats() const = 0;
};

// One task's GPU work, logged. Make one at the start of a task's GPU part,
// with the Worker and Task the engine is running, and Finish it. Live, every
// nondeterministic outcome is logged through the Worker; replayed
// (task.replayed), the logged outcomes are fed back.
class LSTASH_EXPORT TaskScope {
 public:
  TaskScope(Context& context, Worker& worker, const Task& task);
  ~TaskScope();
  TaskScope(const TaskScope&) = delete;
  TaskScope& operator=(const TaskScope&) = delete;

  // Fills `count` float32s of `out` with uniform values in [0, 1) from the
  // task's Philox stream: its seed is drawn (and logged) once per task; each
  // call continues where the last left off.
  Status FillUniform(BufferId out, std::size_t count);

  // Applies `updates` to `state` (float32) each on its own stream, racing;
  // each takes a ticket on the device, and the ticket order decides the
  // result. Live, that order is logged; replay applies them in it.
  Status RaceUpdates(BufferId state, std::span<const AffineUpdate> updates);

  // values[i] is atomically added to out[index[i]] (float32 values, uint32
  // indices): the summation order, and so the result's low bits, vary from
  // run to run. Declared nondeterministic: out's bytes are logged live and
  // restored in replay.
  Status ScatterAdd(BufferId values, BufferId index, std::size_t count, BufferId out);

  // Any kernel of the engine's own whose outputs are nondeterministic:
  // live, `kernel` runs and `outputs`' bytes are logged; in replay they are
  // restored and `kernel` does not run.
  Status RunNondeterministic(std::span<const BufferId> outputs, const std::function<Status()>& kernel);

  // A library's choice that may vary between runs (which algorithm an
  // autotuner picked): live, `pick` runs and its answer is logged.
  Result<std::string> ChooseAlgorithm(const std::function<std::string()>& pick);

  // Ends the task's GPU part. With `outputs`, their digest is logged (live)
  // or checked (replay) under `policy`.
  Status Finish(std::span<const BufferId> outputs = {}, OnDivergence policy = OnDivergence::kFail);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lstash::gpu
