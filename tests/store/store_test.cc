// Tests of the Store contract (store.h), run against both implementations,
// and of what only the RocksDB store promises: durability across reopen and
// refusing stores it cannot read.

#include "scratch_dir.h"
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <lstash/remote_store.h>
#include <lstash/store.h>
#include <rocksdb/db.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "store/checkpoint_file.h"
#include "store/rocksdb_layout.h"
#include "wire/format.h"

namespace lstash {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

#define STORE_ASSERT_OK(expr)                                              \
  do {                                                                     \
    ::lstash::Status store_test_status_ = (expr);                          \
    ASSERT_TRUE(store_test_status_.ok()) << store_test_status_.ToString(); \
  } while (0)

#define STORE_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  STORE_ASSERT_OK_AND_ASSIGN_IMPL_(LSTASH_CONCAT_(store_test_result_, __LINE__), lhs, expr)
#define STORE_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                     \
  ASSERT_TRUE(tmp.ok()) << tmp.status().ToString();      \
  lhs = std::move(tmp).value()

using testing_support::ScratchDir;

// Distinct bytes per (worker, index), so a record read from the wrong place
// or a stale copy shows.
std::string EntryBytes(WorkerId worker, LogIndex index, std::string_view tag = "") {
  std::string bytes = "entry w" + std::to_string(worker) + " #" + std::to_string(index);
  bytes.append(tag);
  bytes.push_back('\0');  // binary-safe
  return bytes;
}

std::vector<LogRecord> Records(WorkerId worker, LogIndex first, LogIndex last) {
  std::vector<LogRecord> records;
  for (LogIndex i = first; i <= last; ++i) records.push_back(LogRecord{i, EntryBytes(worker, i)});
  return records;
}

// (index, bytes) pairs, for readable comparisons.
std::vector<std::pair<LogIndex, std::string>> Flatten(const std::vector<LogRecord>& records) {
  std::vector<std::pair<LogIndex, std::string>> out;
  for (const LogRecord& r : records) out.emplace_back(r.index, r.bytes);
  return out;
}

std::vector<std::pair<LogIndex, std::string>> Expected(WorkerId worker, LogIndex first, LogIndex last) {
  return Flatten(Records(worker, first, last));
}

std::vector<std::pair<Epoch, LogIndex>> Flatten(const std::vector<EpochRecord>& epochs) {
  std::vector<std::pair<Epoch, LogIndex>> out;
  for (const EpochRecord& e : epochs) out.emplace_back(e.epoch, e.start);
  return out;
}

std::vector<LogRecord> ReadAll(Store* store, WorkerId worker, LogIndex from = 0) {
  std::vector<LogRecord> out;
  Status s = store->ReadLog(worker, from, &out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

LogIndex Committed(Store* store, WorkerId worker) {
  WorkerId workers[] = {worker};
  LogIndex out[] = {~LogIndex{0}};
  Status s = store->ReadCommitted(workers, out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out[0];
}

// ---------------------------------------------------------------------------
// The shared contract, against both implementations.

struct MemoryStoreFactory {
  static Result<std::unique_ptr<Store>> Make(const std::string& /*dir*/) { return NewMemoryStore(); }
};

struct RocksDbStoreFactory {
  static Result<std::unique_ptr<Store>> Make(const std::string& dir) { return OpenRocksDbStore(dir + "/db"); }
};

// The remote store (lib/storeserver): `Shards` in-process store servers on
// the scratch directory, and a client of them. The returned Store owns both.
template <int Shards>
struct RemoteStoreFactory {
  class Owner : public StoreWrapper {
   public:
    Owner(std::vector<std::unique_ptr<StoreServer>> servers, std::unique_ptr<Store> client)
        : StoreWrapper(client.get()), servers_(std::move(servers)), client_(std::move(client)) {}

   private:
    std::vector<std::unique_ptr<StoreServer>> servers_;  // destroyed after the client
    std::unique_ptr<Store> client_;
  };

  static Result<std::unique_ptr<Store>> Make(const std::string& dir) {
    std::vector<std::unique_ptr<StoreServer>> servers;
    RemoteStoreOptions options;
    for (int k = 0; k < Shards; ++k) {
      StoreServerOptions server_options;
      server_options.listen = "tcp://127.0.0.1:0";
      server_options.data_dir = dir + "/shard" + std::to_string(k);
      LSTASH_ASSIGN_OR_RETURN(std::unique_ptr<StoreServer> server, StoreServer::Start(server_options));
      options.shards.push_back(server->endpoint());
      servers.push_back(std::move(server));
    }
    LSTASH_ASSIGN_OR_RETURN(std::unique_ptr<Store> client, OpenRemoteStore(options));
    return std::unique_ptr<Store>(std::make_unique<Owner>(std::move(servers), std::move(client)));
  }
};

class FactoryNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    if (std::is_same_v<T, MemoryStoreFactory>) return "Memory";
    if (std::is_same_v<T, RocksDbStoreFactory>) return "RocksDb";
    if (std::is_same_v<T, RemoteStoreFactory<1>>) return "Remote";
    return "Remote2Shards";
  }
};

template <typename Factory>
class StoreTest : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    STORE_ASSERT_OK_AND_ASSIGN(store_, Factory::Make(dir_.path()));
  }

  Epoch Begin(WorkerId worker) {
    Result<Epoch> epoch = store_->BeginIncarnation(worker);
    EXPECT_TRUE(epoch.ok()) << epoch.status().ToString();
    return epoch.ok() ? *epoch : 0;
  }

  ScratchDir dir_;
  std::unique_ptr<Store> store_;
};

using Factories =
    testing::Types<MemoryStoreFactory, RocksDbStoreFactory, RemoteStoreFactory<1>, RemoteStoreFactory<2>>;
TYPED_TEST_SUITE(StoreTest, Factories, FactoryNames);

TYPED_TEST(StoreTest, FirstEpochIsOneAndEachIncarnationTakesTheNext) {
  EXPECT_EQ(this->Begin(7), 1u);
  EXPECT_EQ(this->Begin(7), 2u);
  EXPECT_EQ(this->Begin(7), 3u);
  EXPECT_EQ(this->Begin(8), 1u);  // per worker
}

TYPED_TEST(StoreTest, EpochsListsIncarnationsOldestFirstWithTheirStarts) {
  Store* store = this->store_.get();
  STORE_ASSERT_OK_AND_ASSIGN(auto none, store->Epochs(5));
  EXPECT_THAT(none, IsEmpty());

  Epoch e1 = this->Begin(5);
  STORE_ASSERT_OK_AND_ASSIGN(auto one, store->Epochs(5));
  EXPECT_THAT(Flatten(one), ElementsAre(std::pair<Epoch, LogIndex>{1, 0}));

  STORE_ASSERT_OK(store->SetEpochStart(5, e1, 10));
  Epoch e2 = this->Begin(5);
  STORE_ASSERT_OK(store->SetEpochStart(5, e2, 25));
  STORE_ASSERT_OK(store->SetEpochStart(5, e2, 26));  // the live incarnation may move its start
  this->Begin(5);
  STORE_ASSERT_OK_AND_ASSIGN(auto three, store->Epochs(5));
  EXPECT_THAT(Flatten(three), ElementsAre(std::pair<Epoch, LogIndex>{1, 10}, std::pair<Epoch, LogIndex>{2, 26},
                                          std::pair<Epoch, LogIndex>{3, 0}));
  STORE_ASSERT_OK_AND_ASSIGN(auto other, store->Epochs(6));
  EXPECT_THAT(other, IsEmpty());
}

