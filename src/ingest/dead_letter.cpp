// dead_letter.cpp - append, lock, load and rewrite the dead-letter file (format in dead_letter.h).
#include "ingest/dead_letter.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <filesystem>
#include <system_error>

#include "common/file_io.h"
#include "common/text.h"

namespace kiroku {

DeadLetterFile::DeadLetterFile(DeadLetterOptions options, int fd, int dir_fd)
    : options_(std::move(options)), fd_(fd), dir_fd_(dir_fd) {}

DeadLetterFile::~DeadLetterFile() {
  if (fd_ >= 0) ::close(fd_);
  if (dir_fd_ >= 0) ::close(dir_fd_);  // releases the flock
}

Result<std::unique_ptr<DeadLetterFile>> DeadLetterFile::open(DeadLetterOptions options) {
  const std::string path = options.path;
  if (path.empty()) return Status::invalid("dead-letter file path is empty");
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status::permanent("dead-letter file " + path + ": cannot create its directory: " + ec.message());
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0)
    return Status::permanent("dead-letter file " + path + ": cannot open its directory: " + errno_text(errno));
  if (::flock(dir_fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(dir_fd);
    if (err == EWOULDBLOCK) return Status::permanent("dead-letter file " + path + " is in use by another process");
    return Status::permanent("dead-letter file " + path + ": cannot lock: " + errno_text(err));
  }
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    const int err = errno;
    ::close(dir_fd);
    return Status::permanent("dead-letter file " + path + ": cannot open: " + errno_text(err));
  }
  std::unique_ptr<DeadLetterFile> f(new DeadLetterFile(std::move(options), fd, dir_fd));
  if (Status st = f->load(); !st.ok()) return st;
  return f;
}

Status DeadLetterFile::load() {
  // Read it whole: it is bounded by max_bytes (a file larger than that, from
  // a run with a higher bound, is read too; appends then answer full).
  std::string text;
  char buf[1 << 16];
  for (off_t off = 0;;) {
    const ssize_t n = ::pread(fd_, buf, sizeof buf, off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::permanent("dead-letter file " + path() + ": cannot read: " + errno_text(errno));
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    off += n;
  }
  // A last line without its newline was cut by a crash mid-append; its
  // batch is still in the spool and will be written again.
  const std::size_t keep = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
  if (keep < text.size()) {
    if (::ftruncate(fd_, static_cast<off_t>(keep)) != 0)
      return Status::permanent("dead-letter file " + path() + ": cannot cut a torn line: " + errno_text(errno));
    text.resize(keep);
  }
  bytes_ = keep;
  std::vector<std::byte> scratch;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t nl = text.find('\n', pos);
    std::uint64_t id = 0;
    scratch.clear();
    if (parse_dead_letter_line(std::string_view(text).substr(pos, nl - pos), scratch, id)) ids_.insert(id);
    pos = nl + 1;
  }
  return {};
}

Status DeadLetterFile::append(std::string_view lines, const std::vector<std::uint64_t>& ids) {
  std::lock_guard lock(mu_);
  if (lines.empty()) return {};
  if (bytes_ + lines.size() > options_.max_bytes) {
    return Status::full("dead-letter file " + path() + " is full (" + std::to_string(bytes_) + " of " +
                        std::to_string(options_.max_bytes) + " bytes)");
  }
  int err = write_all(fd_, lines.data(), lines.size());
  if (err == 0) err = sync_fd(fd_, true);
  if (err != 0) {
    while (::ftruncate(fd_, static_cast<off_t>(bytes_)) != 0 && errno == EINTR) {}
    return io_error(err, "dead-letter file " + path() + ": append failed");
  }
  bytes_ += lines.size();
  ids_.insert(ids.begin(), ids.end());
  return {};
}

bool DeadLetterFile::holds(std::uint64_t id) const {
  std::lock_guard lock(mu_);
  return ids_.contains(id);
}

std::uint64_t DeadLetterFile::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

Status DeadLetterFile::replace(std::string_view lines) {
  std::lock_guard lock(mu_);
  const std::string tmp = path() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return io_error(errno, "dead-letter file " + tmp + ": cannot create");
  int err = write_all(fd, lines.data(), lines.size());
  if (err == 0) err = sync_fd(fd, false);
  ::close(fd);
  if (err == 0 && ::rename(tmp.c_str(), path().c_str()) != 0) err = errno;
  if (err == 0) err = sync_fd(dir_fd_, false);
  if (err != 0) {
    ::unlink(tmp.c_str());
    return io_error(err, "dead-letter file " + path() + ": cannot rewrite");
  }
  const int nfd = ::open(path().c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
  if (nfd < 0) return io_error(errno, "dead-letter file " + path() + ": cannot reopen");
  ::close(fd_);
  fd_ = nfd;
  bytes_ = lines.size();
  ids_.clear();
  std::vector<std::byte> scratch;
  std::size_t pos = 0;
  while (pos < lines.size()) {
    std::size_t nl = lines.find('\n', pos);
    if (nl == std::string_view::npos) nl = lines.size();
    std::uint64_t id = 0;
    scratch.clear();
    if (parse_dead_letter_line(lines.substr(pos, nl - pos), scratch, id)) ids_.insert(id);
    pos = nl + 1;
  }
  return {};
}

void append_dead_letter_line(std::string& out, const EventView& e, std::string_view reason, std::string_view error,
                             std::int64_t now_us) {
  out += '{';
  append_event_members(out, e);
  out += ",\"reason\":";
  out += json_string(reason);
  out += ",\"error\":";
  out += json_string(error);
  out += ",\"dead_lettered_at\":";
  out += std::to_string(now_us);
  out += "}\n";
}

void append_event_members(std::string& out, const EventView& e) {
  out += "\"id\":";
  out += std::to_string(e.id);
  out += ",\"received_at\":";
  out += std::to_string(e.received_us);
  out += ",\"at\":";
  out += std::to_string(e.at_us);
  out += ",\"name\":";
  out += json_string(e.name);
  out += ",\"value\":";
  out += std::to_string(e.value);
  out += ",\"client_id\":";
  out += e.client_id.empty() ? std::string("null") : json_string(e.client_id);
}

bool parse_dead_letter_line(std::string_view line, std::vector<std::byte>& records, std::uint64_t& id) {
  const auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return false;
  const auto field = [&](const char* k) -> const nlohmann::json* {
    const auto it = j.find(k);
    return it == j.end() ? nullptr : &*it;
  };
  const auto* jid = field("id");
  const auto* received = field("received_at");
  const auto* at = field("at");
  const auto* name = field("name");
  const auto* value = field("value");
  const auto* client = field("client_id");
  if (!jid || !jid->is_number_unsigned() || !received || !received->is_number_integer() || !at ||
      !at->is_number_integer() || !name || !name->is_string() || !value || !value->is_number_integer())
    return false;
  const auto& n = name->get_ref<const std::string&>();
  std::string c;
  if (client && client->is_string()) c = client->get<std::string>();
  else if (client && !client->is_null()) return false;
  if (n.empty() || n.size() > kMaxNameBytes || c.size() > kMaxClientIdBytes) return false;
  EventView e;
  e.id = jid->get<std::uint64_t>();
  e.received_us = received->get<std::int64_t>();
  e.at_us = at->get<std::int64_t>();
  e.value = value->get<std::int64_t>();
  e.name = n;
  e.client_id = c;
  append_record(records, e);
  id = e.id;
  return true;
}

}  // namespace kiroku
