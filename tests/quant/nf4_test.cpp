// SPDX-License-Identifier: Apache-2.0
// NF4 against ALGORITHMS.md §2.5 and T2.8: the published levels, exact codes for scaled
// levels, ties to the lower code, nearest-level coding, ragged and all-zero blocks.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/nf4.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::quant::Nf4;

namespace {
std::vector<std::uint8_t> codes_of(const qlr::QuantizedMatrix<Nf4::format>& q, index_t o) {
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(q.cols()));
  qlr::unpack_codes(4, q.row_codes(o), codes);
  return codes;
}
}  // namespace

TEST_CASE("Nf4: levels are the published NormalFloat-4 table", "[quant][nf4]") {
  // QLoRA's table as printed in ALGORITHMS.md §2.5 (from bitsandbytes).
  const double published[16] = {-1.0,
                                -0.6961928009986877,
                                -0.5250730514526367,
                                -0.39491748809814453,
                                -0.28444138169288635,
                                -0.18477343022823334,
                                -0.09105003625154495,
                                0.0,
                                0.07958029955625534,
                                0.16093020141124725,
                                0.24611230194568634,
                                0.33791524171829224,
                                0.44070982933044434,
                                0.5626170039176941,
                                0.7229568362236023,
                                1.0};
  for (std::size_t k = 0; k < 16; ++k) {
    CAPTURE(k);
    CHECK(Nf4::levels[k] == static_cast<float>(published[k]));
  }
  CHECK(Nf4::midpoints[7] == (0.0f + 0.07958029955625534f) / 2.0f);
}

TEST_CASE("Nf4: a·v_k codes to k and reconstructs exactly for a = 2^j (T2.8)", "[quant][nf4]") {
  const int j = GENERATE(-3, 0, 5);
  const float a = std::ldexp(1.0f, j);
  Matrix w(1, 16);
  for (index_t k = 0; k < 16; ++k) w(0, k) = a * Nf4::levels[static_cast<std::size_t>(k)];
  const auto q = Nf4().quantize(w);
  CHECK(q.scale(0, 0) == a);
  std::vector<std::uint8_t> expected(16);
  for (std::size_t k = 0; k < 16; ++k) expected[k] = static_cast<std::uint8_t>(k);
  CHECK(codes_of(q, 0) == expected);
  CHECK(qlr::quant::dequantize(q) == w);
}

TEST_CASE("Nf4: a value exactly on a midpoint takes the lower code (T2.8)", "[quant][nf4]") {
  Matrix w(1, 3);
  w << 1.0f, Nf4::midpoints[7], std::nextafter(Nf4::midpoints[7], 1.0f);
  const auto codes = codes_of(Nf4().quantize(w), 0);
  CHECK(codes[1] == 7);
  CHECK(codes[2] == 8);
}

TEST_CASE("Nf4: every code is the nearest level; ragged and all-zero blocks", "[quant][nf4]") {
  std::mt19937 rng(4);
  Matrix w = qlr::test::heavy_tailed(rng, 7, 100);  // blocks of 64 and 36
  w.block(2, 64, 1, 36).setZero();
  const auto q = Nf4().quantize(w);
  REQUIRE(q.groups() == 2);
  CHECK(q.bits_per_parameter() == 4.0 + 2 * 32.0 / 100);
  const Matrix w_hat = qlr::quant::dequantize(q);
  for (index_t o = 0; o < w.rows(); ++o) {
    const auto codes = codes_of(q, o);
    for (index_t i = 0; i < w.cols(); ++i) {
      const float s = q.scale(o, i / 64);
      const float x = w(o, i) / s;
      const float chosen = Nf4::levels[codes[static_cast<std::size_t>(i)]];
      for (const float level : Nf4::levels) REQUIRE(std::abs(x - chosen) <= std::abs(x - level));
      REQUIRE(w_hat(o, i) == chosen * s);
    }
  }
  CHECK(q.scale(2, 1) == 1.0f);
  CHECK(w_hat.block(2, 64, 1, 36).isZero(0.0f));
  const auto zero_codes = codes_of(q, 2);
  CHECK(std::all_of(zero_codes.begin() + 64, zero_codes.end(), [](auto c) { return c == 7; }));
}

TEST_CASE("Nf4: 4.5 bits per weight with f32 absmax in blocks of 64", "[quant][nf4]") {
  const Matrix w = Matrix::Random(3, 256);
  CHECK(Nf4().quantize(w).bits_per_parameter() == 4.5);
  CHECK(Nf4({.block_size = 64, .scale_type = qlr::ScaleType::f16}).quantize(w).bits_per_parameter() ==
        4.25);
}

TEST_CASE("Nf4: bad input is a qlr::Error naming the argument", "[quant][nf4]") {
  Matrix w = Matrix::Ones(2, 70);
  w(1, 66) = std::nanf("");
  CHECK_THROWS_WITH(Nf4().quantize(w), Catch::Contains("element (1, 66) = nan"));
  w(1, 66) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(Nf4().quantize(w), Catch::Contains("element (1, 66) = inf"));
  w(1, 66) = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(Nf4().quantize(w), Catch::Contains("element (1, 66) = -inf"));
  CHECK_THROWS_WITH(Nf4().quantize(Matrix(3, 0)), Catch::Contains("w is 3x0"));
  CHECK_THROWS_WITH(Nf4({.block_size = -1}).quantize(Matrix::Ones(2, 2)),
                    Catch::Contains("group_size = -1"));
}
