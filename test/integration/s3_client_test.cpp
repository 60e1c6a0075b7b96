// s3_client_test.cpp - the S3 client against a real S3 server (s3rver, started
// by scripts/with-s3rver.sh) and against a scripted fake for failures s3rver
// cannot produce (503 SlowDown, a connection cut mid-download, 200 + <Error>).
#include "store/s3/s3_client.h"

#include "integration/fake_http.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace kiroku::s3 {
namespace {

using namespace std::chrono_literals;

// --- helpers -----------------------------------------------------------------

struct TestServer {
  std::string endpoint;
  std::string bucket;
};

// The s3rver that scripts/with-s3rver.sh started; fails the test without one.
bool s3rver_env(TestServer& out) {
  const char* endpoint = std::getenv("KIROKU_TEST_S3_ENDPOINT");
  const char* bucket = std::getenv("KIROKU_TEST_S3_BUCKET");
  if (!endpoint || !*endpoint || !bucket || !*bucket) {
    ADD_FAILURE() << "KIROKU_TEST_S3_ENDPOINT / KIROKU_TEST_S3_BUCKET are not set: run this test "
                     "under scripts/with-s3rver.sh (e.g. scripts/with-s3rver.sh ctest -L "
                     "integration)";
    return false;
  }
  out = {endpoint, bucket};
  return true;
}

S3Config config_for(const TestServer& server) {
  S3Config c;
  c.endpoint = server.endpoint;
  c.bucket = server.bucket;
  c.region = "us-east-1";
  c.path_style = true;
  auto creds = credentials_from_environment();
  c.credentials = creds.ok() ? *creds : Credentials{"S3RVER", "S3RVER", ""};
  c.retry_base_delay = 10ms;
  c.retry_max_delay = 100ms;
  return c;
}

std::unique_ptr<S3Client> make_client(const S3Config& config) {
  auto client = S3Client::create(config);
  EXPECT_TRUE(client.ok()) << client.status().message();
  return client.ok() ? std::move(*client) : nullptr;
}

// Runs one asynchronous operation and waits for its completion.
template <typename T, typename Start>
Result<T> call(Start start) {
  auto done = std::make_shared<std::promise<Result<T>>>();
  auto future = done->get_future();
  start([done](Result<T> r) { done->set_value(std::move(r)); });
  if (future.wait_for(60s) != std::future_status::ready) {
    ADD_FAILURE() << "no completion within 60 s";
    std::abort();  // the completion would write to a dead promise
  }
  return future.get();
}

template <typename Start>
Status call_status(Start start) {
  auto done = std::make_shared<std::promise<Status>>();
  auto future = done->get_future();
  start([done](Status s) { done->set_value(std::move(s)); });
  if (future.wait_for(60s) != std::future_status::ready) {
    ADD_FAILURE() << "no completion within 60 s";
    std::abort();
  }
  return future.get();
}

std::vector<std::byte> random_bytes(std::size_t n, std::uint64_t seed) {
  std::vector<std::byte> out(n);
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < n; i += 8) {
    std::uint64_t v = rng();
    std::memcpy(out.data() + i, &v, std::min<std::size_t>(8, n - i));
  }
  return out;
}

std::string unique_prefix(const char* test) {
  static std::atomic<int> counter{0};
  return std::string("it/") + test + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "/";
}

Result<PutObjectResult> put(S3Client& c, const std::string& key, std::span<const std::byte> body) {
  return call<PutObjectResult>([&](auto cb) { c.put_object(key, body, cb); });
}

Result<ObjectInfo> head(S3Client& c, const std::string& key) {
  return call<ObjectInfo>([&](auto cb) { c.head_object(key, cb); });
}

Result<GetObjectResult> get(S3Client& c, const std::string& key, std::optional<ByteRange> range,
                            std::span<std::byte> buffer) {
  return call<GetObjectResult>([&](auto cb) { c.get_object(key, range, buffer, cb); });
}

