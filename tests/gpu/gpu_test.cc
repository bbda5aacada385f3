// GPU tasks: the kernels' arithmetic, snapshots, and replay of a worker's GPU
// work after a crash, on the CPU path always and on CUDA when a device is
// present (skipped, saying why, when not). The negative controls switch the
// logging of racy outputs or launch order off and require the replay's
// digest check to report the divergence.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <lstash/gpu.h>
#include <lstash/store.h>
#include <lstash/worker.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/test_util.h"
#include "gpu/context_impl.h"
#include "gpu/device.h"
#include "gpu/kernel_math.h"

namespace lstash::gpu {
namespace {

using ::testing::HasSubstr;

std::string Floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

std::unique_ptr<Context> OpenOrSkip(Backend backend, GpuBreakage breakage = GpuBreakage::kNone) {
  ContextOptions options;
  options.backend = backend;
  options.breakage = breakage;
  auto context = Context::Open(options);
  EXPECT_TRUE(context.ok()) << context.status().ToString();
  return context.ok() ? std::move(context).value() : nullptr;
}

#define SKIP_WITHOUT_DEVICE(backend)                                                     \
  if ((backend) == Backend::kCuda && !ProbeCuda().present)                              \
  GTEST_SKIP() << "no CUDA device (" << ProbeCuda().why_absent << "); the CPU path's tests ran"

// --- the shared arithmetic -------------------------------------------------

TEST(GpuMath, PhiloxMatchesTheKnownAnswers) {
  // Random123's published test vectors for philox4x32-10.
  auto zero = math::Philox4x32({{0, 0, 0, 0}}, 0);
  EXPECT_THAT(zero.v, ::testing::ElementsAre(0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u));
  auto ones = math::Philox4x32({{~0u, ~0u, ~0u, ~0u}}, ~0ull);
  EXPECT_THAT(ones.v, ::testing::ElementsAre(0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu));
  auto pi = math::Philox4x32({{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}}, 0x299f31d0a4093822ull);
  EXPECT_THAT(pi.v, ::testing::ElementsAre(0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u));
}

TEST(GpuMath, UniformIsInRangeAndContinuesAcrossFills) {
  for (std::uint64_t i = 0; i < 1000; ++i) {
    const float u = math::UniformAt(42, 0, i);
    EXPECT_GE(u, 0.0f);
    EXPECT_LT(u, 1.0f);
  }
  // A fill of 6 values uses 2 blocks; the next fill starts at block 2, which
  // is element 8 of the first stream.
  EXPECT_EQ(math::UniformBlocks(6), 2u);
  EXPECT_EQ(math::UniformAt(42, 2, 0), math::UniformAt(42, 0, 8));
}

// --- a context on each backend ----------------------------------------------

class GpuContextTest : public ::testing::TestWithParam<Backend> {};

TEST_P(GpuContextTest, BuffersRoundTripAndRefuseBadArguments) {
  SKIP_WITHOUT_DEVICE(GetParam());
  auto context = OpenOrSkip(GetParam());
  ASSERT_NE(context, nullptr);
  EXPECT_EQ(context->backend(), GetParam());
  CORE_ASSERT_OK_AND_ASSIGN(BufferId a, context->Allocate("a", 12));
  CORE_ASSERT_OK_AND_ASSIGN(std::string zeros, context->Read(a));
  EXPECT_EQ(zeros, std::string(12, '\0'));
  CORE_ASSERT_OK(context->Write(a, 4, "abcd"));
  CORE_ASSERT_OK_AND_ASSIGN(std::string bytes, context->Read(a));
  EXPECT_EQ(bytes, std::string(4, '\0') + "abcd" + std::string(4, '\0'));
  EXPECT_EQ(context->Allocate("a", 4).status().code(), Code::kInvalidArgument) << "names are unique";
  EXPECT_EQ(context->Write(a, 10, "abc").code(), Code::kInvalidArgument);
  EXPECT_EQ(context->Read(99).status().code(), Code::kInvalidArgument);
  CORE_ASSERT_OK_AND_ASSIGN(BufferId y, context->Allocate("y", 4));
  Status s = context->Linear(a, a, a, y, 4, 4, 4, false);
  EXPECT_EQ(s.code(), Code::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("holds 12 bytes, needs 64"));
}

TEST_P(GpuContextTest, DigestSeesEveryByteAndItsPlace) {
  SKIP_WITHOUT_DEVICE(GetParam());
  auto context = OpenOrSkip(GetParam());
  ASSERT_NE(context, nullptr);
  std::string bytes(1001, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  CORE_ASSERT_OK_AND_ASSIGN(BufferId b, context->Allocate("b", bytes.size()));
  CORE_ASSERT_OK(context->Write(b, 0, bytes));
  CORE_ASSERT_OK_AND_ASSIGN(std::uint64_t d0, context->Digest(b));
  CORE_ASSERT_OK_AND_ASSIGN(std::uint64_t again, context->Digest(b));
  EXPECT_EQ(d0, again);
  CORE_ASSERT_OK(context->Write(b, 1000, std::string(1, static_cast<char>(bytes[1000] ^ 1))));  // the tail
  CORE_ASSERT_OK_AND_ASSIGN(std::uint64_t tail_flipped, context->Digest(b));
  EXPECT_NE(tail_flipped, d0);
  std::string swapped = bytes;
  std::swap_ranges(swapped.begin(), swapped.begin() + 8, swapped.begin() + 8);
  CORE_ASSERT_OK(context->Write(b, 0, swapped));
  CORE_ASSERT_OK_AND_ASSIGN(std::uint64_t words_swapped, context->Digest(b));
  EXPECT_NE(words_swapped, d0);
  EXPECT_NE(words_swapped, tail_flipped);
}

TEST_P(GpuContextTest, SnapshotRestoresEveryBufferAndRefusesBadRecords) {
  SKIP_WITHOUT_DEVICE(GetParam());
  auto context = OpenOrSkip(GetParam());
  ASSERT_NE(context, nullptr);
  CORE_ASSERT_OK_AND_ASSIGN(BufferId a, context->Allocate("weights", 4096));
  CORE_ASSERT_OK_AND_ASSIGN(BufferId b, context->Allocate("bias", 3));
  CORE_ASSERT_OK(context->Write(a, 0, std::string(4096, 'w')));
  CORE_ASSERT_OK(context->Write(b, 0, "xyz"));
  CORE_ASSERT_OK_AND_ASSIGN(EngineSnapshot taken, context->Snapshot());
  CORE_ASSERT_OK(context->Write(a, 0, std::string(4096, 'z')));  // after the snapshot: not in it
  CORE_ASSERT_OK(context->Write(b, 0, "abc"));
  CORE_ASSERT_OK_AND_ASSIGN(std::string snapshot, taken.Bytes());  // encoded only now
  EXPECT_EQ(snapshot.size(), taken.size());
  EXPECT_TRUE(taken.Bytes().value() == snapshot) << "written again (a store's retry): the same bytes";

  std::string flipped = snapshot;
  flipped[100] ^= 1;  // a byte of weights'
  std::string wrong_version = snapshot;
  wrong_version[4] = 9;
  for (const std::string& bad : {snapshot.substr(0, 30), flipped, std::string("LSGX") + snapshot.substr(4)})
    EXPECT_EQ(context->Restore(bad).code(), Code::kCorruption);
  EXPECT_EQ(context->Restore(wrong_version).code(), Code::kFailedPrecondition);
  EXPECT_EQ(context->GetStats().corrupt_snapshots, 4u);
  CORE_ASSERT_OK_AND_ASSIGN(std::string untouched, context->Read(b));
  EXPECT_EQ(untouched, "abc") << "a refused record changes nothing";

  CORE_ASSERT_OK(context->Restore(snapshot));
  CORE_ASSERT_OK_AND_ASSIGN(std::string wa, context->Read(a));
  CORE_ASSERT_OK_AND_ASSIGN(std::string wb, context->Read(b));
  EXPECT_EQ(wa, std::string(4096, 'w'));
  EXPECT_EQ(wb, "xyz");

  auto other = OpenOrSkip(GetParam());
  ASSERT_NE(other, nullptr);
  CORE_ASSERT_OK(other->Allocate("weights", 4095).status());
  Status s = other->Restore(snapshot);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("'weights'"));
}

// A snapshot holds its own host copies until it is gone (stored, or
// dropped): one taken while an earlier lives gets a second set, and a
// gone one's set is reused.
TEST_P(GpuContextTest, EachLiveSnapshotHoldsItsOwnCopiesAndAGoneOnesAreReused) {
  SKIP_WITHOUT_DEVICE(GetParam());
  auto context = OpenOrSkip(GetParam());
  ASSERT_NE(context, nullptr);
  CORE_ASSERT_OK_AND_ASSIGN(BufferId a, context->Allocate("state", 1000));
  CORE_ASSERT_OK(context->Write(a, 0, std::string(1000, '1')));
  std::string one, two;
  {
    CORE_ASSERT_OK_AND_ASSIGN(EngineSnapshot first, context->Snapshot());
    EXPECT_EQ(context->GetStats().snapshot_host_bytes, 1000u);
    CORE_ASSERT_OK(context->Write(a, 0, std::string(1000, '2')));
    CORE_ASSERT_OK_AND_ASSIGN(EngineSnapshot second, context->Snapshot());
    EXPECT_EQ(context->GetStats().snapshot_host_bytes, 2000u) << "the first still holds its set";
    CORE_ASSERT_OK(context->Write(a, 0, std::string(1000, '3')));  // in neither
    CORE_ASSERT_OK_AND_ASSIGN(two, second.Bytes());
    CORE_ASSERT_OK_AND_ASSIGN(one, first.Bytes());
  }
  for (auto [record, digit] : {std::pair{&one, '1'}, std::pair{&two, '2'}}) {
    CORE_ASSERT_OK(context->Restore(*record));
    CORE_ASSERT_OK_AND_ASSIGN(std::string state, context->Read(a));
    EXPECT_EQ(state, std::string(1000, digit));
  }
  EXPECT_EQ(context->GetStats().snapshot_host_bytes, 1000u) << "sets no snapshot holds are freed but the newest";
  CORE_ASSERT_OK(context->Write(a, 0, std::string(1000, '3')));
  CORE_ASSERT_OK_AND_ASSIGN(EngineSnapshot third, context->Snapshot());
  EXPECT_EQ(context->GetStats().snapshot_host_bytes, 1000u) << "the newest set, reused";
  CORE_ASSERT_OK_AND_ASSIGN(std::string three, third.Bytes());
  CORE_ASSERT_OK(context->Restore(three));
  EXPECT_EQ(context->Read(a).value(), std::string(1000, '3'));

  // A snapshot outlives its context: its set and the device stay until it is gone.
  CORE_ASSERT_OK(context->Write(a, 0, std::string(1000, '4')));
  CORE_ASSERT_OK_AND_ASSIGN(EngineSnapshot orphan, context->Snapshot());
  context.reset();
  CORE_ASSERT_OK_AND_ASSIGN(std::string four, orphan.Bytes());
  EXPECT_EQ(four.substr(four.size() - 8 - 1000, 1000), std::string(1000, '4'));
}

// Hands a snapshot out in parts of a chosen size, as a recovering Worker
// does (in parts of MiBs) -- nothing else of a Worker.
class SnapshotInParts final : public Worker {
 public:
  SnapshotInParts(std::string record, std::size_t part) : record_(std::move(record)), part_(part) {}
  std::optional<std::uint64_t> restored_snapshot_bytes() const override { return record_.size(); }
  Status ReadRestoredSnapshot(const std::function<Status(std::string_view)>& sink) override {
    for (std::size_t at = 0; at < record_.size(); at += part_)
      if (Status s = sink(std::string_view(record_).substr(at, part_)); !s.ok()) return s;
    return Status::OK();
  }

