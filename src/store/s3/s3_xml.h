// s3_xml.h - S3's XML documents: ListObjectsV2 pages, multipart upload
// answers, Error bodies (and what their codes mean), and the
// CompleteMultipartUpload request body.
//
// Parsers never throw and never crash on bad input: a document that is not
// what S3 sends gives a permanent Status naming what is wrong.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kiroku::s3 {

// One object of a listing. etag is as S3 sends it, quotes included.
struct ObjectSummary {
  std::string key;
  std::uint64_t size = 0;
  std::string etag;
  std::chrono::system_clock::time_point last_modified{};
};

// One ListObjectsV2 answer. When is_truncated, pass next_continuation_token
// to the next request to get the following page.
struct ListObjectsPage {
  std::vector<ObjectSummary> objects;
  std::vector<std::string> common_prefixes;
  bool is_truncated = false;
  std::string next_continuation_token;
};

// An S3 <Error> document.
struct ErrorDocument {
  std::string code;  // "NoSuchKey", "SlowDown", ...
  std::string message;
  std::string request_id;
};

// A part of a multipart upload, as CompleteMultipartUpload lists it.
struct CompletedPart {
  int part_number = 0;  // 1..10000
  std::string etag;     // as UploadPart returned it
};

// Parses a <ListBucketResult> (ListObjectsV2).
Result<ListObjectsPage> parse_list_objects_v2(std::string_view xml);

// Parses an <InitiateMultipartUploadResult>; gives the UploadId.
Result<std::string> parse_initiate_multipart_upload(std::string_view xml);

// Parses the body of a 200 answer to CompleteMultipartUpload; gives the ETag.
// S3 can answer 200 with an <Error> body: that gives the error's Status (see
// error_status with http_status 200), transient when the code says to retry.
// Any other body means the upload is complete: the ETag, or "" when there is
// none to read (no body, not XML, another root, no or an empty <ETag>, as
// Ceph RGW sends); the caller settles that with a HEAD of the object.
Result<std::string> parse_complete_multipart_upload(std::string_view xml);

// Parses an <Error> document.
Result<ErrorDocument> parse_error(std::string_view xml);

// Whether a request that got this HTTP status and S3 error code (either may
// be missing: 0 / "") should be retried: 5xx, 429, SlowDown, InternalError,
// RequestTimeout, ServiceUnavailable, ...
bool is_retryable(int http_status, std::string_view code);

// The Status for an S3 error answer: transient when retryable, not_found for
// a missing key or upload, denied for refused credentials (InvalidAccessKeyId,
// SignatureDoesNotMatch, ExpiredToken, ...; the message says "the store refused
// the credentials"), permanent for permissions and a missing bucket, invalid for other 4xx (and for other codes inside
// a 2xx answer), permanent for anything else. `what` starts the message (e.g. "S3 GET bucket/key").
Status error_status(int http_status, const ErrorDocument& error, std::string_view what);

// Writes the <CompleteMultipartUpload> body for parts into out (replacing it).
// Errors (invalid): no parts, part numbers out of 1..10000 or not strictly
// ascending, an empty ETag.
Status build_complete_multipart_upload(std::span<const CompletedPart> parts, std::string& out);

// Parses an ISO 8601 UTC time as S3 writes it: "2009-10-12T17:50:30.000Z"
// (fraction optional, 'Z' or "+00:00").
Result<std::chrono::system_clock::time_point> parse_iso8601(std::string_view text);

// An ETag as S3 sends it ("\"abc\"") without its quotes; others as they are.
std::string unquote_etag(std::string etag);

}  // namespace kiroku::s3
