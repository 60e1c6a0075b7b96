// runtime.cpp - the shards' io_contexts and threads.
#include "runtime/runtime.h"

#include <pthread.h>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <optional>

namespace kiroku {

namespace asio = boost::asio;

struct Runtime::Loop {
  // One thread runs each loop: concurrency hint 1 lets Asio skip its locks.
  asio::io_context ctx{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
};

Runtime::Runtime(unsigned shards, std::string name) : name_(std::move(name)) {
  if (shards == 0) shards = 1;
  for (unsigned i = 0; i < shards; ++i) loops_.push_back(std::make_unique<Loop>());
}

Runtime::~Runtime() { stop(); }

void Runtime::start() {
  if (running()) return;
  for (unsigned i = 0; i < shards(); ++i) {
    Loop* loop = loops_[i].get();
    loop->ctx.restart();
    loop->guard.emplace(loop->ctx.get_executor());
    threads_.emplace_back([this, loop, i] {
      pthread_setname_np(pthread_self(), fmt::format("{}-{}", name_, i).substr(0, 15).c_str());
      for (;;) {
        try {
          loop->ctx.run();
          break;
        } catch (const std::exception& e) {
          spdlog::error("shard {}: {}", i, e.what());
        }
      }
    });
  }
}

void Runtime::stop() {
  if (!running()) return;
  for (auto& l : loops_) {
    Loop* loop = l.get();
    asio::post(loop->ctx, [loop] {
      loop->guard.reset();
      loop->ctx.stop();
    });
  }
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void Runtime::post(unsigned shard, Task task) {
  asio::post(loops_[shard]->ctx, [t = std::move(task)]() mutable { t(); });
}

void Runtime::post(unsigned shard, Task task, OpMemory& memory) {
  asio::post(loops_[shard]->ctx,
             asio::bind_allocator(OpAllocator<int>(memory), [t = std::move(task)]() mutable { t(); }));
}

bool Runtime::on_shard(unsigned shard) const { return loops_[shard]->ctx.get_executor().running_in_this_thread(); }

asio::io_context& Runtime::context(unsigned shard) { return loops_.at(shard)->ctx; }

struct Timer::Impl {
  explicit Impl(asio::io_context& ctx) : timer(ctx) {}
  asio::steady_timer timer;
};

Timer::Timer(Runtime& runtime, unsigned shard) : impl_(std::make_unique<Impl>(runtime.context(shard))) {}
Timer::~Timer() = default;

void Timer::after(std::chrono::milliseconds delay, Task task) {
  impl_->timer.expires_after(delay);
  impl_->timer.async_wait([t = std::move(task)](boost::system::error_code ec) mutable {
    if (!ec) t();
  });
}

void Timer::cancel() { impl_->timer.cancel(); }

}  // namespace kiroku
