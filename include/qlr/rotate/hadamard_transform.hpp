// SPDX-License-Identifier: Apache-2.0
// The normalized Walsh–Hadamard transform of any size qlr can factor, n = K·2^k:
// Ĥ_n = (H_K ⊗ H_{2^k})/√n. A row x, viewed as K×2^k row-major X, becomes H_K·X·H_{2^k}/√n:
// the fast transform of every sub-row (O(n·k), the SIMD kernels), then a dense ±1 mix of the
// K sub-rows (O(n·K)), as QuaRot-derived tools order it (ALGORITHMS.md §4.1).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/kernels/fwht.hpp"
#include "qlr/rotate/detail/apply_rows.hpp"
#include "qlr/rotate/hadamard_matrix.hpp"

namespace qlr::rotate {

/// x ← Ĥ_n·x (or Ĥ_nᵀ·x) for rows of size n, planned once: the factor K, the K×K mix and
/// the fast transform of the chosen kernel path.
class HadamardTransform {
 public:
  /// The transform of size n on path `isa`. Throws for a size qlr cannot factor (the
  /// message lists the orders it has) or a path this CPU cannot run.
  explicit HadamardTransform(index_t n, kernels::Isa isa = kernels::best_isa())
      : n_(n), factor_(hadamard_factor(n)), kernels_(kernels::hadamard_kernels_for(isa)) {
    if (factor_.order > 1) {
      const HadamardMatrix h = find_hadamard(factor_.order);
      const index_t k = h.order;
      h_rows_.resize(static_cast<std::size_t>(k * k));
      h_cols_.resize(static_cast<std::size_t>(k * k));
      for (index_t i = 0; i < k; ++i)
        for (index_t j = 0; j < k; ++j) {
          h_rows_[static_cast<std::size_t>(i * k + j)] = static_cast<float>(h(i, j));
          h_cols_[static_cast<std::size_t>(j * k + i)] = static_cast<float>(h(i, j));
        }
    }
  }

  /// n, the row size.
  [[nodiscard]] index_t size() const noexcept { return n_; }
  /// Floats of scratch apply() needs: n when K > 1, else 0.
  [[nodiscard]] index_t scratch_size() const noexcept { return factor_.order > 1 ? n_ : 0; }

  /// x ← Ĥ·x, or Ĥᵀ·x when `transpose` (the inverse), for one row of n finite floats;
  /// `scratch` holds scratch_size() floats. Unchecked: the batch entry points check.
  void apply(float* x, float* scratch, bool transpose = false) const noexcept {
    const float scale = 1.0f / std::sqrt(static_cast<float>(n_));
    if (factor_.order == 1) {
      kernels_.fwht(x, factor_.log2_pow2, scale);
      return;
    }
    const index_t k = factor_.order;
    const index_t p = n_ / k;
    for (index_t i = 0; i < k; ++i) kernels_.fwht(x + i * p, factor_.log2_pow2, 1.0f);
    // Hᵀ's rows are H's columns: the transpose swaps the two.
    const float* rows = transpose ? h_cols_.data() : h_rows_.data();
    const float* cols = transpose ? h_rows_.data() : h_cols_.data();
    kernels_.mix(rows, cols, k, x, p, scratch, scale);
    std::copy(scratch, scratch + n_, x);
  }

  /// Every row of m ← Ĥ·row (Ĥᵀ·row when `transpose`), rows split over qlr's threads.
  /// Throws for m.cols() != n, or for a row holding NaN/Inf, leaving m as it was (to FP32
  /// rounding: rows already rotated are rotated back).
  void apply_rows(MatrixRef m, bool transpose = false) const {
    QLR_CHECK(m.cols() == n_, shape_mismatch,
              "rotate::HadamardTransform: rows of {} values; expected the transform's size n = {}",
              m.cols(), n_);
    detail::apply_rows_checked(
        m, scratch_size(), [&](float* x, float* scratch) { apply(x, scratch, transpose); },
        [&](float* x, float* scratch) { apply(x, scratch, !transpose); }, "rotate::HadamardTransform");
  }

 private:
  index_t n_;
  HadamardFactor factor_;
  kernels::HadamardKernels kernels_;
  std::vector<float> h_rows_;  // H_K row-major as floats (exact: ±1)
  std::vector<float> h_cols_;  // H_Kᵀ row-major
};

}  // namespace qlr::rotate
