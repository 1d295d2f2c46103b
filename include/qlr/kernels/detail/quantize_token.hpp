// SPDX-License-Identifier: Apache-2.0
// The per-token row quantizer (ALGORITHMS.md §2.6) of every kernel path, written once: the path
// brings max|x| and the codes, core brings the scale and code rules that quant's own
// quantize_per_token uses, so every path returns its codes and scale bit for bit.
#pragma once

#include <cmath>
#include <cstdint>

#include "qlr/core/config.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/core/types.hpp"

namespace qlr::kernels::detail {

/// max|x_i| over n values; NaN when one of them is NaN or ±Inf.
using AbsmaxFn = float (*)(const float* x, index_t n) noexcept;
/// q[0, n) = token_code(x_i, scale, bits).
using TokenCodesFn = void (*)(const float* x, index_t n, float scale, int bits,
                              std::int8_t* q) noexcept;

/// Codes one row of n values into q[0, n) and returns its scale; returns NaN, writing
/// nothing, when the row holds a NaN or an infinity.
template <AbsmaxFn Absmax, TokenCodesFn Codes>
QLR_ALWAYS_INLINE float quantize_token(const float* x, index_t n, int bits, float clip,
                                       std::int8_t* q) noexcept {
  const float absmax = Absmax(x, n);
  if (std::isnan(absmax)) return absmax;
  const float scale = token_scale(absmax, bits, clip);
  Codes(x, n, scale, bits, q);
  return scale;
}

}  // namespace qlr::kernels::detail
