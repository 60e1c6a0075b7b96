// postgresql_sink_test.cpp - the PostgreSQL sink against a real server.
//
// Needs the server that scripts/with-postgres.sh starts (KIROKU_TEST_POSTGRES_URL,
// KIROKU_TEST_POSTGRES_ADMIN, KIROKU_TEST_POSTGRES_CTL); without it the tests
// fail and say so. PostgresSinkTest.Outage... stops and restarts the shared
// server: run it on its own (not in parallel with other tests of that server).
#include "sink/postgresql/postgresql_sink.h"

#include <gtest/gtest.h>
#include <libpq-fe.h>
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
#include "integration/harness.h"
#include "sink/connection_pool.h"
#include "sink/postgresql/postgresql_url.h"

namespace kiroku {
namespace {

using namespace std::chrono_literals;

#define ASSERT_OK(expr)                                           \
  do {                                                            \
    const Status status_of_expr = (expr);                         \
    ASSERT_TRUE(status_of_expr.ok()) << status_of_expr.message(); \
  } while (0)

constexpr const char* kRunUnder =
    "KIROKU_TEST_POSTGRES_URL is not set: run the integration tests under scripts/with-postgres.sh, "
    "e.g. scripts/with-postgres.sh ctest --test-dir build -L integration";

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

// Event i of a varied set: multibyte and 255-byte names, the characters COPY
// escapes, extreme values, ids at both ends of the unsigned range and around
// 2^63, client ids absent or up to 255 bytes.
Row sample_row(std::uint64_t i) {
  Row r;
  switch (i % 8) {
    case 3: r.id = std::numeric_limits<std::uint64_t>::max() - i; break;
    case 5: r.id = (std::uint64_t{1} << 63) - 1 - i; break;
    case 7: r.id = (std::uint64_t{1} << 63) + i; break;
    default: r.id = 1'000'000 + i; break;
  }
  if (i == 0) r.id = 0;
  if (i == 1) r.id = std::numeric_limits<std::uint64_t>::max();
  r.received_us = 1'700'000'000'000'000 + static_cast<std::int64_t>(i);
  r.at_us = i % 9 == 0 ? -86'400'000'000 - static_cast<std::int64_t>(i) : r.received_us - 5;
  switch (i % 8) {
    case 0: r.name = "hoge"; break;
    case 1: r.name = "計測.応答時間"; break;
    case 2: r.name = repeat("名", 85); break;         // 255 bytes of 3-byte characters
    case 3: r.name = repeat("😀", 63) + "abc"; break;  // 255 bytes with 4-byte characters
    case 4: r.name = "tab\tnew\nline\\back'quote\"pct%\r\\N"; break;
    case 5: r.name = "\\."; break;
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

std::vector<Row> sorted_by_id(std::vector<Row> rows) {
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.id < b.id; });
  return rows;
}

// ---- A superuser's connection over the unix socket ----------------------------------------------

class Admin {
 public:
  Admin() {
    Result<PostgresUrl> url = parse_postgres_url(env("KIROKU_TEST_POSTGRES_ADMIN"));
    if (!url.ok()) {
      error_ = "KIROKU_TEST_POSTGRES_ADMIN: " + url.status().message();
      return;
    }
    const char* keys[] = {"host", "port", "dbname", "user", "client_encoding", "options", nullptr};
    const std::string port = std::to_string(env_port());
    const char* values[] = {
        url->socket_dir.c_str(),          port.c_str(), url->database.c_str(), url->user.c_str(), "UTF8",
        "-c client_min_messages=warning", nullptr};
    c_ = PQconnectdbParams(keys, values, 0);
    if (PQstatus(c_) != CONNECTION_OK) error_ = std::string("admin connect: ") + PQerrorMessage(c_);
  }
  ~Admin() { PQfinish(c_); }
  const std::string& error() const { return error_; }

  static int env_port() { return std::atoi(env("KIROKU_TEST_POSTGRES_PORT").c_str()); }

  void exec(const std::string& sql) {
    PGresult* r = PQexec(c_, sql.c_str());
    const ExecStatusType s = PQresultStatus(r);
    EXPECT_TRUE(s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) << sql << ": " << PQerrorMessage(c_);
    PQclear(r);
  }

