// postgresql_sink.cpp - the PostgreSQL sink (contract in postgresql_sink.h).
#include "sink/postgresql/postgresql_sink.h"

#include <libpq-fe.h>
#include <openssl/x509.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/event.h"
#include "sink/connection_pool.h"
#include "sink/instance_lease_table.h"
#include "sink/mysql/mysql_url.h"
#include "sink/postgresql/postgresql_errors.h"
#include "sink/postgresql/postgresql_url.h"

namespace kiroku {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

constexpr int kDeadlockRetries = 3;
constexpr milliseconds kPingAcquireTimeout{1000};
constexpr std::size_t kCopyChunkBytes = 256u << 10;  // COPY data handed to libpq at a time
constexpr std::string_view kStage = "kiroku_stage";  // the connection's temporary staging table

// ---- Errors ---------------------------------------------------------------------------------

using Fault = PgFault;

// The server's text on one line: newlines become "; ", trailing space goes.
std::string one_line(const char* text) {
  std::string out;
  if (text == nullptr) return out;
  for (const char* p = text; *p != '\0'; ++p) {
    if (*p == '\n') {
      if (p[1] != '\0') out += "; ";
    } else if (*p == '\t') {
      out += ' ';
    } else if (*p != '\r') {
      out += *p;
    }
  }
  while (!out.empty() && (out.back() == ' ' || out.back() == ';')) out.pop_back();
  for (std::size_t at; (at = out.find("  ")) != std::string::npos;) out.erase(at, 1);
  return out;
}

// What went wrong in one try on one connection; state empty means nothing did.
struct Failure {
  std::string state;  // SQLSTATE, or "08000" for a connection-level failure without one
  Fault fault = Fault::transient;
  std::string message;
  std::size_t copy_line = 0;  // the COPY line the server named (1-based), 0: none

  bool ok() const { return state.empty(); }

  // The error of a result (or of the connection when there is no result).
  static Failure of(PGconn* c, const PGresult* r, std::string_view step) {
    Failure f;
    const char* sqlstate = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    f.state = sqlstate != nullptr && *sqlstate != '\0' ? sqlstate : "08000";
    f.fault = pg_fault_of(f.state);
    if (PQstatus(c) == CONNECTION_BAD) f.fault = Fault::lost;
    const char* primary = r != nullptr ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    std::string text = primary != nullptr ? one_line(primary) : one_line(PQerrorMessage(c));
    if (text.empty()) text = "connection lost";
    f.message = std::string(step) + ": " + text + " (SQLSTATE " + f.state + ")";
    if (r != nullptr) {
      if (const char* context = PQresultErrorField(r, PG_DIAG_CONTEXT)) {
        // "COPY kiroku_stage, line 3, column name: ..."
        const std::string_view ctx(context);
        const std::size_t at = ctx.find(", line ");
        if (ctx.starts_with("COPY ") && at != std::string_view::npos) {
          const char* p = ctx.data() + at + 7;
          std::from_chars(p, ctx.data() + ctx.size(), f.copy_line);
        }
      }
    }
    return f;
  }
  // A problem the sink itself found.
  static Failure schema(std::string message) {
    Failure f;
    f.state = "42000";
    f.fault = Fault::permanent;
    f.message = std::move(message);
    return f;
  }
};

Status status_of(const Failure& f) {
  std::string m = "postgresql: " + f.message;
  if (f.fault == Fault::rejected) return Status::invalid(std::move(m));
  return f.fault == Fault::permanent ? Status::permanent(std::move(m)) : Status::transient(std::move(m));
}

// A PGresult freed when it goes out of scope.
class Res {
 public:
  explicit Res(PGresult* r = nullptr) : r_(r) {}
  ~Res() { PQclear(r_); }
  Res(Res&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  Res& operator=(Res&& o) noexcept {
    std::swap(r_, o.r_);
    return *this;
  }
  PGresult* get() const { return r_; }
  ExecStatusType status() const { return PQresultStatus(r_); }
  int rows() const { return PQntuples(r_); }
  std::string_view text(int row, int col) const {
    return {PQgetvalue(r_, row, col), static_cast<std::size_t>(PQgetlength(r_, row, col))};
  }
  bool null(int row, int col) const { return PQgetisnull(r_, row, col) != 0; }

 private:
  PGresult* r_;
};

bool succeeded(const Res& r) {
  const ExecStatusType s = r.status();
  return r.get() != nullptr && (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK);
}

// Runs SQL (one or more statements, no parameters); `out` gets the last result.
Failure run(PGconn* c, const std::string& sql, std::string_view step, Res* out = nullptr) {
  Res r(PQexec(c, sql.c_str()));
  if (!succeeded(r)) return Failure::of(c, r.get(), step);
  if (out != nullptr) *out = std::move(r);
  return {};
}

// Runs one statement with text parameters.
Failure run(PGconn* c, const std::string& sql, const std::vector<std::string>& params, std::string_view step,
            Res* out = nullptr) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const std::string& p : params) values.push_back(p.c_str());
  Res r(PQexecParams(c, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr, nullptr, 0));
  if (!succeeded(r)) return Failure::of(c, r.get(), step);
  if (out != nullptr) *out = std::move(r);
  return {};
}

