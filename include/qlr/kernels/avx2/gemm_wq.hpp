// SPDX-License-Identifier: Apache-2.0
// AVX2 weight-only GEMM (INT4/INT8 × FP32), also the weight-only path of AVX-VNNI machines.
// INT8 widens codes to int32 lanes and decodes ŵ = (u − z)·s, equal to dequantize() bit for
// bit. INT4 factors the zero point out of each group instead,
//   y = Σ_l s_l·(Σ_{i∈l} u_i·x_i − z_l·Σ_{i∈l} x_i),
// because AVX2 has no 16-entry register table: decoding ŵ took 7 vector operations per 8
// codes, the factored form takes an and, a convert and an fma (W4 GEMV on Zen 4 forced to
// AVX2: 1.2–1.4× faster, still well below the memory-read limit: the decode is the limit).
// Its rounding error is bounded by γ·Σ s·(u + |z|)·|x| rather than γ·Σ |ŵ·x|.
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

/// The 32 INT8 codes of block j of a chunk as four vectors of 8 int32, in column order.
QLR_ALWAYS_INLINE void block_codes_epi32(const std::uint8_t* chunk, index_t j,
                                         __m256i (&out)[4]) noexcept {
  for (int q = 0; q < 4; ++q)
    out[q] = _mm256_cvtepu8_epi32(
        _mm_loadl_epi64(reinterpret_cast<const __m128i*>(chunk + j * block_codes + 8 * q)));
}

/// The 8 lanes' sum by a fixed tree: (lanes 0-3 + 4-7), then pairs, then the last two.
QLR_ALWAYS_INLINE float reduce_lanes(__m256 v) noexcept {
  const __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
}

/// Writes token `m`'s outputs of panel `p` from its row sums, with the epilogue.
QLR_ALWAYS_INLINE void finish_tile(const float (&sums)[wq_panel_rows], const PackedView& w,
                                   MatrixView y, const Epilogue& e, index_t p, index_t m) noexcept {
  const kernels::detail::TileRows tile = kernels::detail::tile_rows(w.rows, p, wq_panel_rows);
  float side[wq_panel_rows] = {};
  avx2::add_low_rank<wq_panel_rows>(e, m, tile.n0, tile.count, side);
  kernels::detail::store_wq_panel(sums, side, w, y, e, p, m);
}

/// Σ x over blocks [begin, end) of token row `x`, the last block read from `last`.
QLR_ALWAYS_INLINE float sum_blocks(const float* x, const float* last, index_t begin, index_t end,
                                   index_t blocks) noexcept {
  __m256 chains[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                      _mm256_setzero_ps()};
  for (index_t b = begin; b < end; ++b) {
    const float* xb = b == blocks - 1 ? last : x + b * block_codes;
    QLR_UNROLL
    for (int q = 0; q < 4; ++q) chains[q] = _mm256_add_ps(chains[q], _mm256_loadu_ps(xb + 8 * q));
  }
  return reduce_lanes(_mm256_add_ps(_mm256_add_ps(chains[0], chains[1]),
                                    _mm256_add_ps(chains[2], chains[3])));
}

