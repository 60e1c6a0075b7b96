// postgresql_errors.h - what a PostgreSQL error means for the sink.
//
// By SQLSTATE (PostgreSQL's appendix A): classes 22 (data exception) and 23
// (integrity constraint violation) and a trigger's RAISE (P0001) refuse a
// row for its values; 40001/40P01 roll the transaction back and are worth
// retrying at once; 08 (connection), 57P01-57P03 (shutdown) mean the session
// is gone; 28 (credentials), 3D000/3F000 (no database/schema), 42 (syntax,
// schema, privileges), 0A000 and 2BP01 need an operator; everything else (53
// resources, 55P03 lock timeout, 57014 cancelled, 25006 read-only) may pass.
// A failed connect has no SQLSTATE: its text tells.
#pragma once

#include <string_view>

namespace kiroku {

enum class PgFault {
  lost,       // the session is gone: close it; transient
  retry,      // the transaction was rolled back (deadlock, serialization): run it again
  transient,  // may work later
  permanent,  // the configuration or the schema is wrong
  rejected,   // the values of a row were refused: splitting the batch isolates it
};

// The class of kRejectionReasons (sink.h) a refused row counts under, or
// nullptr when the SQLSTATE does not refuse a row.
const char* pg_rejection_of(std::string_view sqlstate);

PgFault pg_fault_of(std::string_view sqlstate);

// A failed connect's libpq text names a cause that waiting will not heal:
// credentials, a missing database or role, a missing privilege, a
// certificate that does not verify, a server without TLS when TLS is required.
bool pg_connect_failure_is_permanent(std::string_view text);

}  // namespace kiroku