// A stream consumer that collects everything and pauses every few chunks,
// resumed a little later from another thread, as a slow HTTP client would.
struct SlowConsumer {
  S3Client* client = nullptr;
  std::atomic<RequestId> id{0};
  std::vector<std::byte> data;
  int chunks = 0;
  int pauses = 0;
  int starts = 0;
  std::vector<std::thread> resumers;

  ObjectStream stream() {
    ObjectStream s;
    s.on_start = [this](const ObjectInfo&) { ++starts; };
    s.on_data = [this](std::span<const std::byte> chunk) {
      if (++chunks % 4 == 0) {
        ++pauses;
        resumers.emplace_back([this] {
          std::this_thread::sleep_for(2ms);
          while (id.load() == 0) std::this_thread::yield();
          client->resume(id.load());
        });
        return false;
      }
      data.insert(data.end(), chunk.begin(), chunk.end());
      return true;
    };
    return s;
  }

  ~SlowConsumer() {
    for (auto& t : resumers) t.join();
  }
};

// --- against s3rver -----------------------------------------------------------

TEST(S3ClientIntegration, PutGetHeadDeleteRoundTrip) {
  TestServer server;
  if (!s3rver_env(server)) return;
  auto client = make_client(config_for(server));
  ASSERT_TRUE(client);
  std::string key = unique_prefix("roundtrip") + "a file with spaces & ümlauts+plus.bin";
  auto body = random_bytes(100 * 1024 + 7, 1);

  auto put_result = put(*client, key, body);
  ASSERT_TRUE(put_result.ok()) << put_result.status().message();
  EXPECT_FALSE(put_result->etag.empty());

  auto info = head(*client, key);
  ASSERT_TRUE(info.ok()) << info.status().message();
  EXPECT_EQ(info->size, body.size());
  EXPECT_EQ(info->etag, put_result->etag);
  EXPECT_GT(info->last_modified.time_since_epoch().count(), 0);

  std::vector<std::byte> buffer(body.size() + 100);
  auto got = get(*client, key, std::nullopt, buffer);
  ASSERT_TRUE(got.ok()) << got.status().message();
  ASSERT_EQ(got->bytes, body.size());
  EXPECT_TRUE(std::equal(body.begin(), body.end(), buffer.begin()));
  EXPECT_EQ(got->info.etag, put_result->etag);

  // A buffer too small fails cleanly, without a retry.
  std::vector<std::byte> small(1000);
  auto too_small = get(*client, key, std::nullopt, small);
  ASSERT_FALSE(too_small.ok());
  EXPECT_EQ(too_small.status().kind(), ErrorKind::invalid);

  // An empty object.
  std::string empty_key = unique_prefix("roundtrip") + "empty";
  ASSERT_TRUE(put(*client, empty_key, {}).ok());
  auto empty = get(*client, empty_key, std::nullopt, small);
  ASSERT_TRUE(empty.ok()) << empty.status().message();
  EXPECT_EQ(empty->bytes, 0u);

  Status deleted = call_status([&](auto cb) { client->delete_object(key, cb); });
  ASSERT_TRUE(deleted.ok()) << deleted.message();
  auto gone = head(*client, key);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.status().kind(), ErrorKind::not_found);
  auto gone_get = get(*client, key, std::nullopt, buffer);
  ASSERT_FALSE(gone_get.ok());
  EXPECT_EQ(gone_get.status().kind(), ErrorKind::not_found);
  EXPECT_NE(gone_get.status().message().find("NoSuchKey"), std::string::npos) << gone_get.status().message();
}

