// s3_requests.h - what a test reads from the request lines a proxy in front
// of S3 saw (CuttableProxy::seen, FaultyS3Proxy::dump).
#pragma once

#include <cctype>
#include <string>
#include <string_view>

namespace kiroku::test {

// The uploadId of the first "METHOD ...?uploadId=..." request in `seen`;
// empty if there is none.
inline std::string upload_id_in(std::string_view seen, std::string_view method) {
  const std::size_t at = seen.find(std::string(method) + " ");
  if (at == std::string_view::npos) return {};
  std::size_t id = seen.find("uploadId=", at);
  if (id == std::string_view::npos) return {};
  id += 9;
  std::size_t end = id;
  while (end < seen.size() && std::isalnum(static_cast<unsigned char>(seen[end]))) ++end;
  return std::string(seen.substr(id, end - id));
}

}  // namespace kiroku::test
