// mysql_sink.cpp - the MySQL/MariaDB sink (contract in mysql_sink.h).
#include "sink/mysql/mysql_sink.h"

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/event.h"
#include "sink/instance_lease_table.h"
#include "sink/connection_pool.h"
#include "sink/mysql/mysql_tls.h"
#include "sink/mysql/mysql_url.h"

namespace kiroku {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

// Array binding sends a batch in executes of at most this many rows and
// about this many bytes, well under every server's default max_allowed_packet
// (4 MiB on MySQL 5.7). 10,000 rows is the largest batch the bulk benchmark
// measured in one execute.
constexpr std::size_t kMaxRowsPerExecute = 10'000;
constexpr std::size_t kMaxBytesPerExecute = 4u << 20;

// Multi-row INSERTs come in these sizes; a chunk is padded up to the next one
// by repeating its last row (harmless: the duplicate is absorbed by ON
// DUPLICATE KEY), so at most 11 statements are prepared per connection.
constexpr std::array<std::size_t, 11> kMultiRowSizes = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000};
constexpr std::size_t kMultiRowMax = kMultiRowSizes.back();

// A deadlock rolls the transaction back; retrying it at once usually succeeds.
constexpr int kDeadlockRetries = 3;
constexpr milliseconds kPingAcquireTimeout{1000};

// ---- Errors ---------------------------------------------------------------------------------

enum class Fault {
  lost,       // the connection is gone: close it; transient
  deadlock,   // the transaction was rolled back: retry it; transient
  transient,  // may work later
  permanent,  // the configuration or the schema is wrong
  rejected,   // the server refused the values of a row: splitting the batch isolates it
};

// Error numbers that mean the row's values are at fault, not the server or the
// table as a whole, and the class each one is counted under. Numbers rather
// than names where MySQL and MariaDB differ (3819 MySQL, 4025 MariaDB).
const char* rejection_of(unsigned code) {
  switch (code) {
    case 1406: return "data_too_long";    // ER_DATA_TOO_LONG
    case 1264:                            // ER_WARN_DATA_OUT_OF_RANGE
    case 1690: return "out_of_range";     // ER_DATA_OUT_OF_RANGE
    case 1265:                            // WARN_DATA_TRUNCATED
    case 1292:                            // ER_TRUNCATED_WRONG_VALUE
    case 1366:                            // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
    case 1367: return "incorrect_value";  // ER_ILLEGAL_VALUE_FOR_TYPE
    case 1048: return "null";             // ER_BAD_NULL_ERROR
    case 3819:                            // ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
    case 4025:                            // ER_CONSTRAINT_FAILED (MariaDB)
    case 1644: return "constraint";       // ER_SIGNAL_EXCEPTION (a trigger's SIGNAL)
    case 1216:                            // ER_NO_REFERENCED_ROW
    case 1452: return "foreign_key";      // ER_NO_REFERENCED_ROW_2
    default: return nullptr;
  }
}

Fault fault_of(unsigned code) {
  if (rejection_of(code) != nullptr) return Fault::rejected;
  switch (code) {
    case ER_LOCK_DEADLOCK: return Fault::deadlock;
    case ER_CONNECTION_KILLED:
    case ER_SERVER_SHUTDOWN:
    case ER_NET_READ_ERROR:
    case ER_NET_READ_INTERRUPTED:
    case ER_NET_ERROR_ON_WRITE:
    case ER_NET_WRITE_INTERRUPTED:
    case ER_NET_PACKET_TOO_LARGE:
    case ER_NET_PACKETS_OUT_OF_ORDER: return Fault::lost;
    // Credentials, privileges, the database itself.
    case ER_DBACCESS_DENIED_ERROR:
    case ER_ACCESS_DENIED_ERROR:
    case ER_BAD_DB_ERROR:
    case ER_TABLEACCESS_DENIED_ERROR:
    case ER_COLUMNACCESS_DENIED_ERROR:
    case ER_SPECIFIC_ACCESS_DENIED_ERROR:
    case ER_PROCACCESS_DENIED_ERROR:
    case ER_HOST_NOT_PRIVILEGED:
    case ER_HOST_IS_BLOCKED:
    case ER_NOT_SUPPORTED_AUTH_MODE:
    case ER_ACCESS_DENIED_NO_PASSWORD_ERROR:
    case ER_MUST_CHANGE_PASSWORD_LOGIN:
    case ER_MUST_CHANGE_PASSWORD:
    case CR_CANT_READ_CHARSET:
    case CR_AUTH_PLUGIN_CANNOT_LOAD:
    // The table is not what the sink expects (an older or foreign schema).
    case ER_NO_SUCH_TABLE:
    case ER_BAD_FIELD_ERROR:
    case ER_NO_DEFAULT_FOR_FIELD:
    case ER_TOO_BIG_ROWSIZE:
    case ER_TOO_LONG_KEY:
    // The server cannot run what the sink sends.
    case ER_PARSE_ERROR:
    case ER_UNKNOWN_STORAGE_ENGINE:
    case ER_FEATURE_DISABLED:
    case ER_UNKNOWN_CHARACTER_SET:
    case ER_UNKNOWN_COLLATION:
    case ER_NOT_ALLOWED_COMMAND:
    case ER_NOT_SUPPORTED_YET:
    case ER_UNKNOWN_SYSTEM_VARIABLE:
    case ER_WRONG_VALUE_FOR_VAR: return Fault::permanent;
    default: break;
  }
  // Every other client-side error (2000-2999) leaves the connection unusable.
  if (code >= CR_MIN_ERROR && code <= CR_MAX_ERROR) return Fault::lost;
  // Lock wait timeouts, too many connections, read-only during a failover,
  // disk full, interrupted queries...: worth retrying.
  return Fault::transient;
}

