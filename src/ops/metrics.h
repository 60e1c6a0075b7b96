// metrics.h - counters, gauges and histograms behind GET /metrics and GET /stats.
//
// A Registry owns every metric. Families (a name, a help text, a fixed list of
// label names) are registered at startup; each set of label values declared on
// a family gives a handle (Counter*, Gauge*, Histogram*) that is updated
// directly, so the request path is `handle->inc(shard)`: no lookup, no string
// work, no lock, no allocation.
//
// Cells: every metric keeps one cache-line aligned cell per IO shard, written
// only by the thread that owns the shard (a relaxed load and store, no
// read-modify-write), and one shared cell for every other thread (relaxed
// fetch_add). Reading a metric sums its cells. In bench/metrics_bench.cpp a
// shard's increment costs under 1 ns from 1 or 2 threads (BM_CounterInc),
// where a fetch_add contended by 2 threads, or two single-writer cells in one
// cache line, cost 17 ns (BM_CounterIncShared, BM_PackedCellsInc).
//
// Threading: update methods are safe from any thread provided shard s is only
// ever passed by the thread that owns shard s (anything else passes
// Registry::kShared; an index >= shards() also lands in the shared cell).
// Registration and rendering are safe from any thread at any time; they take
// the registry's mutex, which updates never touch.
//
// Errors: registration mistakes (a malformed name, a family registered twice
// with a different shape, the wrong number of label values) are programming
// errors found at startup and throw std::invalid_argument. Nothing else throws.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace kiroku {

class CounterFamily;
class GaugeFamily;
class HistogramFamily;
class CallbackFamily;
class MetricFamily;

enum class MetricType { counter, gauge, histogram };

// Histograms have at most this many finite bucket bounds (+Inf is implicit).
inline constexpr std::size_t kMaxHistogramBounds = 32;

// Histogram unit for latencies: values are recorded in integer microseconds and
// exposed in seconds, as Prometheus expects.
inline constexpr double kMicrosecondsInSeconds = 1e-6;

// `count` bounds start, start*factor, start*factor^2, ... each rounded to 12
// significant digits so they print cleanly. Throws std::invalid_argument
// unless start > 0, factor > 1 and 1 <= count <= kMaxHistogramBounds.
std::vector<double> exponential_buckets(double start, double factor, std::size_t count);

// ============================================================================
// Registry
// ============================================================================

class Registry {
 public:
  // The shard index for updates from threads that are not IO shards.
  static constexpr unsigned kShared = ~0u;

  // `shards`: the number of IO threads; each metric gets shards + 1 cells.
  explicit Registry(unsigned shards);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  unsigned shards() const { return shards_; }

  // Registers a family, or returns the one already registered under `name`
  // when type, help and label names (and bounds and unit) are the same; any
  // difference throws. Names follow Prometheus: [a-zA-Z_:][a-zA-Z0-9_:]* for
  // metrics, [a-zA-Z_][a-zA-Z0-9_]* (not starting "__") for labels.
  CounterFamily& counter(std::string name, std::string help, std::vector<std::string> label_names = {});
  GaugeFamily& gauge(std::string name, std::string help, std::vector<std::string> label_names = {});
  // `bounds`: finite, >= 0, strictly increasing upper bounds in the exposed
  // unit (seconds for latency); values are observed as integers, each worth
  // `unit` exposed units (kMicrosecondsInSeconds: observe microseconds;
  // 1.0: observe counts or bytes). "le" is reserved as a label name.
  HistogramFamily& histogram(std::string name, std::string help, std::vector<std::string> label_names,
                             std::vector<double> bounds, double unit = kMicrosecondsInSeconds);
  // A family whose values are read by calling a function at each scrape
  // (spool bytes, process RSS, pool statistics); `type` is counter or gauge.
  CallbackFamily& callback_family(MetricType type, std::string name, std::string help,
                                  std::vector<std::string> label_names = {});
  // One unlabeled callback series. `read` runs on the scraping thread under
  // the registry's mutex: it must be thread-safe and must not use the registry.
  void callback_gauge(std::string name, std::string help, std::function<double()> read);
  void callback_counter(std::string name, std::string help, std::function<double()> read);

