// serve.h - `kiroku serve`: builds every part from the configuration, runs
// until a stop signal, then drains and flushes.
#pragma once

#include "config/config.h"

namespace kiroku {

// Returns the process exit code: 0 after a graceful stop, 2 for a bad
// configuration (one line on stderr naming the option), 1 for a failure at
// start (the database unreachable, the port taken by another program...).
int serve(const ServeConfig& config);

}  // namespace kiroku
