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

}  // namespace kiroku
