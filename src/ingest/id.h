// id.h - server-assigned 64-bit event ids, unique across threads, restarts
// and instances sharing one database.
//
// Layout, most significant first:
//   41 bits  milliseconds since 2024-01-01T00:00:00Z (until 2093)
//    8 bits  instance number (leased through the sink, or --instance; 0..255)
//    6 bits  shard (IO thread, 0..63)
//    9 bits  sequence within the millisecond (512 per ms per shard)
// Ids from one generator strictly increase. When a shard issues more than
// 512 ids in a millisecond it borrows the next millisecond (a logical clock
// ahead of the wall clock); at start the clock is floored above every id the
// sink and the spool may already hold, so a restart never reuses an id even
// if the wall clock went back.
#pragma once

#include <cstdint>

namespace kiroku {

inline constexpr std::int64_t kIdEpochMs = 1704067200000;  // 2024-01-01T00:00:00Z
inline constexpr unsigned kIdInstanceBits = 8;
inline constexpr unsigned kIdShardBits = 6;
inline constexpr unsigned kIdSequenceBits = 9;
inline constexpr unsigned kMaxInstances = 1u << kIdInstanceBits;
inline constexpr unsigned kMaxShards = 1u << kIdShardBits;

// Milliseconds since the Unix epoch encoded in an id.
constexpr std::int64_t id_unix_ms(std::uint64_t id) {
  return static_cast<std::int64_t>(id >> (kIdInstanceBits + kIdShardBits + kIdSequenceBits)) + kIdEpochMs;
}

// One per shard; not thread-safe (each IO thread owns its own).
class IdGenerator {
 public:
  IdGenerator(unsigned instance, unsigned shard, std::int64_t floor_unix_ms = 0);

  // Issues the next ids under `instance`, above `floor_unix_ms` (the largest
  // id the sink holds), never below an id issued before.
  void set_instance(unsigned instance, std::int64_t floor_unix_ms);

  // The next id for an event received at `now_unix_ms`.
  std::uint64_t next(std::int64_t now_unix_ms) {
    std::int64_t ms = now_unix_ms - kIdEpochMs;
    if (ms > last_ms_) {
      last_ms_ = ms;
      seq_ = 0;
    } else if (++seq_ == (1u << kIdSequenceBits)) {
      ++last_ms_;
      seq_ = 0;
    }
    return (static_cast<std::uint64_t>(last_ms_) << (kIdInstanceBits + kIdShardBits + kIdSequenceBits)) | prefix_ |
           seq_;
  }

 private:
  std::uint64_t prefix_;  // instance and shard bits, in place
  std::int64_t last_ms_;
  std::uint32_t seq_ = 0;
};

}  // namespace kiroku
