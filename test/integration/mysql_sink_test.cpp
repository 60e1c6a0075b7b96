// mysql_sink_test.cpp - the MySQL sink and its connection pool against a real MariaDB.
//
// Needs the server that scripts/with-mariadb.sh starts (KIROKU_TEST_MYSQL_URL,
// KIROKU_TEST_MYSQL_ADMIN, KIROKU_TEST_MYSQL_CTL); without it the database
// tests fail and say so. The MysqlPoolTest cases use fake connections and run
// anywhere.
//
// MysqlSinkOutageTest stops and restarts the shared server: run it on its own
// (not in parallel with other tests that use the same server).
#include "sink/mysql/mysql_sink.h"

#include <gtest/gtest.h>
#include <mysql.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/event.h"
#include "sink/connection_pool.h"
#include "sink/mysql/mysql_url.h"

namespace kiroku {
namespace {

using namespace std::chrono_literals;

constexpr const char* kRunUnder =
    "KIROKU_TEST_MYSQL_URL is not set: run the integration tests under scripts/with-mariadb.sh, "
    "e.g. scripts/with-mariadb.sh ctest --test-dir build -L integration";

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// ---- Expected rows and batches ----------------------------------------------------------------

struct Row {
  std::uint64_t id = 0;
  std::int64_t received_us = 0;
  std::int64_t at_us = 0;
  std::string name;
  std::int64_t value = 0;
  std::optional<std::string> client_id;

  bool operator==(const Row&) const = default;
};

std::string repeat(std::string_view s, std::size_t n) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) out += s;
  return out;
}

// Event i of a varied set: multibyte and 255-byte names, control characters
// and NUL, extreme values, ids above 2^63, client ids absent or up to 255 bytes.
Row sample_row(std::uint64_t i) {
  Row r;
  r.id = i % 4 == 3 ? std::numeric_limits<std::uint64_t>::max() - i : 1'000'000 + i;
  r.received_us = 1'700'000'000'000'000 + static_cast<std::int64_t>(i);
  r.at_us = i % 9 == 0 ? -86'400'000'000 - static_cast<std::int64_t>(i) : r.received_us - 5;
  switch (i % 8) {
    case 0: r.name = "hoge"; break;
    case 1: r.name = "計測.応答時間"; break;
    case 2: r.name = repeat("名", 85); break;         // 255 bytes of 3-byte characters
    case 3: r.name = repeat("😀", 63) + "abc"; break;  // 255 bytes with 4-byte characters
    case 4: r.name = "tab\tnew\nline\\back'quote\"pct%"; break;
    case 5: r.name = std::string("nul\0inside", 10); break;
    case 6: r.name = "a"; break;
    default: r.name = "name-" + std::to_string(i); break;
  }
  switch (i % 5) {
    case 0: r.value = std::numeric_limits<std::int64_t>::min(); break;
    case 1: r.value = std::numeric_limits<std::int64_t>::max(); break;
    case 2: r.value = -static_cast<std::int64_t>(i); break;
    case 3: r.value = 0; break;
    default: r.value = static_cast<std::int64_t>(i) * 1000; break;
  }
  if (i % 3 == 1) r.client_id = "client-" + std::to_string(i);
  if (i % 21 == 2) {  // 255 bytes, unique (client ids are a unique key)
    char tail[8];
    std::snprintf(tail, sizeof tail, "%07llu", static_cast<unsigned long long>(i % 10'000'000));
    r.client_id = repeat("ç", 124) + tail;
  }
  return r;
}

EventView view_of(const Row& r) {
  EventView e;
  e.id = r.id;
  e.received_us = r.received_us;
  e.at_us = r.at_us;
  e.value = r.value;
  e.name = r.name;
  e.client_id = r.client_id ? std::string_view(*r.client_id) : std::string_view();
  return e;
}

EventBuffer batch_of(const std::vector<Row>& rows, std::size_t from, std::size_t to) {
  EventBuffer b;
  for (std::size_t i = from; i < to; ++i) b.append(view_of(rows[i]));
  return b;
}

// ---- An administrator's connection (root over the socket) ---------------------------------------