  Result<TaskId> Submit(WorkerId, std::string_view) override { return Unused(); }
  Result<Delivery> Receive(std::string_view) override { return Unused(); }
  Result<Delivery> ReceiveFrom(WorkerId, std::string_view) override { return Unused(); }
  Result<std::optional<Task>> NextTask() override { return Unused(); }
  Result<std::uint64_t> Random() override { return Unused(); }
  Result<std::int64_t> Now() override { return Unused(); }
  Result<std::string> Choose(const std::function<std::string()>&) override { return Unused(); }
  std::vector<Frame> TakeFrames() override { return {}; }
  void Tick() override {}
  Status Checkpoint(EngineSnapshot) override { return Unused(); }
  void PeerDown(WorkerId) override {}
  Result<std::size_t> Flush() override { return Unused(); }
  Status Sync(std::int64_t) override { return Unused(); }
  bool recovering() const override { return true; }
  WorkerId id() const override { return 0; }
  Epoch epoch() const override { return 1; }
  Status health() const override { return Status::OK(); }
  Metrics GetMetrics() const override { return {}; }

 private:
  static Status Unused() { return Status(Code::kInternal, "not part of this fake"); }
  std::string record_;
  std::size_t part_;
};

// The CPU path, whose copies fail on demand, as a device that is lost does.
class LosableDevice final : public Device {
 public:
  bool lost = false;

