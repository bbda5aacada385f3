// The ZeroMQ Transport (see include/lstash/transport.h).
//
// Sockets, per Transport (one zmq::context_t, one I/O thread):
//   ROUTER  bound on endpoints[self]; every peer's frames arrive here as
//           [routing id][payload]. ZMQ_ROUTER_HANDOVER is on: a restarted
//           peer's new connection takes over its routing id at once, even if
//           the old connection is not yet known to be dead (without it, the
//           new connection would be ignored until the old one is torn down).
//   DEALER  one per peer, ZMQ_ROUTING_ID = our decimal worker id, connected
//           to endpoints[peer]. ZMQ_IMMEDIATE is off, so messages for a peer
//           that is not up yet (or is restarting) wait in the DEALER's queue
//           (at most send_queue_limit, ZMQ_SNDHWM) and go out when it
//           connects; what was already written to a connection that then
//           broke is lost, and the Worker resends it.
//   Frames to ourselves never touch a socket: they wait in a local queue.
//   A DEALER whose peer died reconnects by itself (10 ms, backing off to
//   500 ms). A peer that was replaced while alive (paused, partitioned)
//   still holds its connection: the engine calls Reconnect() when the
//   Worker hears from the new incarnation (Listener::OnPeerIncarnation).
//
// Checks on every received message (failures are counted in `rejected` and
// logged, the first 10 and then every 1000th):
//   - exactly one payload part;
//   - the routing id starts with a decimal worker id of the job, not ours
//     (then ".<connection tag>": each connection's id is its own);
//   - with CURVE: the connection's authenticated key (the ZAP handler's
//     User-Id) is server_keys[routing id], so a peer cannot claim another
//     worker's id (every worker's own public key is listed there).
// Oversized messages never arrive: libzmq (ZMQ_MAXMSGSIZE) drops the
// connection that sent one, with no event to count; the sender's DEALER
// reconnects. Our own Send refuses such frames instead.
//
// ZeroMQ errors are caught here and returned as Status; nothing throws out.

#include <lstash/transport.h>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "net/zmq_util.h"

namespace lstash {
namespace {

constexpr int kReconnectIvlMs = 10;       // first reconnect attempt
constexpr int kReconnectIvlMaxMs = 500;   // backoff cap
// No ZMTP heartbeats: in libzmq 4.3.4 a heartbeat timeout against a stalled
// peer (a paused process) can abort the process (assertion !_io_error in
// stream_engine_base.cpp, libzmq issues #4364, #4767).
constexpr std::size_t kMaxDrainPerPoll = 8192;

// The worker id a routing id names: "<id>" or "<id>.<connection tag>".
std::optional<WorkerId> ParseWorkerId(std::string_view text, std::size_t num_workers) {
  text = text.substr(0, text.find('.'));
  if (text.empty() || text.size() > 10 || (text.size() > 1 && text[0] == '0')) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (value >= num_workers) return std::nullopt;
  return static_cast<WorkerId>(value);
}

class ZmqTransport final : public Transport {
 public:
  explicit ZmqTransport(const TransportOptions& options) : options_(options) {}

  ~ZmqTransport() override {
    // Sockets close before the ZAP handler (see zmq_util.h), the handler
    // before the context; member order does this, spelled out for clarity.
    dealers_.clear();
    router_.close();
    zap_.reset();
  }

  Status Init();
  Status Send(WorkerId dest, std::string_view bytes) override;
  Status Poll(std::int64_t timeout_nanos, std::vector<Incoming>* out) override;
  Status Reconnect(WorkerId peer) override {
    if (peer >= options_.endpoints.size()) return InvalidArgument("Reconnect: no worker " + std::to_string(peer));
    if (peer == options_.self) return Status::OK();
    dealers_[peer].close();  // what it still queued was for the old incarnation
    return SetUpDealer(peer);
  }
  TransportMetrics GetMetrics() const override {
    TransportMetrics m = metrics_;
    if (zap_) m.auth_refused = zap_->refused();
    return m;
  }

 private:
  Status SetUpRouter();
  Status SetUpDealer(WorkerId peer);
  void Reject(const std::string& reason);
  void Accept(zmq::message_t& routing_id, zmq::message_t& payload, std::size_t parts, std::vector<Incoming>* out);

