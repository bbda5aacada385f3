// Small helpers shared by lstash's ZeroMQ users (the worker transport and the
// store server): error adaptation, CURVE socket options, key validation and
// a ZAP authenticator.
//
// Error style: cppzmq throws zmq::error_t; lstash never lets an exception
// cross its API. Code in lib/net and lib/storeserver calls cppzmq inside
// try/catch and turns the error into a Status with FromZmq. Every helper here
// returns a Status (or Result) and throws nothing.
//
// CURVE in ZeroMQ, briefly: a listening socket is a CURVE server (it holds its
// secret key); a connecting socket is a CURVE client (it holds its own key
// pair and must know the server's public key). The server asks a ZAP handler
// -- a REP socket bound on "inproc://zeromq.zap.01" in the same context --
// whether to accept each client key. If no handler is bound, libzmq 4.3
// accepts every client, so a ZapAuthenticator must be running before a CURVE
// server socket binds, and must outlive it (destroy the server socket first).
#pragma once

#include <lstash/curve.h>
#include <lstash/status.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>
#include <zmq.hpp>

namespace lstash::net {

// The ZAP domain lstash's CURVE servers announce.
inline constexpr std::string_view kZapDomain = "lstash";

// Turns a ZeroMQ error into a Status: "<what>: <zmq message>". EAGAIN, EINTR
// and EADDRINUSE map to kUnavailable (retry); EINVAL, EPROTONOSUPPORT,
// ENOCOMPATPROTO and EMSGSIZE to kInvalidArgument; ETERM to
// kFailedPrecondition; anything else to kIOError.
Status FromZmq(const zmq::error_t& error, std::string_view what);

// The 32 bytes a 40-character Z85 key stands for, or nullopt if `z85` is not
// a well-formed key (wrong length, a character outside the Z85 alphabet, or
// a group that overflows 32 bits).
std::optional<std::string> DecodeZ85Key(std::string_view z85);
// The Z85 text of a 32-byte key. REQUIRES: key.size() == 32.
std::string EncodeZ85Key(std::string_view key);
// The canonical Z85 text of a key (DecodeZ85Key then EncodeZ85Key), or
// nullopt if malformed. Two keys are the same key iff their canonical texts
// are equal.
std::optional<std::string> CanonicalZ85Key(std::string_view z85);
// OK, or kInvalidArgument: "<what> is not a CURVE key: ...".
Status CheckZ85Key(std::string_view z85, std::string_view what);

// OK if libzmq was built with CURVE, else kFailedPrecondition.
Status CheckCurveAvailable();

// Makes `socket` a CURVE server with secret key `own.secret_key`, asking the
// ZAP handler (domain kZapDomain) about every client. Call before bind().
Status ApplyCurveServer(zmq::socket_t& socket, const CurveKeyPair& own);

// Makes `socket` a CURVE client with key pair `own` that accepts only the
// server holding `server_public_key`. Call before connect().
Status ApplyCurveClient(zmq::socket_t& socket, const CurveKeyPair& own, std::string_view server_public_key);

// Answers ZAP requests (RFC 27) for every socket of one context: accepts a
// CURVE client whose public key is in the allowed set (status 200, User-Id =
// the client's canonical Z85 public key), refuses everything else (400: an
// unknown key, or a mechanism other than CURVE). A receiver reads the
// authenticated key of a message with AuthenticatedKey().
//
// Owns one thread. The destructor stops it promptly (an inproc control
// socket wakes it) and closes its sockets; destroy every CURVE server socket
// of the context first -- without a handler libzmq would accept any key.
class ZapAuthenticator {
 public:
  // Binds inproc://zeromq.zap.01 on `context` (kUnavailable if another
  // handler is already bound there) and starts answering. `allowed` are Z85
  // public keys (kInvalidArgument if one is malformed). `owner` names the
  // user in log lines ("transport 3", "store server").
  static Result<std::unique_ptr<ZapAuthenticator>> Start(zmq::context_t& context,
                                                          const std::vector<std::string>& allowed,
                                                          std::string owner);
  ~ZapAuthenticator();
  ZapAuthenticator(const ZapAuthenticator&) = delete;
  ZapAuthenticator& operator=(const ZapAuthenticator&) = delete;

  std::uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  std::uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

 private:
  ZapAuthenticator() = default;
  void Run();
  // The reply to one request; counts and logs it.
  std::vector<std::string> Answer(const std::vector<zmq::message_t>& request);

  std::string owner_;
  std::vector<std::string> allowed_;  // raw 32-byte keys, sorted
  zmq::socket_t handler_;             // REP on inproc://zeromq.zap.01 (used by the thread)
  zmq::socket_t stop_receiver_;       // PAIR, read by the thread
  zmq::socket_t stop_sender_;         // PAIR, written by the destructor
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::uint64_t> refused_{0};
  std::thread thread_;
};

// The User-Id a ZAP handler gave the connection `message` arrived on (for a
// ZapAuthenticator: the client's canonical Z85 public key), or an empty view
// if the connection has none (no CURVE, or an inproc pipe).
std::string_view AuthenticatedKey(zmq::message_t& message);

// "'abc\x01'" for log lines: at most `max` bytes of arbitrary bytes,
// printable ASCII kept, the rest hex-escaped.
std::string Printable(std::string_view bytes, std::size_t max = 24);

}  // namespace lstash::net
