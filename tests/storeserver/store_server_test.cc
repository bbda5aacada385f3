// The store server in-process and over raw sockets: endpoint reporting,
// malformed input, retries answered from memory (and, for
// BeginIncarnation, from the store across a restart), leases, and the
// lstash-store command's flags.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <lstash/remote_store.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "scratch_dir.h"
#include "storeserver/store_rpc.h"
#include "storeserver/test_util.h"

namespace lstash {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using storeserver_test::NowNanos;
using storeserver_test::RawClient;
using testing_support::ScratchDir;
using store_rpc::RequestIds;
using store_rpc::Response;

#define SS_ASSERT_OK(expr)                                    \
  do {                                                        \
    ::lstash::Status ss_status_ = (expr);                     \
    ASSERT_TRUE(ss_status_.ok()) << ss_status_.ToString();    \
  } while (0)

std::unique_ptr<StoreServer> StartServer(const std::string& dir, int threads = 2) {
  StoreServerOptions options;
  options.listen = "tcp://127.0.0.1:0";
  options.data_dir = dir;
  options.threads = threads;
  Result<std::unique_ptr<StoreServer>> server = StoreServer::Start(options);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  return server.ok() ? std::move(server).value() : nullptr;
}

std::unique_ptr<Store> Client(const std::string& endpoint) {
  RemoteStoreOptions options;
  options.shards = {endpoint};
  options.attempt_timeout_nanos = 2'000'000'000;
  options.deadline_nanos = 10'000'000'000;
  Result<std::unique_ptr<Store>> store = OpenRemoteStore(options);
  EXPECT_TRUE(store.ok()) << store.status().ToString();
  return store.ok() ? std::move(store).value() : nullptr;
}

// Sends `request` and decodes the answer (a test failure if none comes).
Response Roundtrip(RawClient& client, const std::string& request) {
  client.Send(request);
  Response response;
  std::optional<std::string> reply = client.Receive();
  EXPECT_TRUE(reply.has_value()) << "no answer";
  if (!reply) return response;
  Status s = store_rpc::DecodeResponse(*reply, &response);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return response;
}

std::string Begin(RequestIds ids, WorkerId worker) {
  std::string bytes;
  store_rpc::EncodeBeginIncarnation(ids, worker, &bytes);
  return bytes;
}

std::vector<LogRecord> Records(LogIndex first, LogIndex last) {
  std::vector<LogRecord> out;
  for (LogIndex i = first; i <= last; ++i) out.push_back({i, "entry " + std::to_string(i)});
  return out;
}

TEST(StoreServerTest, ReportsTheBoundEndpointForPortZero) {
  ScratchDir dir;
  auto server = StartServer(dir.path());
  ASSERT_NE(server, nullptr);
  EXPECT_THAT(server->endpoint(), StartsWith("tcp://127.0.0.1:"));
  EXPECT_NE(server->endpoint(), "tcp://127.0.0.1:0");
  EXPECT_NE(server->endpoint(), "tcp://127.0.0.1:*");

  // ipc endpoints are reported as given.
  StoreServerOptions options;
  options.listen = "ipc://" + dir.path() + "/store.sock";
  options.data_dir = dir.path() + "/ipc";
  auto ipc = StoreServer::Start(options);
  ASSERT_TRUE(ipc.ok()) << ipc.status().ToString();
  EXPECT_EQ((*ipc)->endpoint(), options.listen);
  auto store = Client((*ipc)->endpoint());
  ASSERT_NE(store, nullptr);
  Result<Epoch> e = store->BeginIncarnation(1);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(*e, 1u);
}

TEST(StoreServerTest, RefusesBadOptionsAndBusyEndpoints) {
  ScratchDir dir;
  StoreServerOptions options;
  options.data_dir = dir.path();
  options.threads = 0;
  EXPECT_EQ(StoreServer::Start(options).status().code(), Code::kInvalidArgument);

  auto server = StartServer(dir.path() + "/a");
  ASSERT_NE(server, nullptr);
  options.threads = 1;
  options.listen = server->endpoint();
  options.data_dir = dir.path() + "/b";
  Result<std::unique_ptr<StoreServer>> busy = StoreServer::Start(options);
  ASSERT_FALSE(busy.ok());
  EXPECT_THAT(std::string(busy.status().message()), HasSubstr("cannot listen on " + server->endpoint()));
}

TEST(StoreServerTest, GarbageIsRejectedAndTheServerKeepsServing) {
  ScratchDir dir;
  auto server = StartServer(dir.path());
  ASSERT_NE(server, nullptr);
  RawClient raw(server->endpoint());

  // Readable ids, bad body: answered with kCorruption under the request id.
  std::string bad_method = Begin({7, 100}, 1);
  bad_method[7 + 16] = 99;
  Response r = Roundtrip(raw, bad_method);
  EXPECT_EQ(r.request_id, 100u);
  EXPECT_EQ(r.status.code(), Code::kCorruption);
  EXPECT_THAT(std::string(r.status.message()), HasSubstr("unknown method 99"));

  std::string append;
  store_rpc::EncodeAppend({7, 101}, 1, 1, Records(1, 3), {}, &append);
  r = Roundtrip(raw, append.substr(0, append.size() - 2));
  EXPECT_EQ(r.request_id, 101u);
  EXPECT_EQ(r.status.code(), Code::kCorruption);

  // Unreadable: dropped. The next answer is the valid request's.
  std::mt19937 rng(7);
  int garbage = 0;
  for (int i = 0; i < 200; ++i) {
    std::string junk(rng() % 64, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    if (junk.size() >= 4) junk[0] = 'X';  // never a request magic
    raw.Send(junk);
    ++garbage;
  }
  r = Roundtrip(raw, Begin({7, 102}, 1));
  EXPECT_EQ(r.request_id, 102u);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.epoch, 1u);

  StoreServerMetrics m = server->GetMetrics();
  EXPECT_EQ(m.rejected, 2u + garbage);
  EXPECT_EQ(m.requests, 1u);

  // A normal client is unaffected.
  auto store = Client(server->endpoint());
  ASSERT_NE(store, nullptr);
  Result<std::vector<EpochRecord>> epochs = store->Epochs(1);
  ASSERT_TRUE(epochs.ok()) << epochs.status().ToString();
  EXPECT_EQ(epochs->size(), 1u);
}

TEST(StoreServerTest, RetriedWritesAreAnsweredNotAppliedTwice) {
  ScratchDir dir;
  auto server = StartServer(dir.path());
  ASSERT_NE(server, nullptr);
  RawClient raw(server->endpoint());
  const std::uint64_t client = 0xabc;

  Response r = Roundtrip(raw, Begin({client, 1}, 4));
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.epoch, 1u);
  r = Roundtrip(raw, Begin({client, 1}, 4));  // the response was "lost"
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.epoch, 1u);
  EXPECT_EQ(server->GetMetrics().retries_answered, 1u);
  r = Roundtrip(raw, Begin({client + 1, 1}, 4));  // another client, same request id
  EXPECT_EQ(r.epoch, 2u);

  // An append retried after its incarnation was fenced gets its first answer.
  std::string append;
  store_rpc::EncodeAppend({client + 1, 2}, 4, 2, Records(1, 3), {}, &append);
  r = Roundtrip(raw, append);
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  r = Roundtrip(raw, Begin({client, 3}, 4));
  EXPECT_EQ(r.epoch, 3u);
  r = Roundtrip(raw, append);
  EXPECT_TRUE(r.status.ok()) << r.status.ToString();
  std::string fresh_append;
  store_rpc::EncodeAppend({client + 1, 4}, 4, 2, Records(1, 3), {}, &fresh_append);
  r = Roundtrip(raw, fresh_append);
  EXPECT_EQ(r.status.code(), Code::kFailedPrecondition) << r.status.ToString();

  // Two copies sent back to back: one runs, both get its answer.
  raw.Send(Begin({client, 5}, 9));
  raw.Send(Begin({client, 5}, 9));
  for (int i = 0; i < 2; ++i) {
    std::optional<std::string> reply = raw.Receive();
    ASSERT_TRUE(reply.has_value());
    Response answer;
    SS_ASSERT_OK(store_rpc::DecodeResponse(*reply, &answer));
    EXPECT_EQ(answer.request_id, 5u);
    EXPECT_EQ(answer.epoch, 1u);
  }
  auto store = Client(server->endpoint());
  ASSERT_NE(store, nullptr);
  Result<std::vector<EpochRecord>> epochs = store->Epochs(9);
  ASSERT_TRUE(epochs.ok());
  EXPECT_EQ(epochs->size(), 1u);
  epochs = store->Epochs(4);
  ASSERT_TRUE(epochs.ok());
  EXPECT_EQ(epochs->size(), 3u);
  EXPECT_EQ(server->GetMetrics().retries_answered, 3u);
}

