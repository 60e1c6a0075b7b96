// credentials.cpp - AWS's credential chain and the refreshing provider.
//
// The requests are the ones AWS's SDKs make (checked against their provider
// code): IMDSv2 is PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-
// seconds, then GETs of /latest/meta-data/iam/security-credentials/ and
// .../<role> with X-aws-ec2-metadata-token; container credentials are a GET
// with Accept: application/json and the raw token as Authorization; web
// identity is an unsigned form POST of AssumeRoleWithWebIdentity to STS.
#include "store/s3/credentials.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <sstream>
#include <utility>

#include <spdlog/spdlog.h>

namespace kiroku::s3 {
namespace {

using Clock = std::chrono::system_clock;

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The whole file, or not_found if it cannot be opened.
Result<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::not_found(path + ": cannot be read");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// "~/x" with $HOME; other paths as they are.
std::string expand_home(const EnvLookup& env, std::string path) {
  if (path.starts_with("~/")) path = env("HOME") + path.substr(1);
  return path;
}

// "2026-12-02T17:00:00Z" (fractional seconds and a +00:00 offset allowed).
Result<Clock::time_point> parse_iso8601(std::string_view s) {
  std::tm tm{};
  int y, mo, d, h, mi, sec;
  char tail[16] = {};
  std::string text(trim(s));
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%15s", &y, &mo, &d, &h, &mi, &sec, tail) < 6)
    return Status::invalid("bad Expiration '" + text + "'");
  std::string_view rest = tail;
  if (rest.starts_with(".")) {
    rest.remove_prefix(1);
    while (!rest.empty() && std::isdigit(static_cast<unsigned char>(rest.front()))) rest.remove_prefix(1);
  }
  if (!rest.empty() && rest != "Z" && rest != "+00:00")
    return Status::invalid("Expiration '" + text + "' is not in UTC");
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  return Clock::from_time_t(::timegm(&tm));
}

std::string format_iso8601(Clock::time_point t) {
  std::time_t tt = Clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// ---------------------------------------------------------------------------
// A blocking HTTP exchange (libcurl easy), for the credential endpoints only
// ---------------------------------------------------------------------------

struct HttpAnswer {
  long status = 0;
  std::string body;
};

struct HttpCall {
  const char* method = "GET";
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;
  long connect_timeout_ms = 1000;
  long timeout_ms = 2000;
  bool no_proxy = true;  // link-local and loopback endpoints never go through a proxy
};

constexpr std::size_t kMaxAnswer = 64 * 1024;

std::size_t collect(char* data, std::size_t size, std::size_t n, void* user) {
  auto* out = static_cast<std::string*>(user);
  if (out->size() + size * n > kMaxAnswer) return 0;  // fails the transfer
  out->append(data, size * n);
  return size * n;
}

// transient on a transport failure; any HTTP status is an answer.
Result<HttpAnswer> http_call(const HttpCall& call) {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  CURL* easy = curl_easy_init();
  if (!easy) return Status::transient("curl_easy_init failed");
  HttpAnswer answer;
  char error[CURL_ERROR_SIZE] = {};
  curl_slist* list = nullptr;
  for (const auto& h : call.headers) list = curl_slist_append(list, h.c_str());
  list = curl_slist_append(list, "Expect:");
  curl_easy_setopt(easy, CURLOPT_URL, call.url.c_str());
  curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, call.method);
  if (std::string_view(call.method) == "POST" || !call.body.empty()) {
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, call.body.c_str());
    curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, static_cast<long>(call.body.size()));
  }
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, call.connect_timeout_ms);
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, call.timeout_ms);
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, &answer.body);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error);
  if (call.no_proxy) curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
  CURLcode rc = curl_easy_perform(easy);
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &answer.status);
  curl_slist_free_all(list);
  curl_easy_cleanup(easy);
  if (rc != CURLE_OK) {
    return Status::transient(std::string(call.method) + " " + call.url + ": " +
                             (error[0] ? error : curl_easy_strerror(rc)));
  }
  return answer;
}

std::string short_body(std::string_view body) {
  std::string s(trim(body.substr(0, 200)));
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\r', ' ');
  return s;
}

