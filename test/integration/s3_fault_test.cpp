// s3_fault_test.cpp - the file API through the real kiroku binary while its S3
// server misbehaves: FaultyS3Proxy sits between kiroku and s3rver (from
// scripts/with-s3rver.sh). Contract checked:
//  - 500/503 answers that stop after a few requests are retried away: single
//    PUT and multipart uploads (create, parts, complete) and downloads (HEAD,
//    ranged GETs) come out whole, and the proxy saw the retried requests;
//  - 500/503 answers that do not stop give the client a 503 + Retry-After
//    JSON error within seconds, and no object (not even part of one) is
//    visible afterwards; a multipart upload whose parts or completion keep
//    failing is aborted;
//  - a server that reads requests and never answers gives a 503 once the
//    stall timeout (stall_timeout_ms in the store URL) runs out on every
//    attempt; kiroku keeps serving meanwhile and works again afterwards.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "integration/faulty_s3_proxy.h"
#include "integration/harness.h"
#include "integration/s3_requests.h"
#include "store/key_layout.h"
#include "store/part_pool.h"
#include "store/s3/s3_client.h"

namespace kiroku::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::size_t kPart = 5 << 20;            // --part-size 5MiB (the S3 minimum)
constexpr std::size_t kSmall = 100'000;           // one PUT
constexpr std::size_t kLarge = 2 * kPart + 4321;  // a multipart upload of 3 parts

std::string random_bytes(std::uint64_t seed, std::size_t size) {
  std::mt19937_64 gen(seed);
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; i += 8) {
    const std::uint64_t v = gen();
    std::memcpy(s.data() + i, &v, std::min<std::size_t>(8, size - i));
  }
  return s;
}

std::string sha256_hex(std::string_view data) {
  Sha256Stream sha;
  sha.update(std::as_bytes(std::span(data.data(), data.size())));
  return sha.finish_hex();
}

struct Timed {
  Response r;
  double seconds = 0;
  nlohmann::json json() const { return nlohmann::json::parse(r.body, nullptr, false); }
};

// A request to kiroku on a fresh connection, on its own thread; the answer
// is timed when it arrives.
struct Pending {
  std::future<Timed> answer;
  Clock::time_point started;
  std::string what;
};

Pending begin(int port, const std::string& method, const std::string& target, std::string body = {}) {
  Pending p;
  p.started = Clock::now();
  p.what = method + " " + target;
  p.answer = std::async(std::launch::async, [port, method, target, body = std::move(body), started = p.started] {
    Timed t;
    Client c(port, 120000);
    std::string head = method + " " + target + " HTTP/1.1\r\nHost: t\r\n";
    if (method == "PUT") head += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    head += "\r\n";
    if (c.connected() && c.send_raw(head) && c.send_raw(body)) t.r = c.read_response();
    t.seconds = std::chrono::duration<double>(Clock::now() - started).count();
    return t;
  });
  return p;
}

// Its answer; without one within `limit` the test fails and kiroku is killed
// (which ends the request).
Timed finish(Kiroku& k, Pending& p, std::chrono::seconds limit = 60s) {
  if (p.answer.wait_until(p.started + limit) != std::future_status::ready) {
    ADD_FAILURE() << p.what << ": no answer within " << limit.count() << " s; killing kiroku";
    k.kill9();
  }
  return p.answer.get();
}

Timed call(Kiroku& k, const std::string& method, const std::string& target, std::string body = {},
           std::chrono::seconds limit = 60s) {
  Pending p = begin(k.port(), method, target, std::move(body));
  return finish(k, p, limit);
}

// The answer file_api.cpp gives for a transient store failure: 503, Retry-After, a JSON error.
void expect_unavailable(const Timed& t, double max_seconds) {
  EXPECT_EQ(t.r.status, 503) << t.r.headers << t.r.body;
  EXPECT_EQ(t.r.header("Retry-After"), "1");
  const auto j = t.json();
  EXPECT_TRUE(j.is_object() && j.contains("error") && j["error"].is_string()) << t.r.body;
  EXPECT_LT(t.seconds, max_seconds);
}

