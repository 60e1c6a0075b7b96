// log_format.h - how log lines look: text for people, JSON for log shippers.
//
// text: "2026-12-03T14:26:41.123+0000 info [req 9f3a...] message" (the
// request part only while a request is being handled, common/request_id.h).
// json: one object per line,
//   {"time":"2026-12-03T14:26:41.123456Z","level":"info","msg":"...","request_id":"..."}
// with the message escaped as a JSON string (control characters, quotes,
// invalid UTF-8 as U+FFFD) and request_id only when there is one.
#pragma once

#include <memory>
#include <string_view>

#include <spdlog/formatter.h>

namespace kiroku {

enum class LogFormat { text, json };

// Parses "text" or "json".
bool parse_log_format(std::string_view s, LogFormat& out);

// The formatter for a format (spdlog::set_formatter takes it).
std::unique_ptr<spdlog::formatter> make_log_formatter(LogFormat format);

// Installs it on every logger.
void use_log_format(LogFormat format);

}  // namespace kiroku
