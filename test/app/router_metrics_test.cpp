// router_metrics_test.cpp - the request metrics of the router: answers by
// route and exact status, latency by route.
#include "app/router.h"

#include <gtest/gtest.h>

#include <string>

#include "ops/metrics.h"

namespace kiroku {
namespace {

http::Request request(http::Method method, std::string_view path) {
  http::Request r;
  r.method = method;
  r.path = path;
  r.target = path;
  return r;
}

TEST(RouterMetrics, AnswersByRouteAndExactStatusAndLatencyByRoute) {
  Registry registry(1);
  RouterDeps deps;
  deps.registry = &registry;
  Router router(deps);
  using M = http::Method;
  router.answered(request(M::get, "/collect"), 204, 10);
  router.answered(request(M::get, "/pixel.gif"), 200, 10);
  router.answered(request(M::post, "/events"), 202, 100);
  router.answered(request(M::post, "/events"), 202, 100);
  router.answered(request(M::post, "/events"), 503, 100);
  router.answered(request(M::put, "/files/a"), 201, 5000);
  router.answered(request(M::post, "/files"), 413, 5);
  router.answered(request(M::get, "/files/a"), 206, 50);
  router.answered(request(M::head, "/files/a"), 304, 50);
  router.answered(request(M::get, "/files"), 200, 50);
  router.answered(request(M::delete_, "/files/a"), 204, 50);
  router.answered(request(M::get, "/metrics"), 200, 50);
  router.answered(request(M::get, "/readyz"), 503, 50);
  router.answered(request(M::get, "/nowhere"), 404, 5);
  router.answered(request(M::other, ""), 431, 0);
  std::string out;
  registry.render_prometheus(out);
  for (const char* line : {
           "kiroku_http_requests_total{route=\"ingest\",status=\"204\"} 1\n",
           "kiroku_http_requests_total{route=\"ingest\",status=\"200\"} 1\n",
           "kiroku_http_requests_total{route=\"events\",status=\"202\"} 2\n",
           "kiroku_http_requests_total{route=\"events\",status=\"503\"} 1\n",
           "kiroku_http_requests_total{route=\"files_upload\",status=\"201\"} 1\n",
           "kiroku_http_requests_total{route=\"files_upload\",status=\"413\"} 1\n",
           "kiroku_http_requests_total{route=\"files_download\",status=\"206\"} 1\n",
           "kiroku_http_requests_total{route=\"files_download\",status=\"304\"} 1\n",
           "kiroku_http_requests_total{route=\"files_list\",status=\"200\"} 1\n",
           "kiroku_http_requests_total{route=\"files_other\",status=\"204\"} 1\n",
           "kiroku_http_requests_total{route=\"operations\",status=\"200\"} 1\n",
           "kiroku_http_requests_total{route=\"operations\",status=\"503\"} 1\n",
           "kiroku_http_requests_total{route=\"not_found\",status=\"404\"} 1\n",
           "kiroku_http_requests_total{route=\"malformed\",status=\"431\"} 1\n",
           "kiroku_http_request_seconds_count{route=\"ingest\"} 2\n",
           "kiroku_http_request_seconds_count{route=\"events\"} 3\n",
           "kiroku_http_request_seconds_count{route=\"files_upload\"} 2\n",
           "kiroku_http_request_seconds_count{route=\"files_download\"} 2\n",
           "kiroku_http_request_seconds_count{route=\"files_list\"} 1\n",
           "kiroku_http_request_seconds_count{route=\"operations\"} 2\n",
       })
    EXPECT_NE(out.find(line), std::string::npos) << line << "\n" << out;
  // Only the statuses seen have a series.
  EXPECT_EQ(out.find("kiroku_http_requests_total{route=\"events\",status=\"200\"}"), std::string::npos);
}

}  // namespace
}  // namespace kiroku
