// SPDX-License-Identifier: Apache-2.0
// Kernel buffers: cache-line aligned, huge-page aligned from 2 MB on, freed as allocated.
#include <catch2/catch.hpp>

#include <cstdint>
#include <numeric>

#include "qlr/core/aligned.hpp"

namespace {

std::uintptr_t address(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

}  // namespace

TEST_CASE("AlignedVector starts small buffers on a cache line, large ones on a huge page", "[core][aligned]") {
  for (const std::size_t bytes : {std::size_t{1}, std::size_t{63}, std::size_t{4096} + 16,
                                  qlr::huge_page_bytes - 1}) {
    const qlr::AlignedVector<std::uint8_t> small(bytes, 1);
    CHECK(address(small.data()) % qlr::cache_line_bytes == 0);
  }
  for (const std::size_t bytes : {qlr::huge_page_bytes, qlr::huge_page_bytes * 3 + 40}) {
    qlr::AlignedVector<std::uint8_t> large(bytes, 0);
    CHECK(address(large.data()) % qlr::huge_page_bytes == 0);
    std::iota(large.begin(), large.end(), std::uint8_t{0});  // the whole buffer is writable
    CHECK(large[bytes - 1] == static_cast<std::uint8_t>(bytes - 1));
  }
}

TEST_CASE("AlignedVector frees with the alignment it allocated with, through growth", "[core][aligned]") {
  // Growing crosses the 2 MB threshold, so allocate and deallocate see both alignments;
  // ASan reports a mismatched aligned delete if they disagree.
  qlr::AlignedVector<float> v;
  for (std::size_t i = 0; i < qlr::huge_page_bytes / sizeof(float) * 2; ++i) v.push_back(static_cast<float>(i % 7));
  CHECK(address(v.data()) % qlr::huge_page_bytes == 0);
  v.shrink_to_fit();
  CHECK(v[12] == 5.0f);
}
