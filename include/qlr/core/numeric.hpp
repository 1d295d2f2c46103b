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

/// The scale s* actually stored for an ideal scale s > 0: the smallest storable value ≥ s,
/// so that s*·qmax still covers the fitted range and every element inside it lands within
/// half a step (the RTN bound holds exactly, not up to the scale's own rounding). Values
/// below the smallest normal of the type are lifted to it (ALGORITHMS.md §2.3). Throws when
/// s does not fit the type.
inline float storable_scale_at_least(double s, ScaleType t, std::string_view entity) {
  const double max_value = t == ScaleType::f16 ? 65504.0 : std::numeric_limits<float>::max();
  const double min_normal = t == ScaleType::f16 ? 0x1p-14 : std::numeric_limits<float>::min();
  QLR_CHECK(std::isfinite(s) && s <= max_value, invalid_argument,
            "{}: scale = {}; expected a finite value that fits the {} scale type", entity, s,
            t == ScaleType::f16 ? "f16" : "f32");
  if (s <= min_normal) return static_cast<float>(min_normal);
  double stored = round_to_storage(s, t);
  if (stored < s) {
    // One step up in the storage type: for f32 that is nextafter; for f16 the step is
    // 2^(e-10) where e is the exponent of the stored value.
    const float f = static_cast<float>(stored);
    stored = t == ScaleType::f32
                 ? static_cast<double>(std::nextafter(f, std::numeric_limits<float>::infinity()))
                 : static_cast<double>(next_half_up(f));
    QLR_CHECK(stored <= max_value, invalid_argument,
              "{}: scale = {}; expected a value that fits the f16 scale type", entity, s);
  }
  return static_cast<float>(stored);
}

}  // namespace qlr
