// multipart_test.cpp - tests of the streaming multipart/form-data parser.
#include "http/multipart.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace kiroku {
namespace {

// Records what the parser reports and checks that events come in order.
class Recorder : public MultipartHandler {
 public:
  struct Part {
    std::string name, filename, content_type, data;
    bool has_filename = false;
    bool ended = false;
  };

  Status on_part_begin(const PartHeaders& h) override {
    if (in_part_ || body_ended) order_ok = false;
    in_part_ = true;
    parts.push_back(
        {std::string(h.name), std::string(h.filename), std::string(h.content_type), "", h.has_filename, false});
    return reject_with.ok() ? Status{} : reject_with;
  }
  PartFlow on_part_data(std::string_view data) override {
    if (!in_part_ || data.empty()) order_ok = false;
    parts.back().data.append(data);
    ++data_calls;
    return pause_each_slice ? PartFlow::pause : PartFlow::proceed;
  }
  void on_part_end() override {
    if (!in_part_) order_ok = false;
    in_part_ = false;
    parts.back().ended = true;
  }
  void on_body_end() override {
    if (in_part_ || body_ended) order_ok = false;
    body_ended = true;
  }

  std::vector<Part> parts;
  bool body_ended = false;
  bool order_ok = true;
  bool pause_each_slice = false;
  std::size_t data_calls = 0;
  Status reject_with;

