// spool_test.cpp - unit tests of the spool: segments written, listed, read back, limits.
#include "ingest/spool.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "common/event.h"

namespace kiroku {
namespace {

namespace fs = std::filesystem;

// `n` events with ids from `first_id`, names of every length 1..255 and some client ids.
EventBuffer make_events(std::size_t n, std::uint64_t first_id = 1) {
  EventBuffer buffer;
  std::string name;
  std::string client;
  for (std::size_t i = 0; i < n; ++i) {
    name.assign(1 + (i * 37) % kMaxNameBytes, static_cast<char>('a' + i % 26));
    client.assign(i % 3 == 0 ? 0 : (i * 11) % (kMaxClientIdBytes + 1), 'c');
    const auto k = static_cast<std::int64_t>(i);
    buffer.append({first_id + i, 1'700'000'000'000'000 + k, 1'600'000'000'000'000 - k, k * 7 - 3, name, client});
  }
  return buffer;
}

// Byte offset of each record in a buffer of well-formed records, plus the end.
std::vector<std::size_t> record_offsets(std::string_view records) {
  std::vector<std::size_t> offsets{0};
  RecordReader reader(records);
  EventView e;
  std::size_t at = 0;
  while (reader.next(e)) {
    at += record_size(e.name.size(), e.client_id.size());
    offsets.push_back(at);
  }
  return offsets;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const std::string& path, std::string_view bytes) {
  // Replace rather than truncate: ext4 flushes a file truncated and rewritten.
  ::unlink(path.c_str());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string segment_header(std::uint64_t seq, std::uint32_t version = kSegmentVersion,
                           std::string_view magic = "KSEG") {
  std::string h(kSegmentHeaderBytes, '\0');
  std::memcpy(h.data(), magic.data(), 4);
  std::memcpy(h.data() + 4, &version, 4);
  std::memcpy(h.data() + 8, &seq, 8);
  return h;
}

struct ReadBack {
  Status status;
  SegmentReadResult result;
  std::vector<std::uint64_t> ids;
  std::vector<std::int64_t> values;
  std::size_t calls = 0;
  std::size_t largest_run = 0;
};

// Reads a segment, decoding each run handed to the callback to check its count.
ReadBack read_back(const std::string& path, std::size_t max_records = 4096) {
  ReadBack back;
  static std::vector<std::byte> scratch;  // reused, as the server does
  auto r = read_segment(
      path, scratch,
      [&](std::string_view records, std::size_t count) {
        ++back.calls;
        back.largest_run = std::max(back.largest_run, count);
        RecordReader reader(records);
        EventView e;
        std::size_t seen = 0;
        while (reader.next(e)) {
          ++seen;
          back.ids.push_back(e.id);
          back.values.push_back(e.value);
        }
        EXPECT_EQ(seen, count);
        return Status{};
      },
      max_records);
  if (r.ok()) back.result = r.value();
  back.status = r.status();
  return back;
}

class SpoolDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "kiroku-spool-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    dir_ = root_ + "/spool";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  std::unique_ptr<Spool> open_spool(std::uint64_t max_bytes = 1ull << 30, bool sync_dir = false) {
    auto spool = Spool::open({dir_, max_bytes, sync_dir});
    EXPECT_TRUE(spool.ok()) << spool.status().message();
    return spool.ok() ? std::move(spool.value()) : nullptr;
  }

  // A segment of `count` records written through the spool; returns its info.
  SegmentInfo write_segment(Spool& spool, unsigned shard, std::size_t count, std::uint64_t first_id = 1) {
    auto writer = spool.create(shard);
    EXPECT_TRUE(writer.ok()) << writer.status().message();
    if (!writer.ok()) return {};
    const EventBuffer events = make_events(count, first_id);
    EXPECT_TRUE(writer->append(events.view()).ok());
    return writer->seal();
  }

