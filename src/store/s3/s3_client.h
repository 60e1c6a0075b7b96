// s3_client.h - an asynchronous S3 client: SigV4-signed requests on libcurl's
// multi interface, driven by one background thread.
//
// Threads: every operation may be called from any thread; it queues the
// request and returns at once. All completions (and a stream's on_start /
// on_data) run on the client's own thread, one at a time: they must not
// block or throw, may start further requests, and must not destroy the
// client. Each completion runs exactly once, also when the request fails, is
// cancelled or the client is destroyed.
//
// Memory: bodies to upload are caller-owned spans that must stay valid and
// unchanged until the completion runs (a retry sends them again). Downloads
// go to a caller-owned fixed buffer or to a stream that can pause the
// transfer, so memory does not grow with the object size.
//
// Retries: each request (one part, not a whole object) is retried with
// exponential backoff and full jitter on 5xx, 429/SlowDown, timeouts and
// connection failures, up to S3Config::max_attempts attempts; then its
// completion gets a transient Status. A GET resumes where it stopped,
// pinned to the first answer's ETag. Other failures come back at once:
// not_found (no such key / upload), denied (credentials refused; logged at
// most once per 10 s with the access key id), permanent (permissions, no
// such bucket, a malformed answer, TLS/URL errors), invalid (the request was
// wrong, or cancelled).
//
// Answers: a field kiroku does not need never fails a request. A write whose
// answer has no ETag to read (PUT without the header, CompleteMultipartUpload
// with <ETag></ETag> as Ceph RGW sends) is settled by a HEAD of the object.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "store/s3/credentials.h"
#include "store/s3/s3_xml.h"
#include "store/s3/sigv4.h"

namespace kiroku::s3 {

namespace detail {
enum class Op : std::uint8_t;
enum class Method : std::uint8_t;
}  // namespace detail

struct S3Config {
  // "http://host:port" or "https://host[:port]". Empty: AWS itself,
  // https://{bucket}.s3.{region}.amazonaws.com (virtual-hosted style).
  std::string endpoint;
  std::string region = "us-east-1";
  std::string bucket;
  // With an endpoint: http://host/bucket/key (true) or http://bucket.host/key.
  bool path_style = true;
  Credentials credentials;  // see credentials_from_environment()
  // When set, used instead of `credentials`: the client signs each request
  // with the provider's current() credentials (see credentials.h).
  std::shared_ptr<CredentialsProvider> credentials_provider;

  std::chrono::milliseconds connect_timeout{5000};
  // An attempt that moves no byte for this long fails (transient); whole
  // seconds, rounded up. Time a stream spends paused by its consumer does
  // not count.
  std::chrono::milliseconds stall_timeout{30000};
  // Upper bound on one attempt, paused time included; 0 = none.
  std::chrono::milliseconds request_timeout{0};

  int max_attempts = 4;  // per request, the first included (>= 1)
  std::chrono::milliseconds retry_base_delay{100};
  std::chrono::milliseconds retry_max_delay{5000};

  // Transfers in flight at once (and connections kept); more wait in order.
  int max_connections = 32;
  // Put the body's SHA-256 in the signature of PUTs (computed on the
  // calling thread). false: UNSIGNED-PAYLOAD, as S3 allows.
  bool sign_payload = false;
  // Largest chunk an ObjectStream's on_data receives.
  std::size_t receive_buffer_size = 64 * 1024;
};

// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and (optional) AWS_SESSION_TOKEN.
// invalid if either of the first two is missing or empty.
Result<Credentials> credentials_from_environment();

using RequestId = std::uint64_t;
template <typename T>
using Completion = std::function<void(Result<T>)>;
using StatusCompletion = std::function<void(Status)>;

// What S3 tells about an object, from response headers.
struct ObjectInfo {
  std::uint64_t size = 0;            // the whole object's size
  std::uint64_t content_length = 0;  // bytes of this answer (a range's length)
  std::string etag;                  // as S3 sends it, quotes included
  std::chrono::system_clock::time_point last_modified{};
  std::string content_type;
};

struct PutObjectResult {
  std::string etag;  // never empty: see settled_size
  // The answer had no ETag to read (an empty header or <ETag></ETag>), so the
  // client asked a HEAD of the object: its size, which the caller compares
  // with what it sent (the ETag is the HEAD's).
  std::optional<std::uint64_t> settled_size;
};

// Bytes [offset, offset + length) of an object; length 0 means to the end.
struct ByteRange {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

struct GetObjectResult {
  std::size_t bytes = 0;  // bytes written to the buffer
  ObjectInfo info;
};

// Consumer of a streamed GET. Both run on the client thread.
struct ObjectStream {
  // Once, before any data, with the first answer's headers. May be empty.
  std::function<void(const ObjectInfo&)> on_start;
  // Each chunk in order (at most receive_buffer_size bytes). Return true when
  // the chunk is consumed; false to pause the transfer without consuming it:
  // nothing more is read from the network until S3Client::resume(id), after
  // which the same chunk is delivered again. The span is valid only during
  // the call.
  std::function<bool(std::span<const std::byte>)> on_data;
};

// Source of a streamed request body (put_object_stream). Runs on the client
// thread.
struct BodySource {
  // Copies the next body bytes into out (at most out.size()) and returns how
  // many. 0 when none are ready yet: the transfer pauses until
  // S3Client::resume(id), then asks again. Never asked for bytes past the
  // body's size.
  std::function<std::size_t(std::span<std::byte>)> read;
};

struct ListObjectsRequest {
  std::string prefix;
  std::string continuation_token;  // from the previous page; empty for the first
  std::string start_after;         // first page only: keys after this one
  std::string delimiter;           // e.g. "/" to get CommonPrefixes
  int max_keys = 1000;             // 1..1000
};

// Counters since the client started, for metrics. Read with relaxed order.
struct S3ClientStats {
  std::atomic<std::uint64_t> requests{0};  // operations submitted
  std::atomic<std::uint64_t> attempts{0};  // HTTP requests sent, retries included
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::uint64_t> failures{0};        // completions with an error
  std::atomic<std::uint64_t> bytes_sent{0};      // request body bytes, resends included
  std::atomic<std::uint64_t> bytes_received{0};  // object bytes delivered
};

class S3Client {
 public:
  // Checks the configuration (invalid: no bucket, a bad endpoint, no
  // credentials, limits out of range) and starts the client thread.
  static Result<std::unique_ptr<S3Client>> create(S3Config config);

