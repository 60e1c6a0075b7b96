// alloc_test.cpp - a keep-alive ingestion request allocates nothing on the
// server's IO thread in steady state (seed 001's lesson), for the GET and
// POST forms, in durability none and process; and the whole process, writer
// and SQLite included, stays under one allocation per twenty requests. The
// count comes from a replacement operator new that counts per thread and in
// all, and from SQLite's allocator (sqlite_memory.h).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "app/ingest_api.h"
#include "app/router.h"
#include "http/server.h"
#include "ingest/batch_writer.h"
#include "ingest/collector.h"
#include "ingest/spool.h"
#include "ops/metrics.h"
#include "sink/sqlite/sqlite_memory.h"
#include "sink/sqlite/sqlite_sink.h"

// The replacement operators pair malloc with free on purpose.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace {
thread_local std::uint64_t t_allocations = 0;
std::atomic<std::uint64_t> g_allocations{0};  // every thread
}  // namespace

// Every form of operator new is replaced, so each pairs with the replaced
// delete (sanitizer builds included: ASan still sees malloc and free).
namespace {
void* counted(std::size_t n, std::size_t align = 0) {
  ++t_allocations;
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  n = n ? n : 1;
  return align ? std::aligned_alloc(align, (n + align - 1) / align * align) : std::malloc(n);
}
}  // namespace

