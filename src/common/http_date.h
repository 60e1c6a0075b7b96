// http_date.h - HTTP dates (RFC 9110 IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT").
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace kiroku {

// Parses an IMF-fixdate; nullopt for anything else (the obsolete forms too).
std::optional<std::chrono::system_clock::time_point> parse_http_date(std::string_view s);

// Formats t (whole seconds, UTC) as an IMF-fixdate.
std::string format_http_date(std::chrono::system_clock::time_point t);

}  // namespace kiroku
