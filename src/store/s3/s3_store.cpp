// s3_store.cpp - the S3 ObjectStore: single PUT or concurrent multipart
// upload (aborted on failure), concurrent ranged GETs delivered in order,
// listings merged across hash partitions.
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

namespace kiroku {
namespace {

std::string unquote(std::string etag) {
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
  return etag;
}

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
        result = PutResult{key, size, unquote(r->etag), sha_hex};
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
        stream_etag = unquote(r->etag);
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
        result = PutResult{key, size, unquote(r->etag), sha_hex};
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

// --- downloads ----------------------------------------------------------------------------

struct S3Store::DownloadState : std::enable_shared_from_this<DownloadState> {
  S3Store* store;
  std::string key, stored_key;
  std::optional<ByteRange> range;
  GetSink sink;
  std::size_t cap;

  struct Slot {
    std::uint64_t offset;
    std::size_t size;
    PartPool::Part part;
    s3::RequestId id = 0;
    bool ready = false;
    std::size_t filled = 0;  // streamed: bytes copied in so far
  };

  std::mutex mutex;
  bool head_sent = false, head_done = false, started = false;
  GetStart start;
  std::string etag;  // quoted, as S3 sends it
  std::uint64_t next_fetch = 0, end = 0;
  std::deque<Slot> window;  // in object order: being fetched or ready
  std::size_t held = 0;     // window slots and chunks with the consumer
  PartPool::Part spare;
  bool waiting = false;
  PartPool::WaitId wait_id = 0;
  bool cancelled = false, ended = false;
  Status failed;
  bool scheduled = false, again = false;
  // One GET for the whole range, copied into the window's slots in order
  // (S3StoreOptions::stream_get_max); fixed once the HEAD answered.
  bool streamed = false;
  bool stream_started = false, stream_done = false, stream_paused = false;
  s3::RequestId stream_id = 0;
  std::size_t stream_skip = 0;   // bytes of a chunk given again after a pause, already copied
  std::uint64_t stream_got = 0;  // bytes copied into slots

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

  // The streamed GET's bytes: copied into the slots not yet full, in order;
  // when they are all full, the transfer pauses (keeping how much of this
  // chunk was copied) until step() adds a slot. On the S3 client thread.
  bool on_stream_data(std::span<const std::byte> chunk) {
    bool filled_one = false, consumed = true;
    {
      std::lock_guard lock(mutex);
      if (!failed.ok() || cancelled) return true;  // being cancelled: drop
      auto rest = chunk.subspan(std::min(stream_skip, chunk.size()));
      for (auto& s : window) {
        if (rest.empty()) break;
        if (s.ready) continue;
        std::size_t k = std::min(s.size - s.filled, rest.size());
        std::memcpy(s.part.bytes().data() + s.filled, rest.data(), k);
        s.filled += k;
        stream_got += k;
        rest = rest.subspan(k);
        if (s.filled == s.size) s.ready = filled_one = true;
      }
      if (rest.empty()) {
        stream_skip = 0;
      } else {
        stream_skip = chunk.size() - rest.size();
        stream_paused = true;
        consumed = false;
      }
    }
    if (filled_one) schedule();
    return consumed;
  }

  void on_stream_done(Result<s3::ObjectInfo> r) {
    {
      std::lock_guard lock(mutex);
      stream_done = true;
      stream_id = 0;
      if (!failed.ok()) {
        // already failing: keep that error
      } else if (!r.ok()) {
        failed = r.status();
      } else if (stream_got != end - start.offset) {
        failed = Status::permanent("S3 GET of '" + key + "' returned a short body");
      } else if (!r->etag.empty() && !etag.empty() && r->etag != etag) {  // no ETag: nothing to compare
        failed = Status::permanent("object '" + key + "' changed during the download");
      }
    }
    schedule();
  }

