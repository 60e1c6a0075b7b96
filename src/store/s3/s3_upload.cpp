// s3_upload.cpp - S3 uploads: one PUT, a streamed PUT, or concurrent multipart parts (aborted on failure).
// (s3_store.cpp describes how a transfer's state machine runs.)
#include "store/s3/s3_store.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <map>
#include <utility>

#include <spdlog/spdlog.h>

#include "store/s3/s3_xml.h"
#include "store/upload_parts.h"

namespace kiroku {
namespace {

// Tries of an abort, each with S3Client's own retries, the later ones after
// 1, 2, 4, 8 s: a multipart upload outlives a short outage of S3 rather
// than staying behind as orphaned parts. (A bucket lifecycle rule that
// aborts incomplete multipart uploads is the backstop.)
constexpr int kAbortTries = 5;

// S3's limit of parts in one multipart upload.
constexpr std::size_t kMaxParts = 10000;

// A write settled by a HEAD (its answer had no ETag): the object S3 holds must
// be the one sent, else the write's outcome is unknown and reported as failed.
Status check_settled(const s3::PutObjectResult& r, std::uint64_t size, const std::string& key) {
  if (!r.settled_size || *r.settled_size == size) return Status();
  return Status::permanent("S3 upload of '" + key + "': S3 answered without an ETag and then holds " +
                           std::to_string(*r.settled_size) + " bytes, " + std::to_string(size) + " sent");
}

}  // namespace

// --- uploads ----------------------------------------------------------------------

struct S3Store::UploadState final : UploadParts {
  // How the object goes up: one PUT once finished (it fits one part); one PUT
  // whose body is read from the parts as they fill (size announced, at most
  // S3StoreOptions::stream_put_max; fixed at begin_put); or a multipart
  // upload, chosen when a second part starts.
  enum class Mode { one_put, streamed_put, multipart };
  // The request in flight that decides the upload's fate, if any (parts of a
  // multipart upload go up beside it, in `sending`).
  enum class Request { none, put, create, complete, abort };

  S3Store* store;
  std::string stored_key;
  std::string content_type;  // stored with the object

  Mode mode;                                                        // mutex
  Request request = Request::none;                                  // mutex
  s3::RequestId put_id = 0;                                         // mutex: the PUT in flight, for cancelling
  std::string upload_id;                                            // mutex: the multipart upload, once created
  std::map<int, std::pair<PartPool::Part, s3::RequestId>> sending;  // mutex: parts going up, by number
  std::vector<s3::CompletedPart> completed;                         // mutex
  std::size_t front_sent = 0;                               // mutex: bytes of full.front() the streamed PUT has read
  std::optional<std::string> stream_etag;                   // mutex: the streamed PUT stored the object
  int abort_tries = 0;                                      // mutex
  bool in_background = false;                               // mutex: counted in S3Store::cleaning_up()
  Result<PutResult> result = Status::invalid("cancelled");  // mutex: the outcome once ended

  UploadState(Setup setup, S3Store* s, std::string stored, std::string type, Mode m)
      : UploadParts(std::move(setup)),
        store(s),
        stored_key(std::move(stored)),
        content_type(std::move(type)),
        mode(m) {}

  std::shared_ptr<UploadState> self() { return std::static_pointer_cast<UploadState>(shared_from_this()); }

