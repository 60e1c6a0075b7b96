// s3_credentials_test.cpp - AWS's credential sources against loopback fakes
// in the test process (EC2 instance metadata, the container endpoint, STS),
// asserting the exact requests the SDKs make; then the real binary: a 100 MiB
// upload to s3rver outliving several sets of container credentials, the named
// error once credentials expire without a refresh, and the start-up error
// when no source has any. Nothing here talks to 169.254.169.254: every test
// points the endpoints at a fake or switches instance metadata off.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "integration/fake_http.h"
#include "integration/faulty_s3_proxy.h"
#include "integration/harness.h"
#include "store/part_pool.h"
#include "store/s3/credentials.h"

namespace kiroku::test {
namespace {

using namespace std::chrono_literals;
using s3::CredentialsProvider;
using s3::default_chain;
using Request = FakeHttpServer::Request;
using Answer = FakeHttpServer::Answer;

s3::EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) {
    auto it = vars.find(name);
    return it == vars.end() ? std::string() : it->second;
  };
}

std::string request_line(const Request& r) { return r.head.substr(0, r.head.find("\r\n")); }

std::string iso8601(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  return path;
}

// Decoded form fields of an application/x-www-form-urlencoded body.
std::map<std::string, std::string> form_fields(std::string_view body) {
  auto decode = [](std::string_view in) {
    std::string out;
    for (std::size_t i = 0; i < in.size(); ++i) {
      if (in[i] == '%' && i + 2 < in.size()) {
        out.push_back(static_cast<char>(std::stoi(std::string(in.substr(i + 1, 2)), nullptr, 16)));
        i += 2;
      } else {
        out.push_back(in[i] == '+' ? ' ' : in[i]);
      }
    }
    return out;
  };
  std::map<std::string, std::string> out;
  while (!body.empty()) {
    std::string_view pair = body.substr(0, body.find('&'));
    body.remove_prefix(std::min(body.size(), pair.size() + 1));
    const std::size_t eq = pair.find('=');
    out[decode(pair.substr(0, eq))] = eq == std::string_view::npos ? "" : decode(pair.substr(eq + 1));
  }
  return out;
}

const char* kExpiration = "2031-01-02T03:04:05Z";
constexpr std::time_t kExpirationUnix = 1925089445;  // kExpiration

// --- the endpoints, asked as the SDKs ask them ---------------------------------

