// SPDX-License-Identifier: Apache-2.0
// Reference input-gradient tile: the definition every path matches bit for bit, one fused
// multiply-add (std::fma) per weight row, in row order.
#pragma once

#include <cmath>

#include "qlr/kernels/detail/input_grad_tile.hpp"

namespace qlr::kernels::reference {

/// The tile of detail/input_grad_tile.hpp, element by element.
template <int = 0>
void input_grad_tile(const InputGradTile& t) noexcept {
  for (index_t i = 0; i < t.rows; ++i) {
    for (index_t j = 0; j < t.cols; ++j) {
      float acc = t.accumulate ? t.dx[i * t.dx_stride + j] : 0.0f;
      for (index_t s = 0; s < t.n; ++s)
        acc = std::fma(t.dy[i * t.dy_stride + s], t.w[s * t.w_stride + j], acc);
      t.dx[i * t.dx_stride + j] = acc;
    }
  }
}

}  // namespace qlr::kernels::reference
