#include "gpu/context_impl.h"
#include "wire/format.h"

#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace lstash::gpu {

// Snapshot record: "LSGS", version, buffer count, then per buffer its name
// and size (the table), then every buffer's bytes in table order, then an
// XXH3 digest of all of it. Version 2 puts the table first, so a record
// streamed in parts is checked before any buffer changes.
constexpr std::uint32_t kSnapshotMagic = 0x4c534753;  // "LSGS"
constexpr std::uint32_t kSnapshotVersion = 2;

namespace {

void PutLe(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Pops a little-endian integer of `bytes` bytes off `in`.
bool GetLe(std::string_view& in, int bytes, std::uint64_t* v) {
  if (in.size() < static_cast<std::size_t>(bytes)) return false;
  *v = 0;
  for (int i = 0; i < bytes; ++i) *v |= std::uint64_t{static_cast<unsigned char>(in[i])} << (8 * i);
  in.remove_prefix(bytes);
  return true;
}

// A streaming XXH3-64 (the record's digest), reset; null if out of memory.
using Xxh3 = std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)>;
Xxh3 NewXxh3() {
  Xxh3 state(XXH3_createState(), &XXH3_freeState);
  if (state != nullptr) XXH3_64bits_reset(state.get());
  return state;
}

// A digest trailer: the little-endian u64 in `eight` bytes.
std::uint64_t Le64(std::string_view eight) {
  std::uint64_t v = 0;
  (void)GetLe(eight, 8, &v);
  return v;
}

}  // namespace

std::string_view BackendName(Backend backend) { return backend == Backend::kCuda ? "cuda" : "cpu"; }

std::optional<Backend> ParseBackend(std::string_view name) {
  if (name == "cpu") return Backend::kCpu;
  if (name == "cuda") return Backend::kCuda;
  return std::nullopt;
}

DeviceInfo ProbeCuda() { return ProbeCudaDevice(); }

Context::~Context() = default;

Result<std::unique_ptr<Context>> Context::Open(const ContextOptions& options) {
  if (options.streams < 1) return Status(Code::kInvalidArgument, "gpu context: streams must be at least 1");
  const Backend backend = options.backend.value_or(ProbeCudaDevice().present ? Backend::kCuda : Backend::kCpu);
  std::unique_ptr<Device> device;
  if (backend == Backend::kCuda) {
    auto cuda = MakeCudaDevice(options.device, options.streams);
    if (!cuda.ok()) return cuda.status();
    device = std::move(cuda).value();
  } else {
    device = MakeCpuDevice();
  }
  return std::unique_ptr<Context>(new ContextImpl(std::move(device), options.breakage));
}

// One snapshot's host copies of the buffers, pinned on CUDA. Freed by the
// last holder: the context, or a snapshot written after the context closed.
struct ContextImpl::Staging {
  Staging(std::shared_ptr<Device> on, std::shared_ptr<std::atomic<std::uint64_t>> counted_in)
      : device(std::move(on)), live_bytes(std::move(counted_in)) {}
  ~Staging() {
    for (void* p : host) device->FreeHost(p);
    *live_bytes -= held_bytes;
  }
  const std::shared_ptr<Device> device;
  const std::shared_ptr<std::atomic<std::uint64_t>> live_bytes;  // of every set
  std::vector<void*> host;  // by BufferId
  std::uint64_t held_bytes = 0;
  std::atomic<bool> in_use{false};  // by a live snapshot
};

ContextImpl::ContextImpl(std::unique_ptr<Device> device, GpuBreakage breakage)
    : device_(std::move(device)), breakage_(breakage), staging_bytes_(std::make_shared<std::atomic<std::uint64_t>>(0)) {}

ContextImpl::~ContextImpl() {
  (void)device_->Synchronize();
  for (Buffer& b : buffers_) device_->Free(b.data);
}

const ContextImpl::Buffer* ContextImpl::Find(BufferId buffer) const {
  return buffer < buffers_.size() ? &buffers_[buffer] : nullptr;
}

