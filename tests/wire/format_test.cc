// Tests of the wire/storage codec: round trips, the exact byte layout, and
// rejection of every kind of malformed input without crashing or allocating
// what a hostile length asks for.
#include "wire/format.h"

#include <cereal/archives/portable_binary.hpp>
#include <cereal/types/string.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace lstash::wire {
namespace {

using namespace std::string_literals;

// Little-endian byte builder, independent of the encoder under test.
class ByteBuilder {
 public:
  ByteBuilder& U8(std::uint8_t v) {
    bytes_.push_back(static_cast<char>(v));
    return *this;
  }
  ByteBuilder& U16(std::uint16_t v) { return Le(v, 2); }
  ByteBuilder& U32(std::uint32_t v) { return Le(v, 4); }
  ByteBuilder& U64(std::uint64_t v) { return Le(v, 8); }
  ByteBuilder& Raw(std::string_view s) {
    bytes_.append(s);
    return *this;
  }
  ByteBuilder& Str(std::string_view s) { return U64(s.size()).Raw(s); }
  // magic, version, archive byte-order flag
  ByteBuilder& RecordHeader(std::uint32_t magic, std::uint16_t version = kFormatVersion) {
    return U32(magic).U16(version).U8(1);
  }
  ByteBuilder& Header(FrameKind kind, WorkerId sender, Epoch sender_epoch, LogIndex start, WorkerId dest,
                      Epoch dest_epoch) {
    return U8(static_cast<std::uint8_t>(kind)).U32(sender).U64(sender_epoch).U64(start).U32(dest).U64(dest_epoch);
  }
  const std::string& bytes() const { return bytes_; }

 private:
  ByteBuilder& Le(std::uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return *this;
  }
  std::string bytes_;
};

LogEntry ExecuteEntry() {
  LogEntry e;
  e.owner = 3;
  e.epoch = 2;
  e.index = 17;
  e.kind = EntryKind::kExecute;
  e.task = TaskId{5, 99};
  e.channel_seq = 41;
  e.start = false;
  e.deps = {Dep{1, 1, 7}, Dep{5, 3, 1ull << 40}};
  e.payload_inline = true;
  e.payload = "payload\0with\xff binary"s;
  return e;
}

LogEntry OffloadedEntry() {
  LogEntry e;
  e.owner = 0;
  e.epoch = 9;
  e.index = 1;
  e.kind = EntryKind::kExecute;
  e.task = TaskId{0, 0};
  e.channel_seq = 0;
  e.start = true;
  e.payload_inline = false;
  e.payload_size = 5ull << 30;
  e.payload_digest = 0x0123456789abcdefull;
  return e;
}

LogEntry ValueEntry(ValueKind kind, std::string value) {
  LogEntry e;
  e.owner = 7;
  e.epoch = 1;
  e.index = 1000;
  e.kind = EntryKind::kValue;
  e.value_kind = kind;
  e.value = std::move(value);
  return e;
}

// What DecodeFrame keeps of a nested entry: everything but deps, payload
// and value (those are in WireEntry::bytes, for DecodeEntry).
LogEntry HeaderOnly(LogEntry e) {
  e.deps.clear();
  e.payload.clear();
  e.value.clear();
  return e;
}

std::string Encoded(const LogEntry& e) {
  std::string out;
  EncodeEntry(e, &out);
  return out;
}

FrameHeader Header(FrameKind kind) {
  FrameHeader h;
  h.kind = kind;
  h.sender = 4;
  h.sender_epoch = 3;
  h.sender_epoch_start = 120;
  h.dest = 9;
  h.dest_epoch = 2;
  return h;
}

// A task frame with two entries, deps and watermarks, and its parts.
struct TaskFrameFixture {
  FrameHeader header = Header(FrameKind::kTask);
  std::string payload = "task payload";
  std::vector<Dep> deps = {Dep{2, 1, 5}, Dep{4, 3, 11}};
  std::vector<LogEntry> entries = {ExecuteEntry(), ValueEntry(ValueKind::kNow, "12345678")};
  std::vector<std::string> encoded_entries = {Encoded(entries[0]), Encoded(entries[1])};
  std::vector<Watermark> watermarks = {Watermark{0, 10}, Watermark{7, 3}};

  std::string Encode() const {
    std::vector<std::string_view> views(encoded_entries.begin(), encoded_entries.end());
    std::string out;
    EncodeTaskFrame(header, 77, 12, 5, 3, payload, deps, views, watermarks, &out);
    return out;
  }
};

CheckpointRecord FullCheckpoint() {
  CheckpointRecord r;
  r.worker = 2;
  r.epoch = 4;
  r.at = 1234;
  r.num_workers = 3;
  r.next_seq = 88;
  r.next_channel_seq = {5, 0, 9};
  r.executed_upto = {4, 4, 0};
  r.frontier = {Dep{0, 1, 10}, Dep{1, 2, 20}};
  OutboxMessage m1;
  m1.dest = 1;
  m1.id = TaskId{2, 80};
  m1.channel_seq = 6;
  m1.payload = "outbox one";
  m1.deps = {Dep{2, 4, 1230}};
  OutboxMessage m2;
  m2.dest = 0;
  m2.id = TaskId{2, 81};
  m2.channel_seq = 5;
  r.outbox = {m1, m2};
  r.snapshot = "engine\0snapshot"s;
  return r;
}

std::string EncodedCheckpoint(const CheckpointRecord& r) {
  std::string out;
  EncodeCheckpoint(r, &out);
  return out;
}

std::string EncodedEpochs(const std::vector<EpochRecord>& epochs) {
  std::string out;
  EncodeEpochs(epochs, &out);
  return out;
}

std::string EncodedIndex(LogIndex index) {
  std::string out;
  EncodeIndex(index, &out);
  return out;
}

std::string EncodedMarker() {
  std::string out;
  EncodeFormatMarker(&out);
  return out;
}

void ExpectEntriesEqual(const std::vector<EpochRecord>& a, const std::vector<EpochRecord>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].epoch, b[i].epoch) << i;
    EXPECT_EQ(a[i].start, b[i].start) << i;
  }
}

// Every decoder, each reading into its own scratch output.
struct NamedDecoder {
  std::string name;
  std::function<Status(std::string_view)> decode;
};

std::vector<NamedDecoder> AllDecoders() {
  return {
      {"entry", [](std::string_view b) { LogEntry e; return DecodeEntry(b, &e); }},
      {"frame", [](std::string_view b) { DecodedFrame f; return DecodeFrame(b, &f); }},
      {"checkpoint", [](std::string_view b) { CheckpointRecord c; return DecodeCheckpoint(b, &c); }},
      {"epochs", [](std::string_view b) { std::vector<EpochRecord> e; return DecodeEpochs(b, &e); }},
      {"index", [](std::string_view b) { LogIndex i = 0; return DecodeIndex(b, &i); }},
      {"marker", [](std::string_view b) { return CheckFormatMarker(b); }},
  };
}

// ---------------------------------------------------------------------------
// Round trips

TEST(WireEntryTest, RoundTripsEveryKind) {
  const std::vector<LogEntry> entries = {
      ExecuteEntry(),
      OffloadedEntry(),
      ValueEntry(ValueKind::kRandom, "\x01\x02\x03\x04\x05\x06\x07\x08"),
      ValueEntry(ValueKind::kNow, std::string(8, '\0')),
      ValueEntry(ValueKind::kChoice, ""),
      ValueEntry(ValueKind::kChoice, std::string(100000, 'x')),
      LogEntry{},  // all defaults: an inline execute entry with nothing in it
  };
  for (std::size_t i = 0; i < entries.size(); ++i) {
    SCOPED_TRACE(i);
    const std::string bytes = Encoded(entries[i]);
    LogEntry decoded;
    ASSERT_TRUE(DecodeEntry(bytes, &decoded).ok()) << DecodeEntry(bytes, &decoded).ToString();
    EXPECT_EQ(decoded, entries[i]);
  }
}

