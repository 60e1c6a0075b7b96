// connection_fuzz.cpp - fuzz target: whole HTTP connections (request streams
// with chunked bodies, trailers, pipelining, Connection: close, streamed and
// early-answered bodies, split into reads of every size) through the real
// engine on loopback sockets (invariants in connection_check.h).
#include <cstddef>
#include <cstdint>

#include "fuzz/connection_check.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kiroku::fuzz::check_connection(kiroku::fuzz::as_text(data, size));
  return 0;
}