class Admin {
 public:
  Admin() {
    Result<MysqlUrl> url = parse_mysql_url(env("KIROKU_TEST_MYSQL_ADMIN"));
    if (!url.ok()) {
      error_ = "KIROKU_TEST_MYSQL_ADMIN: " + url.status().message();
      return;
    }
    m_ = mysql_init(nullptr);
    const unsigned int protocol = MYSQL_PROTOCOL_SOCKET;
    mysql_optionsv(m_, MYSQL_OPT_PROTOCOL, &protocol);
    mysql_optionsv(m_, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (!mysql_real_connect(m_, nullptr, url->user.c_str(), url->password.c_str(), "kiroku_test", 0,
                            url->socket.c_str(), 0)) {
      error_ = std::string("admin connect: ") + mysql_error(m_);
    }
  }
  ~Admin() {
    if (m_) mysql_close(m_);
  }
  const std::string& error() const { return error_; }

  void exec(const std::string& sql) {
    ASSERT_EQ(mysql_real_query(m_, sql.data(), sql.size()), 0) << sql << ": " << mysql_error(m_);
    if (MYSQL_RES* res = mysql_store_result(m_)) mysql_free_result(res);
  }

  // Every row of a query; NULL as nullopt.
  std::vector<std::vector<std::optional<std::string>>> rows(const std::string& sql) {
    std::vector<std::vector<std::optional<std::string>>> out;
    if (mysql_real_query(m_, sql.data(), sql.size()) != 0) {
      ADD_FAILURE() << sql << ": " << mysql_error(m_);
      return out;
    }
    MYSQL_RES* res = mysql_store_result(m_);
    if (res == nullptr) return out;
    const unsigned int fields = mysql_num_fields(res);
    while (MYSQL_ROW row = mysql_fetch_row(res)) {
      const unsigned long* lengths = mysql_fetch_lengths(res);
      auto& r = out.emplace_back();
      for (unsigned int f = 0; f < fields; ++f) {
        if (row[f] == nullptr) {
          r.emplace_back(std::nullopt);
        } else {
          r.emplace_back(std::string(row[f], lengths[f]));
        }
      }
    }
    mysql_free_result(res);
    return out;
  }

  std::int64_t count(const std::string& table) {
    auto r = rows("SELECT COUNT(*) FROM `" + table + "`");
    return r.empty() ? -1 : std::stoll(*r[0][0]);
  }

  std::vector<Row> stored(const std::string& table) {
    std::vector<Row> out;
    for (auto& r : rows("SELECT id, received_at, at, name, value, client_id FROM `" + table + "` ORDER BY id")) {
      Row x;
      x.id = std::stoull(*r[0]);
      x.received_us = std::stoll(*r[1]);
      x.at_us = std::stoll(*r[2]);
      x.name = *r[3];
      x.value = std::stoll(*r[4]);
      x.client_id = r[5];
      out.push_back(std::move(x));
    }
    return out;
  }

 private:
  MYSQL* m_ = nullptr;
  std::string error_;
};

std::string with_credentials(const MysqlUrl& u, const std::string& user, const std::string& pass,
                             const std::string& db) {
  return "mysql://" + user + ":" + pass + "@" + u.host + ":" + std::to_string(u.port) + "/" + db;
}

// ---- Fixture ------------------------------------------------------------------------------------

class MysqlSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = env("KIROKU_TEST_MYSQL_URL");
    if (url_.empty()) GTEST_FAIL() << kRunUnder;
    Result<MysqlUrl> parsed = parse_mysql_url(url_);
    ASSERT_TRUE(parsed.ok()) << parsed.status().message();
    parsed_ = *parsed;
    admin_ = std::make_unique<Admin>();
    ASSERT_EQ(admin_->error(), "");
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    // The pid first: tests of parallel processes never share a table.
    table_ = "t" + std::to_string(::getpid()) + "_" + std::string(info->name());
    for (char& c : table_) {
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    }
    table_ = table_.substr(0, 56);
    admin_->exec("DROP TABLE IF EXISTS `" + table_ + "`");
  }
  void TearDown() override {
    if (admin_ && admin_->error().empty()) admin_->exec("DROP TABLE IF EXISTS `" + table_ + "`");
  }

  std::unique_ptr<Sink> make(SinkOptions o = {}, MysqlSinkTuning t = {}, std::string url = "") {
    o.table = table_;
    Result<std::unique_ptr<Sink>> s = make_mysql_sink(url.empty() ? url_ : url, o, t);
    EXPECT_TRUE(s.ok()) << s.status().message();
    return s.ok() ? std::move(*s) : nullptr;
  }

  std::string url_;
  MysqlUrl parsed_;
  std::unique_ptr<Admin> admin_;
  std::string table_;
};

class MysqlSinkMethodTest : public MysqlSinkTest, public ::testing::WithParamInterface<MysqlInsertMethod> {
 protected:
  std::unique_ptr<Sink> make_with_method(SinkOptions o = {}) {
    MysqlSinkTuning t;
    t.method = GetParam();
    return make(o, t);
  }
};

// ---- Sink tests ---------------------------------------------------------------------------------

