// url_text.h - the pieces of a database URL every sink parses alike.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace kiroku {

// User text for an error message, in double quotes, with what a terminal
// would not show (control bytes, quotes, backslashes) as \xNN.
std::string quoted_url_text(std::string_view s);

// Splits "host", "host:port", "[v6]" or "[v6]:port" into host (without the
// brackets) and port (1-65535; unset when none is given). A host may be
// empty ("" or ":port"); the caller decides whether that is allowed. Returns
// the problem ("bad port \"x\" (expected 1-65535)", ...) without the URL
// scheme the caller's message begins with, or nullopt.
std::optional<std::string> split_host_port(std::string_view hostport, std::string& host, std::optional<unsigned>& port);

}  // namespace kiroku
