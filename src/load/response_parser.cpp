// response_parser.cpp - HTTP/1.x responses parsed incrementally, bodies skipped.
#include "load/load.h"

#include <charconv>
#include <cstring>
#include <string_view>

#include "common/text.h"

namespace kiroku {

namespace {

// A header line without its CR and the spaces and tabs around it.
std::string_view trim_line(std::string_view s) {
  while (!s.empty() && s.back() == '\r') s.remove_suffix(1);
  return trim_ows(s);
}

}  // namespace

// ===========================================================================
// Response parser

void ResponseParser::start(bool head_request) {
  state_ = State::head;
  head_request_ = head_request;
  status_ = 0;
  keep_alive_ = true;
  remaining_ = 0;
  error_ = nullptr;
}

ResponseParser::Step ResponseParser::fail(const char* why) {
  error_ = why;
  return Step::error;
}

// Looks for the blank line that ends the header block; parses it only once
// it is complete. Lines end in CRLF or a bare LF.
ResponseParser::Step ResponseParser::parse_head(const char* data, std::size_t size, std::size_t& consumed) {
  consumed = 0;
  const std::string_view all(data, size);
  std::size_t pos = 0;
  // Tolerate empty lines before the status line.
  while (pos < all.size() && (all[pos] == '\r' || all[pos] == '\n')) {
    if (all[pos] == '\r' && pos + 1 >= all.size()) return Step::need_more;
    ++pos;
  }
  const std::size_t head_start = pos;
  std::size_t end = std::string_view::npos;  // just past the blank line
  for (std::size_t line = pos;;) {
    const std::size_t nl = all.find('\n', line);
    if (nl == std::string_view::npos) return Step::need_more;
    const std::size_t len = nl - line;
    if (line > head_start && (len == 0 || (len == 1 && all[line] == '\r'))) {
      end = nl + 1;
      break;
    }
    line = nl + 1;
  }

  // Status line: HTTP/1.x SP 3DIGIT [SP reason]
  std::size_t nl = all.find('\n', head_start);
  const std::string_view status_line = trim_line(all.substr(head_start, nl - head_start));
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." ||
      (status_line[7] != '0' && status_line[7] != '1') || status_line[8] != ' ') {
    return fail("malformed status line");
  }
  const bool http11 = status_line[7] == '1';
  int status = 0;
  for (std::size_t i = 9; i < 12; ++i) {
    if (status_line[i] < '0' || status_line[i] > '9') return fail("malformed status code");
    status = status * 10 + (status_line[i] - '0');
  }
  if (status_line.size() > 12 && status_line[12] != ' ') return fail("malformed status code");

  bool has_length = false;
  std::uint64_t length = 0;
  bool has_transfer_encoding = false;
  bool chunked = false;
  bool connection_close = false;
  bool connection_keep_alive = false;
  for (std::size_t line = nl + 1; line < end;) {
    const std::size_t line_end = all.find('\n', line);
    std::string_view text = all.substr(line, line_end - line);
    line = line_end + 1;
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (text.empty()) break;
    if (text.front() == ' ' || text.front() == '\t') continue;  // obsolete folding
    const std::size_t colon = text.find(':');
    if (colon == std::string_view::npos || colon == 0) return fail("malformed header line");
    const std::string_view name = text.substr(0, colon);
    const std::string_view value = trim_line(text.substr(colon + 1));
    if (iequals(name, "content-length")) {
      std::uint64_t v = 0;
      const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc() || p != value.data() + value.size() || value.empty()) {
        return fail("malformed Content-Length");
      }
      if (has_length && v != length) return fail("conflicting Content-Length headers");
      has_length = true;
      length = v;
    } else if (iequals(name, "transfer-encoding")) {
      // Chunked only counts as the last coding applied.
      has_transfer_encoding = true;
      std::string_view last = value;
      const std::size_t comma = value.rfind(',');
      if (comma != std::string_view::npos) last = trim_line(value.substr(comma + 1));
      chunked = iequals(last, "chunked");
    } else if (iequals(name, "connection")) {
      std::string_view tokens = value;
      while (!tokens.empty()) {
        const std::size_t comma = std::min(tokens.find(','), tokens.size());
        const std::string_view token = trim_line(tokens.substr(0, comma));
        if (iequals(token, "close")) connection_close = true;
        if (iequals(token, "keep-alive")) connection_keep_alive = true;
        tokens.remove_prefix(std::min(comma + 1, tokens.size()));
      }
    }
  }

  consumed = end;
  status_ = status;
  keep_alive_ = http11 ? !connection_close : (connection_keep_alive && !connection_close);
  if (status >= 100 && status < 200) {
    if (status == 101) return fail("101 Switching Protocols is not supported");
    return Step::need_more;  // interim answer: the final one follows
  }
  if (head_request_ || status == 204 || status == 304) return Step::answer;
  if (has_transfer_encoding) {
    if (chunked) {
      state_ = State::chunk_size;
    } else {
      state_ = State::until_close;
      keep_alive_ = false;
    }
    return Step::need_more;
  }
  if (has_length) {
    if (length == 0) return Step::answer;
    state_ = State::fixed_body;
    remaining_ = length;
    return Step::need_more;
  }
  state_ = State::until_close;
  keep_alive_ = false;
  return Step::need_more;
}