class S3Fault : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* endpoint = std::getenv("KIROKU_TEST_S3_ENDPOINT");
    const char* bucket = std::getenv("KIROKU_TEST_S3_BUCKET");
    if (!endpoint || !*endpoint || !bucket || !*bucket)
      GTEST_FAIL() << "KIROKU_TEST_S3_ENDPOINT / KIROKU_TEST_S3_BUCKET are not set: run under "
                      "scripts/with-s3rver.sh";
    bucket_ = bucket;
    proxy_ = std::make_unique<FaultyS3Proxy>(endpoint);
    ASSERT_TRUE(proxy_->start());
    // Keys of this test and run only: the bucket is shared by every test.
    prefix_ = std::string("s3fault-") + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "-" +
              std::to_string(::getpid()) + "/";
  }

  // kiroku on the bucket through the proxy; `options` is appended to the
  // store URL, `flags` to the command line.
  std::unique_ptr<Kiroku> start(const std::string& options = {}, const std::vector<std::string>& flags = {}) {
    const std::string store = "s3://" + bucket_ + "?endpoint=" + proxy_->endpoint() + "&region=us-east-1" + options;
    std::vector<std::string> args{"--sink",      "sqlite://" + dir_.path() + "/events.db",
                                  "--spool-dir", dir_.path() + "/spool",
                                  "--store",     store,
                                  "--part-size", "5MiB"};
    args.insert(args.end(), flags.begin(), flags.end());
    return std::make_unique<Kiroku>(dir_.path(), args);
  }

  // Keys under this test's prefix that a listing shows.
  std::vector<std::string> listed(Kiroku& k) {
    const Timed t = call(k, "GET", "/files?prefix=" + prefix_);
    EXPECT_EQ(t.r.status, 200) << t.r.body;
    std::vector<std::string> keys;
    const auto j = t.json();
    if (j.is_object() && j["objects"].is_array())
      for (const auto& o : j["objects"]) keys.push_back(o["key"]);
    return keys;
  }

  // PUT of `data` that must succeed with the right size and SHA-256.
  void put_ok(Kiroku& k, const std::string& key, const std::string& data) {
    const Timed put = call(k, "PUT", "/files/" + key, data);
    ASSERT_EQ(put.r.status, 201) << put.r.body << "\nS3 requests:\n" << proxy_->dump();
    const auto j = put.json();
    EXPECT_EQ(j["size"], data.size());
    EXPECT_EQ(j["sha256"], sha256_hex(data));
  }

  // GET that must give back exactly `data`.
  void get_ok(Kiroku& k, const std::string& key, const std::string& data) {
    const Timed get = call(k, "GET", "/files/" + key);
    ASSERT_EQ(get.r.status, 200) << get.r.body << "\nS3 requests:\n" << proxy_->dump();
    EXPECT_EQ(get.r.body.size(), data.size());
    EXPECT_EQ(sha256_hex(get.r.body), sha256_hex(data));
  }

  // Waits until no failed upload is still being aborted
  // (kiroku_object_uploads_cleaning_up is 0); false after `limit`.
  bool cleaned_up(Kiroku& k, std::chrono::seconds limit) {
    for (const auto until = Clock::now() + limit; Clock::now() < until;) {
      if (metric_value(k.port(), "kiroku_object_uploads_cleaning_up") == 0) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  TempDir dir_;
  std::string bucket_;
  std::string prefix_;
  std::unique_ptr<FaultyS3Proxy> proxy_;
};

// Request lines of the S3 operations (path style: "METHOD /bucket/{h}/key?query").
bool is_head(std::string_view l) { return l.rfind("HEAD ", 0) == 0; }
bool is_get(std::string_view l) { return l.rfind("GET ", 0) == 0; }
bool is_create(std::string_view l) { return l.rfind("POST ", 0) == 0 && l.find("?uploads") != l.npos; }
bool is_part(std::string_view l) { return l.find("partNumber=") != l.npos; }
bool is_complete(std::string_view l) { return l.rfind("POST ", 0) == 0 && l.find("uploadId=") != l.npos; }

// A few 503 SlowDown / 500 InternalError answers on each kind of request are
// retried away (S3Client: 4 attempts per request): the client sees success
// and the right bytes, the proxy saw the requests again.
TEST_F(S3Fault, TransientErrorsAreRetriedAway) {
  auto k = start();
  const std::string small = random_bytes(1, kSmall), large = random_bytes(2, kLarge);
  const std::string small_key = prefix_ + "small.bin", large_key = prefix_ + "large.bin";
  const auto started = Clock::now();
  {
    SCOPED_TRACE("single PUT: 503 SlowDown, 500 InternalError");
    proxy_->fail_next(1, 503, "SlowDown");
    proxy_->fail_next(1, 500, "InternalError");
    put_ok(*k, small_key, small);
    EXPECT_EQ(proxy_->faults(), 2);
    EXPECT_EQ(proxy_->count({"PUT ", small_key}), 3) << proxy_->dump();
  }
  {
    SCOPED_TRACE("multipart: create 2x 500, parts 3x 503, complete 1x 503");
    proxy_->pass();
    proxy_->fail_next(2, 500, "InternalError", is_create);
    proxy_->fail_next(3, 503, "SlowDown", is_part);
    proxy_->fail_next(1, 503, "ServiceUnavailable", is_complete);
    const int before = proxy_->faults();
    put_ok(*k, large_key, large);
    EXPECT_EQ(proxy_->faults() - before, 6) << proxy_->dump();
    EXPECT_EQ(proxy_->count({"POST ", large_key, "?uploads"}), 3) << proxy_->dump();
    EXPECT_EQ(proxy_->count({"PUT ", large_key, "partNumber="}), 3 + 3) << proxy_->dump();
    EXPECT_EQ(proxy_->count({"POST ", large_key, "uploadId="}), 2) << proxy_->dump();
  }
  {
    SCOPED_TRACE("downloads: HEAD 2x 503, ranged GETs 3x 500");
    for (const auto* key : {&small_key, &large_key}) {
      proxy_->pass();
      proxy_->fail_next(2, 503, "SlowDown", is_head);
      proxy_->fail_next(3, 500, "InternalError", is_get);
      const int before = proxy_->faults();
      const int heads = proxy_->count({"HEAD ", *key});
      get_ok(*k, *key, *key == small_key ? small : large);
      EXPECT_EQ(proxy_->faults() - before, 5) << proxy_->dump();
      EXPECT_EQ(proxy_->count({"HEAD ", *key}) - heads, 3) << proxy_->dump();
    }
  }
  proxy_->pass();
  EXPECT_EQ(listed(*k), (std::vector<std::string>{large_key, small_key}));
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - started).count(), 30);
  EXPECT_EQ(k->stop(), 0);
}

