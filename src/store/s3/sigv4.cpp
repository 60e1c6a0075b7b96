// sigv4.cpp - AWS Signature Version 4 signing (see sigv4.h).
#include "store/s3/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <ctime>

namespace kiroku::s3 {

namespace {

constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";
constexpr char kHexLower[] = "0123456789abcdef";
constexpr char kHexUpper[] = "0123456789ABCDEF";

bool is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

void append_hex(const unsigned char* data, std::size_t size, std::string& out) {
  for (std::size_t i = 0; i < size; ++i) {
    out.push_back(kHexLower[data[i] >> 4]);
    out.push_back(kHexLower[data[i] & 0xf]);
  }
}

void sha256(const void* data, std::size_t size, unsigned char out[32]) {
  unsigned int len = 0;
  EVP_Digest(data, size, out, &len, EVP_sha256(), nullptr);
}

void hmac_sha256(const unsigned char* key, std::size_t key_size, std::string_view data, unsigned char out[32]) {
  unsigned int len = 0;
  HMAC(EVP_sha256(), key, static_cast<int>(key_size), reinterpret_cast<const unsigned char*>(data.data()), data.size(),
       out, &len);
}

// Appends the value with leading/trailing whitespace removed and every inner
// run of whitespace turned into one space (AWS's "Trimall").
void append_trimmed(std::string_view value, std::string& out) {
  std::size_t begin = 0;
  std::size_t end = value.size();
  while (begin < end && is_space(value[begin])) ++begin;
  while (end > begin && is_space(value[end - 1])) --end;
  bool in_space = false;
  for (std::size_t i = begin; i < end; ++i) {
    if (is_space(value[i])) {
      if (!in_space) out.push_back(' ');
      in_space = true;
    } else {
      out.push_back(value[i]);
      in_space = false;
    }
  }
}

std::string_view slice(const std::string& text, std::uint32_t offset, std::uint32_t size) {
  return std::string_view(text).substr(offset, size);
}

}  // namespace

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

void uri_encode(std::string_view in, bool keep_slash, std::string& out) {
  for (char ch : in) {
    auto c = static_cast<unsigned char>(ch);
    if (is_unreserved(c) || (keep_slash && c == '/')) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHexUpper[c >> 4]);
      out.push_back(kHexUpper[c & 0xf]);
    }
  }
}

std::string normalize_path(std::string_view path) {
  std::vector<std::string_view> segments;
  std::size_t pos = 0;
  while (pos <= path.size()) {
    std::size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view segment = path.substr(pos, slash - pos);
    if (segment == "..") {
      if (!segments.empty()) segments.pop_back();
    } else if (!segment.empty() && segment != ".") {
      segments.push_back(segment);
    }
    pos = slash + 1;
  }
  std::string out = "/";
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (i > 0) out.push_back('/');
    out.append(segments[i]);
  }
  if (!segments.empty() && !path.empty() && path.back() == '/') out.push_back('/');
  return out;
}

std::string sha256_hex(std::span<const std::byte> data) {
  unsigned char digest[32];
  sha256(data.data(), data.size(), digest);
  std::string out;
  out.reserve(64);
  append_hex(digest, sizeof digest, out);
  return out;
}

std::string sha256_hex(std::string_view data) {
  return sha256_hex(std::as_bytes(std::span<const char>(data.data(), data.size())));
}

std::string format_amz_date(std::int64_t unix_time) {
  std::time_t t = static_cast<std::time_t>(unix_time);
  std::tm tm{};
  if (unix_time < 0 || gmtime_r(&t, &tm) == nullptr || tm.tm_year + 1900 > 9999) return {};
  char buf[32];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return std::string(buf, n);
}

// ---------------------------------------------------------------------------
// Signer
// ---------------------------------------------------------------------------

Signer::Signer(Credentials credentials) : credentials_(std::move(credentials)) {}

Status Signer::check(const SigningRequest& request, const SigningParams& params) const {
  if (credentials_.access_key_id.empty() || credentials_.secret_access_key.empty()) {
    return Status::invalid("sigv4: no access key id or secret access key");
  }
  if (request.method.empty()) return Status::invalid("sigv4: no method");
  if (request.payload_hash.empty()) return Status::invalid("sigv4: no payload hash");
  if (params.region.empty() || params.service.empty()) {
    return Status::invalid("sigv4: no region or service");
  }
  bool has_host = std::any_of(request.headers.begin(), request.headers.end(), [](const HttpField& h) {
    if (h.name.size() != 4) return false;
    for (std::size_t i = 0; i < 4; ++i) {
      if (to_lower(h.name[i]) != "host"[i]) return false;
    }
    return true;
  });
  if (!has_host) return Status::invalid("sigv4: the request has no Host header");
  return Status();
}

