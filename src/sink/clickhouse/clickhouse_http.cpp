// clickhouse_http.cpp - see clickhouse_http.h.
#include "sink/clickhouse/clickhouse_http.h"

#include <curl/curl.h>

#include <charconv>
#include <mutex>

namespace kiroku {
namespace {

// The class of a refused value, for the error codes that mean one (nullptr: not a value error).
const char* rejection_of(int code) {
  switch (code) {
    case 131: return "data_too_long";    // TOO_LARGE_STRING_SIZE
    case 69:                             // ARGUMENT_OUT_OF_BOUND
    case 321: return "out_of_range";     // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    case 6:                              // CANNOT_PARSE_TEXT
    case 26:                             // CANNOT_PARSE_QUOTED_STRING
    case 27:                             // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    case 33:                             // CANNOT_READ_ALL_DATA
    case 38:                             // CANNOT_PARSE_DATE
    case 41:                             // CANNOT_PARSE_DATETIME
    case 53:                             // TYPE_MISMATCH
    case 70:                             // CANNOT_CONVERT_TYPE
    case 72:                             // CANNOT_PARSE_NUMBER
    case 117: return "incorrect_value";  // INCORRECT_DATA
    case 349: return "null";             // CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    default: return nullptr;
  }
}

bool permanent_code(int code) {
  switch (code) {
    case 16:   // NO_SUCH_COLUMN_IN_TABLE
    case 47:   // UNKNOWN_IDENTIFIER
    case 48:   // NOT_IMPLEMENTED
    case 62:   // SYNTAX_ERROR
    case 81:   // UNKNOWN_DATABASE
    case 115:  // UNKNOWN_SETTING
    case 164:  // READONLY
    case 168:  // TOO_BIG_AST
    case 192:  // UNKNOWN_USER
    case 193:  // WRONG_PASSWORD
    case 194:  // REQUIRED_PASSWORD
    case 195:  // IP_ADDRESS_NOT_ALLOWED
    case 291:  // DATABASE_ACCESS_DENIED
    case 497:  // ACCESS_DENIED
    case 516:  // AUTHENTICATION_FAILED
      return true;
    default: return false;
  }
}

// The server's text without the noise around it: "Code: N, e.displayText() =
// DB::Exception: TEXT, e.what() = DB::Exception" -> "TEXT"; one line, bounded.
std::string server_text(std::string_view body) {
  constexpr std::string_view kException = "DB::Exception: ";
  if (const std::size_t at = body.find(kException); at != std::string_view::npos)
    body.remove_prefix(at + kException.size());
  if (const std::size_t tail = body.find(", e.what() = "); tail != std::string_view::npos) body = body.substr(0, tail);
  while (!body.empty() && (body.back() == '\n' || body.back() == '\r' || body.back() == ' ')) body.remove_suffix(1);
  if (body.size() > 400) body = body.substr(0, 400);
  std::string out;
  for (const char c : body) out += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  return out;
}

std::size_t write_body(char* data, std::size_t size, std::size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

Status clickhouse_error(std::string_view where, std::string_view step, long http_status, std::string_view body,
                        std::string_view transport, ClickhouseFailure& failure) {
  failure = {};
  std::string m = "clickhouse " + std::string(where) + ": " + std::string(step) + ": ";
  if (http_status == 0) return Status::transient(m + std::string(transport));
  constexpr std::string_view kCode = "Code: ";
  if (const std::size_t at = body.find(kCode); at != std::string_view::npos) {
    const char* p = body.data() + at + kCode.size();
    std::from_chars(p, body.data() + body.size(), failure.code);
  }
  m += server_text(body);
  if (failure.code != 0) {
    m += " (code " + std::to_string(failure.code) + ")";
  } else {
    m += " (HTTP " + std::to_string(http_status) + ")";
  }
  if (const char* r = rejection_of(failure.code); r != nullptr) {
    failure.reason = r;
    return Status::invalid(std::move(m));
  }
  if (permanent_code(failure.code)) return Status::permanent(std::move(m));
  if (failure.code == 0 && http_status >= 400 && http_status < 500) return Status::permanent(std::move(m));
  return Status::transient(std::move(m));
}

ClickhouseHttp::ClickhouseHttp(const ClickhouseServer& server, const ClickhouseUrl& url,
                               std::int64_t connect_timeout_ms, std::int64_t timeout_ms)
    : name_(server.name()), base_(server.base_url() + "?database=" + url.database), timeout_ms_(timeout_ms) {
  init_curl_once();
  CURL* c = curl_easy_init();
  curl_ = c;
  // curl would send "Expect: 100-continue" before a large body and wait for the answer.
  headers_ = curl_slist_append(nullptr, "Expect:");
  if (c == nullptr) return;
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(connect_timeout_ms));
  curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
  curl_easy_setopt(c, CURLOPT_USERNAME, url.user.c_str());
  curl_easy_setopt(c, CURLOPT_PASSWORD, url.password.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, static_cast<curl_slist*>(headers_));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
}

ClickhouseHttp::~ClickhouseHttp() {
  if (curl_ != nullptr) curl_easy_cleanup(static_cast<CURL*>(curl_));
  curl_slist_free_all(static_cast<curl_slist*>(headers_));
}

void ClickhouseHttp::prepare(std::string_view body, bool post, std::int64_t timeout_ms, std::string_view step) {
  step_ = step;
  CURL* c = static_cast<CURL*>(curl_);
  if (c == nullptr) return;
  sink_->clear();
  curl_easy_setopt(c, CURLOPT_URL, url_.c_str());
  curl_easy_setopt(c, CURLOPT_WRITEDATA, sink_);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout_ms));
  if (post) {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  } else {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  }
}

