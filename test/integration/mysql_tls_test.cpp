// mysql_tls_test.cpp - the real binary against MariaDB over TLS (the server and
// its certificates come from scripts/with-mariadb.sh): events stored with
// VERIFY_IDENTITY, VERIFY_CA, REQUIRED and PREFERRED by an account that
// REQUIRES SSL (and is refused with DISABLED); a wrong CA, a certificate for
// another name and a server without TLS refused at start with one line and
// exit 2.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "integration/harness.h"
#include "integration/loopback.h"

namespace kiroku::test {
namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string read_all(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Runs `command` with sh; returns its exit status and what it wrote to stdout.
std::pair<int, std::string> shell(const std::string& command) {
  std::string out;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return {-1, out};
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// A TCP forwarder from 127.0.0.2:PORT to 127.0.0.1:`upstream`: the same
// server under an address its certificate does not name.
class OtherNameForwarder {
 public:
  explicit OtherNameForwarder(int upstream) : upstream_(upstream) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = ipv4_address("127.0.0.2", 0);
    socklen_t len = sizeof a;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      return;
    }
    port_ = ntohs(a.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~OtherNameForwarder() {
    stop_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    for (auto& t : pumps_) t.join();
    ::close(listen_fd_);
  }
  int port() const { return port_; }  // 0: could not listen

 private:
  void accept_loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a = ipv4_address("127.0.0.1", upstream_);
      if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(server);
        ::close(client);
        continue;
      }
      pumps_.emplace_back([this, client, server] { pump(client, server); });
    }
  }
  // Copies both ways until either side closes or the forwarder stops.
  void pump(int a, int b) {
    char buf[16384];
    while (!stop_) {
      pollfd p[2] = {{a, POLLIN, 0}, {b, POLLIN, 0}};
      if (::poll(p, 2, 50) <= 0) continue;
      bool done = false;
      for (int i = 0; i < 2 && !done; ++i) {
        if ((p[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const ssize_t n = ::read(p[i].fd, buf, sizeof buf);
        if (n <= 0) {
          done = true;
          break;
        }
        const int to = i == 0 ? b : a;
        for (ssize_t off = 0; off < n;) {
          const ssize_t w = ::write(to, buf + off, static_cast<std::size_t>(n - off));
          if (w <= 0) {
            done = true;
            break;
          }
          off += w;
        }
      }
      if (done) break;
    }
    ::close(a);
    ::close(b);
  }

  int upstream_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::vector<std::thread> pumps_;  // only the acceptor thread adds, joined after it
};

class MysqlTls : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = env("KIROKU_TEST_MYSQL_CA");
    ctl_ = env("KIROKU_TEST_MYSQL_CTL");
    port_ = env("KIROKU_TEST_MYSQL_PORT");
    ASSERT_FALSE(ca_.empty() || ctl_.empty() || port_.empty())
        << "run under scripts/with-mariadb.sh with TLS (KIROKU_TEST_MYSQL_CA, _CTL, _PORT)";
    const std::string n = std::to_string(::getpid());
    table_ = "tls_" + n;
    // An account of this test's own that can only log in over TLS, with a
    // password that must never be printed.
    user_ = "tls_" + n;
    password_ = "Pw-" + n + "-s3cr3t";
    sql("DROP USER IF EXISTS '" + user_ + "'@'127.0.0.1'; CREATE USER '" + user_ + "'@'127.0.0.1' IDENTIFIED BY '" +
        password_ + "' REQUIRE SSL; GRANT ALL PRIVILEGES ON kiroku_test.* TO '" + user_ + "'@'127.0.0.1'");
  }
  void TearDown() override {
    if (user_.empty()) return;
    sql("DROP USER IF EXISTS '" + user_ + "'@'127.0.0.1'; DROP TABLE IF EXISTS kiroku_test." + table_);
  }

  std::string sql(const std::string& stmt) { return shell(ctl_ + " sql \"" + stmt + "\"").second; }
  long long count() { return std::atoll(sql("SELECT COUNT(*) FROM kiroku_test." + table_).c_str()); }

  // The sink URL of the test's account on host:port with `query`.
  std::string url(const std::string& query, const std::string& host = "127.0.0.1", std::string port = {}) {
    if (port.empty()) port = port_;
    return "mysql://" + user_ + ":" + password_ + "@" + host + ":" + port + "/kiroku_test?" + query;
  }

  // Starts kiroku on `sink`, stores `n` events, stops it; every event must be a row.
  void expect_stores(const std::string& sink, int n) {
    sql("DROP TABLE IF EXISTS kiroku_test." + table_);
    TempDir dir;
    Kiroku k(dir.path(),
             {"--sink", sink, "--table", table_, "--spool-dir", dir.path() + "/spool", "--flush-interval", "20ms"});
    Client c(k.port());
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(c.get("/?name=tls&value=" + std::to_string(i)).status, 204) << k.log();
    }
    EXPECT_EQ(k.stop(), 0) << k.log();
    EXPECT_EQ(count(), n) << k.log();
    EXPECT_EQ(k.log().find(password_), std::string::npos) << k.log();
  }

