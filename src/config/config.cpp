// config.cpp - one table of serve options, resolved from flags, environment,
// a TOML file and defaults (see config.h).
#include "config/config.h"

#include "common/duration.h"

#include "common/redact.h"

#include <fmt/format.h>
#include <toml++/toml.h>
#include <CLI/CLI.hpp>
#include <charconv>
#include <cstdlib>
#include <optional>
#include <thread>

namespace kiroku {
namespace {

using Apply = std::optional<std::string> (*)(ServeConfig&, std::string_view);
// The value as a flag would carry it ("75s", "8MiB"); nullopt: not set.
using Shown = std::optional<std::string>;
using Show = Shown (*)(const ServeConfig&);

struct OptionSpec {
  const char* name;
  const char* help;
  Apply apply;
  Show show;
  const char* unset_example = nullptr;  // TOML value shown (commented) for an option unset by default
};

template <typename T>
std::optional<T> to_uint(std::string_view s) {
  T v{};
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

std::string quoted(std::string_view v) { return fmt::format("got '{}'", v); }

std::optional<std::string> set_uint(unsigned& field, std::string_view v, unsigned lo, unsigned hi) {
  auto n = to_uint<unsigned>(v);
  if (!n || *n < lo || *n > hi) return fmt::format("must be an integer from {} to {}, {}", lo, hi, quoted(v));
  field = *n;
  return std::nullopt;
}

std::optional<std::string> set_int(int& field, std::string_view v, int lo, int hi) {
  auto n = to_uint<int>(v);
  if (!n || *n < lo || *n > hi) return fmt::format("must be an integer from {} to {}, {}", lo, hi, quoted(v));
  field = *n;
  return std::nullopt;
}

template <typename T>
std::optional<std::string> set_size(T& field, std::string_view v, std::uint64_t lo, std::uint64_t hi) {
  std::uint64_t n;
  if (!parse_size(v, n) || n < lo || n > hi)
    return fmt::format("must be a size from {} to {} bytes (units KiB, MiB, GiB allowed), {}", lo, hi, quoted(v));
  field = static_cast<T>(n);
  return std::nullopt;
}

std::optional<std::string> set_duration(std::chrono::milliseconds& field, std::string_view v,
                                        std::chrono::milliseconds lo, std::chrono::milliseconds hi) {
  std::chrono::milliseconds d;
  if (!parse_duration(v, d) || d < lo || d > hi)
    return fmt::format("must be a duration from {}ms to {}s with a unit (ms, s, m, h), {}", lo.count(),
                       hi.count() / 1000, quoted(v));
  field = d;
  return std::nullopt;
}

std::optional<std::string> check_url(std::string_view v, std::initializer_list<const char*> schemes) {
  for (const char* s : schemes)
    if (v.starts_with(s)) return std::nullopt;
  std::string list;
  for (const char* s : schemes) list += (list.empty() ? "" : " or ") + std::string(s) + "...";
  const std::string shown = redact_url(v);  // a typo's password stays hidden
  return fmt::format("must start with {}, {}", list, quoted(std::string_view(shown)));
}

// A comma-separated list of web origins (scheme://host[:port], as a browser
// sends it in Origin: no path, no trailing slash) or "*".
std::optional<std::string> set_origins(std::vector<std::string>& field, std::string_view v) {
  std::vector<std::string> out;
  for (std::size_t begin = 0; begin <= v.size();) {
    std::size_t comma = v.find(',', begin);
    if (comma == std::string_view::npos) comma = v.size();
    std::string_view o = v.substr(begin, comma - begin);
    while (!o.empty() && o.front() == ' ') o.remove_prefix(1);
    while (!o.empty() && o.back() == ' ') o.remove_suffix(1);
    begin = comma + 1;
    if (o.empty()) continue;
    if (o != "*") {
      std::string_view rest = o.starts_with("https://") ? o.substr(8) : o.starts_with("http://") ? o.substr(7) : "";
      const bool host_ok =
          !rest.empty() && rest.size() <= 200 &&
          rest.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") ==
              std::string_view::npos;
      if (!host_ok)
        return fmt::format("each origin must be scheme://host[:port] (http or https, no path) or *, {}", quoted(o));
    }
    out.emplace_back(o);
  }
  field = std::move(out);
  return std::nullopt;
}

// A duration in the largest unit that divides it: "75s", "30m", "250ms".
std::string show_duration(std::chrono::milliseconds d) {
  const auto ms = d.count();
  if (ms == 0) return "0s";
  if (ms % 3'600'000 == 0) return fmt::format("{}h", ms / 3'600'000);
  if (ms % 60'000 == 0) return fmt::format("{}m", ms / 60'000);
  if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
  return fmt::format("{}ms", ms);
}

// A size in the largest binary unit that divides it: "8MiB", "1GiB", "1000".
std::string show_size(std::uint64_t n) {
  if (n == 0) return "0";
  if (n % (1ull << 30) == 0) return fmt::format("{}GiB", n >> 30);
  if (n % (1ull << 20) == 0) return fmt::format("{}MiB", n >> 20);
  if (n % (1ull << 10) == 0) return fmt::format("{}KiB", n >> 10);
  return std::to_string(n);
}

using std::chrono::milliseconds;
constexpr milliseconds kHour{3'600'000};

const OptionSpec kOptions[] = {
    {"listen", "address to listen on, HOST:PORT ([::1]:PORT for IPv6)",
     [](ServeConfig& c, std::string_view v) -> std::optional<std::string> {
       const auto colon = v.rfind(':');
       if (colon == std::string_view::npos || colon == 0 || !to_uint<std::uint16_t>(v.substr(colon + 1)))
         return fmt::format("must be HOST:PORT with a port from 0 to 65535, {}", quoted(v));
       c.listen = v;
       return std::nullopt;
     },
     [](const ServeConfig& c) -> Shown { return c.listen; }},
    {"threads", "IO threads, each with its own acceptor and batch (default: one per core)",
     [](ServeConfig& c, std::string_view v) { return set_uint(c.threads, v, 1, 64); },
     [](const ServeConfig& c) -> Shown { return c.threads ? Shown(std::to_string(c.threads)) : std::nullopt; }, "4"},
    {"max-connections", "most client connections open at once",
     [](ServeConfig& c, std::string_view v) { return set_uint(c.max_connections, v, 1, 1'000'000); },
     [](const ServeConfig& c) -> Shown { return std::to_string(c.max_connections); }},
    {"max-header-bytes", "largest request head, request line and fields together (431 beyond)",
     [](ServeConfig& c, std::string_view v) { return set_size(c.max_header_bytes, v, 512, 1 << 20); },
     [](const ServeConfig& c) -> Shown { return show_size(c.max_header_bytes); }},
    {"max-body-bytes", "largest POST /events body (413 beyond)",
     [](ServeConfig& c, std::string_view v) { return set_size(c.max_body_bytes, v, 1024, 1ull << 30); },
     [](const ServeConfig& c) -> Shown { return show_size(c.max_body_bytes); }},
    {"idle-timeout", "keep-alive idle timeout (longer than a load balancer's)",
     [](ServeConfig& c, std::string_view v) { return set_duration(c.idle_timeout, v, milliseconds(100), kHour); },
     [](const ServeConfig& c) -> Shown { return show_duration(c.idle_timeout); }},
    {"read-timeout", "time to receive a request head, and most time between body reads",
     [](ServeConfig& c, std::string_view v) { return set_duration(c.read_timeout, v, milliseconds(100), kHour); },
     [](const ServeConfig& c) -> Shown { return show_duration(c.read_timeout); }},
    {"write-timeout", "most time a response write may stall",
     [](ServeConfig& c, std::string_view v) { return set_duration(c.write_timeout, v, milliseconds(100), kHour); },
     [](const ServeConfig& c) -> Shown { return show_duration(c.write_timeout); }},
    {"shutdown-timeout", "deadline for a graceful stop to flush everything",
     [](ServeConfig& c, std::string_view v) { return set_duration(c.shutdown_timeout, v, milliseconds(100), kHour); },
     [](const ServeConfig& c) -> Shown { return show_duration(c.shutdown_timeout); }},
    {"drain-delay", "on a stop signal, keep serving this long with /readyz at 503",
     [](ServeConfig& c, std::string_view v) { return set_duration(c.drain_delay, v, milliseconds(0), kHour); },
     [](const ServeConfig& c) -> Shown { return show_duration(c.drain_delay); }},
    {"sink",
     "sqlite:///path/file.db, mysql://user:pass@host:port/db, postgresql://user:pass@host:port/db or "
     "clickhouse://user:pass@host:8123/db",
     [](ServeConfig& c, std::string_view v) {
       auto e = check_url(v, {"sqlite://", "mysql://", "postgresql://", "postgres://", "clickhouse://"});
       if (!e) c.sink = v;
       return e;
     },
     [](const ServeConfig& c) -> Shown { return c.sink; }},
    {"table", "table the events go to",
     [](ServeConfig& c, std::string_view v) -> std::optional<std::string> {
       if (v.empty() || v.size() > 64 ||
           v.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") !=
               std::string_view::npos)
         return fmt::format("must be 1 to 64 letters, digits or underscores, {}", quoted(v));
       c.table = v;
       return std::nullopt;
     },
     [](const ServeConfig& c) -> Shown { return c.table; }},
    {"durability", "when a 2xx is sent: none, process, fsync or sink",
     [](ServeConfig& c, std::string_view v) -> std::optional<std::string> {
       if (v == "none") c.durability = Durability::none;
       else if (v == "process") c.durability = Durability::process;
       else if (v == "fsync") c.durability = Durability::fsync;
       else if (v == "sink") c.durability = Durability::sink;
       else return fmt::format("must be none, process, fsync or sink, {}", quoted(v));
       return std::nullopt;
     },
     [](const ServeConfig& c) -> Shown { return std::string(to_string(c.durability)); }},
    {"spool-dir", "directory of the spool (process and fsync durability)",
     [](ServeConfig& c, std::string_view v) -> std::optional<std::string> {
       if (v.empty()) return "must not be empty";
       c.spool_dir = v;
       return std::nullopt;
     },
     [](const ServeConfig& c) -> Shown { return c.spool_dir; }},
    {"spool-max-bytes", "spool size limit; past it events get 503",
     [](ServeConfig& c, std::string_view v) { return set_size(c.spool_max_bytes, v, 1 << 20, 1ull << 50); },
     [](const ServeConfig& c) -> Shown { return show_size(c.spool_max_bytes); }},
    {"dead-letter-max-bytes", "bound of the dead-letter file of refused events; 0 turns isolation off",
     [](ServeConfig& c, std::string_view v) { return set_size(c.dead_letter_max_bytes, v, 0, 1ull << 50); },
     [](const ServeConfig& c) -> Shown { return show_size(c.dead_letter_max_bytes); }},
    {"flush-interval", "longest an event waits in memory before its batch is written",
     [](ServeConfig& c, std::string_view v) {
       return set_duration(c.flush_interval, v, milliseconds(1), milliseconds(60'000));
     },
     [](const ServeConfig& c) -> Shown { return show_duration(c.flush_interval); }},
    {"batch-max", "a shard's batch is written at this many events",
     [](ServeConfig& c, std::string_view v) { return set_size(c.batch_max, v, 1, 1'000'000); },
     [](const ServeConfig& c) -> Shown { return std::to_string(c.batch_max); }},
    {"queue-max-bytes", "in-memory backlog of batches waiting for the database",
     [](ServeConfig& c, std::string_view v) { return set_size(c.queue_max_bytes, v, 1 << 20, 1ull << 40); },
     [](const ServeConfig& c) -> Shown { return show_size(c.queue_max_bytes); }},
    {"instance", "instance number 0-255 (default: one leased from the database)",
     [](ServeConfig& c, std::string_view v) { return set_int(c.instance, v, 0, 255); },
     [](const ServeConfig& c) -> Shown { return c.instance < 0 ? std::nullopt : Shown(std::to_string(c.instance)); },
     "0"},
    {"sink-wait-timeout", "durability=sink: longest a request waits for its commit",
     [](ServeConfig& c, std::string_view v) { return set_duration(c.sink_wait_timeout, v, milliseconds(100), kHour); },
     [](const ServeConfig& c) -> Shown { return show_duration(c.sink_wait_timeout); }},
    {"db-max-open", "database pool (MySQL, PostgreSQL): most open connections",
     [](ServeConfig& c, std::string_view v) { return set_int(c.db_max_open, v, 1, 1000); },
     [](const ServeConfig& c) -> Shown { return std::to_string(c.db_max_open); }},
    {"db-max-idle", "database pool (MySQL, PostgreSQL): most idle connections kept",
     [](ServeConfig& c, std::string_view v) { return set_int(c.db_max_idle, v, 0, 1000); },
     [](const ServeConfig& c) -> Shown { return std::to_string(c.db_max_idle); }},
    {"db-max-lifetime", "database pool (MySQL, PostgreSQL): a connection is closed after this age",
     [](ServeConfig& c, std::string_view v) {
       return set_duration(c.db_max_lifetime, v, milliseconds(1000), 24 * kHour);
     },
     [](const ServeConfig& c) -> Shown { return show_duration(c.db_max_lifetime); }},
    {"db-max-idle-time", "database pool (MySQL, PostgreSQL): an idle connection is closed after this long",
     [](ServeConfig& c, std::string_view v) {
       return set_duration(c.db_max_idle_time, v, milliseconds(1000), 24 * kHour);
     },
     [](const ServeConfig& c) -> Shown { return show_duration(c.db_max_idle_time); }},
    {"store", "file:///dir or s3://bucket?endpoint=http://host:port&region=R",
     [](ServeConfig& c, std::string_view v) {
       auto e = check_url(v, {"file://", "s3://"});
       if (!e) c.store = v;
       return e;
     },
     [](const ServeConfig& c) -> Shown { return c.store; }},
    {"auth-token",
     "bearer token for the file API and profiles (without one: loopback clients only, and requests with "
     "Forwarded/X-Forwarded-For/X-Real-IP refused: set one behind a reverse proxy)",
     [](ServeConfig& c, std::string_view v) -> std::optional<std::string> {
       c.auth_token = v;
       return std::nullopt;
     },
     [](const ServeConfig& c) -> Shown { return c.auth_token.empty() ? std::nullopt : Shown("***"); },
     "\"a-long-random-secret\""},
    {"auth-token-file", "file holding the bearer token",
     [](ServeConfig& c, std::string_view v) -> std::optional<std::string> {
       std::FILE* f = std::fopen(std::string(v).c_str(), "rb");
       if (!f) return fmt::format("cannot read '{}'", v);
       char buf[4096];
       const std::size_t n = std::fread(buf, 1, sizeof buf, f);
       std::fclose(f);
       std::string_view t(buf, n);
       while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.remove_suffix(1);
       if (t.empty()) return fmt::format("'{}' is empty", v);
       c.auth_token = t;
       c.auth_token_file = v;
       return std::nullopt;
     },
     [](const ServeConfig& c) -> Shown { return c.auth_token_file.empty() ? std::nullopt : Shown(c.auth_token_file); },
     "\"/etc/kiroku/token\""},
    {"part-size", "S3 multipart part size",
     [](ServeConfig& c, std::string_view v) { return set_size(c.part_size, v, 5ull << 20, 5ull << 30); },
     [](const ServeConfig& c) -> Shown { return show_size(c.part_size); }},
    {"part-concurrency", "part buffers one transfer may hold: S3 parts or ranged GETs in flight",
     [](ServeConfig& c, std::string_view v) { return set_uint(c.part_concurrency, v, 2, 64); },
     [](const ServeConfig& c) -> Shown { return std::to_string(c.part_concurrency); }},
    {"store-buffers", "part buffers shared by all transfers (memory bound: part-size x store-buffers)",
     [](ServeConfig& c, std::string_view v) { return set_uint(c.store_buffers, v, 2, 4096); },
     [](const ServeConfig& c) -> Shown { return std::to_string(c.store_buffers); }},
    {"store-buffer-wait", "longest a new transfer waits for its first buffer, then 503 (0: no limit)",
     [](ServeConfig& c, std::string_view v) { return set_duration(c.store_buffer_wait, v, milliseconds(0), kHour); },
     [](const ServeConfig& c) -> Shown { return show_duration(c.store_buffer_wait); }},
    {"max-upload-bytes",
     "largest file upload body, PUT /files/{key} or the whole POST /files form (413 beyond; 0: no limit)",
     [](ServeConfig& c, std::string_view v) { return set_size(c.max_upload_bytes, v, 0, 1ull << 50); },
     [](const ServeConfig& c) -> Shown { return show_size(c.max_upload_bytes); }},
    {"log-level", "trace, debug, info, warn, error",
     [](ServeConfig& c, std::string_view v) -> std::optional<std::string> {
       if (v != "trace" && v != "debug" && v != "info" && v != "warn" && v != "error")
         return fmt::format("must be trace, debug, info, warn or error, {}", quoted(v));
       c.log_level = v;
       return std::nullopt;
     },
     [](const ServeConfig& c) -> Shown { return c.log_level; }},
    {"cors-origins",
     "web origins whose pages may send events (CORS), comma-separated: https://shop.example,http://host:8000 "
     "or * (default: none)",
     [](ServeConfig& c, std::string_view v) { return set_origins(c.cors_origins, v); },
     [](const ServeConfig& c) -> Shown {
       if (c.cors_origins.empty()) return std::nullopt;
       std::string all;
       for (const auto& o : c.cors_origins) all += (all.empty() ? "" : ",") + o;
       return all;
     },
     "\"https://shop.example,http://127.0.0.1:8000\""},
    {"log-format", "text (for people) or json (one object per line, for log shippers)",
     [](ServeConfig& c, std::string_view v) -> std::optional<std::string> {
       if (v != "text" && v != "json") return fmt::format("must be text or json, {}", quoted(v));
       c.log_format = v;
       return std::nullopt;
     },
     [](const ServeConfig& c) -> Shown { return c.log_format; }},
    {"access-log", "log this fraction of requests (0 off, 1 all)",
     [](ServeConfig& c, std::string_view v) -> std::optional<std::string> {
       double d;
       auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
       if (ec != std::errc() || p != v.data() + v.size() || d < 0 || d > 1)
         return fmt::format("must be a number from 0 to 1, {}", quoted(v));
       c.access_log_sample = d;
       return std::nullopt;
     },
     [](const ServeConfig& c) -> Shown { return fmt::format("{}", c.access_log_sample); }},
};

std::string env_name(std::string_view option) {
  std::string s = "KIROKU_";
  for (char c : option) s += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// A TOML value as the string a flag would carry.
std::optional<std::string> toml_scalar(const toml::node& n) {
  if (auto s = n.value<std::string>()) return *s;
  if (n.is_integer()) return std::to_string(*n.value<std::int64_t>());
  if (n.is_floating_point()) return fmt::format("{}", *n.value<double>());
  if (n.is_boolean()) return *n.value<bool>() ? "true" : "false";
  return std::nullopt;
}

}  // namespace

bool parse_duration(std::string_view s, std::chrono::milliseconds& out) {
  auto d = kiroku::parse_duration(s, BareNumber::refused);
  if (!d.ok()) return false;
  out = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
  return true;
}

bool parse_size(std::string_view s, std::uint64_t& out) {
  std::size_t i = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  if (i == 0 || i > 15) return false;
  const auto n = to_uint<std::uint64_t>(s.substr(0, i));
  if (!n) return false;
  std::string_view unit = s.substr(i);
  std::uint64_t mul = 1;
  if (unit.empty() || unit == "B") mul = 1;
  else if (unit == "KiB" || unit == "K") mul = 1ull << 10;
  else if (unit == "MiB" || unit == "M") mul = 1ull << 20;
  else if (unit == "GiB" || unit == "G") mul = 1ull << 30;
  else if (unit == "KB") mul = 1000;
  else if (unit == "MB") mul = 1000'000;
  else if (unit == "GB") mul = 1000'000'000;
  else return false;
  out = *n * mul;
  return true;
}

void ServeOptions::add_to(CLI::App& app) {
  constexpr std::size_t count = std::size(kOptions);
  flag_values_.assign(count, {});
  flag_set_.assign(count, false);
  app.add_option_function<std::string>(
      "--config",
      [this](const std::string& v) {
        config_file_ = v;
        config_file_set_ = true;
      },
      "TOML config file (options by the same names as the flags)");
  for (std::size_t i = 0; i < count; ++i) {
    app.add_option_function<std::string>(
           std::string("--") + kOptions[i].name,
           [this, i](const std::string& v) {
             flag_values_[i] = v;
             flag_set_[i] = true;
           },
           kOptions[i].help)
        ->envname("")  // environment handled in resolve(), after the file
        ->type_name("");
  }
}

bool ServeOptions::resolve(ServeConfig& out, ConfigError& err, const EnvLookup& env) const {
  out = ServeConfig{};
  auto lookup = [&](const char* n) -> const char* { return env ? env(n) : std::getenv(n); };
  constexpr std::size_t count = std::size(kOptions);

  std::string config_file = config_file_;
  bool have_file = config_file_set_;
  if (!have_file) {
    if (const char* f = lookup("KIROKU_CONFIG"); f && *f) {
      config_file = f;
      have_file = true;
    }
  }
  std::vector<std::optional<std::string>> file_values(count);
  if (have_file) {
    toml::table tbl;
    try {
      tbl = toml::parse_file(config_file);
    } catch (const toml::parse_error& e) {
      err = {"--config", fmt::format("{}: {} (line {})", config_file, e.description(), e.source().begin.line)};
      return false;
    }
    for (auto&& [key, node] : tbl) {
      std::string k(key.str());
      for (char& c : k)
        if (c == '_') c = '-';
      std::size_t i = 0;
      while (i < count && k != kOptions[i].name) ++i;
      if (i == count) {
        err = {"--config", fmt::format("{}: unknown option '{}'", config_file, key.str())};
        return false;
      }
      auto v = toml_scalar(node);
      if (!v) {
        err = {"--config", fmt::format("{}: option '{}' must be a string or a number", config_file, key.str())};
        return false;
      }
      file_values[i] = std::move(*v);
    }
  }

  for (std::size_t i = 0; i < count; ++i) {
    const OptionSpec& spec = kOptions[i];
    std::optional<std::string> value;
    std::string source;
    if (i < flag_set_.size() && flag_set_[i]) {
      value = flag_values_[i];
      source = std::string("--") + spec.name;
    } else if (const std::string name = env_name(spec.name); const char* e = lookup(name.c_str())) {
      value = e;
      source = name;
    } else if (file_values[i]) {
      value = file_values[i];
      source = fmt::format("{} in {}", spec.name, config_file);
    }
    if (!value) continue;
    if (auto reason = spec.apply(out, *value)) {
      err = {source, *reason};
      return false;
    }
  }
  if (out.threads == 0) out.threads = std::max(1u, std::min(64u, std::thread::hardware_concurrency()));
  if (out.db_max_idle > out.db_max_open) out.db_max_idle = out.db_max_open;
  if (out.store_buffers < out.part_concurrency) {
    err = {"--store-buffers",
           fmt::format("must be at least --part-concurrency ({}), got {}", out.part_concurrency, out.store_buffers)};
    return false;
  }
  return true;
}

std::vector<OptionValue> option_values(const ServeConfig& c) {
  std::vector<OptionValue> out;
  out.reserve(std::size(kOptions));
  for (const OptionSpec& spec : kOptions) out.push_back({spec.name, spec.show(c)});
  return out;
}

namespace {

// `text` as comment lines of at most ~78 columns.
void append_comment(std::string& out, std::string_view text) {
  std::string line = "#";
  while (!text.empty()) {
    const auto space = text.find(' ');
    const std::string_view word = text.substr(0, space);
    text = space == std::string_view::npos ? std::string_view() : text.substr(space + 1);
    if (line.size() > 1 && line.size() + 1 + word.size() > 78) {
      out += line + "\n";
      line = "#";
    }
    line += ' ';
    line += word;
  }
  out += line + "\n";
}

// A TOML value: a bare integer, else a basic string.
std::string toml_value(std::string_view v) {
  if (!v.empty() && v.size() < 16 && v.find_first_not_of("0123456789") == std::string_view::npos) return std::string(v);
  std::string q = "\"";
  for (char ch : v) {
    if (ch == '"' || ch == '\\') q += '\\';
    q += ch;
  }
  return q + "\"";
}

}  // namespace

std::string example_config() {
  std::string out =
      "# kiroku.toml: the configuration of `kiroku serve --config FILE`, every\n"
      "# option at its default (`kiroku config example` prints this file).\n"
      "# A flag or a KIROKU_<OPTION> environment variable beats a value here.\n"
      "# Sizes take KiB, MiB, GiB; durations ms, s, m, h. Relative paths are\n"
      "# relative to the working directory (the service's: /var/lib/kiroku).\n"
      "# SIGHUP (systemctl reload kiroku) reads this file again: the auth token\n"
      "# (and its file) and the log level change at once, other options at the\n"
      "# next start.\n";
  const ServeConfig defaults;
  for (const OptionSpec& spec : kOptions) {
    out += '\n';
    append_comment(out, spec.help);
    if (auto v = spec.show(defaults)) out += fmt::format("{} = {}\n", spec.name, toml_value(*v));
    else out += fmt::format("# {} = {}\n", spec.name, spec.unset_example ? spec.unset_example : "\"\"");
  }
  return out;
}

std::string describe(const ServeConfig& c) {
  return fmt::format(
      "listen={} threads={} sink={} table={} durability={} spool-dir={} flush-interval={}ms "
      "batch-max={} store={} max-connections={} idle-timeout={}ms instance={} file-auth={}",
      c.listen, c.threads, redact_url(c.sink), c.table, to_string(c.durability), c.spool_dir, c.flush_interval.count(),
      c.batch_max, redact_url(c.store), c.max_connections, c.idle_timeout.count(),
      c.instance < 0 ? std::string("leased") : std::to_string(c.instance),
      c.auth_token.empty() ? "loopback-only" : "token");
}

}  // namespace kiroku
