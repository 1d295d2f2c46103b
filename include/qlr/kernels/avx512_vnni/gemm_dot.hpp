// SPDX-License-Identifier: Apache-2.0
// AVX-512 VNNI integer GEMM (W8A8, W4A8, W4A4; weight-only as INT8 limbs): one vpdpbusd
// multiplies a 64-byte step of a 16-row panel (unsigned codes) by one token's 4 activation
// bytes (signed), broadcast, and adds the 16 row sums. No horizontal sums: a zmm of int32
// is a panel's 16 outputs.
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

/// Where a tile reads: its first panel's codes and first token's activations, and the
/// distances to the next panel and token.
struct TileOperands {
  const std::uint8_t* panel;  ///< codes of the tile's first panel
  index_t panel_bytes;        ///< to the next panel
  const std::int8_t* tokens;  ///< activations of the tile's first token
  index_t token_bytes;        ///< to the next token
};

/// dot[pp][t] += the products of columns [c, c + 4) for every panel and token, c = i + 4·Half
/// with i a multiple of 8. The panels' code vectors are loaded first and each token's
/// broadcast then feeds all of them, so the registers hold the Panels × Tokens sums,
/// Panels code vectors and one broadcast.
template <int Bits, int Half, int Panels, int Tokens>
QLR_ALWAYS_INLINE void add_columns(__m512i (&dot)[Panels][Tokens], const TileOperands& in,
                                   index_t i) noexcept {
  __m512i codes[Panels];
  QLR_UNROLL
  for (int pp = 0; pp < Panels; ++pp) {
    // INT8: 4 columns per 64-byte line; INT4: 8, low nibbles then high.
    const std::uint8_t* line = in.panel + pp * in.panel_bytes + (Bits == 8 ? i * 16 : i * 8);
    if constexpr (Bits == 8) {
      codes[pp] = _mm512_loadu_si512(line + Half * 64);
    } else {
      // The second half reloads the line (from L1) rather than hold Panels more registers.
      const __m512i packed = _mm512_loadu_si512(line);
      codes[pp] = _mm512_and_si512(Half == 0 ? packed : _mm512_srli_epi16(packed, 4),
                                   _mm512_set1_epi8(0x0f));
    }
  }
  QLR_UNROLL
  for (int t = 0; t < Tokens; ++t) {
    const __m512i activations = broadcast4(in.tokens + t * in.token_bytes + i + Half * 4);
    QLR_UNROLL
    for (int pp = 0; pp < Panels; ++pp)
      dot[pp][t] = _mm512_dpbusd_epi32(dot[pp][t], codes[pp], activations);
  }
}

/// sums[pp][t] = Σ u·q over the columns [begin, end) (multiples of 8) of every panel and
/// token of the tile. Plain loops over compile-time bounds, unrolled, and no lambdas: GCC
/// then keeps every sum in a register (a 4×6 tile written with captured arrays lived on the
/// stack and ran at a third of the speed).
template <int Bits, int Panels, int Tokens>
QLR_ALWAYS_INLINE void tile_dots(const TileOperands& in, index_t begin, index_t end,
                                 std::int32_t (&sums)[Panels][Tokens][panel_rows]) noexcept {
  __m512i dot[Panels][Tokens];
  QLR_UNROLL
  for (int pp = 0; pp < Panels; ++pp)
    QLR_UNROLL
    for (int t = 0; t < Tokens; ++t) dot[pp][t] = _mm512_setzero_si512();
  // The panels are in L2, read again by every tile of tokens: the hardware prefetcher
  // suffices, and prefetch instructions would take load slots (at M = 512 on Zen 4,
  // 0.74x -> 0.81x oneDNN without them).
  for (index_t i = begin; i < end; i += 8) {
    add_columns<Bits, 0>(dot, in, i);
    add_columns<Bits, 1>(dot, in, i);
  }
  QLR_UNROLL
  for (int pp = 0; pp < Panels; ++pp)
    QLR_UNROLL
    for (int t = 0; t < Tokens; ++t) _mm512_store_si512(sums[pp][t], dot[pp][t]);
}

