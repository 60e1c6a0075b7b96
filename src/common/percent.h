// percent.h - percent-decoding (RFC 3986) and query-string splitting, the one
// implementation every URL, query string and header parameter goes through.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace kiroku {

// The value of a hex digit, or -1.
int hex_value(char c);

// Percent-decodes `in` (and '+' as space when `plus_is_space`) into `out`,
// which has room for `cap` bytes. Returns the decoded length, or nullopt if a
// '%' is not followed by two hex digits or the result does not fit. No
// allocation (the request path uses it).
std::optional<std::size_t> percent_decode(std::string_view in, char* out, std::size_t cap, bool plus_is_space = true);

// The same into a new string ('+' stays '+'); nullopt for a bad escape.
std::optional<std::string> percent_decode(std::string_view in);

// One name=value pair of a query string, still percent-encoded.
struct QueryPair {
  std::string_view name, value;  // value empty when the pair has no '='
};

// Takes the next non-empty pair off the front of `query` (split at '&',
// then at the first '='); false once none is left. No allocation:
//   for (QueryPair p; next_query_pair(q, p);) ...
bool next_query_pair(std::string_view& query, QueryPair& out);

}  // namespace kiroku
