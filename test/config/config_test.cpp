// config_test.cpp - option precedence (flag > env > file > default) and errors.
#include "config/config.h"

#include "common/redact.h"

#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

namespace kiroku {
namespace {

struct Loaded {
  bool ok = false;
  ServeConfig config;
  ConfigError error;
};

Loaded load(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
  CLI::App app;
  ServeOptions options;
  options.add_to(app);
  std::vector<const char*> argv{"serve"};
  for (auto& a : args) argv.push_back(a.c_str());
  app.parse(static_cast<int>(argv.size()), const_cast<char**>(argv.data()));
  Loaded l;
  l.ok = options.resolve(l.config, l.error, [&](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
  return l;
}

std::string write_file(const std::string& text) {
  static int n = 0;
  auto path = std::filesystem::temp_directory_path() /
              ("kiroku-config-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ".toml");
  std::ofstream(path) << text;
  return path.string();
}

TEST(Config, Defaults) {
  auto l = load({});
  ASSERT_TRUE(l.ok) << l.error.line();
  EXPECT_EQ(l.config.listen, "127.0.0.1:8080");
  EXPECT_EQ(l.config.sink, "sqlite://./kiroku-data/events.db");
  EXPECT_EQ(l.config.store, "file://./kiroku-data/objects");
  EXPECT_EQ(l.config.durability, Durability::process);
  EXPECT_EQ(l.config.idle_timeout, std::chrono::seconds(75));
  EXPECT_EQ(l.config.store_buffer_wait, std::chrono::seconds(10));
  EXPECT_GE(l.config.threads, 1u);
  EXPECT_EQ(l.config.max_upload_bytes, 0u);
  auto limited = load({"--max-upload-bytes", "2GiB"});
  ASSERT_TRUE(limited.ok) << limited.error.line();
  EXPECT_EQ(limited.config.max_upload_bytes, 2ull << 30);
  auto no_limit = load({"--store-buffer-wait", "0s"});
  ASSERT_TRUE(no_limit.ok) << no_limit.error.line();
  EXPECT_EQ(no_limit.config.store_buffer_wait.count(), 0);
}

TEST(Config, Precedence) {
  const auto file = write_file("threads = 3\nflush-interval = \"20ms\"\nbatch_max = 500\ntable = \"from_file\"\n");
  auto l = load({"--config", file, "--threads", "2"}, {{"KIROKU_THREADS", "5"}, {"KIROKU_FLUSH_INTERVAL", "30ms"}});
  ASSERT_TRUE(l.ok) << l.error.line();
  EXPECT_EQ(l.config.threads, 2u);                                    // flag
  EXPECT_EQ(l.config.flush_interval, std::chrono::milliseconds(30));  // env over file
  EXPECT_EQ(l.config.batch_max, 500u);                                // file (underscore spelling)
  EXPECT_EQ(l.config.table, "from_file");
  auto env_file = load({}, {{"KIROKU_CONFIG", file}});
  ASSERT_TRUE(env_file.ok);
  EXPECT_EQ(env_file.config.threads, 3u);
  std::filesystem::remove(file);
}

TEST(Config, ErrorsNameTheOptionAndSource) {
  auto bad_flag = load({"--threads", "zero"});
  EXPECT_FALSE(bad_flag.ok);
  EXPECT_EQ(bad_flag.error.option, "--threads");
  EXPECT_NE(bad_flag.error.reason.find("got 'zero'"), std::string::npos);

  auto bad_env = load({}, {{"KIROKU_DURABILITY", "maybe"}});
  EXPECT_FALSE(bad_env.ok);
  EXPECT_EQ(bad_env.error.option, "KIROKU_DURABILITY");

  auto bad_duration = load({"--flush-interval", "100"});
  EXPECT_FALSE(bad_duration.ok);
  EXPECT_NE(bad_duration.error.reason.find("unit"), std::string::npos);

  EXPECT_FALSE(load({"--sink", "oracle://x"}).ok);
  EXPECT_TRUE(load({"--sink", "postgres://u@h/d"}).ok);
  EXPECT_FALSE(load({"--listen", "nowhere"}).ok);
  EXPECT_FALSE(load({"--table", "drop table;"}).ok);
  EXPECT_FALSE(load({"--spool-max-bytes", "12 parsecs"}).ok);

  const auto unknown = write_file("thredas = 2\n");
  auto typo = load({"--config", unknown});
  EXPECT_FALSE(typo.ok);
  EXPECT_NE(typo.error.reason.find("unknown option 'thredas'"), std::string::npos);
  std::filesystem::remove(unknown);

  const auto broken = write_file("threads = \n");
  EXPECT_FALSE(load({"--config", broken}).ok);
  std::filesystem::remove(broken);

  auto missing = load({"--config", "/nonexistent/kiroku.toml"});
  EXPECT_FALSE(missing.ok);
  EXPECT_EQ(missing.error.option, "--config");
}

TEST(Config, CorsOriginsAreExactOriginsOrAStar) {
  auto none = load({});
  ASSERT_TRUE(none.ok);
  EXPECT_TRUE(none.config.cors_origins.empty());
  auto list = load({"--cors-origins", "https://shop.example, http://127.0.0.1:8000,*"});
  ASSERT_TRUE(list.ok) << list.error.line();
  EXPECT_EQ(list.config.cors_origins, (std::vector<std::string>{"https://shop.example", "http://127.0.0.1:8000", "*"}));
  for (const char* bad : {"shop.example", "https://shop.example/", "ftp://x", "https://a b", "http://"}) {
    auto l = load({"--cors-origins", bad});
    EXPECT_FALSE(l.ok) << bad;
    EXPECT_EQ(l.error.option, "--cors-origins") << bad;
    EXPECT_NE(l.error.reason.find("scheme://host[:port]"), std::string::npos) << l.error.reason;
  }
}

TEST(Config, Units) {
  std::chrono::milliseconds d;
  EXPECT_TRUE(parse_duration("1500us", d));
  EXPECT_EQ(d.count(), 1);
  EXPECT_TRUE(parse_duration("2m", d));
  EXPECT_EQ(d.count(), 120000);
  EXPECT_FALSE(parse_duration("2", d));
  EXPECT_FALSE(parse_duration("ms", d));
  std::uint64_t n;
  EXPECT_TRUE(parse_size("64MiB", n));
  EXPECT_EQ(n, 64ull << 20);
  EXPECT_TRUE(parse_size("1GB", n));
  EXPECT_EQ(n, 1000000000ull);
  EXPECT_FALSE(parse_size("1.5GiB", n));
}

TEST(Config, RedactsPasswords) {
  EXPECT_EQ(redact_url("mysql://user:secret@127.0.0.1:3306/db"), "mysql://user:***@127.0.0.1:3306/db");
  EXPECT_EQ(redact_url("sqlite:///var/x.db"), "sqlite:///var/x.db");
}

// The same split as parse_mysql_url: the password runs to the last '@' of
// the authority; text no parser takes is still hidden.
TEST(Config, RedactsPasswordsTheWayTheParserReadsThem) {
  const std::pair<const char*, const char*> cases[] = {
      {"mysql://ku:RET@PASS@127.0.0.1:3306/db", "mysql://ku:***@127.0.0.1:3306/db"},
      {"mysql://ku:a@b@c@h/db?socket=/x", "mysql://ku:***@h/db?socket=/x"},
      {"mysq://ku:SECRETPASS@h:1/db", "mysq://ku:***@h:1/db"},  // scheme typo
      {"mysql:/ku:SECRETPASS@h/db", "mysql:***@h/db"},          // no "://"
      {"ku:SECRETPASS@h/db", "ku:***@h/db"},                    // no scheme
      {"mysql://ku:SEC/RET@h/db", "mysql://ku:***@h/db"},       // '/' in the password
      {"mysql://ku:SEC?RET@h/db", "mysql://ku:***@h/db"},       // '?' in the password
      {"mysql://ku:SEC%40RET@h/db", "mysql://ku:***@h/db"},     // encoded '@'
      {"mysql://ku@h:3306/db", "mysql://ku@h:3306/db"},         // no password
      {"mysql://ku@h/db?socket=/run/a@b", "mysql://ku@h/db?socket=/run/a@b"},
      {"sqlite:///var/a@b:c.db", "sqlite:///var/a@b:c.db"},
      {"file://./kiroku@data/objects", "file://./kiroku@data/objects"},
      {"s3://bucket?endpoint=http://AK:SK@h:9000&region=r", "s3://bucket?endpoint=http://AK:***@h:9000&region=r"},
      {"s3://bucket?region=r", "s3://bucket?region=r"},
  };
  for (const auto& [in, want] : cases) EXPECT_EQ(redact_url(in), want) << in;
}

TEST(Config, TheStartLineHidesPasswords) {
  ServeConfig c;
  c.sink = "mysql://ku:RET@PASS@127.0.0.1:3306/db";
  c.store = "s3://b?endpoint=http://AK:SKSECRET@127.0.0.1:9000&region=r";
  const std::string line = describe(c);
  EXPECT_NE(line.find("sink=mysql://ku:***@127.0.0.1:3306/db "), std::string::npos) << line;
  EXPECT_EQ(line.find("PASS"), std::string::npos) << line;
  EXPECT_EQ(line.find("SKSECRET"), std::string::npos) << line;
}

TEST(Config, AnUnknownSinkSchemeIsReportedWithoutItsPassword) {
  for (const char* option : {"--sink", "--store"}) {
    auto l = load({option, "mysq://ku:SECRETPASS@127.0.0.1/db"});
    ASSERT_FALSE(l.ok);
    EXPECT_EQ(l.error.line().find("SECRETPASS"), std::string::npos) << l.error.line();
    EXPECT_NE(l.error.reason.find("got 'mysq://ku:***@127.0.0.1/db'"), std::string::npos) << l.error.reason;
  }
  auto env = load({}, {{"KIROKU_SINK", "mysql:/ku:SECRETPASS@h/db"}});
  ASSERT_FALSE(env.ok);
  EXPECT_EQ(env.error.line().find("SECRETPASS"), std::string::npos) << env.error.line();
}

// `kiroku config example`: read back by the loader, it gives every default;
// every option is in it, set or (unset by default) commented out.
TEST(Config, TheExampleFileGivesTheDefaultsBack) {
  const std::string text = example_config();
  const std::string path = write_file(text);
  auto from_file = load({"--config", path});
  ASSERT_TRUE(from_file.ok) << from_file.error.line();
  auto defaults = load({});
  ASSERT_TRUE(defaults.ok) << defaults.error.line();
  const auto want = option_values(defaults.config), got = option_values(from_file.config);
  ASSERT_EQ(want.size(), got.size());
  std::size_t set = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].value, want[i].value) << want[i].name;
    if (text.find("\n" + want[i].name + " = ") != std::string::npos) {
      ++set;
    } else {
      EXPECT_NE(text.find("\n# " + want[i].name + " = "), std::string::npos) << want[i].name << " is missing";
    }
  }
  EXPECT_GE(set, want.size() - 5);  // threads, instance, the token options and cors-origins are commented out
  // The commented-out examples are valid values too (but the token file, which must exist).
  std::string uncommented = text;
  for (const char* name : {"threads", "instance", "auth-token", "cors-origins"}) {
    const std::string line = std::string("\n# ") + name + " = ";
    const auto at = uncommented.find(line);
    ASSERT_NE(at, std::string::npos) << name;
    uncommented.erase(at + 1, 2);
  }
  auto examples = load({"--config", write_file(uncommented)});
  ASSERT_TRUE(examples.ok) << examples.error.line();
  EXPECT_EQ(examples.config.threads, 4u);
  EXPECT_EQ(examples.config.instance, 0);
  EXPECT_FALSE(examples.config.auth_token.empty());
  EXPECT_EQ(examples.config.cors_origins, (std::vector<std::string>{"https://shop.example", "http://127.0.0.1:8000"}));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace kiroku
