// query_check.h - invariants of percent decoding (common/percent.h) and of the
// event query string (ingest/parse.h: parse_event_query and the field parsers
// it uses). The input is one query string, as after the '?' of GET /collect.
//
// Checked against small reference implementations written here from the
// specifications (RFC 3986 escapes, RFC 3629 UTF-8, "[+-]digits" integers),
// and by round trips: what a parse returns, written back the way a client
// would, parses to the same thing.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/percent.h"
#include "fuzz/event_text.h"
#include "fuzz/fuzz_check.h"
#include "ingest/parse.h"

namespace kiroku::fuzz {
namespace query_detail {

inline int ref_hex(char c) {
  const char* digits = "0123456789abcdef";
  const char lower = (c >= 'A' && c <= 'F') ? static_cast<char>(c - 'A' + 'a') : c;
  for (int i = 0; i < 16; ++i)
    if (lower == digits[i]) return i;
  return -1;
}

// RFC 3986 percent-decoding, '+' left alone.
inline std::optional<std::string> ref_decode(std::string_view in) {
  std::string out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (in.size() - i < 3 || ref_hex(in[i + 1]) < 0 || ref_hex(in[i + 2]) < 0) return std::nullopt;
    out.push_back(static_cast<char>(ref_hex(in[i + 1]) * 16 + ref_hex(in[i + 2])));
    i += 2;
  }
  return out;
}

// Form decoding: '+' is a space.
inline std::optional<std::string> ref_form_decode(std::string_view in) {
  std::string spaced;
  for (char c : in) {
    if (c == '+') spaced += "%20";
    else spaced.push_back(c);
  }
  return ref_decode(spaced);
}

// RFC 3629, section 4.
inline bool ref_utf8(std::string_view s) {
  auto tail = [&](std::size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    if (i >= s.size()) return false;
    const auto c = static_cast<unsigned char>(s[i]);
    return c >= lo && c <= hi;
  };
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c <= 0x7F) {
      i += 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
      if (!tail(i + 1)) return false;
      i += 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
      if (!tail(i + 1, lo, hi) || !tail(i + 2)) return false;
      i += 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      const unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
      if (!tail(i + 1, lo, hi) || !tail(i + 2) || !tail(i + 3)) return false;
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

// Valid UTF-8 whose code points are neither controls (U+0000..U+001F,
// U+007F..U+009F) nor bidi embeddings, overrides or isolates (U+202A..U+202E,
// U+2066..U+2069): what names and ids may hold.
inline bool ref_printable(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    std::uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    if (cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F) || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069))
      return false;
    i += static_cast<std::size_t>(n);
  }
  return true;
}

// "[+-]?[0-9]+" within int64, at most 20 characters after a '+' (the
// parser's documented bound on what it reads).
inline std::optional<std::int64_t> ref_int64(std::string_view s) {
  const bool plus = !s.empty() && s[0] == '+';
  if (plus) s.remove_prefix(1);
  if (s.empty() || s.size() > 20) return std::nullopt;
  const bool negative = s[0] == '-';
  if (plus && negative) return std::nullopt;  // one sign at most
  std::string_view digits = negative ? s.substr(1) : s;
  if (digits.empty()) return std::nullopt;
  unsigned __int128 v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<unsigned>(c - '0');
    if (v > (static_cast<unsigned __int128>(1) << 63)) return std::nullopt;
  }
  if (!negative && v == (static_cast<unsigned __int128>(1) << 63)) return std::nullopt;
  return negative ? static_cast<std::int64_t>(-static_cast<__int128>(v)) : static_cast<std::int64_t>(v);
}

inline bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// percent_decode, both forms, against the reference and the capacity rule.
inline void check_percent(std::string_view in) {
  for (char c : in) FUZZ_REQUIRE(hex_value(c) == ref_hex(c));

  const std::optional<std::string> ref = ref_decode(in);
  const std::optional<std::string> whole = percent_decode(in);
  FUZZ_REQUIRE(whole.has_value() == ref.has_value());
  if (whole) FUZZ_REQUIRE(*whole == *ref);

  // Exactly sized heap buffers, so a write past `cap` is an ASan report.
  std::vector<char> buf(in.size());
  const std::optional<std::size_t> raw = percent_decode(in, buf.data(), buf.size(), false);
  FUZZ_REQUIRE(raw.has_value() == ref.has_value());
  if (raw) {
    FUZZ_REQUIRE(std::string_view(buf.data(), *raw) == *ref);
    if (*raw > 0) {
      std::vector<char> small(*raw - 1);
      FUZZ_REQUIRE(!percent_decode(in, small.data(), small.size(), false));
    }
    // Writing the bytes back and decoding them again gives the same bytes.
    FUZZ_REQUIRE(percent_decode(percent_encode(*ref)) == ref);
  }

  const std::optional<std::string> form_ref = ref_form_decode(in);
  const std::optional<std::size_t> form = percent_decode(in, buf.data(), buf.size(), true);
  FUZZ_REQUIRE(form.has_value() == form_ref.has_value());
  if (form) FUZZ_REQUIRE(std::string_view(buf.data(), *form) == *form_ref);
}

