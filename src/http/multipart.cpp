// multipart.cpp - streaming multipart/form-data parser (see multipart.h).
#include "http/multipart.h"

#include "common/percent.h"
#include "common/text.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include <string.h>  // memmem

namespace kiroku {

namespace {

// ---- Character classes and small string helpers ---------------------------

bool is_alnum(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// RFC 9110 tchar: the characters of a header name or parameter name.
bool is_tchar(char c) { return is_alnum(c) || (c != '\0' && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr); }

// RFC 2046 bchars: the characters of a boundary.
bool is_bchar(char c) { return is_alnum(c) || (c != '\0' && std::strchr("'()+_,-./:=? ", c) != nullptr); }

bool is_ows(char c) { return c == ' ' || c == '\t'; }

Status check_boundary(std::string_view b) {
  if (b.empty() || b.size() > kMaxBoundaryBytes) {
    return Status::invalid("multipart boundary must be 1 to 70 characters");
  }
  if (!std::all_of(b.begin(), b.end(), is_bchar)) {
    return Status::invalid("multipart boundary has a character RFC 2046 does not allow");
  }
  if (b.back() == ' ') return Status::invalid("multipart boundary must not end in a space");
  return {};
}

// ---- Header parameters: *( OWS ";" OWS name "=" ( token / quoted-string ) ) ----

struct Param {
  std::string_view name;
  std::string_view value;  // a quoted string's inside, backslash escapes still in it
  bool quoted = false;
};

// Calls `visit(const Param&) -> Status` for each parameter of `s`, stopping at
// the first error. Empty parameters (";;", a trailing ';') are skipped; an
// unquoted value runs to the next ';'. `header` names the header in errors.
template <typename Visit>
Status for_each_param(std::string_view s, std::string_view header, Visit&& visit) {
  auto malformed = [&](std::string_view what) {
    return Status::invalid(std::string(what) + " in " + std::string(header) + " header");
  };
  std::size_t i = 0;
  auto skip_ows = [&] {
    while (i < s.size() && is_ows(s[i])) ++i;
  };
  for (;;) {
    skip_ows();
    if (i == s.size()) return {};
    if (s[i] != ';') return malformed("malformed parameter list");
    ++i;
    skip_ows();
    if (i == s.size() || s[i] == ';') continue;
    std::size_t name_end = i;
    while (name_end < s.size() && is_tchar(s[name_end])) ++name_end;
    Param p;
    p.name = s.substr(i, name_end - i);
    i = name_end;
    skip_ows();
    if (p.name.empty() || i == s.size() || s[i] != '=') return malformed("malformed parameter");
    ++i;
    skip_ows();
    if (i < s.size() && s[i] == '"') {
      std::size_t j = i + 1;
      while (j < s.size() && s[j] != '"') j += (s[j] == '\\') ? 2 : 1;
      if (j >= s.size()) return malformed("unterminated quoted string");
      p.value = s.substr(i + 1, j - i - 1);
      p.quoted = true;
      i = j + 1;
    } else {
      std::size_t j = std::min(s.find(';', i), s.size());
      p.value = trim_ows(s.substr(i, j - i));
      i = j;
    }
    Status st = visit(p);
    if (!st.ok()) return st;
  }
}

// The value of a parameter with backslash escapes undone.
void unquote(const Param& p, std::string& out) {
  out.clear();
  if (!p.quoted) {
    out.assign(p.value);
    return;
  }
  for (std::size_t i = 0; i < p.value.size(); ++i) {
    if (p.value[i] == '\\' && i + 1 < p.value.size()) ++i;
    out.push_back(p.value[i]);
  }
}

enum class ExtValue { ok, unsupported_charset, malformed };

// RFC 5987 ext-value `charset'[language]'pct-encoded`, decoded to UTF-8 into
// `out` (left untouched unless ok). Charsets: UTF-8 and ISO-8859-1.
ExtValue decode_ext_value(std::string_view v, std::string& out) {
  std::size_t q1 = v.find('\'');
  std::size_t q2 = q1 == std::string_view::npos ? q1 : v.find('\'', q1 + 1);
  if (q2 == std::string_view::npos) return ExtValue::malformed;
  std::string_view charset = v.substr(0, q1);
  bool latin1 = iequals(charset, "iso-8859-1");
  if (!latin1 && !iequals(charset, "utf-8")) return ExtValue::unsupported_charset;
  std::string_view text = v.substr(q2 + 1);
  for (std::size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c <= ' ' || c == 0x7f || c == '"') return ExtValue::malformed;
    if (c == '%' && (i + 2 >= text.size() || hex_value(text[i + 1]) < 0 || hex_value(text[i + 2]) < 0)) {
      return ExtValue::malformed;
    }
  }
  out.clear();
  for (std::size_t i = 0; i < text.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '%') {
      c = static_cast<unsigned char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    }
    if (latin1 && c >= 0x80) {
      out.push_back(static_cast<char>(0xc0 | (c >> 6)));
      out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return ExtValue::ok;
}

}  // namespace

// ---- Content-Type ----------------------------------------------------------

Result<std::string_view> multipart_boundary(std::string_view content_type) {
  std::size_t semi = std::min(content_type.find(';'), content_type.size());
  if (!iequals(trim_ows(content_type.substr(0, semi)), "multipart/form-data")) {
    return Status::invalid("Content-Type is not multipart/form-data");
  }
  std::string_view boundary;
  bool found = false;
  Status st = for_each_param(content_type.substr(semi), "Content-Type", [&](const Param& p) {
    if (!iequals(p.name, "boundary")) return Status{};
    if (found) return Status::invalid("duplicate boundary parameter in Content-Type header");
    boundary = p.value;
    found = true;
    return Status{};
  });
  if (!st.ok()) return st;
  if (!found) return Status::invalid("Content-Type has no boundary parameter");
  st = check_boundary(boundary);
  if (!st.ok()) return st;
  return boundary;
}

// ---- MultipartParser -------------------------------------------------------

MultipartParser::MultipartParser(std::string_view boundary, MultipartHandler& handler, MultipartLimits limits)
    : handler_(handler), limits_(limits) {
  Status st = check_boundary(boundary);
  if (!st.ok()) {
    fail(std::move(st));
    return;
  }
  std::memcpy(delimiter_.data(), "\r\n--", 4);
  std::memcpy(delimiter_.data() + 4, boundary.data(), boundary.size());
  delimiter_len_ = 4 + boundary.size();
  // The first delimiter may open the body without its CRLF: start as if the
  // CRLF had just been seen.
  std::memcpy(held_.data(), "\r\n", 2);
  held_len_ = 2;
}

Result<std::size_t> MultipartParser::feed(std::string_view chunk) {
  std::size_t pos = 0;
  while (pos < chunk.size() && !paused_ && state_ != State::failed) {
    std::string_view rest = chunk.substr(pos);
    switch (state_) {
      case State::preamble:
      case State::data: pos += scan_data(rest); break;
      case State::boundary_line: pos += read_boundary_line(rest); break;
      case State::headers: pos += read_headers(rest); break;
      case State::epilogue: pos = chunk.size(); break;
      case State::failed: break;
    }
  }
  if (state_ == State::failed) return status_;
  return pos;
}

Status MultipartParser::finish() {
  if (state_ != State::failed && state_ != State::epilogue) {
    fail(Status::invalid("multipart body ends before its closing boundary"));
  }
  return status_;
}

void MultipartParser::fail(Status s) {
  status_ = std::move(s);
  state_ = State::failed;
  held_len_ = 0;
}

bool MultipartParser::emit(std::string_view data) {
  if (state_ != State::data || data.empty()) return true;  // the preamble is dropped
  if (handler_.on_part_data(data) == PartFlow::proceed) return true;
  paused_ = true;
  return false;
}

// Passes data on up to the next delimiter. memmem finds a whole delimiter in a
// feed, then the feed's last bytes are checked for a delimiter's beginning:
// BM_MultipartLargePart (bench/multipart_bench.cpp) measured this 12-32% faster
// than looking at every CR with memchr.
std::size_t MultipartParser::scan_data(std::string_view in) {
  if (held_len_ > 0) {
    // A previous feed ended in a prefix of the delimiter: does this one finish it?
    std::size_t want = delimiter_len_ - held_len_;
    std::size_t n = std::min(want, in.size());
    if (std::memcmp(in.data(), delimiter_.data() + held_len_, n) == 0) {
      if (n == want) {
        held_len_ = 0;
        delimiter_found();
        return n;
      }
      std::memcpy(held_.data() + held_len_, in.data(), n);
      held_len_ += n;
      return n;
    }
    // Not a delimiter: the held bytes are data, and as the delimiter's only CR
    // is its first byte, no later held byte can start one.
    std::size_t len = held_len_;
    held_len_ = 0;
    if (!emit({held_.data(), len})) return 0;
  }
  const void* hit = ::memmem(in.data(), in.size(), delimiter_.data(), delimiter_len_);
  if (hit != nullptr) {
    std::size_t at = static_cast<std::size_t>(static_cast<const char*>(hit) - in.data());
    if (!emit(in.substr(0, at))) return at;
    delimiter_found();
    return at + delimiter_len_;
  }
  // No whole delimiter: hold back the feed's end if it is a delimiter's beginning.
  std::size_t at = in.size() >= delimiter_len_ ? in.size() - delimiter_len_ + 1 : 0;
  for (; at < in.size(); ++at) {
    if (in[at] == '\r' && std::memcmp(&in[at], delimiter_.data(), in.size() - at) == 0) break;
  }
  if (!emit(in.substr(0, at))) return at;  // paused: the held-back end is fed again later
  std::memcpy(held_.data(), in.data() + at, in.size() - at);
  held_len_ = in.size() - at;
  return in.size();
}

void MultipartParser::delimiter_found() {
  if (state_ == State::data) handler_.on_part_end();
  state_ = State::boundary_line;
  line_ = LineState::start;
}

// After a delimiter: "--" (the closing delimiter), or transport padding and CRLF.
std::size_t MultipartParser::read_boundary_line(std::string_view in) {
  std::size_t i = 0;
  while (i < in.size() && state_ == State::boundary_line) {
    char c = in[i++];
    bool ok = true;
    switch (line_) {
      case LineState::start:
        if (c == '-') {
          line_ = LineState::dash;
        } else if (is_ows(c)) {
          line_ = LineState::padding;
        } else {
          ok = c == '\r';
          line_ = LineState::cr;
        }
        break;
      case LineState::dash:
        ok = c == '-';
        if (ok) {
          state_ = State::epilogue;
          handler_.on_body_end();
        }
        break;
      case LineState::padding:
        if (!is_ows(c)) {
          ok = c == '\r';
          line_ = LineState::cr;
        }
        break;
      case LineState::cr:
        ok = c == '\n';
        if (ok && parts_ == limits_.max_parts) {
          fail(Status::invalid("too many parts in multipart body (at most " + std::to_string(limits_.max_parts) + ")"));
          return i;
        }
        if (ok) {
          ++parts_;
          state_ = State::headers;
        }
        break;
    }
    if (!ok) {
      fail(
          Status::invalid("malformed multipart boundary line: expected CRLF or \"--\" after "
                          "the boundary"));
      return i;
    }
  }
  return i;
}

// Copies the header block into header_ line by line until the blank line.
std::size_t MultipartParser::read_headers(std::string_view in) {
  std::size_t pos = 0;
  while (pos < in.size()) {
    const void* nl = std::memchr(in.data() + pos, '\n', in.size() - pos);
    std::size_t end = nl ? static_cast<std::size_t>(static_cast<const char*>(nl) - in.data()) + 1 : in.size();
    if (end - pos > limits_.max_header_bytes - header_.size()) {
      fail(Status::invalid("part headers exceed " + std::to_string(limits_.max_header_bytes) + " bytes"));
      return pos;
    }
    header_.append(in.data() + pos, end - pos);
    pos = end;
    if (nl == nullptr) break;
    std::size_t line_len = header_.size() - line_start_;
    if (line_len < 2 || header_[header_.size() - 2] != '\r') {
      fail(Status::invalid("part header line does not end in CRLF"));
      return pos;
    }
    if (line_len == 2) {
      begin_part();
      return pos;
    }
    line_start_ = header_.size();
  }
  return pos;
}

void MultipartParser::begin_part() {
  PartHeaders headers;
  Status st = parse_headers(headers);
  if (st.ok()) st = handler_.on_part_begin(headers);
  header_.clear();
  line_start_ = 0;
  if (!st.ok()) {
    fail(std::move(st));
    return;
  }
  state_ = State::data;
}

// header_ holds complete lines, each ending in CRLF, the last one empty.
Status MultipartParser::parse_headers(PartHeaders& headers) {
  std::string_view block(header_);
  block.remove_suffix(2);
  bool have_disposition = false;
  while (!block.empty()) {
    std::size_t eol = block.find("\r\n");
    std::string_view line = block.substr(0, eol);
    block.remove_prefix(eol + 2);
    std::size_t colon = line.find(':');
    std::string_view name = line.substr(0, colon);
    if (colon == std::string_view::npos || name.empty() || !std::all_of(name.begin(), name.end(), is_tchar)) {
      return Status::invalid("malformed part header line");
    }
    std::string_view value = trim_ows(line.substr(colon + 1));
    for (char c : value) {
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) {
        return Status::invalid("control character in part header " + std::string(name));
      }
    }
    if (iequals(name, "Content-Disposition")) {
      if (have_disposition) return Status::invalid("duplicate Content-Disposition part header");
      have_disposition = true;
      Status st = parse_disposition(value, headers);
      if (!st.ok()) return st;
    } else if (iequals(name, "Content-Type")) {
      headers.content_type = value;
    }
  }
  if (!have_disposition) return Status::invalid("part without a name (no Content-Disposition)");
  if (headers.name.empty()) return Status::invalid("part without a name");
  return {};
}

// `form-data; name="…"; filename="…"; filename*=UTF-8''…`
Status MultipartParser::parse_disposition(std::string_view value, PartHeaders& headers) {
  std::size_t semi = std::min(value.find(';'), value.size());
  if (!iequals(trim_ows(value.substr(0, semi)), "form-data")) {
    return Status::invalid("part Content-Disposition is not form-data");
  }
  name_.clear();
  filename_.clear();
  bool have_name = false, have_filename = false, have_ext = false, ext_used = false;
  auto once = [](bool& seen, std::string_view param) {
    if (seen) {
      return Status::invalid("duplicate " + std::string(param) + " parameter in Content-Disposition header");
    }
    seen = true;
    return Status{};
  };
  Status st = for_each_param(value.substr(semi), "Content-Disposition", [&](const Param& p) {
    Status seen;
    if (iequals(p.name, "name")) {
      if (seen = once(have_name, "name"); seen.ok()) unquote(p, name_);
    } else if (iequals(p.name, "filename")) {
      if (seen = once(have_filename, "filename"); seen.ok() && !ext_used) unquote(p, filename_);
    } else if (iequals(p.name, "filename*")) {
      if (seen = once(have_ext, "filename*"); !seen.ok()) return seen;
      switch (decode_ext_value(p.value, filename_)) {
        case ExtValue::ok: ext_used = true; break;
        case ExtValue::unsupported_charset: break;  // RFC 6266: fall back to filename
        case ExtValue::malformed: return Status::invalid("malformed filename* parameter in Content-Disposition header");
      }
    }
    return seen;
  });
  if (!st.ok()) return st;
  headers.name = name_;
  headers.filename = filename_;
  headers.has_filename = have_filename || ext_used;
  return {};
}

}  // namespace kiroku