std::int64_t to_int64(std::string_view s) {
  std::int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// Appends `s` as a field of COPY's text format: backslash, tab, newline and
// carriage return escaped; a NUL byte as \000 (which the server refuses as
// not UTF-8: the row is named, not silently cut).
void append_copy_text(std::string& out, std::string_view s) {
  for (const char ch : s) {
    switch (ch) {
      case '\\': out += "\\\\"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\0': out += "\\000"; break;
      default: out += ch; break;
    }
  }
}

template <typename T>
void append_number(std::string& out, T v) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<std::size_t>(end - buf));
}

// "t" for an identifier already validated as [A-Za-z0-9_]{1,64}.
std::string quote_ident(std::string_view name) { return "\"" + std::string(name) + "\""; }

// ---- One connection ---------------------------------------------------------------------------

class PgConnection final : public PooledConnection {
 public:
  explicit PgConnection(PGconn* c) : conn(c) {}
  ~PgConnection() override { PQfinish(conn); }
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  PGconn* const conn;
  bool stage_ready = false;  // kiroku_stage exists in this session
  std::string copy;          // COPY data of the batch being sent (reused)
};

// ---- The sink ---------------------------------------------------------------------------------

class PostgresSink final : public Sink {
 public:
  PostgresSink(PostgresUrl url, const SinkOptions& options, const PostgresSinkTuning& tuning)
      : url_(std::move(url)),
        options_(options),
        tuning_(tuning),
        where_(url_.redacted()),
        table_(quote_ident(options.table)),
        pool_(PoolOptions{options.max_open, options.max_idle, options.max_lifetime_ms, options.max_idle_time_ms},
              [this] { return connect(); }) {
    insert_sql_ = "INSERT INTO " + table_ +
                  " (id, received_at, at, name, value, client_id) SELECT id, received_at, at, name, value, client_id"
                  " FROM " +
                  std::string(kStage) + " ORDER BY kiroku_ord ON CONFLICT DO NOTHING";
    account_sql_ =
        "SELECT s.kiroku_ord, CASE WHEN t.id IS NOT NULL AND t.received_at = s.received_at AND t.at = s.at"
        " AND t.name = s.name AND t.value = s.value AND t.client_id IS NOT DISTINCT FROM s.client_id THEN 0"
        " WHEN s.client_id IS NOT NULL AND EXISTS (SELECT 1 FROM " +
        table_ + " c WHERE c.client_id = s.client_id) THEN 1 ELSE 2 END FROM " + std::string(kStage) + " s LEFT JOIN " +
        table_ + " t ON t.id = s.id ORDER BY s.kiroku_ord";
  }

