// Helpers for the transport tests: ipc endpoints in a scratch directory,
// bounded polling, and raw ZeroMQ sockets playing rogue peers.
#pragma once

#include <gtest/gtest.h>
#include <lstash/curve.h>
#include <lstash/status.h>
#include <lstash/transport.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "scratch_dir.h"

#define NET_ASSERT_OK(expr)                                                            \
  do {                                                                                 \
    ::lstash::Status net_test_status_ = (expr);                                        \
    ASSERT_TRUE(net_test_status_.ok()) << #expr << ": " << net_test_status_.ToString(); \
  } while (0)

#define NET_ASSERT_OK_AND_ASSIGN(lhs, expr) \
  NET_ASSERT_OK_AND_ASSIGN_IMPL_(LSTASH_CONCAT_(net_test_result_, __LINE__), lhs, expr)
#define NET_ASSERT_OK_AND_ASSIGN_IMPL_(tmp, lhs, expr)               \
  auto tmp = (expr);                                                 \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.status().ToString(); \
  lhs = std::move(tmp).value()

namespace lstash::nettest {

using Clock = std::chrono::steady_clock;
// Generous: the tests run on loaded 2-core machines. Loops end as soon as
// their condition holds, so this only matters when something is broken.
inline constexpr std::chrono::milliseconds kPatience{15'000};

// ipc:// endpoints for `n` workers in a fresh directory, removed afterwards.
class Endpoints {
 public:
  explicit Endpoints(std::size_t n) : dir_("lstash_net") {
    for (std::size_t w = 0; w < n; ++w) list_.push_back("ipc://" + dir_.path() + "/w" + std::to_string(w));
  }
  bool ok() const { return dir_.ok(); }
  const std::vector<std::string>& list() const { return list_; }
  const std::string& operator[](std::size_t w) const { return list_[w]; }
  std::string Extra(const std::string& name) const { return "ipc://" + dir_.path() + "/" + name; }
  const std::string& dir() const { return dir_.path(); }

 private:
  testing_support::ScratchDir dir_;
  std::vector<std::string> list_;
};

inline TransportOptions Options(WorkerId self, const std::vector<std::string>& endpoints) {
  TransportOptions o;
  o.self = self;
  o.endpoints = endpoints;
  return o;
}

// Polls every transport (10 ms at a time) until done() or kPatience has
// passed; what arrives at transports[i] is appended to (*got)[i]. Returns
// done().
inline bool PollUntil(const std::vector<Transport*>& transports, std::vector<std::vector<Incoming>>* got,
                      const std::function<bool()>& done, std::chrono::milliseconds patience = kPatience) {
  got->resize(transports.size());
  const auto deadline = Clock::now() + patience;
  while (!done()) {
    if (Clock::now() > deadline) return false;
    for (std::size_t i = 0; i < transports.size(); ++i) {
      Status s = transports[i]->Poll(10'000'000 / static_cast<std::int64_t>(transports.size()), &(*got)[i]);
      EXPECT_TRUE(s.ok()) << s.ToString();
    }
  }
  return true;
}

// Polls for `duration`, appending what arrives (to show that something does
// NOT arrive).
inline void PollFor(Transport& t, std::vector<Incoming>* got, std::chrono::milliseconds duration) {
  const auto end = Clock::now() + duration;
  while (Clock::now() < end) {
    Status s = t.Poll(10'000'000, got);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
}

// A raw DEALER socket, as a rogue or broken peer would use.
inline zmq::socket_t RawDealer(zmq::context_t& ctx, const std::string& routing_id, const std::string& endpoint,
                               const CurveKeyPair* own = nullptr, const std::string& server_key = "") {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  if (!routing_id.empty()) s.set(zmq::sockopt::routing_id, routing_id);
  if (own != nullptr) {
    s.set(zmq::sockopt::curve_serverkey, server_key);
    s.set(zmq::sockopt::curve_publickey, own->public_key);
    s.set(zmq::sockopt::curve_secretkey, own->secret_key);
  }
  s.set(zmq::sockopt::reconnect_ivl, 10);
  s.connect(endpoint);
  return s;
}

// Sends without blocking forever: true if queued within kPatience.
inline bool RawSend(zmq::socket_t& s, std::string_view bytes, zmq::send_flags more = zmq::send_flags::none) {
  const auto deadline = Clock::now() + kPatience;
  while (Clock::now() < deadline) {
    if (s.send(zmq::buffer(bytes.data(), bytes.size()), more | zmq::send_flags::dontwait)) return true;
    zmq::pollitem_t item{s.handle(), 0, ZMQ_POLLOUT, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(10));
  }
  return false;
}

}  // namespace lstash::nettest