TEST_F(MysqlSinkTest, OpenCreatesTheTable) {
  auto sink = make();
  ASSERT_TRUE(sink);
  EXPECT_EQ(sink->kind(), "mysql");
  ASSERT_TRUE(sink->open().ok());
  auto columns = admin_->rows(
      "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLLATION_NAME FROM information_schema.COLUMNS"
      " WHERE TABLE_SCHEMA = 'kiroku_test' AND TABLE_NAME = '" +
      table_ + "' ORDER BY ORDINAL_POSITION");
  using C = std::vector<std::optional<std::string>>;
  const std::vector<C> expected = {
      {"id", "bigint(20) unsigned", "NO", std::nullopt}, {"received_at", "bigint(20)", "NO", std::nullopt},
      {"at", "bigint(20)", "NO", std::nullopt},          {"name", "varchar(255)", "NO", "utf8mb4_bin"},
      {"value", "bigint(20)", "NO", std::nullopt},       {"client_id", "varchar(255)", "YES", "utf8mb4_bin"},
  };
  EXPECT_EQ(columns, expected);
  auto table = admin_->rows(
      "SELECT ENGINE, TABLE_COLLATION FROM information_schema.TABLES"
      " WHERE TABLE_SCHEMA = 'kiroku_test' AND TABLE_NAME = '" +
      table_ + "'");
  ASSERT_EQ(table.size(), 1u);
  EXPECT_EQ(table[0], (C{"InnoDB", "utf8mb4_bin"}));
  auto key = admin_->rows("SHOW INDEX FROM `" + table_ + "` WHERE Key_name = 'PRIMARY'");
  ASSERT_EQ(key.size(), 1u);
  EXPECT_EQ(*key[0][4], "id");
  // A second open finds the table and is fine with it.
  EXPECT_TRUE(sink->open().ok());
  auto again = make();
  EXPECT_TRUE(again->open().ok());
  Result<std::uint64_t> id = again->max_id();
  ASSERT_TRUE(id.ok()) << id.status().message();
  EXPECT_EQ(*id, 0u);
  EXPECT_TRUE(again->ping().ok());
}

TEST_P(MysqlSinkMethodTest, WritesTenThousandEventsAndReadsThemBackExactly) {
  auto sink = make_with_method();
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 10'000; ++i) rows.push_back(sample_row(i));
  const std::size_t sizes[] = {1, 7, 100, 999, 1000, 1001, 2500, 64, 513};
  std::size_t at = 0;
  for (std::size_t k = 0; at < rows.size(); ++k) {
    const std::size_t n = std::min(sizes[k % std::size(sizes)], rows.size() - at);
    EventBuffer b = batch_of(rows, at, at + n);
    const Status s = sink->write(b.view(), b.count);
    ASSERT_TRUE(s.ok()) << s.message();
    at += n;
  }
  std::vector<Row> expected = rows;
  std::sort(expected.begin(), expected.end(), [](const Row& a, const Row& b) { return a.id < b.id; });
  const std::vector<Row> stored = admin_->stored(table_);
  ASSERT_EQ(stored.size(), expected.size());
  for (std::size_t i = 0; i < stored.size(); ++i) {
    ASSERT_EQ(stored[i], expected[i]) << "row " << i << " id " << expected[i].id;
  }
  Result<std::uint64_t> max = sink->max_id();
  ASSERT_TRUE(max.ok()) << max.status().message();
  EXPECT_EQ(*max, expected.back().id);
  const PoolStats st = sink->stats();
  EXPECT_GE(st.open, 1);
  EXPECT_EQ(st.in_use, 0);
}

// Every record of a write is accounted for: stored, a replay (the same row
// under its id), a client id stored before (first wins), or a conflict (a
// different row under its id), which comes back to the caller.
TEST_P(MysqlSinkMethodTest, ReportsReplaysClientDuplicatesAndConflicts) {
  auto sink = make_with_method();
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 40; ++i) {
    Row r = sample_row(i);
    r.client_id = "k-" + std::to_string(i);
    rows.push_back(r);
  }
  EventBuffer first = batch_of(rows, 0, 30);
  ASSERT_TRUE(sink->write(first.view(), first.count).ok());
  EXPECT_EQ(sink->last_write().stored, 30u);
  // 10 replayed, 10 new, 5 other events with a stored client id, 3 clashes.
  EventBuffer second = batch_of(rows, 20, 40);
  std::vector<Row> extra;
  for (std::uint64_t i = 0; i < 5; ++i) {
    Row r = sample_row(100 + i);
    r.id = 5'000'000 + i;
    r.client_id = "k-" + std::to_string(i);
    extra.push_back(r);
  }
  for (std::uint64_t i = 0; i < 3; ++i) {
    Row r = rows[i];  // same id, different event
    r.value ^= 1;     // a different value, without overflow at the extremes
    r.client_id = "other-" + std::to_string(i);
    extra.push_back(r);
  }
  for (const Row& r : extra) second.append(view_of(r));
  const Status s = sink->write(second.view(), second.count);
  ASSERT_TRUE(s.ok()) << s.message();
  const WriteReport& rep = sink->last_write();
  EXPECT_EQ(rep.stored, 10u);
  EXPECT_EQ(rep.replayed, 10u);
  EXPECT_EQ(rep.client_duplicates, 5u);
  EXPECT_EQ(rep.conflicts, 3u);
  RecordReader back(rep.conflict_records);
  EventView e;
  std::set<std::uint64_t> conflict_ids;
  while (back.next(e)) conflict_ids.insert(e.id);
  EXPECT_EQ(conflict_ids, (std::set<std::uint64_t>{rows[0].id, rows[1].id, rows[2].id}));
  EXPECT_EQ(admin_->count(table_), 40);
}

