// SPDX-License-Identifier: Apache-2.0
// Cache-line-aligned storage for the buffers kernels stream with 64-byte vector loads: from
// malloc, a large buffer starts 16 bytes into a page, so every such load would straddle two
// cache lines. Buffers of 2 MB and more (packed weights) also ask Linux for transparent huge
// pages: a GEMV streams its weights once per token, and with 4 KB pages the page walks of
// that stream cost it (on the VMs here, reads over 4 KB pages ran 0.1-0.9x the rate over huge
// pages, varying from run to run).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

#if defined(__linux__)
#  include <sys/mman.h>
#endif

namespace qlr {

/// Bytes of a cache line, the alignment of kernel buffers.
inline constexpr std::size_t cache_line_bytes = 64;

/// Bytes of an x86-64 huge page: buffers at least this large are aligned to it and asked to
/// be backed by huge pages.
inline constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;

namespace detail {
/// The alignment of an allocation of `bytes`.
constexpr std::size_t buffer_alignment(std::size_t bytes) noexcept {
  return bytes >= huge_page_bytes ? huge_page_bytes : cache_line_bytes;
}
}  // namespace detail

/// A std::allocator that aligns every allocation to a cache line.
template <class T>
struct CacheAlignedAllocator {
  using value_type = T;  ///< the element type

  /// An allocator; all of them are interchangeable.
  CacheAlignedAllocator() noexcept = default;
  /// The rebinding conversion allocators must have (implicit, as the standard requires).
  template <class U>
  CacheAlignedAllocator(const CacheAlignedAllocator<U>&) noexcept {}

  /// Storage for n elements, aligned to a cache line (a huge page from 2 MB on).
  [[nodiscard]] T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    void* p = ::operator new (bytes, std::align_val_t{detail::buffer_alignment(bytes)});
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    // Only advice: where THP is off, or the kernel refuses, the pages are simply 4 KB.
    if (bytes >= huge_page_bytes) ::madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return static_cast<T*>(p);
  }
  /// Releases storage from allocate().
  void deallocate(T* p, std::size_t n) noexcept {
    ::operator delete (p, std::align_val_t{detail::buffer_alignment(n * sizeof(T))});
  }
  /// Every instance can free what any other allocated.
  template <class U>
  bool operator==(const CacheAlignedAllocator<U>&) const noexcept {
    return true;
  }
};

/// A vector whose data starts on a cache line.
template <class T>
using AlignedVector = std::vector<T, CacheAlignedAllocator<T>>;

}  // namespace qlr