 private:
  bool in_part_ = false;
};

// Feeds `pieces` in order, resuming and re-feeding whenever the handler
// pauses, then calls finish(). Returns the first error.
Status feed_all(MultipartParser& p, const std::vector<std::string_view>& pieces) {
  for (std::string_view piece : pieces) {
    while (!piece.empty()) {
      Result<std::size_t> r = p.feed(piece);
      if (!r.ok()) return r.status();
      if (*r < piece.size() && !p.paused()) return Status::invalid("short feed without a pause");
      piece.remove_prefix(*r);
      p.resume();
    }
  }
  return p.finish();
}

std::vector<std::string_view> chunks_of(std::string_view body, std::size_t size) {
  std::vector<std::string_view> out;
  for (std::size_t i = 0; i < body.size(); i += size) out.push_back(body.substr(i, size));
  return out;
}

Status parse(std::string_view body, Recorder& rec, std::size_t chunk = 1 << 20, std::string_view boundary = "XyZ",
             MultipartLimits limits = {}) {
  MultipartParser p(boundary, rec, limits);
  return feed_all(p, chunks_of(body, chunk));
}

constexpr std::string_view kBoundary = "----kirokuBoundary7MA4YWxkTrZu0gW";

// File contents full of CR, LF, '-' and near-matches of the delimiter.
std::string tricky_file_bytes() {
  std::string b = "\x89PNG\r\n\x1a\n";
  b += std::string("\0\r\0\n\r\r\n\n--\r\n-", 14);
  b += "\r\n--";                                                                 // delimiter start, then data
  b += "\r\n--" + std::string(kBoundary.substr(0, 10)) + "X";                    // diverges mid-boundary
  b += "\r\n--" + std::string(kBoundary.substr(0, kBoundary.size() - 1)) + "!";  // last byte off
  b += "\n--" + std::string(kBoundary) + "\r\n";                                 // LF only: not a delimiter
  b += "x--" + std::string(kBoundary) + "--";                                    // no CRLF before: not a delimiter
  b += "\r--" + std::string(kBoundary) + "\r\n";                                 // CR only: not a delimiter
  b += "\r\r\n-\r\n--\r\n--" + std::string(kBoundary.substr(0, 3));
  for (int i = 0; i < 64; ++i) b.push_back(static_cast<char>(i * 37 + 11));
  b += "\r\n";  // ends in CRLF: only the delimiter's own CRLF belongs to it
  return b;
}

std::string two_part_body(std::string_view file) {
  std::string d = "--" + std::string(kBoundary);
  return d + "\r\n" +
         "Content-Disposition: form-data; name=\"key\"\r\n\r\n"
         "photos/2024/cat.png\r\n" +
         d + "\r\n" +
         "Content-Disposition: form-data; name=\"file\"; filename=\"cat.png\"\r\n"
         "Content-Type: image/png\r\n\r\n" +
         std::string(file) + "\r\n" + d + "--\r\n";
}

void expect_two_parts(const Recorder& rec, const std::string& file) {
  ASSERT_TRUE(rec.order_ok);
  ASSERT_TRUE(rec.body_ended);
  ASSERT_EQ(rec.parts.size(), 2u);
  EXPECT_EQ(rec.parts[0].name, "key");
  EXPECT_EQ(rec.parts[0].data, "photos/2024/cat.png");
  EXPECT_FALSE(rec.parts[0].has_filename);
  EXPECT_TRUE(rec.parts[0].ended);
  EXPECT_EQ(rec.parts[1].name, "file");
  EXPECT_EQ(rec.parts[1].filename, "cat.png");
  EXPECT_EQ(rec.parts[1].content_type, "image/png");
  EXPECT_TRUE(rec.parts[1].ended);
  EXPECT_TRUE(rec.parts[1].data == file) << "file part differs";
}

// ---- Splitting ---------------------------------------------------------------

TEST(MultipartSplit, EveryOffsetOfTwoFeeds) {
  const std::string file = tricky_file_bytes();
  const std::string body = two_part_body(file);
  for (std::size_t cut = 0; cut <= body.size(); ++cut) {
    SCOPED_TRACE("cut at " + std::to_string(cut));
    Recorder rec;
    MultipartParser p(kBoundary, rec);
    std::string_view b = body;
    ASSERT_TRUE(feed_all(p, {b.substr(0, cut), b.substr(cut)}).ok());
    expect_two_parts(rec, file);
  }
}

TEST(MultipartSplit, EveryPairOfOffsetsOfThreeFeeds) {
  const std::string file = tricky_file_bytes();
  const std::string body = two_part_body(file);
  const std::string_view b = body;
  for (std::size_t i = 0; i <= b.size(); ++i) {
    for (std::size_t j = i; j <= b.size(); ++j) {
      Recorder rec;
      MultipartParser p(kBoundary, rec);
      Status st = feed_all(p, {b.substr(0, i), b.substr(i, j - i), b.substr(j)});
      if (!st.ok() || rec.parts.size() != 2 || rec.parts[1].data != file ||
          rec.parts[0].data != "photos/2024/cat.png" || !rec.body_ended || !rec.order_ok) {
        FAIL() << "cuts at " << i << " and " << j << ": " << st.message();
      }
    }
  }
}

TEST(MultipartSplit, OneByteAtATime) {
  const std::string file = tricky_file_bytes();
  const std::string body = two_part_body(file);
  Recorder rec;
  ASSERT_TRUE(parse(body, rec, 1, kBoundary).ok());
  expect_two_parts(rec, file);
}

TEST(MultipartSplit, OneByteAtATimeWithPauseAfterEverySlice) {
  const std::string file = tricky_file_bytes();
  const std::string body = two_part_body(file);
  Recorder rec;
  rec.pause_each_slice = true;
  ASSERT_TRUE(parse(body, rec, 1, kBoundary).ok());
  expect_two_parts(rec, file);
}

// ---- Framing -----------------------------------------------------------------

TEST(MultipartFraming, PreambleAndEpilogueAreIgnored) {
  const std::string body =
      "This is the preamble.\r\n--Xy is not here\r\n--XyZ\r\n"
      "Content-Disposition: form-data; name=\"a\"\r\n\r\nA\r\n--XyZ--\r\n"
      "This is the epilogue.\r\n--XyZ\r\nContent-Disposition: form-data; name=\"b\"\r\n\r\n";
  Recorder rec;
  ASSERT_TRUE(parse(body, rec).ok());
  ASSERT_EQ(rec.parts.size(), 1u);
  EXPECT_EQ(rec.parts[0].data, "A");
  EXPECT_TRUE(rec.body_ended);
}

TEST(MultipartFraming, FirstDelimiterWithItsCrlf) {
  const std::string body = "\r\n--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nA\r\n--XyZ--";
  Recorder rec;
  ASSERT_TRUE(parse(body, rec).ok());
  ASSERT_EQ(rec.parts.size(), 1u);
  EXPECT_EQ(rec.parts[0].name, "a");
  EXPECT_EQ(rec.parts[0].data, "A");
}

TEST(MultipartFraming, TransportPaddingAfterDelimiters) {
  const std::string body =
      "--XyZ \t \r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nA\r\n--XyZ\t\r\n"
      "Content-Disposition: form-data; name=\"b\"\r\n\r\n\r\n--XyZ--  \r\n";
  Recorder rec;
  ASSERT_TRUE(parse(body, rec, 3).ok());
  ASSERT_EQ(rec.parts.size(), 2u);
  EXPECT_EQ(rec.parts[0].data, "A");
  EXPECT_EQ(rec.parts[1].data, "");
  EXPECT_TRUE(rec.parts[1].ended);
}

TEST(MultipartFraming, BodyWithNoParts) {
  Recorder rec;
  ASSERT_TRUE(parse("--XyZ--\r\n", rec).ok());
  EXPECT_TRUE(rec.parts.empty());
  EXPECT_TRUE(rec.body_ended);
}

TEST(MultipartFraming, MissingClosingDelimiter) {
  for (std::string body : {"", "preamble only", "--XyZ\r\nContent-Disposition: form-data; name=a",
                           "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nda",
                           "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nda\r\n--Xy",
                           "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nda\r\n--XyZ\r\n",
                           "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nda\r\n--XyZ-"}) {
    SCOPED_TRACE(body);
    Recorder rec;
    MultipartParser p("XyZ", rec);
    ASSERT_TRUE(p.feed(body).ok());
    EXPECT_FALSE(p.done());
    Status st = p.finish();
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(st.kind(), ErrorKind::invalid);
    EXPECT_EQ(st.message(), "multipart body ends before its closing boundary");
    EXPECT_FALSE(rec.body_ended);
  }
}

TEST(MultipartFraming, DelimiterInsideDataIsAnError) {
  Recorder rec;
  Status st = parse("--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nda\r\n--XyZa\r\n", rec);
  EXPECT_EQ(st.message(), "malformed multipart boundary line: expected CRLF or \"--\" after the boundary");
}

TEST(MultipartFraming, ErrorsAreSticky) {
  Recorder rec;
  MultipartParser p("XyZ", rec);
  Result<std::size_t> r = p.feed("--XyZ\r\nbad header\r\n\r\n");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(), "malformed part header line");
  Result<std::size_t> again = p.feed("--XyZ--\r\n");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().message(), "malformed part header line");
  EXPECT_EQ(p.finish().message(), "malformed part header line");
  EXPECT_TRUE(rec.parts.empty());
}

