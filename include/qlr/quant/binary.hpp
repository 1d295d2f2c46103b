// SPDX-License-Identifier: Apache-2.0
// 1-bit binary codes ŵ = α·sgn(w) (LoRAQuant, ALGORITHMS.md §6.3): a group of g elements of
// a row shares α = mean|w|, the α that minimizes ‖w − α·sgn(w)‖₂. Stored as the 2-entry
// codebook {−1, +1}, so dequantization, bit packing and files treat it like NF4.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/quant/detail/quantize_rows.hpp"

namespace qlr::quant {

/// Options of the binary quantizer.
struct BinaryOptions {
  index_t group_size = 128;               ///< elements per α, along a row; 0 is one per row
  ScaleType scale_type = ScaleType::f32;  ///< type α is stored in
};

/// The binary quantizer: code 1 for w ≥ 0 (sgn(0) := +1), code 0 for w < 0.
class Binary {
 public:
  using format = QuantFormat<1, Encoding::codebook>;  ///< what quantize() produces

  /// g = 128, f32 α.
  Binary() = default;
  /// A quantizer with the given options.
  explicit Binary(BinaryOptions options) : options_(options) {}

  /// The options this policy quantizes with.
  [[nodiscard]] const BinaryOptions& options() const noexcept { return options_; }

  /// Quantizes `w` (N×K). Throws for an empty w, a NaN/Inf element or g < 0. An all-zero
  /// group gets the smallest normal α (scales are positive): ±1.2e-38 in f32.
  [[nodiscard]] QuantizedMatrix<format> quantize(ConstMatrixRef w) const {
    constexpr const char* entity = "quant::Binary::quantize";
    const index_t k = w.cols();
    const index_t g = effective_group_size(options_.group_size, k, entity);
    return detail::quantize_rows<format>(
        w, {options_.group_size, options_.scale_type, ZeroMode::integer, {-1.0f, 1.0f}}, entity,
        [&](index_t o, std::uint8_t* codes, float* scales, float*) {
          const float* row = w.row(o).data();
          for (index_t begin = 0, l = 0; begin < k; begin += g, ++l) {
            const index_t end = std::min(k, begin + g);
            double magnitude = 0.0;
            for (index_t i = begin; i < end; ++i) {
              magnitude += std::abs(static_cast<double>(row[i]));
              codes[i] = row[i] >= 0.0f ? 1 : 0;
            }
            scales[l] = store_scale(magnitude / static_cast<double>(end - begin),
                                    options_.scale_type, entity);
          }
        });
  }

 private:
  BinaryOptions options_;
};

}  // namespace qlr::quant
