// SPDX-License-Identifier: Apache-2.0
// The per-token activation quantizer's row kernel on xsimd batches of the translation unit's
// own ISA (SSE2 on x86-64 by default, NEON on arm64): the reference's codes and scale, bit
// for bit, from an FP32 vector multiply instead of scalar double division and nearbyint.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include <xsimd/xsimd.hpp>

#include "qlr/core/numeric.hpp"
#include "qlr/core/types.hpp"

namespace qlr::kernels::portable {

#if XSIMD_WITH_SSE2 || XSIMD_WITH_NEON64

namespace detail_activation {

/// Floats of xsimd::default_arch, the unit's own ISA: 4 on SSE2 and NEON.
using V = xsimd::batch<float>;
/// The int32 codes of one V.
using Codes = xsimd::batch<std::int32_t>;
/// Floats per V.
inline constexpr index_t width = static_cast<index_t>(V::size);
/// Floats coded per block: their int32 codes wait in 256 B of stack before narrowing to int8.
inline constexpr index_t block = 64;

/// |c − nearbyint(c)| at or above this lies within 2^-15 of a tie k + 1/2: too close for an
/// approximate quotient (see stage_codes) to decide the rounding.
inline constexpr float near_tie = 0.5f - 0x1p-15f;

/// staged[0, len) = token_code(x_i, scale, bits) as int32.
inline void stage_codes(const float* x, index_t len, float scale, int bits,
                        std::int32_t* staged) noexcept {
  const auto max_code = static_cast<float>(token_max_code(bits));
  // x·(1/s) in f32 is within 2^-23 (two roundings) of x/s, so within 2^-16 for |x/s| ≤ 128
  // (beyond, the clamp decides), and s ≥ FLT_MIN keeps 1/s finite: a quotient farther than
  // 2^-15 from every tie k + 1/2 rounds as the exact one does. Nearer ones — rare, except
  // for values built to be ties — are redone in double. No vector division: a multiply is
  // cheaper, and xsimd 8.1's f32 division on arm64 is a reciprocal estimate refined by two
  // Newton steps (xsimd_neon.hpp), not IEEE division, so it is no exact quotient either.
  const V inverse(1.0f / scale);
  const V hi(max_code), lo(-max_code - 1.0f), tie_distance(near_tie);
  index_t j = 0;
  for (; j + width <= len; j += width) {
    // Clamping before rounding is the same as after (the bounds are integers) and keeps
    // the conversion in int32 range.
    const V c = xsimd::min(xsimd::max(V::load_unaligned(x + j) * inverse, lo), hi);
    const Codes r = xsimd::nearbyint_as_int(c);  // ties to even, as std::nearbyint
    if (xsimd::any(xsimd::abs(c - xsimd::to_float(r)) >= tie_distance)) [[unlikely]] {
      for (index_t l = 0; l < width; ++l) staged[j + l] = token_code(x[j + l], scale, bits);
    } else {
      r.store_aligned(staged + j);
    }
  }
  for (; j < len; ++j) staged[j] = token_code(x[j], scale, bits);
}

}  // namespace detail_activation

/// max|x_i| over the n values at x; NaN when one of them is NaN or ±Inf.
inline float absmax(const float* x, index_t n) noexcept {
  using detail_activation::V;
  using detail_activation::width;
  const V largest(std::numeric_limits<float>::max());
  // Four chains: a max waits for the one before it, a single chain would stall the loads.
  V m0(0.0f), m1(0.0f), m2(0.0f), m3(0.0f);
  // |x| ≤ FLT_MAX is false for NaN and ±Inf; max alone would not tell (SSE2's maxps drops a
  // NaN in one of its operands).
  xsimd::batch_bool<float> finite(true);
  index_t i = 0;
  for (; i + 4 * width <= n; i += 4 * width) {
    const V a0 = xsimd::abs(V::load_unaligned(x + i));
    const V a1 = xsimd::abs(V::load_unaligned(x + i + width));
    const V a2 = xsimd::abs(V::load_unaligned(x + i + 2 * width));
    const V a3 = xsimd::abs(V::load_unaligned(x + i + 3 * width));
    m0 = xsimd::max(m0, a0);
    m1 = xsimd::max(m1, a1);
    m2 = xsimd::max(m2, a2);
    m3 = xsimd::max(m3, a3);
    finite = finite & (a0 <= largest) & (a1 <= largest) & (a2 <= largest) & (a3 <= largest);
  }
  for (; i + width <= n; i += width) {
    const V a = xsimd::abs(V::load_unaligned(x + i));
    m0 = xsimd::max(m0, a);
    finite = finite & (a <= largest);
  }
  const float tail = finite_absmax(x + i, n - i);  // NaN when the tail is not finite
  if (!xsimd::all(finite) || std::isnan(tail)) return std::numeric_limits<float>::quiet_NaN();
  // No reduce_max in xsimd 8.1: the lanes go through memory.
  float lanes[width];
  xsimd::max(xsimd::max(m0, m1), xsimd::max(m2, m3)).store_unaligned(lanes);
  float m = tail;
  for (const float lane : lanes) m = std::max(m, lane);
  return m;
}

/// q_i = clamp(nearbyint(x_i/scale), −qmax − 1, qmax) for i < n (core's token_code).
inline void token_codes(const float* x, index_t n, float scale, int bits, std::int8_t* q) noexcept {
  using detail_activation::block;
  alignas(64) std::int32_t staged[block];
  for (index_t i = 0; i < n; i += block) {
    const index_t len = std::min(block, n - i);
    detail_activation::stage_codes(x + i, len, scale, bits, staged);
    for (index_t j = 0; j < len; ++j) q[i + j] = static_cast<std::int8_t>(staged[j]);
  }
}

#else  // no SIMD arch xsimd 8.1 knows (neither SSE2 nor arm64's NEON): the scalar loops

/// max|x_i| over the n values at x; NaN when one of them is NaN or ±Inf.
inline float absmax(const float* x, index_t n) noexcept {
  return finite_absmax(x, n);
}

/// q_i = clamp(nearbyint(x_i/scale), −qmax − 1, qmax) for i < n (core's token_code).
inline void token_codes(const float* x, index_t n, float scale, int bits, std::int8_t* q) noexcept {
  qlr::token_codes(x, n, scale, bits, q);
}

#endif

/// Codes one token row of n values at `bits` (8 or 4) and `clip` into q[0, n) and returns its
/// scale; returns NaN, writing nothing, when the row holds a NaN or an infinity.
inline float quantize_token(const float* x, index_t n, int bits, float clip,
                            std::int8_t* q) noexcept {
  return quantize_token_with<&absmax, &token_codes>(x, n, bits, clip, q);
}

}  // namespace qlr::kernels::portable
