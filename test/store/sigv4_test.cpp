// sigv4_test.cpp - SigV4 signing against every case of the AWS signing test suite
// (test/store/testdata/sigv4, Apache-2.0, see its LICENSE), plus the encoding helpers.
#include "store/s3/sigv4.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#ifndef KIROKU_SOURCE_DIR
#error "KIROKU_SOURCE_DIR must name the source tree (the build defines it)"
#endif

namespace kiroku::s3 {
namespace {

namespace fs = std::filesystem;

fs::path vectors_dir() { return fs::path(KIROKU_SOURCE_DIR) / "test" / "store" / "testdata" / "sigv4"; }

std::vector<std::string> case_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(vectors_dir(), ec)) {
    if (entry.is_directory() && fs::exists(entry.path() / "context.json")) {
      names.push_back(entry.path().filename().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string percent_decode(std::string_view in) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size() && hex(in[i + 1]) >= 0 && hex(in[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(in[i + 1]) * 16 + hex(in[i + 2])));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

using Pairs = std::vector<std::pair<std::string, std::string>>;

Pairs parse_query(std::string_view query) {
  Pairs out;
  std::size_t pos = 0;
  while (pos < query.size()) {
    std::size_t amp = query.find('&', pos);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view item = query.substr(pos, amp - pos);
    std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      out.emplace_back(percent_decode(item), "");
    } else {
      out.emplace_back(percent_decode(item.substr(0, eq)), percent_decode(item.substr(eq + 1)));
    }
    pos = amp + 1;
  }
  return out;
}

// A raw HTTP request as the suite writes it: request line, headers (a line
// that starts with whitespace continues the previous header), blank line, body.
struct RawRequest {
  std::string method;
  std::string path;
  Pairs query;
  Pairs headers;
  std::string body;
};

RawRequest parse_request(const std::string& text) {
  RawRequest r;
  std::vector<std::string> lines;
  std::size_t pos = 0;
  std::size_t body_start = text.size();
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    pos = nl == std::string::npos ? text.size() : nl + 1;
    if (line.empty() && !lines.empty()) {
      body_start = pos;
      break;
    }
    lines.push_back(line);
  }
  r.body = text.substr(std::min(body_start, text.size()));

  // Request line: METHOD SP target SP version; the target may hold spaces.
  const std::string& first = lines.at(0);
  std::size_t sp1 = first.find(' ');
  std::size_t sp2 = first.rfind(' ');
  r.method = first.substr(0, sp1);
  std::string target = first.substr(sp1 + 1, sp2 - sp1 - 1);
  std::size_t q = target.find('?');
  r.path = target.substr(0, q);
  if (q != std::string::npos) r.query = parse_query(std::string_view(target).substr(q + 1));

  for (std::size_t i = 1; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if ((line[0] == ' ' || line[0] == '\t') && !r.headers.empty()) {
      r.headers.back().second += " " + line;  // obsolete line folding: a space
      continue;
    }
    std::size_t colon = line.find(':');
    r.headers.emplace_back(line.substr(0, colon), line.substr(colon + 1));
  }
  return r;
}

std::int64_t parse_timestamp(const std::string& iso) {
  std::tm tm{};
  std::istringstream in(iso);
  in >> std::get_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  return static_cast<std::int64_t>(timegm(&tm));
}

// One case folder, loaded.
struct Case {
  fs::path dir;
  nlohmann::json context;
  RawRequest request;
  std::vector<HttpField> headers;
  std::vector<QueryParam> query;
  std::string payload_hash;
  std::string region, service;

  explicit Case(const std::string& name) : dir(vectors_dir() / name) {
    context = nlohmann::json::parse(read_file(dir / "context.json"));
    request = parse_request(read_file(dir / "request.txt"));
    for (const auto& [n, v] : request.headers) headers.push_back({n, v});
    for (const auto& [n, v] : request.query) query.push_back({n, v});
    payload_hash = sha256_hex(request.body);
    region = context.at("region").get<std::string>();
    service = context.at("service").get<std::string>();
  }

  Credentials credentials() const {
    const auto& c = context.at("credentials");
    return {c.at("access_key_id"), c.at("secret_access_key"), c.value("token", "")};
  }

  SigningParams params() const {
    SigningParams p;
    p.region = region;
    p.service = service;
    p.unix_time = parse_timestamp(context.at("timestamp"));
    p.path_mode = context.at("normalize").get<bool>() ? PathMode::normalized : PathMode::s3;
    p.content_sha256_header = context.value("sign_body", false);
    p.sign_session_token = !context.value("omit_session_token", false);
    p.expires = std::chrono::seconds(context.value("expiration_in_seconds", 3600));
    return p;
  }

  SigningRequest signing_request() const { return {request.method, request.path, query, headers, payload_hash}; }

  std::string expected(const char* file) const { return read_file(dir / file); }
};

std::string authorization_line(const std::string& signed_request) {
  std::istringstream in(signed_request);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Authorization:", 0) == 0) return line.substr(14);
  }
  return {};
}

Pairs sorted(Pairs p) {
  std::sort(p.begin(), p.end());
  return p;
}

class S3SigV4Vectors : public ::testing::TestWithParam<std::string> {};

TEST_P(S3SigV4Vectors, HeaderSigning) {
  Case c(GetParam());
  Signer signer(c.credentials());
  SignedHeaders out;
  ASSERT_TRUE(signer.sign_headers(c.signing_request(), c.params(), out).ok());
  EXPECT_EQ(out.canonical_request, c.expected("header-canonical-request.txt"));
  EXPECT_EQ(out.string_to_sign, c.expected("header-string-to-sign.txt"));
  EXPECT_EQ(out.signature, c.expected("header-signature.txt"));
  EXPECT_EQ(out.authorization, authorization_line(c.expected("header-signed-request.txt")));

  // A second signing reuses the cached key and the buffers: same answer.
  SignedHeaders again;
  ASSERT_TRUE(signer.sign_headers(c.signing_request(), c.params(), again).ok());
  EXPECT_EQ(again.signature, out.signature);
}

TEST_P(S3SigV4Vectors, QuerySigning) {
  Case c(GetParam());
  Signer signer(c.credentials());
  PresignedQuery out;
  ASSERT_TRUE(signer.presign(c.signing_request(), c.params(), out).ok());
  EXPECT_EQ(out.canonical_request, c.expected("query-canonical-request.txt"));
  EXPECT_EQ(out.string_to_sign, c.expected("query-string-to-sign.txt"));
  EXPECT_EQ(out.signature, c.expected("query-signature.txt"));

  // The query to send carries the same parameters as the suite's signed request.
  std::string signed_request = c.expected("query-signed-request.txt");
  std::string first_line = signed_request.substr(0, signed_request.find('\n'));
  std::string target = first_line.substr(first_line.find(' ') + 1);
  target = target.substr(0, target.rfind(' '));
  std::string expected_query = target.substr(target.find('?') + 1);
  EXPECT_EQ(sorted(parse_query(out.query)), sorted(parse_query(expected_query)));
}

std::string test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return name;
}

