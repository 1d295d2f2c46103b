// SPDX-License-Identifier: Apache-2.0
// Initializations that start an adapter from its base's quantization error (ALGORITHMS.md
// §8.2), so that training begins where the full-precision layer was instead of at the
// quantized one: LoftQ (the best rank-r factors of W − Q) and EoRA-init (the same in the
// eigenspace of calibration inputs, §7, reusing compensate::eora). Either alternates T
// times, as PEFT's LoftQ does: Q_t = quant(W − s·B_{t−1}·A_{t−1}) (B_0·A_0 = 0), then
// s·B_t·A_t = the rank-r part of W − Q_t, so the factors always fit the base returned.
// PiSSA takes W's own principal part into the adapter and quantizes the rest.
#pragma once

#include <cmath>
#include <optional>
#include <utility>

#include "qlr/compensate/eora.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/quant/concept.hpp"
#include "qlr/quant/dequantize.hpp"

namespace qlr::train {

/// A base quantized from W and the adapter factors that start from its error:
/// W ≈ dequant(base) + scale·B·A.
template <QuantFormatType F>
struct ErrorInit {
  QuantizedMatrix<F> base;  ///< Q_T, in the quantizer's format
  Matrix a;                 ///< A (r×K), for TrainableLinear::set_values
  Matrix b;                 ///< B (N×r)
};

/// Adapter factors for W ≈ Ŵ + scale·B·A.
struct ErrorFactors {
  Matrix a;  ///< A (r×K)
  Matrix b;  ///< B (N×r)
};

/// error_init's alternation for a base of any kind: `requantize(target)` builds the base
/// from target = W − s·B·A (W itself first) and returns its dequantized weight Ŵ (N×K);
/// the factors are then the rank-r fit of W − Ŵ (in `space`, EoRA, when given). Throws as
/// error_init does.
template <class Requantize>
ErrorFactors fit_error(ConstMatrixRef w, Requantize&& requantize, index_t rank, float scale,
                       int iterations = 1, const compensate::Eigenspace* space = nullptr) {
  constexpr const char* entity = "train::error_init";
  QLR_CHECK(std::isfinite(scale) && scale > 0.0f, invalid_argument,
            "{}: scale = {}; expected a finite value > 0 (the adapter's α/r)", entity, scale);
  QLR_CHECK(iterations >= 1, invalid_argument, "{}: iterations = {}; expected >= 1", entity,
            iterations);
  QLR_CHECK(space == nullptr || space->in_features() == w.cols(), shape_mismatch,
            "{}: eigenspace of width {}; expected K = {}", entity,
            space != nullptr ? space->in_features() : 0, w.cols());
  // compensate checks the rank, the shapes and finiteness.
  Matrix target = w;  // W − s·B·A of the previous iteration
  ErrorFactors out;
  const double root = std::sqrt(static_cast<double>(scale));
  for (int t = 0; t < iterations; ++t) {
    const Matrix w_hat = requantize(target);
    const compensate::Compensation c = space != nullptr
                                           ? compensate::eora(w, w_hat, *space, rank)
                                           : compensate::svd_compensation(w, w_hat, rank);
    // s·B·A = b·a: each factor takes 1/√s.
    out.a = (c.a / root).cast<float>();
    out.b = (c.b / root).cast<float>();
    target = w - scale * (out.b * out.a);
  }
  return out;
}

/// LoftQ (`space` null) or EoRA-init (`space` the calibration inputs' eigenspace) of `w`
/// (N×K) with `quantizer`, rank r and the adapter's scale s (α/r or α/√r), alternating
/// `iterations` ≥ 1 times. Throws for a rank outside [1, min(N, K)], a scale that is not
/// positive and finite, iterations < 1, or a space of another width.
template <quant::Quantizer Q>
ErrorInit<typename Q::format> error_init(ConstMatrixRef w, const Q& quantizer, index_t rank,
                                         float scale, int iterations = 1,
                                         const compensate::Eigenspace* space = nullptr) {
  std::optional<QuantizedMatrix<typename Q::format>> base;
  ErrorFactors f = fit_error(
      w,
      [&](const Matrix& target) {
        base.emplace(quantizer.quantize(target));
        return quant::dequantize(*base);
      },
      rank, scale, iterations, space);
  return {std::move(*base), std::move(f.a), std::move(f.b)};
}

/// PiSSA (§8.2): the adapter takes W's principal rank-r part, s·B·A = U_r·Σ_r·V_rᵀ, and the
/// base is the residual W − s·B·A quantized with `quantizer` (QPiSSA). Unlike LoRA, B ≠ 0
/// at step 0; the layer starts at W up to the residual's quantization error. Throws as
/// error_init does.
template <quant::Quantizer Q>
ErrorInit<typename Q::format> pissa_init(ConstMatrixRef w, const Q& quantizer, index_t rank,
                                         float scale) {
  QLR_CHECK(std::isfinite(scale) && scale > 0.0f, invalid_argument,
            "train::pissa_init: scale = {}; expected a finite value > 0 (the adapter's α/r)",
            scale);
  const Matrix zero = Matrix::Zero(w.rows(), w.cols());
  const compensate::Compensation c = compensate::svd_compensation(w, zero, rank);
  const double root = std::sqrt(static_cast<double>(scale));
  Matrix a = (c.a / root).cast<float>(), b = (c.b / root).cast<float>();
  const Matrix residual = w - scale * (b * a);
  return {quantizer.quantize(residual), std::move(a), std::move(b)};
}

}  // namespace qlr::train
