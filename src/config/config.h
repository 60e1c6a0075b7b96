// config.h - the effective configuration of `kiroku serve`.
//
// One loader for every option: command-line flag > KIROKU_<OPTION>
// environment variable > TOML config file > built-in default. A bad value is
// a ConfigError naming the option and the reason; `kiroku serve` prints it
// as one line and exits 2 before starting anything.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/durability.h"
#include "common/status.h"

namespace CLI {
class App;
}

namespace kiroku {

struct ServeConfig {
  // HTTP
  std::string listen = "127.0.0.1:8080";
  unsigned threads = 0;  // 0: one per core
  unsigned max_connections = 10000;
  std::size_t max_header_bytes = 8 * 1024;
  std::size_t max_body_bytes = 8 * 1024 * 1024;  // POST /events
  std::chrono::milliseconds idle_timeout{75'000};
  std::chrono::milliseconds read_timeout{10'000};
  std::chrono::milliseconds write_timeout{30'000};
  std::chrono::milliseconds shutdown_timeout{30'000};
  std::chrono::milliseconds drain_delay{0};

  // Ingestion
  std::string sink = "sqlite://./kiroku-data/events.db";
  std::string table = "events";
  Durability durability = Durability::process;
  std::string spool_dir = "./kiroku-data/spool";
  std::uint64_t spool_max_bytes = 1ull << 30;
  std::uint64_t dead_letter_max_bytes = 64ull << 20;  // SPOOL_DIR/dead-letter.ndjson; 0: off
  std::chrono::milliseconds flush_interval{50};
  std::size_t batch_max = 10000;
  std::uint64_t queue_max_bytes = 64ull << 20;          // in-memory backlog before spilling/503
  int instance = -1;                                    // -1: leased through the sink (ingest/instance_lease.h)
  std::chrono::milliseconds sink_wait_timeout{10'000};  // durability=sink: longest a client waits

  // Database pool (MySQL)
  int db_max_open = 4;
  int db_max_idle = 2;
  std::chrono::milliseconds db_max_lifetime{30 * 60 * 1000};
  std::chrono::milliseconds db_max_idle_time{5 * 60 * 1000};

  // Files
  std::string store = "file://./kiroku-data/objects";
  std::string auth_token;       // from --auth-token or the file below
  std::string auth_token_file;  // --auth-token-file, re-read on SIGHUP
  std::size_t part_size = 8 * 1024 * 1024;
  unsigned part_concurrency = 4;
  unsigned store_buffers = 8;
  std::chrono::milliseconds store_buffer_wait{10'000};
  std::uint64_t max_upload_bytes = 0;  // a file upload's body (PUT/POST /files); 0: no limit

  // Operations
  std::string log_level = "info";
  std::string log_format = "text";  // text or json (ops/log_format.h)
  double access_log_sample = 0;  // 0: off; 1: every request; 0.01: one in a hundred
  // Web origins whose pages may send events from a browser (CORS): exact
  // origins ("https://shop.example", "http://127.0.0.1:8000") or "*". Empty:
  // no CORS answers, OPTIONS refused, Origin ignored.
  std::vector<std::string> cors_origins;
};

struct ConfigError {
  std::string option;  // "--threads"
  std::string reason;  // "must be an integer from 1 to 64, got 'x'"
  std::string line() const { return option + ": " + reason; }
};

// Registers every serve option on `app` (the `serve` subcommand). After
// app parsing, call load_serve_config to resolve env and file values.
class ServeOptions {
 public:
  void add_to(CLI::App& app);
  // Resolves flag > env > file > default into `out`; false with `err` set
  // on the first bad value. `env` looks a variable up (getenv by default).
  using EnvLookup = std::function<const char*(const char*)>;
  bool resolve(ServeConfig& out, ConfigError& err, const EnvLookup& env = {}) const;

 private:
  std::vector<std::string> flag_values_;  // one per option, in table order
  std::vector<bool> flag_set_;
  std::string config_file_;
  bool config_file_set_ = false;
};

// A duration with a unit: "250us", "100ms", "5s", "2m", "1h"; false if bad.
bool parse_duration(std::string_view s, std::chrono::milliseconds& out);
// A size with an optional unit: "1024", "64KiB", "8MiB", "1GiB", "1GB"; false if bad.
bool parse_size(std::string_view s, std::uint64_t& out);

// Every option's name and value as a flag would carry it ("75s", "8MiB"),
// in the table's order; nullopt when not set. A token shows as "***".
struct OptionValue {
  std::string name;
  std::optional<std::string> value;
};
std::vector<OptionValue> option_values(const ServeConfig& c);

// A commented TOML file with every option at its default, from the option
// table (`kiroku config example`, the packaged /etc/kiroku/kiroku.toml).
// Options unset by default are commented out.
std::string example_config();

// One line describing the effective configuration, for the start log.
std::string describe(const ServeConfig& c);

}  // namespace kiroku
