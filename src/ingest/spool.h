// spool.h - the crash-safety log: per-shard segment files of event records.
//
// Each IO thread (shard) appends the records (event.h) of the events it accepts
// to its current segment before it answers; when it hands its batch to the
// database writer it seals the segment and creates a new one, so a segment
// holds exactly one batch. A committed batch's segment is removed. On start,
// every segment still present is replayed (the sink is idempotent on event id).
//
// Layout under --spool-dir:
//   LOCK                          flock'ed for the life of the Spool
//   {seq:016x}-{shard:02x}.kseg   a segment; name order is creation order
//   *.kseg.corrupt                a quarantined segment, never replayed
//   *.kseg.conflict               events whose id a different row holds (set_aside), never replayed
// A segment is a 16-byte header (magic "KSEG", u32 version 1, u64 seq; all
// little-endian) followed by records back to back.
//
// Errors come back as Status: full (ENOSPC, EDQUOT, EFBIG: answer 503),
// transient (other I/O errors), permanent (the directory is unusable or held
// by another process), invalid (bad argument).
//
// The process must ignore SIGXFSZ (signal(SIGXFSZ, SIG_IGN)) so that a file
// size limit (RLIMIT_FSIZE) turns into EFBIG, hence Status::full, instead of
// killing it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kiroku {

inline constexpr std::size_t kSegmentHeaderBytes = 16;
inline constexpr std::uint32_t kSegmentVersion = 1;
inline constexpr unsigned kMaxSpoolShards = 256;  // the shard is two hex digits of the name

struct SpoolOptions {
  std::string dir;                       // created with its parents if missing
  std::uint64_t max_bytes = 1ull << 30;  // limit the caller checks with would_exceed()
  bool sync_directory = false;           // fsync the directory after creating a segment
};

struct SegmentInfo {
  std::string path;
  std::uint64_t seq = 0;
  unsigned shard = 0;
  std::uint64_t bytes = 0;  // file length, header included
};

// The open segment of one shard. Move-only; owns its file descriptor; used by
// one thread at a time. Must not outlive the Spool that created it.
class SegmentWriter {
 public:
  SegmentWriter() = default;  // no segment: is_open() is false
  SegmentWriter(SegmentWriter&& other) noexcept;
  SegmentWriter& operator=(SegmentWriter&& other) noexcept;
  SegmentWriter(const SegmentWriter&) = delete;
  SegmentWriter& operator=(const SegmentWriter&) = delete;
  ~SegmentWriter();  // closes like seal(); the file stays in the spool

  bool is_open() const { return fd_ >= 0; }

  // Appends `records` (whole encoded records) with write(2), looping on short
  // writes and EINTR, then counts them in the spool's size. Does not check
  // the size limit (the caller does, with Spool::would_exceed). On error the
  // file is truncated back to its previous length, so the segment keeps only
  // whole records and the append may be retried; if even that fails, or after
  // a failed sync(), the writer refuses further appends: seal it and create a
  // new segment. Returns full for ENOSPC/EDQUOT/EFBIG, transient otherwise.
  Status append(std::string_view records);

  // fdatasync: what was appended survives a machine crash once this returns ok.
  Status sync();

  // A second descriptor of the segment file (close-on-exec), for an
  // fdatasync on another thread (sync_fd); -1 if the segment is not open or
  // is broken. The caller closes it.
  int dup_fd() const;
  // After a failed sync on a dup_fd(): the writer refuses further appends.
  void mark_broken() { broken_ = true; }

  const SegmentInfo& info() const { return info_; }

  // Closes the file and returns its final description (for Spool::remove or
  // read_segment). The writer is then empty.
  SegmentInfo seal();

 private:
  friend class Spool;
  SegmentWriter(int fd, SegmentInfo info, std::atomic<std::uint64_t>* spool_bytes)
      : fd_(fd), info_(std::move(info)), spool_bytes_(spool_bytes) {}