// What went wrong in one try on one connection; code 0 means nothing did.
struct Failure {
  unsigned code = 0;
  Fault fault = Fault::transient;
  std::string message;

  bool ok() const { return code == 0; }
  static Failure of(MYSQL* m, std::string_view step) { return make(mysql_errno(m), mysql_error(m), step); }
  static Failure of(MYSQL_STMT* s, std::string_view step) {
    return make(mysql_stmt_errno(s), mysql_stmt_error(s), step);
  }
  static Failure make(unsigned code, const char* text, std::string_view step) {
    Failure f;
    f.code = code == 0 ? CR_UNKNOWN_ERROR : code;
    f.fault = fault_of(f.code);
    f.message = std::string(step) + ": " + text + " (" + std::to_string(f.code) + ")";
    return f;
  }
  // A problem the sink itself found (not a server error).
  static Failure schema(std::string message) {
    Failure f;
    f.code = ER_UNKNOWN_ERROR;
    f.fault = Fault::permanent;
    f.message = std::move(message);
    return f;
  }
};

Status status_of(const Failure& f) {
  std::string m = "mysql: " + f.message;
  if (f.fault == Fault::rejected) return Status::invalid(std::move(m));
  return f.fault == Fault::permanent ? Status::permanent(std::move(m)) : Status::transient(std::move(m));
}

// Runs a statement and throws away any result set.
Failure run(MYSQL* m, std::string_view sql, std::string_view step) {
  if (mysql_real_query(m, sql.data(), sql.size()) != 0) return Failure::of(m, step);
  if (MYSQL_RES* res = mysql_store_result(m)) {
    mysql_free_result(res);
  } else if (mysql_field_count(m) != 0) {
    return Failure::of(m, step);
  }
  return {};
}

// Runs a query that returns one value (NULL comes back as `null`).
Failure fetch_one(MYSQL* m, std::string_view sql, std::string_view step, std::string& value, bool& null) {
  if (mysql_real_query(m, sql.data(), sql.size()) != 0) return Failure::of(m, step);
  MYSQL_RES* res = mysql_store_result(m);
  if (res == nullptr) return Failure::of(m, step);
  const MYSQL_ROW row = mysql_fetch_row(res);
  null = row == nullptr || row[0] == nullptr;
  if (!null) value.assign(row[0], mysql_fetch_lengths(res)[0]);
  mysql_free_result(res);
  return {};
}

// ---- One connection and its statements --------------------------------------------------------

// Column arrays for array binding: the strings point into the batch's records.
struct Columns {
  std::vector<std::uint64_t> id;
  std::vector<std::int64_t> received;
  std::vector<std::int64_t> at;
  std::vector<std::int64_t> value;
  std::vector<const char*> name;
  std::vector<unsigned long> name_len;
  std::vector<const char*> client;
  std::vector<unsigned long> client_len;
  std::vector<char> client_ind;

  std::size_t rows() const { return id.size(); }
  void grow(std::size_t n) {
    if (n <= id.size()) return;
    id.resize(n);
    received.resize(n);
    at.resize(n);
    value.resize(n);
    name.resize(n);
    name_len.resize(n);
    client.resize(n);
    client_len.resize(n);
    client_ind.resize(n);
  }
  void set(std::size_t i, const EventView& e) {
    id[i] = e.id;
    received[i] = e.received_us;
    at[i] = e.at_us;
    value[i] = e.value;
    name[i] = e.name.data();
    name_len[i] = e.name.size();
    client[i] = e.client_id.empty() ? "" : e.client_id.data();
    client_len[i] = e.client_id.size();
    client_ind[i] = e.client_id.empty() ? STMT_INDICATOR_NULL : STMT_INDICATOR_NONE;
  }
};

// Fixed per-row slots for multi-row INSERTs, bound once per statement; each
// chunk copies its rows in.
struct Slots {
  std::array<std::uint64_t, kMultiRowMax> id{};
  std::array<std::int64_t, kMultiRowMax> received{};
  std::array<std::int64_t, kMultiRowMax> at{};
  std::array<std::int64_t, kMultiRowMax> value{};
  std::array<unsigned long, kMultiRowMax> name_len{};
  std::array<unsigned long, kMultiRowMax> client_len{};
  std::array<my_bool, kMultiRowMax> client_null{};
  std::array<char, kMultiRowMax * kMaxNameBytes> name{};
  std::array<char, kMultiRowMax * kMaxClientIdBytes> client{};

