// format/status.h — error values for every fallible shardload call.
//
// Provides `Status` (a canonical code plus a message) and `Result<T>` (a value or a
// non-OK Status). No exception leaves the library; every error travels as one of
// these. Messages name the file and, where it applies, the tensor and byte offset.
//
//   shardload::Result<Header> h = ReadHeaderFile("model.safetensors");
//   if (!h.ok()) { std::cerr << h.status().ToString() << "\n"; return 1; }
//   for (const TensorInfo& t : h->tensors) ...
//
//   SL_ASSIGN_OR_RETURN(Header header, ReadHeaderFile(path));
//   SL_RETURN_IF_ERROR(ValidateSomething(header));
#ifndef SHARDLOAD_FORMAT_STATUS_H_
#define SHARDLOAD_FORMAT_STATUS_H_

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace shardload {

// StatusCode: the canonical error codes (the usual absl / gRPC set, the subset used).
enum class StatusCode {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
};

// StatusCodeName: the snake_case name of a code ("invalid_argument", "data_loss").
// Stable: it is part of the CLI's JSON output.
std::string_view StatusCodeName(StatusCode code);

// Status: OK, or a code with a human-readable message. Cheap to copy when OK.
// Thread safety: a value type; distinct objects may be used from different threads.
class [[nodiscard]] Status {
 public:
  // Status(): OK.
  Status() = default;
  // Status(code, message): an error (or OK when code is kOk; the message is dropped).
  Status(StatusCode code, std::string message)
      : code_(code), message_(code == StatusCode::kOk ? std::string() : std::move(message)) {}

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // ToString: "OK" or "<code name>: <message>".
  std::string ToString() const;

  // WithPrefix: the same code with "prefix: " put before the message (OK stays OK).
  Status WithPrefix(std::string_view prefix) const;

  // Relabeled: the same code, a message that starts with "<path>: " (as the format
  // readers word errors) starting with "<label>: " instead; any other message gets
  // "<label>: " put in front. OK stays OK. E.g. a shard's full path replaced by its
  // file name relative to the checkpoint folder.
  Status Relabeled(std::string_view path, std::string_view label) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// OkStatus: the OK value, for symmetry with the error constructors below.
inline Status OkStatus() { return Status(); }

// Error constructors, one per canonical code used in the project.
inline Status InvalidArgumentError(std::string m) { return Status(StatusCode::kInvalidArgument, std::move(m)); }
inline Status NotFoundError(std::string m) { return Status(StatusCode::kNotFound, std::move(m)); }
inline Status AlreadyExistsError(std::string m) { return Status(StatusCode::kAlreadyExists, std::move(m)); }
inline Status PermissionDeniedError(std::string m) { return Status(StatusCode::kPermissionDenied, std::move(m)); }
inline Status DataLossError(std::string m) { return Status(StatusCode::kDataLoss, std::move(m)); }
inline Status OutOfRangeError(std::string m) { return Status(StatusCode::kOutOfRange, std::move(m)); }
inline Status ResourceExhaustedError(std::string m) { return Status(StatusCode::kResourceExhausted, std::move(m)); }
inline Status FailedPreconditionError(std::string m) { return Status(StatusCode::kFailedPrecondition, std::move(m)); }
inline Status InternalError(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }
inline Status CancelledError(std::string m) { return Status(StatusCode::kCancelled, std::move(m)); }
inline Status UnimplementedError(std::string m) { return Status(StatusCode::kUnimplemented, std::move(m)); }
inline Status UnavailableError(std::string m) { return Status(StatusCode::kUnavailable, std::move(m)); }
inline Status AbortedError(std::string m) { return Status(StatusCode::kAborted, std::move(m)); }

// ErrnoToStatus: a Status for a failed system call: "<what>: <strerror(err)>", with a
// code chosen from errno (ENOENT → not_found, EACCES → permission_denied,
// ENOMEM → resource_exhausted, EIO → data_loss, others → internal/invalid_argument).
Status ErrnoToStatus(int err, std::string_view what);

// Result<T>: a T or a non-OK Status. Accessing the value of an error Result is a
// programming error (asserts in debug builds).
template <typename T>
class [[nodiscard]] Result {
 public:
  // Result(value): success.
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  // Result(status): failure; status must not be OK (an OK status becomes internal).
  Result(Status status)  // NOLINT: implicit by design
      : v_(status.ok() ? InternalError("Result constructed from OK status") : std::move(status)) {}

  bool ok() const { return std::holds_alternative<T>(v_); }
  // status: OK when a value is held, else the error.
  Status status() const { return ok() ? OkStatus() : std::get<Status>(v_); }

  T& value() & { assert(ok()); return std::get<T>(v_); }
  const T& value() const& { assert(ok()); return std::get<T>(v_); }
  T&& value() && { assert(ok()); return std::get<T>(std::move(v_)); }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace shardload

#define SL_STATUS_CONCAT_INNER_(a, b) a##b
#define SL_STATUS_CONCAT_(a, b) SL_STATUS_CONCAT_INNER_(a, b)

// SL_RETURN_IF_ERROR(expr): return the Status of expr from the enclosing function when
// it is not OK. expr may be a Status or a Result<T>.
#define SL_RETURN_IF_ERROR(expr)                                  \
  do {                                                            \
    ::shardload::Status sl_status_ = ::shardload::internal_status::AsStatus(expr); \
    if (!sl_status_.ok()) return sl_status_;                      \
  } while (0)

// SL_ASSIGN_OR_RETURN(decl, expr): evaluate the Result expr; on error return its Status,
// else move the value into decl (which may declare a variable: `Header h`).
#define SL_ASSIGN_OR_RETURN(decl, expr) \
  SL_ASSIGN_OR_RETURN_IMPL_(SL_STATUS_CONCAT_(sl_result_, __LINE__), decl, expr)
#define SL_ASSIGN_OR_RETURN_IMPL_(tmp, decl, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  decl = std::move(tmp).value()

namespace shardload::internal_status {
inline Status AsStatus(Status s) { return s; }
template <typename T>
Status AsStatus(const Result<T>& r) { return r.status(); }
}  // namespace shardload::internal_status

#endif  // SHARDLOAD_FORMAT_STATUS_H_
