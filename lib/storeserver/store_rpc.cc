// Encoders and decoders of the store RPC (see store_rpc.h for the layout).

#include "storeserver/store_rpc.h"

#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <utility>

namespace lstash::store_rpc {
namespace {

constexpr std::uint8_t kLittleEndianFlag = 1;
constexpr std::size_t kPrefixBytes = 4 + 2 + 1;  // magic, version, byte order
constexpr std::size_t kRequestHeaderBytes = kPrefixBytes + 8 + 8 + 1;
constexpr std::size_t kLengthBytes = 8;
constexpr std::size_t kCountBytes = 4;
constexpr std::size_t kMinRecordBytes = 8 + kLengthBytes;
constexpr std::size_t kMinCopyBytes = 4 + 8 + 8 + kLengthBytes;
constexpr std::size_t kEpochRecordBytes = 8 + 8;

// ---------------------------------------------------------------------------
// Writing. Messages are sized first, then appended to a reserved string.

class Writer {
 public:
  Writer(std::string* out, std::size_t size_hint) : out_(out) {
    out_->clear();
    out_->reserve(size_hint);
  }
  void U8(std::uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void U16(std::uint16_t v) { Little(v, 2); }
  void U32(std::uint32_t v) { Little(v, 4); }
  void U64(std::uint64_t v) { Little(v, 8); }
  void Bytes(std::string_view b) {
    U64(b.size());
    out_->append(b);
  }
  void Count(std::size_t n) { U32(static_cast<std::uint32_t>(n)); }
  void Prefix(std::uint32_t magic) {
    U32(magic);
    U16(kRpcVersion);
    U8(kLittleEndianFlag);
  }
  void Records(std::span<const LogRecord> records) {
    Count(records.size());
    for (const LogRecord& r : records) {
      U64(r.index);
      Bytes(r.bytes);
    }
  }
  void Copies(std::span<const LineageCopy> copies) {
    Count(copies.size());
    for (const LineageCopy& c : copies) {
      U32(c.owner);
      U64(c.epoch);
      U64(c.index);
      Bytes(c.bytes);
    }
  }

 private:
  void Little(std::uint64_t v, int size) {
    char buf[8];
    for (int i = 0; i < size; ++i) buf[i] = static_cast<char>((v >> (8 * i)) & 0xff);
    out_->append(buf, static_cast<std::size_t>(size));
  }
  std::string* out_;
};

std::size_t RecordsBytes(std::span<const LogRecord> records) {
  std::size_t n = kCountBytes;
  for (const LogRecord& r : records) n += kMinRecordBytes + r.bytes.size();
  return n;
}

std::size_t CopiesBytes(std::span<const LineageCopy> copies) {
  std::size_t n = kCountBytes;
  for (const LineageCopy& c : copies) n += kMinCopyBytes + c.bytes.size();
  return n;
}

Writer RequestWriter(RequestIds ids, Method method, std::size_t body_bytes, std::string* out) {
  Writer w(out, kRequestHeaderBytes + body_bytes);
  w.Prefix(kRequestMagic);
  w.U64(ids.client_id);
  w.U64(ids.request_id);
  w.U8(static_cast<std::uint8_t>(method));
  return w;
}

// ---------------------------------------------------------------------------
// Reading. Every read is bounds-checked; the first failure is kept and every
// later read returns zeros, so a decoder reads on and checks once at the end
// of each step (never allocating on a failed count or length).

class Reader {
 public:
  explicit Reader(std::string_view bytes) : begin_(bytes.data()), p_(begin_), end_(begin_ + bytes.size()) {}

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  std::size_t remaining() const { return static_cast<std::size_t>(end_ - p_); }
  std::size_t offset() const { return static_cast<std::size_t>(p_ - begin_); }

  std::uint8_t U8() { return static_cast<std::uint8_t>(Little(1)); }
  std::uint16_t U16() { return static_cast<std::uint16_t>(Little(2)); }
  std::uint32_t U32() { return static_cast<std::uint32_t>(Little(4)); }
  std::uint64_t U64() { return Little(8); }

  // A vector's count, checked against what its elements need at least.
  std::uint32_t Count(std::size_t min_element_bytes, std::string_view field) {
    std::uint32_t n = U32();
    if (ok() && n > remaining() / min_element_bytes) {
      Fail(Corruption(std::string(field) + " count " + std::to_string(n) + " needs at least " +
                      std::to_string(static_cast<std::uint64_t>(n) * min_element_bytes) + " bytes but only " +
                      std::to_string(remaining()) + " remain"));
    }
    return ok() ? n : 0;
  }