  Status open() override {
    const std::string& t = options_.table;
    const std::string probe = "SELECT id, received_at, at, name, value, client_id FROM " + table_ + " LIMIT 0";
    // Two instances creating the table at once would collide in the catalog:
    // the creation runs under the table's advisory lock.
    const std::string create = "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('kiroku_create:" + t +
                               "', 0));"
                               " CREATE TABLE IF NOT EXISTS " +
                               table_ +
                               " (\n"
                               "  id NUMERIC(20) NOT NULL PRIMARY KEY CHECK (id >= 0 AND id <= 18446744073709551615),\n"
                               "  received_at BIGINT NOT NULL,\n"
                               "  at BIGINT NOT NULL,\n"
                               "  name VARCHAR(255) COLLATE \"C\" NOT NULL,\n"
                               "  value BIGINT NOT NULL,\n"
                               "  client_id VARCHAR(255) COLLATE \"C\" NULL,\n"
                               "  CONSTRAINT " +
                               quote_ident(t.substr(0, 48) + "_client_id") +
                               " UNIQUE (client_id));\n"
                               " COMMENT ON COLUMN " +
                               table_ + ".id IS 'event id, unsigned 64-bit'; COMMENT ON COLUMN " + table_ +
                               ".received_at IS 'Unix microseconds'; COMMENT ON COLUMN " + table_ +
                               ".at IS 'Unix microseconds'; COMMIT";
    const std::string instances =
        "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('kiroku_create:" + std::string(kInstancesTable) +
        "', 0)); CREATE TABLE IF NOT EXISTS " + std::string(kInstancesTable) +
        " (\n"
        "  tbl VARCHAR(64) NOT NULL,\n"
        "  instance INT NOT NULL,\n"
        "  holder VARCHAR(64) NOT NULL,\n"
        "  renewed_at BIGINT NOT NULL,\n"
        "  PRIMARY KEY (tbl, instance)); COMMIT";
    // Columns of the primary key, and whether client_id alone has a unique index.
    const std::string primary_key =
        "SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM pg_index i"
        " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = to_regclass($1) AND i.indisprimary";
    const std::string client_key =
        "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        " WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnkeyatts = 1 AND a.attname = 'client_id'"
        " AND i.indpred IS NULL";
    return with_connection(options_.connect_timeout_ms, [&](PgConnection& c) -> Failure {
      // Create the table only if it is missing, so that a user with INSERT
      // and SELECT but no CREATE privilege can write to an existing one.
      Failure f = run(c.conn, probe, "check table " + table_);
      if (f.state == "42P01") {
        if (f = run(c.conn, create, "create table " + table_); !f.ok()) return abandon(c, std::move(f), true);
        f = run(c.conn, probe, "check table " + table_);
      }
      if (!f.ok()) return f;
      Res r;
      if (f = run(c.conn, primary_key, {table_}, "check table " + table_, &r); !f.ok()) return f;
      const std::string columns = r.rows() == 1 && !r.null(0, 0) ? std::string(r.text(0, 0)) : "";
      if (columns != "id")
        return Failure::schema("table " + table_ + " exists but its primary key is (" + columns +
                               "), not (id): writes would not be idempotent");
      if (f = run(c.conn, client_key, {table_}, "check table " + table_, &r); !f.ok()) return f;
      if (r.rows() == 1 && r.text(0, 0) == "0") {
        // Client ids are idempotency keys: a table made without the index gets it.
        if (f = run(c.conn,
                    "CREATE UNIQUE INDEX IF NOT EXISTS " + quote_ident(t.substr(0, 48) + "_client_id") + " ON " +
                        table_ + " (client_id)",
                    "add unique index on " + table_ + ".client_id");
            !f.ok()) {
          if (f.fault == Fault::lost) return f;
          spdlog::warn("postgresql: {}; a client id sent twice is stored twice in {} until the index exists", f.message,
                       table_);
        }
      }
      if (f = run(c.conn, "SELECT 1 FROM " + std::string(kInstancesTable) + " LIMIT 0",
                  "check table " + std::string(kInstancesTable));
          f.state == "42P01") {
        if (f = run(c.conn, instances, "create table " + std::string(kInstancesTable)); !f.ok())
          return abandon(c, std::move(f), true);
      }
      if (!f.ok()) return f;
      // The staging table now, so that a missing TEMP privilege shows at start.
      return prepare_stage(c);
    });
  }

  Status write(std::string_view records, std::size_t count) override {
    report_.clear();
    refused_row_ = kNoRow;
    if (count == 0 || records.empty()) return {};
    return with_connection(options_.connect_timeout_ms, [&](PgConnection& c) {
      report_.clear();  // a retried attempt starts over
      refused_row_ = kNoRow;
      return insert(c, records);
    });
  }

