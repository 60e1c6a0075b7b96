// redact.h - the one place that hides the secret of a URL before it is printed
// (the start-up log, configuration errors, sink and store messages).
#pragma once

#include <string>
#include <string_view>

namespace kiroku {

// `url` with the password of its userinfo replaced by ***, read the way the
// mysql:// parser reads it: the authority runs to the first '/' or '?', the
// userinfo to the last '@' in it, the password from the first ':' in that
// (mysql://ku:a@b@host/db -> mysql://ku:***@host/db). Text no parser would
// take is redacted too: with no "://" (a typo) the authority starts at the
// beginning, and with no '@' in the authority but one after it (a '/' or '?'
// in an unencoded password) everything from the authority's first ':' to the
// last '@' is hidden. A URL in a query parameter (s3://b?endpoint=http://u:p@h)
// is redacted the same way. Text without a password comes back unchanged.
std::string redact_url(std::string_view url);

}  // namespace kiroku
