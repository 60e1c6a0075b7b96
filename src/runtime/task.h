// task.h - a move-only `void()` callable that keeps small captures inline.
//
// What Runtime::post carries from one thread to another. A callable of up to
// kInline bytes (a few pointers and integers: the per-request posts) is
// stored in the Task itself and costs no allocation; a larger one is moved
// to the heap.
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace kiroku {

class Task {
 public:
  static constexpr std::size_t kInline = 48;

  Task() = default;
  template <class F>
  requires(!std::is_same_v<std::decay_t<F>, Task> && std::is_invocable_v<std::decay_t<F>&>)
      Task(F&& f) {  // NOLINT(google-explicit-constructor): posts take lambdas
    using Fn = std::decay_t<F>;
    if constexpr (sizeof(Fn) <= kInline && alignof(Fn) <= alignof(std::max_align_t) &&
                  std::is_nothrow_move_constructible_v<Fn>) {
      ::new (static_cast<void*>(buf_)) Fn(std::forward<F>(f));
      ops_ = &kInlineOps<Fn>;
    } else {
      *reinterpret_cast<Fn**>(buf_) = new Fn(std::forward<F>(f));
      ops_ = &kHeapOps<Fn>;
    }
  }
  Task(Task&& o) noexcept : ops_(o.ops_) {
    if (ops_) ops_->move(buf_, o.buf_);
    o.ops_ = nullptr;
  }
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      reset();
      ops_ = o.ops_;
      if (ops_) ops_->move(buf_, o.buf_);
      o.ops_ = nullptr;
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() { reset(); }

  explicit operator bool() const { return ops_ != nullptr; }
  void operator()() { ops_->call(buf_); }

 private:
  struct Ops {
    void (*call)(void*);
    void (*move)(void* to, void* from);  // constructs in `to`, destroys `from`
    void (*destroy)(void*);
  };
  template <class Fn>
  static constexpr Ops kInlineOps{[](void* p) { (*static_cast<Fn*>(p))(); },
                                  [](void* to, void* from) {
                                    ::new (to) Fn(std::move(*static_cast<Fn*>(from)));
                                    static_cast<Fn*>(from)->~Fn();
                                  },
                                  [](void* p) { static_cast<Fn*>(p)->~Fn(); }};
  template <class Fn>
  static constexpr Ops kHeapOps{[](void* p) { (**static_cast<Fn**>(p))(); },
                                [](void* to, void* from) { *static_cast<Fn**>(to) = *static_cast<Fn**>(from); },
                                [](void* p) { delete *static_cast<Fn**>(p); }};

  void reset() {
    if (ops_) ops_->destroy(buf_);
    ops_ = nullptr;
  }

  alignas(std::max_align_t) std::byte buf_[kInline];
  const Ops* ops_ = nullptr;
};

}  // namespace kiroku
