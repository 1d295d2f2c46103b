// SPDX-License-Identifier: Apache-2.0
// QA-LoRA (ALGORITHMS.md §3): A (r×L) acts on the input pooled over the base's quantization
// groups, so the update is constant inside every (row, group) cell and folds exactly into
// the zero points of an int_asym base (merge.hpp, merge_into_zeros).
#pragma once

#include <algorithm>
#include <concepts>
#include <cstdint>
#include <utility>
#include <vector>

#include "qlr/adapter/detail/factors.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/types.hpp"

namespace qlr::adapter {

/// The pooling constant κ of P[l] = (κ/g_l)·Σ_{i∈G_l} x[i] (§3.1, §11.1): sources disagree,
/// so κ is stored with the adapter and the merge uses the same one.
enum class Pooling : std::uint8_t {
  mean,  ///< κ = 1: the group mean (reference repo's AvgPool1d and merge script; default)
  sum,   ///< κ = g: the paper's "summation"
  peft,  ///< κ = K/g: PEFT's use_qalora (the mean times the number of groups)
};

/// A quantized format whose zero points can absorb a per-cell constant: int_asym.
template <class F>
concept ZeroPointFormat = QuantFormatType<F> && F::encoding == Encoding::int_asym;

/// A QA-LoRA adapter: y += s·B·(A·P), P = pool(x) (L values per token).
class QaLora {
 public:
  /// Only an int_asym base has zero points to merge into (§3.3).
  template <class Format>
  static constexpr bool compatible_with = ZeroPointFormat<Format>;

  /// Adapter with A (r×L), B (N×r) for inputs of `in_features` = K pooled in groups of
  /// `group_size` = g (0 or g ≥ K: one group), L = ⌈K/g⌉, and scale α/r (or α/√r). The
  /// groups must be the base's quantization groups. Throws for mismatched shapes, g < 0,
  /// r ∉ [1, min(N, K)], a NaN/Inf factor or a non-finite alpha.
  QaLora(Matrix a, Matrix b, double alpha, index_t in_features, index_t group_size,
         Pooling pooling = Pooling::mean, Scaling scaling = Scaling::standard)
      : a_(std::move(a)), b_(std::move(b)), alpha_(alpha), k_(in_features), pooling_(pooling),
        scaling_(scaling) {
    QLR_CHECK(k_ >= 1, shape_mismatch, "{}: in_features = {}; expected >= 1", entity, k_);
    g_ = effective_group_size(group_size, k_, entity);
    const index_t groups = group_count(k_, g_);
    detail::check_factor_pair(a_, b_, groups, k_, entity);
    scale_ = lora_scale(alpha_, a_.rows(), scaling_, entity);
    at_ = a_.transpose();
    factors_.resize(static_cast<std::size_t>(groups));
    for (index_t l = 0; l < groups; ++l)
      factors_[static_cast<std::size_t>(l)] = static_cast<float>(pool_factor(l));
  }

  [[nodiscard]] index_t in_features() const noexcept { return k_; }             ///< K
  [[nodiscard]] index_t out_features() const noexcept { return b_.rows(); }     ///< N
  [[nodiscard]] index_t rank() const noexcept { return a_.rows(); }             ///< r
  [[nodiscard]] index_t group_size() const noexcept { return g_; }              ///< g, in [1, K]
  [[nodiscard]] index_t groups() const noexcept { return a_.cols(); }           ///< L = ⌈K/g⌉
  [[nodiscard]] Pooling pooling() const noexcept { return pooling_; }           ///< which κ
  [[nodiscard]] double alpha() const noexcept { return alpha_; }                ///< α
  [[nodiscard]] Scaling scaling() const noexcept { return scaling_; }           ///< α/r or α/√r
  [[nodiscard]] float scale() const noexcept { return scale_; }                 ///< s
  [[nodiscard]] const Matrix& a() const noexcept { return a_; }                 ///< A (r×L)
  [[nodiscard]] const Matrix& b() const noexcept { return b_; }                 ///< B (N×r)
  /// Bytes held: A, its transpose, B, the pooling factors and the object itself.
  [[nodiscard]] std::size_t memory_bytes() const noexcept {
    return sizeof(*this) +
           sizeof(float) * (static_cast<std::size_t>(a_.size() + at_.size() + b_.size()) +
                            factors_.size());
  }
  /// B, the Adapter's up-projection.
  [[nodiscard]] const Matrix& up() const noexcept { return b_; }
  /// Values stored when kept separate: r·(N + L).
  [[nodiscard]] index_t parameter_count() const noexcept {
    return rank() * (out_features() + groups());
  }

