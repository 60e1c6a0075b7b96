// files_test.cpp - the file API through the real kiroku binary, with the file
// store, with S3 as s3rver serves it (scripts/with-s3rver.sh) and with S3 as
// Ceph RGW serves it, signatures checked (scripts/with-rgw.sh): round
// trips around the part size and of 100 MiB with SHA-256 compared, raw,
// chunked and form uploads, ranges, HEAD, DELETE, listings across hash
// partitions in order and paginated, bad keys, the bearer token, a client
// gone mid-upload, Content-Type kept, conditional GET/HEAD and If-Range, and
// (S3) the server cut off mid-upload; (RGW) answers without an ETag, refused
// credentials, and the aws CLI reading what kiroku wrote.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "integration/cuttable_proxy.h"
#include "integration/harness.h"
#include "store/part_pool.h"

namespace kiroku::test {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr std::uint64_t kPart = 5 << 20;  // --part-size 5MiB (the S3 minimum)

// Deterministic content: byte i of pattern `seed`.
void fill_pattern(std::uint64_t seed, std::uint64_t offset, std::span<char> out) {
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::uint64_t x = (offset + i) / 8 * 0x9E3779B97F4A7C15ull + seed * 0xBF58476D1CE4E5B9ull + 1;
    x ^= x >> 29;
    x *= 0x94D049BB133111EBull;
    out[i] = static_cast<char>(x >> (8 * ((offset + i) % 8)));
  }
}

std::string pattern(std::uint64_t seed, std::uint64_t size) {
  std::string s(size, '\0');
  fill_pattern(seed, 0, s);
  return s;
}

std::string sha256_of(std::string_view data) {
  Sha256Stream sha;
  sha.update(std::as_bytes(std::span(data.data(), data.size())));
  return sha.finish_hex();
}

struct Answer {
  int status = 0;          // 0: no answer
  bool continued = false;  // a 100 Continue came first
  std::string headers;
  std::string body;
  std::string header(std::string_view name) const {
    Response r;
    r.headers = headers;
    return r.header(name);
  }
  nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
};

// A blocking HTTP/1.1 client for large bodies: the request body is produced
// piece by piece, the answer's body is kept (tests use at most ~100 MiB).
class FileClient {
 public:
  explicit FileClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~FileClient() { close(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool send(std::string_view data) {
    while (!data.empty()) {
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, 60000) <= 0) return false;
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Sends `body` in chunked framing, 256 KiB a chunk, and the last chunk.
  bool send_chunked(std::string_view body) {
    for (std::size_t off = 0; off < body.size(); off += 256 * 1024) {
      const std::string_view piece = body.substr(off, 256 * 1024);
      if (!send(fmt_hex(piece.size()) + "\r\n") || !send(piece) || !send("\r\n")) return false;
    }
    return send("0\r\n\r\n");
  }

  // Sends a pattern body of `size` bytes in 256 KiB pieces (chunked framing if asked).
  bool send_pattern(std::uint64_t seed, std::uint64_t size, bool chunked) {
    std::string piece;
    for (std::uint64_t off = 0; off < size;) {
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(256 * 1024, size - off));
      piece.resize(n);
      fill_pattern(seed, off, piece);
      if (chunked && !send(fmt_hex(n) + "\r\n")) return false;
      if (!send(piece)) return false;
      if (chunked && !send("\r\n")) return false;
      off += n;
    }
    return !chunked || send("0\r\n\r\n");
  }

  // Reads one answer; a HEAD answer has no body whatever its Content-Length.
  Answer read(bool head = false) {
    Answer r;
    std::size_t end;
    for (;;) {
      while ((end = buf_.find("\r\n\r\n")) == std::string::npos)
        if (!fill()) return r;
      if (buf_.compare(0, 12, "HTTP/1.1 100") == 0) {
        r.continued = true;
        buf_.erase(0, end + 4);
        continue;
      }
      break;
    }
    r.headers = buf_.substr(0, end + 2);
    const int status = std::atoi(buf_.c_str() + 9);
    buf_.erase(0, end + 4);
    const std::string cl = r.header("Content-Length");
    const std::size_t len = head || cl.empty() ? 0 : std::stoul(cl);
    while (buf_.size() < len)
      if (!fill()) return r;
    r.body = buf_.substr(0, len);
    buf_.erase(0, len);
    r.status = status;
    return r;
  }

  // True if the server closed the connection within the timeout.
  bool closed_by_peer(int timeout_ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, 0) <= 0;
  }

 private:
  static std::string fmt_hex(std::size_t n) {
    char b[32];
    std::snprintf(b, sizeof b, "%zx", n);
    return b;
  }
  bool fill() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 60000) <= 0) return false;
    char tmp[256 * 1024];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<std::size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string buf_;
};

// One request on a fresh connection. `body` is sent as is.
Answer request(int port, std::string_view method, std::string_view target, std::string_view headers = {},
               std::string_view body = {}) {
  FileClient c(port);
  std::string head = std::string(method) + " " + std::string(target) + " HTTP/1.1\r\nHost: t\r\n";
  head += headers;
  if (!body.empty() || method == "PUT" || method == "POST")
    head += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  head += "\r\n";
  if (!c.send(head) || !c.send(body)) return {};
  return c.read(method == "HEAD");
}

// PUT /files/KEY with a pattern body.
Answer put_pattern(int port, const std::string& key, std::uint64_t seed, std::uint64_t size, bool chunked = false,
                   std::string_view headers = {}) {
  FileClient c(port);
  std::string head = "PUT /files/" + key + " HTTP/1.1\r\nHost: t\r\n" + std::string(headers);
  head += chunked ? "Transfer-Encoding: chunked\r\n" : "Content-Length: " + std::to_string(size) + "\r\n";
  head += "\r\n";
  if (!c.send(head) || !c.send_pattern(seed, size, chunked)) return {};
  return c.read();
}

std::string multipart(const std::string& boundary, const std::vector<std::pair<std::string, std::string>>& parts,
                      const std::string& file_name, const std::string& file_data, bool file_first = false) {
  std::string file = "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"" +
                     (file_name.empty() ? std::string() : "; filename=\"" + file_name + "\"") +
                     "\r\nContent-Type: application/octet-stream\r\n\r\n" + file_data + "\r\n";
  std::string fields;
  for (const auto& [name, value] : parts)
    fields += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + value + "\r\n";
  return (file_first ? file + fields : fields + file) + "--" + boundary + "--\r\n";
}

