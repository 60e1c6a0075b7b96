// clickhouse_sink.cpp - the ClickHouse sink (contract in clickhouse_sink.h).
#include "sink/clickhouse/clickhouse_sink.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/event.h"
#include "sink/clickhouse/clickhouse_http.h"
#include "sink/clickhouse/clickhouse_url.h"
#include "sink/clickhouse/row_binary.h"
#include "sink/instance_lease_table.h"
#include "sink/mysql/mysql_url.h"

namespace kiroku {
namespace {

constexpr std::int64_t kPingTimeoutMs = 1000;
// A claim is read back after this long (plus up to as much again at random):
// a competitor that read the leases before our claim landed has written its
// own claim by then, and the later version wins for both readers.
constexpr std::int64_t kLeaseSettleMs = 500;
constexpr int kLeaseRounds = 5;

// `s` as a ClickHouse string literal: quotes, backslashes and control bytes escaped.
void append_literal(std::string& out, std::string_view s) {
  out += '\'';
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '\'' || c == '\\') {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02X", u);
      out += hex;
    } else {
      out += c;
    }
  }
  out += '\'';
}

void append_number(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

bool parse_i64(std::string_view text, std::int64_t& v) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  return ec == std::errc() && end == text.data() + text.size();
}

bool same_event(const EventView& a, const EventView& b) {
  return a.id == b.id && a.received_us == b.received_us && a.at_us == b.at_us && a.value == b.value &&
         a.name == b.name && a.client_id == b.client_id;
}

// A set of client ids of one batch (views into its records): open addressing
// over a table that keeps its capacity between batches, so that a batch
// allocates nothing once the largest one has been seen.
class ClientIdSet {
 public:
  void reset(std::size_t expected) {
    std::size_t cap = 16;
    while (cap < expected * 2) cap *= 2;
    if (slots_.size() < cap) slots_.resize(cap);
    std::fill(slots_.begin(), slots_.end(), std::string_view{});
  }
  // Adds `id` (not empty); false if it was there already.
  bool insert(std::string_view id) {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = std::hash<std::string_view>{}(id)&mask;; i = (i + 1) & mask) {
      if (slots_[i].empty()) {
        slots_[i] = id;
        return true;
      }
      if (slots_[i] == id) return false;
    }
  }
  bool contains(std::string_view id) const {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = std::hash<std::string_view>{}(id)&mask;; i = (i + 1) & mask) {
      if (slots_[i].empty()) return false;
      if (slots_[i] == id) return true;
    }
  }

 private:
  std::vector<std::string_view> slots_;
};

struct ClientRow {
  std::string_view client_id;
  std::uint64_t id = 0;
};

class ClickhouseSink final : public Sink {
 public:
  ClickhouseSink(ClickhouseUrl url, const SinkOptions& options) : url_(std::move(url)), options_(options) {
    for (const ClickhouseServer& s : url_.shards) {
      writers_.push_back(std::make_unique<ClickhouseHttp>(s, url_, options_.connect_timeout_ms, url_.timeout_ms));
      control_.push_back(std::make_unique<ClickhouseHttp>(s, url_, options_.connect_timeout_ms, url_.timeout_ms));
      pingers_.push_back(std::make_unique<ClickhouseHttp>(s, url_, kPingTimeoutMs, kPingTimeoutMs));
    }
    const std::string& t = options_.table;
    insert_events_ = "INSERT INTO `" + t + "` (id, received_at, at, name, value, client_id) FORMAT RowBinary";
    insert_clients_ = "INSERT INTO `" + t + "_client_ids` (client_id, id) FORMAT RowBinary";
    shards_.resize(url_.shards.size());
    floor_.assign(url_.shards.size(), kUnknownFloor);
  }