/// Prefetches the weight lines of columns [i, i + 8) of the tile's first panel.
template <int Bits>
QLR_ALWAYS_INLINE void prefetch_columns(const TileOperands& in, index_t i) noexcept {
  const std::uint8_t* line = in.panel + (Bits == 8 ? i * 16 : i * 8);
  kernels::detail::prefetch_weight_line(line);
  if constexpr (Bits == 8) kernels::detail::prefetch_weight_line(line + 64);
}

/// A GEMV's sums over [begin, end): one panel and 1 or 3 rows (a token, or its 3 limbs).
/// One row runs four chains of vpdpbusd (two steps of two halves) rather than one dependent
/// chain, so that a late line can be caught up; three rows run two chains each. Integer
/// sums are exact, so the split is free. One row of INT8 codes leaves prefetching to the
/// hardware; INT4 codes and limb rows prefetch in software. On Zen 4 (4096² from DRAM, one
/// thread, alternating binaries) one W8A8 row read 30–33 GB/s without and 20–22 with it,
/// while the limb rows went from 13–14 to 21–24 GB/s with it. One W4A8 row gains little
/// alone (18–21 → 20–21 GB/s) but keeps the stream going past an adapter's Bᵀ reads in the
/// epilogue: a rank-16 LoRA's time with ÷ without it was 1.40–1.53 without and 1.08–1.10
/// with. (Until this was measured, a prefetch lambda here was dead code to GCC: a call with
/// no side effects, removed before it was inlined.)
template <int Bits, int Tokens>
QLR_ALWAYS_INLINE void gemv_dots(const TileOperands& in, index_t begin, index_t end,
                                 std::int32_t (&sums)[1][Tokens][panel_rows]) noexcept {
  constexpr int steps = Tokens == 1 ? 2 : 1;  // 8-column steps per iteration
  constexpr bool prefetch = Bits == 4 || Tokens > 1;
  __m512i dot[2 * steps][1][Tokens];
  QLR_UNROLL
  for (int h = 0; h < 2 * steps; ++h)
    QLR_UNROLL
    for (int t = 0; t < Tokens; ++t) dot[h][0][t] = _mm512_setzero_si512();
  index_t i = begin;
  for (; i + 8 * steps <= end; i += 8 * steps) {
    QLR_UNROLL
    for (int s = 0; s < steps; ++s) {
      if constexpr (prefetch) prefetch_columns<Bits>(in, i + 8 * s);
      add_columns<Bits, 0>(dot[2 * s], in, i + 8 * s);
      add_columns<Bits, 1>(dot[2 * s + 1], in, i + 8 * s);
    }
  }
  if (i < end) {
    if constexpr (prefetch) prefetch_columns<Bits>(in, i);
    add_columns<Bits, 0>(dot[0], in, i);
    add_columns<Bits, 1>(dot[1], in, i);
  }
  QLR_UNROLL
  for (int t = 0; t < Tokens; ++t) {
    __m512i sum = _mm512_add_epi32(dot[0][0][t], dot[1][0][t]);
    if constexpr (steps == 2)
      sum = _mm512_add_epi32(sum, _mm512_add_epi32(dot[2][0][t], dot[3][0][t]));
    _mm512_store_si512(sums[0][t], sum);
  }
}

