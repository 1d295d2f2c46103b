// SPDX-License-Identifier: Apache-2.0
// AVX-512 weight-only GEMM (INT4/INT8 × FP32). INT4 decodes through a 16-entry table per
// group, t[u] = s·(u − z), held in one register and indexed by vpermps straight from the
// nibbles; INT8 converts codes to float. Either way ŵ equals dequantize() bit for bit.
// The path of AVX-512 CPUs without bf16 dot products, and the INT8 path of those with them.
#pragma once

#include <cstdint>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/detail/tiling.hpp"
#include "qlr/kernels/packed.hpp"

#if QLR_ARCH_X86
#  include <immintrin.h>

QLR_ISA_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

namespace qlr::kernels::avx512_vnni {
namespace detail_wq {

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Panel `p` × tokens [m, m + Tokens) over all of K.
  template <int Bits, int Tokens>
  static void tile(const PackedView& w, const WqActivationView& a, MatrixView y,
                   const Epilogue& e, index_t p, index_t m) noexcept {
    constexpr int rows = wq_panel_rows;
    // One token leaves each accumulator a chain of dependent FMAs: the low and high half of
    // a block get their own, so two chains run side by side. Their fixed sum at the end
    // keeps the result independent of anything but the shape.
    constexpr int split = Tokens == 1 ? 2 : 1;
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 acc[rows][Tokens][split];
    __m512 table[rows];  // INT4: s·(u − z) for u = 0…15
    __m512 scale[rows];  // INT8
    __m512 zero[rows];
    for (int r = 0; r < rows; ++r) {
      for (int t = 0; t < Tokens; ++t)
        for (int h = 0; h < split; ++h) acc[r][t][h] = _mm512_setzero_ps();
      table[r] = scale[r] = zero[r] = _mm512_setzero_ps();
    }
    // Masked loads never touch memory past K; lanes there read 0.
    const index_t tail = w.cols % block_codes;
    const auto mask_lo = static_cast<__mmask16>(tail == 0 || tail >= 16 ? 0xffff : (1u << tail) - 1);
    const auto mask_hi = static_cast<__mmask16>(tail == 0 ? 0xffff : tail <= 16 ? 0 : (1u << (tail - 16)) - 1);
    // Groups outermost, so a block never asks which group it is in (no division per block).
    for (index_t l = 0, b = 0; l < w.groups; ++l) {
      for (int r = 0; r < rows; ++r) {
        scale[r] = _mm512_set1_ps(w.scales[w.params(p * rows + r, l)]);
        zero[r] = _mm512_set1_ps(w.zeros[w.params(p * rows + r, l)]);
        if constexpr (Bits == 4) table[r] = _mm512_mul_ps(_mm512_sub_ps(iota, zero[r]), scale[r]);
      }
      const index_t group_end = b + w.blocks_per_group < w.blocks ? b + w.blocks_per_group : w.blocks;
      for (; b < group_end; ++b) {
        const bool last = b == w.blocks - 1;
        __m512 x_lo[Tokens];
        __m512 x_hi[Tokens];
        for (int t = 0; t < Tokens; ++t) {
          const float* xt = a.x.row(m + t) + b * block_codes;
          x_lo[t] = _mm512_maskz_loadu_ps(last ? mask_lo : 0xffff, xt);
          x_hi[t] = _mm512_maskz_loadu_ps(last ? mask_hi : 0xffff, xt + 16);
        }
        const index_t j = b % 4;
        for (int r = 0; r < rows; ++r) {
          const std::uint8_t* chunk = w.chunk(p, b / 4, r);
          // One forward stream of short steps: ask for the weights 2 KB ahead, once per chunk.
          if (j == 0) _mm_prefetch(reinterpret_cast<const char*>(chunk + 2048), _MM_HINT_T0);
          __m512 w_lo;
          __m512 w_hi;
          if constexpr (Bits == 4) {  // words 0-15 and 16-31: columns 0-15 and 16-31 of block j
            const __m128i shift = _mm_cvtsi32_si128(static_cast<int>(4 * j));
            const __m512i lo = _mm512_cvtepu16_epi32(
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk)));
            const __m512i hi = _mm512_cvtepu16_epi32(
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(chunk + 32)));
            // vpermps reads bits 0-3 of each lane: the nibble of block j after the shift.
            w_lo = _mm512_permutexvar_ps(_mm512_srl_epi32(lo, shift), table[r]);
            w_hi = _mm512_permutexvar_ps(_mm512_srl_epi32(hi, shift), table[r]);
          } else {
            const std::uint8_t* block = chunk + j * block_codes;
            const __m512 u_lo = _mm512_cvtepi32_ps(
                _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block))));
            const __m512 u_hi = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16))));
            w_lo = _mm512_mul_ps(_mm512_sub_ps(u_lo, zero[r]), scale[r]);
            w_hi = _mm512_mul_ps(_mm512_sub_ps(u_hi, zero[r]), scale[r]);
          }
          for (int t = 0; t < Tokens; ++t) {
            acc[r][t][0] = _mm512_fmadd_ps(w_lo, x_lo[t], acc[r][t][0]);
            acc[r][t][split - 1] = _mm512_fmadd_ps(w_hi, x_hi[t], acc[r][t][split - 1]);
          }
        }
      }
    }
    for (int t = 0; t < Tokens; ++t) {
      float sums[rows];
      for (int r = 0; r < rows; ++r)
        sums[r] = _mm512_reduce_add_ps(
            split == 2 ? _mm512_add_ps(acc[r][t][0], acc[r][t][split - 1]) : acc[r][t][0]);
      kernels::detail::store_wq_panel(sums, w, y, e, p, m + t);
    }
  }
};

}  // namespace detail_wq

/// y[m, n] for all m and the rows n of panels [panel_begin, panel_end).
inline void gemm_wq_f32(const PackedView& w, const WqActivationView& a, MatrixView y,
                        const Epilogue& e, index_t panel_begin, index_t panel_end) noexcept {
  kernels::detail::gemm_wq_with_tiles<detail_wq::Tiles, 4>(w, a, y, e, panel_begin, panel_end);
}

}  // namespace qlr::kernels::avx512_vnni

QLR_ISA_END
#endif