long long vm_hwm_bytes(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  return 0;
}

// ---------------------------------------------------------------------------

// Parameters: "file" (a directory), "s3" (s3rver), "rgw" (Ceph RGW).
class Files : public ::testing::TestWithParam<std::string> {
 protected:
  bool s3() const { return GetParam() != "file"; }
  bool rgw() const { return GetParam() == "rgw"; }
  static const char* env(const char* name) {
    const char* v = std::getenv(name);
    return v ? v : "";
  }
  std::string s3_endpoint() const { return env(rgw() ? "KIROKU_TEST_RGW_ENDPOINT" : "KIROKU_TEST_S3_ENDPOINT"); }
  std::string s3_bucket() const { return env(rgw() ? "KIROKU_TEST_RGW_BUCKET" : "KIROKU_TEST_S3_BUCKET"); }
  // The environment kiroku gets: RGW's keys (s3rver's are in the test's own).
  std::vector<std::string> s3_env() const {
    if (!rgw()) return {};
    return {std::string("AWS_ACCESS_KEY_ID=") + env("KIROKU_TEST_RGW_ACCESS_KEY"),
            std::string("AWS_SECRET_ACCESS_KEY=") + env("KIROKU_TEST_RGW_SECRET_KEY")};
  }

  // The --store URL: a directory of the test, or the S3 server's bucket
  // (through `endpoint` when given, e.g. a proxy).
  std::string store_url(std::string endpoint = {}) {
    if (!s3()) return "file://" + dir_.path() + "/objects";
    if (endpoint.empty()) endpoint = s3_endpoint();
    return "s3://" + s3_bucket() + "?endpoint=" + endpoint + "&region=us-east-1" + s3_options_;
  }

  void SetUp() override {
    if (s3() && (s3_endpoint().empty() || s3_bucket().empty()))
      FAIL() << (rgw() ? "KIROKU_TEST_RGW_ENDPOINT is not set: run under scripts/with-rgw.sh"
                       : "KIROKU_TEST_S3_ENDPOINT is not set: run under scripts/with-s3rver.sh");
    // Keys of this test and run only: the bucket is shared by every test.
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    prefix_ = std::string(info->name()).substr(0, std::string(info->name()).find('/')) + "-" +
              std::to_string(::getpid()) + "/";
  }

  std::unique_ptr<Kiroku> start(std::vector<std::string> extra = {}, std::string endpoint = {}) {
    std::vector<std::string> args{"--sink",      "sqlite://" + dir_.path() + "/events.db",
                                  "--spool-dir", dir_.path() + "/spool",
                                  "--store",     store_url(endpoint),
                                  "--part-size", "5MiB"};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<Kiroku>(dir_.path(), args, s3_env());
  }

  TempDir dir_;
  std::string prefix_;
  std::string s3_options_;  // more S3 URL parameters, "&name=value..."
  std::vector<std::string> k_env_;
};

TEST_P(Files, RoundTripsAroundThePartSizeAndOf100MiB) {
  auto k = start();
  const std::uint64_t sizes[] = {0, 1, kPart - 1, kPart, kPart + 1, 100ull << 20};
  std::uint64_t seed = 1;
  for (std::uint64_t size : sizes) {
    SCOPED_TRACE("size " + std::to_string(size));
    const std::string key = prefix_ + "rt/" + std::to_string(size) + ".bin";
    const std::string expect_sha = sha256_of(pattern(seed, size));
    Answer put = put_pattern(k->port(), key, seed, size);
    ASSERT_EQ(put.status, 201) << put.body;
    auto j = put.json();
    EXPECT_EQ(j["key"], key);
    EXPECT_EQ(j["size"], size);
    EXPECT_EQ(j["sha256"], expect_sha);
    ASSERT_TRUE(j["etag"].is_string());

    Answer get = request(k->port(), "GET", "/files/" + key);
    ASSERT_EQ(get.status, 200);
    EXPECT_EQ(get.body.size(), size);
    EXPECT_EQ(sha256_of(get.body), expect_sha);
    EXPECT_EQ(get.header("ETag"), "\"" + j["etag"].get<std::string>() + "\"");

    Answer head = request(k->port(), "HEAD", "/files/" + key);
    ASSERT_EQ(head.status, 200);
    EXPECT_EQ(head.header("Content-Length"), std::to_string(size));
    EXPECT_EQ(head.header("Accept-Ranges"), "bytes");
    ++seed;
  }
  // A 100 MiB upload and download went through the pool: far below 100 MiB.
  EXPECT_LT(vm_hwm_bytes(k->pid()), 96ll << 20);
  EXPECT_EQ(k->stop(), 0);
}

