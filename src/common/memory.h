// memory.h - giving freed memory back to the system after a large request.
//
// The allocator keeps the pages it frees for reuse (tcmalloc's page heap), so
// a process that once parsed an 8 MiB batch would keep its ~100 MB for good.
// Code that frees a large buffer calls note_large_free(); a thread that has
// just finished a batch, or has nothing to do, calls release_noted_memory(),
// which hands the allocator's free pages back once per note (tcmalloc's
// ReleaseFreeMemory, or glibc's malloc_trim without tcmalloc). Ordinary
// requests note nothing, so the steady state pays nothing. Any thread.
#pragma once

namespace kiroku {

void note_large_free();
void release_noted_memory();

}  // namespace kiroku