  void set(std::size_t i, const EventView& e) {
    id[i] = e.id;
    received[i] = e.received_us;
    at[i] = e.at_us;
    value[i] = e.value;
    std::memcpy(&name[i * kMaxNameBytes], e.name.data(), e.name.size());
    name_len[i] = e.name.size();
    if (!e.client_id.empty()) {
      std::memcpy(&client[i * kMaxClientIdBytes], e.client_id.data(), e.client_id.size());
    }
    client_len[i] = e.client_id.size();
    client_null[i] = e.client_id.empty();
  }
  void copy_row(std::size_t from, std::size_t to) {
    id[to] = id[from];
    received[to] = received[from];
    at[to] = at[from];
    value[to] = value[from];
    std::memcpy(&name[to * kMaxNameBytes], &name[from * kMaxNameBytes], name_len[from]);
    name_len[to] = name_len[from];
    std::memcpy(&client[to * kMaxClientIdBytes], &client[from * kMaxClientIdBytes], client_len[from]);
    client_len[to] = client_len[from];
    client_null[to] = client_null[from];
  }
};

std::string insert_sql(std::string_view table, std::size_t rows) {
  std::string sql =
      "INSERT INTO `" + std::string(table) + "` (`id`, `received_at`, `at`, `name`, `value`, `client_id`) VALUES ";
  sql.reserve(sql.size() + rows * 14 + 40);
  for (std::size_t i = 0; i < rows; ++i) sql += i == 0 ? "(?,?,?,?,?,?)" : ",(?,?,?,?,?,?)";
  sql += " ON DUPLICATE KEY UPDATE `id` = `id`";
  return sql;
}

class MysqlConnection final : public PooledConnection {
 public:
  MysqlConnection(MYSQL* m, bool bulk_ops) : mysql(m), bulk(bulk_ops) {}
  ~MysqlConnection() override {
    if (single_ != nullptr) mysql_stmt_close(single_);
    for (MYSQL_STMT* s : multi_) {
      if (s != nullptr) mysql_stmt_close(s);
    }
    mysql_close(mysql);
  }
  MysqlConnection(const MysqlConnection&) = delete;
  MysqlConnection& operator=(const MysqlConnection&) = delete;

  MYSQL* const mysql;
  const bool bulk;  // the server takes array binding (MariaDB 10.2+)

  // The single-row INSERT for array binding, prepared once.
  Failure prepare_single(std::string_view table) {
    if (single_ != nullptr) return {};
    return prepare(insert_sql(table, 1), single_);
  }

  // Executes the single-row INSERT over the first `n` rows of `columns`.
  Failure execute_arrays(std::size_t n) {
    const auto size = static_cast<unsigned int>(n);
    if (mysql_stmt_attr_set(single_, STMT_ATTR_ARRAY_SIZE, &size)) {
      return Failure::of(single_, "insert");
    }
    MYSQL_BIND b[6];
    std::memset(b, 0, sizeof b);
    bind_integer(b[0], columns.id.data());
    b[0].is_unsigned = 1;
    bind_integer(b[1], columns.received.data());
    bind_integer(b[2], columns.at.data());
    b[3].buffer_type = MYSQL_TYPE_STRING;
    b[3].buffer = columns.name.data();
    b[3].length = columns.name_len.data();
    bind_integer(b[4], columns.value.data());
    b[5].buffer_type = MYSQL_TYPE_STRING;
    b[5].buffer = columns.client.data();
    b[5].length = columns.client_len.data();
    b[5].u.indicator = columns.client_ind.data();
    if (mysql_stmt_bind_param(single_, b) || mysql_stmt_execute(single_)) {
      return Failure::of(single_, "insert");
    }
    return {};
  }

  // Executes a multi-row INSERT over the first `n` (1..1000) rows of `slots()`,
  // padding up to the statement's size with copies of row n-1.
  Failure execute_multi(std::string_view table, std::size_t n) {
    std::size_t k = 0;
    while (kMultiRowSizes[k] < n) ++k;
    const std::size_t size = kMultiRowSizes[k];
    for (std::size_t i = n; i < size; ++i) slots_->copy_row(n - 1, i);
    if (multi_[k] == nullptr) {
      if (Failure f = prepare(insert_sql(table, size), multi_[k]); !f.ok()) return f;
      std::vector<MYSQL_BIND> b(size * 6);
      std::memset(b.data(), 0, b.size() * sizeof(MYSQL_BIND));
      for (std::size_t i = 0; i < size; ++i) {
        MYSQL_BIND* r = &b[i * 6];
        bind_integer(r[0], &slots_->id[i]);
        r[0].is_unsigned = 1;
        bind_integer(r[1], &slots_->received[i]);
        bind_integer(r[2], &slots_->at[i]);
        r[3].buffer_type = MYSQL_TYPE_STRING;
        r[3].buffer = &slots_->name[i * kMaxNameBytes];
        r[3].buffer_length = kMaxNameBytes;
        r[3].length = &slots_->name_len[i];
        bind_integer(r[4], &slots_->value[i]);
        r[5].buffer_type = MYSQL_TYPE_STRING;
        r[5].buffer = &slots_->client[i * kMaxClientIdBytes];
        r[5].buffer_length = kMaxClientIdBytes;
        r[5].length = &slots_->client_len[i];
        r[5].is_null = &slots_->client_null[i];
      }
      if (mysql_stmt_bind_param(multi_[k], b.data())) {
        Failure f = Failure::of(multi_[k], "insert");
        mysql_stmt_close(multi_[k]);
        multi_[k] = nullptr;
        return f;
      }
    }
    if (mysql_stmt_execute(multi_[k])) return Failure::of(multi_[k], "insert");
    last_affected_ = mysql_stmt_affected_rows(multi_[k]);
    return {};
  }