TEST(WireEntryTest, DecodingIntoAUsedEntryLeavesNothingBehind) {
  LogEntry reused = ExecuteEntry();
  const LogEntry value = ValueEntry(ValueKind::kNow, "now");
  ASSERT_TRUE(DecodeEntry(Encoded(value), &reused).ok());
  EXPECT_EQ(reused, value);
  const LogEntry offloaded = OffloadedEntry();
  ASSERT_TRUE(DecodeEntry(Encoded(offloaded), &reused).ok());
  EXPECT_EQ(reused, offloaded);
  const LogEntry execute = ExecuteEntry();
  ASSERT_TRUE(DecodeEntry(Encoded(execute), &reused).ok());
  EXPECT_EQ(reused, execute);
}

TEST(WireEntryTest, EncoderReplacesOutput) {
  std::string out = "stale bytes that must go";
  EncodeEntry(ValueEntry(ValueKind::kNow, "v"), &out);
  EXPECT_EQ(out, Encoded(ValueEntry(ValueKind::kNow, "v")));
}

// Pins the byte layout: a change here breaks every stored log and every
// peer running the previous build.
TEST(WireEntryTest, ValueEntryLayoutIsStable) {
  const std::string expected = ByteBuilder()
                                   .RecordHeader(kEntryMagic)
                                   .U32(7)
                                   .U64(1)
                                   .U64(1000)
                                   .U8(2)  // kValue
                                   .U8(3)  // kChoice
                                   .Str("abc")
                                   .bytes();
  EXPECT_EQ(Encoded(ValueEntry(ValueKind::kChoice, "abc")), expected);
  EXPECT_EQ(expected.substr(0, 7), "\x4e\x45\x53\x4c\x01\x00\x01"s);
}

TEST(WireEntryTest, ExecuteEntryLayoutIsStable) {
  LogEntry e;
  e.owner = 1;
  e.epoch = 2;
  e.index = 3;
  e.task = TaskId{4, 5};
  e.channel_seq = 6;
  e.start = true;
  e.deps = {Dep{7, 8, 9}};
  e.payload = "p";
  const std::string expected = ByteBuilder()
                                   .RecordHeader(kEntryMagic)
                                   .U32(1)
                                   .U64(2)
                                   .U64(3)
                                   .U8(1)  // kExecute
                                   .U32(4)
                                   .U64(5)
                                   .U64(6)
                                   .U8(3)  // start | payload_inline
                                   .U32(1)
                                   .U32(7)
                                   .U64(8)
                                   .U64(9)
                                   .Str("p")
                                   .bytes();
  EXPECT_EQ(Encoded(e), expected);
}

// Pins the frame layouts (see ValueEntryLayoutIsStable).
TEST(WireFrameTest, TaskAndAckFrameLayoutsAreStable) {
  const std::string entry = Encoded(ValueEntry(ValueKind::kChoice, "abc"));
  const std::string_view entries[] = {entry};
  const Dep deps[] = {Dep{7, 8, 9}};
  const Watermark watermarks[] = {Watermark{10, 11}};
  std::string task;
  EncodeTaskFrame(Header(FrameKind::kTask), 1, 2, 3, 4, "p", deps, entries, watermarks, &task);
  EXPECT_EQ(task, ByteBuilder()
                      .RecordHeader(kFrameMagic)
                      .Header(FrameKind::kTask, 4, 3, 120, 9, 2)
                      .U64(1)  // seq
                      .U64(2)  // channel_seq
                      .U64(3)  // delivered
                      .U64(4)  // released
                      .Str("p")
                      .U32(1)  // deps
                      .U32(7)
                      .U64(8)
                      .U64(9)
                      .U32(1)  // entries
                      .Str(entry)
                      .U32(1)  // watermarks
                      .U32(10)
                      .U64(11)
                      .bytes());
  std::string ack;
  EncodeAckFrame(Header(FrameKind::kAck), 5, 6, watermarks, &ack);
  EXPECT_EQ(ack, ByteBuilder()
                     .RecordHeader(kFrameMagic)
                     .Header(FrameKind::kAck, 4, 3, 120, 9, 2)
                     .U64(5)  // delivered
                     .U64(6)  // released
                     .U32(1)
                     .U32(10)
                     .U64(11)
                     .bytes());
}

// Encoders write into whatever the output string held; large byte strings
// take another path when the string must grow (see Writer in format.cc).
TEST(WireFrameTest, EncodingIsTheSameIntoNewShortAndLongStrings) {
  for (std::size_t n : {std::size_t{0}, std::size_t{100}, std::size_t{2047}, std::size_t{2048}, std::size_t{70000}}) {
    SCOPED_TRACE(n);
    const std::string big(n, 'b');
    const std::string entry = Encoded(ValueEntry(ValueKind::kNow, "12345678"));
    const std::string_view entries[] = {entry, entry};
    const Dep deps[] = {Dep{7, 8, 9}};
    const std::string task = ByteBuilder()
                                 .RecordHeader(kFrameMagic)
                                 .Header(FrameKind::kTask, 4, 3, 120, 9, 2)
                                 .U64(1)
                                 .U64(2)
                                 .U64(3)
                                 .U64(4)
                                 .Str(big)
                                 .U32(1)
                                 .U32(7)
                                 .U64(8)
                                 .U64(9)
                                 .U32(2)
                                 .Str(entry)
                                 .Str(entry)
                                 .U32(0)
                                 .bytes();
    CheckpointRecord checkpoint = FullCheckpoint();
    checkpoint.snapshot = big;
    LogEntry execute = ExecuteEntry();
    execute.payload = big;
    for (const std::string& stale : {std::string(), std::string(10, 's'), std::string(n / 2, 's'),
                                     std::string(n + 1000, 's')}) {
      std::string out = stale;
      EncodeTaskFrame(Header(FrameKind::kTask), 1, 2, 3, 4, big, deps, entries, {}, &out);
      EXPECT_EQ(out, task) << stale.size();

      out = stale;
      EncodeCheckpoint(checkpoint, &out);
      CheckpointRecord decoded_checkpoint;
      ASSERT_TRUE(DecodeCheckpoint(out, &decoded_checkpoint).ok()) << stale.size();
      EXPECT_EQ(decoded_checkpoint, checkpoint) << stale.size();

      for (const LogEntry& e : {execute, ValueEntry(ValueKind::kRandom, big)}) {
        out = stale;
        EncodeEntry(e, &out);
        LogEntry decoded_entry;
        ASSERT_TRUE(DecodeEntry(out, &decoded_entry).ok()) << stale.size();
        EXPECT_EQ(decoded_entry, e) << stale.size();
      }
    }
  }
}