TEST(MultipartFraming, InvalidBoundaryFailsTheParser) {
  for (std::string_view b : {std::string_view(""), std::string_view("a\r\nb"), std::string_view("ends in space ")}) {
    Recorder rec;
    MultipartParser p(b, rec);
    EXPECT_FALSE(p.status().ok());
    EXPECT_FALSE(p.feed("--a\r\n").ok());
  }
}

TEST(MultipartFraming, TooManyParts) {
  std::string body;
  for (int i = 0; i < 4; ++i) {
    body += "--XyZ\r\nContent-Disposition: form-data; name=f\r\n\r\nv\r\n";
  }
  body += "--XyZ--";
  Recorder rec;
  EXPECT_TRUE(parse(body, rec, 7, "XyZ", {.max_header_bytes = 8192, .max_parts = 4}).ok());
  Recorder rec3;
  Status st = parse(body, rec3, 7, "XyZ", {.max_header_bytes = 8192, .max_parts = 3});
  EXPECT_EQ(st.message(), "too many parts in multipart body (at most 3)");
  EXPECT_EQ(rec3.parts.size(), 3u);
}

// ---- Part headers --------------------------------------------------------------

Status parse_headers(std::string_view headers, Recorder& rec, MultipartLimits limits = {}) {
  std::string body = "--XyZ\r\n" + std::string(headers) + "\r\ndata\r\n--XyZ--\r\n";
  return parse(body, rec, 1 << 20, "XyZ", limits);
}

TEST(MultipartHeaders, HugeHeaderBlock) {
  std::string big = "Content-Disposition: form-data; name=\"f\"\r\nX-Pad: " + std::string(9000, 'p') + "\r\n";
  for (std::size_t chunk : {std::size_t{1}, std::size_t{100}, std::size_t{1} << 20}) {
    Recorder rec;
    std::string body = "--XyZ\r\n" + big + "\r\ndata\r\n--XyZ--";
    Status st = parse(body, rec, chunk);
    EXPECT_EQ(st.message(), "part headers exceed 8192 bytes");
    EXPECT_TRUE(rec.parts.empty());
  }
}

