// SPDX-License-Identifier: Apache-2.0
// The epilogue every kernel path applies to one output, in one place so that no ISA can
// drift from the others: y = acc + Σ_j B[n, j]·t[m, j] + bias[n] (weight-only kernels) or
// y = acc·s_x[m] + Σ_j B[n, j]·t[m, j] + bias[n] (integer kernels). Every product is an
// explicit fma, so no compiler contracts a multiply and an add differently in one path.
#pragma once

#include <cmath>

#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"

namespace qlr::kernels::detail {

/// Σ_j B[n, j]·t[m, j] in FP32, left to right; 0 without a low-rank term.
inline float low_rank_output(const Epilogue& e, index_t m, index_t n) noexcept {
  float side = 0.0f;
  if (e.low_rank != nullptr) {
    const float* b = e.low_rank->b.row(n);
    const float* t = e.low_rank->t.row(m);
    for (index_t j = 0; j < e.low_rank->b.cols; ++j) side = std::fma(b[j], t[j], side);
  }
  return side;
}

/// The finished output (m, n) for the dot product `acc` (FP32) of a weight-only kernel.
inline float finish_output(const Epilogue& e, float acc, index_t m, index_t n) noexcept {
  if (e.low_rank != nullptr) acc += low_rank_output(e, m, n);
  if (e.bias != nullptr) acc += e.bias[n];
  return acc;
}

/// The finished output (m, n) of an integer kernel: `acc` is Σ_l s_l·dot_l, `token_scale`
/// the activation scale s_x[m].
inline float finish_scaled_output(const Epilogue& e, float acc, float token_scale, index_t m,
                                  index_t n) noexcept {
  float y = std::fma(acc, token_scale, low_rank_output(e, m, n));
  if (e.bias != nullptr) y += e.bias[n];
  return y;
}

}  // namespace qlr::kernels::detail
