// SPDX-License-Identifier: Apache-2.0
// AVX-512 weight-only GEMM (INT4/INT8 × FP32). INT4 decodes through a 16-entry table per
// group, t[u] = s·(u − z), held in one register and indexed by vpermps straight from the
// nibbles; INT8 converts codes to float. Either way ŵ equals dequantize() bit for bit.
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

QLR_ISA_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

namespace qlr::kernels::avx512_vnni {
namespace detail_wq {

/// Accumulates rows [n, n + Rows) × tokens [m, m + Tokens) over all of K.
/// Accumulates block `b` of rows [n, n + Rows) × tokens [m, m + Tokens). `Masked` blocks
/// read activations through the masks (the last block of a K that 32 does not divide).
template <int Bits, int Rows, int Tokens, int Split, bool Masked>
QLR_ALWAYS_INLINE void block(const PackedView& w, ConstMatrixView x, index_t n, index_t m,
                             index_t b, __mmask16 mask_lo, __mmask16 mask_hi,
                             const __m512 (&table)[Rows], const __m512 (&scale)[Rows],
                             const __m512 (&zero)[Rows],
                             __m512 (&acc)[Rows][Tokens][Split]) noexcept {
  __m512 x_lo[Tokens];
  __m512 x_hi[Tokens];
  for (int t = 0; t < Tokens; ++t) {
    const float* xt = x.row(m + t) + b * block_codes;
    if constexpr (Masked) {  // masked loads never touch memory past K; lanes there read 0
      x_lo[t] = _mm512_maskz_loadu_ps(mask_lo, xt);
      x_hi[t] = _mm512_maskz_loadu_ps(mask_hi, xt + 16);
    } else {
      x_lo[t] = _mm512_loadu_ps(xt);
      x_hi[t] = _mm512_loadu_ps(xt + 16);
    }
  }
  for (int r = 0; r < Rows; ++r) {
    // Four streams of 16-byte steps keep too few DRAM requests in flight for the hardware
    // prefetcher: ask for the line 32 blocks ahead once per line (+25 % from DRAM here).
    if ((b & (64 / (block_codes * Bits / 8) - 1)) == 0)
      _mm_prefetch(reinterpret_cast<const char*>(w.row(n + r) + (b + 32) * block_codes * Bits / 8),
                   _MM_HINT_T0);
    __m512 w_lo;
    __m512 w_hi;
    if constexpr (Bits == 4) {
      const __m512i codes = _mm512_cvtepu8_epi32(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(w.row(n + r) + b * 16)));
      w_lo = _mm512_permutexvar_ps(codes, table[r]);  // vpermps reads bits 0-3: low nibble
      w_hi = _mm512_permutexvar_ps(_mm512_srli_epi32(codes, 4), table[r]);
    } else {
      const std::uint8_t* p = w.row(n + r) + b * block_codes;
      const __m512 u_lo = _mm512_cvtepi32_ps(
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
      const __m512 u_hi = _mm512_cvtepi32_ps(
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16))));
      w_lo = _mm512_mul_ps(_mm512_sub_ps(u_lo, zero[r]), scale[r]);
      w_hi = _mm512_mul_ps(_mm512_sub_ps(u_hi, zero[r]), scale[r]);
    }
    for (int t = 0; t < Tokens; ++t) {
      acc[r][t][0] = _mm512_fmadd_ps(w_lo, x_lo[t], acc[r][t][0]);
      acc[r][t][Split - 1] = _mm512_fmadd_ps(w_hi, x_hi[t], acc[r][t][Split - 1]);
    }
  }
}

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Rows [n, n + Rows) × tokens [m, m + Tokens) over all of K.
  template <int Bits, int Rows, int Tokens>
  static void tile(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                   index_t n, index_t m) noexcept {
    // One token leaves each accumulator a chain of dependent FMAs: the low and high half of
    // a block get their own, so two chains run side by side. Their fixed sum at the end
    // keeps the result independent of anything but the shape.
    constexpr int Split = Tokens == 1 ? 2 : 1;
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 acc[Rows][Tokens][Split];
    __m512 table[Rows];  // INT4: s·(u − z) for u = 0…15
    __m512 scale[Rows];  // INT8
    __m512 zero[Rows];
    for (int r = 0; r < Rows; ++r) {
      for (int t = 0; t < Tokens; ++t)
        for (int h = 0; h < Split; ++h) acc[r][t][h] = _mm512_setzero_ps();
      table[r] = scale[r] = zero[r] = _mm512_setzero_ps();
    }
    const index_t tail = w.cols % block_codes;
    const index_t full_blocks = w.cols / block_codes;
    // Groups outermost, so a block never asks which group it is in (no division per block).
    for (index_t l = 0, b = 0; l < w.groups; ++l) {
      for (int r = 0; r < Rows; ++r) {
        scale[r] = _mm512_set1_ps(w.scales[(n + r) * w.groups + l]);
        zero[r] = _mm512_set1_ps(w.zeros[(n + r) * w.groups + l]);
        if constexpr (Bits == 4) table[r] = _mm512_mul_ps(_mm512_sub_ps(iota, zero[r]), scale[r]);
      }
      const index_t group_end = std::min(full_blocks, b + w.blocks_per_group);
      for (; b < group_end; ++b)
        block<Bits, Rows, Tokens, Split, false>(w, x, n, m, b, 0, 0, table, scale, zero, acc);
      if (tail != 0 && l == w.groups - 1) {  // the last block, partly past K
        const auto mask_lo = static_cast<__mmask16>(tail >= 16 ? 0xffff : (1u << tail) - 1);
        const auto mask_hi = static_cast<__mmask16>(tail <= 16 ? 0 : (1u << (tail - 16)) - 1);
        block<Bits, Rows, Tokens, Split, true>(w, x, n, m, full_blocks, mask_lo, mask_hi, table,
                                               scale, zero, acc);
      }
    }
    for (int r = 0; r < Rows; ++r) {
      for (int t = 0; t < Tokens; ++t) {
        const __m512 sum =
            Split == 2 ? _mm512_add_ps(acc[r][t][0], acc[r][t][Split - 1]) : acc[r][t][0];
        y.row(m + t)[n + r] =
            kernels::detail::finish_output(e, _mm512_reduce_add_ps(sum), m + t, n + r);
      }
    }
  }

};  // struct Tiles

}  // namespace detail_wq

/// y[m, n] for all m and n ∈ [n_begin, n_end): x is M×K, y is M×N.
inline void gemm_wq_f32(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                        index_t n_begin, index_t n_end) noexcept {
  kernels::detail::gemm_wq_with_tiles<detail_wq::Tiles, 4>(w, x, y, e, n_begin, n_end);
}

}  // namespace qlr::kernels::avx512_vnni

QLR_ISA_END
#endif