TEST_P(Files, ChunkedAndFormUploads) {
  auto k = start();
  // Chunked, with Expect: 100-continue as curl sends it.
  const std::string chunked_key = prefix_ + "chunked.bin";
  Answer put = put_pattern(k->port(), chunked_key, 7, kPart + 3, true, "Expect: 100-continue\r\n");
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(put.json()["size"], kPart + 3);
  EXPECT_EQ(put.json()["sha256"], sha256_of(pattern(7, kPart + 3)));

  // A form with a key field, then one that names the object by its filename.
  const std::string data = pattern(8, 300'000);
  const std::string form_key = prefix_ + "form/one.bin";
  const std::string ct = "Content-Type: multipart/form-data; boundary=XyZ\r\n";
  Answer post = request(k->port(), "POST", "/files", ct,
                        multipart("XyZ", {{"note", "ignored"}, {"key", form_key}}, "local.bin", data));
  ASSERT_EQ(post.status, 201) << post.body;
  EXPECT_EQ(post.json()["key"], form_key);
  EXPECT_EQ(post.json()["sha256"], sha256_of(data));
  EXPECT_EQ(request(k->port(), "GET", "/files/" + form_key).body, data);

  const std::string by_name = prefix_ + "named.txt";
  post = request(k->port(), "POST", "/files", ct, multipart("XyZ", {}, by_name, "hello"));
  ASSERT_EQ(post.status, 201) << post.body;
  EXPECT_EQ(request(k->port(), "GET", "/files/" + by_name).body, "hello");

  // Forms that cannot be stored: 400 naming the problem, nothing stored.
  post = request(k->port(), "POST", "/files", ct, multipart("XyZ", {{"key", prefix_ + "late"}}, "", "x", true));
  EXPECT_EQ(post.status, 400);
  post = request(k->port(), "POST", "/files", ct, multipart("XyZ", {{"key", prefix_ + "empty"}}, "", ""));
  EXPECT_EQ(post.status, 201);  // an empty file part is an empty object
  post = request(k->port(), "POST", "/files", ct,
                 "--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n" + prefix_ + "k\r\n--XyZ--\r\n");
  EXPECT_EQ(post.status, 400);
  EXPECT_NE(post.body.find("no file part"), std::string::npos) << post.body;
  post = request(k->port(), "POST", "/files", ct, "--XyZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc");
  EXPECT_EQ(post.status, 400) << post.body;  // no closing delimiter
  post = request(k->port(), "POST", "/files", "Content-Type: application/json\r\n", "{}");
  EXPECT_EQ(post.status, 415);
  EXPECT_EQ(request(k->port(), "HEAD", "/files/" + prefix_ + "late").status, 404);
  EXPECT_EQ(request(k->port(), "HEAD", "/files/" + prefix_ + "k").status, 404);
  EXPECT_EQ(k->stop(), 0);
}

TEST_P(Files, Ranges) {
  auto k = start();
  const std::uint64_t size = 3 * kPart + 5;
  const std::string key = prefix_ + "ranges.bin";
  ASSERT_EQ(put_pattern(k->port(), key, 3, size).status, 201);
  const std::string all = pattern(3, size);
  auto get = [&](const std::string& range) {
    return request(k->port(), "GET", "/files/" + key, "Range: " + range + "\r\n");
  };
  Answer r = get("bytes=10-19");
  ASSERT_EQ(r.status, 206);
  EXPECT_EQ(r.body, all.substr(10, 10));
  EXPECT_EQ(r.header("Content-Range"), "bytes 10-19/" + std::to_string(size));
  r = get("bytes=-100");
  ASSERT_EQ(r.status, 206);
  EXPECT_EQ(r.body, all.substr(size - 100));
  // Across part boundaries, open-ended.
  r = get("bytes=" + std::to_string(kPart - 5) + "-");
  ASSERT_EQ(r.status, 206);
  EXPECT_EQ(sha256_of(r.body), sha256_of(std::string_view(all).substr(kPart - 5)));
  r = get("bytes=" + std::to_string(kPart - 5) + "-" + std::to_string(2 * kPart + 5));
  ASSERT_EQ(r.status, 206);
  EXPECT_EQ(r.body.size(), kPart + 11);
  EXPECT_EQ(r.body, all.substr(kPart - 5, kPart + 11));
  // Past the end: 416 with the size.
  r = get("bytes=" + std::to_string(size) + "-");
  EXPECT_EQ(r.status, 416);
  EXPECT_EQ(r.header("Content-Range"), "bytes */" + std::to_string(size));
  // Several ranges, or nonsense: the whole object (RFC 9110 lets a server ignore Range).
  r = get("bytes=0-1,5-6");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body.size(), size);
  r = get("bytes=9-3");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(k->stop(), 0);
}

TEST_P(Files, ListingIsMergedAcrossPartitionsInOrderAndPaginated) {
  auto k = start();
  std::vector<std::string> keys;
  for (int i = 0; i < 12; ++i) keys.push_back(prefix_ + "list/" + std::string(1, static_cast<char>('a' + i)) + ".txt");
  for (const auto& key : keys) ASSERT_EQ(request(k->port(), "PUT", "/files/" + key, {}, key).status, 201);
  ASSERT_EQ(request(k->port(), "PUT", "/files/" + prefix_ + "other", {}, "x").status, 201);

  Answer all = request(k->port(), "GET", "/files?prefix=" + prefix_ + "list/");
  ASSERT_EQ(all.status, 200) << all.body;
  const auto j = all.json();
  std::vector<std::string> listed;
  for (const auto& o : j["objects"]) listed.push_back(o["key"]);
  EXPECT_EQ(listed, keys);
  EXPECT_TRUE(j["next"].is_null());
  EXPECT_EQ(j["objects"][0]["size"], keys[0].size());
  EXPECT_TRUE(j["objects"][0]["modified"].is_string());

  std::vector<std::string> paged;
  std::string after;
  for (int page = 0; page < 10; ++page) {
    Answer p = request(k->port(), "GET",
                       "/files?prefix=" + prefix_ + "list/&limit=5" + (after.empty() ? "" : "&after=" + after));
    ASSERT_EQ(p.status, 200) << p.body;
    auto page_json = p.json();
    EXPECT_LE(page_json["objects"].size(), 5u);
    for (const auto& o : page_json["objects"]) paged.push_back(o["key"]);
    if (page_json["next"].is_null()) break;
    after = page_json["next"];
  }
  EXPECT_EQ(paged, keys);
  EXPECT_EQ(request(k->port(), "GET", "/files?limit=0").status, 400);
  EXPECT_EQ(request(k->port(), "GET", "/files?limit=1001").status, 400);
  EXPECT_EQ(request(k->port(), "GET", "/files?prefix=%00").status, 400);
  EXPECT_EQ(k->stop(), 0);
}

TEST_P(Files, DeleteAndMissingObjects) {
  auto k = start();
  const std::string key = prefix_ + "gone.txt";
  ASSERT_EQ(request(k->port(), "PUT", "/files/" + key, {}, "bye").status, 201);
  EXPECT_EQ(request(k->port(), "DELETE", "/files/" + key).status, 204);
  Answer get = request(k->port(), "GET", "/files/" + key);
  EXPECT_EQ(get.status, 404);
  EXPECT_NE(get.body.find("error"), std::string::npos);
  EXPECT_EQ(request(k->port(), "HEAD", "/files/" + key).status, 404);
  EXPECT_EQ(request(k->port(), "DELETE", "/files/" + key).status, 204);  // like S3
  EXPECT_EQ(request(k->port(), "POST", "/files/" + key, {}, "x").status, 405);
  EXPECT_EQ(k->stop(), 0);
}