  std::string root_;
  std::string dir_;
};

// ---- Round trip

using SpoolRoundTrip = SpoolDirTest;

TEST_F(SpoolRoundTrip, ThousandsOfRecordsAcrossReadChunks) {
  auto spool = open_spool();
  ASSERT_TRUE(spool);
  auto writer = spool->create(3);
  ASSERT_TRUE(writer.ok()) << writer.status().message();
  EXPECT_TRUE(writer->is_open());

  // Appends of 1, 2, ... 64 records; several megabytes, so reading crosses
  // chunk boundaries in the middle of records.
  const std::size_t total = 20000;
  const EventBuffer events = make_events(total);
  const std::vector<std::size_t> offsets = record_offsets(events.view());
  ASSERT_EQ(offsets.size(), total + 1);
  ASSERT_GT(events.bytes.size(), 3 * kSegmentReadChunk);
  std::size_t i = 0;
  for (std::size_t step = 1; i < total; step = step % 64 + 1) {
    const std::size_t n = std::min(step, total - i);
    ASSERT_TRUE(writer->append(events.view().substr(offsets[i], offsets[i + n] - offsets[i])).ok());
    i += n;
  }
  ASSERT_TRUE(writer->sync().ok());
  const SegmentInfo info = writer->seal();
  EXPECT_FALSE(writer->is_open());
  EXPECT_EQ(info.shard, 3u);
  EXPECT_EQ(info.bytes, kSegmentHeaderBytes + events.bytes.size());
  EXPECT_EQ(fs::file_size(info.path), info.bytes);
  EXPECT_EQ(fs::path(info.path).filename().string().size(), 24u);
  EXPECT_TRUE(info.path.ends_with("-03.kseg"));
  const std::string bytes = read_file(info.path);
  EXPECT_EQ(bytes.substr(0, kSegmentHeaderBytes), segment_header(info.seq));
  EXPECT_EQ(bytes.substr(kSegmentHeaderBytes), events.view());

  const ReadBack back = read_back(info.path, 100);
  ASSERT_TRUE(back.status.ok()) << back.status.message();
  EXPECT_EQ(back.result.tail, SegmentReadResult::Tail::clean);
  EXPECT_EQ(back.result.records, total);
  EXPECT_EQ(back.result.bytes, events.bytes.size());
  EXPECT_EQ(back.result.tail_offset, info.bytes);
  EXPECT_EQ(back.largest_run, 100u);
  EXPECT_GE(back.calls, total / 100);
  ASSERT_EQ(back.ids.size(), total);
  for (std::size_t k = 0; k < total; ++k) {
    ASSERT_EQ(back.ids[k], k + 1);
    ASSERT_EQ(back.values[k], static_cast<std::int64_t>(k) * 7 - 3);
  }
}

TEST_F(SpoolRoundTrip, EmptySegmentReadsClean) {
  auto spool = open_spool();
  ASSERT_TRUE(spool);
  auto writer = spool->create(0);
  ASSERT_TRUE(writer.ok());
  EXPECT_TRUE(writer->append({}).ok());
  const SegmentInfo info = writer->seal();
  const ReadBack back = read_back(info.path);
  ASSERT_TRUE(back.status.ok());
  EXPECT_EQ(back.result.tail, SegmentReadResult::Tail::clean);
  EXPECT_EQ(back.result.records, 0u);
  EXPECT_EQ(back.result.tail_offset, kSegmentHeaderBytes);
  EXPECT_EQ(back.calls, 0u);
}

TEST_F(SpoolRoundTrip, ScratchIsReusedAndCallbackErrorStops) {
  auto spool = open_spool();
  ASSERT_TRUE(spool);
  const SegmentInfo info = write_segment(*spool, 0, 1000);
  std::vector<std::byte> scratch;
  std::size_t calls = 0;
  auto r = read_segment(
      info.path, scratch,
      [&](std::string_view, std::size_t) { return ++calls == 2 ? Status::transient("database down") : Status{}; }, 10);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().kind(), ErrorKind::transient);
  EXPECT_EQ(r.status().message(), "database down");
  EXPECT_EQ(calls, 2u);

