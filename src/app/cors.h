// cors.h - which web pages may send events from a browser (--cors-origins).
//
// A browser sends Origin with a cross-origin fetch() and with
// navigator.sendBeacon(); a fetch() with a JSON body is preceded by an OPTIONS
// preflight. With origins configured, an ingest request whose Origin is
// allowed is answered with Access-Control-Allow-Origin, one whose Origin is
// not allowed is refused (403, nothing stored: a beacon is sent whatever
// the answer, so the browser alone cannot keep it out), and one without
// Origin (not from a browser page) is taken as before. With none configured,
// Origin is ignored and no CORS header is sent.
// Threads: immutable after construction; any thread.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kiroku {

class CorsPolicy {
 public:
  static constexpr int kNone = -1;     // no CORS header to add
  static constexpr int kRefused = -2;  // an Origin that is not allowed

  CorsPolicy() = default;
  // `origins`: exact origins or "*" (checked by the config).
  explicit CorsPolicy(const std::vector<std::string>& origins);

  bool enabled() const { return !answers_.empty(); }
  // What to do with a request that carries `origin` (empty: none): kNone,
  // kRefused, or the index of the headers to add to its answer.
  int check(std::string_view origin) const;
  // The answer's headers for an index from check().
  std::string_view headers(int index) const { return answers_[static_cast<std::size_t>(index)]; }
  // The headers of a preflight's 204 (the answer's and the allowed methods
  // and headers, cached by the browser for 10 minutes).
  std::string_view preflight_headers(int index) const { return preflights_[static_cast<std::size_t>(index)]; }

 private:
  std::vector<std::string> origins_;     // exact ones
  std::vector<std::string> answers_;     // per origin; the last is "*" when allowed
  std::vector<std::string> preflights_;  // same indexes
  bool any_ = false;
};

}  // namespace kiroku
