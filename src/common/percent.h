// percent.h - percent-decoding (RFC 3986), the one implementation every URL,
// query string and header parameter goes through.
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
std::optional<std::size_t> percent_decode(std::string_view in, char* out, std::size_t cap,
                                          bool plus_is_space = true);

// The same into a new string ('+' stays '+'); nullopt for a bad escape.
std::optional<std::string> percent_decode(std::string_view in);

}  // namespace kiroku