TYPED_TEST(StoreTest, OlderIncarnationIsFencedFromEveryWrite) {
  Store* store = this->store_.get();
  Epoch e1 = this->Begin(3);
  STORE_ASSERT_OK(store->Append(3, e1, Records(3, 1, 2), {}));
  Epoch e2 = this->Begin(3);
  ASSERT_EQ(e2, 2u);

  Status s = store->Append(3, e1, Records(3, 3, 3), {});
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_THAT(std::string(s.message()), HasSubstr("worker 3 incarnation 1 is fenced (current incarnation 2)"));
  s = store->SetEpochStart(3, e1, 5);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  s = store->PutCheckpoint(3, e1, 1, "zombie checkpoint");
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();

  // Nothing the zombie tried took effect.
  EXPECT_EQ(Committed(store, 3), 2u);
  EXPECT_THAT(Flatten(ReadAll(store, 3)), Expected(3, 1, 2));
  STORE_ASSERT_OK_AND_ASSIGN(auto epochs, store->Epochs(3));
  EXPECT_THAT(Flatten(epochs), ElementsAre(std::pair<Epoch, LogIndex>{1, 0}, std::pair<Epoch, LogIndex>{2, 0}));
  STORE_ASSERT_OK_AND_ASSIGN(auto checkpoint, store->LatestCheckpoint(3));
  EXPECT_FALSE(checkpoint.has_value());

  // The live incarnation writes on.
  STORE_ASSERT_OK(store->Append(3, e2, Records(3, 3, 3), {}));
  EXPECT_EQ(Committed(store, 3), 3u);
}

TYPED_TEST(StoreTest, IncarnationsNeverBegunCannotWrite) {
  Store* store = this->store_.get();
  EXPECT_EQ(store->Append(4, 1, Records(4, 1, 1), {}).code(), Code::kFailedPrecondition);
  EXPECT_EQ(store->SetEpochStart(4, 1, 1).code(), Code::kFailedPrecondition);
  EXPECT_EQ(store->PutCheckpoint(4, 1, 0, "x").code(), Code::kFailedPrecondition);

  Epoch e1 = this->Begin(4);
  Status s = store->Append(4, e1 + 1, Records(4, 1, 1), {});
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_THAT(std::string(s.message()), HasSubstr("worker 4 incarnation 2"));
  EXPECT_EQ(store->SetEpochStart(4, e1 + 1, 1).code(), Code::kFailedPrecondition);
  EXPECT_EQ(store->Append(4, 0, Records(4, 1, 1), {}).code(), Code::kFailedPrecondition);
  EXPECT_EQ(Committed(store, 4), 0u);
  EXPECT_THAT(ReadAll(store, 4), IsEmpty());
}

TYPED_TEST(StoreTest, AppendRejectsMalformedBatches) {
  Store* store = this->store_.get();
  Epoch e = this->Begin(1);
  EXPECT_EQ(store->Append(1, e, {}, {}).code(), Code::kInvalidArgument);
  EXPECT_EQ(store->Append(1, e, Records(1, 0, 2), {}).code(), Code::kInvalidArgument);
  std::vector<LogRecord> skipping = {{1, "a"}, {3, "c"}};
  EXPECT_EQ(store->Append(1, e, skipping, {}).code(), Code::kInvalidArgument);
  std::vector<LogRecord> backwards = {{2, "b"}, {1, "a"}};
  EXPECT_EQ(store->Append(1, e, backwards, {}).code(), Code::kInvalidArgument);
  EXPECT_EQ(Committed(store, 1), 0u);
  EXPECT_THAT(ReadAll(store, 1), IsEmpty());
}

TYPED_TEST(StoreTest, AppendRejectsAGapAfterTheCommittedIndex) {
  Store* store = this->store_.get();
  Epoch e = this->Begin(1);
  Status s = store->Append(1, e, Records(1, 2, 3), {});  // nothing committed yet
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();

  STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, 3), {}));
  s = store->Append(1, e, Records(1, 5, 6), {});
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_EQ(Committed(store, 1), 3u);
  EXPECT_THAT(Flatten(ReadAll(store, 1)), Expected(1, 1, 3));

  STORE_ASSERT_OK(store->Append(1, e, Records(1, 4, 6), {}));
  EXPECT_EQ(Committed(store, 1), 6u);
}

TYPED_TEST(StoreTest, AppendAcceptsOverlapAndCommittedIndexOnlyGrows) {
  Store* store = this->store_.get();
  Epoch e = this->Begin(1);
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, 5), {}));
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 3, 8), {}));
  EXPECT_EQ(Committed(store, 1), 8u);
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 2, 4), {}));  // wholly committed already
  EXPECT_EQ(Committed(store, 1), 8u);
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 8, 8), {}));
  EXPECT_EQ(Committed(store, 1), 8u);
  EXPECT_THAT(Flatten(ReadAll(store, 1)), Expected(1, 1, 8));
}

TYPED_TEST(StoreTest, ReadLogStartsAtTheGivenIndexAndStaysInTheWorkersLog) {
  Store* store = this->store_.get();
  // Workers 1, 2 and 256 have neighbouring keys; 300 entries cross a byte
  // boundary of the index.
  for (WorkerId w : {1u, 2u, 256u}) this->Begin(w);
  STORE_ASSERT_OK(store->Append(1, 1, Records(1, 1, 300), {}));
  STORE_ASSERT_OK(store->Append(2, 1, Records(2, 1, 3), {}));
  STORE_ASSERT_OK(store->Append(256, 1, Records(256, 1, 2), {}));

  EXPECT_THAT(Flatten(ReadAll(store, 1, 0)), Expected(1, 1, 300));
  EXPECT_THAT(Flatten(ReadAll(store, 1, 1)), Expected(1, 1, 300));
  EXPECT_THAT(Flatten(ReadAll(store, 1, 250)), Expected(1, 250, 300));
  EXPECT_THAT(Flatten(ReadAll(store, 1, 300)), Expected(1, 300, 300));
  EXPECT_THAT(ReadAll(store, 1, 301), IsEmpty());
  EXPECT_THAT(Flatten(ReadAll(store, 2, 2)), Expected(2, 2, 3));
  EXPECT_THAT(Flatten(ReadAll(store, 256, 0)), Expected(256, 1, 2));
  EXPECT_THAT(ReadAll(store, 3, 0), IsEmpty());  // between logs
  EXPECT_THAT(ReadAll(store, 9, 1), IsEmpty());  // never seen

  std::vector<LogRecord> out = Records(7, 1, 2);  // stale contents are replaced
  STORE_ASSERT_OK(store->ReadLog(2, 3, &out));
  EXPECT_THAT(Flatten(out), Expected(2, 3, 3));
}

TYPED_TEST(StoreTest, ReadCommittedReportsEachWorkerAndZeroForUnknown) {
  Store* store = this->store_.get();
  for (WorkerId w : {0u, 1u, 2u}) this->Begin(w);
  STORE_ASSERT_OK(store->Append(0, 1, Records(0, 1, 4), {}));
  STORE_ASSERT_OK(store->Append(2, 1, Records(2, 1, 7), {}));

  std::vector<WorkerId> workers = {2, 9, 0, 1, 2};
  std::vector<LogIndex> out(workers.size(), 123);
  STORE_ASSERT_OK(store->ReadCommitted(workers, out));
  EXPECT_EQ(out, (std::vector<LogIndex>{7, 0, 4, 0, 7}));

  std::vector<LogIndex> short_out(2);
  EXPECT_EQ(store->ReadCommitted(workers, short_out).code(), Code::kInvalidArgument);
}

TYPED_TEST(StoreTest, CheckpointDeletesTheLogUpToItsIndex) {
  Store* store = this->store_.get();
  Epoch e = this->Begin(1);
  this->Begin(2);
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, 10), {}));
  STORE_ASSERT_OK(store->Append(2, 1, Records(2, 1, 10), {}));

  STORE_ASSERT_OK(store->PutCheckpoint(1, e, 6, "snap"));
  EXPECT_THAT(Flatten(ReadAll(store, 1)), Expected(1, 7, 10));
  EXPECT_THAT(Flatten(ReadAll(store, 2)), Expected(2, 1, 10));  // other workers untouched
  EXPECT_EQ(Committed(store, 1), 10u);

  // Re-appending folded entries (as a recovering worker may) does not bring
  // them back.
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 5, 11), {}));
  EXPECT_THAT(Flatten(ReadAll(store, 1)), Expected(1, 7, 11));

  // Folding everything leaves an empty log and the committed index at `at`.
  STORE_ASSERT_OK(store->PutCheckpoint(1, e, 11, "snap2"));
  EXPECT_THAT(ReadAll(store, 1), IsEmpty());
  EXPECT_EQ(Committed(store, 1), 11u);
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 12, 12), {}));
  EXPECT_THAT(Flatten(ReadAll(store, 1)), Expected(1, 12, 12));
}

