// file_store.h - the ObjectStore on a local directory (file:///dir), the
// default store.
//
// Layout: object `key` is the file {dir}/{partition}/{key} (HashPrefixLayout,
// '/' in keys makes subdirectories, created as needed and removed when
// emptied). An upload goes to a temporary file under {dir}/.incoming, is
// fsynced and renamed into place, so a reader sees the old object or the
// whole new one, never half of one; temporary files older than an hour are
// removed at open (what a crash left). A key and a key under it ("a" and
// "a/b") cannot both exist, whatever their partitions: the second upload
// fails with invalid (checked with the rename under one lock).
// Safety: keys are validated (see validate_key; here also no segment over
// 255 bytes, refused before any body byte) and every path is walked from the
// directory's descriptor one name at a time with O_NOFOLLOW (openat, mkdirat,
// renameat), so neither a key nor a symlink placed in the tree leads out, and
// nothing is created outside it. Error messages name keys, not paths.
// ETag: lowercase hex SHA-256 of the content, kept in the file's extended
// attribute user.kiroku.sha256; on a file system without user xattrs (or for
// a file put there by hand) it is "{size hex}-{mtime ns hex}" instead.
// Threads: all file I/O runs on the store's TransferThreads, never on the
// caller's thread; see object_store.h for the rest of the contract.
// Listing cost: each partition directory visited is read and sorted whole
// (O(n log n) for n entries of one directory, n/16 with 16 partitions for a
// flat key space); partitions are merged in key order and only the entries
// of the directories on the current path are held in memory.
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "store/key_layout.h"
#include "store/object_store.h"

namespace kiroku {

class FileStore final : public ObjectStore {
 public:
  // Creates dir if missing and checks it is a writable directory; invalid
  // naming the problem otherwise (or bad options).
  static Result<std::unique_ptr<FileStore>> open(const std::filesystem::path& dir, const StoreOptions& options);
  ~FileStore() override;

  Result<std::unique_ptr<Upload>> begin_put(std::string_view key, std::optional<std::uint64_t> expected_size,
                                            std::function<void()> when_writable,
                                            std::string_view content_type = {}) override;
  Result<std::unique_ptr<Download>> get(std::string_view key, std::optional<ByteRange> range, GetSink sink) override;
  void head(std::string_view key, std::function<void(Result<ObjectMeta>)> done) override;
  void remove(std::string_view key, std::function<void(Status)> done) override;
  void list(ListRequest request, std::function<void(Result<ListPage>)> done) override;
  const PartPool& pool() const override { return pool_; }

  const std::filesystem::path& root() const { return root_; }
  const HashPrefixLayout& layout() const { return layout_; }

  // The transfers and walks of file_store.cpp.
  struct UploadState;
  struct DownloadState;
  struct Walk;

  // An open descriptor, closed by the destructor.
  class Fd {
   public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    Fd& operator=(Fd&& o) noexcept;
    ~Fd() { reset(); }
    int get() const { return fd_; }
    int release() { return std::exchange(fd_, -1); }
    void reset(int fd = -1);

   private:
    int fd_ = -1;
  };

 private:
  FileStore(std::filesystem::path root, Fd root_fd, const StoreOptions& options);

  // Whether `key` may be stored beside what is there: no object is a
  // directory of it ("a" for "a/b"), and it is no directory of objects in any
  // partition. Call with commit_mutex_ held.
  Status check_no_conflict(const std::string& key);

  std::filesystem::path root_;  // canonical
  Fd root_fd_;                  // every path is walked from it (O_NOFOLLOW)
  std::mutex commit_mutex_;     // a commit's conflict check and rename, a remove
  StoreOptions options_;
  HashPrefixLayout layout_;
  PartPool pool_;
  // Last member: destroyed first, running what is posted while the rest lives.
  TransferThreads threads_;
};

}  // namespace kiroku
