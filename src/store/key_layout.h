// key_layout.h - object keys: what a valid key is, and where a key is stored
// (HashPrefixLayout, seed 003: a few hex characters of a hash in front of every
// stored key, so that S3 spreads the keys over that many partitions).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace kiroku {

inline constexpr std::size_t kMaxKeySize = 1024;

// ok, or invalid naming the rule the key breaks: not empty, at most 1024 bytes,
// valid UTF-8, no NUL, no leading '/', no empty segment ("a//b", "a/"), no "."
// or ".." segment. A valid key is a relative path that stays where it is put.
Status validate_key(std::string_view key);

// ok, or invalid: a listing prefix or marker may be empty or end in '/', but
// must be at most 1024 bytes of UTF-8 without NUL.
Status validate_key_prefix(std::string_view prefix, std::string_view what);

// Stored key = "{partition}/{user key}"; the partition is the first
// hex_chars lowercase hex digits of the SHA-256 of the user key.
//
// The default is 1 hex character, 16 partitions: S3 scales request rates
// per prefix (thousands of requests per second each), so 16 prefixes carry
// far more than one instance sends, while a listing costs one LIST per
// partition per page: 16 parallel LISTs rather than 256 with 2 characters.
// 0 characters is one partition and stored key = user key. Changing the
// number for an existing bucket or directory hides the objects stored before.
// Immutable after construction; safe from any thread.
class HashPrefixLayout {
 public:
  // hex_chars is clamped to 0..4.
  explicit HashPrefixLayout(int hex_chars = 1);

  int hex_chars() const { return hex_chars_; }
  std::size_t partition_count() const { return partitions_; }

  // The partition of a user key, in [0, partition_count()).
  std::size_t partition_of(std::string_view key) const;
  // "{partition}/" ("" with 0 hex characters): what every stored key of the
  // partition starts with.
  std::string partition_prefix(std::size_t partition) const;
  // "{partition}/{key}".
  std::string stored_key(std::string_view key) const;
  // The user key of a stored key of this partition; nullopt if it does not
  // start with the partition's prefix.
  std::optional<std::string_view> user_key(std::size_t partition, std::string_view stored) const;

 private:
  int hex_chars_;
  std::size_t partitions_;
};

}  // namespace kiroku
