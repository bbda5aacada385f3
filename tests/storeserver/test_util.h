// Helpers for the store server tests: a raw ZeroMQ client, and an
// lstash-store child process that is always killed and reaped.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

namespace lstash::storeserver_test {

inline std::int64_t NowNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A DEALER socket that sends raw bytes to a store server.
class RawClient {
 public:
  explicit RawClient(const std::string& endpoint) : socket_(context_, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.connect(endpoint);
  }

  void Send(const std::string& bytes) { socket_.send(zmq::buffer(bytes), zmq::send_flags::none); }

  // The next message, or nullopt after `timeout_ms`.
  std::optional<std::string> Receive(int timeout_ms = 5000) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms)) == 0) return std::nullopt;
    zmq::message_t m;
    if (!socket_.recv(m, zmq::recv_flags::dontwait)) return std::nullopt;
    return m.to_string();
  }

 private:
  zmq::context_t context_;
  zmq::socket_t socket_;
};

// An lstash-store child process. The destructor kills (SIGKILL) and reaps
// it, so no test leaves one behind, whatever it fails on.
class StoreProcess {
 public:
  StoreProcess() = default;
  StoreProcess(const StoreProcess&) = delete;
  StoreProcess& operator=(const StoreProcess&) = delete;
  ~StoreProcess() { Kill(); }

  // Starts `lstash-store args...` and waits (bounded) for its "listening on"
  // line; returns the endpoint it printed, or "" (with a test failure).
  std::string Start(const std::vector<std::string>& args, int timeout_ms = 15000) {
    Kill();
    int out[2];
    if (pipe(out) != 0) {
      ADD_FAILURE() << "pipe failed";
      return "";
    }
    std::string binary = std::string(LSTASH_TOOLS_DIR) + "/lstash-store";
    std::vector<std::string> argv_strings = {binary};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    pid_ = fork();
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      close(out[0]);
      close(out[1]);
      std::vector<char*> argv;
      for (std::string& a : argv_strings) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(binary.c_str(), argv.data());
      _exit(127);
    }
    close(out[1]);
    stdout_ = out[0];
    if (pid_ < 0) {
      ADD_FAILURE() << "fork failed";
      return "";
    }
    // Read its output until the line, the deadline or its exit.
    std::string seen;
    std::int64_t deadline = NowNanos() + std::int64_t{timeout_ms} * 1'000'000;
    while (NowNanos() < deadline) {
      pollfd p{stdout_, POLLIN, 0};
      int left_ms = static_cast<int>((deadline - NowNanos()) / 1'000'000) + 1;
      if (poll(&p, 1, left_ms) <= 0) continue;
      char buf[512];
      ssize_t n = read(stdout_, buf, sizeof buf);
      if (n <= 0) break;  // it exited
      seen.append(buf, static_cast<size_t>(n));
      size_t at = seen.find("listening on ");
      size_t end = at == std::string::npos ? at : seen.find(' ', at + 13);
      if (end != std::string::npos && seen.find('\n', at) != std::string::npos) {
        return seen.substr(at + 13, end - (at + 13));
      }
    }
    ADD_FAILURE() << "lstash-store did not report listening; output: " << seen;
    return "";
  }

  // SIGKILL and reap; returns once the process is gone.
  void Kill() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
      pid_ = -1;
    }
    if (stdout_ >= 0) {
      close(stdout_);
      stdout_ = -1;
    }
  }

  // Sends `signal` and waits (bounded) for a clean exit; returns its exit
  // status (as waitpid reports it), or -1 if it did not exit in time.
  int Stop(int signal, int timeout_ms = 10000) {
    if (pid_ <= 0) return -1;
    kill(pid_, signal);
    std::int64_t deadline = NowNanos() + std::int64_t{timeout_ms} * 1'000'000;
    while (NowNanos() < deadline) {
      int status = 0;
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        pid_ = -1;
        return status;
      }
      pollfd none{-1, 0, 0};
      poll(&none, 0, 5);  // waiting for a child to exit, not synchronising
    }
    return -1;
  }

  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int stdout_ = -1;
};

// Runs lstash-store to completion (for flag errors); returns its exit status
// and stderr.
inline std::pair<int, std::string> RunStoreToExit(const std::vector<std::string>& args) {
  int err[2];
  if (pipe(err) != 0) return {-1, ""};
  std::string binary = std::string(LSTASH_TOOLS_DIR) + "/lstash-store";
  std::vector<std::string> argv_strings = {binary};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  pid_t pid = fork();
  if (pid == 0) {
    dup2(err[1], STDERR_FILENO);
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0) dup2(devnull, STDOUT_FILENO);
    close(err[0]);
    close(err[1]);
    std::vector<char*> argv;
    for (std::string& a : argv_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(err[1]);
  std::string text;
  char buf[512];
  // Bounded: a server that unexpectedly starts is killed after 15 s.
  std::int64_t deadline = NowNanos() + 15'000'000'000;
  while (NowNanos() < deadline) {
    pollfd p{err[0], POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t n = read(err[0], buf, sizeof buf);
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  close(err[0]);
  kill(pid, SIGKILL);  // a no-op once it exited (it is not reaped yet)
  int status = 0;
  waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, text};
}

}  // namespace lstash::storeserver_test
