// profiler_test.cpp - CPU profiles of a busy thread that pprof can name, the limits, heap errors.
#include "ops/profiler.h"

#include <dlfcn.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

namespace kiroku {

// Spins until told to stop; pprof must find it by this name in the profile.
// Outside any anonymous namespace and never inlined, so that its symbol is
// plain in the test binary.
__attribute__((noinline)) std::uint64_t ProfilerTestBusySpin(const std::atomic<bool>& stop) {
  volatile std::uint64_t x = 1;
  while (!stop.load(std::memory_order_relaxed)) {
    for (int i = 0; i < 10000; ++i) x = x * 6364136223846793005ull + 1442695040888963407ull;
  }
  return x;
}

namespace {

using Clock = std::chrono::steady_clock;

// A profile's result, delivered on the Profiler's thread.
struct Outcome {
  std::promise<Result<std::string>> promise;
  std::future<Result<std::string>> future = promise.get_future();
  ProfileDone callback() {
    return [this](Result<std::string> r) { promise.set_value(std::move(r)); };
  }
};

// The number of samples in a gperftools legacy CPU profile, or -1 when the
// bytes are not one. Layout, in machine words: header 0, 3, 0, period (us),
// 0; then records count, depth, pc * depth; then the trailer 0, 1, 0; then
// the text of /proc/self/maps.
std::int64_t count_cpu_samples(const std::string& bytes, std::uint64_t& period_us) {
  const std::size_t words = bytes.size() / sizeof(std::uintptr_t);
  auto word = [&](std::size_t i) {
    std::uintptr_t w = 0;
    std::memcpy(&w, bytes.data() + i * sizeof w, sizeof w);
    return w;
  };
  if (words < 8 || word(0) != 0 || word(1) != 3 || word(2) != 0 || word(4) != 0) return -1;
  period_us = word(3);
  std::int64_t samples = 0;
  std::size_t i = 5;
  for (;;) {
    if (i + 2 > words) return -1;
    const std::uintptr_t count = word(i);
    const std::uintptr_t depth = word(i + 1);
    if (count == 0 && depth == 1) return samples;  // the trailer
    samples += static_cast<std::int64_t>(count);
    i += 2 + depth;
  }
}

std::string self_executable() {
  char path[4096];
  const ssize_t n = ::readlink("/proc/self/exe", path, sizeof path - 1);
  if (n <= 0) return {};
  return std::string(path, static_cast<std::size_t>(n));
}

// Runs a shell command; its stdout and stderr, and its exit code in `code`.
std::string run_command(const std::string& command, int& code) {
  std::string out;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) {
    code = -1;
    return out;
  }
  char chunk[4096];
  std::size_t n = 0;
  while ((n = std::fread(chunk, 1, sizeof chunk, pipe)) > 0) out.append(chunk, n);
  const int status = ::pclose(pipe);
  code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

bool have_pprof() {
  int code = 0;
  run_command("command -v google-pprof", code);
  return code == 0;
}

TEST(ProfilerCpu, RefusesSecondsOutOfBounds) {
  Profiler profiler;
  bool called = false;
  for (const int seconds : {0, -1, kMaxProfileSeconds + 1, 100000}) {
    const Status st = profiler.cpu_profile(seconds, [&](Result<std::string>) { called = true; });
    EXPECT_EQ(st.kind(), ErrorKind::invalid) << seconds;
    EXPECT_NE(st.message().find("between 1 and 300"), std::string::npos) << st.message();
  }
  EXPECT_FALSE(called);
}

TEST(ProfilerCpu, ProfilesABusyThreadThatPprofNames) {
  std::atomic<bool> stop{false};
  std::thread busy([&] { ProfilerTestBusySpin(stop); });
  Outcome outcome;
  {
    Profiler profiler;
    const auto t0 = Clock::now();
    ASSERT_TRUE(profiler.cpu_profile(1, outcome.callback()).ok());
    EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(100)) << "the caller must not wait";
    ASSERT_EQ(outcome.future.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(950));
  }
  stop.store(true);
  busy.join();