TEST(WireFrameTest, TaskFrameRoundTripsWithEntriesDepsAndWatermarks) {
  TaskFrameFixture f;
  const std::string bytes = f.Encode();
  DecodedFrame d;
  const Status s = DecodeFrame(bytes, &d);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(d.header, f.header);
  EXPECT_EQ(d.seq, 77u);
  EXPECT_EQ(d.channel_seq, 12u);
  EXPECT_EQ(d.payload, f.payload);
  EXPECT_EQ(d.deps, f.deps);
  EXPECT_EQ(d.watermarks, f.watermarks);
  ASSERT_EQ(d.entries.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(d.entries[i].entry, HeaderOnly(f.entries[i])) << i;
    EXPECT_EQ(d.entries[i].bytes, f.encoded_entries[i]) << i;
    LogEntry whole;
    ASSERT_TRUE(DecodeEntry(d.entries[i].bytes, &whole).ok()) << i;
    EXPECT_EQ(whole, f.entries[i]) << i;
  }
  EXPECT_EQ(d.delivered, 5u);
  EXPECT_EQ(d.released, 3u);
}

TEST(WireFrameTest, BareTaskFrameRoundTrips) {
  std::string bytes;
  EncodeTaskFrame(Header(FrameKind::kTask), 1, 1, 0, 0, "", {}, {}, {}, &bytes);
  DecodedFrame d;
  ASSERT_TRUE(DecodeFrame(bytes, &d).ok());
  EXPECT_EQ(d.header, Header(FrameKind::kTask));
  EXPECT_EQ(d.seq, 1u);
  EXPECT_EQ(d.channel_seq, 1u);
  EXPECT_TRUE(d.payload.empty());
  EXPECT_TRUE(d.deps.empty());
  EXPECT_TRUE(d.entries.empty());
  EXPECT_TRUE(d.watermarks.empty());
}

TEST(WireFrameTest, EncoderSetsTheFrameKind) {
  std::string bytes;
  EncodeTaskFrame(Header(FrameKind::kAck), 1, 1, 0, 0, "x", {}, {}, {}, &bytes);
  DecodedFrame d;
  ASSERT_TRUE(DecodeFrame(bytes, &d).ok());
  EXPECT_EQ(d.header.kind, FrameKind::kTask);
  EXPECT_EQ(d.payload, "x");
}

TEST(WireFrameTest, AckFrameRoundTrips) {
  const std::vector<Watermark> watermarks = {Watermark{1, 100}, Watermark{2, 0}, Watermark{3, ~0ull}};
  for (bool with_watermarks : {false, true}) {
    SCOPED_TRACE(with_watermarks);
    std::string bytes;
    std::span<const Watermark> w = with_watermarks ? std::span<const Watermark>(watermarks) : std::span<const Watermark>();
    EncodeAckFrame(Header(FrameKind::kAck), 55, 50, w, &bytes);
    DecodedFrame d;
    ASSERT_TRUE(DecodeFrame(bytes, &d).ok());
    EXPECT_EQ(d.header, Header(FrameKind::kAck));
    EXPECT_EQ(d.delivered, 55u);
    EXPECT_EQ(d.released, 50u);
    EXPECT_EQ(d.watermarks, std::vector<Watermark>(w.begin(), w.end()));
    EXPECT_TRUE(d.entries.empty());
    EXPECT_TRUE(d.payload.empty());
  }
}

TEST(WireFrameTest, RecoveryReplyFrameRoundTrips) {
  const std::vector<LogEntry> entries = {ExecuteEntry(), OffloadedEntry(), ValueEntry(ValueKind::kRandom, "r")};
  std::vector<std::string> encoded;
  for (const LogEntry& e : entries) encoded.push_back(Encoded(e));
  const std::vector<std::string_view> views(encoded.begin(), encoded.end());
  for (std::size_t n : {std::size_t{0}, entries.size()}) {
    SCOPED_TRACE(n);
    std::string bytes;
    EncodeRecoveryReplyFrame(Header(FrameKind::kRecoveryReply), 8, 6, std::span(views).first(n), &bytes);
    DecodedFrame d;
    ASSERT_TRUE(DecodeFrame(bytes, &d).ok());
    EXPECT_EQ(d.header, Header(FrameKind::kRecoveryReply));
    EXPECT_EQ(d.delivered, 8u);
    EXPECT_EQ(d.released, 6u);
    ASSERT_EQ(d.entries.size(), n);
    for (std::size_t i = 0; i < n; ++i) {
      EXPECT_EQ(d.entries[i].entry, HeaderOnly(entries[i]));
      EXPECT_EQ(d.entries[i].bytes, encoded[i]);
      LogEntry whole;
      ASSERT_TRUE(DecodeEntry(d.entries[i].bytes, &whole).ok());
      EXPECT_EQ(whole, entries[i]);
    }
  }
}

TEST(WireFrameTest, HeaderOnlyFramesRoundTrip) {
  for (FrameKind kind : {FrameKind::kRecoveryRequest, FrameKind::kEpochNotice}) {
    std::string bytes;
    EncodeHeaderOnlyFrame(Header(kind), &bytes);
    DecodedFrame d;
    ASSERT_TRUE(DecodeFrame(bytes, &d).ok());
    EXPECT_EQ(d.header, Header(kind));
  }
}

TEST(WireFrameTest, DecodingIntoAUsedFrameLeavesNothingBehind) {
  DecodedFrame d;
  ASSERT_TRUE(DecodeFrame(TaskFrameFixture().Encode(), &d).ok());
  std::string ack;
  EncodeAckFrame(Header(FrameKind::kAck), 3, 2, {}, &ack);
  ASSERT_TRUE(DecodeFrame(ack, &d).ok());
  EXPECT_EQ(d.header.kind, FrameKind::kAck);
  EXPECT_EQ(d.seq, 0u);
  EXPECT_EQ(d.channel_seq, 0u);
  EXPECT_TRUE(d.payload.empty());
  EXPECT_TRUE(d.deps.empty());
  EXPECT_TRUE(d.entries.empty());
  EXPECT_TRUE(d.watermarks.empty());
  EXPECT_EQ(d.delivered, 3u);

  // Fewer entries than last time: the extra ones go.
  ASSERT_TRUE(DecodeFrame(TaskFrameFixture().Encode(), &d).ok());
  const std::string one = Encoded(ValueEntry(ValueKind::kNow, "t"));
  const std::string_view views[] = {one};
  std::string reply;
  EncodeRecoveryReplyFrame(Header(FrameKind::kRecoveryReply), 0, 0, views, &reply);
  ASSERT_TRUE(DecodeFrame(reply, &d).ok());
  ASSERT_EQ(d.entries.size(), 1u);
  EXPECT_EQ(d.entries[0].entry, HeaderOnly(ValueEntry(ValueKind::kNow, "t")));
  EXPECT_EQ(d.entries[0].bytes, one);
  EXPECT_TRUE(d.payload.empty());
  EXPECT_TRUE(d.deps.empty());
}

TEST(WireCheckpointTest, RoundTrips) {
  for (const CheckpointRecord& r : {CheckpointRecord{}, FullCheckpoint()}) {
    const std::string bytes = EncodedCheckpoint(r);
    CheckpointRecord decoded;
    decoded.snapshot = "leftover";
    const Status s = DecodeCheckpoint(bytes, &decoded);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(decoded, r);
    EXPECT_EQ(DecodeCheckpoint(bytes.substr(0, bytes.size() - 1), &decoded).code(), Code::kCorruption);
  }
}