  /// κ: 1 (mean), g (sum) or K/g (peft).
  [[nodiscard]] double kappa() const noexcept {
    switch (pooling_) {
      case Pooling::mean: return 1.0;
      case Pooling::sum: return static_cast<double>(g_);
      case Pooling::peft: return static_cast<double>(k_) / static_cast<double>(g_);
    }
    return 1.0;
  }

  /// Columns of group l: g, or K − (L−1)·g for a ragged last group.
  [[nodiscard]] index_t group_width(index_t l) const noexcept {
    return std::min(g_, k_ - l * g_);
  }

  /// κ/g_l, the weight of each input of group l in P[l]. With the true width g_l (§11.11),
  /// mean pooling is the ragged group's own mean; sum pooling (κ = g) weighs a ragged group
  /// as g/g_l times its sum, i.e. its mean times g, like the full groups. [ours]
  [[nodiscard]] double pool_factor(index_t l) const noexcept {
    return kappa() / static_cast<double>(group_width(l));
  }

  /// t (M×r) = s·P·Aᵀ with P = pool(x) (M×L) for x (M×K), without a buffer for P: each
  /// group's pooled value is added to its token's row of t as soon as it is summed.
  /// Throws for wrong shapes or a NaN/Inf in x.
  QLR_COMPILED_FUNCTION
  void project(ConstMatrixRef x, MatrixRef t) const {
    constexpr const char* where = "adapter::QaLora::project";
    detail::check_projection_shapes(x, t, k_, rank(), where);
    for (index_t m = 0; m < x.rows(); ++m) {
      auto row = t.row(m);
      row.setZero();
      for (index_t l = 0; l < groups(); ++l) {
        const float p = x.row(m).segment(l * g_, group_width(l)).sum() *
                        factors_[static_cast<std::size_t>(l)];
        row += p * at_.row(l);
      }
      row *= scale_;
    }
    detail::check_projection_finite(x, t, where);
  }

  /// D (N×L) = s·(κ/g_l)·(B·A)[o,l], the update's constant value in cell (o, l), in double:
  /// the zero-point merge divides it by the scales, Z' = Z − D/S (§3.3).
  QLR_COMPILED_FUNCTION
  [[nodiscard]] MatrixD group_delta() const {
    MatrixD d = b_.cast<double>() * a_.cast<double>();
    for (index_t l = 0; l < groups(); ++l)
      d.col(l) *= static_cast<double>(scale_) * pool_factor(l);
    return d;
  }

  /// ΔW (N×K) in FP32: ΔW[o,i] = D[o, ⌊i/g⌋], the dense form of the update.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] Matrix delta() const {
    const MatrixD d = group_delta();
    Matrix w(out_features(), k_);
    for (index_t o = 0; o < out_features(); ++o)
      for (index_t i = 0; i < k_; ++i) w(o, i) = static_cast<float>(d(o, i / g_));
    return w;
  }

 private:
  static constexpr const char* entity = "adapter::QaLora";
  Matrix a_;
  Matrix b_;
  double alpha_;
  index_t k_;
  index_t g_ = 1;
  Pooling pooling_;
  Scaling scaling_;
  float scale_ = 0.0f;
  Matrix at_;                   // Aᵀ (L×r): project adds one contiguous row per group
  std::vector<float> factors_;  // κ/g_l per group, rounded once
};

}  // namespace qlr::adapter