const std::array<unsigned char, 32>& Signer::signing_key(std::string_view date, const SigningParams& params) {
  scratch_.clear();
  scratch_.append(date).append("/").append(params.region).append("/").append(params.service);
  if (scratch_ == key_scope_) return key_;

  std::string secret = "AWS4";
  secret += credentials_.secret_access_key;
  unsigned char k_date[32], k_region[32], k_service[32];
  hmac_sha256(reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), date, k_date);
  hmac_sha256(k_date, 32, params.region, k_region);
  hmac_sha256(k_region, 32, params.service, k_service);
  hmac_sha256(k_service, 32, "aws4_request", key_.data());
  key_scope_ = scratch_;
  return key_;
}

void Signer::build_canonical_request(const SigningRequest& request, const SigningParams& params,
                                     std::span<const QueryParam> extra_query, std::string& out) {
  out.clear();
  out.append(request.method).push_back('\n');

  // Canonical URI.
  if (params.path_mode == PathMode::normalized) {
    uri_encode(normalize_path(request.path), /*keep_slash=*/true, out);
  } else if (request.path.empty()) {
    out.push_back('/');
  } else {
    uri_encode(request.path, /*keep_slash=*/true, out);
  }
  out.push_back('\n');

  // Canonical query: every name and value encoded, sorted by name then value.
  param_text_.clear();
  param_entries_.clear();
  auto add_param = [this](const QueryParam& p) {
    TextEntry e{};
    e.name_offset = static_cast<std::uint32_t>(param_text_.size());
    uri_encode(p.name, /*keep_slash=*/false, param_text_);
    e.name_size = static_cast<std::uint32_t>(param_text_.size() - e.name_offset);
    e.value_offset = static_cast<std::uint32_t>(param_text_.size());
    uri_encode(p.value, /*keep_slash=*/false, param_text_);
    e.value_size = static_cast<std::uint32_t>(param_text_.size() - e.value_offset);
    param_entries_.push_back(e);
  };
  for (const QueryParam& p : request.query) add_param(p);
  for (const QueryParam& p : extra_query) add_param(p);
  std::sort(param_entries_.begin(), param_entries_.end(), [this](const TextEntry& a, const TextEntry& b) {
    auto an = slice(param_text_, a.name_offset, a.name_size);
    auto bn = slice(param_text_, b.name_offset, b.name_size);
    if (an != bn) return an < bn;
    return slice(param_text_, a.value_offset, a.value_size) < slice(param_text_, b.value_offset, b.value_size);
  });
  for (std::size_t i = 0; i < param_entries_.size(); ++i) {
    const TextEntry& e = param_entries_[i];
    if (i > 0) out.push_back('&');
    out.append(slice(param_text_, e.name_offset, e.name_size));
    out.push_back('=');
    out.append(slice(param_text_, e.value_offset, e.value_size));
  }
  out.push_back('\n');

  // Canonical headers, from the entries collect_headers() sorted: one line
  // per name, the values of a repeated name joined with ',' in request order.
  for (std::size_t i = 0; i < header_entries_.size();) {
    const TextEntry& first = header_entries_[i];
    std::string_view name = slice(header_text_, first.name_offset, first.name_size);
    out.append(name).push_back(':');
    std::size_t j = i;
    for (; j < header_entries_.size() &&
           slice(header_text_, header_entries_[j].name_offset, header_entries_[j].name_size) == name;
         ++j) {
      if (j > i) out.push_back(',');
      out.append(slice(header_text_, header_entries_[j].value_offset, header_entries_[j].value_size));
    }
    out.push_back('\n');
    i = j;
  }
  out.push_back('\n');
  out.append(signed_headers_).push_back('\n');
  out.append(request.payload_hash);
}

void Signer::build_string_to_sign(std::string_view amz_date, std::string_view scope, std::string_view canonical_request,
                                  std::string& out) const {
  unsigned char digest[32];
  sha256(canonical_request.data(), canonical_request.size(), digest);
  out.clear();
  out.append(kAlgorithm).push_back('\n');
  out.append(amz_date).push_back('\n');
  out.append(scope).push_back('\n');
  append_hex(digest, sizeof digest, out);
}

namespace {

// Collects lowercase names and trimmed values of both header lists into
// `text`, sorted (stably) by name, and the "a;b;c" signed-header list.
template <typename Entry>
void collect_headers(std::span<const HttpField> a, std::span<const HttpField> b, std::string& text,
                     std::vector<Entry>& entries, std::string& signed_headers) {
  text.clear();
  entries.clear();
  auto add = [&](const HttpField& h) {
    Entry e{};
    e.name_offset = static_cast<std::uint32_t>(text.size());
    for (char c : h.name) text.push_back(to_lower(c));
    e.name_size = static_cast<std::uint32_t>(text.size() - e.name_offset);
    e.value_offset = static_cast<std::uint32_t>(text.size());
    append_trimmed(h.value, text);
    e.value_size = static_cast<std::uint32_t>(text.size() - e.value_offset);
    entries.push_back(e);
  };
  for (const HttpField& h : a) add(h);
  for (const HttpField& h : b) add(h);
  std::stable_sort(entries.begin(), entries.end(), [&](const Entry& x, const Entry& y) {
    return slice(text, x.name_offset, x.name_size) < slice(text, y.name_offset, y.name_size);
  });
  signed_headers.clear();
  std::string_view previous;
  for (const Entry& e : entries) {
    std::string_view name = slice(text, e.name_offset, e.name_size);
    if (!signed_headers.empty() && name == previous) continue;
    if (!signed_headers.empty()) signed_headers.push_back(';');
    signed_headers.append(name);
    previous = name;
  }
}

}  // namespace

