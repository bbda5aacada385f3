// Encoders and decoders for every lstash record (see format.h).
//
// Byte layout of every record:
//
//   magic    u32, little-endian   written raw, before the archive, so a reader
//   version  u16, little-endian   can name and refuse a record of another
//                                 version before cereal parses anything
//   body     a Cereal PortableBinary archive stream: the archive's byte-order
//            flag (always 1, little-endian; anything else is rejected),
//            then the record's fields in the order listed below.
//
// Inside a body every integer is fixed-width little-endian; enums are u8;
// byte strings are a u64 length then the bytes; vectors are a u32 count then
// the elements. Fields that do not apply to a record's kind are not encoded
// and decode as their defaults, so every accepted record is the one canonical
// encoding of its decoded value (the fuzz target checks this).
//
//   entry (kEntryMagic):
//     owner u32, epoch u64, index u64, kind u8, then
//     kExecute: task.submitter u32, task.seq u64, channel_seq u64,
//               flags u8 (1 = start, 2 = payload_inline; other bits invalid),
//               deps [u32 count; owner u32, epoch u64, index u64],
//               inline: payload (u64 length + bytes)
//               else:   payload_size u64, payload_digest u64
//     kValue:   value_kind u8, value (u64 length + bytes)
//   frame (kFrameMagic):
//     kind u8, sender u32, sender_epoch u64, sender_epoch_start u64,
//     dest u32, dest_epoch u64, then
//     kTask:           seq u64, channel_seq u64, payload, deps, entries,
//                      watermarks [u32 count; owner u32, committed u64]
//     kAck:            delivered u64, released u64, watermarks
//     kRecoveryReply:  delivered u64, released u64, entries
//     others:          nothing
//     where entries = [u32 count; u64 length + a complete entry record].
//   checkpoint (kCheckpointMagic):
//     worker u32, epoch u64, at u64, num_workers u32, next_seq u64,
//     next_channel_seq [u32 count; u64], executed_upto [u32 count; u64],
//     frontier (deps), outbox [u32 count; dest u32, id.submitter u32,
//     id.seq u64, channel_seq u64, payload, deps], snapshot
//   store metadata (kMetaMagic):
//     format marker: the 6-byte prefix alone, no archive
//     epochs: tag u8 = 1, [u32 count; epoch u64, start u64]
//     index:  tag u8 = 2, index u64
//
// Decoders never trust a length or count: each is checked against the bytes
// that remain (count * smallest element size) before anything is resized.

#include "wire/format.h"

#include <cereal/archives/portable_binary.hpp>
#include <xxhash.h>

#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <istream>
#include <limits>
#include <new>
#include <optional>
#include <ostream>
#include <streambuf>

