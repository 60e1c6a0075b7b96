// dead_letter_test.cpp - unit tests of refused-row isolation (the batch writer's bisection), the
// dead-letter file and the spool commands.
#include "ingest/dead_letter.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "app/spool_cmd.h"
#include "ingest/batch_writer.h"
#include "ingest/spool.h"
#include "support/fake_sink.h"

namespace kiroku {
namespace {

namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::size_t lines_of(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kiroku-dl-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

using FakeSink = testing::FakeSink;

// `n` events with ids 1..n; those whose index is in `bad` are named "bad...".
std::unique_ptr<EventBuffer> events(std::size_t n, const std::set<std::size_t>& bad, std::uint64_t first = 1) {
  auto b = std::make_unique<EventBuffer>();
  for (std::size_t i = 0; i < n; ++i) {
    const std::string name = bad.count(i) ? "bad" + std::to_string(i) : "ok";
    b->append({first + i, 1'700'000'000'000'000, 1'700'000'000'000'000, static_cast<std::int64_t>(i), name, ""});
  }
  return b;
}

// Submits one batch and waits for its report.
bool write_batch(BatchWriter& w, std::unique_ptr<EventBuffer> e, std::atomic<int>& done, std::atomic<bool>& ok,
                 int wait_ms = 10'000) {
  const int before = done.load();
  Batch b;
  b.shard = 0;
  b.count = e->count;
  b.events = std::move(e);
  w.submit(std::move(b));
  for (int i = 0; i < wait_ms / 5 && done.load() == before; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return done.load() > before && ok.load();
}

struct Harness {
  TempDir dir;
  FakeSink sink;
  std::unique_ptr<DeadLetterFile> dl;
  std::atomic<int> done{0};
  std::atomic<bool> ok{false};
  std::unique_ptr<BatchWriter> writer;

  explicit Harness(std::uint64_t max_bytes = 1 << 20) {
    auto f = DeadLetterFile::open({dir.path() + "/dead-letter.ndjson", max_bytes});
    EXPECT_TRUE(f.ok()) << f.status().message();
    dl = std::move(*f);
    writer = std::make_unique<BatchWriter>(sink, nullptr, 64 << 20, BatchWriterHooks{}, dl.get());
    writer->start([this](unsigned, std::uint64_t, bool good) {
      ok = good;
      ++done;
    });
  }
  std::string file() const { return read_file(dl->path()); }
};

TEST(Bisection, RefusedRowsAloneInTheDeadLetterFileEveryOtherRowStored) {
  Harness h;
  const std::set<std::size_t> bad = {17, 5003, 9998};
  ASSERT_TRUE(write_batch(*h.writer, events(10'000, bad), h.done, h.ok));
  EXPECT_EQ(h.sink.rows(), 10'000u - bad.size());
  EXPECT_EQ(h.sink.replays(), 0u) << "a row stored twice";
  for (std::size_t i : bad) EXPECT_EQ(h.sink.stored().count(i + 1), 0u);
  const std::string text = h.file();
  EXPECT_EQ(lines_of(text), 3u) << text;
  for (std::size_t i : bad) EXPECT_NE(text.find("\"id\":" + std::to_string(i + 1) + ","), std::string::npos);
  EXPECT_NE(text.find("\"reason\":\"constraint\""), std::string::npos);
  EXPECT_NE(text.find("\"error\":\"CHECK constraint failed: name (bad17)\""), std::string::npos) << text;
  // 1 whole + about 1.5 tries per level per refused row, log2(10000) = 14 levels.
  std::printf("FIGURE bisection rows=10000 refused=3 sink_writes=%zu\n", h.sink.writes());
  EXPECT_LE(h.sink.writes(), 70u);
  EXPECT_TRUE(h.writer->sink_healthy());
}

TEST(Bisection, EveryShapeOfSmallBatch) {
  // Every subset of bad rows in batches of 1..10 rows (fewer than kTableFaultRows),
  // whether the sink names the refused row, names the wrong one, or none.
  for (const auto hint : {FakeSink::Hint::none, FakeSink::Hint::right, FakeSink::Hint::wrong}) {
    for (std::size_t n = 1; n <= 10; ++n) {
      for (unsigned mask = 0; mask < (1u << n); mask += (n > 6 ? 7 : 1)) {
        Harness h;
        h.sink.hint = hint;
        std::set<std::size_t> bad;
        for (std::size_t i = 0; i < n; ++i)
          if (mask & (1u << i)) bad.insert(i);
        ASSERT_TRUE(write_batch(*h.writer, events(n, bad), h.done, h.ok)) << n << " " << mask;
        EXPECT_EQ(h.sink.rows(), n - bad.size());
        EXPECT_EQ(h.sink.replays(), 0u) << "a row stored twice";
        for (std::size_t i : bad) EXPECT_EQ(h.sink.stored().count(i + 1), 0u);
        EXPECT_EQ(lines_of(h.file()), bad.size());
      }
    }
  }
}

// 10,000 rows with 3 refused, the sink naming the refused row as `hint` says:
// every other row stored once, the 3 in the dead-letter file. Returns the
// sink transactions it took.
std::size_t write_three_refused(FakeSink::Hint hint) {
  Harness h;
  h.sink.hint = hint;
  const std::set<std::size_t> bad = {17, 5003, 9998};
  EXPECT_TRUE(write_batch(*h.writer, events(10'000, bad), h.done, h.ok));
  EXPECT_EQ(h.sink.rows(), 10'000u - bad.size());
  EXPECT_EQ(h.sink.replays(), 0u) << "a row stored twice";
  for (std::size_t i : bad) EXPECT_EQ(h.sink.stored().count(i + 1), 0u);
  EXPECT_EQ(lines_of(h.file()), 3u);
  EXPECT_TRUE(h.writer->sink_healthy());
  return h.sink.writes();
}

TEST(Bisection, ARowTheDatabaseNamesCostsThreeTransactions) {
  // The whole, then per refused row: the rows before it, it alone, the rows after it.
  const std::size_t writes = write_three_refused(FakeSink::Hint::right);
  std::printf("FIGURE named_rows rows=10000 refused=3 sink_writes=%zu\n", writes);
  EXPECT_EQ(writes, 10u);
}

TEST(Bisection, AWrongRowNamedFallsBackToBisectionAndLosesNothing) {
  EXPECT_LE(write_three_refused(FakeSink::Hint::wrong), 72u);
}

class TableFault : public ::testing::TestWithParam<FakeSink::Hint> {};
INSTANTIATE_TEST_SUITE_P(Hints, TableFault,
                         ::testing::Values(FakeSink::Hint::none, FakeSink::Hint::right, FakeSink::Hint::wrong));

TEST_P(TableFault, ATableThatRefusesEveryRowKeepsTheBatch) {
  Harness h;
  h.sink.hint = GetParam();
  h.sink.refuse_all = true;
  EXPECT_FALSE(write_batch(*h.writer, events(100, {}), h.done, h.ok, 500));  // not reported: retrying
  for (int i = 0; i < 200 && h.writer->sink_healthy(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_FALSE(h.writer->sink_healthy());
  EXPECT_NE(h.writer->last_error().find("the table is at fault"), std::string::npos) << h.writer->last_error();
  EXPECT_EQ(h.file(), "");
  EXPECT_TRUE((h.sink.rows() == 0));
  // The table is fixed: the batch goes through whole.
  h.sink.refuse_all = false;
  for (int i = 0; i < 2000 && h.done.load() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_TRUE(h.ok.load());
  EXPECT_EQ(h.sink.rows(), 100u);
  EXPECT_EQ(h.file(), "");
}

TEST(Bisection, AFullDeadLetterFileKeepsTheBatchAndRetries) {
  Harness h(300);  // room for about one line
  EXPECT_FALSE(write_batch(*h.writer, events(50, {3, 30}), h.done, h.ok, 500));
  for (int i = 0; i < 200 && h.writer->sink_healthy(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_FALSE(h.writer->sink_healthy());
  EXPECT_NE(h.writer->last_error().find("is full"), std::string::npos) << h.writer->last_error();
  EXPECT_EQ(h.file(), "");  // all or nothing of a batch's refused rows
}

TEST(Bisection, IdsAlreadyDeadLetteredAreNotWrittenTwice) {
  TempDir dir;
  const std::string path = dir.path() + "/dead-letter.ndjson";
  for (int run = 0; run < 2; ++run) {
    FakeSink sink;
    auto f = DeadLetterFile::open({path, 1 << 20});
    ASSERT_TRUE(f.ok());
    std::atomic<int> done{0};
    std::atomic<bool> ok{false};
    BatchWriter w(sink, nullptr, 64 << 20, BatchWriterHooks{}, f->get());
    w.start([&](unsigned, std::uint64_t, bool good) {
      ok = good;
      ++done;
    });
    ASSERT_TRUE(write_batch(w, events(40, {1, 2, 39}), done, ok));
  }
  EXPECT_EQ(lines_of(read_file(path)), 3u);
}

TEST(DeadLetterFile, TornLastLineIsCutAndLinesParseBack) {
  TempDir dir;
  const std::string path = dir.path() + "/dead-letter.ndjson";
  std::string lines;
  const std::string name = "na\"me\n\x01";
  append_dead_letter_line(lines, {42, 1, 2, -3, name, "cid"}, "data_too_long", "too \"long\"", 7);
  append_dead_letter_line(lines, {43, 1, 2, 3, "x", ""}, "null", "e", 7);
  {
    std::ofstream out(path, std::ios::binary);
    out << lines << "{\"id\":44,\"recei";
  }
  auto f = DeadLetterFile::open({path, 1 << 20});
  ASSERT_TRUE(f.ok()) << f.status().message();
  EXPECT_EQ(read_file(path), lines);
  EXPECT_TRUE((*f)->holds(42));
  EXPECT_TRUE((*f)->holds(43));
  EXPECT_FALSE((*f)->holds(44));
  std::vector<std::byte> records;
  std::uint64_t id = 0;
  ASSERT_TRUE(parse_dead_letter_line(lines.substr(0, lines.find('\n')), records, id));
  EXPECT_EQ(id, 42u);
  RecordReader reader({reinterpret_cast<const char*>(records.data()), records.size()});
  EventView e;
  ASSERT_TRUE(reader.next(e));
  EXPECT_EQ(e.name, name);
  EXPECT_EQ(e.client_id, "cid");
  EXPECT_EQ(e.value, -3);
  EXPECT_FALSE(parse_dead_letter_line("not json", records, id));
  // A second holder of the directory is refused.
  auto second = DeadLetterFile::open({path, 1 << 20});
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.status().message().find("in use by another process"), std::string::npos);
}

// ---- The spool commands

std::string run(std::string_view command, const std::string& dir, int& rc) {
  ServeConfig cfg;
  cfg.spool_dir = dir;
  cfg.sink = "sqlite://" + dir + "/../events.db";
  char* buf = nullptr;
  std::size_t size = 0;
  FILE* out = ::open_memstream(&buf, &size);
  rc = run_spool_command(command, cfg, out, out);
  std::fclose(out);
  std::string text(buf, size);
  std::free(buf);
  return text;
}

TEST(SpoolCommands, CheckDumpAndTheLockOfALiveServer) {
  TempDir dir;
  const std::string spool_dir = dir.path() + "/spool";
  std::string corrupt_path;
  {
    auto sp = Spool::open({spool_dir});
    ASSERT_TRUE(sp.ok());
    for (int s = 0; s < 3; ++s) {
      auto w = (*sp)->create(static_cast<unsigned>(s));
      ASSERT_TRUE(w.ok());
      auto e = events(5, {}, static_cast<std::uint64_t>(100 * s + 1));
      ASSERT_TRUE(w->append(e->view()).ok());
      if (s == 1) corrupt_path = w->info().path;
      if (s == 2) {
        ASSERT_TRUE(w->append(e->view().substr(0, 20)).ok());  // a torn tail
      }
    }
    // While it is held, every command refuses.
    int rc = 0;
    const std::string out = run("check", spool_dir, rc);
    EXPECT_EQ(rc, 2);
    EXPECT_NE(out.find("in use by another process"), std::string::npos) << out;
  }
  int rc = -1;
  std::string out = run("check", spool_dir, rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("ok, 5 events"), std::string::npos) << out;
  EXPECT_NE(out.find("torn at offset"), std::string::npos) << out;
  // Flip a byte of a record of the second segment.
  {
    std::fstream f(corrupt_path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(kSegmentHeaderBytes + 30));
    f.put('\x7f');
  }
  out = run("check", spool_dir, rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(out.find(corrupt_path + ": corrupt at offset 16 after 0 whole events"), std::string::npos) << out;

  // A dead-letter line, then dump: every whole event once, as NDJSON.
  {
    std::string line;
    append_dead_letter_line(line, {999, 1, 2, 3, "toolongname", ""}, "data_too_long", "Data too long", 5);
    std::ofstream(spool_dir + "/dead-letter.ndjson", std::ios::binary) << line;
  }
  out = run("dump", spool_dir, rc);
  EXPECT_EQ(rc, 1);  // torn and corrupt segments
  EXPECT_EQ(lines_of(out), 5u + 0u + 5u + 1u) << out;
  EXPECT_NE(out.find("{\"source\":\"spool\",\"segment\":\""), std::string::npos);
  EXPECT_NE(out.find("{\"source\":\"dead-letter\",\"id\":999,"), std::string::npos) << out;
}

TEST(SpoolCommands, ReplayStoresWhatTheSinkTakesNowAndKeepsTheRest) {
  TempDir dir;
  const std::string spool_dir = dir.path() + "/spool";
  fs::create_directories(spool_dir);
  std::string lines;
  append_dead_letter_line(lines, {1, 1, 2, 3, "fine", ""}, "data_too_long", "Data too long", 5);
  append_dead_letter_line(lines, {2, 1, 2, 3, std::string(255, 'n'), "c"}, "data_too_long", "x", 5);
  lines += "garbage line\n";
  std::ofstream(spool_dir + "/dead-letter.ndjson", std::ios::binary) << lines;
  int rc = -1;
  const std::string out = run("replay", spool_dir, rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("2 events stored, 0 still refused, 1 left in the file"), std::string::npos) << out;
  EXPECT_EQ(read_file(spool_dir + "/dead-letter.ndjson"), "garbage line\n");
  EXPECT_TRUE(fs::exists(dir.path() + "/events.db"));
}

}  // namespace
}  // namespace kiroku