  Status open() override {
    const std::string& t = options_.table;
    const std::string events = "CREATE TABLE IF NOT EXISTS `" + t +
                               "` (\n"
                               "  id UInt64,\n"
                               "  received_at Int64 COMMENT 'Unix microseconds',\n"
                               "  at Int64 COMMENT 'Unix microseconds',\n"
                               "  name String,\n"
                               "  value Int64,\n"
                               "  client_id Nullable(String)\n"
                               ") ENGINE = ReplacingMergeTree ORDER BY id";
    const std::string clients = "CREATE TABLE IF NOT EXISTS `" + t +
                                "_client_ids` (client_id String, id UInt64)"
                                " ENGINE = ReplacingMergeTree ORDER BY client_id";
    const std::string instances = "CREATE TABLE IF NOT EXISTS `" + std::string(kInstancesTable) +
                                  "` (\n"
                                  "  tbl String,\n"
                                  "  instance UInt16,\n"
                                  "  holder String,\n"
                                  "  renewed_at Int64 COMMENT 'Unix ms, database clock; 0 = released',\n"
                                  "  version UInt64\n"
                                  ") ENGINE = ReplacingMergeTree(version) ORDER BY (tbl, instance)";
    std::string engine_query =
        "SELECT engine, sorting_key FROM system.tables WHERE database = currentDatabase() "
        "AND name = ";
    append_literal(engine_query, t);
    engine_query += " FORMAT TabSeparated";
    const std::string probe = "SELECT id, received_at, at, name, value, client_id FROM `" + t + "` LIMIT 0";
    std::lock_guard lock(control_mu_);
    std::string out;
    for (std::size_t s = 0; s < control_.size(); ++s) {
      ClickhouseHttp& h = *control_[s];
      const std::string step = "table `" + t + "`";
      if (Status st = h.query(events, out, "create " + step); !st.ok()) return st;
      if (Status st = h.query(engine_query, out, "check " + step); !st.ok()) return st;
      const std::size_t tab = out.find('\t');
      const std::string engine = out.substr(0, tab);
      std::string key = tab == std::string::npos ? "" : out.substr(tab + 1);
      while (!key.empty() && key.back() == '\n') key.pop_back();
      if (!engine.ends_with("ReplacingMergeTree") || key != "id")
        return Status::permanent("clickhouse " + h.name() + ": table `" + t + "` exists with engine " + engine +
                                 " ORDER BY (" + key +
                                 "), not a ReplacingMergeTree ORDER BY id: replays would not collapse");
      if (Status st = h.query(probe, out, "check " + step); !st.ok()) return st;
      if (Status st = h.query(clients, out, "create table `" + t + "_client_ids`"); !st.ok()) return st;
      if (s == 0) {
        if (Status st = h.query(instances, out, "create table `" + std::string(kInstancesTable) + "`"); !st.ok())
          return st;
      }
    }
    return {};
  }

  Status write(std::string_view records, std::size_t count) override {
    report_.clear();
    refused_row_ = kNoRow;
    if (count == 0 || records.empty()) return {};
    for (ShardBatch& b : shards_) b.records.clear();
    RecordReader reader(records);
    EventView e;
    while (reader.next(e)) shards_[shard_of(e, shards_.size())].records.push_back(reader.last_record());
    const Status st = write_shards();
    if (!st.ok()) {
      report_.clear();
      uncertain_ = true;  // the retry reads back what this attempt may have stored
      return st;
    }
    uncertain_ = false;
    return {};
  }

  const WriteReport& last_write() const override { return report_; }
  std::string_view rejection_reason() const override { return rejection_.load(std::memory_order_relaxed); }
  std::size_t refused_row() const override { return refused_row_; }

