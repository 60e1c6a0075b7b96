// clickhouse_url.cpp - parsing of clickhouse:// sink URLs (grammar in clickhouse_url.h).
#include "sink/clickhouse/clickhouse_url.h"

#include <chrono>
#include <cstdio>

#include "common/duration.h"
#include "common/percent.h"
#include "common/redact.h"
#include "common/text.h"
#include "sink/url_text.h"

namespace kiroku {
namespace {

constexpr std::string_view kForm = " (expected clickhouse://user:password@host:8123/database)";

Status bad(std::string what) { return Status::invalid("clickhouse URL: " + what); }

// Percent-decodes one part; `what` names it (its text is not shown: it may be a password).
Status decode(std::string_view in, std::string_view what, std::string& out) {
  auto decoded = percent_decode(in);
  if (!decoded) return bad("bad percent-encoding in " + std::string(what));
  out = std::move(*decoded);
  if (out.find('\0') != std::string::npos) return bad(std::string(what) + " contains a NUL byte");
  return {};
}

bool word_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

// host[:port] or [v6][:port].
Status parse_server(std::string_view text, ClickhouseServer& out) {
  if (text.empty()) return bad("empty host" + std::string(kForm));
  std::optional<unsigned> port;
  if (auto problem = split_host_port(text, out.host, port)) return bad(*problem);
  if (out.host.empty()) return bad("empty host in " + quoted_url_text(text));
  if (port) out.port = *port;
  return {};
}

}  // namespace

std::string ClickhouseServer::base_url() const {
  const bool v6 = host.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port) + "/";
}

std::string ClickhouseServer::name() const {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

Result<ClickhouseUrl> parse_clickhouse_url(std::string_view url) {
  constexpr std::string_view scheme = "clickhouse://";
  if (!istarts_with(url, scheme)) return bad("must start with clickhouse://" + std::string(kForm));
  std::string_view rest = url.substr(scheme.size());
  const std::size_t authority_end = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, authority_end);
  rest = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);

  ClickhouseUrl out;
  out.redacted = redact_url(url);
  const std::size_t at = authority.rfind('@');
  if (at == std::string_view::npos) return bad("missing user" + std::string(kForm));
  const std::string_view userinfo = authority.substr(0, at);
  const std::size_t colon = userinfo.find(':');
  if (Status s = decode(userinfo.substr(0, colon), "user", out.user); !s) return s;
  if (out.user.empty()) return bad("missing user" + std::string(kForm));
  if (colon != std::string_view::npos) {
    if (Status s = decode(userinfo.substr(colon + 1), "password", out.password); !s) return s;
  }
  ClickhouseServer first;
  if (Status s = parse_server(authority.substr(at + 1), first); !s) return s;
  out.shards.push_back(std::move(first));

  const std::size_t query_at = rest.find('?');
  const std::string_view path = rest.substr(0, query_at);
  std::string_view query = query_at == std::string_view::npos ? std::string_view{} : rest.substr(query_at + 1);
  if (path.size() <= 1) return bad("missing database name" + std::string(kForm));
  if (Status s = decode(path.substr(1), "database name", out.database); !s) return s;
  bool word = !out.database.empty() && out.database.size() <= 64;
  for (const char c : out.database) word = word && word_char(c);
  if (!word)
    return bad("database name " + quoted_url_text(out.database) + " is not 1 to 64 characters of A-Z a-z 0-9 _");

  bool shards_given = false, timeout_given = false;
  for (QueryPair p; next_query_pair(query, p);) {
    if (p.name == "shards") {
      if (shards_given) return bad("shards given twice (list them comma-separated in one)");
      shards_given = true;
      std::string list;
      if (Status s = decode(p.value, "shards", list); !s) return s;
      std::string_view l = list;
      while (true) {
        const std::size_t comma = l.find(',');
        ClickhouseServer server;
        if (Status s = parse_server(l.substr(0, comma), server); !s) return bad("shards: " + s.message().substr(16));
        for (const ClickhouseServer& other : out.shards)
          if (other.host == server.host && other.port == server.port)
            return bad("shard " + server.name() + " is listed twice");
        out.shards.push_back(std::move(server));
        if (comma == std::string_view::npos) break;
        l = l.substr(comma + 1);
      }
    } else if (p.name == "timeout") {
      if (timeout_given) return bad("timeout given twice");
      timeout_given = true;
      std::string text;
      if (Status s = decode(p.value, "timeout", text); !s) return s;
      auto d = parse_duration(text, BareNumber::seconds);
      if (!d.ok()) return bad("timeout: " + d.status().message());
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*d).count();
      if (ms < 100 || ms > 3'600'000) return bad("timeout " + quoted_url_text(text) + " is not between 100ms and 1h");
      out.timeout_ms = ms;
    } else {
      return bad("unknown parameter " + quoted_url_text(p.name) + " (understood: shards, timeout)");
    }
  }
  if (out.shards.size() > 256) return bad("more than 256 shards");
  return out;
}

}  // namespace kiroku
