// SPDX-License-Identifier: Apache-2.0
// What every `qlr` subcommand shares: one-line errors with exit status 1, help text, number
// flags, and a progress bar on stderr.
#pragma once

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unistd.h>

#include <fmt/core.h>

namespace qlr_cli {

/// Prints `message` as the one-line error of a bad command line and exits with status 1.
[[noreturn]] inline void usage_error(const std::string& message) {
  std::fprintf(stderr, "qlr: %s (see qlr --help)\n", message.c_str());
  std::exit(1);
}

/// Writes `text` to stdout and exits with status 0.
[[noreturn]] inline void print_and_exit(std::string_view text) {
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::exit(0);
}

/// `message` on one line (newlines become spaces), so stderr holds exactly one line.
inline std::string one_line(std::string message) {
  std::replace(message.begin(), message.end(), '\n', ' ');
  std::replace(message.begin(), message.end(), '\r', ' ');
  return message;
}

/// The value after flag argv[i] (advancing i), or a usage error naming the flag.
inline std::string_view flag_value(int argc, char** argv, int& i) {
  if (i + 1 >= argc) usage_error(fmt::format("{} needs a value", argv[i]));
  return argv[++i];
}

/// `text` as a number of type T for `flag`, or a usage error.
template <class T>
T parse_number(std::string_view flag, std::string_view text) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    usage_error(fmt::format("{} '{}' is not a number", flag, text));
  return value;
}

/// The FNV-1a 64-bit hash of `bytes` (inspect's checksums, finetune's run fingerprints).
inline std::uint64_t fnv1a64(std::span<const std::byte> bytes) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const std::byte b : bytes) {
    h ^= std::to_integer<std::uint64_t>(b);
    h *= 0x100000001b3ull;
  }
  return h;
}

/// A bar on stderr, redrawn in place, shown only when stderr is a terminal.
class ProgressBar {
 public:
  /// A bar for `what`.
  explicit ProgressBar(std::string what) : what_(std::move(what)), shown_(isatty(2) != 0) {}
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;
  /// Shows `done` of `total`, then `status` (e.g. the loss and the time left).
  void update(long done, long total, std::string_view status = {}) const {
    if (!shown_ || total <= 0) return;
    constexpr int width = 30;
    const auto filled = static_cast<int>(width * done / total);
    std::fprintf(stderr, "\r%s [%s%s] %ld/%ld%s\033[K", what_.c_str(),
                 std::string(filled, '#').c_str(), std::string(width - filled, ' ').c_str(), done,
                 total, std::string(status).c_str());
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  std::string what_;
  bool shown_;
};

}  // namespace qlr_cli
