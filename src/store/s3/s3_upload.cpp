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

namespace kiroku {
namespace {

// Tries of an abort, each with S3Client's own retries, the later ones after
// 1, 2, 4, 8 s: a multipart upload outlives a short outage of S3 rather
// than staying behind as orphaned parts. (A bucket lifecycle rule that
// aborts incomplete multipart uploads is the backstop.)
constexpr int kAbortTries = 5;

// A write settled by a HEAD (its answer had no ETag): the object S3 holds must
// be the one sent, else the write's outcome is unknown and reported as failed.
Status check_settled(const s3::PutObjectResult& r, std::uint64_t size, const std::string& key) {
  if (!r.settled_size || *r.settled_size == size) return Status();
  return Status::permanent("S3 upload of '" + key + "': S3 answered without an ETag and then holds " +
                           std::to_string(*r.settled_size) + " bytes, " + std::to_string(size) + " sent");
}

}  // namespace

// --- uploads ----------------------------------------------------------------------

struct S3Store::UploadState : std::enable_shared_from_this<UploadState> {
  S3Store* store;
  std::string key, stored_key;
  std::string content_type;  // stored with the object when not empty
  std::optional<std::uint64_t> expected_size;
  std::function<void()> when_writable;
  std::size_t cap;  // parts held at once

  struct Pending {
    int number;
    PartPool::Part part;
    std::size_t size;
  };

  std::mutex mutex;
  PartPool::Part current;
  std::size_t fill = 0;
  std::deque<Pending> full;                                         // filled, not yet sent
  std::map<int, std::pair<PartPool::Part, s3::RequestId>> sending;  // by part number
  std::size_t held = 0;
  bool waiting = false;
  PartPool::WaitId wait_id = 0;
  bool want_writable = false;
  int parts_made = 0;
  bool multipart = false;  // more than one part: known once a second part starts
  // One PUT whose body is read from `full` as it fills (S3StoreOptions::
  // stream_put_max); fixed at begin_put.
  bool streamed = false;
  std::size_t front_sent = 0;  // bytes of full.front() the streamed PUT has read
  bool stream_stored = false;  // the streamed PUT succeeded
  std::string stream_etag;
  bool creating = false;
  std::string upload_id;
  std::vector<s3::CompletedPart> completed;
  bool single_sent = false, completing = false;
  bool aborting = false;
  int abort_tries = 0;
  bool in_background = false;  // failed, not yet ended (S3Store::cleaning_up)
  bool closed = false, finishing = false, ended = false;
  Status failed;
  std::function<void(Result<PutResult>)> done;
  Result<PutResult> result = Status::invalid("cancelled");
  Sha256Stream sha;
  std::string sha_hex;
  std::uint64_t size = 0;
  bool scheduled = false, again = false;
  s3::RequestId single_id = 0;

  void schedule() {
    {
      std::lock_guard lock(mutex);
      if (scheduled) {
        again = true;
        return;
      }
      scheduled = true;
    }
    store->threads_.post([self = shared_from_this()] { self->step(); });
  }

  void fail_locked(Status s) {
    if (failed.ok()) failed = std::move(s);
  }

  void on_part(PartPool::Part part) {
    bool notify = false;
    {
      std::lock_guard lock(mutex);
      waiting = false;
      if (!part) {  // no buffer came within first_buffer_wait
        fail_locked(no_buffer_status(store->options_));
        notify = want_writable;
        want_writable = false;
      } else if (!closed && failed.ok() && !current) {
        current = std::move(part);
        fill = 0;
        ++held;
        if (parts_made > 0 && !streamed) multipart = true;
        notify = want_writable;
        want_writable = false;
      }
    }
    part.release();
    if (notify && when_writable) store->threads_.post(when_writable);
    schedule();
  }

