// s3_download.cpp - S3 downloads: one streamed GET, or concurrent ranged GETs delivered in order.
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
        start.object = {key, r->size, s3::unquote_etag(r->etag), r->last_modified, r->content_type};
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

}  // namespace kiroku
