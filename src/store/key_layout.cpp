// key_layout.cpp - key validation and the hash-prefix layout of stored keys.
#include "store/key_layout.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdint>

namespace kiroku {
namespace {

// Length of the UTF-8 sequence at s[i], or 0 if it is not well formed
// (overlong forms, surrogates and code points above U+10FFFF included).
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  std::size_t n;
  std::uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2, cp = c & 0x1F;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3, cp = c & 0x0F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4, cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  return n;
}

Status check_text(std::string_view text, std::string_view what) {
  if (text.size() > kMaxKeySize) return Status::invalid(std::string(what) + " is longer than 1024 bytes");
  for (std::size_t i = 0; i < text.size();) {
    if (text[i] == '\0') return Status::invalid(std::string(what) + " contains a NUL byte");
    std::size_t n = utf8_sequence(text, i);
    if (n == 0) return Status::invalid(std::string(what) + " is not valid UTF-8");
    i += n;
  }
  return {};
}

}  // namespace

Status validate_key(std::string_view key) {
  if (key.empty()) return Status::invalid("key is empty");
  if (Status s = check_text(key, "key"); !s) return s;
  if (key.front() == '/') return Status::invalid("key starts with '/'");
  std::size_t begin = 0;
  while (true) {
    std::size_t end = key.find('/', begin);
    std::string_view segment = key.substr(begin, end == std::string_view::npos ? std::string_view::npos : end - begin);
    if (segment.empty()) return Status::invalid("key has an empty segment ('//' or a trailing '/')");
    if (segment == "..") return Status::invalid("key has a '..' segment");
    if (segment == ".") return Status::invalid("key has a '.' segment");
    if (end == std::string_view::npos) break;
    begin = end + 1;
  }
  return {};
}

Status validate_key_prefix(std::string_view prefix, std::string_view what) { return check_text(prefix, what); }

HashPrefixLayout::HashPrefixLayout(int hex_chars)
    : hex_chars_(std::clamp(hex_chars, 0, 4)), partitions_(std::size_t{1} << (4 * hex_chars_)) {}

std::size_t HashPrefixLayout::partition_of(std::string_view key) const {
  if (hex_chars_ == 0) return 0;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(key.data(), key.size(), digest, &size, EVP_sha256(), nullptr) != 1) return 0;
  // The first hex_chars hex digits of the digest, as a number.
  std::uint32_t top = (std::uint32_t{digest[0]} << 8) | digest[1];
  return top >> (16 - 4 * hex_chars_);
}

std::string HashPrefixLayout::partition_prefix(std::size_t partition) const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  if (hex_chars_ == 0) return out;
  for (int i = hex_chars_ - 1; i >= 0; --i) out += kHex[(partition >> (4 * i)) & 0xF];
  out += '/';
  return out;
}

std::string HashPrefixLayout::stored_key(std::string_view key) const {
  std::string out = partition_prefix(partition_of(key));
  out.append(key);
  return out;
}

std::optional<std::string_view> HashPrefixLayout::user_key(std::size_t partition, std::string_view stored) const {
  std::string prefix = partition_prefix(partition);
  if (!stored.starts_with(prefix)) return std::nullopt;
  return stored.substr(prefix.size());
}

}  // namespace kiroku