// The head decodes from any prefix that holds the fields, and says where the
// snapshot lies; a prefix too short, or a total that disagrees, is refused.
TEST(WireCheckpointTest, HeadDecodesFromAPrefixAndLocatesTheSnapshot) {
  CheckpointRecord r = FullCheckpoint();
  r.snapshot = std::string(1000, 'z');
  const std::string bytes = EncodedCheckpoint(r);
  const std::size_t fields = bytes.size() - r.snapshot.size();
  for (std::size_t prefix : {fields, fields + 1, bytes.size()}) {
    CheckpointRecord head;
    head.snapshot = "leftover";
    SnapshotExtent extent;
    const Status s = DecodeCheckpointHead(std::string_view(bytes).substr(0, prefix), bytes.size(), &head, &extent);
    ASSERT_TRUE(s.ok()) << prefix << ": " << s.ToString();
    EXPECT_EQ(extent.offset, fields);
    EXPECT_EQ(extent.size, r.snapshot.size());
    EXPECT_TRUE(head.snapshot.empty());
    head.snapshot = r.snapshot;
    EXPECT_EQ(head, r);
  }
  CheckpointRecord head;
  SnapshotExtent extent;
  EXPECT_EQ(DecodeCheckpointHead(std::string_view(bytes).substr(0, fields - 1), bytes.size(), &head, &extent).code(),
            Code::kCorruption);
  EXPECT_EQ(DecodeCheckpointHead(bytes, bytes.size() + 1, &head, &extent).code(), Code::kCorruption);
  EXPECT_EQ(DecodeCheckpointHead(bytes, fields - 1, &head, &extent).code(), Code::kCorruption);
}

TEST(WireMetaTest, EpochsRoundTrip) {
  for (const std::vector<EpochRecord>& epochs :
       {std::vector<EpochRecord>{}, std::vector<EpochRecord>{{1, 1}, {2, 0}, {3, 1ull << 50}}}) {
    std::vector<EpochRecord> decoded = {{9, 9}};
    ASSERT_TRUE(DecodeEpochs(EncodedEpochs(epochs), &decoded).ok());
    ExpectEntriesEqual(decoded, epochs);
  }
}

TEST(WireMetaTest, IndexRoundTrips) {
  for (LogIndex index : {LogIndex{0}, LogIndex{1}, LogIndex{123456789}, ~LogIndex{0}}) {
    LogIndex decoded = 42;
    ASSERT_TRUE(DecodeIndex(EncodedIndex(index), &decoded).ok());
    EXPECT_EQ(decoded, index);
  }
}

TEST(WireMetaTest, FormatMarkerIsMagicAndVersionOnly) {
  const std::string marker = EncodedMarker();
  EXPECT_EQ(marker, ByteBuilder().U32(kMetaMagic).U16(kStoreFormatVersion).bytes());
  EXPECT_TRUE(CheckFormatMarker(marker).ok());
}

TEST(WireMetaTest, FormatMarkerOfAnotherVersionIsFailedPrecondition) {
  // Version 1 stored each checkpoint as one value, 2 and 3 in chunks in the database.
  for (int version : {1, 2, 3}) {
    const Status older = CheckFormatMarker(ByteBuilder().U32(kMetaMagic).U16(version).bytes());
    EXPECT_EQ(older.code(), Code::kFailedPrecondition);
    EXPECT_EQ(older.message(),
              "store format version " + std::to_string(version) + " is not supported (this build reads version 4)");
  }
  const Status newer = CheckFormatMarker(ByteBuilder().U32(kMetaMagic).U16(5).bytes());
  EXPECT_EQ(newer.code(), Code::kFailedPrecondition);
  EXPECT_EQ(newer.message(), "store format version 5 is not supported (this build reads version 4)");
  // A future marker may be longer; the version still decides.
  EXPECT_EQ(CheckFormatMarker(ByteBuilder().U32(kMetaMagic).U16(7).Raw("more").bytes()).code(),
            Code::kFailedPrecondition);
}

TEST(WireMetaTest, BadFormatMarkersAreCorruption) {
  EXPECT_EQ(CheckFormatMarker("").code(), Code::kCorruption);
  EXPECT_EQ(CheckFormatMarker(EncodedMarker().substr(0, 5)).code(), Code::kCorruption);
  EXPECT_EQ(CheckFormatMarker(EncodedMarker() + "x").code(), Code::kCorruption);
  const Status wrong_magic = CheckFormatMarker(ByteBuilder().U32(kEntryMagic).U16(1).bytes());
  EXPECT_EQ(wrong_magic.code(), Code::kCorruption);
  EXPECT_NE(wrong_magic.message().find("0x4c53454e"), std::string_view::npos) << wrong_magic.ToString();
  EXPECT_NE(wrong_magic.message().find("0x4c534d54"), std::string_view::npos) << wrong_magic.ToString();
  // Other metadata records share the magic but are not markers.
  EXPECT_EQ(CheckFormatMarker(EncodedIndex(5)).code(), Code::kCorruption);
}

TEST(WireMetaTest, EpochsAndIndexRecordsAreNotMistakenForEachOther) {
  std::vector<EpochRecord> epochs;
  const Status s = DecodeEpochs(EncodedIndex(5), &epochs);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("index record"), std::string_view::npos) << s.ToString();
  LogIndex index = 0;
  EXPECT_EQ(DecodeIndex(EncodedEpochs({{1, 1}}), &index).code(), Code::kCorruption);
  EXPECT_EQ(DecodeIndex(ByteBuilder().RecordHeader(kMetaMagic).U8(9).U64(1).bytes(), &index).code(),
            Code::kCorruption);
}

TEST(WireDigestTest, IsXxh3) {
  EXPECT_EQ(Digest(""), 0x2d06800538d394c2ull);  // XXH3_64bits of no bytes
  EXPECT_EQ(Digest("abc"), Digest("abc"));
  EXPECT_NE(Digest("abc"), Digest("abd"));
}

// ---------------------------------------------------------------------------
// Cereal compatibility. The codec writes and reads record bodies itself, but
// the format is Cereal's PortableBinary archive: here a real
// cereal::PortableBinaryInputArchive reads what we encode, field by field,
// and what a real cereal::PortableBinaryOutputArchive writes (little-endian
// option) is byte-for-byte what we encode and decodes with our decoders.
// Byte strings go through Cereal's own std::string serialization (a u64 size
// tag, then the bytes); vector counts are u32 fields, as in format.cc.

constexpr std::size_t kPrefixBytes = 6;  // magic + version, before the archive

std::string Prefix(std::uint32_t magic) { return ByteBuilder().U32(magic).U16(kFormatVersion).bytes(); }

// Reads a record's body with Cereal.
class CerealReader {
 public:
  CerealReader(std::string_view record, std::uint32_t magic)
      : stream_(std::string(record.substr(std::min(record.size(), kPrefixBytes)))), archive_(stream_) {
    EXPECT_EQ(record.substr(0, kPrefixBytes), Prefix(magic));
    // The archive read and accepted the byte-order flag; it must say little-endian.
    EXPECT_EQ(record.at(kPrefixBytes), 1);
  }
  std::uint8_t U8() { return Get<std::uint8_t>(); }
  std::uint32_t U32() { return Get<std::uint32_t>(); }
  std::uint64_t U64() { return Get<std::uint64_t>(); }
  std::string Str() { return Get<std::string>(); }
  std::vector<Dep> Deps() {
    std::vector<Dep> deps(U32());
    for (Dep& d : deps) {
      d.owner = U32();
      d.epoch = U64();
      d.index = U64();
    }
    return deps;
  }
  std::vector<Watermark> Watermarks() {
    std::vector<Watermark> watermarks(U32());
    for (Watermark& w : watermarks) {
      w.owner = U32();
      w.committed = U64();
    }
    return watermarks;
  }
  std::vector<std::uint64_t> U64s() {
    std::vector<std::uint64_t> values(U32());
    for (std::uint64_t& v : values) v = U64();
    return values;
  }
  FrameHeader Header() {
    FrameHeader h;
    h.kind = static_cast<FrameKind>(U8());
    h.sender = U32();
    h.sender_epoch = U64();
    h.sender_epoch_start = U64();
    h.dest = U32();
    h.dest_epoch = U64();
    return h;
  }
  bool AtEnd() { return stream_.peek() == std::char_traits<char>::eof(); }