  // Replaces the contents of `out` with the Prometheus text exposition (format
  // 0.0.4) of every family, sorted by name. Reuses out's capacity: once it is
  // large enough, rendering allocates nothing (callbacks aside).
  void render_prometheus(std::string& out) const;

  // The same figures for /stats: {name: {"type", "help", "series": [{"labels":
  // {...}, "value"}]}}; histogram series carry "count", "sum", "p50", "p90",
  // "p99", "max" instead of "value" (quantiles estimated as in
  // HistogramSnapshot::quantile; null when empty).
  nlohmann::json render_json() const;

 private:
  // Adds `candidate`, or returns the family already under its name if it has
  // the same shape (throws otherwise, or if their sample names would collide).
  MetricFamily& add_family(std::unique_ptr<MetricFamily> candidate);

  unsigned shards_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<MetricFamily>, std::less<>> families_;
};

// ============================================================================
// Metrics: the handles updated on the hot path
// ============================================================================

// A monotonically increasing count. Handles come from CounterFamily::with and
// live as long as their Registry; one built directly is simply not exposed.
class Counter {
 public:
  explicit Counter(unsigned shards);

  // Adds `n`. `shard` is the caller's own IO shard or Registry::kShared.
  void add(unsigned shard, std::uint64_t n) noexcept;
  void inc(unsigned shard) noexcept { add(shard, 1); }
  void add_shared(std::uint64_t n) noexcept { add(Registry::kShared, n); }
  void inc_shared() noexcept { add(Registry::kShared, 1); }

  // The sum of all cells; any thread.
  std::uint64_t value() const noexcept;

 private:
  struct alignas(64) Cell {
    std::atomic<std::uint64_t> v{0};
  };
  unsigned shards_;
  std::unique_ptr<Cell[]> cells_;
};

// A value that goes up and down. Each cell holds a part and the gauge is the
// sum of the parts: a shard may add to its part (in-flight requests) or set it
// (its own queue depth); set_shared()/add_shared() act on the shared part, so
// a gauge owned by one non-shard thread (the writer's backlog) uses only those.
class Gauge {
 public:
  explicit Gauge(unsigned shards);

  void set(unsigned shard, std::int64_t v) noexcept;
  void add(unsigned shard, std::int64_t delta) noexcept;
  void inc(unsigned shard) noexcept { add(shard, 1); }
  void dec(unsigned shard) noexcept { add(shard, -1); }
  void set_shared(std::int64_t v) noexcept { set(Registry::kShared, v); }
  void add_shared(std::int64_t delta) noexcept { add(Registry::kShared, delta); }

  // The sum of all parts; any thread.
  std::int64_t value() const noexcept;

 private:
  struct alignas(64) Cell {
    std::atomic<std::int64_t> v{0};
  };
  unsigned shards_;
  std::unique_ptr<Cell[]> cells_;
};

// What a histogram holds at one moment, summed over its cells. Built on the
// stack (no allocation); `bounds` views the histogram, which must outlive it.
struct HistogramSnapshot {
  std::span<const double> bounds;  // finite upper bounds, exposed unit
  // Per bucket, not cumulative: buckets[i] counts values <= bounds[i] and
  // > bounds[i-1]; buckets[bounds.size()] counts values above the last bound.
  std::array<std::uint64_t, kMaxHistogramBounds + 1> buckets{};
  std::uint64_t count = 0;
  double sum = 0;  // exposed unit
  double max = 0;  // largest value observed since start, exposed unit; 0 when empty

  // Estimates the q-quantile (0 <= q <= 1) in the exposed unit; NaN when
  // empty. The value of rank q*count is located in its bucket and
  // interpolated linearly between the bucket's lower bound (0 for the first)
  // and its upper bound, or max where max is lower (always for +Inf). The
  // true quantile lies in the same bucket, so the error is at most that
  // bucket's width; q = 1 gives max exactly.
  double quantile(double q) const;
};

