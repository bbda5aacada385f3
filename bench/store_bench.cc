// Raw synced Store::Append: the ceiling a worker's flusher is compared
// against, into the embedded RocksDB store and, side by side, into the same
// store behind a store server (lstash-store) over loopback tcp. Each
// iteration appends one batch of ~100-byte records to one worker's log and
// waits for the sync (and, remote, the acknowledgement).

#include <benchmark/benchmark.h>
#include <lstash/remote_store.h>
#include <lstash/store.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace lstash {
namespace {

constexpr size_t kRecordBytes = 100;

// A temporary directory, removed with everything in it.
class BenchDir {
 public:
  BenchDir() {
    std::string name = (std::filesystem::temp_directory_path() / "lstash_store_bench_XXXXXX").string();
    if (mkdtemp(name.data()) != nullptr) path_ = name;
  }
  ~BenchDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  BenchDir(const BenchDir&) = delete;
  BenchDir& operator=(const BenchDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Appends batches of state.range(0) records to `store` until the state ends.
void SyncedAppends(benchmark::State& state, Store* store) {
  const auto batch_size = static_cast<size_t>(state.range(0));
  auto epoch = store->BeginIncarnation(0);
  if (!epoch.ok()) {
    state.SkipWithError(epoch.status().ToString().c_str());
    return;
  }

  // Incompressible-ish bytes, so the log's SSTs do real work too.
  std::vector<LogRecord> batch(batch_size);
  std::uint64_t x = 0x9e3779b97f4a7c15;
  for (LogRecord& r : batch) {
    r.bytes.resize(kRecordBytes);
    for (char& c : r.bytes) {
      x = x * 6364136223846793005 + 1442695040888963407;
      c = static_cast<char>(x >> 56);
    }
  }

  LogIndex next = 1;
  for (auto _ : state) {
    for (LogRecord& r : batch) r.index = next++;
    Status s = store->Append(0, *epoch, batch, {});
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch_size));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * batch_size * kRecordBytes));
}

std::unique_ptr<Store> OpenSynced(benchmark::State& state, const std::string& path) {
  RocksDbStoreOptions options;
  options.sync = true;
  auto opened = OpenRocksDbStore(path, options);
  if (!opened.ok()) {
    state.SkipWithError(opened.status().ToString().c_str());
    return nullptr;
  }
  return std::move(opened).value();
}

void BM_RocksDbSyncedAppend(benchmark::State& state) {
  BenchDir dir;
  if (dir.path().empty()) return state.SkipWithError("cannot create a temporary directory");
  std::unique_ptr<Store> store = OpenSynced(state, dir.path() + "/db");
  if (store) SyncedAppends(state, store.get());
  store.reset();  // close before the directory goes
}

void BM_StoreServerSyncedAppend(benchmark::State& state) {
  BenchDir dir;
  if (dir.path().empty()) return state.SkipWithError("cannot create a temporary directory");
  StoreServerOptions server_options;
  server_options.listen = "tcp://127.0.0.1:0";
  server_options.data_dir = dir.path() + "/db";
  auto server = StoreServer::Start(server_options);
  if (!server.ok()) return state.SkipWithError(server.status().ToString().c_str());
  RemoteStoreOptions client_options;
  client_options.shards = {(*server)->endpoint()};
  auto store = OpenRemoteStore(client_options);
  if (!store.ok()) return state.SkipWithError(store.status().ToString().c_str());
  SyncedAppends(state, store->get());
  store->reset();
  server->reset();  // stop before the directory goes
}

// Synced writes wait on the disk, not the CPU: rate them by wall time.
BENCHMARK(BM_RocksDbSyncedAppend)->Arg(1)->Arg(100)->Arg(1000)->UseRealTime();
BENCHMARK(BM_StoreServerSyncedAppend)->Arg(1)->Arg(100)->Arg(1000)->UseRealTime();

}  // namespace
}  // namespace lstash