  Backend backend() const override { return cpu_->backend(); }
  std::string name() const override { return "losable cpu"; }
  void* stream() override { return nullptr; }
  Result<void*> Allocate(std::size_t bytes) override { return cpu_->Allocate(bytes); }
  void Free(void* p) override { cpu_->Free(p); }
  Result<void*> AllocateHost(std::size_t bytes) override { return cpu_->AllocateHost(bytes); }
  void FreeHost(void* p) override { cpu_->FreeHost(p); }
  Status CopyIn(void* dst, const void* src, std::size_t bytes) override {
    return lost ? Lost() : cpu_->CopyIn(dst, src, bytes);
  }
  Status CopyOut(void* dst, const void* src, std::size_t bytes) override { return cpu_->CopyOut(dst, src, bytes); }
  Status BeginCopyOut(void* dst, const void* src, std::size_t bytes) override {
    return cpu_->BeginCopyOut(dst, src, bytes);
  }
  Status WaitCopies() override { return lost ? Lost() : cpu_->WaitCopies(); }
  Status Linear(const float*, const float*, const float*, float*, std::size_t, std::size_t, std::size_t,
                bool) override {
    return Lost();
  }
  Status LinearBackward(const float*, const float*, const float*, float*, float*, float*, std::size_t, std::size_t,
                        std::size_t) override {
    return Lost();
  }
  Status ReluBackward(const float*, float*, std::size_t) override { return Lost(); }
  Status Axpby(float, const float*, float, float*, std::size_t) override { return Lost(); }
  Status FillUniform(float*, std::size_t, std::uint64_t, std::uint64_t) override { return Lost(); }
  Result<std::uint64_t> Digest(const void* p, std::size_t bytes) override { return cpu_->Digest(p, bytes); }
  Status ScatterAdd(const float*, const std::uint32_t*, std::size_t, float*, std::size_t) override { return Lost(); }
  Result<std::vector<std::uint32_t>> Race(float*, std::size_t, std::span<const AffineUpdate>) override {
    return Lost();
  }
  Status ApplyInOrder(float*, std::size_t, std::span<const AffineUpdate>, std::span<const std::uint32_t>) override {
    return Lost();
  }
  Status Synchronize() override { return lost ? Lost() : Status::OK(); }