// S3 answers 503 (then 500) to everything: every file request gets a 503
// within seconds (4 attempts with backoff), and once S3 is back none of the
// objects exists.
TEST_F(S3Fault, PersistentErrorsAnswer503AndLeaveNothing) {
  auto k = start();
  const std::string kept_key = prefix_ + "kept.bin", kept = random_bytes(3, kSmall);
  put_ok(*k, kept_key, kept);
  for (const auto& [status, code] :
       std::vector<std::pair<int, std::string>>{{503, "SlowDown"}, {500, "InternalError"}}) {
    SCOPED_TRACE(std::to_string(status) + " " + code);
    proxy_->pass();
    proxy_->fail_all(status, code);
    const int requests = proxy_->requests(), faults = proxy_->faults();
    const int heads = proxy_->count({"HEAD ", kept_key});
    const std::string small_key = prefix_ + "small-" + code, large_key = prefix_ + "large-" + code;
    expect_unavailable(call(*k, "PUT", "/files/" + small_key, random_bytes(4, kSmall)), 10);
    expect_unavailable(call(*k, "PUT", "/files/" + large_key, random_bytes(5, kLarge)), 15);
    expect_unavailable(call(*k, "GET", "/files/" + kept_key), 10);
    expect_unavailable(call(*k, "GET", "/files?prefix=" + prefix_), 10);
    // Every operation was tried 4 times.
    EXPECT_EQ(proxy_->count({"PUT ", small_key}), 4) << proxy_->dump();
    EXPECT_EQ(proxy_->count({"POST ", large_key, "?uploads"}), 4) << proxy_->dump();
    EXPECT_EQ(proxy_->count({"HEAD ", kept_key}) - heads, 4) << proxy_->dump();
    EXPECT_EQ(proxy_->faults() - faults, proxy_->requests() - requests);  // none got through

    proxy_->pass();
    EXPECT_EQ(call(*k, "GET", "/files/" + small_key).r.status, 404);
    EXPECT_EQ(call(*k, "GET", "/files/" + large_key).r.status, 404);
  }
  EXPECT_EQ(listed(*k), std::vector<std::string>{kept_key});
  get_ok(*k, kept_key, kept);
  EXPECT_EQ(k->stop(), 0);
}

