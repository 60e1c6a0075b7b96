// s3_loop.cpp - the S3 client's libcurl multi loop on its own thread:
// signing, sending, retries, streaming, pauses and cancels.
#include "store/s3/s3_client.h"
#include "store/s3/s3_transfer.h"

#include "common/redact.h"
#include "common/text.h"

#include <curl/curl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>

#include <spdlog/spdlog.h>

#include "common/http_date.h"

namespace kiroku::s3 {

namespace detail {

const char* method_name(Method m) {
  switch (m) {
    case Method::get: return "GET";
    case Method::head: return "HEAD";
    case Method::put: return "PUT";
    case Method::post: return "POST";
    case Method::del: return "DELETE";
  }
  return "GET";
}

}  // namespace detail

namespace {

using Clock = std::chrono::steady_clock;

// Largest XML answer (listing, error) kept in memory: a page of 1000 keys of
// 1024 bytes is about 1.5 MB.
constexpr std::size_t kMaxAnswerBody = 8 * 1024 * 1024;
// Longest sleep in curl_multi_poll; a wakeup or curl's own timers end it sooner.
constexpr int kPollCapMs = 1000;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
  if (s.empty()) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    std::uint64_t next = v * 10 + static_cast<std::uint64_t>(c - '0');
    if (next / 10 != v) return false;  // overflow
    v = next;
  }
  out = v;
  return true;
}

bool retryable_curl_code(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_AGAIN:
    case CURLE_UPLOAD_FAILED:
    case CURLE_WEIRD_SERVER_REPLY: return true;
    default: return false;
  }
}

// Where requests go: "https://bucket.s3.region.amazonaws.com" or an endpoint.
struct Endpoint {
  std::string base_url;     // scheme://authority, no trailing slash
  std::string host_header;  // the Host header, as signed
  std::string bucket_path;  // "/bucket" for path style, "" for virtual-hosted
};

Result<Endpoint> parse_endpoint(const S3Config& config) {
  Endpoint e;
  if (config.endpoint.empty()) {
    e.host_header = config.bucket + ".s3." + config.region + ".amazonaws.com";
    e.base_url = "https://" + e.host_header;
    return e;
  }
  std::string_view url = config.endpoint;
  std::string_view scheme;
  if (url.substr(0, 7) == "http://") {
    scheme = "http://";
  } else if (url.substr(0, 8) == "https://") {
    scheme = "https://";
  } else {
    return Status::invalid("S3 endpoint '" + redact_url(config.endpoint) + "' must start with http:// or https://");
  }
  std::string_view rest = url.substr(scheme.size());
  std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (authority.empty() || authority.find('@') != std::string_view::npos ||
      authority.find_first_of("?# ") != std::string_view::npos) {
    return Status::invalid("S3 endpoint '" + redact_url(config.endpoint) + "' has no valid host");
  }
  if (!path.empty() && path != "/") {
    return Status::invalid("S3 endpoint '" + redact_url(config.endpoint) + "' must not have a path");
  }
  if (config.path_style) {
    e.host_header = std::string(authority);
    e.bucket_path = "/" + config.bucket;
  } else {
    e.host_header = config.bucket + "." + std::string(authority);
  }
  e.base_url = std::string(scheme) + e.host_header;
  return e;
}

}  // namespace

// ---------------------------------------------------------------------------
// The loop: owns the multi handle and every transfer; runs on its thread.
// ---------------------------------------------------------------------------

struct S3Client::Loop {
  enum class Command { resume, cancel };

  Loop(S3Client& owner, Endpoint where)
      : client(owner),
        config(owner.config_),
        endpoint(std::move(where)),
        rng(std::random_device{}()),
        credentials(owner.config_.credentials_provider),
        signing(credentials->current()),
        signer(signing->credentials) {}

  ~Loop() {
    for (CURL* easy : idle) curl_easy_cleanup(easy);
    if (multi) curl_multi_cleanup(multi);
  }

