// Encoders and decoders for every lstash record (see format.h).
//
// Byte layout of every record:
//
//   magic    u32, little-endian   written before the archive body, so a
//   version  u16, little-endian   reader can name and refuse a record of
//                                 another version before parsing anything
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
// The body is exactly what cereal::PortableBinaryOutputArchive (little-endian
// option) writes for these fields, and cereal::PortableBinaryInputArchive
// reads it back (tests/wire/format_test.cc proves both directions), but it is
// written and read here directly: a record is sized up front, filled with
// memcpy through a pointer, and parsed from a pointer with inline bounds
// checks. Going through a std::streambuf and an archive cost several
// thousand instructions per task frame, most of it per-field plumbing.
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
//     kTask:           seq u64, channel_seq u64, delivered u64, released u64,
//                      payload, deps, entries,
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

#include <xxhash.h>

#include <bit>
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <limits>
#include <new>
#include <tuple>
#include <type_traits>

namespace lstash::wire {
namespace {

static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big,
              "mixed-endian hosts are not supported");

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

// Host order <-> little-endian (a no-op on little-endian hosts).
template <typename T>
constexpr T LittleEndian(T v) {
  static_assert(std::is_unsigned_v<T>);
  if constexpr (std::endian::native == std::endian::little || sizeof(T) == 1) {
    return v;
  } else if constexpr (sizeof(T) == 2) {
    return static_cast<T>(__builtin_bswap16(v));
  } else if constexpr (sizeof(T) == 4) {
    return static_cast<T>(__builtin_bswap32(v));
  } else {
    static_assert(sizeof(T) == 8);
    return static_cast<T>(__builtin_bswap64(v));
  }
}

// ---------------------------------------------------------------------------
// Output

[[noreturn]] void CountTooLarge(std::string_view field, std::size_t count) {
  std::fprintf(stderr, "lstash: cannot encode %.*s: %zu elements exceed the format's limit of %u\n",
               static_cast<int>(field.size()), field.data(), count, std::numeric_limits<std::uint32_t>::max());
  std::abort();
}

[[noreturn]] [[gnu::cold]] [[gnu::noinline]] void SizeMismatch(std::size_t sized, std::size_t written) {
  std::fprintf(stderr, "lstash: wire encoder bug: record sized for %zu bytes but %zu were written\n", sized, written);
  std::abort();
}

// A byte string at least this long, named to the Writer, is appended to the
// record rather than copied over zero-filled bytes (see Writer).
constexpr std::size_t kAppendBytes = 2048;

// Writes one record into *out. Each encoder computes the record's exact size
// first; the writer sizes *out to it once and then fills it through a
// pointer, so a field costs a store, not a call. Every byte of the record is
// written, so whatever *out held before needs no clearing: std::string only
// zero-fills growth beyond its old size, and a reused string is not filled
// at all. So that a large payload written into a new string is not
// zero-filled and then copied (twice the memory traffic of the copy alone),
// an encoder may name one byte string as `large`: the record is then sized
// without it at first, and when Bytes() reaches it, it is appended.
class Writer {
 public:
  // Replaces *out with a `size`-byte record and writes the record header.
  // Always inlined: out of line, it would let the Writer's address escape
  // (see AppendLarge).
  [[gnu::always_inline]] Writer(std::string* out, std::uint32_t magic, std::size_t size, std::string_view large = {})
      : out_(out), size_(size) {
    std::size_t first = size;  // bytes sized now
    if (large.size() >= kAppendBytes && out->size() < size) [[unlikely]] {
      large_ = large;
      first -= large.size();
    }
    begin_ = Resize(out, first, size);
    p_ = begin_;
    end_ = begin_ + first;
    Put<std::uint32_t>(magic);
    Put<std::uint16_t>(kFormatVersion);
    U8(kLittleEndianFlag);
  }
  // A size that disagrees with what was written is a bug in this file (the
  // tests and the fuzz target run every encoder; debug builds also assert
  // before each write, as a size too small would overrun *out).
  ~Writer() {
    if (p_ != end_ || large_.data() != nullptr || out_->size() != size_) {
      SizeMismatch(size_, static_cast<std::size_t>(p_ - begin_));
    }
  }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void U8(std::uint8_t v) { Put(v); }
  void U32(std::uint32_t v) { Put(v); }
  void U64(std::uint64_t v) { Put(v); }
  void Count(std::size_t n, std::string_view field) {
    if (n > std::numeric_limits<std::uint32_t>::max()) CountTooLarge(field, n);
    U32(static_cast<std::uint32_t>(n));
  }
  void Bytes(std::string_view bytes) {
    U64(bytes.size());
    if (bytes.data() == large_.data() && bytes.size() == large_.size() && !bytes.empty()) [[unlikely]] {
      const std::size_t at = static_cast<std::size_t>(p_ - begin_);
      begin_ = AppendLarge(out_, at, large_, size_);
      p_ = begin_ + at + large_.size();
      end_ = begin_ + size_;
      large_ = {};
    } else {
      Raw(bytes.data(), bytes.size());
    }
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
  template <typename T>
  void Put(T v) {
    assert(static_cast<std::size_t>(end_ - p_) >= sizeof(T));
    v = LittleEndian(v);
    std::memcpy(p_, &v, sizeof v);
    p_ += sizeof v;
  }
  void Raw(const char* data, std::size_t n) {
    assert(static_cast<std::size_t>(end_ - p_) >= n);
    if (n != 0) std::memcpy(p_, data, n);  // data may be null when n is 0
    p_ += n;
  }

  // Sizes *out to `first` bytes, with capacity for `size`; returns its data.
  [[gnu::always_inline]] static char* Resize(std::string* out, std::size_t first, std::size_t size) {
    if (first != size) out->reserve(size);
    out->resize(first);
    return out->data();
  }

  // Writes `large` at offset `at` of a `size`-byte record: *out is cut back
  // to the bytes before it, `large` is appended (into reserved capacity) and
  // the rest of the record is sized (and zero-filled) after it. Returns the
  // record's start.
  //
  // Helpers like this one are static so that no pointer to the Writer
  // escapes: the compiler can then keep p_ in a register instead of
  // reloading it after every store through it.
  [[gnu::noinline]] static char* AppendLarge(std::string* out, std::size_t at, std::string_view large,
                                             std::size_t size) {
    out->resize(at);
    out->append(large.data(), large.size());
    out->resize(size);
    return out->data();
  }

  std::string* out_;
  std::size_t size_;
  std::string_view large_;  // not yet written; empty if none
  char* begin_;
  char* p_;
  char* end_;
};

std::size_t EntriesSize(std::span<const std::string_view> entries) {
  std::size_t size = kCountBytes;
  for (std::string_view e : entries) size += kLengthBytes + e.size();
  return size;
}

// ---------------------------------------------------------------------------
// Input

// Thrown inside a decoder only; the decoder's boundary (DecodeRecord) turns
// it into a Status. Nothing is thrown for a valid record, so the happy path
// pays nothing for it.
struct DecodeFailure {
  Code code;
  std::string message;
};

[[noreturn]] [[gnu::cold]] [[gnu::noinline]] void Fail(Code code, std::string message) {
  throw DecodeFailure{code, std::move(message)};
}
[[noreturn]] [[gnu::cold]] [[gnu::noinline]] void Corrupt(std::string message) {
  Fail(Code::kCorruption, std::move(message));
}

// Like std::string::assign, minus the aliasing checks of _M_replace (about
// twice the cost): `data` is never inside *out.
inline void AssignBytes(std::string* out, const char* data, std::size_t n) {
  out->clear();
  out->append(data, n);
}

// Reads a record from a caller's bytes in place. Every read is bounds-checked
// against the current end, which a nested record narrows to its own length.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : begin_(bytes.data()), p_(begin_), end_(begin_ + bytes.size()) {}