  MYSQL_STMT* single() const { return single_; }
  std::uint64_t last_affected_rows() const { return last_affected_; }

  Slots& slots() {
    if (!slots_) slots_ = std::make_unique<Slots>();
    return *slots_;
  }

  Columns columns;

 private:
  template <typename T>
  static void bind_integer(MYSQL_BIND& b, T* values) {
    b.buffer_type = MYSQL_TYPE_LONGLONG;
    b.buffer = values;
  }

  Failure prepare(const std::string& sql, MYSQL_STMT*& out) {
    MYSQL_STMT* s = mysql_stmt_init(mysql);
    if (s == nullptr) return Failure::of(mysql, "prepare insert");
    if (mysql_stmt_prepare(s, sql.data(), sql.size()) != 0) {
      Failure f = Failure::of(s, "prepare insert");
      mysql_stmt_close(s);
      return f;
    }
    out = s;
    return {};
  }

  MYSQL_STMT* single_ = nullptr;
  std::array<MYSQL_STMT*, kMultiRowSizes.size()> multi_{};
  std::unique_ptr<Slots> slots_;
  std::uint64_t last_affected_ = 0;
};

// ---- The sink ---------------------------------------------------------------------------------

class MysqlSink final : public Sink {
 public:
  MysqlSink(MysqlUrl url, const SinkOptions& options, const MysqlSinkTuning& tuning)
      : url_(std::move(url)),
        options_(options),
        tuning_(tuning),
        where_(url_.redacted()),
        pool_(PoolOptions{options.max_open, options.max_idle, options.max_lifetime_ms, options.max_idle_time_ms},
              [this] { return connect(); }) {}

  Status open() override {
    const std::string& t = options_.table;
    const std::string probe = "SELECT `id`, `received_at`, `at`, `name`, `value`, `client_id` FROM `" + t + "` LIMIT 0";
    const std::string create = "CREATE TABLE IF NOT EXISTS `" + t +
                               "` (\n"
                               "  `id` BIGINT UNSIGNED NOT NULL PRIMARY KEY,\n"
                               "  `received_at` BIGINT NOT NULL COMMENT 'Unix microseconds',\n"
                               "  `at` BIGINT NOT NULL COMMENT 'Unix microseconds',\n"
                               "  `name` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,\n"
                               "  `value` BIGINT NOT NULL,\n"
                               "  `client_id` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,\n"
                               "  UNIQUE KEY `client_id` (`client_id`)\n"
                               ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";
    const std::string client_key =
        "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '" + t +
        "' AND COLUMN_NAME = 'client_id' AND NON_UNIQUE = 0 AND SEQ_IN_INDEX = 1";
    const std::string add_client_key = "ALTER TABLE `" + t + "` ADD UNIQUE KEY `client_id` (`client_id`)";
    const std::string instances = "CREATE TABLE IF NOT EXISTS `" + std::string(kInstancesTable) +
                                  "` (\n"
                                  "  `tbl` VARCHAR(64) CHARACTER SET ascii NOT NULL,\n"
                                  "  `instance` INT NOT NULL,\n"
                                  "  `holder` VARCHAR(64) CHARACTER SET ascii NOT NULL,\n"
                                  "  `renewed_at` BIGINT NOT NULL COMMENT 'Unix ms, database clock; 0 = released',\n"
                                  "  PRIMARY KEY (`tbl`, `instance`)\n"
                                  ") ENGINE=InnoDB";
    const std::string primary_key =
        "SELECT GROUP_CONCAT(COLUMN_NAME ORDER BY SEQ_IN_INDEX) FROM information_schema.STATISTICS"
        " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '" +
        t + "' AND INDEX_NAME = 'PRIMARY'";
    return with_connection(options_.connect_timeout_ms, [&](MysqlConnection& c) -> Failure {
      // Create the table only if it is missing, so that a user with INSERT
      // and SELECT but no CREATE privilege can write to an existing one.
      Failure f = run(c.mysql, probe, "check table `" + t + "`");
      if (f.code == ER_NO_SUCH_TABLE) {
        if (f = run(c.mysql, create, "create table `" + t + "`"); !f.ok()) return f;
        f = run(c.mysql, probe, "check table `" + t + "`");
      }
      if (!f.ok()) return f;
      std::string columns;
      bool null = false;
      if (f = fetch_one(c.mysql, primary_key, "check table `" + t + "`", columns, null); !f.ok()) {
        return f;
      }
      if (null || columns != "id") {
        return Failure::schema("table `" + t + "` exists but its primary key is (" + columns +
                               "), not (id): writes would not be idempotent");
      }
      // Client ids are idempotency keys: a table made before they were unique gets the index.
      if (f = fetch_one(c.mysql, client_key, "check table `" + t + "`", columns, null); !f.ok()) return f;
      if (columns == "0") {
        if (f = run(c.mysql, add_client_key, "add unique key on `" + t + "`.`client_id`"); !f.ok()) {
          if (f.fault == Fault::lost) return f;
          spdlog::warn("mysql: {}; a client id sent twice is stored twice in `{}` until the index exists", f.message,
                       t);
        }
      }
      if (f = run(c.mysql, "SELECT 1 FROM `" + std::string(kInstancesTable) + "` LIMIT 0",
                  "check table `" + std::string(kInstancesTable) + "`");
          f.code == ER_NO_SUCH_TABLE) {
        f = run(c.mysql, instances, "create table `" + std::string(kInstancesTable) + "`");
      }
      if (!f.ok()) return f;
      // Prepare now, so that a missing INSERT privilege shows at start.
      if (use_arrays(c)) return c.prepare_single(t);
      return {};
    });
  }

