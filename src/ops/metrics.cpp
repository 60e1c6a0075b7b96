// metrics.cpp - metric cells, the registry and the /metrics and /stats renderings.
#include "ops/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <typeinfo>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/text.h"

namespace kiroku {

namespace {

// ============================================================================
// Names, text and numbers
// ============================================================================

// Upper limit on shards, far above any core count; keeps cell arrays sane.
constexpr unsigned kMaxShards = 1u << 16;

bool valid_metric_name(std::string_view s) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool valid_label_name(std::string_view s) {
  if (s.empty() || s.starts_with("__")) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

// Label values escape backslash, double quote and newline; HELP text escapes
// backslash and newline only (format 0.0.4).
void append_escaped(std::string& out, std::string_view s, bool quote) {
  for (const char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

void append_u64(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void append_i64(std::string& out, std::int64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

// Shortest text that reads back as the same double; NaN and +/-Inf as
// Prometheus spells them.
void append_double(std::string& out, double v) {
  if (std::isnan(v)) {
    out += "NaN";
  } else if (std::isinf(v)) {
    out += v > 0 ? "+Inf" : "-Inf";
  } else {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
  }
}

double round_to_12_digits(double v) {
  char buf[40];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general, 12);
  double out = v;
  std::from_chars(buf, r.ptr, out);
  return out;
}

const char* type_name(MetricType type) {
  switch (type) {
    case MetricType::counter: return "counter";
    case MetricType::gauge: return "gauge";
    case MetricType::histogram: return "histogram";
  }
  return "untyped";
}

// The sample names a family puts in the exposition.
std::vector<std::string> sample_names(const MetricFamily& f) {
  if (f.type() == MetricType::histogram) {
    return {f.name() + "_bucket", f.name() + "_sum", f.name() + "_count"};
  }
  return {f.name()};
}

void fail(std::string message) { throw std::invalid_argument(std::move(message)); }

// "a=x" labels object for /stats.
nlohmann::json labels_json(const std::vector<std::string>& names, const std::vector<std::string>& values) {
  nlohmann::json labels = nlohmann::json::object();
  for (std::size_t i = 0; i < names.size(); ++i) labels[names[i]] = values[i];
  return labels;
}

nlohmann::json number_or_null(double v) {
  if (std::isfinite(v)) return v;
  return nullptr;
}

// name{pairs} or name, then a space.
void append_series_start(std::string& out, const std::string& name, const std::string& pairs) {
  out += name;
  if (!pairs.empty()) {
    out += '{';
    out += pairs;
    out += '}';
  }
  out += ' ';
}

}  // namespace

std::vector<double> exponential_buckets(double start, double factor, std::size_t count) {
  if (!(start > 0) || !std::isfinite(start) || !(factor > 1) || !std::isfinite(factor) || count == 0 ||
      count > kMaxHistogramBounds) {
    fail("exponential_buckets: need start > 0, factor > 1 and 1 <= count <= 32");
  }
  std::vector<double> bounds;
  bounds.reserve(count);
  double x = start;
  for (std::size_t i = 0; i < count; ++i) {
    const double b = round_to_12_digits(x);
    if (!std::isfinite(b) || (!bounds.empty() && b <= bounds.back())) {
      fail("exponential_buckets: bounds overflow or do not increase");
    }
    bounds.push_back(b);
    x *= factor;
  }
  return bounds;
}

// ============================================================================
// Counter, Gauge
// ============================================================================

Counter::Counter(unsigned shards) : shards_(shards), cells_(std::make_unique<Cell[]>(std::size_t{shards} + 1)) {}

std::uint64_t Counter::value() const noexcept {
  std::uint64_t sum = 0;
  for (unsigned i = 0; i <= shards_; ++i) sum += cells_[i].v.load(std::memory_order_relaxed);
  return sum;
}

Gauge::Gauge(unsigned shards) : shards_(shards), cells_(std::make_unique<Cell[]>(std::size_t{shards} + 1)) {}

std::int64_t Gauge::value() const noexcept {
  // Parts may be negative (a shard that only decrements); sum with wrap-around
  // so the total is right whatever the order.
  std::uint64_t sum = 0;
  for (unsigned i = 0; i <= shards_; ++i) {
    sum += static_cast<std::uint64_t>(cells_[i].v.load(std::memory_order_relaxed));
  }
  return static_cast<std::int64_t>(sum);
}

// ============================================================================
// Histogram
// ============================================================================

Histogram::Histogram(unsigned shards, std::span<const double> bounds, double unit)
    : shards_(shards), bounds_(bounds.begin(), bounds.end()), unit_(unit), per_unit_(0) {
  if (!(unit > 0) || !std::isfinite(unit)) fail("histogram unit must be a positive number");
  if (bounds.size() > kMaxHistogramBounds) fail("a histogram has at most 32 bucket bounds");
  const double inverse = 1.0 / unit;
  const double whole = std::round(inverse);
  if (whole >= 1 && std::fabs(inverse - whole) <= 1e-9 * whole) per_unit_ = whole;

  for (std::size_t i = 0; i < bounds.size(); ++i) {
    const double b = bounds[i];
    if (!std::isfinite(b) || b < 0) fail("histogram bounds must be finite and >= 0");
    if (i > 0 && b <= bounds[i - 1]) fail("histogram bounds must increase strictly");
    // Values are integers, so "value <= b" is "value <= floor(b / unit)"; a
    // bound within rounding noise of a whole number of units is that number.
    const double x = per_unit_ > 0 ? b * per_unit_ : b / unit;
    const double nearest = std::round(x);
    const double limit = std::fabs(x - nearest) <= 1e-9 * std::max(1.0, nearest) ? nearest : std::floor(x);
    if (limit >= 1.8e19) fail("histogram bound too large for its unit");
    limits_[i] = static_cast<std::uint64_t>(limit);
    if (i > 0 && limits_[i] <= limits_[i - 1]) {
      fail("histogram bounds closer together than one unit");
    }
  }
  nbounds_ = static_cast<std::uint32_t>(bounds.size());
  lines_per_cell_ = (nbounds_ + 3 + 7) / 8;
  lines_ = std::make_unique<Line[]>((std::size_t{shards} + 1) * lines_per_cell_);
}

double Histogram::exposed(std::uint64_t raw) const noexcept {
  // Dividing by an exact 1e6 gives the correctly rounded 1.234567 where
  // multiplying by 1e-6 may not.
  return per_unit_ > 0 ? static_cast<double>(raw) / per_unit_ : static_cast<double>(raw) * unit_;
}

HistogramSnapshot Histogram::snapshot() const noexcept {
  constexpr auto relaxed = std::memory_order_relaxed;
  HistogramSnapshot s;
  s.bounds = bounds_;
  std::uint64_t sum = 0;
  std::uint64_t max = 0;
  for (unsigned cell = 0; cell <= shards_; ++cell) {
    for (std::size_t b = 0; b <= nbounds_; ++b) s.buckets[b] += word(cell, b).load(relaxed);
    sum += word(cell, nbounds_ + 1).load(relaxed);
    max = std::max(max, word(cell, nbounds_ + 2).load(relaxed));
  }
  for (std::size_t b = 0; b <= nbounds_; ++b) s.count += s.buckets[b];
  s.sum = exposed(sum);
  s.max = exposed(max);
  return s;
}

double HistogramSnapshot::quantile(double q) const {
  if (count == 0 || std::isnan(q)) return std::numeric_limits<double>::quiet_NaN();
  q = std::clamp(q, 0.0, 1.0);
  const double rank = q * static_cast<double>(count);
  const std::size_t n = bounds.size();
  std::uint64_t below = 0;
  for (std::size_t i = 0; i <= n; ++i) {
    const std::uint64_t in = buckets[i];
    if (in == 0) continue;
    if (static_cast<double>(below + in) >= rank) {
      const double lower = i == 0 ? 0.0 : bounds[i - 1];
      // No value exceeds max, so it is the upper end of the bucket that holds it.
      const double upper = std::max(lower, i < n ? std::min(bounds[i], max) : max);
      return lower + (upper - lower) * ((rank - static_cast<double>(below)) / static_cast<double>(in));
    }
    below += in;
  }
  return max;
}

// ============================================================================
// Families
// ============================================================================

MetricFamily::MetricFamily(std::mutex& mu, MetricType type, std::string name, std::string help,
                           std::vector<std::string> label_names)
    : mu_(mu), type_(type), name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {
  if (!valid_metric_name(name_)) fail("invalid metric name '" + name_ + "'");
  if (!valid_utf8(help_)) fail("help of " + name_ + " is not UTF-8");
  for (std::size_t i = 0; i < label_names_.size(); ++i) {
    const std::string& l = label_names_[i];
    if (!valid_label_name(l)) fail("invalid label name '" + l + "' in " + name_);
    if (type_ == MetricType::histogram && l == "le") fail("label 'le' is reserved: " + name_);
    for (std::size_t k = 0; k < i; ++k) {
      if (label_names_[k] == l) fail("label '" + l + "' repeated in " + name_);
    }
  }
  if (!help_.empty()) {
    header_ += "# HELP ";
    header_ += name_;
    header_ += ' ';
    append_escaped(header_, help_, false);
    header_ += '\n';
  }
  header_ += "# TYPE ";
  header_ += name_;
  header_ += ' ';
  header_ += type_name(type_);
  header_ += '\n';
}

std::string MetricFamily::label_pairs(const std::vector<std::string>& values) const {
  if (values.size() != label_names_.size()) {
    fail(name_ + " takes " + std::to_string(label_names_.size()) + " label values, got " +
         std::to_string(values.size()));
  }
  std::string pairs;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!valid_utf8(values[i])) fail("label value of " + name_ + " is not UTF-8");
    if (i > 0) pairs += ',';
    pairs += label_names_[i];
    pairs += "=\"";
    append_escaped(pairs, values[i], true);
    pairs += '"';
  }
  return pairs;
}

bool MetricFamily::same_shape(const MetricFamily& other) const {
  return typeid(*this) == typeid(other) && type_ == other.type_ && name_ == other.name_ && help_ == other.help_ &&
         label_names_ == other.label_names_;
}

// ---- counters ----

CounterFamily::CounterFamily(std::mutex& mu, unsigned shards, std::string name, std::string help,
                             std::vector<std::string> label_names)
    : MetricFamily(mu, MetricType::counter, std::move(name), std::move(help), std::move(label_names)), shards_(shards) {
  // An unlabeled family has its one series from the start, so it shows as 0.
  if (this->label_names().empty()) add({});
}

Counter* CounterFamily::with(std::vector<std::string> label_values) {
  std::lock_guard lock(mu_);
  return add(std::move(label_values));
}

Counter* CounterFamily::add(std::vector<std::string> values) {
  for (const auto& s : series_) {
    if (s->values == values) return &s->metric;
  }
  std::string pairs = label_pairs(values);
  series_.push_back(std::unique_ptr<Series>(new Series{std::move(values), std::move(pairs), Counter(shards_)}));
  return &series_.back()->metric;
}

void CounterFamily::render_prometheus(std::string& out) const {
  for (const auto& s : series_) {
    append_series_start(out, name(), s->pairs);
    append_u64(out, s->metric.value());
    out += '\n';
  }
}

void CounterFamily::render_json(nlohmann::json& into) const {
  nlohmann::json series = nlohmann::json::array();
  for (const auto& s : series_) {
    series.push_back({{"labels", labels_json(label_names(), s->values)}, {"value", s->metric.value()}});
  }
  into[name()] = {{"type", "counter"}, {"help", help()}, {"series", std::move(series)}};
}

// ---- gauges ----

GaugeFamily::GaugeFamily(std::mutex& mu, unsigned shards, std::string name, std::string help,
                         std::vector<std::string> label_names)
    : MetricFamily(mu, MetricType::gauge, std::move(name), std::move(help), std::move(label_names)), shards_(shards) {
  if (this->label_names().empty()) add({});
}

Gauge* GaugeFamily::with(std::vector<std::string> label_values) {
  std::lock_guard lock(mu_);
  return add(std::move(label_values));
}

Gauge* GaugeFamily::add(std::vector<std::string> values) {
  for (const auto& s : series_) {
    if (s->values == values) return &s->metric;
  }
  std::string pairs = label_pairs(values);
  series_.push_back(std::unique_ptr<Series>(new Series{std::move(values), std::move(pairs), Gauge(shards_)}));
  return &series_.back()->metric;
}

void GaugeFamily::render_prometheus(std::string& out) const {
  for (const auto& s : series_) {
    append_series_start(out, name(), s->pairs);
    append_i64(out, s->metric.value());
    out += '\n';
  }
}

void GaugeFamily::render_json(nlohmann::json& into) const {
  nlohmann::json series = nlohmann::json::array();
  for (const auto& s : series_) {
    series.push_back({{"labels", labels_json(label_names(), s->values)}, {"value", s->metric.value()}});
  }
  into[name()] = {{"type", "gauge"}, {"help", help()}, {"series", std::move(series)}};
}

// ---- histograms ----

HistogramFamily::HistogramFamily(std::mutex& mu, unsigned shards, std::string name, std::string help,
                                 std::vector<std::string> label_names, std::vector<double> bounds, double unit)
    : MetricFamily(mu, MetricType::histogram, std::move(name), std::move(help), std::move(label_names)),
      shards_(shards),
      bounds_(std::move(bounds)),
      unit_(unit) {
  // Validates bounds and unit (throws) before any series exists.
  const Histogram check(0, bounds_, unit_);
  for (const double b : bounds_) {
    std::string le;
    append_double(le, b);
    le_.push_back(std::move(le));
  }
  if (this->label_names().empty()) add({});
}

Histogram* HistogramFamily::with(std::vector<std::string> label_values) {
  std::lock_guard lock(mu_);
  return add(std::move(label_values));
}

Histogram* HistogramFamily::add(std::vector<std::string> values) {
  for (const auto& s : series_) {
    if (s->values == values) return &s->metric;
  }
  std::string pairs = label_pairs(values);
  series_.push_back(
      std::unique_ptr<Series>(new Series{std::move(values), std::move(pairs), Histogram(shards_, bounds_, unit_)}));
  return &series_.back()->metric;
}

bool HistogramFamily::same_shape(const MetricFamily& other) const {
  if (!MetricFamily::same_shape(other)) return false;
  const auto& h = static_cast<const HistogramFamily&>(other);
  return bounds_ == h.bounds_ && unit_ == h.unit_;
}

void HistogramFamily::render_prometheus(std::string& out) const {
  for (const auto& s : series_) {
    const HistogramSnapshot snap = s->metric.snapshot();
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= le_.size(); ++i) {
      cumulative += snap.buckets[i];
      out += name();
      out += "_bucket{";
      if (!s->pairs.empty()) {
        out += s->pairs;
        out += ',';
      }
      out += "le=\"";
      out += i < le_.size() ? std::string_view(le_[i]) : std::string_view("+Inf");
      out += "\"} ";
      append_u64(out, cumulative);
      out += '\n';
    }
    out += name();
    out += "_sum";
    append_series_start(out, {}, s->pairs);
    append_double(out, snap.sum);
    out += '\n';
    out += name();
    out += "_count";
    append_series_start(out, {}, s->pairs);
    append_u64(out, snap.count);
    out += '\n';
  }
}

void HistogramFamily::render_json(nlohmann::json& into) const {
  nlohmann::json series = nlohmann::json::array();
  for (const auto& s : series_) {
    const HistogramSnapshot snap = s->metric.snapshot();
    const bool empty = snap.count == 0;
    series.push_back({{"labels", labels_json(label_names(), s->values)},
                      {"count", snap.count},
                      {"sum", snap.sum},
                      {"p50", number_or_null(snap.quantile(0.5))},
                      {"p90", number_or_null(snap.quantile(0.9))},
                      {"p99", number_or_null(snap.quantile(0.99))},
                      {"max", empty ? nlohmann::json(nullptr) : nlohmann::json(snap.max)}});
  }
  into[name()] = {{"type", "histogram"}, {"help", help()}, {"series", std::move(series)}};
}

// ---- callbacks ----

CallbackFamily::CallbackFamily(std::mutex& mu, MetricType type, std::string name, std::string help,
                               std::vector<std::string> label_names)
    : MetricFamily(mu, type, std::move(name), std::move(help), std::move(label_names)) {
  if (type == MetricType::histogram) fail("a callback metric is a counter or a gauge");
}

void CallbackFamily::with(std::vector<std::string> label_values, std::function<double()> read) {
  if (!read) fail("callback metric " + name() + " needs a function");
  std::lock_guard lock(mu_);
  for (const auto& s : series_) {
    if (s->values == label_values) fail("callback series of " + name() + " registered twice");
  }
  std::string pairs = label_pairs(label_values);
  series_.push_back(std::unique_ptr<Series>(new Series{std::move(label_values), std::move(pairs), std::move(read)}));
}

void CallbackFamily::render_prometheus(std::string& out) const {
  for (const auto& s : series_) {
    append_series_start(out, name(), s->pairs);
    append_double(out, s->read());
    out += '\n';
  }
}

void CallbackFamily::render_json(nlohmann::json& into) const {
  nlohmann::json series = nlohmann::json::array();
  for (const auto& s : series_) {
    series.push_back({{"labels", labels_json(label_names(), s->values)}, {"value", number_or_null(s->read())}});
  }
  into[name()] = {{"type", type_name(type())}, {"help", help()}, {"series", std::move(series)}};
}

// ============================================================================
// Registry
// ============================================================================

Registry::Registry(unsigned shards) : shards_(shards) {
  if (shards > kMaxShards) fail("too many shards for the metrics registry");
}

Registry::~Registry() = default;

MetricFamily& Registry::add_family(std::unique_ptr<MetricFamily> candidate) {
  std::lock_guard lock(mu_);
  const auto it = families_.find(candidate->name());
  if (it != families_.end()) {
    if (!it->second->same_shape(*candidate)) {
      fail("metric " + candidate->name() + " is already registered with another type, help, labels or buckets");
    }
    return *it->second;
  }
  const std::vector<std::string> mine = sample_names(*candidate);
  for (const auto& [name, family] : families_) {
    for (const std::string& theirs : sample_names(*family)) {
      if (std::find(mine.begin(), mine.end(), theirs) != mine.end()) {
        fail("metric " + candidate->name() + " collides with " + name + " on " + theirs);
      }
    }
  }
  MetricFamily& added = *candidate;
  std::string key = candidate->name();
  families_.emplace(std::move(key), std::move(candidate));
  return added;
}

CounterFamily& Registry::counter(std::string name, std::string help, std::vector<std::string> label_names) {
  std::unique_ptr<MetricFamily> f(
      new CounterFamily(mu_, shards_, std::move(name), std::move(help), std::move(label_names)));
  return static_cast<CounterFamily&>(add_family(std::move(f)));
}

GaugeFamily& Registry::gauge(std::string name, std::string help, std::vector<std::string> label_names) {
  std::unique_ptr<MetricFamily> f(
      new GaugeFamily(mu_, shards_, std::move(name), std::move(help), std::move(label_names)));
  return static_cast<GaugeFamily&>(add_family(std::move(f)));
}

HistogramFamily& Registry::histogram(std::string name, std::string help, std::vector<std::string> label_names,
                                     std::vector<double> bounds, double unit) {
  std::unique_ptr<MetricFamily> f(new HistogramFamily(mu_, shards_, std::move(name), std::move(help),
                                                      std::move(label_names), std::move(bounds), unit));
  return static_cast<HistogramFamily&>(add_family(std::move(f)));
}

CallbackFamily& Registry::callback_family(MetricType type, std::string name, std::string help,
                                          std::vector<std::string> label_names) {
  std::unique_ptr<MetricFamily> f(
      new CallbackFamily(mu_, type, std::move(name), std::move(help), std::move(label_names)));
  return static_cast<CallbackFamily&>(add_family(std::move(f)));
}

void Registry::callback_gauge(std::string name, std::string help, std::function<double()> read) {
  if (!read) fail("callback metric " + name + " needs a function");
  callback_family(MetricType::gauge, std::move(name), std::move(help)).with({}, std::move(read));
}

void Registry::callback_counter(std::string name, std::string help, std::function<double()> read) {
  if (!read) fail("callback metric " + name + " needs a function");
  callback_family(MetricType::counter, std::move(name), std::move(help)).with({}, std::move(read));
}

void Registry::render_prometheus(std::string& out) const {
  out.clear();
  std::lock_guard lock(mu_);
  for (const auto& [name, family] : families_) {
    family->render_header(out);
    family->render_prometheus(out);
  }
}

nlohmann::json Registry::render_json() const {
  nlohmann::json out = nlohmann::json::object();
  std::lock_guard lock(mu_);
  for (const auto& [name, family] : families_) family->render_json(out);
  return out;
}

}  // namespace kiroku
