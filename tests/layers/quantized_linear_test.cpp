// SPDX-License-Identifier: Apache-2.0
// QuantizedLinear against a dense FP32 oracle built independently of the layer (dequantized
// weight + adapters, in double) for each composition; multi-adapter batches against per-row
// single-adapter runs; run-time adapter control; DoRA's identity at initialization; errors.
#include <cstring>
#include <random>
#include <vector>

#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/low_rank.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/layers/quantized_linear.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/nf4.hpp"
#include "qlr/rotate/rotation.hpp"
#include "qlr_test_support.hpp"

namespace {

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
using qlr::Vector;
namespace layers = qlr::layers;
namespace quant = qlr::quant;
namespace adapter = qlr::adapter;
namespace rotate = qlr::rotate;

/// ‖a − b‖_F / ‖b‖_F in double.
double relative_error(const Matrix& a, const MatrixD& b) {
  return (a.cast<double>() - b).norm() / b.norm();
}

/// A LoRA with Gaussian factors of rank r for an N×K layer (B non-zero: a trained adapter).
adapter::Lora random_lora(std::mt19937& rng, index_t n, index_t k, index_t r, double alpha = 16) {
  return adapter::Lora(qlr::test::gaussian(rng, r, k, 0.1f), qlr::test::gaussian(rng, n, r, 0.1f),
                       alpha);
}

/// x·(Ŵ + s·B·A)ᵀ + b in double: the oracle of a weight-only layer with one LoRA.
MatrixD lora_oracle(const Matrix& x, const Matrix& w_hat, const adapter::Lora& l, const Vector& b) {
  const MatrixD delta = double{l.scale()} * l.b().cast<double>() * l.a().cast<double>();
  MatrixD y = x.cast<double>() * (w_hat.cast<double>() + delta).transpose();
  y.rowwise() += b.cast<double>().transpose();
  return y;
}

}  // namespace

TEST_CASE("QuantizedLinear: W4 weight-only with a LoRA and a bias equals the dense oracle",
          "[layers]") {
  std::mt19937 rng(1);
  for (const index_t m : {1, 3, 17}) {
    for (const auto& [n, k] : {std::pair<index_t, index_t>{37, 96}, {64, 160}}) {
      CAPTURE(m, n, k);
      const Matrix w = qlr::test::gaussian(rng, n, k);
      const Matrix x = qlr::test::gaussian(rng, m, k);
      const Vector bias = qlr::test::gaussian(rng, n, 1);
      const quant::IntAsym<4> q({.group_size = 32});
      layers::QuantizedLinear<quant::IntAsym<4>> layer(w, q);
      layer.set_bias(bias);
      const adapter::Lora lora = random_lora(rng, n, k, 4);
      layer.attach("chat", lora);
      const MatrixD ref = lora_oracle(x, quant::dequantize(q.quantize(w)), lora, bias);
      CHECK(relative_error(layer.forward(x), ref) < 1e-5);  // FP32 sums over K ≤ 160
      CHECK(relative_error(layer.dense_weight(),
                           quant::dequantize(q.quantize(w)).cast<double>() +
                               double{lora.scale()} * lora.b().cast<double>() *
                                   lora.a().cast<double>()) < 1e-6);
    }
  }
}

TEST_CASE("QuantizedLinear: W8A8 and rotated W4A4 equal their fake-quantized oracles",
          "[layers]") {
  std::mt19937 rng(2);
  const index_t m = 9, n = 40, k = 128;
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const Matrix x = qlr::test::gaussian(rng, m, k);
  const adapter::Lora lora = random_lora(rng, n, k, 8);
  const MatrixD delta = double{lora.scale()} * lora.b().cast<double>() * lora.a().cast<double>();
  SECTION("W8A8") {
    const quant::IntSym<8> q({.group_size = 0});
    layers::QuantizedLinear<quant::IntSym<8>, rotate::Identity, layers::Int8Activations> layer(w, q);
    layer.attach("a", lora);
    // The adapter reads FP32 x; only the base sees the INT8 codes.
    const MatrixD ref = quant::dequantize(quant::quantize_per_token(x)).cast<double>() *
                            quant::dequantize(q.quantize(w)).cast<double>().transpose() +
                        x.cast<double>() * delta.transpose();
    CHECK(relative_error(layer.forward(x), ref) < 1e-5);
  }
  SECTION("rotated W4A4") {
    const rotate::RandomizedHadamard rotation(k, 7);
    const quant::IntSym<4> q({.group_size = 32});
    layers::QuantizedLinear<quant::IntSym<4>, rotate::RandomizedHadamard, layers::Int4Activations>
        layer(w, q, rotation);
    layer.attach("a", lora);
    Matrix w_rot = w, x_rot = x;
    rotate::rotate_weight_input(rotation, w_rot);
    rotate::rotate_rows(rotation, x_rot);
    const MatrixD ref =
        quant::dequantize(quant::quantize_per_token(x_rot, {.bits = 4})).cast<double>() *
            quant::dequantize(q.quantize(w_rot)).cast<double>().transpose() +
        x.cast<double>() * delta.transpose();
    CHECK(relative_error(layer.forward(x), ref) < 1e-5);
    // In the original basis the layer's weight is the rotated one rotated back.
    Matrix back = quant::dequantize(q.quantize(w_rot));
    rotate::unrotate_rows(rotation, back);
    CHECK(relative_error(layer.dequantized_weight(), back.cast<double>()) < 1e-6);
  }
}

