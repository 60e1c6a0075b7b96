// s3_xml_check.h - invariants of S3's XML documents (store/s3/s3_xml.h). The
// input is one document, given to every parser (and, as text, to
// parse_iso8601).
//
// No parser may fail with anything but a Status that names the problem, and
// what each one accepts, written back as S3 would write it, reads the same.
// An <Error> inside a CompleteMultipartUpload answer means what parse_error
// and error_status say it means. build_complete_multipart_upload's document
// reads back (with pugixml) as the parts it was given.
#pragma once

#include <chrono>
#include <cstdio>
#include <pugixml.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "store/s3/s3_xml.h"

namespace kiroku::fuzz {
namespace s3_detail {

inline std::string escaped(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\r':  // a raw CR would read back as LF
        out += "&#13;";
        break;
      default: out.push_back(c);
    }
  }
  return out;
}

inline std::string element(std::string_view name, std::string_view text) {
  return "<" + std::string(name) + ">" + escaped(text) + "</" + std::string(name) + ">";
}

// "2009-10-12T17:50:30.000Z", or empty when the year has no four digits.
inline std::string iso8601(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ms = time_point_cast<milliseconds>(t);
  const sys_days day = floor<days>(ms);
  const year_month_day ymd{day};
  const int y = static_cast<int>(ymd.year());
  if (y < 0 || y > 9999) return {};
  const long long tod = (ms - day).count();
  char buf[40];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02lld:%02lld:%02lld.%03lldZ", y, static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), tod / 3'600'000, tod / 60'000 % 60, tod / 1000 % 60, tod % 1000);
  return buf;
}

inline bool trimmed(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; };
  return s.empty() || (!space(s.front()) && !space(s.back()));
}

inline bool is_error_kind(const Status& s) { return !s.ok() && !s.message().empty(); }

inline std::string list_xml(const s3::ListObjectsPage& page, bool& representable) {
  std::string x =
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">";
  x += element("IsTruncated", page.is_truncated ? "true" : "false");
  if (!page.next_continuation_token.empty()) x += element("NextContinuationToken", page.next_continuation_token);
  for (const s3::ObjectSummary& o : page.objects) {
    const std::string modified = iso8601(o.last_modified);
    if (modified.empty()) representable = false;
    x += "<Contents>" + element("Key", o.key) + element("LastModified", modified) + element("ETag", o.etag) +
         element("Size", std::to_string(o.size)) + "<StorageClass>STANDARD</StorageClass></Contents>";
  }
  for (const std::string& p : page.common_prefixes)
    x += "<CommonPrefixes>" + element("Prefix", p) + "</CommonPrefixes>";
  return x + "</ListBucketResult>";
}

inline void check_list(std::string_view xml) {
  const Result<s3::ListObjectsPage> r = s3::parse_list_objects_v2(xml);
  if (!r.ok()) {
    FUZZ_REQUIRE(is_error_kind(r.status()));
    return;
  }
  const s3::ListObjectsPage& page = r.value();
  FUZZ_REQUIRE(!page.is_truncated || !page.next_continuation_token.empty());
  FUZZ_REQUIRE(trimmed(page.next_continuation_token));
  for (const s3::ObjectSummary& o : page.objects) {
    FUZZ_REQUIRE(!o.key.empty() && trimmed(o.etag));
    FUZZ_REQUIRE(o.key.find('\0') == std::string::npos);
  }
  bool representable = true;
  const std::string again = list_xml(page, representable);
  if (!representable) return;
  const Result<s3::ListObjectsPage> r2 = s3::parse_list_objects_v2(again);
  FUZZ_REQUIRE(r2.ok());
  const s3::ListObjectsPage& p2 = r2.value();
  FUZZ_REQUIRE(p2.is_truncated == page.is_truncated && p2.next_continuation_token == page.next_continuation_token &&
               p2.common_prefixes == page.common_prefixes && p2.objects.size() == page.objects.size());
  for (std::size_t i = 0; i < page.objects.size(); ++i) {
    const s3::ObjectSummary &a = page.objects[i], &b = p2.objects[i];
    FUZZ_REQUIRE(a.key == b.key && a.size == b.size && a.etag == b.etag && a.last_modified == b.last_modified);
  }
}

// A <Error> root: parse_complete_multipart_upload gives the Status that
// error_status gives for that document inside a 200 answer.
inline void check_error_inside_200(std::string_view xml, const Status& complete) {
  const Result<s3::ErrorDocument> e = s3::parse_error(xml);
  if (!e.ok()) return;
  const Status expected = s3::error_status(200, e.value(), "S3 CompleteMultipartUploadResult");
  FUZZ_REQUIRE(complete.kind() == expected.kind() && complete.message() == expected.message());
}