  void Bytes(std::string* out, std::string_view field) {
    std::uint64_t n = U64();
    if (ok() && n > remaining()) {
      Fail(Corruption(std::string(field) + " length " + std::to_string(n) + " exceeds the " +
                      std::to_string(remaining()) + " bytes remaining"));
    }
    if (!ok()) return;
    out->assign(p_, static_cast<std::size_t>(n));
    p_ += n;
  }

  // Magic, version and byte order.
  void Prefix(std::uint32_t magic, std::string_view what) {
    if (remaining() < kPrefixBytes) {
      Fail(Corruption(std::string(what) + " truncated: " + std::to_string(remaining()) + " bytes cannot hold the " +
                      std::to_string(kPrefixBytes) + "-byte header"));
      return;
    }
    std::uint32_t seen_magic = U32();
    if (seen_magic != magic) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "bad magic 0x%08x (expected 0x%08x)", seen_magic, magic);
      Fail(Corruption(std::string(what) + ": " + buf));
      return;
    }
    std::uint16_t version = U16();
    if (version != kRpcVersion) {
      Fail(FailedPrecondition(std::string(what) + " has format version " + std::to_string(version) +
                              " (this build speaks version " + std::to_string(kRpcVersion) + ")"));
      return;
    }
    std::uint8_t flag = U8();
    if (flag != kLittleEndianFlag) {
      Fail(Corruption(std::string(what) + ": bad byte-order flag " + std::to_string(flag) + " (expected 1)"));
    }
  }

  void Records(std::vector<LogRecord>* records) {
    std::uint32_t n = Count(kMinRecordBytes, "records");
    records->clear();
    records->reserve(n);
    for (std::uint32_t i = 0; i < n && ok(); ++i) {
      LogRecord r;
      r.index = U64();
      Bytes(&r.bytes, "record");
      records->push_back(std::move(r));
    }
  }

  void Copies(std::vector<LineageCopy>* copies) {
    std::uint32_t n = Count(kMinCopyBytes, "copies");
    copies->clear();
    copies->reserve(n);
    for (std::uint32_t i = 0; i < n && ok(); ++i) {
      LineageCopy c;
      c.owner = U32();
      c.epoch = U64();
      c.index = U64();
      Bytes(&c.bytes, "copy");
      copies->push_back(std::move(c));
    }
  }

  void ExpectEnd(std::string_view what) {
    if (ok() && p_ != end_) {
      Fail(Corruption(std::string(what) + ": " + std::to_string(remaining()) + " trailing bytes"));
    }
  }

  void Fail(Status s) {
    if (ok()) status_ = std::move(s);
  }

 private:
  std::uint64_t Little(std::size_t size) {
    if (!ok()) return 0;
    if (remaining() < size) {
      Fail(Corruption("truncated: needs " + std::to_string(size) + " bytes at offset " + std::to_string(offset()) +
                      " but only " + std::to_string(remaining()) + " remain"));
      return 0;
    }
    std::uint64_t v = 0;
    for (std::size_t i = size; i > 0; --i) v = (v << 8) | static_cast<unsigned char>(p_[i - 1]);
    p_ += size;
    return v;
  }

  const char* begin_;
  const char* p_;
  const char* end_;
  Status status_;
};

bool KnownMethod(std::uint8_t m) { return m >= 1 && m <= kMaxMethod; }

}  // namespace

std::string_view MethodName(Method method) {
  switch (method) {
    case Method::kBeginIncarnation: return "BeginIncarnation";
    case Method::kSetEpochStart: return "SetEpochStart";
    case Method::kEpochs: return "Epochs";
    case Method::kAppend: return "Append";
    case Method::kReadCopies: return "ReadCopies";
    case Method::kReadLog: return "ReadLog";
    case Method::kReadCommitted: return "ReadCommitted";
    case Method::kPutCheckpoint: return "PutCheckpoint";
    case Method::kReadCheckpointPart: return "ReadCheckpointPart";
    case Method::kRenewLease: return "RenewLease";
    case Method::kDropCopies: return "DropCopies";
  }
  return "unknown";
}