Result<BufferId> ContextImpl::Allocate(std::string_view name, std::size_t bytes) {
  if (name.empty()) return Status(Code::kInvalidArgument, "gpu buffer: empty name");
  for (const Buffer& b : buffers_)
    if (b.name == name) return Status(Code::kInvalidArgument, "gpu buffer '" + std::string(name) + "' exists");
  auto data = device_->Allocate(bytes);
  if (!data.ok()) return data.status().WithContext("gpu buffer '" + std::string(name) + "'");
  buffers_.push_back(Buffer{std::string(name), bytes, data.value()});
  return static_cast<BufferId>(buffers_.size() - 1);
}

Result<std::size_t> ContextImpl::Size(BufferId buffer) const {
  const Buffer* b = Find(buffer);
  if (b == nullptr) return Status(Code::kInvalidArgument, "unknown gpu buffer");
  return b->bytes;
}

Result<void*> ContextImpl::Span(BufferId buffer, std::size_t bytes, std::string_view what) {
  const Buffer* b = Find(buffer);
  if (b == nullptr) return Status(Code::kInvalidArgument, std::string(what) + ": unknown gpu buffer");
  if (b->bytes < bytes)
    return Status(Code::kInvalidArgument, std::string(what) + ": gpu buffer '" + b->name + "' holds " +
                                              std::to_string(b->bytes) + " bytes, needs " + std::to_string(bytes));
  return b->data;
}

Status ContextImpl::Write(BufferId buffer, std::size_t offset, std::string_view bytes) {
  const Buffer* b = Find(buffer);
  if (b == nullptr) return Status(Code::kInvalidArgument, "gpu write: unknown buffer");
  if (offset > b->bytes || bytes.size() > b->bytes - offset)
    return Status(Code::kInvalidArgument, "gpu write past the end of '" + b->name + "'");
  return device_->CopyIn(static_cast<char*>(b->data) + offset, bytes.data(), bytes.size());
}

Result<std::string> ContextImpl::Read(BufferId buffer) {
  const Buffer* b = Find(buffer);
  if (b == nullptr) return Status(Code::kInvalidArgument, "gpu read: unknown buffer");
  std::string out(b->bytes, '\0');
  if (Status s = device_->CopyOut(out.data(), b->data, b->bytes); !s.ok()) return s;
  return out;
}

void* ContextImpl::device_pointer(BufferId buffer) {
  const Buffer* b = Find(buffer);
  return b == nullptr ? nullptr : b->data;
}

Result<std::vector<float*>> ContextImpl::Floats(std::initializer_list<std::pair<BufferId, std::size_t>> buffers,
                                               std::string_view what) {
  std::vector<float*> pointers;
  for (auto [buffer, floats] : buffers) {
    auto p = Span(buffer, floats * sizeof(float), what);
    if (!p.ok()) return p.status();
    pointers.push_back(static_cast<float*>(p.value()));
  }
  return pointers;
}

Status ContextImpl::Linear(BufferId x, BufferId w, BufferId b, BufferId y, std::size_t rows, std::size_t in,
                           std::size_t out, bool relu) {
  auto p = Floats({{x, rows * in}, {w, in * out}, {b, out}, {y, rows * out}}, "linear");
  if (!p.ok()) return p.status();
  return device_->Linear(p.value()[0], p.value()[1], p.value()[2], p.value()[3], rows, in, out, relu);
}

Status ContextImpl::LinearBackward(BufferId x, BufferId w, BufferId dy, BufferId dx, BufferId dw, BufferId db,
                                   std::size_t rows, std::size_t in, std::size_t out) {
  auto p = Floats({{x, rows * in}, {w, in * out}, {dy, rows * out}, {dx, rows * in}, {dw, in * out}, {db, out}},
                  "linear backward");
  if (!p.ok()) return p.status();
  const auto& v = p.value();
  return device_->LinearBackward(v[0], v[1], v[2], v[3], v[4], v[5], rows, in, out);
}