TEST_P(Files, BadKeysAreRejectedAndNothingEscapes) {
  auto k = start();
  const std::string p = "/files/" + prefix_;
  struct Case {
    std::string target, rule;
  };
  const std::vector<Case> cases = {
      {p + "a/../../escape", ".."},
      {p + "a/%2e%2e/%2E%2E/escape", ".."},
      {"/files/../escape", ".."},
      {p + "nul%00byte", "NUL"},
      {p + std::string(1100, 'k'), "1024"},
      {"/files/", "empty"},
      {p + "a//b", "empty"},
      {p + "bad%zz", "percent"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.target.substr(0, 80));
    Answer put = request(k->port(), "PUT", c.target, {}, "x");
    EXPECT_EQ(put.status, 400);
    EXPECT_NE(put.body.find(c.rule), std::string::npos) << put.body;
    EXPECT_EQ(request(k->port(), "GET", c.target).status, 400);
  }
  if (!s3()) {
    // Nothing was written outside the store's directory.
    for (const auto& e : fs::directory_iterator(dir_.path())) EXPECT_NE(e.path().filename(), "escape") << e.path();
    EXPECT_FALSE(fs::exists(fs::path(dir_.path()).parent_path() / "escape"));
  }
  EXPECT_EQ(k->stop(), 0);
}

TEST_P(Files, BearerTokenGuardsTheFileApi) {
  const std::string token_file = dir_.path() + "/token";
  std::ofstream(token_file) << "s3cret\n";
  auto k = start({"--auth-token-file", token_file});
  const std::string key = prefix_ + "guarded.txt";
  // No token: 401 at once, before the body (no 100 Continue), connection closed after.
  {
    FileClient c(k->port());
    ASSERT_TRUE(
        c.send("PUT /files/" + key + " HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"));
    Answer a = c.read();
    EXPECT_EQ(a.status, 401);
    EXPECT_EQ(a.header("WWW-Authenticate"), "Bearer");
    c.send("hello");
    EXPECT_TRUE(c.closed_by_peer(5000));
  }
  EXPECT_EQ(request(k->port(), "PUT", "/files/" + key, "Authorization: Bearer wrong\r\n", "hello").status, 401);
  EXPECT_EQ(request(k->port(), "GET", "/files").status, 401);
  EXPECT_EQ(request(k->port(), "PUT", "/files/" + key, "Authorization: Bearer s3cret\r\n", "hello").status, 201);
  EXPECT_EQ(request(k->port(), "GET", "/files/" + key, "Authorization: Bearer s3cret\r\n").body, "hello");
  EXPECT_EQ(request(k->port(), "GET", "/files/" + key).status, 401);
  // The ingestion API needs no token.
  EXPECT_EQ(request(k->port(), "GET", "/?name=n&value=1").status, 204);
  EXPECT_EQ(k->stop(), 0);
}

TEST_P(Files, ClientGoneMidUploadLeavesNothing) {
  auto k = start();
  const std::string key = prefix_ + "half.bin";
  {
    FileClient c(k->port());
    ASSERT_TRUE(c.send("PUT /files/" + key + " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(3 * kPart) +
                       "\r\n\r\n"));
    ASSERT_TRUE(c.send_pattern(4, kPart + kPart / 2, false));
  }  // closed with half the body sent
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(request(k->port(), "HEAD", "/files/" + key).status, 404);
  // The pool's buffers all came back.
  for (int i = 0; i < 50 && metric_value(k->port(), "kiroku_object_buffers_in_use") != 0; ++i)
    std::this_thread::sleep_for(100ms);
  EXPECT_EQ(metric_value(k->port(), "kiroku_object_buffers_in_use"), 0);
  if (!s3()) {
    // No temporary file is left behind.
    std::size_t files = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir_.path() + "/objects"))
      if (e.is_regular_file()) ++files;
    EXPECT_EQ(files, 0u);
  }
  // A body shorter than its Content-Length never becomes an object either.
  EXPECT_GE(metric_value(k->port(), "kiroku_object_operations_total{op=\"put\",result=\"error\"}"), 1);
  EXPECT_EQ(k->stop(), 0);
}

