// runtime.h - one event loop and one thread per core: the shards.
//
// Built first and handed to everything that runs on the shards (the HTTP
// server, the collector, the file API). A shard's work runs on its own
// thread, in the order it was posted; no two shards share state. Layers that
// speak Asio (http/, store/) reach a shard's io_context; the others use post()
// and Timer only.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "runtime/op_memory.h"
#include "runtime/task.h"

namespace boost::asio {
class io_context;
}

namespace kiroku {

class Runtime {
 public:
  // `shards` loops (at least one); their threads are named "{name}-{index}".
  explicit Runtime(unsigned shards, std::string name = "kiroku-io");
  ~Runtime();  // stop()
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  unsigned shards() const { return static_cast<unsigned>(loops_.size()); }

  // Starts one thread per shard; returns at once. A task that throws is
  // logged and the shard goes on.
  void start();
  // Runs what is already posted, then stops the loops and joins their
  // threads. Idempotent; not from a shard thread.
  void stop();
  bool running() const { return !threads_.empty(); }

  // Runs `task` on `shard`'s thread, after what was posted there before. Any thread.
  void post(unsigned shard, Task task);
  // The same with the post's memory in `memory`, for a post never in flight
  // twice (from a thread outside the loops, Asio's post allocates otherwise).
  void post(unsigned shard, Task task, OpMemory& memory);
  // True on `shard`'s own thread.
  bool on_shard(unsigned shard) const;

  // For the layers that speak Asio.
  boost::asio::io_context& context(unsigned shard);

 private:
  struct Loop;
  std::string name_;
  std::vector<std::unique_ptr<Loop>> loops_;
  std::vector<std::thread> threads_;
};

// A one-shot timer on one shard. after() replaces a pending wait; the task
// runs on the shard's thread unless cancelled first. Use and destroy it on
// its shard's thread (or while the runtime is stopped).
class Timer {
 public:
  Timer(Runtime& runtime, unsigned shard);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void after(std::chrono::milliseconds delay, Task task);
  void cancel();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace kiroku