std::vector<std::tuple<WorkerId, LogIndex, Epoch, std::string>> FlattenCopies(const std::vector<LineageCopy>& copies) {
  std::vector<std::tuple<WorkerId, LogIndex, Epoch, std::string>> out;
  for (const LineageCopy& c : copies) out.emplace_back(c.owner, c.index, c.epoch, c.bytes);
  return out;
}

std::vector<LineageCopy> ReadCopiesOf(Store* store, WorkerId owner, LogIndex from = 0) {
  std::vector<LineageCopy> out;
  Status s = store->ReadCopies(owner, from, &out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

TYPED_TEST(StoreTest, LineageCopiesAreStoredWithTheAppendAndDroppedOnceTheirOwnerCommits) {
  Store* store = this->store_.get();
  Epoch e1 = this->Begin(1);
  Epoch e2 = this->Begin(2);
  // Worker 1 stores its entries with copies of worker 2's entries 3..5.
  std::vector<LineageCopy> copies = {{2, e2, 3, EntryBytes(2, 3)}, {2, e2, 4, EntryBytes(2, 4)},
                                     {2, e2, 5, EntryBytes(2, 5, "old")}};
  STORE_ASSERT_OK(store->Append(1, e1, Records(1, 1, 2), copies));
  EXPECT_THAT(FlattenCopies(ReadCopiesOf(store, 2)),
              ElementsAre(std::make_tuple(2u, 3u, e2, EntryBytes(2, 3)), std::make_tuple(2u, 4u, e2, EntryBytes(2, 4)),
                          std::make_tuple(2u, 5u, e2, EntryBytes(2, 5, "old"))));
  EXPECT_THAT(FlattenCopies(ReadCopiesOf(store, 2, 4)),
              ElementsAre(std::make_tuple(2u, 4u, e2, EntryBytes(2, 4)),
                          std::make_tuple(2u, 5u, e2, EntryBytes(2, 5, "old"))));
  EXPECT_THAT(ReadCopiesOf(store, 1), IsEmpty());
  EXPECT_THAT(ReadCopiesOf(store, 3), IsEmpty());

  // Once worker 2 commits through 4 its copies up to 4 are garbage: reads
  // from past the committed index never see them, and a checkpoint deletes
  // them.
  STORE_ASSERT_OK(store->Append(2, e2, Records(2, 1, 4), {}));
  EXPECT_THAT(FlattenCopies(ReadCopiesOf(store, 2, 5)),
              ElementsAre(std::make_tuple(2u, 5u, e2, EntryBytes(2, 5, "old"))));
  STORE_ASSERT_OK(store->PutCheckpoint(2, e2, 4, "snap"));
  EXPECT_THAT(FlattenCopies(ReadCopiesOf(store, 2)),
              ElementsAre(std::make_tuple(2u, 5u, e2, EntryBytes(2, 5, "old"))));
  // Copies of entries their owner already committed are not stored at all.
  STORE_ASSERT_OK(store->Append(1, e1, Records(1, 3, 3), std::vector<LineageCopy>{{2, e2, 2, EntryBytes(2, 2)}}));
  EXPECT_THAT(FlattenCopies(ReadCopiesOf(store, 2)),
              ElementsAre(std::make_tuple(2u, 5u, e2, EntryBytes(2, 5, "old"))));
  // Copies are part of a fenced write: an older incarnation cannot add any.
  Epoch e1b = this->Begin(1);
  EXPECT_EQ(store->Append(1, e1, Records(1, 4, 4), std::vector<LineageCopy>{{2, e2, 9, "x"}}).code(),
            Code::kFailedPrecondition);
  EXPECT_THAT(ReadCopiesOf(store, 2, 9), IsEmpty());
  STORE_ASSERT_OK(store->Append(1, e1b, Records(1, 4, 4), std::vector<LineageCopy>{{2, e2, 9, "y"}}));
  EXPECT_THAT(FlattenCopies(ReadCopiesOf(store, 2, 9)), ElementsAre(std::make_tuple(2u, 9u, e2, std::string("y"))));
}

TYPED_TEST(StoreTest, CheckpointMustBeCommittedAndNeverMovesBack) {
  Store* store = this->store_.get();
  Epoch e = this->Begin(1);
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, 5), {}));

  Status s = store->PutCheckpoint(1, e, 6, "too far");
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  STORE_ASSERT_OK(store->PutCheckpoint(1, e, 4, "at 4"));
  s = store->PutCheckpoint(1, e, 3, "back");
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  STORE_ASSERT_OK(store->PutCheckpoint(1, e, 4, "at 4 again"));

  STORE_ASSERT_OK_AND_ASSIGN(auto checkpoint, store->LatestCheckpoint(1));
  ASSERT_TRUE(checkpoint.has_value());
  EXPECT_EQ(checkpoint->at, 4u);
  EXPECT_EQ(checkpoint->bytes, "at 4 again");
  EXPECT_THAT(Flatten(ReadAll(store, 1)), Expected(1, 5, 5));
}

TYPED_TEST(StoreTest, LatestCheckpointIsNoneUntilOneIsStoredThenTheNewest) {
  Store* store = this->store_.get();
  STORE_ASSERT_OK_AND_ASSIGN(auto unknown, store->LatestCheckpoint(1));
  EXPECT_FALSE(unknown.has_value());
  Epoch e1 = this->Begin(1);
  STORE_ASSERT_OK_AND_ASSIGN(auto none, store->LatestCheckpoint(1));
  EXPECT_FALSE(none.has_value());

  STORE_ASSERT_OK(store->Append(1, e1, Records(1, 1, 3), {}));
  STORE_ASSERT_OK(store->PutCheckpoint(1, e1, 1, "first"));
  STORE_ASSERT_OK(store->PutCheckpoint(1, e1, 3, "second"));
  STORE_ASSERT_OK_AND_ASSIGN(auto second, store->LatestCheckpoint(1));
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->epoch, e1);
  EXPECT_EQ(second->at, 3u);
  EXPECT_EQ(second->bytes, "second");

  Epoch e2 = this->Begin(1);
  const std::string binary("\0third\xff", 7);
  STORE_ASSERT_OK(store->PutCheckpoint(1, e2, 3, binary));
  STORE_ASSERT_OK_AND_ASSIGN(auto third, store->LatestCheckpoint(1));
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(third->epoch, e2);
  EXPECT_EQ(third->at, 3u);
  EXPECT_EQ(third->bytes, binary);
  STORE_ASSERT_OK_AND_ASSIGN(auto other, store->LatestCheckpoint(2));
  EXPECT_FALSE(other.has_value());
}

// ---------------------------------------------------------------------------
// Checkpoints read in parts.

// The RocksDB store's chunk size: records around and past it cross chunks
// there (and are just bytes to the other stores).
constexpr std::uint64_t kChunk = rocksdb_layout::kCheckpointChunkBytes;
constexpr std::uint64_t kWhole = std::numeric_limits<std::uint64_t>::max();

// `size` bytes that depend on `seed` alone.
std::string RandomRecord(std::size_t size, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string record(size, '\0');
  for (std::size_t i = 0; i < size; i += 8) {
    const std::uint64_t word = rng();
    std::memcpy(record.data() + i, &word, std::min<std::size_t>(8, size - i));
  }
  return record;
}

// A checkpoint as stored, to check parts of it against.
struct ExpectedCheckpoint {
  Epoch epoch = 0;
  LogIndex at = 0;
  std::string record;
};

// Reads up to `max_bytes` of `worker`'s checkpoint from `offset` and checks
// them against the slice of `expected`.
void ExpectPart(Store* store, WorkerId worker, const ExpectedCheckpoint& expected, std::uint64_t offset,
                std::uint64_t max_bytes) {
  SCOPED_TRACE("part from byte " + std::to_string(offset) + " of at most " + std::to_string(max_bytes));
  Result<std::optional<CheckpointPart>> part = store->ReadCheckpointPart(worker, offset, max_bytes);
  ASSERT_TRUE(part.ok()) << part.status().ToString();
  ASSERT_TRUE(part->has_value());
  const CheckpointPart& p = **part;
  EXPECT_EQ(p.epoch, expected.epoch);
  EXPECT_EQ(p.at, expected.at);
  EXPECT_EQ(p.total_bytes, expected.record.size());
  // Sizes and the first differing byte, not megabytes of bytes.
  ASSERT_EQ(p.bytes.size(), std::min<std::uint64_t>(max_bytes, expected.record.size() - offset));
  const auto slice = expected.record.begin() + static_cast<std::ptrdiff_t>(offset);
  const auto [got, want] = std::mismatch(p.bytes.begin(), p.bytes.end(), slice);
  EXPECT_TRUE(got == p.bytes.end()) << "first difference at byte " << offset + (got - p.bytes.begin());
}