bool IsWrite(Method method) {
  switch (method) {
    case Method::kBeginIncarnation:
    case Method::kSetEpochStart:
    case Method::kAppend:
    case Method::kPutCheckpoint:
    case Method::kRenewLease:
    case Method::kDropCopies:
      return true;
    default:
      return false;
  }
}

// ---------------------------------------------------------------------------
// Requests.

void EncodeBeginIncarnation(RequestIds ids, WorkerId worker, std::string* out) {
  Writer w = RequestWriter(ids, Method::kBeginIncarnation, 4, out);
  w.U32(worker);
}

void EncodeSetEpochStart(RequestIds ids, WorkerId worker, Epoch epoch, LogIndex start, std::string* out) {
  Writer w = RequestWriter(ids, Method::kSetEpochStart, 4 + 8 + 8, out);
  w.U32(worker);
  w.U64(epoch);
  w.U64(start);
}

void EncodeEpochs(RequestIds ids, WorkerId worker, std::string* out) {
  Writer w = RequestWriter(ids, Method::kEpochs, 4, out);
  w.U32(worker);
}

void EncodeAppend(RequestIds ids, WorkerId worker, Epoch epoch, std::span<const LogRecord> records,
                  std::span<const LineageCopy> copies, std::string* out) {
  Writer w = RequestWriter(ids, Method::kAppend, 4 + 8 + RecordsBytes(records) + CopiesBytes(copies), out);
  w.U32(worker);
  w.U64(epoch);
  w.Records(records);
  w.Copies(copies);
}

void EncodeReadCopies(RequestIds ids, WorkerId owner, LogIndex from, std::string* out) {
  Writer w = RequestWriter(ids, Method::kReadCopies, 4 + 8, out);
  w.U32(owner);
  w.U64(from);
}

void EncodeReadLog(RequestIds ids, WorkerId worker, LogIndex from, std::string* out) {
  Writer w = RequestWriter(ids, Method::kReadLog, 4 + 8, out);
  w.U32(worker);
  w.U64(from);
}

void EncodeReadCommitted(RequestIds ids, std::span<const WorkerId> workers, std::string* out) {
  Writer w = RequestWriter(ids, Method::kReadCommitted, kCountBytes + 4 * workers.size(), out);
  w.Count(workers.size());
  for (WorkerId worker : workers) w.U32(worker);
}

void EncodePutCheckpoint(RequestIds ids, WorkerId worker, Epoch epoch, LogIndex at, std::string_view record,
                         std::string* out) {
  Writer w = RequestWriter(ids, Method::kPutCheckpoint, 4 + 8 + 8 + kLengthBytes + record.size(), out);
  w.U32(worker);
  w.U64(epoch);
  w.U64(at);
  w.Bytes(record);
}

void EncodeReadCheckpointPart(RequestIds ids, WorkerId worker, std::uint64_t offset, std::uint64_t max_bytes,
                              std::string* out) {
  Writer w = RequestWriter(ids, Method::kReadCheckpointPart, 4 + 8 + 8, out);
  w.U32(worker);
  w.U64(offset);
  w.U64(max_bytes);
}

void EncodeRenewLease(RequestIds ids, WorkerId worker, Epoch epoch, std::int64_t duration_nanos, std::string* out) {
  Writer w = RequestWriter(ids, Method::kRenewLease, 4 + 8 + 8, out);
  w.U32(worker);
  w.U64(epoch);
  w.U64(static_cast<std::uint64_t>(duration_nanos));
}

void EncodeDropCopies(RequestIds ids, WorkerId owner, LogIndex upto, std::string* out) {
  Writer w = RequestWriter(ids, Method::kDropCopies, 4 + 8, out);
  w.U32(owner);
  w.U64(upto);
}

void EncodeRequest(const Request& r, std::string* out) {
  switch (r.method) {
    case Method::kBeginIncarnation: return EncodeBeginIncarnation(r.ids, r.worker, out);
    case Method::kSetEpochStart: return EncodeSetEpochStart(r.ids, r.worker, r.epoch, r.index, out);
    case Method::kEpochs: return EncodeEpochs(r.ids, r.worker, out);
    case Method::kAppend: return EncodeAppend(r.ids, r.worker, r.epoch, r.records, r.copies, out);
    case Method::kReadCopies: return EncodeReadCopies(r.ids, r.worker, r.index, out);
    case Method::kReadLog: return EncodeReadLog(r.ids, r.worker, r.index, out);
    case Method::kReadCommitted: return EncodeReadCommitted(r.ids, r.workers, out);
    case Method::kPutCheckpoint: return EncodePutCheckpoint(r.ids, r.worker, r.epoch, r.index, r.bytes, out);
    case Method::kReadCheckpointPart: return EncodeReadCheckpointPart(r.ids, r.worker, r.offset, r.max_bytes, out);
    case Method::kRenewLease: return EncodeRenewLease(r.ids, r.worker, r.epoch, r.duration_nanos, out);
    case Method::kDropCopies: return EncodeDropCopies(r.ids, r.worker, r.index, out);
  }
  out->clear();
}

