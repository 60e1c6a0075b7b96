// s3_xml.cpp - parsing and building S3's XML documents (see s3_xml.h).
#include "store/s3/s3_xml.h"

#include <array>
#include <charconv>
#include <cstring>
#include <pugixml.hpp>

namespace kiroku::s3 {

namespace {

// Element name without a namespace prefix ("s3:Key" -> "Key").
std::string_view local_name(const pugi::xml_node& node) {
  std::string_view name = node.name();
  std::size_t colon = name.find(':');
  return colon == std::string_view::npos ? name : name.substr(colon + 1);
}

pugi::xml_node child(const pugi::xml_node& node, std::string_view name) {
  for (pugi::xml_node c = node.first_child(); c; c = c.next_sibling()) {
    if (c.type() == pugi::node_element && local_name(c) == name) return c;
  }
  return {};
}

std::string_view text(const pugi::xml_node& node) {
  return node ? std::string_view(node.text().get()) : std::string_view();
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\n' || s.front() == '\r' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\r' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

Status malformed(std::string_view document, std::string_view why) {
  std::string m = "S3 sent a malformed ";
  m.append(document).append(": ").append(why);
  return Status::permanent(std::move(m));
}

// Loads the document; on success `root` is its element.
Status load(pugi::xml_document& doc, std::string_view xml, std::string_view document, pugi::xml_node& root) {
  pugi::xml_parse_result r = doc.load_buffer(xml.data(), xml.size(), pugi::parse_default, pugi::encoding_utf8);
  if (!r) return malformed(document, std::string("XML error: ") + r.description());
  root = doc.document_element();
  if (!root) return malformed(document, "no root element");
  return Status();
}

ErrorDocument read_error(const pugi::xml_node& root) {
  ErrorDocument e;
  e.code = std::string(trim(text(child(root, "Code"))));
  e.message = std::string(trim(text(child(root, "Message"))));
  e.request_id = std::string(trim(text(child(root, "RequestId"))));
  return e;
}

// A root that is not the expected one: an <Error> becomes its Status.
Status unexpected_root(const pugi::xml_node& root, std::string_view document, std::string_view expected) {
  if (local_name(root) == "Error") {
    return error_status(200, read_error(root), std::string("S3 ") + std::string(document));
  }
  return malformed(document,
                   std::string("root element <") + root.name() + ">, expected <" + std::string(expected) + ">");
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
  s = trim(s);
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

bool parse_fixed(std::string_view s, std::size_t pos, std::size_t len, int& out) {
  if (pos + len > s.size()) return false;
  out = 0;
  for (std::size_t i = pos; i < pos + len; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

void append_escaped(std::string_view s, std::string& out) {
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out.push_back(c);
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// Parsers
// ---------------------------------------------------------------------------

Result<ListObjectsPage> parse_list_objects_v2(std::string_view xml) {
  constexpr std::string_view kDoc = "ListBucketResult";
  pugi::xml_document doc;
  pugi::xml_node root;
  if (Status s = load(doc, xml, kDoc, root); !s) return s;
  if (local_name(root) != kDoc) return unexpected_root(root, kDoc, kDoc);

  ListObjectsPage page;
  std::string_view truncated = trim(text(child(root, "IsTruncated")));
  if (truncated == "true") {
    page.is_truncated = true;
  } else if (!truncated.empty() && truncated != "false") {
    return malformed(kDoc, "IsTruncated is neither true nor false");
  }
  page.next_continuation_token = std::string(trim(text(child(root, "NextContinuationToken"))));
  if (page.is_truncated && page.next_continuation_token.empty()) {
    return malformed(kDoc, "IsTruncated without a NextContinuationToken");
  }

  for (pugi::xml_node c = root.first_child(); c; c = c.next_sibling()) {
    if (c.type() != pugi::node_element) continue;
    std::string_view name = local_name(c);
    if (name == "Contents") {
      ObjectSummary o;
      pugi::xml_node key = child(c, "Key");
      if (!key) return malformed(kDoc, "Contents without a Key");
      o.key = text(key);  // keys are not trimmed: spaces are part of a key
      if (o.key.empty()) return malformed(kDoc, "Contents with an empty Key");
      pugi::xml_node size = child(c, "Size");
      if (size && !parse_u64(text(size), o.size)) {
        return malformed(kDoc, "Size of '" + o.key + "' is not a number");
      }
      o.etag = std::string(trim(text(child(c, "ETag"))));
      pugi::xml_node modified = child(c, "LastModified");
      if (modified) {
        // Only shown to users: a time that does not parse is left unknown (the epoch).
        if (auto t = parse_iso8601(trim(text(modified)))) o.last_modified = *t;
      }
      page.objects.push_back(std::move(o));
    } else if (name == "CommonPrefixes") {
      pugi::xml_node prefix = child(c, "Prefix");
      if (!prefix) return malformed(kDoc, "CommonPrefixes without a Prefix");
      page.common_prefixes.emplace_back(text(prefix));
    }
  }
  return page;
}

Result<std::string> parse_initiate_multipart_upload(std::string_view xml) {
  constexpr std::string_view kDoc = "InitiateMultipartUploadResult";
  pugi::xml_document doc;
  pugi::xml_node root;
  if (Status s = load(doc, xml, kDoc, root); !s) return s;
  if (local_name(root) != kDoc) return unexpected_root(root, kDoc, kDoc);
  std::string_view id = trim(text(child(root, "UploadId")));
  if (id.empty()) return malformed(kDoc, "no UploadId");
  return std::string(id);
}

Result<std::string> parse_complete_multipart_upload(std::string_view xml) {
  constexpr std::string_view kDoc = "CompleteMultipartUploadResult";
  pugi::xml_document doc;
  pugi::xml_node root;
  // The upload is complete unless the body says otherwise: anything but an
  // <Error> (no body, not XML, another root, no or an empty ETag) gives "".
  if (Status s = load(doc, xml, kDoc, root); !s) return std::string();
  if (local_name(root) != kDoc) {
    if (local_name(root) == "Error") return unexpected_root(root, kDoc, kDoc);
    return std::string();
  }
  return std::string(trim(text(child(root, "ETag"))));
}

Result<ErrorDocument> parse_error(std::string_view xml) {
  constexpr std::string_view kDoc = "Error";
  pugi::xml_document doc;
  pugi::xml_node root;
  if (Status s = load(doc, xml, kDoc, root); !s) return s;
  if (local_name(root) != kDoc) {
    return malformed(kDoc, std::string("root element <") + root.name() + ">, expected <Error>");
  }
  ErrorDocument e = read_error(root);
  if (e.code.empty()) return malformed(kDoc, "no Code");
  return e;
}

// ---------------------------------------------------------------------------
// What an error means
// ---------------------------------------------------------------------------

bool is_retryable(int http_status, std::string_view code) {
  static constexpr std::array<std::string_view, 11> kRetryCodes = {"InternalError",
                                                                   "SlowDown",
                                                                   "ServiceUnavailable",
                                                                   "RequestTimeout",
                                                                   "Throttling",
                                                                   "ThrottlingException",
                                                                   "RequestThrottled",
                                                                   "TooManyRequestsException",
                                                                   "OperationAborted",
                                                                   "RequestLimitExceeded",
                                                                   "BandwidthLimitExceeded"};
  for (std::string_view c : kRetryCodes) {
    if (code == c) return true;
  }
  if (http_status == 429) return true;
  return http_status >= 500 && http_status != 501 && http_status <= 599;
}

Status error_status(int http_status, const ErrorDocument& error, std::string_view what) {
  std::string m(what);
  m.append(": ");
  if (http_status > 0) m.append(std::to_string(http_status));
  if (!error.code.empty()) m.append(" ").append(error.code);
  if (!error.message.empty()) m.append(": ").append(error.message);
  if (!error.request_id.empty()) m.append(" (request id ").append(error.request_id).append(")");

  const std::string_view code = error.code;
  if (is_retryable(http_status, code)) return Status::transient(std::move(m));
  if (http_status == 403 && code.empty()) {
    // A HEAD's answer has no body to tell which.
    return Status::permanent(m + " (no reason given: refused credentials or missing permissions)");
  }
  if (code == "InvalidAccessKeyId" || code == "SignatureDoesNotMatch" || code == "ExpiredToken" ||
      code == "InvalidToken" || code == "TokenRefreshRequired") {
    return Status::denied(std::string(what) + ": the store refused the credentials: " + m.substr(what.size() + 2));
  }
  if (code == "NoSuchBucket" || code == "AccessDenied" || code == "AccountProblem" || code == "AllAccessDisabled" ||
      code == "InvalidBucketName" || code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" ||
      code == "RequestTimeTooSkewed" || code == "NotImplemented") {
    return Status::permanent(std::move(m));
  }
  if (code == "NoSuchKey" || code == "NoSuchUpload" || code == "NoSuchVersion" ||
      (http_status == 404 && code.empty())) {
    return Status::not_found(std::move(m));
  }
  if (http_status == 401 || http_status == 403) return Status::permanent(std::move(m));
  if (http_status == 404) return Status::not_found(std::move(m));
  if (http_status >= 400 && http_status <= 499) return Status::invalid(std::move(m));
  // An <Error> inside a 2xx answer (CompleteMultipartUpload): the code decides;
  // codes not named above are about the request (InvalidPart, ...).
  if (http_status < 300 && !code.empty()) return Status::invalid(std::move(m));
  return Status::permanent(std::move(m));
}

// ---------------------------------------------------------------------------
// Builders and times
// ---------------------------------------------------------------------------

Status build_complete_multipart_upload(std::span<const CompletedPart> parts, std::string& out) {
  if (parts.empty()) return Status::invalid("CompleteMultipartUpload needs at least one part");
  int previous = 0;
  for (const CompletedPart& p : parts) {
    if (p.part_number < 1 || p.part_number > 10000) {
      return Status::invalid("part number " + std::to_string(p.part_number) + " is outside 1..10000");
    }
    if (p.part_number <= previous) {
      return Status::invalid("part numbers must be strictly ascending (" + std::to_string(previous) + " then " +
                             std::to_string(p.part_number) + ")");
    }
    if (p.etag.empty()) {
      return Status::invalid("part " + std::to_string(p.part_number) + " has no ETag");
    }
    previous = p.part_number;
  }
  out.clear();
  out.reserve(128 + parts.size() * 96);
  out.append("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
  out.append("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
  for (const CompletedPart& p : parts) {
    out.append("<Part><PartNumber>").append(std::to_string(p.part_number));
    out.append("</PartNumber><ETag>");
    append_escaped(p.etag, out);
    out.append("</ETag></Part>");
  }
  out.append("</CompleteMultipartUpload>");
  return Status();
}

Result<std::chrono::system_clock::time_point> parse_iso8601(std::string_view s) {
  using namespace std::chrono;
  // YYYY-MM-DDTHH:MM:SS
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, sec = 0;
  if (s.size() < 20 || !parse_fixed(s, 0, 4, y) || s[4] != '-' || !parse_fixed(s, 5, 2, mo) || s[7] != '-' ||
      !parse_fixed(s, 8, 2, d) || (s[10] != 'T' && s[10] != 't') || !parse_fixed(s, 11, 2, h) || s[13] != ':' ||
      !parse_fixed(s, 14, 2, mi) || s[16] != ':' || !parse_fixed(s, 17, 2, sec)) {
    return Status::invalid("not an ISO 8601 time: '" + std::string(s) + "'");
  }
  std::size_t pos = 19;
  long long millis = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int digits = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (digits < 3) millis = millis * 10 + (s[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0) return Status::invalid("not an ISO 8601 time: '" + std::string(s) + "'");
    for (; digits < 3; ++digits) millis *= 10;
  }
  std::string_view zone = s.substr(pos);
  if (zone != "Z" && zone != "z" && zone != "+00:00") {
    return Status::invalid("not a UTC ISO 8601 time: '" + std::string(s) + "'");
  }
  year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  // system_clock counts nanoseconds in 64 bits: about 1678 to 2261.
  if (!ymd.ok() || y < 1900 || y > 2200 || h > 23 || mi > 59 || sec > 60) {
    return Status::invalid("not a valid time: '" + std::string(s) + "'");
  }
  auto tp = sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec} + milliseconds{millis};
  return time_point_cast<system_clock::duration>(tp);
}

std::string unquote_etag(std::string etag) {
  if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
  return etag;
}

}  // namespace kiroku::s3
