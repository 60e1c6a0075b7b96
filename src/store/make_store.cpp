// make_store.cpp - the ObjectStore for a --store URL, store options, byte ranges.
#include <charconv>
#include <string>

#include "common/percent.h"
#include "common/redact.h"
#include "store/file/file_store.h"
#include "store/object_store.h"
#include "store/s3/credentials.h"
#include "store/s3/s3_store.h"

namespace kiroku {
namespace {

// An S3 URL parameter that must be a whole number in [lo, hi].
Status parse_s3_int(std::string_view name, const std::string& value, long long lo, long long hi, long long& out) {
  long long v = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size() || v < lo || v > hi)
    return Status::invalid("--store: S3 URL parameter " + std::string(name) + " must be an integer from " +
                           std::to_string(lo) + " to " + std::to_string(hi) + ", got '" + value + "'");
  out = v;
  return {};
}

}  // namespace

Status no_buffer_status(const StoreOptions& o) {
  return Status::transient("all " + std::to_string(o.part_count) + " transfer buffers stayed busy for " +
                           std::to_string(o.first_buffer_wait.count()) + " ms; retry later");
}

Status validate_store_options(const StoreOptions& o) {
  if (o.part_size < 64 * 1024 || o.part_size > (std::size_t{1} << 30))
    return Status::invalid("store part size must be 64 KiB..1 GiB");
  if (o.part_count < 2 || o.part_count > 4096) return Status::invalid("store part count must be 2..4096");
  if (o.parts_per_transfer < 2 || o.parts_per_transfer > o.part_count)
    return Status::invalid("store parts per transfer must be 2..part count");
  if (o.hash_prefix_chars < 0 || o.hash_prefix_chars > 4)
    return Status::invalid("store hash prefix must be 0..4 hex characters");
  if (o.threads < 1 || o.threads > 256) return Status::invalid("store threads must be 1..256");
  if (o.first_buffer_wait.count() < 0) return Status::invalid("store first buffer wait must not be negative");
  return {};
}

std::optional<ResolvedRange> resolve_range(const std::optional<ByteRange>& range, std::uint64_t size) {
  if (!range) return ResolvedRange{0, size};
  if (size == 0) return std::nullopt;
  if (range->suffix > 0) {
    std::uint64_t n = std::min(range->suffix, size);
    return ResolvedRange{size - n, n};
  }
  if (range->first >= size) return std::nullopt;
  std::uint64_t last = range->last ? std::min(*range->last, size - 1) : size - 1;
  if (last < range->first) return std::nullopt;
  return ResolvedRange{range->first, last - range->first + 1};
}

Result<std::unique_ptr<ObjectStore>> make_store(std::string_view url, const StoreOptions& options) {
  if (Status s = validate_store_options(options); !s) return Status::invalid("--store: " + s.message());
  if (url.starts_with("file://")) {
    std::string_view rest = url.substr(7);
    // file:///abs/dir, or file://./rel/dir relative to the working directory
    // (the default, ./kiroku-data/objects).
    if (!rest.starts_with("/") && !rest.starts_with("./") && !rest.starts_with("../"))
      return Status::invalid("--store: a file URL needs a path: file:///abs/dir or file://./relative/dir");
    auto path = percent_decode(rest);
    if (!path) return Status::invalid("--store: bad percent-encoding in the file URL");
    auto store = FileStore::open(*path, options);
    if (!store.ok()) return Status::invalid("--store: " + store.status().message());
    return std::unique_ptr<ObjectStore>(std::move(*store));
  }
  if (url.starts_with("s3://")) {
    std::string_view rest = url.substr(5);
    std::string_view query;
    if (auto q = rest.find('?'); q != std::string_view::npos) {
      query = rest.substr(q + 1);
      rest = rest.substr(0, q);
    }
    if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
    if (rest.empty() || rest.find('/') != std::string_view::npos)
      return Status::invalid("--store: an S3 URL is s3://bucket?endpoint=...&region=...");
    s3::S3Config config;
    S3StoreOptions s3_options;
    config.bucket = std::string(rest);
    bool url_region = false;
    for (QueryPair p; next_query_pair(query, p);) {
      const std::string_view name = p.name;
      auto value = percent_decode(p.value);
      if (!value) return Status::invalid("--store: bad percent-encoding in " + std::string(name));
      if (name == "endpoint") {
        config.endpoint = *value;
      } else if (name == "region") {
        config.region = *value;
        url_region = true;
      } else if (name == "path_style") {
        config.path_style = *value != "false" && *value != "0";
      } else if (name == "connect_timeout_ms" || name == "stall_timeout_ms") {
        long long ms = 0;
        if (Status s = parse_s3_int(name, *value, 1, 3'600'000, ms); !s) return s;
        (name == "connect_timeout_ms" ? config.connect_timeout : config.stall_timeout) = std::chrono::milliseconds(ms);
      } else if (name == "max_attempts") {
        long long n = 0;
        if (Status s = parse_s3_int(name, *value, 1, 100, n); !s) return s;
        config.max_attempts = static_cast<int>(n);
      } else if (name == "stream_put_max" || name == "stream_get_max") {
        const bool put = name == "stream_put_max";
        const auto max = put ? S3StoreOptions::kMaxStreamPut : S3StoreOptions::kMaxObject;
        long long n = 0;
        if (Status s = parse_s3_int(name, *value, 0, static_cast<long long>(max), n); !s) return s;
        (put ? s3_options.stream_put_max : s3_options.stream_get_max) = static_cast<std::uint64_t>(n);
      } else {
        return Status::invalid("--store: unknown S3 URL parameter '" + std::string(name) + "'");
      }
    }
    if (config.endpoint.empty()) config.path_style = false;
    const s3::EnvLookup env = s3::process_environment();
    if (!url_region) {
      if (std::string region = s3::default_region(env); !region.empty()) config.region = std::move(region);
    }
    auto credentials = s3::CredentialsProvider::resolve(s3::default_chain(env));
    if (!credentials.ok()) return Status::invalid("--store: " + credentials.status().message());
    config.credentials_provider = std::move(*credentials);
    auto store = S3Store::create(std::move(config), options, s3_options);
    if (!store.ok()) return Status::invalid("--store: " + store.status().message());
    return std::unique_ptr<ObjectStore>(std::move(*store));
  }
  return Status::invalid("--store: unknown scheme in '" + redact_url(url) +
                         "' (file:///dir or s3://bucket?endpoint=...)");
}

}  // namespace kiroku