// --max-upload-bytes: a larger Content-Length is refused before the body (no
// 100 Continue) and the connection closes; a chunked body (PUT or a form) is
// cut at the limit with 413, its upload aborted (with S3, a multipart upload
// whose first part was already sent); nothing is stored either way.
TEST_P(Files, UploadsAboveTheLimitAre413AndLeaveNothing) {
  constexpr std::uint64_t kLimit = kPart + kPart / 5;  // 6 MiB: past the first part
  auto k = start({"--max-upload-bytes", "6MiB"});
  const std::string at_limit = prefix_ + "limit/exact.bin", over = prefix_ + "limit/over.bin";
  Answer put = put_pattern(k->port(), at_limit, 21, kLimit);
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(put.json()["size"], kLimit);

  // Content-Length one byte over: 413 with a JSON error before any body
  // byte, no 100 Continue; the connection closes after the answer.
  for (const std::string& expect : {std::string("Expect: 100-continue\r\n"), std::string()}) {
    FileClient c(k->port());
    ASSERT_TRUE(c.send("PUT /files/" + over + " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(kLimit + 1) +
                       "\r\n" + expect + "\r\n"));
    Answer a = c.read();
    EXPECT_EQ(a.status, 413) << a.body;
    EXPECT_FALSE(a.continued);
    EXPECT_TRUE(a.json().contains("error")) << a.body;
    EXPECT_TRUE(c.closed_by_peer(5000));
  }

  // Chunked, 8 MiB sent against 6 MiB allowed: cut with 413. The server
  // closes while the client may still be sending: its sends may fail, the
  // answer still arrives.
  {
    FileClient c(k->port());
    ASSERT_TRUE(c.send("PUT /files/" + over + " HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"));
    c.send_pattern(22, kLimit + 2 * 1024 * 1024, true);
    Answer a = c.read();
    EXPECT_EQ(a.status, 413) << a.body;
    EXPECT_TRUE(c.closed_by_peer(5000));
  }

  // Forms: the limit counts the whole form body.
  const std::string ct = "Content-Type: multipart/form-data; boundary=XyZ\r\n";
  const std::string small_form = multipart("XyZ", {{"key", prefix_ + "limit/form-ok.bin"}}, "", pattern(23, 1000));
  EXPECT_EQ(request(k->port(), "POST", "/files", ct, small_form).status, 201);
  const std::string big_form = multipart("XyZ", {{"key", prefix_ + "limit/form-over.bin"}}, "", pattern(24, kLimit));
  {
    FileClient c(k->port());
    ASSERT_TRUE(c.send("POST /files HTTP/1.1\r\nHost: t\r\n" + ct +
                       "Content-Length: " + std::to_string(big_form.size()) + "\r\nExpect: 100-continue\r\n\r\n"));
    Answer a = c.read();
    EXPECT_EQ(a.status, 413) << a.body;
    EXPECT_FALSE(a.continued);
    EXPECT_TRUE(c.closed_by_peer(5000));
  }
  {
    FileClient c(k->port());
    ASSERT_TRUE(c.send("POST /files HTTP/1.1\r\nHost: t\r\n" + ct + "Transfer-Encoding: chunked\r\n\r\n"));
    c.send_chunked(big_form);
    Answer a = c.read();
    EXPECT_EQ(a.status, 413) << a.body;
    EXPECT_TRUE(c.closed_by_peer(5000));
  }

  // Nothing of the refused uploads is stored, and their buffers came back.
  EXPECT_EQ(request(k->port(), "HEAD", "/files/" + over).status, 404);
  EXPECT_EQ(request(k->port(), "HEAD", "/files/" + prefix_ + "limit/form-over.bin").status, 404);
  Answer listed = request(k->port(), "GET", "/files?prefix=" + prefix_ + "limit/");
  ASSERT_EQ(listed.status, 200) << listed.body;
  std::vector<std::string> keys;
  const auto listing = listed.json();
  for (const auto& o : listing["objects"]) keys.push_back(o["key"]);
  EXPECT_EQ(keys, (std::vector<std::string>{at_limit, prefix_ + "limit/form-ok.bin"})) << listed.body;
  for (int i = 0; i < 50 && metric_value(k->port(), "kiroku_object_buffers_in_use") != 0; ++i)
    std::this_thread::sleep_for(100ms);
  EXPECT_EQ(metric_value(k->port(), "kiroku_object_buffers_in_use"), 0);
  EXPECT_GE(metric_value(k->port(), "kiroku_object_operations_total{op=\"put\",result=\"error\"}"), 2);
  // The aborted uploads were cleaned up (with S3: AbortMultipartUpload done).
  for (int i = 0; i < 50 && metric_value(k->port(), "kiroku_object_uploads_cleaning_up") != 0; ++i)
    std::this_thread::sleep_for(100ms);
  EXPECT_EQ(metric_value(k->port(), "kiroku_object_uploads_cleaning_up"), 0);
  if (!s3()) {
    // No temporary file is left behind: the two objects only.
    std::size_t files = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir_.path() + "/objects"))
      if (e.is_regular_file()) ++files;
    EXPECT_EQ(files, 2u);
  }
  // Uploads within the limit still work on new connections.
  EXPECT_EQ(put_pattern(k->port(), prefix_ + "limit/after.bin", 25, 1000, true).status, 201);
  EXPECT_EQ(k->stop(), 0);
}

TEST_P(Files, MetricsCountTransfers) {
  auto k = start();
  const std::string key = prefix_ + "m.bin";
  ASSERT_EQ(put_pattern(k->port(), key, 5, 1000).status, 201);
  ASSERT_EQ(request(k->port(), "GET", "/files/" + key).status, 200);
  EXPECT_EQ(metric_value(k->port(), "kiroku_object_bytes_total{op=\"put\"}"), 1000);
  // The download's figures are recorded when its last write completes.
  EXPECT_EQ(metric_value_reaching(k->port(), "kiroku_object_operation_seconds_count{op=\"get\"}", 1), 1);
  EXPECT_EQ(metric_value(k->port(), "kiroku_object_bytes_total{op=\"get\"}"), 1000);
  EXPECT_EQ(metric_value(k->port(), "kiroku_object_operations_total{op=\"put\",result=\"ok\"}"), 1);
  // Answers and latency by route: the upload, the download, a listing.
  ASSERT_EQ(request(k->port(), "GET", "/files?prefix=" + prefix_).status, 200);
  EXPECT_EQ(metric_value(k->port(), "kiroku_http_requests_total{route=\"files_upload\",status=\"201\"}"), 1);
  EXPECT_EQ(metric_value(k->port(), "kiroku_http_requests_total{route=\"files_download\",status=\"200\"}"), 1);
  EXPECT_EQ(metric_value(k->port(), "kiroku_http_requests_total{route=\"files_list\",status=\"200\"}"), 1);
  EXPECT_EQ(metric_value(k->port(), "kiroku_http_request_seconds_count{route=\"files_upload\"}"), 1);
  EXPECT_EQ(metric_value(k->port(), "kiroku_http_request_seconds_count{route=\"files_download\"}"), 1);
  EXPECT_EQ(metric_value(k->port(), "kiroku_http_request_seconds_count{route=\"files_list\"}"), 1);
  EXPECT_EQ(k->stop(), 0);
}

// S3 only: the server disappears in the middle of an upload. The client gets
// a 5xx, and no object (and no half of one) is visible afterwards.
// The S3 store's own behaviour: the same fixture, on S3 only.
class S3Files : public Files {};

TEST_P(S3Files, S3GoneMidUploadAnswers5xxAndLeavesNothing) {
  const std::string endpoint = s3_endpoint();
  CuttableProxy proxy(endpoint);
  ASSERT_TRUE(proxy.start());
  auto k = start({}, proxy.endpoint());
  const std::string key = prefix_ + "cut.bin";
  const std::uint64_t size = 12 * kPart;

  FileClient c(k->port());
  ASSERT_TRUE(
      c.send("PUT /files/" + key + " HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n"));
  std::thread cutter([&] {
    for (int i = 0; i < 1000 && proxy.seen().find("partNumber=") == std::string::npos; ++i)
      std::this_thread::sleep_for(10ms);
    proxy.stop();
  });
  c.send_pattern(9, size, false);  // may stop early if kiroku answers first
  cutter.join();
  Answer a = c.read();
  EXPECT_GE(a.status, 500) << a.headers << a.body;
  EXPECT_LT(a.status, 600);
  EXPECT_NE(proxy.seen().find("partNumber="), std::string::npos);

  // Back on the same port: the object does not exist, not even in part.
  ASSERT_TRUE(proxy.start());
  EXPECT_EQ(request(k->port(), "HEAD", "/files/" + key).status, 404);
  Answer list = request(k->port(), "GET", "/files?prefix=" + prefix_);
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_EQ(list.json()["objects"].size(), 0u) << list.body;
  // And kiroku still works.
  EXPECT_EQ(request(k->port(), "PUT", "/files/" + prefix_ + "after.txt", {}, "ok").status, 201);
  EXPECT_EQ(k->stop(), 0);
  proxy.stop();
}

