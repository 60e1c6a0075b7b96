// file_store.h - the ObjectStore on a local directory (file:///dir), the
// default store.
//
// Layout: object `key` is the file {dir}/{partition}/{key} (HashPrefixLayout,
// '/' in keys makes subdirectories, created as needed and removed when
// emptied). An upload goes to a temporary file under {dir}/.incoming, is
// fsynced and renamed into place, so a reader sees the old object or the
// whole new one, never half of one; temporary files older than an hour are
// removed at open (what a crash left). A key that is a file and a directory
// at once ("a" and "a/b" in one partition) cannot both exist: the second
// upload fails with invalid.
// Safety: keys are validated (see validate_key) and every path is also
// resolved and checked to lie inside the directory; files are opened with
// O_NOFOLLOW, so neither a key nor a symlink placed in the tree leads out.
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
#include <string>

#include "store/key_layout.h"
#include "store/object_store.h"

namespace kiroku {

class FileStore final : public ObjectStore {
 public:
  // Creates dir if missing and checks it is a writable directory; invalid
  // naming the problem otherwise (or bad options).
  static Result<std::unique_ptr<FileStore>> open(const std::filesystem::path& dir,
                                                 const StoreOptions& options);
  ~FileStore() override;

  Result<std::unique_ptr<Upload>> begin_put(std::string_view key,
                                            std::optional<std::uint64_t> expected_size,
                                            std::function<void()> when_writable,
                                            std::string_view content_type = {}) override;
  Result<std::unique_ptr<Download>> get(std::string_view key, std::optional<ByteRange> range,
                                        GetSink sink) override;
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

 private:
  FileStore(std::filesystem::path root, const StoreOptions& options);

  std::filesystem::path root_;  // canonical
  StoreOptions options_;
  HashPrefixLayout layout_;
  PartPool pool_;
  // Last member: destroyed first, running what is posted while the rest lives.
  TransferThreads threads_;
};

}  // namespace kiroku