  // Every row of a query; NULL as nullopt.
  std::vector<std::vector<std::optional<std::string>>> rows(const std::string& sql) {
    std::vector<std::vector<std::optional<std::string>>> out;
    PGresult* r = PQexec(c_, sql.c_str());
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
      ADD_FAILURE() << sql << ": " << PQerrorMessage(c_);
      PQclear(r);
      return out;
    }
    for (int i = 0; i < PQntuples(r); ++i) {
      auto& row = out.emplace_back();
      for (int f = 0; f < PQnfields(r); ++f) {
        if (PQgetisnull(r, i, f)) {
          row.emplace_back(std::nullopt);
        } else {
          row.emplace_back(std::string(PQgetvalue(r, i, f), static_cast<std::size_t>(PQgetlength(r, i, f))));
        }
      }
    }
    PQclear(r);
    return out;
  }

  // A table made by hand, owned by the test user (as the sink's own would be).
  void create_table(const std::string& table, const std::string& columns) {
    exec("CREATE TABLE \"" + table + "\" (" + columns + ")");
    exec("ALTER TABLE \"" + table + "\" OWNER TO kiroku");
  }

  std::int64_t count(const std::string& table) {
    auto r = rows("SELECT count(*) FROM \"" + table + "\"");
    return r.empty() ? -1 : std::stoll(*r[0][0]);
  }

  std::vector<Row> stored(const std::string& table) {
    std::vector<Row> out;
    for (auto& r : rows("SELECT id, received_at, at, name, value, client_id FROM \"" + table + "\" ORDER BY id")) {
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
  PGconn* c_ = nullptr;
  std::string error_;
};

// ---- Fixture ------------------------------------------------------------------------------------

class PostgresSinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    url_ = env("KIROKU_TEST_POSTGRES_URL");
    if (url_.empty()) GTEST_FAIL() << kRunUnder;
    admin_ = std::make_unique<Admin>();
    ASSERT_EQ(admin_->error(), "");
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    // The pid first: tests of parallel processes never share a table.
    table_ = "t" + std::to_string(::getpid()) + "_" + std::string(info->name());
    for (char& c : table_) c = std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::tolower(c)) : '_';
    table_ = table_.substr(0, 48);
    admin_->exec("DROP TABLE IF EXISTS \"" + table_ + "\"");
  }
  void TearDown() override {
    if (admin_ && admin_->error().empty()) {
      admin_->exec("DROP TABLE IF EXISTS \"" + table_ + "\"");
      admin_->exec("DELETE FROM kiroku_instances WHERE tbl = '" + table_ + "'");
    }
  }

  std::unique_ptr<Sink> make(SinkOptions o = {}, PostgresSinkTuning t = {}, std::string url = "") {
    o.table = table_;
    Result<std::unique_ptr<Sink>> s = make_postgres_sink(url.empty() ? url_ : url, o, t);
    EXPECT_TRUE(s.ok()) << s.status().message();
    return s.ok() ? std::move(*s) : nullptr;
  }

  std::string tcp_url(const std::string& user, const std::string& pass, const std::string& db,
                      const std::string& query = "") {
    return "postgresql://" + user + ":" + pass + "@127.0.0.1:" + std::to_string(Admin::env_port()) + "/" + db + query;
  }

  std::string url_;
  std::unique_ptr<Admin> admin_;
  std::string table_;
};

// ---- Tests --------------------------------------------------------------------------------------

TEST_F(PostgresSinkTest, OpenCreatesTheTable) {
  auto sink = make();
  ASSERT_TRUE(sink);
  EXPECT_EQ(sink->kind(), "postgresql");
  ASSERT_OK(sink->open());
  auto columns = admin_->rows(
      "SELECT column_name, data_type, numeric_precision, character_maximum_length, is_nullable, collation_name"
      " FROM information_schema.columns WHERE table_name = '" +
      table_ + "' ORDER BY ordinal_position");
  using C = std::vector<std::optional<std::string>>;
  const std::vector<C> expected = {
      {"id", "numeric", "20", std::nullopt, "NO", std::nullopt},
      {"received_at", "bigint", "64", std::nullopt, "NO", std::nullopt},
      {"at", "bigint", "64", std::nullopt, "NO", std::nullopt},
      {"name", "character varying", std::nullopt, "255", "NO", "C"},
      {"value", "bigint", "64", std::nullopt, "NO", std::nullopt},
      {"client_id", "character varying", std::nullopt, "255", "YES", "C"},
  };
  EXPECT_EQ(columns, expected);
  auto unique = admin_->rows("SELECT indexdef FROM pg_indexes WHERE tablename = '" + table_ + "' ORDER BY indexname");
  ASSERT_EQ(unique.size(), 2u);
  EXPECT_NE(unique[0][0]->find("UNIQUE INDEX"), std::string::npos);
  EXPECT_NE(unique[0][0]->find("(client_id)"), std::string::npos) << *unique[0][0];
  EXPECT_NE(unique[1][0]->find("(id)"), std::string::npos) << *unique[1][0];
  // A second open finds the table and is fine with it.
  EXPECT_TRUE(sink->open().ok());
  auto again = make();
  EXPECT_TRUE(again->open().ok());
  Result<std::uint64_t> id = again->max_id();
  ASSERT_TRUE(id.ok()) << id.status().message();
  EXPECT_EQ(*id, 0u);
  EXPECT_TRUE(again->ping().ok());
}

