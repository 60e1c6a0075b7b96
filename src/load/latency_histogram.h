// latency_histogram.h - a fixed-size log-linear histogram of latencies (HDR style).
//
// Values are nanoseconds. Each power of two from 2^8 ns up is split into 128
// equal buckets; below 256 ns every nanosecond has its own bucket. A bucket's
// width is at most 1/128 of its lower bound, and a percentile is answered with
// the bucket's midpoint, so any answer is within 0.4% of the recorded value it
// stands for (well inside 1% over the whole range that matters, 1 us to 1 h).
// Values above kMaxTrackable (about 73 minutes) count in the top bucket; the
// exact minimum and maximum are kept beside the buckets.
//
// Memory is fixed: 4608 counters (36 KiB) allocated by the constructor; record()
// never allocates. Histograms with the same layout (all of them) merge by
// adding counters, so each thread records into its own and the results merge.
// Not thread-safe: one writer at a time; copy or merge after the writer stops.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace kiroku {

class LatencyHistogram {
 public:
  static constexpr int kSubBucketBits = 7;  // 128 linear sub-buckets per power of two
  static constexpr int kTopExponent = 42;   // tracked values are below 2^42 ns
  static constexpr std::size_t kBuckets = static_cast<std::size_t>(kTopExponent - kSubBucketBits + 1) << kSubBucketBits;
  static constexpr std::int64_t kMaxTrackable = (std::int64_t{1} << kTopExponent) - 1;

  LatencyHistogram();

  // Counts `n` occurrences of `value`; negative values count as 0.
  void record(std::chrono::nanoseconds value, std::uint64_t n = 1);

  // Adds every count of `other` to this one.
  void merge(const LatencyHistogram& other);

  // Forgets everything recorded; keeps the memory.
  void reset();

  std::uint64_t count() const { return count_; }
  // Exact smallest and largest recorded values; 0 when empty.
  std::chrono::nanoseconds min() const;
  std::chrono::nanoseconds max() const;
  // Exact mean of the recorded values (before clamping); 0 when empty.
  std::chrono::nanoseconds mean() const;

  // The value below or at which `percentile` percent (0..100) of the recorded
  // values fall: the value of rank ceil(p/100 * count) in sorted order, to
  // within the bucket resolution. 100 gives the exact max; 0 when empty.
  std::chrono::nanoseconds value_at_percentile(double percentile) const;

  // Bucket layout, exposed for tests: the bucket of a value and the range
  // [lowest, lowest + width) of values that share it.
  static std::size_t bucket_of(std::int64_t value);
  static std::int64_t bucket_lowest(std::size_t bucket);
  static std::int64_t bucket_width(std::size_t bucket);

 private:
  std::vector<std::uint64_t> counts_;
  std::uint64_t count_ = 0;
  std::int64_t min_ = 0;
  std::int64_t max_ = 0;
  double sum_ = 0;
};

}  // namespace kiroku
