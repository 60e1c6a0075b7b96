// step_scheduler.h - runs a transfer's step() on the store's threads one run
// at a time: a request made while a run is posted or running makes that run
// go round once more instead of posting another. Lock-free; any thread.
#pragma once

#include <atomic>

namespace kiroku {

class StepScheduler {
 public:
  // Counts a request; true when no run is posted or running, and the caller
  // must post a task that calls run().
  bool request() { return pending_.fetch_add(1, std::memory_order_acq_rel) == 0; }

  // The posted task: calls step() until no request came in during a call.
  template <typename Step>
  void run(Step&& step) {
    for (;;) {
      const unsigned seen = pending_.load(std::memory_order_acquire);
      step();
      if (pending_.fetch_sub(seen, std::memory_order_acq_rel) == seen) return;
    }
  }

 private:
  std::atomic<unsigned> pending_{0};
};

}  // namespace kiroku
