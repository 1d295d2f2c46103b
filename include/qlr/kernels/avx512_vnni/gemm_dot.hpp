// SPDX-License-Identifier: Apache-2.0
// AVX-512 VNNI integer GEMM (W8A8, W4A8, W4A4): one vpdpbusd multiplies a 64-byte step of a
// 16-row panel (unsigned codes) by one token's 4 activation bytes (signed), broadcast, and
// adds the 16 row sums. No horizontal sums: a zmm of int32 is a panel's 16 outputs.
#pragma once

#include <cstdint>
#include <cstring>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/avx2/epilogue.hpp"
#include "qlr/kernels/detail/tiling.hpp"
#include "qlr/kernels/packed_dot.hpp"

#if QLR_ARCH_X86
#  include <immintrin.h>

QLR_ISA_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

namespace qlr::kernels::avx512_vnni {
namespace detail_dot {

/// The 4 activation bytes at `x`, in every 32-bit lane.
QLR_ALWAYS_INLINE __m512i broadcast4(const std::int8_t* x) noexcept {
  std::int32_t word;
  std::memcpy(&word, x, sizeof word);
  return _mm512_set1_epi32(word);
}

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Panels [p, p + Panels) × tokens [m, m + Tokens) over all of K.
  template <int Bits, int Panels, int Tokens>
  static void dot_tile(const DotWeightView& w, const DotActivationView& a, MatrixView y,
                       const Epilogue& e, index_t p, index_t m) noexcept {
    // A single panel and token would leave one chain of dependent vpdpbusd: give it four,
    // two steps of two halves each, so that a late line can be caught up (in-cache W8A8 GEMV
    // on Zen 5: 28.9 -> 31.5 GB/s with two chains -> four; noisy). Integer sums are exact,
    // so the split is free.
    constexpr int Chains = Panels * Tokens == 1 ? 4 : 1;
    constexpr index_t step_cols = Bits == 8 ? 4 : 8;
    const __m512i low_nibbles = _mm512_set1_epi8(0x0f);
    const std::int8_t* x[Tokens];
    __m512 acc[Panels][Tokens];
    for (int t = 0; t < Tokens; ++t) x[t] = a.row(m + t);
    for (int pp = 0; pp < Panels; ++pp)
      for (int t = 0; t < Tokens; ++t) acc[pp][t] = _mm512_setzero_ps();
    for (index_t l = 0; l < w.groups; ++l) {
      __m512i dot[Panels][Tokens][Chains];
      for (int pp = 0; pp < Panels; ++pp)
        for (int t = 0; t < Tokens; ++t)
          for (int h = 0; h < Chains; ++h) dot[pp][t][h] = _mm512_setzero_si512();
      // Columns [i, i + 8) of every panel and token into chains H and H + 1 (or chain 0).
      const auto step = [&]<int H>(index_t i) {
        constexpr int first_chain = Chains == 1 ? 0 : H;
        constexpr int second_chain = Chains == 1 ? 0 : H + 1;
        for (int pp = 0; pp < Panels; ++pp) {
          const std::uint8_t* src = w.panel(p + pp) + (i / step_cols) * 64;
          // A step reads one 64-byte line of INT4 codes or two of INT8.
          kernels::detail::prefetch_weight_line(src);
          if constexpr (Bits == 8) kernels::detail::prefetch_weight_line(src + 64);
          __m512i first, second;
          if constexpr (Bits == 8) {
            first = _mm512_loadu_si512(src);
            second = _mm512_loadu_si512(src + 64);
          } else {
            const __m512i codes = _mm512_loadu_si512(src);
            first = _mm512_and_si512(codes, low_nibbles);
            second = _mm512_and_si512(_mm512_srli_epi16(codes, 4), low_nibbles);
          }
          for (int t = 0; t < Tokens; ++t) {
            dot[pp][t][first_chain] =
                _mm512_dpbusd_epi32(dot[pp][t][first_chain], first, broadcast4(x[t] + i));
            dot[pp][t][second_chain] =
                _mm512_dpbusd_epi32(dot[pp][t][second_chain], second, broadcast4(x[t] + i + 4));
          }
        }
      };
      // Every group spans a multiple of 8 padded columns (INT8 steps come in pairs).
      const index_t end = w.group_end(l);
      index_t i = w.group_begin(l);
      if constexpr (Chains == 4)
        for (; i + 16 <= end; i += 16) {
          step.template operator()<0>(i);
          step.template operator()<2>(i + 8);
        }
      for (; i < end; i += 8) step.template operator()<0>(i);
      for (int pp = 0; pp < Panels; ++pp) {
        const index_t at = w.params(p + pp, l);
        const __m512 scale = _mm512_loadu_ps(w.scales + at);
        const __m512i zero = _mm512_loadu_si512(w.zeros + at);
        for (int t = 0; t < Tokens; ++t) {
          const __m512i group_sum = _mm512_set1_epi32(a.group_sums[(m + t) * a.groups + l]);
          __m512i sum = dot[pp][t][0];
          for (int h = 1; h < Chains; ++h) sum = _mm512_add_epi32(sum, dot[pp][t][h]);
          const __m512i exact = _mm512_sub_epi32(sum, _mm512_mullo_epi32(zero, group_sum));
          acc[pp][t] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(exact), acc[pp][t]);
          if (w.zero_fractions != nullptr)
            acc[pp][t] = _mm512_fnmadd_ps(_mm512_loadu_ps(w.zero_fractions + at),
                                          _mm512_cvtepi32_ps(group_sum), acc[pp][t]);
        }
      }
    }
    for (int pp = 0; pp < Panels; ++pp) {
      for (int t = 0; t < Tokens; ++t) {
        alignas(64) float lanes[panel_rows];
        _mm512_store_ps(lanes, acc[pp][t]);
        const kernels::detail::TileRows tile = kernels::detail::tile_rows(w.rows, p + pp, panel_rows);
        alignas(64) float side[panel_rows] = {};
        kernels::avx2::add_low_rank<panel_rows>(e, m + t, tile.n0, tile.count, side);
        kernels::detail::store_panel(lanes, side, w, a, y, e, p + pp, m + t);
      }
    }
  }

};  // struct Tiles

}  // namespace detail_dot

/// y[m, n] for all tokens m and the rows n of panels [panel_begin, panel_end).
inline void gemm_dot(const DotWeightView& w, const DotActivationView& a, MatrixView y,
                     const Epilogue& e, index_t panel_begin, index_t panel_end) noexcept {
  // 3 panels × 4 tokens: 12 int32 and 12 FP32 accumulators, 3 code vectors and a broadcast
  // fit the 32 zmm. At M = 512 (4096², one thread) it matched 2×6 for W8A8 (0.84× oneDNN)
  // and beat it for W4A8 (0.76× vs 0.63×); 4×3 and 1×12 were slower for W8A8.
  kernels::detail::gemm_dot_with_tiles<detail_dot::Tiles, 3, 4>(w, a, y, e, panel_begin, panel_end);
}

}  // namespace qlr::kernels::avx512_vnni

QLR_ISA_END
#endif