TEST(S3ClientIntegration, MultipartUploadOfThreeParts) {
  TestServer server;
  if (!s3rver_env(server)) return;
  auto client = make_client(config_for(server));
  ASSERT_TRUE(client);
  std::string key = unique_prefix("multipart") + "big.bin";
  // S3 wants every part but the last to be >= 5 MiB (s3rver does not check).
  constexpr std::size_t kPart = 5 * 1024 * 1024;
  auto body = random_bytes(2 * kPart + 12345, 2);

  auto upload_id = call<std::string>([&](auto cb) { client->create_multipart_upload(key, cb); });
  ASSERT_TRUE(upload_id.ok()) << upload_id.status().message();

  // The three parts go up concurrently, and complete in any order.
  std::vector<std::promise<Result<CompletedPart>>> promises(3);
  std::vector<std::future<Result<CompletedPart>>> futures;
  for (auto& p : promises) futures.push_back(p.get_future());
  for (int i = 0; i < 3; ++i) {
    std::size_t begin = i * kPart;
    std::size_t size = i < 2 ? kPart : body.size() - begin;
    client->upload_part(key, *upload_id, i + 1, std::span(body).subspan(begin, size),
                        [&promises, i](Result<CompletedPart> r) { promises[i].set_value(std::move(r)); });
  }
  std::vector<CompletedPart> parts;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(futures[i].wait_for(60s), std::future_status::ready);
    auto part = futures[i].get();
    ASSERT_TRUE(part.ok()) << part.status().message();
    EXPECT_EQ(part->part_number, i + 1);
    parts.push_back(*part);
  }

  auto done = call<PutObjectResult>([&](auto cb) { client->complete_multipart_upload(key, *upload_id, parts, cb); });
  ASSERT_TRUE(done.ok()) << done.status().message();
  EXPECT_FALSE(done->etag.empty());

  auto info = head(*client, key);
  ASSERT_TRUE(info.ok()) << info.status().message();
  EXPECT_EQ(info->size, body.size());

  // Read it back as a stream through a consumer that keeps pausing.
  SlowConsumer consumer;
  consumer.client = client.get();
  auto streamed = std::make_shared<std::promise<Result<ObjectInfo>>>();
  auto streamed_future = streamed->get_future();
  consumer.id = client->get_object(key, std::nullopt, consumer.stream(),
                                   [streamed](Result<ObjectInfo> r) { streamed->set_value(std::move(r)); });
  ASSERT_EQ(streamed_future.wait_for(60s), std::future_status::ready);
  auto streamed_info = streamed_future.get();
  ASSERT_TRUE(streamed_info.ok()) << streamed_info.status().message();
  EXPECT_EQ(streamed_info->size, body.size());
  EXPECT_EQ(consumer.starts, 1);
  EXPECT_GT(consumer.pauses, 0);
  ASSERT_EQ(consumer.data.size(), body.size());
  EXPECT_TRUE(consumer.data == body);
}

TEST(S3ClientIntegration, AbortMultipartUpload) {
  TestServer server;
  if (!s3rver_env(server)) return;
  auto client = make_client(config_for(server));
  ASSERT_TRUE(client);
  std::string key = unique_prefix("abort") + "never.bin";
  auto body = random_bytes(64 * 1024, 3);

  auto upload_id = call<std::string>([&](auto cb) { client->create_multipart_upload(key, cb); });
  ASSERT_TRUE(upload_id.ok()) << upload_id.status().message();
  auto part = call<CompletedPart>([&](auto cb) { client->upload_part(key, *upload_id, 1, body, cb); });
  ASSERT_TRUE(part.ok()) << part.status().message();

  Status aborted = call_status([&](auto cb) { client->abort_multipart_upload(key, *upload_id, cb); });
  ASSERT_TRUE(aborted.ok()) << aborted.message();
  Status again = call_status([&](auto cb) { client->abort_multipart_upload(key, *upload_id, cb); });
  EXPECT_EQ(again.kind(), ErrorKind::not_found) << again.message();
  EXPECT_EQ(head(*client, key).status().kind(), ErrorKind::not_found);
}

