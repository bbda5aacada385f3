// Transport: carries a Worker's frames between processes over ZeroMQ.
//
// Each worker's Transport binds one ROUTER socket on its own endpoint and
// connects one DEALER socket to each peer's endpoint (never PUB/SUB: nothing
// that must arrive may be dropped silently). ZeroMQ reconnects to a peer that
// restarts; what the Transport cannot deliver, the Worker resends, and
// receivers deduplicate. Frames are opaque bytes here: the Worker validates
// them (magic, version, sender and epochs). The Transport itself refuses and
// counts what is not a frame at all: messages with the wrong number of parts,
// from an unknown routing identity, or larger than max_frame_bytes (ZeroMQ
// drops the connection an oversized message arrives on before it can be
// read or counted; Send refuses and counts oversized frames of our own).
//
// With `curve` set, every connection is authenticated and encrypted: a peer
// whose public key is not allowed cannot connect, so cannot deliver anything.
//
// Threading: one thread uses a Transport (the engine's). Not copyable.
#pragma once

#include <lstash/curve.h>
#include <lstash/export.h>
#include <lstash/status.h>
#include <lstash/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lstash {

struct TransportOptions {
  WorkerId self = 0;
  // endpoints[w]: where worker w listens, e.g. "tcp://127.0.0.1:7001".
  // REQUIRES: self < endpoints.size().
  std::vector<std::string> endpoints;
  // Larger messages are refused (ZeroMQ drops the connection that sent one)
  // and counted.
  std::size_t max_frame_bytes = std::size_t{256} << 20;
  // Messages queued per peer before Send reports kUnavailable.
  int send_queue_limit = 100'000;
  // CURVE: curve->server_keys[w] is worker w's public key;
  // curve->allowed_clients are the keys that may connect to us.
  std::optional<CurveSecurity> curve;
};

struct Incoming {
  WorkerId from = 0;  // the sending worker (authenticated under CURVE)
  std::string bytes;
};

struct TransportMetrics {
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  std::uint64_t send_refused = 0;      // Send returned kUnavailable (queue full)
  std::uint64_t rejected = 0;          // malformed envelope, unknown sender, oversized
  std::uint64_t auth_refused = 0;      // CURVE connections refused: client key not allowed
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
};

class LSTASH_EXPORT Transport {
 public:
  // Binds our endpoint and connects to every peer (connections complete in
  // the background).
  static Result<std::unique_ptr<Transport>> Open(const TransportOptions& options);

  virtual ~Transport();

  // Queues `bytes` for worker `dest` (dest may be ourselves). Never blocks:
  // kUnavailable if dest's queue is full. Bytes larger than max_frame_bytes
  // are refused here (kInvalidArgument, counted as rejected): the receiver
  // would drop the connection they arrived on.
  virtual Status Send(WorkerId dest, std::string_view bytes) = 0;

  // Waits up to `timeout_nanos` (rounded up to whole milliseconds, ZeroMQ's
  // poll resolution; <= 0: no wait) for at least one frame, then appends
  // every frame already arrived to *out -- at most 8192 per call, so that a
  // flood cannot hold the caller; the rest wait for the next call.
  virtual Status Poll(std::int64_t timeout_nanos, std::vector<Incoming>* out) = 0;

  // Drops the connection to `peer` and connects afresh: a replaced peer's
  // new incarnation may listen where the old one still holds a connection
  // (a paused or partitioned process). Call it from
  // Listener::OnPeerIncarnation, before sending `peer` anything more.
  // Frames still queued for `peer` are dropped; the Worker resends what was
  // not acknowledged.
  virtual Status Reconnect(WorkerId peer) = 0;

  virtual TransportMetrics GetMetrics() const = 0;
};

}  // namespace lstash
