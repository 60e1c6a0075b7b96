// memory.cpp - releasing the allocator's free pages after large frees (memory.h).
#include "common/memory.h"

#include <dlfcn.h>
#include <malloc.h>

#include <atomic>

namespace kiroku {
namespace {

std::atomic<bool> noted{false};

// tcmalloc's C entry point, looked up at run time: the sanitizer build and
// the unit tests have no tcmalloc (profiler.cpp does the same).
using ReleaseFn = void (*)();
ReleaseFn tcmalloc_release() {
  static const ReleaseFn fn = reinterpret_cast<ReleaseFn>(::dlsym(RTLD_DEFAULT, "MallocExtension_ReleaseFreeMemory"));
  return fn;
}

}  // namespace

void note_large_free() { noted.store(true, std::memory_order_relaxed); }

void release_noted_memory() {
  if (!noted.load(std::memory_order_relaxed) || !noted.exchange(false, std::memory_order_relaxed)) return;
  if (ReleaseFn fn = tcmalloc_release()) {
    fn();
  } else {
    ::malloc_trim(0);
  }
}

}  // namespace kiroku