void* operator new(std::size_t n) {
  if (void* p = counted(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counted(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = counted(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) {
  if (void* p = counted(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace kiroku {
namespace {

class AllocTest : public ::testing::TestWithParam<Durability> {};

int connect_to(const std::string& addr) {
  const auto colon = addr.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(std::stoi(addr.substr(colon + 1))));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Sends `n` copies of `request` one at a time and reads each answer.
void exchange(int fd, const std::string& request, int n) {
  char buf[4096];
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(::send(fd, request.data(), request.size(), MSG_NOSIGNAL), static_cast<ssize_t>(request.size()));
    ssize_t got = ::recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(got, 12);
    ASSERT_TRUE(std::string_view(buf, static_cast<std::size_t>(got)).find(" 20") != std::string_view::npos)
        << std::string_view(buf, static_cast<std::size_t>(got));
  }
}

// A server on one shard with a SQLite sink in a temporary directory, built
// as serve.cpp builds it.
class Rig {
 public:
  Rig(const char* name, Durability durability, std::size_t batch_max, std::chrono::milliseconds flush_interval)
      : dir_(std::filesystem::temp_directory_path() / (name + std::to_string(::getpid()))) {
    std::filesystem::remove_all(dir_);
    auto made = make_sqlite_sink("sqlite://" + (dir_ / "e.db").string(), SinkOptions{});
    EXPECT_TRUE(made.ok());
    sink_ = std::move(*made);
    EXPECT_TRUE(sink_->open().ok());
    if (durability == Durability::process) spool_ = std::move(*Spool::open({(dir_ / "spool").string()}));
    writer_ = std::make_unique<BatchWriter>(*sink_, spool_.get(), 64 << 20, BatchWriterHooks{});
    CollectorOptions co;
    co.durability = durability;
    co.batch_max = batch_max;
    co.flush_interval = flush_interval;
    CollectorMetrics cm;
    cm.accepted = registry_.counter("accepted", "").with({});
    ingest_ = std::make_unique<IngestApi>(co, runtime, *writer_, spool_.get(), cm);
    RouterDeps deps;
    deps.runtime = &runtime;
    deps.ingest = ingest_.get();
    deps.writer = writer_.get();
    deps.registry = &registry_;
    router_ = std::make_unique<Router>(deps);
    http::ServerOptions opts;
    opts.listen = "127.0.0.1:0";
    server_ = std::make_unique<http::HttpServer>(runtime, opts, *router_);
    EXPECT_TRUE(server_->bind().ok());
    runtime.start();
    Collector& c = ingest_->collector();
    writer_->start([&c](unsigned shard, std::uint64_t seq, bool ok) { c.on_batch_done(shard, seq, ok); });
    c.start();
    server_->start();
  }
  ~Rig() {
    server_->stop_accepting();
    ingest_->collector().flush_all();
    writer_->drain_and_stop(std::chrono::steady_clock::now() + std::chrono::seconds(10));
    server_->stop();
    runtime.stop();
    server_.reset();
    router_.reset();
    ingest_.reset();
    writer_.reset();
    spool_.reset();
    sink_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::string address() const { return server_->local_address(); }
  Collector& collector() { return ingest_->collector(); }
  BatchWriter& writer() { return *writer_; }

  Runtime runtime{1};

 private:
  std::filesystem::path dir_;
  Registry registry_{1};
  std::unique_ptr<Sink> sink_;
  std::unique_ptr<Spool> spool_;
  std::unique_ptr<BatchWriter> writer_;
  std::unique_ptr<IngestApi> ingest_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<http::HttpServer> server_;
};

TEST_P(AllocTest, SteadyStateRequestsAllocateNothingOnTheIoThread) {
  // No hand-over during the measurement (hand-overs are per-batch work), and
  // every event fits the batch buffer reserved at start (recycled after each
  // hand-over in a running server, so it does not grow per request either).
  Rig rig("kiroku-alloc-", GetParam(), 40'000, std::chrono::minutes(10));
  Runtime& runtime = rig.runtime;

  auto io_thread_allocations = [&] {
    std::promise<std::uint64_t> p;
    runtime.post(0, [&p] { p.set_value(t_allocations); });
    return p.get_future().get();
  };

  const int fd = connect_to(rig.address());
  ASSERT_GE(fd, 0);
  const std::string get = "GET /?name=alloc&value=12345 HTTP/1.1\r\nHost: x\r\n\r\n";
  const std::string body = "{\"name\":\"a\",\"value\":1}\n{\"name\":\"b\",\"value\":2}\n";
  const std::string post =
      "POST /events HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  exchange(fd, get, 3000);  // warm-up: buffers grow to their working size
  exchange(fd, post, 3000);
  // Two probes with no traffic between them measure what a probe costs.
  const auto p0 = io_thread_allocations();
  const auto p1 = io_thread_allocations();
  exchange(fd, get, 4000);
  exchange(fd, post, 4000);
  const auto p2 = io_thread_allocations();
  EXPECT_EQ((p2 - p1) - (p1 - p0), 0u) << "heap allocations on the IO thread for 8000 requests";
  ::close(fd);
}

// The whole process while batches are written: 32 keep-alive clients that
// send at once, so that one spool write answers many held requests together
// (each answer a write on its connection), batches handed to the writer and
// stored by SQLite, spool segments sealed and removed. Counts operator new on
// every thread and SQLite's own calls to malloc: at most 0.05 per request.
TEST_P(AllocTest, WholeProcessAllocatesAtMostOneCallPerTwentyRequests) {
  // Several hand-overs and SQLite transactions in the window.
  Rig rig("kiroku-alloc-all-", GetParam(), 2000, std::chrono::milliseconds(20));
  ASSERT_TRUE(install_sqlite_memory().ok()) << "SQLite's allocator is not kiroku's";

  constexpr int kClients = 32;
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    fds.push_back(connect_to(rig.address()));
    ASSERT_GE(fds.back(), 0);
  }
  const std::string get = "GET /?name=alloc&value=12345 HTTP/1.1\r\nHost: x\r\n\r\n";
  // Each round: every client sends, then every answer is read.
  auto rounds = [&](int n) {
    char buf[4096];
    for (int r = 0; r < n; ++r) {
      for (int fd : fds) ASSERT_EQ(::send(fd, get.data(), get.size(), MSG_NOSIGNAL), static_cast<ssize_t>(get.size()));
      for (int fd : fds) {
        const ssize_t got = ::recv(fd, buf, sizeof buf, 0);
        ASSERT_GT(got, 12);
        ASSERT_NE(std::string_view(buf, static_cast<std::size_t>(got)).find(" 204"), std::string_view::npos);
      }
    }
  };
  rounds(500);  // warm-up: buffers, caches, the table's first pages
  const std::uint64_t a0 = g_allocations.load(), s0 = sqlite_memory_heap_calls();
  constexpr int kRounds = 1000;
  rounds(kRounds);
  // What is accepted is written before the count ends (the writer's share).
  rig.collector().flush_all();
  for (int i = 0; i < 500 && rig.writer().queued_events() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  const std::uint64_t a1 = g_allocations.load(), s1 = sqlite_memory_heap_calls();
  const double requests = double(kRounds) * kClients;
  const double per_request = double((a1 - a0) + (s1 - s0)) / requests;
  std::printf("FIGURE allocs durability=%s requests=%.0f operator_new=%llu sqlite_malloc=%llu per_request=%.4f\n",
              to_string(GetParam()), requests, static_cast<unsigned long long>(a1 - a0),
              static_cast<unsigned long long>(s1 - s0), per_request);
  EXPECT_LE(per_request, 0.05);
  for (int fd : fds) ::close(fd);
}

INSTANTIATE_TEST_SUITE_P(Http, AllocTest, ::testing::Values(Durability::none, Durability::process),
                         [](const auto& p) { return std::string(to_string(p.param)); });

}  // namespace
}  // namespace kiroku
