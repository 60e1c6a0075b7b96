// scale_out_test.cpp - the seed's deployment: three instances behind haproxy
// (deploy/haproxy.cfg, run as it is) writing to one MariaDB under load, with
// faults: one instance killed with kill -9 and restarted, MariaDB stopped
// and started again, one instance started while MariaDB is down.
//
// Two kinds of load run through haproxy at once: `kiroku load` (no client
// ids, the seed's requests) and client threads that remember every event
// answered 2xx (each with a unique client id). Checked afterwards:
//   - every 2xx of the client threads is exactly one row (0 lost, 0 duplicated);
//   - `kiroku load`'s sequence numbers are stored at most once each, and at
//     least as many rows as it got 2xx answers;
//   - no conflict was counted, and the instances held distinct numbers.
// Once with --instance 1, 2, 3 and once with every instance started from
// the identical command line (numbers leased through the database).
//
// Needs scripts/with-mariadb.sh (KIROKU_TEST_MYSQL_URL, KIROKU_TEST_MYSQL_CTL)
// and haproxy (scripts/setup.sh installs it). It stops and starts the shared
// MariaDB: run it on its own, like Fault.DatabaseKilledAndRestartedUnderLoad.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "integration/harness.h"

namespace kiroku::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string run_cmd(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  std::size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, got);
  ::pclose(p);
  return out;
}

std::string haproxy_binary() {
  for (const char* p : {"/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"})
    if (::access(p, X_OK) == 0) return p;
  return "";
}

