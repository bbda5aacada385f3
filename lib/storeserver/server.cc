// The store server (remote_store.h): an embedded RocksDB store served over a
// ZeroMQ ROUTER socket.
//
// Threads:
//   dispatcher  owns the ROUTER (clients) and an inproc PULL (results). It
//               decodes each request, answers retries from the response
//               cache, queues the rest for the handlers, and sends the
//               results the handlers push back. It never touches the store.
//   handlers    `threads` of them: each takes a request from the queue, runs
//               the Store call (blocking in RocksDB, so concurrent appends of
//               different workers are group-committed), encodes the response
//               and pushes it to the dispatcher over its own inproc PUSH.
// A response leaves only after its Store call returned, so an acknowledged
// write is as durable as the store's sync option makes it.
//
// Retries. A request is named by (client id, request id). The answers to
// writes (BeginIncarnation, SetEpochStart, Append, PutCheckpoint,
// RenewLease, DropCopies) are kept in a bounded cache (kCacheEntries, oldest
// evicted first); a retry of one is answered from the cache, or, while the
// first is still running, joins it and gets the same answer. Reads are just
// run again. BeginIncarnation also goes through
// rocksdb_layout::ServerOps::BeginIncarnationForRequest, which stores the
// request ids with the new epoch in the same synced write, so a retry after
// a server restart (cache lost) returns the same epoch instead of fencing
// the incarnation it created.
//
// Leases. RenewLease(w, e, d) (fenced like a write) sets incarnation e's
// lease to expire d after now on the server's steady clock. Append,
// SetEpochStart and PutCheckpoint from an incarnation whose lease ran out
// fail with kUnavailable: the writer must renew before writing again, and
// learns there whether it was replaced (a fenced renewal fails with
// kFailedPrecondition). An incarnation that never renewed its lease has no
// lease constraint, so users that do not renew (embedded-style users of the
// remote store, tests) are unaffected. A BeginIncarnation ends the previous
// incarnation's lease (it is fenced anyway). Leases live in the
// server's memory: after a restart every incarnation is unconstrained again
// until it next renews (fencing by epoch is durable and unaffected).
//
// Malformed requests are counted (metrics.rejected), answered with
// kCorruption when their ids could be read and dropped otherwise, and
// reported by a warning at most once a second.

#include <lstash/remote_store.h>
#include <spdlog/spdlog.h>

#include "storeserver/ack_journal.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "net/zmq_util.h"
#include "store/checks.h"
#include "store/rocksdb_layout.h"
#include "storeserver/store_rpc.h"

namespace lstash {

StoreServer::~StoreServer() = default;

namespace {

using store_rpc::Method;
using store_rpc::Request;
using store_rpc::RequestIds;
using store_rpc::Response;

// Write answers remembered for retries. An entry is a few dozen bytes.
constexpr std::size_t kCacheEntries = 1 << 16;

std::int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct IdsHash {
  std::size_t operator()(const RequestIds& ids) const {
    return std::hash<std::uint64_t>()(ids.client_id * 0x9e3779b97f4a7c15ULL ^ ids.request_id);
  }
};

// The routing frames of a request (the ROUTER's identity frame, and an empty
// delimiter if the client is a REQ socket); a response goes back under them.
using Envelope = std::vector<std::string>;

struct Job {
  Envelope envelope;
  bool cached = false;  // a write: its answer goes to the cache's waiters
  Request request;
};

std::string_view MessageView(const zmq::message_t& m) { return std::string_view(m.data<char>(), m.size()); }

class ServerImpl final : public StoreServer {
 public:
  ServerImpl(const StoreServerOptions& options, std::unique_ptr<Store> store,
             std::unique_ptr<store_journal::AckJournal> journal)
      : options_(options),
        journal_(std::move(journal)),
        store_(std::move(store)),
        ops_(rocksdb_layout::GetServerOps(store_.get())) {}

  ~ServerImpl() override { Stop(); }

  Status Listen();
  void Run();

  std::string endpoint() const override { return endpoint_; }

  StoreServerMetrics GetMetrics() const override {
    StoreServerMetrics m;
    m.requests = requests_.load(std::memory_order_relaxed);
    m.errors = errors_.load(std::memory_order_relaxed);
    m.rejected = rejected_.load(std::memory_order_relaxed);
    m.retries_answered = retries_answered_.load(std::memory_order_relaxed);
    return m;
  }

