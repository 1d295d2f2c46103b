// SPDX-License-Identifier: Apache-2.0
// Error metrics (ALGORITHMS.md §10, T10.2): exactly 0 and 1 at the ends, known values between.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "qlr/quant/metrics.hpp"

using qlr::Matrix;

TEST_CASE("relative_frobenius_error: 0 for Ŵ = W, 1 for Ŵ = 0 (T10.2)", "[quant][metrics]") {
  const Matrix w = Matrix::Random(17, 33);
  CHECK(qlr::quant::relative_frobenius_error(w, w) == 0.0);
  CHECK(qlr::quant::relative_frobenius_error(w, Matrix::Zero(17, 33)) == 1.0);
  CHECK(qlr::quant::relative_frobenius_error(w, 0.5f * w) == Approx(0.5).epsilon(1e-12));
  CHECK(qlr::quant::sqnr_db(w, 0.9f * w) == Approx(20.0).epsilon(1e-6));  // noise 0.1·W
  CHECK(qlr::quant::max_abs_error(Matrix::Ones(2, 2), Matrix::Zero(2, 2)) == 1.0);
}

TEST_CASE("metrics: perfect and hopeless approximations", "[quant][metrics]") {
  const Matrix w = Matrix::Random(3, 4);
  CHECK(qlr::quant::sqnr_db(w, w) == std::numeric_limits<double>::infinity());
  CHECK(qlr::quant::sqnr_db(Matrix::Zero(3, 4), w) == -std::numeric_limits<double>::infinity());
  CHECK(qlr::quant::relative_frobenius_error(Matrix::Zero(3, 4), Matrix::Zero(3, 4)) == 0.0);
}

TEST_CASE("relative_frobenius_error: shapes must agree", "[quant][metrics]") {
  CHECK_THROWS_WITH(qlr::quant::max_abs_error(Matrix(0, 3), Matrix(0, 3)),
                    Catch::Contains("ref is 0x3; expected a non-empty matrix"));
  Matrix nan = Matrix::Ones(2, 2);
  nan(1, 0) = std::nanf("");
  CHECK_THROWS_WITH(qlr::quant::sqnr_db(Matrix::Ones(2, 2), nan),
                    Catch::Contains("approx: element (1, 0) = nan"));
  CHECK_THROWS_WITH(qlr::quant::relative_frobenius_error(Matrix::Ones(2, 3), Matrix::Ones(3, 2)),
                    Catch::Contains("approx is 3x2; expected the shape of ref, 2x3"));
  CHECK_THROWS_WITH(qlr::quant::max_abs_error(Matrix::Ones(2, 3), Matrix::Ones(2, 2)),
                    Catch::Contains("approx is 2x2"));
}