inline void check_single_value(std::string_view xml) {
  const Result<std::string> init = s3::parse_initiate_multipart_upload(xml);
  if (init.ok()) {
    FUZZ_REQUIRE(!init.value().empty() && trimmed(init.value()));
    const auto again =
        s3::parse_initiate_multipart_upload("<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>" +
                                            element("UploadId", init.value()) + "</InitiateMultipartUploadResult>");
    FUZZ_REQUIRE(again.ok() && again.value() == init.value());
  } else {
    FUZZ_REQUIRE(is_error_kind(init.status()));
  }

  const Result<std::string> done = s3::parse_complete_multipart_upload(xml);
  if (done.ok() && done.value().empty()) {
    // Complete without an ETag to read: only an <Error> root is an error.
    FUZZ_REQUIRE(!s3::parse_error(xml).ok());
  } else if (done.ok()) {
    FUZZ_REQUIRE(trimmed(done.value()));
    const auto again =
        s3::parse_complete_multipart_upload("<CompleteMultipartUploadResult><Location>l</Location>" +
                                            element("ETag", done.value()) + "</CompleteMultipartUploadResult>");
    FUZZ_REQUIRE(again.ok() && again.value() == done.value());
  } else {
    FUZZ_REQUIRE(is_error_kind(done.status()));
    check_error_inside_200(xml, done.status());
  }
}

inline void check_error(std::string_view xml) {
  const Result<s3::ErrorDocument> r = s3::parse_error(xml);
  if (!r.ok()) {
    FUZZ_REQUIRE(is_error_kind(r.status()));
    return;
  }
  const s3::ErrorDocument& e = r.value();
  FUZZ_REQUIRE(!e.code.empty() && trimmed(e.code) && trimmed(e.message) && trimmed(e.request_id));
  const auto again = s3::parse_error("<Error>" + element("Code", e.code) + element("Message", e.message) +
                                     element("RequestId", e.request_id) + "</Error>");
  FUZZ_REQUIRE(again.ok() && again.value().code == e.code && again.value().message == e.message &&
               again.value().request_id == e.request_id);

  // What the code means, for every kind of answer.
  for (int http : {0, 200, 301, 400, 403, 404, 409, 429, 500, 501, 503}) {
    const Status s = s3::error_status(http, e, "S3 GET b/k");
    FUZZ_REQUIRE(!s.ok() && s.message().starts_with("S3 GET b/k: "));
    FUZZ_REQUIRE((s.kind() == ErrorKind::transient) == s3::is_retryable(http, e.code));
  }
}

// The <CompleteMultipartUpload> body for parts whose ETags are the strings
// of `xml` (split at '<'), read back with pugixml.
inline void check_build(std::string_view xml) {
  std::vector<s3::CompletedPart> parts;
  int number = 0;
  for (std::string_view rest = xml; !rest.empty() && parts.size() < 64;) {
    const std::size_t lt = rest.find('<');
    std::string etag(rest.substr(0, lt));
    rest = lt == std::string_view::npos ? std::string_view{} : rest.substr(lt + 1);
    // XML 1.0 cannot carry control characters (nor a NUL through pugixml).
    bool plain = !etag.empty();
    for (char c : etag) plain = plain && static_cast<unsigned char>(c) >= 0x20;
    if (!plain) continue;
    number += 1 + static_cast<unsigned char>(etag[0]) % 250;
    parts.push_back({number, std::move(etag)});
  }
  std::string out = "previous";
  const Status built = s3::build_complete_multipart_upload(parts, out);
  const bool valid = !parts.empty() && parts.back().part_number <= 10000;
  FUZZ_REQUIRE(built.ok() == valid);
  if (!valid) {
    FUZZ_REQUIRE(built.kind() == ErrorKind::invalid);
    return;
  }
  pugi::xml_document doc;
  FUZZ_REQUIRE(doc.load_buffer(out.data(), out.size(), pugi::parse_default | pugi::parse_ws_pcdata));
  std::size_t i = 0;
  for (pugi::xml_node p : doc.child("CompleteMultipartUpload").children("Part")) {
    FUZZ_REQUIRE(i < parts.size());
    FUZZ_REQUIRE(p.child("PartNumber").text().as_int() == parts[i].part_number);
    FUZZ_REQUIRE(std::string_view(p.child("ETag").text().get()) == parts[i].etag);
    ++i;
  }
  FUZZ_REQUIRE(i == parts.size());

  // Out of order, or with an empty ETag: invalid, and `out` is left alone.
  if (parts.size() >= 2) {
    std::swap(parts.front(), parts.back());
    std::string kept = "kept";
    FUZZ_REQUIRE(s3::build_complete_multipart_upload(parts, kept).kind() == ErrorKind::invalid);
    FUZZ_REQUIRE(kept == "kept");
  }
  parts.front().etag.clear();
  FUZZ_REQUIRE(s3::build_complete_multipart_upload(parts, out).kind() == ErrorKind::invalid);
}

inline void check_time(std::string_view text) {
  const auto t = s3::parse_iso8601(text);
  if (!t.ok()) {
    FUZZ_REQUIRE(t.status().kind() == ErrorKind::invalid);
    return;
  }
  const std::string again = iso8601(t.value());
  if (again.empty()) return;  // 9999-12-31T23:59:60 is the year 10000
  const auto t2 = s3::parse_iso8601(again);
  FUZZ_REQUIRE(t2.ok() && t2.value() == t.value());
}

}  // namespace s3_detail

inline void check_s3_xml(std::string_view xml) {
  s3_detail::check_list(xml);
  s3_detail::check_single_value(xml);
  s3_detail::check_error(xml);
  s3_detail::check_build(xml);
  s3_detail::check_time(xml);
}

}  // namespace kiroku::fuzz