/// The INT4 tile of one panel × `Tokens` tokens, one row at a time over a segment of whole
/// groups, so that a row's sums stay in registers. A chunk's 16-bit words are widened to
/// int32 once; block j's codes are then `word & 0xf << 4j` = u·16^j, converted as they are,
/// into an accumulator of block j's own, scaled by 16^−j when the group ends. The scalings
/// are powers of two, so the sums round as Σ u·x would (barring FP32 underflow).
template <int Tokens>
void int4_tile(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
               index_t p, index_t m) noexcept {
  constexpr int rows = wq_panel_rows;
  constexpr index_t max_groups = 64;  // per segment: its Σ x fit on the stack
  const index_t n0 = p * rows;
  const index_t per_group = w.blocks_per_group;
  const index_t segment = per_group >= max_groups ? 1 : max_groups / per_group;  // groups
  const __m256 down[4] = {_mm256_set1_ps(1.0f), _mm256_set1_ps(0x1p-4f), _mm256_set1_ps(0x1p-8f),
                          _mm256_set1_ps(0x1p-12f)};
  // The last block read through a copy that is 0 past K, as the codes there are.
  alignas(32) float padded[Tokens][block_codes];
  const float* last[Tokens];
  for (int t = 0; t < Tokens; ++t) {
    const float* row = x.row(m + t);
    const index_t valid = w.cols - (w.blocks - 1) * block_codes;
    for (index_t i = 0; i < block_codes; ++i)
      padded[t][i] = i < valid ? row[(w.blocks - 1) * block_codes + i] : 0.0f;
    last[t] = padded[t];
  }
  // Per row and token: Σ_l s_l·Σ_j 16^−j·dot_lj (per lane), and Σ_l s_l·z_l·Σ x.
  alignas(32) float total[rows][Tokens][8] = {};
  float correction[rows][Tokens] = {};
  for (index_t l0 = 0; l0 < w.groups; l0 += segment) {
    const index_t l_end = w.groups - l0 < segment ? w.groups : l0 + segment;
    const index_t b_begin = l0 * per_group;
    const index_t b_end = l_end * per_group < w.blocks ? l_end * per_group : w.blocks;
    float group_x[Tokens][max_groups];
    for (int t = 0; t < Tokens; ++t)
      for (index_t l = l0; l < l_end; ++l)
        group_x[t][l - l0] = sum_blocks(x.row(m + t), last[t], l * per_group,
                                        (l + 1) * per_group < w.blocks ? (l + 1) * per_group : w.blocks,
                                        w.blocks);
    // The segment's weights for all rows, one segment ahead: a row's pass reads every
    // fourth line, so the stream is prefetched for the rows to come.
    const index_t c_begin = b_begin / 4;
    const index_t c_end = (b_end + 3) / 4;
    const index_t ahead = (c_end - c_begin) * rows * w.chunk_bytes();
    // One token's fmas into a block's accumulator would form one chain per block: a GEMV
    // splits it in two (even and odd quarters), which the 16 registers of AVX2 allow.
    constexpr int chains = Tokens == 1 ? 2 : 1;
    for (int r = 0; r < rows; ++r) {
      __m256 dot[Tokens][4][chains];
      __m256 acc[Tokens];
      QLR_UNROLL
      for (int t = 0; t < Tokens; ++t) {
        acc[t] = _mm256_load_ps(total[r][t]);
        QLR_UNROLL
        for (int j = 0; j < 4; ++j)
          QLR_UNROLL
          for (int h = 0; h < chains; ++h) dot[t][j][h] = _mm256_setzero_ps();
      }
      index_t l = l0;
      index_t group_end = (l0 + 1) * per_group < w.blocks ? (l0 + 1) * per_group : w.blocks;
      for (index_t c = c_begin; c < c_end; ++c) {
        const std::uint8_t* chunk = w.chunk(p, c, r);
        kernels::detail::prefetch_weight_line(chunk + ahead - 1024);
        __m256i words[4];  // words 8q … 8q + 7: columns 8q … 8q + 7 of every block
        QLR_UNROLL
        for (int q = 0; q < 4; ++q)
          words[q] = _mm256_cvtepu16_epi32(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(chunk + 16 * q)));
        QLR_UNROLL
        for (int j = 0; j < 4; ++j) {
          const index_t b = 4 * c + j;
          if (b < b_begin || b >= b_end) continue;  // a segment may begin or end in a chunk
          const __m256i nibble = _mm256_set1_epi32(0x0f << (4 * j));
          const float* xb[Tokens];
          QLR_UNROLL
          for (int t = 0; t < Tokens; ++t)
            xb[t] = b == w.blocks - 1 ? last[t] : x.row(m + t) + b * block_codes;
          QLR_UNROLL
          for (int q = 0; q < 4; ++q) {
            const __m256 u = _mm256_cvtepi32_ps(_mm256_and_si256(words[q], nibble));
            QLR_UNROLL
            for (int t = 0; t < Tokens; ++t)
              dot[t][j][q % chains] =
                  _mm256_fmadd_ps(u, _mm256_loadu_ps(xb[t] + 8 * q), dot[t][j][q % chains]);
          }
          if (b + 1 == group_end) {  // group l ends: acc += s·Σ_j 16^−j·dot_j
            const index_t at = w.params(n0 + r, l);
            const float scale = w.scales[at];
            QLR_UNROLL
            for (int t = 0; t < Tokens; ++t) {
              __m256 block_dot[4];
              QLR_UNROLL
              for (int i = 0; i < 4; ++i)
                block_dot[i] = chains == 1 ? dot[t][i][0]
                                           : _mm256_add_ps(dot[t][i][0], dot[t][i][chains - 1]);
              __m256 dots = block_dot[0];
              QLR_UNROLL
              for (int i = 1; i < 4; ++i) dots = _mm256_fmadd_ps(block_dot[i], down[i], dots);
              acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(scale), dots, acc[t]);
              correction[r][t] += scale * w.zeros[at] * group_x[t][l - l0];
              QLR_UNROLL
              for (int i = 0; i < 4; ++i)
                QLR_UNROLL
                for (int h = 0; h < chains; ++h) dot[t][i][h] = _mm256_setzero_ps();
            }
            ++l;
            group_end = group_end + per_group < w.blocks ? group_end + per_group : w.blocks;
          }
        }
      }
      QLR_UNROLL
      for (int t = 0; t < Tokens; ++t) _mm256_store_ps(total[r][t], acc[t]);
    }
  }
  for (int t = 0; t < Tokens; ++t) {
    float sums[rows];
    for (int r = 0; r < rows; ++r)
      sums[r] = reduce_lanes(_mm256_load_ps(total[r][t])) - correction[r][t];
    finish_tile(sums, w, y, e, p, m + t);
  }
}

/// The INT8 tile of one panel × `Tokens` tokens: ŵ decoded per group, as dequantize() does.
template <int Tokens>
void int8_tile(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
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
        block_codes_epi32(chunk, b % 4, codes);
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
    for (int r = 0; r < rows; ++r) sums[r] = reduce_lanes(acc[r][t]);
    finish_tile(sums, w, y, e, p, m + t);
  }
}

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Panel `p` × tokens [m, m + Tokens) over all of K.
  template <int Bits, int Tokens>
  static void tile(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                   index_t p, index_t m) noexcept {
    if constexpr (Bits == 4)
      int4_tile<Tokens>(w, x, y, e, p, m);
    else
      int8_tile<Tokens>(w, x, y, e, p, m);
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