Status ClickhouseHttp::finish(int code) {
  CURL* c = static_cast<CURL*>(curl_);
  if (c == nullptr) return Status::transient("clickhouse " + name_ + ": curl_easy_init failed");
  const auto rc = static_cast<CURLcode>(code);
  long status = 0;
  if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (rc == CURLE_OK && status == 200) {
    failure_ = {};
    return {};
  }
  return clickhouse_error(name_, step_, rc == CURLE_OK ? status : 0, *sink_, curl_easy_strerror(rc), failure_);
}

Status ClickhouseHttp::perform() {
  if (curl_ == nullptr) return finish(CURLE_FAILED_INIT);
  return finish(curl_easy_perform(static_cast<CURL*>(curl_)));
}

void ClickhouseHttp::prepare_query(std::string_view sql, std::string& out, std::string_view step) {
  // The answer is buffered by the server until the query ends, so that an
  // error is an error status rather than text after a 200; statements may be
  // long (IN lists of a batch's ids: 50,000 elements is the server's default
  // limit, below what --batch-max allows).
  url_.assign(base_).append(
      "&wait_end_of_query=1&max_query_size=268435456&max_ast_elements=10000000&max_expanded_ast_elements=10000000");
  sink_ = &out;
  prepare(sql, true, timeout_ms_, step);
}

void ClickhouseHttp::prepare_insert(std::string_view insert_sql, std::string_view rows, std::string_view step) {
  CURL* c = static_cast<CURL*>(curl_);
  if (c != nullptr && insert_sql != insert_sql_) {  // escaped once per statement, not per batch
    insert_sql_.assign(insert_sql);
    insert_escaped_.clear();
    if (char* escaped = curl_easy_escape(c, insert_sql.data(), static_cast<int>(insert_sql.size()))) {
      insert_escaped_ = escaped;
      curl_free(escaped);
    }
  }
  url_.assign(base_).append("&query=").append(insert_escaped_);
  sink_ = &response_;
  prepare(rows, true, timeout_ms_, step);
}

Status ClickhouseHttp::query(std::string_view sql, std::string& out, std::string_view step) {
  prepare_query(sql, out, step);
  return perform();
}

Status ClickhouseHttp::insert(std::string_view insert_sql, std::string_view rows, std::string_view step) {
  prepare_insert(insert_sql, rows, step);
  return perform();
}

ClickhouseParallel::ClickhouseParallel() : multi_(curl_multi_init()) {}

ClickhouseParallel::~ClickhouseParallel() {
  if (multi_ != nullptr) curl_multi_cleanup(static_cast<CURLM*>(multi_));
}

void ClickhouseParallel::run(const std::vector<ClickhouseHttp*>& requests, std::vector<Status>& results) {
  results.resize(requests.size());
  CURLM* m = static_cast<CURLM*>(multi_);
  // One request goes through the multi handle too: its connections are kept
  // in the multi handle's cache, and the next batch reuses them.
  if (m == nullptr) {
    for (std::size_t i = 0; i < requests.size(); ++i) results[i] = requests[i]->perform();
    return;
  }
  for (ClickhouseHttp* r : requests)
    if (r->curl_ != nullptr) curl_multi_add_handle(m, static_cast<CURL*>(r->curl_));
  codes_.assign(requests.size(), CURLE_FAILED_INIT);
  for (int running = 1; running > 0;) {
    if (curl_multi_perform(m, &running) != CURLM_OK) break;
    for (int left = 0; CURLMsg* msg = curl_multi_info_read(m, &left);) {
      if (msg->msg != CURLMSG_DONE) continue;
      for (std::size_t i = 0; i < requests.size(); ++i)
        if (requests[i]->curl_ == msg->easy_handle) codes_[i] = msg->data.result;
    }
    if (running > 0 && curl_multi_poll(m, nullptr, 0, 1000, nullptr) != CURLM_OK) break;
  }
  for (ClickhouseHttp* r : requests)
    if (r->curl_ != nullptr) curl_multi_remove_handle(m, static_cast<CURL*>(r->curl_));
  for (std::size_t i = 0; i < requests.size(); ++i) results[i] = requests[i]->finish(codes_[i]);
}

Status ClickhouseHttp::ping(std::int64_t timeout_ms) {
  url_.assign(base_.substr(0, base_.find('?'))).append("ping");
  sink_ = &response_;
  prepare({}, false, timeout_ms, "ping");
  return perform();
}

}  // namespace kiroku
