// SPDX-License-Identifier: Apache-2.0
// The per-token activation quantizer's row kernel as plain scalar loops (ALGORITHMS.md §2.6):
// the oracle of the portable path; core's quantize_token_row, which quant::quantize_per_token
// uses too.
#pragma once

#include <cstdint>

#include "qlr/core/numeric.hpp"
#include "qlr/core/types.hpp"

namespace qlr::kernels::reference {

/// Codes one token row of n values at `bits` (8 or 4) and `clip` into q[0, n) and returns its
/// scale; returns NaN, writing nothing, when the row holds a NaN or an infinity.
inline float quantize_token(const float* x, index_t n, int bits, float clip,
                            std::int8_t* q) noexcept {
  return quantize_token_row(x, n, bits, clip, q);
}

}  // namespace qlr::kernels::reference