// Client ids are a unique key: the same id twice is one row, the first.
TEST_P(MysqlSinkMethodTest, ClientIdTwiceIsOneRowFirstWins) {
  auto sink = make_with_method();
  ASSERT_TRUE(sink->open().ok());
  Row a = sample_row(7);
  a.client_id = "req-1";
  Row b = sample_row(8);
  b.client_id = "req-1";
  EventBuffer one = batch_of({a, b}, 0, 2);
  ASSERT_TRUE(sink->write(one.view(), one.count).ok());
  EventBuffer two = batch_of({b}, 0, 1);
  ASSERT_TRUE(sink->write(two.view(), two.count).ok());
  const std::vector<Row> stored = admin_->stored(table_);
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0], a);
}

TEST_P(MysqlSinkMethodTest, SameBatchTwiceStoresEachRowOnce) {
  auto sink = make_with_method();
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 3000; ++i) rows.push_back(sample_row(i));
  EventBuffer first = batch_of(rows, 0, 2000);
  ASSERT_TRUE(sink->write(first.view(), first.count).ok());
  ASSERT_TRUE(sink->write(first.view(), first.count).ok());  // a replay
  EXPECT_EQ(admin_->count(table_), 2000);
  // Overlapping the first batch, with a duplicate inside the batch itself.
  EventBuffer second = batch_of(rows, 1500, 3000);
  second.append(view_of(rows[2999]));
  second.append(view_of(rows[10]));
  const Status s = sink->write(second.view(), second.count);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(admin_->count(table_), 3000);
  std::vector<Row> expected = rows;
  std::sort(expected.begin(), expected.end(), [](const Row& a, const Row& b) { return a.id < b.id; });
  EXPECT_EQ(admin_->stored(table_), expected);
}

TEST_P(MysqlSinkMethodTest, LargeBatchSpanningManyStatementsIsOneTransaction) {
  auto sink = make_with_method();
  ASSERT_TRUE(sink->open().ok());
  // 25,000 rows of 255-byte names and client ids: about 14 MB, several
  // executes (or 25 statements) in one transaction.
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 25'000; ++i) {
    Row r = sample_row(i);
    r.name = repeat("名", 85);
    char tail[8];  // client ids are a unique key: 255 bytes, each its own
    std::snprintf(tail, sizeof tail, "%07llu", static_cast<unsigned long long>(i));
    r.client_id = repeat("x", 248) + tail;
    rows.push_back(std::move(r));
  }
  rows[24'000].name = "poison";
  admin_->exec("CREATE TRIGGER `" + table_ + "_p` BEFORE INSERT ON `" + table_ +
               "` FOR EACH ROW IF NEW.name = 'poison' THEN"
               " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poisoned row'; END IF");
  EventBuffer b = batch_of(rows, 0, rows.size());
  Status s = sink->write(b.view(), b.count);
  // A trigger's SIGNAL (1644) refuses a row for its values: invalid (the data
  // is at fault, the batch writer isolates the row).
  EXPECT_EQ(s.kind(), ErrorKind::invalid) << s.message();
  EXPECT_EQ(sink->rejection_reason(), "constraint");
  EXPECT_NE(s.message().find("poisoned row"), std::string::npos) << s.message();
  EXPECT_EQ(admin_->count(table_), 0) << "a failed batch must leave nothing behind";
  // The same in a batch that fits one statement.
  EventBuffer small = batch_of(rows, 23'950, 24'050);
  EXPECT_FALSE(sink->write(small.view(), small.count).ok());
  EXPECT_EQ(admin_->count(table_), 0);

  admin_->exec("DROP TRIGGER `" + table_ + "_p`");
  s = sink->write(b.view(), b.count);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(admin_->count(table_), 25'000);
  auto poison = admin_->rows("SELECT client_id FROM `" + table_ + "` WHERE name = 'poison'");
  ASSERT_EQ(poison.size(), 1u);
  EXPECT_EQ(*poison[0][0], repeat("x", 248) + "0024000");
}

// A refused row's error names it ("at row N"): the sink says which record
// that was, in whichever statement or execute of the batch it fell.
TEST_P(MysqlSinkMethodTest, TheRefusedRowIsNamed) {
  admin_->exec("CREATE TABLE `" + table_ +
               "` (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, received_at BIGINT NOT NULL, at BIGINT NOT NULL,"
               " name VARCHAR(5) NOT NULL, value BIGINT NOT NULL, client_id VARCHAR(255) NULL)");
  auto sink = make_with_method();
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 2500; ++i) {
    Row r = sample_row(i);
    r.id = 1'000'000 + i;
    r.name = "ok";
    r.client_id.reset();
    rows.push_back(std::move(r));
  }
  for (const std::size_t bad :
       {std::size_t{0}, std::size_t{3}, std::size_t{999}, std::size_t{1000}, std::size_t{1700}, std::size_t{2499}}) {
    std::vector<Row> batch = rows;
    batch[bad].name = "toolongname";
    batch[std::min<std::size_t>(bad + 10, 2499)].name = "second";  // only the first is named
    EventBuffer b = batch_of(batch, 0, batch.size());
    const Status s = sink->write(b.view(), b.count);
    EXPECT_EQ(s.kind(), ErrorKind::invalid) << s.message();
    EXPECT_EQ(sink->rejection_reason(), "data_too_long");
    EXPECT_EQ(sink->refused_row(), bad) << s.message();
    EXPECT_EQ(admin_->count(table_), 0);
  }
  EventBuffer good = batch_of(rows, 0, 10);
  ASSERT_TRUE(sink->write(good.view(), good.count).ok());
  EXPECT_EQ(sink->refused_row(), Sink::kNoRow);
}