TEST_CASE("QuantizedLinear: NF4 and INT3 run on the dense kernel", "[layers]") {
  std::mt19937 rng(3);
  const index_t m = 4, n = 24, k = 172;  // ragged groups, stories260K's d_ff
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const Matrix x = qlr::test::gaussian(rng, m, k);
  const adapter::Lora lora = random_lora(rng, n, k, 2);
  const Vector no_bias;
  {
    const quant::Nf4 q;
    layers::QuantizedLinear<quant::Nf4, rotate::Identity, layers::FloatActivations,
                            layers::DenseKernel>
        layer(w, q);
    layer.attach("a", lora);
    CHECK(relative_error(layer.forward(x), lora_oracle(x, quant::dequantize(q.quantize(w)), lora,
                                                        Vector::Zero(n))) < 1e-5);
  }
  {
    const quant::IntAsym<3> q({.group_size = 32});
    layers::QuantizedLinear<quant::IntAsym<3>, rotate::Identity, layers::FloatActivations,
                            layers::DenseKernel>
        layer(w, q);
    CHECK(relative_error(layer.forward(x), lora_oracle(x, quant::dequantize(q.quantize(w)),
                                                        adapter::Lora(Matrix::Zero(1, k),
                                                                      Matrix::Zero(n, 1), 1),
                                                        Vector::Zero(n))) < 1e-5);
  }
}

TEST_CASE("QuantizedLinear: a QA-LoRA adapter on an asymmetric base", "[layers]") {
  std::mt19937 rng(4);
  const index_t m = 5, n = 33, k = 256, g = 32, r = 4;
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const Matrix x = qlr::test::gaussian(rng, m, k);
  const quant::IntAsym<4> q({.group_size = g});
  const adapter::QaLora qa(qlr::test::gaussian(rng, r, k / g), qlr::test::gaussian(rng, n, r), 16,
                           k, g);
  layers::QuantizedLinear<quant::IntAsym<4>> layer(w, q);
  layer.attach("qa", qa);
  const MatrixD ref = x.cast<double>() *
                      (quant::dequantize(q.quantize(w)).cast<double>() + qa.delta().cast<double>())
                          .transpose();
  CHECK(relative_error(layer.forward(x), ref) < 1e-5);
}

TEST_CASE("QuantizedLinear: DoRA with B = 0 is the base bit for bit, and rescales rows",
          "[layers]") {
  std::mt19937 rng(5);
  const index_t m = 6, n = 48, k = 128, r = 4;
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const Matrix x = qlr::test::gaussian(rng, m, k);
  const Vector bias = qlr::test::gaussian(rng, n, 1);
  const quant::IntSym<4> q({.group_size = 64});
  layers::QuantizedLinear<quant::IntSym<4>, rotate::Identity, layers::Int8Activations> layer(w, q);
  layer.set_bias(bias);
  const Matrix base_y = layer.forward(x);
  const Vector m0 = adapter::Dora::initial_magnitude(layer.dequantized_weight());
  layer.attach("dora", adapter::Dora(qlr::test::gaussian(rng, r, k), Matrix::Zero(n, r), m0, 8));
  const Matrix init_y = layer.forward(x);
  CHECK(std::memcmp(init_y.data(), base_y.data(), sizeof(float) * base_y.size()) == 0);

  layer.detach("dora");
  const adapter::Dora dora(qlr::test::gaussian(rng, r, k, 0.1f), qlr::test::gaussian(rng, n, r, 0.1f),
                           (m0.array() * 1.5f).matrix(), 8);
  layer.attach("dora", dora);
  // y = c ⊙ (Ŵx + s·B·A·x) + b with c = m/‖Ŵ + s·B·A‖ per row; the bias is not rescaled.
  const MatrixD v = layer.dequantized_weight().cast<double>() + dora.delta().cast<double>();
  const Eigen::VectorXd c = dora.magnitude().cast<double>().array() / v.rowwise().norm().array();
  const MatrixD x_hat = quant::dequantize(quant::quantize_per_token(x)).cast<double>();
  MatrixD ref = x_hat * layer.dequantized_weight().cast<double>().transpose() +
                x.cast<double>() * dora.delta().cast<double>().transpose();
  ref = ref * c.asDiagonal();
  ref.rowwise() += bias.cast<double>().transpose();
  CHECK(relative_error(layer.forward(x), ref) < 1e-5);
  // A DoRA rescales the whole output: summed with another adapter it is refused.
  layer.attach("lora", random_lora(rng, n, k, 2));
  CHECK_THROWS_WITH(layer.forward(x), Catch::Contains("DoRA adapter 'dora' rescales the whole output"));
}