  Result<std::string> profile = outcome.future.get();
  ASSERT_TRUE(profile.ok()) << profile.status().message();
  std::uint64_t period_us = 0;
  const std::int64_t samples = count_cpu_samples(*profile, period_us);
  ASSERT_GE(samples, 0) << "not a gperftools CPU profile (" << profile->size() << " bytes)";
  EXPECT_EQ(period_us, 10000u) << "100 Hz";
  // One busy thread for one second at 100 Hz: about 100 samples on an idle machine.
  EXPECT_GE(samples, 10);  // fewer when the machine is busy: ITIMER_PROF counts CPU time

  ASSERT_TRUE(have_pprof())
      << "google-pprof is not installed (Debian package google-perftools; scripts/setup.sh installs it)";
  const std::string file = ::testing::TempDir() + "/kiroku_profiler_test.prof";
  {
    std::ofstream out(file, std::ios::binary);
    out.write(profile->data(), static_cast<std::streamsize>(profile->size()));
  }
  int code = 0;
  const std::string text = run_command("google-pprof --text '" + self_executable() + "' '" + file + "'", code);
  std::remove(file.c_str());
  EXPECT_EQ(code, 0) << text;
  EXPECT_NE(text.find("ProfilerTestBusySpin"), std::string::npos) << text;
}

TEST(ProfilerCpu, RefusesASecondProfileWhileOneRuns) {
  Outcome first;
  Outcome third;
  {
    Profiler profiler;
    Profiler other;
    ASSERT_TRUE(profiler.cpu_profile(1, first.callback()).ok());
    bool called = false;
    const Status again = profiler.cpu_profile(1, [&](Result<std::string>) { called = true; });
    EXPECT_EQ(again.kind(), ErrorKind::full);
    EXPECT_EQ(again.message(), "a profile is already running");
    // gperftools has one profiler per process: another Profiler is refused too.
    EXPECT_EQ(other.cpu_profile(1, [&](Result<std::string>) { called = true; }).kind(), ErrorKind::full);
    ASSERT_EQ(first.future.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    EXPECT_TRUE(first.future.get().ok());
    EXPECT_FALSE(called);
    // Once the first is answered the next may start (and is cut short below).
    EXPECT_TRUE(other.cpu_profile(kMaxProfileSeconds, third.callback()).ok());
  }
  ASSERT_EQ(third.future.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  EXPECT_EQ(third.future.get().status().kind(), ErrorKind::transient);
}

TEST(ProfilerCpu, DestroyingTheProfilerCutsARunningProfileShort) {
  Outcome outcome;
  const auto t0 = Clock::now();
  {
    Profiler profiler;
    ASSERT_TRUE(profiler.cpu_profile(kMaxProfileSeconds, outcome.callback()).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(5));
  ASSERT_EQ(outcome.future.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  const Result<std::string> r = outcome.future.get();
  EXPECT_EQ(r.status().kind(), ErrorKind::transient);
  // And the process-wide slot is free again.
  Outcome cut;  // outlives `next`, whose destructor answers it
  Profiler next;
  EXPECT_TRUE(next.cpu_profile(kMaxProfileSeconds, cut.callback()).ok());
}

TEST(ProfilerHeap, SaysWhyThereIsNoHeapProfile) {
  Result<std::string> heap = Profiler::heap_profile();
  const bool tcmalloc = ::dlsym(RTLD_DEFAULT, "_ZN15MallocExtension8instanceEv") != nullptr;
  if (!tcmalloc) {
    ASSERT_FALSE(heap.ok());
    EXPECT_EQ(heap.status().kind(), ErrorKind::permanent);
    EXPECT_NE(heap.status().message().find("tcmalloc is not linked"), std::string::npos) << heap.status().message();
  } else if (heap.ok()) {
    EXPECT_EQ(heap->rfind("heap profile:", 0), 0u) << heap->substr(0, 200);
  } else {
    EXPECT_EQ(heap.status().kind(), ErrorKind::permanent);
    EXPECT_NE(heap.status().message().find("TCMALLOC_SAMPLE_PARAMETER"), std::string::npos) << heap.status().message();
  }
}

}  // namespace
}  // namespace kiroku
