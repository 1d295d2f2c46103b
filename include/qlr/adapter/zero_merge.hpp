// SPDX-License-Identifier: Apache-2.0
// The exact QA-LoRA merge into a quantized base's zero points (ALGORITHMS.md §3.3): codes and
// scales unchanged, Z' = Z − D/S per group. Apart from merge.hpp's FP32 and requantizing
// merges, so that a layer that offers it does not compile those.
#pragma once

#include <algorithm>
#include <cmath>
#include <utility>

#include "qlr/adapter/concept.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/core/types.hpp"

namespace qlr::adapter {

/// A zero-point merge and its cost: the merged weight and how many (row, group) cells had
/// Z' rounded outside [0, 2^b − 1] and clamped (integer zeros only; 0 for float zeros).
template <QuantFormatType F>
struct ZeroMerge {
  QuantizedMatrix<F> weight;  ///< same codes and scales as the base, zeros Z' = Z − D/S
  index_t clamped_cells = 0;  ///< cells whose integer Z' was clamped (lossy beyond S/2)
};

/// The exact QA-LoRA merge (§3.3) with its clamp count: Z' = Z − D/S per cell, codes and
/// scales byte-identical. ZeroMode::floating stores Z' in f32 (the result has f32 scale
/// type: f16 scales are f32 values, kept bit for bit) and is exact up to that rounding;
/// ZeroMode::integer rounds Z' half to even and clamps it to [0, 2^b − 1], which is lossy
/// (up to S/2 per weight, more where clamped). Throws unless base is the adapter's N×K
/// and its group size is the adapter's.
template <QuantFormatType F>
  requires AdapterFor<QaLora, F>
ZeroMerge<F> merge_into_zeros_counted(const QuantizedMatrix<F>& base, const QaLora& qa,
                                      ZeroMode zeros = ZeroMode::floating) {
  constexpr const char* entity = "adapter::merge_into_zeros";
  QLR_CHECK(base.rows() == qa.out_features() && base.cols() == qa.in_features(), shape_mismatch,
            "{}: base is {}x{}; expected {}x{} (the adapter's out_features x in_features)",
            entity, base.rows(), base.cols(), qa.out_features(), qa.in_features());
  QLR_CHECK(base.group_size() == qa.group_size(), invalid_argument,
            "{}: base.group_size() = {} and adapter group_size() = {}; expected them equal (the "
            "pooling groups must be the quantization groups)",
            entity, base.group_size(), qa.group_size());
  if (zeros == ZeroMode::integer) require_round_to_nearest(entity);
  const MatrixD d = qa.group_delta();
  QuantizedParts parts = base.parts();
  const index_t groups = base.groups();
  const auto max_code = static_cast<double>(QuantizedMatrix<F>::max_code);
  index_t clamped = 0;
  for (index_t o = 0; o < base.rows(); ++o) {
    for (index_t l = 0; l < groups; ++l) {
      const auto at = static_cast<std::size_t>(o * groups + l);
      // S(q − Z') = S(q − Z) + D: the update moves the zero point only.
      const double z =
          static_cast<double>(parts.zeros[at]) - d(o, l) / static_cast<double>(parts.scales[at]);
      if (zeros == ZeroMode::floating) {
        const auto stored = static_cast<float>(z);
        QLR_CHECK(std::isfinite(stored), invalid_argument,
                  "{}: zero ({}, {}) = {} after the merge; expected a value that fits f32 (the "
                  "update is too large for scale {})",
                  entity, o, l, z, parts.scales[at]);
        parts.zeros[at] = stored;
      } else {
        const double rounded = std::nearbyint(z);
        if (rounded < 0.0 || rounded > max_code) ++clamped;
        parts.zeros[at] = static_cast<float>(std::clamp(rounded, 0.0, max_code) + 0.0);
      }
    }
  }
  parts.zero_mode = zeros;
  if (zeros == ZeroMode::floating) parts.scale_type = ScaleType::f32;  // where Z' is stored
  return {QuantizedMatrix<F>(std::move(parts)), clamped};
}

/// The exact QA-LoRA merge into the zero points (§3.3): merge_into_zeros_counted's weight.
template <QuantFormatType F>
  requires AdapterFor<QaLora, F>
QuantizedMatrix<F> merge_into_zeros(const QuantizedMatrix<F>& base, const QaLora& qa,
                                    ZeroMode zeros = ZeroMode::floating) {
  return merge_into_zeros_counted(base, qa, zeros).weight;
}

}  // namespace qlr::adapter