  void step() override {
    auto self = this->self();
    std::vector<PartPool::Part> drop;
    std::vector<s3::RequestId> to_cancel;
    std::vector<std::function<void()>> actions;
    std::function<void(Result<PutResult>)> answer;
    Result<PutResult> answer_with = Status::invalid("cancelled");
    bool notify = false, cleanup_starts = false, cleanup_ends = false;
    {
      std::lock_guard lock(mutex);
      if (!failed.ok()) {
        // Give back what is not in flight; stop what is; then abort.
        if (request == Request::put) {  // the PUT still reads full.front()
          if (current) done_with_locked(current, drop);
        } else {
          drop_unsent_locked(drop);
        }
        if (put_id) to_cancel.push_back(put_id);
        // Parts in flight are left to end: S3 may store a part whose upload
        // runs while the abort does, so the abort waits for them instead.
        const bool quiet = sending.empty() && request == Request::none;
        if (quiet && !upload_id.empty()) {
          request = Request::abort;
          actions.push_back([self] { self->send_abort(); });
        } else if (quiet && upload_id.empty()) {
          ended = true;
        }
        // The caller hears of the failure at once; parts in flight and the
        // abort go on in the background. Only a request that could still
        // store the object (the PUT, the completion) is waited for.
        if (ended || (request != Request::put && request != Request::complete)) {
          answer = take_done_locked();
          answer_with = failed;
        }
        if (!ended && !in_background) {
          in_background = true;
          cleanup_starts = true;
        }
      } else {
        if (mode == Mode::one_put && (parts_made >= 2 || (parts_made == 1 && current))) mode = Mode::multipart;
        if (mode == Mode::multipart && upload_id.empty() && request == Request::none) {
          request = Request::create;
          store->stats_.multipart_started.fetch_add(1, std::memory_order_relaxed);
          actions.push_back([self] {
            self->store->client_->create_multipart_upload(
                self->stored_key, [self](Result<std::string> id) { self->on_created(std::move(id)); },
                self->content_type);
          });
        }
        const std::size_t max_sending = std::max<std::size_t>(setup_.cap - 1, 1);
        while (!upload_id.empty() && !full.empty() && sending.size() < max_sending) {
          FullPart p = std::move(full.front());
          full.pop_front();
          auto body = std::span<const std::byte>(p.part.bytes().data(), p.size);
          const int number = p.number;
          sending.emplace(number, std::make_pair(std::move(p.part), s3::RequestId{0}));
          actions.push_back([self, number, body, id = upload_id] {
            s3::RequestId rid = self->store->client_->upload_part(
                self->stored_key, id, number, body,
                [self, number](Result<s3::CompletedPart> r) { self->on_part_sent(number, std::move(r)); });
            std::lock_guard guard(self->mutex);
            if (auto it = self->sending.find(number); it != self->sending.end()) it->second.second = rid;
          });
        }
        if (mode == Mode::streamed_put && !full.empty() && !ended) {
          if (request == Request::none && !stream_etag) {
            request = Request::put;
            actions.push_back([self] {
              s3::RequestId rid = self->store->client_->put_object_stream(
                  self->stored_key, *self->setup_.expected_size,
                  s3::BodySource{[self](std::span<std::byte> out) { return self->read_body(out); }},
                  [self](Result<s3::PutObjectResult> r) { self->on_stream_sent(std::move(r)); }, self->content_type);
              {
                std::lock_guard guard(self->mutex);
                if (self->request == Request::put) self->put_id = rid;
              }
              self->store->client_->resume(rid);  // for a read that found nothing yet
            });
          } else if (put_id) {
            actions.push_back([self, rid = put_id] { self->store->client_->resume(rid); });
          }
        }
        const bool finishing = caller == Caller::finishing;
        if (finishing && mode == Mode::streamed_put && stream_etag && !ended) {
          result = PutResult{setup_.key, size, *stream_etag, sha_hex};
          ended = true;
        }
        if (finishing && mode == Mode::one_put && request == Request::none && !ended) {
          request = Request::put;
          std::span<const std::byte> body;
          if (!full.empty()) body = {full.front().part.bytes().data(), full.front().size};
          actions.push_back([self, body] {
            s3::RequestId rid = self->store->client_->put_object(
                self->stored_key, body, [self](Result<s3::PutObjectResult> r) { self->on_single_sent(std::move(r)); },
                self->content_type);
            std::lock_guard guard(self->mutex);
            if (self->request == Request::put) self->put_id = rid;
          });
        }
        if (finishing && mode == Mode::multipart && !upload_id.empty() && full.empty() && sending.empty() &&
            request == Request::none && !ended) {
          request = Request::complete;
          std::sort(completed.begin(), completed.end(),
                    [](const auto& a, const auto& b) { return a.part_number < b.part_number; });
          actions.push_back([self, parts = completed, id = upload_id] {
            self->store->client_->complete_multipart_upload(
                self->stored_key, id, parts,
                [self](Result<s3::PutObjectResult> r) { self->on_completed(std::move(r)); });
          });
        }
        if (ended) {
          answer = take_done_locked();
          answer_with = result;
        }
      }
      notify = writable_locked();
      if (ended && in_background) {
        in_background = false;
        cleanup_ends = true;
      }
    }
    if (cleanup_starts) store->background_begins();
    if (cleanup_ends) store->background_ends();
    drop.clear();
    for (auto id : to_cancel) store->client_->cancel(id);
    for (auto& a : actions) a();
    if (notify) notify_writable();
    if (answer) answer(std::move(answer_with));
  }

  void on_created(Result<std::string> id) {
    {
      std::lock_guard lock(mutex);
      request = Request::none;
      if (id.ok()) {
        upload_id = std::move(*id);
      } else {
        fail_locked(id.status());
      }
    }
    schedule();
  }

  void on_part_sent(int number, Result<s3::CompletedPart> r) {
    std::vector<PartPool::Part> drop;
    {
      std::lock_guard lock(mutex);
      if (auto it = sending.find(number); it != sending.end()) {
        done_with_locked(it->second.first, drop);
        sending.erase(it);
      }
      if (r.ok()) {
        completed.push_back(std::move(*r));
      } else {
        fail_locked(r.status());
      }
    }
    drop.clear();
    schedule();
  }

