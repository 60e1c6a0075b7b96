// key_layout_test.cpp - key validation rules and the hash-prefix layout.
#include "store/key_layout.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "store/part_pool.h"

namespace kiroku {
namespace {

TEST(StoreKeyLayout, AcceptsOrdinaryKeys) {
  for (std::string key : std::vector<std::string>{"a", "a/b/c.txt", "日本語/ファイル.pdf", ".hidden", "a..b", "...",
                                                  "x/.config", "with space & plus+", std::string(1024, 'k')}) {
    Status s = validate_key(key);
    EXPECT_TRUE(s.ok()) << key << ": " << s.message();
  }
}

TEST(StoreKeyLayout, RejectsEachRuleByName) {
  struct Case {
    std::string key;
    std::string rule;
  };
  std::vector<Case> cases = {
      {"", "empty"},
      {std::string(1025, 'k'), "1024"},
      {std::string("a\0b", 3), "NUL"},
      {"/etc/passwd", "starts with '/'"},
      {"..", "'..'"},
      {"../x", "'..'"},
      {"a/../../b", "'..'"},
      {"a/..", "'..'"},
      {"a/./b", "'.'"},
      {".", "'.'"},
      {"a//b", "empty segment"},
      {"a/", "empty segment"},
      {"\xff", "UTF-8"},
      {"\xc0\xaf", "UTF-8"},          // overlong '/'
      {"\xed\xa0\x80", "UTF-8"},      // a surrogate
      {"\xf4\x90\x80\x80", "UTF-8"},  // above U+10FFFF
      {"abc\xe3\x81", "UTF-8"},       // cut short
  };
  for (const auto& c : cases) {
    Status s = validate_key(c.key);
    ASSERT_FALSE(s.ok()) << "accepted: " << c.key;
    EXPECT_EQ(s.kind(), ErrorKind::invalid);
    EXPECT_NE(s.message().find(c.rule), std::string::npos) << c.key << " -> " << s.message();
  }
}

TEST(StoreKeyLayout, PrefixesMayBeEmptyOrEndInSlash) {
  EXPECT_TRUE(validate_key_prefix("", "prefix").ok());
  EXPECT_TRUE(validate_key_prefix("photos/", "prefix").ok());
  EXPECT_FALSE(validate_key_prefix(std::string("a\0", 2), "prefix").ok());
  EXPECT_FALSE(validate_key_prefix(std::string(1025, 'p'), "prefix").ok());
}

std::string sha256_of(std::string_view s) {
  Sha256Stream sha;
  sha.update(std::as_bytes(std::span(s.data(), s.size())));
  return sha.finish_hex();
}

TEST(StoreKeyLayout, StoredKeyIsHashPrefixSlashKey) {
  HashPrefixLayout layout(2);
  EXPECT_EQ(layout.partition_count(), 256u);
  std::string key = "photos/2024/cat.jpg";
  std::string stored = layout.stored_key(key);
  EXPECT_EQ(stored, sha256_of(key).substr(0, 2) + "/" + key);
  std::size_t p = layout.partition_of(key);
  EXPECT_EQ(layout.partition_prefix(p), stored.substr(0, 3));
  auto back = layout.user_key(p, stored);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, key);
  EXPECT_FALSE(layout.user_key((p + 1) % 256, stored));

  HashPrefixLayout one(1);
  EXPECT_EQ(one.partition_count(), 16u);
  EXPECT_EQ(one.stored_key(key), sha256_of(key).substr(0, 1) + "/" + key);
  EXPECT_EQ(one.partition_prefix(10), "a/");

  HashPrefixLayout none(0);
  EXPECT_EQ(none.partition_count(), 1u);
  EXPECT_EQ(none.stored_key(key), key);
  EXPECT_EQ(none.partition_prefix(0), "");
}

// Chi-square of the partition counts of n sequential keys against uniform.
double chi_square(const HashPrefixLayout& layout, int n) {
  std::vector<int> counts(layout.partition_count());
  char key[32];
  for (int i = 0; i < n; ++i) {
    std::snprintf(key, sizeof(key), "upload-%06d.bin", i);
    ++counts[layout.partition_of(key)];
  }
  double expected = double(n) / counts.size(), chi = 0;
  for (int c : counts) chi += (c - expected) * (c - expected) / expected;
  return chi;
}

TEST(StoreKeyLayout, SequentialKeysSpreadEvenly) {
  // Critical values at p = 0.001: 37.7 for 15 degrees of freedom, 330.5 for 255.
  EXPECT_LT(chi_square(HashPrefixLayout(1), 10000), 37.7);
  EXPECT_LT(chi_square(HashPrefixLayout(2), 10000), 330.5);
  // Every partition gets keys, none more than 1.5 times its share.
  HashPrefixLayout layout(1);
  std::map<std::size_t, int> counts;
  for (int i = 0; i < 10000; ++i) ++counts[layout.partition_of("k" + std::to_string(i))];
  ASSERT_EQ(counts.size(), 16u);
  for (auto [p, c] : counts) EXPECT_LT(c, 625 * 3 / 2) << p;
}

}  // namespace
}  // namespace kiroku
