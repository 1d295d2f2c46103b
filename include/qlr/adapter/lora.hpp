// SPDX-License-Identifier: Apache-2.0
// LoRA (ALGORITHMS.md §8.1–8.2): ΔW = s·B·A with A (r×K), B (N×r) and s = α/r, or α/√r
// for rsLoRA, which keeps the update's size independent of the rank.
#pragma once

#include <cmath>
#include <cstdint>
#include <utility>

#include "qlr/adapter/detail/factors.hpp"
#include "qlr/core/config.hpp"
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
QLR_COMPILED_FUNCTION
float lora_scale(double alpha, index_t r, Scaling scaling, const char* entity) {
  QLR_CHECK(std::isfinite(alpha), invalid_argument, "{}: alpha = {}; expected a finite value",
            entity, alpha);
  QLR_CHECK(r >= 1, invalid_argument, "{}: rank = a.rows() = {}; expected >= 1", entity, r);
  const auto rank = static_cast<double>(r);
  return static_cast<float>(scaling == Scaling::standard ? alpha / rank : alpha / std::sqrt(rank));
}

/// A LoRA adapter: ΔW = s·B·A, applied as y += B·(s·A·x). The factors, the scale and the
/// Adapter operations are detail::ScaledFactors'; LoRA adds α and how s derives from it.
class Lora : public detail::ScaledFactors {
 public:
  /// LoRA sits beside any base format: its merge is dense (or requantizing).
  template <class Format>
  static constexpr bool compatible_with = true;

  /// Adapter with A (r×K), B (N×r), 1 ≤ r ≤ min(N, K), and scale α/r (or α/√r). Throws for
  /// mismatched shapes, a NaN/Inf factor or a non-finite alpha.
  Lora(Matrix a, Matrix b, double alpha, Scaling scaling = Scaling::standard)
      : ScaledFactors(make_factors(std::move(a), std::move(b), alpha, scaling)),
        alpha_(alpha),
        scaling_(scaling) {}

  [[nodiscard]] double alpha() const noexcept { return alpha_; }       ///< α
  [[nodiscard]] Scaling scaling() const noexcept { return scaling_; }  ///< α/r or α/√r

 private:
  static constexpr const char* entity = "adapter::Lora";
  // The scale needs a.rows() before `a` is moved: argument order is unspecified.
  static detail::ScaledFactors make_factors(Matrix a, Matrix b, double alpha, Scaling scaling) {
    const float scale = lora_scale(alpha, a.rows(), scaling, entity);
    return {std::move(a), std::move(b), scale, entity};
  }
  double alpha_;
  Scaling scaling_;
};

}  // namespace qlr::adapter
