// clickhouse_url.h - parsing of clickhouse:// sink URLs.
//
//   clickhouse://user[:password]@host[:port]/database[?shards=host2:port2,host3:port3][&timeout=DURATION]
//
// The servers are reached over ClickHouse's HTTP interface (plain HTTP; port
// 8123 by default). The URL's host is shard 1; `shards=` adds the others, in
// order, each `host[:port]` (an IPv6 address in brackets), port 8123 when left
// out; the same user, password and database on every one. The order of the
// shards decides where an event goes (clickhouse_shard.h): keep it for the
// life of a table. `timeout=` bounds one request (default 30s; 100ms to 1h).
// User, password and database are percent-decoded; the database is
// [A-Za-z0-9_]{1,64} (it is written into statements unquoted by the server).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kiroku {

struct ClickhouseServer {
  std::string host;  // a name, an IPv4 address, or an IPv6 address without brackets
  unsigned port = 8123;

  // http://host:port/ (brackets around an IPv6 address).
  std::string base_url() const;
  // host:port, for messages.
  std::string name() const;
};

struct ClickhouseUrl {
  std::string user;
  std::string password;  // empty: none
  std::string database;
  std::vector<ClickhouseServer> shards;  // at least one; shards[0] is the URL's host
  std::int64_t timeout_ms = 30'000;

  // The URL as given with its password hidden, for logs and errors.
  std::string redacted;
};

// Parses a clickhouse:// URL. A malformed URL gives Status::invalid with one
// line naming the part that is wrong; the message never contains the password.
Result<ClickhouseUrl> parse_clickhouse_url(std::string_view url);

}  // namespace kiroku
