// SPDX-License-Identifier: Apache-2.0
// Rounding and scale-storage rules every quantizer shares (ALGORITHMS.md §1.2–1.3, §2.3):
// ties to even, and scales rounded to the type they are stored in before codes are computed.
#pragma once

#include <cfenv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>

#include "qlr/core/error.hpp"
#include "qlr/core/half.hpp"

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

/// The scale s* stored for an ideal scale s > 0: s rounded to nearest even in the storage
/// type (ALGORITHMS.md §1.2), lifted to the type's smallest normal when it falls below it
/// (§2.3). Throws when s is not finite or does not fit the type.
inline float store_scale(double s, ScaleType t, std::string_view entity) {
  const double max_value = t == ScaleType::f16 ? 65504.0 : std::numeric_limits<float>::max();
  const double min_normal = t == ScaleType::f16 ? 0x1p-14 : std::numeric_limits<float>::min();
  QLR_CHECK(std::isfinite(s) && s <= max_value, invalid_argument,
            "{}: scale = {}; expected a finite value that fits the {} scale type", entity, s,
            t == ScaleType::f16 ? "f16" : "f32");
  if (s <= min_normal) return static_cast<float>(min_normal);
  const double stored = round_to_storage(s, t);
  QLR_CHECK(stored <= max_value, invalid_argument,  // f16 rounding may carry past 65504
            "{}: scale = {}; expected a value that fits the f16 scale type", entity, s);
  return static_cast<float>(stored);
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