  // Fails every request still queued or in flight with transient("S3 client
  // stopped"), running their completions on the client thread, then joins
  // it. Do not start requests from other threads while it runs.
  ~S3Client();

  S3Client(const S3Client&) = delete;
  S3Client& operator=(const S3Client&) = delete;

  // PUT of a whole object from body (caller-owned, valid until done runs).
  // content_type, when not empty, is stored with the object (and served by GET).
  RequestId put_object(std::string_view key, std::span<const std::byte> body, Completion<PutObjectResult> done,
                       std::string_view content_type = {});

  // PUT of a whole object of `size` bytes read from `body` as they come, so
  // no buffer has to hold the object. Always UNSIGNED-PAYLOAD. Retried only
  // while no body byte has been read (a body cannot be read twice); after
  // that a failure is final (transient). Cancelling it before the last byte
  // is sent leaves no object where the server rejects a body shorter than its
  // Content-Length, as S3 does (s3rver does not: it keeps what arrived).
  RequestId put_object_stream(std::string_view key, std::uint64_t size, BodySource body,
                              Completion<PutObjectResult> done, std::string_view content_type = {});

  // Starts a multipart upload; gives the UploadId. content_type as put_object's.
  RequestId create_multipart_upload(std::string_view key, Completion<std::string> done,
                                    std::string_view content_type = {});

  // Uploads one part (1..10000) from body (caller-owned, valid until done
  // runs); gives the part's number and ETag for complete_multipart_upload.
  // S3 wants every part but the last to be at least 5 MiB.
  RequestId upload_part(std::string_view key, std::string_view upload_id, int part_number,
                        std::span<const std::byte> body, Completion<CompletedPart> done);

  // Completes the upload from its parts in ascending part order; gives the
  // object's ETag. A 200 answer with an <Error> body is an error (and is
  // retried when S3 says so); any other 200 means complete, and one without
  // an ETag to read (RGW: <ETag></ETag>) is settled by a HEAD of the object.
  RequestId complete_multipart_upload(std::string_view key, std::string_view upload_id,
                                      std::vector<CompletedPart> parts, Completion<PutObjectResult> done);

  // Aborts the upload and drops its parts. not_found if there is no such upload.
  RequestId abort_multipart_upload(std::string_view key, std::string_view upload_id, StatusCompletion done);

  // GET of the object (or a range of it) into buffer (caller-owned, valid
  // until done runs). An answer larger than the buffer fails (invalid) and
  // the transfer stops there; an InvalidRange answer is invalid too.
  RequestId get_object(std::string_view key, std::optional<ByteRange> range, std::span<std::byte> buffer,
                       Completion<GetObjectResult> done);

  // GET of the object (or a range of it) streamed to `stream`; done gets the
  // first answer's ObjectInfo after the last chunk was consumed.
  RequestId get_object(std::string_view key, std::optional<ByteRange> range, ObjectStream stream,
                       Completion<ObjectInfo> done);

  RequestId head_object(std::string_view key, Completion<ObjectInfo> done);

  // DELETE of the object. S3 answers success for a key that does not exist.
  RequestId delete_object(std::string_view key, StatusCompletion done);

  // One page of ListObjectsV2.
  RequestId list_objects_v2(ListObjectsRequest request, Completion<ListObjectsPage> done);

  // Lets a stream paused by on_data, or a body paused by BodySource::read,
  // go on. From any thread. A resume that arrives before the pause it
  // answers is kept and applied to that pause.
  // Unknown or finished ids are ignored.
  void resume(RequestId id);

  // Stops the request: its completion runs with invalid("cancelled") unless
  // it has already completed. From any thread; unknown ids are ignored.
  void cancel(RequestId id);

  const S3Config& config() const { return config_; }
  const S3ClientStats& stats() const { return stats_; }

 private:
  struct Transfer;
  struct Loop;
  // A transfer for `key` with path, method and message prefix filled in (s3_transfer.h).
  std::unique_ptr<Transfer> make(detail::Op op, detail::Method method, std::string_view key) const;

  explicit S3Client(S3Config config);
  RequestId submit(std::unique_ptr<Transfer> transfer);
  static std::function<void(Transfer&, Status)> put_finish(Completion<PutObjectResult> done);
  static void settle_by_head(Transfer& t, Completion<PutObjectResult> done);

  S3Config config_;
  S3ClientStats stats_;
  std::atomic<RequestId> next_id_{1};
  std::unique_ptr<Loop> loop_;
};

}  // namespace kiroku::s3