  const std::byte* data = scratch.data();
  auto again = read_segment(info.path, scratch, [](std::string_view, std::size_t) { return Status{}; });
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->records, 1000u);
  EXPECT_EQ(scratch.data(), data);
  EXPECT_EQ(scratch.size(), kSegmentReadChunk);
}

TEST_F(SpoolRoundTrip, MissingFileIsNotFound) {
  std::vector<std::byte> scratch;
  auto r = read_segment(root_ + "/nope.kseg", scratch, [](std::string_view, std::size_t) { return Status{}; });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().kind(), ErrorKind::not_found);
}

TEST_F(SpoolRoundTrip, ClosedWriterRefusesAppends) {
  SegmentWriter none;
  EXPECT_FALSE(none.is_open());
  EXPECT_EQ(none.append("x").kind(), ErrorKind::invalid);
  EXPECT_EQ(none.sync().kind(), ErrorKind::invalid);

  auto spool = open_spool();
  ASSERT_TRUE(spool);
  auto writer = spool->create(1);
  ASSERT_TRUE(writer.ok());
  SegmentWriter moved = std::move(writer.value());
  EXPECT_TRUE(moved.is_open());
  EXPECT_TRUE(moved.append(make_events(3).view()).ok());
  moved.seal();
  EXPECT_EQ(moved.append(make_events(1).view()).kind(), ErrorKind::invalid);
  EXPECT_EQ(spool->create(kMaxSpoolShards).status().kind(), ErrorKind::invalid);
}

// ---- Listing and replay order

using SpoolListing = SpoolDirTest;

TEST_F(SpoolListing, LeftoverInSeqOrderAcrossShards) {
  std::vector<SegmentInfo> written;
  {
    auto spool = open_spool();
    ASSERT_TRUE(spool);
    EXPECT_TRUE(spool->leftover().empty());
    // Four shards each keep a segment open; they seal and reopen in turn.
    std::vector<SegmentWriter> current;
    for (unsigned shard = 0; shard < 4; ++shard) {
      auto w = spool->create(shard);
      ASSERT_TRUE(w.ok());
      current.push_back(std::move(w.value()));
    }
    std::uint64_t id = 1;
    for (int round = 0; round < 5; ++round) {
      for (unsigned shard : {2u, 0u, 3u, 1u}) {
        ASSERT_TRUE(current[shard].append(make_events(3, id).view()).ok());
        id += 3;
        written.push_back(current[shard].seal());
        auto w = spool->create(shard);
        ASSERT_TRUE(w.ok());
        current[shard] = std::move(w.value());
      }
    }
    for (auto& w : current) written.push_back(w.seal());
  }
  // Files that are not segments are ignored.
  write_file(dir_ + "/notes.txt", "hello");
  write_file(dir_ + "/0001-00.kseg", "short name");
  write_file(dir_ + "/000000000000000g-00.kseg", "bad hex");
  fs::create_directory(dir_ + "/00000000000000ff-00.kseg");

  auto spool = open_spool();
  ASSERT_TRUE(spool);
  const std::vector<SegmentInfo>& left = spool->leftover();
  std::sort(written.begin(), written.end(), [](const SegmentInfo& a, const SegmentInfo& b) { return a.seq < b.seq; });
  ASSERT_EQ(left.size(), written.size());
  for (std::size_t i = 0; i < left.size(); ++i) {
    EXPECT_EQ(left[i].path, written[i].path);
    EXPECT_EQ(left[i].seq, written[i].seq);
    EXPECT_EQ(left[i].shard, written[i].shard);
    EXPECT_EQ(left[i].bytes, written[i].bytes);
    if (i > 0) {
      EXPECT_LT(left[i - 1].seq, left[i].seq);
      // Name order is creation order.
      EXPECT_LT(fs::path(left[i - 1].path).filename(), fs::path(left[i].path).filename());
    }
  }
  // Replaying in leftover order gives back every event.
  std::vector<std::uint64_t> ids;
  for (const SegmentInfo& s : left) {
    const ReadBack back = read_back(s.path);
    ASSERT_TRUE(back.status.ok());
    EXPECT_EQ(back.result.tail, SegmentReadResult::Tail::clean);
    ids.insert(ids.end(), back.ids.begin(), back.ids.end());
  }
  std::sort(ids.begin(), ids.end());
  ASSERT_EQ(ids.size(), 60u);
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], i + 1);

  // New segments come after everything found at open.
  auto w = spool->create(7);
  ASSERT_TRUE(w.ok());
  EXPECT_GT(w->info().seq, left.back().seq);
  EXPECT_GT(fs::path(w->info().path).filename(), fs::path(left.back().path).filename());
}