// Reads the whole record in consecutive parts of `part_bytes`.
void ExpectReadInParts(Store* store, WorkerId worker, const ExpectedCheckpoint& expected, std::uint64_t part_bytes) {
  for (std::uint64_t offset = 0; offset < expected.record.size(); offset += part_bytes) {
    ExpectPart(store, worker, expected, offset, part_bytes);
    if (testing::Test::HasFatalFailure()) return;
  }
}

// A record given in parts of any size (across chunk boundaries) is stored
// whole; parts that fail, or give more or fewer bytes than declared, store
// nothing and leave the previous checkpoint as it was.
TYPED_TEST(StoreTest, ACheckpointGivenInPartsIsStoredWholeOrNotAtAll) {
  Store* store = this->store_.get();
  Epoch e = this->Begin(1);
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, 3), {}));
  const ExpectedCheckpoint old{e, 1, RandomRecord(kChunk + 3, 11)};
  STORE_ASSERT_OK(store->PutCheckpoint(1, e, old.at, old.record));
  const std::string record = RandomRecord(2 * kChunk + 999, 12);
  const auto in_parts = [&](std::size_t part, std::size_t upto, Status end) -> Store::RecordParts {
    return [&record, part, upto, end](const auto& sink) -> Status {
      for (std::size_t at = 0; at < upto; at += part) {
        if (Status s = sink(std::string_view(record).substr(at, std::min(part, upto - at))); !s.ok()) return s;
      }
      return end;
    };
  };
  struct Bad {
    Store::RecordParts parts;
    Code code;
  };
  const Bad bads[] = {{in_parts(1 << 20, kChunk + 5, Status(Code::kIOError, "engine lost")), Code::kIOError},
                      {in_parts(777777, record.size() - 1, Status::OK()), Code::kInvalidArgument},
                      {in_parts(777777, record.size(), Status::OK()), Code::kInvalidArgument}};
  for (std::size_t i = 0; i < std::size(bads); ++i) {
    const std::uint64_t declared = i == 2 ? record.size() - 1 : record.size();
    EXPECT_EQ(store->PutCheckpointFrom(1, e, 2, declared, bads[i].parts).code(), bads[i].code) << "case " << i;
    ExpectPart(store, 1, old, 0, kWhole);
  }
  const ExpectedCheckpoint next{e, 2, record};
  STORE_ASSERT_OK(store->PutCheckpointFrom(1, e, next.at, record.size(), in_parts(777777, record.size(), Status::OK())));
  ExpectPart(store, 1, next, 0, kWhole);
  ExpectPart(store, 1, next, kChunk - 1, 2);
}

TYPED_TEST(StoreTest, CheckpointPartsAreTheSlicesOfTheRecord) {
  Store* store = this->store_.get();
  Epoch e = this->Begin(1);
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, 3), {}));
  // Two whole chunks, a third of 1 MiB and some odd bytes.
  const ExpectedCheckpoint expected{e, 2, RandomRecord(2 * kChunk + (1 << 20) + 12345, 20261127)};
  STORE_ASSERT_OK(store->PutCheckpoint(1, e, expected.at, expected.record));

  // Single bytes and pairs around each chunk boundary.
  for (std::uint64_t boundary : {kChunk, 2 * kChunk}) {
    for (std::uint64_t offset = boundary - 2; offset <= boundary + 1; ++offset) {
      ExpectPart(store, 1, expected, offset, 1);
      ExpectPart(store, 1, expected, offset, 2);
    }
  }
  ExpectPart(store, 1, expected, 0, 1);
  ExpectPart(store, 1, expected, expected.record.size() - 1, 1);
  // A part across all three chunks, and parts running past the end.
  ExpectPart(store, 1, expected, kChunk - 5, kChunk + 10);
  ExpectPart(store, 1, expected, 3, kWhole);
  ExpectPart(store, 1, expected, 2 * kChunk + 7, kChunk);
  // The whole record in parts of a chunk, of an odd size, and in one.
  ExpectReadInParts(store, 1, expected, kChunk);
  ExpectReadInParts(store, 1, expected, (1 << 20) + 7);
  ExpectReadInParts(store, 1, expected, 3 * kChunk);
  ExpectPart(store, 1, expected, 0, kWhole);
  STORE_ASSERT_OK_AND_ASSIGN(auto whole, store->LatestCheckpoint(1));
  ASSERT_TRUE(whole.has_value());
  EXPECT_TRUE(whole->bytes == expected.record);

  // A part of no bytes gives the checkpoint's epoch, index and size; from
  // the end there is nothing more; past it is an error.
  ExpectPart(store, 1, expected, 0, 0);
  ExpectPart(store, 1, expected, kChunk, 0);
  ExpectPart(store, 1, expected, expected.record.size(), kWhole);
  Result<std::optional<CheckpointPart>> past = store->ReadCheckpointPart(1, expected.record.size() + 1, 1);
  ASSERT_FALSE(past.ok());
  EXPECT_EQ(past.status().code(), Code::kInvalidArgument) << past.status().ToString();
  EXPECT_THAT(std::string(past.status().message()), HasSubstr("worker 1"));
  EXPECT_EQ(store->ReadCheckpointPart(1, kWhole, kWhole).status().code(), Code::kInvalidArgument);
}

// A part read into a used one replaces all of it, and keeps its buffer when
// it is big enough, so a reader of many parts makes no new memory per part.
TYPED_TEST(StoreTest, APartReadIntoAUsedOneReplacesItKeepingItsBuffer) {
  Store* store = this->store_.get();
  Epoch e = this->Begin(1);
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, 3), {}));
  const std::string record = RandomRecord(2 * kChunk + 999, 13);
  STORE_ASSERT_OK(store->PutCheckpoint(1, e, 2, record));
  CheckpointPart part{99, 99, 99, std::string(kChunk + 100, 'x')};
  const char* const buffer = part.bytes.data();
  for (std::uint64_t offset : {kChunk - 7, std::uint64_t{0}, 2 * kChunk}) {
    STORE_ASSERT_OK_AND_ASSIGN(const bool found, store->ReadCheckpointPartInto(1, offset, kChunk, &part));
    ASSERT_TRUE(found);
    EXPECT_EQ(part.epoch, e);
    EXPECT_EQ(part.at, 2u);
    EXPECT_EQ(part.total_bytes, record.size());
    EXPECT_TRUE(part.bytes == record.substr(offset, kChunk)) << "from " << offset;
    EXPECT_EQ(part.bytes.data(), buffer) << "from " << offset;
  }
  STORE_ASSERT_OK_AND_ASSIGN(const bool found, store->ReadCheckpointPartInto(2, 0, kChunk, &part));
  EXPECT_FALSE(found);
}

TYPED_TEST(StoreTest, CheckpointPartOfAWorkerWithoutACheckpointIsNone) {
  Store* store = this->store_.get();
  STORE_ASSERT_OK_AND_ASSIGN(auto unknown, store->ReadCheckpointPart(1, 0, kWhole));
  EXPECT_FALSE(unknown.has_value());
  Epoch e = this->Begin(1);
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, 2), {}));
  for (std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{5}, kWhole}) {
    STORE_ASSERT_OK_AND_ASSIGN(auto none, store->ReadCheckpointPart(1, offset, 10));
    EXPECT_FALSE(none.has_value()) << offset;
  }
  STORE_ASSERT_OK(store->PutCheckpoint(1, e, 1, "small"));
  STORE_ASSERT_OK_AND_ASSIGN(auto other, store->ReadCheckpointPart(2, 0, kWhole));
  EXPECT_FALSE(other.has_value());
}

