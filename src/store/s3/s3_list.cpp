// s3_list.cpp - S3 listings merged across the hash partitions, paginated.
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
            std::string(user_key(best, object)), object.size, s3::unquote_etag(object.etag), object.last_modified, {}});
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

}  // namespace kiroku