TEST_CASE("QuantizedLinear: a multi-adapter batch equals per-row single-adapter runs",
          "[layers]") {
  std::mt19937 rng(6);
  const index_t m = 11, n = 70, k = 192;
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const Matrix x = qlr::test::gaussian(rng, m, k);
  const quant::IntAsym<4> q({.group_size = 64});
  layers::QuantizedLinear<quant::IntAsym<4>, rotate::RandomizedHadamard, layers::Int8Activations>
      layer(w, q, rotate::RandomizedHadamard(k, 3));
  layer.set_bias(qlr::test::gaussian(rng, n, 1));
  layer.attach("lora4", random_lora(rng, n, k, 4));
  layer.attach("eora", adapter::LowRank(qlr::test::gaussian(rng, 2, k, 0.1f),
                                        qlr::test::gaussian(rng, n, 2, 0.1f)));
  const Vector m0 = adapter::Dora::initial_magnitude(layer.dequantized_weight());
  layer.attach("dora", adapter::Dora(qlr::test::gaussian(rng, 3, k, 0.1f),
                                     qlr::test::gaussian(rng, n, 3, 0.1f), m0, 6));
  layer.attach("rotated", random_lora(rng, n, k, 5), layers::Basis::rotated);
  const index_t none = decltype(layer)::no_adapter;
  const std::vector<index_t> ids = {0, 1, 2, 3, none, 2, 0, 3, 1, none, 0};
  Matrix batch(m, n);
  layer.forward(x, batch, ids);

  const std::vector<std::string> names = layer.adapter_names();
  for (index_t i = 0; i < m; ++i) {
    CAPTURE(i, ids[static_cast<std::size_t>(i)]);
    for (const auto& name : names)
      layer.set_enabled(name, ids[static_cast<std::size_t>(i)] != none &&
                                  name == names[static_cast<std::size_t>(ids[static_cast<std::size_t>(i)])]);
    const Matrix single = layer.forward(x.row(i));
    CHECK(relative_error(batch.row(i), single.cast<double>()) < 1e-6);
  }
  for (const auto& name : names) layer.set_enabled(name, true);
  // A disabled adapter cannot be picked; ids are checked.
  layer.set_enabled("eora", false);
  CHECK_THROWS_WITH(layer.forward(x, batch, ids), Catch::Contains("names 'eora'; expected an enabled adapter"));
  std::vector<index_t> bad = ids;
  bad[3] = 9;
  layer.set_enabled("eora", true);
  CHECK_THROWS_WITH(layer.forward(x, batch, bad), Catch::Contains("adapter_of_row[3] = 9"));
  CHECK_THROWS_WITH(layer.forward(x, batch, std::span(ids).first(4)),
                    Catch::Contains("adapter_of_row has 4 ids; expected one per row of x (M = 11)"));
}

TEST_CASE("QuantizedLinear: adapters are enabled, disabled and scaled at run time", "[layers]") {
  std::mt19937 rng(7);
  const index_t m = 3, n = 20, k = 64;
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const Matrix x = qlr::test::gaussian(rng, m, k);
  layers::QuantizedLinear<quant::IntSym<8>> layer(w, quant::IntSym<8>({.group_size = 32}));
  const Matrix base_y = layer.forward(x);
  const adapter::Lora lora = random_lora(rng, n, k, 4);
  layer.attach("a", lora);
  const Matrix with_y = layer.forward(x);
  CHECK((with_y - base_y).norm() > 1e-3 * base_y.norm());
  layer.set_enabled("a", false);
  CHECK(layer.forward(x) == base_y);
  layer.set_enabled("a", true);
  layer.set_scale("a", 0.0f);
  CHECK(layer.forward(x) == base_y);
  layer.set_scale("a", 2.0f);
  const MatrixD twice =
      base_y.cast<double>() + 2.0 * (with_y - base_y).cast<double>();
  CHECK(relative_error(layer.forward(x), twice) < 1e-5);
  CHECK(layer.adapter<adapter::Lora>("a").rank() == 4);
  CHECK_THROWS_WITH(layer.adapter<adapter::LowRank>("a"), Catch::Contains("another adapter type"));
}

