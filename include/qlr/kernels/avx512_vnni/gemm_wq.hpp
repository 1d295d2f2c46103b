// SPDX-License-Identifier: Apache-2.0
// AVX-512 weight-only GEMM (INT4/INT8 × FP32). INT4 decodes through a 16-entry table per
// group, t[u] = s·(u − z), held in one register and indexed by vpermps straight from the
// nibbles; INT8 converts codes to float. Either way ŵ equals dequantize() bit for bit.
#pragma once

#include <cstdint>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/packed.hpp"

#if QLR_ARCH_X86
#  include <immintrin.h>

QLR_ISA_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

namespace qlr::kernels::avx512_vnni {
namespace detail_wq {

/// Accumulates rows [n, n + Rows) × tokens [m, m + Tokens) over all of K.
template <int Bits, int Rows, int Tokens>
inline void tile(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                 index_t n, index_t m) noexcept {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 acc[Rows][Tokens];
  __m512 table[Rows];  // INT4: s·(u − z) for u = 0…15
  __m512 scale[Rows];  // INT8
  __m512 zero[Rows];
  for (int r = 0; r < Rows; ++r)
    for (int t = 0; t < Tokens; ++t) acc[r][t] = _mm512_setzero_ps();
  const index_t tail = w.cols % block_codes;
  for (index_t b = 0; b < w.blocks; ++b) {
    if (b % w.blocks_per_group == 0) {  // a new group: its scale and zero per row
      const index_t l = b / w.blocks_per_group;
      for (int r = 0; r < Rows; ++r) {
        scale[r] = _mm512_set1_ps(w.scales[(n + r) * w.groups + l]);
        zero[r] = _mm512_set1_ps(w.zeros[(n + r) * w.groups + l]);
        if constexpr (Bits == 4) table[r] = _mm512_mul_ps(_mm512_sub_ps(iota, zero[r]), scale[r]);
      }
    }
    // Past K the activations read as 0 (masked loads never touch memory beyond K).
    const bool last = b == w.blocks - 1 && tail != 0;
    const __mmask16 mask_lo = last ? static_cast<__mmask16>(tail >= 16 ? 0xffff : (1u << tail) - 1) : 0xffff;
    const __mmask16 mask_hi = last ? static_cast<__mmask16>(tail <= 16 ? 0 : (1u << (tail - 16)) - 1) : 0xffff;
    __m512 x_lo[Tokens];
    __m512 x_hi[Tokens];
    for (int t = 0; t < Tokens; ++t) {
      const float* xt = x.row(m + t) + b * block_codes;
      x_lo[t] = _mm512_maskz_loadu_ps(mask_lo, xt);
      x_hi[t] = _mm512_maskz_loadu_ps(mask_hi, xt + 16);
    }
    for (int r = 0; r < Rows; ++r) {
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
        acc[r][t] = _mm512_fmadd_ps(w_lo, x_lo[t], acc[r][t]);
        acc[r][t] = _mm512_fmadd_ps(w_hi, x_hi[t], acc[r][t]);
      }
    }
  }
  for (int r = 0; r < Rows; ++r)
    for (int t = 0; t < Tokens; ++t)
      y.row(m + t)[n + r] =
          kernels::detail::finish_output(e, _mm512_reduce_add_ps(acc[r][t]), m + t, n + r);
}

template <int Bits, int Rows>
inline void rows_all_tokens(const PackedView& w, ConstMatrixView x, MatrixView y,
                            const Epilogue& e, index_t n) noexcept {
  index_t m = 0;
  for (; m + 4 <= x.rows; m += 4) tile<Bits, Rows, 4>(w, x, y, e, n, m);
  switch (x.rows - m) {
    case 3: tile<Bits, Rows, 3>(w, x, y, e, n, m); break;
    case 2: tile<Bits, Rows, 2>(w, x, y, e, n, m); break;
    case 1: tile<Bits, Rows, 1>(w, x, y, e, n, m); break;
    default: break;
  }
}

template <int Bits>
inline void gemm(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                 index_t n_begin, index_t n_end) noexcept {
  index_t n = n_begin;
  for (; n + 4 <= n_end; n += 4) rows_all_tokens<Bits, 4>(w, x, y, e, n);
  for (; n < n_end; ++n) rows_all_tokens<Bits, 1>(w, x, y, e, n);
}

}  // namespace detail_wq

/// y[m, n] for all m and n ∈ [n_begin, n_end): x is M×K, y is M×N.
inline void gemm_wq_f32(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                        index_t n_begin, index_t n_end) noexcept {
  if (w.bits == 4)
    detail_wq::gemm<4>(w, x, y, e, n_begin, n_end);
  else
    detail_wq::gemm<8>(w, x, y, e, n_begin, n_end);
}

}  // namespace qlr::kernels::avx512_vnni

QLR_ISA_END
#endif
