// prometheus_parser.h - a strict parser of the Prometheus text format 0.0.4, for tests.
//
// Checks what a scraper relies on rather than grepping for lines: every line
// is a well-formed HELP, TYPE, comment or sample; a family's TYPE comes before
// its samples and its lines form one contiguous group; HELP and TYPE appear at
// most once per family; label sets are well-formed (names valid and unique,
// values quoted with only the \\ \" \n escapes); no series appears twice;
// counters are >= 0; every histogram series has buckets in increasing "le"
// order with non-decreasing (cumulative) counts ending at le="+Inf", and
// matching _sum and _count, where _count equals the +Inf bucket. The text must
// end with a newline.
//
// Stricter than the format in two respects, both of which kiroku's output
// meets: a sample must have a TYPE (no untyped samples without one), and no
// whitespace is allowed inside a label set or at either end of a sample line.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace kiroku::test {

using PromLabels = std::map<std::string, std::string>;

struct PromSample {
  std::string name;
  PromLabels labels;
  double value = 0;
  std::optional<std::int64_t> timestamp_ms;
};

struct PromFamily {
  std::string name;
  std::string type;                 // counter, gauge, histogram, summary or untyped
  std::optional<std::string> help;  // unescaped
  std::vector<PromSample> samples;  // in the order of the text
};

struct PromExposition {
  std::vector<PromFamily> families;  // in the order of the text

  const PromFamily* family(std::string_view name) const {
    for (const PromFamily& f : families) {
      if (f.name == name) return &f;
    }
    return nullptr;
  }

  // The value of the sample with exactly this name and label set.
  std::optional<double> value(std::string_view name, const PromLabels& labels = {}) const {
    for (const PromFamily& f : families) {
      for (const PromSample& s : f.samples) {
        if (s.name == name && s.labels == labels) return s.value;
      }
    }
    return std::nullopt;
  }
};

namespace prom_detail {

inline bool is_blank(char c) { return c == ' ' || c == '\t'; }

inline bool is_name_start(char c, bool colon) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
}

inline bool is_name_char(char c, bool colon) { return is_name_start(c, colon) || (c >= '0' && c <= '9'); }

inline bool valid_name(std::string_view s, bool colon) {
  if (s.empty() || !is_name_start(s[0], colon)) return false;
  for (const char c : s) {
    if (!is_name_char(c, colon)) return false;
  }
  return true;
}

