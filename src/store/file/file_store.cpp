// file_store.cpp - the local-directory ObjectStore: temporary file, fsync,
// rename; file I/O on the store's threads; listings merged across partitions.
#include "store/file/file_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <queue>
#include <random>
#include <system_error>
#include <utility>

#include <spdlog/spdlog.h>

#include "common/text.h"
#include "store/read_ahead.h"
#include "store/upload_parts.h"

namespace kiroku {

namespace fs = std::filesystem;

namespace {

constexpr const char* kShaAttribute = "user.kiroku.sha256";
// The uploader's Content-Type, on the object's own file (set before the
// rename, so it appears with the content and goes with it).
constexpr const char* kContentTypeAttribute = "user.kiroku.content_type";
constexpr std::size_t kMaxContentType = 256;  // as valid_content_type allows
constexpr const char* kIncoming = ".incoming";

// The Status of a failed system call on an object file.
Status io_status(std::string_view what, int err) {
  std::string m = std::string(what) + ": " + errno_text(err);
  switch (err) {
    case ENOENT: return Status::not_found(std::move(m));
    case ENOTDIR:
    case EISDIR:
    case ENAMETOOLONG:
    case ELOOP: return Status::invalid(std::move(m));
    case ENOSPC:
    case EDQUOT:
    case EMFILE:
    case ENFILE:
    case EINTR:
    case EAGAIN: return Status::transient(std::move(m));
    default: return Status::permanent(std::move(m));
  }
}

std::string hex(std::uint64_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  do {
    out.insert(out.begin(), kHex[v & 0xF]);
    v >>= 4;
  } while (v);
  return out;
}

std::chrono::system_clock::time_point mtime_of(const struct stat& st) {
  return std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
      std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
}

// ETag of an open object file: its recorded SHA-256, or size and mtime.
std::string etag_of(int fd, const struct stat& st) {
  char value[65];
  ssize_t n = fgetxattr(fd, kShaAttribute, value, sizeof(value) - 1);
  if (n == 64) return std::string(value, 64);
  std::uint64_t ns = std::uint64_t(st.st_mtim.tv_sec) * 1000000000u + st.st_mtim.tv_nsec;
  return hex(std::uint64_t(st.st_size)) + "-" + hex(ns);
}

// The stored Content-Type, or "" when none (or no xattrs).
std::string content_type_of(int fd) {
  char value[kMaxContentType];
  ssize_t n = fgetxattr(fd, kContentTypeAttribute, value, sizeof(value));
  return n > 0 ? std::string(value, static_cast<std::size_t>(n)) : std::string();
}

bool write_all(int fd, const std::byte* data, std::size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

std::string random_name() {
  static std::atomic<std::uint64_t> counter{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return hex(rng()) + "." + hex(counter.fetch_add(1)) + ".part";
}

}  // namespace

FileStore::Fd& FileStore::Fd::operator=(Fd&& o) noexcept {
  if (this != &o) reset(std::exchange(o.fd_, -1));
  return *this;
}

void FileStore::Fd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

// --- paths -----------------------------------------------------------------------
//
// Every path is walked from the store's root descriptor one name at a time
// with O_NOFOLLOW: a symbolic link planted in the tree is never followed, so
// nothing is created, read or removed outside the directory. Messages name
// keys, never the server's paths.

namespace {

// Where a validated key lives: partition directory ("" with one partition),
// the directory names below it, and the file's name.
struct KeyPlace {
  std::string partition;
  std::vector<std::string_view> dirs;  // view the key
  std::string_view leaf;
};

KeyPlace place_of(const HashPrefixLayout& layout, std::string_view key) {
  KeyPlace p;
  p.partition = layout.partition_prefix(layout.partition_of(key));
  if (!p.partition.empty()) p.partition.pop_back();  // the '/'
  std::size_t begin = 0;
  for (std::size_t slash; (slash = key.find('/', begin)) != std::string_view::npos; begin = slash + 1)
    p.dirs.push_back(key.substr(begin, slash - begin));
  p.leaf = key.substr(begin);
  return p;
}

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

// Opens directory `name` in `dir` without following a symlink; with create,
// makes it first if missing. Returns the descriptor or -1 with errno set
// (ELOOP: a symlink, ENOTDIR: anything else that is not a directory).
int open_dir_at(int dir, const char* name, bool create) {
  if (create && ::mkdirat(dir, name, 0755) != 0 && errno != EEXIST) return -1;
  const int fd = ::openat(dir, name, kDirFlags);
  if (fd < 0 && (errno == ENOTDIR || errno == ELOOP)) {
    // With O_DIRECTORY a symlink fails as ENOTDIR: tell the two apart.
    struct stat st {};
    errno = ::fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode) ? ELOOP : ENOTDIR;
  }
  return fd;
}

// Why a walk stopped at a name of `key`: what the caller answers.
Status walk_status(std::string_view key, int err, bool create) {
  const std::string k(key);
  if (!create && (err == ENOENT || err == ENOTDIR || err == ELOOP)) return Status::not_found("no object '" + k + "'");
  if (err == ELOOP) return Status::invalid("key '" + k + "' leads through a symbolic link in the store (not followed)");
  if (err == ENOTDIR) return Status::invalid("key '" + k + "' lies under an existing object");
  return io_status("directory of '" + k + "'", err);
}

using Fd = FileStore::Fd;

// Opens the directory that holds the file of `key` (the partition, then the
// dirs of `place`, from root_fd); with create, makes missing ones on the way.
Result<Fd> open_parent(int root_fd, const KeyPlace& place, std::string_view key, bool create) {
  Fd dir(::openat(root_fd, ".", kDirFlags));
  if (dir.get() < 0) return io_status("store directory", errno);
  std::string name;
  auto step = [&](std::string_view n) -> Status {
    name.assign(n);
    const int next = open_dir_at(dir.get(), name.c_str(), create);
    if (next < 0) return walk_status(key, errno, create);
    dir.reset(next);
    return {};
  };
  if (!place.partition.empty())
    if (Status s = step(place.partition); !s) return s;
  for (std::string_view d : place.dirs)
    if (Status s = step(d); !s) return s;
  return dir;
}

// Metadata of the object file `leaf` in `dir` (a regular file, not a symlink).
Result<ObjectMeta> stat_object(int dir, std::string_view leaf, std::string key) {
  const std::string name(leaf);
  Fd fd(::openat(dir, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ENOENT || err == ELOOP || err == ENOTDIR) return Status::not_found("no object '" + key + "'");
    return io_status("open '" + key + "'", err);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return io_status("stat '" + key + "'", errno);
  if (!S_ISREG(st.st_mode)) return Status::not_found("no object '" + key + "'");
  return ObjectMeta{std::move(key), std::uint64_t(st.st_size), etag_of(fd.get(), st), mtime_of(st),
                    content_type_of(fd.get())};
}

// The object `key` looked up from the root: its metadata, or not_found.
Result<ObjectMeta> stat_key(int root_fd, const HashPrefixLayout& layout, const std::string& key) {
  const KeyPlace place = place_of(layout, key);
  auto dir = open_parent(root_fd, place, key, false);
  if (!dir.ok()) return dir.status();
  return stat_object(dir->get(), place.leaf, key);
}

constexpr std::size_t kMaxSegmentBytes = 255;  // NAME_MAX of Linux file systems

// validate_key, and each segment a file name the file system takes.
Status validate_file_key(std::string_view key) {
  if (Status s = validate_key(key); !s) return s;
  std::size_t begin = 0;
  while (true) {
    const std::size_t slash = key.find('/', begin);
    const std::size_t end = slash == std::string_view::npos ? key.size() : slash;
    if (end - begin > kMaxSegmentBytes)
      return Status::invalid("key has a segment longer than " + std::to_string(kMaxSegmentBytes) +
                             " bytes (the file store's limit for one name)");
    if (slash == std::string_view::npos) return {};
    begin = slash + 1;
  }
}

// Removes the directories of `place` that are empty now, deepest first, up to
// the partition's (never it). `dir` is the leaf's directory; each step up goes
// through ".." and checks that the name in the parent is the directory just
// left, so a directory moved meanwhile stops it.
void remove_emptied_dirs(Fd dir, const KeyPlace& place) {
  for (std::size_t i = place.dirs.size(); i-- > 0;) {
    Fd up(::openat(dir.get(), "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (up.get() < 0) return;
    const std::string name(place.dirs[i]);
    struct stat here {
    }, named{};
    if (::fstat(dir.get(), &here) != 0 || ::fstatat(up.get(), name.c_str(), &named, AT_SYMLINK_NOFOLLOW) != 0 ||
        here.st_dev != named.st_dev || here.st_ino != named.st_ino)
      return;
    if (::unlinkat(up.get(), name.c_str(), AT_REMOVEDIR) != 0) return;
    dir = std::move(up);
  }
}

}  // namespace

// --- opening ----------------------------------------------------------------------

FileStore::FileStore(fs::path root, Fd root_fd, const StoreOptions& options)
    : root_(std::move(root)),
      root_fd_(std::move(root_fd)),
      options_(options),
      layout_(options.hash_prefix_chars),
      pool_(options.part_size, options.part_count),
      threads_(options.threads) {}

FileStore::~FileStore() = default;

Result<std::unique_ptr<FileStore>> FileStore::open(const fs::path& dir, const StoreOptions& options) {
  if (Status s = validate_store_options(options); !s) return s;
  if (dir.empty()) return Status::invalid("store: the directory is empty");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::invalid("store: cannot create " + dir.string() + ": " + ec.message());
  fs::path root = fs::canonical(dir, ec);
  if (ec) return Status::invalid("store: cannot resolve " + dir.string() + ": " + ec.message());
  if (!fs::is_directory(root, ec)) return Status::invalid("store: " + root.string() + " is not a directory");
  fs::path incoming = root / kIncoming;
  fs::create_directories(incoming, ec);
  if (ec) return Status::invalid("store: cannot create " + incoming.string() + ": " + ec.message());
  if (::access(incoming.c_str(), W_OK | X_OK) != 0)
    return Status::invalid("store: " + root.string() + " is not writable: " + errno_text(errno));
  // Temporary files a crash left behind; an hour old so that another
  // process's upload in progress is left alone.
  auto cutoff = fs::file_time_type::clock::now() - std::chrono::hours(1);
  for (auto it = fs::directory_iterator(incoming, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    std::error_code e;
    if (it->is_regular_file(e) && it->last_write_time(e) < cutoff) fs::remove(it->path(), e);
  }
  Fd root_fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (root_fd.get() < 0) return Status::invalid("store: cannot open " + root.string() + ": " + errno_text(errno));
  return std::unique_ptr<FileStore>(new FileStore(std::move(root), std::move(root_fd), options));
}

// --- uploads ------------------------------------------------------------------------
//
// The parts are written to a temporary file in order as they fill; finish()
// fsyncs it and renames it into place.

struct FileStore::UploadState final : UploadParts {
  FileStore* store;
  std::string content_type;

  // step() only.
  int fd = -1;
  fs::path temp;

  UploadState(Setup setup, FileStore* s, std::string type)
      : UploadParts(std::move(setup)), store(s), content_type(std::move(type)) {}
  ~UploadState() override { discard_temp(); }

  void step() override {
    std::deque<FullPart> batch;
    std::vector<PartPool::Part> drop;
    bool clean = false, commit = false;
    std::uint64_t total = 0;
    std::string sha;
    {
      std::lock_guard lock(mutex);
      if (ended) return;
      if (!failed.ok()) {
        drop_unsent_locked(drop);
        clean = true;
      } else {
        batch.swap(full);
        commit = caller == Caller::finishing;
        total = size;
        sha = sha_hex;
      }
    }
    drop.clear();
    if (clean) return clean_up();

    Status error;
    for (auto& p : batch) {
      if (!error.ok()) break;
      error = write_part(p.part.bytes().first(p.size));
    }
    const std::size_t written = batch.size();
    batch.clear();  // the parts go back to the pool, outside the lock
    bool notify, failing;
    {
      std::lock_guard lock(mutex);
      held -= written;
      if (!error.ok()) fail_locked(error);
      failing = !failed.ok();
      notify = writable_locked();
    }
    if (notify) notify_writable();
    if (failing) return schedule();  // the next run cleans up
    if (!commit) return;

    Result<PutResult> result = commit_object(total, std::move(sha));
    std::function<void(Result<PutResult>)> answer;
    {
      std::lock_guard lock(mutex);
      ended = true;
      if (!result.ok()) fail_locked(result.status());
      answer = take_done_locked();
    }
    if (answer) answer(std::move(result));
  }

  // After a failure or abort(): the temporary file goes; finish() hears the
  // error now, or when it comes.
  void clean_up() {
    discard_temp();
    std::function<void(Result<PutResult>)> answer;
    Status error;
    bool notify;
    {
      std::lock_guard lock(mutex);
      ended = true;
      error = failed;
      answer = take_done_locked();
      notify = writable_locked();
    }
    if (notify) notify_writable();
    if (answer) answer(std::move(error));
  }

  Status open_temp() {
    temp = store->root_ / kIncoming / random_name();
    fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return io_status("create a temporary file", errno);
    return {};
  }

  Status write_part(std::span<const std::byte> bytes) {
    if (fd < 0) {
      if (Status s = open_temp(); !s) return s;
    }
    if (!write_all(fd, bytes.data(), bytes.size())) return io_status("write '" + setup_.key + "'", errno);
    return {};
  }

  void discard_temp() {
    if (fd >= 0) {
      ::close(fd);
      fd = -1;
      ::unlink(temp.c_str());
    }
  }

  Result<PutResult> commit_object(std::uint64_t total, std::string sha) {
    const std::string& key = setup_.key;
    if (fd < 0) {  // an empty object
      if (Status s = open_temp(); !s) return s;
    }
    PutResult out{key, total, sha, std::move(sha)};
    auto fail = [&](Status s) -> Result<PutResult> {
      discard_temp();
      return s;
    };
    if (::fsync(fd) != 0) return fail(io_status("fsync '" + key + "'", errno));
    // Best effort: without xattrs the ETag falls back to size and mtime.
    fsetxattr(fd, kShaAttribute, out.sha256_hex.data(), out.sha256_hex.size(), 0);
    if (!content_type.empty() &&
        fsetxattr(fd, kContentTypeAttribute, content_type.data(), content_type.size(), 0) != 0) {
      // A file system without user xattrs: the object is kept, its type is not.
      static std::once_flag warned;
      const int err = errno;
      std::call_once(warned, [&] {
        spdlog::warn("file store: cannot keep Content-Type (xattr {}): {}", kContentTypeAttribute, errno_text(err));
      });
    }
    const KeyPlace place = place_of(store->layout_, key);
    const std::string leaf(place.leaf);
    Fd dir;
    {
      std::lock_guard lock(store->commit_mutex_);
      if (Status s = store->check_no_conflict(key); !s) return fail(s);
      // Another process may drop an emptied directory between the walk and
      // the rename: walk again then.
      for (int attempt = 0;; ++attempt) {
        auto parent = open_parent(store->root_fd_.get(), place, key, true);
        if (!parent.ok()) return fail(parent.status());
        dir = std::move(*parent);
        if (::renameat(AT_FDCWD, temp.c_str(), dir.get(), leaf.c_str()) == 0) break;
        const int err = errno;
        if (err == ENOENT && attempt < 3) continue;
        if (err == EISDIR || err == ENOTEMPTY || err == EEXIST)
          return fail(Status::invalid("key '" + key + "' is a directory of other objects"));
        return fail(io_status("store '" + key + "'", err));
      }
    }
    ::close(fd);
    fd = -1;
    ::fsync(dir.get());
    return out;
  }
};

Result<std::unique_ptr<Upload>> FileStore::begin_put(std::string_view key, std::optional<std::uint64_t> expected_size,
                                                     std::function<void()> when_writable,
                                                     std::string_view content_type) {
  if (Status s = validate_file_key(key); !s) return s;
  if (content_type.size() > kMaxContentType) return Status::invalid("Content-Type: longer than 256 bytes");
  UploadParts::Setup setup;
  setup.pool = &pool_;
  setup.threads = &threads_;
  setup.options = &options_;
  setup.key = std::string(key);
  setup.expected_size = expected_size;
  setup.when_writable = std::move(when_writable);
  // Writes to one file are sequential: one part filling while one is written.
  setup.cap = std::min<std::size_t>(options_.parts_per_transfer, 2);
  auto state = std::make_shared<UploadState>(std::move(setup), this, std::string(content_type));
  return std::unique_ptr<Upload>(new UploadHandle(std::move(state)));
}

// --- downloads -------------------------------------------------------------------------
//
// open() and fetch() run on the store's threads and answer at once: the file
// is opened and stat'ed, then each slot is filled by pread.

struct FileStore::DownloadState final : ReadAhead {
  FileStore* store;
  int fd = -1;  // open() and fetch() only

  DownloadState(Setup setup, GetSink sink, FileStore* s) : ReadAhead(std::move(setup), std::move(sink)), store(s) {}
  ~DownloadState() override {
    if (fd >= 0) ::close(fd);
  }

  void open() override { opened(find()); }

  Result<GetStart> find() {
    const std::string& key = setup_.key;
    const KeyPlace place = place_of(store->layout_, key);
    auto dir = open_parent(store->root_fd_.get(), place, key, false);
    if (!dir.ok()) return dir.status();
    const std::string leaf(place.leaf);
    fd = ::openat(dir->get(), leaf.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      const int err = errno;
      if (err == ENOENT || err == ELOOP || err == ENOTDIR) return Status::not_found("no object '" + key + "'");
      return io_status("open '" + key + "'", err);
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) return io_status("stat '" + key + "'", errno);
    if (!S_ISREG(st.st_mode)) return Status::not_found("no object '" + key + "'");
    GetStart info;
    info.object = {key, std::uint64_t(st.st_size), etag_of(fd, st), mtime_of(st), content_type_of(fd)};
    if (auto resolved = resolve_range(setup_.range, info.object.size)) {
      info.offset = resolved->offset;
      info.length = resolved->length;
    } else {
      info.range_unsatisfiable = true;
    }
    return info;
  }

  void fetch(std::uint64_t offset, std::span<std::byte> buffer) override {
    std::size_t got = 0;
    while (got < buffer.size()) {
      const ssize_t n = ::pread(fd, buffer.data() + got, buffer.size() - got, off_t(offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += std::size_t(n);
    }
    filled(offset, got < buffer.size() ? Status::permanent("read of '" + setup_.key + "' ended early") : Status());
  }
};

Result<std::unique_ptr<Download>> FileStore::get(std::string_view key, std::optional<ByteRange> range, GetSink sink) {
  if (Status s = validate_file_key(key); !s) return s;
  if (range && range->suffix == 0 && range->last && *range->last < range->first)
    return Status::invalid("range ends before it starts");
  ReadAhead::Setup setup;
  setup.pool = &pool_;
  setup.threads = &threads_;
  setup.options = &options_;
  setup.key = std::string(key);
  setup.range = range;
  // One chunk with the consumer while the next is read.
  setup.cap = std::min<std::size_t>(options_.parts_per_transfer, 2);
  auto state = std::make_shared<DownloadState>(std::move(setup), std::move(sink), this);
  state->begin();
  return std::unique_ptr<Download>(new DownloadHandle(std::move(state)));
}

// --- head, remove --------------------------------------------------------------------------

void FileStore::head(std::string_view key, std::function<void(Result<ObjectMeta>)> done) {
  Status valid = validate_file_key(key);
  threads_.post([this, key = std::string(key), done = std::move(done), valid]() mutable {
    if (!valid) return done(valid);
    done(stat_key(root_fd_.get(), layout_, key));
  });
}

void FileStore::remove(std::string_view key, std::function<void(Status)> done) {
  Status valid = validate_file_key(key);
  threads_.post([this, key = std::string(key), done = std::move(done), valid]() mutable {
    if (!valid) return done(valid);
    const KeyPlace place = place_of(layout_, key);
    std::lock_guard lock(commit_mutex_);
    auto dir = open_parent(root_fd_.get(), place, key, false);
    if (!dir.ok()) return done(dir.status().kind() == ErrorKind::not_found ? Status() : dir.status());
    const std::string leaf(place.leaf);
    struct stat st {};
    if (::fstatat(dir->get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
      return done(errno == ENOENT || errno == ENOTDIR ? Status() : io_status("stat '" + key + "'", errno));
    if (!S_ISREG(st.st_mode)) return done(Status());  // a directory of other keys, or not an object
    if (::unlinkat(dir->get(), leaf.c_str(), 0) != 0 && errno != ENOENT)
      return done(io_status("remove '" + key + "'", errno));
    remove_emptied_dirs(std::move(*dir), place);
    done(Status());
  });
}

Status FileStore::check_no_conflict(const std::string& key) {
  // An object that is a directory of this key: "a" or "a/b" for "a/b/c".
  for (std::size_t slash = key.find('/'); slash != std::string::npos; slash = key.find('/', slash + 1)) {
    const std::string above = key.substr(0, slash);
    if (stat_key(root_fd_.get(), layout_, above).ok())
      return Status::invalid("key '" + key + "' lies under the object '" + above +
                             "' (the file store cannot hold both)");
  }
  // Objects under this key, in any partition: a directory named like it.
  KeyPlace place = place_of(layout_, key);
  const std::string leaf(place.leaf);
  for (std::size_t p = 0; p < layout_.partition_count(); ++p) {
    place.partition = layout_.partition_prefix(p);
    if (!place.partition.empty()) place.partition.pop_back();
    auto dir = open_parent(root_fd_.get(), place, key, false);
    if (!dir.ok()) continue;
    struct stat st {};
    if (::fstatat(dir->get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) continue;
    if (::unlinkat(dir->get(), leaf.c_str(), AT_REMOVEDIR) == 0) continue;  // an empty one left behind
    return Status::invalid("key '" + key + "' is a directory of other objects (the file store cannot hold both)");
  }
  return {};
}

// --- listing --------------------------------------------------------------------------------

// Keys of one partition in bytewise order, from a walk of its directory tree
// that holds the sorted entries of the directories on the current path only.
struct FileStore::Walk {
  struct Entry {
    std::string name;  // a directory's name ends in '/': "a/" sorts like the keys under it
    bool dir;
  };
  struct Level {
    std::string path;  // key prefix of this directory: "" or "a/b/"
    std::vector<Entry> entries;
    std::size_t pos = 0;
  };

  int root_fd;
  std::string partition;  // its directory's name ("" with one partition)
  std::string prefix, after;
  std::vector<Level> stack;
  Status error;

  Walk(int root, std::string part, std::string p, std::string a)
      : root_fd(root), partition(std::move(part)), prefix(std::move(p)), after(std::move(a)) {
    push("");
  }

  // Whether keys under `path` (a file key, or a directory prefix ending in
  // '/') can be in the listing.
  bool wanted(const std::string& path, bool dir) const {
    if (dir) {
      bool prefix_ok = path.starts_with(prefix) || prefix.starts_with(path);
      bool after_ok = after.empty() || after.starts_with(path) || path > after;
      return prefix_ok && after_ok;
    }
    return path.starts_with(prefix) && (after.empty() || path > after);
  }

  void push(std::string path) {
    // The directory of `path` ("a/b/"), walked from the root like a key's.
    KeyPlace place = place_of(HashPrefixLayout(0), path);
    place.partition = partition;
    auto dir = open_parent(root_fd, place, path, false);
    if (!dir.ok()) {
      if (dir.status().kind() != ErrorKind::not_found) error = dir.status();
      return;
    }
    DIR* d = ::fdopendir(dir->get());
    if (!d) {
      error = io_status("list '" + path + "'", errno);
      return;
    }
    dir->release();
    Level level{std::move(path), {}, 0};
    while (dirent* e = ::readdir(d)) {
      std::string_view name = e->d_name;
      if (name == "." || name == "..") continue;
      unsigned char type = e->d_type;
      if (type == DT_UNKNOWN) {
        struct stat st {};
        if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
      }
      if (type != DT_DIR && type != DT_REG) continue;  // symlinks and the rest are not objects
      Entry entry{std::string(name), type == DT_DIR};
      if (entry.dir) entry.name += '/';
      if (wanted(level.path + entry.name, entry.dir)) level.entries.push_back(std::move(entry));
    }
    ::closedir(d);
    std::sort(level.entries.begin(), level.entries.end(),
              [](const Entry& a, const Entry& b) { return a.name < b.name; });
    stack.push_back(std::move(level));
  }

  // The next key, or nullopt at the end (or on an error, kept in `error`).
  std::optional<std::string> next() {
    while (!stack.empty() && error.ok()) {
      Level& top = stack.back();
      if (top.pos == top.entries.size()) {
        stack.pop_back();
        continue;
      }
      Entry& e = top.entries[top.pos++];
      std::string path = top.path + e.name;
      if (e.dir) {
        push(std::move(path));  // invalidates top
        continue;
      }
      return path;
    }
    return std::nullopt;
  }
};

void FileStore::list(ListRequest request, std::function<void(Result<ListPage>)> done) {
  threads_.post([this, request = std::move(request), done = std::move(done)]() mutable {
    if (Status s = validate_key_prefix(request.prefix, "prefix"); !s) return done(s);
    if (Status s = validate_key_prefix(request.after, "after"); !s) return done(s);
    if (request.limit < 1 || request.limit > 1000) return done(Status::invalid("limit must be 1..1000"));
    std::vector<Walk> walks;
    walks.reserve(layout_.partition_count());
    using Head = std::pair<std::string, std::size_t>;  // key, partition
    std::priority_queue<Head, std::vector<Head>, std::greater<Head>> heads;
    for (std::size_t p = 0; p < layout_.partition_count(); ++p) {
      std::string partition = layout_.partition_prefix(p);
      if (!partition.empty()) partition.pop_back();
      walks.emplace_back(root_fd_.get(), partition, request.prefix, request.after);
      if (partition.empty() && !walks.back().stack.empty()) {
        // One partition: the directory itself, whose .incoming is not a key.
        auto& entries = walks.back().stack.back().entries;
        std::erase_if(entries, [](const Walk::Entry& e) { return e.name == ".incoming/"; });
      }
      if (auto key = walks.back().next()) heads.emplace(std::move(*key), p);
      if (!walks.back().error.ok()) return done(walks.back().error);
    }
    ListPage page;
    while (!heads.empty()) {
      auto [key, p] = heads.top();
      heads.pop();
      if (page.objects.size() == request.limit) {
        page.next = page.objects.back().key;
        break;
      }
      auto meta = stat_key(root_fd_.get(), layout_, key);
      if (meta.ok()) page.objects.push_back(std::move(*meta));  // else removed meanwhile
      if (auto following = walks[p].next()) heads.emplace(std::move(*following), p);
      if (!walks[p].error.ok()) return done(walks[p].error);
    }
    done(std::move(page));
  });
}

}  // namespace kiroku
