// SPDX-License-Identifier: Apache-2.0
// AVX-512 BF16 weight-only GEMM for INT4 × FP32. The decode is one word permute per 32 codes
// (vpermw of a table of u − zi, small integers and so exact in bf16), and each activation is
// carried as two bf16, x ≈ hi + lo to within 2^-16·|x|, so vdpbf16ps multiplies 32 exact
// products per instruction into FP32 sums. That is half the shuffles of the FP32 decode and
// what lets a GEMV keep up with memory. INT8 takes the FP32 path of avx512_vnni.
#pragma once

#include <cmath>
#include <cstdint>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/avx512_vnni/gemm_wq.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/detail/tiling.hpp"
#include "qlr/kernels/packed.hpp"

#if QLR_ARCH_X86
#  include <immintrin.h>

QLR_ISA_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni,avx512bf16,avx2,fma,f16c")

namespace qlr::kernels::avx512_bf16 {
namespace detail_wq {

/// The decode table of zero code zi: 32 bf16 words u − zi for u = word index mod 16, so that
/// vpermw, which reads 5 index bits, ignores the next nibble's low bit.
QLR_ALWAYS_INLINE __m512i decode_table(float zi) noexcept {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 values = _mm512_sub_ps(iota, _mm512_set1_ps(zi));
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(values, values));
}

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Panel `p` × tokens [m, m + Tokens) over all of K. Per group,
  ///   y += s·Σ (u − zi)·(hi + lo)   and, for floating zeros,   y −= s·(z − zi)·Σ x.
  template <int Bits, int Tokens>
  static void tile(const PackedView& w, const WqActivationView& a, MatrixView y,
                   const Epilogue& e, index_t p, index_t m) noexcept {
    if constexpr (Bits == 8)
      avx512_vnni::detail_wq::Tiles::template tile<8, Tokens>(w, a, y, e, p, m);
    else if (w.zero_fractions != nullptr)
      int4_tile<Tokens, true>(w, a, y, e, p, m);
    else
      int4_tile<Tokens, false>(w, a, y, e, p, m);
  }

  /// The INT4 tile; `Fractional` adds the floating zeros' s·(z − zi)·Σx terms.
  template <int Tokens, bool Fractional>
  static void int4_tile(const PackedView& w, const WqActivationView& a, MatrixView y,
                        const Epilogue& e, index_t p, index_t m) noexcept {
    {
      constexpr int rows = wq_panel_rows;
      constexpr index_t chunk_stride = rows * chunk_codes / 2;  // bytes of one chunk, 4 rows
      __m512 total[rows][Tokens];
      __m512 acc_hi[rows][Tokens];  // hi and lo chains run side by side
      __m512 acc_lo[rows][Tokens];
      float correction[rows][Tokens] = {};
      __m512i table[rows];
      const index_t n0 = p * rows;
      QLR_UNROLL
      for (int r = 0; r < rows; ++r) {
        QLR_UNROLL
        for (int t = 0; t < Tokens; ++t) total[r][t] = _mm512_setzero_ps();
        table[r] = decode_table(w.zero_codes[w.params(n0 + r, 0)]);
      }
      const auto begin_group = [&](index_t l) {
        QLR_UNROLL
        for (int r = 0; r < rows; ++r) {
          if (!w.uniform_zero && l > 0) table[r] = decode_table(w.zero_codes[w.params(n0 + r, l)]);
          QLR_UNROLL
          for (int t = 0; t < Tokens; ++t) acc_hi[r][t] = acc_lo[r][t] = _mm512_setzero_ps();
        }
      };
      const auto end_group = [&](index_t l) {
        QLR_UNROLL
        for (int r = 0; r < rows; ++r) {
          const __m512 scale = _mm512_set1_ps(w.scales[w.params(n0 + r, l)]);
          QLR_UNROLL
          for (int t = 0; t < Tokens; ++t) {
            total[r][t] =
                _mm512_fmadd_ps(_mm512_add_ps(acc_hi[r][t], acc_lo[r][t]), scale, total[r][t]);
            if constexpr (Fractional)
              correction[r][t] = std::fma(w.zero_fractions[w.params(n0 + r, l)],
                                          a.group_sums[(m + t) * a.groups + l], correction[r][t]);
          }
        }
      };
      const std::uint8_t* chunk = w.chunk(p, 0, 0);
      const std::uint16_t* x_hi = a.hi + m * a.padded_cols;
      const std::uint16_t* x_lo = a.lo + m * a.padded_cols;
      index_t group = 0;
      index_t group_end = w.blocks_per_group;  // first block of the next group
      begin_group(0);
      for (index_t b = 0; b < w.blocks; chunk += chunk_stride) {
        // One forward stream: ask for the weights 2 KB ahead (+25 % from DRAM here over the
        // hardware prefetcher alone).
        QLR_UNROLL
        for (int line = 0; line < rows; ++line)
          _mm_prefetch(reinterpret_cast<const char*>(chunk + 2048 + 64 * line), _MM_HINT_T0);
        __m512i codes[rows];
        QLR_UNROLL
        for (int r = 0; r < rows; ++r) codes[r] = _mm512_loadu_si512(chunk + 64 * r);
        // Block j of the chunk is nibble j of every word: shift it down, look it up.
        const auto block = [&]<int J>() {
          if (b == group_end) {
            end_group(group);
            begin_group(++group);
            group_end = group_end + w.blocks_per_group;
          }
          __m512bh xh[Tokens];
          __m512bh xl[Tokens];
          QLR_UNROLL
          for (int t = 0; t < Tokens; ++t) {
            xh[t] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(x_hi + t * a.padded_cols + b * block_codes));
            xl[t] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(x_lo + t * a.padded_cols + b * block_codes));
          }
          QLR_UNROLL
          for (int r = 0; r < rows; ++r) {
            const __m512i nibbles = J == 0 ? codes[r] : _mm512_srli_epi16(codes[r], 4 * J);
            const auto w_hat = reinterpret_cast<__m512bh>(_mm512_permutexvar_epi16(nibbles, table[r]));
            QLR_UNROLL
            for (int t = 0; t < Tokens; ++t) {
              acc_hi[r][t] = _mm512_dpbf16_ps(acc_hi[r][t], w_hat, xh[t]);
              acc_lo[r][t] = _mm512_dpbf16_ps(acc_lo[r][t], w_hat, xl[t]);
            }
          }
          ++b;
        };
        block.template operator()<0>();
        if (b < w.blocks) block.template operator()<1>();
        if (b < w.blocks) block.template operator()<2>();
        if (b < w.blocks) block.template operator()<3>();
      }
      end_group(group);
      QLR_UNROLL
      for (int t = 0; t < Tokens; ++t) {
        float sums[rows];
        QLR_UNROLL
        for (int r = 0; r < rows; ++r)
          sums[r] = _mm512_reduce_add_ps(total[r][t]) - correction[r][t];
        kernels::detail::store_wq_panel(sums, w, y, e, p, m + t);
      }
    }
  }
};

}  // namespace detail_wq

/// y[m, n] for all m and the rows n of panels [panel_begin, panel_end). INT4 needs `a` to
/// carry the bf16 pairs (gemm() builds them for this path).
inline void gemm_wq_f32(const PackedView& w, const WqActivationView& a, MatrixView y,
                        const Epilogue& e, index_t panel_begin, index_t panel_end) noexcept {
  kernels::detail::gemm_wq_with_tiles<detail_wq::Tiles, 2>(w, a, y, e, panel_begin, panel_end);
}

}  // namespace qlr::kernels::avx512_bf16

QLR_ISA_END
#endif