  const WriteReport& last_write() const override { return report_; }

  Result<unsigned> lease_instance(std::string_view holder, int wanted, std::int64_t ttl_ms) override {
    Result<unsigned> chosen = Status::transient("postgresql: no lease");
    const Status s = with_connection(options_.connect_timeout_ms, [&](PgConnection& c) -> Failure {
      chosen = Status::transient("postgresql: no lease");
      const std::string table(kInstancesTable);
      const std::string now = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";
      // Claims for one events table are serialized by an advisory lock held
      // to the end of the transaction (and dropped with the session).
      Failure f = run(c.conn,
                      "BEGIN; SET LOCAL lock_timeout = " + std::to_string(options_.connect_timeout_ms) +
                          "; SELECT pg_advisory_xact_lock(hashtextextended('kiroku_lease:" + options_.table + "', 0))",
                      "lease: lock");
      if (!f.ok()) return abandon(c, std::move(f), true);
      Res r;
      f = run(c.conn, "SELECT instance, holder, renewed_at, " + now + " FROM " + table + " WHERE tbl = $1 FOR UPDATE",
              {options_.table}, "lease: read", &r);
      std::vector<LeaseRow> rows;
      std::int64_t now_ms = 0;
      if (f.ok()) {
        for (int i = 0; i < r.rows(); ++i) {
          rows.push_back(
              {static_cast<unsigned>(to_int64(r.text(i, 0))), std::string(r.text(i, 1)), to_int64(r.text(i, 2))});
          now_ms = to_int64(r.text(i, 3));
        }
        if (rows.empty()) {
          f = run(c.conn, "SELECT " + now, "lease: clock", &r);
          if (f.ok()) now_ms = to_int64(r.text(0, 0));
        }
      }
      if (f.ok()) {
        chosen = choose_instance(rows, holder, wanted, now_ms, ttl_ms);
        if (chosen.ok()) {
          f = run(c.conn,
                  "INSERT INTO " + table +
                      " (tbl, instance, holder, renewed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (tbl, instance)"
                      " DO UPDATE SET holder = EXCLUDED.holder, renewed_at = EXCLUDED.renewed_at",
                  {options_.table, std::to_string(*chosen), std::string(holder), std::to_string(now_ms)},
                  "lease: write");
        }
      }
      if (f.ok()) f = run(c.conn, chosen.ok() ? "COMMIT" : "ROLLBACK", "lease: commit");
      return abandon(c, std::move(f), true);
    });
    if (!s.ok()) return s;
    return chosen;
  }

  Status release_instance(unsigned instance, std::string_view holder) override {
    return with_connection(options_.connect_timeout_ms, [&](PgConnection& c) {
      return run(c.conn,
                 "UPDATE " + std::string(kInstancesTable) +
                     " SET renewed_at = 0 WHERE tbl = $1 AND instance = $2 AND holder = $3",
                 {options_.table, std::to_string(instance), std::string(holder)}, "lease: release");
    });
  }

  Result<std::uint64_t> max_id() override {
    std::uint64_t id = 0;
    const Status s = with_connection(options_.connect_timeout_ms, [&](PgConnection& c) {
      Res r;
      Failure f = run(c.conn, "SELECT max(id)::text FROM " + table_, "max id", &r);
      if (f.ok() && r.rows() == 1 && !r.null(0, 0)) {
        const std::string_view t = r.text(0, 0);
        std::from_chars(t.data(), t.data() + t.size(), id);
      }
      return f;
    });
    if (!s.ok()) return s;
    return id;
  }

  Status ping() override {
    return with_connection(kPingAcquireTimeout.count(),
                           [](PgConnection& c) { return run(c.conn, "SELECT 1", "ping"); });
  }

  PoolStats stats() const override { return pool_.stats(); }
  std::string_view kind() const override { return "postgresql"; }
  std::string_view rejection_reason() const override { return rejection_.load(std::memory_order_relaxed); }
  std::size_t refused_row() const override { return refused_row_; }

