// SPDX-License-Identifier: Apache-2.0
// A plain low-rank term ΔW = B·A with no scale: the form EoRA's error compensation produces
// (ALGORITHMS.md §7), and any adapter whose scale was folded into its factors.
#pragma once

#include <utility>

#include "qlr/adapter/detail/factors.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/types.hpp"

namespace qlr::adapter {

/// ΔW = B·A, applied as y += B·(A·x): detail::ScaledFactors with s = 1.
class LowRank : public detail::ScaledFactors {
 public:
  /// A low-rank term sits beside any base format.
  template <class Format>
  static constexpr bool compatible_with = true;

  /// Term with A (r×K), B (N×r), 1 ≤ r ≤ min(N, K). Throws for mismatched shapes or a
  /// NaN/Inf factor.
  LowRank(Matrix a, Matrix b)
      : ScaledFactors(std::move(a), std::move(b), 1.0f, "adapter::LowRank") {}
};

}  // namespace qlr::adapter
