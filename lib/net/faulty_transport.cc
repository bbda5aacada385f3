#include "net/faulty_transport.h"

#include <algorithm>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lstash::net {
namespace {

// A reordered frame whose peer gets nothing more still leaves after this.
constexpr std::int64_t kReorderTimeoutNanos = 5'000'000;
// Poll's rounds each end on a held frame's due time; with a real clock each
// takes >= 1 ms, this only bounds a clock that does not move.
constexpr int kMaxPollRounds = 64;

// Up to `max_digits` decimal digits, nothing else (so no sign, no overflow).
std::optional<std::uint64_t> Digits(std::string_view s, std::size_t max_digits) {
  if (s.empty() || s.size() > max_digits) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return v;
}

// "5ms", "500us" or "5" (milliseconds), in nanoseconds.
std::optional<std::int64_t> DelayNanos(std::string_view s) {
  std::int64_t unit = 1'000'000;
  if (s.ends_with("ms")) {
    s.remove_suffix(2);
  } else if (s.ends_with("us")) {
    s.remove_suffix(2);
    unit = 1'000;
  }
  const auto v = Digits(s, 9);  // < 10^9 ms: fits in int64 nanoseconds
  if (!v) return std::nullopt;
  return static_cast<std::int64_t>(*v) * unit;
}

Status ApplyEntry(std::string_view entry, std::vector<std::string_view>* seen, NetFaults* f) {
  auto bad = [entry](std::string_view why) {
    return InvalidArgument("net faults: '" + std::string(entry) + "': " + std::string(why));
  };
  if (entry.empty()) return bad("an empty entry");
  const auto colon = entry.find(':');
  if (colon == std::string_view::npos) return bad("expected NAME:VALUE with NAME one of loss, dup, reorder, delay");
  const std::string_view name = entry.substr(0, colon);
  const std::string_view value = entry.substr(colon + 1);
  std::uint32_t* percent = name == "loss"      ? &f->loss_percent
                           : name == "dup"     ? &f->dup_percent
                           : name == "reorder" ? &f->reorder_percent
                                               : nullptr;
  if (percent == nullptr && name != "delay") return bad("unknown fault (known: loss, dup, reorder, delay)");
  if (std::find(seen->begin(), seen->end(), name) != seen->end()) {
    return bad("'" + std::string(name) + "' is given twice");
  }
  seen->push_back(name);
  if (percent == nullptr) {
    const auto nanos = DelayNanos(value);
    if (!nanos) return bad("give a delay such as delay:5ms, delay:500us or delay:5 (milliseconds)");
    f->delay_nanos = *nanos;
    return Status::OK();
  }
  const auto v = Digits(value, 3);
  if (!v || *v > 100) return bad("a percentage must be a whole number from 0 to 100");
  *percent = static_cast<std::uint32_t>(*v);
  return Status::OK();
}

class FaultyTransport final : public Transport {
 public:
  FaultyTransport(std::unique_ptr<Transport> inner, const NetFaults& faults, Clock* clock)
      : inner_(std::move(inner)), faults_(faults), clock_(clock), rng_(faults.seed) {}

  Status Send(WorkerId dest, std::string_view bytes) override;
  Status Poll(std::int64_t timeout_nanos, std::vector<Incoming>* out) override;
  Status Reconnect(WorkerId peer) override;
  TransportMetrics GetMetrics() const override { return inner_->GetMetrics(); }

  const NetFaultCounts& counts() const { return counts_; }

 private:
  // (due time, sequence number): held frames leave in this order.
  using Key = std::pair<std::int64_t, std::uint64_t>;
  struct Held {
    WorkerId dest = 0;
    std::string bytes;
    std::optional<Key> follower;  // a reordered frame that leaves right after this one
  };

  bool Roll(std::uint32_t percent) { return rng_() % 100 < percent; }
  std::int64_t DrawDelay() {
    const auto span = static_cast<std::uint64_t>(faults_.delay_nanos) + 1;
    return faults_.delay_nanos > 0 ? static_cast<std::int64_t>(rng_() % span) : 0;
  }
  Status Forward(std::int64_t now, WorkerId dest, std::string_view bytes, std::int64_t delay,
                 std::optional<Key> follower);
  void Release(Key key, Held held);
  void ReleaseFollower(const std::optional<Key>& follower);
  void ReleaseDue(std::int64_t now);