TEST_F(PostgresSinkTest, AnExistingTableWithoutTheClientIdIndexGetsIt) {
  admin_->create_table(table_,
                       "id NUMERIC(20) PRIMARY KEY, received_at BIGINT NOT NULL, at BIGINT NOT NULL,"
                       " name VARCHAR(255) NOT NULL, value BIGINT NOT NULL, client_id VARCHAR(255)");
  auto sink = make();
  ASSERT_OK(sink->open());
  auto unique = admin_->rows("SELECT count(*) FROM pg_indexes WHERE tablename = '" + table_ +
                             "' AND indexdef LIKE '%UNIQUE INDEX%(client_id)%'");
  EXPECT_EQ(*unique[0][0], "1");
}

TEST_F(PostgresSinkTest, WritesTenThousandEventsAndReadsThemBackExactly) {
  auto sink = make();
  ASSERT_OK(sink->open());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 10'000; ++i) rows.push_back(sample_row(i));
  const std::size_t sizes[] = {1, 7, 100, 999, 1000, 1001, 2500, 64, 513};
  std::size_t at = 0;
  for (std::size_t k = 0; at < rows.size(); ++k) {
    const std::size_t n = std::min(sizes[k % std::size(sizes)], rows.size() - at);
    EventBuffer b = batch_of(rows, at, at + n);
    const Status s = sink->write(b.view(), b.count);
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(sink->last_write().stored, n);
    at += n;
  }
  const std::vector<Row> expected = sorted_by_id(rows);
  const std::vector<Row> stored = admin_->stored(table_);
  ASSERT_EQ(stored.size(), expected.size());
  for (std::size_t i = 0; i < stored.size(); ++i) {
    ASSERT_EQ(stored[i], expected[i]) << "row " << i << " id " << expected[i].id;
  }
  // The database orders ids as unsigned numbers: 0 first, 2^64-1 last.
  EXPECT_EQ(stored.front().id, 0u);
  EXPECT_EQ(stored.back().id, std::numeric_limits<std::uint64_t>::max());
  Result<std::uint64_t> max = sink->max_id();
  ASSERT_TRUE(max.ok()) << max.status().message();
  EXPECT_EQ(*max, std::numeric_limits<std::uint64_t>::max());
  const PoolStats st = sink->stats();
  EXPECT_GE(st.open, 1);
  EXPECT_EQ(st.in_use, 0);
}

TEST_F(PostgresSinkTest, MaxIdIsTheLargestUnsignedIdNotTheLargestSigned) {
  auto sink = make();
  ASSERT_OK(sink->open());
  std::vector<Row> rows = {sample_row(10), sample_row(11), sample_row(12)};
  rows[0].id = (std::uint64_t{1} << 63) - 1;
  rows[1].id = std::uint64_t{1} << 63;
  rows[2].id = 5;
  EventBuffer b = batch_of(rows, 0, 3);
  ASSERT_OK(sink->write(b.view(), b.count));
  Result<std::uint64_t> max = sink->max_id();
  ASSERT_TRUE(max.ok());
  EXPECT_EQ(*max, std::uint64_t{1} << 63);
}

