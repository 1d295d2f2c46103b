// SPDX-License-Identifier: Apache-2.0
// Reference weight-only GEMM, the oracle of every other path: Y = X·Ŵᵀ with ŵ = s·(u − z)
// exactly as dequantize() computes it, each dot product accumulated in double.
#pragma once

#include <cstdint>

#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/packed.hpp"

namespace qlr::kernels::reference {

/// The code of column i of a packed row (weight-only layout of packed.hpp).
inline unsigned packed_code(const PackedView& w, const std::uint8_t* row, index_t i) noexcept {
  const index_t b = i / block_codes;
  const index_t j = i % block_codes;
  if (w.bits == 8) return row[i];
  const std::uint8_t byte = row[b * 16 + (j % 16)];
  return j < 16 ? byte & 0x0fu : byte >> 4;
}

/// y[m, n] for all m and n ∈ [n_begin, n_end): x is M×K, y is M×N.
inline void gemm_wq_f32(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                        index_t n_begin, index_t n_end) noexcept {
  for (index_t n = n_begin; n < n_end; ++n) {
    const std::uint8_t* row = w.row(n);
    for (index_t m = 0; m < x.rows; ++m) {
      double acc = 0.0;
      for (index_t i = 0; i < w.cols; ++i) {
        const index_t l = i / block_codes / w.blocks_per_group;
        const float s = w.scales[n * w.groups + l];
        const float z = w.zeros[n * w.groups + l];
        const float w_hat = s * (static_cast<float>(packed_code(w, row, i)) - z);
        acc += static_cast<double>(w_hat) * static_cast<double>(x.row(m)[i]);
      }
      y.row(m)[n] = detail::finish_output(e, static_cast<float>(acc), m, n);
    }
  }
}

}  // namespace qlr::kernels::reference
