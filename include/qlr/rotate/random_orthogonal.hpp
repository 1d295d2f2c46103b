// SPDX-License-Identifier: Apache-2.0
// A Haar-random orthogonal rotation of any size (ALGORITHMS.md §4.2): the Q of a Householder
// QR of a Gaussian matrix, columns signed so that diag(R) > 0. Dense: O(n³) to build (in
// double), O(n²) per row to apply, so it suits sizes no Hadamard reaches and small layers,
// not online rotations of 11008 channels. Kept apart from rotation.hpp for Eigen's QR.
#pragma once

#include <cstdint>

#include <Eigen/QR>

#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/random.hpp"

namespace qlr::rotate {

/// Q Haar-distributed on O(n) from `seed`: Qᵀ·x is one dense product per row.
class RandomOrthogonal {
 public:
  /// The random orthogonal rotation of size n ≥ 1 from `seed`.
  QLR_COMPILED_FUNCTION
  RandomOrthogonal(index_t n, std::uint64_t seed) {
    QLR_CHECK(n >= 1, invalid_argument, "rotate::RandomOrthogonal: n = {}; expected a size >= 1", n);
    const Eigen::HouseholderQR<MatrixD> qr(gaussian_matrix(n, n, seed));
    MatrixD q = qr.householderQ();
    const MatrixD& r = qr.matrixQR();
    for (index_t j = 0; j < n; ++j)
      if (r(j, j) < 0.0) q.col(j) = -q.col(j);
    q_ = q.cast<float>();
  }
  /// n.
  [[nodiscard]] index_t size() const noexcept { return q_.rows(); }
  /// n floats: the product needs its input intact.
  [[nodiscard]] index_t scratch_size() const noexcept { return q_.rows(); }
  /// x ← Qᵀ·x.
  QLR_COMPILED_FUNCTION
  void rotate(float* x, float* scratch) const noexcept { product(x, scratch, false); }
  /// x ← Q·x.
  QLR_COMPILED_FUNCTION
  void unrotate(float* x, float* scratch) const noexcept { product(x, scratch, true); }
  /// Q (n×n), FP32.
  [[nodiscard]] const Matrix& matrix() const noexcept { return q_; }

 private:
  QLR_COMPILED_FUNCTION
  void product(float* x, float* scratch, bool forward_q) const noexcept {
    const index_t n = q_.rows();
    Eigen::Map<Eigen::RowVectorXf> row(x, n);
    Eigen::Map<Eigen::RowVectorXf> out(scratch, n);
    if (forward_q)
      out.noalias() = row * q_.transpose();  // (Q·x)ᵀ = xᵀ·Qᵀ
    else
      out.noalias() = row * q_;  // (Qᵀ·x)ᵀ = xᵀ·Q
    row = out;
  }

  Matrix q_;
};

}  // namespace qlr::rotate
