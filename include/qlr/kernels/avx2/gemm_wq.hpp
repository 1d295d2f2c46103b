// SPDX-License-Identifier: Apache-2.0
// AVX2 weight-only GEMM (INT4/INT8 × FP32): codes widened to int32 lanes, converted to
// float and decoded as ŵ = (u − z)·s, equal to dequantize() bit for bit, then dotted with
// every token of the tile. Also the weight-only path of AVX-VNNI machines.
#pragma once

#include <algorithm>
#include <cstdint>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/detail/tiling.hpp"
#include "qlr/kernels/packed.hpp"

#if QLR_ARCH_X86
#  include <immintrin.h>

QLR_ISA_BEGIN("avx2,fma,f16c")

namespace qlr::kernels::avx2 {
namespace detail_wq {

/// The 32 codes of one block as four vectors of 8 int32, in column order.
template <int Bits>
inline void block_codes_epi32(const std::uint8_t* p, __m256i out[4]) noexcept {
  if constexpr (Bits == 4) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i nibble = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(packed, nibble);                     // codes 0-15
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), nibble);  // codes 16-31
    out[0] = _mm256_cvtepu8_epi32(lo);
    out[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
    out[2] = _mm256_cvtepu8_epi32(hi);
    out[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
  } else {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16));
    out[0] = _mm256_cvtepu8_epi32(a);
    out[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(a, 8));
    out[2] = _mm256_cvtepu8_epi32(b);
    out[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(b, 8));
  }
}

/// Accumulates block `b` (activations at xb[t]) of rows [n, n + Rows) × Tokens tokens.
template <int Bits, int Rows, int Tokens>
QLR_ALWAYS_INLINE void block(const PackedView& w, const float* const (&xb)[Tokens], index_t n,
                             index_t b, const __m256 (&scale)[Rows], const __m256 (&zero)[Rows],
                             __m256 (&acc)[Rows][Tokens]) noexcept {
  constexpr index_t row_block_bytes = block_codes * Bits / 8;
  for (int r = 0; r < Rows; ++r) {
    // As in the AVX-512 path: keep DRAM requests in flight ahead of four short-step streams.
    if ((b & (64 / row_block_bytes - 1)) == 0)
      _mm_prefetch(reinterpret_cast<const char*>(w.row(n + r) + (b + 32) * row_block_bytes),
                   _MM_HINT_T0);
    __m256i codes[4];
    block_codes_epi32<Bits>(w.row(n + r) + b * row_block_bytes, codes);
    for (int q = 0; q < 4; ++q) {  // quarter q: columns b·32 + 8q … + 7
      const __m256 w_hat =
          _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(codes[q]), zero[r]), scale[r]);
      for (int t = 0; t < Tokens; ++t)
        acc[r][t] = _mm256_fmadd_ps(w_hat, _mm256_loadu_ps(xb[t] + 8 * q), acc[r][t]);
    }
  }
}

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Rows [n, n + Rows) × tokens [m, m + Tokens) over all of K.
  template <int Bits, int Rows, int Tokens>
  static void tile(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                   index_t n, index_t m) noexcept {
    __m256 acc[Rows][Tokens];
    __m256 scale[Rows];
    __m256 zero[Rows];
    for (int r = 0; r < Rows; ++r) {
      for (int t = 0; t < Tokens; ++t) acc[r][t] = _mm256_setzero_ps();
      scale[r] = zero[r] = _mm256_setzero_ps();
    }
    const index_t tail = w.cols % block_codes;
    const index_t full_blocks = w.cols / block_codes;
    // Groups outermost, so a block never asks which group it is in (no division per block).
    for (index_t l = 0, b = 0; l < w.groups; ++l) {
      for (int r = 0; r < Rows; ++r) {
        scale[r] = _mm256_set1_ps(w.scales[(n + r) * w.groups + l]);
        zero[r] = _mm256_set1_ps(w.zeros[(n + r) * w.groups + l]);
      }
      const index_t group_end = std::min(full_blocks, b + w.blocks_per_group);
      for (; b < group_end; ++b) {
        const float* xb[Tokens];
        for (int t = 0; t < Tokens; ++t) xb[t] = x.row(m + t) + b * block_codes;
        block<Bits, Rows, Tokens>(w, xb, n, b, scale, zero, acc);
      }
      if (tail != 0 && l == w.groups - 1) {  // the last block, partly past K: a zero-padded copy
        alignas(32) float padded[Tokens][block_codes];
        const float* xb[Tokens];
        for (int t = 0; t < Tokens; ++t) {
          const float* xt = x.row(m + t) + full_blocks * block_codes;
          for (index_t j = 0; j < block_codes; ++j) padded[t][j] = j < tail ? xt[j] : 0.0f;
          xb[t] = padded[t];
        }
        block<Bits, Rows, Tokens>(w, xb, n, full_blocks, scale, zero, acc);
      }
    }
    for (int r = 0; r < Rows; ++r) {
      for (int t = 0; t < Tokens; ++t) {
        // Fixed reduction tree: (lanes 0-3 + 4-7), then pairs, then the last two.
        const __m128 half =
            _mm_add_ps(_mm256_castps256_ps128(acc[r][t]), _mm256_extractf128_ps(acc[r][t], 1));
        const __m128 pairs = _mm_add_ps(half, _mm_movehl_ps(half, half));
        const float sum = _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
        y.row(m + t)[n + r] = kernels::detail::finish_output(e, sum, m + t, n + r);
      }
    }
  }

};  // struct Tiles

}  // namespace detail_wq

/// y[m, n] for all m and n ∈ [n_begin, n_end): x is M×K, y is M×N.
inline void gemm_wq_f32(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                        index_t n_begin, index_t n_end) noexcept {
  kernels::detail::gemm_wq_with_tiles<detail_wq::Tiles, 2>(w, x, y, e, n_begin, n_end);
}

}  // namespace qlr::kernels::avx2

QLR_ISA_END
#endif
