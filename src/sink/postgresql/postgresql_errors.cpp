// postgresql_errors.cpp - see postgresql_errors.h.
#include "sink/postgresql/postgresql_errors.h"

namespace kiroku {

const char* pg_rejection_of(std::string_view state) {
  if (state == "22001") return "data_too_long";
  if (state == "22003") return "out_of_range";
  if (state == "22P02" || state == "22007" || state == "22008" || state == "22021" || state == "22P05")
    return "incorrect_value";
  if (state == "23502") return "null";
  if (state == "23514" || state == "P0001") return "constraint";
  if (state == "23503") return "foreign_key";
  if (state.starts_with("22") || state.starts_with("23")) return "other";
  return nullptr;
}

PgFault pg_fault_of(std::string_view state) {
  if (pg_rejection_of(state) != nullptr) return PgFault::rejected;
  if (state == "40001" || state == "40P01") return PgFault::retry;
  if (state.starts_with("08") || state == "57P01" || state == "57P02" || state == "57P03") return PgFault::lost;
  if (state.starts_with("28") || state.starts_with("42") || state == "3D000" || state == "3F000" || state == "0A000" ||
      state == "2BP01")
    return PgFault::permanent;
  return PgFault::transient;
}

bool pg_connect_failure_is_permanent(std::string_view text) {
  static constexpr std::string_view kPermanent[] = {
      "authentication failed",    "pg_hba.conf",
      "does not exist",           "permission denied",
      "not permitted to log in",  "password is required",
      "no password supplied",     "certificate verify failed",
      "does not match host name", "server does not support SSL",
      "root certificate file",    "could not load",
      "could not read",           "private key",
      "certificate present",
  };
  for (const std::string_view p : kPermanent) {
    if (text.find(p) != std::string_view::npos) return true;
  }
  return false;
}

}  // namespace kiroku
