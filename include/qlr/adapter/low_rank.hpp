// SPDX-License-Identifier: Apache-2.0
// A plain low-rank term ΔW = B·A with no scale: the form EoRA's error compensation produces
// (ALGORITHMS.md §7), and any adapter whose scale was folded into its factors.
#pragma once

#include <utility>

#include "qlr/adapter/detail/factors.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/types.hpp"

namespace qlr::adapter {

/// ΔW = B·A, applied as y += B·(A·x).
class LowRank {
 public:
  /// A low-rank term sits beside any base format.
  template <class Format>
  static constexpr bool compatible_with = true;

  /// Term with A (r×K), B (N×r), 1 ≤ r ≤ min(N, K). Throws for mismatched shapes or a
  /// NaN/Inf factor.
  LowRank(Matrix a, Matrix b) : factors_(std::move(a), std::move(b), 1.0f, entity) {}

  [[nodiscard]] index_t in_features() const noexcept { return factors_.in_features(); }  ///< K
  [[nodiscard]] index_t out_features() const noexcept { return factors_.out_features(); }  ///< N
  [[nodiscard]] index_t rank() const noexcept { return factors_.rank(); }  ///< r
  [[nodiscard]] float scale() const noexcept { return 1.0f; }  ///< always 1
  [[nodiscard]] const Matrix& a() const noexcept { return factors_.a(); }  ///< A (r×K)
  [[nodiscard]] const Matrix& b() const noexcept { return factors_.b(); }  ///< B (N×r)
  /// B, the Adapter's up-projection.
  [[nodiscard]] const Matrix& up() const noexcept { return factors_.b(); }
  /// Values stored when kept separate: r·(N + K).
  [[nodiscard]] index_t parameter_count() const noexcept {
    return rank() * (out_features() + in_features());
  }

  /// t (M×r) = x·Aᵀ for x (M×K). Throws for wrong shapes or a NaN/Inf in x.
  void project(ConstMatrixRef x, MatrixRef t) const { factors_.project(x, t, entity); }
  /// ΔW (N×K) = B·A in FP32.
  [[nodiscard]] Matrix delta() const { return factors_.delta(); }

 private:
  static constexpr const char* entity = "adapter::LowRank";
  detail::ScaledFactors factors_;
};

}  // namespace qlr::adapter
