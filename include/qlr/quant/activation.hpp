// SPDX-License-Identifier: Apache-2.0
// Per-token dynamic activation quantization (ALGORITHMS.md §2.6): each row of X gets its own
// symmetric INT8 or INT4 scale at run time, the input side of W8A8, W4A8 and W4A4 GEMMs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/view.hpp"

namespace qlr::quant {

/// Options of the per-token activation quantizer.
struct ActivationOptions {
  int bits = 8;       ///< 8 (codes in [−128, 127]) or 4 (codes in [−8, 7])
  float clip = 1.0f;  ///< range a = clip·max|x|, in (0, 1]; values beyond ±a saturate
};

/// X (M×K) as signed codes, one per int8 even at 4 bits, and one scale per row: x ≈ s_t·q.
struct QuantizedActivations {
  index_t rows = 0;                 ///< M, tokens
  index_t cols = 0;                 ///< K, features
  int bits = 8;                     ///< 8 or 4
  std::vector<std::int8_t> codes;   ///< rows × cols, row-major
  std::vector<float> scales;        ///< one per row, > 0

  /// The codes and scales as the integer kernels take them (kernels::gemm with DotWeights).
  [[nodiscard]] ActivationCodes view() const noexcept {
    return {codes.data(), scales.data(), rows, cols, cols, bits};
  }

  /// Code of token `t`, feature `i`.
  [[nodiscard]] std::int8_t code(index_t t, index_t i) const noexcept {
    return codes[static_cast<std::size_t>(t * cols + i)];
  }
};


namespace detail {

/// Checks the arguments of a per-token quantizer named `entity` and returns the result's
/// storage, codes and scales sized for x. Throws for bits ∉ {4, 8}, clip ∉ (0, 1] or an
/// empty x.
inline QuantizedActivations prepare_per_token(index_t rows, index_t cols, ActivationOptions options,
                                              const char* entity) {
  QLR_CHECK(options.bits == 8 || options.bits == 4, unsupported,
            "{}: bits = {}; expected 8 or 4", entity, options.bits);
  QLR_CHECK(options.clip > 0.0f && options.clip <= 1.0f, invalid_argument,
            "{}: clip = {}; expected a value in (0, 1]", entity, options.clip);
  QLR_CHECK(rows > 0 && cols > 0, shape_mismatch,
            "{}: x is {}x{}; expected a non-empty matrix", entity, rows, cols);
  require_round_to_nearest(entity);
  QuantizedActivations a;
  a.rows = rows;
  a.cols = cols;
  a.bits = options.bits;
  a.codes.resize(static_cast<std::size_t>(rows * cols));
  a.scales.resize(static_cast<std::size_t>(rows));
  return a;
}

/// Throws, naming `entity`, for the first token whose scale quantize_token() left NaN.
inline void check_token_scales(const QuantizedActivations& a, const char* entity) {
  for (index_t t = 0; t < a.rows; ++t) {
    QLR_CHECK(!std::isnan(a.scales[static_cast<std::size_t>(t)]), invalid_argument,
              "{}: row {} of x holds a NaN or an infinity; expected finite activations", entity,
              t);
  }
}

}  // namespace detail

/// Quantizes each row of `x` (M×K) with its own symmetric scale s = clip·max|x|/qmax.
/// Throws for bits ∉ {4, 8}, clip ∉ (0, 1], an empty x, or a row holding NaN/Inf.
inline QuantizedActivations quantize_per_token(ConstMatrixRef x, ActivationOptions options = {}) {
  constexpr const char* entity = "quant::quantize_per_token";
  QuantizedActivations a = detail::prepare_per_token(x.rows(), x.cols(), options, entity);
  parallel_for(a.rows, 16, [&](index_t begin, index_t end) {
    for (index_t t = begin; t < end; ++t) {
      a.scales[static_cast<std::size_t>(t)] = quantize_token_row(
          x.row(t).data(), a.cols, a.bits, options.clip, a.codes.data() + t * a.cols);
    }
  });
  detail::check_token_scales(a, entity);
  return a;
}

/// X̂ (M×K) = s_t·q, the values the integer GEMMs compute with.
inline Matrix dequantize(const QuantizedActivations& a) {
  Matrix x(a.rows, a.cols);
  for (index_t t = 0; t < a.rows; ++t)
    for (index_t i = 0; i < a.cols; ++i)
      x(t, i) = a.scales[static_cast<std::size_t>(t)] * static_cast<float>(a.code(t, i));
  return x;
}

}  // namespace qlr::quant
