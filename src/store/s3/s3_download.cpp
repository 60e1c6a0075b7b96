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

#include "store/read_ahead.h"
#include "store/s3/s3_xml.h"

namespace kiroku {

// --- downloads ----------------------------------------------------------------------------

struct S3Store::DownloadState final : ReadAhead {
  S3Store* store;
  std::string stored_key;

  std::string etag;  // mutex: quoted, as S3 sends it (from the HEAD)
  // One GET for the whole range, copied into the window's slots in order
  // (S3StoreOptions::stream_get_max), instead of one ranged GET per slot;
  // fixed once the HEAD answered.
  enum class Stream { unused, waiting, running, paused, over };
  Stream stream = Stream::unused;  // mutex
  s3::RequestId stream_id = 0;     // mutex
  std::size_t stream_skip = 0;     // mutex: bytes of a chunk given again after a pause, already copied
  std::uint64_t stream_got = 0;    // mutex: bytes copied into slots

  DownloadState(Setup setup, GetSink sink, S3Store* s, std::string stored)
      : ReadAhead(std::move(setup), std::move(sink)), store(s), stored_key(std::move(stored)) {}

  std::shared_ptr<DownloadState> self() { return std::static_pointer_cast<DownloadState>(shared_from_this()); }

  void open() override {
    auto self = this->self();
    store->client_->head_object(stored_key, [self](Result<s3::ObjectInfo> r) { self->on_head(std::move(r)); });
  }

  void on_head(Result<s3::ObjectInfo> r) {
    if (!r.ok()) {
      if (r.status().kind() == ErrorKind::not_found) return opened(Status::not_found("no object '" + setup_.key + "'"));
      return opened(r.status());
    }
    GetStart info;
    info.object = {setup_.key, r->size, s3::unquote_etag(r->etag), r->last_modified, r->content_type};
    if (auto resolved = resolve_range(setup_.range, r->size)) {
      info.offset = resolved->offset;
      info.length = resolved->length;
    } else {
      info.range_unsatisfiable = true;
    }
    {
      std::lock_guard lock(mutex);
      etag = r->etag;
      if (info.length > store->pool_.part_size() && info.length <= store->s3_options_.stream_get_max)
        stream = Stream::waiting;
    }
    opened(std::move(info));
  }

  void fetch(std::uint64_t offset, std::span<std::byte> buffer) override {
    auto self = this->self();
    {
      std::lock_guard lock(mutex);
      if (stream != Stream::unused) return;  // the one GET fills it
    }
    s3::RequestId rid = store->client_->get_object(stored_key, s3::ByteRange{offset, buffer.size()}, buffer,
                                                   [self, offset, size = buffer.size()](Result<s3::GetObjectResult> r) {
                                                     self->on_got(offset, size, std::move(r));
                                                   });
    std::lock_guard lock(mutex);
    for (auto& s : window)
      if (s.offset == offset && !s.ready) s.request = rid;
  }

  void on_got(std::uint64_t offset, std::size_t size, Result<s3::GetObjectResult> r) {
    Status s;
    if (!r.ok()) {
      s = r.status();
    } else if (r->bytes != size) {
      s = Status::permanent("S3 GET of '" + setup_.key + "' returned a short range");
    } else {
      std::lock_guard lock(mutex);
      if (!r->info.etag.empty() && !etag.empty() && r->info.etag != etag)
        s = Status::permanent("object '" + setup_.key + "' changed during the download");
    }
    filled(offset, std::move(s));
  }

  bool in_flight_locked(std::vector<std::function<void()>>& actions) override {
    bool busy = false;
    auto* client = store->client_.get();
    if (stream == Stream::unused) {
      for (auto& s : window) {
        if (s.ready) continue;
        busy = true;
        if (s.request) actions.push_back([client, id = s.request] { client->cancel(id); });
      }
    }
    if (stream == Stream::running || stream == Stream::paused) {
      busy = true;
      if (stream_id) actions.push_back([client, id = stream_id] { client->cancel(id); });
    }
    return busy;
  }

  void reading_locked(std::vector<std::function<void()>>& actions) override {
    auto self = this->self();
    if (stream == Stream::waiting && !window.empty()) {
      stream = Stream::running;
      actions.push_back([self, range = s3::ByteRange{start.offset, start.length}] {
        s3::RequestId rid = self->store->client_->get_object(
            self->stored_key, range,
            s3::ObjectStream{{}, [self](std::span<const std::byte> chunk) { return self->on_stream_data(chunk); }},
            [self](Result<s3::ObjectInfo> r) { self->on_stream_done(std::move(r)); });
        {
          std::lock_guard guard(self->mutex);
          if (self->stream != Stream::over) self->stream_id = rid;
        }
        self->store->client_->resume(rid);  // for a chunk that found no slot yet
      });
    } else if (stream == Stream::paused && stream_id &&
               std::any_of(window.begin(), window.end(), [](const Slot& s) { return !s.ready; })) {
      stream = Stream::running;
      actions.push_back([self, rid = stream_id] { self->store->client_->resume(rid); });
    }
  }

  // The streamed GET's bytes: copied into the slots not yet full, in order;
  // when they are all full, the transfer pauses (keeping how much of this
  // chunk was copied) until a slot is added. On the S3 client thread.
  bool on_stream_data(std::span<const std::byte> chunk) {
    bool filled_one = false, consumed = true;
    {
      std::lock_guard lock(mutex);
      if (!failed.ok() || cancelled) return true;  // being cancelled: drop
      auto rest = chunk.subspan(std::min(stream_skip, chunk.size()));
      for (auto& s : window) {
        if (rest.empty()) break;
        if (s.ready) continue;
        const std::size_t k = std::min(s.size - s.filled, rest.size());
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
        stream = Stream::paused;
        consumed = false;
      }
    }
    if (filled_one) schedule();
    return consumed;
  }

  void on_stream_done(Result<s3::ObjectInfo> r) {
    {
      std::lock_guard lock(mutex);
      stream = Stream::over;
      stream_id = 0;
      if (!failed.ok()) {
        // already failing: keep that error
      } else if (!r.ok()) {
        failed = r.status();
      } else if (stream_got != end - start.offset) {
        failed = Status::permanent("S3 GET of '" + setup_.key + "' returned a short body");
      } else if (!r->etag.empty() && !etag.empty() && r->etag != etag) {  // no ETag: nothing to compare
        failed = Status::permanent("object '" + setup_.key + "' changed during the download");
      }
    }
    schedule();
  }
};

Result<std::unique_ptr<Download>> S3Store::get(std::string_view key, std::optional<ByteRange> range, GetSink sink) {
  if (Status s = validate_key(key); !s) return s;
  if (range && range->suffix == 0 && range->last && *range->last < range->first)
    return Status::invalid("range ends before it starts");
  ReadAhead::Setup setup;
  setup.pool = &pool_;
  setup.threads = &threads_;
  setup.options = &options_;
  setup.key = std::string(key);
  setup.range = range;
  setup.cap = options_.parts_per_transfer;
  auto state = std::make_shared<DownloadState>(std::move(setup), std::move(sink), this, layout_.stored_key(key));
  state->begin();
  return std::unique_ptr<Download>(new DownloadHandle(std::move(state)));
}

}  // namespace kiroku
