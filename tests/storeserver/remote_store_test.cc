// The remote Store client: deadlines, retries through lost responses, a
// store server killed with SIGKILL under load, CURVE.
//
// (The Store contract itself runs against the remote store in
// tests/store/store_test.cc, with one shard and with two.)

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <lstash/curve.h>
#include <lstash/remote_store.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "scratch_dir.h"
#include "storeserver/test_util.h"

namespace lstash {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using storeserver_test::NowNanos;
using storeserver_test::StoreProcess;
using testing_support::ScratchDir;

#define RS_ASSERT_OK(expr)                                 \
  do {                                                     \
    ::lstash::Status rs_status_ = (expr);                  \
    ASSERT_TRUE(rs_status_.ok()) << rs_status_.ToString(); \
  } while (0)

std::string EntryBytes(LogIndex i) { return "record " + std::to_string(i) + std::string(40, 'x'); }

std::vector<LogRecord> Records(LogIndex first, LogIndex last) {
  std::vector<LogRecord> out;
  for (LogIndex i = first; i <= last; ++i) out.push_back({i, EntryBytes(i)});
  return out;
}

std::unique_ptr<Store> OpenClient(const std::vector<std::string>& shards, std::int64_t attempt_nanos,
                                  std::int64_t deadline_nanos, std::optional<CurveSecurity> curve = std::nullopt) {
  RemoteStoreOptions options;
  options.shards = shards;
  options.attempt_timeout_nanos = attempt_nanos;
  options.deadline_nanos = deadline_nanos;
  options.curve = std::move(curve);
  Result<std::unique_ptr<Store>> store = OpenRemoteStore(options);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return store.ok() ? std::move(store).value() : nullptr;
}

TEST(RemoteStoreTest, RefusesBadOptions) {
  RemoteStoreOptions options;
  EXPECT_EQ(OpenRemoteStore(options).status().code(), Code::kInvalidArgument);
  options.shards = {"tcp://127.0.0.1:1"};
  options.deadline_nanos = 0;
  EXPECT_EQ(OpenRemoteStore(options).status().code(), Code::kInvalidArgument);
  options.deadline_nanos = 1'000'000'000;
  options.curve = CurveSecurity{};  // no server key for the shard
  EXPECT_EQ(OpenRemoteStore(options).status().code(), Code::kInvalidArgument);
}

TEST(RemoteStoreTest, WithoutAServerACallFailsUnavailableAtItsDeadline) {
  ScratchDir dir;
  const std::string endpoint = "ipc://" + dir.path() + "/nobody.sock";
  constexpr std::int64_t kDeadline = 300'000'000;
  auto store = OpenClient({"tcp://127.0.0.1:9", endpoint}, 100'000'000, kDeadline);
  ASSERT_NE(store, nullptr);
  std::int64_t start = NowNanos();
  Result<Epoch> e = store->BeginIncarnation(1);  // shard 1
  std::int64_t took = NowNanos() - start;
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), Code::kUnavailable);
  EXPECT_THAT(std::string(e.status().message()),
              HasSubstr("store shard 1 (" + endpoint + ") did not answer within 0.3 s"));
  EXPECT_GE(took, kDeadline);
  EXPECT_LT(took, kDeadline + 700'000'000);

  // A ReadCopies asks every shard: the first one that fails is named.
  std::vector<LineageCopy> copies;
  Status s = store->ReadCopies(1, 0, &copies);
  EXPECT_EQ(s.code(), Code::kUnavailable);
  EXPECT_THAT(std::string(s.message()), HasSubstr("store shard 0 (tcp://127.0.0.1:9)"));
}

