// duration.h - durations as people write them in flags and config files.
#pragma once

#include <chrono>
#include <string_view>

#include "common/status.h"

namespace kiroku {

// What a number without a unit means.
enum class BareNumber { refused, seconds };

// "250us", "500ms", "10s", "1.5s", "2m", "1h" (and "ns"); spaces and tabs
// around are ignored. Negative values and more than about 31 years are
// refused. invalid, with the text quoted, for anything else.
Result<std::chrono::nanoseconds> parse_duration(std::string_view text, BareNumber bare);

}  // namespace kiroku