TEST_CASE("QuantizedLinear: bad input is a qlr::Error naming the argument", "[layers]") {
  std::mt19937 rng(8);
  const index_t n = 16, k = 64;
  const Matrix w = qlr::test::gaussian(rng, n, k);
  layers::QuantizedLinear<quant::IntAsym<4>> layer(w, quant::IntAsym<4>({.group_size = 32}));
  layer.attach("a", random_lora(rng, n, k, 2));
  CHECK_THROWS_WITH(layer.attach("a", random_lora(rng, n, k, 2)),
                    Catch::Contains("name = 'a'; expected a name no attached adapter has"));
  CHECK_THROWS_WITH(layer.attach("b", random_lora(rng, n + 1, k, 2)),
                    Catch::Contains("adapter 'b' is 17x64 (N x K); expected 16x64"));
  CHECK_THROWS_WITH(layer.set_enabled("nope", false),
                    Catch::Contains("adapter 'nope' is not attached; expected one of ['a']"));
  CHECK_THROWS_WITH(layer.forward(Matrix::Zero(2, k + 1)),
                    Catch::Contains("x is 2x65; expected M x K = M x 64"));
  Matrix y(2, n + 1);
  CHECK_THROWS_WITH(layer.forward(Matrix::Zero(2, k), y),
                    Catch::Contains("y is 2x17; expected M x N = 2x16"));
  CHECK_THROWS_WITH(layer.set_bias(Vector::Zero(n - 1)),
                    Catch::Contains("bias has 15 values; expected N = 16"));
  Vector nan_bias = Vector::Zero(n);
  nan_bias(3) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(layer.set_bias(nan_bias), Catch::Contains("expected a finite value"));
  CHECK_THROWS_WITH(layer.set_scale("a", std::numeric_limits<float>::infinity()),
                    Catch::Contains("scale = inf; expected a finite value"));
  Matrix w_nan = w;
  w_nan(2, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(layers::QuantizedLinear<quant::IntAsym<4>>(w_nan), qlr::Error);
}

TEST_CASE("QuantizedLinear: memory_bytes is its one weight form, adapters, bias and a few "
          "hundred bytes",
          "[layers][memory]") {
  std::mt19937 rng(9);
  const index_t n = 256, k = 512, r = 8;
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const adapter::Lora lora = random_lora(rng, n, k, r);
  const Vector bias = qlr::test::gaussian(rng, n, 1);
  const auto check = [&](auto& layer) {
    const std::size_t weight = layer.packed_base().memory_bytes();
    CHECK(layer.memory_bytes() - weight < 512);
    layer.attach("a", lora);
    layer.set_bias(bias);
    // The stacked Bᵀ the epilogue reads: r rows of N floats plus at most 32 of padding.
    const std::size_t held = weight + lora.memory_bytes() + sizeof(float) * (n + r * n);
    CHECK(layer.memory_bytes() >= held);
    CHECK(layer.memory_bytes() - held < 512 + sizeof(float) * 32 * r);
  };
  {
    layers::QuantizedLinear<quant::IntAsym<4>> layer(w, quant::IntAsym<4>({.group_size = 32}));
    check(layer);
  }
  {
    layers::QuantizedLinear<quant::Nf4> layer(w, quant::Nf4({.block_size = 64}));
    check(layer);
  }
  {
    layers::QuantizedLinear<quant::IntAsym<3>> layer(w, quant::IntAsym<3>({.group_size = 32}));
    check(layer);
  }
}

TEST_CASE("QuantizedLinear: no format holds more than 1.35x its storage bits, and none an FP32 "
          "copy",
          "[layers][memory]") {
  std::mt19937 rng(10);
  const index_t n = 256, k = 512;
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const auto check = [&](const auto& layer, const char* name) {
    CAPTURE(name, layer.bits_per_parameter());
    const double storage = layer.bits_per_parameter() * static_cast<double>(n * k) / 8.0;
    CHECK(static_cast<double>(layer.memory_bytes()) <= 1.35 * storage + 512.0);
    CHECK(static_cast<double>(layer.memory_bytes()) >= storage);
  };
  const qlr::quant::IntOptions g32{.group_size = 32, .scale_type = qlr::ScaleType::f16};
  check(layers::QuantizedLinear<quant::IntSym<2>>(w, quant::IntSym<2>(g32)), "int2-sym");
  check(layers::QuantizedLinear<quant::IntAsym<2>>(w, quant::IntAsym<2>(g32)), "int2-asym");
  check(layers::QuantizedLinear<quant::IntSym<3>>(w, quant::IntSym<3>(g32)), "int3-sym");
  check(layers::QuantizedLinear<quant::IntAsym<3>>(w, quant::IntAsym<3>(g32)), "int3-asym");
  check(layers::QuantizedLinear<quant::IntSym<4>>(w, quant::IntSym<4>(g32)), "int4-sym");
  check(layers::QuantizedLinear<quant::IntAsym<4>>(w, quant::IntAsym<4>(g32)), "int4-asym");
  check(layers::QuantizedLinear<quant::IntSym<8>>(w, quant::IntSym<8>(g32)), "int8-sym");
  check(layers::QuantizedLinear<quant::IntAsym<8>>(w, quant::IntAsym<8>(g32)), "int8-asym");
  check(layers::QuantizedLinear<quant::IntAsym<4>, rotate::Identity, layers::FloatActivations,
                                layers::DenseKernel>(w, quant::IntAsym<4>(g32)),
        "int4-asym+dense");
  check(layers::QuantizedLinear<quant::Nf4>(
            w, quant::Nf4({.block_size = 64, .scale_type = qlr::ScaleType::f16})),
        "nf4-g64-f16");
  check(layers::QuantizedLinear<quant::Nf4>(w, quant::Nf4({.block_size = 64})), "nf4-g64");
}

TEST_CASE("QuantizedLinear: a base comes back bit for bit from each kernel's form",
          "[layers][memory]") {
  std::mt19937 rng(12);
  const index_t n = 37, k = 100;  // a padded panel and a ragged group
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const auto same = [](const auto& a, const auto& b) {
    const qlr::QuantizedParts& pa = a.parts();
    const qlr::QuantizedParts& pb = b.parts();
    CHECK(pa.codes == pb.codes);
    CHECK(std::memcmp(pa.scales.data(), pb.scales.data(), pa.scales.size() * sizeof(float)) == 0);
    REQUIRE(pa.zeros.size() == pb.zeros.size());
    CHECK((pa.zeros.empty() ||
           std::memcmp(pa.zeros.data(), pb.zeros.data(), pa.zeros.size() * sizeof(float)) == 0));
    CHECK((pa.zero_mode == pb.zero_mode && pa.scale_type == pb.scale_type &&
           pa.codebook == pb.codebook && pa.group_size == pb.group_size));
  };
  for (const auto scale_type : {qlr::ScaleType::f32, qlr::ScaleType::f16}) {
    const qlr::quant::IntOptions g{.group_size = 32, .scale_type = scale_type};
    const auto q4 = quant::IntAsym<4>(g).quantize(w);
    same(layers::QuantizedLinear<quant::IntAsym<4>>(q4, rotate::Identity(k)).base(), q4);
    const auto q8 = quant::IntSym<8>(g).quantize(w);
    same(layers::QuantizedLinear<quant::IntSym<8>>(q8, rotate::Identity(k)).base(), q8);
    const auto q3 = quant::IntAsym<3>(g).quantize(w);
    same(layers::QuantizedLinear<quant::IntAsym<3>>(q3, rotate::Identity(k)).base(), q3);
    const auto nf4 = quant::Nf4({.block_size = 64, .scale_type = scale_type}).quantize(w);
    same(layers::QuantizedLinear<quant::Nf4>(nf4, rotate::Identity(k)).base(), nf4);
  }
  // Floating zero points (a QA-LoRA merge) survive the SIMD kernels' integer + offset split.
  const index_t r = 2, g = 32;
  const adapter::QaLora qa(qlr::test::gaussian(rng, r, (k + g - 1) / g),
                           qlr::test::gaussian(rng, n, r), 16, k, g);
  const auto merged =
      adapter::merge_into_zeros(quant::IntAsym<4>({.group_size = g}).quantize(w), qa);
  same(layers::QuantizedLinear<quant::IntAsym<4>>(merged, rotate::Identity(k)).base(), merged);
}
