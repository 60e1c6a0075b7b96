// collector.cpp - per-shard batches, spool appends, group commit, answers.
#include "ingest/collector.h"

#include <pthread.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include "ingest/id.h"
#include "ingest/json_events.h"
#include "ingest/parse.h"
#include "ops/metrics.h"

namespace kiroku {
namespace {

using Clock = std::chrono::steady_clock;

Taken reported(Outcome o, std::size_t events = 0, std::string_view error = {}) {
  Taken t;
  t.outcome = o;
  t.events = static_cast<std::uint32_t>(events);
  t.error = error;
  return t;
}

Taken held() {
  Taken t;
  t.held = true;
  return t;
}

Outcome spool_error_outcome(const Status& st) {
  return st.kind() == ErrorKind::full ? Outcome::disk_full : Outcome::spool_failed;
}

}  // namespace

// A request waiting for its events to become durable.
struct Waiter {
  std::uint32_t ticket;
  std::uint32_t count;
};

struct Collector::Shard {
  Shard(unsigned i, Runtime& runtime, const CollectorOptions& o)
      : index(i), timer(runtime, i), ids(o.instance, i, o.id_floor_unix_ms) {}

  const unsigned index;
  Timer timer;
  IdGenerator ids;
  std::unique_ptr<EventBuffer> current;
  std::uint64_t seq = 0;
  SegmentWriter segment;
  QueryBuffers query;
  JsonEventParser json;
  std::string error;  // Taken::error of a refused batch
  bool stopped = false;
  std::atomic<std::uint64_t> pending{0};  // events in `current`, for other threads

  // durability=process/fsync: requests whose events are in `current` but not
  // yet in the spool. One write (and for fsync one fdatasync) at the end of
  // the loop turn serves every request the turn handled.
  std::size_t spooled = 0;  // bytes at the front of `current` already in the spool
  std::vector<Waiter> write_waiting;
  std::vector<Waiter> write_running;
  bool write_scheduled = false;

  // durability=fsync: written, waiting for a sync to start (with dups of the
  // descriptors of the segments they were written to), and covered by the
  // sync in flight (its descriptors are only the syncer's until on_synced).
  std::vector<Waiter> sync_waiting;
  std::vector<int> sync_fds;
  std::uint64_t sync_fds_segment = 0;  // segment_gen of sync_fds.back()
  std::vector<Waiter> sync_running;
  std::vector<int> job_fds;
  bool sync_in_flight = false;
  OpMemory sync_post_memory;           // the syncer's post of on_synced
  std::atomic<bool> sync_busy{false};  // in flight or waiting, for flush_all
  std::uint64_t segment_gen = 0;       // counts segments created

  // durability=sink: requests waiting for the current batch, and for the
  // batches handed to the writer (in order).
  std::vector<Waiter> waiting_current;
  struct Handed {
    std::uint64_t seq;
    Clock::time_point at;
    std::vector<Waiter> waiters;
  };
  std::deque<Handed> waiting_commit;
};

// One thread that runs the shards' fdatasyncs: a shard queues itself with
// its job_fds filled; the result goes back to the shard's thread.
class Collector::Syncer {
 public:
  explicit Syncer(Collector& c) : c_(c) {
    queue_.reserve(c.shards_.size());
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "kiroku-sync");
      run();
    });
  }
  ~Syncer() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void submit(Shard& s) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(&s);
    }
    cv_.notify_one();
  }

 private:
  void run() {
    std::vector<Shard*> batch;
    batch.reserve(c_.shards_.size());
    for (;;) {
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        batch.swap(queue_);
      }
      for (Shard* s : batch) {
        int error = 0;
        for (int fd : s->job_fds) {
          int r;
          while ((r = ::fdatasync(fd)) != 0 && errno == EINTR) {}
          if (r != 0 && error == 0) error = errno;
          ::close(fd);
        }
        s->job_fds.clear();
        // One sync in flight per shard: its completion's memory is the shard's.
        c_.runtime_.post(
            s->index, [this, s, error] { c_.on_synced(*s, error); }, s->sync_post_memory);
      }
      batch.clear();
    }
  }

  Collector& c_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Shard*> queue_;
  bool stop_ = false;
  std::thread thread_;
};

