// durability.h - what a 2xx to an ingestion request promises (PRODUCT.md).
#pragma once

namespace kiroku {

// none: accepted in memory; process: written to the spool; fsync: the spool
// write is synced; sink: committed by the database.
enum class Durability { none, process, fsync, sink };

constexpr const char* to_string(Durability d) {
  switch (d) {
    case Durability::none: return "none";
    case Durability::process: return "process";
    case Durability::fsync: return "fsync";
    case Durability::sink: return "sink";
  }
  return "?";
}

}  // namespace kiroku