TYPED_TEST(StoreTest, SmallerCheckpointReplacesABiggerOneInEveryPart) {
  Store* store = this->store_.get();
  Epoch e1 = this->Begin(1);
  STORE_ASSERT_OK(store->Append(1, e1, Records(1, 1, 4), {}));
  const ExpectedCheckpoint big{e1, 2, RandomRecord(2 * kChunk + 999, 1)};
  STORE_ASSERT_OK(store->PutCheckpoint(1, e1, big.at, big.record));
  ExpectPart(store, 1, big, 2 * kChunk, kWhole);

  // A newer incarnation's checkpoint of fewer chunks: every part is of it,
  // and nothing of the bigger one's last chunk shows through.
  Epoch e2 = this->Begin(1);
  const ExpectedCheckpoint smaller{e2, 3, RandomRecord(kChunk + 100, 2)};
  STORE_ASSERT_OK(store->PutCheckpoint(1, e2, smaller.at, smaller.record));
  ExpectPart(store, 1, smaller, 0, kWhole);
  ExpectPart(store, 1, smaller, kChunk - 1, 2 * kChunk);
  ExpectPart(store, 1, smaller, smaller.record.size(), kWhole);
  EXPECT_EQ(store->ReadCheckpointPart(1, 2 * kChunk, 1).status().code(), Code::kInvalidArgument);

  // And an empty one.
  const ExpectedCheckpoint empty{e2, 4, ""};
  STORE_ASSERT_OK(store->PutCheckpoint(1, e2, empty.at, empty.record));
  ExpectPart(store, 1, empty, 0, kWhole);
  EXPECT_EQ(store->ReadCheckpointPart(1, 1, 0).status().code(), Code::kInvalidArgument);
}

// Byte `i` of the record of a checkpoint at `at`: records at different
// indexes (fewer than 256 apart) differ in every byte.
char ByteOfCheckpointAt(LogIndex at, std::uint64_t i) { return static_cast<char>(at * 131 + i % 251); }

TYPED_TEST(StoreTest, ConcurrentCheckpointsNeverMixInOnePart) {
  Store* store = this->store_.get();
  constexpr LogIndex kCheckpoints = 12;
  constexpr std::uint64_t kSize = kChunk + 1000;
  Epoch e = this->Begin(1);
  STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, kCheckpoints), {}));
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (LogIndex at = 1; at <= kCheckpoints; ++at) {
      std::string record(kSize, '\0');
      for (std::uint64_t i = 0; i < kSize; ++i) record[i] = ByteOfCheckpointAt(at, i);
      Status s = store->PutCheckpoint(1, e, at, record);
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
    done.store(true);
  });
  // Parts across the chunk boundary, each all of one checkpoint; the last
  // read is after the last write.
  auto read_parts = [&] {
    for (bool last = false; !last;) {
      last = done.load();
      Result<std::optional<CheckpointPart>> part = store->ReadCheckpointPart(1, kChunk - 8, 16);
      ASSERT_TRUE(part.ok()) << part.status().ToString();
      if (!part->has_value()) continue;
      const CheckpointPart& p = **part;
      ASSERT_GE(p.at, 1u);
      ASSERT_LE(p.at, kCheckpoints);
      ASSERT_EQ(p.total_bytes, kSize);
      ASSERT_EQ(p.bytes.size(), 16u);
      for (std::uint64_t i = 0; i < 16; ++i) {
        ASSERT_EQ(p.bytes[i], ByteOfCheckpointAt(p.at, kChunk - 8 + i)) << "byte " << i << " of a part at " << p.at;
      }
      if (last) {
        EXPECT_EQ(p.at, kCheckpoints);
      }
    }
  };
  read_parts();
  writer.join();
}

TYPED_TEST(StoreTest, ConcurrentAppendsToDifferentWorkersAreAllReadable) {
  Store* store = this->store_.get();
  constexpr WorkerId kWorkers = 4;
  constexpr LogIndex kBatches = 50;
  constexpr LogIndex kBatchSize = 10;
  for (WorkerId w = 0; w < kWorkers; ++w) ASSERT_EQ(this->Begin(w), 1u);

  std::vector<std::thread> threads;
  for (WorkerId w = 0; w < kWorkers; ++w) {
    threads.emplace_back([store, w] {
      for (LogIndex b = 0; b < kBatches; ++b) {
        Status s = store->Append(w, 1, Records(w, b * kBatchSize + 1, (b + 1) * kBatchSize), {});
        EXPECT_TRUE(s.ok()) << s.ToString();
        if (!s.ok()) return;
      }
    });
  }
  for (std::thread& t : threads) t.join();

  std::vector<WorkerId> workers = {0, 1, 2, 3};
  std::vector<LogIndex> committed(workers.size());
  STORE_ASSERT_OK(store->ReadCommitted(workers, committed));
  EXPECT_EQ(committed, (std::vector<LogIndex>{500, 500, 500, 500}));
  for (WorkerId w = 0; w < kWorkers; ++w) {
    EXPECT_THAT(Flatten(ReadAll(store, w)), Expected(w, 1, kBatches * kBatchSize)) << "worker " << w;
  }
}

TYPED_TEST(StoreTest, ConcurrentOverlappingAppendsToOneWorkerKeepItConsistent) {
  Store* store = this->store_.get();
  Epoch e = this->Begin(1);
  constexpr LogIndex kLast = 600;
  // Three threads write the same history in batches of different sizes, so
  // their batches overlap unevenly. Each thread's batch starts right after
  // its own previous one, which is committed, so every append must succeed
  // and the committed index must never fall below what a thread wrote.
  auto writer = [store, e](LogIndex batch_size) {
    for (LogIndex first = 1; first <= kLast; first += batch_size) {
      LogIndex last = first + batch_size - 1;
      if (last > kLast) last = kLast;
      Status s = store->Append(1, e, Records(1, first, last), {});
      EXPECT_TRUE(s.ok()) << s.ToString();
      if (!s.ok()) return;
      EXPECT_GE(Committed(store, 1), last);
    }
  };
  std::thread a(writer, 7);
  std::thread b(writer, 10);
  std::thread c(writer, 13);
  a.join();
  b.join();
  c.join();
  EXPECT_EQ(Committed(store, 1), kLast);
  EXPECT_THAT(Flatten(ReadAll(store, 1)), Expected(1, 1, kLast));
}

TYPED_TEST(StoreTest, BeginIncarnationFencesAConcurrentAppender) {
  Store* store = this->store_.get();
  Epoch e1 = this->Begin(1);
  std::atomic<LogIndex> appended{0};
  std::atomic<bool> fenced{false};
  std::atomic<bool> done{false};
  LogIndex last_ok = 0;
  Status refusal;

  std::thread zombie([&] {
    // Stops at its first refused append; one that starts after the new
    // incarnation began must be refused.
    struct SetOnExit {
      std::atomic<bool>* flag;
      ~SetOnExit() { flag->store(true); }
    } set_done{&done};
    for (LogIndex next = 1;; next += 5) {
      bool after_fence = fenced.load();
      Status s = store->Append(1, e1, Records(1, next, next + 4), {});
      if (!s.ok()) {
        refusal = s;
        return;
      }
      last_ok = next + 4;
      if (after_fence) {
        ADD_FAILURE() << "append from a fenced incarnation succeeded";
        return;
      }
      appended.store(last_ok);
    }
  });
  while (appended.load() < 10 && !done.load()) std::this_thread::yield();
  Epoch e2 = this->Begin(1);
  fenced.store(true);
  zombie.join();

  EXPECT_EQ(refusal.code(), Code::kFailedPrecondition) << refusal.ToString();
  EXPECT_GE(last_ok, 10u);
  EXPECT_EQ(Committed(store, 1), last_ok);
  EXPECT_THAT(Flatten(ReadAll(store, 1)), Expected(1, 1, last_ok));
  STORE_ASSERT_OK(store->Append(1, e2, Records(1, last_ok + 1, last_ok + 1), {}));
}

// ---------------------------------------------------------------------------
// RocksDB only.

namespace layout = rocksdb_layout;

// Opens a store's database directly, to damage it.
class RawDb {
 public:
  enum Family { kDefault = 0, kLog = 1, kCheckpoint = 2, kMeta = 3 };

