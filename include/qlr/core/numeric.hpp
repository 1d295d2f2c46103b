// SPDX-License-Identifier: Apache-2.0
// Rounding and scale-storage rules every quantizer shares (ALGORITHMS.md §1.2–1.3, §2.3,
// §2.6): ties to even, and scales rounded to their storage type before codes are computed.
#pragma once

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string_view>

#include "qlr/core/error.hpp"
#include "qlr/core/half.hpp"
#include "qlr/core/types.hpp"

namespace qlr {

/// The floating-point type a quantization scale (or float zero point) is stored in.
enum class ScaleType : std::uint8_t { f32, f16 };

/// Bits one scale occupies when stored.
constexpr int scale_bits(ScaleType t) noexcept { return t == ScaleType::f16 ? 16 : 32; }

/// Throws unless the FPU rounds to nearest-even: std::nearbyint follows the current mode,
/// and every code qlr computes assumes ties to even (torch.round's rule).
inline void require_round_to_nearest(std::string_view entity) {
  QLR_CHECK(std::fegetround() == FE_TONEAREST, unsupported,
            "{}: floating-point rounding mode = {}; expected FE_TONEAREST ({})", entity,
            std::fegetround(), FE_TONEAREST);
}

/// Rounds a double to the storage type and back (round to nearest even).
inline double round_to_storage(double v, ScaleType t) noexcept {
  const float f = static_cast<float>(v);
  return t == ScaleType::f16 ? static_cast<double>(round_to_half(f)) : static_cast<double>(f);
}

/// store_scale() without its checks, for an s > 0 known to be finite and to fit the type:
/// s rounded to nearest even in the storage type, lifted to the type's smallest normal.
inline float round_scale(double s, ScaleType t) noexcept {
  const double min_normal = t == ScaleType::f16 ? 0x1p-14 : std::numeric_limits<float>::min();
  if (s <= min_normal) return static_cast<float>(min_normal);
  return static_cast<float>(round_to_storage(s, t));
}

/// The scale s* stored for an ideal scale s > 0: s rounded to nearest even in the storage
/// type (ALGORITHMS.md §1.2), lifted to the type's smallest normal when it falls below it
/// (§2.3). Throws when s is not finite or does not fit the type.
inline float store_scale(double s, ScaleType t, std::string_view entity) {
  const double max_value = t == ScaleType::f16 ? 65504.0 : std::numeric_limits<float>::max();
  QLR_CHECK(std::isfinite(s) && s <= max_value, invalid_argument,
            "{}: scale = {}; expected a finite value that fits the {} scale type", entity, s,
            t == ScaleType::f16 ? "f16" : "f32");
  const float stored = round_scale(s, t);
  QLR_CHECK(stored <= max_value, invalid_argument,  // f16 rounding may carry past 65504
            "{}: scale = {}; expected a value that fits the f16 scale type", entity, s);
  return stored;
}

/// Largest symmetric per-token code of `bits` (8 or 4): 127 or 7; the smallest is −qmax − 1.
constexpr int token_max_code(int bits) noexcept {
  return bits == 8 ? 127 : 7;
}

/// The f32 scale of a per-token row (ALGORITHMS.md §2.6) whose max|x| is the finite `absmax`:
/// s* = clip·absmax/qmax rounded to f32 as store_scale() does, or 1 for an all-zero row
/// (whose codes are zeros at any scale). Quantizer and kernels share it, so they agree.
inline float token_scale(float absmax, int bits, float clip) noexcept {
  const double range = static_cast<double>(clip) * static_cast<double>(absmax);
  if (range == 0.0) return 1.0f;
  // range ≤ FLT_MAX and qmax ≥ 7: the quotient fits f32, so no check can fail here.
  return round_scale(range / token_max_code(bits), ScaleType::f32);
}

/// The per-token code of x at scale s (ALGORITHMS.md §2.6): clamp(nearbyint(x/s), −qmax − 1,
/// qmax) with the quotient in double, so that ties k + 1/2 go to even exactly.
inline std::int8_t token_code(float x, float s, int bits) noexcept {
  const double max_code = token_max_code(bits);
  const double code = std::nearbyint(static_cast<double>(x) / static_cast<double>(s));
  return static_cast<std::int8_t>(std::clamp(code, -max_code - 1.0, max_code));
}

/// Whether all n values at x are finite: no value has all-ones exponent bits, as NaN and the
/// infinities do. Integer lanes of four, in GCC's portable vector extension, so the scan runs
/// at the memory's pace where std::isfinite's branch ran a value at a time.
inline bool all_finite(const float* x, index_t n) noexcept {
  using Lanes = std::uint32_t __attribute__((vector_size(16)));
  constexpr std::uint32_t exponent = 0x7f800000u;
  Lanes special = {0, 0, 0, 0};
  index_t i = 0;
  for (; i + 4 <= n; i += 4) {
    Lanes bits;
    std::memcpy(&bits, x + i, sizeof bits);
    special |= (bits & exponent) == exponent;  // all ones in a lane that is NaN or ±Inf
  }
  std::uint32_t any = special[0] | special[1] | special[2] | special[3];
  for (; i < n; ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, x + i, sizeof bits);
    any |= static_cast<std::uint32_t>((bits & exponent) == exponent);
  }
  return any == 0;
}