Status DecodeRequest(std::string_view bytes, Request* out, std::optional<RequestIds>* recovered) {
  recovered->reset();
  Reader r(bytes);
  r.Prefix(kRequestMagic, "store request");
  if (!r.ok()) return r.status();
  RequestIds ids;
  ids.client_id = r.U64();
  ids.request_id = r.U64();
  if (!r.ok()) return r.status().WithContext("store request");
  *recovered = ids;
  out->ids = ids;
  std::uint8_t method = r.U8();
  if (!r.ok()) return r.status().WithContext("store request");
  if (!KnownMethod(method)) return Corruption("store request: unknown method " + std::to_string(method));
  out->method = static_cast<Method>(method);
  const std::string what = "store request " + std::string(MethodName(out->method));
  try {
    switch (out->method) {
      case Method::kBeginIncarnation:
      case Method::kEpochs:
        out->worker = r.U32();
        break;
      case Method::kReadCheckpointPart:
        out->worker = r.U32();
        out->offset = r.U64();
        out->max_bytes = r.U64();
        break;
      case Method::kSetEpochStart:
        out->worker = r.U32();
        out->epoch = r.U64();
        out->index = r.U64();
        break;
      case Method::kAppend:
        out->worker = r.U32();
        out->epoch = r.U64();
        r.Records(&out->records);
        r.Copies(&out->copies);
        break;
      case Method::kReadCopies:
      case Method::kReadLog:
      case Method::kDropCopies:
        out->worker = r.U32();
        out->index = r.U64();
        break;
      case Method::kReadCommitted: {
        std::uint32_t n = r.Count(4, "workers");
        out->workers.resize(n);
        for (WorkerId& w : out->workers) w = r.U32();
        break;
      }
      case Method::kPutCheckpoint:
        out->worker = r.U32();
        out->epoch = r.U64();
        out->index = r.U64();
        r.Bytes(&out->bytes, "checkpoint record");
        break;
      case Method::kRenewLease:
        out->worker = r.U32();
        out->epoch = r.U64();
        out->duration_nanos = static_cast<std::int64_t>(r.U64());
        break;
    }
  } catch (const std::bad_alloc&) {
    return ResourceExhausted(what + ": out of memory");
  }
  r.ExpectEnd(what);
  if (!r.ok()) return r.status().WithContext(what);
  return Status::OK();
}

// ---------------------------------------------------------------------------
// Responses.

void EncodeResponse(const Response& response, std::string* out) {
  const bool ok = response.status.ok();
  std::size_t body = 0;
  if (ok) {
    switch (response.method) {
      case Method::kBeginIncarnation: body = 8; break;
      case Method::kEpochs: body = kCountBytes + kEpochRecordBytes * response.epochs.size(); break;
      case Method::kReadCopies: body = CopiesBytes(response.copies); break;
      case Method::kReadLog: body = RecordsBytes(response.records); break;
      case Method::kReadCommitted: body = kCountBytes + 8 * response.committed.size(); break;
      case Method::kReadCheckpointPart:
        body = 1 + (response.checkpoint_part ? 8 + 8 + 8 + kLengthBytes + response.checkpoint_part->bytes.size() : 0);
        break;
      default: break;
    }
  }
  Writer w(out, kPrefixBytes + 8 + 1 + 1 + kLengthBytes + response.status.message().size() + body);
  w.Prefix(kResponseMagic);
  w.U64(response.request_id);
  w.U8(static_cast<std::uint8_t>(response.method));
  w.U8(static_cast<std::uint8_t>(response.status.code()));
  w.Bytes(response.status.message());
  if (!ok) return;
  switch (response.method) {
    case Method::kBeginIncarnation:
      w.U64(response.epoch);
      break;
    case Method::kEpochs:
      w.Count(response.epochs.size());
      for (const EpochRecord& e : response.epochs) {
        w.U64(e.epoch);
        w.U64(e.start);
      }
      break;
    case Method::kReadCopies:
      w.Copies(response.copies);
      break;
    case Method::kReadLog:
      w.Records(response.records);
      break;
    case Method::kReadCommitted:
      w.Count(response.committed.size());
      for (LogIndex c : response.committed) w.U64(c);
      break;
    case Method::kReadCheckpointPart:
      w.U8(response.checkpoint_part ? 1 : 0);
      if (response.checkpoint_part) {
        w.U64(response.checkpoint_part->epoch);
        w.U64(response.checkpoint_part->at);
        w.U64(response.checkpoint_part->total_bytes);
        w.Bytes(response.checkpoint_part->bytes);
      }
      break;
    default:
      break;
  }
}

