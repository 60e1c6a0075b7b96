// file_api.cpp - the file API's transfers. Layout:
//   1. helpers: keys, ranges, dates, error answers;
//   2. uploads: UploadReader (PUT's raw body), FormReader (POST's form);
//   3. downloads: DownloadStream, HEAD, DELETE, the listing;
//   4. FileApi: dispatch, metrics, shut-down.
// Store callbacks run on store threads; each posts its work to the shard
// thread of the request, where the connection and the transfer live.
#include "app/file_api.h"

#include <fmt/format.h>
#include <cctype>
#include <charconv>
#include <ctime>
#include <deque>
#include <nlohmann/json.hpp>

#include "common/http_date.h"
#include "common/percent.h"
#include "common/text.h"
#include "http/multipart.h"
#include "ops/metrics.h"
#include "store/key_layout.h"

namespace kiroku {
namespace {

using http::Method;

constexpr std::string_view kFilesPrefix = "/files/";

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// JSON text; invalid UTF-8 (from a store's error text) is replaced, not thrown on.
std::string dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

// The answer for a failed store operation (see the top of file_api.h).
template <typename Answer>
void send_error(Answer& answer, const Status& st) {
  int status = 502;
  std::string_view extra;
  switch (st.kind()) {
    case ErrorKind::invalid: status = 400; break;
    case ErrorKind::not_found: status = 404; break;
    case ErrorKind::full: status = 507; break;
    case ErrorKind::denied: status = 500; break;  // kiroku's configuration, not the client's request
    case ErrorKind::transient:
      status = 503;
      extra = "Retry-After: 1\r\n";
      break;
    default: break;
  }
  const nlohmann::json j{{"error", st.message()}};
  answer.send(status, "application/json", dump(j), extra);
}

std::string rfc3339(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

// ETag, Last-Modified and Accept-Ranges of an object.
std::string object_headers(const ObjectMeta& m) {
  return fmt::format("ETag: \"{}\"\r\nLast-Modified: {}\r\nAccept-Ranges: bytes\r\n", m.etag,
                     format_http_date(m.modified));
}

// The Content-Type an object is served with.
std::string_view served_type(const ObjectMeta& m) {
  return m.content_type.empty() ? std::string_view("application/octet-stream") : m.content_type;
}

// A Content-Type to store with an upload: at most 256 bytes of printable
// ASCII (no control character can reach a header of S3 or of an answer).
Status check_content_type(std::string_view v) {
  if (v.size() > 256) return Status::invalid("Content-Type: longer than 256 bytes");
  for (char c : v)
    if (c < 0x20 || c > 0x7e) return Status::invalid("Content-Type: only printable ASCII is kept");
  return {};
}

// The validators of a conditional GET or HEAD (RFC 9110 section 13).
struct Conditions {
  std::string if_none_match, if_modified_since, if_range;

  explicit Conditions(const http::Request& req)
      : if_none_match(trim_ows(req.if_none_match)),
        if_modified_since(trim_ows(req.if_modified_since)),
        if_range(trim_ows(req.if_range)) {}

  // 304: If-None-Match names the object's ETag (weak comparison) or is "*";
  // without If-None-Match, If-Modified-Since is not before Last-Modified.
  bool not_modified(const ObjectMeta& m) const {
    if (!if_none_match.empty()) {
      std::string_view list = if_none_match;
      if (list == "*") return true;
      while (!list.empty()) {
        const std::size_t comma = list.find(',');
        std::string_view tag = trim_ows(list.substr(0, comma));
        list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
        if (tag.starts_with("W/")) tag.remove_prefix(2);
        if (tag.size() == m.etag.size() + 2 && tag.front() == '"' && tag.back() == '"' &&
            tag.substr(1, m.etag.size()) == m.etag)
          return true;
      }
      return false;
    }
    if (if_modified_since.empty()) return false;
    const auto since = parse_http_date(if_modified_since);
    return since && std::chrono::floor<std::chrono::seconds>(m.modified) <= *since;
  }

  // A Range applies unless If-Range names another version: a strong ETag
  // must equal the object's, a date must equal its Last-Modified.
  bool range_applies(const ObjectMeta& m) const {
    if (if_range.empty()) return true;
    if (if_range.front() == '"')
      return if_range.size() == m.etag.size() + 2 && if_range.back() == '"' &&
             std::string_view(if_range).substr(1, m.etag.size()) == m.etag;
    if (if_range.starts_with("W/")) return false;
    const auto date = parse_http_date(if_range);
    return date && std::chrono::floor<std::chrono::seconds>(m.modified) == *date;
  }
};

// ---------------------------------------------------------------------------
// Uploads

// Streams a request body into an ObjectStore upload. A PUT's raw body goes
// straight to the upload; FormReader below feeds it from a form part. When
// the store's buffers are full the connection pauses until when_writable.
class UploadReader : public http::BodyReader, public std::enable_shared_from_this<UploadReader> {
 public:
  UploadReader(FileApi& api, const http::Request& req)
      : api_(api), shard_(req.shard), runtime_(api.runtime()), started_us_(now_us()) {}

  ~UploadReader() override {
    if (counted_) {
      api_.transfer_ends(true);
      api_.operation_done();
    }
  }

  // Starts the store upload of key, stored with content_type (when not
  // empty); an error (a bad key or type) is answered by the caller.
  Status start(const std::string& key, std::optional<std::uint64_t> size, std::string_view content_type) {
    if (Status st = check_content_type(content_type); !st.ok()) return st;
    std::weak_ptr<UploadReader> weak = weak_from_this();
    Runtime& runtime = runtime_;
    const unsigned shard = shard_;
    auto up = api_.store().begin_put(
        key, size,
        [weak, &runtime, shard] {
          runtime.post(shard, [weak] {
            if (auto self = weak.lock(); self && !self->over_) self->writable();
          });
        },
        content_type);
    if (!up.ok()) return up.status();
    upload_ = std::move(*up);
    api_.operation_started();
    api_.transfer_begins(true);
    counted_ = true;
    return {};
  }
  void set_control(http::BodyControl c) { control_ = std::move(c); }

  std::size_t on_body(std::string_view data) override { return write(data); }

  void on_end(http::Reply& reply) override {
    if (!failed_.ok()) {
      over_ = true;
      api_.record(shard_, FileOp::put, started_us_, bytes_, false);
      send_error(reply, failed_);
      return;
    }
    finish(reply.defer());
  }

  void on_abort() override {
    over_ = true;
    if (upload_) upload_->abort();
    api_.record(shard_, FileOp::put, started_us_, bytes_, false);
  }

 protected:
  // Gives data to the upload; returns what it took (all of it once the upload
  // failed: the rest of the body is read and dropped, the answer is an error).
  std::size_t write(std::string_view data) {
    if (!failed_.ok() || !upload_) return data.size();
    auto r = upload_->write(std::as_bytes(std::span(data.data(), data.size())));
    if (!r.ok()) {
      fail(r.status());
      return data.size();
    }
    bytes_ += *r;
    api_.moved(shard_, true, *r);
    return *r;
  }

  void fail(Status st) {
    if (!failed_.ok()) return;
    failed_ = std::move(st);
    if (upload_) upload_->abort();
  }

  // The store can take more (or the upload failed).
  virtual void writable() { control_.resume(); }

  // Stores the object and answers 201 (or the store's error).
  void finish(http::Deferred later) {
    over_ = true;
    auto self = shared_from_this();
    auto answer = std::make_shared<http::Deferred>(std::move(later));
    upload_->finish([self, answer](Result<PutResult> r) {
      self->runtime_.post(self->shard_, [self, answer, r = std::move(r)] {
        self->api_.record(self->shard_, FileOp::put, self->started_us_, self->bytes_, r.ok());
        if (!r.ok()) {
          send_error(*answer, r.status());
          return;
        }
        const nlohmann::json j{{"key", r->key}, {"size", r->size}, {"etag", r->etag}, {"sha256", r->sha256_hex}};
        answer->send(201, "application/json", dump(j));
      });
    });
  }

  FileApi& api_;
  const unsigned shard_;
  Runtime& runtime_;
  const std::int64_t started_us_;
  std::unique_ptr<Upload> upload_;
  http::BodyControl control_;
  Status failed_;
  std::uint64_t bytes_ = 0;
  bool over_ = false;  // answered or aborted: when_writable has nothing to do
  bool counted_ = false;
};

// POST /files: a multipart/form-data body with an optional `key` field and a
// `file` part, parsed as it arrives. The key must come before the file (the
// upload starts at the file part's head); without one the file part's
// filename is the key. Other fields are ignored.
class FormReader final : public UploadReader, public MultipartHandler {
 public:
  FormReader(FileApi& api, const http::Request& req, std::string_view boundary)
      : UploadReader(api, req), parser_(boundary, *this) {}

  std::size_t on_body(std::string_view data) override {
    if (!failed_.ok()) return data.size();
    if (!pending_.empty() || parser_.paused()) return 0;
    auto r = parser_.feed(data);
    if (!r.ok()) {
      fail(r.status());
      return data.size();
    }
    return *r;
  }

  void on_end(http::Reply& reply) override {
    if (!pending_.empty()) {
      // The last bytes of the file still wait for a buffer: answer once they are in.
      later_ = reply.defer();
      end_waiting_ = true;
      return;
    }
    if (Status st = check(); !st.ok()) {
      refuse(st);
      send_error(reply, st);
      return;
    }
    finish(reply.defer());
  }

  Status on_part_begin(const PartHeaders& h) override {
    in_key_ = in_file_ = false;
    if (h.name == "key") {
      if (file_seen_) return Status::invalid("form: the key field must come before the file part");
      in_key_ = true;
      key_given_ = true;
      key_.clear();
      return {};
    }
    if (h.name != "file") return {};
    if (file_seen_) return Status::invalid("form: more than one file part");
    file_seen_ = true;
    std::string key = key_given_ ? key_ : std::string(h.filename);
    if (key.empty())
      return Status::invalid("form: no key: send a key field before the file part, or a file part with a filename");
    if (Status st = start(key, std::nullopt, h.content_type); !st.ok()) return st;
    in_file_ = true;
    return {};
  }

  PartFlow on_part_data(std::string_view data) override {
    if (in_key_) {
      // One byte past the limit is enough for validate_key to name the rule.
      const std::size_t room = kMaxKeySize + 1 - std::min(key_.size(), kMaxKeySize + 1);
      key_.append(data.substr(0, room));
      return PartFlow::proceed;
    }
    if (!in_file_) return PartFlow::proceed;
    const std::size_t n = write(data);
    if (n < data.size()) {
      // At most one read's worth (the engine reads 8 KiB at a time).
      pending_.assign(data.substr(n));
      return PartFlow::pause;
    }
    return PartFlow::proceed;
  }

  void on_part_end() override { in_key_ = in_file_ = false; }
  void on_body_end() override {}

 private:
  void writable() override {
    if (!pending_.empty()) {
      const std::size_t n = write(pending_);
      pending_.erase(0, n);
      if (!pending_.empty()) return;  // when_writable comes again
    }
    parser_.resume();
    if (end_waiting_) {
      end_waiting_ = false;
      complete(std::move(later_));
      return;
    }
    control_.resume();
  }

  // Whether the whole form was read and had a file part.
  Status check() {
    Status st = failed_;
    if (st.ok()) st = parser_.finish();
    if (st.ok() && !upload_) st = Status::invalid("form: no file part");
    return st;
  }

  void refuse(const Status& st) {
    fail(st);
    over_ = true;
    api_.record(shard_, FileOp::put, started_us_, bytes_, false);
  }

  void complete(http::Deferred later) {
    if (Status st = check(); !st.ok()) {
      refuse(st);
      send_error(later, st);
      return;
    }
    finish(std::move(later));
  }

  MultipartParser parser_;
  std::string key_;
  std::string pending_;  // file bytes of the current slice the upload did not take yet
  http::Deferred later_;
  bool in_key_ = false, in_file_ = false, key_given_ = false, file_seen_ = false;
  bool end_waiting_ = false;
};

// ---------------------------------------------------------------------------
// Downloads

// GET /files/{key}: the store's chunks, in order, into the connection; a
// chunk goes back to the pool once written, so a slow client holds at most
// the transfer's share of buffers and the fetch waits for it. The
// conditions are checked against the object the store is about to deliver:
// 304 drops the fetch; an If-Range that names another version starts it
// again without the range.
class DownloadStream : public std::enable_shared_from_this<DownloadStream> {
 public:
  DownloadStream(FileApi& api, const http::Request& req, bool ranged, http::Deferred later)
      : api_(api),
        shard_(req.shard),
        runtime_(api.runtime()),
        ranged_(ranged),
        later_(std::move(later)),
        started_us_(now_us()),
        conditions_(req) {}

  void start(const std::string& key, std::optional<ByteRange> range) {
    key_ = key;
    auto self = shared_from_this();
    GetSink sink;
    sink.on_start = [self](const GetStart& s) { self->runtime_.post(self->shard_, [self, s] { self->on_start(s); }); };
    sink.on_chunk = [self](Chunk c) {
      self->runtime_.post(self->shard_, [self, c = std::move(c)]() mutable { self->on_chunk(std::move(c)); });
    };
    sink.on_done = [self](Status st) {
      FileApi& api = self->api_;
      self->runtime_.post(self->shard_, [self, st = std::move(st)]() mutable { self->on_done(std::move(st)); });
      api.transfer_ends(false);
      api.operation_done();
    };
    api_.operation_started();
    api_.transfer_begins(false);
    auto dl = api_.store().get(key, range, std::move(sink));
    if (!dl.ok()) {
      // The sink was dropped unused: nothing will call back. A Deferred is
      // not answered inside the handler's call, hence the post.
      api_.transfer_ends(false);
      api_.operation_done();
      runtime_.post(shard_, [self, st = dl.status()] {
        self->over_ = true;
        self->api_.record(self->shard_, FileOp::get, self->started_us_, 0, false);
        send_error(self->later_, st);
      });
      return;
    }
    download_ = std::move(*dl);
    api_.track(download_.get());
  }

 private:
  void on_start(const GetStart& s) {
    if (over_ || restart_) return;
    if (conditions_.not_modified(s.object)) {
      over_ = true;
      not_modified_ = true;
      later_.send(304, {}, {}, object_headers(s.object));
      if (download_) download_->cancel();
      return;
    }
    if (ranged_ && !conditions_.range_applies(s.object)) {
      // If-Range names another version: the whole object instead (on_done restarts).
      ranged_ = false;
      restart_ = true;
      if (download_) download_->cancel();
      return;
    }
    if (s.range_unsatisfiable) {
      over_ = true;
      later_.send(416, "application/json", "{\"error\":\"Range: outside the object\"}\n",
                  fmt::format("Content-Range: bytes */{}\r\n", s.object.size));
      return;
    }
    head_ = object_headers(s.object);
    type_ = served_type(s.object);
    if (ranged_)
      head_ += fmt::format("Content-Range: bytes {}-{}/{}\r\n", s.offset, s.offset + s.length - 1, s.object.size);
    length_ = s.length;
    started_ = true;  // the head goes out with the first chunk (pump)
  }

  // Sends the head kept by on_start, once: only when there is a body to
  // follow, so that a fetch failing before its first chunk is a clean error.
  void begin() {
    if (begun_) return;
    begun_ = true;
    later_.begin(ranged_ ? 206 : 200, type_, length_, head_);
    std::string().swap(head_);
  }

  void on_chunk(Chunk c) {
    if ((over_ || restart_) && !started_) return;  // dropped: the buffer goes back
    queue_.push_back(std::move(c));
    pump();
  }

  void on_done(Status st) {
    done_ = true;
    result_ = std::move(st);
    if (download_) {
      api_.untrack(download_.get());
      download_.reset();  // lets go of the sink, and so of this stream
    }
    if (restart_ && !over_) {
      restart_ = false;
      done_ = false;
      result_ = Status();
      start(key_, std::nullopt);
      return;
    }
    if (!started_) {
      if (!over_) {
        over_ = true;
        send_error(later_, result_);
      }
      api_.record(shard_, FileOp::get, started_us_, 0, result_.ok() || not_modified_);
      return;
    }
    pump();
  }

  void pump() {
    if (writing_ || broken_ || !started_) return;
    if (queue_.empty()) {
      if (!done_) return;
      started_ = false;
      over_ = true;
      api_.record(shard_, FileOp::get, started_us_, bytes_, result_.ok());
      if (!begun_ && !result_.ok()) {
        send_error(later_, result_);  // nothing was sent yet: a clean error
      } else if (result_.ok()) {
        begin();  // an empty body
        later_.end();
      } else {
        later_ = http::Deferred();  // a short body: the connection closes
      }
      return;
    }
    begin();
    writing_ = true;
    auto self = shared_from_this();
    later_.write(queue_.front().data(), [self](bool ok) {
      self->writing_ = false;
      self->bytes_ += self->queue_.front().data().size();
      self->api_.moved(self->shard_, false, self->queue_.front().data().size());
      self->queue_.pop_front();  // the buffer goes back to the pool
      if (!ok) {
        // The client is gone: stop fetching; on_done follows.
        self->broken_ = true;
        self->queue_.clear();
        if (self->download_) self->download_->cancel();
        return;
      }
      self->pump();
    });
  }

  FileApi& api_;
  const unsigned shard_;
  Runtime& runtime_;
  bool ranged_;
  http::Deferred later_;
  const std::int64_t started_us_;
  const Conditions conditions_;
  std::string key_;
  std::string type_;           // the answer's Content-Type
  bool restart_ = false;       // fetching again without the range (If-Range)
  bool not_modified_ = false;  // answered 304
  std::unique_ptr<Download> download_;
  std::deque<Chunk> queue_;
  Status result_;
  std::uint64_t bytes_ = 0;
  std::string head_;          // the answer's headers, kept until begin()
  std::uint64_t length_ = 0;  // its Content-Length
  bool started_ = false;      // the store started: the body follows
  bool begun_ = false;        // the head was given to the connection
  bool over_ = false;         // answered (or the answer was dropped)
  bool done_ = false;         // the store called on_done
  bool writing_ = false;
  bool broken_ = false;  // the connection failed
};

}  // namespace

// ---------------------------------------------------------------------------
// Helpers

Result<std::string> file_key_of(std::string_view path) {
  if (!path.starts_with(kFilesPrefix)) return Status::invalid("key: missing (use /files/{key})");
  auto key = percent_decode(path.substr(kFilesPrefix.size()));
  if (!key) return Status::invalid("key: bad percent-encoding");
  if (Status st = validate_key(*key); !st.ok()) return st;
  return std::move(*key);
}

std::optional<ByteRange> parse_range_header(std::string_view v) {
  constexpr std::string_view unit = "bytes=";
  if (!v.starts_with(unit)) return std::nullopt;
  v.remove_prefix(unit.size());
  if (v.find(',') != std::string_view::npos) return std::nullopt;
  const auto dash = v.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  auto number = [](std::string_view s) -> std::optional<std::uint64_t> {
    if (s.empty() || s.size() > 19) return std::nullopt;
    std::uint64_t n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return n;
  };
  ByteRange r;
  const std::string_view a = v.substr(0, dash), b = v.substr(dash + 1);
  if (a.empty()) {
    const auto n = number(b);
    if (!n || *n == 0) return std::nullopt;
    r.suffix = *n;
    return r;
  }
  const auto first = number(a);
  if (!first) return std::nullopt;
  r.first = *first;
  if (!b.empty()) {
    const auto last = number(b);
    if (!last || *last < *first) return std::nullopt;
    r.last = *last;
  }
  return r;
}

// ---------------------------------------------------------------------------
// FileApi

FileApi::FileApi(ObjectStore& store, Runtime& runtime, Registry* registry) : store_(store), runtime_(runtime) {
  if (!registry) return;
  auto& ops =
      registry->counter("kiroku_object_operations_total", "object store operations by result", {"op", "result"});
  auto& bytes = registry->counter("kiroku_object_bytes_total", "bytes uploaded (put) and downloaded (get)", {"op"});
  auto& seconds =
      registry->histogram("kiroku_object_operation_seconds", "object store operation time, first byte to answer",
                          {"op"}, exponential_buckets(1e-3, 2, 18));  // 1 ms .. 131 s
  static constexpr const char* names[] = {"put", "get", "head", "delete", "list"};
  for (int i = 0; i < static_cast<int>(FileOp::count_); ++i) {
    metrics_[i].ok = ops.with({names[i], "ok"});
    metrics_[i].errors = ops.with({names[i], "error"});
    metrics_[i].bytes = bytes.with({names[i]});
    metrics_[i].seconds = seconds.with({names[i]});
  }
  const PartPool& pool = store_.pool();
  registry->callback_gauge("kiroku_object_buffers_in_use", "pooled part buffers in use",
                           [&pool] { return static_cast<double>(pool.in_use()); });
  registry->callback_gauge("kiroku_object_buffers", "pooled part buffers",
                           [&pool] { return static_cast<double>(pool.part_count()); });
  registry->callback_gauge("kiroku_object_buffer_waiters", "transfers waiting for a part buffer",
                           [&pool] { return static_cast<double>(pool.waiting()); });
  auto& flow = registry->counter("kiroku_object_transfer_bytes_total",
                                 "bytes of uploads (up) and downloads (down), counted as they move", {"direction"});
  flow_up_ = flow.with({"up"});
  flow_down_ = flow.with({"down"});
  registry->callback_gauge("kiroku_object_uploads_in_flight", "uploads being received",
                           [this] { return static_cast<double>(uploads_.load(std::memory_order_relaxed)); });
  registry->callback_gauge("kiroku_object_downloads_in_flight", "downloads being sent", [this] {
    return static_cast<double>(downloads_in_flight_.load(std::memory_order_relaxed));
  });
  registry->callback_counter("kiroku_object_store_retries_total",
                             "requests to the store's service sent again after a failure (S3)",
                             [this] { return static_cast<double>(store_.request_retries()); });
  registry->callback_gauge("kiroku_object_uploads_cleaning_up",
                           "failed or abandoned uploads whose parts are still being removed",
                           [this] { return static_cast<double>(store_.cleaning_up()); });
}

void FileApi::record(unsigned shard, FileOp op, std::int64_t started_us, std::uint64_t bytes, bool ok) {
  OpMetrics& m = metrics_[static_cast<int>(op)];
  if (!m.ok) return;
  (ok ? m.ok : m.errors)->inc(shard);
  if (bytes) m.bytes->add(shard, bytes);
  m.seconds->observe(shard, static_cast<std::uint64_t>(std::max<std::int64_t>(0, now_us() - started_us)));
}

void FileApi::moved(unsigned shard, bool upload, std::uint64_t bytes) {
  if (Counter* c = upload ? flow_up_ : flow_down_) c->add(shard, bytes);
}

void FileApi::operation_started() {
  std::lock_guard lock(mutex_);
  ++running_;
}

void FileApi::operation_done() {
  std::lock_guard lock(mutex_);
  if (running_ > 0) --running_;
  if (running_ == 0) idle_.notify_all();
}

void FileApi::track(Download* d) {
  std::lock_guard lock(mutex_);
  downloads_.insert(d);
}

void FileApi::untrack(Download* d) {
  std::lock_guard lock(mutex_);
  downloads_.erase(d);
}

std::size_t FileApi::shut_down(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  for (Download* d : downloads_) d->cancel();
  idle_.wait_until(lock, deadline, [this] { return running_ == 0; });
  const std::size_t running = running_;
  lock.unlock();
  return running + store_.settle(deadline);
}

std::shared_ptr<http::BodyReader> FileApi::upload(const http::Request& req, http::Reply& reply) {
  if (req.method == Method::put) {
    if (!req.path.starts_with(kFilesPrefix)) {
      reply.error(405, "use PUT /files/{key} or POST /files with multipart/form-data", "Allow: GET, POST\r\n");
      return nullptr;
    }
    auto key = file_key_of(req.path);
    if (!key.ok()) {
      reply.error(400, key.status().message());
      return nullptr;
    }
    auto reader = std::make_shared<UploadReader>(*this, req);
    if (Status st = reader->start(*key, req.content_length, trim_ows(req.content_type)); !st.ok()) {
      send_error(reply, st);
      return nullptr;
    }
    reader->set_control(reply.body_control());
    return reader;
  }
  // POST
  if (req.path != "/files") {
    reply.error(405, "use PUT /files/{key}, or POST /files with multipart/form-data",
                "Allow: GET, HEAD, PUT, DELETE\r\n");
    return nullptr;
  }
  if (!istarts_with(req.content_type, "multipart/form-data")) {
    reply.error(415, "Content-Type: POST /files takes multipart/form-data (or use PUT /files/{key})");
    return nullptr;
  }
  auto boundary = multipart_boundary(req.content_type);
  if (!boundary.ok()) {
    reply.error(400, "Content-Type: " + boundary.status().message());
    return nullptr;
  }
  auto reader = std::make_shared<FormReader>(*this, req, *boundary);
  reader->set_control(reply.body_control());
  return reader;
}

void FileApi::handle(const http::Request& req, http::Reply& reply) {
  if (req.path == "/files") {
    if (req.method == Method::get || req.method == Method::head) list(req, reply);
    else reply.error(405, "use GET /files to list, POST /files to upload a form", "Allow: GET, HEAD, POST\r\n");
    return;
  }
  auto key = file_key_of(req.path);
  if (!key.ok()) {
    reply.error(400, key.status().message());
    return;
  }
  switch (req.method) {
    case Method::get: download(req, reply, std::move(*key)); break;
    case Method::head: head(req, reply, std::move(*key)); break;
    case Method::delete_: remove(req, reply, std::move(*key)); break;
    default: reply.error(405, "use GET, HEAD, PUT or DELETE", "Allow: GET, HEAD, PUT, DELETE\r\n"); break;
  }
}

void FileApi::download(const http::Request& req, http::Reply& reply, std::string key) {
  const auto range = req.range.empty() ? std::nullopt : parse_range_header(req.range);
  auto stream = std::make_shared<DownloadStream>(*this, req, range.has_value(), reply.defer());
  stream->start(key, range);
}

void FileApi::head(const http::Request& req, http::Reply& reply, std::string key) {
  auto answer = std::make_shared<http::Deferred>(reply.defer());
  const unsigned shard = req.shard;
  const std::int64_t t0 = now_us();
  operation_started();
  store_.head(key, [this, answer, shard, t0, conditions = Conditions(req)](Result<ObjectMeta> r) {
    runtime_.post(shard, [this, answer, shard, t0, conditions, r = std::move(r)] {
      record(shard, FileOp::head, t0, 0, r.ok());
      if (!r.ok()) {
        send_error(*answer, r.status());
        return;
      }
      if (conditions.not_modified(*r)) {
        answer->send(304, {}, {}, object_headers(*r));
        return;
      }
      answer->begin(200, served_type(*r), r->size, object_headers(*r));
      answer->end();
    });
    operation_done();
  });
}

void FileApi::remove(const http::Request& req, http::Reply& reply, std::string key) {
  auto answer = std::make_shared<http::Deferred>(reply.defer());
  const unsigned shard = req.shard;
  const std::int64_t t0 = now_us();
  operation_started();
  store_.remove(key, [this, answer, shard, t0](Status st) {
    runtime_.post(shard, [this, answer, shard, t0, st = std::move(st)] {
      record(shard, FileOp::remove, t0, 0, st.ok());
      if (!st.ok()) send_error(*answer, st);
      else answer->send(204, {}, {});
    });
    operation_done();
  });
}

void FileApi::list(const http::Request& req, http::Reply& reply) {
  ListRequest lr;
  std::string_view q = req.query;
  for (QueryPair p; next_query_pair(q, p);) {
    const std::string_view name = p.name;
    if (name != "prefix" && name != "after" && name != "limit") continue;  // others are ignored
    auto value = percent_decode(p.value);
    if (!value) {
      reply.error(400, fmt::format("{}: bad percent-encoding", name));
      return;
    }
    if (name == "limit") {
      std::size_t n = 0;
      auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), n);
      if (ec != std::errc() || end != value->data() + value->size() || n < 1 || n > 1000) {
        reply.error(400, "limit: must be an integer from 1 to 1000");
        return;
      }
      lr.limit = n;
    } else {
      if (Status st = validate_key_prefix(*value, name); !st.ok()) {
        reply.error(400, st.message());
        return;
      }
      (name == "prefix" ? lr.prefix : lr.after) = std::move(*value);
    }
  }
  auto answer = std::make_shared<http::Deferred>(reply.defer());
  const unsigned shard = req.shard;
  const std::int64_t t0 = now_us();
  operation_started();
  store_.list(std::move(lr), [this, answer, shard, t0](Result<ListPage> r) {
    // The JSON is built here, on the store thread, not on the IO thread.
    std::string body;
    Status st;
    if (r.ok()) {
      nlohmann::json objects = nlohmann::json::array();
      for (const auto& o : r->objects)
        objects.push_back({{"key", o.key}, {"size", o.size}, {"etag", o.etag}, {"modified", rfc3339(o.modified)}});
      nlohmann::json j{{"objects", std::move(objects)}};
      j["next"] = r->next.empty() ? nlohmann::json(nullptr) : nlohmann::json(r->next);
      body = dump(j);
    } else {
      st = r.status();
    }
    runtime_.post(shard, [this, answer, shard, t0, st = std::move(st), body = std::move(body)] {
      record(shard, FileOp::list, t0, 0, st.ok());
      if (!st.ok()) send_error(*answer, st);
      else answer->send(200, "application/json", body);
    });
    operation_done();
  });
}

}  // namespace kiroku