  std::size_t remaining() const { return static_cast<std::size_t>(end_ - p_); }
  const char* position() const { return p_; }
  const char* end() const { return end_; }
  // Moves the end of readable input (to confine reads to a nested record).
  void SetEnd(const char* end) { end_ = end; }

  std::uint8_t U8() { return Read<std::uint8_t>(); }
  std::uint32_t U32() { return Read<std::uint32_t>(); }
  std::uint64_t U64() { return Read<std::uint64_t>(); }

  // Consecutive fixed-width fields read after one bounds check. A short read
  // names the first field that does not fit, as reading them one by one would.
  template <typename... T>
  std::tuple<T...> Fields() {
    constexpr std::size_t kTotal = (sizeof(T) + ...);
    if (remaining() < kTotal) [[unlikely]] ShortReadAmong({sizeof(T)...});
    const char* q = p_;
    p_ += kTotal;
    return std::tuple<T...>{Load<T>(q)...};  // a braced list is evaluated left to right
  }

  // A vector's element count, checked against what its elements would need.
  std::uint32_t Count(std::size_t min_element_bytes, std::string_view field) {
    const std::uint32_t n = U32();
    if (n > remaining() / min_element_bytes) [[unlikely]] {
      BadCount(n, min_element_bytes, field);
    }
    return n;
  }