  // Runs `kiroku serve` on `sink` expecting it to stop at start: the exit
  // status and what it wrote to stderr.
  std::pair<int, std::string> start_fails(const std::string& sink) {
    TempDir dir;
    const std::string cmd = std::string(KIROKU_BINARY) + " serve --listen 127.0.0.1:0 --spool-dir " + dir.path() +
                            "/spool --table " + table_ + " --sink '" + sink + "' 2>" + dir.path() + "/err.txt";
    const int status = std::system(cmd.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_all(dir.path() + "/err.txt")};
  }

  // Expects exit 2 and one line on stderr naming --sink and `needle`, without the password.
  void expect_one_line_exit_2(const std::string& sink, const std::string& needle) {
    SCOPED_TRACE(sink);
    auto [code, err] = start_fails(sink);
    EXPECT_EQ(code, 2) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_EQ(err.rfind("kiroku: --sink: ", 0), 0u) << err;
    EXPECT_NE(err.find(needle), std::string::npos) << err;
    EXPECT_EQ(err.find(password_), std::string::npos) << "the password must not be printed: " << err;
  }

  // A CA of its own in `dir` that signed nothing the server holds.
  std::string other_ca(const std::string& dir) {
    const std::string ca = dir + "/other-ca.pem";
    const auto [code, out] = shell(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-days 1 -subj '/CN=some other CA' -keyout " +
        dir + "/other-ca-key.pem -out " + ca + " 2>&1");
    EXPECT_EQ(code, 0) << out;
    return ca;
  }

  std::string ca_, ctl_, port_, table_, user_, password_;
};

TEST_F(MysqlTls, VerifyIdentityWithTheRightCaStoresEventsOverTls) {
  // The account REQUIRES SSL: that it logs in at all shows the session is encrypted.
  expect_stores(url("ssl-mode=VERIFY_IDENTITY&ssl-ca=" + ca_), 50);
  // An ssl- file alone asks for VERIFY_IDENTITY, on loopback too.
  expect_stores(url("ssl-ca=" + ca_), 5);
}

TEST_F(MysqlTls, TheAccountRefusesPlainTcpSoTheTlsTestsAreMeaningful) {
  // Without TLS the same account is denied: the runs above were encrypted.
  expect_one_line_exit_2(url("ssl-mode=DISABLED"), "Access denied");
}

TEST_F(MysqlTls, RequiredAndPreferredEncryptWithoutVerifying) {
  // No CA needed: the session is encrypted, the server is not checked.
  expect_stores(url("ssl-mode=REQUIRED"), 10);
  expect_stores(url("ssl-mode=PREFERRED"), 10);
  // REQUIRED does not check the name either.
  OtherNameForwarder fwd(std::atoi(port_.c_str()));
  ASSERT_NE(fwd.port(), 0) << "cannot listen on 127.0.0.2";
  expect_stores(url("ssl-mode=REQUIRED", "127.0.0.2", std::to_string(fwd.port())), 10);
}

