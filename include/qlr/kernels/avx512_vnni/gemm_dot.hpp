// SPDX-License-Identifier: Apache-2.0
// AVX-512 VNNI integer GEMM (W2/W3/W4/W8 × INT8 or INT4 codes; weight-only as INT8 limbs):
// one vpdpbusd multiplies a quad (4 columns) of a 16-row panel (unsigned codes) by one
// token's 4 activation bytes (signed), broadcast, and adds the 16 row sums. No horizontal sums:
// a zmm of int32 is a panel's 16 outputs.
#pragma once

#include <algorithm>
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

/// The `Bits`-bit field at bit Shift·Bits of every byte of v.
template <int Bits, int Shift>
QLR_ALWAYS_INLINE __m512i field(__m512i v) noexcept {
  const __m512i shifted = Shift == 0 ? v : _mm512_srli_epi16(v, Shift * Bits);
  return _mm512_and_si512(shifted, _mm512_set1_epi8(static_cast<char>((1 << Bits) - 1)));
}

/// The codes of quad Q (4 columns) of all 16 rows of the block at `block`, one byte each
/// (packed_dot.hpp's layout).
template <int Bits, int Q>
QLR_ALWAYS_INLINE __m512i quad_codes(const std::uint8_t* block) noexcept {
  const auto line = [block](int n) { return _mm512_loadu_si512(block + 64 * n); };
  if constexpr (Bits == 8) {
    return line(Q);
  } else if constexpr (Bits == 3) {  // low two bits as INT2, bit Q of the third line above
    const __m512i high =
        Q >= 2 ? _mm512_srli_epi16(line(2), Q - 2) : _mm512_slli_epi16(line(2), 2 - Q);
    return _mm512_or_si512(field<2, Q % 4>(line(Q / 4)),
                           _mm512_and_si512(high, _mm512_set1_epi8(4)));
  } else {
    // INT4 and INT2 take fields of one line; a later quad reloads it (from L1) rather than
    // hold Panels more registers.
    return field<Bits, Q % (8 / Bits)>(line(Q / (8 / Bits)));
  }
}

/// dot[pp][t] += the products of quad Q of the block at column i (a multiple of
/// block_cols(Bits)) for every panel and token. The panels' code vectors are decoded first
/// and each token's broadcast then feeds all of them, so the registers hold the Panels ×
/// Tokens sums, Panels code vectors and one broadcast.
template <int Bits, int Q, int Panels, int Tokens>
QLR_ALWAYS_INLINE void add_quad(__m512i (&dot)[Panels][Tokens], const TileOperands& in,
                                index_t i) noexcept {
  __m512i codes[Panels];
  QLR_UNROLL
  for (int pp = 0; pp < Panels; ++pp)
    codes[pp] = quad_codes<Bits, Q>(in.panel + pp * in.panel_bytes + 2 * Bits * i);
  QLR_UNROLL
  for (int t = 0; t < Tokens; ++t) {
    const __m512i activations = broadcast4(in.tokens + t * in.token_bytes + i + 4 * Q);
    QLR_UNROLL
    for (int pp = 0; pp < Panels; ++pp)
      dot[pp][t] = _mm512_dpbusd_epi32(dot[pp][t], codes[pp], activations);
  }
}

/// Every quad of the block at column i, quad Q into chain (First + Q) mod Chains.
template <int Bits, int First, int Q = 0, int Chains, int Panels, int Tokens>
QLR_ALWAYS_INLINE void add_block(__m512i (&dot)[Chains][Panels][Tokens], const TileOperands& in,
                                 index_t i) noexcept {
  if constexpr (Q < block_quads(Bits)) {
    add_quad<Bits, Q>(dot[(First + Q) % Chains], in, i);
    add_block<Bits, First, Q + 1>(dot, in, i);
  }
}

/// sums[pp][t] = Σ u·q over the columns [begin, end) (whole blocks) of every panel and
/// token of the tile. Plain loops over compile-time bounds, unrolled, and no lambdas: GCC
/// then keeps every sum in a register (a 4×6 tile written with captured arrays lived on the
/// stack and ran at a third of the speed).
template <int Bits, int Panels, int Tokens>
QLR_ALWAYS_INLINE void tile_dots(const TileOperands& in, index_t begin, index_t end,
                                 std::int32_t (&sums)[Panels][Tokens][panel_rows]) noexcept {
  __m512i dot[1][Panels][Tokens];
  QLR_UNROLL
  for (int pp = 0; pp < Panels; ++pp)
    QLR_UNROLL
  for (int t = 0; t < Tokens; ++t) dot[0][pp][t] = _mm512_setzero_si512();
  // The panels are in L2, read again by every tile of tokens: the hardware prefetcher
  // suffices, and prefetch instructions would take load slots (at M = 512 on Zen 4,
  // 0.74x -> 0.81x oneDNN without them).
  for (index_t i = begin; i < end; i += block_cols(Bits)) add_block<Bits, 0>(dot, in, i);
  QLR_UNROLL
  for (int pp = 0; pp < Panels; ++pp)
    QLR_UNROLL
  for (int t = 0; t < Tokens; ++t) _mm512_store_si512(sums[pp][t], dot[0][pp][t]);
}

