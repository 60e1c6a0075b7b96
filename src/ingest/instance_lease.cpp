// instance_lease.cpp - see instance_lease.h.
#include "ingest/instance_lease.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <filesystem>
#include <random>

namespace kiroku {
namespace {

std::string random_holder() {
  std::random_device rd;
  std::string h;
  for (int i = 0; i < 4; ++i) h += fmt::format("{:08x}", rd());
  return h;
}

bool valid_holder(const std::string& h) {
  if (h.empty() || h.size() > 64) return false;
  for (char c : h)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

InstanceLease::InstanceLease(Sink& sink, InstanceLeaseOptions options) : sink_(sink), options_(std::move(options)) {}

InstanceLease::~InstanceLease() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

Status InstanceLease::save(unsigned n) {
  const std::string text = fmt::format("{} {}\n", holder_, n);
  if (::pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()) ||
      ::ftruncate(fd_, static_cast<off_t>(text.size())) != 0 || ::fdatasync(fd_) != 0)
    return Status::transient(fmt::format("{}/instance: cannot write: {}", options_.dir, std::strerror(errno)));
  return {};
}

Status InstanceLease::acquire(bool ask_database) {
  if (fd_ < 0) {
    std::error_code ec;
    std::filesystem::create_directories(options_.dir, ec);
    const std::string path = options_.dir + "/instance";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd_ < 0) return Status::permanent(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0)
      return Status::permanent(fmt::format("{} is in use by another process", path));
    char buf[128] = {};
    const ssize_t got = ::pread(fd_, buf, sizeof buf - 1, 0);
    char holder[80] = {};
    int n = -1;
    if (got > 0 && std::sscanf(buf, "%70s %d", holder, &n) == 2 && valid_holder(holder) && n >= 0 && n < 256) {
      holder_ = holder;
      remembered_ = n;
      struct stat st {};
      // Ids the previous run stored reach at most to about its last touch
      // plus one tick (used only when the table cannot be asked for its largest id).
      if (::fstat(fd_, &st) == 0)
        floor_ms_ = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000 + 2000;
    } else {
      holder_ = random_holder();
    }
  }
  Result<unsigned> r = ask_database ? sink_.lease_instance(holder_, options_.fixed, options_.ttl.count())
                                    : Result<unsigned>(Status::transient("the database is not reachable"));
  if (r.ok()) {
    number_ = static_cast<int>(*r);
    confirmed_ = true;
    return save(*r);
  }
  if (r.status().kind() != ErrorKind::transient) return r.status();
  // The database is away: keep the fixed or the remembered number.
  const int n = options_.fixed >= 0 ? options_.fixed : remembered_;
  if (n < 0) return r.status();
  number_ = n;
  spdlog::warn("instance number {} ({}) not confirmed: {}; it is renewed once the database answers", n,
               options_.fixed >= 0 ? "--instance" : "kept from the last run in " + options_.dir, r.status().message());
  return save(static_cast<unsigned>(n));
}

void InstanceLease::start(std::function<void(unsigned)> on_change) {
  on_change_ = std::move(on_change);
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "kiroku-lease");
    run();
  });
}

void InstanceLease::run() {
  auto next_renewal = std::chrono::steady_clock::now() + (confirmed_ ? options_.renew_every : std::chrono::seconds(1));
  std::unique_lock lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::seconds(1), [&] { return stop_; });
    if (stop_) break;
    lock.unlock();
    ::futimens(fd_, nullptr);  // the id floor of the next start from this directory
    if (std::chrono::steady_clock::now() >= next_renewal) {
      renew();
      next_renewal = std::chrono::steady_clock::now() + (confirmed_ ? options_.renew_every : std::chrono::seconds(1));
    }
    lock.lock();
  }
}

void InstanceLease::renew() {
  const int current = number_.load();
  Result<unsigned> r = sink_.lease_instance(holder_, current, options_.ttl.count());
  if (r.ok()) {
    if (!confirmed_) spdlog::info("instance number {} confirmed by the database", *r);
    confirmed_ = true;
    unreachable_logged_ = false;
    return;
  }
  if (r.status().kind() != ErrorKind::full) {
    if (!unreachable_logged_) spdlog::warn("instance number {}: cannot renew: {}", current, r.status().message());
    unreachable_logged_ = true;
    return;
  }
  // Taken by another instance while this one could not renew: move to another.
  Result<unsigned> other = sink_.lease_instance(holder_, -1, options_.ttl.count());
  if (!other.ok()) {
    spdlog::error("instance number {} is held by another instance ({}) and no other can be leased: {}", current,
                  r.status().message(), other.status().message());
    return;
  }
  spdlog::error("instance number {} was taken by another instance ({}); new ids use {}", current, r.status().message(),
                *other);
  number_ = static_cast<int>(*other);
  confirmed_ = true;
  (void)save(*other);
  if (on_change_) on_change_(*other);
}

void InstanceLease::release() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  const int n = number_.load();
  if (n >= 0 && confirmed_) {
    if (Status st = sink_.release_instance(static_cast<unsigned>(n), holder_); !st.ok())
      spdlog::warn("instance number {}: cannot release: {}", n, st.message());
  }
}

}  // namespace kiroku
