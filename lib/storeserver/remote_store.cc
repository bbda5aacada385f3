// The remote Store (remote_store.h): a client of K store-server shards.
//
// Placement: worker w's log, epochs, checkpoint and lease live on shard
// w % K; an Append goes to the writer's shard together with its lineage
// copies, so copies of one owner may sit on every shard. ReadCopies asks
// every shard and merges by (index, epoch). A shard that is not the owner's
// never learns the owner's committed index, so with K > 1 the client drops
// copies at or below it (read from the owner's shard) when reading, and
// after storing a checkpoint asks the other shards to delete the copies it
// folds (best effort: one attempt each; the next checkpoint's delete covers
// anything missed, as it deletes from index 0).
//
// Calls. Each call takes a connection (a DEALER socket) to its shard from a
// per-shard pool, so concurrent callers never share a socket and never wait
// for each other. It sends the request and waits up to
// attempt_timeout_nanos for the response carrying its request id (stale
// answers to earlier requests on that socket are skipped). On a timeout the
// socket is replaced (a fresh one carries no queued state for a dead
// connection), and after a backoff (10 ms doubling to 500 ms) the same bytes
// -- same request id -- are sent again, until deadline_nanos from the start
// of the call; then the call fails with kUnavailable naming the shard. The
// server answers a retried write from its memory of the first, so a retry
// never applies a write twice. A request gets more time in proportion to its
// size, on each try and the deadline: a checkpoint of 256 MiB, in one
// request, was sent again every try while the server still stored it, then
// given up on and sent anew, over and over, and never stored.

#include <lstash/remote_store.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>
#include <zmq.hpp>

#include "net/zmq_util.h"
#include "store/checks.h"
#include "storeserver/store_rpc.h"

