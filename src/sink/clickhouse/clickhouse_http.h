// clickhouse_http.h - one ClickHouse server's HTTP interface on one libcurl
// easy handle (its connection kept alive between requests).
//
// query() sends a statement as the request body; insert() sends a prepared
// INSERT ... FORMAT RowBinary in the URL and the rows as the body. Both run
// in the URL's database as the URL's user (HTTP basic authentication).
// Errors come back as Status (clickhouse_error()): the message is one line,
// "clickhouse HOST:PORT: STEP: <server text> (code N)", never the password.
//
// Threading: not thread-safe; one caller at a time per ClickhouseHttp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "sink/clickhouse/clickhouse_url.h"

namespace kiroku {

// What a failed request says: the ClickHouse error code from the body
// ("Code: N, ..."), 0 when there is none (no answer, or a proxy's page).
struct ClickhouseFailure {
  int code = 0;
  std::string_view reason = "other";  // a kRejectionReasons entry, for invalid
};

// The Status for an answer that was not 200 (or a transport error when
// `http_status` is 0, `transport` naming it). transient: no answer, 5xx other
// than those below, too many parts/queries, timeouts, memory, and an unknown
// table (60: a server answers so while it starts or stops; open() creates the
// table); permanent: authentication (192-195, 516), unknown database (81) or
// column (16, 47), syntax (62), read-only (164), access (497), 4xx without a
// known code; invalid: a value the server could not take (6, 27, 33, 53, 69,
// 70, 72, 131...), its class in `failure.reason`.
Status clickhouse_error(std::string_view where, std::string_view step, long http_status, std::string_view body,
                        std::string_view transport, ClickhouseFailure& failure);

class ClickhouseHttp {
 public:
  ClickhouseHttp(const ClickhouseServer& server, const ClickhouseUrl& url, std::int64_t connect_timeout_ms,
                 std::int64_t timeout_ms);
  ~ClickhouseHttp();
  ClickhouseHttp(const ClickhouseHttp&) = delete;
  ClickhouseHttp& operator=(const ClickhouseHttp&) = delete;

  // Runs `sql`; the answer's body in `out` (replaced). `step` names it in errors.
  Status query(std::string_view sql, std::string& out, std::string_view step);

  // Runs `insert_sql` (an INSERT ... FORMAT RowBinary) with `rows` as its data.
  Status insert(std::string_view insert_sql, std::string_view rows, std::string_view step);

  // GET /ping within `timeout_ms`.
  Status ping(std::int64_t timeout_ms);

  // query() and insert() in two halves, for ClickhouseParallel: the request
  // is set up here and performed by ClickhouseParallel::run(). `sql`, `rows`
  // and `out` must stay valid until then.
  void prepare_query(std::string_view sql, std::string& out, std::string_view step);
  void prepare_insert(std::string_view insert_sql, std::string_view rows, std::string_view step);

  // The failure of the last call that failed.
  const ClickhouseFailure& last_failure() const { return failure_; }
  const std::string& name() const { return name_; }

 private:
  friend class ClickhouseParallel;
  void prepare(std::string_view body, bool post, std::int64_t timeout_ms, std::string_view step);
  Status perform();         // the prepared request, on this thread
  Status finish(int code);  // the outcome of the prepared request, given curl's result code

  void* curl_;     // CURL*
  void* headers_;  // curl_slist*
  const std::string name_;
  const std::string base_;  // http://host:port/?database=DB
  std::string url_;         // the request URL, rebuilt per call (capacity reused)
  std::string response_;    // the body of the last answer
  std::string insert_sql_;  // the last INSERT statement and its percent-encoded form
  std::string insert_escaped_;
  std::string* sink_ = nullptr;  // where the body goes during perform()
  std::string_view step_;        // what the prepared request is, for messages
  const std::int64_t timeout_ms_;
  ClickhouseFailure failure_;
};

// Performs prepared requests of several servers at once, on one curl multi
// handle (kept between calls): a batch's shards are written in parallel, so
// its time is that of the slowest shard, not the sum. Not thread-safe.
class ClickhouseParallel {
 public:
  ClickhouseParallel();
  ~ClickhouseParallel();
  ClickhouseParallel(const ClickhouseParallel&) = delete;
  ClickhouseParallel& operator=(const ClickhouseParallel&) = delete;

  // Runs every request prepared on `requests` (one each, distinct handles);
  // results[i] is requests[i]'s outcome.
  void run(const std::vector<ClickhouseHttp*>& requests, std::vector<Status>& results);

 private:
  void* multi_;             // CURLM*
  std::vector<int> codes_;  // each request's CURLcode, reused
};

}  // namespace kiroku
