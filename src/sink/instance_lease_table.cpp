// instance_lease_table.cpp - see instance_lease_table.h.
#include "sink/instance_lease_table.h"

#include <fmt/format.h>

#include <array>

namespace kiroku {

Result<unsigned> choose_instance(const std::vector<LeaseRow>& rows, std::string_view holder, int wanted,
                                 std::int64_t now_ms, std::int64_t ttl_ms) {
  std::array<const LeaseRow*, kLeasableInstances> by{};
  for (const LeaseRow& r : rows)
    if (r.instance < kLeasableInstances) by[r.instance] = &r;
  const auto live_other = [&](const LeaseRow* r) {
    return r != nullptr && r->holder != holder && r->renewed_at_ms > 0 && now_ms - r->renewed_at_ms < ttl_ms;
  };
  if (wanted >= 0) {
    if (static_cast<unsigned>(wanted) >= kLeasableInstances)
      return Status::invalid(fmt::format("instance {} is out of range 0-255", wanted));
    const LeaseRow* r = by[static_cast<unsigned>(wanted)];
    if (live_other(r))
      return Status::full(
          fmt::format("instance {} is held by another live instance (renewed {} ms ago, lease "
                      "{} ms)",
                      wanted, now_ms - r->renewed_at_ms, ttl_ms));
    return static_cast<unsigned>(wanted);
  }
  // The holder's own number first (a restart from the same spool directory).
  for (const LeaseRow* r : by)
    if (r != nullptr && r->holder == holder) return r->instance;
  for (unsigned i = 0; i < kLeasableInstances; ++i)
    if (by[i] == nullptr) return i;
  const LeaseRow* oldest = nullptr;
  for (const LeaseRow* r : by)
    if (!live_other(r) && (oldest == nullptr || r->renewed_at_ms < oldest->renewed_at_ms)) oldest = r;
  if (oldest == nullptr)
    return Status::full(fmt::format("all {} instance numbers are held by live instances", kLeasableInstances));
  return oldest->instance;
}

}  // namespace kiroku
