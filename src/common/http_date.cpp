// http_date.cpp - HTTP dates.
#include "common/http_date.h"

#include <ctime>

namespace kiroku {

std::optional<std::chrono::system_clock::time_point> parse_http_date(std::string_view s) {
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  if (s.size() != 29 || s.substr(25) != " GMT") return std::nullopt;
  auto num = [&](std::size_t pos, std::size_t len, int& out) {
    out = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      out = out * 10 + (s[i] - '0');
    }
    return true;
  };
  int d = 0, y = 0, h = 0, mi = 0, sec = 0;
  unsigned mo = 0;
  for (unsigned i = 0; i < 12; ++i) {
    if (s.substr(8, 3) == kMonths[i]) mo = i + 1;
  }
  if (mo == 0 || !num(5, 2, d) || !num(12, 4, y) || !num(17, 2, h) || !num(20, 2, mi) || !num(23, 2, sec)) {
    return std::nullopt;
  }
  using namespace std::chrono;
  year_month_day ymd{year{y}, month{mo}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return std::nullopt;
  return time_point_cast<system_clock::duration>(sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec});
}

std::string format_http_date(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  const std::size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return std::string(buf, n);
}

}  // namespace kiroku