  Status write(std::string_view records, std::size_t count) override {
    report_.clear();
    refused_row_ = kNoRow;
    if (count == 0 || records.empty()) return {};
    return with_connection(options_.connect_timeout_ms, [&](MysqlConnection& c) {
      report_.clear();  // a retried attempt starts over
      refused_row_ = kNoRow;
      return use_arrays(c) ? insert_arrays(c, records, count) : insert_multi(c, records);
    });
  }

  const WriteReport& last_write() const override { return report_; }

  Result<unsigned> lease_instance(std::string_view holder, int wanted, std::int64_t ttl_ms) override {
    Result<unsigned> chosen = Status::transient("mysql: no lease");
    const Status s = with_connection(options_.connect_timeout_ms, [&](MysqlConnection& c) -> Failure {
      chosen = Status::transient("mysql: no lease");
      std::string esc_holder(holder.size() * 2 + 1, '\0');
      esc_holder.resize(mysql_real_escape_string(c.mysql, esc_holder.data(), holder.data(), holder.size()));
      // Claims are serialized by a named lock: concurrent SELECT ... FOR UPDATE
      // on a missing row take gap locks and then deadlock each other's INSERT.
      // The server drops the lock with the session if this one dies.
      const std::string lock_name = "'kiroku_lease:" + options_.table.substr(0, 48) + "'";
      std::string got;
      bool null = false;
      if (Failure f = fetch_one(c.mysql,
                                "SELECT GET_LOCK(" + lock_name + ", " +
                                    std::to_string(std::max<std::int64_t>(1, options_.connect_timeout_ms / 1000)) + ")",
                                "lease: lock", got, null);
          !f.ok()) {
        return f;
      }
      if (null || got != "1") {
        return Failure::make(ER_LOCK_WAIT_TIMEOUT, "another instance holds the lease lock", "lease: lock");
      }
      Failure claimed = claim_lease(c, holder, esc_holder, wanted, ttl_ms, chosen);
      Failure released = run(c.mysql, "DO RELEASE_LOCK(" + lock_name + ")", "lease: unlock");
      if (!released.ok() && claimed.ok()) claimed = std::move(released);
      return claimed;
    });
    if (!s.ok()) return s;
    return chosen;
  }

  // One lease claim in one transaction, under the lease lock.
  Failure claim_lease(MysqlConnection& c, std::string_view holder, const std::string& esc_holder, int wanted,
                      std::int64_t ttl_ms, Result<unsigned>& chosen) {
    const std::string table(kInstancesTable);
    if (Failure f = run(c.mysql, "START TRANSACTION", "lease: begin"); !f.ok()) return f;
    std::vector<LeaseRow> rows;
    std::int64_t now_ms = 0;
    Failure f;
    const std::string select =
        "SELECT `instance`, `holder`, `renewed_at`, CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS "
        "SIGNED) FROM `" +
        table + "` WHERE `tbl` = '" + options_.table + "' FOR UPDATE";
    if (mysql_real_query(c.mysql, select.data(), select.size()) != 0) {
      f = Failure::of(c.mysql, "lease: read");
    } else if (MYSQL_RES* res = mysql_store_result(c.mysql); res == nullptr) {
      f = Failure::of(c.mysql, "lease: read");
    } else {
      while (MYSQL_ROW row = mysql_fetch_row(res)) {
        rows.push_back({static_cast<unsigned>(std::strtoul(row[0], nullptr, 10)), row[1] ? row[1] : "",
                        std::strtoll(row[2], nullptr, 10)});
        now_ms = std::strtoll(row[3], nullptr, 10);
      }
      mysql_free_result(res);
    }
    if (f.ok() && rows.empty()) {
      std::string text;
      bool null = false;
      f = fetch_one(c.mysql, "SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)", "lease: clock", text, null);
      now_ms = std::strtoll(text.c_str(), nullptr, 10);
    }
    if (f.ok()) {
      chosen = choose_instance(rows, holder, wanted, now_ms, ttl_ms);
      if (chosen.ok()) {
        f = run(c.mysql,
                "INSERT INTO `" + table + "` (`tbl`, `instance`, `holder`, `renewed_at`) VALUES ('" + options_.table +
                    "', " + std::to_string(*chosen) + ", '" + esc_holder + "', " + std::to_string(now_ms) +
                    ") ON DUPLICATE KEY UPDATE `holder` = VALUES(`holder`), `renewed_at` = VALUES(`renewed_at`)",
                "lease: write");
      }
    }
    if (f.ok() && chosen.ok()) f = run(c.mysql, "COMMIT", "lease: commit");
    else if (f.ok()) f = run(c.mysql, "ROLLBACK", "lease: rollback");
    return abandon(c, std::move(f), true);
  }