namespace lstash::wire {
namespace {

using cereal::PortableBinaryInputArchive;
using cereal::PortableBinaryOutputArchive;

constexpr std::size_t kPrefixBytes = 4 + 2;              // magic + version
constexpr std::size_t kRecordHeaderBytes = kPrefixBytes + 1;  // + archive byte-order flag
constexpr std::uint8_t kLittleEndianFlag = 1;

constexpr std::uint8_t kFlagStart = 1;
constexpr std::uint8_t kFlagPayloadInline = 2;
constexpr std::uint8_t kKnownEntryFlags = kFlagStart | kFlagPayloadInline;

enum class MetaTag : std::uint8_t { kEpochs = 1, kIndex = 2 };

constexpr std::size_t kCountBytes = 4;
constexpr std::size_t kLengthBytes = 8;
constexpr std::size_t kDepBytes = 4 + 8 + 8;
constexpr std::size_t kWatermarkBytes = 4 + 8;
constexpr std::size_t kEpochRecordBytes = 8 + 8;
constexpr std::size_t kEntryCommonBytes = 4 + 8 + 8 + 1;
constexpr std::size_t kFrameHeaderBytes = 1 + 4 + 8 + 8 + 4 + 8;
// The smallest entry is a kValue entry with an empty value.
constexpr std::size_t kMinEntryBytes = kRecordHeaderBytes + kEntryCommonBytes + 1 + kLengthBytes;
constexpr std::size_t kMinNestedEntryBytes = kLengthBytes + kMinEntryBytes;
constexpr std::size_t kMinOutboxMessageBytes = 4 + 4 + 8 + 8 + kLengthBytes + kCountBytes;

std::string Hex32(std::uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string_view MagicName(std::uint32_t magic) {
  switch (magic) {
    case kEntryMagic: return "log entry";
    case kFrameMagic: return "frame";
    case kCheckpointMagic: return "checkpoint";
    case kMetaMagic: return "store metadata";
    default: return "unknown";
  }
}

// ---------------------------------------------------------------------------
// Output

// Appends everything the archive writes to a caller's string; avoids the
// buffering and locale work of std::ostringstream.
class StringSink final : public std::streambuf {
 public:
  explicit StringSink(std::string* target) : target_(target) {}
  void Bind(std::string* target) { target_ = target; }

 protected:
  std::streamsize xsputn(const char* data, std::streamsize size) override {
    target_->append(data, static_cast<std::size_t>(size));
    return size;
  }
  int_type overflow(int_type ch) override {
    if (!traits_type::eq_int_type(ch, traits_type::eof())) target_->push_back(traits_type::to_char_type(ch));
    return traits_type::not_eof(ch);
  }

 private:
  std::string* target_;
};

// Building a std::ostream and an archive costs ~100 ns (locale setup), about
// as much as encoding a whole entry, so each thread keeps one pair and points
// it at the caller's string per record. The archive writes its byte-order
// flag once, when constructed (into `construction_scratch`); records write
// their own flag so each body is still a complete PortableBinary stream.
struct EncodeContext {
  std::string construction_scratch;
  StringSink sink{&construction_scratch};
  std::ostream stream{&sink};
  PortableBinaryOutputArchive archive{stream, PortableBinaryOutputArchive::Options::LittleEndian()};
  bool in_use = false;
};

// The thread's context, or a private one if an encoder is somehow re-entered.
class EncodeLease {
 public:
  EncodeLease() {
    thread_local EncodeContext shared;
    context_ = shared.in_use ? &fallback_.emplace() : &shared;
    context_->in_use = true;
  }
  ~EncodeLease() {
    context_->sink.Bind(&context_->construction_scratch);
    context_->in_use = false;
  }
  EncodeLease(const EncodeLease&) = delete;
  EncodeLease& operator=(const EncodeLease&) = delete;
  EncodeContext& operator*() { return *context_; }

 private:
  std::optional<EncodeContext> fallback_;
  EncodeContext* context_;
};

[[noreturn]] void CountTooLarge(std::string_view field, std::size_t count) {
  std::fprintf(stderr, "lstash: cannot encode %.*s: %zu elements exceed the format's limit of %u\n",
               static_cast<int>(field.size()), field.data(), count, std::numeric_limits<std::uint32_t>::max());
  std::abort();
}

class Writer {
 public:
  // Clears *out, reserves `size_hint` bytes and writes the record header.
  Writer(std::string* out, std::uint32_t magic, std::size_t size_hint) : context_(*lease_) {
    out->clear();
    out->reserve(size_hint);
    const char prefix[kPrefixBytes] = {
        static_cast<char>(magic & 0xff),          static_cast<char>((magic >> 8) & 0xff),
        static_cast<char>((magic >> 16) & 0xff),  static_cast<char>((magic >> 24) & 0xff),
        static_cast<char>(kFormatVersion & 0xff), static_cast<char>((kFormatVersion >> 8) & 0xff)};
    out->append(prefix, kPrefixBytes);
    context_.sink.Bind(out);
    U8(kLittleEndianFlag);
  }

  void U8(std::uint8_t v) { context_.archive(v); }
  void U32(std::uint32_t v) { context_.archive(v); }
  void U64(std::uint64_t v) { context_.archive(v); }
  void Count(std::size_t n, std::string_view field) {
    if (n > std::numeric_limits<std::uint32_t>::max()) CountTooLarge(field, n);
    U32(static_cast<std::uint32_t>(n));
  }
  void Bytes(std::string_view bytes) {
    U64(bytes.size());
    if (!bytes.empty()) context_.archive(cereal::binary_data(bytes.data(), bytes.size()));
  }
  void Deps(std::span<const Dep> deps) {
    Count(deps.size(), "deps");
    for (const Dep& d : deps) {
      U32(d.owner);
      U64(d.epoch);
      U64(d.index);
    }
  }
  void Watermarks(std::span<const Watermark> watermarks) {
    Count(watermarks.size(), "watermarks");
    for (const Watermark& w : watermarks) {
      U32(w.owner);
      U64(w.committed);
    }
  }
  void Entries(std::span<const std::string_view> entries) {
    Count(entries.size(), "entries");
    for (std::string_view e : entries) Bytes(e);
  }
  void Header(const FrameHeader& h) {
    U8(static_cast<std::uint8_t>(h.kind));
    U32(h.sender);
    U64(h.sender_epoch);
    U64(h.sender_epoch_start);
    U32(h.dest);
    U64(h.dest_epoch);
  }

 private:
  EncodeLease lease_;
  EncodeContext& context_;
};

std::size_t EntriesSize(std::span<const std::string_view> entries) {
  std::size_t size = kCountBytes;
  for (std::string_view e : entries) size += kLengthBytes + e.size();
  return size;
}

// ---------------------------------------------------------------------------
// Input

// Reads from a caller's bytes without copying them first, and remembers the
// last read that ran past the end so the error can say where.
class ViewSource final : public std::streambuf {
 public:
  explicit ViewSource(std::string_view bytes) { Bind(bytes); }

  void Bind(std::string_view bytes) {
    // The get area is only read from, never written.
    char* begin = const_cast<char*>(bytes.data());
    setg(begin, begin, begin + bytes.size());
    short_read_wanted_ = 0;
  }
  std::size_t remaining() const { return static_cast<std::size_t>(egptr() - gptr()); }
  std::size_t offset() const { return static_cast<std::size_t>(gptr() - eback()); }
  const char* position() const { return gptr(); }
  const char* end() const { return egptr(); }
  // Moves the end of readable input (to confine reads to a nested record).
  void SetEnd(const char* end) { setg(eback(), gptr(), const_cast<char*>(end)); }
  std::string_view Take(std::size_t n) {  // REQUIRES n <= remaining()
    std::string_view taken(gptr(), n);
    setg(eback(), gptr() + n, egptr());
    return taken;
  }

  std::string ShortReadMessage() const {
    if (short_read_wanted_ == 0) return "truncated";
    return "truncated: needs " + std::to_string(short_read_wanted_) + " bytes at offset " +
           std::to_string(short_read_offset_) + " but only " + std::to_string(short_read_available_) + " remain";
  }

 protected:
  std::streamsize xsgetn(char* out, std::streamsize size) override {
    const std::size_t n = static_cast<std::size_t>(size);
    if (n > remaining()) {
      short_read_wanted_ = n;
      short_read_offset_ = offset();
      short_read_available_ = remaining();
      return 0;  // cereal throws; nothing consumed
    }
    if (n != 0) std::memcpy(out, gptr(), n);
    setg(eback(), gptr() + n, egptr());
    return size;
  }

 private:
  std::size_t short_read_wanted_ = 0;
  std::size_t short_read_offset_ = 0;
  std::size_t short_read_available_ = 0;
};

constexpr char kLittleEndianFlagByte[1] = {static_cast<char>(kLittleEndianFlag)};

// Like EncodeContext: one stream + archive per thread. The archive reads its
// byte-order flag when constructed, so it is first bound to a flag saying
// little-endian; every record's own flag is then read and checked by hand.
struct DecodeContext {
  ViewSource source{std::string_view(kLittleEndianFlagByte, 1)};
  std::istream stream{&source};
  PortableBinaryInputArchive archive{stream};
  bool in_use = false;
};

class DecodeLease {
 public:
  DecodeLease() {
    thread_local DecodeContext shared;
    context_ = shared.in_use ? &fallback_.emplace() : &shared;
    context_->in_use = true;
  }
  ~DecodeLease() {
    context_->source.Bind({});
    context_->in_use = false;
  }
  DecodeLease(const DecodeLease&) = delete;
  DecodeLease& operator=(const DecodeLease&) = delete;
  DecodeContext& operator*() { return *context_; }

 private:
  std::optional<DecodeContext> fallback_;
  DecodeContext* context_;
};

// Thrown inside a decoder only; the decoder's boundary turns it into a Status.
struct DecodeFailure {
  Code code;
  std::string message;
};

[[noreturn]] void Fail(Code code, std::string message) { throw DecodeFailure{code, std::move(message)}; }
[[noreturn]] void Corrupt(std::string message) { Fail(Code::kCorruption, std::move(message)); }

class Reader {
 public:
  explicit Reader(DecodeContext& context) : source_(context.source), archive_(context.archive) {}

  ViewSource& source() { return source_; }
  std::size_t remaining() const { return source_.remaining(); }

  std::uint8_t U8() { return Read<std::uint8_t>(); }
  std::uint32_t U32() { return Read<std::uint32_t>(); }
  std::uint64_t U64() { return Read<std::uint64_t>(); }

  // A vector's element count, checked against what its elements would need.
  std::uint32_t Count(std::size_t min_element_bytes, std::string_view field) {
    const std::uint32_t n = U32();
    if (n > remaining() / min_element_bytes) {
      Corrupt(std::string(field) + " count " + std::to_string(n) + " needs at least " +
              std::to_string(static_cast<std::uint64_t>(n) * min_element_bytes) + " bytes but only " +
              std::to_string(remaining()) + " remain");
    }
    return n;
  }

  // A byte string's length, checked against the bytes that remain.
  std::size_t Length(std::string_view field) {
    const std::uint64_t n = U64();
    if (n > remaining()) {
      Corrupt(std::string(field) + " length " + std::to_string(n) + " exceeds the " + std::to_string(remaining()) +
              " bytes remaining");
    }
    return static_cast<std::size_t>(n);
  }

  void Bytes(std::string* out, std::string_view field) {
    const std::size_t n = Length(field);
    out->resize(n);
    if (n != 0) archive_(cereal::binary_data(out->data(), n));
  }

  void Deps(std::vector<Dep>* deps, std::string_view field) {
    deps->resize(Count(kDepBytes, field));
    for (Dep& d : *deps) {
      d.owner = U32();
      d.epoch = U64();
      d.index = U64();
    }
  }

  void Watermarks(std::vector<Watermark>* watermarks) {
    watermarks->resize(Count(kWatermarkBytes, "watermarks"));
    for (Watermark& w : *watermarks) {
      w.owner = U32();
      w.committed = U64();
    }
  }

  void U64Vector(std::vector<std::uint64_t>* values, std::string_view field) {
    values->resize(Count(8, field));
    for (std::uint64_t& v : *values) v = U64();
  }

  // Magic, version and the archive's byte-order flag.
  void RecordHeader(std::uint32_t magic) {
    if (remaining() < kPrefixBytes) {
      Corrupt("truncated: " + std::to_string(remaining()) + " bytes cannot hold the " +
              std::to_string(kPrefixBytes) + "-byte record header");
    }
    const std::string_view prefix = source_.Take(kPrefixBytes);
    const auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(prefix[i])); };
    const std::uint32_t seen_magic = byte(0) | byte(1) << 8 | byte(2) << 16 | byte(3) << 24;
    const std::uint16_t seen_version = static_cast<std::uint16_t>(byte(4) | byte(5) << 8);
    if (seen_magic != magic) {
      Corrupt("bad magic " + Hex32(seen_magic) + " (" + std::string(MagicName(seen_magic)) + "); expected " +
              Hex32(magic) + " (" + std::string(MagicName(magic)) + ")");
    }
    if (seen_version != kFormatVersion) {
      Fail(Code::kFailedPrecondition, "format version " + std::to_string(seen_version) +
                                          " is not supported (this build reads version " +
                                          std::to_string(kFormatVersion) + ")");
    }
    const std::uint8_t flag = U8();
    if (flag != kLittleEndianFlag) {
      Corrupt("bad byte-order flag " + std::to_string(flag) + " (expected " + std::to_string(kLittleEndianFlag) +
              ", little-endian)");
    }
  }