Collector::Collector(CollectorOptions options, Runtime& runtime, BatchWriter& writer, Spool* spool,
                     CollectorMetrics metrics, Answers& answers)
    : options_(options), runtime_(runtime), writer_(writer), spool_(spool), metrics_(metrics), answers_(answers) {
  if (options_.durability == Durability::none || options_.durability == Durability::sink) spool_ = nullptr;
  for (unsigned i = 0; i < runtime_.shards(); ++i) {
    auto s = std::make_unique<Shard>(i, runtime_, options_);
    s->current = writer_.take_buffer();
    s->current->bytes.reserve(std::min<std::size_t>(options_.batch_max, 16384) * 64);
    s->sync_fds.reserve(4);
    s->job_fds.reserve(4);
    shards_.push_back(std::move(s));
  }
  if (spool_ && options_.durability == Durability::fsync) syncer_ = std::make_unique<Syncer>(*this);
}

Collector::~Collector() {
  syncer_.reset();  // joins: no fdatasync runs past here
  for (auto& s : shards_) {
    for (int fd : s->sync_fds) ::close(fd);
  }
}

void Collector::start() {
  for (auto& s : shards_) {
    Shard* sp = s.get();
    runtime_.post(sp->index, [this, sp] { arm_timer(*sp); });
  }
}

void Collector::arm_timer(Shard& s) {
  if (s.stopped) return;
  s.timer.after(options_.flush_interval, [this, &s] {
    if (s.stopped) return;
    flush_shard(s);
    expire_waiters(s);
    arm_timer(s);
  });
}

std::uint64_t Collector::pending_in_shards() const {
  std::uint64_t n = 0;
  for (auto& s : shards_) n += s->pending.load(std::memory_order_relaxed);
  return n;
}

Outcome Collector::admit(Shard& s, std::size_t bytes) {
  Outcome o = Outcome::accepted;
  if (spool_) {
    if (spool_->would_exceed(bytes)) o = Outcome::spool_full;
  } else if (writer_.backlog_full()) {
    o = Outcome::backlog_full;
  }
  if (o != Outcome::accepted && metrics_.rejected_full) metrics_.rejected_full->inc(s.index);
  return o;
}

Taken Collector::take_query(unsigned shard, std::string_view query, std::int64_t received_us, Holder& holder) {
  Shard& s = *shards_[shard];
  EventInput in;
  if (auto err = parse_event_query(query, s.query, in)) {
    if (metrics_.rejected_invalid) metrics_.rejected_invalid->inc(s.index);
    return reported(Outcome::invalid, 0, err.message);
  }
  const std::size_t size = record_size(in.name.size(), in.client_id.size());
  if (Outcome o = admit(s, size); o != Outcome::accepted) return reported(o);
  EventView e{
      s.ids.next(received_us / 1000), received_us, in.at_us.value_or(received_us), in.value, in.name, in.client_id};
  const std::size_t before = s.current->bytes.size();
  s.current->append(e);
  return commit(s, holder, before, 1);
}

Taken Collector::take_batch(unsigned shard, std::string_view body, std::int64_t received_us, Holder& holder) {
  Shard& s = *shards_[shard];
  const std::size_t before = s.current->bytes.size();
  const std::size_t count_before = s.current->count;
  const std::int64_t oldest_before = s.current->oldest_received_us;
  std::size_t n = 0;
  s.error = s.json.parse(body, [&](const EventInput& in) {
    EventView e{
        s.ids.next(received_us / 1000), received_us, in.at_us.value_or(received_us), in.value, in.name, in.client_id};
    s.current->append(e);
    ++n;
    return true;
  });
  auto rollback = [&] {
    s.current->bytes.resize(before);
    s.current->count = count_before;
    s.current->oldest_received_us = oldest_before;
  };
  if (!s.error.empty()) {
    rollback();
    if (metrics_.rejected_invalid) metrics_.rejected_invalid->inc(s.index);
    return reported(Outcome::invalid, 0, s.error);
  }
  if (n == 0) return reported(Outcome::accepted);
  // Admission is decided on the whole batch, after parsing.
  if (Outcome o = admit(s, s.current->bytes.size() - before); o != Outcome::accepted) {
    rollback();
    return reported(o);
  }
  return commit(s, holder, before, n);
}

