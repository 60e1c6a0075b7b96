// request_id.h - the id of the request a thread is handling, for the log
// lines written meanwhile.
//
// The HTTP engine opens a RequestIdScope around each call into a handler;
// every log line written in it carries the id (the log formats read
// current_request_id()). Work that outlives the call (a held answer, a file
// transfer on the store's threads) is not covered. Thread-local; the id must
// outlive the scope.
#pragma once

#include <string_view>

namespace kiroku {

// The id of the request being handled on this thread, or empty.
std::string_view current_request_id();

class RequestIdScope {
 public:
  explicit RequestIdScope(std::string_view id);
  ~RequestIdScope();
  RequestIdScope(const RequestIdScope&) = delete;
  RequestIdScope& operator=(const RequestIdScope&) = delete;

 private:
  std::string_view previous_;
};

// Whether a client's X-Request-Id can be used as given: 1-128 visible ASCII
// characters other than '"' and '\' (so it needs no escaping anywhere).
bool usable_request_id(std::string_view id);

}  // namespace kiroku
