// credentials.h - where the S3 client's AWS credentials come from: AWS's
// default chain (environment, shared files, web identity, container, EC2
// instance metadata, in the SDKs' order) and a provider that keeps temporary
// credentials fresh.
//
// Threads: CredentialsProvider::current() may be called from any thread (the
// S3 client thread calls it before signing each request); it copies a
// shared_ptr under a mutex and never waits for the network. Temporary
// credentials are refreshed by the provider's own thread, which swaps in a new
// immutable TimedCredentials; a request already signed keeps the ones it was
// signed with, so a refresh never fails a transfer in flight.
//
// Errors: resolving the chain fails (invalid) with one line naming every
// source tried and why it gave nothing. A refresh that fails keeps the old
// credentials and is retried; once they have expired, expired_message() says
// which source failed and how.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/status.h"
#include "store/s3/sigv4.h"

namespace kiroku::s3 {

// An environment variable's value, "" when unset (tests pass their own).
using EnvLookup = std::function<std::string(const char* name)>;
EnvLookup process_environment();  // std::getenv

// The sections of an AWS shared file, by profile name, each with its keys
// (lower-cased) and values. In the config file a section is "[profile NAME]"
// (or "[default]"); in the credentials file it is "[NAME]". '#' and ';' start
// comment lines (and inline comments after whitespace); indented lines
// continue the previous key's sub-properties and are ignored. A section named
// twice merges, the later keys winning.
using Profiles = std::map<std::string, std::map<std::string, std::string>>;
Profiles parse_profile_file(std::string_view text, bool config_file);

// Credentials and when they stop working (epoch: never).
struct TimedCredentials {
  Credentials credentials;
  std::chrono::system_clock::time_point expiration{};
  bool expires() const { return expiration != std::chrono::system_clock::time_point{}; }
  bool expired(std::chrono::system_clock::time_point now) const { return expires() && now >= expiration; }
};

// One source of the chain. fetch() blocks (file reads, HTTP with short
// timeouts); not_found means "not configured here" (the chain moves on
// quietly), any other error that it is configured but failed.
class CredentialSource {
 public:
  virtual ~CredentialSource() = default;
  virtual std::string name() const = 0;  // "environment", "container (http://...)"
  virtual Result<TimedCredentials> fetch() = 0;
};

// AWS's default chain for an environment, in order: environment variables;
// shared files (AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, AWS_PROFILE);
// web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN,
// AWS_ROLE_SESSION_NAME; STS at AWS_ENDPOINT_URL_STS or AWS_ENDPOINT_URL if
// set); container (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or _FULL_URI, with
// AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE or _TOKEN); EC2 instance metadata
// with IMDSv2 (AWS_EC2_METADATA_SERVICE_ENDPOINT, AWS_EC2_METADATA_DISABLED).
std::vector<std::unique_ptr<CredentialSource>> default_chain(const EnvLookup& env);

// The region when the store URL gives none: AWS_REGION, AWS_DEFAULT_REGION,
// then the profile's `region` in the config file; "" if none.
std::string default_region(const EnvLookup& env);

// When to refresh: `ahead` before expiration, or half the lifetime the
// credentials had when fetched if that is shorter. A failed refresh is
// retried after a quarter of the time left, within [retry_min, retry_max].
struct RefreshPolicy {
  std::chrono::milliseconds ahead{std::chrono::minutes(5)};
  std::chrono::milliseconds retry_min{std::chrono::seconds(1)};
  std::chrono::milliseconds retry_max{std::chrono::seconds(60)};
};

class CredentialsProvider {
 public:
  // Asks the sources in order and keeps the first that gives credentials; if
  // they expire, its refresher thread asks that source again (only that one).
  static Result<std::shared_ptr<CredentialsProvider>> resolve(std::vector<std::unique_ptr<CredentialSource>> chain,
                                                              RefreshPolicy policy = {});
  // Fixed credentials (never refreshed).
  static std::shared_ptr<CredentialsProvider> fixed(Credentials credentials);

  // Stops and joins the refresher (waiting out a fetch in progress, at most
  // its HTTP timeout).
  ~CredentialsProvider();
  CredentialsProvider(const CredentialsProvider&) = delete;
  CredentialsProvider& operator=(const CredentialsProvider&) = delete;

  // The newest credentials. Any thread; no network, no allocation.
  std::shared_ptr<const TimedCredentials> current() const;
  // "container (http://...)": the source the credentials come from.
  const std::string& source() const { return source_name_; }
  // Why current() is expired: the source and the last refresh error.
  std::string expired_message() const;
  // Credentials fetched since start (the first included).
  int fetches() const;

 private:
  CredentialsProvider(std::unique_ptr<CredentialSource> source, TimedCredentials first, RefreshPolicy policy);
  void refresh_loop();

  std::unique_ptr<CredentialSource> source_;
  std::string source_name_;
  RefreshPolicy policy_;
  mutable std::mutex mu_;  // guards everything below
  std::condition_variable wake_;
  bool stopping_ = false;
  std::shared_ptr<const TimedCredentials> current_;
  std::chrono::system_clock::time_point fetched_at_;
  std::string last_error_;
  int fetches_ = 1;
  std::thread refresher_;
};

}  // namespace kiroku::s3