  void ExpectEnd() {
    if (remaining() != 0) Corrupt(std::to_string(remaining()) + " trailing bytes after the record");
  }

 private:
  template <typename T>
  T Read() {
    T v;
    archive_(v);
    return v;
  }

  ViewSource& source_;
  PortableBinaryInputArchive& archive_;
};

// Runs `body` over `bytes` with every failure turned into a Status prefixed
// with `what`; nothing thrown inside escapes.
template <typename Body>
Status DecodeRecord(std::string_view bytes, std::string_view what, Body&& body) {
  DecodeLease lease;
  DecodeContext& context = *lease;
  context.source.Bind(bytes);
  const auto error = [&](Code code, std::string_view message) {
    std::string full(what);
    full += ": ";
    full += message;
    return Status(code, full);
  };
  try {
    Reader reader(context);
    body(reader);
    reader.ExpectEnd();
    return Status::OK();
  } catch (const DecodeFailure& failure) {
    return error(failure.code, failure.message);
  } catch (const cereal::Exception&) {
    return error(Code::kCorruption, context.source.ShortReadMessage());
  } catch (const std::bad_alloc&) {
    return error(Code::kResourceExhausted, "out of memory");
  } catch (const std::exception& e) {
    return error(Code::kInternal, e.what());
  } catch (...) {
    return error(Code::kInternal, "unexpected exception");
  }
}

void ReadEntryBody(Reader& r, LogEntry* e) {
  e->owner = r.U32();
  e->epoch = r.U64();
  e->index = r.U64();
  const std::uint8_t kind = r.U8();
  switch (kind) {
    case static_cast<std::uint8_t>(EntryKind::kExecute): {
      e->kind = EntryKind::kExecute;
      e->task.submitter = r.U32();
      e->task.seq = r.U64();
      e->channel_seq = r.U64();
      const std::uint8_t flags = r.U8();
      if ((flags & ~kKnownEntryFlags) != 0) Corrupt("unknown entry flags " + std::to_string(flags));
      e->start = (flags & kFlagStart) != 0;
      e->payload_inline = (flags & kFlagPayloadInline) != 0;
      r.Deps(&e->deps, "deps");
      if (e->payload_inline) {
        r.Bytes(&e->payload, "payload");
        e->payload_size = 0;
        e->payload_digest = 0;
      } else {
        e->payload.clear();
        e->payload_size = r.U64();
        e->payload_digest = r.U64();
      }
      e->value_kind = ValueKind::kRandom;
      e->value.clear();
      return;
    }
    case static_cast<std::uint8_t>(EntryKind::kValue): {
      e->kind = EntryKind::kValue;
      e->task = TaskId{};
      e->channel_seq = 0;
      e->start = false;
      e->deps.clear();
      e->payload_inline = true;
      e->payload.clear();
      e->payload_size = 0;
      e->payload_digest = 0;
      const std::uint8_t value_kind = r.U8();
      if (value_kind < static_cast<std::uint8_t>(ValueKind::kRandom) ||
          value_kind > static_cast<std::uint8_t>(ValueKind::kChoice)) {
        Corrupt("unknown value kind " + std::to_string(value_kind));
      }
      e->value_kind = static_cast<ValueKind>(value_kind);
      r.Bytes(&e->value, "value");
      return;
    }
    default:
      Corrupt("unknown entry kind " + std::to_string(kind));
  }
}

// Each nested entry is decoded in place, confined to its own length, so that
// a frame costs one pass and no extra stream setup per entry.
void ReadNestedEntries(Reader& r, std::vector<WireEntry>* entries) {
  const std::uint32_t count = r.Count(kMinNestedEntryBytes, "entries");
  entries->resize(count);
  ViewSource& source = r.source();
  for (std::uint32_t i = 0; i < count; ++i) {
    const auto context = [&] { return "entry " + std::to_string(i) + " of " + std::to_string(count) + ": "; };
    try {
      WireEntry& wire = (*entries)[i];
      const std::size_t length = r.Length("entry");
      const char* start = source.position();
      const char* outer_end = source.end();
      source.SetEnd(start + length);
      r.RecordHeader(kEntryMagic);
      ReadEntryBody(r, &wire.entry);
      r.ExpectEnd();
      source.SetEnd(outer_end);
      wire.bytes.assign(start, length);
    } catch (DecodeFailure& failure) {
      failure.message.insert(0, context());
      throw;
    } catch (const cereal::Exception&) {
      Corrupt(context() + source.ShortReadMessage());
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Entries

void EncodeEntry(const LogEntry& entry, std::string* out) {
  std::size_t size = kRecordHeaderBytes + kEntryCommonBytes;
  if (entry.kind == EntryKind::kExecute) {
    size += 4 + 8 + 8 + 1 + kCountBytes + entry.deps.size() * kDepBytes +
            (entry.payload_inline ? kLengthBytes + entry.payload.size() : 8 + 8);
  } else {
    size += 1 + kLengthBytes + entry.value.size();
  }
  Writer w(out, kEntryMagic, size);
  w.U32(entry.owner);
  w.U64(entry.epoch);
  w.U64(entry.index);
  w.U8(static_cast<std::uint8_t>(entry.kind));
  if (entry.kind == EntryKind::kExecute) {
    w.U32(entry.task.submitter);
    w.U64(entry.task.seq);
    w.U64(entry.channel_seq);
    w.U8(static_cast<std::uint8_t>((entry.start ? kFlagStart : 0) | (entry.payload_inline ? kFlagPayloadInline : 0)));
    w.Deps(entry.deps);
    if (entry.payload_inline) {
      w.Bytes(entry.payload);
    } else {
      w.U64(entry.payload_size);
      w.U64(entry.payload_digest);
    }
  } else {
    w.U8(static_cast<std::uint8_t>(entry.value_kind));
    w.Bytes(entry.value);
  }
}

Status DecodeEntry(std::string_view bytes, LogEntry* out) {
  return DecodeRecord(bytes, "entry", [&](Reader& r) {
    r.RecordHeader(kEntryMagic);
    ReadEntryBody(r, out);
  });
}

// ---------------------------------------------------------------------------
// Frames

void EncodeTaskFrame(const FrameHeader& header, std::uint64_t seq, std::uint64_t channel_seq,
                     std::string_view payload, std::span<const Dep> deps,
                     std::span<const std::string_view> entries, std::span<const Watermark> watermarks,
                     std::string* out) {
  const std::size_t size = kRecordHeaderBytes + kFrameHeaderBytes + 8 + 8 + kLengthBytes + payload.size() +
                           kCountBytes + deps.size() * kDepBytes + EntriesSize(entries) + kCountBytes +
                           watermarks.size() * kWatermarkBytes;
  Writer w(out, kFrameMagic, size);
  FrameHeader task_header = header;
  task_header.kind = FrameKind::kTask;
  w.Header(task_header);
  w.U64(seq);
  w.U64(channel_seq);
  w.Bytes(payload);
  w.Deps(deps);
  w.Entries(entries);
  w.Watermarks(watermarks);
}

void EncodeAckFrame(const FrameHeader& header, std::uint64_t delivered, std::uint64_t released,
                    std::span<const Watermark> watermarks, std::string* out) {
  const std::size_t size =
      kRecordHeaderBytes + kFrameHeaderBytes + 8 + 8 + kCountBytes + watermarks.size() * kWatermarkBytes;
  Writer w(out, kFrameMagic, size);
  FrameHeader ack_header = header;
  ack_header.kind = FrameKind::kAck;
  w.Header(ack_header);
  w.U64(delivered);
  w.U64(released);
  w.Watermarks(watermarks);
}

void EncodeRecoveryReplyFrame(const FrameHeader& header, std::uint64_t delivered, std::uint64_t released,
                              std::span<const std::string_view> entries, std::string* out) {
  const std::size_t size = kRecordHeaderBytes + kFrameHeaderBytes + 8 + 8 + EntriesSize(entries);
  Writer w(out, kFrameMagic, size);
  FrameHeader reply_header = header;
  reply_header.kind = FrameKind::kRecoveryReply;
  w.Header(reply_header);
  w.U64(delivered);
  w.U64(released);
  w.Entries(entries);
}

// header.kind must be one without a body; any other kind would make a frame
// the decoder rejects as truncated.
void EncodeHeaderOnlyFrame(const FrameHeader& header, std::string* out) {
  assert(header.kind == FrameKind::kRecoveryRequest || header.kind == FrameKind::kEpochNotice);
  Writer w(out, kFrameMagic, kRecordHeaderBytes + kFrameHeaderBytes);
  w.Header(header);
}

Status DecodeFrame(std::string_view bytes, DecodedFrame* out) {
  return DecodeRecord(bytes, "frame", [&](Reader& r) {
    r.RecordHeader(kFrameMagic);
    const std::uint8_t kind = r.U8();
    if (kind < static_cast<std::uint8_t>(FrameKind::kTask) || kind > static_cast<std::uint8_t>(FrameKind::kEpochNotice)) {
      Corrupt("unknown frame kind " + std::to_string(kind));
    }
    FrameHeader& h = out->header;
    h.kind = static_cast<FrameKind>(kind);
    h.sender = r.U32();
    h.sender_epoch = r.U64();
    h.sender_epoch_start = r.U64();
    h.dest = r.U32();
    h.dest_epoch = r.U64();

    // Fields the kind does not carry read as their defaults.
    out->seq = 0;
    out->channel_seq = 0;
    out->payload.clear();
    out->deps.clear();
    out->watermarks.clear();
    out->delivered = 0;
    out->released = 0;
    switch (h.kind) {
      case FrameKind::kTask:
        out->seq = r.U64();
        out->channel_seq = r.U64();
        r.Bytes(&out->payload, "payload");
        r.Deps(&out->deps, "deps");
        ReadNestedEntries(r, &out->entries);
        r.Watermarks(&out->watermarks);
        return;
      case FrameKind::kAck:
        out->entries.clear();
        out->delivered = r.U64();
        out->released = r.U64();
        r.Watermarks(&out->watermarks);
        return;
      case FrameKind::kRecoveryReply:
        out->delivered = r.U64();
        out->released = r.U64();
        ReadNestedEntries(r, &out->entries);
        return;
      case FrameKind::kRecoveryRequest:
      case FrameKind::kEpochNotice:
        out->entries.clear();
        return;
    }
  });
}

// ---------------------------------------------------------------------------
// Checkpoints

void EncodeCheckpoint(const CheckpointRecord& record, std::string* out) {
  std::size_t size = kRecordHeaderBytes + 4 + 8 + 8 + 4 + 8 + kCountBytes + 8 * record.next_channel_seq.size() +
                     kCountBytes + 8 * record.executed_upto.size() + kCountBytes +
                     kDepBytes * record.frontier.size() + kCountBytes + kLengthBytes + record.snapshot.size();
  for (const OutboxMessage& m : record.outbox) {
    size += kMinOutboxMessageBytes + m.payload.size() + kDepBytes * m.deps.size();
  }
  Writer w(out, kCheckpointMagic, size);
  w.U32(record.worker);
  w.U64(record.epoch);
  w.U64(record.at);
  w.U32(record.num_workers);
  w.U64(record.next_seq);
  w.Count(record.next_channel_seq.size(), "next_channel_seq");
  for (std::uint64_t v : record.next_channel_seq) w.U64(v);
  w.Count(record.executed_upto.size(), "executed_upto");
  for (std::uint64_t v : record.executed_upto) w.U64(v);
  w.Deps(record.frontier);
  w.Count(record.outbox.size(), "outbox");
  for (const OutboxMessage& m : record.outbox) {
    w.U32(m.dest);
    w.U32(m.id.submitter);
    w.U64(m.id.seq);
    w.U64(m.channel_seq);
    w.Bytes(m.payload);
    w.Deps(m.deps);
  }
  w.Bytes(record.snapshot);
}

Status DecodeCheckpoint(std::string_view bytes, CheckpointRecord* out) {
  return DecodeRecord(bytes, "checkpoint", [&](Reader& r) {
    r.RecordHeader(kCheckpointMagic);
    out->worker = r.U32();
    out->epoch = r.U64();
    out->at = r.U64();
    out->num_workers = r.U32();
    out->next_seq = r.U64();
    r.U64Vector(&out->next_channel_seq, "next_channel_seq");
    r.U64Vector(&out->executed_upto, "executed_upto");
    r.Deps(&out->frontier, "frontier");
    out->outbox.resize(r.Count(kMinOutboxMessageBytes, "outbox"));
    for (OutboxMessage& m : out->outbox) {
      m.dest = r.U32();
      m.id.submitter = r.U32();
      m.id.seq = r.U64();
      m.channel_seq = r.U64();
      r.Bytes(&m.payload, "outbox payload");
      r.Deps(&m.deps, "outbox deps");
    }
    r.Bytes(&out->snapshot, "snapshot");
  });
}

// ---------------------------------------------------------------------------
// Store metadata

namespace {

void ReadMetaTag(Reader& r, MetaTag expected) {
  const std::uint8_t tag = r.U8();
  if (tag == static_cast<std::uint8_t>(expected)) return;
  const auto name = [](std::uint8_t t) -> std::string {
    switch (t) {
      case static_cast<std::uint8_t>(MetaTag::kEpochs): return "an epochs record";
      case static_cast<std::uint8_t>(MetaTag::kIndex): return "an index record";
      default: return "unknown";
    }
  };
  Corrupt("record tag " + std::to_string(tag) + " (" + name(tag) + ") where " + name(static_cast<std::uint8_t>(expected)) +
          " (tag " + std::to_string(static_cast<std::uint8_t>(expected)) + ") was expected");
}

}  // namespace

void EncodeEpochs(std::span<const EpochRecord> epochs, std::string* out) {
  Writer w(out, kMetaMagic, kRecordHeaderBytes + 1 + kCountBytes + epochs.size() * kEpochRecordBytes);
  w.U8(static_cast<std::uint8_t>(MetaTag::kEpochs));
  w.Count(epochs.size(), "epochs");
  for (const EpochRecord& e : epochs) {
    w.U64(e.epoch);
    w.U64(e.start);
  }
}

Status DecodeEpochs(std::string_view bytes, std::vector<EpochRecord>* out) {
  return DecodeRecord(bytes, "epochs record", [&](Reader& r) {
    r.RecordHeader(kMetaMagic);
    ReadMetaTag(r, MetaTag::kEpochs);
    out->resize(r.Count(kEpochRecordBytes, "epochs"));
    for (EpochRecord& e : *out) {
      e.epoch = r.U64();
      e.start = r.U64();
    }
  });
}

void EncodeIndex(LogIndex index, std::string* out) {
  Writer w(out, kMetaMagic, kRecordHeaderBytes + 1 + 8);
  w.U8(static_cast<std::uint8_t>(MetaTag::kIndex));
  w.U64(index);
}

Status DecodeIndex(std::string_view bytes, LogIndex* out) {
  return DecodeRecord(bytes, "index record", [&](Reader& r) {
    r.RecordHeader(kMetaMagic);
    ReadMetaTag(r, MetaTag::kIndex);
    *out = r.U64();
  });
}

void EncodeFormatMarker(std::string* out) {
  out->clear();
  const char marker[kPrefixBytes] = {
      static_cast<char>(kMetaMagic & 0xff),      static_cast<char>((kMetaMagic >> 8) & 0xff),
      static_cast<char>((kMetaMagic >> 16) & 0xff), static_cast<char>((kMetaMagic >> 24) & 0xff),
      static_cast<char>(kFormatVersion & 0xff),  static_cast<char>((kFormatVersion >> 8) & 0xff)};
  out->append(marker, kPrefixBytes);
}

Status CheckFormatMarker(std::string_view bytes) {
  if (bytes.size() < kPrefixBytes) {
    return Corruption("store format marker: truncated: " + std::to_string(bytes.size()) + " bytes, expected " +
                      std::to_string(kPrefixBytes));
  }
  const auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])); };
  const std::uint32_t magic = byte(0) | byte(1) << 8 | byte(2) << 16 | byte(3) << 24;
  const std::uint16_t version = static_cast<std::uint16_t>(byte(4) | byte(5) << 8);
  if (magic != kMetaMagic) {
    return Corruption("store format marker: bad magic " + Hex32(magic) + "; expected " + Hex32(kMetaMagic));
  }
  // A marker of another version may be longer; the version decides first.
  if (version != kFormatVersion) {
    return FailedPrecondition("store format version " + std::to_string(version) +
                              " is not supported (this build reads version " + std::to_string(kFormatVersion) + ")");
  }
  if (bytes.size() != kPrefixBytes) {
    return Corruption("store format marker: " + std::to_string(bytes.size() - kPrefixBytes) +
                      " trailing bytes after the marker");
  }
  return Status::OK();
}

std::uint64_t Digest(std::string_view bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

}  // namespace lstash::wire
