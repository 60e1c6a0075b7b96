// credentials_test.cpp - the shared-file parser, the chain's order and its
// start-up error, the region rule, and the provider's refresh with a scripted
// source. No network: the sources that would use it are switched off or not
// configured (the endpoint fakes are in test/integration/s3_credentials_test.cpp).
#include "store/s3/credentials.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace kiroku::s3 {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

// An environment of exactly these variables.
EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) {
    auto it = vars.find(name);
    return it == vars.end() ? std::string() : it->second;
  };
}

class TempFiles {
 public:
  TempFiles() {
    dir_ = std::filesystem::temp_directory_path() /
           ("kiroku-creds-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
  }
  ~TempFiles() { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const auto path = dir_ / name;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << text;
    return path.string();
  }
  std::string path() const { return dir_.string(); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
};

// --- the shared files ------------------------------------------------------

TEST(S3Credentials, ParsesTheCredentialsFile) {
  const Profiles p = parse_profile_file(
      "# comment\n"
      "[default]\n"
      "aws_access_key_id = AKIDDEFAULT\n"
      "aws_secret_access_key=secret/with+chars==\n"
      "\n"
      "; another comment\n"
      "[ work ]\r\n"
      "AWS_Access_Key_Id = AKIDWORK   # inline comment\r\n"
      "aws_secret_access_key = s#not-a-comment\r\n"
      "aws_session_token = TOKEN\r\n"
      "s3 =\n"
      "  max_concurrent_requests = 20\n"
      "[default]\n"
      "region = eu-west-1\n",
      /*config_file=*/false);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p.at("default").at("aws_access_key_id"), "AKIDDEFAULT");
  EXPECT_EQ(p.at("default").at("aws_secret_access_key"), "secret/with+chars==");
  EXPECT_EQ(p.at("default").at("region"), "eu-west-1");  // a section named twice merges
  EXPECT_EQ(p.at("work").at("aws_access_key_id"), "AKIDWORK");
  EXPECT_EQ(p.at("work").at("aws_secret_access_key"), "s#not-a-comment");
  EXPECT_EQ(p.at("work").at("aws_session_token"), "TOKEN");
  EXPECT_EQ(p.at("work").at("s3"), "");
  EXPECT_FALSE(p.at("work").contains("max_concurrent_requests"));  // a sub-property
}

TEST(S3Credentials, ParsesTheConfigFileWithProfilePrefixes) {
  const Profiles p = parse_profile_file(
      "[default]\nregion = us-west-2\n"
      "[profile work]\nregion = eu-central-1\naws_access_key_id = AKIDCFG\n"
      "[work]\nregion = ignored\n"            // a bare name is not a profile in config
      "[sso-session corp]\nsso_region = x\n"  // nor is an sso-session
      "[profile]\nregion = nameless\n",       // nor an empty name
      /*config_file=*/true);
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p.at("default").at("region"), "us-west-2");
  EXPECT_EQ(p.at("work").at("region"), "eu-central-1");
  EXPECT_EQ(p.at("work").at("aws_access_key_id"), "AKIDCFG");
}

TEST(S3Credentials, KeysOutsideASectionAndJunkAreIgnored) {
  const Profiles p = parse_profile_file("key = before any section\n[unclosed\nx = 1\nnot a pair\n[a]\nb\n", false);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_TRUE(p.at("a").empty());
}

// --- the chain -------------------------------------------------------------

std::vector<std::string> names(const std::vector<std::unique_ptr<CredentialSource>>& chain) {
  std::vector<std::string> out;
  for (const auto& s : chain) out.push_back(s->name().substr(0, s->name().find(' ')));
  return out;
}

TEST(S3Credentials, ChainIsInTheSdkOrder) {
  const auto chain = default_chain(env_of({}));
  EXPECT_EQ(names(chain), (std::vector<std::string>{"environment", "shared", "web", "container", "EC2"}));
}

TEST(S3Credentials, EnvironmentComesBeforeTheSharedFiles) {
  TempFiles files;
  const std::string creds =
      files.write("credentials", "[default]\naws_access_key_id=AKIDFILE\naws_secret_access_key=S\n");
  std::map<std::string, std::string> vars{
      {"AWS_SHARED_CREDENTIALS_FILE", creds}, {"AWS_CONFIG_FILE", files.path() + "/none"},
      {"AWS_EC2_METADATA_DISABLED", "true"},  {"AWS_ACCESS_KEY_ID", "AKIDENV"},
      {"AWS_SECRET_ACCESS_KEY", "SECRETENV"}, {"AWS_SESSION_TOKEN", "TOKENENV"}};
  auto p = CredentialsProvider::resolve(default_chain(env_of(vars)));
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ((*p)->source(), "environment");
  EXPECT_EQ((*p)->current()->credentials.access_key_id, "AKIDENV");
  EXPECT_EQ((*p)->current()->credentials.session_token, "TOKENENV");
  EXPECT_FALSE((*p)->current()->expires());

  vars.erase("AWS_ACCESS_KEY_ID");
  vars.erase("AWS_SECRET_ACCESS_KEY");
  p = CredentialsProvider::resolve(default_chain(env_of(vars)));
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ((*p)->source(), "shared files (profile 'default')");
  EXPECT_EQ((*p)->current()->credentials.access_key_id, "AKIDFILE");
  EXPECT_EQ((*p)->current()->credentials.session_token, "");
}

