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
#include "qlr/kernels/avx2/epilogue.hpp"
#include "qlr/kernels/detail/tiling.hpp"
#include "qlr/kernels/packed.hpp"

#if QLR_ARCH_X86
#  include <immintrin.h>

QLR_ISA_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

namespace qlr::kernels::avx512_vnni {
namespace detail_wq {

/// Walks panel `p` of `w` chunk by chunk, the 4 rows of a chunk side by side:
///   load_chunk(chunk)       once per chunk, `chunk` pointing at its row 0;
///   block<J>(b)             for block J = 0…3 of the chunk, column block b < w.blocks;
///   begin_group(l)          before the first block of group l.
/// With BlockGroups, a group may end inside a chunk (g = 32, 64, 96, …); without, only
/// between chunks (g a multiple of 128, or one group per row), and the blocks never ask.
template <bool BlockGroups, class LoadChunk, class Block, class BeginGroup>
QLR_ALWAYS_INLINE void walk_chunks(const PackedView& w, index_t p, LoadChunk&& load_chunk,
                                   Block&& block, BeginGroup&& begin_group) noexcept {
  const index_t chunk_stride = wq_panel_rows * w.chunk_bytes();
  const std::uint8_t* chunk = w.chunk(p, 0, 0);
  index_t group = 0;
  index_t group_end = w.blocks_per_group;  // first block of the next group
  const auto next_block = [&](index_t b) {
    if (b == group_end) {
      begin_group(++group);
      group_end += w.blocks_per_group;
    }
  };
  begin_group(0);
  for (index_t b = 0; b < w.blocks; chunk += chunk_stride) {
    if constexpr (!BlockGroups) next_block(b);
    // One forward stream. On Zen 5, one thread, no software prefetch is 5–20 % slower;
    // distances of 1–16 KB and the other hints made no difference beyond noise.
    for (index_t line = 0; line < chunk_stride; line += 64)
      kernels::detail::prefetch_weight_line(chunk + line);
    load_chunk(chunk);
    const auto step = [&]<int J>() {
      if constexpr (BlockGroups) next_block(b);
      block.template operator()<J>(b);
      ++b;
    };
    step.template operator()<0>();
    if (b < w.blocks) step.template operator()<1>();
    if (b < w.blocks) step.template operator()<2>();
    if (b < w.blocks) step.template operator()<3>();
  }
}

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Panel `p` × tokens [m, m + Tokens) over all of K.
  template <int Bits, int Tokens>
  static void tile(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                   index_t p, index_t m) noexcept {
    if (w.blocks_per_group % 4 != 0 && w.groups > 1)
      walk_tile<Bits, Tokens, true>(w, x, y, e, p, m);
    else
      walk_tile<Bits, Tokens, false>(w, x, y, e, p, m);
  }

