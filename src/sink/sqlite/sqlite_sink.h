// sqlite_sink.h - the embedded default sink: one SQLite file in WAL mode.
#pragma once

#include <memory>
#include <string_view>

#include "sink/sink.h"

namespace kiroku {

// `url` is sqlite:///abs/path.db, sqlite://./rel/path.db or sqlite://rel.db.
// The directory is created if missing. With options.durable_commits the
// database syncs every commit (synchronous=FULL); otherwise a commit survives
// a crash of the process but not of the machine (synchronous=NORMAL in WAL).
Result<std::unique_ptr<Sink>> make_sqlite_sink(std::string_view url, const SinkOptions& options);

}  // namespace kiroku