Status ContextImpl::ReluBackward(BufferId y, BufferId dy, std::size_t n) {
  auto p = Floats({{y, n}, {dy, n}}, "relu backward");
  if (!p.ok()) return p.status();
  return device_->ReluBackward(p.value()[0], p.value()[1], n);
}

Status ContextImpl::Axpby(float a, BufferId x, float b, BufferId y, std::size_t n) {
  auto p = Floats({{x, n}, {y, n}}, "axpby");
  if (!p.ok()) return p.status();
  return device_->Axpby(a, p.value()[0], b, p.value()[1], n);
}

Result<std::uint64_t> ContextImpl::Digest(BufferId buffer) {
  const Buffer* b = Find(buffer);
  if (b == nullptr) return Status(Code::kInvalidArgument, "gpu digest: unknown buffer");
  return device_->Digest(b->data, b->bytes);
}

Result<EngineSnapshot> ContextImpl::Snapshot() {
  std::shared_ptr<Staging> staging = staging_;
  // Acquire: the last writer of a set is done with it before it is reused.
  if (staging == nullptr || staging->in_use.load(std::memory_order_acquire))
    staging = std::make_shared<Staging>(device_, staging_bytes_);
  staging_ = staging;
  while (staging->host.size() < buffers_.size()) {
    const Buffer& b = buffers_[staging->host.size()];
    auto host = device_->AllocateHost(b.bytes);
    if (!host.ok()) return host.status().WithContext("gpu snapshot of '" + b.name + "'");
    staging->host.push_back(host.value());
    staging->held_bytes += b.bytes;
    *staging_bytes_ += b.bytes;
  }
  std::string table;
  PutLe(table, kSnapshotMagic, 4);
  PutLe(table, kSnapshotVersion, 4);
  PutLe(table, buffers_.size(), 4);
  std::vector<std::size_t> sizes;
  std::uint64_t record_bytes = 8;  // the digest
  for (std::size_t i = 0; i < buffers_.size(); ++i) {
    const Buffer& b = buffers_[i];
    if (Status s = device_->BeginCopyOut(staging->host[i], b.data, b.bytes); !s.ok()) return s;
    PutLe(table, b.name.size(), 4);
    table.append(b.name);
    PutLe(table, b.bytes, 8);
    sizes.push_back(b.bytes);
    record_bytes += b.bytes;
  }
  record_bytes += table.size();
  UpdateStats([&](Stats& s) {
    ++s.snapshots;
    s.snapshot_bytes += record_bytes;
  });
  // Held until the snapshot is gone (stored, or dropped), on whichever thread.
  staging->in_use.store(true, std::memory_order_relaxed);
  std::shared_ptr<Staging> lease(staging.get(), [staging](Staging* s) {
    s->in_use.store(false, std::memory_order_release);
  });
  return EngineSnapshot(record_bytes, [lease, table = std::move(table), sizes = std::move(sizes)](
                                          const EngineSnapshot::Sink& sink) -> Status {
    if (Status s = lease->device->WaitCopies(); !s.ok()) return s.WithContext("gpu snapshot");
    const Xxh3 digest = NewXxh3();
    if (digest == nullptr) return Status(Code::kResourceExhausted, "gpu snapshot: out of memory");
    const auto emit = [&](std::string_view part) {
      XXH3_64bits_update(digest.get(), part.data(), part.size());
      return sink(part);
    };
    if (Status s = emit(table); !s.ok()) return s;
    for (std::size_t i = 0; i < sizes.size(); ++i)
      if (Status s = emit({static_cast<const char*>(lease->host[i]), sizes[i]}); !s.ok()) return s;
    std::string trailer;
    PutLe(trailer, XXH3_64bits_digest(digest.get()), 8);
    return sink(trailer);
  });
}

