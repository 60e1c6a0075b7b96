// alloc_test.cpp - a keep-alive ingestion request allocates nothing on the
// server's IO thread in steady state (seed 001's lesson), for the GET and
// POST forms, in durability none and process. The count comes from a
// replacement operator new that counts per thread.
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

#include "app/ingest_api.h"
#include "app/router.h"
#include "http/server.h"
#include "ingest/batch_writer.h"
#include "ingest/collector.h"
#include "ingest/spool.h"
#include "ops/metrics.h"
#include "sink/sqlite/sqlite_sink.h"

// The replacement operators pair malloc with free on purpose.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace {
thread_local std::uint64_t t_allocations = 0;
}

// Every form of operator new is replaced, so each pairs with the replaced
// delete (sanitizer builds included: ASan still sees malloc and free).
namespace {
void* counted(std::size_t n, std::size_t align = 0) {
  ++t_allocations;
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

TEST_P(AllocTest, SteadyStateRequestsAllocateNothingOnTheIoThread) {
  const auto dir = std::filesystem::temp_directory_path() / ("kiroku-alloc-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  SinkOptions so;
  auto sink = std::move(*make_sqlite_sink("sqlite://" + (dir / "e.db").string(), so));
  ASSERT_TRUE(sink->open().ok());
  std::unique_ptr<Spool> spool;
  if (GetParam() == Durability::process) spool = std::move(*Spool::open({(dir / "spool").string()}));
  Registry registry(1);
  BatchWriter writer(*sink, spool.get(), 64 << 20, {});
  Runtime runtime(1);
  CollectorOptions co;
  co.durability = GetParam();
  // No hand-over during the measurement (hand-overs are per-batch work), and
  // every event fits the batch buffer reserved at start (recycled after each
  // hand-over in a running server, so it does not grow per request either).
  co.batch_max = 40'000;
  co.flush_interval = std::chrono::minutes(10);
  CollectorMetrics cm;
  cm.accepted = registry.counter("accepted", "").with({});
  IngestApi ingest(co, runtime, writer, spool.get(), cm);
  Collector& collector = ingest.collector();
  RouterDeps deps;
  deps.runtime = &runtime;
  deps.ingest = &ingest;
  deps.writer = &writer;
  deps.registry = &registry;
  Router router(deps);
  http::ServerOptions opts;
  opts.listen = "127.0.0.1:0";
  http::HttpServer server(runtime, opts, router);
  ASSERT_TRUE(server.bind().ok());
  runtime.start();
  writer.start([&collector](unsigned shard, std::uint64_t seq, bool ok) { collector.on_batch_done(shard, seq, ok); });
  collector.start();
  server.start();

  auto io_thread_allocations = [&] {
    std::promise<std::uint64_t> p;
    runtime.post(0, [&p] { p.set_value(t_allocations); });
    return p.get_future().get();
  };

  const int fd = connect_to(server.local_address());
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

  server.stop_accepting();
  collector.flush_all();
  writer.drain_and_stop(std::chrono::steady_clock::now() + std::chrono::seconds(10));
  server.stop();
  runtime.stop();
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Http, AllocTest, ::testing::Values(Durability::none, Durability::process),
                         [](const auto& p) { return std::string(to_string(p.param)); });

}  // namespace
}  // namespace kiroku