  // A byte string's length, checked against the bytes that remain.
  std::size_t Length(std::string_view field) {
    const std::uint64_t n = U64();
    if (n > remaining()) [[unlikely]] BadLength(n, field);
    return static_cast<std::size_t>(n);
  }

  // Steps over n bytes. REQUIRES n <= remaining().
  const char* Take(std::size_t n) {
    const char* taken = p_;
    p_ += n;
    return taken;
  }

  // Validates a byte string's length and steps over it.
  void SkipBytes(std::string_view field) { Take(Length(field)); }

  // Validates a vector of deps and steps over it.
  void SkipDeps(std::string_view field) { Take(std::size_t{Count(kDepBytes, field)} * kDepBytes); }

  void Bytes(std::string* out, std::string_view field) {
    const std::size_t n = Length(field);
    AssignBytes(out, Take(n), n);
  }
  std::string_view BytesView(std::string_view field) {
    const std::size_t n = Length(field);
    return {Take(n), n};
  }

  // Vectors of fixed-size elements: once the count is checked against the
  // bytes that remain, every element is known to be there.
  void Deps(std::vector<Dep>* deps, std::string_view field) {
    deps->resize(Count(kDepBytes, field));
    for (Dep& d : *deps) {
      d.owner = Unchecked<std::uint32_t>();
      d.epoch = Unchecked<std::uint64_t>();
      d.index = Unchecked<std::uint64_t>();
    }
  }

  void Watermarks(std::vector<Watermark>* watermarks) {
    watermarks->resize(Count(kWatermarkBytes, "watermarks"));
    for (Watermark& w : *watermarks) {
      w.owner = Unchecked<std::uint32_t>();
      w.committed = Unchecked<std::uint64_t>();
    }
  }

  void U64Vector(std::vector<std::uint64_t>* values, std::string_view field) {
    values->resize(Count(8, field));
    for (std::uint64_t& v : *values) v = Unchecked<std::uint64_t>();
  }

  void EpochRecords(std::vector<EpochRecord>* epochs) {
    epochs->resize(Count(kEpochRecordBytes, "epochs"));
    for (EpochRecord& e : *epochs) {
      e.epoch = Unchecked<std::uint64_t>();
      e.start = Unchecked<std::uint64_t>();
    }
  }

