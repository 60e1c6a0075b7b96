// redact.cpp - hiding the password of a URL (rules in redact.h).
#include "common/redact.h"

#include <algorithm>

namespace kiroku {
namespace {

constexpr auto npos = std::string_view::npos;

struct Secret {
  std::size_t begin = npos;  // first byte of the password
  std::size_t end = npos;    // its '@'
};

// Where the password of `url` is, its authority starting at `start`.
Secret find_password(std::string_view url, std::size_t start) {
  const std::size_t authority_end = std::min(url.find_first_of("/?", start), url.size());
  std::size_t at = url.substr(start, authority_end - start).rfind('@');
  if (at != npos) {
    at += start;
  } else {
    at = url.rfind('@');
    if (at == npos || at < authority_end) return {};
  }
  const std::size_t colon = url.substr(start, std::min(at, authority_end) - start).find(':');
  if (colon == npos) return {};  // a user without a password
  return {start + colon + 1, at};
}

}  // namespace

std::string redact_url(std::string_view url) {
  const std::size_t sep = url.find("://");
  const std::size_t start = sep == npos ? 0 : sep + 3;
  std::string out;
  std::string_view tail;
  if (const Secret s = find_password(url, start); s.begin != npos) {
    out.append(url.substr(0, s.begin));
    out += "***";
    tail = url.substr(s.end);
  } else {
    out.append(url.substr(0, start));
    tail = url.substr(start);
  }
  // The query: a parameter holding a URL is redacted on its own.
  const std::size_t q = tail.find('?');
  out.append(tail.substr(0, q));
  if (q == npos) return out;
  tail.remove_prefix(q + 1);
  out += '?';
  for (bool first = true;; first = false) {
    const std::size_t amp = tail.find('&');
    const std::string_view pair = tail.substr(0, amp);
    if (!first) out += '&';
    const std::size_t eq = pair.find('=');
    if (eq != npos && pair.find('@', eq) != npos) {
      out.append(pair.substr(0, eq + 1));
      out += redact_url(pair.substr(eq + 1));
    } else {
      out.append(pair);
    }
    if (amp == npos) break;
    tail.remove_prefix(amp + 1);
  }
  return out;
}

}  // namespace kiroku
