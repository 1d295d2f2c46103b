// SPDX-License-Identifier: Apache-2.0
// binary16 conversions: every half round-trips, ties go to even, overflow and subnormals
// follow IEEE-754.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>

#include "qlr/core/half.hpp"

TEST_CASE("half: every finite half value round-trips through float", "[core][half]") {
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float f = qlr::half_bits_to_float(bits);
    if (std::isnan(f)) {
      CHECK((bits & 0x7c00u) == 0x7c00u);
      CHECK(std::isnan(qlr::half_bits_to_float(qlr::float_to_half_bits(f))));
      continue;
    }
    REQUIRE(qlr::float_to_half_bits(f) == bits);
  }
}

TEST_CASE("half: values between two halves round to the nearest, ties to even", "[core][half]") {
  // Positive finite halves h and h + 1; their midpoint is exact in float.
  for (std::uint32_t h = 0; h < 0x7bffu; ++h) {
    const float lo = qlr::half_bits_to_float(static_cast<std::uint16_t>(h));
    const float hi = qlr::half_bits_to_float(static_cast<std::uint16_t>(h + 1));
    const float mid = (lo + hi) / 2.0f;
    const auto even = static_cast<std::uint16_t>((h % 2 == 0) ? h : h + 1);
    REQUIRE(qlr::float_to_half_bits(mid) == even);
    REQUIRE(qlr::float_to_half_bits(std::nextafter(mid, 0.0f)) == h);
    REQUIRE(qlr::float_to_half_bits(std::nextafter(mid, 1e9f)) == h + 1);
    REQUIRE(qlr::float_to_half_bits(-mid) == (even | 0x8000u));
  }
}

TEST_CASE("half: overflow, infinities and the smallest values", "[core][half]") {
  constexpr float inf = std::numeric_limits<float>::infinity();
  CHECK(qlr::round_to_half(65504.0f) == 65504.0f);
  CHECK(qlr::round_to_half(65519.0f) == 65504.0f);
  CHECK(qlr::round_to_half(65520.0f) == inf);  // the tie above the largest half goes to inf
  CHECK(qlr::round_to_half(1e10f) == inf);
  CHECK(qlr::round_to_half(-inf) == -inf);
  CHECK(qlr::round_to_half(0x1p-24f) == 0x1p-24f);
  CHECK(qlr::round_to_half(0x1p-25f) == 0.0f);         // tie between 0 and 2^-24: even is 0
  CHECK(qlr::round_to_half(0x1.8p-25f) == 0x1p-24f);   // above the tie
  CHECK(qlr::float_to_half_bits(-0.0f) == 0x8000u);
  CHECK(qlr::next_half_up(1.0f) == 1.0f + 0x1p-10f);
  CHECK(qlr::next_half_up(-1.0f) == -1.0f + 0x1p-11f);
  CHECK(qlr::next_half_up(0.0f) == 0x1p-24f);
}