  // Magic, version and the archive's byte-order flag.
  void RecordHeader(std::uint32_t magic) {
    if (remaining() < kPrefixBytes) [[unlikely]] ShortPrefix();
    const std::uint32_t seen_magic = Unchecked<std::uint32_t>();
    const std::uint16_t seen_version = Unchecked<std::uint16_t>();
    if (seen_magic != magic) [[unlikely]] BadMagic(seen_magic, magic);
    if (seen_version != kFormatVersion) [[unlikely]] BadVersion(seen_version);
    const std::uint8_t flag = U8();
    if (flag != kLittleEndianFlag) [[unlikely]] BadFlag(flag);
  }

  void ExpectEnd() {
    if (p_ != end_) [[unlikely]] Corrupt(std::to_string(remaining()) + " trailing bytes after the record");
  }

 private:
  template <typename T>
  T Read() {
    if (remaining() < sizeof(T)) [[unlikely]] ShortRead(sizeof(T));
    return Unchecked<T>();
  }
  template <typename T>
  T Unchecked() {
    return Load<T>(p_);
  }
  template <typename T>
  static T Load(const char*& q) {
    T v;
    std::memcpy(&v, q, sizeof v);
    q += sizeof v;
    return LittleEndian(v);
  }

  // The failure paths, out of line so the reads above stay small.
  [[noreturn]] [[gnu::cold]] [[gnu::noinline]] void ShortRead(std::size_t wanted, std::size_t skipped = 0) const {
    Corrupt("truncated: needs " + std::to_string(wanted) + " bytes at offset " +
            std::to_string(static_cast<std::size_t>(p_ - begin_) + skipped) + " but only " +
            std::to_string(remaining() - skipped) + " remain");
  }
  [[noreturn]] [[gnu::cold]] [[gnu::noinline]] void ShortReadAmong(std::initializer_list<std::size_t> sizes) const {
    std::size_t skipped = 0;
    for (std::size_t size : sizes) {
      if (remaining() - skipped < size) ShortRead(size, skipped);
      skipped += size;
    }
    std::abort();  // unreachable: the sizes add up to more than remain
  }
  [[noreturn]] [[gnu::cold]] [[gnu::noinline]] void ShortPrefix() const {
    Corrupt("truncated: " + std::to_string(remaining()) + " bytes cannot hold the " + std::to_string(kPrefixBytes) +
            "-byte record header");
  }
  [[noreturn]] [[gnu::cold]] [[gnu::noinline]] void BadCount(std::uint32_t n, std::size_t min_element_bytes,
                                                               std::string_view field) const {
    Corrupt(std::string(field) + " count " + std::to_string(n) + " needs at least " +
            std::to_string(static_cast<std::uint64_t>(n) * min_element_bytes) + " bytes but only " +
            std::to_string(remaining()) + " remain");
  }
  [[noreturn]] [[gnu::cold]] [[gnu::noinline]] void BadLength(std::uint64_t n, std::string_view field) const {
    Corrupt(std::string(field) + " length " + std::to_string(n) + " exceeds the " + std::to_string(remaining()) +
            " bytes remaining");
  }
  [[noreturn]] [[gnu::cold]] [[gnu::noinline]] static void BadMagic(std::uint32_t seen, std::uint32_t expected) {
    Corrupt("bad magic " + Hex32(seen) + " (" + std::string(MagicName(seen)) + "); expected " + Hex32(expected) +
            " (" + std::string(MagicName(expected)) + ")");
  }
  [[noreturn]] [[gnu::cold]] [[gnu::noinline]] static void BadVersion(std::uint16_t seen) {
    Fail(Code::kFailedPrecondition, "format version " + std::to_string(seen) +
                                        " is not supported (this build reads version " +
                                        std::to_string(kFormatVersion) + ")");
  }
  [[noreturn]] [[gnu::cold]] [[gnu::noinline]] static void BadFlag(std::uint8_t flag) {
    Corrupt("bad byte-order flag " + std::to_string(flag) + " (expected " + std::to_string(kLittleEndianFlag) +
            ", little-endian)");
  }

