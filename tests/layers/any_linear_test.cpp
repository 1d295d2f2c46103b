// SPDX-License-Identifier: Apache-2.0
// The runtime-configured layer: every composition make_linear compiles, built from a spec
// string, against the dense oracle of the same spec; spec names round-trip; compositions
// that are not compiled are refused by name.
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/layers/any_linear.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/rotate/rotation.hpp"
#include "qlr_test_support.hpp"

namespace {

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
namespace layers = qlr::layers;

}  // namespace

TEST_CASE("make_linear: every compiled composition matches its dense oracle", "[layers]") {
  const index_t m = 5, n = 24, k = 128, r = 4;
  std::mt19937 rng(11);
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const Matrix x = qlr::test::gaussian(rng, m, k);
  const qlr::adapter::Lora lora(qlr::test::gaussian(rng, r, k, 0.1f),
                                qlr::test::gaussian(rng, n, r, 0.1f), 8);
  // The list make_linear dispatches over, each composition with and without a rotation.
  std::size_t built = 0;
  for (const layers::Composition& c : layers::compositions) {
    for (const bool rotated : {false, true}) {
      layers::LinearSpec spec;
      spec.weights.bits = c.bits;
      spec.weights.encoding = c.encoding;
      spec.weights.options.group_size = 32;
      spec.weights.nf4.block_size = 64;
      spec.activation_bits = c.activation_bits;
      spec.rotated = rotated;
      spec.rotation_seed = 5;
      if (c.dense && layers::is_simd_packable(c.bits, c.encoding))
        spec.kernel = layers::KernelChoice::dense;
      const std::string name = layers::to_string(spec);
      CAPTURE(name);
      CHECK(layers::to_string(layers::parse_linear_spec(name)) == name);
      layers::AnyLinear layer = layers::make_linear(w, spec);
      layer.attach("lora", lora);
      const Matrix y = layer.forward(x);
      // The base sees (rotated, quantized) activations; the adapter reads x itself.
      Matrix x_base = x;
      if (spec.rotated)
        qlr::rotate::rotate_rows(qlr::rotate::RandomizedHadamard(k, spec.rotation_seed), x_base);
      if (spec.activation_bits != 0)
        x_base = qlr::quant::dequantize(
            qlr::quant::quantize_per_token(x_base, {.bits = spec.activation_bits}));
      const Matrix w_base = qlr::quant::dequantize(layer.base());
      const MatrixD ref = x_base.cast<double>() * w_base.cast<double>().transpose() +
                          x.cast<double>() * lora.delta().cast<double>().transpose();
      CHECK((y.cast<double>() - ref).norm() / ref.norm() < 1e-5);
      ++built;
    }
  }
  CHECK(built == 2 * std::size(layers::compositions));
  CHECK(std::size(layers::compositions) == 36);
}

TEST_CASE("make_linear: compositions that are not compiled are refused by name", "[layers]") {
  const Matrix w = Matrix::Ones(8, 64);
  CHECK_THROWS_WITH(layers::make_linear(w, layers::parse_linear_spec("int3-asym-g32+a8+dense")),
                    Catch::Contains("runs on the dense kernel, weight-only"));
  CHECK_THROWS_WITH(layers::make_linear(w, layers::parse_linear_spec("nf4+a4+dense")),
                    Catch::Contains("expected activation_bits = 0"));
  CHECK_THROWS_WITH(layers::parse_linear_spec("int4+a16"),
                    Catch::Contains("'a16' in 'int4+a16'; expected a8, a4, rht<seed> or dense"));
  CHECK_THROWS_WITH(layers::parse_linear_spec("int4+rhtx"), Catch::Contains("expected rht<seed>"));
  layers::AnyLinear sym = layers::make_linear(w, layers::parse_linear_spec("int4-sym-g32"));
  CHECK_THROWS_WITH(sym.attach("qa", qlr::adapter::QaLora(Matrix::Ones(2, 2), Matrix::Ones(8, 2), 1, 64, 32)),
                    Catch::Contains("adapter 'qa' is QA-LoRA on a sym base"));
  layers::AnyLinear asym = layers::make_linear(w, layers::parse_linear_spec("int4-asym-g32"));
  asym.attach("qa", qlr::adapter::QaLora(Matrix::Ones(2, 2), Matrix::Ones(8, 2), 1, 64, 32));
  CHECK(asym.adapter_names() == std::vector<std::string>{"qa"});
}

TEST_CASE("merge_into_base: a QA-LoRA folded into the zero points gives the same outputs",
          "[layers]") {
  const index_t m = 4, n = 24, k = 128, r = 3, g = 32;
  std::mt19937 rng(13);
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const Matrix x = qlr::test::gaussian(rng, m, k);
  for (const char* name : {"int4-asym-g32", "int8-asym-g32+rht5", "int3-asym-g32"}) {
    CAPTURE(name);
    layers::AnyLinear layer = layers::make_linear(w, layers::parse_linear_spec(name));
    const bool rotated = layer.spec().rotated;
    layer.attach("qa", qlr::adapter::QaLora(qlr::test::gaussian(rng, r, k / g), qlr::test::gaussian(rng, n, r, 0.1f), 8, k, g),
                 rotated ? layers::Basis::rotated : layers::Basis::original);
    layer.set_scale("qa", 0.5f);
    layer.attach("lora", qlr::adapter::Lora(qlr::test::gaussian(rng, r, k, 0.1f), qlr::test::gaussian(rng, n, r, 0.1f), 4));
    const Matrix before = layer.forward(x);
    CHECK_THROWS_WITH(layer.merge_into_base("lora"), Catch::Contains("adapter 'lora' is not QA-LoRA"));
    layer.merge_into_base("qa");
    CHECK(layer.adapter_names() == std::vector<std::string>{"lora"});
    const Matrix after = layer.forward(x);
    CHECK((after - before).norm() / before.norm() < 1e-5);  // FP32 rounding of Z' and the sums
    CHECK(std::visit([](const auto& q) { return q.zero_mode(); }, layer.base()) == qlr::ZeroMode::floating);
  }
  layers::AnyLinear rotated = layers::make_linear(w, layers::parse_linear_spec("int4-asym-g32+rht5"));
  rotated.attach("qa", qlr::adapter::QaLora(Matrix::Ones(2, k / g), Matrix::Ones(n, 2), 1, k, g));
  CHECK_THROWS_WITH(rotated.merge_into_base("qa"), Catch::Contains("reads the original basis of a rotated layer"));
  rotated.set_enabled("qa", false);
  CHECK_THROWS_WITH(rotated.merge_into_base("qa"), Catch::Contains("adapter 'qa' is disabled"));
  layers::AnyLinear sym = layers::make_linear(w, layers::parse_linear_spec("int4-sym-g32"));
  CHECK_THROWS_WITH(sym.merge_into_base("qa"), Catch::Contains("adapter 'qa' is not attached"));
}