  void step() {
    auto self = shared_from_this();
    while (true) {
      std::vector<PartPool::Part> drop;
      std::vector<s3::RequestId> to_cancel;
      std::vector<std::function<void()>> actions;
      std::vector<Chunk> deliver;
      bool call_start = false, finish = false;
      Status final_status;
      {
        std::lock_guard lock(mutex);
        if (ended) {
          // nothing
        } else if (!failed.ok() || cancelled) {
          if (failed.ok()) failed = Status::invalid("cancelled");
          bool in_flight = false;
          for (auto& s : window) {
            if (!s.ready && !streamed) {
              in_flight = true;
              if (s.id) to_cancel.push_back(s.id);
            }
          }
          if (stream_started && !stream_done) {
            in_flight = true;
            if (stream_id) to_cancel.push_back(stream_id);
          }
          if (head_sent && !head_done) in_flight = true;
          if (!in_flight) {
            for (auto& s : window) drop.push_back(std::move(s.part));
            held -= window.size();
            window.clear();
            drop.push_back(std::move(spare));
            ended = finish = true;
            final_status = failed;
          }
        } else if (!head_sent) {
          head_sent = true;
          actions.push_back([self] {
            self->store->client_->head_object(self->stored_key,
                                              [self](Result<s3::ObjectInfo> r) { self->on_head(std::move(r)); });
          });
        } else if (head_done) {
          if (!started) {
            started = call_start = true;
          }
          while (next_fetch < end && held < cap && !waiting) {
            PartPool::Part part = std::move(spare);
            if (!part) {
              part = store->pool_.acquire_within(
                  held == 0 && next_fetch == start.offset ? store->options_.first_buffer_wait
                                                          : std::chrono::milliseconds(0),
                  store->threads_,
                  [weak = weak_from_this()](PartPool::Part p) {
                    if (auto s = weak.lock()) s->on_part(std::move(p));
                  },
                  &wait_id);
            }
            if (!part) {
              waiting = true;
              break;
            }
            std::size_t n = std::min<std::uint64_t>(part.bytes().size(), end - next_fetch);
            std::uint64_t offset = next_fetch;
            auto buffer = part.bytes().first(n);
            window.push_back({offset, n, std::move(part)});
            ++held;
            next_fetch += n;
            if (streamed) continue;
            actions.push_back([self, offset, n, buffer] {
              s3::RequestId rid = self->store->client_->get_object(
                  self->stored_key, s3::ByteRange{offset, n}, buffer,
                  [self, offset](Result<s3::GetObjectResult> r) { self->on_got(offset, std::move(r)); });
              std::lock_guard guard(self->mutex);
              for (auto& s : self->window)
                if (s.offset == offset && !s.ready) s.id = rid;
            });
          }
          if (streamed && !stream_started && !window.empty()) {
            stream_started = true;
            actions.push_back([self, range = s3::ByteRange{start.offset, start.length}] {
              s3::RequestId rid = self->store->client_->get_object(
                  self->stored_key, range,
                  s3::ObjectStream{{},
                                   [self](std::span<const std::byte> chunk) { return self->on_stream_data(chunk); }},
                  [self](Result<s3::ObjectInfo> r) { self->on_stream_done(std::move(r)); });
              {
                std::lock_guard guard(self->mutex);
                if (!self->stream_done) self->stream_id = rid;
              }
              self->store->client_->resume(rid);  // for a chunk that found no slot yet
            });
          } else if (streamed && stream_paused && stream_id &&
                     std::any_of(window.begin(), window.end(), [](const Slot& s) { return !s.ready; })) {
            stream_paused = false;
            actions.push_back([self, rid = stream_id] { self->store->client_->resume(rid); });
          }
          while (!window.empty() && window.front().ready) {
            Slot s = std::move(window.front());
            window.pop_front();
            auto data = std::span<const std::byte>(s.part.bytes().data(), s.size);
            deliver.emplace_back(std::move(s.part), data, s.offset, [weak = weak_from_this()] {
              if (auto d = weak.lock()) d->on_release();
            });
          }
          if (window.empty() && next_fetch >= end) {
            ended = finish = true;
            drop.push_back(std::move(spare));
          }
        }
      }
      drop.clear();
      for (auto id : to_cancel) store->client_->cancel(id);
      if (call_start && sink.on_start) sink.on_start(start);
      for (auto& a : actions) a();
      for (auto& c : deliver) {
        if (sink.on_chunk) sink.on_chunk(std::move(c));
      }
      deliver.clear();
      if (finish) {
        auto on_done = std::move(sink.on_done);
        sink = {};
        if (on_done) on_done(std::move(final_status));
      }
      std::lock_guard lock(mutex);
      if (again && !ended) {
        again = false;
        continue;
      }
      again = false;
      scheduled = false;
      return;
    }
  }

