// SPDX-License-Identifier: Apache-2.0
// Straight-through fake quantization of weights (ALGORITHMS.md §8.3): the forward uses Q(W),
// dequantized; the backward passes ∂L/∂Q(W) to W unchanged where W lay inside its group's
// range and 0 where the quantizer clipped it. Scales and zeros are statistics of W, treated
// as constants. Activations are the layers' TokenActivations policy, whose backward
// (LinearLayer::backward_input) is the same straight-through rule per token.
#pragma once

#include <cmath>
#include <utility>

#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/quant/concept.hpp"
#include "qlr/quant/dequantize.hpp"

namespace qlr::train {

/// A fake-quantized weight and where its gradient passes.
struct FakeQuantized {
  Matrix value;  ///< Q(W) dequantized (N×K)
  Matrix pass;   ///< 1 where W was inside its group's range, 0 where clipped
};

/// Weights fake-quantized group-wise by an integer quantizer Q (RTN, or a clip search that
/// shrinks the range), with the straight-through estimator.
template <quant::Quantizer Q>
requires(Q::format::encoding != Encoding::codebook) class FakeQuantWeights {
 public:
  using format = typename Q::format;  ///< the integer format

  /// Fake-quantizes with `quantizer`.
  explicit FakeQuantWeights(Q quantizer = Q()) : quantizer_(std::move(quantizer)) {}

  /// Q(W) and the pass mask: w passes when its code before clamping, w/s + z, rounds into
  /// [0, 2^b − 1]. Throws as the quantizer does (NaN/Inf, an empty W).
  [[nodiscard]] FakeQuantized forward(ConstMatrixRef w) const {
    const QuantizedMatrix<format> q = quantizer_.quantize(w);
    FakeQuantized out{quant::dequantize(q), Matrix(w.rows(), w.cols())};
    const index_t g = q.groups() == 1 ? w.cols() : q.group_size();
    const double top = (1 << format::bits) - 1;
    for (index_t o = 0; o < w.rows(); ++o) {
      for (index_t i = 0; i < w.cols(); ++i) {
        const index_t l = i / g;
        const double s = q.scale(o, l);
        const double z = format::encoding == Encoding::int_asym
                             ? q.zero(o, l)
                             : static_cast<double>(1 << (format::bits - 1));
        const double u = s != 0.0 ? static_cast<double>(w(o, i)) / s + z : z;
        out.pass(o, i) = u >= -0.5 && u <= top + 0.5 ? 1.0f : 0.0f;
      }
    }
    return out;
  }

  /// ∂L/∂W from ∂L/∂Q(W): passed where `fq.pass` is 1. Throws for mismatched shapes.
  [[nodiscard]] static Matrix backward(const FakeQuantized& fq, ConstMatrixRef grad) {
    QLR_CHECK(grad.rows() == fq.pass.rows() && grad.cols() == fq.pass.cols(), shape_mismatch,
              "train::FakeQuantWeights::backward: grad is {}x{}; expected {}x{} (the weight)",
              grad.rows(), grad.cols(), fq.pass.rows(), fq.pass.cols());
    return grad.cwiseProduct(fq.pass);
  }

 private:
  Q quantizer_;
};

}  // namespace qlr::train
