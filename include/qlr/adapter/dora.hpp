// SPDX-License-Identifier: Apache-2.0
// DoRA (ALGORITHMS.md §5): W' = diag(m/n)·(W0 + s·B·A), n_o = ‖W0[o,:] + s·(B·A)[o,:]‖ over
// the K inputs of output row o (PEFT's axis). The LoRA part is an ordinary Adapter side
// path; the per-output factor c = m/n is applied after it, y = c ⊙ (W0·x + s·B·(A·x)) + b.
#pragma once

#include <cmath>
#include <string>
#include <utility>

#include "qlr/adapter/detail/factors.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/types.hpp"

namespace qlr::adapter {

namespace detail {
/// ‖w‖² of one row in double, summed in index order: the one routine both
/// Dora::initial_magnitude and Dora::row_norms start from, so that B = 0 gives n = m exactly.
template <class Row>
double row_norm_sq(const Row& w) noexcept {
  double sum = 0.0;
  for (index_t i = 0; i < w.size(); ++i) {
    const double v = w(i);
    sum += v * v;
  }
  return sum;
}
}  // namespace detail

/// A DoRA adapter: a LoRA direction update plus a magnitude m (N) per output row. As an
/// Adapter it is its LoRA part only (project = s·A·x, up = B, delta = s·B·A); the rescale by
/// output_scale(W0) is separate, because it depends on the base it sits beside.
class Dora {
 public:
  /// DoRA sits beside any base format (m/n is computed on the dequantized base).
  template <class Format>
  static constexpr bool compatible_with = true;

  /// Adapter with A (r×K), B (N×r), magnitude m (N), scale α/r (or α/√r). Throws for
  /// mismatched shapes or a NaN/Inf in A, B or m.
  Dora(Matrix a, Matrix b, Vector magnitude, double alpha, Scaling scaling = Scaling::standard)
      : lora_(std::move(a), std::move(b), alpha, scaling), magnitude_(std::move(magnitude)) {
    QLR_CHECK(magnitude_.size() == lora_.out_features(), shape_mismatch,
              "{}: magnitude.size() = {}; expected out_features = b.rows() = {}", entity,
              magnitude_.size(), lora_.out_features());
    detail::check_finite_vector(magnitude_, std::string(entity) + ": magnitude");
  }

  /// m = ‖W0[o,:]‖ for every output row (PEFT's initialization), by the routine row_norms
  /// uses, so that with B = 0 output_scale(W0) is exactly 1.0f (T5.1).
  QLR_COMPILED_FUNCTION
  [[nodiscard]] static Vector initial_magnitude(ConstMatrixRef w0) {
    check_base_values(w0, "adapter::Dora::initial_magnitude");
    Vector m(w0.rows());
    for (index_t o = 0; o < w0.rows(); ++o)
      m(o) = static_cast<float>(std::sqrt(detail::row_norm_sq(w0.row(o))));
    return m;
  }

  [[nodiscard]] index_t in_features() const noexcept { return lora_.in_features(); }    ///< K
  [[nodiscard]] index_t out_features() const noexcept { return lora_.out_features(); }  ///< N
  [[nodiscard]] index_t rank() const noexcept { return lora_.rank(); }                  ///< r
  [[nodiscard]] double alpha() const noexcept { return lora_.alpha(); }                 ///< α
  [[nodiscard]] Scaling scaling() const noexcept { return lora_.scaling(); }  ///< α/r or α/√r
  [[nodiscard]] float scale() const noexcept { return lora_.scale(); }        ///< s
  [[nodiscard]] const Matrix& a() const noexcept { return lora_.a(); }        ///< A (r×K)
  [[nodiscard]] const Matrix& b() const noexcept { return lora_.b(); }        ///< B (N×r)
  /// B, the Adapter's up-projection.
  [[nodiscard]] const Matrix& up() const noexcept { return lora_.b(); }
  [[nodiscard]] const Vector& magnitude() const noexcept { return magnitude_; }  ///< m (N)
  /// Bytes held: the LoRA part and m.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return lora_.memory_bytes() + sizeof(magnitude_) +
           sizeof(float) * static_cast<std::size_t>(magnitude_.size());
  }
  /// The direction update alone, as a LoRA adapter.
  [[nodiscard]] const Lora& lora() const noexcept { return lora_; }
  /// Values stored when kept separate: r·(N + K) factors and N magnitudes.
  [[nodiscard]] index_t parameter_count() const noexcept {
    return lora_.parameter_count() + out_features();
  }

