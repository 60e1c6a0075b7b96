// parse.cpp - field validation for events (see parse.h).
#include "ingest/parse.h"

#include <charconv>

namespace kiroku {
namespace {

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool fixed_digits(std::string_view s, std::size_t pos, std::size_t n, unsigned& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + static_cast<unsigned>(s[i] - '0');
  }
  return true;
}

}  // namespace

std::optional<std::int64_t> parse_int64(std::string_view s) {
  if (!s.empty() && s.front() == '+') {
    s.remove_prefix(1);
    if (!s.empty() && s.front() == '-') return std::nullopt;  // "+-1"
  }
  if (s.empty() || s.size() > 20) return std::nullopt;
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  if (s[0] == '-' && s.size() == 1) return std::nullopt;
  return v;
}

std::optional<std::int64_t> parse_timestamp(std::string_view s) {
  if (all_digits(s)) {                       // Unix milliseconds
    if (s.size() > 15) return std::nullopt;  // beyond year 33658: not a timestamp
    auto ms = parse_int64(s);
    if (!ms) return std::nullopt;
    return *ms * 1000;
  }
  // RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
  unsigned y, mo, d, h, mi, se;
  if (!fixed_digits(s, 0, 4, y) || s.size() < 20 || s[4] != '-' || !fixed_digits(s, 5, 2, mo) || s[7] != '-' ||
      !fixed_digits(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !fixed_digits(s, 11, 2, h) ||
      s[13] != ':' || !fixed_digits(s, 14, 2, mi) || s[16] != ':' || !fixed_digits(s, 17, 2, se))
    return std::nullopt;
  static constexpr unsigned kDays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1 || d > kDays[mo - 1] || h > 23 || mi > 59 || se > 60) return std::nullopt;
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo == 2 && d == 29 && !leap) return std::nullopt;
  std::size_t i = 19;
  std::int64_t frac_us = 0;
  if (i < s.size() && s[i] == '.') {
    ++i;
    std::size_t digits = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      if (digits < 6) frac_us = frac_us * 10 + (s[i] - '0');
      ++digits;
      ++i;
    }
    if (digits == 0) return std::nullopt;
    for (std::size_t k = digits; k < 6; ++k) frac_us *= 10;
  }
  if (i >= s.size()) return std::nullopt;
  std::int64_t offset_s = 0;
  if (s[i] == 'Z' || s[i] == 'z') {
    ++i;
  } else if (s[i] == '+' || s[i] == '-') {
    unsigned oh, om;
    if (!fixed_digits(s, i + 1, 2, oh) || i + 3 >= s.size() || s[i + 3] != ':' || !fixed_digits(s, i + 4, 2, om) ||
        oh > 23 || om > 59)
      return std::nullopt;
    offset_s = (static_cast<std::int64_t>(oh) * 3600 + om * 60) * (s[i] == '-' ? -1 : 1);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  if (se == 60) se = 59;  // a leap second is stored as the second before it
  const std::int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se - offset_s;
  return secs * 1'000'000 + frac_us;
}

TextFault text_fault(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char c = p[i];
    if (c < 0x20 || c == 0x7f) return TextFault::control;
    if (c < 0x80) continue;
    // Well-formed UTF-8 (checked before): look at the lead byte's sequence.
    if (c == 0xc2 && i + 1 < n && p[i + 1] < 0xa0) return TextFault::control;  // U+0080..U+009F
    if (c == 0xe2 && i + 2 < n &&
        ((p[i + 1] == 0x80 && p[i + 2] >= 0xaa && p[i + 2] <= 0xae) ||  // U+202A..U+202E
         (p[i + 1] == 0x81 && p[i + 2] >= 0xa6 && p[i + 2] <= 0xa9)))   // U+2066..U+2069
      return TextFault::bidi;
  }
  return TextFault::none;
}

FieldError check_event(const EventInput& e) {
  if (e.name.empty()) return {"name: must not be empty"};
  if (e.name.size() > kMaxNameBytes) return {"name: longer than 255 bytes"};
  if (!valid_utf8(e.name)) return {"name: not valid UTF-8"};
  switch (text_fault(e.name)) {
    case TextFault::control: return {"name: contains a control character (U+0000..U+001F, U+007F..U+009F)"};
    case TextFault::bidi: return {"name: contains a bidirectional override (U+202A..U+202E, U+2066..U+2069)"};
    case TextFault::none: break;
  }
  if (e.client_id.size() > kMaxClientIdBytes) return {"id: longer than 255 bytes"};
  if (!valid_utf8(e.client_id)) return {"id: not valid UTF-8"};
  switch (text_fault(e.client_id)) {
    case TextFault::control: return {"id: contains a control character (U+0000..U+001F, U+007F..U+009F)"};
    case TextFault::bidi: return {"id: contains a bidirectional override (U+202A..U+202E, U+2066..U+2069)"};
    case TextFault::none: break;
  }
  return {};
}

FieldError parse_event_query(std::string_view query, QueryBuffers& buf, EventInput& out) {
  out = EventInput{};
  bool have_name = false, have_value = false, have_at = false, have_id = false;
  for (QueryPair p; next_query_pair(query, p);) {
    const std::string_view key = p.name, raw = p.value;
    if (key == "name") {
      if (have_name) return {"name: given more than once"};
      have_name = true;
      auto n = percent_decode(raw, buf.name, sizeof buf.name);
      if (!n) {
        if (raw.size() > 3 * kMaxNameBytes || raw.find('%') == std::string_view::npos)
          return {"name: longer than 255 bytes"};
        return {"name: bad percent-encoding or longer than 255 bytes"};
      }
      out.name = {buf.name, *n};
    } else if (key == "value") {
      if (have_value) return {"value: given more than once"};
      have_value = true;
      char tmp[32];
      auto n = percent_decode(raw, tmp, sizeof tmp);
      auto v = n ? parse_int64({tmp, *n}) : std::nullopt;
      if (!v) return {"value: must be a signed 64-bit integer"};
      out.value = *v;
    } else if (key == "at") {
      if (have_at) return {"at: given more than once"};
      have_at = true;
      char tmp[64];
      auto n = percent_decode(raw, tmp, sizeof tmp);
      auto t = n ? parse_timestamp({tmp, *n}) : std::nullopt;
      if (!t) return {"at: must be RFC 3339 or Unix milliseconds"};
      out.at_us = *t;
    } else if (key == "id") {
      if (have_id) return {"id: given more than once"};
      have_id = true;
      auto n = percent_decode(raw, buf.client_id, sizeof buf.client_id);
      if (!n) return {"id: bad percent-encoding or longer than 255 bytes"};
      if (*n == 0) return {"id: must not be empty"};  // as in JSON: absent is no id, empty is an error
      out.client_id = {buf.client_id, *n};
    }
    // Other parameters (cache busters and the like) are ignored.
  }
  if (!have_name) return {"name: missing"};
  if (!have_value) return {"value: missing"};
  return check_event(out);
}

}  // namespace kiroku
