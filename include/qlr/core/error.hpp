// SPDX-License-Identifier: Apache-2.0
// qlr's one exception type and the checks that throw it at API boundaries; below the
// boundary, code is noexcept.
#pragma once

#include <fmt/core.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace qlr {

/// What kind of bad input an Error reports, so callers can branch without parsing text.
enum class Errc { invalid_argument, shape_mismatch, unsupported, corrupt_file, io };

/// Thrown for bad input; what() reads "<entity>: <argument> = <value>; expected <rule>".
class Error : public std::runtime_error {
 public:
  /// An error of kind `code` with the full message `what`.
  Error(Errc code, const std::string& what) : std::runtime_error(what), code_(code) {}
  /// The kind of error.
  [[nodiscard]] Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

namespace detail {
/// Formats and throws; cold and out of line so that the callers' fast paths stay small.
template <class... Args>
[[noreturn, gnu::cold, gnu::noinline]] void fail(Errc code, fmt::format_string<Args...> format,
                                                 Args&&... args) {
  throw Error(code, fmt::format(format, std::forward<Args>(args)...));
}
}  // namespace detail

}  // namespace qlr

/// Throws qlr::Error of kind `errc` with a fmt-formatted message when `cond` is false.
#define QLR_CHECK(cond, errc, ...)                                 \
  do {                                                             \
    if (!(cond)) [[unlikely]]                                      \
      ::qlr::detail::fail(::qlr::Errc::errc, __VA_ARGS__);         \
  } while (false)
