// SPDX-License-Identifier: Apache-2.0
// Per-token activation quantization (ALGORITHMS.md §2.6): per-row error bound, code range,
// clipping, zero rows and the errors on bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>

#include "qlr/quant/activation.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::quant::quantize_per_token;

TEST_CASE("quantize_per_token: each row within half its own step", "[quant][activation]") {
  const int bits = GENERATE(8, 4);
  const index_t k = GENERATE(1, 17, 4096);
  CAPTURE(bits, k);
  std::mt19937 rng(static_cast<std::uint32_t>(bits * 1000 + k));
  Matrix x = qlr::test::gaussian(rng, 9, k);
  x.row(3) *= 50.0f;  // an outlier token: its scale must not touch the others
  x.row(5).setZero();
  const auto a = quantize_per_token(x, {.bits = bits});
  const int max_code = bits == 8 ? 127 : 7;
  const Matrix x_hat = qlr::quant::dequantize(a);
  for (index_t t = 0; t < x.rows(); ++t) {
    const float s = a.scales[static_cast<std::size_t>(t)];
    const double absmax = x.row(t).cwiseAbs().maxCoeff();
    if (absmax == 0.0) {
      CHECK(s == 1.0f);
    } else {
      // s = absmax/qmax rounded to nearest in f32: within 2^-24 relative.
      CHECK(std::abs(s - absmax / max_code) <= absmax / max_code * 0x1p-24);
    }
    for (index_t i = 0; i < k; ++i) {
      const int code = a.code(t, i);
      REQUIRE(code >= -max_code);  // with clip = 1 the extra negative code is never needed
      REQUIRE(code <= max_code);
      REQUIRE(std::abs(static_cast<double>(x(t, i)) - static_cast<double>(s) * code) <=
              s / 2.0 * (1 + 1e-12));
      REQUIRE(x_hat(t, i) == s * static_cast<float>(code));
    }
  }
}

TEST_CASE("quantize_per_token: clip < 1 saturates the largest values", "[quant][activation]") {
  Matrix x(1, 4);
  x << -10.0f, -1.0f, 1.0f, 10.0f;
  const auto a = quantize_per_token(x, {.bits = 4, .clip = 0.5f});
  CHECK(a.scales[0] == static_cast<float>(5.0 / 7.0));
  CHECK(a.code(0, 0) == -8);  // −14 saturates at the grid's low end
  CHECK(a.code(0, 3) == 7);
  CHECK(a.code(0, 1) == -1);
}

TEST_CASE("quantize_per_token: bad input is a qlr::Error naming the argument",
          "[quant][activation]") {
  Matrix x = Matrix::Ones(3, 5);
  CHECK_THROWS_WITH(quantize_per_token(x, {.bits = 6}), Catch::Contains("bits = 6"));
  CHECK_THROWS_WITH(quantize_per_token(x, {.clip = 0.0f}), Catch::Contains("clip = 0"));
  CHECK_THROWS_WITH(quantize_per_token(Matrix(0, 5)), Catch::Contains("x is 0x5"));
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    x(2, 4) = bad;
    CHECK_THROWS_WITH(quantize_per_token(x), Catch::Contains("row 2 of x holds a NaN or an infinity"));
  }
}