  /// t (M×r) = s·x·Aᵀ, the LoRA part; the caller scales the layer output by output_scale.
  QLR_COMPILED_FUNCTION
  void project(ConstMatrixRef x, MatrixRef t) const { lora_.project(x, t); }
  /// s·B·A (N×K), the LoRA part only: the merged weight also needs diag(m/n) (merge.hpp).
  QLR_COMPILED_FUNCTION
  [[nodiscard]] Matrix delta() const { return lora_.delta(); }

  /// n_o = ‖W0[o,:] + s·(B·A)[o,:]‖ (N) for W0 (N×K): squared_row_norms rounded to float.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] Vector row_norms(ConstMatrixRef w0) const {
    return squared_row_norms(w0).cwiseSqrt().cast<float>();
  }

  /// n_o² (N) in double without an N×K temporary: n² = ‖W0_o‖² + 2s·(W0·Aᵀ)[o,:]·B_oᵀ +
  /// s²·B_o·(A·Aᵀ)·B_oᵀ (§5.1), O(N·K·r). Where the terms cancel to below 1e-6 of their size
  /// the formula would keep too few digits, and that row is formed explicitly instead (same
  /// cost, one row at a time). Throws for a shape mismatch or a NaN/Inf in W0.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] Eigen::VectorXd squared_row_norms(ConstMatrixRef w0) const {
    check_base(w0, "adapter::Dora::row_norms");
    const index_t r = rank();
    const index_t k = in_features();
    const MatrixD a = lora_.a().cast<double>();  // r×K
    const MatrixD gram = a * a.transpose();       // r×r
    const double s = lora_.scale();
    Eigen::VectorXd n_sq(out_features());
    parallel_for(out_features(), 16, [&](index_t begin, index_t end) {
      Eigen::VectorXd wa(r);
      Eigen::VectorXd bo(r);
      Eigen::RowVectorXd v(k);
      for (index_t o = begin; o < end; ++o) {
        const auto w = w0.row(o);
        const double w_sq = detail::row_norm_sq(w);
        for (index_t j = 0; j < r; ++j) {
          double dot = 0.0;
          for (index_t i = 0; i < k; ++i) dot += static_cast<double>(w(i)) * a(j, i);
          wa(j) = dot;
        }
        bo = lora_.b().row(o).cast<double>().transpose();
        const double quad = s * s * bo.dot(gram * bo);
        double sq = w_sq + 2.0 * s * wa.dot(bo) + quad;
        if (!(sq > 1e-6 * (w_sq + quad))) {  // cancellation (or an all-zero row)
          v = w.cast<double>() + s * (bo.transpose() * a);
          sq = detail::row_norm_sq(v);
        }
        n_sq(o) = sq;
      }
    });
    return n_sq;
  }

  /// The per-output factor c = m/n (N) for base W0 (N×K), in float: y = c ⊙ (W0·x +
  /// s·B·(A·x)) + b, the bias not rescaled. Throws when a row of W0 + s·B·A has norm 0.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] Vector output_scale(ConstMatrixRef w0) const {
    const Vector n = row_norms(w0);
    for (index_t o = 0; o < n.size(); ++o) {
      QLR_CHECK(n(o) > 0.0f, invalid_argument,
                "adapter::Dora::output_scale: row_norms({}) = 0; expected > 0 (row {} of W0 + "
                "s*B*A is zero, so m/n is undefined)",
                o, o);
    }
    return magnitude_.cwiseQuotient(n);
  }

 private:
  static constexpr const char* entity = "adapter::Dora";

  /// Throws unless w0 is a non-empty, finite weight.
  QLR_COMPILED_FUNCTION
  static void check_base_values(ConstMatrixRef w0, const char* where) {
    QLR_CHECK(w0.rows() >= 1 && w0.cols() >= 1, shape_mismatch,
              "{}: w0 is {}x{}; expected a non-empty N x K weight", where, w0.rows(), w0.cols());
    check_finite(w0, std::string(where) + ": w0");
  }
  /// Throws unless w0 is a finite N×K weight for this adapter.
  QLR_COMPILED_FUNCTION
  void check_base(ConstMatrixRef w0, const char* where) const {
    QLR_CHECK(w0.rows() == out_features() && w0.cols() == in_features(), shape_mismatch,
              "{}: w0 is {}x{}; expected {}x{} (out_features x in_features)", where, w0.rows(),
              w0.cols(), out_features(), in_features());
    check_base_values(w0, where);
  }

  Lora lora_;
  Vector magnitude_;
};

}  // namespace qlr::adapter
