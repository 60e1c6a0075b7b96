// text.h - the small text helpers every layer shares: ASCII case-insensitive
// comparison, HTTP whitespace, UTF-8 validation, errno text, JSON strings and
// the JSON error body. No allocation except where a string is returned.
#pragma once

#include <string>
#include <string_view>

namespace kiroku {

// Equal, ASCII letters compared without case (field names, schemes, tokens).
bool iequals(std::string_view a, std::string_view b);

// `s` starts with `prefix`, ASCII letters compared without case.
bool istarts_with(std::string_view s, std::string_view prefix);

// `s` without leading and trailing spaces and tabs (RFC 9110 OWS).
std::string_view trim_ows(std::string_view s);

// True if `s` is an RFC 9110 token (a method, a field name): one or more of
// letters, digits and !#$%&'*+-.^_`|~.
bool is_http_token(std::string_view s);

// True if `s` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool valid_utf8(std::string_view s);

// The text of an errno value (strerror_r: safe from any thread).
std::string errno_text(int err);

// `s` as a JSON string, quotes included: quotes, backslashes and control
// characters escaped; bytes that are not UTF-8 become U+FFFD.
std::string json_string(std::string_view s);

// The body of every JSON error answer: {"error":"<message>"} and a newline.
std::string json_error_body(std::string_view message);

}  // namespace kiroku