TEST(S3CredentialsEndpoints, InstanceMetadataIsAskedWithAnImdsV2Token) {
  FakeHttpServer imds([](const Request& r, int) -> Answer {
    const std::string line = request_line(r);
    if (line == "PUT /latest/api/token HTTP/1.1") return {http_response(200, "OK", "", "IMDS-SESSION-TOKEN")};
    if (line == "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1")
      return {http_response(200, "OK", "", "kiroku-role\n")};
    if (line == "GET /latest/meta-data/iam/security-credentials/kiroku-role HTTP/1.1")
      return {
          http_response(200, "OK", "Content-Type: text/plain\r\n",
                        std::string(R"({"Code":"Success","LastUpdated":"2030-12-31T00:00:00Z","Type":"AWS-HMAC",)") +
                            R"("AccessKeyId":"ASIAIMDS","SecretAccessKey":"imds/secret","Token":"IMDS-TOKEN",)" +
                            R"("Expiration":")" + kExpiration + R"("})")};
    return {http_response(404, "Not Found", "", "")};
  });
  TempDir home;
  auto p = CredentialsProvider::resolve(
      default_chain(env_of({{"HOME", home.path()}, {"AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint() + "/"}})));
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ((*p)->source(), "EC2 instance metadata (" + imds.endpoint() + ")");
  const auto c = (*p)->current();
  EXPECT_EQ(c->credentials.access_key_id, "ASIAIMDS");
  EXPECT_EQ(c->credentials.secret_access_key, "imds/secret");
  EXPECT_EQ(c->credentials.session_token, "IMDS-TOKEN");
  EXPECT_EQ(std::chrono::system_clock::to_time_t(c->expiration), kExpirationUnix);

  const auto seen = imds.requests();
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(request_line(seen[0]), "PUT /latest/api/token HTTP/1.1");
  EXPECT_EQ(header_value(seen[0].head, "X-aws-ec2-metadata-token-ttl-seconds"), "21600");
  EXPECT_EQ(header_value(seen[0].head, "X-aws-ec2-metadata-token"), "");
  EXPECT_EQ(request_line(seen[1]), "GET /latest/meta-data/iam/security-credentials/ HTTP/1.1");
  EXPECT_EQ(request_line(seen[2]), "GET /latest/meta-data/iam/security-credentials/kiroku-role HTTP/1.1");
  for (std::size_t i = 1; i < 3; ++i) {
    EXPECT_EQ(header_value(seen[i].head, "X-aws-ec2-metadata-token"), "IMDS-SESSION-TOKEN") << seen[i].head;
    EXPECT_TRUE(seen[i].body.empty());
  }
}

TEST(S3CredentialsEndpoints, InstanceMetadataCanBeSwitchedOff) {
  FakeHttpServer imds([](const Request&, int) -> Answer { return {http_response(500, "Error", "", "")}; });
  TempDir home;
  auto p = CredentialsProvider::resolve(default_chain(env_of({{"HOME", home.path()},
                                                              {"AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint()},
                                                              {"AWS_EC2_METADATA_DISABLED", "true"}})));
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("AWS_EC2_METADATA_DISABLED is true"), std::string::npos);
  EXPECT_TRUE(imds.requests().empty());
}

TEST(S3CredentialsEndpoints, InstanceMetadataFailureIsNamed) {
  FakeHttpServer imds([](const Request& r, int) -> Answer {
    if (request_line(r).starts_with("PUT ")) return {http_response(200, "OK", "", "T")};
    return {http_response(404, "Not Found", "", "")};  // no role attached
  });
  TempDir home;
  auto p = CredentialsProvider::resolve(
      default_chain(env_of({{"HOME", home.path()}, {"AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint()}})));
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("EC2 instance metadata (" + imds.endpoint() + "): the instance has no IAM role"),
            std::string::npos)
      << p.status().message();
}

TEST(S3CredentialsEndpoints, ContainerEndpointGetsTheAuthorizationToken) {
  FakeHttpServer ecs([](const Request& r, int) -> Answer {
    if (request_line(r) != "GET /v2/credentials/task-1?x=1 HTTP/1.1") return {http_response(404, "Not Found", "", "")};
    return {
        http_response(200, "OK", "Content-Type: application/json\r\n",
                      std::string(R"({"AccessKeyId":"ASIAECS","SecretAccessKey":"ecs-secret","Token":"ECS-TOKEN",)") +
                          R"("Expiration":")" + kExpiration + R"(","RoleArn":"arn:aws:iam::1:role/r"})")};
  });
  TempDir dir;
  const std::string token_file = write_file(dir.path() + "/token", "file-token-wins\n");
  std::map<std::string, std::string> vars{
      {"HOME", dir.path()},
      {"AWS_EC2_METADATA_DISABLED", "true"},
      {"AWS_CONTAINER_CREDENTIALS_FULL_URI", ecs.endpoint() + "/v2/credentials/task-1?x=1"},
      {"AWS_CONTAINER_AUTHORIZATION_TOKEN", "env-token"}};
  auto p = CredentialsProvider::resolve(default_chain(env_of(vars)));
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ((*p)->current()->credentials.access_key_id, "ASIAECS");
  EXPECT_EQ((*p)->current()->credentials.session_token, "ECS-TOKEN");
  EXPECT_EQ(std::chrono::system_clock::to_time_t((*p)->current()->expiration), kExpirationUnix);

  vars["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"] = token_file;  // the file wins over the variable
  auto q = CredentialsProvider::resolve(default_chain(env_of(vars)));
  ASSERT_TRUE(q.ok()) << q.status().message();

  const auto seen = ecs.requests();
  ASSERT_EQ(seen.size(), 2u);
  for (const auto& r : seen) {
    EXPECT_EQ(request_line(r), "GET /v2/credentials/task-1?x=1 HTTP/1.1");
    EXPECT_EQ(header_value(r.head, "Accept"), "application/json");
  }
  EXPECT_EQ(header_value(seen[0].head, "Authorization"), "env-token");
  EXPECT_EQ(header_value(seen[1].head, "Authorization"), "file-token-wins");

  // RELATIVE_URI goes to ECS's fixed address (not contacted here).
  const auto chain = default_chain(env_of({{"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/abc"}}));
  EXPECT_EQ(chain[3]->name(), "container (http://169.254.170.2/v2/credentials/abc)");
}

TEST(S3CredentialsEndpoints, WebIdentityAssumesTheRoleThroughSts) {
  FakeHttpServer sts([](const Request& r, int) -> Answer {
    return {http_response(
        200, "OK", "Content-Type: text/xml\r\n",
        std::string(R"(<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">)") +
            "<AssumeRoleWithWebIdentityResult><SubjectFromWebIdentityToken>system:serviceaccount:ns:sa"
            "</SubjectFromWebIdentityToken><Credentials><AccessKeyId>ASIASTS</AccessKeyId>"
            "<SecretAccessKey>sts/secret+key</SecretAccessKey><SessionToken>STS-TOKEN</SessionToken>"
            "<Expiration>" +
            kExpiration +
            "</Expiration></Credentials></AssumeRoleWithWebIdentityResult>"
            "<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></AssumeRoleWithWebIdentityResponse>")};
    (void)r;
  });
  TempDir dir;
  const std::string jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.sig-_+/=";
  std::map<std::string, std::string> vars{
      {"HOME", dir.path()},
      {"AWS_EC2_METADATA_DISABLED", "true"},
      {"AWS_WEB_IDENTITY_TOKEN_FILE", write_file(dir.path() + "/token", jwt + "\n")},
      {"AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/kiroku-role"},
      {"AWS_ROLE_SESSION_NAME", "kiroku session"},
      {"AWS_ENDPOINT_URL_STS", sts.endpoint()},
      // Container credentials come after web identity: this one must not be asked.
      {"AWS_CONTAINER_CREDENTIALS_FULL_URI", sts.endpoint() + "/container"},
  };
  auto p = CredentialsProvider::resolve(default_chain(env_of(vars)));
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ((*p)->source(), "web identity (STS " + sts.endpoint() + ")");
  const auto c = (*p)->current();
  EXPECT_EQ(c->credentials.access_key_id, "ASIASTS");
  EXPECT_EQ(c->credentials.secret_access_key, "sts/secret+key");
  EXPECT_EQ(c->credentials.session_token, "STS-TOKEN");
  EXPECT_EQ(std::chrono::system_clock::to_time_t(c->expiration), kExpirationUnix);

  const auto seen = sts.requests();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(request_line(seen[0]), "POST / HTTP/1.1");
  EXPECT_EQ(header_value(seen[0].head, "Content-Type"), "application/x-www-form-urlencoded; charset=utf-8");
  EXPECT_EQ(header_value(seen[0].head, "Authorization"), "");  // AssumeRoleWithWebIdentity is not signed
  EXPECT_EQ(header_value(seen[0].head, "Content-Length"), std::to_string(seen[0].body.size()));
  const auto fields = form_fields(seen[0].body);
  EXPECT_EQ(fields, (std::map<std::string, std::string>{{"Action", "AssumeRoleWithWebIdentity"},
                                                        {"Version", "2011-06-15"},
                                                        {"RoleArn", "arn:aws:iam::123456789012:role/kiroku-role"},
                                                        {"RoleSessionName", "kiroku session"},
                                                        {"WebIdentityToken", jwt}}))
      << seen[0].body;
}

TEST(S3CredentialsEndpoints, StsErrorsAreNamed) {
  FakeHttpServer sts([](const Request&, int) -> Answer {
    return {http_response(400, "Bad Request", "",
                          "<ErrorResponse><Error><Code>InvalidIdentityToken</Code></Error></ErrorResponse>")};
  });
  TempDir dir;
  auto p = CredentialsProvider::resolve(
      default_chain(env_of({{"HOME", dir.path()},
                            {"AWS_EC2_METADATA_DISABLED", "true"},
                            {"AWS_WEB_IDENTITY_TOKEN_FILE", write_file(dir.path() + "/token", "jwt")},
                            {"AWS_ROLE_ARN", "arn:aws:iam::1:role/r"},
                            {"AWS_ENDPOINT_URL_STS", sts.endpoint()}})));
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("STS AssumeRoleWithWebIdentity: HTTP 400"), std::string::npos)
      << p.status().message();
  EXPECT_NE(p.status().message().find("InvalidIdentityToken"), std::string::npos);
}

// --- the real binary ---------------------------------------------------------

// A container credentials endpoint whose answers expire `lifetime` after they
// are handed out: session token TOKEN<n> for the n-th request (the key is
// s3rver's S3RVER / S3RVER, the only one it accepts). While `failing`, it
// answers 500.
class ExpiringCredentials {
 public:
  explicit ExpiringCredentials(std::chrono::seconds lifetime)
      : lifetime_(lifetime), server_([this](const Request& r, int index) { return answer(r, index); }) {}
  std::string url() const { return server_.endpoint() + "/creds"; }
  std::vector<Request> requests() { return server_.requests(); }
  std::atomic<bool> failing{false};

 private:
  Answer answer(const Request&, int index) {
    if (failing.load()) return {http_response(500, "Internal Server Error", "", "")};
    const std::string n = std::to_string(index + 1);
    const nlohmann::json body = {{"AccessKeyId", "S3RVER"},
                                 {"SecretAccessKey", "S3RVER"},
                                 {"Token", "TOKEN" + n},
                                 {"Expiration", iso8601(std::chrono::system_clock::now() + lifetime_)}};
    return {http_response(200, "OK", "Content-Type: application/json\r\n", body.dump())};
  }
  std::chrono::seconds lifetime_;
  FakeHttpServer server_;
};

// The environment of a kiroku whose only credential source is the container endpoint at `url`.
std::vector<std::string> container_only_env(const std::string& dir, const std::string& url) {
  return {"AWS_ACCESS_KEY_ID=",
          "AWS_SECRET_ACCESS_KEY=",
          "AWS_SESSION_TOKEN=",
          "AWS_PROFILE=",
          "HOME=" + dir,
          "AWS_SHARED_CREDENTIALS_FILE=" + dir + "/no-credentials",
          "AWS_CONFIG_FILE=" + dir + "/no-config",
          "AWS_WEB_IDENTITY_TOKEN_FILE=",
          "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=",
          "AWS_CONTAINER_CREDENTIALS_FULL_URI=" + url,
          "AWS_CONTAINER_AUTHORIZATION_TOKEN=kiroku-test-authorization",
          "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=",
          "AWS_EC2_METADATA_DISABLED=true"};
}

// "S3RVER" from "AWS4-HMAC-SHA256 Credential=S3RVER/20261202/..."
std::string credential_of(const std::string& authorization) {
  const std::size_t at = authorization.find("Credential=");
  if (at == std::string::npos) return {};
  return authorization.substr(at + 11, authorization.find('/', at) - at - 11);
}

class S3CredentialsRefresh : public ::testing::Test {
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
  }

  std::unique_ptr<Kiroku> start(const std::string& credentials_url) {
    const std::string store = "s3://" + bucket_ + "?endpoint=" + proxy_->endpoint();  // region from AWS_REGION
    return std::make_unique<Kiroku>(
        dir_.path(),
        std::vector<std::string>{"--sink", "sqlite://" + dir_.path() + "/events.db", "--spool-dir",
                                 dir_.path() + "/spool", "--store", store, "--part-size", "5MiB"},
        container_only_env(dir_.path(), credentials_url));
  }

  TempDir dir_;
  std::string bucket_;
  std::unique_ptr<FaultyS3Proxy> proxy_;
};

// A 100 MiB upload, sent at about 12 MiB/s so that it lasts several credential
// lifetimes (4 s each, refreshed at half-life): it completes, the endpoint was
// asked again and again, and every S3 request carried a signed session token,
// more than one of them during the upload's parts.
// (s3rver checks the key but no signature; signing with a session token is
// checked against AWS's post-sts-header-* vectors in test/store/sigv4_test.cpp.)
TEST_F(S3CredentialsRefresh, UploadOutlivesItsCredentials) {
  ExpiringCredentials creds(4s);
  auto k = start(creds.url());
  ASSERT_TRUE(k->running()) << k->log();

  const std::size_t size = 100u << 20;
  std::string data(size, '\0');
  std::mt19937_64 rng(17);
  for (std::size_t i = 0; i + 8 <= size; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(data.data() + i, &v, 8);
  }
  const std::string key = "creds-refresh-" + std::to_string(::getpid());
  Client c(k->port(), 120000);
  ASSERT_TRUE(c.connected());
  const auto started = std::chrono::steady_clock::now();
  ASSERT_TRUE(
      c.send_raw("PUT /files/" + key + " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n"));
  const std::size_t chunk = 1u << 20;
  for (std::size_t off = 0; off < size; off += chunk) {
    ASSERT_TRUE(c.send_raw(std::string_view(data).substr(off, chunk)));
    std::this_thread::sleep_until(started + std::chrono::milliseconds(80 * (off / chunk + 1)));
  }
  const Response put = c.read_response();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  ASSERT_EQ(put.status, 201) << put.body << "\n" << k->log();
  const auto j = nlohmann::json::parse(put.body, nullptr, false);
  EXPECT_EQ(j["size"], size);
  Sha256Stream sha;
  sha.update(std::as_bytes(std::span(data.data(), data.size())));
  EXPECT_EQ(j["sha256"], sha.finish_hex());

  // The endpoint was asked more than once, each time with the token.
  const auto asked = creds.requests();
  EXPECT_GE(asked.size(), 3u) << "upload took " << seconds << " s";
  for (const auto& r : asked) {
    EXPECT_EQ(request_line(r), "GET /creds HTTP/1.1");
    EXPECT_EQ(header_value(r.head, "Authorization"), "kiroku-test-authorization");
  }

  // Every request to S3 carried X-Amz-Security-Token, signed (in SignedHeaders).
  std::set<std::string> part_tokens;
  int parts = 0;
  for (const std::string& head : proxy_->heads()) {
    const std::string token = header_value(head, "x-amz-security-token");
    const std::string authorization = header_value(head, "authorization");
    ASSERT_TRUE(token.starts_with("TOKEN")) << head;
    EXPECT_EQ(credential_of(authorization), "S3RVER") << head;
    EXPECT_NE(authorization.find("x-amz-security-token"), std::string::npos) << head;
    if (head.find("partNumber=") != std::string::npos && head.find(key) != std::string::npos) {
      ++parts;
      part_tokens.insert(token);
    }
  }
  EXPECT_EQ(parts, 20);
  EXPECT_GE(part_tokens.size(), 2u) << "the parts of one upload were signed with refreshed credentials";
  EXPECT_NE(k->log().find("s3 credentials: refreshed from container"), std::string::npos) << k->log();

  // And it reads back.
  Client g(k->port(), 120000);
  const Response get = g.get("/files/" + key);
  ASSERT_EQ(get.status, 200);
  EXPECT_TRUE(get.body == data);
  g.send_raw("DELETE /files/" + key + " HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_EQ(g.read_response().status, 204);
}

// The endpoint fails after the first answer: kiroku keeps the credentials it
// has until they expire, then a request fails with an error naming them.
TEST_F(S3CredentialsRefresh, ExpiredCredentialsFailRequestsWithANamedError) {
  ExpiringCredentials creds(5s);
  auto k = start(creds.url());
  ASSERT_TRUE(k->running()) << k->log();
  creds.failing = true;
  Client c(k->port(), 30000);
  const std::string key = "creds-expired-" + std::to_string(::getpid());
  // Still valid: it works.
  c.send_raw("PUT /files/" + key + " HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(c.read_response().status, 201);
  std::this_thread::sleep_for(6s);  // past the expiration
  c.send_raw("GET /files/" + key + " HTTP/1.1\r\nHost: t\r\n\r\n");
  const Response r = c.read_response();
  EXPECT_GE(r.status, 500) << r.body;
  const auto j = nlohmann::json::parse(r.body, nullptr, false);
  ASSERT_TRUE(j.is_object() && j.contains("error")) << r.body;
  const std::string error = j["error"];
  EXPECT_NE(error.find("S3 credentials from container (" + creds.url() + ") expired at"), std::string::npos) << error;
  EXPECT_NE(error.find("HTTP 500"), std::string::npos) << error;
  EXPECT_NE(k->log().find("refresh from container"), std::string::npos) << k->log();
  EXPECT_GE(creds.requests().size(), 2u);

  creds.failing = false;  // the endpoint comes back: so do requests
  bool recovered = false;
  for (int i = 0; i < 50 && !recovered; ++i) {
    std::this_thread::sleep_for(200ms);
    c.send_raw("GET /files/" + key + " HTTP/1.1\r\nHost: t\r\n\r\n");
    const Response again = c.read_response();
    recovered = again.status == 200 && again.body == "hello";
  }
  EXPECT_TRUE(recovered) << k->log();
  c.send_raw("DELETE /files/" + key + " HTTP/1.1\r\nHost: t\r\n\r\n");
  c.read_response();
}

// No credentials anywhere: kiroku does not start; one line names every source tried.
TEST(S3CredentialsStartup, NoCredentialsIsAOneLineStartupError) {
  TempDir dir;
  std::string command = "env -i PATH=/usr/bin:/bin HOME=" + dir.path() + " AWS_EC2_METADATA_DISABLED=true " +
                        KIROKU_BINARY + " serve --listen 127.0.0.1:" + std::to_string(free_port()) +
                        " --sink sqlite://" + dir.path() + "/e.db --spool-dir " + dir.path() +
                        "/spool --store 's3://bucket?endpoint=http://127.0.0.1:9' 2>&1";
  FILE* out = ::popen(command.c_str(), "r");
  ASSERT_NE(out, nullptr);
  std::string text;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, out)) > 0;) text.append(buf, n);
  const int status = ::pclose(out);
  ASSERT_TRUE(WIFEXITED(status)) << text;
  EXPECT_EQ(WEXITSTATUS(status), 2) << text;
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.find('\n'), text.size() - 1) << text;  // one line
  EXPECT_TRUE(text.starts_with("kiroku: --store: no AWS credentials found; tried environment:")) << text;
  for (const char* source : {"shared files (profile 'default')", "web identity", "container", "EC2 instance metadata",
                             "AWS_EC2_METADATA_DISABLED is true"})
    EXPECT_NE(text.find(source), std::string::npos) << source << " in " << text;
}

}  // namespace
}  // namespace kiroku::test
