// spool.cpp - segment files of the spool: create, append, list, read back (format in spool.h).
#include "ingest/spool.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "common/event.h"
#include "common/file_io.h"
#include "common/text.h"

namespace kiroku {
namespace {

static_assert(std::endian::native == std::endian::little, "segment headers are written as-is");

constexpr char kMagic[4] = {'K', 'S', 'E', 'G'};
constexpr std::string_view kSegmentSuffix = ".kseg";
constexpr std::string_view kQuarantineSuffix = ".corrupt";
constexpr std::string_view kConflictSuffix = ".conflict";
constexpr std::size_t kSegmentNameBytes = 16 + 1 + 2 + kSegmentSuffix.size();

bool parse_hex(std::string_view s, std::uint64_t& out) {
  out = 0;
  for (char c : s) {
    unsigned d;
    if (c >= '0' && c <= '9') {
      d = static_cast<unsigned>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      d = static_cast<unsigned>(c - 'a' + 10);
    } else {
      return false;  // names are written in lower case
    }
    out = out << 4 | d;
  }
  return true;
}

// Parses "{seq:016x}-{shard:02x}.kseg", optionally followed by ".corrupt".
bool parse_segment_name(std::string_view name, std::uint64_t& seq, unsigned& shard, bool& quarantined) {
  quarantined = name.size() == kSegmentNameBytes + kQuarantineSuffix.size() && name.ends_with(kQuarantineSuffix);
  if (quarantined) name.remove_suffix(kQuarantineSuffix.size());
  if (name.size() != kSegmentNameBytes || name[16] != '-' || !name.ends_with(kSegmentSuffix)) return false;
  std::uint64_t s = 0;
  if (!parse_hex(name.substr(0, 16), seq) || !parse_hex(name.substr(17, 2), s)) return false;
  shard = static_cast<unsigned>(s);
  return true;
}

void close_fd(int fd) {
  if (fd >= 0) ::close(fd);
}

}  // namespace

// ---- SegmentWriter

SegmentWriter::SegmentWriter(SegmentWriter&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      broken_(other.broken_),
      info_(std::move(other.info_)),
      spool_bytes_(other.spool_bytes_) {}

SegmentWriter& SegmentWriter::operator=(SegmentWriter&& other) noexcept {
  if (this != &other) {
    close_fd(fd_);
    fd_ = std::exchange(other.fd_, -1);
    broken_ = other.broken_;
    info_ = std::move(other.info_);
    spool_bytes_ = other.spool_bytes_;
  }
  return *this;
}

SegmentWriter::~SegmentWriter() { close_fd(fd_); }

Status SegmentWriter::append(std::string_view records) {
  if (fd_ < 0) return Status::invalid("spool segment is not open");
  if (broken_) {
    return Status::transient("spool segment " + info_.path + " is unusable after an earlier error; seal it");
  }
  if (records.empty()) return {};
  const int err = write_all(fd_, records.data(), records.size());
  if (err != 0) {
    // Cut the partial records off so the segment stays a run of whole records
    // (O_APPEND puts the next write at the new end).
    while (::ftruncate(fd_, static_cast<off_t>(info_.bytes)) != 0) {
      if (errno != EINTR) {
        broken_ = true;
        break;
      }
    }
    return io_error(err, "spool segment " + info_.path + ": append failed");
  }
  info_.bytes += records.size();
  spool_bytes_->fetch_add(records.size(), std::memory_order_relaxed);
  return {};
}

Status SegmentWriter::sync() {
  if (fd_ < 0) return Status::invalid("spool segment is not open");
  if (broken_) {
    return Status::transient("spool segment " + info_.path + " is unusable after an earlier error; seal it");
  }
  int r;
  while ((r = ::fdatasync(fd_)) != 0 && errno == EINTR) {}
  if (r != 0) {
    // After a failed fdatasync the kernel may have dropped the dirty pages, so
    // a later success would prove nothing: never trust this file again.
    broken_ = true;
    return io_error(errno, "spool segment " + info_.path + ": sync failed");
  }
  return {};
}

int SegmentWriter::dup_fd() const {
  if (fd_ < 0 || broken_) return -1;
  return ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
}

SegmentInfo SegmentWriter::seal() {
  close_fd(std::exchange(fd_, -1));
  return info_;
}

// ---- Spool

Spool::Spool(SpoolOptions options, int lock_fd, int dir_fd)
    : options_(std::move(options)), lock_fd_(lock_fd), dir_fd_(dir_fd) {}

Spool::~Spool() {
  close_fd(dir_fd_);
  close_fd(lock_fd_);  // releases the flock
}

Result<std::unique_ptr<Spool>> Spool::open(SpoolOptions options) {
  const std::string dir = options.dir;  // options is moved into the Spool below
  if (dir.empty()) return Status::invalid("spool directory is empty");
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::permanent("spool directory " + dir + ": cannot create: " + ec.message());

  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    return Status::permanent("spool directory " + dir + ": cannot open: " + errno_text(errno));
  }
  // flock belongs to the open file description, so a second open() of LOCK,
  // even in this process, cannot take it while this one is held.
  const int lock_fd = ::openat(dir_fd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (lock_fd < 0) {
    const int err = errno;
    close_fd(dir_fd);
    return Status::permanent("spool directory " + dir + ": cannot create LOCK: " + errno_text(err));
  }
  std::unique_ptr<Spool> spool(new Spool(std::move(options), lock_fd, dir_fd));
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return Status::permanent("spool directory " + dir + " is in use by another process");
    return Status::permanent("spool directory " + dir + ": cannot lock: " + errno_text(errno));
  }

  // List the segments of earlier runs. A duplicated descriptor because
  // closedir() closes the one it was given.
  const int list_fd = ::dup(dir_fd);
  DIR* d = list_fd >= 0 ? ::fdopendir(list_fd) : nullptr;
  if (d == nullptr) {
    const int err = errno;
    close_fd(list_fd);
    return Status::permanent("spool directory " + dir + ": cannot list: " + errno_text(err));
  }
  std::uint64_t max_seq = 0;
  std::uint64_t total = 0;
  int list_err = 0;
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(d);
    if (entry == nullptr) {
      list_err = errno;
      break;
    }
    std::uint64_t seq = 0;
    unsigned shard = 0;
    bool quarantined = false;
    if (!parse_segment_name(entry->d_name, seq, shard, quarantined)) continue;
    struct stat st;
    if (::fstatat(dir_fd, entry->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) continue;
    max_seq = std::max(max_seq, seq);  // quarantined names too: a new segment never takes one
    if (quarantined) continue;
    const auto size = static_cast<std::uint64_t>(st.st_size);
    spool->leftover_.push_back({spool->options_.dir + "/" + entry->d_name, seq, shard, size});
    total += size;
  }
  ::closedir(d);
  if (list_err != 0) {
    return Status::permanent("spool directory " + dir + ": cannot list: " + errno_text(list_err));
  }
  std::sort(spool->leftover_.begin(), spool->leftover_.end(), [](const SegmentInfo& a, const SegmentInfo& b) {
    return a.seq != b.seq ? a.seq < b.seq : a.shard < b.shard;
  });
  spool->next_seq_.store(max_seq + 1, std::memory_order_relaxed);
  spool->bytes_.store(total, std::memory_order_relaxed);
  return spool;
}

Result<SegmentWriter> Spool::create(unsigned shard) {
  if (shard >= kMaxSpoolShards) {
    return Status::invalid("spool shard " + std::to_string(shard) + " is out of range");
  }
  const std::uint64_t seq = next_seq_.fetch_add(1, std::memory_order_relaxed);
  char name[kSegmentNameBytes + 1];
  std::snprintf(name, sizeof name, "%016llx-%02x.kseg", static_cast<unsigned long long>(seq), shard);
  SegmentInfo info{options_.dir + "/" + name, seq, shard, kSegmentHeaderBytes};

  const int fd = ::open(info.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) return io_error(errno, "spool segment " + info.path + ": cannot create");

  char header[kSegmentHeaderBytes];
  std::memcpy(header, kMagic, 4);
  std::memcpy(header + 4, &kSegmentVersion, 4);
  std::memcpy(header + 8, &seq, 8);
  int err = write_all(fd, header, sizeof header);
  if (err == 0 && options_.sync_directory) {
    while (::fsync(dir_fd_) != 0) {
      if (errno != EINTR) {
        err = errno;
        break;
      }
    }
  }
  if (err != 0) {
    ::close(fd);
    ::unlink(info.path.c_str());
    return io_error(err, "spool segment " + info.path + ": cannot create");
  }
  bytes_.fetch_add(kSegmentHeaderBytes, std::memory_order_relaxed);
  return SegmentWriter(fd, std::move(info), &bytes_);
}

void Spool::forget_bytes(std::uint64_t n) {
  // Saturating: a segment removed twice must not wrap the count around.
  std::uint64_t cur = bytes_.load(std::memory_order_relaxed);
  while (!bytes_.compare_exchange_weak(cur, cur - std::min(cur, n), std::memory_order_relaxed)) {}
}

Status Spool::remove(const SegmentInfo& segment) {
  if (::unlink(segment.path.c_str()) != 0 && errno != ENOENT) {
    return io_error(errno, "spool segment " + segment.path + ": cannot remove");
  }
  forget_bytes(segment.bytes);
  return {};
}

Status Spool::quarantine(const SegmentInfo& segment) {
  const std::string to = segment.path + std::string(kQuarantineSuffix);
  if (::rename(segment.path.c_str(), to.c_str()) != 0 && errno != ENOENT) {
    return io_error(errno, "spool segment " + segment.path + ": cannot rename to " + to);
  }
  forget_bytes(segment.bytes);
  return {};
}

Result<std::string> Spool::set_aside(std::string_view records) {
  Result<SegmentWriter> w = create(kMaxSpoolShards - 1);
  if (!w.ok()) return w.status();
  Status st = w->append(records);
  if (st.ok()) st = w->sync();
  const SegmentInfo info = w->seal();
  const std::string to = info.path + std::string(kConflictSuffix);
  if (st.ok() && ::rename(info.path.c_str(), to.c_str()) != 0)
    st = io_error(errno, "spool segment " + info.path + ": cannot rename to " + to);
  forget_bytes(info.bytes);
  if (!st.ok()) {
    ::unlink(info.path.c_str());
    return st;
  }
  return to;
}

// ---- Reading

Result<SegmentReadResult> read_segment(const std::string& path, std::vector<std::byte>& scratch,
                                       const SegmentRecordsFn& on_records, std::size_t max_records) {
  max_records = std::max<std::size_t>(max_records, 1);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::not_found("spool segment " + path + " does not exist");
    return io_error(errno, "spool segment " + path + ": cannot open");
  }
  struct FdGuard {
    int fd;
    ~FdGuard() { ::close(fd); }
  } guard{fd};