TEST(S3ClientIntegration, RangedGet) {
  TestServer server;
  if (!s3rver_env(server)) return;
  auto client = make_client(config_for(server));
  ASSERT_TRUE(client);
  std::string key = unique_prefix("range") + "thousand.bin";
  auto body = random_bytes(1000, 4);
  ASSERT_TRUE(put(*client, key, body).ok());

  std::vector<std::byte> buffer(1000);
  auto middle = get(*client, key, ByteRange{100, 50}, buffer);
  ASSERT_TRUE(middle.ok()) << middle.status().message();
  ASSERT_EQ(middle->bytes, 50u);
  EXPECT_TRUE(std::equal(body.begin() + 100, body.begin() + 150, buffer.begin()));
  EXPECT_EQ(middle->info.size, 1000u);
  EXPECT_EQ(middle->info.content_length, 50u);

  auto tail = get(*client, key, ByteRange{990, 0}, buffer);
  ASSERT_TRUE(tail.ok()) << tail.status().message();
  ASSERT_EQ(tail->bytes, 10u);
  EXPECT_TRUE(std::equal(body.begin() + 990, body.end(), buffer.begin()));

  // A range that fits exactly a buffer of its size.
  std::vector<std::byte> exact(300);
  auto fitted = get(*client, key, ByteRange{700, 300}, exact);
  ASSERT_TRUE(fitted.ok()) << fitted.status().message();
  EXPECT_TRUE(std::equal(body.begin() + 700, body.end(), exact.begin()));

  auto beyond = get(*client, key, ByteRange{5000, 10}, buffer);
  ASSERT_FALSE(beyond.ok());
  EXPECT_EQ(beyond.status().kind(), ErrorKind::invalid) << beyond.status().message();
}

TEST(S3ClientIntegration, ListWithPagination) {
  TestServer server;
  if (!s3rver_env(server)) return;
  auto client = make_client(config_for(server));
  ASSERT_TRUE(client);
  std::string prefix = unique_prefix("list");
  std::vector<std::string> keys;
  auto body = random_bytes(10, 5);
  for (int i = 0; i < 7; ++i) keys.push_back(prefix + "k" + std::to_string(i));
  keys.push_back(prefix + "dir/x");
  keys.push_back(prefix + "dir/y");
  for (const auto& k : keys) ASSERT_TRUE(put(*client, k, body).ok()) << k;

  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    ListObjectsRequest request;
    request.prefix = prefix;
    request.max_keys = 3;
    request.continuation_token = token;
    auto page = call<ListObjectsPage>([&](auto cb) { client->list_objects_v2(request, cb); });
    ASSERT_TRUE(page.ok()) << page.status().message();
    ++pages;
    EXPECT_LE(page->objects.size(), 3u);
    for (const auto& o : page->objects) {
      seen.push_back(o.key);
      EXPECT_EQ(o.size, 10u);
      EXPECT_FALSE(o.etag.empty());
      EXPECT_GT(o.last_modified.time_since_epoch().count(), 0);
    }
    token = page->is_truncated ? page->next_continuation_token : "";
    ASSERT_LT(pages, 10);
  } while (!token.empty());
  std::vector<std::string> expected = keys;
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(pages, 3);

  ListObjectsRequest folders;
  folders.prefix = prefix;
  folders.delimiter = "/";
  auto page = call<ListObjectsPage>([&](auto cb) { client->list_objects_v2(folders, cb); });
  ASSERT_TRUE(page.ok()) << page.status().message();
  EXPECT_EQ(page->objects.size(), 7u);
  EXPECT_EQ(page->common_prefixes, std::vector<std::string>{prefix + "dir/"});

  ListObjectsRequest after;
  after.prefix = prefix;
  after.start_after = prefix + "k4";
  auto rest = call<ListObjectsPage>([&](auto cb) { client->list_objects_v2(after, cb); });
  ASSERT_TRUE(rest.ok()) << rest.status().message();
  ASSERT_EQ(rest->objects.size(), 2u);
  EXPECT_EQ(rest->objects[0].key, prefix + "k5");
}

TEST(S3ClientIntegration, ManyRequestsShareFewConnections) {
  TestServer server;
  if (!s3rver_env(server)) return;
  S3Config config = config_for(server);
  config.max_connections = 4;
  auto client = make_client(config);
  ASSERT_TRUE(client);
  std::string prefix = unique_prefix("many");
  auto body = random_bytes(4096, 6);
  constexpr int kCount = 64;
  std::atomic<int> ok{0}, finished{0};
  std::promise<void> all;
  for (int i = 0; i < kCount; ++i) {
    client->put_object(prefix + std::to_string(i), body, [&](Result<PutObjectResult> r) {
      if (r.ok()) ++ok;
      if (++finished == kCount) all.set_value();
    });
  }
  ASSERT_EQ(all.get_future().wait_for(60s), std::future_status::ready);
  EXPECT_EQ(ok.load(), kCount);
  EXPECT_EQ(client->stats().requests.load(), static_cast<std::uint64_t>(kCount));
  EXPECT_EQ(client->stats().bytes_sent.load(), static_cast<std::uint64_t>(kCount) * body.size());
}

