// SPDX-License-Identifier: Apache-2.0
// The B·A pair every dense-input adapter holds (LoRA, DoRA's direction, EoRA's low-rank
// term, a dequantized LoRAQuant adapter): validated once, projected per forward.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <utility>

#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/types.hpp"

namespace qlr::adapter::detail {

/// Throws unless `v` holds only finite values, naming `entity` and the first bad index.
QLR_COMPILED_FUNCTION
void check_finite_vector(const Vector& v, const std::string& entity) {
  for (index_t i = 0; i < v.size(); ++i) {
    QLR_CHECK(std::isfinite(v(i)), invalid_argument,
              "{}: element {} = {}; expected a finite value", entity, i, v(i));
  }
}

/// Throws unless A (r×a_cols) and B (N×r) are a finite pair of rank 1 ≤ r ≤ min(N, K).
/// a_cols is K for dense adapters and L = ⌈K/g⌉ for QA-LoRA, whose rank is still bounded
/// by K (ALGORITHMS.md §1.4).
QLR_COMPILED_FUNCTION
void check_factor_pair(const Matrix& a, const Matrix& b, index_t a_cols, index_t in_features,
                       const char* entity) {
  const index_t r = a.rows();
  QLR_CHECK(r >= 1, invalid_argument, "{}: rank = a.rows() = {}; expected >= 1", entity, r);
  QLR_CHECK(a.cols() == a_cols, shape_mismatch, "{}: a is {}x{}; expected {} columns", entity,
            a.rows(), a.cols(), a_cols);
  QLR_CHECK(b.rows() >= 1 && b.cols() == r, shape_mismatch,
            "{}: b is {}x{}; expected N x {} (N >= 1 rows, rank = a.rows() = {} columns)",
            entity, b.rows(), b.cols(), r, r);
  const index_t bound = std::min(b.rows(), in_features);
  QLR_CHECK(r <= bound, invalid_argument,
            "{}: rank = {}; expected <= min(out_features = {}, in_features = {}) = {}", entity,
            r, b.rows(), in_features, bound);
  check_finite(a, std::string(entity) + ": a");
  check_finite(b, std::string(entity) + ": b");
}

/// Throws unless x has K columns and t is (rows of x)×r: the contract of Adapter::project.
QLR_COMPILED_FUNCTION
void check_projection_shapes(ConstMatrixRef x, const MatrixRef& t, index_t k, index_t r,
                             const char* entity) {
  QLR_CHECK(x.cols() == k, shape_mismatch, "{}: x is {}x{}; expected {} columns (in_features)",
            entity, x.rows(), x.cols(), k);
  QLR_CHECK(t.rows() == x.rows() && t.cols() == r, shape_mismatch,
            "{}: t is {}x{}; expected {}x{} (rows of x, rank)", entity, t.rows(), t.cols(),
            x.rows(), r);
}

/// Throws when the projection t holds a NaN or an infinity. A NaN or Inf anywhere in x
/// reaches every entry of its row of t (Inf·0 is NaN too), so checking t (M×r) costs r/K of
/// scanning x on the hot path; x is scanned only to name the culprit.
QLR_COMPILED_FUNCTION
void check_projection_finite(ConstMatrixRef x, const MatrixRef& t, const char* entity) {
  if (t.allFinite()) [[likely]]
    return;
  check_finite(x, std::string(entity) + ": x");
  for (index_t m = 0; m < t.rows(); ++m) {
    for (index_t j = 0; j < t.cols(); ++j) {
      QLR_CHECK(std::isfinite(t(m, j)), invalid_argument,
                "{}: t({}, {}) = {} from a finite x; expected the projection to fit in float",
                entity, m, j, t(m, j));
    }
  }
}

/// A validated pair A (r×K), B (N×r) and the scale s of ΔW = s·B·A: the state and the
/// Adapter operations LoRA and the plain low-rank term share (they derive from it).
class ScaledFactors {
 public:
  /// Takes ownership of the factors after check_factor_pair; `scale` must be finite.
  /// `entity` (a string literal) names the adapter in errors.
  ScaledFactors(Matrix a, Matrix b, float scale, const char* entity)
      : a_(std::move(a)), b_(std::move(b)), scale_(scale), entity_(entity) {
    check_factor_pair(a_, b_, a_.cols(), a_.cols(), entity);
    QLR_CHECK(a_.cols() >= 1, shape_mismatch, "{}: a is {}x{}; expected K >= 1 columns", entity,
              a_.rows(), a_.cols());
    QLR_CHECK(std::isfinite(scale_), invalid_argument, "{}: scale = {}; expected a finite value",
              entity, scale_);
  }

  [[nodiscard]] index_t in_features() const noexcept { return a_.cols(); }  ///< K
  [[nodiscard]] index_t out_features() const noexcept { return b_.rows(); }  ///< N
  [[nodiscard]] index_t rank() const noexcept { return a_.rows(); }          ///< r
  [[nodiscard]] float scale() const noexcept { return scale_; }              ///< s
  [[nodiscard]] const Matrix& a() const noexcept { return a_; }              ///< A (r×K)
  [[nodiscard]] const Matrix& b() const noexcept { return b_; }              ///< B (N×r)
  /// B, the Adapter's up-projection.
  [[nodiscard]] const Matrix& up() const noexcept { return b_; }
  /// Values stored when kept separate: r·(N + K).
  [[nodiscard]] index_t parameter_count() const noexcept {
    return rank() * (out_features() + in_features());
  }
  /// Bytes held: A and B, and the object itself.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return sizeof(*this) + sizeof(float) * static_cast<std::size_t>(a_.size() + b_.size());
  }

  /// t (M×r) = s·x·Aᵀ for x (M×K), written in place: t is never reallocated (Eigen's GEMM
  /// takes its packing buffers from the stack below EIGEN_STACK_ALLOCATION_LIMIT, the heap
  /// above). Throws for wrong shapes or a NaN/Inf in x.
  QLR_COMPILED_FUNCTION
  void project(ConstMatrixRef x, MatrixRef t) const {
    check_projection_shapes(x, t, in_features(), rank(), entity_);
    if (x.rows() <= few_rows) {
      // Decoding: A is read from DRAM for a handful of tokens. One row of A at a time is one
      // sequential stream; Eigen's GEMV reads 8 rows side by side, 8 streams K floats apart
      // (at K = 4096 all in one L1 set).
      for (index_t j = 0; j < rank(); ++j)
        for (index_t m = 0; m < x.rows(); ++m) t(m, j) = a_.row(j).dot(x.row(m));
    } else {
      t.noalias() = x * a_.transpose();
    }
    t *= scale_;
    check_projection_finite(x, t, entity_);
  }

  /// ΔW (N×K) = s·B·A in FP32.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] Matrix delta() const {
    Matrix d = b_ * a_;
    d *= scale_;
    return d;
  }

 private:
  static constexpr index_t few_rows = 4;  // up to here, rows of A stream one by one
  Matrix a_;
  Matrix b_;
  float scale_;
  const char* entity_;
};

}  // namespace qlr::adapter::detail