  Result<std::size_t> write(std::span<const std::byte> data) {
    std::size_t taken = 0;
    bool step_needed = false;
    {
      std::lock_guard lock(mutex);
      if (!failed.ok()) return failed;
      if (closed) return Status::invalid("upload already finished");
      if (expected_size && data.size() > *expected_size - size) {
        fail_locked(Status::invalid("upload longer than the " + std::to_string(*expected_size) + " bytes announced"));
        step_needed = true;
        data = {};
      }
      const std::size_t part_size = store->pool_.part_size();
      while (taken < data.size()) {
        if (!current) {
          if (parts_made >= 10000) {
            fail_locked(Status::invalid("object larger than 10,000 parts"));
            step_needed = true;
            break;
          }
          if (held >= cap || waiting) {
            want_writable = true;
            break;
          }
          current = store->pool_.acquire_within(
              held == 0 && parts_made == 0 ? store->options_.first_buffer_wait : std::chrono::milliseconds(0),
              store->threads_,
              [weak = weak_from_this()](PartPool::Part p) {
                if (auto self = weak.lock()) self->on_part(std::move(p));
              },
              &wait_id);
          if (!current) {
            waiting = true;
            want_writable = true;
            break;
          }
          fill = 0;
          ++held;
          if (parts_made > 0 && !multipart && !streamed) {
            multipart = true;
            step_needed = true;
          }
        }
        std::size_t n = std::min(part_size - fill, data.size() - taken);
        std::memcpy(current.bytes().data() + fill, data.data() + taken, n);
        sha.update(data.subspan(taken, n));
        fill += n;
        taken += n;
        size += n;
        if (fill == part_size) {
          full.push_back({++parts_made, std::move(current), fill});
          fill = 0;
          step_needed = true;
        }
      }
      if (!failed.ok() && taken == 0) return failed;
    }
    if (step_needed) schedule();
    return taken;
  }

  void finish(std::function<void(Result<PutResult>)> d) {
    {
      std::lock_guard lock(mutex);
      if (finishing) {
        store->threads_.post([d = std::move(d)] { d(Status::invalid("upload already finished")); });
        return;
      }
      closed = finishing = true;
      done = std::move(d);
      if (expected_size && *expected_size != size) {
        fail_locked(Status::invalid("upload of " + std::to_string(size) + " bytes, " + std::to_string(*expected_size) +
                                    " expected"));
      } else if (current && fill > 0) {
        full.push_back({++parts_made, std::move(current), fill});
      }
      sha_hex = sha.finish_hex();
    }
    cancel_pool_wait();
    schedule();
  }

  void abort() {
    {
      std::lock_guard lock(mutex);
      if (ended) return;
      closed = true;
      fail_locked(Status::invalid("cancelled"));
    }
    cancel_pool_wait();
    schedule();
  }

  void cancel_pool_wait() {
    PartPool::WaitId id = 0;
    {
      std::lock_guard lock(mutex);
      if (waiting) id = wait_id;
    }
    if (id && store->pool_.cancel_wait(id)) {
      std::lock_guard lock(mutex);
      waiting = false;
    }
  }

