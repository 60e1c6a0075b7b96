// request_id.cpp - the thread's current request id.
#include "common/request_id.h"

namespace kiroku {
namespace {

thread_local std::string_view t_current;

}  // namespace

std::string_view current_request_id() { return t_current; }

RequestIdScope::RequestIdScope(std::string_view id) : previous_(t_current) { t_current = id; }

RequestIdScope::~RequestIdScope() { t_current = previous_; }

bool usable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (const char c : id)
    if (c < 0x21 || c > 0x7e || c == '"' || c == '\\') return false;
  return true;
}

}  // namespace kiroku