// A distribution of non-negative integer values in fixed buckets, plus sum,
// count and max.
class Histogram {
 public:
  // `bounds` and `unit` as in Registry::histogram; throws std::invalid_argument
  // if they are invalid or two bounds fall on the same integer value.
  Histogram(unsigned shards, std::span<const double> bounds, double unit);

  // Records `value` (an integer count of `unit`: microseconds for latency).
  void observe(unsigned shard, std::uint64_t value) noexcept;
  void observe_shared(std::uint64_t value) noexcept { observe(Registry::kShared, value); }

  // Sums the cells; any thread. Concurrent updates may leave sum and max a
  // step ahead of or behind the buckets; count always equals the buckets' sum.
  HistogramSnapshot snapshot() const noexcept;

  std::span<const double> bounds() const { return bounds_; }
  double unit() const { return unit_; }

  // The bucket index `value` falls in (bounds().size() for +Inf). A linear
  // scan, because most recorded latencies sit in the first buckets: for
  // sub-millisecond values it takes 2.4 ns against 7.6 ns for a binary search;
  // spread evenly over 20-32 buckets it is slower, 8 ns against 5 ns
  // (BM_BucketLookupLinear vs BM_BucketLookupBinary).
  std::size_t bucket_of(std::uint64_t value) const noexcept {
    std::size_t i = 0;
    while (i < nbounds_ && value > limits_[i]) ++i;
    return i;
  }

 private:
  struct alignas(64) Line {
    std::atomic<std::uint64_t> w[8];
  };
  std::atomic<std::uint64_t>& word(unsigned cell, std::size_t slot) const noexcept {
    return lines_[cell * lines_per_cell_ + slot / 8].w[slot % 8];
  }
  double exposed(std::uint64_t raw) const noexcept;

  // A cell is buckets[nbounds_ + 1], then sum, then max, padded to whole lines.
  unsigned shards_;
  std::uint32_t nbounds_ = 0;
  std::uint32_t lines_per_cell_ = 0;
  std::array<std::uint64_t, kMaxHistogramBounds> limits_{};  // bounds in recorded integers
  std::unique_ptr<Line[]> lines_;
  std::vector<double> bounds_;
  double unit_;
  double per_unit_;  // 1 / unit_ when that is a whole number (exact division), else 0
};

// ============================================================================
// Families: where handles come from
// ============================================================================

// What every family has; see the kinds below.
class MetricFamily {
 public:
  virtual ~MetricFamily() = default;
  MetricType type() const { return type_; }
  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

 protected:
  MetricFamily(std::mutex& mu, MetricType type, std::string name, std::string help,
               std::vector<std::string> label_names);

  // Rendered label pairs for these values (`a="x",b="y"`), escaped; throws if
  // the count differs from label_names().
  std::string label_pairs(const std::vector<std::string>& values) const;

  // Same dynamic kind, type, name, help and label names (and what a kind adds).
  virtual bool same_shape(const MetricFamily& other) const;

  std::mutex& mu_;  // the registry's

 private:
  friend class Registry;
  // Render under the registry's mutex.
  virtual void render_prometheus(std::string& out) const = 0;
  virtual void render_json(nlohmann::json& into) const = 0;
  void render_header(std::string& out) const { out.append(header_); }

  MetricType type_;
  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
  std::string header_;  // "# HELP ...\n# TYPE ...\n", rendered once
};

class CounterFamily final : public MetricFamily {
 public:
  // The counter for these label values (one per label name, in order); the
  // same values give the same counter. Owned by the registry.
  Counter* with(std::vector<std::string> label_values);

 private:
  friend class Registry;
  CounterFamily(std::mutex& mu, unsigned shards, std::string name, std::string help,
                std::vector<std::string> label_names);
  Counter* add(std::vector<std::string> values);  // caller holds mu_ (or owns *this)
  void render_prometheus(std::string& out) const override;
  void render_json(nlohmann::json& into) const override;
  struct Series {
    std::vector<std::string> values;
    std::string pairs;
    Counter metric;
  };
  unsigned shards_;
  std::vector<std::unique_ptr<Series>> series_;
};

class GaugeFamily final : public MetricFamily {
 public:
  // As CounterFamily::with.
  Gauge* with(std::vector<std::string> label_values);