  explicit RawDb(const std::string& path) {
    rocksdb::DBOptions options;
    options.create_if_missing = true;
    options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}},
        {layout::kLogFamily, {}},
        {layout::kCheckpointFamily, {}},
        {layout::kMetaFamily, {}},
        {layout::kCopiesFamily, {}},
    };
    rocksdb::DB* db = nullptr;
    status_ = rocksdb::DB::Open(options, path, families, &handles_, &db);
    db_.reset(db);
  }
  ~RawDb() {
    if (db_ == nullptr) return;
    for (auto* h : handles_) (void)db_->DestroyColumnFamilyHandle(h);
    (void)db_->Close();
  }

  const rocksdb::Status& status() const { return status_; }
  rocksdb::Status Put(Family family, const std::string& key, const std::string& value) {
    return db_->Put(rocksdb::WriteOptions(), handles_[family], key, value);
  }
  rocksdb::Status Delete(Family family, const std::string& key) {
    return db_->Delete(rocksdb::WriteOptions(), handles_[family], key);
  }
  // Every key in `family`, in order.
  std::vector<std::string> Keys(Family family) {
    std::vector<std::string> keys;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), handles_[family]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) keys.push_back(it->key().ToString());
    EXPECT_TRUE(it->status().ok()) << it->status().ToString();
    return keys;
  }

 private:
  rocksdb::Status status_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::unique_ptr<rocksdb::DB> db_;
};

// The store's format marker with its version replaced by `version`; the
// marker is the meta magic then the version, both little-endian.
std::string FormatMarkerWithVersion(std::uint16_t version) {
  std::string marker;
  wire::EncodeFormatMarker(&marker);
  auto little_endian = [](std::uint64_t v, int size) {
    std::string s;
    for (int i = 0; i < size; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return s;
  };
  size_t at = marker.find(little_endian(wire::kMetaMagic, 4));
  if (at == std::string::npos || marker.compare(at + 4, 2, little_endian(wire::kStoreFormatVersion, 2)) != 0) {
    ADD_FAILURE() << "format marker layout is not magic then version";
    return marker;
  }
  marker.replace(at + 4, 2, little_endian(version, 2));
  return marker;
}

class RocksDbStoreTest : public testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(dir_.ok()); }

  Result<std::unique_ptr<Store>> Open(const RocksDbStoreOptions& options = {}) {
    return OpenRocksDbStore(path_, options);
  }

  // In a new store: worker 1's first incarnation commits entries up to
  // `checkpoint.at`, then stores it.
  void StoreCheckpointOfWorker1(const ExpectedCheckpoint& checkpoint) {
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    STORE_ASSERT_OK_AND_ASSIGN(Epoch e, store->BeginIncarnation(1));
    STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, checkpoint.at), {}));
    STORE_ASSERT_OK(store->PutCheckpoint(1, e, checkpoint.at, checkpoint.record));
  }

  ScratchDir dir_;
  const std::string path_ = dir_.path() + "/db";
};

TEST_F(RocksDbStoreTest, ReopenKeepsEverything) {
  {
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    STORE_ASSERT_OK_AND_ASSIGN(Epoch e1, store->BeginIncarnation(1));
    STORE_ASSERT_OK(store->SetEpochStart(1, e1, 1));
    STORE_ASSERT_OK_AND_ASSIGN(Epoch e2, store->BeginIncarnation(1));
    STORE_ASSERT_OK(store->SetEpochStart(1, e2, 4));
    STORE_ASSERT_OK(store->Append(1, e2, Records(1, 1, 10), {}));
    STORE_ASSERT_OK(store->PutCheckpoint(1, e2, 3, "snap"));
    STORE_ASSERT_OK_AND_ASSIGN(Epoch other, store->BeginIncarnation(2));
    STORE_ASSERT_OK(store->Append(2, other, Records(2, 1, 2), {}));
  }
  STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
  STORE_ASSERT_OK_AND_ASSIGN(auto epochs, store->Epochs(1));
  EXPECT_THAT(Flatten(epochs), ElementsAre(std::pair<Epoch, LogIndex>{1, 1}, std::pair<Epoch, LogIndex>{2, 4}));
  std::vector<WorkerId> workers = {1, 2, 3};
  std::vector<LogIndex> committed(3);
  STORE_ASSERT_OK(store->ReadCommitted(workers, committed));
  EXPECT_EQ(committed, (std::vector<LogIndex>{10, 2, 0}));
  EXPECT_THAT(Flatten(ReadAll(store.get(), 1)), Expected(1, 4, 10));
  EXPECT_THAT(Flatten(ReadAll(store.get(), 2)), Expected(2, 1, 2));
  STORE_ASSERT_OK_AND_ASSIGN(auto checkpoint, store->LatestCheckpoint(1));
  ASSERT_TRUE(checkpoint.has_value());
  EXPECT_EQ(checkpoint->epoch, 2u);
  EXPECT_EQ(checkpoint->at, 3u);
  EXPECT_EQ(checkpoint->bytes, "snap");

  // The fence and the contiguity rules survive too.
  EXPECT_EQ(store->Append(1, 1, Records(1, 11, 11), {}).code(), Code::kFailedPrecondition);
  EXPECT_EQ(store->Append(1, 2, Records(1, 12, 12), {}).code(), Code::kFailedPrecondition);
  STORE_ASSERT_OK(store->Append(1, 2, Records(1, 11, 11), {}));
  EXPECT_EQ(store->PutCheckpoint(1, 2, 2, "back").code(), Code::kFailedPrecondition);
  STORE_ASSERT_OK_AND_ASSIGN(Epoch e3, store->BeginIncarnation(1));
  EXPECT_EQ(e3, 3u);
}

TEST_F(RocksDbStoreTest, LineageCopiesSurviveReopen) {
  {
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    STORE_ASSERT_OK_AND_ASSIGN(Epoch e1, store->BeginIncarnation(1));
    STORE_ASSERT_OK_AND_ASSIGN(Epoch e2, store->BeginIncarnation(2));
    STORE_ASSERT_OK(store->Append(1, e1, Records(1, 1, 1), std::vector<LineageCopy>{{2, e2, 7, EntryBytes(2, 7)}}));
  }
  STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
  EXPECT_THAT(FlattenCopies(ReadCopiesOf(store.get(), 2)),
              ElementsAre(std::make_tuple(2u, 7u, Epoch{1}, EntryBytes(2, 7))));
}

TEST_F(RocksDbStoreTest, UnsyncedAppendsSurviveACleanReopen) {
  RocksDbStoreOptions options;
  options.sync = false;
  {
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open(options));
    STORE_ASSERT_OK_AND_ASSIGN(Epoch e, store->BeginIncarnation(0));
    STORE_ASSERT_OK(store->Append(0, e, Records(0, 1, 20), {}));
  }
  STORE_ASSERT_OK_AND_ASSIGN(auto store, Open(options));
  EXPECT_EQ(Committed(store.get(), 0), 20u);
  EXPECT_THAT(Flatten(ReadAll(store.get(), 0)), Expected(0, 1, 20));
}

TEST_F(RocksDbStoreTest, RefusesAStoreOfAnotherFormatVersion) {
  { STORE_ASSERT_OK_AND_ASSIGN(auto store, Open()); }
  {
    RawDb raw(path_);
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    ASSERT_TRUE(raw.Put(RawDb::kMeta, layout::kFormatKey, FormatMarkerWithVersion(99)).ok());
  }
  auto store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Code::kFailedPrecondition) << store.status().ToString();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(path_));
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("99"));
}

TEST_F(RocksDbStoreTest, RefusesADatabaseWithoutAFormatMarker) {
  {
    RawDb raw(path_);
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    ASSERT_TRUE(raw.Put(RawDb::kDefault, "someone else's", "data").ok());
  }
  auto store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Code::kFailedPrecondition) << store.status().ToString();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("no format marker"));
}