TEST(S3Credentials, ProfileFromAwsProfileAndTheConfigFile) {
  TempFiles files;
  std::map<std::string, std::string> vars{
      {"HOME", files.path()},
      {"AWS_PROFILE", "work"},
      {"AWS_EC2_METADATA_DISABLED", "TRUE"},
  };
  // ~/.aws/config alone, "[profile work]".
  files.write(".aws/config",
              "[default]\nregion=us-west-1\n[profile work]\naws_access_key_id=AKIDCFG\n"
              "aws_secret_access_key=SCFG\naws_session_token=TCFG\nregion=ap-south-1\n");
  auto p = CredentialsProvider::resolve(default_chain(env_of(vars)));
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ((*p)->source(), "shared files (profile 'work')");
  EXPECT_EQ((*p)->current()->credentials.access_key_id, "AKIDCFG");
  EXPECT_EQ((*p)->current()->credentials.session_token, "TCFG");
  EXPECT_EQ(default_region(env_of(vars)), "ap-south-1");

  // ~/.aws/credentials wins over ~/.aws/config for the same profile.
  files.write(".aws/credentials",
              "[default]\naws_access_key_id=AKIDDEF\naws_secret_access_key=SDEF\n"
              "[work]\naws_access_key_id=AKIDCRED\naws_secret_access_key=SCRED\n");
  p = CredentialsProvider::resolve(default_chain(env_of(vars)));
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ((*p)->current()->credentials.access_key_id, "AKIDCRED");
  EXPECT_EQ((*p)->current()->credentials.secret_access_key, "SCRED");

  // Without AWS_PROFILE: "default".
  vars.erase("AWS_PROFILE");
  p = CredentialsProvider::resolve(default_chain(env_of(vars)));
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ((*p)->current()->credentials.access_key_id, "AKIDDEF");
  EXPECT_EQ(default_region(env_of(vars)), "us-west-1");
}

TEST(S3Credentials, RegionFromTheEnvironmentBeforeTheProfile) {
  TempFiles files;
  const std::string config = files.write("config", "[default]\nregion = eu-north-1\n");
  std::map<std::string, std::string> vars{{"AWS_CONFIG_FILE", config},
                                          {"AWS_SHARED_CREDENTIALS_FILE", files.path() + "/none"}};
  EXPECT_EQ(default_region(env_of(vars)), "eu-north-1");
  vars["AWS_DEFAULT_REGION"] = "sa-east-1";
  EXPECT_EQ(default_region(env_of(vars)), "sa-east-1");
  vars["AWS_REGION"] = "ca-central-1";
  EXPECT_EQ(default_region(env_of(vars)), "ca-central-1");
  EXPECT_EQ(default_region(env_of({{"HOME", files.path()}})), "");
}

TEST(S3Credentials, NoCredentialsAnywhereNamesEverySourceTried) {
  TempFiles files;
  auto p = CredentialsProvider::resolve(
      default_chain(env_of({{"HOME", files.path()}, {"AWS_EC2_METADATA_DISABLED", "true"}})));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().kind(), ErrorKind::invalid);
  const std::string& m = p.status().message();
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
  std::size_t at = 0;
  for (const char* part : {"no AWS credentials found; tried environment: AWS_ACCESS_KEY_ID is not set",
                           "shared files (profile 'default'): no aws_access_key_id in", "/.aws/credentials",
                           "web identity", "AWS_WEB_IDENTITY_TOKEN_FILE is not set", "container",
                           "EC2 instance metadata (http://169.254.169.254)", "AWS_EC2_METADATA_DISABLED is true"}) {
    const std::size_t found = m.find(part, at);
    ASSERT_NE(found, std::string::npos) << "'" << part << "' (in order) in: " << m;
    at = found;
  }
}

