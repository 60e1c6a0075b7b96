// postgresql_errors_test.cpp - what each PostgreSQL error means for the sink (no database needed).
#include "sink/postgresql/postgresql_errors.h"

#include <gtest/gtest.h>

#include <string>

namespace kiroku {
namespace {

std::string reason(std::string_view state) {
  const char* r = pg_rejection_of(state);
  return r ? r : "(none)";
}

TEST(PostgresErrorsTest, RefusedRowsByClass) {
  EXPECT_EQ(reason("22001"), "data_too_long");
  EXPECT_EQ(reason("22003"), "out_of_range");
  for (const char* s : {"22P02", "22007", "22008", "22021", "22P05"}) EXPECT_EQ(reason(s), "incorrect_value") << s;
  EXPECT_EQ(reason("23502"), "null");
  EXPECT_EQ(reason("23514"), "constraint");
  EXPECT_EQ(reason("P0001"), "constraint");
  EXPECT_EQ(reason("23503"), "foreign_key");
  EXPECT_EQ(reason("22012"), "other");  // division by zero in a trigger: still the row's values
  EXPECT_EQ(reason("23P01"), "other");
  for (const char* s : {"22001", "23503", "P0001", "22012"}) EXPECT_EQ(pg_fault_of(s), PgFault::rejected) << s;
  EXPECT_EQ(reason("08006"), "(none)");
  EXPECT_EQ(reason("42501"), "(none)");
}

TEST(PostgresErrorsTest, TransientAndPermanent) {
  for (const char* s : {"08000", "08003", "08006", "57P01", "57P02", "57P03"})
    EXPECT_EQ(pg_fault_of(s), PgFault::lost) << s;
  EXPECT_EQ(pg_fault_of("40001"), PgFault::retry);
  EXPECT_EQ(pg_fault_of("40P01"), PgFault::retry);
  for (const char* s : {"28P01", "28000", "3D000", "3F000", "42501", "42P01", "42703", "42601", "0A000"})
    EXPECT_EQ(pg_fault_of(s), PgFault::permanent) << s;
  for (const char* s : {"53100", "53200", "53300", "55P03", "57014", "25006", "XX000"})
    EXPECT_EQ(pg_fault_of(s), PgFault::transient) << s;
}

TEST(PostgresErrorsTest, ConnectFailuresThatWaitingWillNotHeal) {
  for (const char* t : {
           "connection to server at \"127.0.0.1\", port 5432 failed: FATAL: password authentication failed for user "
           "\"kiroku\"",
           "FATAL: database \"nope\" does not exist",
           "FATAL: role \"nobody\" does not exist",
           "FATAL: no pg_hba.conf entry for host \"10.0.0.1\", user \"kiroku\", database \"m\", no encryption",
           "FATAL: permission denied for database \"m\"",
           "SSL error: certificate verify failed",
           "server certificate for \"db\" does not match host name \"db2\"",
           "server does not support SSL, but SSL was required",
           "could not read root certificate file \"/x\": No such file or directory",
       })
    EXPECT_TRUE(pg_connect_failure_is_permanent(t)) << t;
  for (const char* t : {
           "connection to server at \"127.0.0.1\", port 1 failed: Connection refused",
           "FATAL: the database system is starting up",
           "FATAL: the database system is shutting down",
           "FATAL: sorry, too many clients already",
           "timeout expired",
           "SSL SYSCALL error: EOF detected",
       })
    EXPECT_FALSE(pg_connect_failure_is_permanent(t)) << t;
}

}  // namespace
}  // namespace kiroku