 private:
  // Runs `attempt` on a pool connection. A connection that turns out dead is
  // closed; if it came from the idle list the other idle ones are closed too
  // and the attempt runs once more on a new connection. A deadlock or a
  // serialization failure reruns it.
  template <typename Attempt>
  Status with_connection(std::int64_t acquire_timeout_ms, Attempt&& attempt) {
    for (int round = 0;; ++round) {
      Result<ConnectionPool::Lease> lease = pool_.acquire(milliseconds(acquire_timeout_ms));
      if (!lease.ok()) return lease.status();
      const Failure f = attempt(lease->as<PgConnection>());
      if (f.ok()) return {};
      if (f.fault == Fault::lost) {
        lease->discard();
        if (lease->reused() && round == 0) {
          lease->release();
          pool_.close_idle();
          continue;
        }
      } else if (f.fault == Fault::retry) {
        if (round < kDeadlockRetries) continue;
      } else if (f.fault == Fault::permanent) {
        lease->discard();  // start the next call from a clean session
      } else if (f.fault == Fault::rejected) {
        rejection_.store(pg_rejection_of(f.state), std::memory_order_relaxed);
      }
      return status_of(f);
    }
  }

  // Ends a failed transaction; the connection is kept only if that works.
  static Failure abandon(PgConnection& c, Failure f, bool in_transaction) {
    if (f.ok()) return f;
    if (in_transaction && f.fault != Fault::lost && PQtransactionStatus(c.conn) != PQTRANS_IDLE) {
      if (Failure r = run(c.conn, "ROLLBACK", "rollback"); !r.ok()) f.fault = Fault::lost;
    }
    return f;
  }

  // The staging table of this session: the events table's columns and
  // checks (so that COPY refuses a bad row and names its line), plus the
  // record's position, emptied by every commit.
  Failure prepare_stage(PgConnection& c) {
    if (c.stage_ready) return {};
    const std::string sql = "CREATE TEMP TABLE IF NOT EXISTS " + std::string(kStage) + " (LIKE " + table_ +
                            " INCLUDING DEFAULTS INCLUDING CONSTRAINTS, kiroku_ord INTEGER NOT NULL)"
                            " ON COMMIT DELETE ROWS";
    if (Failure f = run(c.conn, sql, "create staging table"); !f.ok()) return f;
    c.stage_ready = true;
    return {};
  }

  // One batch in one transaction: COPY to the staging table, INSERT ... ON
  // CONFLICT DO NOTHING, and the accounting when not every row went in.
  Failure insert(PgConnection& c, std::string_view records) {
    if (Failure f = prepare_stage(c); !f.ok()) return f;
    // BEGIN and COPY in one round trip: PQexec stops at the COPY.
    Res r(PQexec(c.conn, copy_sql_.c_str()));
    if (r.status() != PGRES_COPY_IN) return abandon(c, Failure::of(c.conn, r.get(), "insert"), true);
    chunk_.clear();
    std::string& buf = c.copy;
    buf.clear();
    RecordReader reader(records);
    bool sent = true;
    for (EventView e; reader.next(e);) {
      append_number(buf, chunk_.size());
      buf += '\t';
      append_number(buf, e.id);
      buf += '\t';
      append_number(buf, e.received_us);
      buf += '\t';
      append_number(buf, e.at_us);
      buf += '\t';
      append_copy_text(buf, e.name);
      buf += '\t';
      append_number(buf, e.value);
      buf += '\t';
      if (e.client_id.empty()) {
        buf += "\\N";
      } else {
        append_copy_text(buf, e.client_id);
      }
      buf += '\n';
      chunk_.push_back(reader.last_record());
      if (buf.size() >= kCopyChunkBytes) {
        sent = PQputCopyData(c.conn, buf.data(), static_cast<int>(buf.size())) == 1;
        buf.clear();
        if (!sent) break;
      }
    }
    if (sent && !buf.empty()) sent = PQputCopyData(c.conn, buf.data(), static_cast<int>(buf.size())) == 1;
    if (buf.capacity() > 4 * kCopyChunkBytes) buf.shrink_to_fit();
    if (!sent || PQputCopyEnd(c.conn, nullptr) != 1) {
      Failure f = Failure::of(c.conn, nullptr, "insert");
      f.fault = Fault::lost;
      return f;
    }
    r = Res(PQgetResult(c.conn));
    Failure f = succeeded(r) ? Failure{} : Failure::of(c.conn, r.get(), "insert");
    while (PGresult* more = PQgetResult(c.conn)) PQclear(more);
    if (!f.ok()) {
      if (f.fault == Fault::rejected && f.copy_line >= 1 && f.copy_line <= chunk_.size())
        refused_row_ = f.copy_line - 1;
      return abandon(c, std::move(f), true);
    }
    if (f = run(c.conn, insert_sql_, "insert", &r); !f.ok()) return abandon(c, std::move(f), true);
    std::size_t affected = 0;
    const char* tuples = PQcmdTuples(r.get());
    std::from_chars(tuples, tuples + std::strlen(tuples), affected);
    if (affected >= chunk_.size()) {
      report_.stored += chunk_.size();
    } else if (f = account(c, affected); !f.ok()) {
      return abandon(c, std::move(f), true);
    }
    if (f = run(c.conn, "COMMIT", "commit"); !f.ok()) return abandon(c, std::move(f), true);
    return {};
  }