ResponseParser::Step ResponseParser::parse(const char* data, std::size_t size, std::size_t& consumed) {
  consumed = 0;
  if (error_ != nullptr) return Step::error;
  for (;;) {
    const char* p = data + consumed;
    const std::size_t n = size - consumed;
    switch (state_) {
      case State::head: {
        if (n == 0) return Step::need_more;
        std::size_t used = 0;
        const Step step = parse_head(p, n, used);
        if (step == Step::error) return step;
        consumed += used;
        if (step == Step::answer) return step;
        if (used == 0) return Step::need_more;
        break;  // a body follows, or an interim answer was skipped
      }
      case State::fixed_body:
      case State::chunk_data: {
        const std::uint64_t take = std::min<std::uint64_t>(remaining_, n);
        consumed += static_cast<std::size_t>(take);
        remaining_ -= take;
        if (remaining_ > 0) return Step::need_more;
        if (state_ == State::fixed_body) {
          state_ = State::head;
          return Step::answer;
        }
        state_ = State::chunk_end;
        break;
      }
      case State::chunk_end: {
        if (n == 0) return Step::need_more;
        if (p[0] == '\n') {
          consumed += 1;
        } else if (p[0] == '\r') {
          if (n < 2) return Step::need_more;
          if (p[1] != '\n') return fail("malformed chunk end");
          consumed += 2;
        } else {
          return fail("malformed chunk end");
        }
        state_ = State::chunk_size;
        break;
      }
      case State::chunk_size: {
        const void* nl = std::memchr(p, '\n', n);
        if (nl == nullptr) {
          if (n > 4096) return fail("chunk size line too long");
          return Step::need_more;
        }
        const std::size_t len = static_cast<std::size_t>(static_cast<const char*>(nl) - p);
        std::uint64_t chunk = 0;
        std::size_t i = 0;
        for (; i < len; ++i) {
          const char c = p[i];
          int digit;
          if (c >= '0' && c <= '9') {
            digit = c - '0';
          } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            digit = (c | 0x20) - 'a' + 10;
          } else {
            break;
          }
          if (chunk >> 59) return fail("chunk size too large");
          chunk = chunk * 16 + static_cast<std::uint64_t>(digit);
        }
        if (i == 0) return fail("malformed chunk size");
        const std::string_view rest = trim_line(std::string_view(p + i, len - i));
        if (!rest.empty() && rest.front() != ';') return fail("malformed chunk size");
        consumed += len + 1;
        if (chunk == 0) {
          state_ = State::trailers;
        } else {
          remaining_ = chunk;
          state_ = State::chunk_data;
        }
        break;
      }
      case State::trailers: {
        const void* nl = std::memchr(p, '\n', n);
        if (nl == nullptr) {
          if (n > 8192) return fail("trailer line too long");
          return Step::need_more;
        }
        const std::size_t len = static_cast<std::size_t>(static_cast<const char*>(nl) - p);
        consumed += len + 1;
        if (len == 0 || (len == 1 && p[0] == '\r')) {
          state_ = State::head;
          return Step::answer;
        }
        break;
      }
      case State::until_close: consumed = size; return Step::need_more;
    }
  }
}

ResponseParser::Step ResponseParser::finish() {
  if (state_ == State::until_close) {
    state_ = State::head;
    keep_alive_ = false;
    return Step::answer;
  }
  return fail("connection closed before the answer was complete");
}

}  // namespace kiroku