// A ROUTER/DEALER proxy between clients and a server that drops the first
// `drop` responses, so that the client must retry.
class LossyProxy {
 public:
  LossyProxy(const std::string& backend, int drop) : drop_(drop) {
    front_ = zmq::socket_t(context_, zmq::socket_type::router);
    back_ = zmq::socket_t(context_, zmq::socket_type::dealer);
    front_.set(zmq::sockopt::linger, 0);
    back_.set(zmq::sockopt::linger, 0);
    front_.bind("tcp://127.0.0.1:*");
    endpoint_ = front_.get(zmq::sockopt::last_endpoint);
    back_.connect(backend);
    thread_ = std::thread([this] { Run(); });
  }
  ~LossyProxy() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  int dropped() const { return dropped_.load(); }
  int forwarded_requests() const { return requests_.load(); }

 private:
  void Run() {
    zmq::pollitem_t items[] = {{front_.handle(), 0, ZMQ_POLLIN, 0}, {back_.handle(), 0, ZMQ_POLLIN, 0}};
    while (!stop_) {
      zmq::poll(items, 2, std::chrono::milliseconds(20));
      std::vector<zmq::message_t> parts;
      if (items[0].revents & ZMQ_POLLIN) {
        if (zmq::recv_multipart(front_, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
          ++requests_;
          zmq::send_multipart(back_, parts);
        }
      }
      parts.clear();
      if (items[1].revents & ZMQ_POLLIN) {
        if (zmq::recv_multipart(back_, std::back_inserter(parts), zmq::recv_flags::dontwait)) {
          if (dropped_.load() < drop_) {
            ++dropped_;
          } else {
            zmq::send_multipart(front_, parts, zmq::send_flags::dontwait);
          }
        }
      }
    }
  }

  const int drop_;
  zmq::context_t context_;
  zmq::socket_t front_, back_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<int> dropped_{0};
  std::atomic<int> requests_{0};
  std::thread thread_;
};

TEST(RemoteStoreTest, ALostResponseIsRetriedAndNotAppliedTwice) {
  ScratchDir dir;
  StoreServerOptions options;
  options.listen = "tcp://127.0.0.1:0";
  options.data_dir = dir.path();
  auto server = StoreServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  LossyProxy proxy((*server)->endpoint(), /*drop=*/2);
  auto store = OpenClient({proxy.endpoint()}, 150'000'000, 5'000'000'000);
  ASSERT_NE(store, nullptr);

  Result<Epoch> e = store->BeginIncarnation(3);  // answered the third time
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(*e, 1u);
  EXPECT_EQ(proxy.dropped(), 2);
  EXPECT_EQ(proxy.forwarded_requests(), 3);
  EXPECT_EQ((*server)->GetMetrics().retries_answered, 2u);
  Result<std::vector<EpochRecord>> epochs = store->Epochs(3);
  ASSERT_TRUE(epochs.ok());
  ASSERT_EQ(epochs->size(), 1u);  // one incarnation, not three
  RS_ASSERT_OK(store->Append(3, *e, Records(1, 5), {}));
  LogIndex committed = 0;
  WorkerId w = 3;
  RS_ASSERT_OK(store->ReadCommitted({&w, 1}, {&committed, 1}));
  EXPECT_EQ(committed, 5u);
}

// A checkpoint's record gets time in proportion to its size, on top of the
// call's timeouts: a server that takes longer than a whole call's deadline
// to store it (here a slow store, 0.6 s before each write) stores it once,
// not once per try, and the call succeeds. With only the fixed timeouts it
// would fail kUnavailable, having sent the record again every 30 ms.
TEST(RemoteStoreTest, ABigCheckpointGetsTimeForItsSizeAndIsSentOnce) {
  ScratchDir dir;
  StoreServerOptions options;
  options.listen = "tcp://127.0.0.1:0";
  options.data_dir = dir.path();
  options.write_delay_nanos = 600'000'000;
  auto server = StoreServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  auto patient = OpenClient({(*server)->endpoint()}, 5'000'000'000, 10'000'000'000);
  auto store = OpenClient({(*server)->endpoint()}, 30'000'000, 300'000'000);
  ASSERT_NE(patient, nullptr);
  ASSERT_NE(store, nullptr);
  Result<Epoch> e = patient->BeginIncarnation(1);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  RS_ASSERT_OK(patient->Append(1, *e, Records(1, 3), {}));
  const std::uint64_t writes_before = (*server)->GetMetrics().requests;

  const std::string record(32 << 20, 'c');  // 8 s more per try at 4 MiB/s
  RS_ASSERT_OK(store->PutCheckpoint(1, *e, 2, record));
  EXPECT_EQ((*server)->GetMetrics().requests - writes_before, 1u) << "the record was sent more than once";
  Result<std::optional<StoredCheckpoint>> stored = patient->LatestCheckpoint(1);
  ASSERT_TRUE(stored.ok()) << stored.status().ToString();
  ASSERT_TRUE(stored->has_value());
  EXPECT_EQ((*stored)->at, 2u);
  EXPECT_TRUE((*stored)->bytes == record);

  // A small record gets little more than the fixed timeouts.
  EXPECT_EQ(store->PutCheckpoint(1, *e, 3, "small").code(), Code::kUnavailable);
}

// With two shards, copies of worker 2's entries written by worker 1 live on
// worker 1's shard, which never learns what worker 2 commits: reads filter
// them, and worker 2's checkpoint deletes them there.
TEST(RemoteStoreTest, CopiesOnAnotherShardAreFilteredThenCollectedByTheOwnersCheckpoint) {
  ScratchDir dir;
  std::vector<std::unique_ptr<StoreServer>> servers;
  std::vector<std::string> endpoints;
  for (int k = 0; k < 2; ++k) {
    StoreServerOptions options;
    options.listen = "tcp://127.0.0.1:0";
    options.data_dir = dir.path() + "/shard" + std::to_string(k);
    auto server = StoreServer::Start(options);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    endpoints.push_back((*server)->endpoint());
    servers.push_back(std::move(server).value());
  }
  auto store = OpenClient(endpoints, 1'000'000'000, 5'000'000'000);
  auto shard1 = OpenClient({endpoints[1]}, 1'000'000'000, 5'000'000'000);  // sees shard 1 alone
  ASSERT_TRUE(store != nullptr && shard1 != nullptr);
  Result<Epoch> e1 = store->BeginIncarnation(1);  // shard 1
  Result<Epoch> e2 = store->BeginIncarnation(2);  // shard 0
  ASSERT_TRUE(e1.ok() && e2.ok());
  std::vector<LineageCopy> copies;
  for (LogIndex i = 1; i <= 5; ++i) copies.push_back({2, *e2, i, EntryBytes(i)});
  RS_ASSERT_OK(store->Append(1, *e1, Records(1, 1), copies));
  RS_ASSERT_OK(store->Append(2, *e2, Records(1, 4), {}));

  auto indexes = [](Store* s) {
    std::vector<LineageCopy> out;
    Status st = s->ReadCopies(2, 0, &out);
    EXPECT_TRUE(st.ok()) << st.ToString();
    std::vector<LogIndex> result;
    for (const LineageCopy& c : out) result.push_back(c.index);
    return result;
  };
  EXPECT_EQ(indexes(store.get()), std::vector<LogIndex>({5}));
  EXPECT_EQ(indexes(shard1.get()), std::vector<LogIndex>({1, 2, 3, 4, 5}));  // still stored
  RS_ASSERT_OK(store->PutCheckpoint(2, *e2, 4, "ck"));
  EXPECT_EQ(indexes(shard1.get()), std::vector<LogIndex>({5}));  // collected
  EXPECT_EQ(indexes(store.get()), std::vector<LogIndex>({5}));
}

// The scenario: a client appends continuously; the server is killed
// with SIGKILL mid-stream and restarted on the same directory and endpoint.
// Every acknowledged record must be there, the in-flight append completes
// by retrying, and the client carries on.
TEST(RemoteStoreTest, ServerKilledWithSigkillUnderLoadLosesNothingAcknowledged) {
  ScratchDir dir;
  const std::string data = dir.path() + "/data";
  StoreProcess server;
  const std::string endpoint = server.Start({"--listen", "tcp://127.0.0.1:0", "--data", data, "--threads", "4"});
  ASSERT_THAT(endpoint, StartsWith("tcp://127.0.0.1:"));

  auto store = OpenClient({endpoint}, 200'000'000, 10'000'000'000);
  ASSERT_NE(store, nullptr);
  constexpr WorkerId kWorker = 1;
  Result<Epoch> epoch = store->BeginIncarnation(kWorker);
  ASSERT_TRUE(epoch.ok()) << epoch.status().ToString();
  RS_ASSERT_OK(store->RenewLease(kWorker, *epoch, 60'000'000'000));

  constexpr LogIndex kBatch = 50;
  std::atomic<LogIndex> acked{0};
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> slowest_append{0};
  std::mutex failure_mu;
  std::string failure;
  std::thread appender([&] {
    for (LogIndex next = 1; !stop.load(); next += kBatch) {
      std::int64_t start = NowNanos();
      Status s = store->Append(kWorker, *epoch, Records(next, next + kBatch - 1), {});
      std::int64_t took = NowNanos() - start;
      if (took > slowest_append.load()) slowest_append.store(took);
      if (!s.ok()) {
        std::lock_guard<std::mutex> lock(failure_mu);
        failure = s.ToString();
        return;
      }
      acked.store(next + kBatch - 1);
    }
  });
  struct JoinOnExit {
    std::atomic<bool>* stop;
    std::thread* thread;
    ~JoinOnExit() {
      stop->store(true);
      if (thread->joinable()) thread->join();
    }
  } join_on_exit{&stop, &appender};

  auto wait_for = [&](LogIndex target) {
    std::int64_t deadline = NowNanos() + 20'000'000'000;
    while (acked.load() < target && NowNanos() < deadline) {
      {
        std::lock_guard<std::mutex> lock(failure_mu);
        if (!failure.empty()) return false;
      }
      std::this_thread::yield();
    }
    return acked.load() >= target;
  };

  ASSERT_TRUE(wait_for(2000)) << failure;
  server.Kill();  // SIGKILL, reaped
  const LogIndex acked_at_kill = acked.load();
  const std::int64_t killed_at = NowNanos();

  const std::string restarted = server.Start({"--listen", endpoint, "--data", data, "--threads", "4"});
  ASSERT_EQ(restarted, endpoint);
  ASSERT_TRUE(wait_for(acked_at_kill + 2000)) << failure;
  const std::int64_t recovered_after = NowNanos() - killed_at;
  stop.store(true);
  appender.join();
  {
    std::lock_guard<std::mutex> lock(failure_mu);
    ASSERT_TRUE(failure.empty()) << failure;
  }
  const LogIndex final_acked = acked.load();

  std::vector<LogRecord> log;
  RS_ASSERT_OK(store->ReadLog(kWorker, 0, &log));
  ASSERT_GE(log.size(), final_acked);
  for (LogIndex i = 1; i <= final_acked; ++i) {
    ASSERT_EQ(log[i - 1].index, i);
    ASSERT_EQ(log[i - 1].bytes, EntryBytes(i)) << i;
  }
  LogIndex committed = 0;
  WorkerId w = kWorker;
  RS_ASSERT_OK(store->ReadCommitted({&w, 1}, {&committed, 1}));
  EXPECT_EQ(committed, final_acked);
  Result<std::vector<EpochRecord>> epochs = store->Epochs(kWorker);
  ASSERT_TRUE(epochs.ok());
  EXPECT_EQ(epochs->size(), 1u);
  std::printf("[ kill -9 ] %llu records acknowledged before SIGKILL, %llu after restart, all %llu present; "
              "appends resumed %.0f ms after the kill; slowest append %.0f ms\n",
              static_cast<unsigned long long>(acked_at_kill), static_cast<unsigned long long>(final_acked),
              static_cast<unsigned long long>(log.size()), static_cast<double>(recovered_after) / 1e6,
              static_cast<double>(slowest_append.load()) / 1e6);
}

TEST(RemoteStoreTest, CurveAdmitsOnlyAllowedClients) {
  Result<CurveKeyPair> server_keys = GenerateCurveKeyPair();
  if (!server_keys.ok() && server_keys.status().code() == Code::kFailedPrecondition) {
    GTEST_SKIP() << server_keys.status().ToString();
  }
  ASSERT_TRUE(server_keys.ok()) << server_keys.status().ToString();
  Result<CurveKeyPair> client_keys = GenerateCurveKeyPair();
  Result<CurveKeyPair> stranger_keys = GenerateCurveKeyPair();
  ASSERT_TRUE(client_keys.ok() && stranger_keys.ok());

  ScratchDir dir;
  StoreServerOptions options;
  options.listen = "tcp://127.0.0.1:0";
  options.data_dir = dir.path();
  options.curve = CurveSecurity{*server_keys, {client_keys->public_key}, {}};
  auto server = StoreServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  const std::string endpoint = (*server)->endpoint();

  auto stranger = OpenClient({endpoint}, 100'000'000, 500'000'000,
                             CurveSecurity{*stranger_keys, {}, {server_keys->public_key}});
  ASSERT_NE(stranger, nullptr);
  Result<Epoch> refused = stranger->BeginIncarnation(1);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), Code::kUnavailable) << refused.status().ToString();

  // A client without CURVE is not served either.
  auto plain = OpenClient({endpoint}, 100'000'000, 300'000'000);
  ASSERT_NE(plain, nullptr);
  EXPECT_EQ(plain->BeginIncarnation(1).status().code(), Code::kUnavailable);

  auto client = OpenClient({endpoint}, 1'000'000'000, 5'000'000'000,
                           CurveSecurity{*client_keys, {}, {server_keys->public_key}});
  ASSERT_NE(client, nullptr);
  Result<std::vector<EpochRecord>> epochs = client->Epochs(1);
  ASSERT_TRUE(epochs.ok()) << epochs.status().ToString();
  EXPECT_TRUE(epochs->empty());  // nothing the others sent was applied
  Result<Epoch> e = client->BeginIncarnation(1);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(*e, 1u);
  RS_ASSERT_OK(client->Append(1, *e, Records(1, 3), {}));
  EXPECT_EQ((*server)->GetMetrics().requests, 3u);
}

TEST(RemoteStoreTest, CurveThroughTheCommand) {
  Result<CurveKeyPair> probe = GenerateCurveKeyPair();
  if (!probe.ok() && probe.status().code() == Code::kFailedPrecondition) GTEST_SKIP() << probe.status().ToString();
  ScratchDir dir;
  const std::string keys = dir.path() + "/keys";
  for (const char* name : {"store-0", "worker-0"}) {
    Result<CurveKeyPair> k = GenerateCurveKeyPair();
    ASSERT_TRUE(k.ok());
    RS_ASSERT_OK(WriteCurveKeyPair(*k, keys, name));
  }
  StoreProcess server;
  const std::string endpoint = server.Start(
      {"--listen", "tcp://127.0.0.1:0", "--data", dir.path() + "/data", "--keys", keys, "--name", "store-0"});
  ASSERT_FALSE(endpoint.empty());
  Result<CurveKeyPair> worker = ReadCurveKeyPair(keys, "worker-0");
  Result<std::string> store_key = ReadCurvePublicKey(keys, "store-0");
  ASSERT_TRUE(worker.ok() && store_key.ok());
  auto client = OpenClient({endpoint}, 1'000'000'000, 5'000'000'000, CurveSecurity{*worker, {}, {*store_key}});
  ASSERT_NE(client, nullptr);
  Result<Epoch> e = client->BeginIncarnation(0);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(*e, 1u);
}

}  // namespace
}  // namespace lstash
