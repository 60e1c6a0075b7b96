// read_ahead.cpp - a download's window of pooled parts, shared by the stores.
#include "store/read_ahead.h"

#include <algorithm>
#include <utility>

namespace kiroku {

ReadAhead::ReadAhead(Setup setup, GetSink sink) : setup_(std::move(setup)), sink_(std::move(sink)) {}

ReadAhead::~ReadAhead() = default;

void ReadAhead::schedule() {
  if (steps_.request()) setup_.threads->post([self = shared_from_this()] { self->steps_.run([&] { self->step(); }); });
}

void ReadAhead::fail_locked(Status s) {
  if (failed.ok()) failed = std::move(s);
}

void ReadAhead::opened(Result<GetStart> found) {
  {
    std::lock_guard lock(mutex);
    if (!found.ok()) {
      fail_locked(found.status());
    } else {
      start = std::move(*found);
      next_fetch = start.offset;
      end = start.offset + start.length;
    }
    phase = Phase::opened;
  }
  schedule();
}

void ReadAhead::filled(std::uint64_t offset, Status s) {
  {
    std::lock_guard lock(mutex);
    for (auto& slot : window) {
      if (slot.offset != offset || slot.ready) continue;
      slot.ready = true;
      slot.request = 0;
      break;
    }
    if (!s.ok()) fail_locked(std::move(s));
  }
  schedule();
}

void ReadAhead::on_part(PartPool::Part part) {
  {
    std::lock_guard lock(mutex);
    wait_id_ = 0;
    if (!part) {  // no buffer came within first_buffer_wait
      fail_locked(no_buffer_status(*setup_.options));
    } else if (phase != Phase::ended && !cancelled && !spare_) {
      spare_ = std::move(part);
    }
  }
  part.release();  // not needed (or empty)
  schedule();
}

void ReadAhead::on_release() {
  {
    std::lock_guard lock(mutex);
    --held_;
    if (phase == Phase::ended) return;
  }
  schedule();
}

void ReadAhead::cancel() {
  PartPool::WaitId id;
  PartPool::Part drop;
  {
    std::lock_guard lock(mutex);
    if (phase == Phase::ended) return;
    cancelled = true;
    id = wait_id_;
    drop = std::move(spare_);
  }
  if (id != 0 && setup_.pool->cancel_wait(id)) {
    std::lock_guard lock(mutex);
    if (wait_id_ == id) wait_id_ = 0;
  }
  drop.release();
  schedule();
}

void ReadAhead::step() {
  auto self = shared_from_this();
  std::vector<PartPool::Part> drop;
  std::vector<std::function<void()>> actions;
  std::vector<Chunk> deliver;
  bool call_open = false, call_start = false, finish = false;
  Status final_status;
  {
    std::lock_guard lock(mutex);
    if (phase == Phase::ended) return;
    if (!failed.ok() || cancelled) {
      fail_locked(Status::invalid("cancelled"));
      const bool busy = phase == Phase::opening || in_flight_locked(actions);
      if (!busy) {
        for (auto& s : window) drop.push_back(std::move(s.part));
        held_ -= window.size();
        window.clear();
        drop.push_back(std::move(spare_));
        phase = Phase::ended;
        finish = true;
        final_status = failed;
      }
    } else if (phase == Phase::unopened) {
      phase = Phase::opening;
      call_open = true;
    } else if (phase != Phase::opening) {
      if (phase == Phase::opened) {
        phase = Phase::reading;
        call_start = true;
      }
      while (next_fetch < end && held_ < setup_.cap && wait_id_ == 0) {
        PartPool::Part part = std::move(spare_);
        if (!part) {
          const bool first = held_ == 0 && next_fetch == start.offset;
          part = setup_.pool->acquire_within(
              first ? setup_.options->first_buffer_wait : std::chrono::milliseconds(0), *setup_.threads,
              [weak = weak_from_this()](PartPool::Part p) {
                if (auto s = weak.lock()) s->on_part(std::move(p));
              },
              &wait_id_);
          if (!part) break;
        }
        const std::size_t n = std::min<std::uint64_t>(part.bytes().size(), end - next_fetch);
        const std::uint64_t offset = next_fetch;
        const auto buffer = part.bytes().first(n);
        window.push_back({offset, n, std::move(part)});
        ++held_;
        next_fetch += n;
        actions.push_back([self, offset, buffer] { self->fetch(offset, buffer); });
      }
      reading_locked(actions);
      while (!window.empty() && window.front().ready) {
        Slot s = std::move(window.front());
        window.pop_front();
        const auto data = std::span<const std::byte>(s.part.bytes().data(), s.size);
        deliver.emplace_back(std::move(s.part), data, s.offset, [weak = weak_from_this()] {
          if (auto d = weak.lock()) d->on_release();
        });
      }
      if (window.empty() && next_fetch >= end) {
        phase = Phase::ended;
        finish = true;
        drop.push_back(std::move(spare_));
      }
    }
  }
  drop.clear();
  if (call_open) open();
  if (call_start && sink_.on_start) sink_.on_start(start);
  for (auto& a : actions) a();
  for (auto& c : deliver) {
    if (sink_.on_chunk) sink_.on_chunk(std::move(c));
  }
  deliver.clear();
  if (finish) {
    auto on_done = std::move(sink_.on_done);
    sink_ = {};
    if (on_done) on_done(std::move(final_status));
  }
}

}  // namespace kiroku