 private:
  template <typename T>
  T Get() {
    T v{};
    archive_(v);
    return v;
  }

  std::istringstream stream_;
  cereal::PortableBinaryInputArchive archive_;
};

// Writes a record's body with Cereal, after the magic and version.
class CerealWriter {
 public:
  explicit CerealWriter(std::uint32_t magic)
      : magic_(magic), archive_(stream_, cereal::PortableBinaryOutputArchive::Options::LittleEndian()) {}
  CerealWriter& U8(std::uint8_t v) { return Put(v); }
  CerealWriter& U32(std::uint32_t v) { return Put(v); }
  CerealWriter& U64(std::uint64_t v) { return Put(v); }
  CerealWriter& Str(const std::string& s) { return Put(s); }
  CerealWriter& Deps(const std::vector<Dep>& deps) {
    U32(static_cast<std::uint32_t>(deps.size()));
    for (const Dep& d : deps) U32(d.owner).U64(d.epoch).U64(d.index);
    return *this;
  }
  CerealWriter& Watermarks(const std::vector<Watermark>& watermarks) {
    U32(static_cast<std::uint32_t>(watermarks.size()));
    for (const Watermark& w : watermarks) U32(w.owner).U64(w.committed);
    return *this;
  }
  CerealWriter& U64s(const std::vector<std::uint64_t>& values) {
    U32(static_cast<std::uint32_t>(values.size()));
    for (std::uint64_t v : values) U64(v);
    return *this;
  }
  CerealWriter& Header(const FrameHeader& h) {
    return U8(static_cast<std::uint8_t>(h.kind)).U32(h.sender).U64(h.sender_epoch).U64(h.sender_epoch_start)
        .U32(h.dest).U64(h.dest_epoch);
  }
  std::string Record() const { return Prefix(magic_) + stream_.str(); }

 private:
  template <typename T>
  CerealWriter& Put(const T& v) {
    archive_(v);
    return *this;
  }

  std::uint32_t magic_;
  std::ostringstream stream_;
  cereal::PortableBinaryOutputArchive archive_;
};

LogEntry CerealReadEntry(std::string_view record) {
  CerealReader r(record, kEntryMagic);
  LogEntry e;
  e.owner = r.U32();
  e.epoch = r.U64();
  e.index = r.U64();
  e.kind = static_cast<EntryKind>(r.U8());
  if (e.kind == EntryKind::kExecute) {
    e.task.submitter = r.U32();
    e.task.seq = r.U64();
    e.channel_seq = r.U64();
    const std::uint8_t flags = r.U8();
    e.start = (flags & 1) != 0;
    e.payload_inline = (flags & 2) != 0;
    e.deps = r.Deps();
    if (e.payload_inline) {
      e.payload = r.Str();
    } else {
      e.payload_size = r.U64();
      e.payload_digest = r.U64();
    }
  } else {
    e.value_kind = static_cast<ValueKind>(r.U8());
    e.value = r.Str();
  }
  EXPECT_TRUE(r.AtEnd());
  return e;
}

std::string CerealWriteEntry(const LogEntry& e) {
  CerealWriter w(kEntryMagic);
  w.U32(e.owner).U64(e.epoch).U64(e.index).U8(static_cast<std::uint8_t>(e.kind));
  if (e.kind == EntryKind::kExecute) {
    w.U32(e.task.submitter).U64(e.task.seq).U64(e.channel_seq);
    w.U8(static_cast<std::uint8_t>((e.start ? 1 : 0) | (e.payload_inline ? 2 : 0)));
    w.Deps(e.deps);
    if (e.payload_inline) {
      w.Str(e.payload);
    } else {
      w.U64(e.payload_size).U64(e.payload_digest);
    }
  } else {
    w.U8(static_cast<std::uint8_t>(e.value_kind)).Str(e.value);
  }
  return w.Record();
}

std::vector<LogEntry> CompatEntries() {
  return {ExecuteEntry(), OffloadedEntry(), ValueEntry(ValueKind::kRandom, "\x01\x02\x03\x04\x05\x06\x07\x08"),
          ValueEntry(ValueKind::kChoice, ""), ValueEntry(ValueKind::kNow, std::string(1000, '\xfe')), LogEntry{}};
}

TEST(WireCerealTest, CerealReadsOurEntries) {
  for (const LogEntry& e : CompatEntries()) {
    EXPECT_EQ(CerealReadEntry(Encoded(e)), e);
  }
}

TEST(WireCerealTest, WeReadCerealsEntries) {
  for (const LogEntry& e : CompatEntries()) {
    const std::string bytes = CerealWriteEntry(e);
    EXPECT_EQ(bytes, Encoded(e));
    LogEntry decoded;
    const Status s = DecodeEntry(bytes, &decoded);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(decoded, e);
  }
}

TEST(WireCerealTest, CerealReadsOurTaskFrame) {
  const TaskFrameFixture f;
  CerealReader r(f.Encode(), kFrameMagic);
  EXPECT_EQ(r.Header(), f.header);
  EXPECT_EQ(r.U64(), 77u);  // seq
  EXPECT_EQ(r.U64(), 12u);  // channel_seq
  EXPECT_EQ(r.U64(), 5u);   // delivered
  EXPECT_EQ(r.U64(), 3u);   // released
  EXPECT_EQ(r.Str(), f.payload);
  EXPECT_EQ(r.Deps(), f.deps);
  ASSERT_EQ(r.U32(), f.encoded_entries.size());
  for (std::size_t i = 0; i < f.encoded_entries.size(); ++i) {
    const std::string entry = r.Str();
    EXPECT_EQ(entry, f.encoded_entries[i]) << i;
    EXPECT_EQ(CerealReadEntry(entry), f.entries[i]) << i;
  }
  EXPECT_EQ(r.Watermarks(), f.watermarks);
  EXPECT_TRUE(r.AtEnd());
}

TEST(WireCerealTest, WeReadCerealsTaskFrame) {
  const TaskFrameFixture f;
  CerealWriter w(kFrameMagic);
  w.Header(f.header).U64(77).U64(12).U64(5).U64(3).Str(f.payload).Deps(f.deps);
  w.U32(static_cast<std::uint32_t>(f.entries.size()));
  for (const LogEntry& e : f.entries) w.Str(CerealWriteEntry(e));
  w.Watermarks(f.watermarks);
  const std::string bytes = w.Record();
  EXPECT_EQ(bytes, f.Encode());

  DecodedFrame d;
  const Status s = DecodeFrame(bytes, &d);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(d.header, f.header);
  EXPECT_EQ(d.seq, 77u);
  EXPECT_EQ(d.channel_seq, 12u);
  EXPECT_EQ(d.delivered, 5u);
  EXPECT_EQ(d.released, 3u);
  EXPECT_EQ(d.payload, f.payload);
  EXPECT_EQ(d.deps, f.deps);
  EXPECT_EQ(d.watermarks, f.watermarks);
  ASSERT_EQ(d.entries.size(), f.entries.size());
  for (std::size_t i = 0; i < f.entries.size(); ++i) {
    EXPECT_EQ(d.entries[i].entry, HeaderOnly(f.entries[i])) << i;
    EXPECT_EQ(d.entries[i].bytes, f.encoded_entries[i]) << i;
  }
}

