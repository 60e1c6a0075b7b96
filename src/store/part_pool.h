// part_pool.h - what the transfers of an object store share: the pool of part
// buffers that bounds their memory, the worker threads that run their steps
// and callbacks, and the running SHA-256 of an upload.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace kiroku {

class TransferThreads;

// A fixed number of fixed-size buffers, allocated once at construction and
// handed out and returned; nothing is allocated per part (seed 000: pooled
// download buffers removed the allocation churn). One pool per store bounds
// the memory of all of its transfers together: part_size x part_count, e.g.
// 8 MiB x 8 = 64 MiB, whatever the number and size of transfers.
//
// Threads: every member is safe from any thread. A waiter's callback runs on
// the thread that returns a part (outside the pool's lock).
// Lifetime: the pool must outlive every Part it handed out.
class PartPool {
 public:
  // A handle to one buffer; the buffer goes back to the pool when the handle
  // is released or destroyed. Move-only.
  class Part {
   public:
    Part() = default;
    Part(Part&& other) noexcept : pool_(other.pool_), index_(other.index_) { other.pool_ = nullptr; }
    Part& operator=(Part&& other) noexcept;
    Part(const Part&) = delete;
    Part& operator=(const Part&) = delete;
    ~Part() { release(); }

    explicit operator bool() const { return pool_ != nullptr; }
    // The whole buffer (part_size bytes); empty for an empty handle.
    std::span<std::byte> bytes() const;
    // Returns the buffer to the pool (its next waiter gets it). Idempotent.
    void release();

   private:
    friend class PartPool;
    Part(PartPool* pool, std::uint32_t index) : pool_(pool), index_(index) {}
    PartPool* pool_ = nullptr;
    std::uint32_t index_ = 0;
  };

  using Ready = std::function<void(Part)>;
  using WaitId = std::uint64_t;

  // Allocates part_size * part_count bytes (both at least 1).
  PartPool(std::size_t part_size, std::size_t part_count);
  ~PartPool();
  PartPool(const PartPool&) = delete;
  PartPool& operator=(const PartPool&) = delete;

  // A free part, or an empty handle if none is free.
  Part try_acquire();
  // A free part if there is one (ready is dropped). Otherwise queues ready,
  // which runs once, with a part, on the thread that next returns one
  // (waiters are served first come, first served), sets *id for cancel_wait
  // and returns an empty handle.
  Part acquire_or_wait(Ready ready, WaitId* id = nullptr);
  // Removes a queued waiter; true if it was still queued (its callback will
  // not run), false if it already ran or is running.
  bool cancel_wait(WaitId id);
  // acquire_or_wait that gives up after `limit` (none if <= 0): the waiter
  // is then removed and ready runs with an empty Part, from a task on
  // `threads` (which must not outlive the pool; its destructor drops the
  // timeout). A transfer that holds no buffer yet uses it, so that a pool
  // held by slow transfers answers new ones with an error, not a hang.
  Part acquire_within(std::chrono::milliseconds limit, TransferThreads& threads, Ready ready, WaitId* id = nullptr);

  std::size_t part_size() const { return part_size_; }
  std::size_t part_count() const { return part_count_; }
  std::size_t in_use() const;
  // Most parts ever handed out at once (since construction or the last reset).
  std::size_t high_water() const;
  void reset_high_water();
  std::size_t waiting() const;
  // Whether p points into one of the pool's buffers (for tests).
  bool owns(const std::byte* p) const;

 private:
  void give_back(std::uint32_t index);

  const std::size_t part_size_;
  const std::size_t part_count_;
  std::unique_ptr<std::byte[]> memory_;
  mutable std::mutex mutex_;
  std::vector<std::uint32_t> free_;  // capacity part_count, never grows
  std::size_t high_water_ = 0;
  struct Waiter {
    WaitId id;
    Ready ready;
  };
  std::deque<Waiter> waiters_;
  WaitId next_wait_id_ = 1;
};

// A few threads that run posted tasks; a store's transfers run their steps
// and every user callback on them. post() and post_after() are safe from any
// thread, also from a task. The destructor runs the tasks already posted,
// drops the delayed ones that are not due yet, then joins.
class TransferThreads {
 public:
  explicit TransferThreads(int threads);
  ~TransferThreads();
  TransferThreads(const TransferThreads&) = delete;
  TransferThreads& operator=(const TransferThreads&) = delete;

  void post(std::function<void()> task);
  // Runs task once delay has passed (retries with backoff).
  void post_after(std::chrono::milliseconds delay, std::function<void()> task);
  // Drops every delayed task not yet due.
  void drop_delayed();

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> delayed_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

// SHA-256 fed piece by piece (OpenSSL EVP). Not thread-safe.
class Sha256Stream {
 public:
  Sha256Stream();
  ~Sha256Stream();
  Sha256Stream(const Sha256Stream&) = delete;
  Sha256Stream& operator=(const Sha256Stream&) = delete;

  void update(std::span<const std::byte> data);
  // Lowercase hex of the digest of everything fed so far; call once.
  std::string finish_hex();

 private:
  void* ctx_;  // EVP_MD_CTX
};

}  // namespace kiroku
