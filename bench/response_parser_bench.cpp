// response_parser_bench.cpp - why `kiroku load` keeps its own response parser
// instead of Beast's.
//
// Both parse the same 4,096 pipelined answers out of one buffer, as the load
// tool reads them from a socket: kiroku's answers (204 with Date, Server and
// Content-Length: 0; 202 with a small JSON body; a chunked 200), headers looked
// at only for framing and Connection, bodies skipped. Beast's basic_parser is
// not reusable after a message, so one is constructed per answer, as a user
// of it must; kiroku's ResponseParser::start() resets it in place.
#include <benchmark/benchmark.h>

#include <boost/beast/core/error.hpp>
#include <boost/beast/http/basic_parser.hpp>
#include <optional>
#include <string>

#include "load/load.h"

namespace kiroku {
namespace {

constexpr int kAnswers = 4096;

std::string answers() {
  const std::string no_content =
      "HTTP/1.1 204 No Content\r\nDate: Thu, 03 Dec 2026 10:00:00 GMT\r\nServer: kiroku\r\nContent-Length: "
      "0\r\n\r\n";
  const std::string accepted =
      "HTTP/1.1 202 Accepted\r\nDate: Thu, 03 Dec 2026 10:00:00 GMT\r\nServer: kiroku\r\nContent-Type: "
      "application/json\r\nContent-Length: 15\r\n\r\n{\"accepted\":10}";
  const std::string chunked =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
  std::string all;
  for (int i = 0; i < kAnswers; ++i) all += i % 8 == 7 ? chunked : (i % 2 ? accepted : no_content);
  return all;
}

void BM_LoadResponseParser(benchmark::State& state) {
  const std::string in = answers();
  for (auto _ : state) {
    ResponseParser p;
    int done = 0;
    std::size_t at = 0;
    p.start(false);
    while (at < in.size()) {
      std::size_t used = 0;
      const auto step = p.parse(in.data() + at, in.size() - at, used);
      at += used;
      if (step == ResponseParser::Step::answer) {
        ++done;
        p.start(false);
      } else if (step != ResponseParser::Step::need_more || used == 0) {
        state.SkipWithError("parse failed");
        return;
      }
    }
    if (done != kAnswers) state.SkipWithError("wrong count");
    benchmark::DoNotOptimize(done);
  }
  state.SetItemsProcessed(state.iterations() * kAnswers);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(in.size()));
}
BENCHMARK(BM_LoadResponseParser);

// Beast's parser with every callback doing what the load tool needs: note the
// status and Connection, skip the body.
class BeastAnswer final : public boost::beast::http::basic_parser<false> {
 public:
  int status = 0;
  bool close = false;

 private:
  using error_code = boost::beast::error_code;
  using string_view = boost::beast::string_view;
  void on_request_impl(boost::beast::http::verb, string_view, string_view, int, error_code&) override {}
  void on_response_impl(int code, string_view, int, error_code&) override { status = code; }
  void on_field_impl(boost::beast::http::field f, string_view, string_view value, error_code&) override {
    if (f == boost::beast::http::field::connection) close = value == "close";
  }
  void on_header_impl(error_code&) override {}
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  std::size_t on_body_impl(string_view body, error_code&) override { return body.size(); }
  void on_chunk_header_impl(std::uint64_t, string_view, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, string_view body, error_code&) override { return body.size(); }
  void on_finish_impl(error_code&) override {}
};

void BM_BeastBasicParser(benchmark::State& state) {
  const std::string in = answers();
  for (auto _ : state) {
    int done = 0;
    std::size_t at = 0;
    while (at < in.size()) {
      std::optional<BeastAnswer> p;
      p.emplace();
      p->eager(true);
      while (!p->is_done()) {
        boost::beast::error_code ec;
        const std::size_t used = p->put(boost::asio::buffer(in.data() + at, in.size() - at), ec);
        if (ec) {
          state.SkipWithError(ec.message().c_str());
          return;
        }
        at += used;
      }
      ++done;
    }
    if (done != kAnswers) state.SkipWithError("wrong count");
    benchmark::DoNotOptimize(done);
  }
  state.SetItemsProcessed(state.iterations() * kAnswers);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(in.size()));
}
BENCHMARK(BM_BeastBasicParser);

}  // namespace
}  // namespace kiroku

BENCHMARK_MAIN();
