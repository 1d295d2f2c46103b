// SPDX-License-Identifier: Apache-2.0
// The epilogue's low-rank sum Σ_j bt[first + j, n]·t[m, j] with vector fmas, one lane per
// output of a tile: the AVX2, AVX-VNNI and AVX-512 paths share it (their regions include
// avx2 and fma). vfmadd rounds each lane once, as std::fma does, and the terms are added
// in the same order, so it equals the scalar detail::add_low_rank bit for bit, whether one
// token runs at a time or a tile's tokens run together.
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

/// Whether tokens [m, m + tokens) read the same rows of Bᵀ (one adapter, or no slices).
QLR_ALWAYS_INLINE bool share_slice(const LowRankTerm& lr, index_t m, int tokens) noexcept {
  if (lr.slices == nullptr) return true;
  for (int t = 1; t < tokens; ++t)
    if (lr.slices[m + t].first != lr.slices[m].first || lr.slices[m + t].rank != lr.slices[m].rank)
      return false;
  return true;
}

/// side[t][r] += Σ_j bt[first + j, n0 + r]·t[m + t, j] for `tokens` ≤ MaxTokens tokens of a
/// tile. Tokens of one adapter load each Bᵀ vector once for all of them and run their
/// chains of fmas side by side (one token's chain alone waits r fma latencies); each
/// output still adds its terms in ascending j, so the bits equal add_low_rank's.
template <int Width, int MaxTokens>
QLR_ALWAYS_INLINE void add_low_rank_tokens(const Epilogue& e, index_t m, int tokens, index_t n0,
                                           index_t count, float (*side)[Width]) noexcept {
  using V = detail_epilogue::Ymm;
  if (e.low_rank == nullptr) return;
  const LowRankTerm& lr = *e.low_rank;
  if (tokens != MaxTokens) {
    if constexpr (MaxTokens > 1) add_low_rank_tokens<Width, MaxTokens - 1>(e, m, tokens, n0, count, side);
    return;
  }
  if (MaxTokens == 1 || count != Width || !share_slice(lr, m, tokens)) {
    for (int t = 0; t < tokens; ++t) add_low_rank<Width>(e, m + t, n0, count, side[t]);
    return;
  }
  const LowRankSlice slice = kernels::detail::slice_of(lr, m);
  constexpr int vectors = Width / V::lanes;
  decltype(V::load(side[0])) acc[MaxTokens][vectors];
  QLR_UNROLL
  for (int t = 0; t < MaxTokens; ++t)
    QLR_UNROLL
    for (int v = 0; v < vectors; ++v) acc[t][v] = V::load(side[t] + V::lanes * v);
  for (index_t j = 0; j < slice.rank; ++j) {
    const float* b = lr.bt.row(slice.first + j) + n0;
    decltype(V::load(b)) bv[vectors];
    QLR_UNROLL
    for (int v = 0; v < vectors; ++v) bv[v] = V::load(b + V::lanes * v);
    QLR_UNROLL
    for (int t = 0; t < MaxTokens; ++t) {
      const auto tj = V::broadcast(lr.t.row(m + t)[j]);
      QLR_UNROLL
      for (int v = 0; v < vectors; ++v) acc[t][v] = V::fma(bv[v], tj, acc[t][v]);
    }
  }
  QLR_UNROLL
  for (int t = 0; t < MaxTokens; ++t)
    QLR_UNROLL
    for (int v = 0; v < vectors; ++v) V::store(side[t] + V::lanes * v, acc[t][v]);
}

}  // namespace qlr::kernels::avx2

QLR_ISA_END
#endif