// Every record of a write is accounted for: stored, a replay (the same row
// under its id), a client id stored before (first wins), or a conflict (a
// different row under its id), which comes back to the caller.
TEST_F(PostgresSinkTest, ReportsReplaysClientDuplicatesAndConflicts) {
  auto sink = make();
  ASSERT_OK(sink->open());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 40; ++i) {
    Row r = sample_row(i);
    r.client_id = "k-" + std::to_string(i);
    rows.push_back(r);
  }
  EventBuffer first = batch_of(rows, 0, 30);
  ASSERT_OK(sink->write(first.view(), first.count));
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
    r.value ^= 1;
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
  std::set<std::int64_t> conflict_values;
  while (back.next(e)) {
    conflict_ids.insert(e.id);
    conflict_values.insert(e.value);
  }
  EXPECT_EQ(conflict_ids, (std::set<std::uint64_t>{rows[0].id, rows[1].id, rows[2].id}));
  EXPECT_EQ(conflict_values, (std::set<std::int64_t>{extra[5].value, extra[6].value, extra[7].value}))
      << "the records handed back are the ones not stored";
  EXPECT_EQ(admin_->count(table_), 40);
  EXPECT_EQ(admin_->stored(table_), sorted_by_id(rows)) << "conflicts must not overwrite";
}

// Client ids are a unique key: the same id twice is one row, the first.
TEST_F(PostgresSinkTest, ClientIdTwiceIsOneRowFirstWins) {
  auto sink = make();
  ASSERT_OK(sink->open());
  Row a = sample_row(7);
  a.client_id = "req-1";
  Row b = sample_row(8);
  b.client_id = "req-1";
  EventBuffer one = batch_of({a, b}, 0, 2);
  ASSERT_OK(sink->write(one.view(), one.count));
  EXPECT_EQ(sink->last_write().stored, 1u);
  EXPECT_EQ(sink->last_write().client_duplicates, 1u);
  EventBuffer two = batch_of({b}, 0, 1);
  ASSERT_OK(sink->write(two.view(), two.count));
  EXPECT_EQ(sink->last_write().client_duplicates, 1u);
  const std::vector<Row> stored = admin_->stored(table_);
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0], a);
}

TEST_F(PostgresSinkTest, SameBatchTwiceStoresEachRowOnce) {
  auto sink = make();
  ASSERT_OK(sink->open());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 3000; ++i) rows.push_back(sample_row(i));
  EventBuffer first = batch_of(rows, 0, 2000);
  ASSERT_OK(sink->write(first.view(), first.count));
  ASSERT_OK(sink->write(first.view(), first.count));  // a replay
  EXPECT_EQ(sink->last_write().replayed, 2000u);
  EXPECT_EQ(sink->last_write().stored, 0u);
  EXPECT_EQ(admin_->count(table_), 2000);
  // Overlapping the first batch, with duplicates inside the batch itself.
  EventBuffer second = batch_of(rows, 1500, 3000);
  second.append(view_of(rows[2999]));
  second.append(view_of(rows[10]));
  const Status s = sink->write(second.view(), second.count);
  ASSERT_TRUE(s.ok()) << s.message();
  const WriteReport& rep = sink->last_write();
  EXPECT_EQ(rep.stored, 1000u);
  EXPECT_EQ(rep.replayed, 502u);
  EXPECT_EQ(rep.conflicts + rep.client_duplicates, 0u);
  EXPECT_EQ(admin_->stored(table_), sorted_by_id(rows));
}

