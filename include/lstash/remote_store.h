// The store server and its client: the global store for a job whose workers
// are separate processes.
//
// `lstash-store` (or StoreServer::Start in a process of your own) serves an
// embedded RocksDB store over a ZeroMQ ROUTER socket. A job may run K of them
// (shards); worker w's log, epochs and checkpoints live on shard w % K, and
// lineage copies on the shard of the worker that wrote them. A write is
// acknowledged only after RocksDB committed it (synced, by default), so a
// server killed with SIGKILL and restarted on the same directory loses
// nothing it acknowledged.
//
// OpenRemoteStore returns a Store that talks to the shards. Every request
// carries a client-chosen id; a retried request returns the answer of the
// first (the server remembers, durably for BeginIncarnation), so retrying
// after a lost response is safe. Transient failures are retried with
// exponential backoff until `deadline_nanos`, then reported as kUnavailable
// naming the shard.
//
// The server enforces leases (Store::RenewLease): a worker incarnation whose
// lease ran out cannot write until it renews it, and a replaced incarnation
// (a paused or partitioned zombie) cannot renew: it learns it is fenced.
#pragma once

#include <lstash/curve.h>
#include <lstash/export.h>
#include <lstash/status.h>
#include <lstash/store.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace lstash {

struct RemoteStoreOptions {
  std::vector<std::string> shards;  // endpoints, e.g. "tcp://127.0.0.1:7100"
  // One try of one request, and how long to keep retrying it. A request
  // gets 256 s more per GiB of its size for each (4 MiB/s): a checkpoint
  // goes in one.
  std::int64_t attempt_timeout_nanos = 1'000'000'000;
  std::int64_t deadline_nanos = 10'000'000'000;
  // CURVE: curve->server_keys[k] is shard k's public key.
  std::optional<CurveSecurity> curve;
};

LSTASH_EXPORT Result<std::unique_ptr<Store>> OpenRemoteStore(const RemoteStoreOptions& options);

struct StoreServerOptions {
  std::string listen = "tcp://127.0.0.1:7100";  // port 0 picks a free port
  std::string data_dir;                         // RocksDB directory (created if missing)
  bool sync = true;                             // sync every write before acknowledging it
  int threads = 4;                              // requests served concurrently
  // Added before each write is applied: a slower disk or a remote store (the
  // lineage stash paper's +1 ms and +5 ms), for fault injection and benchmarks.
  std::int64_t write_delay_nanos = 0;
  // CURVE: curve->allowed_clients are the keys that may connect.
  std::optional<CurveSecurity> curve;
  // A file recording every acknowledged append and checkpoint, for the
  // failure-injection harness's durability check. Empty: none.
  std::string ack_journal;
};

struct StoreServerMetrics {
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;    // requests answered with an error status
  std::uint64_t rejected = 0;  // malformed requests (answered with kCorruption, or dropped)
  std::uint64_t retries_answered = 0;  // duplicates of earlier requests
};

class LSTASH_EXPORT StoreServer {
 public:
  static Result<std::unique_ptr<StoreServer>> Start(const StoreServerOptions& options);
  virtual ~StoreServer();  // stops serving and closes the store
  virtual std::string endpoint() const = 0;  // where it listens (the real port if 0 was asked)
  virtual StoreServerMetrics GetMetrics() const = 0;
};

}  // namespace lstash
