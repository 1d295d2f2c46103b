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

namespace detail_epilogue {
/// 8 floats in a ymm register.
struct Ymm {
  static constexpr int lanes = 8;
  QLR_ALWAYS_INLINE static __m256 load(const float* p) noexcept { return _mm256_loadu_ps(p); }
  QLR_ALWAYS_INLINE static void store(float* p, __m256 v) noexcept { _mm256_storeu_ps(p, v); }
  QLR_ALWAYS_INLINE static __m256 broadcast(float x) noexcept { return _mm256_set1_ps(x); }
  QLR_ALWAYS_INLINE static __m256 fma(__m256 a, __m256 b, __m256 c) noexcept { return _mm256_fmadd_ps(a, b, c); }
};
}  // namespace detail_epilogue

/// side[r] += Σ_j bt[first + j, n0 + r]·t[m, j] for the `count` ≤ Width outputs of a tile
/// (Width a multiple of 8); a short last tile takes the scalar loop.
template <int Width>
QLR_ALWAYS_INLINE void add_low_rank(const Epilogue& e, index_t m, index_t n0, index_t count,
                                    float* side) noexcept {
  static_assert(Width % 8 == 0, "tiles of whole 256-bit vectors");
  using V = detail_epilogue::Ymm;
  if (e.low_rank == nullptr) return;
  if (count != Width) {
    kernels::detail::add_low_rank<Width>(e, m, n0, count, side);
    return;
  }
  const LowRankTerm& lr = *e.low_rank;
  const LowRankSlice slice = kernels::detail::slice_of(lr, m);
  const float* t = lr.t.row(m);
  constexpr int vectors = Width / V::lanes;
  decltype(V::load(side)) acc[vectors];
  QLR_UNROLL
  for (int v = 0; v < vectors; ++v) acc[v] = V::load(side + V::lanes * v);
  for (index_t j = 0; j < slice.rank; ++j) {
    const float* b = lr.bt.row(slice.first + j) + n0;
    const auto tj = V::broadcast(t[j]);
    QLR_UNROLL
    for (int v = 0; v < vectors; ++v) acc[v] = V::fma(V::load(b + V::lanes * v), tj, acc[v]);
  }
  QLR_UNROLL
  for (int v = 0; v < vectors; ++v) V::store(side + V::lanes * v, acc[v]);
}

}  // namespace qlr::kernels::avx2

QLR_ISA_END
#endif