  // After the INSERT stored `affected` of the staged rows: compares each
  // staged row with the table (same transaction) to tell rows stored now or
  // before (same id and fields), client ids stored before, and conflicts.
  // Runs only on a replay or a clash.
  Failure account(PgConnection& c, std::size_t affected) {
    Res r;
    if (Failure f = run(c.conn, account_sql_, "verify", &r); !f.ok()) return f;
    std::size_t same = 0;
    for (int i = 0; i < r.rows(); ++i) {
      const auto ord = static_cast<std::size_t>(to_int64(r.text(i, 0)));
      const std::string_view kind = r.text(i, 1);
      if (kind == "0") {
        ++same;
      } else if (kind == "1") {
        ++report_.client_duplicates;
      } else {
        ++report_.conflicts;
        if (ord < chunk_.size()) report_.conflict_records.append(chunk_[ord]);
      }
    }
    const std::size_t stored = std::min(affected, same);
    report_.stored += stored;
    report_.replayed += same - stored;
    return {};
  }

  // The pool's Connector: opens one session, or fails at once while backing off.
  Result<std::unique_ptr<PooledConnection>> connect() {
    {
      std::lock_guard lock(backoff_mu_);
      const Clock::time_point now = Clock::now();
      if (now < next_connect_) {
        const auto left = duration_cast<milliseconds>(next_connect_ - now).count();
        return Status(last_connect_error_.kind(),
                      last_connect_error_.message() + " (next attempt in " + std::to_string(left) + " ms)");
      }
    }
    const int timeout_s = url_.connect_timeout_s > 0
                              ? url_.connect_timeout_s
                              : static_cast<int>(std::max<std::int64_t>(2, (options_.connect_timeout_ms + 999) / 1000));
    std::vector<std::pair<const char*, std::string>> kv = {
        {"host", url_.socket_dir.empty() ? url_.host : url_.socket_dir},
        {"port", std::to_string(url_.port)},
        {"dbname", url_.database},
        {"user", url_.user},
        {"password", url_.password},
        {"sslmode", std::string(pg_ssl_mode_name(url_.ssl_mode))},
        {"gssencmode", "disable"},
        {"connect_timeout", std::to_string(timeout_s)},
        {"client_encoding", "UTF8"},
        {"application_name", url_.application_name},
        {"keepalives", "1"},
        {"keepalives_idle", "10"},
        {"keepalives_interval", "5"},
        {"keepalives_count", "3"},
        {"tcp_user_timeout", std::to_string(tuning_.tcp_user_timeout_ms)},
    };
    if (options_.durable_commits) kv.emplace_back("options", "-c synchronous_commit=on");
    if (url_.ssl_mode == PgSslMode::verify_ca || url_.ssl_mode == PgSslMode::verify_full) {
      // libpq 15 has no "system" root: name the system's CA file.
      kv.emplace_back("sslrootcert",
                      url_.ssl_root_cert.empty() ? std::string(X509_get_default_cert_file()) : url_.ssl_root_cert);
    }
    if (!url_.ssl_cert.empty()) {
      kv.emplace_back("sslcert", url_.ssl_cert);
      kv.emplace_back("sslkey", url_.ssl_key);
    }
    std::vector<const char*> keys;
    std::vector<const char*> values;
    for (const auto& [k, v] : kv) {
      if (v.empty()) continue;
      keys.push_back(k);
      values.push_back(v.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    PGconn* c = PQconnectdbParams(keys.data(), values.data(), 0);
    if (c == nullptr) return Status::transient("postgresql: out of memory");
    if (PQstatus(c) != CONNECTION_OK) {
      const std::string text = one_line(PQerrorMessage(c));
      PQfinish(c);
      const Status s = connect_failure(text);
      std::lock_guard lock(backoff_mu_);
      backoff_ms_ = backoff_ms_ == 0 ? tuning_.reconnect_backoff_min_ms
                                     : std::min(backoff_ms_ * 2, tuning_.reconnect_backoff_max_ms);
      next_connect_ = Clock::now() + milliseconds(backoff_ms_);
      last_connect_error_ = s;
      return s;
    }
    {
      std::lock_guard lock(backoff_mu_);
      backoff_ms_ = 0;
      next_connect_ = {};
    }
    // Server notices go to the log, not raw to stderr.
    PQsetNoticeProcessor(
        c, [](void*, const char* message) { spdlog::debug("postgresql: {}", one_line(message)); }, nullptr);
    return std::unique_ptr<PooledConnection>(std::make_unique<PgConnection>(c));
  }

  // libpq gives no SQLSTATE for a failed connect: its text tells what waiting will not heal.
  Status connect_failure(const std::string& text) const {
    std::string m = "postgresql: connect to " + where_ + ": " + text;
    if (!pg_connect_failure_is_permanent(text)) return Status::transient(std::move(m));
    if (url_.ssl_mode != PgSslMode::disable &&
        (text.find("SSL") != std::string::npos || text.find("certificate") != std::string::npos))
      m += " (sslmode=" + std::string(pg_ssl_mode_name(url_.ssl_mode)) + ", host " + url_.host +
           (url_.ssl_root_cert.empty() ? "" : ", sslrootcert " + url_.ssl_root_cert) + ")";
    return Status::permanent(std::move(m));
  }

  const PostgresUrl url_;
  const SinkOptions options_;
  const PostgresSinkTuning tuning_;
  const std::string where_;  // the URL without password, for messages
  const std::string table_;  // quoted
  const std::string copy_sql_ =
      "BEGIN; COPY " + std::string(kStage) + " (kiroku_ord, id, received_at, at, name, value, client_id) FROM STDIN";
  std::string insert_sql_;
  std::string account_sql_;

  WriteReport report_;
  std::size_t refused_row_ = kNoRow;  // the row the last refusal named (writer thread)
  std::vector<std::string_view> chunk_;

  std::mutex backoff_mu_;
  Clock::time_point next_connect_{};
  std::int64_t backoff_ms_ = 0;
  Status last_connect_error_;

  std::atomic<const char*> rejection_{"other"};  // the class of the last refused row
  ConnectionPool pool_;                          // last: its connections use the members above
};

}  // namespace

Result<std::unique_ptr<Sink>> make_postgres_sink(std::string_view url, const SinkOptions& options,
                                                 const PostgresSinkTuning& tuning) {
  Result<PostgresUrl> parsed = parse_postgres_url(url);
  if (!parsed.ok()) return parsed.status();
  if (Status s = validate_table_name(options.table); !s.ok()) return s;
  if (Status s = check_postgres_tls_files(*parsed); !s.ok()) return s;
  if (options.connect_timeout_ms <= 0) return Status::invalid("postgresql: connect timeout must be positive");
  if (options.max_lifetime_ms < 0 || options.max_idle_time_ms < 0)
    return Status::invalid("postgresql: connection lifetime and idle time must not be negative");
  return std::unique_ptr<Sink>(std::make_unique<PostgresSink>(std::move(*parsed), options, tuning));
}

}  // namespace kiroku
