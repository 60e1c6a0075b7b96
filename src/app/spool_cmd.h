// spool_cmd.h - `kiroku spool check|dump|replay`: the operator's tools for a stopped server's spool.
//
// Each takes the spool directory's two locks (the spool's LOCK file and the
// directory flock of the dead-letter file, see spool.h and dead_letter.h),
// so it refuses to run while a server uses the directory (exit 2).
//
//   check   verifies every segment's header and record checksums and the
//           dead-letter file's lines; one line per file on `out`; exit 0 if
//           everything is whole, 1 if anything is torn or corrupt.
//   dump    prints the events of every segment (in replay order) and then the
//           dead-letter file as NDJSON: {"source":"spool","segment":NAME,...}
//           and {"source":"dead-letter",...} (fields as in dead_letter.h).
//   replay  sends the dead-lettered events to the sink again; the stored ones
//           leave the file, the ones still refused stay (with the new error).
//           Exit 0 when it ran through, 1 when the sink failed (what was not
//           stored stays in the file).
#pragma once

#include <cstdio>
#include <string_view>

#include "config/config.h"

namespace kiroku {

int run_spool_command(std::string_view command, const ServeConfig& cfg, std::FILE* out, std::FILE* err);

}  // namespace kiroku
