#include "format/status.h"

#include <cerrno>
#include <cstring>

namespace shardload {

std::string_view StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kCancelled: return "cancelled";
    case StatusCode::kUnknown: return "unknown";
    case StatusCode::kInvalidArgument: return "invalid_argument";
    case StatusCode::kNotFound: return "not_found";
    case StatusCode::kAlreadyExists: return "already_exists";
    case StatusCode::kPermissionDenied: return "permission_denied";
    case StatusCode::kResourceExhausted: return "resource_exhausted";
    case StatusCode::kFailedPrecondition: return "failed_precondition";
    case StatusCode::kAborted: return "aborted";
    case StatusCode::kOutOfRange: return "out_of_range";
    case StatusCode::kUnimplemented: return "unimplemented";
    case StatusCode::kInternal: return "internal";
    case StatusCode::kUnavailable: return "unavailable";
    case StatusCode::kDataLoss: return "data_loss";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(StatusCodeName(code_));
  s += ": ";
  s += message_;
  return s;
}

Status Status::WithPrefix(std::string_view prefix) const {
  if (ok()) return *this;
  std::string m(prefix);
  m += ": ";
  m += message_;
  return Status(code_, std::move(m));
}

Status Status::Relabeled(std::string_view path, std::string_view label) const {
  if (ok()) return *this;
  std::string_view msg = message_;
  if (msg.size() > path.size() && msg.substr(0, path.size()) == path &&
      msg.substr(path.size(), 2) == ": ") {
    return Status(code_, std::string(label) + std::string(msg.substr(path.size())));
  }
  return WithPrefix(label);
}

Status ErrnoToStatus(int err, std::string_view what) {
  std::string m(what);
  m += ": ";
  m += std::strerror(err);
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return NotFoundError(std::move(m));
    case EACCES:
    case EPERM:
      return PermissionDeniedError(std::move(m));
    case ENOMEM:
    case ENOSPC:
    case EMFILE:
    case ENFILE:
      return ResourceExhaustedError(std::move(m));
    case EIO:
      return DataLossError(std::move(m));
    case EINVAL:
    case EISDIR:
    case ENAMETOOLONG:
      return InvalidArgumentError(std::move(m));
    default:
      return InternalError(std::move(m));
  }
}

}  // namespace shardload
