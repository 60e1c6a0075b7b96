// log_format.cpp - the text and JSON log line formats.
#include "ops/log_format.h"

#include <ctime>

#include <spdlog/details/log_msg.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include "common/request_id.h"
#include "common/text.h"

namespace kiroku {
namespace {

// %q in the text pattern: " [req ID]" while a request is handled, else nothing.
class RequestIdFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg&, const std::tm&, spdlog::memory_buf_t& dest) override {
    const std::string_view id = current_request_id();
    if (id.empty()) return;
    dest.append(std::string_view(" [req "));
    dest.append(id);
    dest.push_back(']');
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<RequestIdFlag>(); }
};

class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto since = msg.time.time_since_epoch();
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since);
    const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(since - secs).count();
    const std::time_t t = static_cast<std::time_t>(secs.count());
    std::tm tm{};
    gmtime_r(&t, &tm);
    char stamp[40];
    const int n =
        std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                      tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(micros));
    dest.append(std::string_view("{\"time\":\""));
    dest.append(std::string_view(stamp, static_cast<std::size_t>(n)));
    dest.append(std::string_view("\",\"level\":\""));
    const auto level = spdlog::level::to_string_view(msg.level);
    dest.append(level.data(), level.data() + level.size());
    dest.append(std::string_view("\",\"msg\":"));
    dest.append(json_string(std::string_view(msg.payload.data(), msg.payload.size())));
    if (const std::string_view id = current_request_id(); !id.empty()) {
      dest.append(std::string_view(",\"request_id\":\""));
      dest.append(id);  // usable_request_id: nothing to escape
      dest.push_back('"');
    }
    dest.append(std::string_view("}\n"));
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

}  // namespace

bool parse_log_format(std::string_view s, LogFormat& out) {
  if (s == "text") out = LogFormat::text;
  else if (s == "json") out = LogFormat::json;
  else return false;
  return true;
}

std::unique_ptr<spdlog::formatter> make_log_formatter(LogFormat format) {
  if (format == LogFormat::json) return std::make_unique<JsonFormatter>();
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<RequestIdFlag>('q').set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %^%l%$%q %v");
  return f;
}

void use_log_format(LogFormat format) { spdlog::set_formatter(make_log_formatter(format)); }

}  // namespace kiroku