TEST(MultipartHeaders, HeaderBlockExactlyAtTheLimit) {
  std::string cd = "Content-Disposition: form-data; name=\"f\"\r\n";
  std::string pad = "X-Pad: ";
  std::size_t fill = 200 - cd.size() - pad.size() - 2 - 2;  // line CRLF, blank line
  std::string block = cd + pad + std::string(fill, 'p') + "\r\n";
  ASSERT_EQ(block.size() + 2, 200u);
  Recorder ok;
  EXPECT_TRUE(parse_headers(block, ok, {.max_header_bytes = 200, .max_parts = 64}).ok());
  Recorder over;
  EXPECT_EQ(parse_headers(block, over, {.max_header_bytes = 199, .max_parts = 64}).message(),
            "part headers exceed 199 bytes");
}

TEST(MultipartHeaders, PartWithoutAName) {
  struct Case {
    std::string headers, error;
  };
  for (const Case& c : std::vector<Case>{
           {"Content-Disposition: form-data\r\n", "part without a name"},
           {"Content-Disposition: form-data; filename=\"a.txt\"\r\n", "part without a name"},
           {"Content-Disposition: form-data; name=\"\"\r\n", "part without a name"},
           {"Content-Type: text/plain\r\n", "part without a name (no Content-Disposition)"},
           {"", "part without a name (no Content-Disposition)"},
       }) {
    SCOPED_TRACE(c.headers);
    Recorder rec;
    Status st = parse_headers(c.headers, rec);
    EXPECT_EQ(st.kind(), ErrorKind::invalid);
    EXPECT_EQ(st.message(), c.error);
    EXPECT_TRUE(rec.parts.empty());
  }
}

TEST(MultipartHeaders, QuotedFilenameWithEscapes) {
  Recorder rec;
  ASSERT_TRUE(parse_headers("content-disposition: Form-Data ; NAME=\"file\" ;"
                            " filename=\"a \\\"quoted\\\" C:\\\\name; x.txt\"\r\n"
                            "content-type:  application/octet-stream \r\n",
                            rec)
                  .ok());
  ASSERT_EQ(rec.parts.size(), 1u);
  EXPECT_EQ(rec.parts[0].name, "file");
  EXPECT_EQ(rec.parts[0].filename, "a \"quoted\" C:\\name; x.txt");
  EXPECT_TRUE(rec.parts[0].has_filename);
  EXPECT_EQ(rec.parts[0].content_type, "application/octet-stream");
  EXPECT_EQ(rec.parts[0].data, "data");
}

TEST(MultipartHeaders, UnquotedValuesAndRawUtf8) {
  Recorder rec;
  ASSERT_TRUE(parse_headers("Content-Disposition: form-data; name=key; filename=\"\xe7\x8c\xab.png\";\r\n"
                            "X-Other: ignored\r\n",
                            rec)
                  .ok());
  ASSERT_EQ(rec.parts.size(), 1u);
  EXPECT_EQ(rec.parts[0].name, "key");
  EXPECT_EQ(rec.parts[0].filename, "\xe7\x8c\xab.png");
  EXPECT_EQ(rec.parts[0].content_type, "");
}

TEST(MultipartHeaders, EmptyFilenameMeansNoFileChosen) {
  Recorder rec;
  ASSERT_TRUE(parse_headers("Content-Disposition: form-data; name=\"file\"; filename=\"\"\r\n"
                            "Content-Type: application/octet-stream\r\n",
                            rec)
                  .ok());
  EXPECT_TRUE(rec.parts[0].has_filename);
  EXPECT_EQ(rec.parts[0].filename, "");
}

