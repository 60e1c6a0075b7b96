// object_store.h - the ObjectStore interface behind the file API: streamed
// uploads and downloads of objects by key, in memory bounded by a pool of part
// buffers, for a server whose IO threads must never block.
//
// Threads: every call returns at once and never blocks on I/O; the work runs
// on the store's own threads (file I/O threads, the S3 client thread) and
// every callback runs on one of them, never inline inside a call to the
// store. Callbacks must not block; they may call the store again.
// Errors: a Status whose kind says what to answer: invalid (400; a bad key
// names the rule it breaks), not_found (404), transient (503/502: retry
// later), permanent (500), full (503).
// Lifetime: destroy a store only after every transfer on it has finished
// (done/on_done ran) and every Chunk it delivered was released. A failed
// upload is answered at once; cleaning up after it (S3: the parts in flight
// and the abort of the multipart upload) goes on in the background, which
// settle() waits for and destruction cuts short.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/status.h"
#include "store/part_pool.h"

namespace kiroku {

struct StoreOptions {
  // Size of each pooled buffer: one upload part, one ranged GET, one chunk of
  // a download. S3 wants parts of at least 5 MiB; an S3 object has at most
  // 10,000 parts, so part_size bounds the largest upload (80 GiB at 8 MiB).
  std::size_t part_size = 8 << 20;
  // Buffers in the store's one pool, shared by all of its transfers: the
  // memory bound of all transfers together (8 x 8 MiB = 64 MiB).
  std::size_t part_count = 8;
  // Most buffers one transfer holds at once (filling, in flight, or with the
  // consumer), so one transfer cannot starve the others; at least 2.
  std::size_t parts_per_transfer = 4;
  // HashPrefixLayout: hex characters of the partition prefix (0..4).
  int hash_prefix_chars = 1;
  // Threads that run file I/O (file store) and transfer steps and callbacks.
  int threads = 4;
  // Longest a transfer that holds no buffer yet waits for its first one;
  // then it fails, transient ("every buffer is busy"). 0: no limit.
  std::chrono::milliseconds first_buffer_wait{0};
};

// What a head or a listing tells about an object.
struct ObjectMeta {
  std::string key;  // the user's key, never the stored one
  std::uint64_t size = 0;
  // Without quotes. File store: hex SHA-256 of the content. S3: S3's ETag
  // (hex MD5 of a single PUT, "{hex}-{parts}" of a multipart upload).
  std::string etag;
  std::chrono::system_clock::time_point modified{};
  // The uploader's Content-Type as stored with the object; empty when none
  // was given (served as application/octet-stream). Not filled by listings.
  std::string content_type;
};

struct PutResult {
  std::string key;
  std::uint64_t size = 0;
  std::string etag;        // as in ObjectMeta
  std::string sha256_hex;  // lowercase hex SHA-256 of the content
};

// A byte range as HTTP asks for it: bytes=first-last, bytes=first-, bytes=-suffix.
struct ByteRange {
  std::uint64_t first = 0;
  std::optional<std::uint64_t> last;  // inclusive; nullopt: to the end
  std::uint64_t suffix = 0;           // > 0: the last `suffix` bytes (first, last unused)
};

// What a download will deliver, given before any data.
struct GetStart {
  ObjectMeta object;         // the whole object
  std::uint64_t offset = 0;  // object offset of the first byte delivered
  std::uint64_t length = 0;  // bytes that will be delivered
  // The range asked for lies outside the object (HTTP 416): no data follows
  // and on_done gets ok.
  bool range_unsatisfiable = false;
};

// Bytes of a download, in a pooled buffer that the consumer holds until it
// has used them: the buffer is returned by release() or the destructor. A
// download keeps at most StoreOptions::parts_per_transfer buffers, so a
// consumer that holds its chunks stops the fetching (backpressure). Move-only;
// release from any thread.
class Chunk {
 public:
  Chunk() = default;
  Chunk(PartPool::Part part, std::span<const std::byte> data, std::uint64_t offset, std::function<void()> on_release)
      : part_(std::move(part)), data_(data), offset_(offset), on_release_(std::move(on_release)) {}
  Chunk(Chunk&& other) noexcept
      : part_(std::move(other.part_)),
        data_(std::exchange(other.data_, {})),
        offset_(other.offset_),
        on_release_(std::exchange(other.on_release_, nullptr)) {}
  Chunk& operator=(Chunk&& other) noexcept {
    if (this != &other) {
      release();
      part_ = std::move(other.part_);
      data_ = other.data_;
      offset_ = other.offset_;
      on_release_ = std::exchange(other.on_release_, nullptr);
      other.data_ = {};
    }
    return *this;
  }
  ~Chunk() { release(); }

  std::span<const std::byte> data() const { return data_; }
  std::uint64_t offset() const { return offset_; }  // object offset of data()[0]
  void release() {
    data_ = {};
    part_.release();
    if (on_release_) {
      auto notify = std::move(on_release_);
      on_release_ = nullptr;
      notify();
    }
  }