// automatic is array binding on MariaDB; multi_row is what MySQL servers get.
INSTANTIATE_TEST_SUITE_P(Methods, MysqlSinkMethodTest,
                         ::testing::Values(MysqlInsertMethod::automatic, MysqlInsertMethod::array_binding,
                                           MysqlInsertMethod::multi_row),
                         [](const auto& p) {
                           switch (p.param) {
                             case MysqlInsertMethod::automatic: return "automatic";
                             case MysqlInsertMethod::array_binding: return "array_binding";
                             case MysqlInsertMethod::multi_row: break;
                           }
                           return "multi_row";
                         });

TEST_F(MysqlSinkTest, WorksOverTheUnixSocket) {
  const std::string socket = env("KIROKU_TEST_MYSQL_SOCKET");
  ASSERT_FALSE(socket.empty());
  auto sink = make({}, {}, "mysql://kiroku:kiroku@/kiroku_test?socket=" + socket);
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows = {sample_row(1), sample_row(2)};
  EventBuffer b = batch_of(rows, 0, 2);
  ASSERT_TRUE(sink->write(b.view(), b.count).ok());
  EXPECT_EQ(admin_->count(table_), 2);
  EXPECT_TRUE(sink->ping().ok());
}

TEST_F(MysqlSinkTest, BadPasswordIsPermanentWithTheServersMessage) {
  const std::string secret = "not-the-password-7f3a";
  auto sink = make({}, {}, with_credentials(parsed_, "kiroku", secret, "kiroku_test"));
  const Status s = sink->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("Access denied for user 'kiroku'"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("(1045)"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find(secret), std::string::npos) << "the password leaked: " << s.message();
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
  // Within the backoff the same answer comes back at once, without a new attempt.
  const auto start = std::chrono::steady_clock::now();
  const Status again = sink->ping();
  EXPECT_EQ(again.kind(), ErrorKind::permanent);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  EXPECT_EQ(sink->stats().open, 0);
}

TEST_F(MysqlSinkTest, UnknownDatabaseIsPermanent) {
  // As root (socket), the server says "Unknown database" (1049); as a user
  // without rights on it, "Access denied ... to database" (1044). Both are permanent.
  const std::string socket = env("KIROKU_TEST_MYSQL_SOCKET");
  auto as_root = make({}, {}, "mysql://root@/kiroku_no_such_db?socket=" + socket);
  Status s = as_root->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("Unknown database 'kiroku_no_such_db'"), std::string::npos) << s.message();
  auto as_user = make({}, {}, with_credentials(parsed_, "kiroku", "kiroku", "kiroku_no_such_db"));
  s = as_user->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("(1044)"), std::string::npos) << s.message();
}

TEST_F(MysqlSinkTest, MissingPrivilegesArePermanent) {
  admin_->exec("CREATE USER IF NOT EXISTS 'kiroku_ro'@'127.0.0.1' IDENTIFIED BY 'ro'");
  admin_->exec("GRANT SELECT ON kiroku_test.* TO 'kiroku_ro'@'127.0.0.1'");
  const std::string ro = with_credentials(parsed_, "kiroku_ro", "ro", "kiroku_test");
  // No CREATE privilege for a missing table.
  auto sink = make({}, {}, ro);
  Status s = sink->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("CREATE command denied"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("(1142)"), std::string::npos) << s.message();
  // The table exists but INSERT is not granted: open() finds out at once.
  ASSERT_TRUE(make()->open().ok());
  sink = make({}, {}, ro);
  s = sink->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("INSERT, UPDATE command denied"), std::string::npos) << s.message();
  std::vector<Row> rows = {sample_row(1)};
  EventBuffer b = batch_of(rows, 0, 1);
  s = sink->write(b.view(), b.count);
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  admin_->exec("DROP USER 'kiroku_ro'@'127.0.0.1'");
}

