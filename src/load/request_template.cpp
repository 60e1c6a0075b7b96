// request_template.cpp - a request with {seq}, {rand} and {name}, parsed once, rendered per request.
#include "load/load.h"

#include <charconv>
#include <cstring>
#include <string>

#include "common/text.h"

namespace kiroku {

namespace {

std::size_t decimal_digits(std::uint64_t v) {
  std::size_t n = 1;
  while (v >= 10) {
    v /= 10;
    ++n;
  }
  return n;
}

void append_decimal(std::string& out, std::uint64_t v) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, v).ptr;
  out.append(digits, end);
}

}  // namespace

// Splits `text` into literal pieces and {seq}, {rand}, {name}. With `strict`
// (the URL) any other {...} is an error; elsewhere (headers, bodies such as
// JSON) it stays literal.
static Status split_placeholders(std::string_view text, bool strict, auto&& add) {
  std::size_t literal_start = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] != '{') {
      ++i;
      continue;
    }
    const std::size_t close = text.find('}', i);
    const std::string_view name =
        close == std::string_view::npos ? std::string_view() : text.substr(i + 1, close - i - 1);
    int field = 0;
    if (name == "seq") field = 1;
    if (name == "rand") field = 2;
    if (name == "name") field = 3;
    if (field == 0) {
      if (strict) {
        return Status::invalid("--url: unknown placeholder at '" + std::string(text.substr(i)) +
                               "' (known: {seq}, {rand}, {name})");
      }
      ++i;
      continue;
    }
    if (i > literal_start) add(0, text.substr(literal_start, i - literal_start));
    add(field, std::string_view());
    i = close + 1;
    literal_start = i;
  }
  if (literal_start < text.size()) add(0, text.substr(literal_start));
  return {};
}

Status RequestTemplate::parse_into(std::string_view text, std::vector<Piece>& out) {
  return split_placeholders(text, false, [&out](int field, std::string_view literal) {
    out.push_back({static_cast<Field>(field), std::string(literal)});
  });
}

Result<RequestTemplate> RequestTemplate::make(const LoadOptions& options, const LoadTarget& target,
                                              std::string_view body) {
  RequestTemplate t;
  t.is_head_ = iequals(options.method, "HEAD");
  auto literal = [&t](std::string_view s) { t.head_.push_back({Field::literal, std::string(s)}); };

  literal(options.method + " ");
  Status st = split_placeholders(target.target, true, [&t](int field, std::string_view s) {
    t.head_.push_back({static_cast<Field>(field), std::string(s)});
  });
  if (!st.ok()) return st;
  literal(" HTTP/1.1\r\nHost: " + target.host_header + "\r\nUser-Agent: kiroku-load\r\n");
  for (const std::string& header : options.headers) {
    const std::size_t colon = header.find(':');
    if (colon == std::string::npos || !is_http_token(trim_ows(header.substr(0, colon))) ||
        header.find_first_of("\r\n") != std::string::npos) {
      return Status::invalid("--header: expected 'Name: value', got '" + header + "'");
    }
    if (Status s = parse_into(header, t.head_); !s.ok()) return s;
    literal("\r\n");
  }
  t.has_body_ = !body.empty() || iequals(options.method, "POST") || iequals(options.method, "PUT") ||
                iequals(options.method, "PATCH");
  if (Status s = parse_into(body, t.body_); !s.ok()) return s;

  // The longest rendering: every placeholder at its widest.
  auto widest = [](const std::vector<Piece>& pieces) {
    std::size_t n = 0;
    for (const Piece& p : pieces) {
      switch (p.field) {
        case Field::literal: n += p.text.size(); break;
        case Field::seq: n += 20; break;
        case Field::rand: n += 10; break;
        case Field::name: n += 11; break;
      }
    }
    return n;
  };
  t.max_size_ = widest(t.head_) + widest(t.body_) + sizeof("Content-Length: \r\n\r\n") + 20 + 2;
  return t;
}

std::size_t RequestTemplate::rendered_size(const std::vector<Piece>& pieces, std::uint64_t seq, std::uint32_t random,
                                           unsigned names) {
  std::size_t n = 0;
  for (const Piece& p : pieces) {
    switch (p.field) {
      case Field::literal: n += p.text.size(); break;
      case Field::seq: n += decimal_digits(seq); break;
      case Field::rand: n += decimal_digits(random); break;
      case Field::name: n += 1 + decimal_digits(seq % names); break;
    }
  }
  return n;
}

void RequestTemplate::append(std::string& out, const std::vector<Piece>& pieces, std::uint64_t seq,
                             std::uint32_t random, unsigned names) {
  for (const Piece& p : pieces) {
    switch (p.field) {
      case Field::literal: out.append(p.text); break;
      case Field::seq: append_decimal(out, seq); break;
      case Field::rand: append_decimal(out, random); break;
      case Field::name:
        out.push_back('m');
        append_decimal(out, seq % names);
        break;
    }
  }
}

void RequestTemplate::render(std::string& out, std::uint64_t seq, std::uint32_t random, unsigned names) const {
  if (names == 0) names = 1;
  append(out, head_, seq, random, names);
  if (!has_body_) {
    out.append("\r\n");
    return;
  }
  out.append("Content-Length: ");
  append_decimal(out, rendered_size(body_, seq, random, names));
  out.append("\r\n\r\n");
  append(out, body_, seq, random, names);
}

}  // namespace kiroku