  Result<unsigned> lease_instance(std::string_view holder, int wanted, std::int64_t ttl_ms) override {
    std::lock_guard lock(control_mu_);
    ClickhouseHttp& h = *control_[0];
    std::string out;
    for (int round = 0; round < kLeaseRounds; ++round) {
      std::vector<LeaseRow> rows;
      std::vector<std::uint64_t> versions;
      std::int64_t now_ms = 0;
      if (Status st = read_leases(h, rows, versions, now_ms); !st.ok()) return st;
      Result<unsigned> chosen = choose_instance(rows, holder, wanted, now_ms, ttl_ms);
      if (!chosen.ok()) return chosen;
      // Overtaken before: the others that lost are likely to choose alike, so
      // take a number never leased at random instead of the lowest.
      if (round > 0 && wanted < 0) {
        std::vector<unsigned> free;
        std::vector<bool> used(kLeasableInstances);
        for (const LeaseRow& r : rows) used[r.instance % kLeasableInstances] = true;
        for (unsigned i = 0; i < kLeasableInstances; ++i)
          if (!used[i]) free.push_back(i);
        if (!free.empty()) chosen = free[random_below(static_cast<std::int64_t>(free.size()))];
      }
      std::uint64_t version = static_cast<std::uint64_t>(now_ms) * 1024 + random_below(1024);
      bool ours_and_live = false;
      for (std::size_t i = 0; i < rows.size(); ++i) {
        if (rows[i].instance != *chosen) continue;
        version = std::max(version, versions[i] + 1);
        ours_and_live =
            rows[i].holder == holder && rows[i].renewed_at_ms > 0 && now_ms - rows[i].renewed_at_ms < ttl_ms;
      }
      if (Status st = write_lease(h, *chosen, holder, now_ms, version); !st.ok()) return st;
      // A renewal of a live lease of ours: nobody else may claim it now.
      if (ours_and_live) return *chosen;
      std::this_thread::sleep_for(std::chrono::milliseconds(kLeaseSettleMs + random_below(kLeaseSettleMs)));
      std::string q = "SELECT holder FROM `" + std::string(kInstancesTable) + "` FINAL WHERE tbl = ";
      append_literal(q, options_.table);
      q += " AND instance = " + std::to_string(*chosen) + " FORMAT RowBinary";
      if (Status st = h.query(q, out, "lease: read back"); !st.ok()) return st;
      RowBinaryReader r(out);
      std::string_view winner;
      if (r.string(winner) && winner == holder) return *chosen;
      if (wanted >= 0)
        return Status::full("instance " + std::to_string(wanted) + " was claimed by another instance at the same time");
    }
    return Status::transient("clickhouse: lease: every claim was overtaken by another instance's; retrying later");
  }