Taken Collector::commit(Shard& s, Holder& holder, std::size_t before, std::size_t n) {
  const auto events = static_cast<std::uint32_t>(n);
  if (spool_) {
    if (!s.segment.is_open()) {
      auto w = spool_->create(s.index);
      if (!w.ok()) {
        s.current->bytes.resize(before);
        s.current->count -= n;
        if (s.current->count == 0) s.current->oldest_received_us = 0;
        spool_failed(s, w.status(), 1);
        return reported(spool_error_outcome(w.status()));
      }
      s.segment = std::move(*w);
      ++s.segment_gen;
    }
    // Answered once the loop turn's events are written (run_write).
    s.write_waiting.push_back({holder.hold(), events});
    s.pending.store(s.current->count, std::memory_order_relaxed);
    schedule_write(s);
    if (s.current->count >= options_.batch_max) flush_shard(s);
    return held();
  }
  s.pending.store(s.current->count, std::memory_order_relaxed);
  if (metrics_.accepted) metrics_.accepted->add(s.index, n);
  Taken t = reported(Outcome::accepted, n);
  if (options_.durability == Durability::sink) {
    s.waiting_current.push_back({holder.hold(), events});
    t = held();
  }
  if (s.current->count >= options_.batch_max) flush_shard(s);
  return t;
}

void Collector::schedule_write(Shard& s) {
  if (s.write_scheduled) return;
  s.write_scheduled = true;
  // Posted: it runs after the reads this turn of the loop already has.
  runtime_.post(s.index, [this, &s] { run_write(s); });
}

void Collector::run_write(Shard& s) {
  s.write_scheduled = false;
  if (s.write_waiting.empty()) return;
  s.write_running.swap(s.write_waiting);
  std::size_t events = 0;
  for (const Waiter& w : s.write_running) events += w.count;
  const auto& bytes = s.current->bytes;
  Status st = s.segment.append(
      std::string_view(reinterpret_cast<const char*>(bytes.data()) + s.spooled, bytes.size() - s.spooled));
  if (!st.ok()) {
    // Nothing of these requests is kept: their records leave the batch.
    s.current->bytes.resize(s.spooled);
    s.current->count -= events;
    if (s.current->count == 0) s.current->oldest_received_us = 0;
    s.pending.store(s.current->count, std::memory_order_relaxed);
    spool_failed(s, st, s.write_running.size());
    for (auto& w : s.write_running) answers_.answer(s.index, w.ticket, spool_error_outcome(st), 0);
    s.write_running.clear();
    // The segment refuses further appends after a failure: start a new one.
    flush_shard(s);
    if (s.segment.is_open()) spool_->remove(s.segment.seal());
    return;
  }
  s.spooled = bytes.size();
  if (metrics_.accepted) metrics_.accepted->add(s.index, events);
  if (syncer_) {
    // The sync covering this write runs on the syncer thread.
    int fd = -1;
    if (s.sync_fds.empty() || s.sync_fds_segment != s.segment_gen) {
      fd = s.segment.dup_fd();
      if (fd >= 0) {
        s.sync_fds.push_back(fd);
        s.sync_fds_segment = s.segment_gen;
      }
    }
    if (fd >= 0 || (!s.sync_fds.empty() && s.sync_fds_segment == s.segment_gen)) {
      for (auto& w : s.write_running) s.sync_waiting.push_back(std::move(w));
      s.write_running.clear();
      s.sync_busy.store(true, std::memory_order_relaxed);
      start_sync(s);
      return;
    }
    st = s.segment.sync();  // no descriptor to spare: sync here
  } else if (options_.durability == Durability::fsync) {
    st = s.segment.sync();
  }
  for (auto& w : s.write_running)
    answers_.answer(s.index, w.ticket, st.ok() ? Outcome::accepted : Outcome::sync_failed, w.count);
  s.write_running.clear();
  if (!st.ok()) spdlog::error("spool fsync failed: {}", st.message());
}

void Collector::start_sync(Shard& s) {
  if (s.sync_in_flight || s.sync_waiting.empty()) return;
  s.sync_in_flight = true;
  s.sync_running.swap(s.sync_waiting);
  s.job_fds.swap(s.sync_fds);
  syncer_->submit(s);
}

