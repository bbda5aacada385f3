// Status and Result<T>: how every lstash call reports failure.
//
// No exception crosses the lstash API. A call that can fail returns a Status
// (or a Result<T>, a value or a Status). OK carries no allocation. The code
// says what the caller may do next:
//
//   kUnavailable        transient (store away, peer restarting): retry the call.
//   kResourceExhausted  a bound was hit (stash cap): retry after the flusher
//                       has caught up, or raise the bound.
//   kDeadlineExceeded   a wait ran out of time.
//   kAborted            a higher-level retry is needed (recovery restarted).
//   kFailedPrecondition do not retry: wrong state, fenced incarnation, bad
//                       options, unknown store format.
//   kInvalidArgument    the caller passed something malformed.
//   kCorruption         bytes from outside (a frame, a stored record) failed
//                       validation; the input is rejected and counted.
//   kDataLoss           lineage that must exist was not found (more failures
//                       than the configured f, or a lost store).
//   kDiverged           a replayed task asked for something its log did not
//                       record: the task is not deterministic given its
//                       logged events.
//   kIOError, kInternal as named.
//
// Thread-safety: Status and Result are values; distinct objects may be used
// from distinct threads.
#pragma once

#include <lstash/export.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace lstash {

enum class Code : unsigned char {
  kOk = 0,
  kInvalidArgument,
  kNotFound,
  kCorruption,
  kDataLoss,
  kUnavailable,
  kAborted,
  kFailedPrecondition,
  kResourceExhausted,
  kDeadlineExceeded,
  kDiverged,
  kIOError,
  kInternal,
};

LSTASH_EXPORT std::string_view CodeName(Code code);

class [[nodiscard]] LSTASH_EXPORT Status {
 public:
  Status() noexcept = default;  // OK
  Status(Code code, std::string_view message);
  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;
  ~Status() = default;

  static Status OK() { return Status(); }

  bool ok() const { return rep_ == nullptr; }
  Code code() const { return rep_ ? rep_->code : Code::kOk; }
  std::string_view message() const { return rep_ ? std::string_view(rep_->message) : std::string_view(); }

  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

  // Returns a copy with "context: " prepended to the message.
  Status WithContext(std::string_view context) const;

 private:
  struct Rep {
    Code code;
    std::string message;
  };
  std::unique_ptr<Rep> rep_;
};

inline Status InvalidArgument(std::string_view m) { return Status(Code::kInvalidArgument, m); }
inline Status NotFound(std::string_view m) { return Status(Code::kNotFound, m); }
inline Status Corruption(std::string_view m) { return Status(Code::kCorruption, m); }
inline Status DataLoss(std::string_view m) { return Status(Code::kDataLoss, m); }
inline Status Unavailable(std::string_view m) { return Status(Code::kUnavailable, m); }
inline Status Aborted(std::string_view m) { return Status(Code::kAborted, m); }
inline Status FailedPrecondition(std::string_view m) { return Status(Code::kFailedPrecondition, m); }
inline Status ResourceExhausted(std::string_view m) { return Status(Code::kResourceExhausted, m); }
inline Status DeadlineExceeded(std::string_view m) { return Status(Code::kDeadlineExceeded, m); }
inline Status Diverged(std::string_view m) { return Status(Code::kDiverged, m); }
inline Status IOError(std::string_view m) { return Status(Code::kIOError, m); }
inline Status Internal(std::string_view m) { return Status(Code::kInternal, m); }

// A value of type T, or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}                        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {                  // NOLINT
    if (std::get<Status>(v_).ok()) v_ = Status(Code::kInternal, "Result built from an OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }

  // REQUIRES: ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace lstash

// Internal helpers; also handy for engines written in the same style.
#define LSTASH_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::lstash::Status lstash_status_ = (expr);        \
    if (!lstash_status_.ok()) return lstash_status_; \
  } while (0)

#define LSTASH_CONCAT_INNER_(a, b) a##b
#define LSTASH_CONCAT_(a, b) LSTASH_CONCAT_INNER_(a, b)
#define LSTASH_ASSIGN_OR_RETURN(lhs, expr) \
  LSTASH_ASSIGN_OR_RETURN_IMPL_(LSTASH_CONCAT_(lstash_result_, __LINE__), lhs, expr)
#define LSTASH_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