  int fd_ = -1;
  bool broken_ = false;  // a failure left the file in a state appends must not build on
  SegmentInfo info_;
  std::atomic<std::uint64_t>* spool_bytes_ = nullptr;
};

// One spool directory, held exclusively by this object. Every method is safe
// from any thread.
class Spool {
 public:
  // Creates the directory if missing, locks it, and lists the segments left
  // by a previous run. permanent: the directory cannot be created, opened or
  // locked ("spool directory DIR is in use by another process").
  static Result<std::unique_ptr<Spool>> open(SpoolOptions options);

  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  // Creates a new segment for `shard` (< kMaxSpoolShards) with its header
  // written; its seq is above every seq seen so far.
  Result<SegmentWriter> create(unsigned shard);

  // The segments found by open(), in seq order (what to replay). This list is
  // not updated by later calls.
  const std::vector<SegmentInfo>& leftover() const { return leftover_; }

  // Deletes a segment (its batch is committed) and stops counting its bytes.
  // `segment` is what seal() or leftover() returned; remove each once. A
  // segment already gone counts as removed.
  Status remove(const SegmentInfo& segment);

  // Renames a segment to PATH.corrupt so it is kept for an operator but never
  // replayed again, and stops counting its bytes.
  Status quarantine(const SegmentInfo& segment);

  // Writes `records` (events the sink could not store because a different row
  // holds their id) durably to a new file PATH.conflict, kept for an operator
  // and never replayed; returns its path.
  Result<std::string> set_aside(std::string_view records);

  // Bytes of all live segments: those found at open plus everything created
  // and appended since, minus what was removed or quarantined.
  std::uint64_t bytes() const { return bytes_.load(std::memory_order_relaxed); }
  std::uint64_t max_bytes() const { return options_.max_bytes; }
  // True when appending `n` more bytes would pass max_bytes (answer 503).
  bool would_exceed(std::uint64_t n) const { return bytes() + n > options_.max_bytes; }

  const std::string& dir() const { return options_.dir; }

 private:
  Spool(SpoolOptions options, int lock_fd, int dir_fd);
  void forget_bytes(std::uint64_t n);

  SpoolOptions options_;
  int lock_fd_ = -1;
  int dir_fd_ = -1;
  std::vector<SegmentInfo> leftover_;
  std::atomic<std::uint64_t> next_seq_{1};
  std::atomic<std::uint64_t> bytes_{0};
};

// ---- Reading segments (replay, or a sealed batch whose memory copy is gone)

struct SegmentReadResult {
  enum class Tail {
    clean,    // every byte of the file was a whole, valid record
    torn,     // the file ends inside a record (or inside the header): a crash mid-write
    corrupt,  // bad header, or a record with a bad length or checksum
  };
  std::uint64_t records = 0;  // records handed to the callback
  std::uint64_t bytes = 0;    // their bytes (header excluded)
  Tail tail = Tail::clean;
  std::uint64_t tail_offset = 0;  // file offset where reading stopped (file size when clean)
};

// read_segment reads through a scratch buffer of this many bytes.
inline constexpr std::size_t kSegmentReadChunk = 1 << 20;

// Receives runs of consecutive valid records: `records` holds `count` whole
// records and is valid only during the call (it points into the scratch
// buffer). A non-ok Status stops the read and is returned by read_segment.
using SegmentRecordsFn = std::function<Status(std::string_view records, std::size_t count)>;

// Reads the segment at `path` in chunks of at most kSegmentReadChunk bytes
// through `scratch` (grown once, then reused), checks the header (magic,
// version, and the seq if the file name is a segment name), and hands the
// records to `on_records` in runs of at most `max_records`. Stops at the first
// torn or corrupt record and says so in the result; never fails on content.
// Errors: not_found (no such file), transient (read error), or the callback's.
Result<SegmentReadResult> read_segment(const std::string& path, std::vector<std::byte>& scratch,
                                       const SegmentRecordsFn& on_records, std::size_t max_records = 4096);

}  // namespace kiroku
