// SPDX-License-Identifier: Apache-2.0
// The epilogue's low-rank sum Σ_j bt[first + j, n]·t[m, j] with vector fmas, one lane per
// output of a tile: the AVX2, AVX-VNNI and AVX-512 paths share it (their regions include
// avx2 and fma). vfmadd rounds each lane once, as std::fma does, and the terms are added
// in the same order, so it equals the scalar detail::add_low_rank bit for bit.
#pragma once

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"

#if QLR_ARCH_X86
#  include <immintrin.h>

QLR_ISA_BEGIN("avx2,fma,f16c")

namespace qlr::kernels::avx2 {

/// side[r] += Σ_j bt[first + j, n0 + r]·t[m, j] for the `count` ≤ Width outputs of a tile
/// (Width a multiple of 4); a short last tile takes the scalar loop.
template <int Width>
QLR_ALWAYS_INLINE void add_low_rank(const Epilogue& e, index_t m, index_t n0, index_t count,
                                    float* side) noexcept {
  static_assert(Width % 4 == 0, "tiles of whole 128-bit vectors");
  if (e.low_rank == nullptr) return;
  if (count != Width) {
    kernels::detail::add_low_rank<Width>(e, m, n0, count, side);
    return;
  }
  const LowRankTerm& lr = *e.low_rank;
  const LowRankSlice slice = kernels::detail::slice_of(lr, m);
  const float* t = lr.t.row(m);
  if constexpr (Width % 8 == 0) {
    constexpr int vectors = Width / 8;
    __m256 acc[vectors];
    QLR_UNROLL
    for (int v = 0; v < vectors; ++v) acc[v] = _mm256_loadu_ps(side + 8 * v);
    for (index_t j = 0; j < slice.rank; ++j) {
      const float* b = lr.bt.row(slice.first + j) + n0;
      const __m256 tj = _mm256_set1_ps(t[j]);
      QLR_UNROLL
      for (int v = 0; v < vectors; ++v) acc[v] = _mm256_fmadd_ps(_mm256_loadu_ps(b + 8 * v), tj, acc[v]);
    }
    QLR_UNROLL
    for (int v = 0; v < vectors; ++v) _mm256_storeu_ps(side + 8 * v, acc[v]);
  } else {
    constexpr int vectors = Width / 4;
    __m128 acc[vectors];
    QLR_UNROLL
    for (int v = 0; v < vectors; ++v) acc[v] = _mm_loadu_ps(side + 4 * v);
    for (index_t j = 0; j < slice.rank; ++j) {
      const float* b = lr.bt.row(slice.first + j) + n0;
      const __m128 tj = _mm_set1_ps(t[j]);
      QLR_UNROLL
      for (int v = 0; v < vectors; ++v) acc[v] = _mm_fmadd_ps(_mm_loadu_ps(b + 4 * v), tj, acc[v]);
    }
    QLR_UNROLL
    for (int v = 0; v < vectors; ++v) _mm_storeu_ps(side + 4 * v, acc[v]);
  }
}

}  // namespace qlr::kernels::avx2

QLR_ISA_END
#endif
