// fuzz_check.h - how the invariants of a fuzz target fail.
//
// Every test/fuzz/NAME_check.h holds one function, check_NAME(input), that
// drives a parser with `input` and checks what the parser promises. The fuzz
// target NAME_fuzz.cpp calls it from LLVMFuzzerTestOneInput, and
// regressions_test.cpp replays corpus/NAME and regressions/NAME through it.
// A broken invariant prints what broke and aborts: libFuzzer keeps the input,
// and the unit test fails the same way.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace kiroku::fuzz {

// The file being replayed, named when an invariant breaks (regressions_test.cpp).
inline const char*& replayed_file() {
  static const char* name = nullptr;
  return name;
}

[[noreturn]] inline void broken(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: fuzz invariant broken: %s\n", file, line, what);
  if (replayed_file() != nullptr) std::fprintf(stderr, "input: %s\n", replayed_file());
  std::fflush(stderr);
  std::abort();
}

inline std::string_view as_text(const unsigned char* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace kiroku::fuzz

#define FUZZ_REQUIRE(cond) ((cond) ? static_cast<void>(0) : ::kiroku::fuzz::broken(#cond, __FILE__, __LINE__))