  Status release_instance(unsigned instance, std::string_view holder) override {
    std::lock_guard lock(control_mu_);
    ClickhouseHttp& h = *control_[0];
    std::vector<LeaseRow> rows;
    std::vector<std::uint64_t> versions;
    std::int64_t now_ms = 0;
    if (Status st = read_leases(h, rows, versions, now_ms); !st.ok()) return st;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].instance == instance && rows[i].holder == holder)
        return write_lease(h, instance, holder, 0,
                           std::max(versions[i] + 1, static_cast<std::uint64_t>(now_ms) * 1024));
    }
    return {};
  }

  Result<std::uint64_t> max_id() override {
    std::lock_guard lock(control_mu_);
    const std::string q = "SELECT max(id) FROM `" + options_.table + "` FORMAT RowBinary";
    std::uint64_t best = 0;
    std::string out;
    for (auto& h : control_) {
      if (Status st = h->query(q, out, "max id"); !st.ok()) return st;
      RowBinaryReader r(out);
      std::uint64_t v = 0;
      if (!r.u64(v)) return Status::transient("clickhouse " + h->name() + ": max id: unexpected answer");
      best = std::max(best, v);
    }
    return best;
  }

  Status ping() override {
    std::lock_guard lock(ping_mu_);
    for (auto& h : pingers_)
      if (Status st = h->ping(kPingTimeoutMs); !st.ok()) return st;
    return {};
  }

  PoolStats stats() const override {
    PoolStats s;
    s.max_open = s.open = s.idle = static_cast<std::int64_t>(writers_.size());
    return s;
  }

  std::string_view kind() const override { return "clickhouse"; }

 private:
  // Per shard, in phases that run on every shard at once (ClickhouseParallel):
  // ask a shard for its largest id (once), read what the shards hold under the batch's ids and client ids, account
  // for each record, store the client ids, then the events (client ids first,
  // so that a crash between the two leaves a client id that points at its own
  // event, which the replay then stores). The first failure is returned once
  // its phase has ended on every shard.
  Status write_shards() {
    requests_.clear();
    for (std::size_t s = 0; s < shards_.size(); ++s) {
      if (shards_[s].records.empty() || floor_[s] != kUnknownFloor) continue;
      shards_[s].query = "SELECT max(id) FROM `" + options_.table + "` FORMAT RowBinary";
      writers_[s]->prepare_query(shards_[s].query, shards_[s].found_body, "max id");
      requests_.push_back(writers_[s].get());
    }
    if (Status st = run_requests(); !st.ok()) return st;
    for (std::size_t s = 0; s < shards_.size(); ++s) {
      if (shards_[s].records.empty() || floor_[s] != kUnknownFloor) continue;
      RowBinaryReader r(shards_[s].found_body);
      if (!r.u64(floor_[s])) {
        floor_[s] = kUnknownFloor;
        return Status::transient("clickhouse " + writers_[s]->name() + ": max id: unexpected answer");
      }
    }
    requests_.clear();
    for (std::size_t s = 0; s < shards_.size(); ++s) {
      if (shards_[s].records.empty()) continue;
      build_read(s);
      if (!shards_[s].query.empty()) {
        writers_[s]->prepare_query(shards_[s].query, shards_[s].found_body, "read existing rows");
        requests_.push_back(writers_[s].get());
      }
    }
    if (Status st = run_requests(); !st.ok()) return st;
    for (std::size_t s = 0; s < shards_.size(); ++s) {
      if (shards_[s].records.empty()) continue;
      if (Status st = parse_read(s); !st.ok()) return st;
      classify(s);
    }
    for (const bool events : {false, true}) {
      requests_.clear();
      for (std::size_t s = 0; s < shards_.size(); ++s) {
        const std::string& rows = events ? shards_[s].events_body : shards_[s].clients_body;
        if (shards_[s].records.empty() || rows.empty()) continue;
        writers_[s]->prepare_insert(events ? insert_events_ : insert_clients_, rows,
                                    events ? "insert" : "insert client ids");
        requests_.push_back(writers_[s].get());
      }
      if (Status st = run_requests(); !st.ok()) return st;
    }
    for (std::size_t s = 0; s < shards_.size(); ++s) {
      ShardBatch& b = shards_[s];
      if (b.records.empty()) continue;
      if (b.stored > 0 && floor_[s] != kUnknownFloor) floor_[s] = std::max(floor_[s], b.highest);
      report_.stored += b.stored;
      report_.replayed += b.replayed;
      report_.client_duplicates += b.duplicates;
      report_.conflicts += b.conflicts;
      report_.conflict_records.append(b.conflict_records);
    }
    return {};
  }

  // Performs requests_ at once; the first failure, in shard order.
  Status run_requests() {
    if (requests_.empty()) return {};
    parallel_.run(requests_, results_);
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      if (results_[i].ok()) continue;
      if (results_[i].kind() == ErrorKind::invalid) rejection_.store(requests_[i]->last_failure().reason.data());
      return results_[i];
    }
    return {};
  }

  // The SELECT for shard `s` (empty when nothing needs reading). The ids need
  // reading only when some may be there: after a failed write (it may have
  // stored them), or when they are not all above the largest id the shard
  // held when first asked plus what this sink stored since. Ids above it are
  // this instance's new ones (the lease keeps others' apart), so they cannot
  // be stored yet. Rows of the answer: (kind UInt8, then the events table's
  // columns): 0 for an event under one of the ids, 1 for a client id already
  // taken (its event id in `id`, the client id in `client_id`).
  void build_read(std::size_t s) {
    ShardBatch& b = shards_[s];
    const std::string& t = options_.table;
    EventView e;
    b.lowest = kUnknownFloor;
    b.highest = 0;
    bool any_client = false;
    for (const std::string_view record : b.records) {
      RecordReader one(record);
      one.next(e);
      b.lowest = std::min(b.lowest, e.id);
      b.highest = std::max(b.highest, e.id);
      any_client = any_client || !e.client_id.empty();
    }
    const bool read_ids = uncertain_ || b.lowest <= floor_[s];
    std::string& q = b.query;
    q.clear();
    if (read_ids) {
      q.append("SELECT toUInt8(0), id, received_at, at, name, value, client_id FROM `")
          .append(t)
          .append("` WHERE id >= ");
      append_number(q, b.lowest);
      q.append(" AND id <= ");
      append_number(q, b.highest);
      q.append(" AND id IN (");
      bool first = true;
      for (const std::string_view record : b.records) {
        RecordReader one(record);
        one.next(e);
        if (!first) q += ',';
        first = false;
        append_number(q, e.id);
      }
      q += ')';
    }
    if (any_client) {
      if (read_ids) q += " UNION ALL ";
      q.append("SELECT toUInt8(1), id, toInt64(0), toInt64(0), '', toInt64(0), toNullable(client_id) FROM `")
          .append(t)
          .append("_client_ids` WHERE client_id IN (");
      bool first = true;
      for (const std::string_view record : b.records) {
        RecordReader one(record);
        one.next(e);
        if (e.client_id.empty()) continue;
        if (!first) q += ',';
        first = false;
        append_literal(q, e.client_id);
      }
      q += ')';
    }
    if (!q.empty()) q += " FORMAT RowBinary";
  }

  Status parse_read(std::size_t s) {
    ShardBatch& b = shards_[s];
    b.found.clear();
    b.found_clients.clear();
    if (b.query.empty()) return {};
    RowBinaryReader rows(b.found_body);
    while (!rows.done()) {
      std::uint8_t kind = 0;
      EventView f;
      bool null = false;
      if (!rows.u8(kind) || !read_event_row(rows, f, null))
        return Status::transient("clickhouse " + writers_[s]->name() + ": unreadable rows");
      if (kind == 0) b.found.push_back(f);
      else b.found_clients.push_back({f.client_id, f.id});
    }
    std::sort(b.found.begin(), b.found.end(), [](const EventView& x, const EventView& y) { return x.id < y.id; });
    std::sort(b.found_clients.begin(), b.found_clients.end(),
              [](const ClientRow& x, const ClientRow& y) { return x.client_id < y.client_id; });
    return {};
  }

  // Accounts for each record of shard `s`; builds the rows to store.
  void classify(std::size_t s) {
    ShardBatch& b = shards_[s];
    EventView e;
    b.events_body.clear();
    b.clients_body.clear();
    b.conflict_records.clear();
    b.stored = b.replayed = b.duplicates = b.conflicts = 0;
    seen_clients_.reset(b.records.size());
    for (const std::string_view record : b.records) {
      RecordReader one(record);
      one.next(e);
      auto it = std::lower_bound(b.found.begin(), b.found.end(), e.id,
                                 [](const EventView& a, std::uint64_t id) { return a.id < id; });
      if (it != b.found.end() && it->id == e.id) {
        bool same = false;
        for (; it != b.found.end() && it->id == e.id; ++it) same = same || same_event(*it, e);
        if (same) {
          ++b.replayed;
          if (!e.client_id.empty()) seen_clients_.insert(e.client_id);
        } else {
          ++b.conflicts;
          b.conflict_records.append(record);
        }
        continue;
      }
      if (!e.client_id.empty()) {
        if (seen_clients_.contains(e.client_id)) {
          ++b.duplicates;
          continue;
        }
        auto c = std::lower_bound(b.found_clients.begin(), b.found_clients.end(), e.client_id,
                                  [](const ClientRow& a, std::string_view id) { return a.client_id < id; });
        bool other = false, own = false;
        for (; c != b.found_clients.end() && c->client_id == e.client_id; ++c) (c->id == e.id ? own : other) = true;
        if (other && !own) {
          ++b.duplicates;
          continue;
        }
        seen_clients_.insert(e.client_id);
        if (!own) append_client_row(b.clients_body, e.client_id, e.id);
      }
      append_event_row(b.events_body, e);
      ++b.stored;
    }
  }

  Status read_leases(ClickhouseHttp& h, std::vector<LeaseRow>& rows, std::vector<std::uint64_t>& versions,
                     std::int64_t& now_ms) {
    std::string out;
    if (Status st = h.query("SELECT toInt64(toUInt32(now())) * 1000 FORMAT TabSeparated", out, "lease: clock");
        !st.ok())
      return st;
    if (!parse_i64(out, now_ms)) return Status::transient("clickhouse " + h.name() + ": lease: unexpected clock");
    std::string q = "SELECT toUInt64(instance), holder, renewed_at, version FROM `" + std::string(kInstancesTable) +
                    "` FINAL WHERE tbl = ";
    append_literal(q, options_.table);
    q += " FORMAT RowBinary";
    if (Status st = h.query(q, out, "lease: read"); !st.ok()) return st;
    RowBinaryReader r(out);
    while (!r.done()) {
      std::uint64_t instance = 0, version = 0;
      std::string_view holder;
      std::int64_t renewed = 0;
      if (!r.u64(instance) || !r.string(holder) || !r.i64(renewed) || !r.u64(version))
        return Status::transient("clickhouse " + h.name() + ": lease: unreadable rows");
      rows.push_back({static_cast<unsigned>(instance), std::string(holder), renewed});
      versions.push_back(version);
    }
    return {};
  }

  Status write_lease(ClickhouseHttp& h, unsigned instance, std::string_view holder, std::int64_t renewed_at,
                     std::uint64_t version) {
    std::string q =
        "INSERT INTO `" + std::string(kInstancesTable) + "` (tbl, instance, holder, renewed_at, version) VALUES (";
    append_literal(q, options_.table);
    q += ", " + std::to_string(instance) + ", ";
    append_literal(q, holder);
    q += ", " + std::to_string(renewed_at) + ", " + std::to_string(version) + ")";
    std::string out;
    return h.query(q, out, "lease: write");
  }

  std::uint64_t random_below(std::int64_t n) {
    return std::uniform_int_distribution<std::uint64_t>(0, static_cast<std::uint64_t>(n) - 1)(random_);
  }

  const ClickhouseUrl url_;
  const SinkOptions options_;
  std::string insert_events_;
  std::string insert_clients_;

  // One shard's part of a batch; every buffer reused from batch to batch.
  struct ShardBatch {
    std::vector<std::string_view> records;  // views into the batch passed to write()
    std::string query;                      // what is there already (empty: nothing to read)
    std::string found_body;                 // its answer
    std::vector<EventView> found;           // rows under the batch's ids (viewing found_body), by id
    std::vector<ClientRow> found_clients;   // client ids already taken, by client id
    std::string clients_body, events_body;  // RowBinary rows to insert
    std::string conflict_records;
    std::uint64_t lowest = 0, highest = 0;  // the ids of `records`
    std::size_t stored = 0, replayed = 0, duplicates = 0, conflicts = 0;
  };

  // The writer thread's: one connection per shard and the batch's buffers, reused.
  std::vector<std::unique_ptr<ClickhouseHttp>> writers_;
  std::vector<ShardBatch> shards_;
  ClickhouseParallel parallel_;
  std::vector<ClickhouseHttp*> requests_;
  std::vector<Status> results_;
  static constexpr std::uint64_t kUnknownFloor = ~std::uint64_t{0};
  std::vector<std::uint64_t> floor_;  // per shard: every id above it is new (kUnknownFloor: ask)
  bool uncertain_ = true;             // the last write failed: read the ids back
  ClientIdSet seen_clients_;
  WriteReport report_;
  std::size_t refused_row_ = kNoRow;
  std::atomic<const char*> rejection_{"other"};

  std::mutex control_mu_;  // open, leases, max id
  std::vector<std::unique_ptr<ClickhouseHttp>> control_;
  std::mt19937_64 random_{std::random_device{}()};
  std::mutex ping_mu_;
  std::vector<std::unique_ptr<ClickhouseHttp>> pingers_;
};

}  // namespace

Result<std::unique_ptr<Sink>> make_clickhouse_sink(std::string_view url, const SinkOptions& options) {
  Result<ClickhouseUrl> parsed = parse_clickhouse_url(url);
  if (!parsed.ok()) return parsed.status();
  if (Status s = validate_table_name(options.table); !s.ok()) return s;
  if (options.connect_timeout_ms <= 0) return Status::invalid("clickhouse: connect timeout must be positive");
  return std::unique_ptr<Sink>(std::make_unique<ClickhouseSink>(std::move(*parsed), options));
}

}  // namespace kiroku