TEST(S3ClientIntegration, PausedStreamStopsReading) {
  TestServer server;
  if (!s3rver_env(server)) return;
  S3Config config = config_for(server);
  config.receive_buffer_size = 16 * 1024;
  config.stall_timeout = 1000ms;  // shorter than the pause below: paused time must not count
  auto client = make_client(config);
  ASSERT_TRUE(client);
  std::string key = unique_prefix("pause") + "obj";
  auto body = random_bytes(4 * 1024 * 1024, 7);
  ASSERT_TRUE(put(*client, key, body).ok());

  std::atomic<int> calls{0};
  std::atomic<bool> hold{true};
  std::vector<std::byte> data;
  ObjectStream stream;
  stream.on_data = [&](std::span<const std::byte> chunk) {
    ++calls;
    EXPECT_LE(chunk.size(), 16u * 1024u);
    if (hold.load()) return false;
    data.insert(data.end(), chunk.begin(), chunk.end());
    return true;
  };
  auto done = std::make_shared<std::promise<Result<ObjectInfo>>>();
  auto future = done->get_future();
  RequestId id =
      client->get_object(key, std::nullopt, stream, [done](Result<ObjectInfo> r) { done->set_value(std::move(r)); });
  // Paused: after the first refused chunk nothing more arrives.
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (calls.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(calls.load(), 1);
  std::this_thread::sleep_for(2500ms);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(future.wait_for(0s), std::future_status::timeout);

  hold = false;
  client->resume(id);
  ASSERT_EQ(future.wait_for(60s), std::future_status::ready);
  auto info = future.get();
  ASSERT_TRUE(info.ok()) << info.status().message();
  EXPECT_TRUE(data == body);
}

TEST(S3ClientIntegration, CancelAndShutdownCompleteEveryRequest) {
  TestServer server;
  if (!s3rver_env(server)) return;
  auto client = make_client(config_for(server));
  ASSERT_TRUE(client);
  std::string key = unique_prefix("cancel") + "obj";
  auto body = random_bytes(1024 * 1024, 8);
  ASSERT_TRUE(put(*client, key, body).ok());

  ObjectStream never;
  never.on_data = [](std::span<const std::byte>) { return false; };  // paused for good
  auto cancelled = std::make_shared<std::promise<Status>>();
  RequestId id = client->get_object(key, std::nullopt, never,
                                    [cancelled](Result<ObjectInfo> r) { cancelled->set_value(r.status()); });
  std::this_thread::sleep_for(100ms);
  client->cancel(id);
  auto cancelled_future = cancelled->get_future();
  ASSERT_EQ(cancelled_future.wait_for(10s), std::future_status::ready);
  Status s = cancelled_future.get();
  EXPECT_EQ(s.kind(), ErrorKind::invalid);
  EXPECT_NE(s.message().find("cancelled"), std::string::npos) << s.message();

  // Destroying the client completes what is still in flight.
  auto stopped = std::make_shared<std::promise<Status>>();
  client->get_object(key, std::nullopt, never, [stopped](Result<ObjectInfo> r) { stopped->set_value(r.status()); });
  std::this_thread::sleep_for(100ms);
  client.reset();
  auto stopped_future = stopped->get_future();
  ASSERT_EQ(stopped_future.wait_for(0s), std::future_status::ready);
  EXPECT_EQ(stopped_future.get().kind(), ErrorKind::transient);
}

TEST(S3ClientIntegration, WrongAccessKeyIsPermanentAndNotRetried) {
  TestServer server;
  if (!s3rver_env(server)) return;
  S3Config config = config_for(server);
  config.credentials = {"NOT-A-KEY", "secret", ""};
  auto client = make_client(config);
  ASSERT_TRUE(client);
  auto info = head(*client, "anything");
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().kind(), ErrorKind::permanent) << info.status().message();
  auto page = call<ListObjectsPage>([&](auto cb) { client->list_objects_v2({}, cb); });
  ASSERT_FALSE(page.ok());
  EXPECT_NE(page.status().message().find("InvalidAccessKeyId"), std::string::npos) << page.status().message();
  EXPECT_EQ(client->stats().attempts.load(), 2u);
  EXPECT_EQ(client->stats().retries.load(), 0u);
}

