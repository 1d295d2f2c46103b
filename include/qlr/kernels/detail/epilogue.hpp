// SPDX-License-Identifier: Apache-2.0
// The epilogue every kernel path applies to its outputs, in one place so that no ISA can
// drift from the others: z = acc + Σ_j bt[first + j, n]·t[m, j] (weight-only kernels) or
// z = acc·s_x[m] + Σ_j … (integer kernels), then z·output_scale[n] and + bias[n]. Every
// product is an explicit fma, so no compiler contracts a multiply and an add differently in
// one path; inlined into each ISA's tile, the loop over a tile's outputs becomes vector code.
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

/// Finishes the `count` ≤ Width consecutive outputs n0, n0 + 1, … of token `m` from their
/// dot products `acc` into `out`. `token_scale` is the activation scale s_x of an integer
/// kernel, or null for a weight-only one. Each output takes the same steps in the same
/// order whatever Width and count are, so every path and tiling gives the same bits; a full
/// tile (count == Width) keeps its lanes in one vector.
template <int Width>
QLR_ALWAYS_INLINE void finish_outputs(const Epilogue& e, const float* acc,
                                      const float* token_scale, index_t m, index_t n0,
                                      index_t count, float* out) noexcept {
  float side[Width] = {};
  const float* output_scale = nullptr;
  if (e.low_rank != nullptr) {
    const LowRankTerm& lr = *e.low_rank;
    const LowRankSlice slice = slice_of(lr, m);
    const float* t = lr.t.row(m);
    for (index_t j = 0; j < slice.rank; ++j) {
      const float tj = t[j];
      const float* b = lr.bt.row(slice.first + j) + n0;
      if (count == Width) {
        for (int r = 0; r < Width; ++r) side[r] = std::fma(b[r], tj, side[r]);
      } else {
        for (index_t r = 0; r < count; ++r) side[r] = std::fma(b[r], tj, side[r]);
      }
    }
    output_scale = slice.output_scale;
  }
  for (index_t r = 0; r < count; ++r) {
    float z = token_scale != nullptr ? std::fma(acc[r], *token_scale, side[r]) : acc[r] + side[r];
    const float bias = e.bias != nullptr ? e.bias[n0 + r] : 0.0f;
    // One rounding for z·c + bias on every path: written as an fma, so that no compiler
    // contracts it in one ISA region and not in another.
    out[r] = output_scale != nullptr ? std::fma(z, output_scale[n0 + r], bias) : z + bias;
  }
}

}  // namespace qlr::kernels::detail
