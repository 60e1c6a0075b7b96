// file_api.h - the file API of PRODUCT.md: uploads and downloads streamed
// between HTTP connections and an ObjectStore, through the store's pool of
// part buffers (memory does not grow with the object size).
//
//   PUT /files/{key}         raw body (Content-Length or chunked) -> 201 JSON
//   POST /files              multipart/form-data: optional `key` field, then a `file` part -> 201
//   GET /files/{key}         the object streamed; one `Range:` -> 206, unsatisfiable -> 416
//   HEAD /files/{key}        the head of the GET
//   DELETE /files/{key}      204 (also when there was no such object)
//   GET /files?prefix=&limit=&after=   200 {"objects":[...],"next":...}
//
// Access control is the router's (Router::authorized); this class sees only
// requests allowed in. Everything runs on the connection's shard thread:
// store callbacks are posted back to it, so a transfer never touches its
// connection from another thread. Errors answer a JSON {"error"} with
// 400 (bad key, bad form, size mismatch), 404, 503 + Retry-After (the store
// is unreachable now), 502 (the store refused), 507 (the store is full).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "http/server.h"
#include "runtime/runtime.h"
#include "store/object_store.h"

namespace kiroku {

class Registry;
class Counter;
class Histogram;

// The store operations measured by kiroku_object_* metrics.
enum class FileOp : std::uint8_t { put, get, head, remove, list, count_ };

class FileApi {
 public:
  // `store` and `runtime` must outlive every request; `registry` may be null.
  FileApi(ObjectStore& store, Runtime& runtime, Registry* registry);

  // PUT /files/{key} and POST /files: a reader for the body, or nullptr after
  // answering at once (bad key, bad Content-Type).
  std::shared_ptr<http::BodyReader> upload(const http::Request& req, http::Reply& reply);
  // GET, HEAD and DELETE of /files/{key}, and GET /files (a listing).
  void handle(const http::Request& req, http::Reply& reply);

  // After HttpServer::stop(): cancels the downloads still running and waits
  // (until `deadline`) for every store operation to call back and for the
  // store's background work (ObjectStore::settle), so that the store may be
  // destroyed. Returns the operations and failed uploads still running.
  std::size_t shut_down(std::chrono::steady_clock::time_point deadline);

  // For the transfers (file_api.cpp): a finished store operation with the
  // bytes it moved, on the shard thread; the count of running operations.
  void record(unsigned shard, FileOp op, std::int64_t started_us, std::uint64_t bytes, bool ok);
  void operation_started();
  void operation_done();
  // Transfers in flight and the bytes they move as they move (the dashboard's
  // file panels), on the shard thread (`moved`) or any thread (the counts).
  void transfer_begins(bool upload) {
    (upload ? uploads_ : downloads_in_flight_).fetch_add(1, std::memory_order_relaxed);
  }
  void transfer_ends(bool upload) {
    (upload ? uploads_ : downloads_in_flight_).fetch_sub(1, std::memory_order_relaxed);
  }
  void moved(unsigned shard, bool upload, std::uint64_t bytes);
  void track(Download* d);
  void untrack(Download* d);
  ObjectStore& store() { return store_; }
  Runtime& runtime() { return runtime_; }

 private:
  void download(const http::Request& req, http::Reply& reply, std::string key);
  void head(const http::Request& req, http::Reply& reply, std::string key);
  void remove(const http::Request& req, http::Reply& reply, std::string key);
  void list(const http::Request& req, http::Reply& reply);

  ObjectStore& store_;
  Runtime& runtime_;
  struct OpMetrics {
    Counter* ok = nullptr;
    Counter* errors = nullptr;
    Counter* bytes = nullptr;
    Histogram* seconds = nullptr;
  };
  OpMetrics metrics_[static_cast<int>(FileOp::count_)];
  Counter* flow_up_ = nullptr;
  Counter* flow_down_ = nullptr;
  std::atomic<std::int64_t> uploads_{0};
  std::atomic<std::int64_t> downloads_in_flight_{0};
  std::mutex mutex_;
  std::condition_variable idle_;
  std::size_t running_ = 0;        // store operations not yet called back
  std::set<Download*> downloads_;  // running downloads, for shut_down
};

// The user key of a /files/{key} path (percent-decoded), or an error naming
// the rule it breaks (validate_key). `path` is the request path as received.
Result<std::string> file_key_of(std::string_view path);

// Parses one `Range: bytes=...` value. nullopt: no usable single range (absent,
// another unit, several ranges or bad syntax), which RFC 9110 answers with
// the whole object.
std::optional<ByteRange> parse_range_header(std::string_view value);

}  // namespace kiroku
