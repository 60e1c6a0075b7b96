// s3_store.cpp - the S3 ObjectStore: its life, head, remove and the start-up
// check; uploads in s3_upload.cpp, downloads in s3_download.cpp, listings in
// s3_list.cpp.
//
// Each transfer is a state machine under its own mutex. S3 completions (client
// thread) and pool callbacks (any thread) only update the state and schedule a
// step() on the store's threads; step() decides what to send, sends it and
// runs the user's callbacks outside the lock. Parts are never released under
// a transfer's lock (a release may run another transfer's pool callback).
#include "store/s3/s3_store.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <map>
#include <utility>

#include <spdlog/spdlog.h>

#include "store/s3/s3_xml.h"

namespace kiroku {

S3Store::S3Store(const StoreOptions& options, S3StoreOptions s3_options, std::unique_ptr<s3::S3Client> client)
    : options_(options),
      s3_options_(s3_options),
      layout_(options.hash_prefix_chars),
      pool_(options.part_size, options.part_count),
      threads_(options.threads),
      client_(std::move(client)) {}

S3Store::~S3Store() {
  // Retries waiting for their time would use the client after it is gone.
  threads_.drop_delayed();
  std::lock_guard lock(background_mutex_);
  if (background_ > 0)
    spdlog::warn(
        "s3 store: {} failed multipart uploads were not aborted before the stop; their parts "
        "stay until an abort or the bucket's lifecycle rule removes them",
        background_);
}

void S3Store::background_begins() {
  std::lock_guard lock(background_mutex_);
  ++background_;
}

void S3Store::background_ends() {
  {
    std::lock_guard lock(background_mutex_);
    --background_;
  }
  background_idle_.notify_all();
}

std::size_t S3Store::cleaning_up() const {
  std::lock_guard lock(background_mutex_);
  return background_;
}

std::size_t S3Store::settle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(background_mutex_);
  background_idle_.wait_until(lock, deadline, [this] { return background_ == 0; });
  return background_;
}

Result<std::unique_ptr<S3Store>> S3Store::create(s3::S3Config config, const StoreOptions& options,
                                                 S3StoreOptions s3_options) {
  if (Status s = validate_store_options(options); !s) return s;
  if (options.part_size < (5u << 20)) return Status::invalid("store part size must be at least 5 MiB for S3");
  if (s3_options.stream_put_max > S3StoreOptions::kMaxStreamPut)
    return Status::invalid("stream_put_max must be at most 5 GiB (S3's limit for one PUT)");
  if (s3_options.stream_get_max > S3StoreOptions::kMaxObject)
    return Status::invalid("stream_get_max must be at most 5 TiB (S3's largest object)");
  auto client = s3::S3Client::create(std::move(config));
  if (!client.ok()) return client.status();
  return std::unique_ptr<S3Store>(new S3Store(options, s3_options, std::move(*client)));
}
// --- head, remove ------------------------------------------------------------------------------

void S3Store::head(std::string_view key, std::function<void(Result<ObjectMeta>)> done) {
  if (Status s = validate_key(key); !s) {
    threads_.post([done = std::move(done), s] { done(s); });
    return;
  }
  client_->head_object(layout_.stored_key(key),
                       [this, key = std::string(key), done = std::move(done)](Result<s3::ObjectInfo> r) {
                         Result<ObjectMeta> out = Status::not_found("no object '" + key + "'");
                         if (r.ok()) {
                           out = ObjectMeta{key, r->size, s3::unquote_etag(r->etag), r->last_modified, r->content_type};
                         } else if (r.status().kind() != ErrorKind::not_found) {
                           out = r.status();
                         }
                         threads_.post([done, out = std::move(out)]() mutable { done(std::move(out)); });
                       });
}

void S3Store::remove(std::string_view key, std::function<void(Status)> done) {
  if (Status s = validate_key(key); !s) {
    threads_.post([done = std::move(done), s] { done(s); });
    return;
  }
  client_->delete_object(layout_.stored_key(key), [this, done = std::move(done)](Status s) {
    if (s.kind() == ErrorKind::not_found) s = Status();  // some servers answer 404 NoSuchKey, S3 204
    threads_.post([done, s] { done(s); });
  });
}
void S3Store::check_access(std::function<void(Status)> done) {
  // Outside the key layout ("{h}/key"): never a user's object. Missing is the good answer.
  auto buffer = std::make_shared<std::array<std::byte, 1024>>();
  client_->get_object(".kiroku-access-check", std::nullopt, *buffer,
                      [this, buffer, done = std::move(done)](Result<s3::GetObjectResult> r) {
                        Status s = r.ok() || r.status().kind() == ErrorKind::not_found ||
                                           r.status().kind() == ErrorKind::invalid
                                       ? Status()
                                       : r.status();
                        threads_.post([done, s = std::move(s)] { done(s); });
                      });
}
}  // namespace kiroku