 private:
  static Status Lost() { return Status(Code::kIOError, "device lost"); }
  std::unique_ptr<Device> cpu_ = MakeCpuDevice();
};

// A device that fails while a snapshot is restored or written is the
// device's error, reported as such: not a refused (and counted) snapshot.
TEST(GpuDeviceLost, ACopyThatFailsIsTheDevicesErrorNotABadSnapshot) {
  auto owned = std::make_unique<LosableDevice>();
  LosableDevice& device = *owned;
  ContextImpl context(std::move(owned), GpuBreakage::kNone);
  CORE_ASSERT_OK_AND_ASSIGN(BufferId a, context.Allocate("state", 100));
  CORE_ASSERT_OK(context.Write(a, 0, std::string(100, 's')));
  CORE_ASSERT_OK_AND_ASSIGN(EngineSnapshot taken, context.Snapshot());
  CORE_ASSERT_OK_AND_ASSIGN(std::string record, taken.Bytes());

  device.lost = true;
  Status whole = context.Restore(record);
  EXPECT_EQ(whole.code(), Code::kIOError) << whole.ToString();
  SnapshotInParts worker(record, 7);
  Status streamed = context.RestoreFrom(worker);
  EXPECT_EQ(streamed.code(), Code::kIOError) << streamed.ToString();
  EXPECT_THAT(std::string(streamed.message()), ::testing::Not(HasSubstr("refused")));
  CORE_ASSERT_OK_AND_ASSIGN(EngineSnapshot unwritable, context.Snapshot());
  Status written = unwritable.Bytes().status();
  EXPECT_EQ(written.code(), Code::kIOError) << written.ToString();
  EXPECT_THAT(std::string(written.message()), HasSubstr("gpu snapshot"));
  EXPECT_EQ(context.GetStats().corrupt_snapshots, 0u);
  EXPECT_EQ(context.GetStats().restores, 0u);

  device.lost = false;
  CORE_ASSERT_OK(context.RestoreFrom(worker));
  EXPECT_EQ(context.GetStats().restores, 1u);
}

// Streamed in parts of any size -- the table split anywhere -- a snapshot
// restores the same bytes; a bad table or size is refused before any buffer
// changes; bad data is caught by the digest at the end.
TEST_P(GpuContextTest, ASnapshotStreamedInPartsOfAnySizeRestoresOrIsRefused) {
  SKIP_WITHOUT_DEVICE(GetParam());
  auto context = OpenOrSkip(GetParam());
  ASSERT_NE(context, nullptr);
  CORE_ASSERT_OK_AND_ASSIGN(BufferId a, context->Allocate("weights", 4096));
  CORE_ASSERT_OK_AND_ASSIGN(BufferId b, context->Allocate("bias", 3));
  CORE_ASSERT_OK_AND_ASSIGN(BufferId empty, context->Allocate("empty", 0));
  std::string weights(4096, '\0');
  for (std::size_t i = 0; i < weights.size(); ++i) weights[i] = static_cast<char>(i * 131 + 7);
  CORE_ASSERT_OK(context->Write(a, 0, weights));
  CORE_ASSERT_OK(context->Write(b, 0, "xyz"));
  CORE_ASSERT_OK_AND_ASSIGN(std::string snapshot, context->Snapshot().value().Bytes());
  const auto scramble = [&] {
    CORE_ASSERT_OK(context->Write(a, 0, std::string(4096, 'z')));
    CORE_ASSERT_OK(context->Write(b, 0, "abc"));
  };
  for (std::size_t part : {std::size_t{1}, std::size_t{5}, std::size_t{13}, std::size_t{4096}, snapshot.size()}) {
    scramble();
    SnapshotInParts worker(snapshot, part);
    CORE_ASSERT_OK(context->RestoreFrom(worker));
    CORE_ASSERT_OK_AND_ASSIGN(std::string wa, context->Read(a));
    CORE_ASSERT_OK_AND_ASSIGN(std::string wb, context->Read(b));
    EXPECT_TRUE(wa == weights) << "parts of " << part;
    EXPECT_EQ(wb, "xyz") << "parts of " << part;
  }
  (void)empty;
  EXPECT_EQ(context->GetStats().restores, 5u);

  scramble();
  const std::uint64_t refused_before = context->GetStats().corrupt_snapshots;
  std::string wrong_size = snapshot;
  wrong_size[23] ^= 1;  // the low byte of "weights"' size in the table
  std::string extra = snapshot + "!";
  for (const std::string& bad : {wrong_size, extra, snapshot.substr(0, snapshot.size() - 9)}) {
    SnapshotInParts worker(bad, 7);
    EXPECT_FALSE(context->RestoreFrom(worker).ok());
    CORE_ASSERT_OK_AND_ASSIGN(std::string untouched, context->Read(b));
    EXPECT_EQ(untouched, "abc") << "refused before any buffer changed";
  }
  std::string flipped_data = snapshot;
  flipped_data[snapshot.size() - 20] ^= 1;  // a byte of "bias" or "weights"
  SnapshotInParts worker(flipped_data, 64);
  Status s = context->RestoreFrom(worker);
  EXPECT_EQ(s.code(), Code::kCorruption) << s.ToString();
  EXPECT_THAT(std::string(s.message()), HasSubstr("digest mismatch"));
  EXPECT_EQ(context->GetStats().corrupt_snapshots, refused_before + 4);
}

INSTANTIATE_TEST_SUITE_P(Backends, GpuContextTest, ::testing::Values(Backend::kCpu, Backend::kCuda),
                         [](const auto& backend) { return std::string(BackendName(backend.param)); });

TEST(GpuContext, OpenRefusesBadOptionsAndExplainsAMissingDevice) {
  ContextOptions options;
  options.streams = 0;
  EXPECT_EQ(Context::Open(options).status().code(), Code::kInvalidArgument);
  const DeviceInfo info = ProbeCuda();
  if (info.present) GTEST_SKIP() << "a CUDA device is present: " << info.name;
  EXPECT_FALSE(info.why_absent.empty());
  ContextOptions cuda;
  cuda.backend = Backend::kCuda;
  auto opened = Context::Open(cuda);
  EXPECT_EQ(opened.status().code(), Code::kUnavailable);
  EXPECT_THAT(std::string(opened.status().message()), HasSubstr(info.why_absent));
  auto fallback = Context::Open(ContextOptions{});
  ASSERT_TRUE(fallback.ok());
  EXPECT_EQ(fallback.value()->backend(), Backend::kCpu) << "no device: the CPU path";
}

// --- CPU and CUDA compute the same bits ----------------------------------------

TEST(GpuBackends, CudaComputesTheCpuPathsBits) {
  SKIP_WITHOUT_DEVICE(Backend::kCuda);
  constexpr std::size_t kRows = 33, kIn = 100, kOut = 17;
  std::mt19937 gen(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto random_floats = [&](std::size_t n) {
    std::vector<float> v(n);
    for (float& f : v) f = normal(gen);
    return Floats(v);
  };
  const std::string x = random_floats(kRows * kIn), w = random_floats(kIn * kOut), b = random_floats(kOut),
                    dy = random_floats(kRows * kOut);
  // Every provided kernel on each backend; the buffers' bytes and digests.
  auto run = [&](Backend backend, std::vector<std::string>* out) {
    auto c = OpenOrSkip(backend);
    ASSERT_NE(c, nullptr);
    auto store = NewMemoryStore();
    coretest::FakeClock clock;
    WorkerOptions options = coretest::HandDrivenOptions(0, 1, &clock, nullptr);
    options.mode = Mode::kNone;
    CORE_ASSERT_OK_AND_ASSIGN(auto worker, Worker::Open(options, store.get()));
    CORE_ASSERT_OK_AND_ASSIGN(std::optional<Task> start, worker->NextTask());
    ASSERT_TRUE(start.has_value());
    std::vector<BufferId> ids;
    for (const auto& [name, bytes] : std::vector<std::pair<const char*, std::size_t>>{
             {"x", x.size()}, {"w", w.size()}, {"b", b.size()}, {"y", kRows * kOut * 4}, {"dy", dy.size()},
             {"dx", x.size()}, {"dw", w.size()}, {"db", b.size()}, {"u", 1001 * 4}}) {
      CORE_ASSERT_OK_AND_ASSIGN(BufferId id, c->Allocate(name, bytes));
      ids.push_back(id);
    }
    const auto [bx, bw, bb, by, bdy, bdx, bdw, bdb, bu] =
        std::array{ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6], ids[7], ids[8]};
    CORE_ASSERT_OK(c->Write(bx, 0, x));
    CORE_ASSERT_OK(c->Write(bw, 0, w));
    CORE_ASSERT_OK(c->Write(bb, 0, b));
    CORE_ASSERT_OK(c->Write(bdy, 0, dy));
    CORE_ASSERT_OK(c->Linear(bx, bw, bb, by, kRows, kIn, kOut, true));
    CORE_ASSERT_OK(c->ReluBackward(by, bdy, kRows * kOut));
    CORE_ASSERT_OK(c->LinearBackward(bx, bw, bdy, bdx, bdw, bdb, kRows, kIn, kOut));
    CORE_ASSERT_OK(c->Axpby(-0.01f, bdw, 1.0f, bw, kIn * kOut));
    TaskScope scope(*c, *worker, *start);
    CORE_ASSERT_OK(scope.FillUniform(bu, 500));
    const BufferId tail[] = {bu};
    CORE_ASSERT_OK(scope.RunNondeterministic(tail, [&] { return Status::OK(); }));
    CORE_ASSERT_OK(scope.FillUniform(bu, 1001));  // continues the stream
    CORE_ASSERT_OK(scope.Finish());
    for (BufferId id : ids) {
      CORE_ASSERT_OK_AND_ASSIGN(std::string bytes, c->Read(id));
      CORE_ASSERT_OK_AND_ASSIGN(std::uint64_t digest, c->Digest(id));
      out->push_back(bytes);
      out->push_back(std::to_string(digest));
    }
  };
  std::vector<std::string> cpu, cuda;
  run(Backend::kCpu, &cpu);
  run(Backend::kCuda, &cuda);
  ASSERT_EQ(cpu.size(), cuda.size());
  const char* names[] = {"x", "w", "b", "y", "dy", "dx", "dw", "db", "u"};
  for (std::size_t i = 0; i < cpu.size(); ++i)
    EXPECT_TRUE(cpu[i] == cuda[i]) << (i % 2 ? "the digest of " : "the bytes of ") << names[i / 2]
                                   << " differ between the CPU path and CUDA";
}

// --- a worker's GPU work, crashed and replayed ------------------------------

// One worker's GPU state and the task that drives it: every step draws
// random numbers, runs a layer (whose variant is a logged choice), scatters
// with float atomics into a histogram, and races affine updates on a state
// vector; the histogram and state carry over from step to step, so any
// unlogged nondeterminism shows in the final digest.
struct GpuApp {
  static constexpr std::size_t kValues = 4096, kBins = 8, kState = 1024, kRows = 16, kIn = 32, kOut = 8;

