// SPDX-License-Identifier: Apache-2.0
// Reference weight-only GEMM, the oracle of every other path: Y = X·Ŵᵀ with ŵ = s·(u − z)
// exactly as dequantize() computes it, each dot product accumulated in double.
#pragma once

#include "qlr/core/types.hpp"
#include "qlr/core/view.hpp"
#include "qlr/kernels/detail/epilogue.hpp"
#include "qlr/kernels/packed.hpp"

namespace qlr::kernels::reference {

/// y[m, n] for all m and the rows n of panels [panel_begin, panel_end).
inline void gemm_wq_f32(const PackedView& w, ConstMatrixView x, MatrixView y, const Epilogue& e,
                        index_t panel_begin, index_t panel_end) noexcept {
  const index_t group_cols = w.blocks_per_group * block_codes;
  const index_t n_end = panel_end * wq_panel_rows < w.rows ? panel_end * wq_panel_rows : w.rows;
  for (index_t n = panel_begin * wq_panel_rows; n < n_end; ++n) {
    for (index_t m = 0; m < x.rows; ++m) {
      double acc = 0.0;
      for (index_t i = 0; i < w.cols; ++i) {
        const index_t at = w.params(n, i / group_cols);
        const float w_hat = w.scales[at] * (static_cast<float>(w.code(n, i)) - w.zeros[at]);
        acc += static_cast<double>(w_hat) * static_cast<double>(x.row(m)[i]);
      }
      const float sum = static_cast<float>(acc);
      float side = 0.0f;
      detail::add_low_rank<1>(e, m, n, 1, &side);
      detail::finish_outputs(e, &sum, &side, nullptr, m, n, 1, y.row(m) + n);
    }
  }
}

}  // namespace qlr::kernels::reference
