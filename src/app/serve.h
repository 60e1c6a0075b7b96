// serve.h - `kiroku serve`: builds every part from the configuration, runs
// until a stop signal (SIGTERM, SIGINT), then drains and flushes. SIGHUP
// reloads: `reload` resolves the configuration again (the file and the token
// file re-read); the auth token and the log level take the new values, other
// changed options are logged as needing a restart. A reload that fails keeps
// every running value and logs one line.
#pragma once

#include <functional>

#include "config/config.h"

namespace kiroku {

// Returns the process exit code: 0 after a graceful stop, 2 for a bad
// configuration (one line on stderr naming the option), 1 for a failure at
// start (the database unreachable, the port taken by another program...).
using ReloadConfig = std::function<bool(ServeConfig&, ConfigError&)>;
int serve(const ServeConfig& config, const ReloadConfig& reload = {});

}  // namespace kiroku
