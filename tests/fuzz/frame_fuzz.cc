// libFuzzer target for the wire decoders. Every input is offered to each
// decoder; none may crash, and whatever one accepts must re-encode to exactly
// the input bytes (the format has one encoding per value) and decode again to
// an equal value. A violation aborts so libFuzzer keeps the input.
#include "wire/format.h"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace lstash::wire {
namespace {

[[noreturn]] void Mismatch(const char* what) {
  std::fprintf(stderr, "frame_fuzz: %s does not round-trip\n", what);
  std::abort();
}

void Require(bool ok, const char* what) {
  if (!ok) Mismatch(what);
}

std::string EncodeFrame(const DecodedFrame& f) {
  std::string out;
  lstash::wire::EncodeFrame(f, &out);
  return out;
}

bool SameFrame(const DecodedFrame& a, const DecodedFrame& b) {
  if (!(a.header == b.header) || a.seq != b.seq || a.channel_seq != b.channel_seq || a.payload != b.payload ||
      a.deps != b.deps || a.watermarks != b.watermarks || a.delivered != b.delivered || a.released != b.released ||
      a.entries.size() != b.entries.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.entries.size(); ++i) {
    if (!(a.entries[i].entry == b.entries[i].entry) || a.entries[i].bytes != b.entries[i].bytes) return false;
    // Each nested entry must also stand alone, and agree with the fields
    // the frame decoder kept of it (all but deps, payload and value).
    LogEntry alone;
    if (!DecodeEntry(a.entries[i].bytes, &alone).ok()) return false;
    const LogEntry& kept = a.entries[i].entry;
    if (!kept.deps.empty() || !kept.payload.empty() || !kept.value.empty()) return false;
    alone.deps.clear();
    alone.payload.clear();
    alone.value.clear();
    if (!(alone == kept)) return false;
  }
  return true;
}

bool SameEpochs(const std::vector<EpochRecord>& a, const std::vector<EpochRecord>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].epoch != b[i].epoch || a[i].start != b[i].start) return false;
  }
  return true;
}

void CheckCode(const Status& s, const char* what) {
  if (s.ok() || s.code() == Code::kCorruption || s.code() == Code::kFailedPrecondition) return;
  std::fprintf(stderr, "frame_fuzz: %s failed with an unexpected code: %s\n", what, s.ToString().c_str());
  std::abort();
}

void FuzzOne(std::string_view input) {
  DecodedFrame frame;
  Status s = DecodeFrame(input, &frame);
  CheckCode(s, "DecodeFrame");
  if (s.ok()) {
    const std::string again = EncodeFrame(frame);
    Require(again == input, "frame (bytes)");
    DecodedFrame redecoded;
    Require(DecodeFrame(again, &redecoded).ok() && SameFrame(frame, redecoded), "frame (value)");
  }

  LogEntry entry;
  s = DecodeEntry(input, &entry);
  CheckCode(s, "DecodeEntry");
  if (s.ok()) {
    std::string again;
    EncodeEntry(entry, &again);
    Require(again == input, "entry (bytes)");
    LogEntry redecoded;
    Require(DecodeEntry(again, &redecoded).ok() && redecoded == entry, "entry (value)");
  }

  CheckpointRecord checkpoint;
  s = DecodeCheckpoint(input, &checkpoint);
  CheckCode(s, "DecodeCheckpoint");
  if (s.ok()) {
    std::string again;
    EncodeCheckpoint(checkpoint, &again);
    Require(again == input, "checkpoint (bytes)");
    CheckpointRecord redecoded;
    Require(DecodeCheckpoint(again, &redecoded).ok() && redecoded == checkpoint, "checkpoint (value)");
  }
  // The head of a record read in parts: any prefix, any claimed total.
  CheckpointRecord head;
  SnapshotExtent extent;
  s = DecodeCheckpointHead(input.substr(0, input.size() / 2), input.size(), &head, &extent);
  CheckCode(s, "DecodeCheckpointHead");
  if (s.ok()) Require(extent.offset + extent.size == input.size(), "checkpoint head (extent)");
  s = DecodeCheckpointHead(input, input.size(), &head, &extent);
  CheckCode(s, "DecodeCheckpointHead");
  if (DecodeCheckpoint(input, &checkpoint).ok()) {
    Require(s.ok() && extent.size == checkpoint.snapshot.size(), "checkpoint head (whole)");
    head.snapshot = checkpoint.snapshot;
    Require(head == checkpoint, "checkpoint head (fields)");
  }

  std::vector<EpochRecord> epochs;
  s = DecodeEpochs(input, &epochs);
  CheckCode(s, "DecodeEpochs");
  if (s.ok()) {
    std::string again;
    EncodeEpochs(epochs, &again);
    Require(again == input, "epochs (bytes)");
    std::vector<EpochRecord> redecoded;
    Require(DecodeEpochs(again, &redecoded).ok() && SameEpochs(epochs, redecoded), "epochs (value)");
  }

  LogIndex index = 0;
  s = DecodeIndex(input, &index);
  CheckCode(s, "DecodeIndex");
  if (s.ok()) {
    std::string again;
    EncodeIndex(index, &again);
    Require(again == input, "index (bytes)");
  }

  CheckCode(CheckFormatMarker(input), "CheckFormatMarker");
}

}  // namespace
}  // namespace lstash::wire

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  lstash::wire::FuzzOne(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