TEST_F(SpoolListing, CreatesMissingParents) {
  dir_ = root_ + "/a/b/c";
  auto spool = open_spool();
  ASSERT_TRUE(spool);
  EXPECT_TRUE(fs::is_directory(dir_));
  EXPECT_TRUE(fs::exists(dir_ + "/LOCK"));
  EXPECT_EQ(spool->dir(), dir_);
}

TEST_F(SpoolListing, UnusableDirectoryIsPermanent) {
  write_file(root_ + "/file", "x");
  auto spool = Spool::open({root_ + "/file/spool"});
  ASSERT_FALSE(spool.ok());
  EXPECT_EQ(spool.status().kind(), ErrorKind::permanent);
  EXPECT_EQ(Spool::open({""}).status().kind(), ErrorKind::invalid);
}

// ---- Torn and corrupt segments

using SpoolTornTail = SpoolDirTest;

TEST_F(SpoolTornTail, EveryCutOfTheLastRecord) {
  const std::size_t n = 40;
  const EventBuffer events = make_events(n);
  const std::vector<std::size_t> offsets = record_offsets(events.view());
  const std::string full = segment_header(9) + std::string(events.view());
  const std::size_t last_start = kSegmentHeaderBytes + offsets[n - 1];
  const std::size_t last_size = full.size() - last_start;
  ASSERT_GT(last_size, kRecordHeaderBytes);
  fs::create_directories(dir_);
  const std::string path = dir_ + "/0000000000000009-00.kseg";
  for (std::size_t cut = 0; cut <= last_size; ++cut) {
    SCOPED_TRACE(cut);
    write_file(path, std::string_view(full).substr(0, last_start + cut));
    const ReadBack back = read_back(path);
    ASSERT_TRUE(back.status.ok());
    const bool whole = cut == 0 || cut == last_size;
    EXPECT_EQ(back.result.tail, whole ? SegmentReadResult::Tail::clean : SegmentReadResult::Tail::torn);
    EXPECT_EQ(back.result.records, cut == last_size ? n : n - 1);
    EXPECT_EQ(back.ids.size(), back.result.records);
    EXPECT_EQ(back.result.tail_offset, cut == last_size ? full.size() : last_start);
    EXPECT_EQ(back.result.bytes, back.result.tail_offset - kSegmentHeaderBytes);
  }
}

TEST_F(SpoolTornTail, TornHeaderHasNoRecords) {
  fs::create_directories(dir_);
  const std::string header = segment_header(1);
  const std::string path = dir_ + "/0000000000000001-00.kseg";
  for (std::size_t size = 0; size < kSegmentHeaderBytes; ++size) {
    write_file(path, std::string_view(header).substr(0, size));
    const ReadBack back = read_back(path);
    ASSERT_TRUE(back.status.ok());
    EXPECT_EQ(back.result.tail, SegmentReadResult::Tail::torn) << size;
    EXPECT_EQ(back.result.records, 0u);
    EXPECT_EQ(back.result.tail_offset, 0u);
  }
}