// The JSON that the container and instance metadata endpoints answer.
Result<TimedCredentials> parse_credentials_json(std::string_view body, std::string_view what) {
  auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return Status::transient(std::string(what) + ": the answer is not a JSON object");
  if (auto code = json.find("Code"); code != json.end() && code->is_string() && *code != "Success")
    return Status::transient(std::string(what) + ": Code " + code->get<std::string>());
  auto str = [&](const char* key) {
    auto it = json.find(key);
    return it != json.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  TimedCredentials out;
  out.credentials = {str("AccessKeyId"), str("SecretAccessKey"), str("Token")};
  if (out.credentials.access_key_id.empty() || out.credentials.secret_access_key.empty())
    return Status::transient(std::string(what) + ": the answer has no AccessKeyId or SecretAccessKey");
  if (std::string e = str("Expiration"); !e.empty()) {
    auto t = parse_iso8601(e);
    if (!t.ok()) return Status::transient(std::string(what) + ": " + t.status().message());
    out.expiration = *t;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------

class EnvironmentSource final : public CredentialSource {
 public:
  explicit EnvironmentSource(const EnvLookup& env)
      : id_(env("AWS_ACCESS_KEY_ID")), secret_(env("AWS_SECRET_ACCESS_KEY")), token_(env("AWS_SESSION_TOKEN")) {}
  std::string name() const override { return "environment"; }
  Result<TimedCredentials> fetch() override {
    if (id_.empty() && secret_.empty()) return Status::not_found("AWS_ACCESS_KEY_ID is not set");
    if (id_.empty()) return Status::invalid("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");
    if (secret_.empty()) return Status::invalid("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
    return TimedCredentials{{id_, secret_, token_}, {}};
  }

 private:
  std::string id_, secret_, token_;
};

// The shared files' paths and profile name for an environment.
struct SharedFiles {
  std::string credentials, config, profile;
  explicit SharedFiles(const EnvLookup& env) {
    credentials = env("AWS_SHARED_CREDENTIALS_FILE");
    config = env("AWS_CONFIG_FILE");
    profile = env("AWS_PROFILE");
    credentials = expand_home(env, credentials.empty() ? "~/.aws/credentials" : credentials);
    config = expand_home(env, config.empty() ? "~/.aws/config" : config);
    if (profile.empty()) profile = "default";
  }
  // The profile's keys: the config file's, overridden by the credentials file's.
  std::map<std::string, std::string> profile_keys() const {
    std::map<std::string, std::string> keys;
    for (bool is_config : {true, false}) {
      auto text = read_text_file(is_config ? config : credentials);
      if (!text.ok()) continue;
      Profiles p = parse_profile_file(*text, is_config);
      if (auto it = p.find(profile); it != p.end()) {
        for (const auto& [k, v] : it->second) keys[k] = v;
      }
    }
    return keys;
  }
};

class ProfileSource final : public CredentialSource {
 public:
  explicit ProfileSource(const EnvLookup& env) : files_(env) {}
  std::string name() const override { return "shared files (profile '" + files_.profile + "')"; }
  Result<TimedCredentials> fetch() override {
    auto keys = files_.profile_keys();
    auto get = [&](const char* k) {
      auto it = keys.find(k);
      return it == keys.end() ? std::string() : it->second;
    };
    TimedCredentials out{{get("aws_access_key_id"), get("aws_secret_access_key"), get("aws_session_token")}, {}};
    if (out.credentials.access_key_id.empty() && out.credentials.secret_access_key.empty()) {
      for (const char* unsupported : {"role_arn", "credential_process", "sso_session", "sso_start_url"}) {
        if (keys.contains(unsupported))
          return Status::invalid("profile uses " + std::string(unsupported) + ", which kiroku does not support");
      }
      return Status::not_found("no aws_access_key_id in " + files_.credentials + " or " + files_.config);
    }
    if (out.credentials.access_key_id.empty() || out.credentials.secret_access_key.empty())
      return Status::invalid("profile has only one of aws_access_key_id and aws_secret_access_key");
    return out;
  }

 private:
  SharedFiles files_;
};

class WebIdentitySource final : public CredentialSource {
 public:
  explicit WebIdentitySource(const EnvLookup& env)
      : token_file_(env("AWS_WEB_IDENTITY_TOKEN_FILE")),
        role_arn_(env("AWS_ROLE_ARN")),
        session_name_(env("AWS_ROLE_SESSION_NAME")) {
    endpoint_ = env("AWS_ENDPOINT_URL_STS");
    if (endpoint_.empty()) endpoint_ = env("AWS_ENDPOINT_URL");
    if (endpoint_.empty()) {
      const std::string region = default_region(env);
      endpoint_ = region.empty() ? "https://sts.amazonaws.com" : "https://sts." + region + ".amazonaws.com";
    }
    while (endpoint_.ends_with('/')) endpoint_.pop_back();
    if (session_name_.empty()) {
      session_name_ = "kiroku-" + std::to_string(Clock::to_time_t(Clock::now()));
    }
  }
  std::string name() const override { return "web identity (STS " + endpoint_ + ")"; }
  Result<TimedCredentials> fetch() override {
    if (token_file_.empty()) return Status::not_found("AWS_WEB_IDENTITY_TOKEN_FILE is not set");
    if (role_arn_.empty()) return Status::invalid("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not");
    auto token = read_text_file(token_file_);  // read each time: EKS rotates it
    if (!token.ok()) return Status::transient(token.status().message());
    HttpCall call;
    call.method = "POST";
    call.url = endpoint_ + "/";
    call.headers = {"Content-Type: application/x-www-form-urlencoded; charset=utf-8", "Accept:"};
    call.body = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=";
    uri_encode(role_arn_, false, call.body);
    call.body += "&RoleSessionName=";
    uri_encode(session_name_, false, call.body);
    call.body += "&WebIdentityToken=";
    uri_encode(trim(*token), false, call.body);
    call.connect_timeout_ms = 5000;
    call.timeout_ms = 10000;
    call.no_proxy = false;
    auto answer = http_call(call);
    if (!answer.ok()) return answer.status();
    const std::string what = "STS AssumeRoleWithWebIdentity";
    if (answer->status != 200)
      return Status::transient(what + ": HTTP " + std::to_string(answer->status) + " " + short_body(answer->body));
    pugi::xml_document doc;
    if (!doc.load_buffer(answer->body.data(), answer->body.size()))
      return Status::transient(what + ": the answer is not XML");
    pugi::xml_node c =
        doc.child("AssumeRoleWithWebIdentityResponse").child("AssumeRoleWithWebIdentityResult").child("Credentials");
    TimedCredentials out{
        {c.child_value("AccessKeyId"), c.child_value("SecretAccessKey"), c.child_value("SessionToken")}, {}};
    if (out.credentials.access_key_id.empty() || out.credentials.secret_access_key.empty())
      return Status::transient(what + ": the answer has no Credentials");
    if (std::string_view e = c.child_value("Expiration"); !e.empty()) {
      auto t = parse_iso8601(e);
      if (!t.ok()) return Status::transient(what + ": " + t.status().message());
      out.expiration = *t;
    }
    return out;
  }

 private:
  std::string token_file_, role_arn_, session_name_, endpoint_;
};

// Hosts a plain-http FULL_URI may name (the SDKs' rule): loopback, or ECS/EKS's.
bool allowed_container_host(std::string_view url) {
  if (url.starts_with("https://")) return true;
  if (!url.starts_with("http://")) return false;
  std::string_view host = url.substr(7);
  host = host.substr(0, host.find_first_of("/?#"));
  if (host.starts_with("[")) {
    host = host.substr(1, host.find(']') - 1);
  } else {
    host = host.substr(0, host.rfind(':'));
  }
  return host.starts_with("127.") || host == "::1" || host == "localhost" || host == "169.254.170.2" ||
         host == "169.254.170.23" || host == "fd00:ec2::23";
}

class ContainerSource final : public CredentialSource {
 public:
  explicit ContainerSource(const EnvLookup& env)
      : token_file_(env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")), token_(env("AWS_CONTAINER_AUTHORIZATION_TOKEN")) {
    if (std::string rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"); !rel.empty()) {
      url_ = "http://169.254.170.2" + (rel.starts_with('/') ? rel : "/" + rel);
    } else {
      url_ = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    }
  }
  std::string name() const override { return url_.empty() ? "container" : "container (" + url_ + ")"; }
  Result<TimedCredentials> fetch() override {
    if (url_.empty()) return Status::not_found("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI / _FULL_URI are not set");
    if (!allowed_container_host(url_))
      return Status::invalid(
          "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback address, "
          "169.254.170.2, 169.254.170.23 or fd00:ec2::23");
    HttpCall call;
    call.url = url_;
    call.headers = {"Accept: application/json"};
    std::string token = token_;
    if (!token_file_.empty()) {  // read each time: it is rotated
      auto t = read_text_file(token_file_);
      if (!t.ok()) return Status::transient(t.status().message());
      token = std::string(trim(*t));
    }
    if (token.find_first_of("\r\n") != std::string::npos)
      return Status::invalid("the container authorization token contains a line break");
    if (!token.empty()) call.headers.push_back("Authorization: " + token);
    call.timeout_ms = 5000;
    auto answer = http_call(call);
    if (!answer.ok()) return answer.status();
    if (answer->status != 200)
      return Status::transient("HTTP " + std::to_string(answer->status) + " " + short_body(answer->body));
    return parse_credentials_json(answer->body, "container credentials");
  }

 private:
  std::string token_file_, token_, url_;
};

class InstanceMetadataSource final : public CredentialSource {
 public:
  explicit InstanceMetadataSource(const EnvLookup& env)
      : disabled_(lower(trim(env("AWS_EC2_METADATA_DISABLED"))) == "true"),
        endpoint_(env("AWS_EC2_METADATA_SERVICE_ENDPOINT")) {
    if (endpoint_.empty()) endpoint_ = "http://169.254.169.254";
    while (endpoint_.ends_with('/')) endpoint_.pop_back();
  }
  std::string name() const override { return "EC2 instance metadata (" + endpoint_ + ")"; }
  Result<TimedCredentials> fetch() override {
    if (disabled_) return Status::not_found("AWS_EC2_METADATA_DISABLED is true");
    // IMDSv2: a session token first. 403/404/405 mean IMDSv1 only (as the SDKs take it).
    HttpCall put;
    put.method = "PUT";
    put.url = endpoint_ + "/latest/api/token";
    put.headers = {"X-aws-ec2-metadata-token-ttl-seconds: 21600"};
    auto token = http_call(put);
    if (!token.ok()) return token.status();
    std::vector<std::string> headers;
    if (token->status == 200) {
      std::string t(trim(token->body));
      if (t.empty() || t.find_first_of("\r\n") != std::string::npos)
        return Status::transient("the IMDSv2 token answer is empty or malformed");
      headers.push_back("X-aws-ec2-metadata-token: " + t);
    } else if (token->status != 403 && token->status != 404 && token->status != 405) {
      return Status::transient("PUT /latest/api/token: HTTP " + std::to_string(token->status));
    }
    const std::string base = endpoint_ + "/latest/meta-data/iam/security-credentials/";
    HttpCall get_role;
    get_role.url = base;
    get_role.headers = headers;
    auto roles = http_call(get_role);
    if (!roles.ok()) return roles.status();
    if (roles->status == 404) return Status::invalid("the instance has no IAM role");
    if (roles->status != 200) return Status::transient("GET " + base + ": HTTP " + std::to_string(roles->status));
    std::string_view role = trim(roles->body);
    role = trim(role.substr(0, role.find('\n')));
    if (role.empty() || role.find_first_of("/?#% ") != std::string_view::npos)
      return Status::transient("GET " + base + ": no usable role name");
    HttpCall get_creds;
    get_creds.url = base + std::string(role);
    get_creds.headers = headers;
    auto creds = http_call(get_creds);
    if (!creds.ok()) return creds.status();
    if (creds->status != 200)
      return Status::transient("GET " + get_creds.url + ": HTTP " + std::to_string(creds->status));
    return parse_credentials_json(creds->body, "instance metadata credentials");
  }

 private:
  bool disabled_;
  std::string endpoint_;
};

}  // namespace

// ---------------------------------------------------------------------------
// Environment, profiles, region
// ---------------------------------------------------------------------------

EnvLookup process_environment() {
  return [](const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
  };
}

Profiles parse_profile_file(std::string_view text, bool config_file) {
  Profiles out;
  std::map<std::string, std::string>* section = nullptr;  // nullptr: outside a usable section
  while (!text.empty()) {
    std::size_t eol = text.find('\n');
    std::string_view raw = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    if (!raw.empty() && raw.back() == '\r') raw.remove_suffix(1);
    const bool indented = !raw.empty() && (raw.front() == ' ' || raw.front() == '\t');
    std::string_view line = trim(raw);
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    if (line.front() == '[') {
      section = nullptr;
      std::size_t close = line.find(']');
      if (close == std::string_view::npos) continue;
      std::string_view name = trim(line.substr(1, close - 1));
      if (config_file) {
        if (name.starts_with("profile") && name.size() > 7 && std::isspace(static_cast<unsigned char>(name[7]))) {
          name = trim(name.substr(7));
        } else if (name != "default") {
          continue;  // [sso-session x], [services x], or a bare name: not a profile
        }
      }
      if (name.empty()) continue;
      section = &out[std::string(name)];
      continue;
    }
    if (indented || !section) continue;  // a sub-property, or a key outside any section
    std::size_t eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    std::string key = lower(trim(line.substr(0, eq)));
    std::string_view value = trim(line.substr(eq + 1));
    for (std::size_t i = 1; i < value.size(); ++i) {  // " #comment" / " ;comment"
      if ((value[i] == '#' || value[i] == ';') && std::isspace(static_cast<unsigned char>(value[i - 1]))) {
        value = trim(value.substr(0, i));
        break;
      }
    }
    if (!key.empty()) (*section)[key] = std::string(value);
  }
  return out;
}

std::string default_region(const EnvLookup& env) {
  for (const char* name : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    if (std::string v(trim(env(name))); !v.empty()) return v;
  }
  auto keys = SharedFiles(env).profile_keys();
  if (auto it = keys.find("region"); it != keys.end()) return it->second;
  return {};
}

std::vector<std::unique_ptr<CredentialSource>> default_chain(const EnvLookup& env) {
  std::vector<std::unique_ptr<CredentialSource>> chain;
  chain.push_back(std::make_unique<EnvironmentSource>(env));
  chain.push_back(std::make_unique<ProfileSource>(env));
  chain.push_back(std::make_unique<WebIdentitySource>(env));
  chain.push_back(std::make_unique<ContainerSource>(env));
  chain.push_back(std::make_unique<InstanceMetadataSource>(env));
  return chain;
}

// ---------------------------------------------------------------------------
// CredentialsProvider
// ---------------------------------------------------------------------------

Result<std::shared_ptr<CredentialsProvider>> CredentialsProvider::resolve(
    std::vector<std::unique_ptr<CredentialSource>> chain, RefreshPolicy policy) {
  std::string tried;
  for (auto& source : chain) {
    auto got = source->fetch();
    if (got.ok()) {
      std::shared_ptr<CredentialsProvider> p(new CredentialsProvider(std::move(source), std::move(*got), policy));
      return p;
    }
    tried += (tried.empty() ? "" : "; ") + source->name() + ": " + got.status().message();
  }
  return Status::invalid("no AWS credentials found; tried " + tried);
}

std::shared_ptr<CredentialsProvider> CredentialsProvider::fixed(Credentials credentials) {
  return std::shared_ptr<CredentialsProvider>(
      new CredentialsProvider(nullptr, TimedCredentials{std::move(credentials), {}}, {}));
}

CredentialsProvider::CredentialsProvider(std::unique_ptr<CredentialSource> source, TimedCredentials first,
                                         RefreshPolicy policy)
    : source_(std::move(source)),
      source_name_(source_ ? source_->name() : "configuration"),
      policy_(policy),
      current_(std::make_shared<const TimedCredentials>(std::move(first))),
      fetched_at_(Clock::now()) {
  if (source_ && current_->expires()) refresher_ = std::thread([this] { refresh_loop(); });
}

CredentialsProvider::~CredentialsProvider() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (refresher_.joinable()) refresher_.join();
}

std::shared_ptr<const TimedCredentials> CredentialsProvider::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

int CredentialsProvider::fetches() const {
  std::lock_guard lock(mu_);
  return fetches_;
}

std::string CredentialsProvider::expired_message() const {
  std::lock_guard lock(mu_);
  return "S3 credentials from " + source_name_ + " expired at " + format_iso8601(current_->expiration) +
         " and could not be refreshed: " + (last_error_.empty() ? "no answer yet" : last_error_);
}

void CredentialsProvider::refresh_loop() {
  // When to ask again for credentials fetched at `at`.
  auto due = [this](const TimedCredentials& c, Clock::time_point at) {
    const auto lifetime = std::chrono::duration_cast<std::chrono::milliseconds>(c.expiration - at);
    if (lifetime <= policy_.retry_min) return at + policy_.retry_min;  // short-lived: do not spin
    return c.expiration - std::min(policy_.ahead, lifetime / 2);
  };
  std::unique_lock lock(mu_);
  Clock::time_point next = due(*current_, fetched_at_);
  while (!stopping_) {
    if (wake_.wait_until(lock, next, [this] { return stopping_; })) break;
    lock.unlock();
    auto got = source_->fetch();  // the network, without the lock
    const auto now = Clock::now();
    lock.lock();
    if (got.ok()) {
      current_ = std::make_shared<const TimedCredentials>(std::move(*got));
      fetched_at_ = now;
      ++fetches_;
      last_error_.clear();
      if (!current_->expires()) break;
      next = due(*current_, now);
      spdlog::info("s3 credentials: refreshed from {}, they expire at {}", source_name_,
                   format_iso8601(current_->expiration));
    } else {
      last_error_ = got.status().message();
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(current_->expiration - now);
      next = now + std::clamp(left / 4, policy_.retry_min, policy_.retry_max);
      spdlog::warn("s3 credentials: refresh from {} failed (the current ones expire at {}): {}", source_name_,
                   format_iso8601(current_->expiration), last_error_);
    }
  }
}

}  // namespace kiroku::s3
