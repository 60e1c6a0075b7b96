// duration.cpp - parse_duration.
#include "common/duration.h"

#include <charconv>
#include <cmath>
#include <string>

#include "common/text.h"

namespace kiroku {

Result<std::chrono::nanoseconds> parse_duration(std::string_view text, BareNumber bare) {
  const std::string_view s = trim_ows(text);
  double number = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), number, std::chars_format::fixed);
  if (ec != std::errc() || end == s.data())
    return Status::invalid("not a duration: '" + std::string(text) + "' (e.g. 500ms, 10s, 1m)");
  const std::string_view unit = s.substr(static_cast<std::size_t>(end - s.data()));
  double ns_per_unit = 0;
  if (unit.empty()) {
    if (bare == BareNumber::refused)
      return Status::invalid("duration without a unit: '" + std::string(text) + "' (use ms, s, m or h)");
    ns_per_unit = 1e9;
  } else if (unit == "s") {
    ns_per_unit = 1e9;
  } else if (unit == "ms") {
    ns_per_unit = 1e6;
  } else if (unit == "us") {
    ns_per_unit = 1e3;
  } else if (unit == "ns") {
    ns_per_unit = 1;
  } else if (unit == "m") {
    ns_per_unit = 60e9;
  } else if (unit == "h") {
    ns_per_unit = 3600e9;
  } else {
    return Status::invalid("unknown unit in duration '" + std::string(text) + "' (use ns, us, ms, s, m or h)");
  }
  const double ns = number * ns_per_unit;
  if (!(ns >= 0) || ns > 1e18) return Status::invalid("duration out of range: '" + std::string(text) + "'");
  return std::chrono::nanoseconds(std::llround(ns));
}

}  // namespace kiroku
