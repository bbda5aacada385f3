#include "storeserver/ack_journal.h"

#include "wire/format.h"

#include <fmt/format.h>
#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <optional>
#include <sstream>

namespace lstash::store_journal {
namespace {

constexpr const char* kHeader = "lstash-acks 1";
constexpr std::size_t kMaxListed = 20;

// Where `worker`'s latest checkpoint was taken, if it has one: a part of no
// bytes, so a record of GiBs is not read for its index.
Result<std::optional<LogIndex>> CheckpointAt(Store* store, WorkerId worker) {
  LSTASH_ASSIGN_OR_RETURN(std::optional<CheckpointPart> head, store->ReadCheckpointPart(worker, 0, 0));
  return head ? std::optional<LogIndex>(head->at) : std::nullopt;
}

}  // namespace

Result<std::unique_ptr<AckJournal>> AckJournal::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return IOError("cannot open the ack journal " + path);
  auto journal = std::unique_ptr<AckJournal>(new AckJournal(fd));
  if (::lseek(fd, 0, SEEK_END) == 0) journal->Write(std::string(kHeader) + "\n");
  return journal;
}

AckJournal::~AckJournal() { ::close(fd_); }

void AckJournal::Write(const std::string& lines) {
  std::lock_guard<std::mutex> lock(mu_);
  for (std::size_t done = 0; done < lines.size();) {
    const ssize_t n = ::write(fd_, lines.data() + done, lines.size() - done);
    if (n <= 0) return;  // a test aid: a short journal shows as unacknowledged writes, never as false losses
    done += static_cast<std::size_t>(n);
  }
}

void AckJournal::RecordAppend(WorkerId worker, Epoch epoch, std::span<const LogRecord> records) {
  std::string lines;
  for (const auto& r : records) lines += fmt::format("a {} {} {} {:x}\n", worker, epoch, r.index, wire::Digest(r.bytes));
  Write(lines);
}

void AckJournal::RecordCheckpoint(WorkerId worker, Epoch epoch, LogIndex at) {
  Write(fmt::format("c {} {} {}\n", worker, epoch, at));
}

Result<DurabilityReport> CheckDurability(const std::string& path, Store* store) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return IOError("cannot read the ack journal " + path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.rfind(std::string(kHeader) + "\n", 0) != 0) {
    return Corruption(path + ": not an ack journal of format 1 (first line must be '" + kHeader + "')");
  }
  text.resize(text.rfind('\n') + 1);  // a last line without '\n' was never acknowledged
  struct Acked {
    Epoch epoch = 0;
    std::uint64_t digest = 0;
  };
  std::map<WorkerId, std::map<LogIndex, Acked>> entries;
  std::map<WorkerId, LogIndex> checkpoints;  // the furthest acknowledged
  DurabilityReport report;
  std::istringstream lines(text.substr(std::string(kHeader).size() + 1));
  std::string line;
  for (std::size_t n = 2; std::getline(lines, line); ++n) {
    std::istringstream fields(line);
    char kind = 0;
    WorkerId worker = 0;
    Epoch epoch = 0;
    LogIndex index = 0;
    if (!(fields >> kind >> worker >> epoch >> index) || (kind != 'a' && kind != 'c')) {
      return Corruption(fmt::format("{} line {}: '{}' is not a journal line", path, n, line));
    }
    if (kind == 'c') {
      checkpoints[worker] = std::max(checkpoints[worker], index);
      ++report.checkpoints_checked;
      continue;
    }
    std::uint64_t digest = 0;
    if (!(fields >> std::hex >> digest)) return Corruption(fmt::format("{} line {}: no digest", path, n));
    entries[worker][index] = Acked{epoch, digest};  // a retried append is the same entry
  }
  auto violation = [&](std::string v) {
    if (report.violations.size() < kMaxListed) report.violations.push_back(std::move(v));
  };
  std::uint64_t lost = 0;
  for (const auto& [worker, acked] : entries) {
    LSTASH_ASSIGN_OR_RETURN(const std::optional<LogIndex> checkpoint_at, CheckpointAt(store, worker));
    const LogIndex folded = checkpoint_at.value_or(0);
    std::vector<LogRecord> log;
    LSTASH_RETURN_IF_ERROR(store->ReadLog(worker, folded + 1, &log));
    std::map<LogIndex, std::uint64_t> held;
    for (const auto& r : log) held[r.index] = wire::Digest(r.bytes);
    for (const auto& [index, a] : acked) {
      ++report.entries_checked;
      if (index <= folded) continue;  // folded into the checkpoint
      auto it = held.find(index);
      if (it == held.end()) {
        ++lost;
        violation(fmt::format("durability: worker {}'s log entry {} (epoch {}) was acknowledged but is gone", worker,
                              index, a.epoch));
      } else if (it->second != a.digest) {
        ++lost;
        violation(fmt::format("durability: worker {}'s log entry {} holds other bytes than the acknowledged ones",
                              worker, index));
      }
    }
  }
  for (const auto& [worker, at] : checkpoints) {
    LSTASH_ASSIGN_OR_RETURN(const std::optional<LogIndex> latest, CheckpointAt(store, worker));
    if (!latest || *latest < at) {
      ++lost;
      violation(fmt::format("durability: worker {}'s checkpoint at {} was acknowledged but the latest is at {}", worker,
                            at, latest.value_or(0)));
    }
  }
  if (lost > kMaxListed) report.violations.push_back(fmt::format("durability: {} acknowledged writes lost in all", lost));
  return report;
}

}  // namespace lstash::store_journal