TEST(WireCerealTest, OtherFramesMatchCereal) {
  const std::vector<Watermark> watermarks = {Watermark{1, 100}, Watermark{3, ~0ull}};
  std::string ack;
  EncodeAckFrame(Header(FrameKind::kAck), 55, 50, watermarks, &ack);
  {
    CerealReader r(ack, kFrameMagic);
    EXPECT_EQ(r.Header(), Header(FrameKind::kAck));
    EXPECT_EQ(r.U64(), 55u);
    EXPECT_EQ(r.U64(), 50u);
    EXPECT_EQ(r.Watermarks(), watermarks);
    EXPECT_TRUE(r.AtEnd());
  }
  EXPECT_EQ(CerealWriter(kFrameMagic).Header(Header(FrameKind::kAck)).U64(55).U64(50).Watermarks(watermarks).Record(),
            ack);

  const std::string entry = Encoded(OffloadedEntry());
  const std::string_view views[] = {entry};
  std::string reply;
  EncodeRecoveryReplyFrame(Header(FrameKind::kRecoveryReply), 8, 6, views, &reply);
  EXPECT_EQ(CerealWriter(kFrameMagic).Header(Header(FrameKind::kRecoveryReply)).U64(8).U64(6).U32(1).Str(entry).Record(),
            reply);

  std::string notice;
  EncodeHeaderOnlyFrame(Header(FrameKind::kEpochNotice), &notice);
  EXPECT_EQ(CerealWriter(kFrameMagic).Header(Header(FrameKind::kEpochNotice)).Record(), notice);
}

TEST(WireCerealTest, CheckpointMatchesCerealBothWays) {
  const CheckpointRecord c = FullCheckpoint();
  const std::string ours = EncodedCheckpoint(c);

  CerealReader r(ours, kCheckpointMagic);
  CheckpointRecord read;
  read.worker = r.U32();
  read.epoch = r.U64();
  read.at = r.U64();
  read.num_workers = r.U32();
  read.next_seq = r.U64();
  read.next_channel_seq = r.U64s();
  read.executed_upto = r.U64s();
  read.frontier = r.Deps();
  read.outbox.resize(r.U32());
  for (OutboxMessage& m : read.outbox) {
    m.dest = r.U32();
    m.id.submitter = r.U32();
    m.id.seq = r.U64();
    m.channel_seq = r.U64();
    m.payload = r.Str();
    m.deps = r.Deps();
  }
  read.snapshot = r.Str();
  EXPECT_TRUE(r.AtEnd());
  EXPECT_EQ(read, c);

  CerealWriter w(kCheckpointMagic);
  w.U32(c.worker).U64(c.epoch).U64(c.at).U32(c.num_workers).U64(c.next_seq);
  w.U64s(c.next_channel_seq).U64s(c.executed_upto).Deps(c.frontier);
  w.U32(static_cast<std::uint32_t>(c.outbox.size()));
  for (const OutboxMessage& m : c.outbox) {
    w.U32(m.dest).U32(m.id.submitter).U64(m.id.seq).U64(m.channel_seq).Str(m.payload).Deps(m.deps);
  }
  w.Str(c.snapshot);
  EXPECT_EQ(w.Record(), ours);
  CheckpointRecord decoded;
  ASSERT_TRUE(DecodeCheckpoint(w.Record(), &decoded).ok());
  EXPECT_EQ(decoded, c);
}

TEST(WireCerealTest, MetadataMatchesCereal) {
  const std::vector<EpochRecord> epochs = {{1, 1}, {2, 0}, {3, 1ull << 50}};
  CerealWriter w(kMetaMagic);
  w.U8(1).U32(static_cast<std::uint32_t>(epochs.size()));
  for (const EpochRecord& e : epochs) w.U64(e.epoch).U64(e.start);
  EXPECT_EQ(w.Record(), EncodedEpochs(epochs));
  EXPECT_EQ(CerealWriter(kMetaMagic).U8(2).U64(123456789).Record(), EncodedIndex(123456789));
}

// ---------------------------------------------------------------------------
// Rejection of malformed input

// Valid records of every type, each with the decoder that reads it.
std::vector<std::pair<std::string, NamedDecoder>> ValidRecords() {
  const auto decoders = AllDecoders();
  const auto by_name = [&](std::string_view name) {
    for (const NamedDecoder& d : decoders) {
      if (d.name == name) return d;
    }
    ADD_FAILURE() << name;
    return decoders[0];
  };
  std::string ack;
  const std::vector<Watermark> watermarks = {Watermark{1, 2}};
  EncodeAckFrame(Header(FrameKind::kAck), 5, 4, watermarks, &ack);
  std::string notice;
  EncodeHeaderOnlyFrame(Header(FrameKind::kEpochNotice), &notice);
  const std::string entries[] = {Encoded(ExecuteEntry()), Encoded(OffloadedEntry())};
  const std::string_view entry_views[] = {entries[0], entries[1]};
  std::string reply;
  EncodeRecoveryReplyFrame(Header(FrameKind::kRecoveryReply), 1, 1, entry_views, &reply);
  return {
      {Encoded(ExecuteEntry()), by_name("entry")},
      {Encoded(OffloadedEntry()), by_name("entry")},
      {Encoded(ValueEntry(ValueKind::kChoice, "")), by_name("entry")},
      {TaskFrameFixture().Encode(), by_name("frame")},
      {ack, by_name("frame")},
      {reply, by_name("frame")},
      {notice, by_name("frame")},
      {EncodedCheckpoint(FullCheckpoint()), by_name("checkpoint")},
      {EncodedCheckpoint(CheckpointRecord{}), by_name("checkpoint")},
      {EncodedEpochs({{1, 1}, {2, 5}}), by_name("epochs")},
      {EncodedIndex(77), by_name("index")},
      {EncodedMarker(), by_name("marker")},
  };
}

TEST(WireRejectTest, ValidRecordsDecode) {
  for (const auto& [bytes, decoder] : ValidRecords()) {
    const Status s = decoder.decode(bytes);
    EXPECT_TRUE(s.ok()) << decoder.name << ": " << s.ToString();
  }
}

TEST(WireRejectTest, TruncationAtEveryOffsetIsCorruption) {
  for (const auto& [bytes, decoder] : ValidRecords()) {
    for (std::size_t length = 0; length < bytes.size(); ++length) {
      // A fresh copy of exactly `length` bytes, so reading past it is caught
      // by the address sanitizer too.
      const std::string prefix = bytes.substr(0, length);
      const Status s = decoder.decode(prefix);
      EXPECT_EQ(s.code(), Code::kCorruption)
          << decoder.name << " truncated to " << length << " of " << bytes.size() << ": " << s.ToString();
    }
  }
}

TEST(WireRejectTest, TruncationMessageSaysWhere) {
  const std::string bytes = Encoded(ValueEntry(ValueKind::kNow, ""));
  LogEntry e;
  // Cut inside the epoch field (offset 11, 8 bytes wide).
  const Status s = DecodeEntry(std::string_view(bytes).substr(0, 14), &e);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_EQ(s.message(), "entry: truncated: needs 8 bytes at offset 11 but only 3 remain");
}

TEST(WireRejectTest, TrailingBytesAreCorruption) {
  for (const auto& [bytes, decoder] : ValidRecords()) {
    const Status s = decoder.decode(bytes + '\0');
    EXPECT_EQ(s.code(), Code::kCorruption) << decoder.name << ": " << s.ToString();
    EXPECT_NE(s.message().find("trailing"), std::string_view::npos) << s.ToString();
  }
}

