// SPDX-License-Identifier: Apache-2.0
// IEEE-754 binary16 conversions in portable C++ (no F16C), for scales stored as f16 and for
// reading and writing f16 tensors; round to nearest even as the hardware converters do.
// bfloat16 (the upper half of a float) too, for the bf16 tensors of PEFT adapters.
#pragma once

#include <bit>
#include <cstdint>

namespace qlr {

/// binary16 bit pattern of `f`, rounded to nearest even; overflow gives ±inf, NaN stays NaN.
constexpr std::uint16_t float_to_half_bits(float f) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  std::uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude >= 0x7f800000u)  // inf or NaN: keep NaN quiet and non-zero
    return static_cast<std::uint16_t>(sign | 0x7c00u | (magnitude > 0x7f800000u ? 0x200u : 0u));
  if (magnitude >= 0x47800000u)  // |f| ≥ 2^16: beyond every finite half even after rounding
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (magnitude < 0x38800000u) {  // |f| < 2^-14: zero or subnormal half, step 2^-24
    // Adding 0.5f puts the value's 2^-24 multiples in the float's low mantissa bits, and
    // the float addition itself rounds to nearest even.
    const float shifted = std::bit_cast<float>(magnitude) + 0.5f;
    return static_cast<std::uint16_t>(sign | (std::bit_cast<std::uint32_t>(shifted) - 0x3f000000u));
  }
  // Normal: rebias the exponent (127 → 15) and drop 13 mantissa bits, rounding to even;
  // a carry out of the mantissa correctly bumps the exponent (up to infinity).
  const std::uint32_t odd = (magnitude >> 13) & 1u;
  magnitude += 0xc8000000u + 0x0fffu + odd;
  return static_cast<std::uint16_t>(sign | (magnitude >> 13));
}

/// The float value of a binary16 bit pattern (exact: every half is a float).
constexpr float half_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1fu;
  const std::uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa · 2^-24
    const float value = static_cast<float>(mantissa) * 0x1p-24f;
    return sign ? -value : value;
  }
  if (exponent == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

/// `f` rounded to the nearest binary16 value, returned as a float.
constexpr float round_to_half(float f) noexcept { return half_bits_to_float(float_to_half_bits(f)); }

/// The smallest binary16 value above the finite half value `f` (ordering by bit pattern).
constexpr float next_half_up(float f) noexcept {
  const std::uint16_t h = float_to_half_bits(f);
  if (h == 0x8000u) return half_bits_to_float(0x0001u);  // -0 → smallest positive subnormal
  return half_bits_to_float(static_cast<std::uint16_t>((h & 0x8000u) ? h - 1u : h + 1u));
}

/// bfloat16 bit pattern of `f` (its upper 16 bits), rounded to nearest even; overflow gives
/// ±inf, NaN stays a quiet NaN (plain truncation of a NaN could leave a zero mantissa: inf).
constexpr std::uint16_t float_to_bf16_bits(float f) noexcept {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40u);
  // Adding 0x7fff plus the lowest kept bit rounds the dropped half to even; a carry into the
  // exponent is the correct rounding up, up to infinity.
  const std::uint32_t odd = (bits >> 16) & 1u;
  return static_cast<std::uint16_t>((bits + 0x7fffu + odd) >> 16);
}

/// The float value of a bfloat16 bit pattern (exact: every bfloat16 is a float).
constexpr float bf16_bits_to_float(std::uint16_t b) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

}  // namespace qlr