  const TransportOptions options_;
  zmq::context_t context_;
  std::unique_ptr<net::ZapAuthenticator> zap_;
  zmq::socket_t router_;
  std::vector<zmq::socket_t> dealers_;     // [self] holds no socket
  // Routing ids are "<self>.<tag>.<n>", unique to each connection: a replaced
  // process of the same worker (a zombie) that connects to a peer must not
  // take over our connection's id there (ROUTER handover), or our frames
  // would vanish once it exits.
  const std::string connection_tag_ = std::to_string(::getpid()) + "-" + std::to_string(
      std::chrono::steady_clock::now().time_since_epoch().count() & 0xffffffff);
  std::uint64_t connections_made_ = 0;
  std::vector<std::string> peer_keys_;     // with CURVE: canonical server_keys
  std::deque<std::string> loopback_;       // frames to ourselves
  TransportMetrics metrics_;
};

Status CheckOptions(const TransportOptions& o) {
  if (o.endpoints.empty()) return InvalidArgument("transport: no endpoints");
  if (o.self >= o.endpoints.size()) {
    return InvalidArgument("transport: self " + std::to_string(o.self) + " is not below the " +
                           std::to_string(o.endpoints.size()) + " endpoints");
  }
  for (std::size_t w = 0; w < o.endpoints.size(); ++w) {
    if (o.endpoints[w].empty()) return InvalidArgument("transport: endpoint of worker " + std::to_string(w) + " is empty");
  }
  if (o.max_frame_bytes == 0) return InvalidArgument("transport: max_frame_bytes must be positive");
  if (o.send_queue_limit <= 0) return InvalidArgument("transport: send_queue_limit must be positive");
  if (o.curve) {
    LSTASH_RETURN_IF_ERROR(net::CheckCurveAvailable());
    LSTASH_RETURN_IF_ERROR(net::CheckZ85Key(o.curve->own.public_key, "transport: curve.own.public_key"));
    LSTASH_RETURN_IF_ERROR(net::CheckZ85Key(o.curve->own.secret_key, "transport: curve.own.secret_key"));
    if (o.curve->server_keys.size() != o.endpoints.size()) {
      return InvalidArgument("transport: curve.server_keys has " + std::to_string(o.curve->server_keys.size()) +
                             " keys for " + std::to_string(o.endpoints.size()) + " workers");
    }
    for (std::size_t w = 0; w < o.curve->server_keys.size(); ++w) {
      LSTASH_RETURN_IF_ERROR(
          net::CheckZ85Key(o.curve->server_keys[w], "transport: curve.server_keys[" + std::to_string(w) + "]"));
    }
    for (std::size_t i = 0; i < o.curve->allowed_clients.size(); ++i) {
      LSTASH_RETURN_IF_ERROR(
          net::CheckZ85Key(o.curve->allowed_clients[i], "transport: curve.allowed_clients[" + std::to_string(i) + "]"));
    }
  }
  return Status::OK();
}

Status ZmqTransport::Init() {
  const std::string self = std::to_string(options_.self);
  try {
    context_.set(zmq::ctxopt::io_threads, 1);
    context_.set(zmq::ctxopt::blocky, false);
  } catch (const zmq::error_t& e) {
    return net::FromZmq(e, "transport: configuring the ZeroMQ context");
  }
  if (options_.curve) {
    LSTASH_ASSIGN_OR_RETURN(zap_, net::ZapAuthenticator::Start(context_, options_.curve->allowed_clients,
                                                                "transport " + self));
    for (const auto& key : options_.curve->server_keys) peer_keys_.push_back(*net::CanonicalZ85Key(key));
  }
  LSTASH_RETURN_IF_ERROR(SetUpRouter());
  dealers_.resize(options_.endpoints.size());
  for (WorkerId w = 0; w < options_.endpoints.size(); ++w) {
    if (w != options_.self) LSTASH_RETURN_IF_ERROR(SetUpDealer(w));
  }
  return Status::OK();
}

Status ZmqTransport::SetUpRouter() {
  const std::string& endpoint = options_.endpoints[options_.self];
  try {
    router_ = zmq::socket_t(context_, zmq::socket_type::router);
    router_.set(zmq::sockopt::linger, 0);
    const auto max_bytes = static_cast<std::int64_t>(
        std::min<std::size_t>(options_.max_frame_bytes, static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max())));
    router_.set(zmq::sockopt::maxmsgsize, max_bytes);
    router_.set(zmq::sockopt::rcvhwm, options_.send_queue_limit);
    router_.set(zmq::sockopt::router_handover, true);
    router_.set(zmq::sockopt::tcp_keepalive, 1);
    router_.set(zmq::sockopt::ipv6, true);  // also accepts IPv4
  } catch (const zmq::error_t& e) {
    return net::FromZmq(e, "transport: creating the ROUTER socket");
  }
  if (options_.curve) {
    Status s = net::ApplyCurveServer(router_, options_.curve->own);
    if (!s.ok()) return s.WithContext("transport");
  }
  try {
    router_.bind(endpoint);
  } catch (const zmq::error_t& e) {
    return net::FromZmq(e, "transport: binding " + endpoint);
  }
  return Status::OK();
}

Status ZmqTransport::SetUpDealer(WorkerId peer) {
  const std::string& endpoint = options_.endpoints[peer];
  zmq::socket_t& dealer = dealers_[peer];
  try {
    dealer = zmq::socket_t(context_, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::routing_id, std::to_string(options_.self) + "." + connection_tag_ + "." +
                                             std::to_string(++connections_made_));
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::sndhwm, options_.send_queue_limit);
    dealer.set(zmq::sockopt::immediate, false);
    dealer.set(zmq::sockopt::reconnect_ivl, kReconnectIvlMs);
    dealer.set(zmq::sockopt::reconnect_ivl_max, kReconnectIvlMaxMs);
    dealer.set(zmq::sockopt::tcp_keepalive, 1);
    dealer.set(zmq::sockopt::ipv6, true);
  } catch (const zmq::error_t& e) {
    return net::FromZmq(e, "transport: creating the DEALER socket for worker " + std::to_string(peer));
  }
  if (options_.curve) {
    Status s = net::ApplyCurveClient(dealer, options_.curve->own, options_.curve->server_keys[peer]);
    if (!s.ok()) return s.WithContext("transport: worker " + std::to_string(peer));
  }
  try {
    dealer.connect(endpoint);
  } catch (const zmq::error_t& e) {
    return net::FromZmq(e, "transport: connecting to worker " + std::to_string(peer) + " at " + endpoint);
  }
  return Status::OK();
}