// The HEAD works but every ranged GET gets 503 SlowDown: nothing of the
// answer has gone out when the download fails, so the client should get the
// 503 too, and the object is intact once S3 recovers.
TEST_F(S3Fault, DownloadWhoseGetsKeepFailingAnswers503) {
  auto k = start();
  const std::string key = prefix_ + "big.bin", big = random_bytes(11, kLarge);
  put_ok(*k, key, big);
  proxy_->fail_all(503, "SlowDown", is_get);
  const Timed t = call(*k, "GET", "/files/" + key);
  expect_unavailable(t, 10);
  EXPECT_EQ(t.r.headers.rfind("HTTP/1.1 503", 0), 0u) << "status line and headers: [" << t.r.headers << "]";
  EXPECT_GE(proxy_->count({"GET ", key}), 4) << proxy_->dump();
  proxy_->pass();
  get_ok(*k, key, big);
  EXPECT_EQ(k->stop(), 0);
}

// A multipart upload whose parts, or whose completion, S3 keeps refusing:
// the client gets a 503, the upload is aborted (DELETE ?uploadId) and no
// object appears.
TEST_F(S3Fault, MultipartUploadThatKeepsFailingIsAbortedAndLeavesNothing) {
  auto k = start();
  struct Case {
    std::string name;
    FaultyS3Proxy::Match match;
  };
  for (const Case& c : {Case{"parts", is_part}, Case{"complete", is_complete}}) {
    SCOPED_TRACE(c.name);
    const std::string key = prefix_ + c.name + ".bin";
    proxy_->pass();
    proxy_->fail_all(503, "SlowDown", c.match);
    expect_unavailable(call(*k, "PUT", "/files/" + key, random_bytes(6, kLarge)), 15);
    EXPECT_EQ(proxy_->count({"POST ", key, "?uploads"}), 1) << proxy_->dump();
    // The answer does not wait for the abort, which follows at once.
    EXPECT_TRUE(cleaned_up(*k, 10s));
    EXPECT_EQ(proxy_->count({"DELETE ", key, "uploadId="}), 1) << proxy_->dump();
    if (c.name == "complete") {
      EXPECT_EQ(proxy_->count({"PUT ", key, "partNumber="}), 3) << proxy_->dump();
      EXPECT_EQ(proxy_->count({"POST ", key, "uploadId="}), 4) << proxy_->dump();
    }
    proxy_->pass();
    EXPECT_EQ(call(*k, "GET", "/files/" + key).r.status, 404);
  }
  EXPECT_TRUE(listed(*k).empty());
  EXPECT_EQ(k->stop(), 0);
}

// S3 reads requests and never answers. With stall_timeout_ms=1000 and
// max_attempts=2 each operation gives up after two stalled attempts (2.5 to
// 15 s, see below): uploads (single and multipart) and downloads get a 503;
// meanwhile kiroku keeps answering other requests, and once S3 answers again
// everything works and none of the hung uploads exists.
TEST_F(S3Fault, HangingS3Answers503AndKirokuStaysHealthy) {
  auto k = start("&stall_timeout_ms=1000&max_attempts=2");
  const std::string kept_key = prefix_ + "kept.bin", kept = random_bytes(7, kLarge);
  put_ok(*k, kept_key, kept);

  proxy_->hang();
  Pending small = begin(k->port(), "PUT", "/files/" + prefix_ + "small.bin", random_bytes(8, kSmall));
  Pending large = begin(k->port(), "PUT", "/files/" + prefix_ + "large.bin", random_bytes(9, kLarge));
  Pending get = begin(k->port(), "GET", "/files/" + kept_key);
  // While they hang, kiroku answers at once.
  std::this_thread::sleep_for(300ms);
  const auto t0 = Clock::now();
  EXPECT_EQ(http_get(k->port(), "/healthz").status, 200);
  EXPECT_EQ(http_get(k->port(), "/?name=s3fault&value=1").status, 204);
  EXPECT_LT(Clock::now() - t0, 2s);
  // Without a body an attempt ends about 1 s after its request. After sending
  // one (the single PUT) it takes about 6 s more: curl's low-speed check
  // (CURLOPT_LOW_SPEED_TIME) averages the speed over its last ~5 s, and the
  // body's burst keeps that average above 1 byte/s meanwhile.
  for (auto [p, limit] : {std::pair{&small, 25.0}, std::pair{&large, 8.0}, std::pair{&get, 8.0}}) {
    SCOPED_TRACE(p->what);
    const Timed t = finish(*k, *p, 40s);
    expect_unavailable(t, limit);
    std::printf("hanging S3: %s answered %d after %.1f s\n", p->what.c_str(), t.r.status, t.seconds);
  }
  EXPECT_EQ(proxy_->faults(), 6) << proxy_->dump();  // 2 attempts of PUT, create, HEAD

  proxy_->pass();
  EXPECT_EQ(call(*k, "GET", "/files/" + prefix_ + "small.bin").r.status, 404);
  EXPECT_EQ(call(*k, "GET", "/files/" + prefix_ + "large.bin").r.status, 404);
  const std::string after = random_bytes(10, kLarge);
  put_ok(*k, prefix_ + "after.bin", after);
  get_ok(*k, prefix_ + "after.bin", after);
  get_ok(*k, kept_key, kept);
  EXPECT_EQ(listed(*k), (std::vector<std::string>{prefix_ + "after.bin", kept_key}));
  EXPECT_EQ(k->stop(), 0);
}