  Status init() {
    multi = curl_multi_init();
    if (!multi) return Status::permanent("S3 client: curl_multi_init failed");
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, static_cast<long>(config.max_connections));
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, static_cast<long>(config.max_connections));
    return Status();
  }

  void start() {
    thread = std::thread([this] { run(); });
  }

  void stop() {
    stopping.store(true);
    curl_multi_wakeup(multi);
    if (thread.joinable()) thread.join();
  }

  void post(std::unique_ptr<Transfer> t) {
    {
      std::lock_guard lock(mu);
      incoming.push_back(std::move(t));
    }
    curl_multi_wakeup(multi);
  }

  void post(Command c, RequestId id) {
    {
      std::lock_guard lock(mu);
      commands.emplace_back(c, id);
    }
    curl_multi_wakeup(multi);
  }

  // A transfer for `key` (empty: the bucket itself) with path, method and
  // message prefix filled in; an empty key for an object operation is preset
  // to fail.
  std::unique_ptr<Transfer> make(Op op, Method method, std::string_view key) const {
    auto t = std::make_unique<Transfer>();
    t->client = &client;
    t->op = op;
    t->method = method;
    t->payload_hash = std::string(kEmptyPayloadHash);
    t->path = endpoint.bucket_path;
    if (op != Op::list) t->key = std::string(key);
    if (op != Op::list) {
      t->path.push_back('/');
      t->path.append(key);
    } else if (t->path.empty()) {
      t->path = "/";
    }
    t->what = std::string("S3 ") + method_name(method) + " " + config.bucket + "/" + std::string(key);
    if (key.empty() && op != Op::list) t->preset = Status::invalid(t->what + ": empty key");
    return t;
  }

  // --- the loop -----------------------------------------------------------

  void run() {
    while (!stopping.load()) {
      take_queued();
      start_ready();
      int running = 0;
      curl_multi_perform(multi, &running);
      read_done();
      if (!unpause.empty()) {
        unpause_now();
        continue;
      }
      curl_multi_poll(multi, nullptr, 0, poll_timeout_ms(), nullptr);
    }
    shut_down();
  }

  int poll_timeout_ms() const {
    if (!waiting.empty() && active < config.max_connections) return 0;
    int timeout = kPollCapMs;
    if (!retry.empty()) {
      auto wait = std::chrono::ceil<std::chrono::milliseconds>(retry.begin()->first - Clock::now());
      timeout = static_cast<int>(std::clamp<std::int64_t>(wait.count(), 0, kPollCapMs));
    }
    return timeout;
  }

  void take_queued() {
    std::vector<std::unique_ptr<Transfer>> fresh;
    std::vector<std::pair<Command, RequestId>> cmds;
    {
      std::lock_guard lock(mu);
      fresh.swap(incoming);
      cmds.swap(commands);
    }
    for (auto& t : fresh) {
      Transfer* raw = t.get();
      raw->loop = this;
      live.emplace(raw->id, std::move(t));
      if (!raw->preset.ok()) {
        complete(raw, raw->preset);
      } else {
        waiting.push_back(raw);
      }
    }
    for (auto [command, id] : cmds) {
      auto it = live.find(id);
      if (it == live.end()) continue;
      Transfer* t = it->second.get();
      if (command == Command::cancel) {
        cancel(t);
      } else if (t->paused && t->easy) {
        unpause.push_back(id);
      } else {
        t->resume_pending = true;
      }
    }
  }

  void start_ready() {
    auto now = Clock::now();
    while (!retry.empty() && retry.begin()->first <= now) {
      waiting.push_front(retry.begin()->second);
      retry.erase(retry.begin());
    }
    while (!waiting.empty() && active < config.max_connections) {
      Transfer* t = waiting.front();
      waiting.pop_front();
      start(t);
    }
  }

  void read_done() {
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi, &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      CURL* easy = m->easy_handle;
      CURLcode rc = m->data.result;
      Transfer* t = nullptr;
      curl_easy_getinfo(easy, CURLINFO_PRIVATE, &t);
      if (t) on_done(t, rc);
    }
  }

  void unpause_now() {
    std::vector<RequestId> ids;
    ids.swap(unpause);
    for (RequestId id : ids) {
      auto it = live.find(id);
      if (it == live.end()) continue;
      Transfer* t = it->second.get();
      if (!t->paused || !t->easy) continue;
      t->paused = false;
      // The write callback may run (and pause again) inside this call.
      curl_easy_pause(t->easy, CURLPAUSE_CONT);
    }
  }

  void shut_down() {
    // Completions may start requests; fail those too (a bounded number of rounds).
    for (int round = 0; round < 100; ++round) {
      take_queued();
      if (live.empty()) break;
      std::vector<Transfer*> all;
      all.reserve(live.size());
      for (auto& [id, t] : live) all.push_back(t.get());
      waiting.clear();
      retry.clear();
      for (Transfer* t : all) {
        if (t->easy) release(t);
        complete(t, Status::transient(t->what + ": S3 client stopped"));
      }
    }
  }

  // --- one attempt --------------------------------------------------------

  void start(Transfer* t) {
    t->attempts++;
    client.stats_.attempts.fetch_add(1, std::memory_order_relaxed);
    t->upload_pos = 0;
    t->http_status = 0;
    t->headers_done = false;
    t->info = ObjectInfo{};
    t->body.clear();
    t->abort_reason = Status();
    t->paused = false;
    t->error[0] = '\0';

    CURL* easy = nullptr;
    if (!idle.empty()) {
      easy = idle.back();
      idle.pop_back();
      curl_easy_reset(easy);
    } else {
      easy = curl_easy_init();
    }
    if (!easy) {
      complete(t, Status::transient(t->what + ": could not create a transfer handle"));
      return;
    }

    // Range of this attempt: the caller's, advanced past what was delivered.
    t->range_sent = false;
    if (t->op == Op::get_to_buffer || t->op == Op::get_to_stream) {
      std::uint64_t offset = t->range ? t->range->offset : 0;
      std::uint64_t length = t->range ? t->range->length : 0;
      if (t->range || t->delivered > 0) {
        t->range_sent = true;
        t->range_offset = offset + t->delivered;
        t->range_remaining = length == 0 ? 0 : length - std::min(length, t->delivered);
      }
    }

    // Headers to sign and send.
    std::string range_value;
    if (t->range_sent) {
      range_value = "bytes=" + std::to_string(t->range_offset) + "-";
      if (t->range_remaining > 0) {
        range_value += std::to_string(t->range_offset + t->range_remaining - 1);
      }
    }
    fields.clear();
    fields.push_back({"Host", endpoint.host_header});
    if (!range_value.empty()) fields.push_back({"Range", range_value});
    if (!t->pinned_etag.empty()) fields.push_back({"If-Match", t->pinned_etag});
    params_scratch.clear();
    for (const auto& [name, value] : t->query) params_scratch.push_back({name, value});

    SigningParams params;
    params.region = config.region;
    params.service = "s3";
    params.unix_time =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    params.path_mode = PathMode::s3;
    params.content_sha256_header = true;
    SigningRequest request{method_name(t->method), t->path, params_scratch, fields, t->payload_hash};
    // The provider's newest credentials, for this attempt (a refresh never
    // touches a request already signed).
    if (auto now_credentials = credentials->current(); now_credentials != signing) {
      signing = std::move(now_credentials);
      signer = Signer(signing->credentials);
    }
    if (signing->expired(std::chrono::system_clock::now())) {
      idle.push_back(easy);
      complete(t, Status::permanent(t->what + ": " + credentials->expired_message()));
      return;
    }
    if (Status s = signer.sign_headers(request, params, signed_headers); !s) {
      idle.push_back(easy);
      complete(t, Status::permanent(t->what + ": " + s.message()));
      return;
    }

    curl_slist* list = nullptr;
    auto add = [&list](std::string line) { list = curl_slist_append(list, line.c_str()); };
    add("Host: " + endpoint.host_header);
    add("x-amz-date: " + signed_headers.amz_date);
    add("x-amz-content-sha256: " + t->payload_hash);
    if (!signing->credentials.session_token.empty()) {
      add("x-amz-security-token: " + signing->credentials.session_token);
    }
    add("Authorization: " + signed_headers.authorization);
    if (!range_value.empty()) add("Range: " + range_value);
    if (!t->pinned_etag.empty()) add("If-Match: " + t->pinned_etag);
    if (!t->content_type.empty()) {
      add("Content-Type: " + t->content_type);
    } else if (t->method == Method::post) {
      add("Content-Type:");  // not curl's form type
    }
    add("Expect:");  // no 100-continue round trip before a body
    t->headers = list;

    // URL: the same encoding as the canonical request.
    url.clear();
    url.append(endpoint.base_url);
    uri_encode(t->path, /*keep_slash=*/true, url);
    for (std::size_t i = 0; i < t->query.size(); ++i) {
      url.push_back(i == 0 ? '?' : '&');
      uri_encode(t->query[i].first, false, url);
      if (!t->query[i].second.empty()) {
        url.push_back('=');
        uri_encode(t->query[i].second, false, url);
      }
    }

    t->easy = easy;
    curl_easy_setopt(easy, CURLOPT_PRIVATE, t);
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, t->headers);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
    curl_easy_setopt(easy, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config.connect_timeout.count()));
    long stall_s = static_cast<long>((config.stall_timeout.count() + 999) / 1000);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, std::max(1L, stall_s));
    if (config.request_timeout.count() > 0) {
      curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(config.request_timeout.count()));
    }
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, static_cast<long>(config.receive_buffer_size));
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, t->error);
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &Loop::on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, t);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Loop::on_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, t);
    switch (t->method) {
      case Method::get: curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L); break;
      case Method::head: curl_easy_setopt(easy, CURLOPT_NOBODY, 1L); break;
      case Method::put:
        curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE,
                         static_cast<curl_off_t>(t->source.read ? t->body_size : t->upload.size()));
        break;
      case Method::post:
        curl_easy_setopt(easy, CURLOPT_POST, 1L);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(t->upload.size()));
        break;
      case Method::del: curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "DELETE"); break;
    }
    if (t->method == Method::put || t->method == Method::post) {
      curl_easy_setopt(easy, CURLOPT_READFUNCTION, &Loop::on_read);
      curl_easy_setopt(easy, CURLOPT_READDATA, t);
      curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, &Loop::on_seek);
      curl_easy_setopt(easy, CURLOPT_SEEKDATA, t);
    }

    if (curl_multi_add_handle(multi, easy) != CURLM_OK) {
      curl_slist_free_all(t->headers);
      t->headers = nullptr;
      t->easy = nullptr;
      idle.push_back(easy);
      complete(t, Status::transient(t->what + ": could not start the transfer"));
      return;
    }
    active++;
  }

  // Takes the transfer's handle out of the multi and keeps it for reuse.
  void release(Transfer* t) {
    if (!t->easy) return;
    curl_multi_remove_handle(multi, t->easy);
    if (static_cast<int>(idle.size()) < config.max_connections) {
      idle.push_back(t->easy);
    } else {
      curl_easy_cleanup(t->easy);
    }
    t->easy = nullptr;
    curl_slist_free_all(t->headers);
    t->headers = nullptr;
    t->paused = false;
    active--;
  }

  void on_done(Transfer* t, CURLcode rc) {
    release(t);
    bool retry_it = false;
    Status s = outcome(t, rc, retry_it);
    // A download that lost its connection after the last byte is complete.
    bool is_get = t->op == Op::get_to_buffer || t->op == Op::get_to_stream;
    if (!s.ok() && retry_it && is_get && t->started && t->first_info.content_length > 0 &&
        t->delivered >= t->first_info.content_length) {
      s = Status();
    }
    if (s.ok()) {
      complete(t, Status());
      return;
    }
    if (retry_it && t->source_read > 0) {
      retry_it = false;  // the body's bytes are gone
      s = Status(s.kind(), s.message() + " (a streamed body is not sent twice)");
    }
    if (retry_it && t->attempts < config.max_attempts && !stopping.load()) {
      client.stats_.retries.fetch_add(1, std::memory_order_relaxed);
      t->last_error = std::move(s);
      // Full jitter: uniform in [0, min(max, base * 2^(attempt-1))].
      std::int64_t cap = config.retry_base_delay.count();
      for (int i = 1; i < t->attempts && cap < config.retry_max_delay.count(); ++i) cap *= 2;
      cap = std::min<std::int64_t>(cap, config.retry_max_delay.count());
      std::uniform_int_distribution<std::int64_t> pick(0, std::max<std::int64_t>(cap, 0));
      retry.emplace(Clock::now() + std::chrono::milliseconds(pick(rng)), t);
      return;
    }
    if (retry_it) {
      s = Status(s.kind(), s.message() + " (after " + std::to_string(t->attempts) + " attempts)");
    }
    complete(t, std::move(s));
  }

  // The Status of a finished attempt; retry_it tells whether to try again.
  Status outcome(Transfer* t, CURLcode rc, bool& retry_it) {
    retry_it = false;
    if (!t->abort_reason.ok()) return t->abort_reason;
    if (rc != CURLE_OK) {
      std::string m = t->what + ": " + curl_easy_strerror(rc);
      if (t->error[0] != '\0') m.append(" (").append(t->error).append(")");
      retry_it = retryable_curl_code(rc);
      return retry_it ? Status::transient(std::move(m)) : Status::permanent(std::move(m));
    }
    if (t->http_status >= 200 && t->http_status < 300) {
      if (t->op == Op::complete_upload) {
        // S3 may answer 200 and report the failure in the body.
        auto etag = parse_complete_multipart_upload(t->body);
        if (!etag.ok()) {
          retry_it = etag.status().kind() == ErrorKind::transient;
          return Status(etag.status().kind(), t->what + ": " + etag.status().message());
        }
      }
      return Status();
    }
    if (t->http_status == 412 && !t->pinned_etag.empty()) {
      return Status::permanent(t->what + ": the object changed during the download");
    }
    ErrorDocument doc;
    if (!t->body.empty()) {
      auto parsed = parse_error(t->body);
      if (parsed.ok()) {
        doc = std::move(*parsed);
      } else {
        doc.message = std::string(trim(std::string_view(t->body).substr(0, 200)));
      }
    }
    retry_it = is_retryable(t->http_status, doc.code);
    return error_status(t->http_status, doc, t->what);
  }

  void complete(Transfer* t, Status s) {
    auto it = live.find(t->id);
    if (it == live.end()) return;
    std::unique_ptr<Transfer> owned = std::move(it->second);
    live.erase(it);
    if (!s.ok()) client.stats_.failures.fetch_add(1, std::memory_order_relaxed);
    if (s.kind() == ErrorKind::denied && Clock::now() - last_denied_log > std::chrono::seconds(10)) {
      last_denied_log = Clock::now();  // at most one line per 10 s
      spdlog::error("{} (access key id '{}'): S3 requests fail until the credentials are fixed", s.message(),
                    signing->credentials.access_key_id);
    }
    if (owned->finish) owned->finish(*owned, std::move(s));
  }

  void cancel(Transfer* t) {
    if (t->easy) {
      release(t);
    } else {
      auto w = std::find(waiting.begin(), waiting.end(), t);
      if (w != waiting.end()) waiting.erase(w);
      for (auto r = retry.begin(); r != retry.end(); ++r) {
        if (r->second == t) {
          retry.erase(r);
          break;
        }
      }
    }
    complete(t, Status::invalid(t->what + ": cancelled"));
  }

  // --- libcurl callbacks (on the loop thread, inside curl calls) ----------

  // A callback pauses the transfer; a resume() that came before is applied
  // right after.
  static void pause(Transfer* t) {
    t->paused = true;
    if (t->resume_pending) {
      t->resume_pending = false;
      t->loop->unpause.push_back(t->id);
    }
  }

  static size_t on_read(char* out, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    std::size_t want = size * n;
    if (t->source.read) {
      std::uint64_t left = t->body_size - t->source_read;
      if (left == 0) return 0;
      auto room = std::as_writable_bytes(std::span<char>(out, std::min<std::uint64_t>(want, left)));
      std::size_t len = std::min(t->source.read(room), room.size());
      if (len == 0) {
        pause(t);
        return CURL_READFUNC_PAUSE;
      }
      t->source_read += len;
      t->loop->client.stats_.bytes_sent.fetch_add(len, std::memory_order_relaxed);
      return len;
    }
    std::size_t left = t->upload.size() - t->upload_pos;
    std::size_t len = std::min(want, left);
    std::memcpy(out, t->upload.data() + t->upload_pos, len);
    t->upload_pos += len;
    t->loop->client.stats_.bytes_sent.fetch_add(len, std::memory_order_relaxed);
    return len;
  }

  static int on_seek(void* user, curl_off_t offset, int origin) {
    auto* t = static_cast<Transfer*>(user);
    if (t->source.read) {
      bool unmoved = origin == SEEK_SET && offset == 0 && t->source_read == 0;
      return unmoved ? CURL_SEEKFUNC_OK : CURL_SEEKFUNC_CANTSEEK;
    }
    if (origin != SEEK_SET || offset < 0 || static_cast<std::uint64_t>(offset) > t->upload.size()) {
      return CURL_SEEKFUNC_FAIL;
    }
    t->upload_pos = static_cast<std::size_t>(offset);
    return CURL_SEEKFUNC_OK;
  }

  static size_t on_header(char* data, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    std::size_t len = size * n;
    std::string_view line = trim(std::string_view(data, len));
    if (line.substr(0, 5) == "HTTP/") {
      // A new answer (after a 100 Continue, say): start over.
      std::size_t sp = line.find(' ');
      int code = 0;
      if (sp != std::string_view::npos && sp + 4 <= line.size()) {
        for (std::size_t i = sp + 1; i < sp + 4; ++i) {
          if (line[i] < '0' || line[i] > '9') {
            code = 0;
            break;
          }
          code = code * 10 + (line[i] - '0');
        }
      }
      t->http_status = code;
      t->headers_done = false;
      t->info = ObjectInfo{};
      return len;
    }
    if (line.empty()) {
      if (!t->headers_done && t->http_status >= 200) {
        t->headers_done = true;
        if (!t->loop->on_headers_complete(t)) return 0;  // aborts the transfer
      }
      return len;
    }
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return len;
    std::string_view name = line.substr(0, colon);
    std::string_view value = trim(line.substr(colon + 1));
    if (iequals(name, "Content-Length")) {
      parse_u64(value, t->info.content_length);
    } else if (iequals(name, "ETag")) {
      t->info.etag = std::string(value);
    } else if (iequals(name, "Last-Modified")) {
      if (auto tp = parse_http_date(value)) t->info.last_modified = *tp;
    } else if (iequals(name, "Content-Type")) {
      t->info.content_type = std::string(value);
    } else if (iequals(name, "Content-Range")) {
      std::size_t slash = value.rfind('/');
      if (slash != std::string_view::npos) parse_u64(value.substr(slash + 1), t->info.size);
    }
    return len;
  }

  // After the headers of a final answer; false stops the transfer.
  bool on_headers_complete(Transfer* t) {
    if (t->info.size == 0) t->info.size = t->info.content_length;
    bool is_get = t->op == Op::get_to_buffer || t->op == Op::get_to_stream;
    if (!is_get || t->http_status < 200 || t->http_status >= 300) return true;

    if (t->range_sent && t->http_status != 206) {
      // A full answer to a range request is fine only if it is what was asked.
      bool whole = t->range_offset == 0 && (t->range_remaining == 0 || t->info.content_length <= t->range_remaining);
      if (!whole) {
        t->abort_reason = Status::permanent(t->what + ": the server ignored the Range header");
        return false;
      }
    }
    if (!t->started) {
      t->started = true;
      t->pinned_etag = t->info.etag;
      t->first_info = t->info;
      if (t->op == Op::get_to_buffer && t->first_info.content_length > t->buffer.size()) {
        t->abort_reason = Status::invalid(t->what + ": " + std::to_string(t->info.content_length) +
                                          " bytes do not fit the " + std::to_string(t->buffer.size()) + "-byte buffer");
        return false;
      }
      if (t->op == Op::get_to_stream && t->stream.on_start) t->stream.on_start(t->first_info);
    }
    return true;
  }

  static size_t on_write(char* data, size_t size, size_t n, void* user) {
    auto* t = static_cast<Transfer*>(user);
    std::size_t len = size * n;
    bool to_sink =
        (t->op == Op::get_to_buffer || t->op == Op::get_to_stream) && t->http_status >= 200 && t->http_status < 300;
    if (!to_sink) {
      if (t->body.size() + len > kMaxAnswerBody) {
        t->abort_reason =
            Status::permanent(t->what + ": answer larger than " + std::to_string(kMaxAnswerBody) + " bytes");
        return 0;
      }
      t->body.append(data, len);
      return len;
    }
    auto bytes = std::as_bytes(std::span<const char>(data, len));
    if (t->op == Op::get_to_buffer) {
      if (t->delivered + len > t->buffer.size()) {
        t->abort_reason = Status::invalid(t->what + ": the object does not fit the " +
                                          std::to_string(t->buffer.size()) + "-byte buffer");
        return 0;
      }
      std::memcpy(t->buffer.data() + t->delivered, bytes.data(), len);
    } else if (!t->stream.on_data(bytes)) {
      pause(t);
      return CURL_WRITEFUNC_PAUSE;
    }
    t->delivered += len;
    t->loop->client.stats_.bytes_received.fetch_add(len, std::memory_order_relaxed);
    return len;
  }

  // --- state ---------------------------------------------------------------

  S3Client& client;
  const S3Config& config;
  Endpoint endpoint;
  CURLM* multi = nullptr;
  std::thread thread;
  std::atomic<bool> stopping{false};

  std::mutex mu;  // guards incoming and commands
  std::vector<std::unique_ptr<Transfer>> incoming;
  std::vector<std::pair<Command, RequestId>> commands;

  // Loop thread only.
  std::unordered_map<RequestId, std::unique_ptr<Transfer>> live;
  std::deque<Transfer*> waiting;
  std::multimap<Clock::time_point, Transfer*> retry;
  std::vector<RequestId> unpause;
  std::vector<CURL*> idle;
  int active = 0;
  Clock::time_point last_denied_log{};
  std::mt19937_64 rng;
  std::shared_ptr<CredentialsProvider> credentials;
  std::shared_ptr<const TimedCredentials> signing;  // what signer holds
  Signer signer;
  SignedHeaders signed_headers;
  std::vector<HttpField> fields;
  std::vector<QueryParam> params_scratch;
  std::string url;
};