// Puts a snapshot record back as its bytes arrive, in parts of any size: the
// table first, checked whole against the registered buffers and the
// record's size before any buffer changes; then each buffer's bytes, copied
// to the device as they come; the digest of all of it last.
class ContextImpl::Restorer {
 public:
  // `whole`: the record, when the caller has all of it (then its digest is
  // checked once the table is, before any buffer changes).
  Restorer(ContextImpl& context, std::uint64_t record_bytes, std::string_view whole = {})
      : context_(context), record_bytes_(record_bytes), whole_(whole), digest_(NewXxh3()) {}

  Status Feed(std::string_view part) {
    if (digest_ == nullptr) return Status(Code::kResourceExhausted, "gpu restore: out of memory");
    while (!part.empty()) {
      if (Status s = FeedSome(part); !s.ok()) return copy_failed_ ? s : Refuse(s);
    }
    return Status::OK();
  }

  Status Finish() {
    if (stage_ != Stage::kDone) return Refuse(Status(Code::kCorruption, "truncated"));
    if (Status s = context_.device_->Synchronize(); !s.ok()) return s;
    context_.UpdateStats([](Stats& s) { ++s.restores; });
    return Status::OK();
  }

 private:
  enum class Stage { kTable, kData, kDigest, kDone };

  Status Refuse(const Status& why) {
    context_.UpdateStats([](Stats& s) { ++s.corrupt_snapshots; });
    return Status(why.code(), "gpu snapshot refused: " + std::string(why.message()));
  }

  // Consumes a prefix of `part`.
  Status FeedSome(std::string_view& part) {
    switch (stage_) {
      case Stage::kTable: {
        const std::size_t before = pending_.size();
        pending_.append(part.substr(0, kMaxTableBytes - std::min(before, kMaxTableBytes)));
        std::size_t table_bytes = 0;
        Status s = ParseTable(&table_bytes);
        if (s.code() == Code::kNotFound) {  // the table goes on in the next part
          if (pending_.size() >= kMaxTableBytes) return Status(Code::kCorruption, "a table of buffers too large");
          part.remove_prefix(pending_.size() - before);
          return Status::OK();
        }
        if (!s.ok()) return s;
        if (!whole_.empty()) {
          const std::size_t body = whole_.size() - 8;  // the table fit, and its size matched: >= 12
          if (Le64(whole_.substr(body)) != wire::Digest(whole_.substr(0, body)))
            return Status(Code::kCorruption, "digest mismatch");
        }
        XXH3_64bits_update(digest_.get(), pending_.data(), table_bytes);
        part.remove_prefix(table_bytes - before);
        pending_.clear();
        stage_ = plan_.empty() ? Stage::kDigest : Stage::kData;
        return Status::OK();
      }
      case Stage::kData: {
        auto& [buffer, written] = plan_[next_];
        const std::size_t n = std::min<std::size_t>(part.size(), buffer->bytes - written);
        // Copy first: the device's transfer of the copy's tail overlaps the hashing.
        if (Status s = context_.device_->CopyIn(static_cast<char*>(buffer->data) + written, part.data(), n); !s.ok()) {
          copy_failed_ = true;  // the device's failure, not the record's
          return s;
        }
        if (whole_.empty()) XXH3_64bits_update(digest_.get(), part.data(), n);
        written += n;
        part.remove_prefix(n);
        if (written == buffer->bytes && ++next_ == plan_.size()) stage_ = Stage::kDigest;
        return Status::OK();
      }
      case Stage::kDigest: {
        const std::size_t n = std::min<std::size_t>(part.size(), 8 - pending_.size());
        pending_.append(part.substr(0, n));
        part.remove_prefix(n);
        if (pending_.size() < 8) return Status::OK();
        if (whole_.empty() && Le64(pending_) != XXH3_64bits_digest(digest_.get()))
          return Status(Code::kCorruption, "digest mismatch");
        stage_ = Stage::kDone;
        return Status::OK();
      }
      case Stage::kDone: return Status(Code::kCorruption, "trailing bytes");
    }
    return Status(Code::kInternal, "gpu snapshot: bad stage");
  }

