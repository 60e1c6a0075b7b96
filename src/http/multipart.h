// multipart.h - streaming multipart/form-data parser (RFC 7578, RFC 2046) for POST /files.
//
// The body is pushed through MultipartParser::feed in slices of any size; the
// parser calls a MultipartHandler as parts begin, carry data and end. Part
// data is handed out as slices of the caller's input (zero-copy), except for
// the few bytes (fewer than the delimiter) that straddle two feeds and turn
// out not to be a delimiter. Memory is bounded: the parser keeps a copy of at
// most one part's header block (MultipartLimits::max_header_bytes) or of one
// partial delimiter (boundary + 4 bytes), however large the parts are.
//
// Errors come back as a Status (kind invalid) naming the problem; after the
// first error the parser stays failed and returns that Status from every
// call. A MultipartParser is used from one thread at a time.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kiroku {

// RFC 2046: a boundary is 1..70 characters.
inline constexpr std::size_t kMaxBoundaryBytes = 70;

// The boundary parameter of a `multipart/form-data` Content-Type value, e.g.
// `multipart/form-data; boundary="abc"` -> `abc`. The media type and the
// parameter name are matched case-insensitively; the value may be quoted or
// not (unquoted, it runs to the next ';'). The result views `content_type`.
// Invalid: another media type, no boundary, a boundary outside 1..70 characters
// or with a character RFC 2046 does not allow (or ending in a space).
Result<std::string_view> multipart_boundary(std::string_view content_type);

struct MultipartLimits {
  std::size_t max_header_bytes = 8 * 1024;  // one part's header block, with its CRLFs
  std::size_t max_parts = 64;
};

// What a part says about itself. The views are valid only during
// MultipartHandler::on_part_begin.
struct PartHeaders {
  std::string_view name;          // the form field name, never empty
  std::string_view filename;      // decoded (filename* wins over filename); empty: none
  bool has_filename = false;      // a filename parameter was present (may be "": no file chosen)
  std::string_view content_type;  // as sent, trimmed; empty when absent (RFC 7578: text/plain)
};

enum class PartFlow { proceed, pause };

// Receives the events of one body, in order: for each part on_part_begin,
// on_part_data (zero or more times), on_part_end; then on_body_end once, when
// the closing delimiter `--boundary--` has been read.
class MultipartHandler {
 public:
  virtual ~MultipartHandler() = default;
  // A non-ok Status rejects the part: the parser fails with that Status.
  virtual Status on_part_begin(const PartHeaders& headers) = 0;
  // `data` is valid only during the call. PartFlow::pause makes feed return
  // right after this slice; the parser consumes nothing more until resume().
  virtual PartFlow on_part_data(std::string_view data) = 0;
  virtual void on_part_end() = 0;
  virtual void on_body_end() = 0;
};

// Push parser for one multipart/form-data body. It does not own the handler,
// which must outlive it. Rules it enforces:
// - the delimiter is CRLF "--" boundary; the first one may open the body
//   without the CRLF; anything before it (preamble) and after the closing
//   delimiter (epilogue) is ignored;
// - a delimiter line may end in spaces or tabs (transport padding) before its
//   CRLF; anything else after a full delimiter is an error (RFC 2046 forbids
//   the delimiter inside data), while near-matches are passed on as data;
// - header lines end in CRLF and are `Name: value` (no obsolete line folding);
//   Content-Disposition must be form-data with a non-empty name, else the
//   part fails with "part without a name" (the file API cannot use it).
class MultipartParser {
 public:
  // A boundary that multipart_boundary would reject fails the parser at once.
  MultipartParser(std::string_view boundary, MultipartHandler& handler, MultipartLimits limits = {});
  MultipartParser(const MultipartParser&) = delete;
  MultipartParser& operator=(const MultipartParser&) = delete;

  // Parses the next slice of the body and returns how many of its bytes were
  // consumed: all of them, unless the handler paused, in which case the caller
  // calls resume() and feeds the rest again. While paused, feed consumes
  // nothing. The parser keeps no reference to `chunk` after the call.
  Result<std::size_t> feed(std::string_view chunk);

  // Lets feed continue after the handler asked for a pause.
  void resume() { paused_ = false; }

  // Call once the whole body has been fed: an error if the closing delimiter
  // was never read (a truncated body), or the Status of an earlier failure.
  Status finish();

  bool paused() const { return paused_; }
  bool done() const { return state_ == State::epilogue; }  // the closing delimiter was read
  const Status& status() const { return status_; }
  std::size_t parts() const { return parts_; }  // parts begun so far

  // Bytes of the body the parser holds a copy of right now (a header block in
  // progress, or a partial delimiter): at most max_header_bytes, and fewer
  // than boundary + 4 while inside part data.
  std::size_t held_bytes() const { return header_.size() + held_len_; }
  // Heap bytes the parser has reserved; grows only while a header block is read.
  std::size_t reserved_bytes() const { return header_.capacity() + name_.capacity() + filename_.capacity(); }

 private:
  enum class State { preamble, boundary_line, headers, data, epilogue, failed };
  enum class LineState { start, dash, padding, cr };

  std::size_t scan_data(std::string_view in);
  std::size_t read_boundary_line(std::string_view in);
  std::size_t read_headers(std::string_view in);
  void delimiter_found();
  void begin_part();
  bool emit(std::string_view data);  // false: the handler paused
  Status parse_headers(PartHeaders& headers);
  Status parse_disposition(std::string_view value, PartHeaders& headers);
  void fail(Status s);

  MultipartHandler& handler_;
  MultipartLimits limits_;
  std::array<char, kMaxBoundaryBytes + 4> delimiter_{};  // CRLF "--" boundary
  std::size_t delimiter_len_ = 0;
  std::array<char, kMaxBoundaryBytes + 4> held_{};  // a delimiter's beginning at a feed's end
  std::size_t held_len_ = 0;
  State state_ = State::preamble;
  LineState line_ = LineState::start;
  bool paused_ = false;
  std::size_t parts_ = 0;
  std::string header_;          // the header block being read
  std::size_t line_start_ = 0;  // where the current header line starts in header_
  std::string name_;            // decoded parameters, reused from part to part
  std::string filename_;
  Status status_;
};

}  // namespace kiroku