 private:
  PartPool::Part part_;
  std::span<const std::byte> data_;
  std::uint64_t offset_ = 0;
  std::function<void()> on_release_;
};

// The consumer of a download. All three run on store threads, one at a time
// and in this order: on_start once, on_chunk for each chunk in object order,
// on_done exactly once (also after an error or cancel(); on_start and
// on_chunk may not have run then).
struct GetSink {
  std::function<void(const GetStart&)> on_start;
  std::function<void(Chunk)> on_chunk;
  std::function<void(Status)> on_done;
};

// A running download. Destroying the handle does not stop it.
class Download {
 public:
  virtual ~Download() = default;
  // Stops fetching; on_done runs with invalid("cancelled") unless it ran
  // already. From any thread.
  virtual void cancel() = 0;
};

// A running upload, fed by one caller at a time (write/finish/abort are not
// to be called concurrently with each other; any thread is fine).
// Destroying it before finish() aborts it; after finish() the upload goes on
// and done still runs.
class Upload {
 public:
  virtual ~Upload() = default;

  // Like write(2), a short write is possible: copies up to data.size() bytes
  // into pooled part buffers and returns how many it took, fewer (maybe 0)
  // when the buffers this upload may hold are all full or in flight. Then
  // when_writable (from begin_put) runs once, on a store thread, when more
  // can be taken or the upload has failed. An error once the upload failed
  // (a part could not be stored) or after finish()/abort(); finish() then
  // gives the same error.
  virtual Result<std::size_t> write(std::span<const std::byte> data) = 0;

  // No more data: stores the object. done runs once, on a store thread, with
  // the result; the object is visible to readers only from then on (never
  // half written), and nothing is visible on an error.
  virtual void finish(std::function<void(Result<PutResult>)> done) = 0;

  // Drops the upload: nothing becomes visible, the stored parts are removed.
  // A pending finish() gets invalid("cancelled").
  virtual void abort() = 0;
};

// A page of a listing; next is empty on the last page, else the key to pass
// as `after` for the next page.
struct ListPage {
  std::vector<ObjectMeta> objects;
  std::string next;
};

struct ListRequest {
  std::string prefix;        // only keys that start with this
  std::string after;         // only keys greater than this (bytewise)
  std::size_t limit = 1000;  // 1..1000 objects per page
};

// Objects by key. See the top of this file for threads, errors and lifetime.
class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  // Starts an upload of key (replacing any object of that key when it
  // finishes). expected_size, when known, is checked at finish() (invalid
  // if the bytes written differ). content_type (checked by the caller:
  // the file API keeps printable ASCII, at most 256 bytes) is stored with
  // the object when not empty. invalid at once for a bad key; when_writable is described at
  // Upload::write.
  virtual Result<std::unique_ptr<Upload>> begin_put(std::string_view key, std::optional<std::uint64_t> expected_size,
                                                    std::function<void()> when_writable,
                                                    std::string_view content_type = {}) = 0;

  // Starts a download of key, or of a range of it, into sink. invalid at once
  // for a bad key or a range with last < first; not_found and other errors
  // come to sink.on_done.
  virtual Result<std::unique_ptr<Download>> get(std::string_view key, std::optional<ByteRange> range, GetSink sink) = 0;

  virtual void head(std::string_view key, std::function<void(Result<ObjectMeta>)> done) = 0;

  // Deletes the object; ok also when there was none (like S3).
  virtual void remove(std::string_view key, std::function<void(Status)> done) = 0;

  // One page of the keys that start with request.prefix and sort after
  // request.after, in bytewise key order, merged across the partitions.
  virtual void list(ListRequest request, std::function<void(Result<ListPage>)> done) = 0;

  // The store's part pool, for metrics and tests.
  virtual const PartPool& pool() const = 0;

  // Requests to the backing service sent again after a failure (S3: every
  // retry of S3Client); 0 for a store that does not retry.
  virtual std::uint64_t request_retries() const { return 0; }

  // Failed (or aborted) uploads whose cleanup still runs.
  virtual std::size_t cleaning_up() const { return 0; }
  // Waits until cleaning_up() is 0, or the deadline; returns cleaning_up().
  virtual std::size_t settle(std::chrono::steady_clock::time_point /*deadline*/) { return 0; }

  // Start-up check that the store accepts kiroku's credentials: denied when
  // it refuses them; other errors (unreachable, permissions) are for a
  // warning only. S3: a GET of a key that does not exist. The default
  // answers ok at once, on the caller's thread.
  virtual void check_access(std::function<void(Status)> done) { done(Status()); }
};

// A store from a URL: file:///path/to/dir or
// s3://bucket?endpoint=http://host:port&region=R (S3 credentials from
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, region from
// the URL, else AWS_REGION, else us-east-1; no endpoint: AWS itself,
// virtual-hosted style). invalid naming what is wrong with the URL or options.
Result<std::unique_ptr<ObjectStore>> make_store(std::string_view url, const StoreOptions& options);

// Checks options (part sizes and counts, threads); invalid naming the option.
Status validate_store_options(const StoreOptions& options);

// The failure of a transfer whose first buffer did not come within
// options.first_buffer_wait (transient: the client may retry).
Status no_buffer_status(const StoreOptions& options);

// The object range a ByteRange selects in an object of `size` bytes:
// [offset, offset + length). nullopt if it is unsatisfiable (it starts at or
// past the end, or the object is empty). No range: the whole object.
struct ResolvedRange {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};
std::optional<ResolvedRange> resolve_range(const std::optional<ByteRange>& range, std::uint64_t size);

}  // namespace kiroku
