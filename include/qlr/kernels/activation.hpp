// SPDX-License-Identifier: Apache-2.0
// The per-token activation quantizer's row kernel (ALGORITHMS.md §2.6) of every path behind
// one function pointer, chosen like the GEMM kernels' (kernels/isa.hpp). Every path returns
// quant::quantize_per_token's codes and scale bit for bit.
#pragma once

#include <cstdint>

#include "qlr/core/types.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/kernels/portable/activation.hpp"
#include "qlr/kernels/reference/activation.hpp"

namespace qlr::kernels {

/// Codes one token row x[0, n) at `bits` (8 or 4) and `clip` ∈ (0, 1] into q[0, n) and
/// returns its scale; returns NaN, writing nothing, when the row holds a NaN or an infinity.
/// Never throws: the caller checks bits, clip and the rounding mode, and throws on NaN.
using QuantizeTokenFn = float (*)(const float* x, index_t n, int bits, float clip,
                                  std::int8_t* q) noexcept;

/// The row quantizer of path `isa`. Throws Errc::unsupported when this CPU cannot run it.
inline QuantizeTokenFn quantize_token_for(Isa isa) {
  require_supported(isa, "kernels::quantize_token_for");
  // The x86 paths have no row quantizer of their own: they run the portable one, which is
  // compiled for the unit's own ISA (SSE2 unless the unit is built with -m flags).
  return isa == Isa::reference ? &reference::quantize_token : &portable::quantize_token;
}

}  // namespace qlr::kernels