TEST(MultipartHeaders, ExtendedFilename) {
  struct Case {
    std::string params, filename;
  };
  for (const Case& c : std::vector<Case>{
           {"filename=\"cat.png\"; filename*=UTF-8''%E7%8C%AB.png", "\xe7\x8c\xab.png"},
           {"filename*=utf-8'ja'%E7%8C%AB.png; filename=\"cat.png\"", "\xe7\x8c\xab.png"},
           {"filename*=ISO-8859-1''caf%E9.txt", "caf\xc3\xa9.txt"},
           {"filename=\"fallback.txt\"; filename*=KOI8-R''%C1", "fallback.txt"},
       }) {
    SCOPED_TRACE(c.params);
    Recorder rec;
    ASSERT_TRUE(parse_headers("Content-Disposition: form-data; name=f; " + c.params + "\r\n", rec).ok());
    EXPECT_EQ(rec.parts[0].filename, c.filename);
    EXPECT_TRUE(rec.parts[0].has_filename);
  }
}

TEST(MultipartHeaders, MalformedHeaders) {
  struct Case {
    std::string headers, error;
  };
  for (const Case& c : std::vector<Case>{
           {"Content-Disposition form-data; name=a\r\n", "malformed part header line"},
           {": form-data\r\n", "malformed part header line"},
           {"Content-Disposition: form-data;\r\n name=a\r\n", "malformed part header line"},
           {"Bad Name: x\r\nContent-Disposition: form-data; name=a\r\n", "malformed part header line"},
           {"Content-Disposition: form-data; name=a\n", "part header line does not end in CRLF"},
           {"Content-Disposition: form-data; name=\"a\rb\"\r\n",
            "control character in part header Content-Disposition"},
           {"Content-Disposition: attachment; name=a\r\n", "part Content-Disposition is not form-data"},
           {"Content-Disposition: form-data; name=\"a\r\n", "unterminated quoted string in Content-Disposition header"},
           {"Content-Disposition: form-data; name\r\n", "malformed parameter in Content-Disposition header"},
           {"Content-Disposition: form-data; name=\"a\" b\r\n",
            "malformed parameter list in Content-Disposition header"},
           {"Content-Disposition: form-data; name=a; name=b\r\n",
            "duplicate name parameter in Content-Disposition header"},
           {"Content-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n",
            "duplicate Content-Disposition part header"},
           {"Content-Disposition: form-data; name=a; filename*=UTF-8''%E7%8",
            "malformed filename* parameter in Content-Disposition header"},
           {"Content-Disposition: form-data; name=a; filename*=no-quotes",
            "malformed filename* parameter in Content-Disposition header"},
       }) {
    SCOPED_TRACE(c.headers);
    Recorder rec;
    std::string headers = c.headers;
    if (headers.find('\n') == std::string::npos) headers += "\r\n";
    Status st = parse_headers(headers, rec);
    EXPECT_EQ(st.kind(), ErrorKind::invalid);
    EXPECT_EQ(st.message(), c.error);
    EXPECT_TRUE(rec.parts.empty());
  }
}

TEST(MultipartHeaders, HandlerRejectsAPart) {
  Recorder rec;
  rec.reject_with = Status::invalid("unexpected part \"extra\"");
  Status st = parse_headers("Content-Disposition: form-data; name=extra\r\n", rec);
  EXPECT_EQ(st.message(), "unexpected part \"extra\"");
  EXPECT_TRUE(rec.parts[0].data.empty());
}

// ---- Content-Type boundary -------------------------------------------------------

TEST(MultipartBoundary, Accepted) {
  struct Case {
    std::string_view content_type, boundary;
  };
  const std::string seventy(70, 'b');
  const std::string with_seventy = "multipart/form-data; boundary=" + seventy;
  for (const Case& c : std::vector<Case>{
           {"multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
            "----WebKitFormBoundary7MA4YWxkTrZu0gW"},
           {"multipart/form-data;boundary=abc", "abc"},
           {"Multipart/Form-Data; BOUNDARY=abc", "abc"},
           {"multipart/form-data; charset=utf-8; boundary=\"a b'()+_,-./:=?c\"", "a b'()+_,-./:=?c"},
           {"multipart/form-data; boundary=\"abc\"; charset=utf-8", "abc"},
           {"  multipart/form-data ;  boundary = abc  ; ", "abc"},
           {"multipart/form-data; boundary=simple=boundary/123", "simple=boundary/123"},
           {"multipart/form-data; boundary=1", "1"},
           {with_seventy, seventy},
       }) {
    SCOPED_TRACE(std::string(c.content_type));
    Result<std::string_view> b = multipart_boundary(c.content_type);
    ASSERT_TRUE(b.ok()) << b.status().message();
    EXPECT_EQ(*b, c.boundary);
  }
}