TEST_F(RocksDbStoreTest, CorruptedCheckpointIsReportedAsCorruption) {
  {
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    STORE_ASSERT_OK_AND_ASSIGN(Epoch e, store->BeginIncarnation(1));
    STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, 2), {}));
    STORE_ASSERT_OK(store->PutCheckpoint(1, e, 1, "snap"));
    STORE_ASSERT_OK(store->PutCheckpoint(1, e, 1, "snap"));  // a checkpoint reads its predecessor
  }
  const std::string head = layout::EncodeCheckpointHead(layout::NewCheckpointHead(1, 1, 4, 1));
  const std::string truncated = "LSCW";
  std::string bad_magic = head;
  bad_magic[0] ^= 0x5a;
  const std::string short_head = head.substr(0, head.size() - 1);
  layout::CheckpointHead miscounted = layout::NewCheckpointHead(1, 1, 4, 1);
  miscounted.chunk_count = 2;
  for (const std::string& damaged : {truncated, bad_magic, short_head, layout::EncodeCheckpointHead(miscounted)}) {
    {
      RawDb raw(path_);
      ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
      ASSERT_TRUE(raw.Put(RawDb::kCheckpoint, layout::WorkerKey(1), damaged).ok());
    }
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    auto checkpoint = store->LatestCheckpoint(1);
    ASSERT_FALSE(checkpoint.ok());
    EXPECT_EQ(checkpoint.status().code(), Code::kCorruption) << checkpoint.status().ToString();
    EXPECT_THAT(std::string(checkpoint.status().message()), HasSubstr("worker 1"));
    EXPECT_EQ(store->PutCheckpoint(1, 1, 2, "next").code(), Code::kCorruption);
  }
}

// The names of `worker`'s checkpoint files in the store at `path`, sorted.
std::vector<std::string> CheckpointFilesOf(const std::string& path, WorkerId worker) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(path + "/" + layout::kCheckpointDirectory)) {
    const std::string name = entry.path().filename().string();
    WorkerId file_worker = 0;
    std::uint64_t generation = 0;
    if (layout::ParseCheckpointFileName(name, &file_worker, &generation) && file_worker == worker) {
      names.push_back(name);
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string CheckpointFilePath(const std::string& path, WorkerId worker, std::uint64_t generation) {
  return path + "/" + layout::kCheckpointDirectory + "/" + layout::CheckpointFileName(worker, generation);
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  ASSERT_TRUE(out.good()) << path;
}

// Bytes in the database's write-ahead log files.
std::uint64_t WalBytes(const std::string& path) {
  std::uint64_t bytes = 0;
  for (const auto& entry : std::filesystem::directory_iterator(path)) {
    if (entry.path().extension() == ".log") bytes += entry.file_size();
  }
  return bytes;
}

TEST_F(RocksDbStoreTest, CheckpointFilesSurviveReopenAndNoStaleOnesStay) {
  const ExpectedCheckpoint big{1, 2, RandomRecord(2 * kChunk + 1, 3)};
  const ExpectedCheckpoint other{1, 1, RandomRecord(kChunk + 5, 4)};
  {
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    for (WorkerId w : {1u, 2u}) {
      STORE_ASSERT_OK_AND_ASSIGN(Epoch e, store->BeginIncarnation(w));
      STORE_ASSERT_OK(store->Append(w, e, Records(w, 1, 3), {}));
    }
    STORE_ASSERT_OK(store->PutCheckpoint(1, 1, big.at, big.record));
    STORE_ASSERT_OK(store->PutCheckpoint(2, 1, other.at, other.record));
  }
  // The records went to their files, not through the database's log, which
  // the next open would replay.
  EXPECT_LT(WalBytes(path_), kChunk);
  EXPECT_EQ(CheckpointFilesOf(path_, 1), std::vector<std::string>{"w1-g1.lsck"});
  EXPECT_EQ(CheckpointFilesOf(path_, 2), std::vector<std::string>{"w2-g1.lsck"});
  EXPECT_EQ(std::filesystem::file_size(CheckpointFilePath(path_, 1, 1)),
            layout::CheckpointFileBytes(layout::NewCheckpointHead(1, big.at, big.record.size(), 1)));
  {
    RawDb raw(path_);
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    EXPECT_EQ(raw.Keys(RawDb::kCheckpoint), (std::vector<std::string>{layout::WorkerKey(1), layout::WorkerKey(2)}));
  }
  const ExpectedCheckpoint smaller{1, 3, RandomRecord(kChunk / 2, 5)};
  {
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    ExpectPart(store.get(), 1, big, 0, kWhole);
    ExpectPart(store.get(), 1, big, kChunk - 1, 2);
    STORE_ASSERT_OK(store->PutCheckpoint(1, 1, smaller.at, smaller.record));
  }
  // The bigger checkpoint's file went with it; worker 2's stays.
  EXPECT_EQ(CheckpointFilesOf(path_, 1), std::vector<std::string>{"w1-g2.lsck"});
  EXPECT_EQ(CheckpointFilesOf(path_, 2), std::vector<std::string>{"w2-g1.lsck"});
  STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
  ExpectPart(store.get(), 1, smaller, 0, kWhole);
  ExpectPart(store.get(), 2, other, 0, kWhole);
  STORE_ASSERT_OK(store->PutCheckpoint(1, 1, 3, ""));
  ExpectPart(store.get(), 1, ExpectedCheckpoint{1, 3, ""}, 0, kWhole);
  EXPECT_EQ(CheckpointFilesOf(path_, 1), std::vector<std::string>{"w1-g3.lsck"});
}

// A crash while a checkpoint's file is written (before its head) leaves a
// file no head names: the old checkpoint reads whole, and the next open
// removes it, whatever its generation. A checkpoint whose parts fail
// leaves no file.
TEST_F(RocksDbStoreTest, CheckpointFilesACrashLeftAreIgnoredThenRemoved) {
  const ExpectedCheckpoint old{1, 1, RandomRecord(kChunk + 7, 8)};
  {
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    STORE_ASSERT_OK_AND_ASSIGN(Epoch e, store->BeginIncarnation(1));
    STORE_ASSERT_OK(store->Append(1, e, Records(1, 1, 3), {}));
    STORE_ASSERT_OK(store->PutCheckpoint(1, e, old.at, old.record));
  }
  const std::string not_ours = path_ + "/" + layout::kCheckpointDirectory + "/notes.txt";
  ASSERT_NO_FATAL_FAILURE(WriteBytes(CheckpointFilePath(path_, 1, 2), std::string(kChunk, 'x')));  // cut short
  ASSERT_NO_FATAL_FAILURE(WriteBytes(CheckpointFilePath(path_, 1, 9), "x"));
  ASSERT_NO_FATAL_FAILURE(WriteBytes(CheckpointFilePath(path_, 3, 1), "x"));  // a worker with no head
  ASSERT_NO_FATAL_FAILURE(WriteBytes(not_ours, "kept"));
  STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
  EXPECT_EQ(CheckpointFilesOf(path_, 1), std::vector<std::string>{"w1-g1.lsck"});
  EXPECT_EQ(CheckpointFilesOf(path_, 3), std::vector<std::string>{});
  EXPECT_EQ(ReadBytes(not_ours), "kept");
  ExpectPart(store.get(), 1, old, 0, kWhole);

  const Status failed = store->PutCheckpointFrom(1, 1, 2, 3 * kChunk, [&](const auto& sink) -> Status {
    EXPECT_TRUE(sink(std::string(kChunk, 'y')).ok());
    return IOError("the engine's copy failed");
  });
  EXPECT_EQ(failed.code(), Code::kIOError) << failed.ToString();
  EXPECT_EQ(CheckpointFilesOf(path_, 1), std::vector<std::string>{"w1-g1.lsck"});
  ExpectPart(store.get(), 1, old, 0, kWhole);

  const ExpectedCheckpoint next{1, 2, RandomRecord(kChunk + 1, 9)};
  STORE_ASSERT_OK(store->PutCheckpoint(1, 1, next.at, next.record));
  ExpectPart(store.get(), 1, next, 0, kWhole);
  EXPECT_EQ(CheckpointFilesOf(path_, 1), std::vector<std::string>{"w1-g2.lsck"});
}

TEST_F(RocksDbStoreTest, DamagedCheckpointFilesAreCorruptionAndOnlyTheChunksOfAPartAreChecked) {
  const ExpectedCheckpoint expected{1, 1, RandomRecord(2 * kChunk + 10, 6)};
  ASSERT_NO_FATAL_FAILURE(StoreCheckpointOfWorker1(expected));
  const std::string file = CheckpointFilePath(path_, 1, 1);
  const std::string intact = ReadBytes(file);
  const std::uint64_t header = layout::kCheckpointFileHeaderBytes;
  const std::uint64_t digests = header + expected.record.size();
  ASSERT_EQ(intact.size(), digests + 3 * 8);
  struct Damage {
    std::string message;
    std::function<void(std::string*)> apply;  // to the file's bytes; nullptr: the file is removed
    std::uint64_t chunk = 0;                  // the chunk read; a damaged chunk leaves the others readable
    bool local = false;
  };
  const std::vector<Damage> damages = {
      {"chunk 1 of 3 does not match its digest", [&](std::string* f) { (*f)[header + kChunk + 5] ^= 1; }, 1, true},
      {"chunk 2 of 3 does not match its digest", [&](std::string* f) { (*f)[digests + 2 * 8 + 3] ^= 1; }, 2, true},
      {"holds " + std::to_string(intact.size() - 1) + " bytes, not " + std::to_string(intact.size()),
       [](std::string* f) { f->pop_back(); }},
      {"has a bad magic number", [](std::string* f) { (*f)[1] ^= 0x5a; }},
      {"is not the one its head names (worker 2, generation 1", [](std::string* f) { (*f)[6] = 2; }},
      {"w1-g1.lsck is missing", nullptr},
  };
  for (const Damage& damage : damages) {
    SCOPED_TRACE(damage.message);
    if (damage.apply) {
      std::string damaged = intact;
      damage.apply(&damaged);
      ASSERT_NO_FATAL_FAILURE(WriteBytes(file, damaged));
    } else {
      std::filesystem::remove(file);
    }
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    for (auto [offset, max_bytes] :
         {std::pair{damage.chunk * kChunk, std::uint64_t{1}}, std::pair{std::uint64_t{0}, kWhole}}) {
      auto part = store->ReadCheckpointPart(1, offset, max_bytes);
      ASSERT_FALSE(part.ok());
      EXPECT_EQ(part.status().code(), Code::kCorruption) << part.status().ToString();
      EXPECT_THAT(std::string(part.status().message()), HasSubstr("checkpoint of worker 1: "));
      EXPECT_THAT(std::string(part.status().message()), HasSubstr(damage.message));
    }
    if (damage.local) {  // parts of the chunks before it are read without it
      ExpectPart(store.get(), 1, expected, 0, kChunk);
      ExpectPart(store.get(), 1, expected, kChunk - 3, 3);
    }
    ExpectPart(store.get(), 1, expected, 0, 0);
    ASSERT_NO_FATAL_FAILURE(WriteBytes(file, intact));  // repaired for the next damage
  }
}

// A part of many chunks is read by several threads; parts that cut chunks
// at either end read the same bytes; a damaged chunk in the middle of a
// part is reported by its number, and parts before it still read.
TEST_F(RocksDbStoreTest, APartOfManyChunksIsReadWholeOrCutAndEveryChunkChecked) {
  const ExpectedCheckpoint expected{1, 1, RandomRecord(150 * kChunk + 77, 21)};
  ASSERT_NO_FATAL_FAILURE(StoreCheckpointOfWorker1(expected));
  {
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    for (auto [offset, max_bytes] : {std::pair{std::uint64_t{0}, kWhole}, std::pair{kChunk / 2, 140 * kChunk},
                                     std::pair{std::uint64_t{3}, 150 * kChunk + 74}, std::pair{kChunk, 149 * kChunk},
                                     std::pair{std::uint64_t{5}, std::uint64_t{10}}, std::pair{149 * kChunk + 1, kWhole}}) {
      ExpectPart(store.get(), 1, expected, offset, max_bytes);
    }
  }
  const std::string file = CheckpointFilePath(path_, 1, 1);
  std::string damaged = ReadBytes(file);
  damaged[layout::kCheckpointFileHeaderBytes + 100 * kChunk + 9] ^= 4;
  ASSERT_NO_FATAL_FAILURE(WriteBytes(file, damaged));
  STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
  for (std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{3}, 50 * kChunk}) {
    auto part = store->ReadCheckpointPart(1, offset, kWhole);
    ASSERT_FALSE(part.ok());
    EXPECT_EQ(part.status().code(), Code::kCorruption) << part.status().ToString();
    EXPECT_THAT(std::string(part.status().message()), HasSubstr("chunk 100 of 151 does not match its digest"));
  }
  ExpectPart(store.get(), 1, expected, 3, 97 * kChunk);
}

TEST_F(RocksDbStoreTest, CheckpointsOfAnotherVersionAreFailedPrecondition) {
  ASSERT_NO_FATAL_FAILURE(StoreCheckpointOfWorker1(ExpectedCheckpoint{1, 1, "snap"}));
  const std::string head = layout::EncodeCheckpointHead(layout::NewCheckpointHead(1, 1, 4, 1));
  const std::string file = CheckpointFilePath(path_, 1, 1);
  const std::string intact = ReadBytes(file);
  std::string newer_head = head;
  newer_head[4] = 5;  // version, low byte
  std::string older_file = intact;
  older_file[4] = 0;
  const std::tuple<std::string, std::string, std::string> versions[] = {
      {newer_head, intact, "checkpoint head has format version 5"},
      {head, older_file, "checkpoint file " + file + " has format version 0"},
  };
  for (const auto& [head_value, file_bytes, message] : versions) {
    {
      RawDb raw(path_);
      ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
      ASSERT_TRUE(raw.Put(RawDb::kCheckpoint, layout::WorkerKey(1), head_value).ok());
    }
    ASSERT_NO_FATAL_FAILURE(WriteBytes(file, file_bytes));
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    auto part = store->ReadCheckpointPart(1, 0, kWhole);
    ASSERT_FALSE(part.ok());
    EXPECT_EQ(part.status().code(), Code::kFailedPrecondition) << part.status().ToString();
    EXPECT_THAT(std::string(part.status().message()), HasSubstr(message));
  }
}

// Stores of format version 1 kept each checkpoint as one value, which this
// build would misread as a head, and versions 2 and 3 kept chunks in the
// database, which it would not find: they are refused when opened, not when
// read.
TEST_F(RocksDbStoreTest, RefusesStoresOfEarlierCheckpointLayouts) {
  { STORE_ASSERT_OK_AND_ASSIGN(auto store, Open()); }
  for (std::uint16_t version : {1, 2, 3}) {
    {
      RawDb raw(path_);
      ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
      ASSERT_TRUE(raw.Put(RawDb::kMeta, layout::kFormatKey, FormatMarkerWithVersion(version)).ok());
      std::string v1_checkpoint("\x57\x43\x53\x4c\x01\x00", 6);  // "LSCW" version 1
      v1_checkpoint.append(16, '\x01');                          // epoch, at
      v1_checkpoint.append("snap");
      ASSERT_TRUE(raw.Put(RawDb::kCheckpoint, layout::WorkerKey(1), v1_checkpoint).ok());
    }
    auto store = Open();
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().code(), Code::kFailedPrecondition) << store.status().ToString();
    EXPECT_THAT(std::string(store.status().message()), HasSubstr(path_));
    EXPECT_THAT(std::string(store.status().message()),
                HasSubstr("store format version " + std::to_string(version) +
                          " is not supported (this build reads version 4)"));
  }
}

