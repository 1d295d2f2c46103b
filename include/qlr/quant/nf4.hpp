// SPDX-License-Identifier: Apache-2.0
// NF4 (QLoRA's NormalFloat-4) as a codebook policy, ALGORITHMS.md §2.5: blocks of 64
// elements of a row share an absmax scale; each element takes the nearest of 16 levels.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <span>

#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/quant/concept.hpp"
#include "qlr/quant/detail/quantize_rows.hpp"

namespace qlr::quant {

/// Options of the NF4 quantizer.
struct Nf4Options {
  index_t block_size = 64;                ///< elements per absmax block, along a row
  ScaleType scale_type = ScaleType::f32;  ///< type the absmax is stored in
};

namespace detail {

/// Codes a row of `n` weights against a sorted `table`, one absmax scale per block: the code
/// is the number of midpoints strictly below w/absmax, so a value exactly on a midpoint
/// takes the lower level (bitsandbytes' comparisons).
inline void quantize_codebook_row(std::span<const float> table, std::span<const float> midpoints,
                                  ScaleType scale_type, const float* w, index_t n, index_t block,
                                  std::uint8_t* codes, float* scales, const char* entity) {
  const auto zero_code = static_cast<std::uint8_t>(
      std::min_element(table.begin(), table.end(),
                       [](float a, float b) { return std::abs(a) < std::abs(b); }) -
      table.begin());
  for (index_t begin = 0, l = 0; begin < n; begin += block, ++l) {
    const index_t end = std::min(n, begin + block);
    float absmax = 0.0f;
    for (index_t i = begin; i < end; ++i) absmax = std::max(absmax, std::abs(w[i]));
    if (absmax == 0.0f) {  // all-zero block: the zero level, exact
      scales[l] = 1.0f;
      std::fill(codes + begin, codes + end, zero_code);
      continue;
    }
    // An f16 absmax may round below the true one: |w/absmax| slightly above 1 still codes to
    // the end level ±1, the nearest.
    const float scale = store_scale(absmax, scale_type, entity);
    scales[l] = scale;
    for (index_t i = begin; i < end; ++i) {
      const float x = w[i] / scale;  // in f32, as the midpoints are (§2.5)
      std::uint8_t code = 0;
      for (const float t : midpoints) code = static_cast<std::uint8_t>(code + (x > t ? 1 : 0));
      codes[i] = code;
    }
  }
}

}  // namespace detail

/// NormalFloat-4: 16 levels that are quantiles of a standard normal, scaled by each
/// block's absmax. 4 + 32/64 = 4.5 bits per weight with f32 absmax.
class Nf4 {
 public:
  using format = QuantFormat<4, Encoding::codebook>;  ///< what quantize() produces

  /// The 16 NF4 levels in code order (QLoRA, as published in bitsandbytes).
  static constexpr std::array<float, 16> levels{
      -1.0f,
      -0.6961928009986877f,
      -0.5250730514526367f,
      -0.39491748809814453f,
      -0.28444138169288635f,
      -0.18477343022823334f,
      -0.09105003625154495f,
      0.0f,
      0.07958029955625534f,
      0.16093020141124725f,
      0.24611230194568634f,
      0.33791524171829224f,
      0.44070982933044434f,
      0.5626170039176941f,
      0.7229568362236023f,
      1.0f};

  /// The 15 decision thresholds (v_k + v_{k+1})/2, computed in f32.
  static constexpr std::array<float, 15> midpoints = [] {
    std::array<float, 15> t{};
    for (std::size_t k = 0; k < t.size(); ++k) t[k] = (levels[k] + levels[k + 1]) / 2.0f;
    return t;
  }();

  /// Blocks of 64, f32 absmax.
  Nf4() = default;
  /// An NF4 quantizer with the given block size and scale type.
  explicit Nf4(Nf4Options options) : options_(options) {}

  /// The options this policy quantizes with.
  [[nodiscard]] const Nf4Options& options() const noexcept { return options_; }

  /// Quantizes `w` (N×K) per row in blocks. Throws for an empty w, NaN/Inf or block_size < 0.
  [[nodiscard]] QuantizedMatrix<format> quantize(ConstMatrixRef w) const {
    constexpr const char* entity = "quant::Nf4::quantize";
    const index_t k = w.cols();
    const index_t block = effective_group_size(options_.block_size, k, entity);
    return detail::quantize_rows<format>(
        w, {options_.block_size, options_.scale_type, ZeroMode::integer, {levels.begin(), levels.end()}},
        entity, [&](index_t o, std::uint8_t* codes, float* scales, float*) {
          detail::quantize_codebook_row(levels, midpoints, options_.scale_type, w.row(o).data(), k, block,
                                        codes, scales, entity);
        });
  }

 private:
  Nf4Options options_;
};

}  // namespace qlr::quant
