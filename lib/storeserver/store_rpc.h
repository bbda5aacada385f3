// The store RPC: requests a RemoteStore sends to a store server, and the
// server's responses. Internal to lstash (lib/storeserver).
//
// Every message is one ZeroMQ frame laid out like the records of
// lib/wire/format.h:
//
//   magic    u32 LE   kRequestMagic ("LSRQ") or kResponseMagic ("LSRP")
//   version  u16 LE   kRpcVersion
//   flag     u8       byte order, always 1 (little-endian)
//
// then fixed-width little-endian fields; byte strings are a u64 length then
// the bytes, vectors a u32 count then the elements.
//
//   request:  client_id u64, request_id u64, method u8, then by method
//     kBeginIncarnation  worker u32
//     kSetEpochStart     worker u32, epoch u64, start u64
//     kEpochs            worker u32
//     kAppend            worker u32, epoch u64,
//                        records [u32 count; index u64, bytes],
//                        copies  [u32 count; owner u32, epoch u64, index u64, bytes]
//     kReadCopies        owner u32, from u64
//     kReadLog           worker u32, from u64
//     kReadCommitted     workers [u32 count; u32]
//     kPutCheckpoint     worker u32, epoch u64, at u64, record bytes
//     kReadCheckpointPart worker u32, offset u64, max_bytes u64
//     kRenewLease        worker u32, epoch u64, duration_nanos i64 (two's complement)
//     kDropCopies        owner u32, upto u64   (internal: see DropCopies below)
//
//   response: request_id u64, method u8 (echoed; 0 answers a request that
//             could not be decoded, with an error), code u8 (lstash::Code),
//             message bytes, then, only when code is kOk, by method
//     kBeginIncarnation  epoch u64
//     kEpochs            [u32 count; epoch u64, start u64]
//     kReadCopies        copies (as in kAppend)
//     kReadLog           records (as in kAppend)
//     kReadCommitted     [u32 count; u64]
//     kReadCheckpointPart present u8 (0 or 1), then if 1: epoch u64, at u64,
//                        total_bytes u64, bytes (at most total_bytes)
//     others             nothing
//
// Version 2: method 9 reads a part of a checkpoint (version 1: the whole
// checkpoint, asked by worker only).
//
// A client id is random per RemoteStore; request ids increase per client.
// The pair names a request: a retry sends the same bytes again, and the
// server answers a retry of a write from its memory of the first answer.
//
// Decoders check every length and count against the bytes that remain
// before allocating, reject unknown methods, codes and flags and trailing
// bytes, and return kCorruption (kFailedPrecondition for an unknown version);
// they never crash and never throw.
#pragma once

#include <lstash/status.h>
#include <lstash/store.h>
#include <lstash/types.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lstash::store_rpc {

inline constexpr std::uint32_t kRequestMagic = 0x4c535251;   // "LSRQ"
inline constexpr std::uint32_t kResponseMagic = 0x4c535250;  // "LSRP"
inline constexpr std::uint16_t kRpcVersion = 2;

enum class Method : std::uint8_t {
  kBeginIncarnation = 1,
  kSetEpochStart = 2,
  kEpochs = 3,
  kAppend = 4,
  kReadCopies = 5,
  kReadLog = 6,
  kReadCommitted = 7,
  kPutCheckpoint = 8,
  kReadCheckpointPart = 9,
  kRenewLease = 10,
  // Deletes lineage copies of `owner` with index <= upto from a shard that
  // is not the owner's (the client sends it to the other shards when the
  // owner stores a checkpoint; see remote_store.cc).
  kDropCopies = 11,
};
inline constexpr std::uint8_t kMaxMethod = 11;

std::string_view MethodName(Method method);

// True for the methods that change the store: their answers are remembered
// so that a retry is answered, not applied a second time.
bool IsWrite(Method method);

struct RequestIds {
  std::uint64_t client_id = 0;
  std::uint64_t request_id = 0;
  friend bool operator==(const RequestIds&, const RequestIds&) = default;
};

// A decoded request. Only the fields of its method are meaningful.
struct Request {
  RequestIds ids;
  Method method = Method::kBeginIncarnation;
  WorkerId worker = 0;  // the owner for kReadCopies and kDropCopies
  Epoch epoch = 0;
  LogIndex index = 0;   // start, from, at or upto
  std::uint64_t offset = 0;     // kReadCheckpointPart
  std::uint64_t max_bytes = 0;  // kReadCheckpointPart
  std::int64_t duration_nanos = 0;
  std::vector<LogRecord> records;
  std::vector<LineageCopy> copies;
  std::vector<WorkerId> workers;
  std::string bytes;    // checkpoint record
};

// Encoders replace *out.
void EncodeBeginIncarnation(RequestIds ids, WorkerId worker, std::string* out);
void EncodeSetEpochStart(RequestIds ids, WorkerId worker, Epoch epoch, LogIndex start, std::string* out);
void EncodeEpochs(RequestIds ids, WorkerId worker, std::string* out);
void EncodeAppend(RequestIds ids, WorkerId worker, Epoch epoch, std::span<const LogRecord> records,
                  std::span<const LineageCopy> copies, std::string* out);
void EncodeReadCopies(RequestIds ids, WorkerId owner, LogIndex from, std::string* out);
void EncodeReadLog(RequestIds ids, WorkerId worker, LogIndex from, std::string* out);
void EncodeReadCommitted(RequestIds ids, std::span<const WorkerId> workers, std::string* out);
void EncodePutCheckpoint(RequestIds ids, WorkerId worker, Epoch epoch, LogIndex at, std::string_view record,
                         std::string* out);
void EncodeReadCheckpointPart(RequestIds ids, WorkerId worker, std::uint64_t offset, std::uint64_t max_bytes,
                              std::string* out);
void EncodeRenewLease(RequestIds ids, WorkerId worker, Epoch epoch, std::int64_t duration_nanos, std::string* out);
void EncodeDropCopies(RequestIds ids, WorkerId owner, LogIndex upto, std::string* out);
// Any decoded request, with the encoder of its method.
void EncodeRequest(const Request& request, std::string* out);

// Validates and decodes a request. When it fails but the header (magic,
// version, byte order, ids) was readable, *recovered holds the ids so the
// server can answer; otherwise *recovered is nullopt.
Status DecodeRequest(std::string_view bytes, Request* out, std::optional<RequestIds>* recovered);

// A response. `status` is the outcome of the call; the results are
// meaningful only for an OK status of their method.
struct Response {
  std::uint64_t request_id = 0;
  Method method = Method::kBeginIncarnation;
  Status status;
  Epoch epoch = 0;                              // kBeginIncarnation
  std::vector<EpochRecord> epochs;              // kEpochs
  std::vector<LineageCopy> copies;              // kReadCopies
  std::vector<LogRecord> records;               // kReadLog
  std::vector<LogIndex> committed;              // kReadCommitted
  // kReadCheckpointPart; a part here before decoding lends its buffer.
  std::optional<CheckpointPart> checkpoint_part;
};

void EncodeResponse(const Response& response, std::string* out);
Status DecodeResponse(std::string_view bytes, Response* out);

// The request id of a response, if its header is readable (so a client can
// tell a stale answer from the one it waits for before decoding the rest).
std::optional<std::uint64_t> PeekResponseId(std::string_view bytes);

}  // namespace lstash::store_rpc
