// make_sink.cpp - the --sink URL picks the implementation.
#include "sink/clickhouse/clickhouse_sink.h"
#include "sink/mysql/mysql_sink.h"
#include "sink/postgresql/postgresql_sink.h"
#include "sink/sink.h"
#include "sink/sqlite/sqlite_sink.h"

namespace kiroku {

Result<std::unique_ptr<Sink>> make_sink(std::string_view url, const SinkOptions& options) {
  if (url.starts_with("sqlite://")) return make_sqlite_sink(url, options);
  if (url.starts_with("mysql://")) return make_mysql_sink(url, options);
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) return make_postgres_sink(url, options);
  if (url.starts_with("clickhouse://")) return make_clickhouse_sink(url, options);
  return Status::invalid("must start with sqlite://, mysql://, postgresql://, postgres:// or clickhouse://");
}

}  // namespace kiroku