void Collector::on_synced(Shard& s, int error) {
  s.sync_in_flight = false;
  if (error == 0) {
    for (auto& w : s.sync_running) answers_.answer(s.index, w.ticket, Outcome::accepted, w.count);
    s.sync_running.clear();
    start_sync(s);
  } else {
    // After a failed fdatasync the file proves nothing any more: the requests
    // written to it since get the same answer, and a new segment starts. Their
    // events stay in the batch and are stored.
    spdlog::error("spool fsync failed: {}", std::strerror(error));
    for (auto* list : {&s.sync_running, &s.sync_waiting})
      for (auto& w : *list) answers_.answer(s.index, w.ticket, Outcome::sync_failed, w.count);
    s.sync_running.clear();
    s.sync_waiting.clear();
    for (int fd : s.sync_fds) ::close(fd);
    s.sync_fds.clear();
    if (s.segment.is_open()) s.segment.mark_broken();
    flush_shard(s);
  }
  if (!s.sync_in_flight && s.sync_waiting.empty()) s.sync_busy.store(false, std::memory_order_relaxed);
}

void Collector::spool_failed(Shard& s, const Status& st, std::size_t requests) {
  if (metrics_.spool_errors) metrics_.spool_errors->inc(s.index);
  if (st.kind() == ErrorKind::full && metrics_.rejected_full) metrics_.rejected_full->add(s.index, requests);
  static std::atomic<std::int64_t> last_log{0};
  const auto sec = std::chrono::duration_cast<std::chrono::seconds>(Clock::now().time_since_epoch()).count();
  if (last_log.exchange(sec) != sec) spdlog::error("spool write failed: {}", st.message());
}

void Collector::flush_shard(Shard& s) {
  // The batch leaves with its segment: what it holds must be written first.
  if (!s.write_waiting.empty()) run_write(s);
  if (s.current->empty()) return;
  Batch b;
  b.shard = s.index;
  b.seq = s.seq++;
  b.count = s.current->count;
  b.events = std::move(s.current);
  if (s.segment.is_open()) b.segment = s.segment.seal();
  if (options_.durability == Durability::sink) {
    s.waiting_commit.push_back({b.seq, Clock::now(), std::move(s.waiting_current)});
    s.waiting_current.clear();
  }
  s.current = writer_.take_buffer();
  s.spooled = 0;
  s.pending.store(0, std::memory_order_relaxed);
  writer_.submit(std::move(b));
}

void Collector::on_batch_done(unsigned shard, std::uint64_t seq, bool ok) {
  if (options_.durability != Durability::sink || shard >= shards_.size()) return;
  Shard* s = shards_[shard].get();
  runtime_.post(shard, [this, s, seq, ok] {
    while (!s->waiting_commit.empty() && s->waiting_commit.front().seq <= seq) {
      auto h = std::move(s->waiting_commit.front());
      s->waiting_commit.pop_front();
      const Outcome o = ok && h.seq == seq ? Outcome::accepted : Outcome::not_committed;
      for (auto& w : h.waiters) answers_.answer(s->index, w.ticket, o, w.count);
    }
  });
}

void Collector::expire_waiters(Shard& s) {
  const auto limit = Clock::now() - options_.sink_wait_timeout;
  while (!s.waiting_commit.empty() && s.waiting_commit.front().at < limit) {
    auto h = std::move(s.waiting_commit.front());
    s.waiting_commit.pop_front();
    for (auto& w : h.waiters) answers_.answer(s.index, w.ticket, Outcome::commit_timeout, w.count);
  }
}

void Collector::set_instance(unsigned instance, std::int64_t floor_unix_ms) {
  for (auto& s : shards_) {
    Shard* sp = s.get();
    runtime_.post(sp->index, [sp, instance, floor_unix_ms] { sp->ids.set_instance(instance, floor_unix_ms); });
  }
}

void Collector::flush_all() {
  std::vector<std::future<void>> done;
  for (auto& s : shards_) {
    Shard* sp = s.get();
    auto p = std::make_shared<std::promise<void>>();
    done.push_back(p->get_future());
    runtime_.post(sp->index, [this, sp, p] {
      flush_shard(*sp);
      if (sp->segment.is_open()) spool_->remove(sp->segment.seal());
      p->set_value();
    });
  }
  for (auto& f : done) f.wait();
  // fsync: the syncs in flight answer on the shards' threads, still running.
  if (syncer_) {
    for (int i = 0; i < 60'000; ++i) {
      bool busy = false;
      for (auto& s : shards_) busy = busy || s->sync_busy.load(std::memory_order_relaxed);
      if (!busy) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

}  // namespace kiroku