TEST(WireRejectTest, BadMagicIsCorruptionNamingBoth) {
  LogEntry e;
  DecodedFrame f;
  CheckpointRecord c;
  // An entry handed to the frame decoder and vice versa.
  const Status frame_from_entry = DecodeFrame(Encoded(ExecuteEntry()), &f);
  EXPECT_EQ(frame_from_entry.code(), Code::kCorruption);
  EXPECT_EQ(frame_from_entry.message(),
            "frame: bad magic 0x4c53454e (log entry); expected 0x4c534652 (frame)");
  EXPECT_EQ(DecodeEntry(TaskFrameFixture().Encode(), &e).code(), Code::kCorruption);
  EXPECT_EQ(DecodeCheckpoint(EncodedIndex(1), &c).code(), Code::kCorruption);

  std::string garbage = Encoded(ExecuteEntry());
  garbage[0] = 'Z';
  const Status s = DecodeEntry(garbage, &e);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("0x4c53455a"), std::string_view::npos) << s.ToString();
  EXPECT_NE(s.message().find("expected 0x4c53454e"), std::string_view::npos) << s.ToString();
}

TEST(WireRejectTest, UnknownVersionIsFailedPreconditionNamingBoth) {
  for (auto [bytes, decoder] : ValidRecords()) {
    // The store's marker has a version of its own.
    const std::uint16_t reads = decoder.name == "marker" ? kStoreFormatVersion : kFormatVersion;
    bytes[4] = 9;  // version, low byte
    const Status s = decoder.decode(bytes);
    EXPECT_EQ(s.code(), Code::kFailedPrecondition) << decoder.name << ": " << s.ToString();
    EXPECT_NE(s.message().find("version 9"), std::string_view::npos) << s.ToString();
    EXPECT_NE(s.message().find("reads version " + std::to_string(reads)), std::string_view::npos) << s.ToString();
  }
  LogEntry e;
  const Status s = DecodeEntry(ByteBuilder().RecordHeader(kEntryMagic, 0x0100).bytes(), &e);
  EXPECT_EQ(s.message(), "entry: format version 256 is not supported (this build reads version 1)");
}

TEST(WireRejectTest, BadByteOrderFlagIsCorruption) {
  for (std::uint8_t flag : {0, 2, 255}) {
    std::string bytes = Encoded(ExecuteEntry());
    bytes[6] = static_cast<char>(flag);
    LogEntry e;
    const Status s = DecodeEntry(bytes, &e);
    EXPECT_EQ(s.code(), Code::kCorruption) << s.ToString();
    EXPECT_NE(s.message().find("byte-order flag"), std::string_view::npos) << s.ToString();
  }
}

// Offsets in an encoded entry: 7-byte record header, owner u32, epoch u64,
// index u64, then the kind.
constexpr std::size_t kEntryKindOffset = 7 + 4 + 8 + 8;
constexpr std::size_t kValueKindOffset = kEntryKindOffset + 1;
constexpr std::size_t kEntryFlagsOffset = kEntryKindOffset + 1 + 4 + 8 + 8;
constexpr std::size_t kFrameKindOffset = 7;

TEST(WireRejectTest, UnknownEntryKindIsCorruption) {
  for (std::uint8_t kind : {0, 3, 255}) {
    std::string bytes = Encoded(ExecuteEntry());
    ASSERT_EQ(bytes[kEntryKindOffset], 1);
    bytes[kEntryKindOffset] = static_cast<char>(kind);
    LogEntry e;
    const Status s = DecodeEntry(bytes, &e);
    EXPECT_EQ(s.code(), Code::kCorruption);
    EXPECT_EQ(s.message(), "entry: unknown entry kind " + std::to_string(kind));
  }
}

TEST(WireRejectTest, UnknownValueKindIsCorruption) {
  for (std::uint8_t kind : {0, 4, 200}) {
    std::string bytes = Encoded(ValueEntry(ValueKind::kNow, "x"));
    ASSERT_EQ(bytes[kValueKindOffset], 2);
    bytes[kValueKindOffset] = static_cast<char>(kind);
    LogEntry e;
    const Status s = DecodeEntry(bytes, &e);
    EXPECT_EQ(s.code(), Code::kCorruption);
    EXPECT_EQ(s.message(), "entry: unknown value kind " + std::to_string(kind));
  }
}

TEST(WireRejectTest, UnknownEntryFlagsAreCorruption) {
  std::string bytes = Encoded(ExecuteEntry());
  ASSERT_EQ(bytes[kEntryFlagsOffset], 2);  // payload_inline
  bytes[kEntryFlagsOffset] = 2 | 8;
  LogEntry e;
  const Status s = DecodeEntry(bytes, &e);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_EQ(s.message(), "entry: unknown entry flags 10");
}

TEST(WireRejectTest, UnknownFrameKindIsCorruption) {
  for (std::uint8_t kind : {0, 6, 255}) {
    std::string bytes;
    EncodeHeaderOnlyFrame(Header(FrameKind::kEpochNotice), &bytes);
    bytes[kFrameKindOffset] = static_cast<char>(kind);
    DecodedFrame f;
    const Status s = DecodeFrame(bytes, &f);
    EXPECT_EQ(s.code(), Code::kCorruption);
    EXPECT_EQ(s.message(), "frame: unknown frame kind " + std::to_string(kind));
  }
}

// The start of a hand-made task frame, up to its payload length: header,
// seq, channel_seq, delivered, released.
ByteBuilder TaskFrameStart() {
  return std::move(
      ByteBuilder().RecordHeader(kFrameMagic).Header(FrameKind::kTask, 1, 1, 1, 2, 1).U64(5).U64(6).U64(0).U64(0));
}

// Hostile lengths must be refused before anything is sized by them; the
// decoded output's capacity shows nothing large was allocated.
constexpr std::size_t kSmallAllocation = 1 << 20;

