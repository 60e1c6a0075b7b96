// make_store_test.cpp - the options of an s3:// --store URL
// (connect_timeout_ms, stall_timeout_ms, max_attempts, stream_put_max):
// accepted values reach S3Client's configuration or the store, bad ones are
// invalid and name the parameter. No S3 server is contacted.
#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "store/object_store.h"
#include "store/s3/s3_store.h"

namespace kiroku {
namespace {

using namespace std::chrono_literals;

// Sets AWS credentials for the test's duration (make_store needs them), then
// restores the environment as it was.
class ScopedCredentials {
 public:
  ScopedCredentials() {
    for (const char* name : {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}) {
      const char* old = std::getenv(name);
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      ::setenv(name, "TESTKEY", 1);
    }
  }
  ~ScopedCredentials() {
    for (const auto& [name, value] : saved_) {
      if (value) ::setenv(name.c_str(), value->c_str(), 1);
      else ::unsetenv(name.c_str());
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

StoreOptions options() {
  StoreOptions o;
  o.part_size = 5 << 20;
  o.part_count = 2;
  o.parts_per_transfer = 2;
  o.threads = 1;
  return o;
}

const std::string kBase = "s3://bucket?endpoint=http://127.0.0.1:9&region=us-east-1";

TEST(StoreMakeStore, S3UrlClientOptionsReachTheClient) {
  ScopedCredentials credentials;
  auto defaults = make_store(kBase, options());
  ASSERT_TRUE(defaults.ok()) << defaults.status().message();
  const s3::S3Config& d = dynamic_cast<S3Store&>(**defaults).client().config();
  EXPECT_EQ(d.connect_timeout, 5000ms);
  EXPECT_EQ(d.stall_timeout, 30000ms);
  EXPECT_EQ(d.max_attempts, 4);
  EXPECT_EQ(dynamic_cast<S3Store&>(**defaults).s3_options().stream_put_max, 0u);
  EXPECT_EQ(dynamic_cast<S3Store&>(**defaults).s3_options().stream_get_max, 0u);

  auto store = make_store(kBase + "&connect_timeout_ms=250&stall_timeout_ms=1500&max_attempts=2", options());
  ASSERT_TRUE(store.ok()) << store.status().message();
  const s3::S3Config& c = dynamic_cast<S3Store&>(**store).client().config();
  EXPECT_EQ(c.connect_timeout, 250ms);
  EXPECT_EQ(c.stall_timeout, 1500ms);
  EXPECT_EQ(c.max_attempts, 2);

  auto streamed = make_store(kBase + "&stream_put_max=5368709120&stream_get_max=5497558138880", options());
  ASSERT_TRUE(streamed.ok()) << streamed.status().message();
  EXPECT_EQ(dynamic_cast<S3Store&>(**streamed).s3_options().stream_put_max, 5ull << 30);
  EXPECT_EQ(dynamic_cast<S3Store&>(**streamed).s3_options().stream_get_max, 5ull << 40);
}

TEST(StoreMakeStore, S3UrlClientOptionsAreValidated) {
  ScopedCredentials credentials;
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"connect_timeout_ms=", "connect_timeout_ms"},
      {"connect_timeout_ms=0", "connect_timeout_ms"},
      {"connect_timeout_ms=1s", "connect_timeout_ms"},
      {"stall_timeout_ms=-5", "stall_timeout_ms"},
      {"stall_timeout_ms=3600001", "stall_timeout_ms"},
      {"stall_timeout_ms=1e3", "stall_timeout_ms"},
      {"max_attempts=0", "max_attempts"},
      {"max_attempts=101", "max_attempts"},
      {"max_attempts=99999999999999999999", "max_attempts"},
      {"stream_put_max=5368709121", "stream_put_max"},
      {"stream_put_max=-1", "stream_put_max"},
      {"stream_put_max=1GiB", "stream_put_max"},
      {"stream_get_max=5497558138881", "stream_get_max"},
      {"stream_get_max=-1", "stream_get_max"},
  };
  for (const auto& [query, name] : bad) {
    SCOPED_TRACE(query);
    auto store = make_store(kBase + "&" + query, options());
    ASSERT_FALSE(store.ok());
    EXPECT_EQ(store.status().kind(), ErrorKind::invalid);
    EXPECT_NE(store.status().message().find(name), std::string::npos) << store.status().message();
  }
  // The bounds themselves are accepted.
  EXPECT_TRUE(make_store(kBase + "&connect_timeout_ms=1&stall_timeout_ms=3600000&max_attempts=100", options()).ok());
}

}  // namespace
}  // namespace kiroku
