// regressions_test.cpp - replays the fuzz targets' seed corpora and every
// input that once broke them (test/fuzz/corpus/TARGET/*,
// test/fuzz/regressions/TARGET/*) through the same checks the targets run,
// in the ordinary unit test build: no clang, no libFuzzer needed. A broken
// invariant aborts with the invariant and the file named.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz/connection_check.h"
#include "fuzz/http_check.h"
#include "fuzz/json_events_check.h"
#include "fuzz/multipart_check.h"
#include "fuzz/query_check.h"
#include "fuzz/s3_xml_check.h"
#include "fuzz/spool_check.h"

namespace kiroku::fuzz {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> inputs(std::string_view target) {
  std::vector<fs::path> files;
  for (const char* kind : {"corpus", "regressions"}) {
    const fs::path dir = fs::path(KIROKU_SOURCE_DIR) / "test" / "fuzz" / kind / target;
    if (!fs::is_directory(dir)) continue;
    for (const fs::directory_entry& e : fs::directory_iterator(dir))
      if (e.is_regular_file()) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  return files;
}

void replay(std::string_view target, void (*check)(std::string_view)) {
  const std::vector<fs::path> files = inputs(target);
  ASSERT_FALSE(files.empty()) << "no seed corpus for " << target;
  for (const fs::path& f : files) {
    std::ifstream in(f, std::ios::binary);
    ASSERT_TRUE(in) << f;
    std::ostringstream data;
    data << in.rdbuf();
    const std::string name = f.string();
    replayed_file() = name.c_str();
    check(data.str());
    replayed_file() = nullptr;
  }
}

TEST(FuzzRegressions, Http) { replay("http", check_http); }
TEST(FuzzRegressions, Connection) { replay("connection", check_connection); }
TEST(FuzzRegressions, Query) { replay("query", check_query); }
TEST(FuzzRegressions, JsonEvents) { replay("json_events", check_json_events); }
TEST(FuzzRegressions, Multipart) { replay("multipart", check_multipart); }
TEST(FuzzRegressions, Spool) { replay("spool", check_spool); }
TEST(FuzzRegressions, S3Xml) { replay("s3_xml", check_s3_xml); }

}  // namespace
}  // namespace kiroku::fuzz