 private:
  friend class Registry;
  GaugeFamily(std::mutex& mu, unsigned shards, std::string name, std::string help,
              std::vector<std::string> label_names);
  Gauge* add(std::vector<std::string> values);  // caller holds mu_ (or owns *this)
  void render_prometheus(std::string& out) const override;
  void render_json(nlohmann::json& into) const override;
  struct Series {
    std::vector<std::string> values;
    std::string pairs;
    Gauge metric;
  };
  unsigned shards_;
  std::vector<std::unique_ptr<Series>> series_;
};

class HistogramFamily final : public MetricFamily {
 public:
  // As CounterFamily::with.
  Histogram* with(std::vector<std::string> label_values);

 private:
  friend class Registry;
  HistogramFamily(std::mutex& mu, unsigned shards, std::string name, std::string help,
                  std::vector<std::string> label_names, std::vector<double> bounds, double unit);
  Histogram* add(std::vector<std::string> values);  // caller holds mu_ (or owns *this)
  void render_prometheus(std::string& out) const override;
  void render_json(nlohmann::json& into) const override;
  bool same_shape(const MetricFamily& other) const override;
  struct Series {
    std::vector<std::string> values;
    std::string pairs;
    Histogram metric;
  };
  unsigned shards_;
  std::vector<double> bounds_;
  double unit_;
  std::vector<std::string> le_;  // bounds formatted for the "le" label
  std::vector<std::unique_ptr<Series>> series_;
};

class CallbackFamily final : public MetricFamily {
 public:
  // Adds the series for these label values, read by `read` at each scrape
  // (see Registry::callback_gauge). Throws if the values are already present.
  void with(std::vector<std::string> label_values, std::function<double()> read);

 private:
  friend class Registry;
  CallbackFamily(std::mutex& mu, MetricType type, std::string name, std::string help,
                 std::vector<std::string> label_names);
  void render_prometheus(std::string& out) const override;
  void render_json(nlohmann::json& into) const override;
  struct Series {
    std::vector<std::string> values;
    std::string pairs;
    std::function<double()> read;
  };
  std::vector<std::unique_ptr<Series>> series_;
};

// ============================================================================
// Inline definitions
// ============================================================================

inline void Counter::add(unsigned shard, std::uint64_t n) noexcept {
  if (shard < shards_) {
    std::atomic<std::uint64_t>& v = cells_[shard].v;
    v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  } else {
    cells_[shards_].v.fetch_add(n, std::memory_order_relaxed);
  }
}

inline void Gauge::set(unsigned shard, std::int64_t v) noexcept {
  cells_[shard < shards_ ? shard : shards_].v.store(v, std::memory_order_relaxed);
}

inline void Gauge::add(unsigned shard, std::int64_t delta) noexcept {
  if (shard < shards_) {
    std::atomic<std::int64_t>& v = cells_[shard].v;
    v.store(v.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
  } else {
    cells_[shards_].v.fetch_add(delta, std::memory_order_relaxed);
  }
}

inline void Histogram::observe(unsigned shard, std::uint64_t value) noexcept {
  const std::size_t bucket = bucket_of(value);
  const std::size_t sum_slot = nbounds_ + 1;
  const std::size_t max_slot = nbounds_ + 2;
  constexpr auto relaxed = std::memory_order_relaxed;
  if (shard < shards_) {
    std::atomic<std::uint64_t>& b = word(shard, bucket);
    b.store(b.load(relaxed) + 1, relaxed);
    std::atomic<std::uint64_t>& s = word(shard, sum_slot);
    s.store(s.load(relaxed) + value, relaxed);
    std::atomic<std::uint64_t>& m = word(shard, max_slot);
    if (value > m.load(relaxed)) m.store(value, relaxed);
  } else {
    word(shards_, bucket).fetch_add(1, relaxed);
    word(shards_, sum_slot).fetch_add(value, relaxed);
    std::atomic<std::uint64_t>& m = word(shards_, max_slot);
    std::uint64_t seen = m.load(relaxed);
    while (value > seen && !m.compare_exchange_weak(seen, value, relaxed)) {}
  }
}

}  // namespace kiroku
