#include "net/zmq_util.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <exception>
#include <utility>

namespace lstash::net {
namespace {

constexpr std::string_view kZ85Alphabet =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
constexpr std::size_t kKeyBytes = 32;
constexpr std::size_t kKeyChars = 40;
constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

int Z85Digit(char c) {
  const auto at = kZ85Alphabet.find(c);
  return at == std::string_view::npos ? -1 : static_cast<int>(at);
}

// First 10 refusals, then every 1000th.
bool ShouldLog(std::uint64_t n) { return n <= 10 || n % 1000 == 0; }

std::atomic<std::uint64_t> g_stop_endpoint_counter{0};

}  // namespace

Status FromZmq(const zmq::error_t& error, std::string_view what) {
  std::string message(what);
  message += ": ";
  message += error.what();
  switch (error.num()) {
    case EAGAIN:
    case EINTR:
    case EADDRINUSE:
      return Unavailable(message);
    case EINVAL:
    case EPROTONOSUPPORT:
    case ENOCOMPATPROTO:
    case EMSGSIZE:
      return InvalidArgument(message);
    case ETERM:
      return FailedPrecondition(message);
    default:
      return IOError(message);
  }
}

std::optional<std::string> DecodeZ85Key(std::string_view z85) {
  if (z85.size() != kKeyChars) return std::nullopt;
  std::string out;
  out.reserve(kKeyBytes);
  for (std::size_t i = 0; i < z85.size(); i += 5) {
    std::uint64_t value = 0;
    for (std::size_t j = 0; j < 5; ++j) {
      const int digit = Z85Digit(z85[i + j]);
      if (digit < 0) return std::nullopt;
      value = value * 85 + static_cast<std::uint64_t>(digit);
    }
    if (value > 0xffffffffu) return std::nullopt;
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((value >> shift) & 0xff));
  }
  return out;
}

std::string EncodeZ85Key(std::string_view key) {
  std::string out;
  out.reserve(kKeyChars);
  for (std::size_t i = 0; i + 4 <= key.size(); i += 4) {
    std::uint32_t value = 0;
    for (std::size_t j = 0; j < 4; ++j) value = (value << 8) | static_cast<unsigned char>(key[i + j]);
    char group[5];
    for (int j = 4; j >= 0; --j) {
      group[j] = kZ85Alphabet[value % 85];
      value /= 85;
    }
    out.append(group, 5);
  }
  return out;
}

std::optional<std::string> CanonicalZ85Key(std::string_view z85) {
  auto raw = DecodeZ85Key(z85);
  if (!raw) return std::nullopt;
  return EncodeZ85Key(*raw);
}

Status CheckZ85Key(std::string_view z85, std::string_view what) {
  std::string prefix(what);
  prefix += " is not a CURVE key: ";
  if (z85.size() != kKeyChars) {
    return InvalidArgument(prefix + "expected 40 Z85 characters, got " + std::to_string(z85.size()));
  }
  for (std::size_t i = 0; i < z85.size(); ++i) {
    if (Z85Digit(z85[i]) < 0) {
      return InvalidArgument(prefix + "character " + std::to_string(i) + " (" + Printable(z85.substr(i, 1)) +
                             ") is not in the Z85 alphabet");
    }
  }
  if (!DecodeZ85Key(z85)) return InvalidArgument(prefix + "a 5-character group exceeds 32 bits");
  return Status::OK();
}

Status CheckCurveAvailable() {
  if (zmq_has("curve") == 0) {
    return FailedPrecondition("this libzmq was built without CURVE security (zmq_has(\"curve\") is false)");
  }
  return Status::OK();
}

Status ApplyCurveServer(zmq::socket_t& socket, const CurveKeyPair& own) {
  LSTASH_RETURN_IF_ERROR(CheckCurveAvailable());
  LSTASH_RETURN_IF_ERROR(CheckZ85Key(own.secret_key, "our secret key"));
  try {
    socket.set(zmq::sockopt::curve_server, true);
    socket.set(zmq::sockopt::curve_secretkey, own.secret_key);
    socket.set(zmq::sockopt::zap_domain, std::string(kZapDomain));
  } catch (const zmq::error_t& e) {
    return FromZmq(e, "setting CURVE server options");
  }
  return Status::OK();
}

Status ApplyCurveClient(zmq::socket_t& socket, const CurveKeyPair& own, std::string_view server_public_key) {
  LSTASH_RETURN_IF_ERROR(CheckCurveAvailable());
  LSTASH_RETURN_IF_ERROR(CheckZ85Key(own.public_key, "our public key"));
  LSTASH_RETURN_IF_ERROR(CheckZ85Key(own.secret_key, "our secret key"));
  LSTASH_RETURN_IF_ERROR(CheckZ85Key(server_public_key, "the server's public key"));
  try {
    socket.set(zmq::sockopt::curve_serverkey, server_public_key);
    socket.set(zmq::sockopt::curve_publickey, own.public_key);
    socket.set(zmq::sockopt::curve_secretkey, own.secret_key);
  } catch (const zmq::error_t& e) {
    return FromZmq(e, "setting CURVE client options");
  }
  return Status::OK();
}

// ---------------------------------------------------------------------------
// ZapAuthenticator

