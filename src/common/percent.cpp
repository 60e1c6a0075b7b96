// percent.cpp - percent-decoding and query pairs (see percent.h).
#include "common/percent.h"

namespace kiroku {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::size_t> percent_decode(std::string_view in, char* out, std::size_t cap, bool plus_is_space) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      const int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (n == cap) return std::nullopt;
    out[n++] = c;
  }
  return n;
}

std::optional<std::string> percent_decode(std::string_view in) {
  std::string out(in.size(), '\0');  // decoding never lengthens
  auto n = percent_decode(in, out.data(), out.size(), false);
  if (!n) return std::nullopt;
  out.resize(*n);
  return out;
}

bool next_query_pair(std::string_view& query, QueryPair& out) {
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    out.name = pair.substr(0, eq);
    out.value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    return true;
  }
  return false;
}

}  // namespace kiroku