// parse_int64, parse_timestamp and valid_utf8 on the whole input.
inline void check_fields(std::string_view in) {
  FUZZ_REQUIRE(valid_utf8(in) == ref_utf8(in));
  if (ref_utf8(in)) FUZZ_REQUIRE((text_fault(in) == TextFault::none) == ref_printable(in));
  FUZZ_REQUIRE(parse_int64(in) == ref_int64(in));

  const std::optional<std::int64_t> at = parse_timestamp(in);
  if (!at) return;
  if (all_digits(in)) {
    FUZZ_REQUIRE(in.size() <= 15 && *at == *ref_int64(in) * 1000);
  } else {
    // The date and time fields are a real calendar date and time of day.
    using namespace std::chrono;
    const auto num = [&](std::size_t pos, std::size_t n) {
      unsigned v = 0;
      for (std::size_t i = pos; i < pos + n; ++i) v = v * 10 + static_cast<unsigned>(in[i] - '0');
      return v;
    };
    FUZZ_REQUIRE(in.size() >= 20);
    const year_month_day ymd{year{static_cast<int>(num(0, 4))}, month{num(5, 2)}, day{num(8, 2)}};
    FUZZ_REQUIRE(ymd.ok());
    FUZZ_REQUIRE(num(11, 2) <= 23 && num(14, 2) <= 59 && num(17, 2) <= 60);
  }
  const std::string again = timestamp_text(*at);
  FUZZ_REQUIRE(!again.empty());
  FUZZ_REQUIRE(parse_timestamp(again) == at);
}

// The pairs of a query string, in order, empty ones skipped: the model the
// parser is checked against, written apart from next_query_pair on purpose.
inline std::vector<std::pair<std::string_view, std::string_view>> pairs(std::string_view q) {
  std::vector<std::pair<std::string_view, std::string_view>> out;
  while (!q.empty()) {
    const std::size_t amp = q.find('&');
    const std::string_view pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    out.emplace_back(pair.substr(0, eq), eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1));
  }
  return out;
}

inline void check_query(std::string_view query) {
  QueryBuffers buf;
  EventInput e;
  const FieldError err = parse_event_query(query, buf, e);
  if (err) {
    const std::string_view m = err.message;
    FUZZ_REQUIRE(m.starts_with("name: ") || m.starts_with("value: ") || m.starts_with("at: ") || m.starts_with("id: "));
    return;
  }
  // An accepted event obeys check_event, and its strings are in the buffers.
  FUZZ_REQUIRE(!check_event(e));
  FUZZ_REQUIRE(!e.name.empty() && e.name.data() == buf.name && e.name.size() <= kMaxNameBytes);
  FUZZ_REQUIRE(e.client_id.empty() || (e.client_id.data() == buf.client_id && e.client_id.size() <= kMaxClientIdBytes));
  FUZZ_REQUIRE(valid_utf8(e.name) && valid_utf8(e.client_id));
  FUZZ_REQUIRE(ref_printable(e.name) && ref_printable(e.client_id));

  // Each field once, and what was kept is the form decoding of what was sent.
  int names = 0, values = 0, ats = 0, ids = 0;
  for (const auto& [key, raw] : pairs(query)) {
    if (key == "name") {
      ++names;
      FUZZ_REQUIRE(ref_form_decode(raw) == std::string(e.name));
    } else if (key == "value") {
      ++values;
      const auto text = ref_form_decode(raw);
      FUZZ_REQUIRE(text && ref_int64(*text) == e.value);
    } else if (key == "at") {
      ++ats;
      const auto text = ref_form_decode(raw);
      FUZZ_REQUIRE(text && parse_timestamp(*text) == e.at_us);
    } else if (key == "id") {
      ++ids;
      FUZZ_REQUIRE(ref_form_decode(raw) == std::string(e.client_id));
    }
  }
  FUZZ_REQUIRE(names == 1 && values == 1 && ats <= 1 && ids <= 1);
  FUZZ_REQUIRE(e.client_id.empty() == (ids == 0));  // an empty id= is refused
  FUZZ_REQUIRE(e.at_us.has_value() == (ats == 1));

  // Written back (canonically, then reordered with '+' for spaces and an
  // ignored parameter), the query gives the same event.
  const std::string at_text = e.at_us ? timestamp_text(*e.at_us) : std::string();
  FUZZ_REQUIRE(!e.at_us || !at_text.empty());
  std::string canonical = "name=" + percent_encode(e.name) + "&value=" + std::to_string(e.value);
  if (e.at_us) canonical += "&at=" + percent_encode(at_text);
  if (ids == 1) canonical += "&id=" + percent_encode(e.client_id);
  std::string reordered = "_=1&";
  if (ids == 1) reordered += "id=" + percent_encode(e.client_id) + "&&";
  if (e.at_us) reordered += "at=" + percent_encode(at_text) + "&";
  reordered += "value=%2B" + std::to_string(e.value) + "&name=" + percent_encode(e.name);
  if (e.value < 0) reordered.replace(reordered.find("value=%2B"), 9, "value=");
  for (std::size_t p; (p = reordered.find("%20")) != std::string::npos;) reordered.replace(p, 3, "+");

  for (const std::string& q : {canonical, reordered}) {
    QueryBuffers buf2;
    EventInput e2;
    FUZZ_REQUIRE(!parse_event_query(q, buf2, e2));
    FUZZ_REQUIRE(e2.name == e.name && e2.value == e.value && e2.at_us == e.at_us && e2.client_id == e.client_id);
  }
}

}  // namespace query_detail

inline void check_query(std::string_view input) {
  query_detail::check_percent(input);
  query_detail::check_fields(input);
  query_detail::check_query(input);
}

}  // namespace kiroku::fuzz