INSTANTIATE_TEST_SUITE_P(AwsSuite, S3SigV4Vectors, ::testing::ValuesIn(case_names()), test_name);

TEST(S3SigV4, SuiteIsPresent) {
  EXPECT_GE(case_names().size(), 30u) << "the SigV4 vectors are missing under " << vectors_dir();
}

TEST(S3SigV4, UriEncode) {
  std::string out;
  uri_encode("a b/c~d-e_f.g*h+i%", true, out);
  EXPECT_EQ(out, "a%20b/c~d-e_f.g%2Ah%2Bi%25");
  out.clear();
  uri_encode("a/b", false, out);
  EXPECT_EQ(out, "a%2Fb");
  out.clear();
  uri_encode("\xe1\x88\xb4", false, out);
  EXPECT_EQ(out, "%E1%88%B4");
}

TEST(S3SigV4, NormalizePath) {
  EXPECT_EQ(normalize_path(""), "/");
  EXPECT_EQ(normalize_path("/"), "/");
  EXPECT_EQ(normalize_path("//"), "/");
  EXPECT_EQ(normalize_path("/./"), "/");
  EXPECT_EQ(normalize_path("/a/b/../c/./d"), "/a/c/d");
  EXPECT_EQ(normalize_path("//a//b//"), "/a/b/");
  EXPECT_EQ(normalize_path("/../../a"), "/a");
}

TEST(S3SigV4, Sha256AndDate) {
  EXPECT_EQ(sha256_hex(std::string_view()), kEmptyPayloadHash);
  EXPECT_EQ(sha256_hex(std::string_view("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(format_amz_date(1440938160), "20150830T123600Z");
  EXPECT_EQ(format_amz_date(-1), "");
}

TEST(S3SigV4, RejectsIncompleteRequests) {
  Signer signer({"AKID", "SECRET", ""});
  SigningParams params;
  params.region = "us-east-1";
  params.service = "s3";
  params.unix_time = 1440938160;
  SignedHeaders out;
  HttpField host{"Host", "example.com"};
  EXPECT_EQ(signer.sign_headers({"GET", "/", {}, {}, kEmptyPayloadHash}, params, out).kind(),
            ErrorKind::invalid);  // no Host
  EXPECT_EQ(signer.sign_headers({"GET", "/", {}, {&host, 1}, ""}, params, out).kind(),
            ErrorKind::invalid);  // no payload hash
  Signer anonymous({"", "", ""});
  EXPECT_EQ(anonymous.sign_headers({"GET", "/", {}, {&host, 1}, kEmptyPayloadHash}, params, out).kind(),
            ErrorKind::invalid);
  EXPECT_TRUE(signer.sign_headers({"GET", "/", {}, {&host, 1}, kEmptyPayloadHash}, params, out));
}

// S3 mode: a key with characters that need encoding is encoded once, and
// the signing key cache follows a change of date.
TEST(S3SigV4, S3PathAndKeyCache) {
  Signer signer({"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""});
  SigningParams params;
  params.region = "us-east-1";
  params.service = "s3";
  params.unix_time = 1440938160;
  HttpField host{"Host", "bucket.s3.us-east-1.amazonaws.com"};
  SigningRequest request{"GET", "/dir/a b%c.txt", {}, {&host, 1}, kUnsignedPayload};
  SignedHeaders first;
  ASSERT_TRUE(signer.sign_headers(request, params, first));
  EXPECT_EQ(first.canonical_request.substr(0, first.canonical_request.find('\n', 4)), "GET\n/dir/a%20b%25c.txt");
  EXPECT_NE(first.canonical_request.find("x-amz-content-sha256:UNSIGNED-PAYLOAD\n"), std::string::npos);
  params.unix_time += 86400;
  SignedHeaders next_day;
  ASSERT_TRUE(signer.sign_headers(request, params, next_day));
  Signer fresh({"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""});
  SignedHeaders expected;
  ASSERT_TRUE(fresh.sign_headers(request, params, expected));
  EXPECT_EQ(next_day.signature, expected.signature);
  EXPECT_NE(next_day.signature, first.signature);
}

}  // namespace
}  // namespace kiroku::s3