// --- failures, without s3rver ---------------------------------------------------

// A port on loopback where nothing listens.
int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

TEST(S3ClientFailures, StoppedEndpointGivesTransientAfterBoundedRetries) {
  S3Config config;
  config.endpoint = "http://127.0.0.1:" + std::to_string(closed_port());
  config.bucket = "b";
  config.credentials = {"AKID", "SECRET", ""};
  config.max_attempts = 3;
  config.retry_base_delay = 20ms;
  config.retry_max_delay = 50ms;
  config.connect_timeout = 1000ms;
  auto client = make_client(config);
  ASSERT_TRUE(client);
  auto start = std::chrono::steady_clock::now();
  auto body = random_bytes(1000, 9);
  auto r = put(*client, "k", body);
  auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().kind(), ErrorKind::transient) << r.status().message();
  EXPECT_NE(r.status().message().find("after 3 attempts"), std::string::npos) << r.status().message();
  EXPECT_EQ(client->stats().attempts.load(), 3u);
  EXPECT_EQ(client->stats().retries.load(), 2u);
  EXPECT_LT(elapsed, 5s);
}

TEST(S3ClientFailures, BadConfigurationIsRejected) {
  S3Config config;
  config.bucket = "b";
  config.credentials = {"AKID", "SECRET", ""};
  config.endpoint = "ftp://host";
  EXPECT_EQ(S3Client::create(config).status().kind(), ErrorKind::invalid);
  config.endpoint = "http://host:9000/base";
  EXPECT_EQ(S3Client::create(config).status().kind(), ErrorKind::invalid);
  config.endpoint = "";
  config.bucket = "";
  EXPECT_EQ(S3Client::create(config).status().kind(), ErrorKind::invalid);
  config.bucket = "b";
  config.credentials = {};
  EXPECT_EQ(S3Client::create(config).status().kind(), ErrorKind::invalid);
  config.credentials = {"AKID", "SECRET", ""};
  config.max_attempts = 0;
  EXPECT_EQ(S3Client::create(config).status().kind(), ErrorKind::invalid);
  config.max_attempts = 1;
  EXPECT_TRUE(S3Client::create(config).ok());  // AWS itself: nothing is sent yet
}

TEST(S3ClientFailures, InvalidRequestsCompleteOnTheClientThread) {
  S3Config config;
  config.endpoint = "http://127.0.0.1:" + std::to_string(closed_port());
  config.bucket = "b";
  config.credentials = {"AKID", "SECRET", ""};
  auto client = make_client(config);
  ASSERT_TRUE(client);
  std::thread::id caller = std::this_thread::get_id();
  std::thread::id completer;
  Status s = call_status([&](auto cb) {
    client->delete_object("", [&, cb](Status st) {
      completer = std::this_thread::get_id();
      cb(std::move(st));
    });
  });
  EXPECT_EQ(s.kind(), ErrorKind::invalid);
  EXPECT_NE(completer, caller);
  auto no_parts = call<PutObjectResult>([&](auto cb) { client->complete_multipart_upload("k", "id", {}, cb); });
  EXPECT_EQ(no_parts.status().kind(), ErrorKind::invalid);
  auto bad_part = call<CompletedPart>([&](auto cb) { client->upload_part("k", "id", 0, {}, cb); });
  EXPECT_EQ(bad_part.status().kind(), ErrorKind::invalid);
  auto bad_list = call<ListObjectsPage>([&](auto cb) {
    ListObjectsRequest r;
    r.max_keys = 0;
    client->list_objects_v2(r, cb);
  });
  EXPECT_EQ(bad_list.status().kind(), ErrorKind::invalid);
  EXPECT_EQ(client->stats().attempts.load(), 0u);
}