  explicit GpuApp(Context& c) : context(c) {}

  Status Setup() {
    auto alloc = [&](const char* name, std::size_t bytes, BufferId* id) {
      auto r = context.Allocate(name, bytes);
      if (r.ok()) *id = r.value();
      return r.status();
    };
    for (Status s : {alloc("noise", kValues * 4, &noise), alloc("index", kValues * 4, &index),
                     alloc("hist", kBins * 4, &hist), alloc("state", kState * 4, &state), alloc("x", kRows * kIn * 4, &x),
                     alloc("w", kIn * kOut * 4, &w), alloc("b", kOut * 4, &b), alloc("y", kRows * kOut * 4, &y)})
      if (!s.ok()) return s;
    std::vector<std::uint32_t> bins(kValues);
    for (std::size_t i = 0; i < kValues; ++i) bins[i] = static_cast<std::uint32_t>(i % kBins);
    std::vector<float> weights(kIn * kOut);
    for (std::size_t i = 0; i < weights.size(); ++i) weights[i] = static_cast<float>(i % 13) / 7.0f - 0.9f;
    if (Status s = context.Write(index, 0, std::string(reinterpret_cast<const char*>(bins.data()), kValues * 4)); !s.ok())
      return s;
    if (Status s = context.Write(w, 0, Floats(weights)); !s.ok()) return s;
    return context.Write(state, 0, Floats(std::vector<float>(kState, 1.0f)));
  }

