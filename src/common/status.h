// status.h - the one error type of the data path.
//
// Functions on the data path do not throw: they return a Status (or a
// Result<T>). A Status is cheap when ok (no allocation); an error carries a
// kind, which tells the caller what to do about it, and a message for logs
// and for the client.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace kiroku {

enum class ErrorKind {
  ok = 0,
  invalid,    // the input is wrong: answer 4xx, never retry
  transient,  // may succeed later (connection lost, timeout, 5xx): retry with backoff
  permanent,  // will not succeed without an operator (bad credentials, no such database)
  not_found,  // the thing asked for does not exist
  full,       // a bounded resource is full (spool, queue): answer 503 + Retry-After
  denied,     // a server refused our credentials (wrong key or secret, expired token): as permanent
};

class Status {
 public:
  Status() = default;
  Status(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) {}

  static Status invalid(std::string m) { return {ErrorKind::invalid, std::move(m)}; }
  static Status transient(std::string m) { return {ErrorKind::transient, std::move(m)}; }
  static Status permanent(std::string m) { return {ErrorKind::permanent, std::move(m)}; }
  static Status not_found(std::string m) { return {ErrorKind::not_found, std::move(m)}; }
  static Status full(std::string m) { return {ErrorKind::full, std::move(m)}; }
  static Status denied(std::string m) { return {ErrorKind::denied, std::move(m)}; }

  bool ok() const { return kind_ == ErrorKind::ok; }
  explicit operator bool() const { return ok(); }
  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }

 private:
  ErrorKind kind_ = ErrorKind::ok;
  std::string message_;
};

// A value or the Status that explains why there is none.
template <typename T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Status error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Status& status() const {
    static const Status ok_status;
    return ok() ? ok_status : std::get<1>(v_);
  }

 private:
  std::variant<T, Status> v_;
};

}  // namespace kiroku
