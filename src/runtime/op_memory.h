// op_memory.h - the memory of one asynchronous operation at a time.
//
// An operation that is never in flight twice (a connection's read, its write,
// a shard's sync completion) keeps its memory in its owner instead of the
// heap: Asio allocates the operation through OpAllocator (bind it to the
// handler), which takes the owner's block while it is free and falls back to
// the heap otherwise. Asio's own per-thread cache holds two blocks, which many
// operations started together (a group commit answering every waiting
// connection) or a post from a thread outside the loops overrun. Use it on
// one thread at a time.
#pragma once

#include <cstddef>
#include <new>

namespace kiroku {

class OpMemory {
 public:
  OpMemory() = default;
  OpMemory(const OpMemory&) = delete;
  OpMemory& operator=(const OpMemory&) = delete;

  void* allocate(std::size_t n) {
    if (!used_ && n <= sizeof storage_) {
      used_ = true;
      return storage_;
    }
    return ::operator new(n);
  }
  void deallocate(void* p) {
    if (p == storage_) used_ = false;
    else ::operator delete(p);
  }

 private:
  alignas(std::max_align_t) unsigned char storage_[512];
  bool used_ = false;
};

// A standard allocator over an OpMemory.
template <class T>
class OpAllocator {
 public:
  using value_type = T;
  explicit OpAllocator(OpMemory& m) noexcept : memory_(&m) {}
  template <class U>
  OpAllocator(const OpAllocator<U>& o) noexcept : memory_(o.memory_) {}  // NOLINT(google-explicit-constructor)
  T* allocate(std::size_t n) { return static_cast<T*>(memory_->allocate(sizeof(T) * n)); }
  void deallocate(T* p, std::size_t) noexcept { memory_->deallocate(p); }
  template <class U>
  bool operator==(const OpAllocator<U>& o) const noexcept {
    return memory_ == o.memory_;
  }

 private:
  template <class>
  friend class OpAllocator;
  OpMemory* memory_;
};

}  // namespace kiroku