  Status Step(Worker& worker, const Task& task, OnDivergence policy) {
    TaskScope scope(context, worker, task);
    for (Status s : {scope.FillUniform(noise, kValues), scope.FillUniform(x, kRows * kIn)})
      if (!s.ok()) return s;
    auto algorithm = scope.ChooseAlgorithm([] { return std::random_device{}() % 2 ? "relu" : "linear"; });
    if (!algorithm.ok()) return algorithm.status();
    if (Status s = context.Linear(x, w, b, y, kRows, kIn, kOut, algorithm.value() == "relu"); !s.ok()) return s;
    if (Status s = scope.ScatterAdd(noise, index, kValues, hist); !s.ok()) return s;
    const AffineUpdate updates[] = {{1.5f, 0.25f}, {0.5f, -1.0f}, {-1.25f, 2.0f}, {0.75f, 0.5f}};
    if (Status s = scope.RaceUpdates(state, updates); !s.ok()) return s;
    const BufferId outputs[] = {state, hist, y};
    return scope.Finish(outputs, policy);
  }

  Result<std::uint64_t> StateDigest() {
    std::uint64_t digest = 0;
    for (BufferId id : {state, hist, y}) {
      auto d = context.Digest(id);
      if (!d.ok()) return d.status();
      digest = digest * 31 + d.value();
    }
    return digest;
  }