  Status release_instance(unsigned instance, std::string_view holder) override {
    return with_connection(options_.connect_timeout_ms, [&](MysqlConnection& c) {
      std::string esc_holder(holder.size() * 2 + 1, '\0');
      esc_holder.resize(mysql_real_escape_string(c.mysql, esc_holder.data(), holder.data(), holder.size()));
      return run(c.mysql,
                 "UPDATE `" + std::string(kInstancesTable) + "` SET `renewed_at` = 0 WHERE `tbl` = '" + options_.table +
                     "' AND `instance` = " + std::to_string(instance) + " AND `holder` = '" + esc_holder + "'",
                 "lease: release");
    });
  }

  Result<std::uint64_t> max_id() override {
    const std::string sql = "SELECT MAX(`id`) FROM `" + options_.table + "`";
    std::uint64_t id = 0;
    const Status s = with_connection(options_.connect_timeout_ms, [&](MysqlConnection& c) {
      std::string text;
      bool null = false;
      Failure f = fetch_one(c.mysql, sql, "max id", text, null);
      if (f.ok()) id = null ? 0 : std::strtoull(text.c_str(), nullptr, 10);
      return f;
    });
    if (!s.ok()) return s;
    return id;
  }

  Status ping() override {
    return with_connection(kPingAcquireTimeout.count(), [](MysqlConnection& c) {
      if (mysql_ping(c.mysql) != 0) return Failure::of(c.mysql, "ping");
      return Failure{};
    });
  }

  PoolStats stats() const override { return pool_.stats(); }
  std::string_view kind() const override { return "mysql"; }
  std::string_view rejection_reason() const override { return rejection_.load(std::memory_order_relaxed); }
  std::size_t refused_row() const override { return refused_row_; }

 private:
  bool use_arrays(const MysqlConnection& c) const {
    switch (tuning_.method) {
      case MysqlInsertMethod::array_binding: return true;
      case MysqlInsertMethod::multi_row: return false;
      case MysqlInsertMethod::automatic: break;
    }
    return c.bulk;
  }

  // Runs `attempt` on a pool connection. A connection that turns out dead is
  // closed; if it came from the idle list the other idle ones are closed too
  // and the attempt runs once more on a new connection. A deadlock reruns it.
  template <typename Attempt>
  Status with_connection(std::int64_t acquire_timeout_ms, Attempt&& attempt) {
    for (int round = 0;; ++round) {
      Result<ConnectionPool::Lease> lease = pool_.acquire(milliseconds(acquire_timeout_ms));
      if (!lease.ok()) return lease.status();
      const Failure f = attempt(lease->as<MysqlConnection>());
      if (f.ok()) return {};
      if (f.fault == Fault::lost) {
        lease->discard();
        if (lease->reused() && round == 0) {
          lease->release();
          pool_.close_idle();
          continue;
        }
      } else if (f.fault == Fault::deadlock) {
        if (round < kDeadlockRetries) continue;
      } else if (f.fault == Fault::permanent) {
        // Start the next call from a clean session.
        lease->discard();
      } else if (f.fault == Fault::rejected) {
        rejection_.store(rejection_of(f.code), std::memory_order_relaxed);
      }
      return status_of(f);
    }
  }

  // Ends a failed transaction; the connection is kept only if that works.
  static Failure abandon(MysqlConnection& c, Failure f, bool in_transaction) {
    if (f.ok()) return f;
    if (in_transaction && f.fault != Fault::lost) {
      if (Failure r = run(c.mysql, "ROLLBACK", "rollback"); !r.ok() && r.fault == Fault::lost) {
        f.fault = Fault::lost;
      }
    }
    return f;
  }

  // Array binding: executes of up to kMaxRowsPerExecute rows / kMaxBytesPerExecute
  // bytes; a transaction only when the batch needs more than one.
  Failure insert_arrays(MysqlConnection& c, std::string_view records, std::size_t count) {
    if (Failure f = c.prepare_single(options_.table); !f.ok()) return f;
    Columns& cols = c.columns;
    cols.grow(std::min(count, kMaxRowsPerExecute));
    RecordReader reader(records);
    EventView e;
    bool pending = reader.next(e);  // `e` read but not yet placed
    bool in_transaction = false;
    for (std::size_t first = 0; pending; first += chunk_.size()) {
      std::size_t n = 0;
      std::size_t bytes = 0;
      chunk_.clear();
      while (pending && n < cols.rows()) {
        const std::size_t size = record_size(e.name.size(), e.client_id.size());
        if (n > 0 && bytes + size > kMaxBytesPerExecute) break;
        cols.set(n++, e);
        chunk_.push_back(reader.last_record());
        bytes += size;
        pending = reader.next(e);
      }
      if (pending && !in_transaction) {
        if (Failure f = run(c.mysql, "START TRANSACTION", "begin"); !f.ok()) return f;
        in_transaction = true;
      }
      if (Failure f = c.execute_arrays(n); !f.ok()) {
        note_refused_row(f, first, n);
        return abandon(c, std::move(f), in_transaction);
      }
      if (Failure f = account(c, mysql_stmt_affected_rows(c.single())); !f.ok()) {
        return abandon(c, std::move(f), in_transaction);
      }
    }
    if (in_transaction) {
      if (Failure f = run(c.mysql, "COMMIT", "commit"); !f.ok()) return abandon(c, f, true);
    }
    return {};
  }

