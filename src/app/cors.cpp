// cors.cpp - the CORS answers, built once per allowed origin.
#include "app/cors.h"

namespace kiroku {
namespace {

constexpr std::string_view kPreflight =
    "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\n"
    "Access-Control-Allow-Headers: Content-Type, X-Request-Id\r\n"
    "Access-Control-Max-Age: 600\r\n";

}  // namespace

CorsPolicy::CorsPolicy(const std::vector<std::string>& origins) {
  for (const auto& o : origins) {
    if (o == "*") {
      any_ = true;
      continue;
    }
    origins_.push_back(o);
    // Vary: a cache must not give this answer to a page of another origin.
    answers_.push_back("Access-Control-Allow-Origin: " + o + "\r\nVary: Origin\r\n");
  }
  if (any_) answers_.push_back("Access-Control-Allow-Origin: *\r\n");
  for (const auto& a : answers_) preflights_.push_back(a + std::string(kPreflight));
}

int CorsPolicy::check(std::string_view origin) const {
  if (!enabled() || origin.empty()) return kNone;
  for (std::size_t i = 0; i < origins_.size(); ++i)
    if (origins_[i] == origin) return static_cast<int>(i);
  return any_ ? static_cast<int>(answers_.size() - 1) : kRefused;
}

}  // namespace kiroku