Result<std::unique_ptr<ZapAuthenticator>> ZapAuthenticator::Start(zmq::context_t& context,
                                                                 const std::vector<std::string>& allowed,
                                                                 std::string owner) {
  LSTASH_RETURN_IF_ERROR(CheckCurveAvailable());
  std::unique_ptr<ZapAuthenticator> zap(new ZapAuthenticator());
  zap->owner_ = std::move(owner);
  for (std::size_t i = 0; i < allowed.size(); ++i) {
    LSTASH_RETURN_IF_ERROR(CheckZ85Key(allowed[i], "allowed client key " + std::to_string(i)));
    zap->allowed_.push_back(*DecodeZ85Key(allowed[i]));
  }
  std::sort(zap->allowed_.begin(), zap->allowed_.end());
  try {
    zap->handler_ = zmq::socket_t(context, zmq::socket_type::rep);
    zap->handler_.set(zmq::sockopt::linger, 0);
    zap->handler_.bind(kZapEndpoint);
    const std::string stop = "inproc://lstash-zap-stop-" + std::to_string(g_stop_endpoint_counter.fetch_add(1));
    zap->stop_receiver_ = zmq::socket_t(context, zmq::socket_type::pair);
    zap->stop_receiver_.set(zmq::sockopt::linger, 0);
    zap->stop_receiver_.bind(stop);
    zap->stop_sender_ = zmq::socket_t(context, zmq::socket_type::pair);
    zap->stop_sender_.set(zmq::sockopt::linger, 0);
    zap->stop_sender_.connect(stop);
  } catch (const zmq::error_t& e) {
    return FromZmq(e, std::string("starting the ZAP handler (") + kZapEndpoint + ")");
  }
  try {
    zap->thread_ = std::thread([z = zap.get()] { z->Run(); });
  } catch (const std::exception& e) {
    return Internal(std::string("starting the ZAP handler thread: ") + e.what());
  }
  return zap;
}

ZapAuthenticator::~ZapAuthenticator() {
  if (thread_.joinable()) {
    try {
      (void)stop_sender_.send(zmq::str_buffer("stop"), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      spdlog::error("lstash {}: could not stop the ZAP handler: {}", owner_, e.what());
    }
    thread_.join();
  }
  // Free the endpoint now (closing alone frees it later, on libzmq's reaper
  // thread), so that a new handler can bind on this context at once.
  try {
    if (handler_) handler_.unbind(kZapEndpoint);
  } catch (const zmq::error_t&) {
    // Never bound (Start failed early): nothing to free.
  }
  // The sockets close here (linger 0), on this thread: join() ordered the
  // handler thread's last use of them before this.
}

void ZapAuthenticator::Run() {
  try {
    std::array<zmq::pollitem_t, 2> items{};
    items[0] = zmq::pollitem_t{handler_.handle(), 0, ZMQ_POLLIN, 0};
    items[1] = zmq::pollitem_t{stop_receiver_.handle(), 0, ZMQ_POLLIN, 0};
    for (;;) {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(-1));
      if ((items[1].revents & ZMQ_POLLIN) != 0) return;
      if ((items[0].revents & ZMQ_POLLIN) == 0) continue;
      std::vector<zmq::message_t> request;
      for (bool more = true; more;) {
        zmq::message_t part;
        if (!handler_.recv(part, zmq::recv_flags::dontwait)) break;
        more = part.more();
        request.push_back(std::move(part));
      }
      if (request.empty()) continue;
      std::vector<std::string> reply = Answer(request);
      for (std::size_t i = 0; i < reply.size(); ++i) {
        const auto flags = i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
        (void)handler_.send(zmq::buffer(reply[i]), flags);
      }
    }
  } catch (const zmq::error_t& e) {
    // The handler stays bound, unanswering: new CURVE connections then wait
    // in their handshake and are never accepted (fail closed).
    if (e.num() != ETERM) spdlog::error("lstash {}: the ZAP handler stopped: {}", owner_, e.what());
  }
}

std::vector<std::string> ZapAuthenticator::Answer(const std::vector<zmq::message_t>& request) {
  // Request (RFC 27): version, request id, domain, address, identity,
  // mechanism, credentials...  Reply: version, request id, status code,
  // status text, user id, metadata.
  auto part = [&](std::size_t i) {
    return i < request.size() ? request[i].to_string() : std::string();
  };
  const std::string request_id = part(1);
  const std::string address = part(3);
  const std::string mechanism = part(5);
  std::string refusal;
  std::string key_text;
  if (request.size() < 6 || part(0) != "1.0") {
    refusal = "malformed ZAP request";
  } else if (mechanism != "CURVE") {
    refusal = "mechanism " + Printable(mechanism) + " is not CURVE";
  } else if (request.size() != 7 || request[6].size() != kKeyBytes) {
    refusal = "malformed CURVE credentials";
  } else {
    const std::string key = request[6].to_string();
    key_text = EncodeZ85Key(key);
    if (!std::binary_search(allowed_.begin(), allowed_.end(), key)) refusal = "client key " + key_text + " is not allowed";
  }
  if (refusal.empty()) {
    accepted_.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("lstash {}: accepted a CURVE connection from {} (key {})", owner_, address, key_text);
    return {"1.0", request_id, "200", "OK", key_text, ""};
  }
  const std::uint64_t n = refused_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (ShouldLog(n)) {
    spdlog::warn("lstash {}: refused a connection from {}: {} ({} refused so far)", owner_,
                 address.empty() ? std::string("an unknown address") : address, refusal, n);
  }
  return {"1.0", request_id, request.size() < 6 ? "500" : "400", refusal, "", ""};
}

std::string_view AuthenticatedKey(zmq::message_t& message) {
  const char* user = zmq_msg_gets(message.handle(), "User-Id");
  return user == nullptr ? std::string_view() : std::string_view(user);
}

std::string Printable(std::string_view bytes, std::size_t max) {
  std::string out = "'";
  const std::size_t n = std::min(bytes.size(), max);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  out += "'";
  if (bytes.size() > max) out += "... (" + std::to_string(bytes.size()) + " bytes)";
  return out;
}

}  // namespace lstash::net
