// SPDX-License-Identifier: Apache-2.0
// The epilogue every kernel path applies to its outputs, in one place so that no ISA can
// drift from the others: z = acc + Σ_j bt[first + j, n]·t[m, j] (weight-only kernels) or
// z = acc·s_x[m] + Σ_j … (integer kernels), then z·output_scale[n] and + bias[n]. Every
// product is an explicit fma, so no compiler contracts a multiply and an add differently in
// one path. The low-rank sum is the costly part (r fmas per output): x86 paths run it with
// vector fmas (kernels/avx2/epilogue.hpp), one lane per output, in the same order.
#pragma once

#include <cmath>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"

namespace qlr::kernels::detail {

/// The adapter rows token `m` uses: its own slice, or all of bt.
QLR_ALWAYS_INLINE LowRankSlice slice_of(const LowRankTerm& lr, index_t m) noexcept {
  return lr.slices != nullptr ? lr.slices[m] : LowRankSlice{0, lr.bt.rows, nullptr};
}

/// Asks L2 for the Bᵀ values the epilogues of outputs [n0, n0 + count) of tokens
/// [m, m + tokens) read, before the tile's K loop: otherwise the r lines come from DRAM only
/// after it, one latency per tile. Tokens on the same rows of Bᵀ as the token before them
/// ask once. On Zen 5, a rank-16 LoRA on the 4096² W4A8 GEMV: time with ÷ without the
/// adapter 1.22–1.34 before, 1.08–1.19 after (same-session A/B runs).
QLR_ALWAYS_INLINE void prefetch_low_rank(const Epilogue& e, index_t m, int tokens, index_t n0,
                                         index_t count) noexcept {
  if (e.low_rank == nullptr) return;
  const LowRankTerm& lr = *e.low_rank;
  constexpr index_t line_floats = 16;
  for (int t = 0; t < tokens; ++t) {
    const LowRankSlice slice = slice_of(lr, m + t);
    if (t > 0 && (lr.slices == nullptr || (slice.first == lr.slices[m + t - 1].first &&
                                           slice.rank == lr.slices[m + t - 1].rank)))
      continue;
    for (index_t j = 0; j < slice.rank; ++j) {
      const float* b = lr.bt.row(slice.first + j) + n0;
      for (index_t i = 0; i < count; i += line_floats) __builtin_prefetch(b + i, 0, 2);
      __builtin_prefetch(b + count - 1, 0, 2);
    }
  }
}

/// side[r] += Σ_j bt[first + j, n0 + r]·t[m, j] for the `count` ≤ Width outputs n0, n0 + 1,
/// … of token `m`, one fma per term in ascending j: the order every path's low-rank sum
/// follows, so that a vector version (one lane per output) gives the same bits.
template <int Width>
QLR_ALWAYS_INLINE void add_low_rank(const Epilogue& e, index_t m, index_t n0, index_t count,
                                    float* side) noexcept {
  if (e.low_rank == nullptr) return;
  const LowRankTerm& lr = *e.low_rank;
  const LowRankSlice slice = slice_of(lr, m);
  const float* t = lr.t.row(m);
  for (index_t j = 0; j < slice.rank; ++j) {
    const float* b = lr.bt.row(slice.first + j) + n0;
    for (index_t r = 0; r < count; ++r) side[r] = std::fma(b[r], t[j], side[r]);
  }
}

/// Finishes the `count` ≤ Width consecutive outputs n0, n0 + 1, … of token `m` from their
/// dot products `acc` and low-rank sums `side` (add_low_rank) into `out`. `token_scale` is
/// the activation scale s_x of an integer kernel, or null for a weight-only one. Each output
/// takes the same steps in the same order on every path and tiling.
QLR_ALWAYS_INLINE void finish_outputs(const Epilogue& e, const float* QLR_RESTRICT acc,
                                      const float* QLR_RESTRICT side,
                                      const float* token_scale, index_t m, index_t n0,
                                      index_t count, float* QLR_RESTRICT out) noexcept {
  const float* output_scale =
      e.low_rank != nullptr ? slice_of(*e.low_rank, m).output_scale : nullptr;
  const float* bias = e.bias != nullptr ? e.bias + n0 : nullptr;
  // The choices are made outside the loops, so that each loop vectorizes in the ISA region
  // it is inlined into (a scalar loop with the tests inside cost a 4096² W8A8 GEMM at
  // M = 512 ~15 % on Zen 4).
  if (token_scale != nullptr) {
    const float s = *token_scale;
    for (index_t r = 0; r < count; ++r) out[r] = std::fma(acc[r], s, side[r]);
  } else {
    for (index_t r = 0; r < count; ++r) out[r] = acc[r] + side[r];
  }
  // One rounding for z·c + bias on every path: written as an fma, so that no compiler
  // contracts it in one ISA region and not in another. A missing bias adds +0 (which
  // turns −0 into +0) on every path alike.
  if (output_scale != nullptr) {
    const float* c = output_scale + n0;
    if (bias != nullptr)
      for (index_t r = 0; r < count; ++r) out[r] = std::fma(out[r], c[r], bias[r]);
    else
      for (index_t r = 0; r < count; ++r) out[r] = std::fma(out[r], c[r], 0.0f);
  } else if (bias != nullptr) {
    for (index_t r = 0; r < count; ++r) out[r] += bias[r];
  } else {
    for (index_t r = 0; r < count; ++r) out[r] += 0.0f;
  }
}

/// The outputs [n0, n0 + count) of a tile of `width` rows starting at n0 = p·width.
struct TileRows {
  index_t n0;     ///< first output
  index_t count;  ///< outputs that exist (the last tile may be short)
};

/// The rows of tile `p` of `width` outputs, of `rows` in all.
QLR_ALWAYS_INLINE TileRows tile_rows(index_t rows, index_t p, index_t width) noexcept {
  const index_t n0 = p * width;
  return {n0, rows - n0 < width ? rows - n0 : width};
}

}  // namespace qlr::kernels::detail
