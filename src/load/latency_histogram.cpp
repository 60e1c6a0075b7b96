// latency_histogram.cpp - bucket arithmetic, merging and percentiles of LatencyHistogram.
#include "load/latency_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace kiroku {

namespace {

constexpr std::int64_t kLinearLimit = std::int64_t{2} << LatencyHistogram::kSubBucketBits;

// The value that stands for a bucket: its midpoint.
std::int64_t bucket_middle(std::size_t bucket) {
  return LatencyHistogram::bucket_lowest(bucket) + (LatencyHistogram::bucket_width(bucket) - 1) / 2;
}

}  // namespace

LatencyHistogram::LatencyHistogram() : counts_(kBuckets, 0) {}

// Below 256 a value is its own bucket. From there on, with e the position of
// the top bit and shift = e - 7, the top 8 bits (128..255) pick one of 128
// sub-buckets and `shift` picks the power of two: bucket = shift * 128 + top8.
std::size_t LatencyHistogram::bucket_of(std::int64_t value) {
  if (value < kLinearLimit) return static_cast<std::size_t>(std::max<std::int64_t>(value, 0));
  if (value > kMaxTrackable) value = kMaxTrackable;
  const auto v = static_cast<std::uint64_t>(value);
  const int top_bit = std::bit_width(v) - 1;
  const int shift = top_bit - kSubBucketBits;
  return (static_cast<std::size_t>(shift) << kSubBucketBits) + static_cast<std::size_t>(v >> shift);
}

std::int64_t LatencyHistogram::bucket_lowest(std::size_t bucket) {
  if (bucket < static_cast<std::size_t>(kLinearLimit)) return static_cast<std::int64_t>(bucket);
  const std::size_t shift = (bucket >> kSubBucketBits) - 1;
  const std::size_t top8 = bucket - (shift << kSubBucketBits);
  return static_cast<std::int64_t>(top8) << shift;
}

std::int64_t LatencyHistogram::bucket_width(std::size_t bucket) {
  if (bucket < static_cast<std::size_t>(kLinearLimit)) return 1;
  const std::size_t shift = (bucket >> kSubBucketBits) - 1;
  return std::int64_t{1} << shift;
}

void LatencyHistogram::record(std::chrono::nanoseconds value, std::uint64_t n) {
  if (n == 0) return;
  const std::int64_t v = std::max<std::int64_t>(value.count(), 0);
  counts_[bucket_of(v)] += n;
  if (count_ == 0) {
    min_ = v;
    max_ = v;
  } else {
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
  }
  count_ += n;
  sum_ += static_cast<double>(v) * static_cast<double>(n);
}

void LatencyHistogram::merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
  if (count_ == 0) {
    min_ = other.min_;
    max_ = other.max_;
  } else {
    min_ = std::min(min_, other.min_);
    max_ = std::max(max_, other.max_);
  }
  count_ += other.count_;
  sum_ += other.sum_;
}

void LatencyHistogram::reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  count_ = 0;
  min_ = 0;
  max_ = 0;
  sum_ = 0;
}

std::chrono::nanoseconds LatencyHistogram::min() const { return std::chrono::nanoseconds(min_); }

std::chrono::nanoseconds LatencyHistogram::max() const { return std::chrono::nanoseconds(max_); }

std::chrono::nanoseconds LatencyHistogram::mean() const {
  if (count_ == 0) return std::chrono::nanoseconds(0);
  return std::chrono::nanoseconds(std::llround(sum_ / static_cast<double>(count_)));
}

std::chrono::nanoseconds LatencyHistogram::value_at_percentile(double percentile) const {
  if (count_ == 0) return std::chrono::nanoseconds(0);
  if (!(percentile >= 0)) percentile = 0;  // also catches NaN
  if (percentile >= 100) return max();
  // The relative nudge keeps 99.9% of 1000 at rank 999 despite binary fractions.
  const double exact_rank = percentile * static_cast<double>(count_) / 100.0;
  auto rank = static_cast<std::uint64_t>(std::ceil(exact_rank * (1 - 1e-12)));
  rank = std::clamp<std::uint64_t>(rank, 1, count_);
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) {
      return std::chrono::nanoseconds(std::clamp(bucket_middle(i), min_, max_));
    }
  }
  return max();
}

}  // namespace kiroku