/// Prefetches the weight lines of the block at column i of the tile's first panel.
template <int Bits>
QLR_ALWAYS_INLINE void prefetch_block(const TileOperands& in, index_t i) noexcept {
  for (index_t n = 0; n < block_bytes(Bits) / 64; ++n)  // 1 to 3 lines: unrolled at -O2
    kernels::detail::prefetch_weight_line(in.panel + 2 * Bits * i + 64 * n);
}

/// A GEMV's sums over [begin, end): one panel and 1 or 3 rows (a token, or its 3 limbs).
/// One row runs four chains of vpdpbusd (two blocks of INT8/INT4 per iteration) rather than
/// one dependent chain, so that a late line can be caught up; three rows run two chains
/// each. Integer sums are exact, so the split is free. One row of INT8 codes leaves
/// prefetching to the hardware; narrower codes and limb rows prefetch in software. On Zen 4
/// (4096² from DRAM, one thread, alternating binaries) one W8A8 row read 30–33 GB/s without
/// and 20–22 with it, while the limb rows went from 13–14 to 21–24 GB/s with it. One W4A8
/// row gains little alone (18–21 → 20–21 GB/s) but keeps the stream going past an
/// adapter's Bᵀ reads in the epilogue: a rank-16 LoRA's time with ÷ without it was
/// 1.40–1.53 without and 1.08–1.10 with. (Until this was measured, a prefetch lambda here
/// was dead code to GCC: a call with no side effects, removed before it was inlined.)
template <int Bits, int Tokens>
QLR_ALWAYS_INLINE void gemv_dots(const TileOperands& in, index_t begin, index_t end,
                                 std::int32_t (&sums)[1][Tokens][panel_rows]) noexcept {
  constexpr int chains = Tokens == 1 ? 4 : 2;
  constexpr int blocks = chains / std::min(chains, block_quads(Bits));  // per iteration
  constexpr index_t step = blocks * block_cols(Bits);
  constexpr bool prefetch = Bits != 8 || Tokens > 1;
  __m512i dot[chains][1][Tokens];
  QLR_UNROLL
  for (int c = 0; c < chains; ++c) QLR_UNROLL
  for (int t = 0; t < Tokens; ++t) dot[c][0][t] = _mm512_setzero_si512();
  index_t i = begin;
  for (; i + step <= end; i += step) {
    if constexpr (prefetch) prefetch_block<Bits>(in, i);
    add_block<Bits, 0>(dot, in, i);
    if constexpr (blocks == 2) {
      if constexpr (prefetch) prefetch_block<Bits>(in, i + block_cols(Bits));
      add_block<Bits, block_quads(Bits)>(dot, in, i + block_cols(Bits));
    }
  }
  if (i < end) {  // one block short of an iteration
    if constexpr (prefetch) prefetch_block<Bits>(in, i);
    add_block<Bits, 0>(dot, in, i);
  }
  QLR_UNROLL
  for (int t = 0; t < Tokens; ++t) {
    __m512i sum = _mm512_add_epi32(dot[0][0][t], dot[1][0][t]);
    if constexpr (chains == 4)
      sum = _mm512_add_epi32(sum, _mm512_add_epi32(dot[2][0][t], dot[3][0][t]));
    _mm512_store_si512(sums[0][t], sum);
  }
}

/// The 16 scales of parameter offset `at` (f16 or f32, packed_dot.hpp).
QLR_ALWAYS_INLINE __m512 load_scales(const DotWeightView& w, index_t at) noexcept {
  return w.half_scales
             ? _mm512_cvtph_ps(_mm256_loadu_si256(static_cast<const __m256i*>(w.scales) + at / 16))
             : _mm512_loadu_ps(static_cast<const float*>(w.scales) + at);
}