namespace lstash {
namespace {

using store_rpc::Method;
using store_rpc::RequestIds;
using store_rpc::Response;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kFirstBackoff{10};
constexpr std::chrono::milliseconds kMaxBackoff{500};
// The slowest a server is expected to take in a request: a server on a
// 2-core VM took a checkpoint of 256 MiB in 10 s, and of 32 MiB in over
// 1.7 s with its cores busy. This allows 256 s per GiB.
constexpr double kFloorRequestBytesPerSecond = 4 << 20;

std::string Seconds(std::int64_t nanos) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", static_cast<double>(nanos) / 1e9);
  return buf;
}

class RemoteStore final : public Store {
 public:
  explicit RemoteStore(const RemoteStoreOptions& options) : options_(options) {
    std::random_device rd;
    client_id_ = (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^
                 static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
    for (size_t k = 0; k < options.shards.size(); ++k) {
      auto shard = std::make_unique<Shard>();
      shard->index = k;
      shard->endpoint = options.shards[k];
      shard->name = "store shard " + std::to_string(k) + " (" + shard->endpoint + ")";
      shards_.push_back(std::move(shard));
    }
  }

  ~RemoteStore() override {
    for (auto& shard : shards_) shard->idle.clear();  // close sockets before the context
  }

  Result<Epoch> BeginIncarnation(WorkerId worker) override {
    Response r;
    LSTASH_RETURN_IF_ERROR(Call(ShardOf(worker), Method::kBeginIncarnation, &r, [&](RequestIds ids, std::string* out) {
      store_rpc::EncodeBeginIncarnation(ids, worker, out);
    }));
    return r.epoch;
  }

  Status SetEpochStart(WorkerId worker, Epoch epoch, LogIndex start) override {
    Response r;
    return Call(ShardOf(worker), Method::kSetEpochStart, &r, [&](RequestIds ids, std::string* out) {
      store_rpc::EncodeSetEpochStart(ids, worker, epoch, start, out);
    });
  }

  Result<std::vector<EpochRecord>> Epochs(WorkerId worker) override {
    Response r;
    LSTASH_RETURN_IF_ERROR(Call(ShardOf(worker), Method::kEpochs, &r, [&](RequestIds ids, std::string* out) {
      store_rpc::EncodeEpochs(ids, worker, out);
    }));
    return std::move(r.epochs);
  }

  Status Append(WorkerId worker, Epoch epoch, std::span<const LogRecord> records,
                std::span<const LineageCopy> copies) override {
    Response r;
    return Call(ShardOf(worker), Method::kAppend, &r, [&](RequestIds ids, std::string* out) {
      store_rpc::EncodeAppend(ids, worker, epoch, records, copies, out);
    });
  }

  Status ReadCopies(WorkerId owner, LogIndex from, std::vector<LineageCopy>* out) override {
    out->clear();
    for (auto& shard : shards_) {
      Response r;
      LSTASH_RETURN_IF_ERROR(Call(*shard, Method::kReadCopies, &r, [&](RequestIds ids, std::string* bytes) {
        store_rpc::EncodeReadCopies(ids, owner, from, bytes);
      }));
      for (LineageCopy& c : r.copies) out->push_back(std::move(c));
    }
    if (shards_.size() > 1) {
      // Other shards keep copies their owner has committed since (see top).
      LogIndex committed = 0;
      LSTASH_RETURN_IF_ERROR(ReadCommitted(std::span<const WorkerId>(&owner, 1), std::span<LogIndex>(&committed, 1)));
      std::erase_if(*out, [committed](const LineageCopy& c) { return c.index <= committed; });
      std::stable_sort(out->begin(), out->end(), [](const LineageCopy& a, const LineageCopy& b) {
        return a.index != b.index ? a.index < b.index : a.epoch < b.epoch;
      });
    }
    return Status::OK();
  }

  Status ReadLog(WorkerId worker, LogIndex from, std::vector<LogRecord>* out) override {
    Response r;
    LSTASH_RETURN_IF_ERROR(Call(ShardOf(worker), Method::kReadLog, &r, [&](RequestIds ids, std::string* bytes) {
      store_rpc::EncodeReadLog(ids, worker, from, bytes);
    }));
    *out = std::move(r.records);
    return Status::OK();
  }

  Status ReadCommitted(std::span<const WorkerId> workers, std::span<LogIndex> out) override {
    if (out.size() != workers.size()) {
      return InvalidArgument("ReadCommitted: " + std::to_string(workers.size()) + " workers but " +
                             std::to_string(out.size()) + " outputs");
    }
    // One request per shard, for that shard's workers.
    std::vector<std::vector<WorkerId>> asked(shards_.size());
    std::vector<std::vector<size_t>> positions(shards_.size());
    for (size_t i = 0; i < workers.size(); ++i) {
      size_t k = workers[i] % shards_.size();
      asked[k].push_back(workers[i]);
      positions[k].push_back(i);
    }
    for (size_t k = 0; k < shards_.size(); ++k) {
      if (asked[k].empty()) continue;
      Response r;
      LSTASH_RETURN_IF_ERROR(Call(*shards_[k], Method::kReadCommitted, &r, [&](RequestIds ids, std::string* bytes) {
        store_rpc::EncodeReadCommitted(ids, asked[k], bytes);
      }));
      if (r.committed.size() != asked[k].size()) {
        return Corruption(shards_[k]->name + " answered ReadCommitted for " + std::to_string(asked[k].size()) +
                          " workers with " + std::to_string(r.committed.size()) + " indexes");
      }
      for (size_t j = 0; j < positions[k].size(); ++j) out[positions[k][j]] = r.committed[j];
    }
    return Status::OK();
  }

  // The record goes in one request: gathered first.
  Status PutCheckpointFrom(WorkerId worker, Epoch epoch, LogIndex at, std::uint64_t size,
                           const RecordParts& parts) override {
    LSTASH_ASSIGN_OR_RETURN(const std::string record, store_internal::GatherRecord(worker, size, parts));
    Response r;
    Shard& home = ShardOf(worker);
    LSTASH_RETURN_IF_ERROR(Call(home, Method::kPutCheckpoint, &r, [&](RequestIds ids, std::string* bytes) {
      store_rpc::EncodePutCheckpoint(ids, worker, epoch, at, record, bytes);
    }));
    if (at > 0 && shards_.size() > 1) {
      for (auto& shard : shards_) {
        if (shard.get() == &home) continue;
        Response dropped;
        Status s = Call(
            *shard, Method::kDropCopies, &dropped,
            [&](RequestIds ids, std::string* bytes) { store_rpc::EncodeDropCopies(ids, worker, at, bytes); },
            options_.attempt_timeout_nanos);
        if (!s.ok()) {
          spdlog::debug("lstash remote store: dropping copies of worker {} up to {} on {}: {}", worker, at,
                        shard->name, s.ToString());
        }
      }
    }
    return Status::OK();
  }

  Result<bool> ReadCheckpointPartInto(WorkerId worker, std::uint64_t offset, std::uint64_t max_bytes,
                                      CheckpointPart* part) override {
    Response r;
    r.checkpoint_part = std::move(*part);  // decoded into, keeping its buffer
    Shard& home = ShardOf(worker);
    LSTASH_RETURN_IF_ERROR(Call(home, Method::kReadCheckpointPart, &r, [&](RequestIds ids, std::string* bytes) {
      store_rpc::EncodeReadCheckpointPart(ids, worker, offset, max_bytes, bytes);
    }));
    if (!r.checkpoint_part) return false;
    // The part asked for, or the server and client disagree on the record.
    const CheckpointPart& answer = *r.checkpoint_part;
    if (offset > answer.total_bytes ||
        answer.bytes.size() != store_internal::CheckpointPartBytes(offset, max_bytes, answer.total_bytes)) {
      return Corruption(home.name + " answered a part of " + std::to_string(answer.bytes.size()) + " bytes from byte " +
                        std::to_string(offset) + " (at most " + std::to_string(max_bytes) + ") of worker " +
                        std::to_string(worker) + "'s checkpoint of " + std::to_string(answer.total_bytes) + " bytes");
    }
    *part = std::move(*r.checkpoint_part);
    return true;
  }

  Status RenewLease(WorkerId worker, Epoch epoch, std::int64_t duration_nanos) override {
    Response r;
    return Call(ShardOf(worker), Method::kRenewLease, &r, [&](RequestIds ids, std::string* bytes) {
      store_rpc::EncodeRenewLease(ids, worker, epoch, duration_nanos, bytes);
    });
  }

 private:
  struct Connection {
    zmq::socket_t socket;
  };

  struct Shard {
    size_t index = 0;
    std::string endpoint;
    std::string name;  // "store shard K (ENDPOINT)"
    std::mutex mu;
    std::vector<std::unique_ptr<Connection>> idle;  // GUARDED_BY(mu)
  };

  Shard& ShardOf(WorkerId worker) { return *shards_[worker % shards_.size()]; }

  Result<std::unique_ptr<Connection>> Connect(Shard& shard) {
    auto c = std::make_unique<Connection>();
    try {
      c->socket = zmq::socket_t(context_, zmq::socket_type::dealer);
      c->socket.set(zmq::sockopt::linger, 0);
      c->socket.set(zmq::sockopt::reconnect_ivl, 50);
      c->socket.set(zmq::sockopt::reconnect_ivl_max, 500);
      if (options_.curve) {
        LSTASH_RETURN_IF_ERROR(net::ApplyCurveClient(c->socket, options_.curve->own,
                                                     options_.curve->server_keys[shard.index])
                                   .WithContext(shard.name));
      }
      c->socket.connect(shard.endpoint);
    } catch (const zmq::error_t& e) {
      return net::FromZmq(e, "connecting to " + shard.name);
    }
    return c;
  }

  Result<std::unique_ptr<Connection>> Acquire(Shard& shard) {
    {
      std::lock_guard<std::mutex> lock(shard.mu);
      if (!shard.idle.empty()) {
        std::unique_ptr<Connection> c = std::move(shard.idle.back());
        shard.idle.pop_back();
        return c;
      }
    }
    return Connect(shard);
  }

  void Release(Shard& shard, std::unique_ptr<Connection> c) {
    std::lock_guard<std::mutex> lock(shard.mu);
    shard.idle.push_back(std::move(c));
  }

  // Sends one request (encoded by `encode` with fresh ids) to `shard` and
  // waits for its response, retrying as described at the top; *response
  // holds the answer when the call returns OK. The status is the server's
  // answer, or kUnavailable / a transport error.
  template <typename Encode>
  Status Call(Shard& shard, Method method, Response* response, Encode&& encode, std::int64_t deadline_nanos = -1) {
    if (deadline_nanos < 0) deadline_nanos = options_.deadline_nanos;
    const RequestIds ids{client_id_, next_request_.fetch_add(1, std::memory_order_relaxed)};
    std::string request;
    encode(ids, &request);
    const auto sending_nanos =
        static_cast<std::int64_t>(static_cast<double>(request.size()) / kFloorRequestBytesPerSecond * 1e9);
    deadline_nanos += sending_nanos;
    const std::int64_t attempt_nanos = options_.attempt_timeout_nanos + sending_nanos;
    const Clock::time_point start = Clock::now();
    const Clock::time_point deadline = start + std::chrono::nanoseconds(deadline_nanos);
    std::chrono::milliseconds backoff = kFirstBackoff;

    Result<std::unique_ptr<Connection>> acquired = Acquire(shard);
    if (!acquired.ok()) return acquired.status();
    std::unique_ptr<Connection> c = std::move(acquired).value();
    for (;;) {
      try {
        Clock::time_point attempt_end = std::min(deadline, Clock::now() + std::chrono::nanoseconds(attempt_nanos));
        bool sent = c->socket.send(zmq::buffer(request), zmq::send_flags::dontwait).has_value();
        while (sent) {
          auto left = std::chrono::ceil<std::chrono::milliseconds>(attempt_end - Clock::now());
          if (left.count() <= 0) break;
          zmq::pollitem_t item{c->socket.handle(), 0, ZMQ_POLLIN, 0};
          if (zmq::poll(&item, 1, left) == 0) continue;
          zmq::message_t reply;
          if (!c->socket.recv(reply, zmq::recv_flags::dontwait)) continue;
          std::string_view bytes(reply.data<char>(), reply.size());
          std::optional<std::uint64_t> id = store_rpc::PeekResponseId(bytes);
          if (!id || *id != ids.request_id) continue;  // stale, or not a response
          Status s = store_rpc::DecodeResponse(bytes, response);
          Release(shard, std::move(c));
          if (!s.ok()) return s.WithContext(shard.name);
          if (response->status.ok() && response->method != method) {
            return Corruption(shard.name + " answered a " + std::string(store_rpc::MethodName(method)) +
                              " request as " + std::string(store_rpc::MethodName(response->method)));
          }
          return response->status;
        }
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) {
          Status s = net::FromZmq(e, "talking to " + shard.name);
          if (s.code() != Code::kUnavailable) return s;
        }
      }
      // No answer in time: start over on a fresh socket.
      Clock::time_point now = Clock::now();
      if (now >= deadline) {
        return Unavailable(shard.name + " did not answer within " + Seconds(deadline_nanos));
      }
      std::this_thread::sleep_for(std::min<Clock::duration>(backoff, deadline - now));
      backoff = std::min(backoff * 2, kMaxBackoff);
      Result<std::unique_ptr<Connection>> fresh = Connect(shard);
      if (!fresh.ok()) return fresh.status();
      c = std::move(fresh).value();
    }
  }

