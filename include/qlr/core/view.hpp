// SPDX-License-Identifier: Apache-2.0
// Raw row-major views (pointer, shape, row stride) and the fused-epilogue description: the
// vocabulary kernels take, so engines call them on their own buffers without Eigen.
#pragma once

#include <cstdint>

#include "qlr/core/types.hpp"

namespace qlr {

/// A read-only row-major matrix: element (i, j) at data[i·stride + j].
struct ConstMatrixView {
  const float* data = nullptr;  ///< first element
  index_t rows = 0;             ///< M (tokens) or N
  index_t cols = 0;             ///< K or N
  index_t stride = 0;           ///< elements between consecutive rows, ≥ cols

  /// Row `i`.
  [[nodiscard]] const float* row(index_t i) const noexcept { return data + i * stride; }
};

/// A writable row-major matrix: element (i, j) at data[i·stride + j].
struct MatrixView {
  float* data = nullptr;  ///< first element
  index_t rows = 0;       ///< M
  index_t cols = 0;       ///< N
  index_t stride = 0;     ///< elements between consecutive rows, ≥ cols

  /// Row `i`.
  [[nodiscard]] float* row(index_t i) const noexcept { return data + i * stride; }
};

/// Per-token quantized activations as the integer kernels take them: x ≈ scales[m]·codes.
struct ActivationCodes {
  const std::int8_t* codes = nullptr;  ///< rows × cols, element (m, i) at codes[m·stride + i]
  const float* scales = nullptr;       ///< one per row
  index_t rows = 0;                    ///< M, tokens
  index_t cols = 0;                    ///< K
  index_t stride = 0;                  ///< ≥ cols
  int bits = 8;                        ///< 8 (codes in [−128, 127]) or 4 ([−8, 7])
};

/// A low-rank term B·t added to the output: y[m, n] += Σ_j b[n, j]·t[m, j].
struct LowRankTerm {
  ConstMatrixView b;  ///< B (N×r)
  ConstMatrixView t;  ///< t = A·x per token (M×r), computed in FP32 before the GEMM
};

/// What the kernel does to each output after the dot products, in this order (the
/// reference kernels define it): y = acc + low_rank + bias for the weight-only kernels,
/// y = acc·s_x + low_rank + bias for the integer ones (s_x the token's activation scale).
struct Epilogue {
  const float* bias = nullptr;            ///< N values, or none
  const LowRankTerm* low_rank = nullptr;  ///< an adapter's B·t, or none
};

}  // namespace qlr