  void on_head(Result<s3::ObjectInfo> r) {
    {
      std::lock_guard lock(mutex);
      head_done = true;
      if (!r.ok()) {
        if (failed.ok())
          failed =
              r.status().kind() == ErrorKind::not_found ? Status::not_found("no object '" + key + "'") : r.status();
      } else {
        etag = r->etag;
        start.object = {key, r->size, unquote(r->etag), r->last_modified, r->content_type};
        auto resolved = resolve_range(range, r->size);
        if (!resolved) {
          start.range_unsatisfiable = true;
        } else {
          start.offset = resolved->offset;
          start.length = resolved->length;
        }
        next_fetch = start.offset;
        end = start.offset + start.length;
        streamed = start.length > store->pool_.part_size() && start.length <= store->s3_options_.stream_get_max;
      }
    }
    schedule();
  }

  void on_got(std::uint64_t offset, Result<s3::GetObjectResult> r) {
    {
      std::lock_guard lock(mutex);
      for (auto& s : window) {
        if (s.offset != offset || s.ready) continue;
        s.ready = true;
        s.id = 0;
        if (!r.ok()) {
          if (failed.ok()) failed = r.status();
        } else if (r->bytes != s.size) {
          if (failed.ok()) failed = Status::permanent("S3 GET of '" + key + "' returned a short range");
        } else if (!r->info.etag.empty() && !etag.empty() && r->info.etag != etag) {
          if (failed.ok()) failed = Status::permanent("object '" + key + "' changed during the download");
        }
        break;
      }
    }
    schedule();
  }

  void on_part(PartPool::Part part) {
    {
      std::lock_guard lock(mutex);
      waiting = false;
      if (!part) {  // no buffer came within first_buffer_wait
        if (failed.ok()) failed = no_buffer_status(store->options_);
      } else if (!ended && !spare) {
        spare = std::move(part);
      }
    }
    part.release();
    schedule();
  }

  void on_release() {
    {
      std::lock_guard lock(mutex);
      --held;
      if (ended) return;
    }
    schedule();
  }

  void cancel() {
    PartPool::WaitId id = 0;
    {
      std::lock_guard lock(mutex);
      if (ended) return;
      cancelled = true;
      if (waiting) id = wait_id;
    }
    if (id && store->pool_.cancel_wait(id)) {
      std::lock_guard lock(mutex);
      waiting = false;
    }
    schedule();
  }
};

namespace {

class S3Download final : public Download {
 public:
  explicit S3Download(std::shared_ptr<S3Store::DownloadState> state) : state_(std::move(state)) {}
  void cancel() override { state_->cancel(); }