  const RemoteStoreOptions options_;
  zmq::context_t context_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::uint64_t client_id_ = 0;
  std::atomic<std::uint64_t> next_request_{1};
};

}  // namespace

Result<std::unique_ptr<Store>> OpenRemoteStore(const RemoteStoreOptions& options) {
  if (options.shards.empty()) return InvalidArgument("remote store: no shards");
  if (options.attempt_timeout_nanos <= 0 || options.deadline_nanos <= 0) {
    return InvalidArgument("remote store: attempt_timeout_nanos and deadline_nanos must be positive");
  }
  if (options.curve) {
    if (options.curve->server_keys.size() != options.shards.size()) {
      return InvalidArgument("remote store: " + std::to_string(options.shards.size()) + " shards but " +
                             std::to_string(options.curve->server_keys.size()) + " CURVE server keys");
    }
    LSTASH_RETURN_IF_ERROR(net::CheckCurveAvailable());
    LSTASH_RETURN_IF_ERROR(net::CheckZ85Key(options.curve->own.public_key, "remote store: our public key"));
    LSTASH_RETURN_IF_ERROR(net::CheckZ85Key(options.curve->own.secret_key, "remote store: our secret key"));
    for (size_t k = 0; k < options.curve->server_keys.size(); ++k) {
      LSTASH_RETURN_IF_ERROR(
          net::CheckZ85Key(options.curve->server_keys[k], "remote store: server key of shard " + std::to_string(k)));
    }
  }
  return std::unique_ptr<Store>(std::make_unique<RemoteStore>(options));
}

}  // namespace lstash