TEST_F(MysqlTls, WrongCaOrUnreadableCaFailsAtStartWithOneLine) {
  TempDir dir;
  const std::string other = other_ca(dir.path());
  expect_one_line_exit_2(url("ssl-mode=VERIFY_IDENTITY&ssl-ca=" + other), "TLS/SSL error: ");
  expect_one_line_exit_2(url("ssl-mode=VERIFY_CA&ssl-ca=" + other), "ssl-ca " + other);
  // The system's CAs do not know the test CA either.
  expect_one_line_exit_2(url("ssl-mode=VERIFY_IDENTITY"), "the system's CAs");
  // Files that are not there or not certificates: before any connection.
  expect_one_line_exit_2(url("ssl-mode=VERIFY_IDENTITY&ssl-ca=" + dir.path() + "/missing.pem"),
                         "mysql URL: ssl-ca \"" + dir.path() + "/missing.pem\": cannot read: No such file");
  std::ofstream(dir.path() + "/junk.pem") << "junk\n";
  expect_one_line_exit_2(url("ssl-mode=VERIFY_IDENTITY&ssl-ca=" + dir.path() + "/junk.pem"), "holds no CA certificate");
  expect_one_line_exit_2(url("ssl-mode=SOMETIMES"), "bad ssl-mode \"SOMETIMES\"");
}

TEST_F(MysqlTls, CertificateForAnotherNameFailsWithVerifyIdentityNotWithVerifyCa) {
  // 127.0.0.2 reaches the same server, but its certificate names 127.0.0.1 and localhost.
  OtherNameForwarder fwd(std::atoi(port_.c_str()));
  ASSERT_NE(fwd.port(), 0) << "cannot listen on 127.0.0.2";
  const std::string other_port = std::to_string(fwd.port());
  expect_one_line_exit_2(url("ssl-mode=VERIFY_IDENTITY&ssl-ca=" + ca_, "127.0.0.2", other_port),
                         "Validation of SSL server certificate failed");
  auto [code, err] = start_fails(url("ssl-mode=VERIFY_IDENTITY&ssl-ca=" + ca_, "127.0.0.2", other_port));
  EXPECT_NE(err.find("host 127.0.0.2"), std::string::npos) << err;
  // VERIFY_CA checks the chain only: the same address works.
  expect_stores(url("ssl-mode=VERIFY_CA&ssl-ca=" + ca_, "127.0.0.2", other_port), 10);
}

TEST_F(MysqlTls, TlsModesAgainstAServerWithoutTlsFailAtStart) {
  // A second, throwaway server without TLS; the account kiroku/kiroku exists there.
  TempDir dir;
  const std::string sink = "mysql://kiroku:kiroku@127.0.0.1:$KIROKU_TEST_MYSQL_PORT/kiroku_test?";
  std::string script;
  int i = 0;
  const std::vector<std::string> queries = {"ssl-mode=REQUIRED", "ssl-mode=VERIFY_CA&ssl-ca=" + ca_,
                                            "ssl-mode=VERIFY_IDENTITY&ssl-ca=" + ca_};
  for (const std::string& q : queries) {
    const std::string n = std::to_string(i++);
    script += std::string(KIROKU_BINARY) + " serve --listen 127.0.0.1:0 --spool-dir " + dir.path() + "/spool" + n +
              " --sink \"" + sink + q + "\" 2>" + dir.path() + "/err" + n + ".txt; echo $? >" + dir.path() + "/code" +
              n + ".txt; ";
  }
  const auto [rc, out] = shell("KIROKU_MARIADB_TLS=0 " + std::string(KIROKU_SOURCE_DIR) +
                               "/scripts/with-mariadb.sh bash -c '" + script + "' 2>&1");
  ASSERT_EQ(rc, 0) << out;
  const std::vector<std::string> needles = {"the server does not offer TLS", "the server does not offer TLS",
                                            "SSL is required, but the server does not support it"};
  for (std::size_t k = 0; k < queries.size(); ++k) {
    SCOPED_TRACE(queries[k]);
    const std::string err = read_all(dir.path() + "/err" + std::to_string(k) + ".txt");
    EXPECT_EQ(std::atoi(read_all(dir.path() + "/code" + std::to_string(k) + ".txt").c_str()), 2) << err;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_NE(err.find(needles[k]), std::string::npos) << err;
  }
}

}  // namespace
}  // namespace kiroku::test