  // Multi-row INSERTs of up to 1000 rows; a transaction when there are more.
  Failure insert_multi(MysqlConnection& c, std::string_view records) {
    Slots& slots = c.slots();
    RecordReader reader(records);
    EventView e;
    bool pending = reader.next(e);
    bool in_transaction = false;
    for (std::size_t first = 0; pending; first += chunk_.size()) {
      std::size_t n = 0;
      chunk_.clear();
      while (pending && n < kMultiRowMax) {
        slots.set(n++, e);
        chunk_.push_back(reader.last_record());
        pending = reader.next(e);
      }
      if (pending && !in_transaction) {
        if (Failure f = run(c.mysql, "START TRANSACTION", "begin"); !f.ok()) return f;
        in_transaction = true;
      }
      if (Failure f = c.execute_multi(options_.table, n); !f.ok()) {
        note_refused_row(f, first, n);
        return abandon(c, std::move(f), in_transaction);
      }
      if (Failure f = account(c, c.last_affected_rows()); !f.ok()) return abandon(c, std::move(f), in_transaction);
    }
    if (in_transaction) {
      if (Failure f = run(c.mysql, "COMMIT", "commit"); !f.ok()) return abandon(c, f, true);
    }
    return {};
  }

  // A refused row's error names it ("... at row N", 1-based in the statement,
  // padding rows repeating the last one): that row of the chunk starting at
  // record `first`, `n` long.
  void note_refused_row(const Failure& f, std::size_t first, std::size_t n) {
    if (f.fault != Fault::rejected) return;
    constexpr std::string_view kAtRow = " at row ";
    const std::size_t at = f.message.rfind(kAtRow);
    if (at == std::string::npos) return;
    std::size_t row = 0;
    const char* p = f.message.data() + at + kAtRow.size();
    const char* end = f.message.data() + f.message.size();
    const auto [next, ec] = std::from_chars(p, end, row);
    if (ec != std::errc() || next == p || row == 0) return;
    refused_row_ = first + std::min(row, n) - 1;
  }

