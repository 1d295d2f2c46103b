// SPDX-License-Identifier: Apache-2.0
// The input-gradient GEMM's unit of work (kernels/input_grad.hpp): dX[:, cols] of a block of
// tokens, accumulated over a tile of decoded weight rows. Every path computes each element
// as one chain of fused multiply-adds in row order, so all paths give the same bits.
#pragma once

#include "qlr/core/types.hpp"

namespace qlr::kernels {

/// dx[i, j] ← (accumulate ? dx[i, j] : 0) then, for t = 0 … n−1 in order,
/// dx[i, j] ← fma(dy[i, t], w[t, j], dx[i, j]), for i < rows and j < cols.
struct InputGradTile {
  const float* dy = nullptr;  ///< rows × n, row stride dy_stride
  index_t dy_stride = 0;      ///< floats between rows of dy
  const float* w = nullptr;   ///< n × cols, the decoded weight tile, row stride w_stride
  index_t w_stride = 0;       ///< floats between rows of w
  float* dx = nullptr;        ///< rows × cols, row stride dx_stride
  index_t dx_stride = 0;      ///< floats between rows of dx
  index_t rows = 0;           ///< tokens
  index_t n = 0;              ///< weight rows in the tile (the chain's length)
  index_t cols = 0;           ///< columns of dx
  bool accumulate = false;    ///< continue dx's chains (a later tile of rows), else start at 0
};

/// A weight Ŵ (N×K) that writes any block of itself in FP32: decode(weights, n0, rows, k0,
/// cols, out, stride) writes Ŵ[n0 + t, k0 + j] into out[t·stride + j] for a k0 that is a
/// multiple of 8. How the input-gradient GEMM reads a weight of any format.
struct WeightTiles {
  const void* weights = nullptr;  ///< the packed weight
  void (*decode)(const void* weights, index_t n0, index_t rows, index_t k0, index_t cols,
                 float* out, index_t stride) noexcept = nullptr;  ///< its block decoder
  index_t rows = 0;                                               ///< N
  index_t cols = 0;                                               ///< K
};

/// One path's body for an InputGradTile. Never throws.
using InputGradTileFn = void (*)(const InputGradTile& t) noexcept;

}  // namespace qlr::kernels