TEST_P(S3Files, StreamedOptionsSendOnePutAndOneGet) {
  const std::string endpoint = s3_endpoint();
  CuttableProxy proxy(endpoint);
  ASSERT_TRUE(proxy.start());
  s3_options_ = "&stream_put_max=" + std::to_string(100ull << 20) + "&stream_get_max=" + std::to_string(100ull << 20);
  auto k = start({}, proxy.endpoint());

  // 100 MiB with a Content-Length: one PUT, no multipart upload. (Its memory
  // bound is measured by bench/files.sh; this test also runs under ASan,
  // whose shadow memory would break an RSS check.)
  const std::uint64_t size = 100ull << 20;
  const std::string key = prefix_ + "streamed.bin";
  Answer put = put_pattern(k->port(), key, 21, size);
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(put.json()["size"], size);
  EXPECT_EQ(put.json()["sha256"], sha256_of(pattern(21, size)));
  EXPECT_EQ(proxy.seen().find("uploads"), std::string::npos) << proxy.seen();
  EXPECT_EQ(proxy.seen().find("partNumber="), std::string::npos) << proxy.seen();
  // Its download: one GET (no ranges of one part each), and so is a range of it.
  auto gets = [&] { return proxy.seen_count("GET "); };
  const int gets_before = gets();
  Answer get = request(k->port(), "GET", "/files/" + key);
  ASSERT_EQ(get.status, 200);
  EXPECT_EQ(get.body.size(), size);
  EXPECT_EQ(sha256_of(get.body), put.json()["sha256"]);
  EXPECT_EQ(gets() - gets_before, 1) << proxy.seen();
  Answer part = request(k->port(), "GET", "/files/" + key, "Range: bytes=1000-30000000\r\n");
  ASSERT_EQ(part.status, 206);
  EXPECT_EQ(part.body, pattern(21, 30000001).substr(1000));
  EXPECT_EQ(gets() - gets_before, 2) << proxy.seen();

  // A chunked body has no size to announce: a multipart upload.
  Answer chunked = put_pattern(k->port(), prefix_ + "chunked.bin", 22, kPart + 3, true);
  ASSERT_EQ(chunked.status, 201) << chunked.body;
  EXPECT_NE(proxy.seen().find("partNumber="), std::string::npos) << proxy.seen();
  EXPECT_EQ(k->stop(), 0);
  proxy.stop();
}

// The uploader's Content-Type is stored and served: a raw PUT's header, a
// form's file part (one part and multipart sizes); none gives
// application/octet-stream; one that cannot be kept safely is a 400.
TEST_P(Files, ContentTypeIsKeptAndServed) {
  auto k = start();
  const std::string csv = prefix_ + "types/a.csv";
  Answer put = request(k->port(), "PUT", "/files/" + csv, "Content-Type: text/csv; charset=utf-8\r\n", "a,b\n1,2\n");
  ASSERT_EQ(put.status, 201) << put.body;
  Answer get = request(k->port(), "GET", "/files/" + csv);
  ASSERT_EQ(get.status, 200);
  EXPECT_EQ(get.header("Content-Type"), "text/csv; charset=utf-8");
  EXPECT_EQ(get.body, "a,b\n1,2\n");
  EXPECT_EQ(request(k->port(), "HEAD", "/files/" + csv).header("Content-Type"), "text/csv; charset=utf-8");
  EXPECT_EQ(request(k->port(), "GET", "/files/" + csv, "Range: bytes=0-2\r\n").header("Content-Type"),
            "text/csv; charset=utf-8");

  // Above one part: S3 takes the type with CreateMultipartUpload.
  const std::string big = prefix_ + "types/big.json";
  put = put_pattern(k->port(), big, 41, 2 * kPart + 1, false, "Content-Type: application/json\r\n");
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(request(k->port(), "HEAD", "/files/" + big).header("Content-Type"), "application/json");

  const std::string form = prefix_ + "types/pic.png";
  const std::string body = "--XyZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n" + form +
                           "\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n"
                           "Content-Type: image/png\r\n\r\nPNGDATA\r\n--XyZ--\r\n";
  put = request(k->port(), "POST", "/files", "Content-Type: multipart/form-data; boundary=XyZ\r\n", body);
  ASSERT_EQ(put.status, 201) << put.body;
  get = request(k->port(), "GET", "/files/" + form);
  EXPECT_EQ(get.header("Content-Type"), "image/png");
  EXPECT_EQ(get.body, "PNGDATA");

  const std::string plain = prefix_ + "types/plain";
  ASSERT_EQ(request(k->port(), "PUT", "/files/" + plain, {}, "x").status, 201);
  EXPECT_EQ(request(k->port(), "GET", "/files/" + plain).header("Content-Type"), "application/octet-stream");

  // Replacing an object replaces its type.
  ASSERT_EQ(request(k->port(), "PUT", "/files/" + csv, "Content-Type: text/plain\r\n", "z").status, 201);
  EXPECT_EQ(request(k->port(), "GET", "/files/" + csv).header("Content-Type"), "text/plain");

  Answer bad =
      request(k->port(), "PUT", "/files/" + prefix_ + "types/bad", "Content-Type: text/\xc3\xa9t\xc3\xa9\r\n", "x");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.body.find("Content-Type"), std::string::npos) << bad.body;
  EXPECT_EQ(request(k->port(), "HEAD", "/files/" + prefix_ + "types/bad").status, 404);
  EXPECT_EQ(k->stop(), 0);
}

