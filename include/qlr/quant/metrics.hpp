// SPDX-License-Identifier: Apache-2.0
// Weight-error measures of ALGORITHMS.md §10, accumulated in double so that Ŵ = W gives
// exactly 0 and Ŵ = 0 exactly 1.
#pragma once

#include <cmath>
#include <limits>
#include <utility>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"

namespace qlr::quant {

namespace detail {
/// Σ(ref − approx)² and Σ ref² in double, after a shape check.
inline std::pair<double, double> error_energy(ConstMatrixRef ref, ConstMatrixRef approx,
                                              const char* entity) {
  QLR_CHECK(ref.rows() == approx.rows() && ref.cols() == approx.cols(), shape_mismatch,
            "{}: approx is {}x{}; expected the shape of ref, {}x{}", entity, approx.rows(),
            approx.cols(), ref.rows(), ref.cols());
  double err = 0.0;
  double energy = 0.0;
  for (index_t i = 0; i < ref.rows(); ++i) {
    for (index_t j = 0; j < ref.cols(); ++j) {
      const double r = ref(i, j);
      const double d = r - static_cast<double>(approx(i, j));
      err += d * d;
      energy += r * r;
    }
  }
  return {err, energy};
}
}  // namespace detail

/// ‖ref − approx‖_F / ‖ref‖_F (infinite when ref = 0 ≠ approx, 0 when both are 0).
inline double relative_frobenius_error(ConstMatrixRef ref, ConstMatrixRef approx) {
  const auto [err, energy] = detail::error_energy(ref, approx, "quant::relative_frobenius_error");
  if (energy == 0.0) return err == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(err / energy);
}

/// Signal-to-quantization-noise ratio 10·log10(‖ref‖²/‖ref − approx‖²) in dB.
inline double sqnr_db(ConstMatrixRef ref, ConstMatrixRef approx) {
  const auto [err, energy] = detail::error_energy(ref, approx, "quant::sqnr_db");
  return 10.0 * std::log10(energy / err);
}

/// max |ref − approx| over all elements.
inline double max_abs_error(ConstMatrixRef ref, ConstMatrixRef approx) {
  QLR_CHECK(ref.rows() == approx.rows() && ref.cols() == approx.cols(), shape_mismatch,
            "quant::max_abs_error: approx is {}x{}; expected the shape of ref, {}x{}",
            approx.rows(), approx.cols(), ref.rows(), ref.cols());
  return (ref - approx).cwiseAbs().maxCoeff();
}

}  // namespace qlr::quant