 private:
  std::shared_ptr<S3Store::DownloadState> state_;
};

}  // namespace

Result<std::unique_ptr<Download>> S3Store::get(std::string_view key, std::optional<ByteRange> range, GetSink sink) {
  if (Status s = validate_key(key); !s) return s;
  if (range && range->suffix == 0 && range->last && *range->last < range->first)
    return Status::invalid("range ends before it starts");
  auto state = std::make_shared<DownloadState>();
  state->store = this;
  state->key = std::string(key);
  state->stored_key = layout_.stored_key(key);
  state->range = range;
  state->sink = std::move(sink);
  state->cap = options_.parts_per_transfer;
  state->schedule();
  return std::unique_ptr<Download>(new S3Download(std::move(state)));
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
                           out = ObjectMeta{key, r->size, unquote(r->etag), r->last_modified, r->content_type};
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

// --- listing -----------------------------------------------------------------------------------

struct S3Store::ListState : std::enable_shared_from_this<ListState> {
  S3Store* store;
  ListRequest request;
  std::function<void(Result<ListPage>)> done;

  struct Partition {
    std::deque<s3::ObjectSummary> items;  // stored keys, in order
    std::string token;
    bool started = false, truncated = false, fetching = false;
    bool more() const { return !started || truncated; }
  };

  std::mutex mutex;
  std::vector<Partition> partitions;
  ListPage page;
  Status failed;
  bool finished = false;
  int page_keys = 0;

  void pump() {
    auto self = shared_from_this();
    std::vector<std::size_t> fetch;
    bool finish = false;
    {
      std::lock_guard lock(mutex);
      if (finished) return;
      while (true) {
        if (!failed.ok()) {
          finish = true;
          break;
        }
        bool any_fetching = false;
        for (auto& p : partitions) any_fetching |= p.fetching;
        if (page.objects.size() == request.limit) {
          bool more = false;
          for (auto& p : partitions) more |= !p.items.empty() || p.more();
          if (more) page.next = page.objects.back().key;
          finish = !any_fetching;  // wait for stray fetches before finishing
          break;
        }
        // Every partition that may have more needs a head before the merge picks.
        bool missing = false;
        for (std::size_t i = 0; i < partitions.size(); ++i) {
          auto& p = partitions[i];
          if (p.items.empty() && p.more()) {
            missing = true;
            if (!p.fetching) {
              p.fetching = true;
              fetch.push_back(i);
            }
          }
        }
        if (missing) break;
        std::size_t best = partitions.size();
        for (std::size_t i = 0; i < partitions.size(); ++i) {
          if (partitions[i].items.empty()) continue;
          if (best == partitions.size() ||
              user_key(i, partitions[i].items.front()) < user_key(best, partitions[best].items.front()))
            best = i;
        }
        if (best == partitions.size()) {
          finish = !any_fetching;
          break;
        }
        auto object = std::move(partitions[best].items.front());
        partitions[best].items.pop_front();
        page.objects.push_back(ObjectMeta{
            std::string(user_key(best, object)), object.size, unquote(object.etag), object.last_modified, {}});
      }
      if (finish) finished = true;
    }
    for (std::size_t i : fetch) send(i);
    if (finish) {
      Result<ListPage> out = failed.ok() ? Result<ListPage>(std::move(page)) : Result<ListPage>(failed);
      store->threads_.post([done = std::move(done), out = std::move(out)]() mutable { done(std::move(out)); });
    }
  }

  std::string_view user_key(std::size_t partition, const s3::ObjectSummary& o) const {
    auto key = store->layout_.user_key(partition, o.key);
    return key ? *key : std::string_view(o.key);
  }

  void send(std::size_t i) {
    s3::ListObjectsRequest r;
    std::string partition = store->layout_.partition_prefix(i);
    r.prefix = partition + request.prefix;
    {
      std::lock_guard lock(mutex);
      r.continuation_token = partitions[i].token;
    }
    if (r.continuation_token.empty() && !request.after.empty()) r.start_after = partition + request.after;
    r.max_keys = page_keys;
    auto self = shared_from_this();
    store->client_->list_objects_v2(std::move(r), [self, i](Result<s3::ListObjectsPage> got) {
      {
        std::lock_guard lock(self->mutex);
        auto& p = self->partitions[i];
        p.fetching = false;
        p.started = true;
        if (!got.ok()) {
          if (self->failed.ok()) self->failed = got.status();
        } else {
          std::string prefix = self->store->layout_.partition_prefix(i);
          for (auto& o : got->objects)
            if (std::string_view(o.key).starts_with(prefix)) p.items.push_back(std::move(o));
          p.truncated = got->is_truncated;
          p.token = got->next_continuation_token;
          if (p.truncated && p.token.empty()) p.truncated = false;  // cannot go on
        }
      }
      self->pump();
    });
  }
};

void S3Store::list(ListRequest request, std::function<void(Result<ListPage>)> done) {
  Status s = validate_key_prefix(request.prefix, "prefix");
  if (s) s = validate_key_prefix(request.after, "after");
  if (s && (request.limit < 1 || request.limit > 1000)) s = Status::invalid("limit must be 1..1000");
  if (!s) {
    threads_.post([done = std::move(done), s] { done(s); });
    return;
  }
  auto state = std::make_shared<ListState>();
  state->store = this;
  state->partitions.resize(layout_.partition_count());
  // A page of each partition holds about twice its share of the listing.
  std::size_t share = request.limit / layout_.partition_count();
  state->page_keys = int(std::clamp<std::size_t>(2 * share + 8, 1, 1000));
  state->request = std::move(request);
  state->done = std::move(done);
  threads_.post([state] { state->pump(); });
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