// If-None-Match and If-Modified-Since answer 304 (GET and HEAD); If-Range
// keeps a range only for the version it names.
TEST_P(Files, ConditionalRequestsAndIfRange) {
  auto k = start();
  const std::string key = prefix_ + "cond.bin";
  const std::uint64_t size = kPart + 100;  // two chunks on every store
  const std::string data = pattern(51, size);
  Answer put = put_pattern(k->port(), key, 51, size);
  ASSERT_EQ(put.status, 201) << put.body;
  Answer head = request(k->port(), "HEAD", "/files/" + key);
  ASSERT_EQ(head.status, 200);
  const std::string etag = head.header("ETag");
  const std::string modified = head.header("Last-Modified");
  ASSERT_FALSE(etag.empty());
  ASSERT_FALSE(modified.empty());
  const std::string path = "/files/" + key;

  for (const std::string& inm : {etag, "W/" + etag, std::string("*"), "\"nope\", " + etag}) {
    SCOPED_TRACE("If-None-Match: " + inm);
    Answer a = request(k->port(), "GET", path, "If-None-Match: " + inm + "\r\n");
    EXPECT_EQ(a.status, 304);
    EXPECT_EQ(a.body, "");
    EXPECT_EQ(a.header("ETag"), etag);
    EXPECT_EQ(request(k->port(), "HEAD", path, "If-None-Match: " + inm + "\r\n").status, 304);
  }
  Answer other = request(k->port(), "GET", path, "If-None-Match: \"nope\"\r\n");
  EXPECT_EQ(other.status, 200);
  EXPECT_EQ(other.body.size(), size);
  EXPECT_EQ(request(k->port(), "GET", path, "If-Modified-Since: " + modified + "\r\n").status, 304);
  EXPECT_EQ(request(k->port(), "HEAD", path, "If-Modified-Since: " + modified + "\r\n").status, 304);
  Answer older = request(k->port(), "GET", path, "If-Modified-Since: Thu, 01 Jan 2015 00:00:00 GMT\r\n");
  EXPECT_EQ(older.status, 200);
  EXPECT_EQ(older.body, data);
  EXPECT_EQ(request(k->port(), "GET", path, "If-Modified-Since: yesterday\r\n").status, 200);
  // If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
  EXPECT_EQ(
      request(k->port(), "GET", path, "If-None-Match: \"nope\"\r\nIf-Modified-Since: " + modified + "\r\n").status,
      200);

  const std::string range = "Range: bytes=10-" + std::to_string(kPart + 20) + "\r\n";
  const std::string slice = data.substr(10, kPart + 11);
  for (const std::string& v : {etag, modified}) {
    SCOPED_TRACE("If-Range: " + v);
    Answer a = request(k->port(), "GET", path, range + "If-Range: " + v + "\r\n");
    EXPECT_EQ(a.status, 206);
    EXPECT_EQ(a.body, slice);
  }
  for (const std::string& v : {std::string("\"nope\""), "W/" + etag, std::string("Thu, 01 Jan 2015 00:00:00 GMT")}) {
    SCOPED_TRACE("If-Range: " + v);
    Answer a = request(k->port(), "GET", path, range + "If-Range: " + v + "\r\n");
    EXPECT_EQ(a.status, 200);
    EXPECT_EQ(a.header("Content-Range"), "");
    EXPECT_EQ(a.body.size(), size);
    EXPECT_TRUE(a.body == data);
  }
  EXPECT_EQ(k->stop(), 0);
}

// The S3 store against RGW only: what s3rver cannot show.
class RgwFiles : public Files {
 protected:
  // Runs a shell command; gives its exit status and standard output.
  static std::pair<int, std::string> shell(const std::string& command) {
    std::string out;
    FILE* p = ::popen((command + " 2>&1").c_str(), "r");
    if (!p) return {-1, out};
    char buf[4096];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    const int status = ::pclose(p);
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
  }
  static std::string admin() { return env("KIROKU_TEST_RGW_ADMIN"); }
};

// RGW answers CompleteMultipartUpload with <ETag></ETag>: the upload is
// complete, and kiroku reports the ETag a HEAD gives (17 MiB: 4 parts).
TEST_P(RgwFiles, MultipartAnswersWithoutAnETagAreSettledByAHead) {
  auto k = start();
  for (bool chunked : {false, true}) {
    SCOPED_TRACE(chunked ? "chunked" : "Content-Length");
    const std::string key = prefix_ + (chunked ? "17m-chunked.bin" : "17m.bin");
    const std::uint64_t size = 17ull << 20;
    Answer put = put_pattern(k->port(), key, 61, size, chunked);
    ASSERT_EQ(put.status, 201) << put.body;
    const std::string etag = put.json()["etag"].get<std::string>();
    EXPECT_FALSE(etag.empty());
    EXPECT_TRUE(etag.ends_with("-4")) << etag;
    Answer head = request(k->port(), "HEAD", "/files/" + key);
    ASSERT_EQ(head.status, 200);
    EXPECT_EQ(head.header("ETag"), "\"" + etag + "\"");
    Answer get = request(k->port(), "GET", "/files/" + key);
    ASSERT_EQ(get.status, 200);
    EXPECT_EQ(sha256_of(get.body), sha256_of(pattern(61, size)));
  }
  EXPECT_EQ(k->stop(), 0);
}