// A float as the format writes it: [+-]digits[.digits][e[+-]digits], or
// NaN, Inf, +Inf, -Inf. Hex floats and other spellings are rejected.
inline bool parse_float(std::string_view s, double& out) {
  if (s == "NaN") {
    out = std::numeric_limits<double>::quiet_NaN();
    return true;
  }
  if (s == "+Inf" || s == "Inf" || s == "-Inf") {
    out = s[0] == '-' ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
    return true;
  }
  std::size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
  std::size_t digits = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    std::size_t exp_digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i, ++exp_digits;
    if (exp_digits == 0) return false;
  }
  if (i != s.size()) return false;
  const std::size_t from = s[0] == '+' ? 1 : 0;
  const auto r = std::from_chars(s.data() + from, s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

inline bool parse_int64(std::string_view s, std::int64_t& out) {
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// What the bucket, sum and count lines of one histogram series said.
struct HistogramSeries {
  std::vector<std::pair<double, double>> buckets;  // (le, cumulative count) in text order
  std::optional<double> sum;
  std::optional<double> count;
};

class Parser {
 public:
  Parser(std::string_view text, PromExposition& out, std::string& error) : text_(text), out_(out), error_(error) {}

  bool run() {
    std::size_t at = 0;
    while (at < text_.size()) {
      const std::size_t end = text_.find('\n', at);
      ++line_;
      if (end == std::string_view::npos) return fail("the text does not end with a newline");
      const std::string_view line = text_.substr(at, end - at);
      at = end + 1;
      if (line.empty()) continue;
      const bool ok = line[0] == '#' ? comment(line) : sample(line);
      if (!ok) return false;
    }
    return close_family();
  }

 private:
  bool fail(const std::string& what) {
    error_ = "line " + std::to_string(line_) + ": " + what;
    return false;
  }

  // ---- HELP, TYPE and plain comments ----

  bool comment(std::string_view line) {
    std::size_t i = 1;
    if (i >= line.size() || !is_blank(line[i])) return true;  // "#..." plain comment
    while (i < line.size() && is_blank(line[i])) ++i;
    const std::size_t kw_start = i;
    while (i < line.size() && !is_blank(line[i])) ++i;
    const std::string_view keyword = line.substr(kw_start, i - kw_start);
    if (keyword != "HELP" && keyword != "TYPE") return true;
    if (i >= line.size()) return fail(std::string(keyword) + " without a metric name");
    while (i < line.size() && is_blank(line[i])) ++i;
    const std::size_t name_start = i;
    while (i < line.size() && !is_blank(line[i])) ++i;
    const std::string name(line.substr(name_start, i - name_start));
    if (!valid_name(name, true)) return fail("invalid metric name '" + name + "'");
    PromFamily* family = open_family(name);
    if (family == nullptr) return false;

    if (keyword == "HELP") {
      if (family->help) return fail("second HELP for " + name);
      std::string help;
      if (i < line.size()) ++i;  // the blank after the name
      for (; i < line.size(); ++i) {
        if (line[i] != '\\') {
          help += line[i];
          continue;
        }
        if (++i >= line.size()) return fail("HELP of " + name + " ends in a backslash");
        if (line[i] == '\\') {
          help += '\\';
        } else if (line[i] == 'n') {
          help += '\n';
        } else {
          return fail("invalid escape in HELP of " + name);
        }
      }
      family->help = std::move(help);
      return true;
    }

    if (!family->type.empty()) return fail("second TYPE for " + name);
    if (!family->samples.empty()) return fail("TYPE of " + name + " after its samples");
    while (i < line.size() && is_blank(line[i])) ++i;
    const std::string_view type = line.substr(i);
    if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" && type != "untyped") {
      return fail("unknown TYPE '" + std::string(type) + "' for " + name);
    }
    family->type = std::string(type);
    return true;
  }

  // The family `name` as the current one: the same as before, or a new one
  // (closing the previous). A family may not come back once closed.
  PromFamily* open_family(const std::string& name) {
    if (!out_.families.empty() && open_ && out_.families.back().name == name) {
      return &out_.families.back();
    }
    if (!close_family()) return nullptr;
    if (!family_names_.insert(name).second) {
      fail("family " + name + " appears in two separate groups");
      return nullptr;
    }
    out_.families.push_back(PromFamily{name, "", std::nullopt, {}});
    open_ = true;
    return &out_.families.back();
  }

  // ---- samples ----

  bool sample(std::string_view line) {
    std::size_t i = 0;
    while (i < line.size() && is_name_char(line[i], true)) ++i;
    std::string name(line.substr(0, i));
    if (!valid_name(name, true)) return fail("a sample line must start with a metric name");
    PromSample s;
    s.name = std::move(name);
    if (i < line.size() && line[i] == '{') {
      if (!label_set(line, i, s.labels)) return false;
    }
    if (i >= line.size() || !is_blank(line[i])) return fail("expected a blank before the value");
    while (i < line.size() && is_blank(line[i])) ++i;
    std::size_t start = i;
    while (i < line.size() && !is_blank(line[i])) ++i;
    const std::string_view value = line.substr(start, i - start);
    if (!parse_float(value, s.value)) return fail("invalid value '" + std::string(value) + "'");
    if (i < line.size()) {
      while (i < line.size() && is_blank(line[i])) ++i;
      if (i == line.size()) return fail("trailing blanks");
      start = i;
      while (i < line.size() && !is_blank(line[i])) ++i;
      std::int64_t ts = 0;
      if (!parse_int64(line.substr(start, i - start), ts)) return fail("invalid timestamp");
      if (i != line.size()) return fail("unexpected text after the timestamp");
      s.timestamp_ms = ts;
    }
    return add_sample(std::move(s));
  }

  // {name="value",...} starting at line[i] == '{'; leaves i after '}'.
  bool label_set(std::string_view line, std::size_t& i, PromLabels& labels) {
    ++i;
    while (true) {
      if (i >= line.size()) return fail("unterminated label set");
      if (line[i] == '}') {
        ++i;
        return true;
      }
      const std::size_t start = i;
      while (i < line.size() && is_name_char(line[i], false)) ++i;
      const std::string label(line.substr(start, i - start));
      if (!valid_name(label, false)) return fail("invalid label name at column " + col(start));
      if (label.starts_with("__")) return fail("reserved label name " + label);
      if (i >= line.size() || line[i] != '=') return fail("expected '=' after label " + label);
      ++i;
      if (i >= line.size() || line[i] != '"') return fail("label value of " + label + " unquoted");
      ++i;
      std::string value;
      bool closed = false;
      while (i < line.size()) {
        const char c = line[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c != '\\') {
          value += c;
          continue;
        }
        if (i >= line.size()) break;
        const char e = line[i++];
        if (e == '\\') {
          value += '\\';
        } else if (e == '"') {
          value += '"';
        } else if (e == 'n') {
          value += '\n';
        } else {
          return fail("invalid escape in label " + label);
        }
      }
      if (!closed) return fail("unterminated value of label " + label);
      if (!labels.emplace(label, std::move(value)).second) return fail("label " + label + " twice");
      if (i < line.size() && line[i] == ',') {
        ++i;
      } else if (i < line.size() && line[i] != '}') {
        return fail("expected ',' or '}' at column " + col(i));
      }
    }
  }

  std::string col(std::size_t i) const { return std::to_string(i + 1); }

  bool add_sample(PromSample s) {
    if (!open_ || out_.families.back().type.empty()) {
      return fail("sample " + s.name + " before a TYPE line for its family");
    }
    PromFamily& f = out_.families.back();
    const std::string& n = f.name;
    const bool is_bucket = s.name == n + "_bucket";
    const bool is_sum_or_count = s.name == n + "_sum" || s.name == n + "_count";
    if (f.type == "histogram") {
      if (!is_bucket && !is_sum_or_count) {
        return fail("sample " + s.name + " is not part of histogram " + n);
      }
      if (is_bucket != (s.labels.count("le") == 1)) {
        return fail(is_bucket ? "bucket without le" : "le outside a bucket");
      }
      if (std::isnan(s.value) || s.value < 0) return fail("negative or NaN count in " + s.name);
    } else if (f.type == "summary") {
      if (s.name != n && !is_sum_or_count) {
        return fail("sample " + s.name + " is not part of summary " + n);
      }
      if ((s.name == n) != (s.labels.count("quantile") == 1)) return fail("quantile misplaced");
    } else if (s.name != n) {
      return fail("sample " + s.name + " does not belong to family " + n);
    }
    if (f.type == "counter" && (std::isnan(s.value) || s.value < 0)) {
      return fail("counter " + n + " is negative or NaN");
    }
    std::string key = s.name + '{';
    for (const auto& [k, v] : s.labels) key += k + "=\"" + v + "\"\x01";
    if (!series_.insert(key).second) return fail("duplicate series " + s.name);
    f.samples.push_back(std::move(s));
    return true;
  }

  // ---- whole-family checks ----

  bool close_family() {
    if (!open_) return true;
    open_ = false;
    const PromFamily& f = out_.families.back();
    if (f.type == "histogram") return check_histogram(f);
    if (f.type == "summary") return check_summary(f);
    return true;
  }

  bool check_histogram(const PromFamily& f) {
    std::map<PromLabels, HistogramSeries> series;
    for (const PromSample& s : f.samples) {
      PromLabels key = s.labels;
      key.erase("le");
      HistogramSeries& h = series[key];
      if (s.name == f.name + "_bucket") {
        double le = 0;
        if (!parse_float(s.labels.at("le"), le) || std::isnan(le)) {
          return fail("histogram " + f.name + ": invalid le '" + s.labels.at("le") + "'");
        }
        if (!h.buckets.empty()) {
          if (le <= h.buckets.back().first) {
            return fail("histogram " + f.name + ": le values not increasing");
          }
          if (s.value < h.buckets.back().second) {
            return fail("histogram " + f.name + ": bucket counts not cumulative");
          }
        }
        h.buckets.emplace_back(le, s.value);
      } else if (s.name == f.name + "_sum") {
        h.sum = s.value;
      } else {
        h.count = s.value;
      }
    }
    for (const auto& [labels, h] : series) {
      if (h.buckets.empty()) return fail("histogram " + f.name + ": series without buckets");
      if (!std::isinf(h.buckets.back().first) || h.buckets.back().first < 0) {
        return fail("histogram " + f.name + ": last bucket is not le=\"+Inf\"");
      }
      if (!h.sum || !h.count) return fail("histogram " + f.name + ": missing _sum or _count");
      if (*h.count != h.buckets.back().second) {
        return fail("histogram " + f.name + ": _count differs from the +Inf bucket");
      }
    }
    return true;
  }

  bool check_summary(const PromFamily& f) {
    std::map<PromLabels, std::pair<bool, bool>> sum_count;
    for (const PromSample& s : f.samples) {
      PromLabels key = s.labels;
      if (s.name == f.name) {
        double q = 0;
        if (!parse_float(s.labels.at("quantile"), q) || !(q >= 0 && q <= 1)) {
          return fail("summary " + f.name + ": invalid quantile");
        }
        key.erase("quantile");
        sum_count[key];
      } else if (s.name == f.name + "_sum") {
        sum_count[key].first = true;
      } else {
        sum_count[key].second = true;
      }
    }
    for (const auto& [labels, seen] : sum_count) {
      if (!seen.first || !seen.second) return fail("summary " + f.name + ": missing _sum or _count");
    }
    return true;
  }

  std::string_view text_;
  PromExposition& out_;
  std::string& error_;
  int line_ = 0;
  bool open_ = false;  // out_.families.back() is the current family
  std::set<std::string> family_names_;
  std::set<std::string> series_;
};

}  // namespace prom_detail

// Parses `text` into `out`. On failure returns false and sets `error` to
// "line N: what is wrong" (for whole-family checks, the line that ended the family).
inline bool parse_prometheus(std::string_view text, PromExposition& out, std::string& error) {
  out = PromExposition{};
  error.clear();
  return prom_detail::Parser(text, out, error).run();
}

}  // namespace kiroku::test
