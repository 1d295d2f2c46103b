// SPDX-License-Identifier: Apache-2.0
// How the SIMD paths cover an output: tiles of panels × activation rows (tokens, or the
// limb rows of FP32 tokens). One driver for every ISA; each path supplies only its tile.
#pragma once

#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/packed_dot.hpp"

namespace qlr::kernels::detail {

/// Prefetches the weight stream line `line` will be followed by: into L2 8 KB ahead (past
/// DRAM's latency at a GEMV's pace) and into L1 1 KB ahead. Call it once per 64-byte line
/// read. On Zen 5 (4096² W8A8 GEMV from DRAM, one thread, best of 7 in each of three
/// alternating runs) 23.3–24.3 GB/s against 21.3–22.6 for L1 alone 2 KB ahead; no software
/// prefetch at all gave 16 GB/s. On Zen 4 the AVX-512 one-row INT8 GEMV is faster without it
/// (avx512_vnni/gemm_dot.hpp): measure per path.
QLR_ALWAYS_INLINE void prefetch_weight_line(const void* line) noexcept {
  const char* at = static_cast<const char*>(line);
  __builtin_prefetch(at + 8192, 0, 1);  // locality 1: prefetcht2
  __builtin_prefetch(at + 1024, 0, 3);  // locality 3: prefetcht0
}

/// Writes the outputs of panel `p` for the activation rows [m, m + Rows) of a tile from
/// their 16 sums each (Σ_l s_l·dot_l per output row), skipping the rows that pad the last
/// panel. A token's limb rows are added first, acc_0 + (acc_1 + acc_2), the smaller ones
/// together. `add_low_rank(first_token, tokens, n0, count, side)` is the path's low-rank
/// sum of the tile's tokens, side[t] for token first_token + t.
template <int Rows, class AddLowRank>
QLR_ALWAYS_INLINE void store_panel_rows(const float (&acc)[Rows][panel_rows],
                                        AddLowRank&& add_low_rank, const DotWeightView& w,
                                        const DotActivationView& a, MatrixView y,
                                        const Epilogue& e, index_t p, index_t m) noexcept {
  const TileRows tile = tile_rows(w.rows, p, panel_rows);
  const index_t first_token = m / a.limbs;
  alignas(64) float side[Rows][panel_rows] = {};
  add_low_rank(first_token, Rows / a.limbs, tile.n0, tile.count, side);
  for (int t = 0; t < Rows; t += a.limbs) {
    const index_t token = (m + t) / a.limbs;
    alignas(64) float total[panel_rows];
    for (index_t r = 0; r < panel_rows; ++r) total[r] = acc[t + a.limbs - 1][r];
    for (int j = a.limbs - 2; j >= 0; --j)
      for (index_t r = 0; r < panel_rows; ++r) total[r] = acc[t + j][r] + total[r];
    finish_outputs(e, total, side[token - first_token],
                   a.scales != nullptr ? a.scales + token : nullptr, token, tile.n0, tile.count,
                   y.row(token) + tile.n0);
  }
}

/// Runs Tiles::dot_tile<Bits, Panels, T> for the largest T ≤ Tokens equal to `tokens`.
template <class Tiles, int Bits, int Panels, int Tokens>
void dot_tile_of(int tokens, const DotWeightView& w, const DotActivationView& a, MatrixView y,
                 const Epilogue& e, index_t p, index_t m) noexcept {
  if constexpr (Tokens >= 1) {
    if (tokens == Tokens)
      Tiles::template dot_tile<Bits, Panels, Tokens>(w, a, y, e, p, m);
    else
      dot_tile_of<Tiles, Bits, Panels, Tokens - 1>(tokens, w, a, y, e, p, m);
  }
}

/// Computes y for all tokens and the panels [p_begin, p_end) of an integer GEMM, tiles of
/// `Panels` panels (then single panels) × up to MaxTokens tokens. Integer sums are exact
/// and each output's FP32 steps run in group order, so the tiling never changes a result.
template <class Tiles, int Bits, int Panels, int MaxTokens>
void cover_panels(const DotWeightView& w, const DotActivationView& a, MatrixView y,
                  const Epilogue& e, index_t p_begin, index_t p_end) noexcept {
  const auto panels_of = [&]<int P>(index_t p) {
    for (index_t m = 0; m < a.rows; m += MaxTokens) {
      const auto rows = static_cast<int>(a.rows - m < MaxTokens ? a.rows - m : MaxTokens);
      const index_t n0 = p * panel_rows;
      const index_t count = w.rows - n0 < P * panel_rows ? w.rows - n0 : P * panel_rows;
      prefetch_low_rank(e, m / a.limbs, rows / a.limbs, n0, count);
      dot_tile_of<Tiles, Bits, P, MaxTokens>(rows, w, a, y, e, p, m);
    }
  };
  index_t p = p_begin;
  if constexpr (Panels > 1)
    for (; p + Panels <= p_end; p += Panels) panels_of.template operator()<Panels>(p);
  for (; p < p_end; ++p) panels_of.template operator()<1>(p);
}

/// The integer GEMM of a path for `Bits`-bit codes: one panel per tile for a GEMV (one
/// forward weight stream), `Panels` × `MaxTokens` tiles otherwise (rows of whole tokens for
/// limb activations); dispatches the limb count once. The width is the caller's compile-time
/// choice, so a unit that runs one format compiles that format's tiles only.
template <class Tiles, int Bits, int Panels, int MaxTokens>
void gemm_dot_with_tiles(const DotWeightView& w, const DotActivationView& a, MatrixView y,
                         const Epilogue& e, index_t p_begin, index_t p_end) noexcept {
  static_assert(MaxTokens >= 3, "a tile holds the 3 limb rows of a token");
  if (a.limbs == 3) {
    if (a.rows == 3)
      cover_panels<Tiles, Bits, 1, 3>(w, a, y, e, p_begin, p_end);
    else
      cover_panels<Tiles, Bits, Panels, MaxTokens / 3 * 3>(w, a, y, e, p_begin, p_end);
  } else if (a.rows == 1) {
    cover_panels<Tiles, Bits, 1, 1>(w, a, y, e, p_begin, p_end);
  } else {
    cover_panels<Tiles, Bits, Panels, MaxTokens>(w, a, y, e, p_begin, p_end);
  }
}

/// Runs Tiles::level_tile<T> for the largest T ≤ Tokens equal to `tokens`.
template <class Tiles, int Tokens>
void level_tile_of(int tokens, const DotWeightView& w, const LevelActivationView& a, MatrixView y,
                   const Epilogue& e, index_t p, index_t m) noexcept {
  if constexpr (Tokens >= 1) {
    if (tokens == Tokens)
      Tiles::template level_tile<Tokens>(w, a, y, e, p, m);
    else
      level_tile_of<Tiles, Tokens - 1>(tokens, w, a, y, e, p, m);
  }
}

/// The levels (NF4) GEMM of a path: every panel of [p_begin, p_end) × tiles of up to
/// MaxTokens tokens. Each output is one fixed sequence of FMAs (reference/gemm_levels.hpp),
/// so the tiling never changes a result.
template <class Tiles, int MaxTokens>
void gemm_levels_with_tiles(const DotWeightView& w, const LevelActivationView& a, MatrixView y,
                            const Epilogue& e, index_t p_begin, index_t p_end) noexcept {
  for (index_t p = p_begin; p < p_end; ++p)
    for (index_t m = 0; m < a.rows; m += MaxTokens) {
      const auto tokens = static_cast<int>(a.rows - m < MaxTokens ? a.rows - m : MaxTokens);
      prefetch_low_rank(
          e, m, tokens, p * panel_rows,
          w.rows - p * panel_rows < panel_rows ? w.rows - p * panel_rows : panel_rows);
      level_tile_of<Tiles, MaxTokens>(tokens, w, a, y, e, p, m);
    }
}

}  // namespace qlr::kernels::detail