using SpoolCorrupt = SpoolDirTest;

TEST_F(SpoolCorrupt, FlippedByteInTheMiddle) {
  const std::size_t n = 100;
  const std::size_t bad = 50;
  const EventBuffer events = make_events(n);
  const std::vector<std::size_t> offsets = record_offsets(events.view());
  const std::string good = segment_header(4) + std::string(events.view());
  fs::create_directories(dir_);
  const std::string path = dir_ + "/0000000000000004-02.kseg";
  const std::size_t start = kSegmentHeaderBytes + offsets[bad];
  const std::size_t end = kSegmentHeaderBytes + offsets[bad + 1];
  for (std::size_t at = start; at < end; ++at) {
    for (unsigned char mask : {0x01, 0x80, 0xff}) {
      SCOPED_TRACE(testing::Message() << "byte " << at - start << " mask " << int{mask});
      std::string flipped = good;
      flipped[at] = static_cast<char>(flipped[at] ^ mask);
      write_file(path, flipped);
      const ReadBack back = read_back(path, 7);
      ASSERT_TRUE(back.status.ok());
      EXPECT_EQ(back.result.tail, SegmentReadResult::Tail::corrupt);
      EXPECT_EQ(back.result.records, bad);
      EXPECT_EQ(back.result.tail_offset, start);
      ASSERT_EQ(back.ids.size(), bad);
      EXPECT_EQ(back.ids.back(), bad);
    }
  }
}

TEST_F(SpoolCorrupt, BadHeader) {
  fs::create_directories(dir_);
  const std::string records(make_events(5).view());
  const std::string path = dir_ + "/0000000000000005-01.kseg";
  for (const std::string& header : {segment_header(5, kSegmentVersion, "KSEH"), segment_header(5, 2), segment_header(6),
                                    std::string(kSegmentHeaderBytes, '\0')}) {
    write_file(path, header + records);
    const ReadBack back = read_back(path);
    ASSERT_TRUE(back.status.ok());
    EXPECT_EQ(back.result.tail, SegmentReadResult::Tail::corrupt);
    EXPECT_EQ(back.result.records, 0u);
    EXPECT_EQ(back.result.tail_offset, 0u);
    EXPECT_EQ(back.calls, 0u);
  }
  // The seq is only checked against a segment name.
  const std::string other = dir_ + "/copy.kseg";
  write_file(other, segment_header(6) + records);
  const ReadBack back = read_back(other);
  ASSERT_TRUE(back.status.ok());
  EXPECT_EQ(back.result.tail, SegmentReadResult::Tail::clean);
  EXPECT_EQ(back.result.records, 5u);
}

// ---- Lock

using SpoolLock = SpoolDirTest;

TEST_F(SpoolLock, SecondOpenFailsUntilTheFirstCloses) {
  auto first = open_spool();
  ASSERT_TRUE(first);
  auto second = Spool::open({dir_});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().kind(), ErrorKind::permanent);
  EXPECT_EQ(second.status().message(), "spool directory " + dir_ + " is in use by another process");

  // Another process too.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto s = Spool::open({dir_});
    ::_exit(!s.ok() && s.status().kind() == ErrorKind::permanent ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  first.reset();
  auto third = Spool::open({dir_});
  EXPECT_TRUE(third.ok()) << third.status().message();
}

// ---- Size accounting, removal, quarantine

using SpoolBytes = SpoolDirTest;