TEST(MultipartBoundary, Rejected) {
  struct Case {
    std::string content_type, error;
  };
  for (const Case& c : std::vector<Case>{
           {"application/json", "Content-Type is not multipart/form-data"},
           {"multipart/mixed; boundary=abc", "Content-Type is not multipart/form-data"},
           {"", "Content-Type is not multipart/form-data"},
           {"multipart/form-data", "Content-Type has no boundary parameter"},
           {"multipart/form-data; charset=utf-8", "Content-Type has no boundary parameter"},
           {"multipart/form-data; boundary=", "multipart boundary must be 1 to 70 characters"},
           {"multipart/form-data; boundary=\"\"", "multipart boundary must be 1 to 70 characters"},
           {"multipart/form-data; boundary=" + std::string(71, 'b'), "multipart boundary must be 1 to 70 characters"},
           {"multipart/form-data; boundary=a@b", "multipart boundary has a character RFC 2046 does not allow"},
           {"multipart/form-data; boundary=\"a\\\"b\"", "multipart boundary has a character RFC 2046 does not allow"},
           {"multipart/form-data; boundary=\"ab \"", "multipart boundary must not end in a space"},
           {"multipart/form-data; boundary=\"abc", "unterminated quoted string in Content-Type header"},
           {"multipart/form-data; boundary", "malformed parameter in Content-Type header"},
           {"multipart/form-data; boundary=a; boundary=b", "duplicate boundary parameter in Content-Type header"},
       }) {
    SCOPED_TRACE(c.content_type);
    Result<std::string_view> b = multipart_boundary(c.content_type);
    ASSERT_FALSE(b.ok());
    EXPECT_EQ(b.status().kind(), ErrorKind::invalid);
    EXPECT_EQ(b.status().message(), c.error);
  }
}

TEST(MultipartBoundary, FeedsTheParser) {
  const std::string ct = "multipart/form-data; boundary=\"" + std::string(kBoundary) + "\"";
  Result<std::string_view> b = multipart_boundary(ct);
  ASSERT_TRUE(b.ok());
  const std::string file = tricky_file_bytes();
  Recorder rec;
  MultipartParser p(*b, rec);
  ASSERT_TRUE(feed_all(p, {two_part_body(file)}).ok());
  expect_two_parts(rec, file);
}

// ---- Backpressure ------------------------------------------------------------------

TEST(MultipartPause, FeedReturnsWhatItConsumedAndWaitsForResume) {
  const std::string body =
      "--XyZ\r\nContent-Disposition: form-data; name=a\r\n\r\nfirst\r\nsecond"
      "\r\n--XyZ\r\nContent-Disposition: form-data; name=b\r\n\r\nthird\r\n--XyZ--";
  Recorder rec;
  rec.pause_each_slice = true;
  MultipartParser p("XyZ", rec);
  std::string_view in = body;
  // The data slice "first\r\nsecond" is handed out whole, then the parser stops
  // in front of the delimiter.
  Result<std::size_t> r = p.feed(in);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(p.paused());
  EXPECT_EQ(in.substr(*r, 7), "\r\n--XyZ");
  EXPECT_EQ(rec.parts[0].data, "first\r\nsecond");
  in.remove_prefix(*r);
  Result<std::size_t> none = p.feed(in);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, 0u);  // still paused
  EXPECT_EQ(rec.parts.size(), 1u);
  p.resume();
  r = p.feed(in);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(p.paused());
  EXPECT_EQ(rec.parts.size(), 2u);
  EXPECT_EQ(rec.parts[1].data, "third");
  EXPECT_TRUE(rec.parts[0].ended);
  in.remove_prefix(*r);
  p.resume();
  r = p.feed(in);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, in.size());
  EXPECT_TRUE(p.done());
  EXPECT_TRUE(p.finish().ok());
  EXPECT_TRUE(rec.body_ended);
}

TEST(MultipartPause, PauseAtEveryChunkSize) {
  const std::string file = tricky_file_bytes();
  const std::string body = two_part_body(file);
  for (std::size_t chunk = 1; chunk <= body.size(); ++chunk) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    Recorder rec;
    rec.pause_each_slice = true;
    ASSERT_TRUE(parse(body, rec, chunk, kBoundary).ok());
    expect_two_parts(rec, file);
  }
}

