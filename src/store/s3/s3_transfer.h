// s3_transfer.h - one S3 request inside the client, from submission to
// completion: shared by the operations (s3_client.cpp), which fill it, and
// the curl loop (s3_loop.cpp), which runs it. Not for other files.
#pragma once

#include <curl/curl.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "store/s3/s3_client.h"

namespace kiroku::s3 {
namespace detail {

enum class Op : std::uint8_t {
  put_object,
  create_upload,
  upload_part,
  complete_upload,
  abort_upload,
  get_to_buffer,
  get_to_stream,
  head,
  remove,
  list,
};

enum class Method : std::uint8_t { get, head, put, post, del };

const char* method_name(Method m);

}  // namespace detail

using detail::Method;
using detail::Op;

struct S3Client::Transfer {
  RequestId id = 0;
  Op op = Op::head;
  Method method = Method::get;
  std::string what;                                        // "S3 GET bucket/key", starts every message
  std::string path;                                        // decoded request path
  std::string key;                                         // the object's key (empty for a listing)
  std::vector<std::pair<std::string, std::string>> query;  // decoded
  std::span<const std::byte> upload;                       // request body (caller-owned or owned_body)
  std::string owned_body;
  std::string payload_hash;
  std::string content_type;  // PUT, POST: sent (not signed) when not empty
  std::optional<ByteRange> range;
  BodySource source;  // streamed request body (body_size bytes)
  std::uint64_t body_size = 0;
  std::uint64_t source_read = 0;  // bytes taken from source, across attempts
  std::span<std::byte> buffer;    // Op::get_to_buffer
  ObjectStream stream;            // Op::get_to_stream
  int part_number = 0;            // Op::upload_part
  Status preset;                  // failed before it was sent
  std::function<void(Transfer&, Status)> finish;

  // Across attempts.
  int attempts = 0;
  std::uint64_t delivered = 0;  // object bytes handed to the buffer or stream
  bool started = false;         // a first 2xx answer's headers were seen
  ObjectInfo first_info;
  std::string pinned_etag;  // If-Match for resumed GETs
  Status last_error;
  bool resume_pending = false;

  // One attempt.
  CURL* easy = nullptr;
  curl_slist* headers = nullptr;
  std::size_t upload_pos = 0;
  bool range_sent = false;
  std::uint64_t range_offset = 0;     // of this attempt's Range
  std::uint64_t range_remaining = 0;  // of this attempt's Range, 0 = to the end
  int http_status = 0;
  bool headers_done = false;
  ObjectInfo info;
  std::string body;     // XML answer or error document
  Status abort_reason;  // why a callback stopped the transfer
  bool paused = false;
  char error[CURL_ERROR_SIZE] = {};

  S3Client::Loop* loop = nullptr;
  S3Client* client = nullptr;  // for completions that issue another request
};

}  // namespace kiroku::s3
