// event_text.h - writes event fields back as a client would send them, so the
// query and JSON fuzz targets can check that parsing what they wrote gives
// the same event (a round trip).
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace kiroku::fuzz {

// Every byte but A-Z a-z 0-9 - . _ ~ as %XX.
inline std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || u == '-' || u == '.' ||
        u == '_' || u == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

// RFC 3339 with microseconds. The offset is chosen so that the local date
// has a four-digit year (the parser takes 0000..9999 with offsets up to
// 23:59, so its results can fall just outside that range in UTC). Empty
// when no offset can do it.
inline std::string rfc3339(std::int64_t us) {
  using namespace std::chrono;
  const sys_time<microseconds> utc{microseconds{us}};
  int offset_min = 0;
  const int utc_year = static_cast<int>(year_month_day{floor<days>(utc)}.year());
  if (utc_year < 0) offset_min = 23 * 60 + 59;
  if (utc_year > 9999) offset_min = -(23 * 60 + 59);
  const sys_time<microseconds> local = utc + minutes{offset_min};
  const sys_days day = floor<days>(local);
  const year_month_day ymd{day};
  const int y = static_cast<int>(ymd.year());
  if (y < 0 || y > 9999) return {};
  const std::int64_t tod = (local - day).count();  // microseconds into the day
  char zone[16] = "Z";
  if (offset_min != 0) {
    const int a = offset_min < 0 ? -offset_min : offset_min;
    std::snprintf(zone, sizeof zone, "%c%02d:%02d", offset_min < 0 ? '-' : '+', a / 60, a % 60);
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%06d%s", y, static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), static_cast<int>(tod / 3'600'000'000),
                static_cast<int>(tod / 60'000'000 % 60), static_cast<int>(tod / 1'000'000 % 60),
                static_cast<int>(tod % 1'000'000), zone);
  return buf;
}

// A time as `at` may carry it: Unix milliseconds when it is a whole, positive
// number of them (below 10^15, what the parsers take), RFC 3339 otherwise.
inline std::string timestamp_text(std::int64_t us) {
  if (us >= 0 && us % 1000 == 0 && us / 1000 < 1'000'000'000'000'000) return std::to_string(us / 1000);
  return rfc3339(us);
}

// A JSON string literal (the bytes are valid UTF-8: control characters,
// quote and backslash are escaped, the rest is copied).
inline std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (u < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04x", u);
      out += esc;
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

}  // namespace kiroku::fuzz