// haproxy in the foreground (-db) with deploy/haproxy.cfg; stopped with the test.
class Haproxy {
 public:
  Haproxy(const std::string& dir, int port, const std::vector<int>& backends) : port_(port) {
    const std::string bin = haproxy_binary();
    const std::string log = dir + "/haproxy.log";
    std::vector<std::string> env{"KIROKU_LB_LISTEN=127.0.0.1:" + std::to_string(port)};
    for (std::size_t i = 0; i < backends.size(); ++i)
      env.push_back("KIROKU_" + std::to_string(i + 1) + "=127.0.0.1:" + std::to_string(backends[i]));
    pid_ = ::fork();
    if (pid_ == 0) {
      int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      for (auto& e : env) ::putenv(const_cast<char*>(e.c_str()));
      const std::string cfg = std::string(KIROKU_SOURCE_DIR) + "/deploy/haproxy.cfg";
      ::execl(bin.c_str(), bin.c_str(), "-db", "-f", cfg.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~Haproxy() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }

 private:
  int port_;
  pid_t pid_ = -1;
};

struct Acked {
  std::mutex mu;
  std::map<std::string, long long> events;  // client id -> value
};

void run_scale_out(bool fixed_instances) {
  const char* url = std::getenv("KIROKU_TEST_MYSQL_URL");
  const char* ctl_env = std::getenv("KIROKU_TEST_MYSQL_CTL");
  if (!url || !ctl_env || !*url || !*ctl_env) GTEST_SKIP() << "run under scripts/with-mariadb.sh";
  ASSERT_FALSE(haproxy_binary().empty()) << "haproxy is not installed (scripts/setup.sh installs it)";
  const std::string ctl = ctl_env;
  const std::string table =
      std::string(fixed_instances ? "scale_fixed_" : "scale_leased_") + std::to_string(::getpid());
  TempDir dir;

  // Three instances on fixed ports (a restart comes back on the same one).
  constexpr int kInstances = 3;
  std::vector<int> ports;
  for (int i = 0; i < kInstances; ++i) ports.push_back(free_port());
  const std::vector<std::string> args{"--sink",           url,    "--table",       table, "--threads",          "2",
                                      "--flush-interval", "20ms", "--drain-delay", "1s",  "--shutdown-timeout", "3s"};
  auto start = [&](int i) {
    const std::string home = dir.path() + "/i" + std::to_string(i);
    std::filesystem::create_directories(home);
    std::vector<std::string> a = args;
    if (fixed_instances) {
      a.push_back("--instance");
      a.push_back(std::to_string(i + 1));
    }
    // The command line is the same for each; the spool directory comes from
    // the environment, as one container or host each would have its own.
    return std::make_unique<Kiroku>(
        home, a,
        std::vector<std::string>{"KIROKU_SPOOL_DIR=" + home + "/spool", "KIROKU_STORE=file://" + home + "/objects"},
        std::vector<std::string>{}, ports[i]);
  };
  std::vector<std::unique_ptr<Kiroku>> k;
  for (int i = 0; i < kInstances; ++i) k.push_back(start(i));
  Haproxy lb(dir.path(), free_port(), ports);
  // Ready when haproxy answers through at least one instance.
  for (int i = 0; i < 100 && http_get(lb.port(), "/healthz").status != 200; ++i) std::this_thread::sleep_for(50ms);
  ASSERT_EQ(http_get(lb.port(), "/healthz").status, 200) << run_cmd("cat " + dir.path() + "/haproxy.log");
  std::this_thread::sleep_for(1200ms);  // every server up (rise 2 x inter 500ms)

  // The load: kiroku load (the seed's requests) and clients that remember.
  const std::string load_cmd = std::string(KIROKU_BINARY) +
                               " load --url 'http://127.0.0.1:" + std::to_string(lb.port()) +
                               "/?name=seed&value={seq}' --rate 1500 --duration 16s --connections 12 --timeout 3s "
                               "--json --quiet";
  std::string load_out;
  std::thread load([&] { load_out = run_cmd(load_cmd); });
  std::atomic<bool> stop{false};
  std::atomic<long long> failed{0};
  Acked acked;
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c)
    clients.emplace_back([&, c] {
      auto client = std::make_unique<Client>(lb.port(), 3000);
      for (int i = 0; !stop; ++i) {
        const std::string id = "so" + std::to_string(c) + "-" + std::to_string(i);
        const Response r = client->get("/?name=acked&value=" + std::to_string(i) + "&id=" + id);
        if (r.status == 204) {
          std::lock_guard l(acked.mu);
          acked.events[id] = i;
        } else {
          ++failed;
          client = std::make_unique<Client>(lb.port(), 3000);  // haproxy may have closed it
        }
        std::this_thread::sleep_for(2ms);
      }
    });

  // The faults.
  std::this_thread::sleep_for(2500ms);
  k[0]->kill9();
  std::this_thread::sleep_for(1000ms);
  k[0] = start(0);  // replays its spool, takes its number back
  std::this_thread::sleep_for(1500ms);
  run_cmd(ctl + " stop");  // MariaDB down: the instances spool and stay ready
  std::this_thread::sleep_for(500ms);
  const Response ready_while_down = http_get(ports[2], "/readyz");
  k[1]->stop();     // a clean stop while the database is down: the spool keeps the rest
  k[1] = start(1);  // started while the database is down
  std::this_thread::sleep_for(2000ms);
  run_cmd(ctl + " start");
  load.join();
  stop = true;
  for (auto& t : clients) t.join();

  // Everything written (the backlog of the outage first), then each instance drains on SIGTERM.
  for (int i = 0; i < kInstances; ++i)
    for (int t = 0; t < 200 && metric_value(ports[i], "kiroku_queue_events") > 0; ++t)
      std::this_thread::sleep_for(100ms);
  std::vector<int> numbers;
  for (int i = 0; i < kInstances; ++i) {
    numbers.push_back(static_cast<int>(metric_value(ports[i], "kiroku_instance")));
    EXPECT_EQ(metric_value(ports[i], "kiroku_events_conflicts_total"), 0) << "instance " << i;
  }
  for (int i = 0; i < kInstances; ++i) EXPECT_EQ(k[i]->stop(), 0) << k[i]->log();

  const nlohmann::json report = nlohmann::json::parse(load_out, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << load_out;
  const long long load_2xx = report["status"]["2xx"].get<long long>();
  const long long load_scheduled = report["requests"]["scheduled"].get<long long>();

  const std::string q =
      ctl + " sql \"SELECT COUNT(*), COUNT(DISTINCT value) FROM kiroku_test." + table + " WHERE name = 'seed'\"";
  std::istringstream seed_rows(run_cmd(q));
  long long seed_count = -1, seed_distinct = -1;
  seed_rows >> seed_count >> seed_distinct;
  std::istringstream rows(
      run_cmd(ctl + " sql \"SELECT client_id, value FROM kiroku_test." + table + " WHERE name = 'acked'\""));
  std::map<std::string, std::string> stored;
  long long duplicates = 0, lost = 0, wrong = 0;
  std::string cid, value;
  while (rows >> cid >> value)
    if (!stored.emplace(cid, value).second) ++duplicates;
  for (const auto& [id, v] : acked.events) {
    auto it = stored.find(id);
    if (it == stored.end()) ++lost;
    else if (it->second != std::to_string(v)) ++wrong;
  }
  std::printf(
      "FIGURE scale_out %s load_scheduled=%lld load_2xx=%lld seed_rows=%lld seed_distinct=%lld "
      "acked=%zu acked_failed=%lld acked_rows=%zu lost=%lld duplicated=%lld instances=%d,%d,%d "
      "readyz_while_db_down=%d\n",
      fixed_instances ? "fixed" : "leased", load_scheduled, load_2xx, seed_count, seed_distinct, acked.events.size(),
      failed.load(), stored.size(), lost, duplicates, numbers[0], numbers[1], numbers[2], ready_while_down.status);
  std::fflush(stdout);

  EXPECT_GT(acked.events.size(), 1000u);
  EXPECT_EQ(lost, 0) << "acknowledged events lost";
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(duplicates, 0);
  // Rows beyond the acknowledged ones come only from requests whose answer was cut.
  EXPECT_LE(stored.size(), acked.events.size() + static_cast<std::size_t>(failed.load()));
  EXPECT_EQ(seed_count, seed_distinct) << "a sequence number stored twice";
  EXPECT_GE(seed_count, load_2xx) << "kiroku load got more 2xx than there are rows";
  EXPECT_LE(seed_count, load_scheduled);
  EXPECT_GT(load_2xx, load_scheduled / 2) << load_out;
  EXPECT_EQ(ready_while_down.status, 200) << "an instance with a spool stays ready while the database is down";
  std::set<int> distinct(numbers.begin(), numbers.end());
  EXPECT_EQ(distinct.size(), numbers.size()) << "two instances with one number";
  run_cmd(ctl + " sql \"DROP TABLE IF EXISTS kiroku_test." + table + "\"");
}

TEST(ScaleOut, ThreeInstancesBehindHaproxyFixedNumbersLoseNothing) { run_scale_out(true); }

TEST(ScaleOut, ThreeInstancesBehindHaproxyIdenticalCommandLinesLoseNothing) { run_scale_out(false); }

}  // namespace
}  // namespace kiroku::test