Status Signer::sign_headers(const SigningRequest& request, const SigningParams& params, SignedHeaders& out) {
  if (Status s = check(request, params); !s) return s;
  out.amz_date = format_amz_date(params.unix_time);
  if (out.amz_date.empty()) return Status::invalid("sigv4: signing time out of range");
  std::string_view date = std::string_view(out.amz_date).substr(0, 8);

  HttpField extra[3];
  std::size_t n_extra = 0;
  extra[n_extra++] = {"x-amz-date", out.amz_date};
  if (params.content_sha256_header) extra[n_extra++] = {"x-amz-content-sha256", request.payload_hash};
  if (!credentials_.session_token.empty() && params.sign_session_token) {
    extra[n_extra++] = {"x-amz-security-token", credentials_.session_token};
  }
  collect_headers(request.headers, std::span<const HttpField>(extra, n_extra), header_text_, header_entries_,
                  signed_headers_);
  build_canonical_request(request, params, {}, out.canonical_request);

  scope_.clear();
  scope_.append(date).append("/").append(params.region).append("/").append(params.service);
  scope_.append("/aws4_request");
  build_string_to_sign(out.amz_date, scope_, out.canonical_request, out.string_to_sign);

  const auto& key = signing_key(date, params);
  unsigned char mac[32];
  hmac_sha256(key.data(), key.size(), out.string_to_sign, mac);
  out.signature.clear();
  append_hex(mac, sizeof mac, out.signature);

  out.authorization.clear();
  out.authorization.append(kAlgorithm).append(" Credential=").append(credentials_.access_key_id);
  out.authorization.append("/").append(scope_);
  out.authorization.append(", SignedHeaders=").append(signed_headers_);
  out.authorization.append(", Signature=").append(out.signature);
  return Status();
}

Status Signer::presign(const SigningRequest& request, const SigningParams& params, PresignedQuery& out) {
  if (Status s = check(request, params); !s) return s;
  if (params.expires.count() <= 0) return Status::invalid("sigv4: presign expiry must be positive");
  out.amz_date = format_amz_date(params.unix_time);
  if (out.amz_date.empty()) return Status::invalid("sigv4: signing time out of range");
  std::string_view date = std::string_view(out.amz_date).substr(0, 8);

  collect_headers(request.headers, {}, header_text_, header_entries_, signed_headers_);

  scope_.clear();
  scope_.append(date).append("/").append(params.region).append("/").append(params.service);
  scope_.append("/aws4_request");
  std::string credential = credentials_.access_key_id + "/" + scope_;
  std::string expires = std::to_string(params.expires.count());

  QueryParam extra[6];
  std::size_t n_extra = 0;
  extra[n_extra++] = {"X-Amz-Algorithm", kAlgorithm};
  extra[n_extra++] = {"X-Amz-Credential", credential};
  extra[n_extra++] = {"X-Amz-Date", out.amz_date};
  extra[n_extra++] = {"X-Amz-Expires", expires};
  bool token = !credentials_.session_token.empty();
  if (token && params.sign_session_token) {
    extra[n_extra++] = {"X-Amz-Security-Token", credentials_.session_token};
  }
  extra[n_extra++] = {"X-Amz-SignedHeaders", signed_headers_};
  build_canonical_request(request, params, std::span<const QueryParam>(extra, n_extra), out.canonical_request);
  build_string_to_sign(out.amz_date, scope_, out.canonical_request, out.string_to_sign);

  const auto& key = signing_key(date, params);
  unsigned char mac[32];
  hmac_sha256(key.data(), key.size(), out.string_to_sign, mac);
  out.signature.clear();
  append_hex(mac, sizeof mac, out.signature);

  // The canonical query (third line of the canonical request) is the query to send.
  std::string_view cr = out.canonical_request;
  std::size_t first = cr.find('\n');
  std::size_t second = cr.find('\n', first + 1);
  std::size_t third = cr.find('\n', second + 1);
  out.query.assign(cr.substr(second + 1, third - second - 1));
  if (token && !params.sign_session_token) {
    out.query.append("&X-Amz-Security-Token=");
    uri_encode(credentials_.session_token, false, out.query);
  }
  out.query.append("&X-Amz-Signature=").append(out.signature);
  return Status();
}

}  // namespace kiroku::s3
