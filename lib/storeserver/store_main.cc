// lstash-store: serves a RocksDB store to a job's workers (remote_store.h).
//
//   lstash-store --listen tcp://127.0.0.1:7100 --data DIR [--no-sync] [--threads N]
//                [--curve-secret KEYDIR/NAME --curve-allow KEYDIR]
//                [--keys KEYDIR --name NAME]   (= --curve-secret KEYDIR/NAME --curve-allow KEYDIR)
//
// Prints "lstash-store listening on ENDPOINT (data DIR)" once it serves;
// stops cleanly on SIGINT or SIGTERM. Exits 2 on bad flags, 1 if the store
// cannot be opened or the endpoint bound.

#include <lstash/curve.h>
#include <lstash/remote_store.h>
#include <signal.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace {

namespace fs = std::filesystem;

int Fail(const std::string& message, int code) {
  std::fprintf(stderr, "lstash-store: %s\n", message.c_str());
  return code;
}

// Every NAME.pub in `dir`, sorted by name.
lstash::Result<std::vector<std::string>> AllowedKeys(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> names;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().extension() == ".pub") names.push_back(it->path().stem().string());
  }
  if (ec) return lstash::InvalidArgument("cannot list key directory " + dir + ": " + ec.message());
  std::sort(names.begin(), names.end());
  std::vector<std::string> keys;
  for (const std::string& name : names) {
    LSTASH_ASSIGN_OR_RETURN(std::string key, lstash::ReadCurvePublicKey(dir, name));
    keys.push_back(std::move(key));
  }
  if (keys.empty()) return lstash::InvalidArgument("key directory " + dir + " holds no *.pub public keys");
  return keys;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App cli{"lstash-store: serve an lstash store over ZeroMQ"};
  lstash::StoreServerOptions options;
  bool no_sync = false;
  std::string curve_secret, curve_allow, keys_dir, key_name;
  cli.add_option("--listen", options.listen, "endpoint to bind (tcp://HOST:PORT, port 0 = any; ipc://PATH)")
      ->capture_default_str();
  cli.add_option("--data", options.data_dir, "RocksDB directory (created if missing)")->required();
  cli.add_flag("--no-sync", no_sync, "acknowledge writes before syncing them (survives a process crash only)");
  cli.add_option("--threads", options.threads, "requests served concurrently")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  double write_delay_ms = 0;
  cli.add_option("--write-delay-ms", write_delay_ms, "add this delay before each write (a slow store, for tests)")
      ->check(CLI::Range(0.0, 10000.0));
  cli.add_option("--ack-journal", options.ack_journal,
                 "append every acknowledged write to this file (the harness's durability check)");
  cli.add_option("--curve-secret", curve_secret, "CURVE: our key pair, KEYDIR/NAME (reads KEYDIR/NAME.key)");
  cli.add_option("--curve-allow", curve_allow, "CURVE: directory whose *.pub keys may connect");
  cli.add_option("--keys", keys_dir, "CURVE: key directory (with --name): our key NAME, allow every *.pub in it");
  cli.add_option("--name", key_name, "CURVE: our key's name in --keys");
  CLI11_PARSE(cli, argc, argv);
  options.sync = !no_sync;
  options.write_delay_nanos = static_cast<std::int64_t>(write_delay_ms * 1e6);

  if (!keys_dir.empty() || !key_name.empty()) {
    if (keys_dir.empty() || key_name.empty()) return Fail("--keys and --name go together", 2);
    if (!curve_secret.empty() || !curve_allow.empty()) {
      return Fail("--keys/--name replace --curve-secret/--curve-allow; give one or the other", 2);
    }
    curve_secret = (fs::path(keys_dir) / key_name).string();
    curve_allow = keys_dir;
  }
  if (curve_secret.empty() != curve_allow.empty()) return Fail("--curve-secret and --curve-allow go together", 2);
  if (!curve_secret.empty()) {
    fs::path secret(curve_secret);
    std::string dir = secret.has_parent_path() ? secret.parent_path().string() : std::string(".");
    lstash::Result<lstash::CurveKeyPair> own = lstash::ReadCurveKeyPair(dir, secret.filename().string());
    if (!own.ok()) return Fail("--curve-secret " + curve_secret + ": " + own.status().ToString(), 2);
    lstash::Result<std::vector<std::string>> allowed = AllowedKeys(curve_allow);
    if (!allowed.ok()) return Fail("--curve-allow: " + allowed.status().ToString(), 2);
    lstash::CurveSecurity curve;
    curve.own = std::move(own).value();
    curve.allowed_clients = std::move(allowed).value();
    options.curve = std::move(curve);
  }

  // Handle SIGINT/SIGTERM by sigwait in this thread: block them before any
  // thread starts so that every thread inherits the mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  lstash::Result<std::unique_ptr<lstash::StoreServer>> server = lstash::StoreServer::Start(options);
  if (!server.ok()) return Fail(server.status().ToString(), 1);
  std::printf("lstash-store listening on %s (data %s)\n", (*server)->endpoint().c_str(), options.data_dir.c_str());
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&signals, &signal_number);
  lstash::StoreServerMetrics m = (*server)->GetMetrics();
  server->reset();
  std::fprintf(stderr,
               "lstash-store: stopped by signal %d after %llu requests (%llu errors, %llu rejected, %llu retries "
               "answered)\n",
               signal_number, static_cast<unsigned long long>(m.requests), static_cast<unsigned long long>(m.errors),
               static_cast<unsigned long long>(m.rejected), static_cast<unsigned long long>(m.retries_answered));
  return 0;
}
