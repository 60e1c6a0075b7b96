// latency_histogram_test.cpp - LatencyHistogram against a sorted reference: buckets,
// percentiles, merging, extremes.
#include "load/latency_histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

namespace kiroku {
namespace {

using std::chrono::nanoseconds;

// The value of rank ceil(p/100 * n) in sorted order, as value_at_percentile defines it.
std::int64_t reference_percentile(const std::vector<std::int64_t>& sorted, double p) {
  if (p >= 100) return sorted.back();
  const double exact = p * static_cast<double>(sorted.size()) / 100.0;
  auto rank = static_cast<std::size_t>(std::ceil(exact * (1 - 1e-12)));
  rank = std::clamp<std::size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

void expect_within_one_percent(std::int64_t got, std::int64_t want, double p) {
  const double error = std::abs(static_cast<double>(got - want));
  EXPECT_LE(error, 0.01 * static_cast<double>(want) + 0.5) << "p" << p << ": got " << got << " want " << want;
}

const double kPercentiles[] = {0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100};

TEST(LoadLatencyHistogram, BucketsCoverEveryValueWithBoundedWidth) {
  // Walk the bucket boundaries: contiguous, increasing, width <= 1/128 of the lowest value.
  std::int64_t expected_lowest = 0;
  for (std::size_t b = 0; b < LatencyHistogram::kBuckets; ++b) {
    const std::int64_t lowest = LatencyHistogram::bucket_lowest(b);
    const std::int64_t width = LatencyHistogram::bucket_width(b);
    ASSERT_EQ(lowest, expected_lowest) << "bucket " << b;
    ASSERT_EQ(LatencyHistogram::bucket_of(lowest), b);
    ASSERT_EQ(LatencyHistogram::bucket_of(lowest + width - 1), b);
    if (lowest >= 128) {
      ASSERT_LE(width * 128, lowest) << "bucket " << b;
    }
    expected_lowest = lowest + width;
  }
  EXPECT_EQ(expected_lowest - 1, LatencyHistogram::kMaxTrackable);
  // One hour is well inside the tracked range.
  EXPECT_GT(LatencyHistogram::kMaxTrackable, std::int64_t{3600} * 1'000'000'000);
}

TEST(LoadLatencyHistogram, EmptyAnswersZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.min().count(), 0);
  EXPECT_EQ(h.max().count(), 0);
  EXPECT_EQ(h.mean().count(), 0);
  EXPECT_EQ(h.value_at_percentile(50).count(), 0);
  EXPECT_EQ(h.value_at_percentile(100).count(), 0);
}

TEST(LoadLatencyHistogram, PercentilesMatchSortedReferenceOnRandomData) {
  // Log-uniform latencies from 1 us to 1 h: every decade of the range gets samples.
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> exponent(3.0, std::log10(3600e9));
  for (int round = 0; round < 5; ++round) {
    LatencyHistogram h;
    std::vector<std::int64_t> values;
    const int n = 1000 + round * 20'000;
    for (int i = 0; i < n; ++i) {
      const auto v = static_cast<std::int64_t>(std::pow(10.0, exponent(rng)));
      values.push_back(v);
      h.record(nanoseconds(v));
    }
    std::sort(values.begin(), values.end());
    ASSERT_EQ(h.count(), values.size());
    EXPECT_EQ(h.min().count(), values.front());
    EXPECT_EQ(h.max().count(), values.back());
    for (double p : kPercentiles) {
      expect_within_one_percent(h.value_at_percentile(p).count(), reference_percentile(values, p), p);
    }
    double sum = 0;
    for (auto v : values) sum += static_cast<double>(v);
    EXPECT_NEAR(static_cast<double>(h.mean().count()), sum / n, sum / n * 1e-9 + 1);
  }
}

TEST(LoadLatencyHistogram, PercentilesOnNarrowDistribution) {
  // Typical loopback latencies: 50 us .. 2 ms, normally distributed around 300 us.
  std::mt19937_64 rng(7);
  std::normal_distribution<double> dist(300e3, 100e3);
  LatencyHistogram h;
  std::vector<std::int64_t> values;
  for (int i = 0; i < 100'000; ++i) {
    const auto v = std::clamp<std::int64_t>(std::llround(dist(rng)), 50'000, 2'000'000);
    values.push_back(v);
    h.record(nanoseconds(v));
  }
  std::sort(values.begin(), values.end());
  for (double p : kPercentiles) {
    expect_within_one_percent(h.value_at_percentile(p).count(), reference_percentile(values, p), p);
  }
}

TEST(LoadLatencyHistogram, MergeEqualsRecordingEverythingInOne) {
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<std::int64_t> dist(1'000, 5'000'000'000);
  LatencyHistogram parts[4];
  LatencyHistogram whole;
  std::vector<std::int64_t> values;
  for (int i = 0; i < 40'000; ++i) {
    const std::int64_t v = dist(rng);
    values.push_back(v);
    parts[i % 4].record(nanoseconds(v));
    whole.record(nanoseconds(v));
  }
  LatencyHistogram merged;
  for (auto& part : parts) merged.merge(part);
  merged.merge(LatencyHistogram());  // merging an empty one changes nothing
  std::sort(values.begin(), values.end());
  EXPECT_EQ(merged.count(), whole.count());
  EXPECT_EQ(merged.min(), whole.min());
  EXPECT_EQ(merged.max(), whole.max());
  EXPECT_EQ(merged.mean(), whole.mean());
  for (double p : kPercentiles) {
    EXPECT_EQ(merged.value_at_percentile(p), whole.value_at_percentile(p)) << "p" << p;
    expect_within_one_percent(merged.value_at_percentile(p).count(), reference_percentile(values, p), p);
  }
}

TEST(LoadLatencyHistogram, ExtremesAndClamping) {
  LatencyHistogram h;
  h.record(nanoseconds(-5));  // a clock step backwards counts as 0
  h.record(nanoseconds(0));
  h.record(nanoseconds(1));
  EXPECT_EQ(h.min().count(), 0);
  EXPECT_EQ(h.value_at_percentile(0).count(), 0);
  EXPECT_EQ(h.value_at_percentile(100).count(), 1);

  // Beyond the tracked range: counted in the top bucket, the exact max is kept.
  const std::int64_t huge = std::int64_t{10} * 3600 * 1'000'000'000;  // ten hours
  h.record(nanoseconds(huge));
  EXPECT_EQ(h.max().count(), huge);
  EXPECT_EQ(h.value_at_percentile(100).count(), huge);
  EXPECT_GE(h.value_at_percentile(99).count(), LatencyHistogram::kMaxTrackable / 2);

  // Exactly one hour stays within 1%.
  LatencyHistogram hour;
  const std::int64_t one_hour = std::int64_t{3600} * 1'000'000'000;
  hour.record(nanoseconds(one_hour), 3);
  hour.record(nanoseconds(1'000), 1);  // and 1 us at the bottom
  expect_within_one_percent(hour.value_at_percentile(50).count(), one_hour, 50);
  expect_within_one_percent(hour.value_at_percentile(1).count(), 1'000, 1);
  EXPECT_EQ(hour.count(), 4u);

  // A single value answers every percentile exactly (clamped to min and max).
  LatencyHistogram one;
  one.record(nanoseconds(123'456'789));
  for (double p : kPercentiles) EXPECT_EQ(one.value_at_percentile(p).count(), 123'456'789);

  // Reset forgets everything.
  h.reset();
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.value_at_percentile(50).count(), 0);
}

TEST(LoadLatencyHistogram, RecordWithCountWeighsValues) {
  LatencyHistogram h;
  h.record(nanoseconds(1'000), 99);
  h.record(nanoseconds(1'000'000), 1);
  EXPECT_EQ(h.count(), 100u);
  expect_within_one_percent(h.value_at_percentile(99).count(), 1'000, 99);
  EXPECT_EQ(h.value_at_percentile(99.5).count(), 1'000'000);
  h.record(nanoseconds(5), 0);  // a zero count records nothing
  EXPECT_EQ(h.count(), 100u);
  EXPECT_EQ(h.min().count(), 1'000);
}

}  // namespace
}  // namespace kiroku
