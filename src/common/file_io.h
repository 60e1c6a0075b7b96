// file_io.h - the POSIX file calls the spool and the dead-letter file share:
// whole writes, syncs that retry EINTR, and errno turned into a Status.
#pragma once

#include <cstddef>
#include <string>

#include "common/status.h"

namespace kiroku {

// Like write(2) but writes everything: loops on short writes and EINTR.
// Returns 0 or the errno of the failure.
int write_all(int fd, const char* p, std::size_t n);

// fdatasync (data_only) or fsync, retried on EINTR. Returns 0 or the errno.
int sync_fd(int fd, bool data_only);

// "what: <errno text>": full for the errors that mean no room (ENOSPC,
// EDQUOT, EFBIG: the caller answers 503), transient otherwise.
Status io_error(int err, const std::string& what);

}  // namespace kiroku
