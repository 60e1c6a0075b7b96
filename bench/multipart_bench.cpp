// multipart_bench.cpp - throughput of the multipart/form-data parser on one large part.
//
// BM_MultipartLargePart/<content>: a 64 MiB file part fed in 64 KiB slices, as
// the HTTP engine would hand over a socket buffer. Content 0 is random bytes
// (a CR every 256 bytes on average), 1 is text with a CRLF every 80 bytes,
// 2 is the worst case: a near-match of the delimiter every 64 bytes.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <string>

#include "http/multipart.h"

namespace kiroku {
namespace {

constexpr std::string_view kBoundary = "----kirokuBoundary7MA4YWxkTrZu0gW";
constexpr std::size_t kPartBytes = 64 << 20;
constexpr std::size_t kSlice = 64 << 10;

class ByteCount : public MultipartHandler {
 public:
  Status on_part_begin(const PartHeaders&) override { return {}; }
  PartFlow on_part_data(std::string_view data) override {
    bytes += data.size();
    return PartFlow::proceed;
  }
  void on_part_end() override {}
  void on_body_end() override {}
  std::size_t bytes = 0;
};

std::string part_content(int kind) {
  std::string s(kPartBytes, 'a');
  std::mt19937_64 rng(7);
  if (kind == 0) {
    for (char& c : s) c = static_cast<char>(rng());
  } else if (kind == 1) {
    for (std::size_t i = 0; i < s.size(); ++i) {
      s[i] = (i % 80 == 78) ? '\r' : (i % 80 == 79) ? '\n' : static_cast<char>('a' + rng() % 26);
    }
  } else {
    const std::string near = "\r\n--" + std::string(kBoundary.substr(0, kBoundary.size() - 1));
    for (std::size_t i = 0; i + 64 <= s.size(); i += 64) s.replace(i, near.size(), near);
  }
  return s;
}

void BM_MultipartLargePart(benchmark::State& state) {
  const std::string body = "--" + std::string(kBoundary) +
                           "\r\nContent-Disposition: form-data; name=\"file\"; "
                           "filename=\"big.bin\"\r\n\r\n" +
                           part_content(static_cast<int>(state.range(0))) + "\r\n--" + std::string(kBoundary) +
                           "--\r\n";
  const std::string_view in = body;
  for (auto _ : state) {
    ByteCount count;
    MultipartParser parser(kBoundary, count);
    for (std::size_t off = 0; off < in.size(); off += kSlice) {
      Result<std::size_t> r = parser.feed(in.substr(off, kSlice));
      if (!r.ok()) state.SkipWithError(r.status().message().c_str());
    }
    if (!parser.finish().ok() || count.bytes != kPartBytes) state.SkipWithError("bad parse");
    benchmark::DoNotOptimize(count.bytes);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * in.size()));
}
BENCHMARK(BM_MultipartLargePart)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kiroku

BENCHMARK_MAIN();