Status ZmqTransport::Send(WorkerId dest, std::string_view bytes) {
  if (dest >= options_.endpoints.size()) {
    return InvalidArgument("transport: no worker " + std::to_string(dest) + " in a " +
                           std::to_string(options_.endpoints.size()) + "-worker job");
  }
  if (bytes.size() > options_.max_frame_bytes) {
    Reject("a " + std::to_string(bytes.size()) + "-byte frame for worker " + std::to_string(dest) +
           " (Send): larger than max_frame_bytes (" + std::to_string(options_.max_frame_bytes) + ")");
    return InvalidArgument("transport: a " + std::to_string(bytes.size()) + "-byte frame exceeds max_frame_bytes " +
                           std::to_string(options_.max_frame_bytes));
  }
  if (dest == options_.self) {
    if (loopback_.size() >= static_cast<std::size_t>(options_.send_queue_limit)) {
      ++metrics_.send_refused;
      return Unavailable("transport: the queue to ourselves is full (" + std::to_string(loopback_.size()) +
                         " frames); Poll to drain it");
    }
    loopback_.emplace_back(bytes);
  } else {
    try {
      zmq::message_t message(bytes.data(), bytes.size());
      if (!dealers_[dest].send(message, zmq::send_flags::dontwait)) {
        ++metrics_.send_refused;
        return Unavailable("transport: the queue to worker " + std::to_string(dest) + " is full (" +
                           std::to_string(options_.send_queue_limit) + " messages); it is down or slow");
      }
    } catch (const zmq::error_t& e) {
      return net::FromZmq(e, "transport: sending to worker " + std::to_string(dest));
    } catch (const std::bad_alloc&) {
      return ResourceExhausted("transport: out of memory copying a frame for worker " + std::to_string(dest));
    }
  }
  ++metrics_.sent;
  metrics_.bytes_sent += bytes.size();
  return Status::OK();
}

