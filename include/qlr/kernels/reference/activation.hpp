// SPDX-License-Identifier: Apache-2.0
// The per-token activation quantizer's row kernel as plain scalar loops (ALGORITHMS.md §2.6):
// the oracle of the portable path; core's quantize_token_row, which quant::quantize_per_token
// uses too.
#pragma once

#include <cstdint>

#include "qlr/core/numeric.hpp"
#include "qlr/core/types.hpp"

namespace qlr::kernels::reference {

/// max|x_i| over the n values at x; NaN when one of them is NaN or ±Inf.
inline float absmax(const float* x, index_t n) noexcept { return finite_absmax(x, n); }

/// q_i = clamp(nearbyint(x_i/scale), −qmax − 1, qmax) for i < n (core's token_code).
inline void token_codes(const float* x, index_t n, float scale, int bits, std::int8_t* q) noexcept {
  qlr::token_codes(x, n, scale, bits, q);
}

/// Codes one token row of n values at `bits` (8 or 4) and `clip` into q[0, n) and returns its
/// scale; returns NaN, writing nothing, when the row holds a NaN or an infinity.
inline float quantize_token(const float* x, index_t n, int bits, float clip,
                            std::int8_t* q) noexcept {
  return quantize_token_row(x, n, bits, clip, q);
}

}  // namespace qlr::kernels::reference