  void on_single_sent(Result<s3::PutObjectResult> r) {
    std::vector<PartPool::Part> drop;
    {
      std::lock_guard lock(mutex);
      put_id = 0;
      request = Request::none;
      if (!full.empty()) {
        done_with_locked(full.front().part, drop);
        full.pop_front();
      }
      if (r.ok()) {
        if (Status s = check_settled(*r, size, setup_.key); !s) r = s;
      }
      if (r.ok() && failed.ok()) {
        result = PutResult{setup_.key, size, s3::unquote_etag(r->etag), sha_hex};
        ended = true;
      } else if (!r.ok()) {
        fail_locked(r.status());
      }
      // A single PUT that succeeded after abort() leaves the object: like S3,
      // the last request to finish wins.
    }
    drop.clear();
    schedule();
  }

  // The streamed PUT's body: the filled parts in order, each given back to
  // the pool once read. On the S3 client thread.
  std::size_t read_body(std::span<std::byte> out) {
    std::vector<PartPool::Part> spent;
    std::size_t n = 0;
    bool notify;
    {
      std::lock_guard lock(mutex);
      while (n < out.size() && !full.empty()) {
        FullPart& p = full.front();
        const std::size_t k = std::min(p.size - front_sent, out.size() - n);
        std::memcpy(out.data() + n, p.part.bytes().data() + front_sent, k);
        n += k;
        front_sent += k;
        if (front_sent == p.size) {
          done_with_locked(p.part, spent);
          full.pop_front();
          front_sent = 0;
        }
      }
      notify = !spent.empty() && writable_locked();
    }
    spent.clear();
    if (notify) notify_writable();
    return n;
  }

  void on_stream_sent(Result<s3::PutObjectResult> r) {
    std::vector<PartPool::Part> drop;
    {
      std::lock_guard lock(mutex);
      put_id = 0;
      request = Request::none;
      if (r.ok()) {
        if (Status s = check_settled(*r, setup_.expected_size.value_or(0), setup_.key); !s) r = s;
      }
      if (r.ok()) {
        stream_etag = s3::unquote_etag(r->etag);
      } else {
        fail_locked(r.status());
      }
      for (auto& p : full) done_with_locked(p.part, drop);
      full.clear();
      front_sent = 0;
    }
    drop.clear();
    schedule();
  }

  void on_completed(Result<s3::PutObjectResult> r) {
    {
      std::lock_guard lock(mutex);
      request = Request::none;
      if (r.ok()) {
        if (Status s = check_settled(*r, size, setup_.key); !s) r = s;
      }
      if (r.ok()) {
        result = PutResult{setup_.key, size, s3::unquote_etag(r->etag), sha_hex};
        ended = true;
        if (!failed.ok()) failed = Status();  // completed before the abort could stop it
        store->stats_.multipart_completed.fetch_add(1, std::memory_order_relaxed);
      } else {
        fail_locked(r.status());
      }
    }
    schedule();
  }

  void send_abort() {
    std::string id;
    {
      std::lock_guard lock(mutex);
      ++abort_tries;
      id = upload_id;
    }
    auto self = this->self();
    store->client_->abort_multipart_upload(stored_key, id, [self](Status s) {
      bool retry = false;
      {
        std::lock_guard lock(self->mutex);
        if (s.ok() || s.kind() == ErrorKind::not_found) {
          self->store->stats_.multipart_aborted.fetch_add(1, std::memory_order_relaxed);
        } else if (self->abort_tries < kAbortTries) {
          retry = true;
        } else {
          self->store->stats_.abort_failures.fetch_add(1, std::memory_order_relaxed);
        }
        if (!retry) {
          self->upload_id.clear();
          self->request = Request::none;
          self->ended = true;
        }
      }
      if (retry) {
        std::chrono::milliseconds delay(1000 << std::min(self->abort_tries - 1, 3));
        self->store->threads_.post_after(delay, [self] { self->send_abort(); });
      } else {
        self->schedule();
      }
    });
  }
};

Result<std::unique_ptr<Upload>> S3Store::begin_put(std::string_view key, std::optional<std::uint64_t> expected_size,
                                                   std::function<void()> when_writable, std::string_view content_type) {
  if (Status s = validate_key(key); !s) return s;
  if (expected_size && *expected_size > std::uint64_t(pool_.part_size()) * kMaxParts)
    return Status::invalid("object larger than 10,000 parts of " + std::to_string(pool_.part_size()) + " bytes");
  UploadParts::Setup setup;
  setup.pool = &pool_;
  setup.threads = &threads_;
  setup.options = &options_;
  setup.key = std::string(key);
  setup.expected_size = expected_size;
  setup.when_writable = std::move(when_writable);
  setup.cap = options_.parts_per_transfer;
  setup.max_parts = kMaxParts;
  const bool streamed =
      expected_size && *expected_size > pool_.part_size() && *expected_size <= s3_options_.stream_put_max;
  // S3 would store its own default (binary/octet-stream) for none.
  auto state =
      std::make_shared<UploadState>(std::move(setup), this, layout_.stored_key(key),
                                    content_type.empty() ? "application/octet-stream" : std::string(content_type),
                                    streamed ? UploadState::Mode::streamed_put : UploadState::Mode::one_put);
  return std::unique_ptr<Upload>(new UploadHandle(std::move(state)));
}

}  // namespace kiroku