TEST(StoreServerTest, BeginIncarnationRetriedAfterARestartGetsTheSameEpoch) {
  ScratchDir dir;
  const std::string data = dir.path() + "/data";
  auto server = StartServer(data);
  ASSERT_NE(server, nullptr);
  Response r;
  {
    RawClient raw(server->endpoint());
    r = Roundtrip(raw, Begin({55, 10}, 2));
    EXPECT_EQ(r.epoch, 1u);
  }
  server.reset();  // its memory of answers is gone; the store is not
  server = StartServer(data);
  ASSERT_NE(server, nullptr);
  RawClient raw(server->endpoint());
  r = Roundtrip(raw, Begin({55, 10}, 2));
  ASSERT_TRUE(r.status.ok()) << r.status.ToString();
  EXPECT_EQ(r.epoch, 1u);
  r = Roundtrip(raw, Begin({55, 11}, 2));
  EXPECT_EQ(r.epoch, 2u);
  // An older request is not handed a fenced epoch: it is a new request.
  server.reset();
  server = StartServer(data);
  ASSERT_NE(server, nullptr);
  RawClient raw2(server->endpoint());
  r = Roundtrip(raw2, Begin({55, 11}, 2));
  EXPECT_EQ(r.epoch, 2u);
  r = Roundtrip(raw2, Begin({55, 10}, 2));
  EXPECT_EQ(r.epoch, 3u);
}

