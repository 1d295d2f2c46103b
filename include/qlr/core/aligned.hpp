// SPDX-License-Identifier: Apache-2.0
// Cache-line-aligned storage for the buffers kernels stream with 64-byte vector loads: from
// malloc, a large buffer starts 16 bytes into a page, so every such load would straddle two
// cache lines.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace qlr {

/// Bytes of a cache line, the alignment of kernel buffers.
inline constexpr std::size_t cache_line_bytes = 64;

/// A std::allocator that aligns every allocation to a cache line.
template <class T>
struct CacheAlignedAllocator {
  using value_type = T;  ///< the element type

  /// An allocator; all of them are interchangeable.
  CacheAlignedAllocator() noexcept = default;
  /// The rebinding conversion allocators must have (implicit, as the standard requires).
  template <class U>
  CacheAlignedAllocator(const CacheAlignedAllocator<U>&) noexcept {}

  /// Storage for n elements, aligned to a cache line.
  [[nodiscard]] T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{cache_line_bytes}));
  }
  /// Releases storage from allocate().
  void deallocate(T* p, std::size_t) noexcept {
    ::operator delete (p, std::align_val_t{cache_line_bytes});
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