// ---------------------------------------------------------------------------
// S3Client
// ---------------------------------------------------------------------------

S3Client::S3Client(S3Config config) : config_(std::move(config)) {}

S3Client::~S3Client() {
  if (loop_) loop_->stop();
}

Result<std::unique_ptr<S3Client>> S3Client::create(S3Config config) {
  if (config.bucket.empty() || config.bucket.find_first_of("/ \t\r\n") != std::string::npos) {
    return Status::invalid("S3 bucket '" + config.bucket + "' is not a valid bucket name");
  }
  if (config.region.empty()) return Status::invalid("S3 region is empty");
  if (!config.credentials_provider) {
    if (config.credentials.access_key_id.empty() || config.credentials.secret_access_key.empty()) {
      return Status::invalid("S3 credentials are missing (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)");
    }
    config.credentials_provider = CredentialsProvider::fixed(config.credentials);
  }
  if (config.max_attempts < 1) return Status::invalid("S3 max_attempts must be at least 1");
  if (config.max_connections < 1) return Status::invalid("S3 max_connections must be at least 1");
  if (config.receive_buffer_size < 1024 || config.receive_buffer_size > CURL_MAX_READ_SIZE) {
    return Status::invalid("S3 receive_buffer_size must be within 1 KiB..512 KiB");
  }
  if (config.retry_base_delay.count() < 0 || config.retry_max_delay < config.retry_base_delay) {
    return Status::invalid("S3 retry delays must satisfy 0 <= base <= max");
  }
  auto endpoint = parse_endpoint(config);
  if (!endpoint.ok()) return endpoint.status();

  static std::once_flag curl_init;
  static CURLcode curl_init_result = CURLE_OK;
  std::call_once(curl_init, [] { curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (curl_init_result != CURLE_OK) return Status::permanent("S3 client: curl_global_init failed");

  std::unique_ptr<S3Client> client(new S3Client(std::move(config)));
  client->loop_ = std::make_unique<Loop>(*client, std::move(*endpoint));
  if (Status s = client->loop_->init(); !s) return s;
  client->loop_->start();
  return client;
}

RequestId S3Client::submit(std::unique_ptr<Transfer> t) {
  RequestId id = next_id_.fetch_add(1, std::memory_order_relaxed);
  t->id = id;
  stats_.requests.fetch_add(1, std::memory_order_relaxed);
  loop_->post(std::move(t));
  return id;
}

void S3Client::resume(RequestId id) { loop_->post(Loop::Command::resume, id); }

void S3Client::cancel(RequestId id) { loop_->post(Loop::Command::cancel, id); }

std::unique_ptr<S3Client::Transfer> S3Client::make(Op op, Method method, std::string_view key) const {
  return loop_->make(op, method, key);
}

}  // namespace kiroku::s3
