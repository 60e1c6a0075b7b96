// upload_parts.cpp - filling pooled parts from write(), shared by the stores.
#include "store/upload_parts.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace kiroku {

UploadParts::UploadParts(Setup setup) : setup_(std::move(setup)) {}

UploadParts::~UploadParts() = default;

void UploadParts::schedule() {
  if (steps_.request()) setup_.threads->post([self = shared_from_this()] { self->steps_.run([&] { self->step(); }); });
}

void UploadParts::notify_writable() {
  if (setup_.when_writable) setup_.threads->post(setup_.when_writable);
}

void UploadParts::fail_locked(Status s) {
  if (failed.ok()) failed = std::move(s);
}

void UploadParts::drop_unsent_locked(std::vector<PartPool::Part>& drop) {
  if (current) {
    drop.push_back(std::move(current));
    --held;
    fill = 0;
  }
  for (auto& p : full) drop.push_back(std::move(p.part));
  held -= full.size();
  full.clear();
}

void UploadParts::done_with_locked(PartPool::Part& part, std::vector<PartPool::Part>& drop) {
  drop.push_back(std::move(part));
  --held;
}

bool UploadParts::writable_locked() {
  if (!want_writable_) return false;
  if (failed.ok() && (held >= setup_.cap || wait_id_ != 0)) return false;
  want_writable_ = false;
  return true;
}

std::function<void(Result<PutResult>)> UploadParts::take_done_locked() {
  if (!done_) return {};
  caller = Caller::answered;
  return std::exchange(done_, nullptr);
}

bool UploadParts::finish_called() {
  std::lock_guard lock(mutex);
  return caller == Caller::finishing || caller == Caller::answered;
}

void UploadParts::on_part(PartPool::Part part) {
  bool notify = false;
  {
    std::lock_guard lock(mutex);
    wait_id_ = 0;
    if (!part) {  // no buffer came within first_buffer_wait
      fail_locked(no_buffer_status(*setup_.options));
      notify = std::exchange(want_writable_, false);
    } else if (caller == Caller::writing && failed.ok() && !current) {
      current = std::move(part);
      fill = 0;
      ++held;
      notify = std::exchange(want_writable_, false);
    }
  }
  part.release();  // not needed any more (or empty)
  if (notify) notify_writable();
  schedule();
}

Result<std::size_t> UploadParts::write(std::span<const std::byte> data) {
  bool step_needed = false;
  std::size_t taken = 0;
  Status refused;
  {
    std::lock_guard lock(mutex);
    if (!failed.ok()) return failed;
    if (caller != Caller::writing) return Status::invalid("upload already finished");
    const auto& expected = setup_.expected_size;
    if (expected && data.size() > *expected - size) {
      fail_locked(Status::invalid("upload longer than the " + std::to_string(*expected) + " bytes announced"));
      step_needed = true;
      data = {};
    }
    const std::size_t part_size = setup_.pool->part_size();
    while (taken < data.size()) {
      if (!current) {
        if (setup_.max_parts != 0 && std::size_t(parts_made) >= setup_.max_parts) {
          fail_locked(Status::invalid("object larger than " + std::to_string(setup_.max_parts) + " parts"));
          step_needed = true;
          break;
        }
        if (held >= setup_.cap || wait_id_ != 0) {
          want_writable_ = true;
          break;
        }
        const bool first = held == 0 && parts_made == 0;
        current = setup_.pool->acquire_within(
            first ? setup_.options->first_buffer_wait : std::chrono::milliseconds(0), *setup_.threads,
            [weak = weak_from_this()](PartPool::Part p) {
              if (auto self = weak.lock()) self->on_part(std::move(p));
            },
            &wait_id_);
        if (!current) {
          want_writable_ = true;
          break;
        }
        fill = 0;
        ++held;
        if (parts_made == 1) step_needed = true;  // a second part: the store may choose how to send
      }
      const std::size_t n = std::min(part_size - fill, data.size() - taken);
      std::memcpy(current.bytes().data() + fill, data.data() + taken, n);
      sha_.update(data.subspan(taken, n));
      fill += n;
      taken += n;
      size += n;
      if (fill == part_size) {
        full.push_back({++parts_made, std::move(current), fill});
        fill = 0;
        step_needed = true;
      }
    }
    if (!failed.ok() && taken == 0) refused = failed;
  }
  if (step_needed) schedule();
  if (!refused.ok()) return refused;
  return taken;
}

void UploadParts::finish(std::function<void(Result<PutResult>)> done) {
  PartPool::Part unused;
  {
    std::lock_guard lock(mutex);
    if (caller == Caller::finishing || caller == Caller::answered) {
      setup_.threads->post([d = std::move(done)] { d(Status::invalid("upload already finished")); });
      return;
    }
    if (ended) {  // failed and cleaned up before finish() came
      caller = Caller::answered;
      setup_.threads->post([d = std::move(done), s = failed] { d(s); });
      return;
    }
    caller = Caller::finishing;
    done_ = std::move(done);
    const auto& expected = setup_.expected_size;
    if (expected && *expected != size)
      fail_locked(
          Status::invalid("upload of " + std::to_string(size) + " bytes, " + std::to_string(*expected) + " expected"));
    if (current) {
      if (fill > 0 && failed.ok()) {
        full.push_back({++parts_made, std::move(current), fill});
      } else {
        unused = std::move(current);
        --held;
      }
      fill = 0;
    }
    sha_hex = sha_.finish_hex();
  }
  unused.release();
  cancel_pool_wait();
  schedule();
}

void UploadParts::abort() {
  {
    std::lock_guard lock(mutex);
    if (ended || caller == Caller::answered) return;
    if (caller == Caller::writing) caller = Caller::aborted;
    fail_locked(Status::invalid("cancelled"));
  }
  cancel_pool_wait();
  schedule();
}

void UploadParts::cancel_pool_wait() {
  PartPool::WaitId id;
  {
    std::lock_guard lock(mutex);
    id = wait_id_;
  }
  if (id != 0 && setup_.pool->cancel_wait(id)) {
    std::lock_guard lock(mutex);
    if (wait_id_ == id) wait_id_ = 0;
  }
}

}  // namespace kiroku