  void step() {
    while (true) {
      std::vector<PartPool::Part> drop;
      std::vector<s3::RequestId> to_cancel;
      std::vector<std::function<void()>> actions;
      std::function<void(Result<PutResult>)> finished;
      Result<PutResult> final_result = Status::invalid("cancelled");
      bool notify = false;
      bool cleanup_starts = false, cleanup_ends = false;  // for S3Store::cleaning_up()
      {
        std::lock_guard lock(mutex);
        auto self = shared_from_this();
        if (!failed.ok()) {
          // Give back what is not in flight; stop what is; then abort.
          if (current) {
            drop.push_back(std::move(current));
            --held;
          }
          if (!single_sent) {  // else a PUT still reads full.front()
            for (auto& p : full) drop.push_back(std::move(p.part));
            held -= full.size();
            full.clear();
          }
          // Parts in flight are left to end: S3 may store a part whose upload
          // runs while the abort does, so the abort waits for them instead.
          if (single_id) to_cancel.push_back(single_id);
          bool quiet = sending.empty() && !creating && !single_sent && !completing;
          if (quiet && !upload_id.empty() && !aborting) {
            aborting = true;
            actions.push_back([self] { self->send_abort(); });
          } else if (quiet && upload_id.empty() && !ended) {
            ended = true;
          }
          // The caller hears of the failure at once; parts in flight and the
          // abort go on in the background. Only a request that could still
          // store the object (the single PUT, the completion) is waited for.
          if (done && (ended || (!single_sent && !completing))) {
            finished = std::move(done);
            final_result = failed;
          }
          if (!ended && !in_background) {
            in_background = true;
            cleanup_starts = true;
          }
          notify = want_writable;
          want_writable = false;
        } else {
          if (multipart && upload_id.empty() && !creating) {
            creating = true;
            store->stats_.multipart_started.fetch_add(1, std::memory_order_relaxed);
            actions.push_back([self] {
              self->store->client_->create_multipart_upload(
                  self->stored_key, [self](Result<std::string> id) { self->on_created(std::move(id)); },
                  self->content_type);
            });
          }
          const std::size_t max_sending = std::max<std::size_t>(cap - 1, 1);
          while (!upload_id.empty() && !full.empty() && sending.size() < max_sending) {
            Pending p = std::move(full.front());
            full.pop_front();
            auto body = std::span<const std::byte>(p.part.bytes().data(), p.size);
            int number = p.number;
            sending.emplace(number, std::make_pair(std::move(p.part), s3::RequestId{0}));
            actions.push_back([self, number, body, id = upload_id] {
              s3::RequestId rid = self->store->client_->upload_part(
                  self->stored_key, id, number, body,
                  [self, number](Result<s3::CompletedPart> r) { self->on_part_sent(number, std::move(r)); });
              std::lock_guard guard(self->mutex);
              if (auto it = self->sending.find(number); it != self->sending.end()) it->second.second = rid;
            });
          }
          if (streamed && !full.empty() && !ended) {
            if (!single_sent && !stream_stored) {
              single_sent = true;
              actions.push_back([self] {
                s3::RequestId rid = self->store->client_->put_object_stream(
                    self->stored_key, *self->expected_size,
                    s3::BodySource{[self](std::span<std::byte> out) { return self->read_body(out); }},
                    [self](Result<s3::PutObjectResult> r) { self->on_stream_sent(std::move(r)); }, self->content_type);
                {
                  std::lock_guard guard(self->mutex);
                  self->single_id = rid;
                }
                self->store->client_->resume(rid);  // for a read that found nothing yet
              });
            } else if (single_id) {
              actions.push_back([self, rid = single_id] { self->store->client_->resume(rid); });
            }
          }
          if (streamed && stream_stored && closed && !ended) {
            result = PutResult{key, size, stream_etag, sha_hex};
            ended = true;
          }
          if (closed && !multipart && !streamed && !single_sent && !ended) {
            single_sent = true;
            std::span<const std::byte> body;
            if (!full.empty()) body = {full.front().part.bytes().data(), full.front().size};
            actions.push_back([self, body] {
              s3::RequestId rid = self->store->client_->put_object(
                  self->stored_key, body, [self](Result<s3::PutObjectResult> r) { self->on_single_sent(std::move(r)); },
                  self->content_type);
              std::lock_guard guard(self->mutex);
              self->single_id = rid;
            });
          }
          if (closed && multipart && !upload_id.empty() && full.empty() && sending.empty() && !completing && !ended) {
            completing = true;
            std::sort(completed.begin(), completed.end(),
                      [](const auto& a, const auto& b) { return a.part_number < b.part_number; });
            actions.push_back([self, parts = completed, id = upload_id] {
              self->store->client_->complete_multipart_upload(
                  self->stored_key, id, parts,
                  [self](Result<s3::PutObjectResult> r) { self->on_completed(std::move(r)); });
            });
          }
          if (ended && done) {
            finished = std::move(done);
            final_result = result;
          }
          if (want_writable && held < cap && !waiting) {
            notify = true;
            want_writable = false;
          }
        }
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
      if (notify && when_writable) when_writable();
      if (finished) finished(std::move(final_result));

      std::lock_guard lock(mutex);
      if (again) {
        again = false;
        continue;
      }
      scheduled = false;
      return;
    }
  }

  void on_created(Result<std::string> id) {
    {
      std::lock_guard lock(mutex);
      creating = false;
      if (id.ok()) {
        upload_id = std::move(*id);
      } else {
        fail_locked(id.status());
      }
    }
    schedule();
  }

  void on_part_sent(int number, Result<s3::CompletedPart> r) {
    PartPool::Part part;
    {
      std::lock_guard lock(mutex);
      if (auto it = sending.find(number); it != sending.end()) {
        part = std::move(it->second.first);
        sending.erase(it);
        --held;
      }
      if (r.ok()) {
        completed.push_back(std::move(*r));
      } else {
        fail_locked(r.status());
      }
    }
    part.release();
    schedule();
  }

  void on_single_sent(Result<s3::PutObjectResult> r) {
    PartPool::Part part;
    {
      std::lock_guard lock(mutex);
      single_id = 0;
      single_sent = false;
      if (!full.empty()) {
        part = std::move(full.front().part);
        full.pop_front();
        --held;
      }
      if (r.ok()) {
        if (Status s = check_settled(*r, size, key); !s) r = s;
      }
      if (r.ok() && failed.ok()) {
        result = PutResult{key, size, s3::unquote_etag(r->etag), sha_hex};
        ended = true;
      } else if (!r.ok()) {
        fail_locked(r.status());
      }
      // A single PUT that succeeded after abort() leaves the object: like S3,
      // the last request to finish wins.
    }
    part.release();
    schedule();
  }

  // The streamed PUT's body: the filled parts in order, each given back to
  // the pool once read. On the S3 client thread.
  std::size_t read_body(std::span<std::byte> out) {
    std::vector<PartPool::Part> spent;
    std::size_t n = 0;
    bool notify = false;
    {
      std::lock_guard lock(mutex);
      while (n < out.size() && !full.empty()) {
        Pending& p = full.front();
        std::size_t k = std::min(p.size - front_sent, out.size() - n);
        std::memcpy(out.data() + n, p.part.bytes().data() + front_sent, k);
        n += k;
        front_sent += k;
        if (front_sent == p.size) {
          spent.push_back(std::move(p.part));
          full.pop_front();
          front_sent = 0;
          --held;
        }
      }
      if (!spent.empty() && want_writable && held < cap && !waiting) {
        notify = true;
        want_writable = false;
      }
    }
    spent.clear();
    if (notify && when_writable) store->threads_.post(when_writable);
    return n;
  }

  void on_stream_sent(Result<s3::PutObjectResult> r) {
    std::vector<PartPool::Part> drop;
    {
      std::lock_guard lock(mutex);
      single_id = 0;
      single_sent = false;
      if (r.ok()) {
        if (Status s = check_settled(*r, expected_size.value_or(0), key); !s) r = s;
      }
      if (r.ok()) {
        stream_stored = true;
        stream_etag = s3::unquote_etag(r->etag);
      } else {
        fail_locked(r.status());
      }
      for (auto& p : full) drop.push_back(std::move(p.part));
      held -= full.size();
      full.clear();
      front_sent = 0;
    }
    drop.clear();
    schedule();
  }

  void on_completed(Result<s3::PutObjectResult> r) {
    {
      std::lock_guard lock(mutex);
      completing = false;
      if (r.ok()) {
        if (Status s = check_settled(*r, size, key); !s) r = s;
      }
      if (r.ok()) {
        result = PutResult{key, size, s3::unquote_etag(r->etag), sha_hex};
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
    auto self = shared_from_this();
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
  if (expected_size && *expected_size > std::uint64_t(pool_.part_size()) * 10000)
    return Status::invalid("object larger than 10,000 parts of " + std::to_string(pool_.part_size()) + " bytes");
  auto state = std::make_shared<UploadState>();
  state->store = this;
  state->key = std::string(key);
  state->stored_key = layout_.stored_key(key);
  state->expected_size = expected_size;
  // S3 would store its own default (binary/octet-stream) for none.
  state->content_type = content_type.empty() ? "application/octet-stream" : std::string(content_type);
  state->when_writable = std::move(when_writable);
  state->cap = options_.parts_per_transfer;
  state->streamed = expected_size && *expected_size > pool_.part_size() && *expected_size <= s3_options_.stream_put_max;
  return std::unique_ptr<Upload>(new UploadHandle<S3Store::UploadState>(std::move(state)));
}

}  // namespace kiroku