using FakeS3 = test::FakeHttpServer;

std::string http_answer(int status, const std::string& reason, const std::string& headers, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n" + headers +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

S3Config fake_config(const FakeS3& fake) {
  S3Config c;
  c.endpoint = fake.endpoint();
  c.bucket = "bucket";
  c.credentials = {"AKID", "SECRET", "TOKEN"};
  c.retry_base_delay = 5ms;
  c.retry_max_delay = 20ms;
  return c;
}

TEST(S3ClientFailures, SlowDownIsRetriedWithTheSameBody) {
  FakeS3 fake([](const FakeS3::Request&, int index) -> FakeS3::Answer {
    if (index < 2) {
      return {http_answer(503, "Slow Down", "",
                          "<Error><Code>SlowDown</Code><Message>Please reduce your request "
                          "rate.</Message></Error>")};
    }
    return {http_answer(200, "OK", "ETag: \"abc\"\r\n", "")};
  });
  auto client = make_client(fake_config(fake));
  ASSERT_TRUE(client);
  auto body = random_bytes(50000, 10);
  auto r = put(*client, "dir/key", body);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->etag, "\"abc\"");
  auto requests = fake.requests();
  ASSERT_EQ(requests.size(), 3u);
  for (const auto& req : requests) {
    EXPECT_EQ(req.head.substr(0, req.head.find('\r')), "PUT /bucket/dir/key HTTP/1.1");
    EXPECT_EQ(req.body.size(), body.size());
    EXPECT_TRUE(std::memcmp(req.body.data(), body.data(), body.size()) == 0);
    EXPECT_NE(req.head.find("x-amz-content-sha256: UNSIGNED-PAYLOAD"), std::string::npos);
    EXPECT_NE(req.head.find("x-amz-security-token: TOKEN"), std::string::npos);
    EXPECT_NE(req.head.find("Authorization: AWS4-HMAC-SHA256 Credential=AKID/"), std::string::npos);
  }
  EXPECT_EQ(client->stats().retries.load(), 2u);
  EXPECT_EQ(fake.connections(), 1);  // one kept-alive connection for all attempts
}

// Without path style the bucket goes into the host name (curl resolves
// *.localhost to loopback itself).
TEST(S3ClientFailures, VirtualHostedStyle) {
  FakeS3 fake([](const FakeS3::Request&, int) -> FakeS3::Answer {
    return {http_answer(200, "OK",
                        "ETag: \"e\"\r\nContent-Type: text/plain\r\n"
                        "Last-Modified: Wed, 12 Oct 2009 17:50:00 GMT\r\n",
                        "hello")};
  });
  S3Config config = fake_config(fake);
  config.endpoint = "http://localhost:" + fake.endpoint().substr(fake.endpoint().rfind(':') + 1);
  config.path_style = false;
  auto client = make_client(config);
  ASSERT_TRUE(client);
  std::vector<std::byte> buffer(16);
  auto r = get(*client, "dir/a+b", std::nullopt, buffer);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->bytes, 5u);
  EXPECT_EQ(r->info.content_type, "text/plain");
  EXPECT_EQ(std::chrono::system_clock::to_time_t(r->info.last_modified), 1255369800);
  auto requests = fake.requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].head.substr(0, requests[0].head.find('\r')), "GET /dir/a%2Bb HTTP/1.1");
  EXPECT_NE(requests[0].head.find("Host: bucket.localhost:"), std::string::npos) << requests[0].head;
}

TEST(S3ClientFailures, ServerErrorsGiveTransientAfterMaxAttempts) {
  FakeS3 fake([](const FakeS3::Request&, int) -> FakeS3::Answer {
    return {http_answer(500, "Internal Server Error", "",
                        "<Error><Code>InternalError</Code><Message>boom</Message></Error>")};
  });
  S3Config config = fake_config(fake);
  config.max_attempts = 3;
  auto client = make_client(config);
  ASSERT_TRUE(client);
  auto r = head(*client, "k");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().kind(), ErrorKind::transient);
  EXPECT_EQ(fake.requests().size(), 3u);
}

