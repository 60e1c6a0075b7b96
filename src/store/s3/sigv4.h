// sigv4.h - AWS Signature Version 4: canonical requests, signing keys, the
// Authorization header and presigned (query-string) requests.
//
// The signer builds every intermediate string into buffers it or the caller
// keeps, so signing in steady state reuses capacity instead of allocating.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kiroku::s3 {

// The secret parts of an AWS identity. session_token is empty for long-term keys.
struct Credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;
};

// One request header as the caller will send it (any case, untrimmed value).
struct HttpField {
  std::string_view name;
  std::string_view value;
};

// One query parameter, decoded (the signer encodes it).
struct QueryParam {
  std::string_view name;
  std::string_view value;
};

// How the request path turns into the canonical URI.
enum class PathMode {
  // S3: `path` is the decoded resource path ("/bucket/my key"); it is not
  // normalized ("//" and "." stay) and is percent-encoded once. Send the same
  // encoding on the wire (uri_encode_path).
  s3,
  // Other services: `path` is the path as sent on the wire; "." and ".."
  // segments and repeated slashes are removed, then it is encoded again
  // (AWS's double encoding of the already-encoded wire path).
  normalized,
};

inline constexpr std::string_view kUnsignedPayload = "UNSIGNED-PAYLOAD";
// Hex SHA-256 of the empty string: the payload hash of a request with no body.
inline constexpr std::string_view kEmptyPayloadHash =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

struct SigningParams {
  std::string_view region;     // "us-east-1"
  std::string_view service;    // "s3"
  std::int64_t unix_time = 0;  // signing time, seconds since the epoch (UTC)
  PathMode path_mode = PathMode::s3;
  // Header signing only: add and sign x-amz-content-sha256 (S3 requires it).
  bool content_sha256_header = true;
  // false: a session token is sent but left out of the signature (some STS
  // flows). With no session token this has no effect.
  bool sign_session_token = true;
  std::chrono::seconds expires{3600};  // presign only: X-Amz-Expires
};

struct SigningRequest {
  std::string_view method;  // "GET", "PUT", ...
  std::string_view path;    // see PathMode; empty means "/"
  std::span<const QueryParam> query;
  // Every header to sign, Host included. Do not pass X-Amz-Date,
  // x-amz-content-sha256, X-Amz-Security-Token or Authorization: the signer adds them.
  std::span<const HttpField> headers;
  // Lowercase hex SHA-256 of the body, or kUnsignedPayload.
  std::string_view payload_hash;
};

// Result of header signing. The caller adds to the request:
//   X-Amz-Date: amz_date
//   x-amz-content-sha256: <payload_hash>   (when params.content_sha256_header)
//   X-Amz-Security-Token: <session token>  (when the credentials have one)
//   Authorization: authorization
// The intermediate strings stay for tests and for logging a mismatch.
// Reuse one object across calls to reuse its capacity.
struct SignedHeaders {
  std::string amz_date;  // "20150830T123600Z"
  std::string authorization;
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;  // lowercase hex
};

// Result of query signing (presigning).
struct PresignedQuery {
  // The complete query string to send (no leading '?'): the request's
  // parameters and the X-Amz-* ones, encoded, X-Amz-Signature last.
  std::string query;
  std::string amz_date;
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;
};

// Signs requests with one set of credentials. It caches the derived signing
// key for the last (date, region, service) seen, and keeps scratch buffers.
// Not thread-safe: use one Signer per thread.
class Signer {
 public:
  explicit Signer(Credentials credentials);

  const Credentials& credentials() const { return credentials_; }

  // Signs with an Authorization header. Errors (invalid): no Host header,
  // no credentials, an empty payload hash, a time that cannot be formatted.
  Status sign_headers(const SigningRequest& request, const SigningParams& params, SignedHeaders& out);

  // Signs in the query string (X-Amz-Algorithm ... X-Amz-Signature), for a
  // URL that works without headers until `params.expires` has passed.
  // Errors as for sign_headers.
  Status presign(const SigningRequest& request, const SigningParams& params, PresignedQuery& out);

 private:
  // A name and a value, as offsets into one scratch string.
  struct TextEntry {
    std::uint32_t name_offset, name_size, value_offset, value_size;
  };

  Status check(const SigningRequest& request, const SigningParams& params) const;
  // Writes the canonical request into out, from the request, the extra query
  // parameters and the header entries collected beforehand.
  void build_canonical_request(const SigningRequest& request, const SigningParams& params,
                               std::span<const QueryParam> extra_query, std::string& out);
  void build_string_to_sign(std::string_view amz_date, std::string_view scope, std::string_view canonical_request,
                            std::string& out) const;
  const std::array<unsigned char, 32>& signing_key(std::string_view date, const SigningParams& params);

  Credentials credentials_;
  std::string key_scope_;  // "date/region/service" of key_
  std::array<unsigned char, 32> key_{};
  // Scratch, reused across calls.
  std::string header_text_;
  std::vector<TextEntry> header_entries_;
  std::string signed_headers_;
  std::string param_text_;
  std::vector<TextEntry> param_entries_;
  std::string scope_;
  std::string scratch_;
};

// --- Encoding and hashing helpers (also used by the S3 client) ---

// Appends `in` percent-encoded per AWS rules: every byte except A-Z a-z 0-9
// '-' '.' '_' '~' becomes %XX (uppercase hex); '/' is kept when keep_slash.
void uri_encode(std::string_view in, bool keep_slash, std::string& out);

// The path with "." and ".." segments and repeated slashes removed; a trailing
// slash is kept. An empty path gives "/".
std::string normalize_path(std::string_view path);

// Lowercase hex SHA-256 of data (64 characters).
std::string sha256_hex(std::span<const std::byte> data);
std::string sha256_hex(std::string_view data);

// "YYYYMMDDTHHMMSSZ" for a Unix time; empty if the time cannot be formatted.
std::string format_amz_date(std::int64_t unix_time);

}  // namespace kiroku::s3