Status DecodeResponse(std::string_view bytes, Response* out) {
  Reader r(bytes);
  r.Prefix(kResponseMagic, "store response");
  if (!r.ok()) return r.status();
  out->request_id = r.U64();
  std::uint8_t method = r.U8();
  std::uint8_t code = r.U8();
  std::string message;
  r.Bytes(&message, "status message");
  if (!r.ok()) return r.status().WithContext("store response");
  // Method 0 answers a request the server could not decode, always with an
  // error.
  if (!KnownMethod(method) && !(method == 0 && code != 0)) {
    return Corruption("store response: unknown method " + std::to_string(method));
  }
  if (code > static_cast<std::uint8_t>(Code::kInternal)) {
    return Corruption("store response: unknown status code " + std::to_string(code));
  }
  out->method = static_cast<Method>(method);
  const std::string what = "store response to " + std::string(MethodName(out->method));
  out->status = code == 0 ? Status::OK() : Status(static_cast<Code>(code), message);
  if (code == 0 && !message.empty()) return Corruption(what + ": an OK status with a message");
  if (code != 0 && message.empty()) return Corruption(what + ": an error status without a message");
  // A part there already lends its buffer to the one decoded.
  std::optional<CheckpointPart> lent = std::move(out->checkpoint_part);
  out->checkpoint_part.reset();
  try {
    if (code == 0) {
      switch (out->method) {
        case Method::kBeginIncarnation:
          out->epoch = r.U64();
          break;
        case Method::kEpochs: {
          std::uint32_t n = r.Count(kEpochRecordBytes, "epochs");
          out->epochs.resize(n);
          for (EpochRecord& e : out->epochs) {
            e.epoch = r.U64();
            e.start = r.U64();
          }
          break;
        }
        case Method::kReadCopies:
          r.Copies(&out->copies);
          break;
        case Method::kReadLog:
          r.Records(&out->records);
          break;
        case Method::kReadCommitted: {
          std::uint32_t n = r.Count(8, "committed indexes");
          out->committed.resize(n);
          for (LogIndex& c : out->committed) c = r.U64();
          break;
        }
        case Method::kReadCheckpointPart: {
          std::uint8_t present = r.U8();
          if (r.ok() && present > 1) r.Fail(Corruption("bad checkpoint presence flag " + std::to_string(present)));
          if (r.ok() && present == 1) {
            CheckpointPart part = lent ? std::move(*lent) : CheckpointPart();
            part.epoch = r.U64();
            part.at = r.U64();
            part.total_bytes = r.U64();
            r.Bytes(&part.bytes, "checkpoint part");
            if (r.ok() && part.bytes.size() > part.total_bytes) {
              r.Fail(Corruption("checkpoint part of " + std::to_string(part.bytes.size()) +
                                " bytes is longer than its record of " + std::to_string(part.total_bytes)));
            }
            if (r.ok()) out->checkpoint_part = std::move(part);
          }
          break;
        }
        default:
          break;
      }
    }
  } catch (const std::bad_alloc&) {
    return ResourceExhausted(what + ": out of memory");
  }
  r.ExpectEnd(what);
  if (!r.ok()) return r.status().WithContext(what);
  return Status::OK();
}

std::optional<std::uint64_t> PeekResponseId(std::string_view bytes) {
  Reader r(bytes);
  r.Prefix(kResponseMagic, "store response");
  std::uint64_t id = r.U64();
  if (!r.ok()) return std::nullopt;
  return id;
}

}  // namespace lstash::store_rpc