  // Accounts for the records of chunk_ after an INSERT ... ON DUPLICATE KEY
  // UPDATE `id` = `id` stored `affected` of them (a duplicate counts 0). When
  // some were not stored, reads back the rows under their ids and client ids
  // (in the same transaction) to tell replays and client duplicates from
  // conflicts; this path runs only on a replay or a clash.
  Failure account(MysqlConnection& c, std::uint64_t affected) {
    if (affected >= chunk_.size()) {
      report_.stored += chunk_.size();
      return {};
    }
    std::vector<EventView> events(chunk_.size());
    std::string ids;
    std::string clients;
    for (std::size_t i = 0; i < chunk_.size(); ++i) {
      RecordReader one(chunk_[i]);
      one.next(events[i]);
      ids += (i == 0 ? "" : ",") + std::to_string(events[i].id);
      if (!events[i].client_id.empty()) {
        std::string esc(events[i].client_id.size() * 2 + 1, '\0');
        esc.resize(
            mysql_real_escape_string(c.mysql, esc.data(), events[i].client_id.data(), events[i].client_id.size()));
        clients += (clients.empty() ? "'" : ",'") + esc + "'";
      }
    }
    struct Stored {
      std::int64_t received = 0, at = 0, value = 0;
      std::string name;
      std::optional<std::string> client;
    };
    std::unordered_map<std::uint64_t, Stored> by_id;
    std::unordered_map<std::string, bool> client_seen;
    const std::string sql = "SELECT `id`, `received_at`, `at`, `name`, `value`, `client_id` FROM `" + options_.table +
                            "` WHERE `id` IN (" + ids + ")";
    if (mysql_real_query(c.mysql, sql.data(), sql.size()) != 0) return Failure::of(c.mysql, "verify");
    MYSQL_RES* res = mysql_store_result(c.mysql);
    if (res == nullptr) return Failure::of(c.mysql, "verify");
    while (MYSQL_ROW row = mysql_fetch_row(res)) {
      const unsigned long* len = mysql_fetch_lengths(res);
      Stored st{std::strtoll(row[1], nullptr, 10), std::strtoll(row[2], nullptr, 10), std::strtoll(row[4], nullptr, 10),
                std::string(row[3], len[3]), std::nullopt};
      if (row[5] != nullptr) st.client = std::string(row[5], len[5]);
      by_id.emplace(std::strtoull(row[0], nullptr, 10), std::move(st));
    }
    mysql_free_result(res);
    if (!clients.empty()) {
      const std::string q = "SELECT `client_id` FROM `" + options_.table + "` WHERE `client_id` IN (" + clients + ")";
      if (mysql_real_query(c.mysql, q.data(), q.size()) != 0) return Failure::of(c.mysql, "verify");
      MYSQL_RES* r = mysql_store_result(c.mysql);
      if (r == nullptr) return Failure::of(c.mysql, "verify");
      while (MYSQL_ROW row = mysql_fetch_row(r)) client_seen[std::string(row[0], mysql_fetch_lengths(r)[0])] = true;
      mysql_free_result(r);
    }
    std::size_t same = 0;
    for (std::size_t i = 0; i < events.size(); ++i) {
      const EventView& e = events[i];
      const auto it = by_id.find(e.id);
      if (it != by_id.end() && it->second.received == e.received_us && it->second.at == e.at_us &&
          it->second.value == e.value && it->second.name == e.name &&
          (it->second.client ? *it->second.client == e.client_id : e.client_id.empty())) {
        ++same;  // stored now or before: told apart by the count below
      } else if (!e.client_id.empty() && client_seen.contains(std::string(e.client_id))) {
        ++report_.client_duplicates;
      } else {
        ++report_.conflicts;
        report_.conflict_records.append(chunk_[i]);
      }
    }
    const std::size_t stored = std::min<std::size_t>(affected, same);
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
    MYSQL* m = mysql_init(nullptr);
    if (m == nullptr) return Status::transient("mysql: out of memory");
    const auto seconds = [](std::int64_t ms) {
      return static_cast<unsigned int>(std::max<std::int64_t>(1, (ms + 999) / 1000));
    };
    const unsigned int connect_timeout = seconds(options_.connect_timeout_ms);
    const unsigned int io_timeout = seconds(tuning_.read_timeout_ms);
    const unsigned int protocol = url_.socket.empty() ? MYSQL_PROTOCOL_TCP : MYSQL_PROTOCOL_SOCKET;
    const my_bool no = 0;
    mysql_optionsv(m, MYSQL_OPT_CONNECT_TIMEOUT, &connect_timeout);
    mysql_optionsv(m, MYSQL_OPT_READ_TIMEOUT, &io_timeout);
    mysql_optionsv(m, MYSQL_OPT_WRITE_TIMEOUT, &io_timeout);
    mysql_optionsv(m, MYSQL_OPT_PROTOCOL, &protocol);
    mysql_optionsv(m, MYSQL_OPT_RECONNECT, &no);  // a silent reconnect would lose statements
    mysql_optionsv(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    // Strict: a value that does not fit is an error, never a silent truncation;
    // and CREATE TABLE fails rather than fall back to a non-transactional engine.
    mysql_optionsv(m, MYSQL_INIT_COMMAND, "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'");
    set_tls_options(m, url_);
    const char* host = url_.socket.empty() ? url_.host.c_str() : nullptr;
    const char* socket = url_.socket.empty() ? nullptr : url_.socket.c_str();
    Status s;
    if (mysql_real_connect(m, host, url_.user.c_str(), url_.password.c_str(), url_.database.c_str(), url_.port, socket,
                           0) == nullptr) {
      Failure f = Failure::make(mysql_errno(m), mysql_error(m), "connect to " + where_);
      if (tls_failure_is_permanent(url_, mysql_errno(m), mysql_error(m))) {
        f.fault = Fault::permanent;
        f.message += tls_settings(url_);
      }
      s = status_of(f);
    } else {
      s = check_tls_in_use(m, url_, where_);
    }
    if (!s.ok()) {
      mysql_close(m);
      std::lock_guard lock(backoff_mu_);
      backoff_ms_ = backoff_ms_ == 0 ? tuning_.reconnect_backoff_min_ms
                                     : std::min(backoff_ms_ * 2, tuning_.reconnect_backoff_max_ms);
      next_connect_ = Clock::now() + milliseconds(backoff_ms_);
      last_connect_error_ = s;
      return s;
    }
    std::uint64_t extended = 0;
    mariadb_get_infov(m, MARIADB_CONNECTION_EXTENDED_SERVER_CAPABILITIES, &extended);
    const bool bulk = (extended & (MARIADB_CLIENT_STMT_BULK_OPERATIONS >> 32)) != 0;
    {
      std::lock_guard lock(backoff_mu_);
      backoff_ms_ = 0;
      next_connect_ = {};
    }
    return std::unique_ptr<PooledConnection>(std::make_unique<MysqlConnection>(m, bulk));
  }

  const MysqlUrl url_;
  const SinkOptions options_;
  const MysqlSinkTuning tuning_;
  const std::string where_;  // the URL without password, for messages

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

Result<std::unique_ptr<Sink>> make_mysql_sink(std::string_view url, const SinkOptions& options,
                                              const MysqlSinkTuning& tuning) {
  Result<MysqlUrl> parsed = parse_mysql_url(url);
  if (!parsed.ok()) return parsed.status();
  if (Status s = validate_table_name(options.table); !s.ok()) return s;
  if (Status s = check_mysql_tls_files(*parsed); !s.ok()) return s;
  if (options.connect_timeout_ms <= 0) {
    return Status::invalid("mysql: connect timeout must be positive");
  }
  if (options.max_lifetime_ms < 0 || options.max_idle_time_ms < 0) {
    return Status::invalid("mysql: connection lifetime and idle time must not be negative");
  }
  static std::once_flag library_once;
  std::call_once(library_once, [] { mysql_library_init(0, nullptr, nullptr); });
  return std::unique_ptr<Sink>(std::make_unique<MysqlSink>(std::move(*parsed), options, tuning));
}

}  // namespace kiroku
