// SPDX-License-Identifier: Apache-2.0
// Initializations from the quantization error (LoftQ, EoRA-init; ALGORITHMS.md §8.2) against
// §7's objective on calibration inputs, and the straight-through estimators of §8.3: weights
// (T8.6) and per-token activations through a layer's backward_input.
#include "qlr/train/init.hpp"

#include <cmath>
#include <random>

#include <catch2/catch.hpp>

#include "qlr/compensate/calibration.hpp"
#include "qlr/kernels/input_grad.hpp"
#include "qlr/layers/any_linear.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/train/fake_quant.hpp"
#include "qlr/train/linear.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
namespace train = qlr::train;

namespace {

/// Calibration-like inputs: Gaussian tokens whose channels differ in scale, a few 20× larger
/// (the outlier channels of LLM activations), so that the eigenspace differs from the plain one.
Matrix calibration_inputs(std::mt19937& rng, index_t m, index_t k) {
  Matrix x = qlr::test::gaussian(rng, m, k);
  for (index_t i = 0; i < k; ++i)
    x.col(i) *= (i % 17 == 3 ? 20.0f : 1.0f + 0.05f * static_cast<float>(i % 7));
  return x;
}

/// ‖X·(W − Ŵ − s·B·A)ᵀ‖_F in double.
double output_error(const Matrix& x, const Matrix& w, const Matrix& w_hat, double s,
                    const Matrix& b, const Matrix& a) {
  const qlr::MatrixD delta =
      w.cast<double>() - w_hat.cast<double>() - s * (b.cast<double>() * a.cast<double>());
  return (x.cast<double>() * delta.transpose()).norm();
}

}  // namespace

TEST_CASE("error_init: LoftQ beats RTN on calibration inputs, EoRA-init beats LoftQ",
          "[train][init]") {
  std::mt19937 rng(1);
  const index_t n = 64, k = 128, r = 8;
  const Matrix w = qlr::test::gaussian(rng, n, k, 0.1f);
  const Matrix x = calibration_inputs(rng, 512, k);
  const qlr::quant::IntAsym<3> quantizer({.group_size = 32});
  const Matrix rtn = qlr::quant::dequantize(quantizer.quantize(w));
  const float s = 2.0f;  // α = 16, r = 8
  const double rtn_error = output_error(x, w, rtn, 0.0, Matrix::Zero(n, r), Matrix::Zero(r, k));

  const auto error_of = [&](const auto& init) {
    return output_error(x, w, qlr::quant::dequantize(init.base), s, init.b, init.a);
  };
  const auto loftq = train::error_init(w, quantizer, r, s);
  const double loftq_error = error_of(loftq);
  qlr::compensate::Covariance cov(k);
  cov.add(x);
  const qlr::compensate::Eigenspace space(cov);
  const auto eora = train::error_init(w, quantizer, r, s, 1, &space);
  const double eora_error = error_of(eora);
  CAPTURE(rtn_error, loftq_error, eora_error);
  CHECK(loftq_error < 0.95 * rtn_error);
  CHECK(eora_error <= loftq_error);
  CHECK(eora_error < 0.9 * loftq_error);  // the outlier channels make the eigenspace matter
  // T = 1 quantizes W itself: the base is RTN's, bit for bit.
  CHECK(qlr::test::bitwise_equal(qlr::quant::dequantize(loftq.base), rtn));
  // More iterations move the base; the factors always fit the base returned.
  const auto loftq5 = train::error_init(w, quantizer, r, s, 5);
  const Matrix base5 = qlr::quant::dequantize(loftq5.base);
  const auto refit = qlr::compensate::svd_compensation(w, base5, r);
  CHECK((s * (loftq5.b * loftq5.a) - (refit.b * refit.a).cast<float>()).norm() <=
        1e-5f * (refit.b * refit.a).norm());

  // Through a TrainableLinear: the layer starts at Ŵ + s·B·A.
  train::TrainableLinear<float> layer("q_proj", train::FrozenBase<float>(train::DenseBase<float>(
                                                    qlr::quant::dequantize(eora.base), 32)));
  layer.add_adapter("default", {.rank = r, .alpha = 16});
  layer.set_values("default", eora.a, eora.b);
  const Matrix y = layer.forward(x.topRows(4), false);
  const Matrix expected =
      x.topRows(4) * (qlr::quant::dequantize(eora.base) + s * eora.b * eora.a).transpose();
  CHECK((y - expected).norm() <= 1e-5f * expected.norm());

  CHECK_THROWS_WITH(train::error_init(w, quantizer, 0, s), Catch::Contains("rank"));
  CHECK_THROWS_WITH(train::error_init(w, quantizer, r, 0.0f), Catch::Contains("scale = 0"));
  CHECK_THROWS_WITH(train::error_init(w, quantizer, r, s, 0), Catch::Contains("iterations = 0"));
}

