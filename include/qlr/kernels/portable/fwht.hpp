// SPDX-License-Identifier: Apache-2.0
// Portable fast Walsh–Hadamard transform: the SIMD paths' passes over xsimd batches of the
// translation unit's own ISA (SSE2 on x86-64 by default, NEON on arm64).
#pragma once

#include <cstdint>
#include <utility>

#include <xsimd/xsimd.hpp>

#include "qlr/core/config.hpp"
#include "qlr/core/types.hpp"
#include "qlr/kernels/reference/fwht.hpp"

namespace qlr::kernels::portable {

#if XSIMD_WITH_SSE2 || XSIMD_WITH_NEON64

namespace detail_fwht {

/// The vector operations of the passes (detail/fwht_passes.inc) as xsimd batches.
struct Lanes {
  // xsimd::default_arch, the arch the unit is compiled for: a wider batch<T, avx2> would need
  // -mavx2 for the whole unit (xsimd 8.1), which is what the intrinsics paths avoid.
  using V = xsimd::batch<float>;                           ///< 4 floats on SSE2 and NEON
  using Index = xsimd::batch<std::uint32_t>;               ///< lane indices of a permute
  static constexpr int width = static_cast<int>(V::size);  ///< floats per vector
  /// 8 vectors per pass: half of SSE2's 16 xmm. NEON's 32 registers would hold 16, a pass
  /// fewer for n ≥ 2^9; not taken without an arm64 machine to measure it on.
  static constexpr int max_levels = 3;
  static QLR_ALWAYS_INLINE V load(const float* p) noexcept { return V::load_unaligned(p); }
  static QLR_ALWAYS_INLINE void store(float* p, V v) noexcept { v.store_unaligned(p); }
  static QLR_ALWAYS_INLINE V broadcast(float s) noexcept { return V(s); }
  static QLR_ALWAYS_INLINE V zero() noexcept { return V(0.0f); }
  /// Level h inside one vector: lane i becomes ±x_i + x_{i^h} (+ where bit h of i is
  /// clear), a permute and a multiply-add by ±1 — exactly a + b or a − b.
  template <std::uint32_t H, std::uint32_t... I>
  static QLR_ALWAYS_INLINE V level(V v, std::integer_sequence<std::uint32_t, I...>) noexcept {
    const V sign{((I & H) != 0 ? -1.0f : 1.0f)...};
    return v * sign + xsimd::swizzle(v, xsimd::batch_constant<Index, (I ^ H)...>());
  }
  /// The levels h = 1, 2, 4, … < width inside one vector.
  template <std::uint32_t H = 1>
  static QLR_ALWAYS_INLINE V in_register(V v) noexcept {
    if constexpr (H < V::size)
      return in_register<2 * H>(level<H>(v, std::make_integer_sequence<std::uint32_t, V::size>()));
    else
      return v;
  }
};

}  // namespace detail_fwht

#  include "qlr/kernels/detail/fwht_passes.inc"

#else  // no SIMD arch xsimd 8.1 knows (neither SSE2 nor arm64's NEON): the scalar loops

/// x ← scale·H·x in place for the Sylvester H of order n = 2^log2n: reference::fwht here.
inline void fwht(float* x, int log2n, float scale) noexcept {
  reference::fwht(x, log2n, scale);
}

/// out (K×P) = scale·H·X for a K×K ±1 matrix H: reference::hadamard_mix here.
inline void hadamard_mix(const float* h_rows, const float* h_cols, index_t k, const float* x,
                         index_t p, float* out, float scale) noexcept {
  reference::hadamard_mix(h_rows, h_cols, k, x, p, out, scale);
}

#endif

}  // namespace qlr::kernels::portable
