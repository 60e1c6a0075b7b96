// read_ahead.h - the half of a download every store shares: a window of
// pooled parts in object order that the store fills, delivered to the GetSink
// strictly in order as Chunks. At most `cap` parts are held, counting those
// the consumer still holds, so a slow consumer stops the fetching. on_start
// runs once, on_done exactly once; a failure or cancel() ends the download
// only after what the store has in flight into the window has ended.
//
// A store derives its download from ReadAhead and writes open() (find the
// object, then opened()) and fetch() (fill one slot, then filled()). Members
// marked "mutex" are read and written with `mutex` held; parts are never
// released with it held. Held by shared_ptr; pool callbacks and chunks hold
// it weakly.
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

class ReadAhead : public std::enable_shared_from_this<ReadAhead> {
 public:
  struct Setup {
    PartPool* pool = nullptr;
    TransferThreads* threads = nullptr;
    const StoreOptions* options = nullptr;
    std::string key;
    std::optional<ByteRange> range;
    std::size_t cap = 2;  // parts held at once: being filled, ready, with the consumer
  };

  // unopened: open() not called yet; opening: open() called, opened() not
  // yet; opened: on_start still to run; reading: parts flow; ended: on_done ran.
  enum class Phase { unopened, opening, opened, reading, ended };

  ReadAhead(Setup setup, GetSink sink);
  virtual ~ReadAhead();
  ReadAhead(const ReadAhead&) = delete;
  ReadAhead& operator=(const ReadAhead&) = delete;

  // Starts the download (once, after construction).
  void begin() { schedule(); }
  // Download::cancel (object_store.h).
  void cancel();

 protected:
  struct Slot {
    std::uint64_t offset;  // object offset of the slot's first byte
    std::size_t size;      // bytes the slot will hold
    PartPool::Part part;
    bool ready = false;         // filled (or failed): may be delivered
    std::size_t filled = 0;     // bytes copied in so far, for a store that streams into slots
    std::uint64_t request = 0;  // the store's request filling it, for cancelling
  };

  // Finds the object and calls opened(), now or later. On a store thread,
  // without the lock.
  virtual void open() = 0;
  // Fills `buffer` with the object's bytes at `offset` and calls
  // filled(offset, ...), now or later. On a store thread, without the lock.
  virtual void fetch(std::uint64_t offset, std::span<std::byte> buffer) = 0;
  // With the lock, once failing or cancelled: whether the store still has
  // requests writing into the window (step() must run again when each ends);
  // it may add actions that cancel them.
  virtual bool in_flight_locked(std::vector<std::function<void()>>& /*actions*/) { return false; }
  // With the lock, on each step while reading (after the window grew, before
  // delivery): a store that streams one request into the slots starts or
  // resumes it here.
  virtual void reading_locked(std::vector<std::function<void()>>& /*actions*/) {}

  // What open() found (the range resolved against the object). Any thread,
  // without the lock.
  void opened(Result<GetStart> start);
  // The slot at `offset` is filled, or failed with s. Any thread, without the lock.
  void filled(std::uint64_t offset, Status s);
  // Runs step() soon on the store's threads. Any thread, without the lock.
  void schedule();
  void fail_locked(Status s);

  const Setup setup_;
  std::mutex mutex;
  Phase phase = Phase::unopened;  // mutex
  bool cancelled = false;         // mutex
  Status failed;                  // mutex: the first error
  GetStart start;                 // mutex: set by opened()
  std::deque<Slot> window;        // mutex: slots being filled or ready, in object order
  std::uint64_t next_fetch = 0;   // mutex: object offset of the next slot
  std::uint64_t end = 0;          // mutex: object offset past the last byte delivered

 private:
  void step();
  void on_part(PartPool::Part part);
  void on_release();

  GetSink sink_;                  // step() only
  std::size_t held_ = 0;          // mutex: slots and chunks with the consumer
  PartPool::Part spare_;          // mutex: given by the pool while waiting
  PartPool::WaitId wait_id_ = 0;  // mutex: nonzero while waiting for the pool
  StepScheduler steps_;
};

// The Download a store hands out: cancel() forwards; dropping it does not stop the download.
class DownloadHandle final : public Download {
 public:
  explicit DownloadHandle(std::shared_ptr<ReadAhead> state) : state_(std::move(state)) {}
  void cancel() override { state_->cancel(); }

 private:
  std::shared_ptr<ReadAhead> state_;
};

}  // namespace kiroku
