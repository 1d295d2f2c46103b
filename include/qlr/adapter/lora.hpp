// SPDX-License-Identifier: Apache-2.0
// LoRA (ALGORITHMS.md §8.1–8.2): ΔW = s·B·A with A (r×K), B (N×r) and s = α/r, or α/√r
// for rsLoRA, which keeps the update's size independent of the rank.
#pragma once

#include <cmath>
#include <cstdint>
#include <utility>

#include "qlr/adapter/detail/factors.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/types.hpp"

namespace qlr::adapter {

/// How α becomes the scale s of ΔW = s·B·A.
enum class Scaling : std::uint8_t {
  standard,         ///< s = α/r (LoRA, PEFT's default)
  rank_stabilized,  ///< s = α/√r (rsLoRA, PEFT's use_rslora)
};

/// The scale s for `alpha` at rank `r`, rounded once to float (every product uses that
/// float, so forward passes and merges agree). Throws for a non-finite alpha or r < 1.
inline float lora_scale(double alpha, index_t r, Scaling scaling, const char* entity) {
  QLR_CHECK(std::isfinite(alpha), invalid_argument, "{}: alpha = {}; expected a finite value",
            entity, alpha);
  QLR_CHECK(r >= 1, invalid_argument, "{}: rank = a.rows() = {}; expected >= 1", entity, r);
  const auto rank = static_cast<double>(r);
  return static_cast<float>(scaling == Scaling::standard ? alpha / rank : alpha / std::sqrt(rank));
}

/// A LoRA adapter: ΔW = s·B·A, applied as y += B·(s·A·x).
class Lora {
 public:
  /// LoRA sits beside any base format: its merge is dense (or requantizing).
  template <class Format>
  static constexpr bool compatible_with = true;

  /// Adapter with A (r×K), B (N×r), 1 ≤ r ≤ min(N, K), and scale α/r (or α/√r). Throws for
  /// mismatched shapes, a NaN/Inf factor or a non-finite alpha.
  Lora(Matrix a, Matrix b, double alpha, Scaling scaling = Scaling::standard)
      : factors_(make_factors(std::move(a), std::move(b), alpha, scaling)),
        alpha_(alpha),
        scaling_(scaling) {}

  [[nodiscard]] index_t in_features() const noexcept { return factors_.in_features(); }  ///< K
  [[nodiscard]] index_t out_features() const noexcept { return factors_.out_features(); }  ///< N
  [[nodiscard]] index_t rank() const noexcept { return factors_.rank(); }  ///< r
  [[nodiscard]] double alpha() const noexcept { return alpha_; }          ///< α
  [[nodiscard]] Scaling scaling() const noexcept { return scaling_; }     ///< α/r or α/√r
  [[nodiscard]] float scale() const noexcept { return factors_.scale(); }  ///< s
  [[nodiscard]] const Matrix& a() const noexcept { return factors_.a(); }  ///< A (r×K)
  [[nodiscard]] const Matrix& b() const noexcept { return factors_.b(); }  ///< B (N×r)
  /// B, the Adapter's up-projection.
  [[nodiscard]] const Matrix& up() const noexcept { return factors_.b(); }
  /// Values stored when kept separate: r·(N + K).
  [[nodiscard]] index_t parameter_count() const noexcept {
    return rank() * (out_features() + in_features());
  }

  /// t (M×r) = s·x·Aᵀ for x (M×K). Throws for wrong shapes or a NaN/Inf in x.
  void project(ConstMatrixRef x, MatrixRef t) const { factors_.project(x, t, entity); }
  /// ΔW (N×K) = s·B·A in FP32.
  [[nodiscard]] Matrix delta() const { return factors_.delta(); }

 private:
  static constexpr const char* entity = "adapter::Lora";
  // The scale needs a.rows() before `a` is moved: argument order is unspecified.
  static detail::ScaledFactors make_factors(Matrix a, Matrix b, double alpha, Scaling scaling) {
    const float scale = lora_scale(alpha, a.rows(), scaling, entity);
    return {std::move(a), std::move(b), scale, entity};
  }
  detail::ScaledFactors factors_;
  double alpha_;
  Scaling scaling_;
};

}  // namespace qlr::adapter
