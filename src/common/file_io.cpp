// file_io.cpp - see file_io.h.
#include "common/file_io.h"

#include <unistd.h>

#include <cerrno>

#include "common/text.h"

namespace kiroku {

int write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;  // not expected from a regular file; do not spin
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return 0;
}

int sync_fd(int fd, bool data_only) {
  while ((data_only ? ::fdatasync(fd) : ::fsync(fd)) != 0) {
    if (errno != EINTR) return errno;
  }
  return 0;
}

Status io_error(int err, const std::string& what) {
  std::string m = what + ": " + errno_text(err);
  if (err == ENOSPC || err == EDQUOT || err == EFBIG) return Status::full(std::move(m));
  return Status::transient(std::move(m));
}

}  // namespace kiroku