  /// The tile; `BlockGroups` lets a group end inside a chunk (g = 32, 64, 96, …).
  template <int Bits, int Tokens, bool BlockGroups>
  static void walk_tile(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                        index_t p, index_t m) noexcept {
    constexpr int rows = wq_panel_rows;
    // One token leaves each accumulator a chain of dependent FMAs: the low and high half of
    // a block get their own, so two chains run side by side. Their fixed sum at the end
    // keeps the result independent of anything but the shape.
    constexpr int split = Tokens == 1 ? 2 : 1;
    // Up to 2 tokens, a chunk's INT4 words are widened to int32 once, for all 4 blocks.
    constexpr bool widen_per_chunk = Bits == 4 && Tokens <= 2;
    const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const index_t n0 = p * rows;
    __m512 acc[rows][Tokens][split];
    __m512 table[rows];  // INT4: s·(u − z) for u = 0…15
    __m512 scale[rows];  // INT8
    __m512 zero[rows];
    QLR_UNROLL
    for (int r = 0; r < rows; ++r) {
      QLR_UNROLL
      for (int t = 0; t < Tokens; ++t)
        for (int h = 0; h < split; ++h) acc[r][t][h] = _mm512_setzero_ps();
    }
    const auto begin_group = [&](index_t l) {
      QLR_UNROLL
      for (int r = 0; r < rows; ++r) {
        scale[r] = _mm512_set1_ps(w.scales[w.params(n0 + r, l)]);
        zero[r] = _mm512_set1_ps(w.zeros[w.params(n0 + r, l)]);
        if constexpr (Bits == 4) table[r] = _mm512_mul_ps(_mm512_sub_ps(iota, zero[r]), scale[r]);
      }
    };
    // Masked loads never touch memory past K; lanes there read 0.
    const index_t tail = w.cols % block_codes;
    const auto mask_lo =
        static_cast<__mmask16>(tail == 0 || tail >= 16 ? 0xffff : (1u << tail) - 1);
    const auto mask_hi = static_cast<__mmask16>(tail == 0    ? 0xffff
                                                : tail <= 16 ? 0
                                                             : (1u << (tail - 16)) - 1);
    const std::uint8_t* chunk = nullptr;
    __m512i words_lo[rows];  // INT4, widen_per_chunk: words 0-15 and 16-31 of each row
    __m512i words_hi[rows];
    const auto widen = [&](int r, __m512i& lo, __m512i& hi) {
      const std::uint8_t* row = chunk + r * w.chunk_bytes();
      lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row)));
      hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 32)));
    };
    const auto load_chunk = [&](const std::uint8_t* c) {
      chunk = c;
      if constexpr (widen_per_chunk) {
        QLR_UNROLL
        for (int r = 0; r < rows; ++r) widen(r, words_lo[r], words_hi[r]);
      }
    };
    const auto block = [&]<int J>(index_t b) {
      const bool last = b == w.blocks - 1;
      __m512 x_lo[Tokens];
      __m512 x_hi[Tokens];
      QLR_UNROLL
      for (int t = 0; t < Tokens; ++t) {
        const float* xt = x.row(m + t) + b * block_codes;
        x_lo[t] = _mm512_maskz_loadu_ps(last ? mask_lo : 0xffff, xt);
        x_hi[t] = _mm512_maskz_loadu_ps(last ? mask_hi : 0xffff, xt + 16);
      }
      QLR_UNROLL
      for (int r = 0; r < rows; ++r) {
        __m512 w_lo;
        __m512 w_hi;
        if constexpr (Bits == 4) {  // columns 0-15 and 16-31 of block J: nibble J of the words
          __m512i lo = words_lo[r];
          __m512i hi = words_hi[r];
          if constexpr (!widen_per_chunk) widen(r, lo, hi);
          // vpermps reads bits 0-3 of each lane: the nibble of block J after the shift.
          w_lo = _mm512_permutexvar_ps(J == 0 ? lo : _mm512_srli_epi32(lo, 4 * J), table[r]);
          w_hi = _mm512_permutexvar_ps(J == 0 ? hi : _mm512_srli_epi32(hi, 4 * J), table[r]);
        } else {
          const std::uint8_t* codes = chunk + r * w.chunk_bytes() + J * block_codes;
          const __m512 u_lo = _mm512_cvtepi32_ps(
              _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes))));
          const __m512 u_hi = _mm512_cvtepi32_ps(
              _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16))));
          w_lo = _mm512_mul_ps(_mm512_sub_ps(u_lo, zero[r]), scale[r]);
          w_hi = _mm512_mul_ps(_mm512_sub_ps(u_hi, zero[r]), scale[r]);
        }
        QLR_UNROLL
        for (int t = 0; t < Tokens; ++t) {
          acc[r][t][0] = _mm512_fmadd_ps(w_lo, x_lo[t], acc[r][t][0]);
          acc[r][t][split - 1] = _mm512_fmadd_ps(w_hi, x_hi[t], acc[r][t][split - 1]);
        }
      }
    };
    walk_chunks<BlockGroups>(w, p, load_chunk, block, begin_group);
    QLR_UNROLL
    for (int t = 0; t < Tokens; ++t) {
      float sums[rows];
      QLR_UNROLL
      for (int r = 0; r < rows; ++r)
        sums[r] = _mm512_reduce_add_ps(
            split == 2 ? _mm512_add_ps(acc[r][t][0], acc[r][t][split - 1]) : acc[r][t][0]);
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
  kernels::detail::gemm_wq_with_tiles<detail_wq::Tiles, 4>(w, x, y, e, panel_begin, panel_end);
}

}  // namespace qlr::kernels::avx512_vnni

QLR_ISA_END
#endif