TEST_CASE("pissa_init: the adapter holds W's principal part, the base its quantized residual",
          "[train][init]") {
  std::mt19937 rng(4);
  // A weight with a strong rank-4 part: PiSSA moves it out of the base before quantizing.
  const Matrix w = qlr::test::gaussian(rng, 48, 96, 0.02f) +
                   qlr::test::gaussian(rng, 48, 4) * qlr::test::gaussian(rng, 4, 96) * 0.3f;
  const qlr::quant::IntAsym<4> quantizer({.group_size = 32});
  const float s = 2.0f;
  const auto pissa = train::pissa_init(w, quantizer, 4, s);
  CHECK(!pissa.b.isZero(0.0f));  // B != 0 at step 0
  const Matrix residual = w - s * pissa.b * pissa.a;
  CHECK(residual.norm() < 0.2f * w.norm());  // the principal part is gone from the base
  CHECK(qlr::test::bitwise_equal(qlr::quant::dequantize(pissa.base),
                                 qlr::quant::dequantize(quantizer.quantize(residual))));
  const Matrix rtn = qlr::quant::dequantize(quantizer.quantize(w));
  const Matrix start = qlr::quant::dequantize(pissa.base) + s * pissa.b * pissa.a;
  CHECK((w - start).norm() < 0.5f * (w - rtn).norm());  // a smaller residual quantizes finer
  CHECK_THROWS_WITH(train::pissa_init(w, quantizer, 4, -1.0f), Catch::Contains("scale = -1"));
}

TEST_CASE(
    "FakeQuantWeights: d sum(Q(W))/dW is all ones without clipping, zero exactly on "
    "clipped entries (T8.6)",
    "[train][fake_quant]") {
  std::mt19937 rng(2);
  const Matrix w = qlr::test::heavy_tailed(rng, 16, 96);
  const Matrix ones = Matrix::Ones(16, 96);
  const train::FakeQuantWeights rtn(qlr::quant::IntAsym<4>({.group_size = 32}));
  const train::FakeQuantized plain = rtn.forward(w);
  CHECK(qlr::test::bitwise_equal(
      plain.value, qlr::quant::dequantize(qlr::quant::IntAsym<4>({.group_size = 32}).quantize(w))));
  CHECK(qlr::test::bitwise_equal(rtn.backward(plain, ones), ones));
  // A clip search shrinks ranges: the heavy tails fall outside and pass nothing.
  const qlr::quant::IntSym<4> clipping({.group_size = 32, .range = qlr::quant::Range::mse_clip});
  const train::FakeQuantWeights<qlr::quant::IntSym<4>> clipped(clipping);
  const train::FakeQuantized fq = clipped.forward(w);
  const Matrix grad = clipped.backward(fq, ones);
  const auto q = clipping.quantize(w);
  index_t zeros = 0;
  for (index_t o = 0; o < w.rows(); ++o) {
    for (index_t i = 0; i < w.cols(); ++i) {
      const double s = q.scale(o, i / 32);
      const bool outside =
          std::abs(static_cast<double>(w(o, i)) - fq.value(o, i)) > 0.5 * s * (1 + 1e-6);
      CHECK(grad(o, i) == (outside ? 0.0f : 1.0f));
      zeros += outside;
    }
  }
  CHECK(zeros > 0);
  CHECK_THROWS_WITH(clipped.backward(fq, Matrix::Ones(2, 2)), Catch::Contains("grad is 2x2"));
}

TEST_CASE(
    "backward_input: per-token activation quantization passes the gradient straight "
    "through, zero where clipped",
    "[train][fake_quant]") {
  std::mt19937 rng(3);
  const Matrix w = qlr::test::gaussian(rng, 24, 64);
  Matrix x = qlr::test::gaussian(rng, 6, 64);
  x(2, 9) = 30.0f;  // an outlier that a clip of 0.5 saturates with its token's big values
  const Matrix dy = qlr::test::gaussian(rng, 6, 24);
  // W4A4 behind a Hadamard rotation, clip 1 (RoLoRA's setting): dX = dY·Ŵ in x's basis.
  auto rotated =
      qlr::layers::make_linear(w, qlr::layers::parse_linear_spec("int4-sym-g32+a4+rht5"));
  Matrix dx(6, 64);
  rotated.backward_input(x, dy, dx);
  const qlr::MatrixD expected = dy.cast<double>() * rotated.dequantized_weight().cast<double>();
  CHECK((dx.cast<double>() - expected).norm() <= 1e-5 * expected.norm());
  // INT8 per token with clip 0.5, no rotation: exactly the kernel's dY·Ŵ, zero where
  // |x| > 0.5·max|x| of the token.
  qlr::layers::LinearSpec spec = qlr::layers::parse_linear_spec("int8-sym-g32+a8");
  spec.activation_clip = 0.5f;
  const auto clipped = qlr::layers::make_linear(w, spec);
  clipped.backward_input(x, dy, dx);
  const auto packed =
      qlr::kernels::DotWeights(qlr::quant::IntSym<8>({.group_size = 32}).quantize(w));
  const qlr::kernels::DotWeightView view = packed.view();
  Matrix full(6, 64);
  qlr::kernels::input_grad(qlr::kernels::weight_tiles(view), qlr::test::input(dy),
                           qlr::test::output(full));
  index_t cut = 0;
  for (index_t t = 0; t < 6; ++t) {
    const float range = 0.5f * x.row(t).cwiseAbs().maxCoeff();
    for (index_t i = 0; i < 64; ++i) {
      const bool saturated = std::abs(x(t, i)) > range;
      CHECK(dx(t, i) == (saturated ? 0.0f : full(t, i)));
      cut += saturated;
    }
  }
  CHECK(cut > 0);
}