// S3 takes the create of a multipart upload, then reads every request and
// never answers. The client gets its 503 once a part gives up (two stalled
// attempts of about 7 s each, see above), not after the abort's 5 tries too
// (about 40 s); the abort goes on in the background and gets through once S3
// answers again, so the upload is gone. A second one, still being aborted
// when kiroku stops, holds up the stop only until --shutdown-timeout.
TEST_F(S3Fault, HangingPartsAreAnsweredWithoutWaitingForTheAbort) {
  auto k = start("&stall_timeout_ms=1000&max_attempts=2", {"--shutdown-timeout", "5s"});
  const std::string key = prefix_ + "hung.bin";
  proxy_->hang([](std::string_view l) { return !is_create(l); });
  const Timed t = call(*k, "PUT", "/files/" + key, random_bytes(12, kLarge));
  expect_unavailable(t, 25);
  std::printf("hanging S3 parts: answered %d after %.1f s\n", t.r.status, t.seconds);
  EXPECT_EQ(proxy_->count({"POST ", key, "?uploads"}), 1) << proxy_->dump();
  EXPECT_EQ(metric_value(k->port(), "kiroku_object_uploads_cleaning_up"), 1);

  proxy_->pass();
  const auto passed = Clock::now();
  ASSERT_TRUE(cleaned_up(*k, 40s)) << proxy_->dump();
  std::printf("hanging S3 parts: the abort got through %.1f s after S3 answered again\n",
              std::chrono::duration<double>(Clock::now() - passed).count());
  // The upload is gone: aborting it again finds no such upload.
  const std::string upload_id = upload_id_in(proxy_->dump(), "DELETE");
  ASSERT_FALSE(upload_id.empty()) << proxy_->dump();
  s3::S3Config config;
  config.endpoint = std::getenv("KIROKU_TEST_S3_ENDPOINT");
  config.bucket = bucket_;
  auto creds = s3::credentials_from_environment();
  config.credentials = creds.ok() ? *creds : s3::Credentials{"S3RVER", "S3RVER", ""};
  auto client = s3::S3Client::create(config);
  ASSERT_TRUE(client.ok());
  std::promise<Status> again;
  (*client)->abort_multipart_upload(HashPrefixLayout(1).stored_key(key), upload_id,
                                    [&again](Status st) { again.set_value(st); });
  EXPECT_EQ(again.get_future().get().kind(), ErrorKind::not_found) << proxy_->dump();
  EXPECT_EQ(call(*k, "GET", "/files/" + key).r.status, 404);

  // Hung again: the stop cuts the second abort short.
  proxy_->hang([](std::string_view l) { return !is_create(l); });
  expect_unavailable(call(*k, "PUT", "/files/" + prefix_ + "hung2.bin", random_bytes(13, kLarge)), 25);
  EXPECT_EQ(metric_value(k->port(), "kiroku_object_uploads_cleaning_up"), 1);
  const auto stopping = Clock::now();
  EXPECT_EQ(k->stop(), 0);
  const double stop_s = std::chrono::duration<double>(Clock::now() - stopping).count();
  std::printf("hanging S3 parts: stopped in %.1f s with an abort still running\n", stop_s);
  EXPECT_LT(stop_s, 9.0);  // --shutdown-timeout 5s, and the exit
  proxy_->pass();
}

}  // namespace
}  // namespace kiroku::test
