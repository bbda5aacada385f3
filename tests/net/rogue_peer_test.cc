// A rogue or broken peer -- garbage bytes, truncated frames, a frame claiming
// a 4 GiB length, frames from workers outside the job, a flood -- over real
// sockets, while two real Workers exchange tasks over real Transports. Every
// bad message is rejected and counted (by the Transport if its envelope is
// wrong, by the receiving Worker if the frame inside is); every real task
// arrives exactly once; the process carries on.

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <lstash/store.h>
#include <lstash/transport.h>
#include <lstash/worker.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "net/net_test_util.h"
#include "wire/format.h"

namespace lstash {
namespace {

using nettest::Endpoints;
using nettest::kPatience;

constexpr int kRealTasks = 200;
constexpr int kFlood = 10'000;

void PutU8(std::string* s, std::uint8_t v) { s->push_back(static_cast<char>(v)); }
void PutLE(std::string* s, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// A task frame header written by hand (lib/wire/format.cc has the layout):
// magic u32, version u16, byte-order flag u8, kind u8, sender u32,
// sender_epoch u64, sender_epoch_start u64, dest u32, dest_epoch u64, then
// for kTask: seq, channel_seq, delivered, released (u64 each), payload
// (u64 length + bytes)...
std::string HandMadeTaskPrefix(std::uint16_t version = wire::kFormatVersion) {
  std::string f;
  PutLE(&f, wire::kFrameMagic, 4);
  PutLE(&f, version, 2);
  PutU8(&f, 1);  // little-endian archive
  PutU8(&f, static_cast<std::uint8_t>(wire::FrameKind::kTask));
  PutLE(&f, 1, 4);  // sender
  PutLE(&f, 1, 8);  // sender_epoch
  PutLE(&f, 1, 8);  // sender_epoch_start
  PutLE(&f, 0, 4);  // dest
  PutLE(&f, 1, 8);  // dest_epoch
  PutLE(&f, 1'000'000, 8);  // seq
  PutLE(&f, 1'000'000, 8);  // channel_seq
  PutLE(&f, 0, 8);  // delivered
  PutLE(&f, 0, 8);  // released
  return f;
}

// One message a rogue sends: over `socket` (0: claims worker 2's routing id,
// a worker of the job that is not running; 1: claims routing id "99", no
// worker of the job), in one or more parts.
struct RogueMessage {
  int socket = 0;
  std::vector<std::string> parts;
  std::string what;
};

class RoguePeerTest : public ::testing::Test {
 protected:
  WorkerOptions WOptions(WorkerId id) {
    WorkerOptions o;
    o.id = id;
    o.num_workers = 3;  // worker 2 never runs; the rogue borrows its id
    o.background_flush = false;
    o.resend_after_nanos = 20'000'000;
    o.random_seed = 77 + id;
    return o;
  }
  std::unique_ptr<Store> store_ = NewMemoryStore();
};

// One worker process's engine loop, one turn at a time.
struct Engine {
  Worker* worker = nullptr;
  Transport* transport = nullptr;
  std::vector<std::string> executed;              // payloads of tasks run (not the start task)
  std::map<WorkerId, std::uint64_t> errors_from;  // Receive errors, by Transport sender
  std::map<WorkerId, std::uint64_t> ok_from;
  std::vector<Status> error_samples;
  std::vector<Incoming> incoming;
  // What a task does.
  std::function<void(const Task&)> run;

  void Turn(std::int64_t poll_nanos) {
    incoming.clear();
    Status p = transport->Poll(poll_nanos, &incoming);
    ASSERT_TRUE(p.ok()) << p.ToString();
    for (const auto& in : incoming) {
      auto r = worker->Receive(in.bytes);
      if (r.ok()) {
        ++ok_from[in.from];
      } else {
        ++errors_from[in.from];
        if (error_samples.size() < 64) error_samples.push_back(r.status());
      }
    }
    for (int i = 0; i < 1000; ++i) {
      auto task = worker->NextTask();
      ASSERT_TRUE(task.ok()) << task.status().ToString();
      if (!task->has_value()) break;
      if (!(*task)->start) executed.push_back((*task)->payload);
      run(**task);
    }
    worker->Tick();
    auto flushed = worker->Flush();
    ASSERT_TRUE(flushed.ok() || flushed.status().code() == Code::kUnavailable) << flushed.status().ToString();
    for (auto& f : worker->TakeFrames()) {
      Status s = transport->Send(f.dest, f.bytes);
      // Worker 2 never runs: its queue may fill; the Worker resends.
      ASSERT_TRUE(s.ok() || s.code() == Code::kUnavailable) << s.ToString();
    }
  }
};

TEST_F(RoguePeerTest, BadFramesAreRejectedAndCountedWhileRealTasksArriveExactlyOnce) {
  Endpoints ep(3);
  ASSERT_TRUE(ep.ok());
  NET_ASSERT_OK_AND_ASSIGN(auto w0, Worker::Open(WOptions(0), store_.get()));
  NET_ASSERT_OK_AND_ASSIGN(auto w1, Worker::Open(WOptions(1), store_.get()));
  NET_ASSERT_OK_AND_ASSIGN(auto t0, Transport::Open(nettest::Options(0, ep.list())));
  NET_ASSERT_OK_AND_ASSIGN(auto t1, Transport::Open(nettest::Options(1, ep.list())));

  // Worker 1 sends kRealTasks tasks to worker 0, one per turn (a chain of
  // tasks to itself, through its own Transport); worker 0 answers the last
  // one, so traffic flows both ways after the flood.
  bool done_received = false;
  Engine e0, e1;
  e0.worker = w0.get();
  e0.transport = t0.get();
  e1.worker = w1.get();
  e1.transport = t1.get();
  e0.run = [&](const Task& t) {
    if (t.payload == "task-" + std::to_string(kRealTasks - 1)) {
      auto id = w0->Submit(1, "done");
      EXPECT_TRUE(id.ok()) << id.status().ToString();
    }
  };
  e1.run = [&](const Task& t) {
    int k = -1;
    if (t.start) {
      k = 0;
    } else if (t.payload.rfind("next:", 0) == 0) {
      k = std::stoi(t.payload.substr(5));
      auto id = w1->Submit(0, "task-" + std::to_string(k));
      EXPECT_TRUE(id.ok()) << id.status().ToString();
      ++k;
    } else if (t.payload == "done") {
      done_received = true;
    }
    if (k >= 0 && k < kRealTasks) {
      auto id = w1->Submit(1, "next:" + std::to_string(k));
      EXPECT_TRUE(id.ok()) << id.status().ToString();
    }
  };

  // The bad messages.
  std::vector<RogueMessage> specials;
  std::mt19937_64 rng(20240601);
  auto garbage = [&](std::size_t n) {
    std::string g(n, '\0');
    for (auto& c : g) c = static_cast<char>(rng());
    g[0] = static_cast<char>(0xff);  // never the frame magic's first byte
    return g;
  };
  for (std::size_t n : {1u, 5u, 7u, 64u, 4096u}) specials.push_back({0, {garbage(n)}, "garbage"});
  specials.push_back({0, {""}, "empty"});
  // A real, valid task frame from worker 1, truncated at several offsets.
  std::string valid;
  {
    wire::FrameHeader h{wire::FrameKind::kTask, 1, 1, 1, 0, 1};
    const wire::Dep deps[] = {wire::Dep{1, 1, 3}};
    const wire::Watermark wms[] = {wire::Watermark{1, 2}};
    wire::EncodeTaskFrame(h, 999'999, 999'999, 0, 0, "payload of a valid frame", deps, {}, wms, &valid);
    wire::DecodedFrame check;
    ASSERT_TRUE(wire::DecodeFrame(valid, &check).ok());
  }
  for (std::size_t cut : {1ul, 4ul, 6ul, 7ul, 8ul, 20ul, 41ul, 60ul, valid.size() / 2, valid.size() - 1}) {
    ASSERT_LT(cut, valid.size());
    specials.push_back({0, {valid.substr(0, cut)}, "truncated at " + std::to_string(cut)});
  }
  // A payload length of 4 GiB (the decoder must refuse it before allocating).
  {
    std::string f = HandMadeTaskPrefix();
    PutLE(&f, std::uint64_t{4} << 30, 8);
    f += "only a few bytes follow";
    specials.push_back({0, {f}, "4 GiB payload length"});
    std::string g = HandMadeTaskPrefix();
    PutLE(&g, 0, 8);           // empty payload
    PutLE(&g, 0xffffffff, 4);  // 4 billion deps
    specials.push_back({0, {g}, "4 billion deps"});
    specials.push_back({0, {HandMadeTaskPrefix(99) + std::string(40, '\0')}, "unknown version 99"});
  }
  // Well-formed frames naming workers outside the job, or another worker.
  {
    std::string f;
    wire::EncodeHeaderOnlyFrame(wire::FrameHeader{wire::FrameKind::kEpochNotice, 7, 1, 1, 0, 1}, &f);
    specials.push_back({0, {f}, "sender 7"});
    wire::EncodeHeaderOnlyFrame(wire::FrameHeader{wire::FrameKind::kRecoveryRequest, 1, 1, 0, 1, 1}, &f);
    specials.push_back({0, {f}, "addressed to worker 1"});
    const wire::Dep outside[] = {wire::Dep{42, 1, 1}};
    wire::EncodeTaskFrame(wire::FrameHeader{wire::FrameKind::kTask, 1, 1, 1, 0, 1}, 5, 5, 0, 0, "x", outside, {}, {},
                          &f);
    specials.push_back({0, {f}, "dependency on worker 42"});
  }
  // Bad envelopes: the Transport refuses these before any Worker sees them.
  specials.push_back({0, {"part1", "part2"}, "two parts"});
  specials.push_back({0, {valid, valid, valid}, "three valid parts"});
  for (int i = 0; i < 20; ++i) specials.push_back({1, {valid}, "routing id 99"});

  // Interleave the specials with the flood.
  std::deque<RogueMessage> script;
  const std::size_t every = kFlood / specials.size();
  std::size_t next_special = 0;
  for (int i = 0; i < kFlood; ++i) {
    if (next_special < specials.size() && i % every == 0) script.push_back(specials[next_special++]);
    script.push_back({0, {garbage(1 + rng() % 200)}, "flood"});
  }
  while (next_special < specials.size()) script.push_back(specials[next_special++]);
  std::uint64_t expect_worker_rejects = 0, expect_transport_rejects = 0;
  for (const auto& m : script) {
    if (m.socket == 0 && m.parts.size() == 1) {
      ++expect_worker_rejects;
    } else {
      ++expect_transport_rejects;
    }
  }

  zmq::context_t ctx;
  std::vector<zmq::socket_t> rogues;
  rogues.push_back(nettest::RawDealer(ctx, "2", ep[0]));
  rogues.push_back(nettest::RawDealer(ctx, "99", ep[0]));
  for (auto& r : rogues) r.set(zmq::sockopt::sndhwm, 100'000);

  const auto deadline = nettest::Clock::now() + kPatience;
  int turns = 0;
  auto finished = [&] {
    const Metrics m1 = w1->GetMetrics();
    return script.empty() && done_received && e0.executed.size() >= static_cast<std::size_t>(kRealTasks) &&
           m1.outbox_messages == 0 && w0->GetMetrics().frames_corrupt >= expect_worker_rejects &&
           t0->GetMetrics().rejected >= expect_transport_rejects;
  };
  while (!finished() && nettest::Clock::now() < deadline) {
    ++turns;
    // ~60 rogue messages a turn: the flood spans the real traffic.
    for (int i = 0; i < 60 && !script.empty(); ++i) {
      RogueMessage& m = script.front();
      zmq::socket_t& s = rogues[m.socket];
      // The parts of a multipart message: the first may be refused (queue
      // full), the rest then always go.
      const auto more = m.parts.size() > 1 ? zmq::send_flags::sndmore : zmq::send_flags::none;
      if (!s.send(zmq::buffer(m.parts[0]), more | zmq::send_flags::dontwait)) break;
      for (std::size_t p = 1; p < m.parts.size(); ++p) {
        const auto f = p + 1 < m.parts.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
        ASSERT_TRUE(s.send(zmq::buffer(m.parts[p]), f));
      }
      script.pop_front();
    }
    e1.Turn(0);
    if (HasFatalFailure()) return;
    e0.Turn(1'000'000);
    if (HasFatalFailure()) return;
  }
  ASSERT_TRUE(finished()) << "after " << turns << " turns: " << script.size() << " rogue messages unsent, "
                          << e0.executed.size() << " real tasks run, done " << done_received << ", outbox "
                          << w1->GetMetrics().outbox_messages << ", frames_corrupt "
                          << w0->GetMetrics().frames_corrupt << "/" << expect_worker_rejects << ", rejected "
                          << t0->GetMetrics().rejected << "/" << expect_transport_rejects;
  // Settle: nothing more should arrive, but give it the chance.
  for (int i = 0; i < 5; ++i) {
    e1.Turn(0);
    e0.Turn(2'000'000);
  }

  // Every real task arrived exactly once, in order.
  std::vector<std::string> want;
  for (int k = 0; k < kRealTasks; ++k) want.push_back("task-" + std::to_string(k));
  EXPECT_EQ(e0.executed, want);
  EXPECT_EQ(e1.executed.back(), "done");

  // Every bad message was counted once, where it was caught.
  const Metrics m0 = w0->GetMetrics();
  EXPECT_EQ(m0.frames_corrupt, expect_worker_rejects);
  EXPECT_EQ(t0->GetMetrics().rejected, expect_transport_rejects);
  EXPECT_EQ(e0.errors_from[2], expect_worker_rejects) << "Receive must return an error for each bad frame";
  EXPECT_EQ(e0.ok_from.count(2), 0u) << "a bad frame was accepted";
  EXPECT_EQ(e0.errors_from.count(1), 0u) << "a real frame was refused";
  EXPECT_EQ(e0.errors_from.size(), 1u);
  for (const Status& s : e0.error_samples) {
    EXPECT_TRUE(s.code() == Code::kCorruption || s.code() == Code::kFailedPrecondition) << s.ToString();
    EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("frame rejected"));
  }
  std::printf("  [rogue] %d turns; worker 0 rejected %llu frames, its transport %llu envelopes; %llu resends\n", turns,
              static_cast<unsigned long long>(m0.frames_corrupt),
              static_cast<unsigned long long>(t0->GetMetrics().rejected),
              static_cast<unsigned long long>(w1->GetMetrics().frames_resent));

  // The process is fine: both Workers healthy, and the job still works.
  EXPECT_TRUE(w0->health().ok()) << w0->health().ToString();
  EXPECT_TRUE(w1->health().ok()) << w1->health().ToString();
  EXPECT_EQ(m0.tasks_executed, static_cast<std::uint64_t>(kRealTasks));
}

// Below ZeroMQ's framing: a raw socket writing garbage bytes, and one that
// speaks ZMTP 3.0 correctly up to a message header claiming 4 GiB. libzmq
// drops the second connection (ZMQ_MAXMSGSIZE = max_frame_bytes) before
// allocating anything; the transport serves on.
class RawUnixSocket {
 public:
  explicit RawUnixSocket(const std::string& ipc_endpoint) {
    const std::string path = ipc_endpoint.substr(std::strlen("ipc://"));
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (fd_ < 0 || path.size() >= sizeof addr.sun_path) return;
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawUnixSocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawUnixSocket(const RawUnixSocket&) = delete;
  RawUnixSocket& operator=(const RawUnixSocket&) = delete;
  bool ok() const { return fd_ >= 0; }
  bool Write(std::string_view bytes) {
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  // True once the peer has closed the connection (reads until EOF or an
  // error), false if it is still open after `patience`.
  bool ClosedByPeer(std::chrono::milliseconds patience) {
    const auto deadline = nettest::Clock::now() + patience;
    char buf[4096];
    while (nettest::Clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 10) <= 0) continue;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return true;
    }
    return false;
  }

 private:
  int fd_ = -1;
};

std::string ZmtpGreetingNull() {
  std::string g;
  g.push_back(static_cast<char>(0xff));
  g.append(8, '\0');
  g.push_back(0x7f);
  g.push_back(3);  // version 3.0
  g.push_back(0);
  std::string mechanism = "NULL";
  mechanism.resize(20, '\0');
  g += mechanism;
  g.push_back(0);  // as-server
  g.append(31, '\0');
  return g;
}

std::string ZmtpReady(const std::string& routing_id) {
  auto property = [](const std::string& name, const std::string& value) {
    std::string p;
    p.push_back(static_cast<char>(name.size()));
    p += name;
    for (int shift = 24; shift >= 0; shift -= 8) p.push_back(static_cast<char>((value.size() >> shift) & 0xff));
    p += value;
    return p;
  };
  std::string body = "\x05READY" + property("Socket-Type", "DEALER") + property("Identity", routing_id);
  std::string cmd;
  cmd.push_back(0x04);  // command, short size
  cmd.push_back(static_cast<char>(body.size()));
  return cmd + body;
}

TEST_F(RoguePeerTest, RawGarbageAndA4GiBZmtpMessageDoNotHurtTheTransport) {
  Endpoints ep(2);
  ASSERT_TRUE(ep.ok());
  NET_ASSERT_OK_AND_ASSIGN(auto t0, Transport::Open(nettest::Options(0, ep.list())));
  NET_ASSERT_OK_AND_ASSIGN(auto t1, Transport::Open(nettest::Options(1, ep.list())));

  std::mt19937_64 rng(7);
  RawUnixSocket junk(ep[0]);
  ASSERT_TRUE(junk.ok());
  std::string bytes(64 * 1024, '\0');
  for (auto& c : bytes) c = static_cast<char>(rng());
  bytes[0] = static_cast<char>(0xff);  // looks like a ZMTP 3 greeting at first
  (void)junk.Write(bytes);             // the peer may close mid-way

  RawUnixSocket huge(ep[0]);
  ASSERT_TRUE(huge.ok());
  std::string msg = ZmtpGreetingNull() + ZmtpReady("5");  // an id of its own (see zmq_transport.cc: handover)
  msg.push_back(0x02);  // a message frame, long size
  for (int shift = 56; shift >= 0; shift -= 8) msg.push_back(static_cast<char>(((std::uint64_t{4} << 30) >> shift) & 0xff));
  msg += "the first bytes of 4 GiB";
  ASSERT_TRUE(huge.Write(msg));
  EXPECT_TRUE(huge.ClosedByPeer(kPatience)) << "the connection announcing 4 GiB was not dropped";

  // Real traffic both ways.
  NET_ASSERT_OK(t1->Send(0, "still here"));
  NET_ASSERT_OK(t0->Send(1, "me too"));
  std::vector<std::vector<Incoming>> got;
  ASSERT_TRUE(nettest::PollUntil({t0.get(), t1.get()}, &got, [&] { return !got[0].empty() && !got[1].empty(); }));
  nettest::PollFor(*t0, &got[0], std::chrono::milliseconds(50));
  ASSERT_EQ(got[0].size(), 1u) << "something from the raw sockets was delivered: " << got[0].back().bytes.size()
                               << " bytes from " << got[0].back().from;
  EXPECT_EQ(got[0][0].bytes, "still here");
  EXPECT_EQ(got[1][0].bytes, "me too");
}

}  // namespace
}  // namespace lstash
