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

/// The adapter rows one token uses: rows [first, first + rank) of LowRankTerm::bt, and an
/// optional per-output factor of that adapter (DoRA's m/‖W + s·B·A‖ per row of W).
struct LowRankSlice {
  index_t first = 0;                  ///< first row of bt
  index_t rank = 0;                   ///< rows of bt, and leading columns of the token's t row
  const float* output_scale = nullptr;  ///< N factors applied to base + low-rank, or none
};

/// Low-rank terms added to the output: y[m, n] += Σ_{j<rank} bt[first + j, n]·t[m, j] for the
/// token's slice (first, rank). B is stored transposed so that one row of bt serves a tile of
/// consecutive outputs as one vector. Several adapters stack their Bᵀ rows in one bt and a
/// batch picks one per token through `slices` (multi-adapter batching).
struct LowRankTerm {
  ConstMatrixView bt;  ///< Bᵀ of every adapter, stacked (R×N)
  ConstMatrixView t;   ///< t = s·A·x per token (M×r), computed in FP32 before the GEMM
  const LowRankSlice* slices = nullptr;  ///< M slices; none: every token uses all R rows
};

/// What the kernel does to each output after the dot products, in this order (the
/// reference kernels define it): z = acc + low_rank for the weight-only kernels,
/// z = acc·s_x + low_rank for the integer ones (s_x the token's activation scale); then
/// y = z·output_scale[n] when the token's slice has one, and y += bias[n].
struct Epilogue {
  const float* bias = nullptr;            ///< N values, or none
  const LowRankTerm* low_rank = nullptr;  ///< adapters' B·t, or none
};

}  // namespace qlr