template <typename Fn>
double Seconds(Fn&& fn) {
  const auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(WireRejectTest, FrameClaimingAHugePayloadIsRejectedWithoutAllocating) {
  const std::string bytes = TaskFrameStart().U64(0xffffffffull).Raw(std::string(12, 'p')).bytes();
  DecodedFrame f;
  Status s;
  EXPECT_LT(Seconds([&] { s = DecodeFrame(bytes, &f); }), 0.5);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_EQ(s.message(), "frame: payload length 4294967295 exceeds the 12 bytes remaining");
  EXPECT_LT(f.payload.capacity(), kSmallAllocation);

  const std::string huge = TaskFrameStart().U64(~0ull).bytes();
  EXPECT_EQ(DecodeFrame(huge, &f).code(), Code::kCorruption);
  EXPECT_LT(f.payload.capacity(), kSmallAllocation);
}

TEST(WireRejectTest, FrameClaimingHugeCountsIsRejectedWithoutAllocating) {
  DecodedFrame f;
  Status s;
  const std::string deps = TaskFrameStart().U64(0).U32(0xffffffffu).Raw(std::string(12, 'd')).bytes();
  EXPECT_LT(Seconds([&] { s = DecodeFrame(deps, &f); }), 0.5);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_EQ(s.message(), "frame: deps count 4294967295 needs at least 85899345900 bytes but only 12 remain");
  EXPECT_LT(f.deps.capacity() * sizeof(Dep), kSmallAllocation);

  const std::string entries = TaskFrameStart().U64(0).U32(0).U32(0xffffffffu).Raw(std::string(40, 'e')).bytes();
  EXPECT_LT(Seconds([&] { s = DecodeFrame(entries, &f); }), 0.5);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_NE(s.message().find("entries count 4294967295"), std::string_view::npos) << s.ToString();
  EXPECT_LT(f.entries.capacity() * sizeof(WireEntry), kSmallAllocation);

  const std::string watermarks = TaskFrameStart().U64(0).U32(0).U32(0).U32(0xffffffffu).bytes();
  EXPECT_EQ(DecodeFrame(watermarks, &f).code(), Code::kCorruption);
  EXPECT_LT(f.watermarks.capacity() * sizeof(Watermark), kSmallAllocation);

  // A count that would fit only if elements were smaller than they are.
  const std::string tight = TaskFrameStart().U64(0).U32(2).Raw(std::string(39, 'd')).bytes();
  s = DecodeFrame(tight, &f);
  EXPECT_EQ(s.message(), "frame: deps count 2 needs at least 40 bytes but only 39 remain");
}

TEST(WireRejectTest, OtherRecordsClaimingHugeSizesAreRejectedWithoutAllocating) {
  const auto checkpoint_start = [] {
    return std::move(ByteBuilder().RecordHeader(kCheckpointMagic).U32(0).U64(1).U64(2).U32(3).U64(4));
  };
  CheckpointRecord c;
  EXPECT_EQ(DecodeCheckpoint(checkpoint_start().U32(0xffffffffu).bytes(), &c).code(), Code::kCorruption);
  EXPECT_LT(c.next_channel_seq.capacity() * 8, kSmallAllocation);
  const Status snapshot =
      DecodeCheckpoint(checkpoint_start().U32(0).U32(0).U32(0).U32(0).U64(1ull << 63).Raw("abc").bytes(), &c);
  EXPECT_EQ(snapshot.code(), Code::kCorruption);
  EXPECT_EQ(snapshot.message(), "checkpoint: snapshot length 9223372036854775808 exceeds the 3 bytes remaining");
  EXPECT_LT(c.snapshot.capacity(), kSmallAllocation);
  EXPECT_EQ(DecodeCheckpoint(checkpoint_start().U32(0).U32(0).U32(0).U32(0xffffffffu).bytes(), &c).code(),
            Code::kCorruption);
  EXPECT_LT(c.outbox.capacity() * sizeof(OutboxMessage), kSmallAllocation);

  std::vector<EpochRecord> epochs;
  EXPECT_EQ(DecodeEpochs(ByteBuilder().RecordHeader(kMetaMagic).U8(1).U32(0xffffffffu).bytes(), &epochs).code(),
            Code::kCorruption);
  EXPECT_LT(epochs.capacity() * sizeof(EpochRecord), kSmallAllocation);

  LogEntry e;
  const std::string value =
      ByteBuilder().RecordHeader(kEntryMagic).U32(1).U64(1).U64(1).U8(2).U8(1).U64(0xffffffffull).bytes();
  EXPECT_EQ(DecodeEntry(value, &e).code(), Code::kCorruption);
  EXPECT_LT(e.value.capacity(), kSmallAllocation);
}

TEST(WireRejectTest, CorruptNestedEntryRejectsTheWholeFrame) {
  TaskFrameFixture fixture;
  const std::string good = fixture.Encode();
  const std::size_t second = good.find(fixture.encoded_entries[1]);
  ASSERT_NE(second, std::string::npos);
  DecodedFrame f;

  std::string bad_magic = good;
  bad_magic[second] ^= 0x01;
  Status s = DecodeFrame(bad_magic, &f);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_EQ(s.message().substr(0, 25), "frame: entry 1 of 2: bad ") << s.ToString();

  std::string bad_kind = good;
  bad_kind[second + kEntryKindOffset] = 9;
  s = DecodeFrame(bad_kind, &f);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_EQ(s.message(), "frame: entry 1 of 2: unknown entry kind 9");

  std::string new_version = good;
  new_version[second + 4] = 2;
  s = DecodeFrame(new_version, &f);
  EXPECT_EQ(s.code(), Code::kFailedPrecondition) << s.ToString();
}

TEST(WireRejectTest, NestedEntryMustFillExactlyItsLength) {
  const std::string entry = Encoded(ValueEntry(ValueKind::kNow, "12345678"));
  const auto frame = [&](std::uint64_t length, std::string_view body) {
    return TaskFrameStart().U64(0).U32(0).U32(1).U64(length).Raw(body).U32(0).bytes();
  };
  DecodedFrame f;
  ASSERT_TRUE(DecodeFrame(frame(entry.size(), entry), &f).ok());
  ASSERT_EQ(f.entries.size(), 1u);
  EXPECT_EQ(f.entries[0].bytes, entry);

  // Length one longer than the entry: the entry has a trailing byte.
  Status s = DecodeFrame(frame(entry.size() + 1, entry + 'x'), &f);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_EQ(s.message(), "frame: entry 0 of 1: 1 trailing bytes after the record");

  // Length one shorter: the entry must not read past its length into the frame.
  s = DecodeFrame(frame(entry.size() - 1, entry), &f);
  EXPECT_EQ(s.code(), Code::kCorruption);
  EXPECT_EQ(s.message(), "frame: entry 0 of 1: value length 8 exceeds the 7 bytes remaining");
}

// Re-encodes a decoded frame with the encoder for its kind.
std::string Reencode(const DecodedFrame& f) {
  std::string out;
  EncodeFrame(f, &out);
  return out;
}

// Flipped bytes either decode to a value whose encoding is exactly the input
// (there is no checksum: a flip inside a payload is a different valid
// record), or are rejected as corrupt or of an unknown version.
TEST(WireRejectTest, RandomByteFlipsNeverCrash) {
  constexpr std::uint32_t kFirstSeed = 20240601;
  constexpr int kSeeds = 3000;
  const auto records = ValidRecords();
  const auto decoders = AllDecoders();
  int rejected = 0;
  for (int i = 0; i < kSeeds; ++i) {
    const std::uint32_t seed = kFirstSeed + static_cast<std::uint32_t>(i);
    std::mt19937 rng(seed);
    std::string bytes = records[rng() % records.size()].first;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) bytes[rng() % bytes.size()] ^= static_cast<char>(1 + rng() % 255);
    for (const NamedDecoder& d : decoders) {
      const Status s = d.decode(bytes);
      ASSERT_TRUE(s.ok() || s.code() == Code::kCorruption || s.code() == Code::kFailedPrecondition)
          << "seed " << seed << ", " << d.name << ": " << s.ToString();
      if (!s.ok()) ++rejected;
    }
    LogEntry entry;
    if (DecodeEntry(bytes, &entry).ok()) {
      ASSERT_EQ(Encoded(entry), bytes) << "seed " << seed;
    }
    DecodedFrame frame;
    if (DecodeFrame(bytes, &frame).ok()) {
      ASSERT_EQ(Reencode(frame), bytes) << "seed " << seed;
    }
    CheckpointRecord checkpoint;
    if (DecodeCheckpoint(bytes, &checkpoint).ok()) {
      ASSERT_EQ(EncodedCheckpoint(checkpoint), bytes) << "seed " << seed;
    }
    std::vector<EpochRecord> epochs;
    if (DecodeEpochs(bytes, &epochs).ok()) {
      ASSERT_EQ(EncodedEpochs(epochs), bytes) << "seed " << seed;
    }
  }
  // Most flips hit structure and every record fails all but one decoder.
  EXPECT_GT(rejected, kSeeds * 5);
}

}  // namespace
}  // namespace lstash::wire
