// SPDX-License-Identifier: Apache-2.0
// How the SIMD paths cover an output: tiles of 4 rows (then single rows) × up to MaxTokens
// tokens. One driver for every ISA; each path supplies only its tile.
#pragma once

#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/packed.hpp"

namespace qlr::kernels::detail {

/// Runs Tiles::tile<Bits, Rows, T> for the largest T ≤ Tokens equal to `tokens`.
template <class Tiles, int Bits, int Rows, int Tokens>
void tile_of(int tokens, const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
             index_t n, index_t m) noexcept {
  if constexpr (Tokens >= 1) {
    if (tokens == Tokens)
      Tiles::template tile<Bits, Rows, Tokens>(w, x, y, e, n, m);
    else
      tile_of<Tiles, Bits, Rows, Tokens - 1>(tokens, w, x, y, e, n, m);
  }
}

/// Computes y[m, n] for all m and n ∈ [n_begin, n_end) tile by tile. A tile's sums do not
/// depend on its neighbours, so where the tiles fall never changes a result.
template <class Tiles, int Bits, int MaxTokens>
void cover_with_tiles(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                      index_t n_begin, index_t n_end) noexcept {
  const auto rows_of = [&]<int Rows>(index_t n) {
    for (index_t m = 0; m < x.rows; m += MaxTokens) {
      const auto tokens = static_cast<int>(x.rows - m < MaxTokens ? x.rows - m : MaxTokens);
      tile_of<Tiles, Bits, Rows, MaxTokens>(tokens, w, x, y, e, n, m);
    }
  };
  index_t n = n_begin;
  for (; n + 4 <= n_end; n += 4) rows_of.template operator()<4>(n);
  for (; n < n_end; ++n) rows_of.template operator()<1>(n);
}

/// The weight-only GEMM of a path whose tiles are `Tiles`: dispatches the code width once.
template <class Tiles, int MaxTokens>
void gemm_wq_with_tiles(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                        index_t n_begin, index_t n_end) noexcept {
  if (w.bits == 4)
    cover_with_tiles<Tiles, 4, MaxTokens>(w, x, y, e, n_begin, n_end);
  else
    cover_with_tiles<Tiles, 8, MaxTokens>(w, x, y, e, n_begin, n_end);
}

}  // namespace qlr::kernels::detail
