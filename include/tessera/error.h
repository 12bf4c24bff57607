// tessera::Error: the one exception type the library throws.
//
// Every user-facing failure (bad shapes, bad dtypes, unknown ops, malformed
// text, a failed compile) is reported as an Error whose message names the op,
// the node and the shapes at fault. The library never aborts.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace tessera {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
}  // namespace detail

// Builds an Error from a list of streamable pieces: fail("matmul: ", shape).
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  detail::append(os, parts...);
  throw Error(os.str());
}

}  // namespace tessera