// Instance numbers leased at the same moment by many instances are distinct;
// a live holder's number is refused to another; a released or expired one is free.
TEST_F(MysqlSinkTest, InstanceLeasesAreDistinctAndExclusive) {
  ASSERT_TRUE(make()->open().ok());
  constexpr int kHolders = 8;
  std::vector<std::unique_ptr<Sink>> sinks;
  for (int i = 0; i < kHolders; ++i) sinks.push_back(make());
  std::vector<int> got(kHolders, -1);
  std::vector<std::thread> threads;
  for (int i = 0; i < kHolders; ++i)
    threads.emplace_back([&, i] {
      Result<unsigned> r = sinks[i]->lease_instance("holder" + std::to_string(i), -1, 60'000);
      if (r.ok()) got[i] = static_cast<int>(*r);
      else ADD_FAILURE() << r.status().message();
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(std::set<int>(got.begin(), got.end()).size(), static_cast<std::size_t>(kHolders));
  // The holder gets its own number back; another is refused it while it lives.
  Result<unsigned> again = sinks[0]->lease_instance("holder0", -1, 60'000);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(static_cast<int>(*again), got[0]);
  Result<unsigned> clash = sinks[1]->lease_instance("intruder", got[0], 60'000);
  EXPECT_EQ(clash.status().kind(), ErrorKind::full) << clash.status().message();
  EXPECT_NE(clash.status().message().find("held by another live instance"), std::string::npos);
  // Released: free for anyone.
  ASSERT_TRUE(sinks[0]->release_instance(static_cast<unsigned>(got[0]), "holder0").ok());
  Result<unsigned> taken = sinks[1]->lease_instance("intruder", got[0], 60'000);
  EXPECT_TRUE(taken.ok()) << taken.status().message();
  // Not renewed within the lease time: free as well.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Result<unsigned> expired = sinks[2]->lease_instance("late", got[3], 10);
  EXPECT_TRUE(expired.ok()) << expired.status().message();
  admin_->exec("DELETE FROM kiroku_instances WHERE tbl = '" + table_ + "'");
}

TEST_F(MysqlSinkTest, ExistingTableWithoutIdPrimaryKeyIsPermanent) {
  admin_->exec("CREATE TABLE `" + table_ +
               "` (id BIGINT UNSIGNED NOT NULL, received_at BIGINT NOT NULL, at BIGINT NOT NULL,"
               " name VARCHAR(255) NOT NULL, value BIGINT NOT NULL, client_id VARCHAR(255) NULL)");
  auto sink = make();
  const Status s = sink->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("primary key"), std::string::npos) << s.message();
}

TEST_F(MysqlSinkTest, KilledConnectionsAreReplacedWithoutAnError) {
  // A user of its own, so that killing its sessions disturbs no other test.
  admin_->exec("CREATE USER IF NOT EXISTS 'kiroku_kill'@'127.0.0.1' IDENTIFIED BY 'k'");
  admin_->exec("GRANT ALL ON kiroku_test.* TO 'kiroku_kill'@'127.0.0.1'");
  SinkOptions o;
  o.max_idle = 4;
  auto sink = make(o, {}, with_credentials(parsed_, "kiroku_kill", "k", "kiroku_test"));
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 200; ++i) rows.push_back(sample_row(i));
  EventBuffer b1 = batch_of(rows, 0, 100);
  ASSERT_TRUE(sink->write(b1.view(), b1.count).ok());
  for (auto& r : admin_->rows("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'kiroku_kill'")) {
    admin_->exec("KILL CONNECTION " + *r[0]);
  }
  EventBuffer b2 = batch_of(rows, 100, 200);
  const Status s = sink->write(b2.view(), b2.count);
  EXPECT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(admin_->count(table_), 200);
  EXPECT_TRUE(sink->ping().ok());
  admin_->exec("DROP USER 'kiroku_kill'@'127.0.0.1'");
}

TEST_F(MysqlSinkTest, PoolStatsCountWaitsWhenMaxOpenIsExceeded) {
  SinkOptions o;
  o.max_open = 1;
  o.max_idle = 1;
  auto sink = make(o);
  ASSERT_TRUE(sink->open().ok());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 30; ++i) {
        if (!sink->ping().ok()) ++failures;
        if (!sink->max_id().ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  const PoolStats st = sink->stats();
  EXPECT_EQ(st.max_open, 1);
  EXPECT_EQ(st.open, 1);
  EXPECT_EQ(st.idle, 1);
  EXPECT_EQ(st.in_use, 0);
  EXPECT_GT(st.wait_count, 0);
  EXPECT_GT(st.wait_duration_us, 0);
  EXPECT_NE(format_pool_stats(st).find("wait_count=" + std::to_string(st.wait_count)), std::string::npos);
}

TEST_F(MysqlSinkTest, WriterAndPingsShareThePool) {
  auto sink = make();
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 5000; ++i) rows.push_back(sample_row(i));
  std::atomic<bool> done{false};
  std::atomic<int> ping_failures{0};
  std::thread pinger([&] {
    while (!done) {
      if (!sink->ping().ok()) ++ping_failures;
    }
  });
  for (std::size_t at = 0; at < rows.size(); at += 250) {
    EventBuffer b = batch_of(rows, at, at + 250);
    const Status s = sink->write(b.view(), b.count);
    ASSERT_TRUE(s.ok()) << s.message();
  }
  done = true;
  pinger.join();
  EXPECT_EQ(ping_failures.load(), 0);
  EXPECT_EQ(admin_->count(table_), 5000);
  EXPECT_LE(sink->stats().open, 2);
}

TEST_F(MysqlSinkTest, LifetimeClosesPooledConnections) {
  SinkOptions o;
  o.max_lifetime_ms = 150;
  auto sink = make(o);
  ASSERT_TRUE(sink->open().ok());
  EXPECT_EQ(sink->stats().idle, 1);
  std::this_thread::sleep_for(500ms);
  PoolStats st = sink->stats();
  EXPECT_EQ(st.open, 0) << format_pool_stats(st);
  EXPECT_EQ(st.max_lifetime_closed, 1) << format_pool_stats(st);
  EXPECT_TRUE(sink->ping().ok());
}

// Stops and restarts the server that every test shares.
TEST_F(MysqlSinkTest, OutageIsTransientAndThePoolReconnectsAfterStart) {
  const std::string ctl = env("KIROKU_TEST_MYSQL_CTL");
  ASSERT_FALSE(ctl.empty()) << kRunUnder;
  MysqlSinkTuning t;
  t.reconnect_backoff_min_ms = 20;
  t.reconnect_backoff_max_ms = 500;
  auto sink = make({}, t);
  ASSERT_TRUE(sink->open().ok());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 600; ++i) rows.push_back(sample_row(i));
  EventBuffer before = batch_of(rows, 0, 300);
  ASSERT_TRUE(sink->write(before.view(), before.count).ok());

  struct StartAgain {  // whatever happens, leave the server running for the other tests
    const std::string& ctl;
    ~StartAgain() { (void)std::system((ctl + " start >/dev/null").c_str()); }
  } start_again{ctl};
  ASSERT_EQ(std::system((ctl + " stop").c_str()), 0);
  EventBuffer during = batch_of(rows, 300, 600);
  const auto start = std::chrono::steady_clock::now();
  Status s = sink->write(during.view(), during.count);
  EXPECT_EQ(s.kind(), ErrorKind::transient) << s.message();
  EXPECT_EQ(sink->ping().kind(), ErrorKind::transient);
  EXPECT_EQ(sink->max_id().status().kind(), ErrorKind::transient);
  s = sink->write(during.view(), during.count);
  EXPECT_EQ(s.kind(), ErrorKind::transient) << s.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s) << "failing must be quick";
  EXPECT_EQ(sink->stats().open, 0);

  ASSERT_EQ(std::system((ctl + " start").c_str()), 0);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  do {
    s = sink->write(during.view(), during.count);
    if (s.ok()) break;
    std::this_thread::sleep_for(50ms);
  } while (std::chrono::steady_clock::now() < deadline);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_TRUE(sink->ping().ok());
  Admin fresh;  // the old admin session died with the server
  ASSERT_EQ(fresh.error(), "");
  EXPECT_EQ(fresh.count(table_), 600);
  EXPECT_GE(sink->stats().open, 1);
  admin_ = std::make_unique<Admin>();
}

// ---- Pool tests with fake connections (no database) ---------------------------------------------

struct FakeConnection : PooledConnection {
  explicit FakeConnection(int n, std::atomic<int>* counter) : id(n), closed(counter) {}
  ~FakeConnection() override { ++*closed; }
  int id;
  std::atomic<int>* closed;
};

class MysqlPoolTest : public ::testing::Test {
 protected:
  ConnectionPool::Connector connector() {
    return [this]() -> Result<std::unique_ptr<PooledConnection>> {
      if (fail_next_) {
        fail_next_ = false;
        return Status::permanent("no such database");
      }
      return std::unique_ptr<PooledConnection>(std::make_unique<FakeConnection>(++made_, &closed_));
    };
  }
  static int id_of(const ConnectionPool::Lease& l) { return l.as<FakeConnection>().id; }

  std::atomic<int> made_{0};
  std::atomic<int> closed_{0};
  std::atomic<bool> fail_next_{false};
};

TEST_F(MysqlPoolTest, ReusesTheMostRecentlyReturnedConnection) {
  ConnectionPool pool({.max_open = 4, .max_idle = 4}, connector());
  {
    auto a = pool.acquire(1s);
    auto b = pool.acquire(1s);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_FALSE(a->reused());
    EXPECT_EQ(pool.stats().in_use, 2);
    b->release();
    auto c = pool.acquire(1s);
    EXPECT_TRUE(c->reused());
    EXPECT_EQ(id_of(*c), 2);
  }
  const PoolStats s = pool.stats();
  EXPECT_EQ(s.open, 2);
  EXPECT_EQ(s.idle, 2);
  EXPECT_EQ(s.in_use, 0);
  EXPECT_EQ(made_, 2);
}

TEST_F(MysqlPoolTest, MaxIdleClosesTheSurplus) {
  ConnectionPool pool({.max_open = 0, .max_idle = 1}, connector());
  {
    auto a = pool.acquire(1s);
    auto b = pool.acquire(1s);
    auto c = pool.acquire(1s);
    EXPECT_EQ(pool.stats().open, 3);
  }
  const PoolStats s = pool.stats();
  EXPECT_EQ(s.open, 1);
  EXPECT_EQ(s.idle, 1);
  EXPECT_EQ(s.max_idle_closed, 2);
  EXPECT_EQ(s.max_open, 0);
  EXPECT_EQ(closed_, 2);
}

TEST_F(MysqlPoolTest, WaitsForAReturnedConnectionAndCountsTheWait) {
  ConnectionPool pool({.max_open = 1, .max_idle = 0}, connector());
  auto held = pool.acquire(1s);
  ASSERT_TRUE(held.ok());
  std::thread other([&] {
    auto got = pool.acquire(5s);
    EXPECT_TRUE(got.ok());
    if (got.ok()) {
      EXPECT_EQ(id_of(*got), 1);  // handed over, even with max_idle 0
    }
  });
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(pool.stats().wait_count, 1);
  held->release();
  other.join();
  const PoolStats s = pool.stats();
  EXPECT_EQ(s.wait_count, 1);
  EXPECT_GE(s.wait_duration_us, 80'000);
  EXPECT_EQ(made_, 1);
}

TEST_F(MysqlPoolTest, AcquireTimesOutWhenAllAreInUse) {
  ConnectionPool pool({.max_open = 1, .max_idle = 1}, connector());
  auto held = pool.acquire(1s);
  const auto start = std::chrono::steady_clock::now();
  auto r = pool.acquire(50ms);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().kind(), ErrorKind::transient);
  EXPECT_NE(r.status().message().find("no connection free after 50 ms"), std::string::npos);
  EXPECT_EQ(pool.stats().wait_count, 1);
  EXPECT_GE(pool.stats().wait_duration_us, 50'000);
}

TEST_F(MysqlPoolTest, LifetimeAndIdleTimeCloseConnections) {
  ConnectionPool by_lifetime({.max_open = 2, .max_idle = 2, .max_lifetime_ms = 100}, connector());
  by_lifetime.acquire(1s);  // opened and returned at once
  std::this_thread::sleep_for(350ms);
  EXPECT_EQ(by_lifetime.stats().max_lifetime_closed, 1);
  EXPECT_EQ(by_lifetime.stats().open, 0);

  ConnectionPool by_idle({.max_open = 2, .max_idle = 2, .max_idle_time_ms = 100}, connector());
  {
    auto a = by_idle.acquire(1s);
    std::this_thread::sleep_for(250ms);  // in use: idle time does not run
  }
  EXPECT_EQ(by_idle.stats().open, 1);
  std::this_thread::sleep_for(350ms);
  EXPECT_EQ(by_idle.stats().max_idle_time_closed, 1);
  EXPECT_EQ(by_idle.stats().open, 0);
}

TEST_F(MysqlPoolTest, ExpiredIdleConnectionIsNotHandedOut) {
  ConnectionPool pool({.max_open = 2, .max_idle = 2, .max_lifetime_ms = 60'000}, connector());
  pool.acquire(1s);
  // A connection returned after its lifetime is closed on return.
  ConnectionPool short_lived({.max_open = 2, .max_idle = 2, .max_lifetime_ms = 30}, connector());
  {
    auto a = short_lived.acquire(1s);
    std::this_thread::sleep_for(60ms);
  }
  EXPECT_EQ(short_lived.stats().max_lifetime_closed, 1);
  EXPECT_EQ(short_lived.stats().open, 0);
  auto b = short_lived.acquire(1s);
  EXPECT_FALSE(b->reused());
}

TEST_F(MysqlPoolTest, DiscardCloseIdleAndConnectFailure) {
  ConnectionPool pool({.max_open = 3, .max_idle = 3}, connector());
  {
    auto a = pool.acquire(1s);
    auto b = pool.acquire(1s);
    a->discard();
  }
  EXPECT_EQ(pool.stats().open, 1);
  EXPECT_EQ(closed_, 1);
  pool.close_idle();
  EXPECT_EQ(pool.stats().open, 0);
  EXPECT_EQ(closed_, 2);
  fail_next_ = true;
  auto r = pool.acquire(1s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().kind(), ErrorKind::permanent);
  EXPECT_EQ(pool.stats().open, 0);
  EXPECT_TRUE(pool.acquire(1s).ok());
}

TEST_F(MysqlPoolTest, ManyThreadsNeverExceedMaxOpen) {
  ConnectionPool pool({.max_open = 3, .max_idle = 2}, connector());
  std::atomic<int> in_use{0};
  std::atomic<int> peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        auto l = pool.acquire(5s);
        ASSERT_TRUE(l.ok());
        const int now = ++in_use;
        int p = peak;
        while (now > p && !peak.compare_exchange_weak(p, now)) {}
        --in_use;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), 3);
  const PoolStats s = pool.stats();
  EXPECT_LE(s.open, 3);
  EXPECT_EQ(s.in_use, 0);
  EXPECT_EQ(s.open, s.idle);
}

TEST_F(MysqlPoolTest, FormatsStatsAsOneLine) {
  PoolStats s;
  s.max_open = 30;
  s.open = 30;
  s.in_use = 30;
  s.wait_count = 115713;
  s.wait_duration_us = 448546969863;
  s.max_lifetime_closed = 31;
  EXPECT_EQ(format_pool_stats(s),
            "max_open=30 open=30 in_use=30 idle=0 wait_count=115713 "
            "wait_duration_us=448546969863 max_idle_closed=0 max_idle_time_closed=0 "
            "max_lifetime_closed=31");
}

}  // namespace
}  // namespace kiroku
