// sqlite_sink.cpp - batches as one transaction of one reused prepared INSERT.
#include "sink/sqlite/sqlite_sink.h"

#include "sink/sqlite/sqlite_memory.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <chrono>
#include <filesystem>
#include <mutex>

#include "common/event.h"
#include "sink/instance_lease_table.h"

namespace kiroku {
namespace {

class SqliteSink final : public Sink {
 public:
  SqliteSink(std::string path, SinkOptions options) : path_(std::move(path)), options_(std::move(options)) {}
  ~SqliteSink() override {
    sqlite3_finalize(insert_);
    sqlite3_finalize(by_id_);
    sqlite3_finalize(by_client_);
    sqlite3_finalize(begin_);
    sqlite3_finalize(commit_);
    sqlite3_finalize(rollback_);
    sqlite3_close_v2(db_);
    sqlite3_close_v2(ping_db_);
    sqlite3_close_v2(lease_db_);
  }

  Status open() override {
    std::error_code ec;
    const auto dir = std::filesystem::path(path_).parent_path();
    if (!dir.empty()) std::filesystem::create_directories(dir, ec);
    if (ec) return Status::permanent(fmt::format("cannot create directory {}: {}", dir.string(), ec.message()));
    if (sqlite3_open_v2(path_.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        nullptr) != SQLITE_OK)
      return Status::permanent(fmt::format("cannot open {}: {}", path_, errmsg(db_)));
    sqlite3_busy_timeout(db_, 5000);
    sqlite3_extended_result_codes(db_, 1);
    const std::string setup = fmt::format(
        "PRAGMA journal_mode=WAL;"
        "PRAGMA synchronous={};"
        "CREATE TABLE IF NOT EXISTS \"{}\" ("
        "id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL, at INTEGER NOT NULL,"
        "name TEXT NOT NULL, value INTEGER NOT NULL, client_id TEXT UNIQUE);"
        "CREATE TABLE IF NOT EXISTS {} (tbl TEXT NOT NULL, instance INTEGER NOT NULL,"
        "holder TEXT NOT NULL, renewed_at INTEGER NOT NULL, PRIMARY KEY(tbl, instance));",
        options_.durable_commits ? "FULL" : "NORMAL", options_.table, kInstancesTable);
    if (auto st = exec(setup); !st.ok()) return Status::permanent(st.message());
    const std::string insert = fmt::format(
        "INSERT INTO \"{}\"(id,received_at,at,name,value,client_id) VALUES(?,?,?,?,?,?) ON CONFLICT DO NOTHING",
        options_.table);
    const std::string by_id =
        fmt::format("SELECT received_at,at,name,value,client_id FROM \"{}\" WHERE id=?", options_.table);
    const std::string by_client = fmt::format("SELECT 1 FROM \"{}\" WHERE client_id=?", options_.table);
    if (!prepare(insert, &insert_) || !prepare("BEGIN IMMEDIATE", &begin_) || !prepare("COMMIT", &commit_) ||
        !prepare("ROLLBACK", &rollback_) || !prepare(by_id, &by_id_) || !prepare(by_client, &by_client_))
      return Status::permanent(fmt::format("{}: {}", path_, errmsg(db_)));
    // A second, read-only handle for ping() and max_id() from other threads.
    if (sqlite3_open_v2(path_.c_str(), &ping_db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK)
      return Status::permanent(fmt::format("cannot open {}: {}", path_, errmsg(ping_db_)));
    sqlite3_busy_timeout(ping_db_, 2000);
    if (sqlite3_open_v2(path_.c_str(), &lease_db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK)
      return Status::permanent(fmt::format("cannot open {}: {}", path_, errmsg(lease_db_)));
    sqlite3_busy_timeout(lease_db_, 5000);
    return {};
  }

  Status write(std::string_view records, std::size_t count) override {
    (void)count;
    report_.clear();
    refused_row_ = kNoRow;
    if (auto st = step_once(begin_); !st.ok()) return st;
    RecordReader reader(records);
    EventView e;
    for (std::size_t row = 0; reader.next(e); ++row) {
      sqlite3_bind_int64(insert_, 1, static_cast<sqlite3_int64>(e.id));
      sqlite3_bind_int64(insert_, 2, e.received_us);
      sqlite3_bind_int64(insert_, 3, e.at_us);
      sqlite3_bind_text(insert_, 4, e.name.data(), static_cast<int>(e.name.size()), SQLITE_STATIC);
      sqlite3_bind_int64(insert_, 5, e.value);
      if (e.client_id.empty()) sqlite3_bind_null(insert_, 6);
      else sqlite3_bind_text(insert_, 6, e.client_id.data(), static_cast<int>(e.client_id.size()), SQLITE_STATIC);
      if (auto st = step_once(insert_); !st.ok()) {
        if (st.kind() == ErrorKind::invalid) refused_row_ = row;
        step_once(rollback_);
        return st;
      }
      if (sqlite3_changes(db_) == 1) {
        ++report_.stored;
      } else if (auto st = account_not_stored(e, reader.last_record()); !st.ok()) {
        step_once(rollback_);
        return st;
      }
    }
    if (auto st = step_once(commit_); !st.ok()) {
      step_once(rollback_);
      return st;
    }
    return {};
  }

  const WriteReport& last_write() const override { return report_; }

  Result<unsigned> lease_instance(std::string_view holder, int wanted, std::int64_t ttl_ms) override {
    std::lock_guard lock(ping_mu_);
    if (!lease_db_) return Status::transient("not open");
    if (sqlite3_exec(lease_db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
      return Status::transient(fmt::format("{}: {}", path_, errmsg(lease_db_)));
    const auto now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    std::vector<LeaseRow> rows;
    sqlite3_stmt* st = nullptr;
    const std::string select = fmt::format("SELECT instance, holder, renewed_at FROM {} WHERE tbl=?", kInstancesTable);
    int rc = sqlite3_prepare_v2(lease_db_, select.c_str(), -1, &st, nullptr);
    if (rc == SQLITE_OK) {
      sqlite3_bind_text(st, 1, options_.table.data(), static_cast<int>(options_.table.size()), SQLITE_STATIC);
      while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const auto* h = reinterpret_cast<const char*>(sqlite3_column_text(st, 1));
        rows.push_back({static_cast<unsigned>(sqlite3_column_int64(st, 0)), h ? h : "", sqlite3_column_int64(st, 2)});
      }
    }
    sqlite3_finalize(st);
    Result<unsigned> chosen = Status::transient("");
    if (rc != SQLITE_DONE) {
      chosen = Status::transient(fmt::format("{}: {}", path_, errmsg(lease_db_)));
    } else {
      chosen = choose_instance(rows, holder, wanted, now_ms, ttl_ms);
    }
    if (chosen.ok()) {
      const std::string upsert =
          fmt::format("INSERT OR REPLACE INTO {}(tbl,instance,holder,renewed_at) VALUES(?,?,?,?)", kInstancesTable);
      st = nullptr;
      rc = sqlite3_prepare_v2(lease_db_, upsert.c_str(), -1, &st, nullptr);
      if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, options_.table.data(), static_cast<int>(options_.table.size()), SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, *chosen);
        sqlite3_bind_text(st, 3, holder.data(), static_cast<int>(holder.size()), SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, now_ms);
        rc = sqlite3_step(st);
      }
      sqlite3_finalize(st);
      if (rc != SQLITE_DONE) chosen = Status::transient(fmt::format("{}: {}", path_, errmsg(lease_db_)));
    }
    if (chosen.ok() && sqlite3_exec(lease_db_, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) return chosen;
    if (chosen.ok()) chosen = Status::transient(fmt::format("{}: {}", path_, errmsg(lease_db_)));
    sqlite3_exec(lease_db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return chosen;
  }

  Status release_instance(unsigned instance, std::string_view holder) override {
    std::lock_guard lock(ping_mu_);
    if (!lease_db_) return Status::transient("not open");
    const std::string sql =
        fmt::format("UPDATE {} SET renewed_at=0 WHERE tbl=? AND instance=? AND holder=?", kInstancesTable);
    sqlite3_stmt* st = nullptr;
    int rc = sqlite3_prepare_v2(lease_db_, sql.c_str(), -1, &st, nullptr);
    if (rc == SQLITE_OK) {
      sqlite3_bind_text(st, 1, options_.table.data(), static_cast<int>(options_.table.size()), SQLITE_STATIC);
      sqlite3_bind_int64(st, 2, instance);
      sqlite3_bind_text(st, 3, holder.data(), static_cast<int>(holder.size()), SQLITE_STATIC);
      rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return Status::transient(fmt::format("{}: {}", path_, errmsg(lease_db_)));
    return {};
  }

  Result<std::uint64_t> max_id() override {
    std::lock_guard lock(ping_mu_);
    sqlite3_stmt* st = nullptr;
    // Ids are stored as SQLite's signed 64 bits: those of 2^63 and above
    // read as negative, and are the largest when there are any.
    const std::string sql = fmt::format(
        "SELECT COALESCE((SELECT MAX(id) FROM \"{0}\" WHERE id < 0), (SELECT MAX(id) FROM \"{0}\"))", options_.table);
    if (sqlite3_prepare_v2(ping_db_, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
      return Status::transient(errmsg(ping_db_));
    std::uint64_t id = 0;
    const int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) id = static_cast<std::uint64_t>(sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Status::transient(errmsg(ping_db_));
    return id;
  }

  Status ping() override {
    std::lock_guard lock(ping_mu_);
    if (!ping_db_) return Status::transient("not open");
    const int rc = sqlite3_exec(ping_db_, "SELECT 1", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return Status::transient(errmsg(ping_db_));
    return {};
  }

  PoolStats stats() const override {
    PoolStats s;
    s.max_open = s.open = 1;
    s.idle = 1;
    return s;
  }

  std::string_view kind() const override { return "sqlite"; }
  std::string_view rejection_reason() const override { return rejection_; }
  std::size_t refused_row() const override { return refused_row_; }

 private:
  static std::string errmsg(sqlite3* db) { return db ? sqlite3_errmsg(db) : "out of memory"; }

  bool prepare(const std::string& sql, sqlite3_stmt** st) {
    return sqlite3_prepare_v3(db_, sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, st, nullptr) == SQLITE_OK;
  }

  Status exec(const std::string& sql) {
    char* msg = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &msg) != SQLITE_OK) {
      Status st = Status::permanent(fmt::format("{}: {}", path_, msg ? msg : "error"));
      sqlite3_free(msg);
      return st;
    }
    return {};
  }

  // An INSERT OR IGNORE that stored nothing: a replay (the row under the id is
  // this event), a client id stored before (first wins), or a conflict.
  Status account_not_stored(const EventView& e, std::string_view record) {
    sqlite3_bind_int64(by_id_, 1, static_cast<sqlite3_int64>(e.id));
    int rc = sqlite3_step(by_id_);
    bool same = false;
    if (rc == SQLITE_ROW) {
      const auto* name = reinterpret_cast<const char*>(sqlite3_column_blob(by_id_, 2));
      const auto name_len = static_cast<std::size_t>(sqlite3_column_bytes(by_id_, 2));
      const bool client_null = sqlite3_column_type(by_id_, 4) == SQLITE_NULL;
      const auto* client = reinterpret_cast<const char*>(sqlite3_column_blob(by_id_, 4));
      const auto client_len = static_cast<std::size_t>(sqlite3_column_bytes(by_id_, 4));
      same = sqlite3_column_int64(by_id_, 0) == e.received_us && sqlite3_column_int64(by_id_, 1) == e.at_us &&
             std::string_view(name ? name : "", name_len) == e.name && sqlite3_column_int64(by_id_, 3) == e.value &&
             (client_null ? e.client_id.empty() : std::string_view(client ? client : "", client_len) == e.client_id);
    }
    sqlite3_reset(by_id_);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return Status::transient(fmt::format("{}: {}", path_, errmsg(db_)));
    if (same) {
      ++report_.replayed;
      return {};
    }
    if (!e.client_id.empty()) {
      sqlite3_bind_text(by_client_, 1, e.client_id.data(), static_cast<int>(e.client_id.size()), SQLITE_STATIC);
      rc = sqlite3_step(by_client_);
      sqlite3_reset(by_client_);
      if (rc == SQLITE_ROW) {
        ++report_.client_duplicates;
        return {};
      }
      if (rc != SQLITE_DONE) return Status::transient(fmt::format("{}: {}", path_, errmsg(db_)));
    }
    ++report_.conflicts;
    report_.conflict_records.append(record);
    return {};
  }

  // Runs a statement that returns no rows and resets it.
  Status step_once(sqlite3_stmt* st) {
    const int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return {};
    const std::string msg = fmt::format("{}: {}", path_, errmsg(db_));
    if (const char* reason = rejection_of(rc)) {
      rejection_ = reason;
      return Status::invalid(msg);
    }
    switch (rc & 0xff) {
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
      case SQLITE_IOERR:
      case SQLITE_FULL: return Status::transient(msg);
      default: return Status::permanent(msg);
    }
  }

  // The result codes that mean the row's values are at fault (a constraint of
  // the table, a value too big or of the wrong type), and their class.
  static const char* rejection_of(int rc) {
    switch (rc) {
      case SQLITE_CONSTRAINT_CHECK:
      case SQLITE_CONSTRAINT_TRIGGER:
      case SQLITE_CONSTRAINT_UNIQUE:  // a unique index of the user's own (id conflicts do nothing)
      case SQLITE_CONSTRAINT: return "constraint";
      case SQLITE_CONSTRAINT_NOTNULL: return "null";
      case SQLITE_CONSTRAINT_FOREIGNKEY: return "foreign_key";
      case SQLITE_CONSTRAINT_DATATYPE:
      case SQLITE_MISMATCH: return "incorrect_value";
      case SQLITE_TOOBIG: return "data_too_long";
      default: return nullptr;
    }
  }

  std::string path_;
  SinkOptions options_;
  sqlite3* db_ = nullptr;
  sqlite3_stmt* insert_ = nullptr;
  sqlite3_stmt* begin_ = nullptr;
  sqlite3_stmt* commit_ = nullptr;
  sqlite3_stmt* rollback_ = nullptr;
  sqlite3_stmt* by_id_ = nullptr;
  sqlite3_stmt* by_client_ = nullptr;
  WriteReport report_;
  const char* rejection_ = "other";   // the class of the last refused row (writer thread)
  std::size_t refused_row_ = kNoRow;  // the row that refusal was about (writer thread)
  std::mutex ping_mu_;
  sqlite3* ping_db_ = nullptr;
  sqlite3* lease_db_ = nullptr;  // lease_instance(), release_instance(): the lease thread
};

}  // namespace

Result<std::unique_ptr<Sink>> make_sqlite_sink(std::string_view url, const SinkOptions& options) {
  constexpr std::string_view scheme = "sqlite://";
  if (!url.starts_with(scheme)) return Status::invalid("must start with sqlite://");
  std::string_view path = url.substr(scheme.size());
  if (const auto q = path.find('?'); q != std::string_view::npos) path = path.substr(0, q);
  if (path.empty()) return Status::invalid("sqlite:// needs a file path, e.g. sqlite:///var/lib/kiroku/events.db");
  // Before SQLite's first use; if it was used already (a test), its own malloc stays.
  if (Status st = install_sqlite_memory(); !st.ok()) spdlog::debug("{}", st.message());
  return std::unique_ptr<Sink>(new SqliteSink(std::string(path), options));
}

}  // namespace kiroku