TEST_F(SpoolBytes, AccountingAcrossOpenAppendRemove) {
  SegmentInfo a;
  SegmentInfo b;
  {
    auto spool = open_spool();
    ASSERT_TRUE(spool);
    EXPECT_EQ(spool->bytes(), 0u);
    a = write_segment(*spool, 0, 100);
    b = write_segment(*spool, 1, 10);
    EXPECT_EQ(spool->bytes(), a.bytes + b.bytes);
  }
  auto spool = open_spool(a.bytes + b.bytes + 1000);
  ASSERT_TRUE(spool);
  EXPECT_EQ(spool->max_bytes(), a.bytes + b.bytes + 1000);
  EXPECT_EQ(spool->bytes(), a.bytes + b.bytes);
  EXPECT_FALSE(spool->would_exceed(1000));
  EXPECT_TRUE(spool->would_exceed(1001));

  auto w = spool->create(2);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(spool->bytes(), a.bytes + b.bytes + kSegmentHeaderBytes);
  const EventBuffer events = make_events(3);
  ASSERT_TRUE(w->append(events.view()).ok());
  EXPECT_EQ(spool->bytes(), a.bytes + b.bytes + kSegmentHeaderBytes + events.bytes.size());
  EXPECT_EQ(w->info().bytes, kSegmentHeaderBytes + events.bytes.size());

  ASSERT_EQ(spool->leftover().size(), 2u);
  ASSERT_TRUE(spool->remove(spool->leftover()[0]).ok());
  EXPECT_FALSE(fs::exists(a.path));
  EXPECT_EQ(spool->bytes(), b.bytes + kSegmentHeaderBytes + events.bytes.size());

  ASSERT_TRUE(spool->quarantine(spool->leftover()[1]).ok());
  EXPECT_FALSE(fs::exists(b.path));
  EXPECT_TRUE(fs::exists(b.path + ".corrupt"));
  EXPECT_EQ(spool->bytes(), kSegmentHeaderBytes + events.bytes.size());

  const SegmentInfo c = w->seal();
  ASSERT_TRUE(spool->remove(c).ok());
  EXPECT_EQ(spool->bytes(), 0u);
  EXPECT_FALSE(fs::exists(c.path));
  // Removing again is harmless and does not wrap the count.
  EXPECT_TRUE(spool->remove(c).ok());
  EXPECT_EQ(spool->bytes(), 0u);
}

TEST_F(SpoolBytes, QuarantinedSegmentsAreNotReplayedNorReused) {
  SegmentInfo bad;
  {
    auto spool = open_spool();
    ASSERT_TRUE(spool);
    write_segment(*spool, 0, 5);
    bad = write_segment(*spool, 1, 5);
    ASSERT_TRUE(spool->quarantine(bad).ok());
  }
  auto spool = open_spool();
  ASSERT_TRUE(spool);
  ASSERT_EQ(spool->leftover().size(), 1u);
  EXPECT_NE(spool->leftover()[0].path, bad.path);
  EXPECT_EQ(spool->bytes(), spool->leftover()[0].bytes);
  auto w = spool->create(1);
  ASSERT_TRUE(w.ok());
  EXPECT_GT(w->info().seq, bad.seq);
}

TEST_F(SpoolBytes, DirectorySyncAndDataSync) {
  auto spool = open_spool(1ull << 30, true);
  ASSERT_TRUE(spool);
  auto w = spool->create(0);
  ASSERT_TRUE(w.ok()) << w.status().message();
  ASSERT_TRUE(w->append(make_events(10).view()).ok());
  EXPECT_TRUE(w->sync().ok());
  const SegmentInfo info = w->seal();
  EXPECT_EQ(read_back(info.path).result.records, 10u);
}

// ---- Threads: one writer per shard, the Spool shared

using SpoolThreads = SpoolDirTest;

