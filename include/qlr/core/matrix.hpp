// SPDX-License-Identifier: Apache-2.0
// Row-major Eigen aliases for weights (N×K, y = W·x) and activations (M×K), so users hand
// qlr their own buffers through Eigen::Map without copies. The only core header with Eigen.
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <string_view>

#include "qlr/core/error.hpp"
#include "qlr/core/types.hpp"

namespace qlr {

/// Row-major float matrix: a weight W (N×K) or a batch of activations X (M×K).
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Row-major double matrix for statistics, SVD and other double-precision work.
using MatrixD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Float column vector (a bias, a norm gain, one activation).
using Vector = Eigen::VectorXf;
/// A user's row-major buffer viewed as a Matrix, writable.
using MatrixMap = Eigen::Map<Matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
/// A user's row-major buffer viewed as a Matrix, read-only.
using ConstMatrixMap = Eigen::Map<const Matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
/// What read-only APIs take: binds a Matrix, a Map or a row block without copying.
using ConstMatrixRef = Eigen::Ref<const Matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
/// What in-place APIs take: a writable Matrix, Map or row block.
using MatrixRef = Eigen::Ref<Matrix, Eigen::Unaligned, Eigen::OuterStride<>>;

/// Throws Errc::invalid_argument naming `entity` and the first row and column that hold a
/// NaN or an infinity. Called where data enters qlr (ALGORITHMS.md §1.4).
inline void check_finite(ConstMatrixRef m, std::string_view entity) {
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) {
      QLR_CHECK(std::isfinite(m(i, j)), invalid_argument,
                "{}: element ({}, {}) = {}; expected a finite value", entity, i, j, m(i, j));
    }
  }
}

}  // namespace qlr
