// SPDX-License-Identifier: Apache-2.0
// The epilogue every kernel path applies to one output, in one place so that no ISA can
// drift from the others: y = acc + Σ_j B[n, j]·t[m, j] + bias[n].
#pragma once

#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"

namespace qlr::kernels::detail {

/// The finished output (m, n) for the dot product `acc` (FP32, left to right).
inline float finish_output(const Epilogue& e, float acc, index_t m, index_t n) noexcept {
  if (e.low_rank != nullptr) {
    const float* b = e.low_rank->b.row(n);
    const float* t = e.low_rank->t.row(m);
    float side = 0.0f;
    for (index_t j = 0; j < e.low_rank->b.cols; ++j) side += b[j] * t[j];
    acc += side;
  }
  if (e.bias != nullptr) acc += e.bias[n];
  return acc;
}

}  // namespace qlr::kernels::detail
