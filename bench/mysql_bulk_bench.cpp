// mysql_bulk_bench.cpp - rows/s of the bulk insert methods the MySQL sink could use.
//
// Measures, against a real server, for batches of 100, 1,000 and 10,000 events:
//   multirow       multi-row prepared INSERTs (1000-row statements plus one for the rest)
//   array          MariaDB array binding: one single-row INSERT executed over column arrays
//   loaddata       LOAD DATA LOCAL INFILE fed from memory (IGNORE for idempotency)
//   sink           the MySQL sink itself (Sink::write): array binding on MariaDB
//   sink_multirow  the sink forced to its multi-row fallback (what MySQL servers get)
// Every batch is one transaction, idempotent on id, as the sink writes them;
// each run starts from an empty table, and the rounds interleave the methods.
//
//   scripts/with-mariadb.sh build/bench/mysql_bulk_bench [--rows N] [--rounds R]
//
// The server URL comes from KIROKU_TEST_MYSQL_URL (or --url). Prints one line per
// method and batch size: the median and the best rows/s over the rounds.
#include <mysql.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/event.h"
#include "sink/mysql/mysql_sink.h"
#include "sink/mysql/mysql_url.h"

namespace kiroku {
namespace {

constexpr std::string_view kTable = "bench_events";
constexpr std::string_view kColumns = "(id, received_at, at, name, value, client_id)";

[[noreturn]] void fail(std::string_view what, MYSQL* m) {
  std::fprintf(stderr, "%.*s: %u %s\n", static_cast<int>(what.size()), what.data(), mysql_errno(m), mysql_error(m));
  std::exit(1);
}
[[noreturn]] void fail(std::string_view what, MYSQL_STMT* s) {
  std::fprintf(stderr, "%.*s: %u %s\n", static_cast<int>(what.size()), what.data(), mysql_stmt_errno(s),
               mysql_stmt_error(s));
  std::exit(1);
}

MYSQL* connect(const MysqlUrl& url) {
  MYSQL* m = mysql_init(nullptr);
  const unsigned int protocol = url.socket.empty() ? MYSQL_PROTOCOL_TCP : MYSQL_PROTOCOL_SOCKET;
  mysql_optionsv(m, MYSQL_OPT_PROTOCOL, &protocol);
  mysql_optionsv(m, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  const unsigned int local_infile = 1;
  mysql_optionsv(m, MYSQL_OPT_LOCAL_INFILE, &local_infile);
  if (!mysql_real_connect(m, url.socket.empty() ? url.host.c_str() : nullptr, url.user.c_str(), url.password.c_str(),
                          url.database.c_str(), url.port, url.socket.empty() ? nullptr : url.socket.c_str(), 0))
    fail("connect", m);
  return m;
}

void query(MYSQL* m, std::string_view sql) {
  if (mysql_real_query(m, sql.data(), sql.size())) fail(sql, m);
}

// One way of storing a batch; `records` holds `count` records (event.h).
class Method {
 public:
  virtual ~Method() = default;
  virtual std::string_view name() const = 0;
  virtual void write(std::string_view records, std::size_t count) = 0;
};

// (a) Multi-row prepared INSERT: statements for 1000 rows and for the remainder
// sizes seen, all bound once to fixed per-row slots that each batch fills.
class MultiRow final : public Method {
 public:
  static constexpr std::size_t kChunk = 1000;
  explicit MultiRow(MYSQL* m)
      : m_(m),
        ids_(kChunk),
        received_(kChunk),
        at_(kChunk),
        values_(kChunk),
        names_(kChunk * kMaxNameBytes),
        name_lens_(kChunk),
        clients_(kChunk * kMaxClientIdBytes),
        client_lens_(kChunk),
        client_null_(kChunk) {}
  ~MultiRow() override {
    for (auto& [rows, s] : stmts_) mysql_stmt_close(s);
  }
  std::string_view name() const override { return "multirow"; }

  void write(std::string_view records, std::size_t count) override {
    const bool txn = count > kChunk;
    if (txn) query(m_, "START TRANSACTION");
    RecordReader reader(records);
    EventView e;
    for (std::size_t done = 0; done < count;) {
      const std::size_t rows = std::min(kChunk, count - done);
      for (std::size_t i = 0; i < rows && reader.next(e); ++i) {
        ids_[i] = e.id;
        received_[i] = e.received_us;
        at_[i] = e.at_us;
        values_[i] = e.value;
        std::memcpy(&names_[i * kMaxNameBytes], e.name.data(), e.name.size());
        name_lens_[i] = e.name.size();
        client_null_[i] = e.client_id.empty();
        std::memcpy(&clients_[i * kMaxClientIdBytes], e.client_id.data(), e.client_id.size());
        client_lens_[i] = e.client_id.size();
      }
      MYSQL_STMT* s = statement(rows);
      if (mysql_stmt_execute(s)) fail("multirow execute", s);
      done += rows;
    }
    if (txn) query(m_, "COMMIT");
  }

 private:
  MYSQL_STMT* statement(std::size_t rows) {
    if (auto it = stmts_.find(rows); it != stmts_.end()) return it->second;
    std::string sql = "INSERT INTO " + std::string(kTable) + " " + std::string(kColumns) + " VALUES ";
    for (std::size_t i = 0; i < rows; ++i) sql += i ? ",(?,?,?,?,?,?)" : "(?,?,?,?,?,?)";
    sql += " ON DUPLICATE KEY UPDATE id = id";
    MYSQL_STMT* s = mysql_stmt_init(m_);
    if (mysql_stmt_prepare(s, sql.data(), sql.size())) fail("multirow prepare", s);
    std::vector<MYSQL_BIND> b(rows * 6);
    std::memset(b.data(), 0, b.size() * sizeof(MYSQL_BIND));
    for (std::size_t i = 0; i < rows; ++i) {
      MYSQL_BIND* r = &b[i * 6];
      r[0].buffer_type = MYSQL_TYPE_LONGLONG;
      r[0].buffer = &ids_[i];
      r[0].is_unsigned = 1;
      r[1].buffer_type = MYSQL_TYPE_LONGLONG;
      r[1].buffer = &received_[i];
      r[2].buffer_type = MYSQL_TYPE_LONGLONG;
      r[2].buffer = &at_[i];
      r[3].buffer_type = MYSQL_TYPE_STRING;
      r[3].buffer = &names_[i * kMaxNameBytes];
      r[3].buffer_length = kMaxNameBytes;
      r[3].length = &name_lens_[i];
      r[4].buffer_type = MYSQL_TYPE_LONGLONG;
      r[4].buffer = &values_[i];
      r[5].buffer_type = MYSQL_TYPE_STRING;
      r[5].buffer = &clients_[i * kMaxClientIdBytes];
      r[5].buffer_length = kMaxClientIdBytes;
      r[5].length = &client_lens_[i];
      r[5].is_null = &client_null_[i];
    }
    if (mysql_stmt_bind_param(s, b.data())) fail("multirow bind", s);
    stmts_.emplace(rows, s);
    return s;
  }

  MYSQL* m_;
  std::map<std::size_t, MYSQL_STMT*> stmts_;
  std::vector<std::uint64_t> ids_;
  std::vector<std::int64_t> received_, at_, values_;
  std::vector<char> names_;
  std::vector<unsigned long> name_lens_;
  std::vector<char> clients_;
  std::vector<unsigned long> client_lens_;
  std::vector<my_bool> client_null_;
};

// (b) Array binding: one single-row INSERT executed once per batch with
// column-wise arrays; strings are pointers straight into the records.
class ArrayBinding final : public Method {
 public:
  explicit ArrayBinding(MYSQL* m) : m_(m) {
    const std::string sql = "INSERT INTO " + std::string(kTable) + " " + std::string(kColumns) +
                            " VALUES (?,?,?,?,?,?) ON DUPLICATE KEY UPDATE id = id";
    s_ = mysql_stmt_init(m_);
    if (mysql_stmt_prepare(s_, sql.data(), sql.size())) fail("array prepare", s_);
  }
  ~ArrayBinding() override { mysql_stmt_close(s_); }
  std::string_view name() const override { return "array"; }

  void write(std::string_view records, std::size_t count) override {
    if (ids_.size() < count) grow(count);
    RecordReader reader(records);
    EventView e;
    std::size_t n = 0;
    while (n < count && reader.next(e)) {
      ids_[n] = e.id;
      received_[n] = e.received_us;
      at_[n] = e.at_us;
      values_[n] = e.value;
      names_[n] = e.name.data();
      name_lens_[n] = e.name.size();
      clients_[n] = e.client_id.data();
      client_lens_[n] = e.client_id.size();
      client_ind_[n] = e.client_id.empty() ? STMT_INDICATOR_NULL : STMT_INDICATOR_NONE;
      ++n;
    }
    const unsigned int size = static_cast<unsigned int>(n);
    mysql_stmt_attr_set(s_, STMT_ATTR_ARRAY_SIZE, &size);
    MYSQL_BIND b[6];
    std::memset(b, 0, sizeof b);
    b[0].buffer_type = MYSQL_TYPE_LONGLONG;
    b[0].buffer = ids_.data();
    b[0].is_unsigned = 1;
    b[1].buffer_type = MYSQL_TYPE_LONGLONG;
    b[1].buffer = received_.data();
    b[2].buffer_type = MYSQL_TYPE_LONGLONG;
    b[2].buffer = at_.data();
    b[3].buffer_type = MYSQL_TYPE_STRING;
    b[3].buffer = names_.data();
    b[3].length = name_lens_.data();
    b[4].buffer_type = MYSQL_TYPE_LONGLONG;
    b[4].buffer = values_.data();
    b[5].buffer_type = MYSQL_TYPE_STRING;
    b[5].buffer = clients_.data();
    b[5].length = client_lens_.data();
    b[5].u.indicator = client_ind_.data();
    if (mysql_stmt_bind_param(s_, b)) fail("array bind", s_);
    if (mysql_stmt_execute(s_)) fail("array execute", s_);
  }

 private:
  void grow(std::size_t n) {
    ids_.resize(n);
    received_.resize(n);
    at_.resize(n);
    values_.resize(n);
    names_.resize(n);
    name_lens_.resize(n);
    clients_.resize(n);
    client_lens_.resize(n);
    client_ind_.resize(n);
  }

  MYSQL* m_;
  MYSQL_STMT* s_ = nullptr;
  std::vector<std::uint64_t> ids_;
  std::vector<std::int64_t> received_, at_, values_;
  std::vector<const char*> names_, clients_;
  std::vector<unsigned long> name_lens_, client_lens_;
  std::vector<char> client_ind_;
};

// (c) LOAD DATA LOCAL INFILE from memory: the batch is rendered as tab-separated
// text and handed to the server through the local infile callbacks.
class LoadData final : public Method {
 public:
  explicit LoadData(MYSQL* m) : m_(m) {
    sql_ = "LOAD DATA LOCAL INFILE 'batch' IGNORE INTO TABLE " + std::string(kTable) +
           " CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\'"
           " LINES TERMINATED BY '\\n' " +
           std::string(kColumns);
    mysql_set_local_infile_handler(m_, &LoadData::init, &LoadData::read, &LoadData::end, &LoadData::error, this);
  }
  std::string_view name() const override { return "loaddata"; }

  void write(std::string_view records, std::size_t) override {
    text_.clear();
    RecordReader reader(records);
    EventView e;
    while (reader.next(e)) {
      number(e.id);
      text_ += '\t';
      number(e.received_us);
      text_ += '\t';
      number(e.at_us);
      text_ += '\t';
      escaped(e.name);
      text_ += '\t';
      number(e.value);
      text_ += '\t';
      if (e.client_id.empty()) {
        text_ += "\\N";
      } else {
        escaped(e.client_id);
      }
      text_ += '\n';
    }
    offset_ = 0;
    query(m_, sql_);
  }

 private:
  template <typename T>
  void number(T v) {
    char buf[24];
    const auto r = std::to_chars(buf, buf + sizeof buf, v);
    text_.append(buf, r.ptr);
  }
  void escaped(std::string_view s) {
    for (const char c : s) {
      switch (c) {
        case '\\': text_ += "\\\\"; break;
        case '\t': text_ += "\\t"; break;
        case '\n': text_ += "\\n"; break;
        case '\0': text_ += "\\0"; break;
        default: text_ += c;
      }
    }
  }
  static int init(void** ptr, const char*, void* self) {
    *ptr = self;
    return 0;
  }
  static int read(void* ptr, char* buf, unsigned int len) {
    auto* self = static_cast<LoadData*>(ptr);
    const std::size_t n = std::min<std::size_t>(len, self->text_.size() - self->offset_);
    std::memcpy(buf, self->text_.data() + self->offset_, n);
    self->offset_ += n;
    return static_cast<int>(n);
  }
  static void end(void*) {}
  static int error(void*, char* msg, unsigned int len) {
    std::snprintf(msg, len, "batch could not be read");
    return 1;
  }

  MYSQL* m_;
  std::string sql_;
  std::string text_;
  std::size_t offset_ = 0;
};

// The sink itself: what the product does (automatic: array binding on
// MariaDB), and its multi-row fallback for servers without array binding.
class SinkWrite final : public Method {
 public:
  SinkWrite(std::string_view name, std::unique_ptr<Sink> sink) : name_(name), sink_(std::move(sink)) {}
  std::string_view name() const override { return name_; }
  void write(std::string_view records, std::size_t count) override {
    if (Status s = sink_->write(records, count); !s) {
      std::fprintf(stderr, "sink write: %s\n", s.message().c_str());
      std::exit(1);
    }
  }

 private:
  std::string_view name_;
  std::unique_ptr<Sink> sink_;
};

// Batches of `batch` events, `rows` in all, with ids 1..rows. Names are 8 to
// 40 bytes, some multibyte; a third of the events carry a client id.
std::vector<EventBuffer> make_batches(std::size_t rows, std::size_t batch) {
  static const char* const kNames[] = {"hoge",           "page.view",     "signup.completed",
                                       "api.latency_ms", "計測.応答時間", "checkout.cart.items.count"};
  std::vector<EventBuffer> out;
  std::string client;
  for (std::size_t id = 1; id <= rows; ++id) {
    if ((id - 1) % batch == 0) out.emplace_back();
    EventView e;
    e.id = (std::uint64_t{1} << 40) + id;
    e.received_us = 1'700'000'000'000'000 + static_cast<std::int64_t>(id) * 37;
    e.at_us = e.received_us - 1000;
    e.value = static_cast<std::int64_t>(id * 7919 % 100'000) - 50'000;
    e.name = kNames[id % std::size(kNames)];
    client = "client-" + std::to_string(id);
    e.client_id = id % 3 == 0 ? std::string_view(client) : std::string_view();
    out.back().append(e);
  }
  return out;
}

double run(Method& method, MYSQL* admin, const std::vector<EventBuffer>& batches, std::size_t rows) {
  query(admin, "TRUNCATE TABLE " + std::string(kTable));
  const auto start = std::chrono::steady_clock::now();
  for (const EventBuffer& b : batches) method.write(b.view(), b.count);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  query(admin, "SELECT COUNT(*) FROM " + std::string(kTable));
  MYSQL_RES* res = mysql_store_result(admin);
  const MYSQL_ROW row = mysql_fetch_row(res);
  const std::size_t stored = std::strtoull(row[0], nullptr, 10);
  mysql_free_result(res);
  if (stored != rows) {
    std::fprintf(stderr, "%.*s stored %zu rows, expected %zu\n", static_cast<int>(method.name().size()),
                 method.name().data(), stored, rows);
    std::exit(1);
  }
  return static_cast<double>(rows) / seconds;
}

int bench_main(int argc, char** argv) {
  const char* env = std::getenv("KIROKU_TEST_MYSQL_URL");
  std::string url_text = env ? env : "";
  std::size_t rows = 100'000;
  int rounds = 5;
  std::vector<std::string> methods = {"multirow", "array", "loaddata", "sink", "sink_multirow"};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--url") {
      url_text = argv[i + 1];
    } else if (flag == "--rows") {
      rows = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (flag == "--rounds") {
      rounds = std::atoi(argv[i + 1]);
    } else if (flag == "--method") {
      methods = {argv[i + 1]};
    } else {
      std::fprintf(stderr, "usage: %s [--url URL] [--rows N] [--rounds R] [--method M]\n", argv[0]);
      return 2;
    }
  }
  if (rows == 0 || rounds < 1) {
    std::fprintf(stderr, "--rows and --rounds must be positive\n");
    return 2;
  }
  if (url_text.empty()) {
    std::fprintf(stderr, "set KIROKU_TEST_MYSQL_URL or --url (run under scripts/with-mariadb.sh)\n");
    return 2;
  }
  Result<MysqlUrl> url = parse_mysql_url(url_text);
  if (!url) {
    std::fprintf(stderr, "%s\n", url.status().message().c_str());
    return 2;
  }
  // The sink creates the table (and so the benchmark uses the product's schema).
  SinkOptions options;
  options.table = std::string(kTable);
  const auto make_sink = [&](MysqlInsertMethod method) -> std::unique_ptr<Sink> {
    MysqlSinkTuning tuning;
    tuning.method = method;
    Result<std::unique_ptr<Sink>> sink = make_mysql_sink(url_text, options, tuning);
    Status s = sink.ok() ? (*sink)->open() : sink.status();
    if (!s.ok()) {
      std::fprintf(stderr, "sink: %s\n", s.message().c_str());
      std::exit(1);
    }
    return std::move(*sink);
  };
  make_sink(MysqlInsertMethod::automatic).reset();
  MYSQL* admin = connect(*url);
  MYSQL* conn = connect(*url);
  std::vector<std::unique_ptr<Method>> runners;
  for (const std::string& name : methods) {
    if (name == "multirow") {
      runners.push_back(std::make_unique<MultiRow>(conn));
    } else if (name == "array") {
      runners.push_back(std::make_unique<ArrayBinding>(conn));
    } else if (name == "loaddata") {
      runners.push_back(std::make_unique<LoadData>(conn));
    } else if (name == "sink") {
      runners.push_back(std::make_unique<SinkWrite>("sink", make_sink(MysqlInsertMethod::automatic)));
    } else if (name == "sink_multirow") {
      runners.push_back(std::make_unique<SinkWrite>("sink_multirow", make_sink(MysqlInsertMethod::multi_row)));
    } else {
      std::fprintf(stderr, "unknown method %s\n", name.c_str());
      return 2;
    }
  }
  std::printf("server %s, %zu rows per run, %d rounds after one warm-up round\n", mysql_get_server_info(admin), rows,
              rounds);
  std::printf("%-14s %8s %14s %14s\n", "method", "batch", "median rows/s", "best rows/s");
  for (const std::size_t batch : {std::size_t{100}, std::size_t{1000}, std::size_t{10000}}) {
    const std::vector<EventBuffer> batches = make_batches(rows, batch);
    // Rounds interleave the methods so that drift in the server affects all alike.
    std::vector<std::vector<double>> rates(runners.size());
    for (int r = -1; r < rounds; ++r) {
      for (std::size_t m = 0; m < runners.size(); ++m) {
        const double rate = run(*runners[m], admin, batches, rows);
        if (r >= 0) rates[m].push_back(rate);
      }
    }
    for (std::size_t m = 0; m < runners.size(); ++m) {
      std::sort(rates[m].begin(), rates[m].end());
      const std::string_view name = runners[m]->name();
      std::printf("%-14.*s %8zu %14.0f %14.0f\n", static_cast<int>(name.size()), name.data(), batch,
                  rates[m][rates[m].size() / 2], rates[m].back());
    }
    std::fflush(stdout);
  }
  runners.clear();
  mysql_close(conn);
  mysql_close(admin);
  return 0;
}

}  // namespace
}  // namespace kiroku

int main(int argc, char** argv) { return kiroku::bench_main(argc, argv); }