// Waits, on the steady clock, until `nanos` have passed since `since`.
void WaitPast(std::int64_t since, std::int64_t nanos) {
  while (NowNanos() <= since + nanos) std::this_thread::yield();
}

TEST(StoreServerTest, LeasesBoundAnIncarnationsWrites) {
  ScratchDir dir;
  auto server = StartServer(dir.path());
  ASSERT_NE(server, nullptr);
  auto store = Client(server->endpoint());
  ASSERT_NE(store, nullptr);

  Result<Epoch> e1 = store->BeginIncarnation(5);
  ASSERT_TRUE(e1.ok());
  // No lease taken: no constraint.
  SS_ASSERT_OK(store->Append(5, *e1, Records(1, 2), {}));
  SS_ASSERT_OK(store->RenewLease(5, *e1, 60'000'000'000));
  SS_ASSERT_OK(store->Append(5, *e1, Records(3, 4), {}));
  EXPECT_EQ(store->RenewLease(5, *e1, -1).code(), Code::kInvalidArgument);

  // A short renewal, then let it lapse.
  constexpr std::int64_t kShort = 20'000'000;
  SS_ASSERT_OK(store->RenewLease(5, *e1, kShort));
  std::int64_t renewed = NowNanos();
  WaitPast(renewed, kShort + 1'000'000);
  // Writes are refused until the lease is renewed (Unavailable: the writer
  // renews and retries; a replaced writer's renewal is fenced, below).
  Status s = store->Append(5, *e1, Records(5, 5), {});
  EXPECT_EQ(s.code(), Code::kUnavailable) << s.ToString();
  EXPECT_THAT(std::string(s.message()), HasSubstr("worker 5 incarnation 1 lease lapsed"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("renew it before writing"));
  EXPECT_EQ(store->SetEpochStart(5, *e1, 3).code(), Code::kUnavailable);
  EXPECT_EQ(store->PutCheckpoint(5, *e1, 2, "ck").code(), Code::kUnavailable);
  // Reads are not leased; nothing was written.
  std::vector<LogRecord> log;
  SS_ASSERT_OK(store->ReadLog(5, 0, &log));
  EXPECT_EQ(log.size(), 4u);
  Result<std::optional<StoredCheckpoint>> checkpoint = store->LatestCheckpoint(5);
  ASSERT_TRUE(checkpoint.ok());
  EXPECT_FALSE(checkpoint->has_value());
  // Not replaced yet, the incarnation renews its lapsed lease and writes.
  SS_ASSERT_OK(store->RenewLease(5, *e1, 60'000'000'000));
  SS_ASSERT_OK(store->Append(5, *e1, Records(5, 5), {}));

  // The next incarnation writes; the old one's renewal is fenced.
  Result<Epoch> e2 = store->BeginIncarnation(5);
  ASSERT_TRUE(e2.ok());
  SS_ASSERT_OK(store->Append(5, *e2, Records(5, 5), {}));
  s = store->RenewLease(5, *e1, 60'000'000'000);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
  EXPECT_THAT(std::string(s.message()), HasSubstr("is fenced"));
  SS_ASSERT_OK(store->RenewLease(5, *e2, 60'000'000'000));
  SS_ASSERT_OK(store->Append(5, *e2, Records(6, 6), {}));
  SS_ASSERT_OK(store->SetEpochStart(5, *e2, 5));
  SS_ASSERT_OK(store->PutCheckpoint(5, *e2, 6, "ck"));
  // Other workers are unaffected by worker 5's leases.
  Result<Epoch> other = store->BeginIncarnation(6);
  ASSERT_TRUE(other.ok());
  SS_ASSERT_OK(store->Append(6, *other, Records(1, 1), {}));
}

TEST(StoreServerTest, DestructorStopsPromptlyWithClientsConnected) {
  ScratchDir dir;
  auto server = StartServer(dir.path(), 4);
  ASSERT_NE(server, nullptr);
  auto store = Client(server->endpoint());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->BeginIncarnation(1).ok());
  RawClient idle(server->endpoint());
  std::int64_t start = NowNanos();
  server.reset();
  EXPECT_LT(NowNanos() - start, 2'000'000'000);
}

// ---------------------------------------------------------------------------
// The lstash-store command.

TEST(StoreServerCommandTest, RefusesBadFlagsAndUnreadableStores) {
  using storeserver_test::RunStoreToExit;
  ScratchDir dir;
  auto [code, err] = RunStoreToExit({"--listen", "tcp://127.0.0.1:0"});  // no --data
  EXPECT_NE(code, 0);
  EXPECT_THAT(err, HasSubstr("--data"));
  std::tie(code, err) = RunStoreToExit({"--data", dir.path() + "/x", "--threads", "0"});
  EXPECT_NE(code, 0);
  std::tie(code, err) = RunStoreToExit({"--data", dir.path() + "/x", "--curve-secret", dir.path() + "/k/none"});
  EXPECT_NE(code, 0);
  EXPECT_THAT(err, HasSubstr("--curve-secret and --curve-allow go together"));
  std::tie(code, err) = RunStoreToExit({"--data", dir.path() + "/x", "--listen", "bogus://nowhere"});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(err, HasSubstr("cannot listen on bogus://nowhere"));

  // A directory that is not an lstash store.
  std::string not_a_store = dir.path() + "/file";
  std::ofstream(not_a_store) << "hello";
  std::tie(code, err) = RunStoreToExit({"--data", not_a_store});
  EXPECT_EQ(code, 1);
  EXPECT_THAT(err, HasSubstr("cannot open lstash store"));
}

TEST(StoreServerCommandTest, ServesUntilSigterm) {
  ScratchDir dir;
  storeserver_test::StoreProcess process;
  std::string endpoint =
      process.Start({"--listen", "tcp://127.0.0.1:0", "--data", dir.path() + "/data", "--threads", "2"});
  ASSERT_THAT(endpoint, StartsWith("tcp://127.0.0.1:"));
  auto store = Client(endpoint);
  ASSERT_NE(store, nullptr);
  Result<Epoch> e = store->BeginIncarnation(3);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  SS_ASSERT_OK(store->Append(3, *e, Records(1, 10), {}));
  int status = process.Stop(SIGTERM);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);

  // Everything is there for the next one.
  endpoint = process.Start({"--listen", "tcp://127.0.0.1:0", "--data", dir.path() + "/data"});
  store = Client(endpoint);
  ASSERT_NE(store, nullptr);
  std::vector<LogRecord> log;
  SS_ASSERT_OK(store->ReadLog(3, 0, &log));
  EXPECT_EQ(log.size(), 10u);
  status = process.Stop(SIGINT);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace lstash