 private:
  struct CacheEntry {
    bool done = false;
    std::string response;            // when done
    std::vector<Envelope> waiters;   // while running: who gets the answer
  };

  struct Lease {
    Epoch epoch = 0;
    std::int64_t expiry = 0;  // steady nanos
  };

  void Stop();
  void DispatchLoop();
  void HandlerLoop();
  void OnRequest(Envelope envelope, std::string_view payload);
  void OnResult(std::vector<zmq::message_t>& parts);
  void Send(const Envelope& envelope, std::string_view response);
  void Reject(const Status& status, const Envelope& envelope, const std::optional<RequestIds>& ids);
  void Remember(const RequestIds& ids, std::string response);
  Response Execute(Request& request);
  Status CheckLease(WorkerId worker, Epoch epoch);
  Status RenewLease(WorkerId worker, Epoch epoch, std::int64_t duration_nanos);

  const StoreServerOptions options_;
  std::unique_ptr<store_journal::AckJournal> journal_;  // null: no journal
  std::unique_ptr<Store> store_;
  rocksdb_layout::ServerOps* const ops_;
  std::string endpoint_;
  std::string results_endpoint_;

  zmq::context_t context_;
  zmq::socket_t frontend_;  // ROUTER, dispatcher thread only (after Run)
  zmq::socket_t results_;   // PULL, dispatcher thread only
  std::unique_ptr<net::ZapAuthenticator> zap_;

  std::thread dispatcher_;
  std::vector<std::thread> handlers_;
  std::atomic<bool> stopping_{false};
  bool stopped_ = false;

  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<Job> queue_;  // GUARDED_BY(queue_mu_)

  // Dispatcher thread only.
  std::unordered_map<RequestIds, CacheEntry, IdsHash> cache_;
  std::deque<RequestIds> cache_order_;  // oldest first
  std::int64_t last_warning_ = 0;
  std::uint64_t unreported_rejects_ = 0;

  std::mutex lease_mu_;
  std::unordered_map<WorkerId, Lease> leases_;  // GUARDED_BY(lease_mu_)