TEST_F(PostgresSinkTest, LargeBatchIsOneTransaction) {
  auto sink = make();
  ASSERT_OK(sink->open());
  // 25,000 rows of 255-byte names and client ids: about 14 MB of COPY data.
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 25'000; ++i) {
    Row r = sample_row(i);
    r.id = 1'000'000 + i;
    r.name = repeat("名", 85);
    char tail[8];
    std::snprintf(tail, sizeof tail, "%07llu", static_cast<unsigned long long>(i));
    r.client_id = repeat("x", 248) + tail;
    rows.push_back(std::move(r));
  }
  rows[24'000].name = "poison";
  admin_->exec("CREATE FUNCTION \"" + table_ +
               "_p\"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.name = 'poison' THEN"
               " RAISE EXCEPTION 'poisoned row'; END IF; RETURN NEW; END $$");
  admin_->exec("CREATE TRIGGER p BEFORE INSERT ON \"" + table_ + "\" FOR EACH ROW EXECUTE FUNCTION \"" + table_ +
               "_p\"()");
  EventBuffer b = batch_of(rows, 0, rows.size());
  Status s = sink->write(b.view(), b.count);
  // A trigger's exception refuses a row for its values: invalid, class constraint.
  EXPECT_EQ(s.kind(), ErrorKind::invalid) << s.message();
  EXPECT_EQ(sink->rejection_reason(), "constraint");
  EXPECT_EQ(sink->refused_row(), Sink::kNoRow) << "the INSERT, not the COPY, refused it: no line to name";
  EXPECT_NE(s.message().find("poisoned row"), std::string::npos) << s.message();
  EXPECT_EQ(admin_->count(table_), 0) << "a failed batch must leave nothing behind";
  admin_->exec("DROP TRIGGER p ON \"" + table_ + "\"");
  admin_->exec("DROP FUNCTION \"" + table_ + "_p\"()");
  s = sink->write(b.view(), b.count);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(sink->last_write().stored, 25'000u);
  EXPECT_EQ(admin_->count(table_), 25'000);
}

// A row the server refuses while copying is named by its COPY line; each
// class of refusal is told.
TEST_F(PostgresSinkTest, RefusedRowsAreClassifiedAndNamed) {
  admin_->create_table(
      table_,
      "id NUMERIC(20) PRIMARY KEY, received_at BIGINT NOT NULL, at BIGINT NOT NULL,"
      " name VARCHAR(5) NOT NULL, value INTEGER NOT NULL CHECK (value <> 13), client_id VARCHAR(255) UNIQUE");
  auto sink = make();
  ASSERT_OK(sink->open());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 2500; ++i) {
    Row r = sample_row(i);
    r.id = 1'000'000 + i;
    r.name = "ok";
    r.value = 1;
    r.client_id.reset();
    rows.push_back(std::move(r));
  }
  struct Case {
    std::size_t row;
    const char* reason;
    void (*spoil)(Row&);
  };
  const Case cases[] = {
      {0, "data_too_long", [](Row& r) { r.name = "toolongname"; }},
      {999, "data_too_long", [](Row& r) { r.name = "toolongname"; }},
      {2499, "out_of_range", [](Row& r) { r.value = std::int64_t{1} << 40; }},
      {1000, "incorrect_value", [](Row& r) { r.name = std::string("a\0b", 3); }},
      {3, "incorrect_value", [](Row& r) { r.name = "\xff\xfe"; }},
      {1700, "constraint", [](Row& r) { r.value = 13; }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.reason) + " at " + std::to_string(c.row));
    std::vector<Row> batch = rows;
    c.spoil(batch[c.row]);
    if (c.row + 10 < batch.size()) batch[c.row + 10].name = "second";  // only the first is named
    EventBuffer b = batch_of(batch, 0, batch.size());
    const Status s = sink->write(b.view(), b.count);
    EXPECT_EQ(s.kind(), ErrorKind::invalid) << s.message();
    EXPECT_EQ(sink->rejection_reason(), c.reason) << s.message();
    EXPECT_EQ(sink->refused_row(), c.row) << s.message();
    EXPECT_NE(s.message().find("SQLSTATE"), std::string::npos) << s.message();
    EXPECT_EQ(admin_->count(table_), 0);
  }
  // The connection is still good for the next batch.
  EventBuffer good = batch_of(rows, 0, 10);
  ASSERT_OK(sink->write(good.view(), good.count));
  EXPECT_EQ(sink->refused_row(), Sink::kNoRow);
  EXPECT_EQ(admin_->count(table_), 10);
}