  Context& context;
  BufferId noise = 0, index = 0, hist = 0, state = 0, x = 0, w = 0, b = 0, y = 0;
};

class GpuReplayTest : public ::testing::TestWithParam<Backend> {
 protected:
  static constexpr int kSteps = 6;

  WorkerOptions Options() { return coretest::HandDrivenOptions(0, 1, &clock_, nullptr); }

  // Runs the worker until the chain of kSteps tasks is done, delivering its
  // frames to itself and flushing after every task; checkpoints GPU state
  // after step `checkpoint_after` if set.
  Status Drive(Worker& worker, GpuApp& app, OnDivergence policy, int checkpoint_after = -1) {
    for (int guard = 0; guard < 1000; ++guard) {
      auto task = worker.NextTask();
      if (!task.ok()) return task.status();
      if (!task.value()) {
        if (!worker.recovering()) return Status::OK();
        worker.Tick();
        continue;
      }
      const Task& t = *task.value();
      const int step = t.start ? 0 : std::stoi(t.payload);
      if (Status s = app.Step(worker, t, policy); !s.ok()) return s;
      if (step + 1 < kSteps)
        if (auto id = worker.Submit(0, std::to_string(step + 1)); !id.ok()) return id.status();
      if (step == checkpoint_after) {
        auto snapshot = app.context.Snapshot();
        if (!snapshot.ok()) return snapshot.status();
        if (Status s = worker.Checkpoint(std::move(snapshot).value()); !s.ok()) return s;
      }
      for (Frame& f : worker.TakeFrames())
        if (auto d = worker.Receive(f.bytes); !d.ok()) return d.status();
      if (auto flushed = worker.Flush(); !flushed.ok()) return flushed.status();
    }
    return Status(Code::kInternal, "the task chain did not end");
  }

  // The live run's final state digest, and the replay's (and its status)
  // after the worker crashed and restarted on the same store.
  struct Outcome {
    std::uint64_t live = 0, replayed = 0;
    Status replay;
    Stats stats;
  };
  void LiveCrashReplay(GpuBreakage breakage, OnDivergence policy, int checkpoint_after, Outcome* outcome) {
    auto store = NewMemoryStore();
    {
      auto context = OpenOrSkip(GetParam(), breakage);
      ASSERT_NE(context, nullptr);
      GpuApp app(*context);
      CORE_ASSERT_OK(app.Setup());
      CORE_ASSERT_OK_AND_ASSIGN(auto worker, Worker::Open(Options(), store.get()));
      CORE_ASSERT_OK(Drive(*worker, app, policy, checkpoint_after));
      CORE_ASSERT_OK_AND_ASSIGN(outcome->live, app.StateDigest());
    }
    // The crash: the worker, its context and all device memory are gone.
    auto context = OpenOrSkip(GetParam(), breakage);
    ASSERT_NE(context, nullptr);
    GpuApp app(*context);
    CORE_ASSERT_OK(app.Setup());
    CORE_ASSERT_OK_AND_ASSIGN(auto worker, Worker::Open(Options(), store.get()));
    ASSERT_TRUE(worker->recovering());
    if (worker->restored_snapshot_bytes()) CORE_ASSERT_OK(context->RestoreFrom(*worker));
    outcome->replay = Drive(*worker, app, policy);
    if (outcome->replay.ok()) {
      CORE_ASSERT_OK_AND_ASSIGN(outcome->replayed, app.StateDigest());
    }
    outcome->stats = context->GetStats();
  }

