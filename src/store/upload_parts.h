// upload_parts.h - the half of an upload every store shares: write() copies
// the caller's bytes into pooled part buffers, full parts queue in order for
// the store, finish() and abort() close the upload, and the announced size is
// held to as bytes arrive (an overlong body fails at the write that overruns
// it, a short one at finish()).
//
// A store derives its upload from UploadParts and writes step(): what becomes
// of the queued parts (written to a file, sent to S3) and how the upload
// ends. step() runs on the store's threads, one run at a time (schedule()).
// Members marked "mutex" are read and written with `mutex` held; parts are
// never released with it held (a release may run another transfer's pool
// callback). Held by shared_ptr; pool callbacks hold it weakly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"
#include "store/object_store.h"
#include "store/part_pool.h"
#include "store/step_scheduler.h"

namespace kiroku {

class UploadParts : public std::enable_shared_from_this<UploadParts> {
 public:
  struct Setup {
    PartPool* pool = nullptr;
    TransferThreads* threads = nullptr;
    const StoreOptions* options = nullptr;
    std::string key;
    std::optional<std::uint64_t> expected_size;
    std::function<void()> when_writable;
    std::size_t cap = 2;        // parts held at once: filling, queued, being stored
    std::size_t max_parts = 0;  // 0: no limit (S3: 10,000)
  };

  // Where the caller is: writing, aborted (abort() before finish()),
  // finishing (finish() called, not answered), answered (done ran).
  enum class Caller { writing, aborted, finishing, answered };

  explicit UploadParts(Setup setup);
  virtual ~UploadParts();
  UploadParts(const UploadParts&) = delete;
  UploadParts& operator=(const UploadParts&) = delete;

  // Upload::write, finish and abort (object_store.h).
  Result<std::size_t> write(std::span<const std::byte> data);
  void finish(std::function<void(Result<PutResult>)> done);
  void abort();
  // finish() was called (the handle then does not abort on destruction).
  bool finish_called();

 protected:
  struct FullPart {
    int number;  // 1, 2, ... in object order
    PartPool::Part part;
    std::size_t size;
  };

  // The store's half; see the top of this file.
  virtual void step() = 0;
  // Runs step() soon on the store's threads. Any thread, without the lock.
  void schedule();

  // --- with `mutex` held ---
  void fail_locked(Status s);
  // Moves the part being filled and the queued parts into `drop`.
  void drop_unsent_locked(std::vector<PartPool::Part>& drop);
  // One part the store is done with goes into `drop`.
  void done_with_locked(PartPool::Part& part, std::vector<PartPool::Part>& drop);
  // True, once, when the writer waits for room and there is some now (or the
  // upload failed): call notify_writable() after unlocking.
  bool writable_locked();
  // finish()'s callback if it waits for an answer (Caller becomes answered),
  // else an empty function. Run it outside the lock.
  std::function<void(Result<PutResult>)> take_done_locked();

  // Posts when_writable. Without the lock.
  void notify_writable();

  const Setup setup_;
  std::mutex mutex;
  Caller caller = Caller::writing;  // mutex
  bool ended = false;               // mutex: the store's work is over; nothing runs or is left to clean
  Status failed;                    // mutex: the first error (invalid("cancelled") after abort())
  std::deque<FullPart> full;        // mutex: filled parts, in order, for the store
  PartPool::Part current;           // mutex: being filled
  std::size_t fill = 0;             // mutex: bytes in current
  std::size_t held = 0;             // mutex: parts held: current, queued, and those the store is storing
  int parts_made = 0;               // mutex: parts queued so far
  std::uint64_t size = 0;           // mutex: bytes taken
  std::string sha_hex;              // mutex: the content's SHA-256, set by finish()

 private:
  void on_part(PartPool::Part part);
  void cancel_pool_wait();

  std::function<void(Result<PutResult>)> done_;  // mutex
  bool want_writable_ = false;                   // mutex: a write() was short
  PartPool::WaitId wait_id_ = 0;                 // mutex: nonzero while waiting for the pool
  Sha256Stream sha_;                             // mutex
  StepScheduler steps_;
};

// The Upload a store hands out: forwards to its UploadParts, and aborts the
// upload when dropped before finish(). The parts outlive this handle while
// the store still works on them.
class UploadHandle final : public Upload {
 public:
  explicit UploadHandle(std::shared_ptr<UploadParts> parts) : parts_(std::move(parts)) {}
  ~UploadHandle() override {
    if (!parts_->finish_called()) parts_->abort();
  }
  Result<std::size_t> write(std::span<const std::byte> data) override { return parts_->write(data); }
  void finish(std::function<void(Result<PutResult>)> done) override { parts_->finish(std::move(done)); }
  void abort() override { parts_->abort(); }

 private:
  std::shared_ptr<UploadParts> parts_;
};

}  // namespace kiroku
