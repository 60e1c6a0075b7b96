// id.cpp - see id.h for the id layout.
#include "ingest/id.h"

namespace kiroku {

IdGenerator::IdGenerator(unsigned instance, unsigned shard, std::int64_t floor_unix_ms)
    : prefix_((static_cast<std::uint64_t>(instance % kMaxInstances) << (kIdShardBits + kIdSequenceBits)) |
              (static_cast<std::uint64_t>(shard % kMaxShards) << kIdSequenceBits)),
      // The first id is issued at floor + 1 ms at the earliest: an id from the
      // floor millisecond may already exist.
      last_ms_(floor_unix_ms > kIdEpochMs ? floor_unix_ms - kIdEpochMs : 0),
      seq_((1u << kIdSequenceBits) - 1) {}

void IdGenerator::set_instance(unsigned instance, std::int64_t floor_unix_ms) {
  const std::uint64_t shard_bits = prefix_ & (((1u << kIdShardBits) - 1) << kIdSequenceBits);
  prefix_ = (static_cast<std::uint64_t>(instance % kMaxInstances) << (kIdShardBits + kIdSequenceBits)) | shard_bits;
  const std::int64_t floor = floor_unix_ms > kIdEpochMs ? floor_unix_ms - kIdEpochMs : 0;
  if (floor >= last_ms_) {
    last_ms_ = floor;
    seq_ = (1u << kIdSequenceBits) - 1;
  }
}

}  // namespace kiroku
