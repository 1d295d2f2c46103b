// SPDX-License-Identifier: Apache-2.0
// Reference integer GEMM (W2/W3/W4/W8 × INT8 or INT4 codes; weight-only as INT8 limbs), the oracle
// of every other path: each group's dot product in int64, then the FP32 steps of the layout in
// packed_dot.hpp, in order.
#pragma once

#include <cmath>
#include <cstdint>

#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/packed_dot.hpp"

namespace qlr::kernels::reference {

/// Rows of up to this many padded columns are decoded once, into a buffer on the stack, for
/// all their tokens (a kernel allocates nothing); longer ones are decoded token by token. The
/// tests take both branches (K = 4096 + 7 and 8192 + 32 are longer).
inline constexpr index_t decoded_row_max = 4096;

/// The exact integer part of one (row o, activation row m, group l): Σ u·q − round(z)·Σ q,
/// in int64, with row o's codes from `u` when it was decoded (else null).
inline std::int64_t group_dot(const DotWeightView& w, const DotActivationView& a,
                              const std::uint8_t* u, index_t o, index_t m, index_t l) noexcept {
  std::int64_t dot = 0;
  if (u != nullptr) {
    for (index_t i = w.group_begin(l); i < w.group_end(l); ++i)
      dot += static_cast<std::int64_t>(u[i]) * a.row(m)[i];
  } else {
    for (index_t i = w.group_begin(l); i < w.group_end(l); ++i)
      dot += static_cast<std::int64_t>(w.code(o, i)) * a.row(m)[i];
  }
  const index_t at = w.params(o / panel_rows, l) + o % panel_rows;
  return dot - static_cast<std::int64_t>(w.zero(at)) * a.group_sums[m * a.groups + l];
}

/// Σ_l fma steps of one (row o, activation row m) in group order: the sum a kernel holds
/// in lane o of its accumulator.
inline float row_sum(const DotWeightView& w, const DotActivationView& a, const std::uint8_t* u,
                     index_t o, index_t m) noexcept {
  float acc = 0.0f;
  for (index_t l = 0; l < w.groups; ++l) {
    const index_t at = w.params(o / panel_rows, l) + o % panel_rows;
    const float c = a.group_scale(m, l);
    acc = std::fma(w.scale(at) * c, static_cast<float>(group_dot(w, a, u, o, m, l)), acc);
    if (w.zero_offsets != nullptr)
      acc = std::fma(-(w.scale(at) * w.zero_offsets[at]) * c,
                     static_cast<float>(a.group_sums[m * a.groups + l]), acc);
  }
  return acc;
}

/// y[m, n] for all tokens m and the rows n of panels [panel_begin, panel_end). It reads
/// any width through DotWeightView::code; `Bits` only gives it the other paths' signature.
template <int Bits>
void gemm_dot(const DotWeightView& w, const DotActivationView& a, MatrixView y, const Epilogue& e,
              index_t panel_begin, index_t panel_end) noexcept {
  const index_t row_end = panel_end * panel_rows < w.rows ? panel_end * panel_rows : w.rows;
  std::uint8_t codes[decoded_row_max];
  const std::uint8_t* u = w.padded_cols <= decoded_row_max ? codes : nullptr;
  for (index_t o = panel_begin * panel_rows; o < row_end; ++o) {
    if (u != nullptr)
      for (index_t i = 0; i < w.padded_cols; ++i)
        codes[i] = static_cast<std::uint8_t>(w.code(o, i));
    for (index_t m = 0; m < a.rows / a.limbs; ++m) {
      // A token's limb rows: acc_0 + (acc_1 + acc_2), as kernels/detail/tiling.hpp adds them.
      float acc = row_sum(w, a, u, o, m * a.limbs + a.limbs - 1);
      for (int j = a.limbs - 2; j >= 0; --j) acc = row_sum(w, a, u, o, m * a.limbs + j) + acc;
      float side = 0.0f;
      detail::add_low_rank<1>(e, m, o, 1, &side);
      detail::finish_outputs(e, &acc, &side, a.scales != nullptr ? a.scales + m : nullptr, m, o,
                             1, y.row(m) + o);
    }
  }
}

/// The levels (NF4) sum of row o, token m, the sequence every path computes: per group, four
/// chains of FMAs over the columns ≡ 0, 1, 2, 3 (mod 4) in order, g = (p0 + p1) + (p2 + p3),
/// then acc ← fma(s, g, acc). Padded columns add levels[0]·0 = −0, which changes no sum.
inline float level_row_sum(const DotWeightView& w, const LevelActivationView& a, index_t o,
                           index_t m) noexcept {
  const float* x = a.row(m);
  float acc = 0.0f;
  for (index_t l = 0; l < w.groups; ++l) {
    float p[4] = {};
    for (index_t i = w.group_begin(l); i < w.group_end(l); ++i)
      p[i % 4] = std::fma(w.levels[w.code(o, i)], x[i], p[i % 4]);
    const float s = w.scale(w.params(o / panel_rows, l) + o % panel_rows);
    acc = std::fma(s, (p[0] + p[1]) + (p[2] + p[3]), acc);
  }
  return acc;
}

/// The levels (NF4) GEMM: y[m, n] for all tokens m and the rows n of panels [panel_begin,
/// panel_end), ŵ = s·levels[u] times FP32 activations (or codes, scaled per token after).
template <int = 0>
void gemm_levels(const DotWeightView& w, const LevelActivationView& a, MatrixView y,
                 const Epilogue& e, index_t panel_begin, index_t panel_end) noexcept {
  const index_t row_end = panel_end * panel_rows < w.rows ? panel_end * panel_rows : w.rows;
  for (index_t o = panel_begin * panel_rows; o < row_end; ++o)
    for (index_t m = 0; m < a.rows; ++m) {
      const float acc = level_row_sum(w, a, o, m);
      float side = 0.0f;
      detail::add_low_rank<1>(e, m, o, 1, &side);
      detail::finish_outputs(e, &acc, &side, a.scales != nullptr ? a.scales + m : nullptr, m, o, 1,
                             y.row(m) + o);
    }
}

}  // namespace qlr::kernels::reference