// Two instances writing the same client ids at once, in opposite orders:
// the unique index makes one wait for the other (or deadlock, which is
// retried); every client id is stored once and every record is accounted for.
TEST_F(PostgresSinkTest, ConcurrentWritersOfTheSameClientIdsStoreEachOnce) {
  ASSERT_OK(make()->open());
  auto a = make();
  auto b = make();
  constexpr int kRounds = 20;
  constexpr int kRows = 200;
  std::atomic<std::size_t> stored{0}, duplicates{0}, other{0}, retries{0};
  const auto writer = [&](Sink& sink, std::uint64_t id_base, bool reverse) {
    for (int round = 0; round < kRounds; ++round) {
      std::vector<Row> rows;
      for (int k = 0; k < kRows; ++k) {
        Row r = sample_row(static_cast<std::uint64_t>(k));
        r.id = id_base + static_cast<std::uint64_t>(round * kRows + k);
        const int key = reverse ? kRows - 1 - k : k;
        r.client_id = "c-" + std::to_string(round) + "-" + std::to_string(key);
        rows.push_back(std::move(r));
      }
      EventBuffer batch = batch_of(rows, 0, rows.size());
      Status s = sink.write(batch.view(), batch.count);
      for (int tries = 0; !s.ok() && s.kind() == ErrorKind::transient && tries < 20; ++tries) {
        ++retries;  // a deadlock that outlasted the sink's own retries: the writer tries again
        s = sink.write(batch.view(), batch.count);
      }
      EXPECT_TRUE(s.ok()) << s.message();
      const WriteReport& rep = sink.last_write();
      stored += rep.stored;
      duplicates += rep.client_duplicates;
      other += rep.replayed + rep.conflicts;
    }
  };
  std::thread ta([&] { writer(*a, 10'000'000, false); });
  std::thread tb([&] { writer(*b, 20'000'000, true); });
  ta.join();
  tb.join();
  EXPECT_EQ(stored.load(), static_cast<std::size_t>(kRounds * kRows));
  EXPECT_EQ(duplicates.load(), static_cast<std::size_t>(kRounds * kRows));
  EXPECT_EQ(other.load(), 0u);
  EXPECT_EQ(admin_->count(table_), kRounds * kRows);
  auto distinct = admin_->rows("SELECT count(DISTINCT client_id) FROM \"" + table_ + "\"");
  EXPECT_EQ(*distinct[0][0], std::to_string(kRounds * kRows));
  std::printf("concurrent writers: %zu writes retried by the test\n", retries.load());
}

TEST_F(PostgresSinkTest, WorksOverTheUnixSocket) {
  const std::string dir = env("KIROKU_TEST_POSTGRES_SOCKET_DIR");
  ASSERT_FALSE(dir.empty());
  auto sink = make({}, {}, "postgresql://kiroku@:" + std::to_string(Admin::env_port()) + "/kiroku_test?host=" + dir);
  ASSERT_OK(sink->open());
  std::vector<Row> rows = {sample_row(1), sample_row(2)};
  EventBuffer b = batch_of(rows, 0, 2);
  ASSERT_OK(sink->write(b.view(), b.count));
  EXPECT_EQ(admin_->count(table_), 2);
  EXPECT_TRUE(sink->ping().ok());
}

TEST_F(PostgresSinkTest, BadPasswordIsPermanentWithOneClearLine) {
  const std::string secret = "not-the-password-7f3a";
  auto sink = make({}, {}, tcp_url("kiroku", secret, "kiroku_test"));
  const Status s = sink->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("password authentication failed for user \"kiroku\""), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find(secret), std::string::npos) << "the password leaked: " << s.message();
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
  // Within the backoff the same answer comes back at once, without a new attempt.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(sink->ping().kind(), ErrorKind::permanent);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
  EXPECT_EQ(sink->stats().open, 0);
}

TEST_F(PostgresSinkTest, UnknownDatabaseIsPermanent) {
  auto sink = make({}, {}, tcp_url("kiroku", "kiroku", "kiroku_no_such_db"));
  const Status s = sink->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("\"kiroku_no_such_db\" does not exist"), std::string::npos) << s.message();
}

TEST_F(PostgresSinkTest, MissingPrivilegesArePermanent) {
  admin_->exec("CREATE ROLE kiroku_ro LOGIN PASSWORD 'ro'");
  const std::string ro = tcp_url("kiroku_ro", "ro", "kiroku_test");
  // No CREATE privilege on the schema for a missing table.
  auto sink = make({}, {}, ro);
  Status s = sink->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("permission denied"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("SQLSTATE 42501"), std::string::npos) << s.message();
  // The table exists and SELECT is granted, INSERT is not: writes fail permanently.
  ASSERT_OK(make()->open());
  admin_->exec("GRANT SELECT ON \"" + table_ + "\", kiroku_instances TO kiroku_ro");
  sink = make({}, {}, ro);
  ASSERT_OK(sink->open());
  std::vector<Row> rows = {sample_row(1)};
  EventBuffer b = batch_of(rows, 0, 1);
  s = sink->write(b.view(), b.count);
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("permission denied"), std::string::npos) << s.message();
  sink.reset();
  // The role's sessions (and their staging tables) end a moment after the client hangs up.
  for (int i = 0;
       i < 50 && *admin_->rows("SELECT count(*) FROM pg_stat_activity WHERE usename = 'kiroku_ro'")[0][0] != "0"; ++i)
    std::this_thread::sleep_for(100ms);
  admin_->exec("DROP OWNED BY kiroku_ro");
  admin_->exec("DROP ROLE kiroku_ro");
}

