// part_pool.cpp - the part buffer pool, the transfer threads, the running SHA-256.
#include "store/part_pool.h"

#include <openssl/evp.h>

#include <algorithm>
#include <utility>

namespace kiroku {

// --- PartPool::Part ------------------------------------------------------------

PartPool::Part& PartPool::Part::operator=(Part&& other) noexcept {
  if (this != &other) {
    release();
    pool_ = other.pool_;
    index_ = other.index_;
    other.pool_ = nullptr;
  }
  return *this;
}

std::span<std::byte> PartPool::Part::bytes() const {
  if (!pool_) return {};
  return {pool_->memory_.get() + std::size_t{index_} * pool_->part_size_, pool_->part_size_};
}

void PartPool::Part::release() {
  if (!pool_) return;
  PartPool* pool = pool_;
  pool_ = nullptr;
  pool->give_back(index_);
}

// --- PartPool ------------------------------------------------------------------

PartPool::PartPool(std::size_t part_size, std::size_t part_count)
    : part_size_(std::max<std::size_t>(part_size, 1)),
      part_count_(std::max<std::size_t>(part_count, 1)),
      memory_(new std::byte[part_size_ * part_count_]) {
  free_.reserve(part_count_);
  // Handed out from the back: part 0 first.
  for (std::size_t i = part_count_; i-- > 0;) free_.push_back(static_cast<std::uint32_t>(i));
}

PartPool::~PartPool() = default;

PartPool::Part PartPool::try_acquire() {
  std::lock_guard lock(mutex_);
  if (free_.empty()) return {};
  std::uint32_t index = free_.back();
  free_.pop_back();
  high_water_ = std::max(high_water_, part_count_ - free_.size());
  return Part(this, index);
}

PartPool::Part PartPool::acquire_or_wait(Ready ready, WaitId* id) {
  std::lock_guard lock(mutex_);
  if (!free_.empty()) {
    std::uint32_t index = free_.back();
    free_.pop_back();
    high_water_ = std::max(high_water_, part_count_ - free_.size());
    return Part(this, index);
  }
  WaitId wait_id = next_wait_id_++;
  waiters_.push_back({wait_id, std::move(ready)});
  if (id) *id = wait_id;
  return {};
}

PartPool::Part PartPool::acquire_within(std::chrono::milliseconds limit, TransferThreads& threads, Ready ready,
                                        WaitId* id) {
  if (limit.count() <= 0) return acquire_or_wait(std::move(ready), id);
  // One callback for two paths: the pool's (a part) or the timeout's (none),
  // whichever removes the waiter first.
  auto shared = std::make_shared<Ready>(std::move(ready));
  WaitId wait_id = 0;
  Part part = acquire_or_wait([shared](Part p) { (*shared)(std::move(p)); }, &wait_id);
  if (part) return part;
  if (id) *id = wait_id;
  threads.post_after(limit, [this, wait_id, shared] {
    if (cancel_wait(wait_id)) (*shared)(Part{});
  });
  return {};
}

bool PartPool::cancel_wait(WaitId id) {
  std::lock_guard lock(mutex_);
  auto it = std::find_if(waiters_.begin(), waiters_.end(), [id](const Waiter& w) { return w.id == id; });
  if (it == waiters_.end()) return false;
  waiters_.erase(it);
  return true;
}

void PartPool::give_back(std::uint32_t index) {
  Ready ready;
  {
    std::lock_guard lock(mutex_);
    if (waiters_.empty()) {
      free_.push_back(index);
      return;
    }
    ready = std::move(waiters_.front().ready);
    waiters_.pop_front();
  }
  // The part goes straight to the waiter: it stays counted as in use.
  ready(Part(this, index));
}

std::size_t PartPool::in_use() const {
  std::lock_guard lock(mutex_);
  return part_count_ - free_.size();
}

std::size_t PartPool::high_water() const {
  std::lock_guard lock(mutex_);
  return high_water_;
}

void PartPool::reset_high_water() {
  std::lock_guard lock(mutex_);
  high_water_ = part_count_ - free_.size();
}

std::size_t PartPool::waiting() const {
  std::lock_guard lock(mutex_);
  return waiters_.size();
}

bool PartPool::owns(const std::byte* p) const {
  const std::byte* begin = memory_.get();
  return p >= begin && p < begin + part_size_ * part_count_;
}

// --- TransferThreads -------------------------------------------------------------

TransferThreads::TransferThreads(int threads) {
  for (int i = 0; i < std::max(threads, 1); ++i) threads_.emplace_back([this] { run(); });
}

TransferThreads::~TransferThreads() {
  drop_delayed();
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void TransferThreads::post(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    tasks_.push_back(std::move(task));
  }
  wake_.notify_one();
}

void TransferThreads::post_after(std::chrono::milliseconds delay, std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    delayed_.emplace(std::chrono::steady_clock::now() + delay, std::move(task));
  }
  wake_.notify_all();
}

void TransferThreads::drop_delayed() {
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> dropped;
  std::lock_guard lock(mutex_);
  dropped.swap(delayed_);
}

void TransferThreads::run() {
  std::unique_lock lock(mutex_);
  while (true) {
    if (!stopping_ && tasks_.empty() && !delayed_.empty()) {
      const auto due = delayed_.begin()->first;  // a copy: the entry may go meanwhile
      wake_.wait_until(lock, due);
    } else {
      wake_.wait(lock, [this] { return stopping_ || !tasks_.empty() || !delayed_.empty(); });
    }
    // Due delayed tasks join the queue.
    auto now = std::chrono::steady_clock::now();
    while (!stopping_ && !delayed_.empty() && delayed_.begin()->first <= now) {
      tasks_.push_back(std::move(delayed_.begin()->second));
      delayed_.erase(delayed_.begin());
    }
    if (tasks_.empty()) {
      if (stopping_) return;  // nothing left to run
      continue;
    }
    auto task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    task();
    task = nullptr;  // captured state is released outside the lock
    lock.lock();
  }
}

// --- Sha256Stream ------------------------------------------------------------------

Sha256Stream::Sha256Stream() : ctx_(EVP_MD_CTX_new()) {
  EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr);
}

Sha256Stream::~Sha256Stream() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256Stream::update(std::span<const std::byte> data) {
  if (!data.empty()) EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size());
}

std::string Sha256Stream::finish_hex() {
  static constexpr char kHex[] = "0123456789abcdef";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), digest, &size);
  std::string out;
  out.reserve(size * 2);
  for (unsigned int i = 0; i < size; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xF];
  }
  return out;
}

}  // namespace kiroku