  const char* begin_;  // offsets in messages are from here
  const char* p_;
  const char* end_;
};

// Runs `body` over `bytes` with every failure turned into a Status prefixed
// with `what`; nothing thrown inside escapes.
template <typename Body>
Status DecodeRecord(std::string_view bytes, std::string_view what, Body&& body) {
  const auto error = [&](Code code, std::string_view message) {
    std::string full(what);
    full += ": ";
    full += message;
    return Status(code, full);
  };
  try {
    Reader reader(bytes);
    body(reader);
    reader.ExpectEnd();
    return Status::OK();
  } catch (const DecodeFailure& failure) {
    return error(failure.code, failure.message);
  } catch (const std::bad_alloc&) {
    return error(Code::kResourceExhausted, "out of memory");
  } catch (const std::exception& e) {
    return error(Code::kInternal, e.what());
  } catch (...) {
    return error(Code::kInternal, "unexpected exception");
  }
}

[[noreturn]] [[gnu::cold]] [[gnu::noinline]] void UnknownEntryFlags(std::uint8_t flags) {
  Corrupt("unknown entry flags " + std::to_string(flags));
}
[[noreturn]] [[gnu::cold]] [[gnu::noinline]] void UnknownValueKind(std::uint8_t kind) {
  Corrupt("unknown value kind " + std::to_string(kind));
}
[[noreturn]] [[gnu::cold]] [[gnu::noinline]] void UnknownEntryKind(std::uint8_t kind) {
  Corrupt("unknown entry kind " + std::to_string(kind));
}

ValueKind ReadValueKind(Reader& r) {
  const std::uint8_t value_kind = r.U8();
  if (value_kind < static_cast<std::uint8_t>(ValueKind::kRandom) ||
      value_kind > static_cast<std::uint8_t>(ValueKind::kChoice)) [[unlikely]] {
    UnknownValueKind(value_kind);
  }
  return static_cast<ValueKind>(value_kind);
}

// The fields every entry starts with and, for kExecute, those before deps.
// Returns the kind; leaves deps, payload and value to the caller.
EntryKind ReadEntryFront(Reader& r, LogEntry* e) {
  std::uint8_t kind;
  std::tie(e->owner, e->epoch, e->index, kind) = r.Fields<std::uint32_t, std::uint64_t, std::uint64_t, std::uint8_t>();
  if (kind == static_cast<std::uint8_t>(EntryKind::kExecute)) {
    e->kind = EntryKind::kExecute;
    std::uint8_t flags;
    std::tie(e->task.submitter, e->task.seq, e->channel_seq, flags) =
        r.Fields<std::uint32_t, std::uint64_t, std::uint64_t, std::uint8_t>();
    if ((flags & ~kKnownEntryFlags) != 0) [[unlikely]] UnknownEntryFlags(flags);
    e->start = (flags & kFlagStart) != 0;
    e->payload_inline = (flags & kFlagPayloadInline) != 0;
    e->value_kind = ValueKind::kRandom;
    return EntryKind::kExecute;
  }
  if (kind == static_cast<std::uint8_t>(EntryKind::kValue)) {
    e->kind = EntryKind::kValue;
    e->task = TaskId{};
    e->channel_seq = 0;
    e->start = false;
    e->payload_inline = true;
    e->payload_size = 0;
    e->payload_digest = 0;
    e->value_kind = ReadValueKind(r);
    return EntryKind::kValue;
  }
  UnknownEntryKind(kind);
}

void ReadEntryBody(Reader& r, LogEntry* e) {
  if (ReadEntryFront(r, e) == EntryKind::kExecute) {
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
    e->value.clear();
  } else {
    e->deps.clear();
    e->payload.clear();
    r.Bytes(&e->value, "value");
  }
}

// Like ReadEntryBody, but only the fields a receiver needs to hold the entry
// are kept; deps, payload and value are validated and stepped over without
// allocating, and left empty.
void ReadEntryHeader(Reader& r, LogEntry* e) {
  e->deps.clear();
  e->payload.clear();
  e->value.clear();
  if (ReadEntryFront(r, e) == EntryKind::kExecute) {
    r.SkipDeps("deps");
    if (e->payload_inline) {
      r.SkipBytes("payload");
      e->payload_size = 0;
      e->payload_digest = 0;
    } else {
      e->payload_size = r.U64();
      e->payload_digest = r.U64();
    }
  } else {
    r.SkipBytes("value");
  }
}

// Each nested entry is decoded in place, confined to its own length, so that
// a frame costs one pass over its bytes.
void ReadNestedEntries(Reader& r, std::vector<WireEntry>* entries) {
  const std::uint32_t count = r.Count(kMinNestedEntryBytes, "entries");
  entries->resize(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    try {
      WireEntry& wire = (*entries)[i];
      const std::size_t length = r.Length("entry");
      const char* start = r.position();
      const char* outer_end = r.end();
      r.SetEnd(start + length);
      r.RecordHeader(kEntryMagic);
      ReadEntryHeader(r, &wire.entry);
      r.ExpectEnd();
      r.SetEnd(outer_end);
      AssignBytes(&wire.bytes, start, length);
    } catch (DecodeFailure& failure) {
      failure.message.insert(0, "entry " + std::to_string(i) + " of " + std::to_string(count) + ": ");
      throw;
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
  Writer w(out, kEntryMagic, size,
           entry.kind != EntryKind::kExecute ? std::string_view(entry.value)
           : entry.payload_inline           ? std::string_view(entry.payload)
                                            : std::string_view());
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
                     std::uint64_t delivered, std::uint64_t released, std::string_view payload,
                     std::span<const Dep> deps, std::span<const std::string_view> entries,
                     std::span<const Watermark> watermarks, std::string* out) {
  const std::size_t size = kRecordHeaderBytes + kFrameHeaderBytes + 8 + 8 + 8 + 8 + kLengthBytes + payload.size() +
                           kCountBytes + deps.size() * kDepBytes + EntriesSize(entries) + kCountBytes +
                           watermarks.size() * kWatermarkBytes;
  Writer w(out, kFrameMagic, size, payload);
  FrameHeader task_header = header;
  task_header.kind = FrameKind::kTask;
  w.Header(task_header);
  w.U64(seq);
  w.U64(channel_seq);
  w.U64(delivered);
  w.U64(released);
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

void EncodeFrame(const DecodedFrame& f, std::string* out) {
  std::vector<std::string_view> entries;
  entries.reserve(f.entries.size());
  for (const WireEntry& e : f.entries) entries.push_back(e.bytes);
  switch (f.header.kind) {
    case FrameKind::kTask:
      EncodeTaskFrame(f.header, f.seq, f.channel_seq, f.delivered, f.released, f.payload, f.deps, entries,
                      f.watermarks, out);
      return;
    case FrameKind::kAck:
      EncodeAckFrame(f.header, f.delivered, f.released, f.watermarks, out);
      return;
    case FrameKind::kRecoveryReply:
      EncodeRecoveryReplyFrame(f.header, f.delivered, f.released, entries, out);
      return;
    case FrameKind::kRecoveryRequest:
    case FrameKind::kEpochNotice:
      EncodeHeaderOnlyFrame(f.header, out);
      return;
  }
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
    std::tie(h.sender, h.sender_epoch, h.sender_epoch_start, h.dest, h.dest_epoch) =
        r.Fields<std::uint32_t, std::uint64_t, std::uint64_t, std::uint32_t, std::uint64_t>();

    // Fields the kind does not carry read as their defaults. A task frame
    // sets every field, and resizes (rather than clears and regrows) what a
    // reused frame already holds.
    if (h.kind != FrameKind::kTask) {
      out->seq = 0;
      out->channel_seq = 0;
      out->payload.clear();
      out->deps.clear();
      out->delivered = 0;
      out->released = 0;
    }
    switch (h.kind) {
      case FrameKind::kTask:
        std::tie(out->seq, out->channel_seq, out->delivered, out->released) =
            r.Fields<std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t>();
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
        out->watermarks.clear();
        out->delivered = r.U64();
        out->released = r.U64();
        ReadNestedEntries(r, &out->entries);
        return;
      case FrameKind::kRecoveryRequest:
      case FrameKind::kEpochNotice:
        out->watermarks.clear();
        out->entries.clear();
        return;
    }
  });
}

// ---------------------------------------------------------------------------
// Checkpoints

void EncodeCheckpointHead(const CheckpointRecord& record, std::uint64_t snapshot_size, std::string* out) {
  std::size_t size = kRecordHeaderBytes + 4 + 8 + 8 + 4 + 8 + kCountBytes + 8 * record.next_channel_seq.size() +
                     kCountBytes + 8 * record.executed_upto.size() + kCountBytes +
                     kDepBytes * record.frontier.size() + kCountBytes + kLengthBytes;
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
  w.U64(snapshot_size);
}

void EncodeCheckpoint(const CheckpointRecord& record, std::string* out) {
  EncodeCheckpointHead(record, record.snapshot.size(), out);
  out->append(record.snapshot);
}

namespace {

// Every field but the snapshot, which is last: its length, then its bytes.
void ReadCheckpointFields(Reader& r, CheckpointRecord* out) {
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
}

}  // namespace

Status DecodeCheckpoint(std::string_view bytes, CheckpointRecord* out) {
  return DecodeRecord(bytes, "checkpoint", [&](Reader& r) {
    ReadCheckpointFields(r, out);
    out->snapshot.assign(r.BytesView("snapshot"));
  });
}

Status DecodeCheckpointHead(std::string_view head, std::uint64_t total, CheckpointRecord* out,
                            SnapshotExtent* snapshot) {
  return DecodeRecord(head, "checkpoint", [&](Reader& r) {
    ReadCheckpointFields(r, out);
    out->snapshot.clear();
    const std::uint64_t size = r.U64();
    const auto offset = static_cast<std::uint64_t>(r.position() - head.data());
    if (offset > total || size != total - offset) {
      Corrupt("a snapshot of " + std::to_string(size) + " bytes at offset " + std::to_string(offset) +
              " does not end a record of " + std::to_string(total) + " bytes");
    }
    *snapshot = SnapshotExtent{offset, size};
    r.SetEnd(r.position());  // the snapshot's bytes, if head holds any, are the caller's
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
    r.EpochRecords(out);
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
      static_cast<char>(kMetaMagic & 0xff),          static_cast<char>((kMetaMagic >> 8) & 0xff),
      static_cast<char>((kMetaMagic >> 16) & 0xff),  static_cast<char>((kMetaMagic >> 24) & 0xff),
      static_cast<char>(kStoreFormatVersion & 0xff), static_cast<char>((kStoreFormatVersion >> 8) & 0xff)};
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
  // A newer version's marker may be longer: its version decides. Every
  // version up to this one wrote exactly the prefix, so a longer value is no
  // marker (other metadata records share the magic).
  if (version <= kStoreFormatVersion && bytes.size() != kPrefixBytes) {
    return Corruption("store format marker: " + std::to_string(bytes.size() - kPrefixBytes) +
                      " trailing bytes after the marker");
  }
  if (version != kStoreFormatVersion) {
    return FailedPrecondition("store format version " + std::to_string(version) +
                              " is not supported (this build reads version " + std::to_string(kStoreFormatVersion) +
                              ")");
  }
  return Status::OK();
}

std::uint64_t Digest(std::string_view bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

}  // namespace lstash::wire