// Instance numbers leased at the same moment by many instances are distinct;
// a live holder's number is refused to another; a released or expired one is free.
TEST_F(PostgresSinkTest, InstanceLeasesAreDistinctAndExclusive) {
  ASSERT_OK(make()->open());
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
  // Renewed at the database's clock.
  auto renewed = admin_->rows(
      "SELECT abs(renewed_at - (extract(epoch FROM clock_timestamp()) * 1000)::bigint) < 60000"
      " FROM kiroku_instances WHERE tbl = '" +
      table_ + "' AND holder = 'holder0'");
  ASSERT_EQ(renewed.size(), 1u);
  EXPECT_EQ(*renewed[0][0], "t");
  // Released: free for anyone; releasing someone else's number does nothing.
  ASSERT_OK(sinks[2]->release_instance(static_cast<unsigned>(got[0]), "not-the-holder"));
  EXPECT_EQ(sinks[1]->lease_instance("intruder", got[0], 60'000).status().kind(), ErrorKind::full);
  ASSERT_OK(sinks[0]->release_instance(static_cast<unsigned>(got[0]), "holder0"));
  Result<unsigned> taken = sinks[1]->lease_instance("intruder", got[0], 60'000);
  EXPECT_TRUE(taken.ok()) << taken.status().message();
  // Not renewed within the lease time: free as well.
  std::this_thread::sleep_for(50ms);
  Result<unsigned> expired = sinks[2]->lease_instance("late", got[3], 10);
  EXPECT_TRUE(expired.ok()) << expired.status().message();
}

TEST_F(PostgresSinkTest, ExistingTableWithoutIdPrimaryKeyIsPermanent) {
  admin_->create_table(table_,
                       "id NUMERIC(20) NOT NULL, received_at BIGINT NOT NULL, at BIGINT NOT NULL,"
                       " name VARCHAR(255) NOT NULL, value BIGINT NOT NULL, client_id VARCHAR(255) NULL");
  auto sink = make();
  const Status s = sink->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("primary key"), std::string::npos) << s.message();
}

TEST_F(PostgresSinkTest, TerminatedConnectionsAreReplacedWithoutAnError) {
  SinkOptions o;
  o.max_idle = 4;
  auto sink = make(o, {}, url_ + "?application_name=kiroku_kill");
  ASSERT_OK(sink->open());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 200; ++i) rows.push_back(sample_row(i));
  EventBuffer b1 = batch_of(rows, 0, 100);
  ASSERT_OK(sink->write(b1.view(), b1.count));
  auto killed =
      admin_->rows("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'kiroku_kill'");
  EXPECT_GE(killed.size(), 1u);
  EventBuffer b2 = batch_of(rows, 100, 200);
  const Status s = sink->write(b2.view(), b2.count);
  EXPECT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(admin_->count(table_), 200);
  EXPECT_TRUE(sink->ping().ok());
}

TEST_F(PostgresSinkTest, TlsVerifyFullWorksAndAWrongCaFails) {
  const std::string tls = env("KIROKU_TEST_POSTGRES_TLS_URL");
  ASSERT_FALSE(tls.empty()) << kRunUnder;
  auto sink = make({}, {}, tls + "&application_name=kiroku_tls");
  ASSERT_OK(sink->open());
  std::vector<Row> rows = {sample_row(1), sample_row(2)};
  EventBuffer b = batch_of(rows, 0, 2);
  ASSERT_OK(sink->write(b.view(), b.count));
  auto ssl = admin_->rows(
      "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
      " WHERE a.application_name = 'kiroku_tls'");
  ASSERT_EQ(ssl.size(), 1u);
  EXPECT_EQ(*ssl[0][0], "t") << "every connection of the sink uses TLS";
  // localhost is named by the certificate too.
  const std::string ca = env("KIROKU_TEST_POSTGRES_CA");
  auto by_name = make({}, {},
                      "postgresql://kiroku:kiroku@localhost:" + std::to_string(Admin::env_port()) +
                          "/kiroku_test?sslmode=verify-full&sslrootcert=" + ca);
  EXPECT_TRUE(by_name->ping().ok());
  // verify-ca: the chain only; require and prefer: TLS without verification.
  const auto tls_in_use = [&](const std::string& query, const std::string& name) {
    auto s = make({}, {}, tcp_url("kiroku", "kiroku", "kiroku_test", query + "&application_name=" + name));
    const Status st = s->ping();
    EXPECT_TRUE(st.ok()) << query << ": " << st.message();
    auto r = admin_->rows(
        "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = '" +
        name + "'");
    return !r.empty() && r[0][0] && *r[0][0] == "t";
  };
  EXPECT_TRUE(tls_in_use("?sslmode=verify-ca&sslrootcert=" + ca, "kiroku_vca"));
  EXPECT_TRUE(tls_in_use("?sslmode=require", "kiroku_req"));
  EXPECT_TRUE(tls_in_use("?sslmode=prefer", "kiroku_pref"));
  EXPECT_FALSE(tls_in_use("?sslmode=disable", "kiroku_plain"));

  // Another CA: the server's certificate does not verify. Permanent, one line.
  test::TempDir dir;
  const std::string other = dir.path() + "/other-ca.pem";
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
      " -subj '/CN=another CA' -keyout " +
      dir.path() + "/k.pem -out " + other + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto wrong = make({}, {}, tcp_url("kiroku", "kiroku", "kiroku_test", "?sslmode=verify-full&sslrootcert=" + other));
  const Status s = wrong->open();
  EXPECT_EQ(s.kind(), ErrorKind::permanent) << s.message();
  EXPECT_NE(s.message().find("certificate verify failed"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("sslmode=verify-full"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
}

TEST_F(PostgresSinkTest, PoolStatsCountWaitsWhenMaxOpenIsExceeded) {
  SinkOptions o;
  o.max_open = 1;
  o.max_idle = 1;
  auto sink = make(o);
  ASSERT_OK(sink->open());
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
  auto sessions = admin_->rows(
      "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kiroku'"
      " AND usename = 'kiroku'");
  EXPECT_EQ(*sessions[0][0], "1") << "max_open bounds the sessions on the server";
}

TEST_F(PostgresSinkTest, IdleLimitsAndLifetimeClosePooledConnections) {
  SinkOptions o;
  o.max_open = 4;
  o.max_idle = 1;
  o.max_lifetime_ms = 300;
  auto sink = make(o);
  ASSERT_OK(sink->open());
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        for (int i = 0; i < 20; ++i) EXPECT_TRUE(sink->ping().ok());
      });
    for (auto& t : threads) t.join();
  }
  PoolStats st = sink->stats();
  EXPECT_LE(st.idle, 1) << format_pool_stats(st);
  std::this_thread::sleep_for(800ms);
  st = sink->stats();
  EXPECT_EQ(st.open, 0) << format_pool_stats(st);
  EXPECT_GE(st.max_lifetime_closed, 1) << format_pool_stats(st);
  EXPECT_TRUE(sink->ping().ok());
}

// Stops and restarts the server that every test shares.
TEST_F(PostgresSinkTest, OutageIsTransientAndThePoolReconnectsAfterStart) {
  const std::string ctl = env("KIROKU_TEST_POSTGRES_CTL");
  ASSERT_FALSE(ctl.empty()) << kRunUnder;
  PostgresSinkTuning t;
  t.reconnect_backoff_min_ms = 20;
  t.reconnect_backoff_max_ms = 500;
  auto sink = make({}, t);
  ASSERT_OK(sink->open());
  std::vector<Row> rows;
  for (std::uint64_t i = 0; i < 600; ++i) rows.push_back(sample_row(i));
  EventBuffer before = batch_of(rows, 0, 300);
  ASSERT_OK(sink->write(before.view(), before.count));

  struct StartAgain {  // whatever happens, leave the server running for the other tests
    const std::string& ctl;
    ~StartAgain() { (void)std::system((ctl + " start >/dev/null").c_str()); }
  } start_again{ctl};
  admin_.reset();
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
  admin_ = std::make_unique<Admin>();
  ASSERT_EQ(admin_->error(), "");
  EXPECT_EQ(admin_->count(table_), 600);
  EXPECT_GE(sink->stats().open, 1);
}

}  // namespace
}  // namespace kiroku