TEST_F(RocksDbStoreTest, CorruptedMetadataFailsTheOpen) {
  {
    STORE_ASSERT_OK_AND_ASSIGN(auto store, Open());
    STORE_ASSERT_OK_AND_ASSIGN(Epoch e, store->BeginIncarnation(6));
    STORE_ASSERT_OK(store->Append(6, e, Records(6, 1, 1), {}));
  }
  {
    RawDb raw(path_);
    ASSERT_TRUE(raw.status().ok()) << raw.status().ToString();
    ASSERT_TRUE(raw.Put(RawDb::kMeta, layout::EpochsKey(6), "junk").ok());
  }
  auto store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Code::kCorruption) << store.status().ToString();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr("worker 6"));
}

TEST_F(RocksDbStoreTest, PathThatIsARegularFileIsAnIOError) {
  { std::ofstream(path_) << "not a database"; }
  auto store = Open();
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Code::kIOError) << store.status().ToString();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(path_));
}

TEST_F(RocksDbStoreTest, MissingStoreWithoutCreateIfMissingIsAnIOError) {
  RocksDbStoreOptions options;
  options.create_if_missing = false;
  auto store = Open(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Code::kIOError) << store.status().ToString();
  EXPECT_THAT(std::string(store.status().message()), HasSubstr(path_));
}

}  // namespace
}  // namespace lstash
