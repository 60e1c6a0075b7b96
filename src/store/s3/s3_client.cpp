// s3_client.cpp - the S3 operations (see s3_client.h): each fills a
// Transfer (s3_transfer.h) and says how its answer completes; the curl loop
// (s3_loop.cpp) runs it.
#include "store/s3/s3_client.h"

#include <cstdlib>
#include <string>
#include <utility>

#include "store/s3/s3_transfer.h"

namespace kiroku::s3 {

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

Result<Credentials> credentials_from_environment() {
  auto get = [](const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
  };
  Credentials c{get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"), get("AWS_SESSION_TOKEN")};
  if (c.access_key_id.empty()) return Status::invalid("AWS_ACCESS_KEY_ID is not set");
  if (c.secret_access_key.empty()) return Status::invalid("AWS_SECRET_ACCESS_KEY is not set");
  return c;
}

// --- operations -------------------------------------------------------------

// A write whose effect has happened but whose answer has no ETag to read:
// the ETag and size a HEAD of the object gives (on the client thread).
void S3Client::settle_by_head(Transfer& t, Completion<PutObjectResult> done) {
  t.client->head_object(t.key, [done = std::move(done), what = t.what](Result<ObjectInfo> r) {
    if (!r.ok()) {
      // The write succeeded; a missing object right after it is not a 404 to pass on.
      ErrorKind kind = r.status().kind() == ErrorKind::not_found ? ErrorKind::permanent : r.status().kind();
      return done(
          Status(kind, what + ": the answer had no ETag and the HEAD after it failed: " + r.status().message()));
    }
    if (r->etag.empty()) {
      return done(Status::permanent(what + ": neither the answer nor a HEAD after it gave an ETag"));
    }
    done(PutObjectResult{r->etag, r->size});
  });
}

// A PUT's completion: the answer's ETag (a HEAD's when it has none).
std::function<void(S3Client::Transfer&, Status)> S3Client::put_finish(Completion<PutObjectResult> done) {
  return [done = std::move(done)](Transfer& t, Status s) mutable {
    if (!s.ok()) return done(std::move(s));
    if (t.info.etag.empty()) return settle_by_head(t, std::move(done));
    done(PutObjectResult{t.info.etag, std::nullopt});
  };
}

RequestId S3Client::put_object(std::string_view key, std::span<const std::byte> body, Completion<PutObjectResult> done,
                               std::string_view content_type) {
  auto t = make(Op::put_object, Method::put, key);
  t->content_type = std::string(content_type);
  t->upload = body;
  t->payload_hash = config_.sign_payload ? sha256_hex(body) : std::string(kUnsignedPayload);
  t->finish = put_finish(std::move(done));
  return submit(std::move(t));
}

RequestId S3Client::put_object_stream(std::string_view key, std::uint64_t size, BodySource body,
                                      Completion<PutObjectResult> done, std::string_view content_type) {
  auto t = make(Op::put_object, Method::put, key);
  t->content_type = std::string(content_type);
  if (!body.read) t->preset = Status::invalid(t->what + ": no body source");
  t->source = std::move(body);
  t->body_size = size;
  t->payload_hash = std::string(kUnsignedPayload);
  t->finish = put_finish(std::move(done));
  return submit(std::move(t));
}

RequestId S3Client::create_multipart_upload(std::string_view key, Completion<std::string> done,
                                            std::string_view content_type) {
  auto t = make(Op::create_upload, Method::post, key);
  t->content_type = std::string(content_type);
  t->query.emplace_back("uploads", "");
  t->finish = [done = std::move(done)](Transfer& tr, Status s) {
    if (!s.ok()) return done(std::move(s));
    auto id = parse_initiate_multipart_upload(tr.body);
    if (!id.ok()) return done(Status(id.status().kind(), tr.what + ": " + id.status().message()));
    done(std::move(*id));
  };
  return submit(std::move(t));
}

RequestId S3Client::upload_part(std::string_view key, std::string_view upload_id, int part_number,
                                std::span<const std::byte> body, Completion<CompletedPart> done) {
  auto t = make(Op::upload_part, Method::put, key);
  t->what += " part " + std::to_string(part_number);
  if (upload_id.empty()) t->preset = Status::invalid(t->what + ": no upload id");
  if (part_number < 1 || part_number > 10000) {
    t->preset = Status::invalid(t->what + ": part number outside 1..10000");
  }
  t->query.emplace_back("partNumber", std::to_string(part_number));
  t->query.emplace_back("uploadId", std::string(upload_id));
  t->part_number = part_number;
  t->upload = body;
  if (t->preset.ok()) {
    t->payload_hash = config_.sign_payload ? sha256_hex(body) : std::string(kUnsignedPayload);
  }
  t->finish = [done = std::move(done)](Transfer& tr, Status s) {
    if (!s.ok()) return done(std::move(s));
    if (tr.info.etag.empty()) return done(Status::permanent(tr.what + ": the answer has no ETag"));
    done(CompletedPart{tr.part_number, tr.info.etag});
  };
  return submit(std::move(t));
}

RequestId S3Client::complete_multipart_upload(std::string_view key, std::string_view upload_id,
                                              std::vector<CompletedPart> parts, Completion<PutObjectResult> done) {
  auto t = make(Op::complete_upload, Method::post, key);
  if (upload_id.empty()) t->preset = Status::invalid(t->what + ": no upload id");
  t->query.emplace_back("uploadId", std::string(upload_id));
  if (Status s = build_complete_multipart_upload(parts, t->owned_body); !s && t->preset.ok()) {
    t->preset = Status(s.kind(), t->what + ": " + s.message());
  }
  t->upload = std::as_bytes(std::span<const char>(t->owned_body.data(), t->owned_body.size()));
  t->payload_hash = sha256_hex(t->owned_body);
  t->content_type = "application/xml";
  t->finish = [done = std::move(done)](Transfer& tr, Status s) mutable {
    if (!s.ok()) return done(std::move(s));
    auto etag = parse_complete_multipart_upload(tr.body);
    if (!etag.ok()) return done(Status(etag.status().kind(), tr.what + ": " + etag.status().message()));
    if (etag->empty()) return settle_by_head(tr, std::move(done));
    done(PutObjectResult{std::move(*etag), std::nullopt});
  };
  return submit(std::move(t));
}

RequestId S3Client::abort_multipart_upload(std::string_view key, std::string_view upload_id, StatusCompletion done) {
  auto t = make(Op::abort_upload, Method::del, key);
  if (upload_id.empty()) t->preset = Status::invalid(t->what + ": no upload id");
  t->query.emplace_back("uploadId", std::string(upload_id));
  t->finish = [done = std::move(done)](Transfer&, Status s) { done(std::move(s)); };
  return submit(std::move(t));
}

RequestId S3Client::get_object(std::string_view key, std::optional<ByteRange> range, std::span<std::byte> buffer,
                               Completion<GetObjectResult> done) {
  auto t = make(Op::get_to_buffer, Method::get, key);
  t->range = range;
  t->buffer = buffer;
  t->finish = [done = std::move(done)](Transfer& tr, Status s) {
    if (!s.ok()) return done(std::move(s));
    done(GetObjectResult{static_cast<std::size_t>(tr.delivered), tr.first_info});
  };
  return submit(std::move(t));
}

RequestId S3Client::get_object(std::string_view key, std::optional<ByteRange> range, ObjectStream stream,
                               Completion<ObjectInfo> done) {
  auto t = make(Op::get_to_stream, Method::get, key);
  t->range = range;
  if (!stream.on_data && t->preset.ok()) t->preset = Status::invalid(t->what + ": no on_data");
  t->stream = std::move(stream);
  t->finish = [done = std::move(done)](Transfer& tr, Status s) {
    if (!s.ok()) return done(std::move(s));
    done(tr.first_info);
  };
  return submit(std::move(t));
}

RequestId S3Client::head_object(std::string_view key, Completion<ObjectInfo> done) {
  auto t = make(Op::head, Method::head, key);
  t->finish = [done = std::move(done)](Transfer& tr, Status s) {
    if (!s.ok()) return done(std::move(s));
    done(tr.info);
  };
  return submit(std::move(t));
}

RequestId S3Client::delete_object(std::string_view key, StatusCompletion done) {
  auto t = make(Op::remove, Method::del, key);
  t->finish = [done = std::move(done)](Transfer&, Status s) { done(std::move(s)); };
  return submit(std::move(t));
}

RequestId S3Client::list_objects_v2(ListObjectsRequest request, Completion<ListObjectsPage> done) {
  auto t = make(Op::list, Method::get, {});
  t->what = "S3 LIST " + config_.bucket + "/" + request.prefix;
  if (request.max_keys < 1 || request.max_keys > 1000) {
    t->preset = Status::invalid(t->what + ": max_keys must be within 1..1000");
  }
  t->query.emplace_back("list-type", "2");
  t->query.emplace_back("max-keys", std::to_string(request.max_keys));
  if (!request.prefix.empty()) t->query.emplace_back("prefix", request.prefix);
  if (!request.delimiter.empty()) t->query.emplace_back("delimiter", request.delimiter);
  if (!request.continuation_token.empty()) {
    t->query.emplace_back("continuation-token", request.continuation_token);
  } else if (!request.start_after.empty()) {
    t->query.emplace_back("start-after", request.start_after);
  }
  t->finish = [done = std::move(done)](Transfer& tr, Status s) {
    if (!s.ok()) return done(std::move(s));
    auto page = parse_list_objects_v2(tr.body);
    if (!page.ok()) return done(Status(page.status().kind(), tr.what + ": " + page.status().message()));
    done(std::move(*page));
  };
  return submit(std::move(t));
}

}  // namespace kiroku::s3