  std::atomic<std::uint64_t> requests_{0};
  std::atomic<std::uint64_t> errors_{0};
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::uint64_t> retries_answered_{0};
};

Status ServerImpl::Listen() {
  std::string listen = options_.listen;
  // "tcp://host:0" asks for any free port; ZeroMQ spells that "*".
  if (listen.starts_with("tcp://") && listen.ends_with(":0")) listen.replace(listen.size() - 1, 1, "*");
  try {
    frontend_ = zmq::socket_t(context_, zmq::socket_type::router);
    frontend_.set(zmq::sockopt::linger, 0);
    frontend_.set(zmq::sockopt::sndhwm, 0);
    frontend_.set(zmq::sockopt::rcvhwm, 0);
    if (options_.curve) {
      // The authenticator must run before the CURVE socket binds: without a
      // ZAP handler libzmq admits every key.
      Result<std::unique_ptr<net::ZapAuthenticator>> zap =
          net::ZapAuthenticator::Start(context_, options_.curve->allowed_clients, "store server");
      if (!zap.ok()) return zap.status().WithContext("lstash-store");
      zap_ = std::move(zap).value();
      LSTASH_RETURN_IF_ERROR(net::ApplyCurveServer(frontend_, options_.curve->own).WithContext("lstash-store"));
    }
    frontend_.bind(listen);
    endpoint_ = frontend_.get(zmq::sockopt::last_endpoint);

    results_ = zmq::socket_t(context_, zmq::socket_type::pull);
    results_.set(zmq::sockopt::linger, 0);
    results_.set(zmq::sockopt::rcvhwm, 0);
    char name[64];
    std::snprintf(name, sizeof name, "inproc://lstash-store-results-%p", static_cast<void*>(this));
    results_endpoint_ = name;
    results_.bind(results_endpoint_);
  } catch (const zmq::error_t& e) {
    return net::FromZmq(e, "lstash-store cannot listen on " + options_.listen);
  }
  return Status::OK();
}

void ServerImpl::Run() {
  for (int i = 0; i < options_.threads; ++i) handlers_.emplace_back([this] { HandlerLoop(); });
  dispatcher_ = std::thread([this] { DispatchLoop(); });
}

void ServerImpl::Stop() {
  if (stopped_) return;
  stopped_ = true;
  stopping_.store(true);
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    queue_.clear();  // unanswered: their clients retry
  }
  queue_cv_.notify_all();
  for (std::thread& t : handlers_) t.join();
  // Every handler has pushed its last result; the dispatcher sends them and
  // exits at the stop message.
  if (dispatcher_.joinable()) {
    try {
      zmq::socket_t wake(context_, zmq::socket_type::push);
      wake.set(zmq::sockopt::linger, 0);
      wake.connect(results_endpoint_);
      wake.send(zmq::str_buffer("stop"), zmq::send_flags::dontwait);
      dispatcher_.join();
    } catch (const zmq::error_t& e) {
      spdlog::error("lstash-store: stopping: {}", e.what());
      dispatcher_.join();  // it also polls stopping_
    }
  }
  frontend_.close();
  results_.close();
  zap_.reset();
  store_.reset();
}

void ServerImpl::DispatchLoop() {
  zmq::pollitem_t items[] = {{frontend_.handle(), 0, ZMQ_POLLIN, 0}, {results_.handle(), 0, ZMQ_POLLIN, 0}};
  std::vector<zmq::message_t> parts;
  bool stop = false;
  while (!stop) {
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(200));
      // Results first: they free waiting clients.
      for (;;) {
        parts.clear();
        if (!zmq::recv_multipart(results_, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
        if (parts.size() == 1 && MessageView(parts[0]) == "stop") {
          stop = true;
          continue;  // drain what the handlers pushed before it
        }
        OnResult(parts);
      }
      if (stopping_.load()) {
        // Stop takes no new work; it waits for the handlers, then wakes us.
        if (stop) break;
        continue;
      }
      for (int i = 0; i < 256; ++i) {
        parts.clear();
        if (!zmq::recv_multipart(frontend_, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
        if (parts.size() < 2) {  // a ROUTER always prefixes the identity
          rejected_.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        Envelope envelope;
        for (size_t p = 0; p + 1 < parts.size(); ++p) envelope.emplace_back(MessageView(parts[p]));
        OnRequest(std::move(envelope), MessageView(parts.back()));
      }
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      if (e.num() == ETERM) break;
      spdlog::error("lstash-store {}: {}", endpoint_, e.what());
    }
  }
}

void ServerImpl::OnRequest(Envelope envelope, std::string_view payload) {
  Job job;
  std::optional<RequestIds> ids;
  Status s = store_rpc::DecodeRequest(payload, &job.request, &ids);
  if (!s.ok()) {
    Reject(s, envelope, ids);
    return;
  }
  requests_.fetch_add(1, std::memory_order_relaxed);
  job.envelope = std::move(envelope);
  if (store_rpc::IsWrite(job.request.method)) {
    auto [it, inserted] = cache_.try_emplace(job.request.ids);
    if (!inserted) {
      retries_answered_.fetch_add(1, std::memory_order_relaxed);
      if (it->second.done) {
        Send(job.envelope, it->second.response);
      } else {
        it->second.waiters.push_back(std::move(job.envelope));
      }
      return;
    }
    it->second.waiters.push_back(job.envelope);
    cache_order_.push_back(job.request.ids);
    job.cached = true;
  }
  {
    std::lock_guard<std::mutex> lock(queue_mu_);
    queue_.push_back(std::move(job));
  }
  queue_cv_.notify_one();
}

void ServerImpl::Reject(const Status& status, const Envelope& envelope, const std::optional<RequestIds>& ids) {
  rejected_.fetch_add(1, std::memory_order_relaxed);
  ++unreported_rejects_;
  std::int64_t now = SteadyNanos();
  if (now - last_warning_ >= 1'000'000'000) {
    spdlog::warn("lstash-store {}: rejected {} malformed request(s) since the last warning; latest: {}", endpoint_,
                 unreported_rejects_, status.ToString());
    last_warning_ = now;
    unreported_rejects_ = 0;
  }
  if (!ids) return;
  Response response;
  response.request_id = ids->request_id;
  response.method = static_cast<Method>(0);
  response.status = status.code() == Code::kCorruption ? status : Corruption(status.ToString());
  std::string bytes;
  store_rpc::EncodeResponse(response, &bytes);
  Send(envelope, bytes);
}

void ServerImpl::OnResult(std::vector<zmq::message_t>& parts) {
  // [ids (16 bytes) or empty][envelope frames...][response]
  if (parts.size() < 2) return;
  std::string_view response = MessageView(parts.back());
  if (parts[0].size() == 16) {
    RequestIds ids;
    std::memcpy(&ids.client_id, parts[0].data<char>(), 8);
    std::memcpy(&ids.request_id, parts[0].data<char>() + 8, 8);
    auto it = cache_.find(ids);
    if (it == cache_.end()) return;
    for (const Envelope& waiter : it->second.waiters) Send(waiter, response);
    it->second.waiters.clear();
    it->second.done = true;
    it->second.response.assign(response);
    // Evict the oldest answered entries beyond the bound (running ones stay).
    for (size_t scanned = 0; cache_.size() > kCacheEntries && scanned < cache_order_.size(); ++scanned) {
      RequestIds oldest = cache_order_.front();
      cache_order_.pop_front();
      auto old = cache_.find(oldest);
      if (old != cache_.end() && !old->second.done) {
        cache_order_.push_back(oldest);
        continue;
      }
      cache_.erase(oldest);
    }
    return;
  }
  Envelope envelope;
  for (size_t p = 1; p + 1 < parts.size(); ++p) envelope.emplace_back(MessageView(parts[p]));
  Send(envelope, response);
}

void ServerImpl::Send(const Envelope& envelope, std::string_view response) {
  try {
    for (const std::string& frame : envelope) {
      frontend_.send(zmq::buffer(frame), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    }
    frontend_.send(zmq::buffer(response), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& e) {
    // EHOSTUNREACH and the like: the client is gone; it will retry.
    spdlog::debug("lstash-store {}: reply dropped: {}", endpoint_, e.what());
  }
}

void ServerImpl::HandlerLoop() {
  zmq::socket_t push;
  try {
    push = zmq::socket_t(context_, zmq::socket_type::push);
    push.set(zmq::sockopt::linger, 0);
    push.set(zmq::sockopt::sndhwm, 0);
    push.connect(results_endpoint_);
  } catch (const zmq::error_t& e) {
    spdlog::error("lstash-store {}: handler cannot connect: {}", endpoint_, e.what());
    return;
  }
  std::string bytes;
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      queue_cv_.wait(lock, [this] { return stopping_.load() || !queue_.empty(); });
      if (stopping_.load()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    Response response = Execute(job.request);
    if (!response.status.ok()) errors_.fetch_add(1, std::memory_order_relaxed);
    store_rpc::EncodeResponse(response, &bytes);
    try {
      char ids[16] = {};
      std::memcpy(ids, &job.request.ids.client_id, 8);
      std::memcpy(ids + 8, &job.request.ids.request_id, 8);
      push.send(zmq::buffer(ids, job.cached ? 16 : 0), zmq::send_flags::sndmore);
      if (!job.cached) {
        for (const std::string& frame : job.envelope) push.send(zmq::buffer(frame), zmq::send_flags::sndmore);
      }
      push.send(zmq::buffer(bytes), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      spdlog::error("lstash-store {}: handler: {}", endpoint_, e.what());
    }
  }
}

Status ServerImpl::CheckLease(WorkerId worker, Epoch epoch) {
  std::lock_guard<std::mutex> lock(lease_mu_);
  auto it = leases_.find(worker);
  if (it == leases_.end() || it->second.epoch != epoch) return Status::OK();
  std::int64_t now = SteadyNanos();
  if (now <= it->second.expiry) return Status::OK();
  // Unavailable, not fenced: the writer renews (learning whether it was
  // replaced meanwhile) and retries.
  return Unavailable("worker " + std::to_string(worker) + " incarnation " + std::to_string(epoch) + " lease lapsed " +
                     std::to_string((now - it->second.expiry) / 1'000'000) + "ms ago; renew it before writing");
}

Status ServerImpl::RenewLease(WorkerId worker, Epoch epoch, std::int64_t duration_nanos) {
  if (duration_nanos < 0) {
    return InvalidArgument("lease of worker " + std::to_string(worker) + ": negative duration " +
                           std::to_string(duration_nanos) + "ns");
  }
  Result<std::vector<EpochRecord>> epochs = store_->Epochs(worker);
  if (!epochs.ok()) return epochs.status();
  Epoch current = epochs->empty() ? 0 : epochs->back().epoch;
  LSTASH_RETURN_IF_ERROR(store_internal::CheckFence(worker, epoch, current));
  std::int64_t now = SteadyNanos();
  std::lock_guard<std::mutex> lock(lease_mu_);
  Lease& lease = leases_[worker];
  if (lease.epoch > epoch) return store_internal::CheckFence(worker, epoch, lease.epoch);
  // A lapsed lease of the current incarnation is renewed: the fence check
  // above is what tells a replaced incarnation to stop.
  lease.epoch = epoch;
  lease.expiry = duration_nanos > INT64_MAX - now ? INT64_MAX : now + duration_nanos;
  return Status::OK();
}

Response ServerImpl::Execute(Request& r) {
  if (options_.write_delay_nanos > 0 && store_rpc::IsWrite(r.method)) {
    std::this_thread::sleep_for(std::chrono::nanoseconds(options_.write_delay_nanos));  // the injected slowness
  }
  Response out;
  out.request_id = r.ids.request_id;
  out.method = r.method;
  switch (r.method) {
    case Method::kBeginIncarnation: {
      Result<Epoch> epoch = ops_ != nullptr
                                ? ops_->BeginIncarnationForRequest(r.worker, r.ids.client_id, r.ids.request_id)
                                : store_->BeginIncarnation(r.worker);
      if (!epoch.ok()) {
        out.status = epoch.status();
        break;
      }
      out.epoch = *epoch;
      std::lock_guard<std::mutex> lock(lease_mu_);
      auto it = leases_.find(r.worker);
      if (it != leases_.end() && it->second.epoch < out.epoch) leases_.erase(it);
      break;
    }
    case Method::kSetEpochStart:
      out.status = CheckLease(r.worker, r.epoch);
      if (out.status.ok()) out.status = store_->SetEpochStart(r.worker, r.epoch, r.index);
      break;
    case Method::kEpochs: {
      Result<std::vector<EpochRecord>> epochs = store_->Epochs(r.worker);
      if (epochs.ok()) {
        out.epochs = std::move(epochs).value();
      } else {
        out.status = epochs.status();
      }
      break;
    }
    case Method::kAppend:
      out.status = CheckLease(r.worker, r.epoch);
      if (out.status.ok()) out.status = store_->Append(r.worker, r.epoch, r.records, r.copies);
      if (out.status.ok() && journal_) journal_->RecordAppend(r.worker, r.epoch, r.records);
      break;
    case Method::kReadCopies:
      out.status = store_->ReadCopies(r.worker, r.index, &out.copies);
      break;
    case Method::kReadLog:
      out.status = store_->ReadLog(r.worker, r.index, &out.records);
      break;
    case Method::kReadCommitted:
      out.committed.resize(r.workers.size());
      out.status = store_->ReadCommitted(r.workers, out.committed);
      break;
    case Method::kPutCheckpoint:
      out.status = CheckLease(r.worker, r.epoch);
      if (out.status.ok()) out.status = store_->PutCheckpoint(r.worker, r.epoch, r.index, r.bytes);
      if (out.status.ok() && journal_) journal_->RecordCheckpoint(r.worker, r.epoch, r.index);
      break;
    case Method::kReadCheckpointPart: {
      Result<std::optional<CheckpointPart>> part = store_->ReadCheckpointPart(r.worker, r.offset, r.max_bytes);
      if (part.ok()) {
        out.checkpoint_part = std::move(part).value();
      } else {
        out.status = part.status();
      }
      break;
    }
    case Method::kRenewLease:
      out.status = RenewLease(r.worker, r.epoch, r.duration_nanos);
      break;
    case Method::kDropCopies:
      out.status = ops_ != nullptr ? ops_->DropCopies(r.worker, r.index)
                                   : FailedPrecondition("this store cannot drop lineage copies");
      break;
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<StoreServer>> StoreServer::Start(const StoreServerOptions& options) {
  if (options.threads < 1) {
    return InvalidArgument("store server: threads must be at least 1 (got " + std::to_string(options.threads) + ")");
  }
  if (options.data_dir.empty()) return InvalidArgument("store server: no data directory");
  RocksDbStoreOptions store_options;
  store_options.sync = options.sync;
  Result<std::unique_ptr<Store>> store = OpenRocksDbStore(options.data_dir, store_options);
  if (!store.ok()) return store.status();
  std::unique_ptr<store_journal::AckJournal> journal;
  if (!options.ack_journal.empty()) {
    LSTASH_ASSIGN_OR_RETURN(journal, store_journal::AckJournal::Open(options.ack_journal));
  }
  auto server = std::make_unique<ServerImpl>(options, std::move(store).value(), std::move(journal));
  LSTASH_RETURN_IF_ERROR(server->Listen());
  server->Run();
  return std::unique_ptr<StoreServer>(std::move(server));
}

}  // namespace lstash
