// SPDX-License-Identifier: Apache-2.0
// Calibration data for the compensate tests: inputs with correlated features, as a layer's
// inputs are, and their covariance.
#pragma once

#include <random>

#include "qlr/compensate/calibration.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr_test_support.hpp"

namespace qlr::test {

/// X (M×K) = Z·T with Gaussian Z and a fixed random mixing T whose column scales decay:
/// strongly correlated features of unequal energy.
inline Matrix correlated_inputs(std::mt19937& rng, index_t m, index_t k) {
  Matrix mix = gaussian(rng, k, k);
  for (index_t j = 0; j < k; ++j) mix.row(j) *= 1.0f / (1.0f + 0.2f * static_cast<float>(j));
  return gaussian(rng, m, k) * mix;
}

/// The covariance of the rows of x.
inline compensate::Covariance covariance_of(const Matrix& x) {
  compensate::Covariance cov(x.cols());
  cov.add(x);
  return cov;
}

/// ‖E·Xᵀ‖_F² computed from X itself, the oracle of Covariance::output_error.
inline double output_error_direct(const MatrixD& e, const Matrix& x) {
  return (e * x.cast<double>().transpose()).squaredNorm();
}

}  // namespace qlr::test