Status ZmqTransport::Poll(std::int64_t timeout_nanos, std::vector<Incoming>* out) {
  if (out == nullptr) return InvalidArgument("transport: Poll output is null");
  const std::size_t before = out->size();
  while (!loopback_.empty()) {
    ++metrics_.received;
    metrics_.bytes_received += loopback_.front().size();
    out->push_back(Incoming{options_.self, std::move(loopback_.front())});
    loopback_.pop_front();
  }
  std::int64_t timeout_ms = 0;
  if (out->size() == before && timeout_nanos > 0) {
    timeout_ms = std::min<std::int64_t>(timeout_nanos / 1'000'000 + (timeout_nanos % 1'000'000 != 0 ? 1 : 0),
                                        std::numeric_limits<int>::max());
  }
  try {
    zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) == 0) return Status::OK();
    for (std::size_t n = 0; n < kMaxDrainPerPoll; ++n) {
      zmq::message_t routing_id;
      if (!router_.recv(routing_id, zmq::recv_flags::dontwait)) break;
      // The parts of a message arrive together: the rest are there now.
      zmq::message_t payload;
      std::size_t parts = 1;
      bool more = routing_id.more();
      while (more) {
        zmq::message_t part;
        if (!router_.recv(part, zmq::recv_flags::dontwait)) break;
        more = part.more();
        if (++parts == 2) payload = std::move(part);
      }
      Accept(routing_id, payload, parts, out);
    }
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return Status::OK();  // a signal: as if the wait ran out
    return net::FromZmq(e, "transport: receiving");
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("transport: out of memory receiving frames");
  }
  return Status::OK();
}

void ZmqTransport::Accept(zmq::message_t& routing_id, zmq::message_t& payload, std::size_t parts,
                          std::vector<Incoming>* out) {
  const std::string_view id = routing_id.to_string_view();
  const auto from = ParseWorkerId(id, options_.endpoints.size());
  if (!from) {
    Reject("a message from routing id " + net::Printable(id) + ", which is no worker of this " +
           std::to_string(options_.endpoints.size()) + "-worker job");
    return;
  }
  const std::string sender = "worker " + std::to_string(*from);
  if (*from == options_.self) {
    Reject("a message over the network claiming to come from this worker (" + std::to_string(options_.self) + ")");
    return;
  }
  if (parts != 2) {
    Reject("a message of " + std::to_string(parts - 1) + " parts from " + sender + " (a frame is one part)");
    return;
  }
  if (payload.size() > options_.max_frame_bytes) {  // libzmq enforces this; kept for clarity
    Reject("a " + std::to_string(payload.size()) + "-byte message from " + sender + ", over max_frame_bytes");
    return;
  }
  if (options_.curve) {
    const std::string_view key = net::AuthenticatedKey(payload);
    if (key != peer_keys_[*from]) {
      Reject("a message claiming to come from " + sender + " on a connection authenticated as key " +
             (key.empty() ? std::string("(none)") : std::string(key)) + ", not " + sender + "'s key " +
             peer_keys_[*from]);
      return;
    }
  }
  ++metrics_.received;
  metrics_.bytes_received += payload.size();
  out->push_back(Incoming{*from, payload.to_string()});
}

void ZmqTransport::Reject(const std::string& reason) {
  const std::uint64_t n = ++metrics_.rejected;
  if (n <= 10 || n % 1000 == 0) {
    spdlog::warn("lstash transport {}: rejected {} ({} rejected so far)", options_.self, reason, n);
  }
}

}  // namespace

Transport::~Transport() = default;

Result<std::unique_ptr<Transport>> Transport::Open(const TransportOptions& options) {
  LSTASH_RETURN_IF_ERROR(CheckOptions(options));
  std::unique_ptr<ZmqTransport> transport;
  try {
    transport = std::make_unique<ZmqTransport>(options);
  } catch (const zmq::error_t& e) {
    return net::FromZmq(e, "transport: creating a ZeroMQ context");
  } catch (const std::bad_alloc&) {
    return ResourceExhausted("transport: out of memory");
  }
  LSTASH_RETURN_IF_ERROR(transport->Init());
  return std::unique_ptr<Transport>(std::move(transport));
}

}  // namespace lstash