/// part[t][C mod 4] += levels[u]·x for column C of the line `codes` (4-bit codes of 8 columns)
/// and each token, then the line's later columns.
template <int C = 0, int Tokens>
QLR_ALWAYS_INLINE void add_level_columns(__m512 (&part)[Tokens][4], __m512i codes, __m512 table,
                                         const float* x, index_t token_floats) noexcept {
  if constexpr (C < 8) {
    // Column C is nibble C/4 of byte C mod 4; vpermps reads the low 4 bits of each lane.
    const __m512i index = C == 0 ? codes : _mm512_srli_epi32(codes, 8 * (C % 4) + 4 * (C / 4));
    const __m512 level = _mm512_permutexvar_ps(index, table);
    QLR_UNROLL
    for (int t = 0; t < Tokens; ++t)
      part[t][C % 4] =
          _mm512_fmadd_ps(level, _mm512_set1_ps(x[t * token_floats + C]), part[t][C % 4]);
    add_level_columns<C + 1>(part, codes, table, x, token_floats);
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
        const __m512 scale = load_scales(w, at);
        const __m512i zero =
            w.wide_zeros ? _mm512_loadu_si512(static_cast<const std::int32_t*>(w.zeros) + at)
                         : _mm512_cvtepu8_epi32(
                               _mm_loadu_si128(static_cast<const __m128i*>(w.zeros) + at / 16));
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

  /// The levels (NF4) sums of panel p × tokens [m, m + Tokens), in the reference's order
  /// (reference/gemm_dot.hpp): one vpermps looks up a column's 16 levels, which every token's
  /// broadcast multiplies into its chain of the column mod 4.
  template <int Tokens>
  static void level_tile(const DotWeightView& w, const LevelActivationView& a, MatrixView y,
                         const Epilogue& e, index_t p, index_t m) noexcept {
    const std::uint8_t* panel = w.panel(p);
    const __m512 table = _mm512_loadu_ps(w.levels);
    __m512 acc[Tokens];
    for (int t = 0; t < Tokens; ++t) acc[t] = _mm512_setzero_ps();
    for (index_t l = 0; l < w.groups; ++l) {
      __m512 part[Tokens][4];
      for (int t = 0; t < Tokens; ++t)
        for (int c = 0; c < 4; ++c) part[t][c] = _mm512_setzero_ps();
      for (index_t i = w.group_begin(l); i < w.group_end(l); i += 8) {
        const std::uint8_t* line = panel + 8 * i;  // 8 columns of 4-bit codes
        kernels::detail::prefetch_weight_line(line);
        add_level_columns(part, _mm512_loadu_si512(line), table, a.row(m) + i, a.padded_cols);
      }
      const __m512 scale = load_scales(w, w.params(p, l));
      for (int t = 0; t < Tokens; ++t)
        acc[t] = _mm512_fmadd_ps(scale,
                                 _mm512_add_ps(_mm512_add_ps(part[t][0], part[t][1]),
                                               _mm512_add_ps(part[t][2], part[t][3])),
                                 acc[t]);
    }
    alignas(64) float lanes[Tokens][panel_rows];
    for (int t = 0; t < Tokens; ++t) _mm512_store_ps(lanes[t], acc[t]);
    finish_panel<Tokens>(lanes, w, a.epilogue_rows(), y, e, p, m);
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

/// y[m, n] for all tokens m and the rows n of panels [panel_begin, panel_end) of `Bits`-bit
/// codes (w.bits == Bits).
template <int Bits>
void gemm_dot(const DotWeightView& w, const DotActivationView& a, MatrixView y, const Epilogue& e,
              index_t panel_begin, index_t panel_end) noexcept {
  // 4 panels × 6 tokens: 24 int32 sums, 4 code vectors and a broadcast in the 32 zmm; each
  // code vector feeds 6 vpdpbusd, each broadcast 4. At M = 512 on Zen 4 (one thread) it
  // and 3 × 8 ran W8A8 at 0.95–1.0× oneDNN, 3 × 4 at 0.92–0.97×; the inner loop alone
  // (panels in L2) reaches one vpdpbusd per cycle.
  kernels::detail::gemm_dot_with_tiles<detail_dot::Tiles, Bits, 4, 6>(w, a, y, e, panel_begin,
                                                                      panel_end);
}

/// The levels (NF4) GEMM on this path: tiles of a panel × up to 4 tokens (16 chains).
template <int = 0>
void gemm_levels(const DotWeightView& w, const LevelActivationView& a, MatrixView y,
                 const Epilogue& e, index_t panel_begin, index_t panel_end) noexcept {
  kernels::detail::gemm_levels_with_tiles<detail_dot::Tiles, 4>(w, a, y, e, panel_begin, panel_end);
}

}  // namespace qlr::kernels::avx512_vnni

QLR_ISA_END
#endif