  // kNotFound while pending_ holds only part of the table.
  Status ParseTable(std::size_t* table_bytes) {
    const Status more(Code::kNotFound, "");
    std::string_view in = pending_;
    std::uint64_t magic = 0, version = 0, count = 0;
    if (!GetLe(in, 4, &magic) || !GetLe(in, 4, &version)) return more;
    if (magic != kSnapshotMagic) return Status(Code::kCorruption, "not a gpu snapshot (bad magic)");
    if (version != kSnapshotVersion)
      return Status(Code::kFailedPrecondition, "format version " + std::to_string(version) + ", this build reads " +
                                                   std::to_string(kSnapshotVersion));
    if (!GetLe(in, 4, &count)) return more;
    std::uint64_t data_bytes = 0;
    std::vector<std::pair<Buffer*, std::size_t>> plan;
    for (std::uint64_t i = 0; i < count; ++i) {
      std::uint64_t name_len = 0, bytes = 0;
      if (!GetLe(in, 4, &name_len)) return more;
      if (name_len > kMaxTableBytes) return Status(Code::kCorruption, "a buffer name too long");
      if (in.size() < name_len) return more;
      const std::string_view name = in.substr(0, name_len);
      in.remove_prefix(name_len);
      if (!GetLe(in, 8, &bytes)) return more;
      Buffer* target = nullptr;
      for (Buffer& b : context_.buffers_)
        if (b.name == name) target = &b;
      if (target == nullptr || target->bytes != bytes)
        return Status(Code::kFailedPrecondition, "buffer '" + std::string(name) + "' (" + std::to_string(bytes) +
                                                     " bytes) is not registered with that size");
      for (const auto& [seen, unused] : plan)
        if (seen == target) return Status(Code::kCorruption, "buffer '" + std::string(name) + "' twice");
      plan.emplace_back(target, 0);
      data_bytes += bytes;
    }
    *table_bytes = pending_.size() - in.size();
    if (record_bytes_ != *table_bytes + data_bytes + 8)
      return Status(Code::kCorruption, "a record of " + std::to_string(record_bytes_) + " bytes; its table says " +
                                           std::to_string(*table_bytes + data_bytes + 8));
    plan_ = std::move(plan);
    return Status::OK();
  }

  static constexpr std::size_t kMaxTableBytes = 1 << 20;

  ContextImpl& context_;
  const std::uint64_t record_bytes_;
  const std::string_view whole_;
  Stage stage_ = Stage::kTable;
  std::string pending_;  // the table, or the digest, while it comes in pieces
  std::vector<std::pair<Buffer*, std::size_t>> plan_;  // buffer, bytes written
  std::size_t next_ = 0;                               // plan_'s buffer being written
  bool copy_failed_ = false;
  Xxh3 digest_;
};

Status ContextImpl::Restore(std::string_view snapshot) {
  Restorer restorer(*this, snapshot.size(), snapshot);
  if (Status s = restorer.Feed(snapshot); !s.ok()) return s;
  return restorer.Finish();
}

Status ContextImpl::RestoreFrom(Worker& worker) {
  const std::optional<std::uint64_t> bytes = worker.restored_snapshot_bytes();
  if (!bytes) return Status(Code::kFailedPrecondition, "gpu restore: the worker has no snapshot to restore");
  Restorer restorer(*this, *bytes);
  if (Status s = worker.ReadRestoredSnapshot([&](std::string_view part) { return restorer.Feed(part); }); !s.ok())
    return s;
  return restorer.Finish();
}

Stats ContextImpl::GetStats() const {
  std::lock_guard lock(stats_mu_);
  Stats stats = stats_;
  stats.snapshot_host_bytes = staging_bytes_->load();
  return stats;
}

}  // namespace lstash::gpu
