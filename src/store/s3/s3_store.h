// s3_store.h - the ObjectStore on an S3 bucket (s3://bucket?endpoint=...).
//
// Uploads: an object of at most one part goes up with one PUT; so does one whose size is announced
// and at most S3StoreOptions::stream_put_max, its body read from the part buffers as they fill (no
// retry once it has begun); any other with a multipart upload whose parts (StoreOptions::part_size,
// from the pool) go up concurrently, parts_per_transfer - 1 at once while the next fills. On any
// failure, or abort(), the caller gets the error at once and the multipart upload is aborted in the
// background once the parts in flight have ended (S3 may keep a part whose upload overlaps the
// abort), so no parts are orphaned; the abort is tried up to 5 times over about 15 s, each try with
// S3Client's retries. settle() waits for those aborts; the destructor drops the ones still running
// (logged; a bucket lifecycle rule for incomplete multipart uploads is the backstop). Downloads:
// HEAD for size and ETag, then ranged GETs of one part each into pooled buffers, up to
// parts_per_transfer at once, delivered strictly in order; a consumer that holds its chunks stops
// new GETs. With S3StoreOptions::stream_get_max, one GET fills the same buffers in order instead,
// paused while the consumer holds them all. An answer whose ETag differs from the HEAD's (the
// object was replaced meanwhile) fails the download (permanent). Listings run one ListObjectsV2 per
// hash partition in parallel and merge them, fetching a partition's next page only when the merge
// reaches its end. Retries with backoff happen per request in S3Client. Threads: see
// object_store.h; S3 completions run on the client thread, steps and callbacks on the store's
// TransferThreads.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "store/key_layout.h"
#include "store/object_store.h"
#include "store/s3/s3_client.h"

namespace kiroku {

// Counters for metrics and tests; read with relaxed order.
struct S3StoreStats {
  std::atomic<std::uint64_t> multipart_started{0};
  std::atomic<std::uint64_t> multipart_completed{0};
  std::atomic<std::uint64_t> multipart_aborted{0};
  std::atomic<std::uint64_t> abort_failures{0};  // aborts that failed after every try
};

struct S3StoreOptions {
  // Uploads of a known size above one part and at most this many bytes go up
  // as one streamed PUT instead of a multipart upload: faster where the
  // server assembles multipart objects by copying them (s3rver, some
  // self-hosted stores), but a failure fails the whole upload, where a
  // multipart upload retries one part. 0: never. At most kMaxStreamPut.
  std::uint64_t stream_put_max = 0;
  static constexpr std::uint64_t kMaxStreamPut = std::uint64_t{5} << 30;  // S3's limit for one PUT
  // Downloads (or requested ranges) above one part and at most this many
  // bytes come down as one GET streamed through the part buffers instead of
  // concurrent ranged GETs: fewer requests for servers that pay per request
  // and gain nothing from parallel ones (s3rver), slower on AWS, where one
  // connection is slower than several. A retry resumes after the last byte
  // received. 0: never. At most kMaxObject.
  std::uint64_t stream_get_max = 0;
  static constexpr std::uint64_t kMaxObject = std::uint64_t{5} << 40;  // S3's largest object
};

class S3Store final : public ObjectStore {
 public:
  // invalid for bad options or a bad S3 configuration (see S3Client::create).
  static Result<std::unique_ptr<S3Store>> create(s3::S3Config config, const StoreOptions& options,
                                                 S3StoreOptions s3_options = {});
  ~S3Store() override;

  Result<std::unique_ptr<Upload>> begin_put(std::string_view key, std::optional<std::uint64_t> expected_size,
                                            std::function<void()> when_writable,
                                            std::string_view content_type = {}) override;
  Result<std::unique_ptr<Download>> get(std::string_view key, std::optional<ByteRange> range, GetSink sink) override;
  void head(std::string_view key, std::function<void(Result<ObjectMeta>)> done) override;
  void remove(std::string_view key, std::function<void(Status)> done) override;
  void list(ListRequest request, std::function<void(Result<ListPage>)> done) override;
  const PartPool& pool() const override { return pool_; }
  std::size_t cleaning_up() const override;
  std::uint64_t request_retries() const override { return client_->stats().retries.load(std::memory_order_relaxed); }
  std::size_t settle(std::chrono::steady_clock::time_point deadline) override;
  void check_access(std::function<void(Status)> done) override;

  const HashPrefixLayout& layout() const { return layout_; }
  const S3StoreOptions& s3_options() const { return s3_options_; }
  const S3StoreStats& stats() const { return stats_; }
  s3::S3Client& client() { return *client_; }

  // The transfers and listings of s3_upload.cpp, s3_download.cpp and s3_list.cpp.
  struct UploadState;
  struct DownloadState;
  struct ListState;

 private:
  S3Store(const StoreOptions& options, S3StoreOptions s3_options, std::unique_ptr<s3::S3Client> client);

  // Failed uploads whose cleanup runs on (UploadState::in_background).
  void background_begins();
  void background_ends();

  StoreOptions options_;
  S3StoreOptions s3_options_;
  mutable std::mutex background_mutex_;
  std::condition_variable background_idle_;
  std::size_t background_ = 0;
  HashPrefixLayout layout_;
  S3StoreStats stats_;
  PartPool pool_;
  TransferThreads threads_;
  // Destroyed first: its destructor completes every request, whose
  // completions post to threads_.
  std::unique_ptr<s3::S3Client> client_;
};

}  // namespace kiroku