// Credentials RGW refuses: the start-up check stops kiroku with a message
// naming them; keys that stop working while kiroku runs give a 500 whose JSON
// says so, one log line names the access key, and nothing is stored.
TEST_P(RgwFiles, RefusedCredentialsAreNamedAndLeaveNothing) {
  const std::string access = env("KIROKU_TEST_RGW_ACCESS_KEY");
  {
    std::string cmd = "AWS_ACCESS_KEY_ID='" + access + "' AWS_SECRET_ACCESS_KEY=wrong-secret " +
                      std::string(KIROKU_BINARY) + " serve --listen 127.0.0.1:" + std::to_string(free_port()) +
                      " --sink 'sqlite://" + dir_.path() + "/events.db' --spool-dir '" + dir_.path() +
                      "/spool' --store '" + store_url() + "'";
    auto [code, out] = shell(cmd);
    EXPECT_EQ(code, 2) << out;
    EXPECT_NE(out.find("--store"), std::string::npos) << out;
    EXPECT_NE(out.find("refused the credentials"), std::string::npos) << out;
    EXPECT_NE(out.find("SignatureDoesNotMatch"), std::string::npos) << out;
  }

  // A second key of the same user, for kiroku; its secret changes under it.
  const std::string key_id = "KIROKUROTATE" + std::to_string(::getpid());
  auto [made, made_out] =
      shell(admin() + " key create --uid=kiroku --key-type=s3 --access-key=" + key_id + " --secret-key=first-secret");
  ASSERT_EQ(made, 0) << made_out;
  k_env_ = {"AWS_ACCESS_KEY_ID=" + key_id, "AWS_SECRET_ACCESS_KEY=first-secret"};
  auto k = std::make_unique<Kiroku>(
      dir_.path(),
      std::vector<std::string>{"--sink", "sqlite://" + dir_.path() + "/events2.db", "--spool-dir",
                               dir_.path() + "/spool2", "--store", store_url(), "--part-size", "5MiB"},
      k_env_);
  const std::string small = prefix_ + "refused/small.txt";
  ASSERT_EQ(request(k->port(), "PUT", "/files/" + prefix_ + "refused/before.txt", {}, "ok").status, 201);
  auto [changed, changed_out] =
      shell(admin() + " key create --uid=kiroku --key-type=s3 --access-key=" + key_id + " --secret-key=second-secret");
  ASSERT_EQ(changed, 0) << changed_out;
  Answer a;
  for (int i = 0; i < 100; ++i) {  // RGW's user cache hears of the change within moments
    a = request(k->port(), "PUT", "/files/" + small, {}, "data");
    if (a.status != 201) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(a.status, 500) << a.body;
  EXPECT_NE(a.json()["error"].get<std::string>().find("refused the credentials"), std::string::npos) << a.body;
  const std::string big = prefix_ + "refused/big.bin";
  Answer b = put_pattern(k->port(), big, 71, 3 * kPart);
  EXPECT_EQ(b.status, 500) << b.body;
  EXPECT_NE(b.body.find("refused the credentials"), std::string::npos) << b.body;
  // A GET starts with a HEAD, whose 403 carries no reason: the message says both.
  Answer g = request(k->port(), "GET", "/files/" + prefix_ + "refused/before.txt");
  EXPECT_GE(g.status, 500) << g.body;
  EXPECT_NE(g.body.find("refused credentials or missing permissions"), std::string::npos) << g.body;
  EXPECT_EQ(k->stop(), 0);
  const std::string log = k->log();
  EXPECT_NE(log.find("refused the credentials"), std::string::npos) << log;
  EXPECT_NE(log.find("access key id '" + key_id + "'"), std::string::npos) << log;
  EXPECT_EQ(log.find("second-secret"), std::string::npos);
  EXPECT_EQ(log.find("first-secret"), std::string::npos);
  shell(admin() + " key rm --uid=kiroku --key-type=s3 --access-key=" + key_id);

  // Nothing of the refused uploads exists (and no multipart upload was begun).
  auto k2 = start();
  EXPECT_EQ(request(k2->port(), "HEAD", "/files/" + small).status, 404);
  EXPECT_EQ(request(k2->port(), "HEAD", "/files/" + big).status, 404);
  EXPECT_EQ(k2->stop(), 0);
  auto [listed, uploads] = shell(admin() + " bucket list --bucket=" + s3_bucket() + " --allow-unordered");
  EXPECT_EQ(listed, 0) << uploads;
  EXPECT_EQ(uploads.find("refused/big.bin"), std::string::npos) << uploads;
}

// What kiroku wrote, as the aws CLI sees it: the object at its hash-prefixed
// stored key ("{h}/{key}", h the first hex digit of the key's SHA-256) with
// its Content-Type, and `aws s3 ls` listing the partitions.
TEST_P(RgwFiles, AwsCliReadsWhatKirokuWrote) {
  if (shell("command -v aws").first != 0) FAIL() << "the aws CLI is missing (awscli: scripts/setup.sh)";
  auto k = start();
  const std::string key = prefix_ + "interop/report.csv";
  const std::string data = "day,count\nmon,3\n";
  ASSERT_EQ(request(k->port(), "PUT", "/files/" + key, "Content-Type: text/csv\r\n", data).status, 201);
  EXPECT_EQ(k->stop(), 0);

  const std::string stored = sha256_of(key).substr(0, 1) + "/" + key;
  const std::string aws = "AWS_ACCESS_KEY_ID='" + std::string(env("KIROKU_TEST_RGW_ACCESS_KEY")) +
                          "' AWS_SECRET_ACCESS_KEY='" + env("KIROKU_TEST_RGW_SECRET_KEY") +
                          "' AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_PAGER= aws --endpoint-url " +
                          s3_endpoint() + " ";
  auto [hc, head] = shell(aws + "s3api head-object --bucket " + s3_bucket() + " --key '" + stored + "'");
  ASSERT_EQ(hc, 0) << head;
  EXPECT_NE(head.find("\"ContentType\": \"text/csv\""), std::string::npos) << head;
  EXPECT_NE(head.find("\"ContentLength\": " + std::to_string(data.size())), std::string::npos) << head;
  auto [cc, content] = shell(aws + "s3 cp 's3://" + s3_bucket() + "/" + stored + "' -");
  ASSERT_EQ(cc, 0) << content;
  EXPECT_EQ(content, data);
  auto [lc, top] = shell(aws + "s3 ls s3://" + s3_bucket() + "/");
  ASSERT_EQ(lc, 0) << top;
  EXPECT_NE(top.find("PRE " + sha256_of(key).substr(0, 1) + "/"), std::string::npos) << top;
  auto [kc, listed] =
      shell(aws + "s3 ls 's3://" + s3_bucket() + "/" + sha256_of(key).substr(0, 1) + "/" + prefix_ + "interop/'");
  ASSERT_EQ(kc, 0) << listed;
  EXPECT_NE(listed.find(" " + std::to_string(data.size()) + " report.csv"), std::string::npos) << listed;
}

INSTANTIATE_TEST_SUITE_P(Stores, Files, ::testing::Values("file", "s3", "rgw"), [](const auto& p) { return p.param; });
INSTANTIATE_TEST_SUITE_P(Stores, S3Files, ::testing::Values("s3", "rgw"), [](const auto& p) { return p.param; });
INSTANTIATE_TEST_SUITE_P(Stores, RgwFiles, ::testing::Values("rgw"), [](const auto& p) { return p.param; });

}  // namespace
}  // namespace kiroku::test
