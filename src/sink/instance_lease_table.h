// instance_lease_table.h - the choice behind Sink::lease_instance, shared by the sinks.
//
// Each sink keeps the leases in one table per database, `kiroku_instances`
// (tbl = the events table, instance 0..255, holder, renewed_at in Unix ms),
// reads its rows for one events table inside a transaction that locks them,
// asks choose_instance() which number to take, and writes that row back with
// the holder and the database's time.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kiroku {

inline constexpr std::string_view kInstancesTable = "kiroku_instances";
inline constexpr unsigned kLeasableInstances = 256;  // the 8 instance bits of an event id

struct LeaseRow {
  unsigned instance = 0;
  std::string holder;
  std::int64_t renewed_at_ms = 0;  // 0: released
};

// The number to write back for `holder` (see Sink::lease_instance), or full
// naming who holds it. Pure: unit-tested without a database.
Result<unsigned> choose_instance(const std::vector<LeaseRow>& rows, std::string_view holder, int wanted,
                                 std::int64_t now_ms, std::int64_t ttl_ms);

}  // namespace kiroku