  std::unique_ptr<Transport> inner_;
  const NetFaults faults_;
  Clock* const clock_;
  std::mt19937_64 rng_;
  std::map<Key, Held> held_;
  std::unordered_map<WorkerId, Key> waiting_;  // per peer: the reordered frame awaiting the next one
  std::uint64_t next_seq_ = 0;
  NetFaultCounts counts_;
};

Status FaultyTransport::Send(WorkerId dest, std::string_view bytes) {
  const std::int64_t now = clock_->MonotonicNanos();
  ReleaseDue(now);
  // Every draw is made on every Send, so that one fault's decisions do not
  // depend on which other faults are on.
  const bool lose = Roll(faults_.loss_percent);
  const bool dup = Roll(faults_.dup_percent);
  const bool reorder = Roll(faults_.reorder_percent);
  const std::int64_t delay = DrawDelay();
  const std::int64_t dup_delay = DrawDelay();
  if (lose) {
    ++counts_.dropped;
    return Status::OK();
  }
  // A frame already held back for this peer leaves right after this one; this
  // one is not held back too, or neither would overtake the other.
  std::optional<Key> follower;
  if (auto w = waiting_.find(dest); w != waiting_.end()) {
    follower = w->second;
    waiting_.erase(w);
  }
  Status status;
  if (reorder && !follower) {
    ++counts_.reordered;
    const Key key{now + std::max(faults_.delay_nanos, kReorderTimeoutNanos), next_seq_++};
    held_.emplace(key, Held{dest, std::string(bytes), std::nullopt});
    waiting_[dest] = key;
  } else {
    status = Forward(now, dest, bytes, delay, follower);
  }
  if (dup) {
    ++counts_.duplicated;
    Status copy = Forward(now, dest, bytes, dup_delay, std::nullopt);
    if (status.ok()) status = std::move(copy);
  }
  return status;
}

Status FaultyTransport::Forward(std::int64_t now, WorkerId dest, std::string_view bytes, std::int64_t delay,
                                std::optional<Key> follower) {
  if (delay > 0) {
    ++counts_.delayed;
    held_.emplace(Key{now + delay, next_seq_++}, Held{dest, std::string(bytes), follower});
    return Status::OK();
  }
  Status s = inner_->Send(dest, bytes);
  ReleaseFollower(follower);
  return s;
}

void FaultyTransport::Release(Key key, Held held) {
  if (auto w = waiting_.find(held.dest); w != waiting_.end() && w->second == key) waiting_.erase(w);
  (void)inner_->Send(held.dest, held.bytes);  // refused: lost, as on a network
  ReleaseFollower(held.follower);
}

void FaultyTransport::ReleaseFollower(const std::optional<Key>& follower) {
  if (!follower) return;
  auto it = held_.find(*follower);
  if (it == held_.end()) return;  // it timed out first, or Reconnect dropped it
  auto node = held_.extract(it);
  Release(node.key(), std::move(node.mapped()));
}

void FaultyTransport::ReleaseDue(std::int64_t now) {
  while (!held_.empty() && held_.begin()->first.first <= now) {
    auto node = held_.extract(held_.begin());
    Release(node.key(), std::move(node.mapped()));
  }
}

Status FaultyTransport::Poll(std::int64_t timeout_nanos, std::vector<Incoming>* out) {
  if (out == nullptr) return InvalidArgument("transport: Poll output is null");
  std::int64_t now = clock_->MonotonicNanos();
  ReleaseDue(now);
  const std::int64_t deadline = now + std::max<std::int64_t>(timeout_nanos, 0);
  const std::size_t before = out->size();
  for (int round = 0; round < kMaxPollRounds; ++round) {
    // Wake for the next held frame if it falls due before the caller's deadline.
    const bool held_first = !held_.empty() && held_.begin()->first.first < deadline;
    const std::int64_t until = held_first ? held_.begin()->first.first : deadline;
    LSTASH_RETURN_IF_ERROR(inner_->Poll(until - now, out));
    now = clock_->MonotonicNanos();
    ReleaseDue(now);
    if (out->size() > before || now >= deadline || !held_first) break;
  }
  return Status::OK();
}

Status FaultyTransport::Reconnect(WorkerId peer) {
  // Held frames were for the old connection: the inner transport drops its
  // queue for `peer` too.
  for (auto it = held_.begin(); it != held_.end();) {
    it = it->second.dest == peer ? held_.erase(it) : std::next(it);
  }
  waiting_.erase(peer);
  return inner_->Reconnect(peer);
}

}  // namespace

bool NetFaults::any() const {
  return loss_percent > 0 || dup_percent > 0 || reorder_percent > 0 || delay_nanos > 0;
}

Result<NetFaults> ParseNetFaults(std::string_view spec) {
  NetFaults faults;
  if (spec.empty() || spec == "none") return faults;
  std::vector<std::string_view> seen;
  while (true) {
    const auto comma = spec.find(',');
    LSTASH_RETURN_IF_ERROR(ApplyEntry(spec.substr(0, comma), &seen, &faults));
    if (comma == std::string_view::npos) break;
    spec.remove_prefix(comma + 1);
  }
  return faults;
}

std::unique_ptr<Transport> WrapWithFaults(std::unique_ptr<Transport> inner, const NetFaults& faults, Clock* clock) {
  if (!faults.any()) return inner;
  return std::make_unique<FaultyTransport>(std::move(inner), faults, clock);
}

NetFaultCounts GetNetFaultCounts(const Transport& transport) {
  const auto* faulty = dynamic_cast<const FaultyTransport*>(&transport);
  return faulty != nullptr ? faulty->counts() : NetFaultCounts{};
}

}  // namespace lstash::net