/// max|x_i| over the n values at x; NaN when one of them is NaN or ±Inf.
inline float finite_absmax(const float* x, index_t n) noexcept {
  float m = 0.0f;
  bool finite = true;
  for (index_t i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    m = std::max(m, std::abs(x[i]));
  }
  return finite ? m : std::numeric_limits<float>::quiet_NaN();
}

/// q_i = token_code(x_i, scale, bits) for i < n.
inline void token_codes(const float* x, index_t n, float scale, int bits, std::int8_t* q) noexcept {
  for (index_t i = 0; i < n; ++i) q[i] = token_code(x[i], scale, bits);
}

/// max|x_i| over n values, NaN when one is not finite (finite_absmax or a vector twin).
using AbsmaxFn = float (*)(const float* x, index_t n) noexcept;
/// q[0, n) = token_code(x_i, scale, bits) (token_codes or a vector twin).
using TokenCodesFn = void (*)(const float* x, index_t n, float scale, int bits,
                              std::int8_t* q) noexcept;

/// Codes one token row of n values at `bits` (8 or 4) and `clip` into q[0, n) and returns its
/// scale (ALGORITHMS.md §2.6), with the max and the codes from Absmax and Codes: every kernel
/// path brings its loops, this brings the rule, so all of them give the same codes and scale.
/// Returns NaN, writing nothing, when the row holds a NaN or an infinity (the caller throws).
/// |x| ≤ clip·max|x| maps to |x/s| ≤ qmax·(1 + 2^-24): within half a step, never clamped; an
/// all-zero row gets s = 1 and exact zeros.
template <AbsmaxFn Absmax, TokenCodesFn Codes>
float quantize_token_with(const float* x, index_t n, int bits, float clip,
                          std::int8_t* q) noexcept {
  const float absmax = Absmax(x, n);
  if (std::isnan(absmax)) return absmax;
  const float scale = token_scale(absmax, bits, clip);
  Codes(x, n, scale, bits, q);
  return scale;
}

/// quantize_token_with in scalar loops: the definition quant's quantize_per_token and the
/// reference kernel path share.
inline float quantize_token_row(const float* x, index_t n, int bits, float clip,
                                std::int8_t* q) noexcept {
  return quantize_token_with<&finite_absmax, &token_codes>(x, n, bits, clip, q);
}

/// The next storable scale above `s`, one step up in the storage type.
inline float next_scale_up(float s, ScaleType t, std::string_view entity) {
  const float up =
      t == ScaleType::f32 ? std::nextafter(s, std::numeric_limits<float>::infinity()) : next_half_up(s);
  QLR_CHECK(std::isfinite(up) && (t == ScaleType::f32 || up <= 65504.0f), invalid_argument,
            "{}: scale = {}; expected a value that fits the {} scale type", entity, s,
            t == ScaleType::f16 ? "f16" : "f32");
  return up;
}

}  // namespace qlr