TEST(S3Credentials, HalfConfiguredSourcesAreNamedAndSkipped) {
  TempFiles files;
  const std::string creds = files.write("credentials",
                                        "[default]\naws_access_key_id = AKIDFILE\n"
                                        "aws_secret_access_key = SFILE\n");
  auto p = CredentialsProvider::resolve(default_chain(env_of({{"AWS_ACCESS_KEY_ID", "AKIDONLY"},
                                                              {"AWS_SHARED_CREDENTIALS_FILE", creds},
                                                              {"AWS_EC2_METADATA_DISABLED", "true"}})));
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ((*p)->current()->credentials.access_key_id, "AKIDFILE");

  auto none = CredentialsProvider::resolve(
      default_chain(env_of({{"HOME", files.path()},
                            {"AWS_WEB_IDENTITY_TOKEN_FILE", files.path() + "/token"},
                            {"AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.169.254/creds"},
                            {"AWS_EC2_METADATA_DISABLED", "true"}})));
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not"),
            std::string::npos)
      << none.status().message();
  // A plain-http FULL_URI must name a loopback or the container hosts (the SDKs' rule).
  EXPECT_NE(none.status().message().find("AWS_CONTAINER_CREDENTIALS_FULL_URI must be https"), std::string::npos)
      << none.status().message();
}

// --- refresh ---------------------------------------------------------------

// Hands out credentials number n that expire `lifetime` after they are
// fetched; fails while `failing` is set.
class ScriptedSource final : public CredentialSource {
 public:
  explicit ScriptedSource(std::chrono::milliseconds lifetime) : lifetime_(lifetime) {}
  std::string name() const override { return "scripted"; }
  Result<TimedCredentials> fetch() override {
    const int n = ++calls;
    if (failing.load()) return Status::transient("scripted outage");
    const auto expiration = std::chrono::time_point_cast<std::chrono::system_clock::duration>(Clock::now() + lifetime_);
    return TimedCredentials{{"AKID" + std::to_string(n), "SECRET" + std::to_string(n), "TOKEN" + std::to_string(n)},
                            expiration};
  }
  std::atomic<int> calls{0};
  std::atomic<bool> failing{false};

 private:
  std::chrono::milliseconds lifetime_;
};

RefreshPolicy fast_policy() {
  RefreshPolicy p;
  p.retry_min = 100ms;
  p.retry_max = 200ms;
  return p;
}

TEST(S3Credentials, TemporaryCredentialsAreRefreshedBeforeTheyExpire) {
  auto source = std::make_unique<ScriptedSource>(1600ms);
  ScriptedSource* s = source.get();
  std::vector<std::unique_ptr<CredentialSource>> chain;
  chain.push_back(std::move(source));
  auto p = CredentialsProvider::resolve(std::move(chain), fast_policy());
  ASSERT_TRUE(p.ok()) << p.status().message();
  auto first = (*p)->current();
  EXPECT_EQ(first->credentials.access_key_id, "AKID1");
  EXPECT_TRUE(first->expires());
  // Half the lifetime (0.8 s) before expiration, well before it.
  std::this_thread::sleep_for(1200ms);
  auto second = (*p)->current();
  EXPECT_GE(s->calls.load(), 2);
  EXPECT_NE(second->credentials.access_key_id, "AKID1");
  EXPECT_FALSE(second->expired(Clock::now()));
  EXPECT_GE((*p)->fetches(), 2);
  // A reader's copy stays valid and unchanged across refreshes.
  EXPECT_EQ(first->credentials.session_token, "TOKEN1");
}

TEST(S3Credentials, AFailedRefreshKeepsTheOldCredentialsUntilTheyExpire) {
  auto source = std::make_unique<ScriptedSource>(1500ms);
  ScriptedSource* s = source.get();
  std::vector<std::unique_ptr<CredentialSource>> chain;
  chain.push_back(std::move(source));
  auto p = CredentialsProvider::resolve(std::move(chain), fast_policy());
  ASSERT_TRUE(p.ok());
  s->failing = true;
  std::this_thread::sleep_for(1000ms);  // refresh due at ~0.75 s, failed
  EXPECT_GE(s->calls.load(), 2);
  EXPECT_EQ((*p)->current()->credentials.access_key_id, "AKID1");
  EXPECT_FALSE((*p)->current()->expired(Clock::now()));
  std::this_thread::sleep_for(1000ms);  // now past expiration
  EXPECT_TRUE((*p)->current()->expired(Clock::now()));
  const std::string m = (*p)->expired_message();
  EXPECT_NE(m.find("S3 credentials from scripted expired at "), std::string::npos) << m;
  EXPECT_NE(m.find("scripted outage"), std::string::npos) << m;
  // The source comes back: the retries pick it up.
  s->failing = false;
  std::this_thread::sleep_for(600ms);
  EXPECT_FALSE((*p)->current()->expired(Clock::now()));
  EXPECT_NE((*p)->current()->credentials.access_key_id, "AKID1");
}

TEST(S3Credentials, FixedCredentialsNeverExpire) {
  auto p = CredentialsProvider::fixed({"AKID", "SECRET", ""});
  EXPECT_EQ(p->current()->credentials.access_key_id, "AKID");
  EXPECT_FALSE(p->current()->expires());
  EXPECT_EQ(p->fetches(), 1);
}

}  // namespace
}  // namespace kiroku::s3
