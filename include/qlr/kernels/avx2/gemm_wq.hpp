// SPDX-License-Identifier: Apache-2.0
// AVX2 weight-only GEMM (INT4/INT8 × FP32): codes widened to int32 lanes, converted to
// float and decoded as ŵ = (u − z)·s, equal to dequantize() bit for bit, then dotted with
// every token of the tile. Also the weight-only path of AVX-VNNI machines.
#pragma once

#include <cstdint>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/avx2/epilogue.hpp"
#include "qlr/kernels/detail/tiling.hpp"
#include "qlr/kernels/packed.hpp"

#if QLR_ARCH_X86
#  include <immintrin.h>

QLR_ISA_BEGIN("avx2,fma,f16c")

namespace qlr::kernels::avx2 {
namespace detail_wq {

/// The 32 codes of block j of a chunk as four vectors of 8 int32, in column order.
template <int Bits>
QLR_ALWAYS_INLINE void block_codes_epi32(const std::uint8_t* chunk, index_t j,
                                         __m256i (&out)[4]) noexcept {
  if constexpr (Bits == 4) {  // words 8q … 8q + 7 hold columns 8q … 8q + 7 of every block
    const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(4 * j));
    const __m256i nibble = _mm256_set1_epi32(0x0f);
    for (int q = 0; q < 4; ++q) {
      const __m256i words =
          _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(chunk + 16 * q)));
      out[q] = _mm256_and_si256(_mm256_srl_epi32(words, shift), nibble);
    }
  } else {
    for (int q = 0; q < 4; ++q)
      out[q] = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(chunk + j * block_codes + 8 * q)));
  }
}

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Panel `p` × tokens [m, m + Tokens) over all of K.
  template <int Bits, int Tokens>
  static void tile(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                   index_t p, index_t m) noexcept {
    constexpr int rows = wq_panel_rows;
    __m256 acc[rows][Tokens];
    __m256 scale[rows];
    __m256 zero[rows];
    for (int r = 0; r < rows; ++r) {
      for (int t = 0; t < Tokens; ++t) acc[r][t] = _mm256_setzero_ps();
      scale[r] = zero[r] = _mm256_setzero_ps();
    }
    const index_t tail = w.cols % block_codes;
    alignas(32) float padded[Tokens][block_codes];  // the last block, partly past K
    // Groups outermost, so a block never asks which group it is in (no division per block).
    for (index_t l = 0, b = 0; l < w.groups; ++l) {
      for (int r = 0; r < rows; ++r) {
        scale[r] = _mm256_set1_ps(w.scales[w.params(p * rows + r, l)]);
        zero[r] = _mm256_set1_ps(w.zeros[w.params(p * rows + r, l)]);
      }
      const index_t group_end =
          b + w.blocks_per_group < w.blocks ? b + w.blocks_per_group : w.blocks;
      for (; b < group_end; ++b) {
        const float* xb[Tokens];
        for (int t = 0; t < Tokens; ++t) {
          xb[t] = x.row(m + t) + b * block_codes;
          if (tail != 0 && b == w.blocks - 1) {
            for (index_t i = 0; i < block_codes; ++i) padded[t][i] = i < tail ? xb[t][i] : 0.0f;
            xb[t] = padded[t];
          }
        }
        for (int r = 0; r < rows; ++r) {
          const std::uint8_t* chunk = w.chunk(p, b / 4, r);
          // One forward stream of short steps: ask for the weights 2 KB ahead, once per chunk.
          if (b % 4 == 0) _mm_prefetch(reinterpret_cast<const char*>(chunk + 2048), _MM_HINT_T0);
          __m256i codes[4];
          block_codes_epi32<Bits>(chunk, b % 4, codes);
          for (int q = 0; q < 4; ++q) {  // quarter q: columns b·32 + 8q … + 7
            const __m256 w_hat =
                _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(codes[q]), zero[r]), scale[r]);
            for (int t = 0; t < Tokens; ++t)
              acc[r][t] = _mm256_fmadd_ps(w_hat, _mm256_loadu_ps(xb[t] + 8 * q), acc[r][t]);
          }
        }
      }
    }
    for (int t = 0; t < Tokens; ++t) {
      float sums[rows];
      for (int r = 0; r < rows; ++r) {
        // Fixed reduction tree: (lanes 0-3 + 4-7), then pairs, then the last two.
        const __m128 half =
            _mm_add_ps(_mm256_castps256_ps128(acc[r][t]), _mm256_extractf128_ps(acc[r][t], 1));
        const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
        sums[r] = _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
      }
      const kernels::detail::TileRows tile = kernels::detail::tile_rows(w.rows, p, wq_panel_rows);
      float side[wq_panel_rows] = {};
      avx2::add_low_rank<wq_panel_rows>(e, m + t, tile.n0, tile.count, side);
      kernels::detail::store_wq_panel(sums, side, w, y, e, p, m + t);
    }
  }
};

}  // namespace detail_wq

/// y[m, n] for all m and the rows n of panels [panel_begin, panel_end).
inline void gemm_wq_f32(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                        index_t panel_begin, index_t panel_end) noexcept {
  kernels::detail::gemm_wq_with_tiles<detail_wq::Tiles, 2>(w, x, y, e, panel_begin, panel_end);
}

}  // namespace qlr::kernels::avx2

QLR_ISA_END
#endif
