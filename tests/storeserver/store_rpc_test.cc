// The store RPC codec: every request and response round-trips, and the
// decoders reject whatever is not a message they wrote.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "storeserver/store_rpc.h"

namespace lstash::store_rpc {
namespace {

using ::testing::HasSubstr;

constexpr RequestIds kIds{0x1122334455667788ULL, 42};

std::vector<LogRecord> SomeRecords() { return {{7, "seven"}, {8, std::string("\0eight\xff", 7)}, {9, ""}}; }
std::vector<LineageCopy> SomeCopies() { return {{3, 2, 11, "copy a"}, {4, 1, 12, ""}}; }

// One request of every method.
std::vector<Request> AllRequests() {
  std::vector<Request> out;
  auto add = [&](Method m) -> Request& {
    out.emplace_back();
    out.back().ids = RequestIds{kIds.client_id, kIds.request_id + out.size()};
    out.back().method = m;
    return out.back();
  };
  add(Method::kBeginIncarnation).worker = 9;
  {
    Request& r = add(Method::kSetEpochStart);
    r.worker = 3;
    r.epoch = 4;
    r.index = 5;
  }
  add(Method::kEpochs).worker = 0xffffffff;
  {
    Request& r = add(Method::kAppend);
    r.worker = 1;
    r.epoch = 2;
    r.records = SomeRecords();
    r.copies = SomeCopies();
  }
  {
    Request& r = add(Method::kAppend);  // empty vectors
    r.worker = 1;
    r.epoch = 2;
  }
  {
    Request& r = add(Method::kReadCopies);
    r.worker = 6;
    r.index = 100;
  }
  {
    Request& r = add(Method::kReadLog);
    r.worker = 6;
    r.index = ~LogIndex{0};
  }
  add(Method::kReadCommitted).workers = {1, 2, 3, 0xffffffff};
  {
    Request& r = add(Method::kPutCheckpoint);
    r.worker = 2;
    r.epoch = 3;
    r.index = 4;
    r.bytes = std::string("snap\0shot", 9);
  }
  {
    Request& r = add(Method::kReadCheckpointPart);
    r.worker = 8;
    r.offset = 4 << 20;
    r.max_bytes = ~std::uint64_t{0};  // the rest, however big
  }
  {
    Request& r = add(Method::kRenewLease);
    r.worker = 2;
    r.epoch = 3;
    r.duration_nanos = -5;  // carried as is; the server refuses it
  }
  {
    Request& r = add(Method::kDropCopies);
    r.worker = 2;
    r.index = 77;
  }
  return out;
}

std::vector<Response> AllResponses() {
  std::vector<Response> out;
  auto add = [&](Method m) -> Response& {
    out.emplace_back();
    out.back().request_id = 1000 + out.size();
    out.back().method = m;
    return out.back();
  };
  add(Method::kBeginIncarnation).epoch = 17;
  add(Method::kSetEpochStart);
  add(Method::kEpochs).epochs = {{1, 10}, {2, 0}};
  add(Method::kAppend);
  add(Method::kReadCopies).copies = SomeCopies();
  add(Method::kReadLog).records = SomeRecords();
  add(Method::kReadCommitted).committed = {0, 5, ~LogIndex{0}};
  add(Method::kPutCheckpoint);
  add(Method::kReadCheckpointPart);  // none
  add(Method::kReadCheckpointPart).checkpoint_part = CheckpointPart{3, 9, 12, std::string("ck\0pt", 5)};
  add(Method::kReadCheckpointPart).checkpoint_part = CheckpointPart{4, 10, 0, ""};  // a record's end
  add(Method::kRenewLease);
  add(Method::kDropCopies);
  add(Method::kAppend).status = FailedPrecondition("worker 1 incarnation 1 is fenced (current incarnation 2)");
  add(static_cast<Method>(0)).status = Corruption("store request: unknown method 99");
  return out;
}

std::string Encoded(const Request& r) {
  std::string bytes;
  EncodeRequest(r, &bytes);
  return bytes;
}

std::string Encoded(const Response& r) {
  std::string bytes;
  EncodeResponse(r, &bytes);
  return bytes;
}

// Overwrites the little-endian field of `size` bytes at `offset` with `value`.
std::string Patch(std::string bytes, size_t offset, std::uint64_t value, int size) {
  for (int i = 0; i < size; ++i) bytes[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
  return bytes;
}

TEST(StoreRpcTest, EveryRequestRoundTrips) {
  for (const Request& r : AllRequests()) {
    SCOPED_TRACE(MethodName(r.method));
    std::string bytes = Encoded(r);
    Request decoded;
    std::optional<RequestIds> ids;
    Status s = DecodeRequest(bytes, &decoded, &ids);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(ids.has_value());
    EXPECT_EQ(*ids, r.ids);
    EXPECT_EQ(decoded.method, r.method);
    EXPECT_EQ(Encoded(decoded), bytes);  // the encoding is canonical
  }
  // Fields land where they belong.
  Request append = AllRequests()[3];
  Request decoded;
  std::optional<RequestIds> ids;
  ASSERT_TRUE(DecodeRequest(Encoded(append), &decoded, &ids).ok());
  EXPECT_EQ(decoded.worker, 1u);
  EXPECT_EQ(decoded.epoch, 2u);
  ASSERT_EQ(decoded.records.size(), 3u);
  EXPECT_EQ(decoded.records[1].index, 8u);
  EXPECT_EQ(decoded.records[1].bytes, std::string("\0eight\xff", 7));
  ASSERT_EQ(decoded.copies.size(), 2u);
  EXPECT_EQ(decoded.copies[0].owner, 3u);
  EXPECT_EQ(decoded.copies[0].epoch, 2u);
  EXPECT_EQ(decoded.copies[0].index, 11u);
  EXPECT_EQ(decoded.copies[0].bytes, "copy a");
}

TEST(StoreRpcTest, EveryResponseRoundTrips) {
  for (const Response& r : AllResponses()) {
    SCOPED_TRACE(MethodName(r.method));
    std::string bytes = Encoded(r);
    Response decoded;
    Status s = DecodeResponse(bytes, &decoded);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(decoded.request_id, r.request_id);
    EXPECT_EQ(decoded.method, r.method);
    EXPECT_EQ(decoded.status.code(), r.status.code());
    EXPECT_EQ(decoded.status.message(), r.status.message());
    EXPECT_EQ(Encoded(decoded), bytes);
    EXPECT_EQ(PeekResponseId(bytes), std::optional<std::uint64_t>(r.request_id));
  }
  Response none;
  ASSERT_TRUE(DecodeResponse(Encoded(AllResponses()[8]), &none).ok());
  EXPECT_FALSE(none.checkpoint_part.has_value());
  Response part;
  ASSERT_TRUE(DecodeResponse(Encoded(AllResponses()[9]), &part).ok());
  ASSERT_TRUE(part.checkpoint_part.has_value());
  EXPECT_EQ(part.checkpoint_part->epoch, 3u);
  EXPECT_EQ(part.checkpoint_part->at, 9u);
  EXPECT_EQ(part.checkpoint_part->total_bytes, 12u);
  EXPECT_EQ(part.checkpoint_part->bytes, std::string("ck\0pt", 5));
}

TEST(StoreRpcTest, CheckpointPartRequestCarriesOffsetAndMaxBytes) {
  Request decoded;
  std::optional<RequestIds> ids;
  std::string bytes;
  EncodeReadCheckpointPart(kIds, 8, 12345, 67890, &bytes);
  ASSERT_TRUE(DecodeRequest(bytes, &decoded, &ids).ok());
  EXPECT_EQ(decoded.method, Method::kReadCheckpointPart);
  EXPECT_EQ(decoded.worker, 8u);
  EXPECT_EQ(decoded.offset, 12345u);
  EXPECT_EQ(decoded.max_bytes, 67890u);
}

// The offset of a part response's presence flag, after the header and an
// empty status message.
constexpr size_t kPartPresenceAt = 7 + 8 + 1 + 1 + 8;

TEST(StoreRpcTest, DamagedCheckpointPartResponsesAreRejected) {
  Response response;
  response.method = Method::kReadCheckpointPart;
  response.checkpoint_part = CheckpointPart{3, 9, 5, "12345"};
  const std::string good = Encoded(response);
  Response decoded;
  ASSERT_TRUE(DecodeResponse(good, &decoded).ok());

  std::string bad_flag = good;
  bad_flag[kPartPresenceAt] = 2;
  Status s = DecodeResponse(bad_flag, &decoded);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_THAT(std::string(s.message()), HasSubstr("bad checkpoint presence flag 2"));

  // A part cannot hold more bytes than its whole record.
  s = DecodeResponse(Patch(good, kPartPresenceAt + 1 + 8 + 8, 4, 8), &decoded);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_THAT(std::string(s.message()), HasSubstr("checkpoint part of 5 bytes is longer than its record of 4"));

  s = DecodeResponse(std::string_view(good).substr(0, good.size() - 1), &decoded);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_THAT(std::string(s.message()), HasSubstr("checkpoint part length 5"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("ReadCheckpointPart"));
}

TEST(StoreRpcTest, EveryTruncationIsRejected) {
  for (const Request& r : AllRequests()) {
    std::string bytes = Encoded(r);
    for (size_t n = 0; n < bytes.size(); ++n) {
      Request decoded;
      std::optional<RequestIds> ids;
      Status s = DecodeRequest(std::string_view(bytes).substr(0, n), &decoded, &ids);
      ASSERT_EQ(s.code(), Code::kCorruption) << MethodName(r.method) << " cut at " << n << ": " << s.ToString();
      // The ids are recovered exactly when the header is complete.
      EXPECT_EQ(ids.has_value(), n >= 7 + 16) << n;
    }
  }
  for (const Response& r : AllResponses()) {
    std::string bytes = Encoded(r);
    for (size_t n = 0; n < bytes.size(); ++n) {
      Response decoded;
      Status s = DecodeResponse(std::string_view(bytes).substr(0, n), &decoded);
      ASSERT_EQ(s.code(), Code::kCorruption) << MethodName(r.method) << " cut at " << n << ": " << s.ToString();
    }
  }
}

TEST(StoreRpcTest, TrailingBytesAreRejected) {
  std::string bytes = Encoded(AllRequests()[0]) + "x";
  Request decoded;
  std::optional<RequestIds> ids;
  Status s = DecodeRequest(bytes, &decoded, &ids);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_THAT(std::string(s.message()), HasSubstr("1 trailing bytes"));
  Response response;
  EXPECT_EQ(DecodeResponse(Encoded(AllResponses()[0]) + "x", &response).code(), Code::kCorruption);
}

TEST(StoreRpcTest, BadMagicVersionFlagAndMethodAreRejected) {
  const std::string good = Encoded(AllRequests()[0]);
  Request decoded;
  std::optional<RequestIds> ids;
  Response response;

  std::string bad_magic = good;
  bad_magic[0] ^= 1;
  Status s = DecodeRequest(bad_magic, &decoded, &ids);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_THAT(std::string(s.message()), HasSubstr("bad magic"));
  EXPECT_FALSE(ids.has_value());

  std::string response_as_request = Encoded(AllResponses()[0]);
  EXPECT_EQ(DecodeRequest(response_as_request, &decoded, &ids).code(), Code::kCorruption);

  // Version 1 had a whole-checkpoint method 9; a peer of another version is
  // refused by name, not misread.
  for (std::uint16_t version : {kRpcVersion - 1, kRpcVersion + 1}) {
    std::string other_version = good;
    other_version[4] = static_cast<char>(version);
    s = DecodeRequest(other_version, &decoded, &ids);
    EXPECT_EQ(s.code(), Code::kFailedPrecondition);
    EXPECT_THAT(std::string(s.message()), HasSubstr("format version " + std::to_string(version) +
                                                    " (this build speaks version " + std::to_string(kRpcVersion)));
    EXPECT_FALSE(ids.has_value());
    std::string other_response = Encoded(AllResponses()[9]);
    other_response[4] = static_cast<char>(version);
    EXPECT_EQ(DecodeResponse(other_response, &response).code(), Code::kFailedPrecondition);
  }

  std::string big_endian = good;
  big_endian[6] = 0;
  s = DecodeRequest(big_endian, &decoded, &ids);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_THAT(std::string(s.message()), HasSubstr("byte-order"));

  for (std::uint8_t method : {0, 12, 255}) {
    std::string bad_method = good;
    bad_method[7 + 16] = static_cast<char>(method);
    s = DecodeRequest(bad_method, &decoded, &ids);
    EXPECT_EQ(s.code(), Code::kCorruption);
    EXPECT_THAT(std::string(s.message()), HasSubstr("unknown method " + std::to_string(method)));
    ASSERT_TRUE(ids.has_value());  // the server can still answer it
    EXPECT_EQ(*ids, AllRequests()[0].ids);
  }

  std::string bad_code = Encoded(AllResponses()[0]);
  bad_code[7 + 8 + 1] = 99;
  EXPECT_EQ(DecodeResponse(bad_code, &response).code(), Code::kCorruption);
  std::string ok_method_zero = Encoded(AllResponses()[0]);
  ok_method_zero[7 + 8] = 0;
  EXPECT_EQ(DecodeResponse(ok_method_zero, &response).code(), Code::kCorruption);
}

TEST(StoreRpcTest, HugeCountsAndLengthsAreRejectedBeforeAllocating) {
  Request append;
  append.ids = kIds;
  append.method = Method::kAppend;
  append.worker = 1;
  append.epoch = 1;
  append.records = {{1, "abc"}};
  const std::string good = Encoded(append);
  const size_t records_count = 7 + 16 + 1 + 4 + 8;
  const size_t first_length = records_count + 4 + 8;
  Request decoded;
  std::optional<RequestIds> ids;
  for (std::uint64_t count : {std::uint64_t{2}, std::uint64_t{0xffffffff}}) {
    Status s = DecodeRequest(Patch(good, records_count, count, 4), &decoded, &ids);
    EXPECT_EQ(s.code(), Code::kCorruption) << count;
    EXPECT_THAT(std::string(s.message()), HasSubstr("records count"));
  }
  for (std::uint64_t length : {std::uint64_t{8}, std::uint64_t{1} << 40, ~std::uint64_t{0}}) {
    Status s = DecodeRequest(Patch(good, first_length, length, 8), &decoded, &ids);
    EXPECT_EQ(s.code(), Code::kCorruption) << length;
    EXPECT_THAT(std::string(s.message()), HasSubstr("length"));
  }
  Request read_committed;
  read_committed.ids = kIds;
  read_committed.method = Method::kReadCommitted;
  read_committed.workers = {1};
  Status s = DecodeRequest(Patch(Encoded(read_committed), 7 + 16 + 1, 0xfffffff0, 4), &decoded, &ids);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_THAT(std::string(s.message()), HasSubstr("workers count"));

  Response log;
  log.method = Method::kReadLog;
  log.records = {{1, "x"}};
  std::string log_bytes = Encoded(log);
  Response response;
  s = DecodeResponse(Patch(log_bytes, 7 + 8 + 1 + 1 + 8, 0x7fffffff, 4), &response);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_THAT(std::string(s.message()), HasSubstr("records count"));
  s = DecodeResponse(Patch(log_bytes, 7 + 8 + 1 + 1, 1ULL << 50, 8), &response);  // status message length
  EXPECT_EQ(s.code(), Code::kCorruption);
}

// Random byte flips: never a crash, and anything accepted is canonical.
TEST(StoreRpcTest, RandomByteFlipsNeverCrashAndAcceptedMessagesAreCanonical) {
  std::mt19937_64 rng(20240611);
  std::vector<std::string> requests, responses;
  for (const Request& r : AllRequests()) requests.push_back(Encoded(r));
  for (const Response& r : AllResponses()) responses.push_back(Encoded(r));
  int accepted = 0;
  for (int round = 0; round < 20000; ++round) {
    bool is_request = round % 2 == 0;
    const std::vector<std::string>& pool = is_request ? requests : responses;
    std::string bytes = pool[rng() % pool.size()];
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] ^= static_cast<char>(1 + rng() % 255);
    if (rng() % 8 == 0) bytes.resize(rng() % (bytes.size() + 1));
    if (is_request) {
      Request decoded;
      std::optional<RequestIds> ids;
      if (DecodeRequest(bytes, &decoded, &ids).ok()) {
        ++accepted;
        ASSERT_EQ(Encoded(decoded), bytes);
      }
    } else {
      Response decoded;
      if (DecodeResponse(bytes, &decoded).ok()) {
        ++accepted;
        ASSERT_EQ(Encoded(decoded), bytes);
      }
    }
  }
  EXPECT_GT(accepted, 0);  // flips inside payload bytes and ids are still valid messages
}

}  // namespace
}  // namespace lstash::store_rpc