  static_assert(kSegmentReadChunk > 2 * kMaxRecordBytes);
  if (scratch.size() < kSegmentReadChunk) scratch.resize(kSegmentReadChunk);
  char* const buf = reinterpret_cast<char*>(scratch.data());
  const std::size_t cap = kSegmentReadChunk;

  // Unread bytes are buf[begin, end); buf[0] is at file offset `base`.
  std::size_t begin = 0;
  std::size_t end = 0;
  std::uint64_t base = 0;
  bool eof = false;
  // Moves the unread bytes to the front and reads until the buffer is full or
  // the file ends. Returns 0 or an errno.
  auto fill = [&]() -> int {
    if (begin > 0) {
      std::memmove(buf, buf + begin, end - begin);
      base += begin;
      end -= begin;
      begin = 0;
    }
    while (!eof && end < cap) {
      const ssize_t n = ::read(fd, buf + end, cap - end);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno;
      }
      if (n == 0) eof = true;
      end += static_cast<std::size_t>(n);
    }
    return 0;
  };

  SegmentReadResult result;
  if (const int err = fill(); err != 0) {
    return io_error(err, "spool segment " + path + ": read failed");
  }
  if (end < kSegmentHeaderBytes) {  // crashed before the header was complete
    result.tail = SegmentReadResult::Tail::torn;
    return result;
  }
  std::uint32_t version = 0;
  std::uint64_t header_seq = 0;
  std::memcpy(&version, buf + 4, 4);
  std::memcpy(&header_seq, buf + 8, 8);
  // A file named as a segment must carry that seq (catches a damaged header).
  const std::size_t slash = path.find_last_of('/');
  const std::string_view file_name = std::string_view(path).substr(slash == std::string::npos ? 0 : slash + 1);
  std::uint64_t name_seq = 0;
  unsigned name_shard = 0;
  bool quarantined = false;
  const bool named = parse_segment_name(file_name, name_seq, name_shard, quarantined);
  if (std::memcmp(buf, kMagic, 4) != 0 || version != kSegmentVersion || (named && name_seq != header_seq)) {
    result.tail = SegmentReadResult::Tail::corrupt;
    return result;
  }
  begin = kSegmentHeaderBytes;

  // Runs of valid records are handed over in place: buf[run_begin, begin).
  std::size_t run_begin = begin;
  std::size_t run_count = 0;
  auto flush = [&]() -> Status {
    if (run_count == 0) return {};
    Status s = on_records({buf + run_begin, begin - run_begin}, run_count);
    result.records += run_count;
    result.bytes += begin - run_begin;
    run_begin = begin;
    run_count = 0;
    return s;
  };
  for (;;) {
    EventView event;
    std::size_t size = 0;
    const DecodeResult d =
        begin < end ? decode_record({buf + begin, end - begin}, event, size) : DecodeResult::need_more;
    if (d == DecodeResult::ok) {
      begin += size;
      if (++run_count == max_records) {
        if (Status s = flush(); !s.ok()) return s;
      }
      continue;
    }
    if (Status s = flush(); !s.ok()) return s;
    if (d == DecodeResult::corrupt) {
      result.tail = SegmentReadResult::Tail::corrupt;
      result.tail_offset = base + begin;
      return result;
    }
    if (eof) {
      result.tail = begin == end ? SegmentReadResult::Tail::clean : SegmentReadResult::Tail::torn;
      result.tail_offset = base + begin;
      return result;
    }
    if (const int err = fill(); err != 0) {
      return io_error(err, "spool segment " + path + ": read failed");
    }
    run_begin = begin;
  }
}

}  // namespace kiroku