TEST_F(SpoolThreads, ShardsCreateAppendAndRemoveConcurrently) {
  auto spool = open_spool();
  ASSERT_TRUE(spool);
  constexpr unsigned kShards = 4;
  constexpr int kRounds = 50;
  std::vector<std::vector<SegmentInfo>> kept(kShards);
  std::vector<std::thread> threads;
  for (unsigned shard = 0; shard < kShards; ++shard) {
    threads.emplace_back([&, shard] {
      const EventBuffer events = make_events(8, 1000 * shard);
      for (int round = 0; round < kRounds; ++round) {
        auto w = spool->create(shard);
        if (!w.ok() || !w->append(events.view()).ok()) return;
        SegmentInfo info = w->seal();
        // Every other batch "commits"; the rest stay for replay.
        if (round % 2 == 0) {
          if (!spool->remove(info).ok()) return;
        } else {
          kept[shard].push_back(std::move(info));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<std::uint64_t> seqs;
  std::uint64_t expected = 0;
  for (const auto& infos : kept) {
    ASSERT_EQ(infos.size(), static_cast<std::size_t>(kRounds / 2));
    for (const SegmentInfo& info : infos) {
      expected += info.bytes;
      seqs.push_back(info.seq);
    }
  }
  EXPECT_EQ(spool->bytes(), expected);
  std::sort(seqs.begin(), seqs.end());
  EXPECT_EQ(std::adjacent_find(seqs.begin(), seqs.end()), seqs.end());
  spool.reset();
  auto reopened = open_spool();
  ASSERT_TRUE(reopened);
  EXPECT_EQ(reopened->leftover().size(), seqs.size());
  EXPECT_EQ(reopened->bytes(), expected);
}

// ---- File size limit: EFBIG becomes Status::full and the segment stays valid

using SpoolFull = SpoolDirTest;

// Runs in a forked child (the limit must not touch the test runner); the
// exit code names the first check that failed.
int file_size_limit_child(const std::string& dir) {
  // As the server does: a file size limit must give EFBIG, not kill us.
  ::signal(SIGXFSZ, SIG_IGN);
  auto spool = Spool::open({dir});
  if (!spool.ok()) return 2;
  auto w = (*spool)->create(5);
  if (!w.ok()) return 3;
  const EventBuffer first = make_events(10);
  if (!w->append(first.view()).ok()) return 4;
  const std::uint64_t good = w->info().bytes;
  const std::uint64_t spool_bytes = (*spool)->bytes();

  rlimit limit;
  if (::getrlimit(RLIMIT_FSIZE, &limit) != 0) return 5;
  limit.rlim_cur = good + 1000;  // not on a record boundary: the write is cut short
  if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return 6;

  const EventBuffer more = make_events(100, 11);
  const Status s = w->append(more.view());
  if (s.kind() != ErrorKind::full) return 7;
  if (s.message().find("File too large") == std::string::npos) return 8;
  struct stat st;
  if (::stat(w->info().path.c_str(), &st) != 0 || static_cast<std::uint64_t>(st.st_size) != good) return 9;
  if (w->info().bytes != good || (*spool)->bytes() != spool_bytes) return 10;

  // The segment is still good to append to: no hole, no partial record.
  const EventBuffer one = make_events(1, 111);
  if (!w->append(one.view()).ok()) return 11;
  const SegmentInfo info = w->seal();
  const ReadBack back = read_back(info.path);
  if (!back.status.ok() || back.result.tail != SegmentReadResult::Tail::clean) return 12;
  if (back.result.records != 11 || back.ids.back() != 111) return 13;

  // No room even for a header: create fails with full and leaves no file.
  limit.rlim_cur = 8;
  if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) return 14;
  const std::uint64_t before = (*spool)->bytes();
  auto none = (*spool)->create(5);
  if (none.ok() || none.status().kind() != ErrorKind::full) return 15;
  std::size_t files = 0;
  for (const auto& entry : fs::directory_iterator(dir)) files += entry.path().extension() == ".kseg";
  if (files != 1 || (*spool)->bytes() != before) return 16;
  return 0;
}

TEST_F(SpoolFull, FileSizeLimitTruncatesBackAndReportsFull) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(file_size_limit_child(dir_));
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "failed check " << WEXITSTATUS(status);
}

}  // namespace
}  // namespace kiroku