/// This path's tiles, for the shared driver (kernels/detail/tiling.hpp).
struct Tiles {
  /// Panels [p, p + Panels) × tokens [m, m + Tokens) over all of K.
  template <int Bits, int Panels, int Tokens>
  static void dot_tile(const DotWeightView& w, const DotActivationView& a, MatrixView y,
                       const Epilogue& e, index_t p, index_t m) noexcept {
    const TileOperands in{w.panel(p), w.panel_bytes(), a.row(m), a.padded_cols};
    // Sums wait in memory between groups (a few loads and stores per group): the registers
    // are for the int32 sums, so that a tile can reuse each code vector for more tokens.
    alignas(64) float acc[Panels][Tokens][panel_rows] = {};
    for (index_t l = 0; l < w.groups; ++l) {
      alignas(64) std::int32_t sums[Panels][Tokens][panel_rows];
      if constexpr (Panels == 1 && (Tokens == 1 || Tokens == 3))
        gemv_dots<Bits>(in, w.group_begin(l), w.group_end(l), sums);
      else
        tile_dots<Bits>(in, w.group_begin(l), w.group_end(l), sums);
      for (int pp = 0; pp < Panels; ++pp) {
        const index_t at = w.params(p + pp, l);
        const __m512 scale = _mm512_loadu_ps(w.scales + at);
        const __m512i zero = _mm512_loadu_si512(w.zeros + at);
        for (int t = 0; t < Tokens; ++t) {
          const __m512i group_sum = _mm512_set1_epi32(a.group_sums[(m + t) * a.groups + l]);
          // Limb rows scale each group by their own c; others skip the multiply by 1.
          const bool scaled = a.group_scales != nullptr;
          const __m512 c = _mm512_set1_ps(a.group_scale(m + t, l));
          const __m512i exact =
              _mm512_sub_epi32(_mm512_load_si512(sums[pp][t]), _mm512_mullo_epi32(zero, group_sum));
          __m512 total = _mm512_fmadd_ps(scaled ? _mm512_mul_ps(scale, c) : scale,
                                         _mm512_cvtepi32_ps(exact), _mm512_load_ps(acc[pp][t]));
          if (w.zero_offsets != nullptr) {
            const __m512 fraction = _mm512_mul_ps(scale, _mm512_loadu_ps(w.zero_offsets + at));
            total = _mm512_fnmadd_ps(scaled ? _mm512_mul_ps(fraction, c) : fraction,
                                     _mm512_cvtepi32_ps(group_sum), total);
          }
          _mm512_store_ps(acc[pp][t], total);
        }
      }
    }
    for (int pp = 0; pp < Panels; ++pp) finish_panel<Tokens>(acc[pp], w, a, y, e, p + pp, m);
  }

  /// Writes panel `p`'s outputs for tokens [m, m + Tokens) from their sums. Out of line: one
  /// copy per row count, shared by the tiles of both code widths and panel counts (inlined,
  /// the epilogue was most of each of the 24 tiles' code, and of the kernels' compile time),
  /// and called once per panel after the whole K loop.
  template <int Tokens>
  QLR_NOINLINE static void finish_panel(const float (&acc)[Tokens][panel_rows],
                                        const DotWeightView& w, const DotActivationView& a,
                                        MatrixView y, const Epilogue& e, index_t p,
                                        index_t m) noexcept {
    kernels::detail::store_panel_rows(
        acc,
        [&](index_t token, int tokens, index_t n0, index_t count, float(*side)[panel_rows]) {
          kernels::avx2::add_low_rank_tokens<panel_rows, Tokens>(e, token, tokens, n0, count, side);
        },
        w, a, y, e, p, m);
  }
};  // struct Tiles

}  // namespace detail_dot

/// y[m, n] for all tokens m and the rows n of panels [panel_begin, panel_end). A template
/// only so that qlr::compiled can compile it once per program (kernels/compiled.hpp).
template <int = 0>
void gemm_dot(const DotWeightView& w, const DotActivationView& a, MatrixView y,
                     const Epilogue& e, index_t panel_begin, index_t panel_end) noexcept {
  // 4 panels × 6 tokens: 24 int32 sums, 4 code vectors and a broadcast in the 32 zmm; each
  // code vector feeds 6 vpdpbusd, each broadcast 4. At M = 512 on Zen 4 (one thread) it
  // and 3 × 8 ran W8A8 at 0.95–1.0× oneDNN, 3 × 4 at 0.92–0.97×; the inner loop alone
  // (panels in L2) reaches one vpdpbusd per cycle.
  kernels::detail::gemm_dot_with_tiles<detail_dot::Tiles, 4, 6>(w, a, y, e, panel_begin, panel_end);
}

}  // namespace qlr::kernels::avx512_vnni

QLR_ISA_END
#endif
