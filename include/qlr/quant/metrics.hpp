// SPDX-License-Identifier: Apache-2.0
// Weight-error measures of ALGORITHMS.md §10, accumulated in double so that Ŵ = W gives
// exactly 0 and Ŵ = 0 exactly 1.
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <utility>

#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"

namespace qlr::quant {

namespace detail {
/// Throws unless ref and approx are non-empty, of one shape, and finite.
inline void check_pair(ConstMatrixRef ref, ConstMatrixRef approx, const char* entity) {
  QLR_CHECK(ref.size() > 0, shape_mismatch, "{}: ref is {}x{}; expected a non-empty matrix",
            entity, ref.rows(), ref.cols());
  QLR_CHECK(ref.rows() == approx.rows() && ref.cols() == approx.cols(), shape_mismatch,
            "{}: approx is {}x{}; expected the shape of ref, {}x{}", entity, approx.rows(),
            approx.cols(), ref.rows(), ref.cols());
  check_finite(ref, std::string(entity) + ": ref");
  check_finite(approx, std::string(entity) + ": approx");
}

/// Σ(ref − approx)² and Σ ref² in double, after check_pair.
inline std::pair<double, double> error_energy(ConstMatrixRef ref, ConstMatrixRef approx,
                                              const char* entity) {
  check_pair(ref, approx, entity);
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

/// Signal-to-quantization-noise ratio 10·log10(‖ref‖²/‖ref − approx‖²) in dB: +inf when
/// approx = ref, −inf when ref = 0 ≠ approx.
inline double sqnr_db(ConstMatrixRef ref, ConstMatrixRef approx) {
  const auto [err, energy] = detail::error_energy(ref, approx, "quant::sqnr_db");
  if (err == 0.0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(energy / err);
}

/// max |ref − approx| over all elements.
inline double max_abs_error(ConstMatrixRef ref, ConstMatrixRef approx) {
  detail::check_pair(ref, approx, "quant::max_abs_error");
  return (ref - approx).cwiseAbs().maxCoeff();
}

}  // namespace qlr::quant
