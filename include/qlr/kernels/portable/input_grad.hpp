// SPDX-License-Identifier: Apache-2.0
// Portable input-gradient tile over xsimd batches of the translation unit's own ISA (SSE2 on
// x86-64 by default, NEON on arm64). xsimd's fma is fused where the ISA has one (NEON, or a
// unit built with FMA3): then it matches the reference bit for bit; on plain SSE2 it is a
// multiply and an add, within the bound the tests derive.
#pragma once

#include <cmath>

#include <xsimd/xsimd.hpp>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/detail/input_grad_tile.hpp"
#include "qlr/kernels/reference/input_grad.hpp"

namespace qlr::kernels::portable {

#if XSIMD_WITH_SSE2 || XSIMD_WITH_NEON64

/// Whether this path's multiply-adds are fused, hence bitwise equal to the reference.
inline constexpr bool input_grad_fused = XSIMD_WITH_FMA3_SSE || XSIMD_WITH_FMA3_AVX ||
                                         XSIMD_WITH_FMA3_AVX2 || XSIMD_WITH_AVX512F ||
                                         XSIMD_WITH_NEON64;

namespace detail_input_grad {
/// The vector operations of detail/input_grad_block.inc as xsimd batches.
struct Lanes {
  using V = xsimd::batch<float>;                                   ///< 4 floats on SSE2 and NEON
  static constexpr index_t width = static_cast<index_t>(V::size);  ///< floats per vector
  static constexpr int rows = 4;  ///< tokens per block: 8 accumulators of SSE2's 16 xmm
  static QLR_ALWAYS_INLINE V load(const float* p) noexcept { return V::load_unaligned(p); }
  static QLR_ALWAYS_INLINE void store(float* p, V v) noexcept { v.store_unaligned(p); }
  static QLR_ALWAYS_INLINE V broadcast(float s) noexcept { return V(s); }
  static QLR_ALWAYS_INLINE V zero() noexcept { return V(0.0f); }
  static QLR_ALWAYS_INLINE V fma(V a, V b, V c) noexcept { return xsimd::fma(a, b, c); }
  static QLR_ALWAYS_INLINE float fma_scalar(float a, float b, float c) noexcept {
    if constexpr (input_grad_fused)
      return std::fma(a, b, c);
    else
      return a * b + c;  // as the vector lanes compute it
  }
};

#  include "qlr/kernels/detail/input_grad_block.inc"
}  // namespace detail_input_grad

/// The tile of detail/input_grad_tile.hpp on xsimd batches.
template <int = 0>
void input_grad_tile(const InputGradTile& t) noexcept {
  detail_input_grad::input_grad_tile(t);
}

#else

/// Without SIMD the portable path is the reference, fused.
inline constexpr bool input_grad_fused = true;

/// The reference tile.
template <int = 0>
void input_grad_tile(const InputGradTile& t) noexcept {
  reference::input_grad_tile(t);
}

#endif

}  // namespace qlr::kernels::portable