// ---- Bounded memory ------------------------------------------------------------------

// Counts a large part's bytes, checking them against the expected pattern and
// counting those not handed out as slices of the caller's chunk.
class LargePartCheck : public MultipartHandler {
 public:
  explicit LargePartCheck(const std::string& block) : block_(block) {}
  Status on_part_begin(const PartHeaders& h) override {
    ++parts;
    filename = h.filename;
    return {};
  }
  PartFlow on_part_data(std::string_view data) override {
    if (data.data() < chunk.data() || data.data() + data.size() > chunk.data() + chunk.size()) {
      copied += data.size();
    }
    for (char c : data) {
      if (c != block_[received % block_.size()]) ++mismatches;
      ++received;
    }
    return PartFlow::proceed;
  }
  void on_part_end() override { ++ends; }
  void on_body_end() override { body_ended = true; }

  std::string_view chunk;  // the caller's current input
  std::string filename;
  std::uint64_t received = 0, copied = 0, mismatches = 0;
  int parts = 0, ends = 0;
  bool body_ended = false;

 private:
  const std::string& block_;
};

TEST(MultipartMemory, SixtyFourMiBPartInSixtyFourKiBChunks) {
  constexpr std::size_t kBlock = 1 << 20, kBlocks = 64, kChunk = 64 << 10;
  // 1 MiB of random bytes with near-delimiters sprinkled in, repeated.
  std::string block(kBlock, '\0');
  std::mt19937_64 rng(42);
  for (char& c : block) c = static_cast<char>(rng());
  const std::string near = "\r\n--" + std::string(kBoundary.substr(0, kBoundary.size() - 1));
  for (std::size_t at = 1000; at + near.size() < kBlock; at += 4093) {
    block.replace(at, near.size(), near);
  }
  const std::string head = "--" + std::string(kBoundary) +
                           "\r\nContent-Disposition: form-data; name=\"file\"; "
                           "filename=\"big.bin\"\r\n\r\n";
  const std::string tail = "\r\n--" + std::string(kBoundary) + "--\r\n";
  const std::uint64_t total = head.size() + kBlock * kBlocks + tail.size();
  auto body_at = [&](std::uint64_t i) -> char {
    if (i < head.size()) return head[i];
    i -= head.size();
    if (i < kBlock * kBlocks) return block[i % kBlock];
    return tail[i - kBlock * kBlocks];
  };

  LargePartCheck check(block);
  MultipartParser p(kBoundary, check);
  std::string chunk(kChunk, '\0');
  std::size_t reserved_in_part = 0;
  std::size_t max_held = 0;
  std::uint64_t feeds = 0;
  for (std::uint64_t off = 0; off < total; off += kChunk) {
    std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, total - off));
    for (std::size_t i = 0; i < n; ++i) chunk[i] = body_at(off + i);
    check.chunk = std::string_view(chunk.data(), n);
    Result<std::size_t> r = p.feed(check.chunk);
    ASSERT_TRUE(r.ok()) << r.status().message();
    ASSERT_EQ(*r, n);
    ++feeds;
    if (check.parts == 1 && check.ends == 0) {
      // Inside the part: never more than a partial delimiter held, and no growth.
      max_held = std::max(max_held, p.held_bytes());
      if (reserved_in_part == 0) reserved_in_part = p.reserved_bytes();
      ASSERT_EQ(p.reserved_bytes(), reserved_in_part);
    }
  }
  ASSERT_TRUE(p.finish().ok());
  EXPECT_TRUE(check.body_ended);
  EXPECT_EQ(check.parts, 1);
  EXPECT_EQ(check.ends, 1);
  EXPECT_EQ(check.filename, "big.bin");
  EXPECT_EQ(check.received, kBlock * kBlocks);
  EXPECT_EQ(check.mismatches, 0u);
  EXPECT_LT(max_held, kBoundary.size() + 4);
  // Bytes not handed out zero-copy: only held partial delimiters, at most one per feed.
  EXPECT_LE(check.copied, feeds * (kBoundary.size() + 3));
  EXPECT_LE(reserved_in_part, 2 * MultipartLimits{}.max_header_bytes);
}

}  // namespace
}  // namespace kiroku