TEST(S3ClientFailures, CompleteWith200ErrorIsRetried) {
  FakeS3 fake([](const FakeS3::Request&, int index) -> FakeS3::Answer {
    if (index == 0) {
      return {http_answer(200, "OK", "",
                          "<?xml version=\"1.0\"?>\n<Error><Code>InternalError</Code>"
                          "<Message>We encountered an internal error.</Message></Error>")};
    }
    return {http_answer(200, "OK", "",
                        "<CompleteMultipartUploadResult><ETag>\"x-2\"</ETag>"
                        "</CompleteMultipartUploadResult>")};
  });
  auto client = make_client(fake_config(fake));
  ASSERT_TRUE(client);
  std::vector<CompletedPart> parts = {{1, "\"a\""}, {2, "\"b\""}};
  auto r = call<PutObjectResult>([&](auto cb) { client->complete_multipart_upload("k", "UP1", parts, cb); });
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->etag, "\"x-2\"");
  auto requests = fake.requests();
  ASSERT_EQ(requests.size(), 2u);
  EXPECT_EQ(requests[1].head.substr(0, requests[1].head.find('\r')), "POST /bucket/k?uploadId=UP1 HTTP/1.1");
  EXPECT_NE(requests[1].body.find("<PartNumber>2</PartNumber><ETag>&quot;b&quot;</ETag>"), std::string::npos);
}

// The connection drops mid-body; the retry asks for the rest only, pinned to the ETag.
TEST(S3ClientFailures, GetResumesWhereTheConnectionDropped) {
  auto body = random_bytes(200000, 11);
  std::string object(reinterpret_cast<const char*>(body.data()), body.size());
  FakeS3 fake([&](const FakeS3::Request& req, int index) -> FakeS3::Answer {
    if (index == 0) {
      // Promise the whole object, send a quarter of it, hang up.
      std::string head = "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: 200000\r\n\r\n";
      return {head + object.substr(0, 50000), true};
    }
    EXPECT_NE(req.head.find("Range: bytes=50000-"), std::string::npos) << req.head;
    EXPECT_NE(req.head.find("If-Match: \"v1\""), std::string::npos) << req.head;
    return {http_answer(206, "Partial Content", "ETag: \"v1\"\r\nContent-Range: bytes 50000-199999/200000\r\n",
                        object.substr(50000))};
  });
  auto client = make_client(fake_config(fake));
  ASSERT_TRUE(client);
  SlowConsumer consumer;
  consumer.client = client.get();
  auto done = std::make_shared<std::promise<Result<ObjectInfo>>>();
  auto future = done->get_future();
  consumer.id = client->get_object("k", std::nullopt, consumer.stream(),
                                   [done](Result<ObjectInfo> r) { done->set_value(std::move(r)); });
  ASSERT_EQ(future.wait_for(30s), std::future_status::ready);
  auto info = future.get();
  ASSERT_TRUE(info.ok()) << info.status().message();
  EXPECT_EQ(info->size, 200000u);
  EXPECT_EQ(consumer.starts, 1);
  ASSERT_EQ(consumer.data.size(), body.size());
  EXPECT_TRUE(consumer.data == body);
  EXPECT_EQ(fake.requests().size(), 2u);
}

TEST(S3ClientFailures, ChangedObjectDuringResumeIsPermanent) {
  FakeS3 fake([](const FakeS3::Request&, int index) -> FakeS3::Answer {
    if (index == 0) {
      return {"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: 1000\r\n\r\n" + std::string(100, 'x'), true};
    }
    return {http_answer(412, "Precondition Failed", "",
                        "<Error><Code>PreconditionFailed</Code><Message>At least one of the "
                        "pre-conditions you specified did not hold</Message></Error>")};
  });
  auto client = make_client(fake_config(fake));
  ASSERT_TRUE(client);
  std::vector<std::byte> buffer(1000);
  auto r = get(*client, "k", std::nullopt, buffer);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().kind(), ErrorKind::permanent);
  EXPECT_NE(r.status().message().find("changed"), std::string::npos) << r.status().message();
}

}  // namespace
}  // namespace kiroku::s3
