// SPDX-License-Identifier: Apache-2.0
// POSIX file plumbing of the readers and writers: a read-only memory map (adapters are read
// in place, not copied), a bounded text read, and a write that goes through a temporary file
// in the same folder and a rename, so a crash or a full disk never leaves half a file under
// the final name.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "qlr/core/error.hpp"

namespace qlr::io::detail {

/// The text of errno value `err`, for Errc::io messages.
inline std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

/// A regular file mapped read-only; move-only, unmapped on destruction. An empty file maps
/// to an empty span (mmap refuses length 0).
class MappedFile {
 public:
  /// Maps `path`; throws Errc::io naming `entity` and the path when it cannot be opened or
  /// mapped, or is not a regular file.
  MappedFile(const std::filesystem::path& path, std::string_view entity) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    QLR_CHECK(fd >= 0, io, "{}: cannot open \"{}\": {}; expected a readable file", entity,
              path.string(), errno_text(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      const int err = errno;
      ::close(fd);
      QLR_CHECK(false, io, "{}: \"{}\" is not a regular file ({}); expected a file", entity,
                path.string(), err != 0 ? errno_text(err) : "a folder or a device");
    }
    size_ = static_cast<std::size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      const int err = errno;
      ::close(fd);
      QLR_CHECK(p != MAP_FAILED, io, "{}: cannot map \"{}\" ({} bytes): {}", entity,
                path.string(), size_, errno_text(err));
      data_ = static_cast<const std::byte*>(p);
    } else {
      ::close(fd);
    }
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  /// Takes over `other`'s mapping; `other` is left empty.
  MappedFile(MappedFile&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  /// Unmaps this mapping, then takes over `other`'s.
  MappedFile& operator=(MappedFile&& other) noexcept {
    if (this != &other) {
      unmap();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ~MappedFile() { unmap(); }

  /// The file's bytes; valid while this object (or the one it is moved into) lives.
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }

 private:
  void unmap() noexcept {
    if (data_ != nullptr) ::munmap(const_cast<std::byte*>(data_), size_);
    data_ = nullptr;
    size_ = 0;
  }

  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

/// The whole text of a small file (a JSON config); throws Errc::io when it cannot be read and
/// Errc::corrupt_file when it is larger than `max_bytes`.
inline std::string read_text_file(const std::filesystem::path& path, std::size_t max_bytes,
                                  std::string_view entity) {
  const MappedFile file(path, entity);
  const auto bytes = file.bytes();
  QLR_CHECK(bytes.size() <= max_bytes, corrupt_file,
            "{}: \"{}\" is {} bytes; expected at most {}", entity, path.string(), bytes.size(),
            max_bytes);
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

/// Writes `bytes` to `path` through a temporary file in the same folder, flushed to disk and
/// then renamed over `path` (rename is atomic within one file system). Throws Errc::io.
inline void write_file_atomically(const std::filesystem::path& path,
                                  std::span<const std::byte> bytes, std::string_view entity) {
  static std::atomic<unsigned> counter{0};
  const std::filesystem::path folder =
      path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const std::filesystem::path temp =
      folder / fmt::format(".{}.tmp-{}-{}", path.filename().string(), ::getpid(),
                           counter.fetch_add(1));
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  QLR_CHECK(fd >= 0, io, "{}: cannot create \"{}\": {}; expected a writable folder", entity,
            temp.string(), errno_text(errno));
  const auto fail = [&](const char* step, int err) {
    ::close(fd);
    ::unlink(temp.c_str());
    QLR_CHECK(false, io, "{}: {} \"{}\" failed: {}", entity, step, temp.string(),
              errno_text(err));
  };
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ::ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("writing", n < 0 ? errno : EIO);
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) fail("flushing", errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    QLR_CHECK(false, io, "{}: closing \"{}\" failed: {}", entity, temp.string(), errno_text(err));
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    QLR_CHECK(false, io, "{}: cannot rename \"{}\" to \"{}\": {}", entity, temp.string(),
              path.string(), errno_text(err));
  }
}

}  // namespace qlr::io::detail