  coretest::FakeClock clock_;
};

TEST_P(GpuReplayTest, ReplayRebuildsTheDeviceStateBitForBit) {
  SKIP_WITHOUT_DEVICE(GetParam());
  Outcome o;
  LiveCrashReplay(GpuBreakage::kNone, OnDivergence::kFail, -1, &o);
  CORE_ASSERT_OK(o.replay);
  EXPECT_EQ(o.replayed, o.live);
  EXPECT_EQ(o.stats.tasks, static_cast<std::uint64_t>(kSteps));
  EXPECT_EQ(o.stats.digests, static_cast<std::uint64_t>(kSteps)) << "every replayed task was checked";
  EXPECT_EQ(o.stats.divergences, 0u);
  EXPECT_EQ(o.stats.restored_output_bytes, kSteps * GpuApp::kBins * 4) << "racy outputs restored, not recomputed";
}

TEST_P(GpuReplayTest, ReplayFromACheckpointRestoresDeviceMemoryThenTheLog) {
  SKIP_WITHOUT_DEVICE(GetParam());
  Outcome o;
  LiveCrashReplay(GpuBreakage::kNone, OnDivergence::kFail, /*checkpoint_after=*/2, &o);
  CORE_ASSERT_OK(o.replay);
  EXPECT_EQ(o.replayed, o.live);
  EXPECT_EQ(o.stats.restores, 1u);
  EXPECT_EQ(o.stats.tasks, static_cast<std::uint64_t>(kSteps - 3)) << "only the tasks after the checkpoint";
}

// Negative controls: with racy outputs (or launch order) unlogged, the replay
// recomputes them and the digest check must catch the difference.
TEST_P(GpuReplayTest, UnloggedAtomicsOutputIsReportedAsDiverged) {
  SKIP_WITHOUT_DEVICE(GetParam());
  Outcome o;
  LiveCrashReplay(GpuBreakage::kNoOutputLog, OnDivergence::kFail, -1, &o);
  EXPECT_EQ(o.replay.code(), Code::kDiverged) << o.replay.ToString();
  EXPECT_THAT(std::string(o.replay.message()), HasSubstr("differs from the logged one"));
  EXPECT_EQ(o.stats.divergences, 1u) << "the first diverged task fails";

  Outcome reported;
  LiveCrashReplay(GpuBreakage::kNoOutputLog, OnDivergence::kReport, -1, &reported);
  CORE_ASSERT_OK(reported.replay);
  EXPECT_GE(reported.stats.divergences, 1u) << "accepted, but counted";
  EXPECT_NE(reported.replayed, reported.live);
}

// A device may run raced launches in launch order most times, and replay in
// launch order is then right by luck: so the control runs many times, and
// every run whose replay came out different must have been caught (and
// only those). The CPU path's scheduler takes another order nearly always.
TEST_P(GpuReplayTest, UnloggedLaunchOrderIsReportedAsDiverged) {
  SKIP_WITHOUT_DEVICE(GetParam());
  if (GetParam() == Backend::kCpu) {
    Outcome o;
    LiveCrashReplay(GpuBreakage::kNoOrderLog, OnDivergence::kFail, -1, &o);
    EXPECT_EQ(o.replay.code(), Code::kDiverged) << o.replay.ToString();
  }
  const int runs = GetParam() == Backend::kCuda ? 50 : 3;
  int caught = 0;
  for (int run = 0; run < runs; ++run) {
    Outcome o;
    LiveCrashReplay(GpuBreakage::kNoOrderLog, OnDivergence::kReport, -1, &o);
    if (HasFatalFailure()) return;
    ASSERT_TRUE(o.replay.ok()) << o.replay.ToString();
    EXPECT_EQ(o.stats.divergences > 0, o.replayed != o.live)
        << "run " << run << ": a replay that came out different went uncaught, or a caught one was the same";
    caught += o.stats.divergences > 0 ? 1 : 0;
  }
  std::printf("%d of %d runs raced out of launch order; the replay check caught each\n", caught, runs);
  RecordProperty("runs_out_of_launch_order", caught);
  if (GetParam() == Backend::kCpu) {
    EXPECT_EQ(caught, runs) << "the CPU path's scheduler shuffles every race";
  }
  if (caught == 0)
    GTEST_SKIP() << "in all " << runs << " runs the device ran the raced launches in launch order: "
                 << "the control could not be exercised on it";
}

INSTANTIATE_TEST_SUITE_P(Backends, GpuReplayTest, ::testing::Values(Backend::kCpu, Backend::kCuda),
                         [](const auto& backend) { return std::string(BackendName(backend.param)); });

}  // namespace
}  // namespace lstash::gpu
