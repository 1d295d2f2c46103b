// SPDX-License-Identifier: Apache-2.0
// TrainableLinear's gradients (ALGORITHMS.md §3.2, §5.2, §8.1): the same code run in double
// on the dequantized weight against central finite differences (h = 1e-5, per tensor
// ‖g − g_fd‖/‖g_fd‖ ≤ 1e-6) for every adapter kind × {FP32 base, INT4 asym g32, NF4, rotated
// INT4} × {with, without dropout}; the FP32 layer over the quantized base against its double
// twin; T8.2 (B = 0), T5.4 (detached norm, and the sanity check that the un-detached one
// differs), several and frozen adapters, a mutation the check must catch, bad input.
#include "qlr/train/linear.hpp"

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include "qlr/layers/any_linear.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
namespace train = qlr::train;
using train::AdapterKind;
using VectorD = Eigen::VectorXd;

namespace {

constexpr index_t n_out = 12, k_in = 64, tokens = 5, rank = 3;

/// The gradients of one adapter and of the input.
struct Grads {
  std::vector<MatrixD> a, b;
  std::vector<VectorD> m;
  MatrixD x;
};

/// Relative error ‖g − f‖/‖f‖.
template <class A, class B>
double relative(const A& g, const B& f) {
  return (g - f).norm() / f.norm();
}

/// L = Σ Y⊙R of a forward with the given masks.
template <class T>
double loss(train::TrainableLinear<T>& layer, const train::MatrixT<T>& x,
            const train::MatrixT<T>& r, const std::vector<train::MatrixT<T>>& masks) {
  return static_cast<double>(layer.forward(x, true, masks).cwiseProduct(r).sum());
}

/// backward()'s gradients of L.
template <class T>
Grads analytic(train::TrainableLinear<T>& layer, const train::MatrixT<T>& x,
               const train::MatrixT<T>& r, const std::vector<train::MatrixT<T>>& masks) {
  layer.zero_gradients();
  layer.forward(x, true, masks);
  Grads g;
  g.x = layer.backward(r).template cast<double>();
  for (const auto& s : layer.adapters()) {
    g.a.push_back(s.grad_a.template cast<double>());
    g.b.push_back(s.grad_b.template cast<double>());
    g.m.push_back(s.grad_magnitude.template cast<double>());
  }
  return g;
}

/// Central differences of L, h = 1e-5, for every trainable value and every input.
Grads numeric(train::TrainableLinear<double>& layer, const MatrixD& x, const MatrixD& r,
              const std::vector<MatrixD>& masks) {
  constexpr double h = 1e-5;
  Grads g;
  const auto difference = [&](double& value, const auto& apply) {
    const double saved = value;
    value = saved + h;
    apply();
    const double plus = loss(layer, x, r, masks);
    value = saved - h;
    apply();
    const double minus = loss(layer, x, r, masks);
    value = saved;
    apply();
    return (plus - minus) / (2.0 * h);
  };
  for (const auto& s : layer.adapters()) {
    MatrixD a = s.a, b = s.b;
    VectorD m = s.magnitude;
    const auto apply = [&] { layer.set_values(s.name, a, b, m); };
    MatrixD ga(a.rows(), a.cols()), gb(b.rows(), b.cols());
    VectorD gm = VectorD::Zero(m.size());
    for (index_t i = 0; i < a.size(); ++i) ga.data()[i] = difference(a.data()[i], apply);
    for (index_t i = 0; i < b.size(); ++i) gb.data()[i] = difference(b.data()[i], apply);
    for (index_t i = 0; i < m.size(); ++i) gm(i) = difference(m(i), apply);
    g.a.push_back(ga);
    g.b.push_back(gb);
    g.m.push_back(gm);
  }
  MatrixD xv = x;
  g.x.resize(x.rows(), x.cols());
  for (index_t i = 0; i < x.size(); ++i) {
    const double saved = xv.data()[i];
    xv.data()[i] = saved + h;
    const double plus = loss(layer, xv, r, masks);
    xv.data()[i] = saved - h;
    const double minus = loss(layer, xv, r, masks);
    xv.data()[i] = saved;
    g.x.data()[i] = (plus - minus) / (2.0 * h);
  }
  return g;
}

/// Every tensor of `g` within `tolerance` of `f` (relative), trainable adapters only; a
/// frozen adapter's gradients stay 0.
void check_close(const Grads& g, const Grads& f, const train::TrainableLinear<double>& layer,
                 double tolerance) {
  for (std::size_t j = 0; j < g.a.size(); ++j) {
    const auto& s = layer.adapters()[j];
    CAPTURE(s.name);
    if (!s.config.trainable) {
      CHECK(g.a[j].isZero(0.0));
      CHECK(g.b[j].isZero(0.0));
      continue;
    }
    CHECK(relative(g.a[j], f.a[j]) <= tolerance);
    CHECK(relative(g.b[j], f.b[j]) <= tolerance);
    if (s.config.kind == AdapterKind::dora) CHECK(relative(g.m[j], f.m[j]) <= tolerance);
  }
  CHECK(relative(g.x, f.x) <= tolerance);
}

/// The float base layer named `base` over w.
train::FrozenBase<float> float_base(const std::string& base, const Matrix& w) {
  if (base == "fp32") return train::FrozenBase<float>(train::DenseBase<float>(w, 32));
  return train::FrozenBase<float>(
      qlr::layers::make_linear(w, qlr::layers::parse_linear_spec(base)));
}

/// Random nonzero values for every adapter of `layer`: B ≠ 0 so that every gradient is.
template <class T>
void randomize(train::TrainableLinear<T>& layer, std::mt19937& rng) {
  for (const auto& s : layer.adapters()) {
    const train::MatrixT<T> a =
        qlr::test::gaussian(rng, s.a.rows(), s.a.cols(), 0.3f).template cast<T>();
    const train::MatrixT<T> b =
        qlr::test::gaussian(rng, s.b.rows(), s.b.cols(), 0.3f).template cast<T>();
    train::VectorT<T> m = s.magnitude;
    for (index_t o = 0; o < m.size(); ++o)
      m(o) *= static_cast<T>(1.0 + 0.2 * std::sin(static_cast<double>(o)));
    layer.set_values(s.name, a, b, m);
  }
}

/// The masks a dropout p draws, or none.
std::vector<MatrixD> masks_for(const train::TrainableLinear<double>& layer, const MatrixD& x,
                               std::mt19937& rng, double p) {
  std::vector<MatrixD> masks;
  std::bernoulli_distribution drop(p);
  for (std::size_t j = 0; j < layer.adapters().size(); ++j) {
    MatrixD mask(0, 0);
    if (p > 0.0) {
      mask.resize(x.rows(), x.cols());
      for (index_t i = 0; i < mask.size(); ++i) mask.data()[i] = drop(rng) ? 0.0 : 1.0 / (1.0 - p);
    }
    masks.push_back(mask);
  }
  return masks;
}

train::AdapterConfig config_of(AdapterKind kind, bool rs, double dropout) {
  train::AdapterConfig c;
  c.kind = kind;
  c.rank = rank;
  c.alpha = 6.0;
  c.scaling = rs ? qlr::adapter::Scaling::rank_stabilized : qlr::adapter::Scaling::standard;
  c.dropout = dropout;
  c.seed = 11;
  return c;
}

}  // namespace

TEST_CASE(
    "TrainableLinear: gradients equal central differences in double, every adapter kind, "
    "base and dropout",
    "[train][linear]") {
  struct Kind {
    const char* name;
    AdapterKind kind;
    bool rs;
  };
  const Kind kinds[] = {{"lora", AdapterKind::lora, false},
                        {"rslora", AdapterKind::lora, true},
                        {"dora", AdapterKind::dora, false},
                        {"qa_lora", AdapterKind::qa_lora, false}};
  for (const char* base : {"fp32", "int4-asym-g32", "nf4-g32", "int4-asym-g32+rht7"}) {
    std::mt19937 rng(3);
    const Matrix w = qlr::test::gaussian(rng, n_out, k_in, 0.5f);
    const train::FrozenBase<float> fb = float_base(base, w);
    const index_t g = std::string(base) == "fp32" ? 32 : fb.group_size();
    for (const Kind& kind : kinds) {
      if (kind.kind == AdapterKind::qa_lora && fb.is_rotated()) continue;  // refused: see below
      for (const double p : {0.0, 0.3}) {
        CAPTURE(base, kind.name, p);
        train::TrainableLinear<double> twin("model.layers.0.mlp.up_proj",
                                            train::FrozenBase<double>(train::DenseBase<double>(
                                                fb.dequantized_weight().cast<double>(), g)));
        twin.add_adapter("default", config_of(kind.kind, kind.rs, p));
        randomize(twin, rng);
        const MatrixD x = qlr::test::gaussian(rng, tokens, k_in).cast<double>();
        const MatrixD r = qlr::test::gaussian(rng, tokens, n_out).cast<double>();
        const std::vector<MatrixD> masks = masks_for(twin, x, rng, p);
        const Grads exact = analytic(twin, x, r, masks);
        twin.hold_dora_norms(true);  // the loss whose gradients backward returns (§5.2)
        check_close(exact, numeric(twin, x, r, masks), twin, 1e-6);

        // The FP32 layer over the quantized base: its double twin within FP32's rounding.
        train::TrainableLinear<float> layer("model.layers.0.mlp.up_proj", fb);
        layer.add_adapter("default", config_of(kind.kind, kind.rs, p));
        const auto& s = twin.adapters()[0];
        layer.set_values("default", s.a.cast<float>(), s.b.cast<float>(),
                         s.magnitude.cast<float>());
        std::vector<Matrix> fmasks;
        for (const MatrixD& mask : masks) fmasks.push_back(mask.cast<float>());
        twin.hold_dora_norms(false);
        const Grads twin_grads = analytic(twin, x, r, masks);  // at the float values
        const Grads grads =
            analytic(layer, Matrix(x.cast<float>()), Matrix(r.cast<float>()), fmasks);
        // The twin holds Ŵ, so the two differ by FP32 rounding: 1e-4 is ~1000 ulps.
        CHECK(relative(grads.x, twin_grads.x) <= 1e-4);
        CHECK(relative(grads.a[0], twin_grads.a[0]) <= 1e-4);
        CHECK(relative(grads.b[0], twin_grads.b[0]) <= 1e-4);
      }
    }
  }
}

TEST_CASE("TrainableLinear: several adapters, one frozen, gradients in double", "[train][linear]") {
  std::mt19937 rng(5);
  train::TrainableLinear<double> layer(
      "q_proj", train::FrozenBase<double>(train::DenseBase<double>(
                    qlr::test::gaussian(rng, n_out, k_in).cast<double>(), 32)));
  layer.add_adapter("task", config_of(AdapterKind::lora, false, 0.2));
  train::AdapterConfig frozen = config_of(AdapterKind::lora, true, 0.0);
  frozen.trainable = false;
  layer.add_adapter("frozen", frozen);
  layer.add_adapter("pooled", config_of(AdapterKind::qa_lora, false, 0.1));
  layer.add_adapter("magnitude", config_of(AdapterKind::dora, false, 0.0));
  randomize(layer, rng);
  const MatrixD x = qlr::test::gaussian(rng, tokens, k_in).cast<double>();
  const MatrixD r = qlr::test::gaussian(rng, tokens, n_out).cast<double>();
  const std::vector<MatrixD> masks = masks_for(layer, x, rng, 0.25);
  const Grads exact = analytic(layer, x, r, masks);
  layer.hold_dora_norms(true);
  const Grads fd = numeric(layer, x, r, masks);
  check_close(exact, fd, layer, 1e-6);
  CHECK(fd.a[1].norm() > 0.0);  // the frozen one has a gradient, not taken

  // Mutation: flipping the sign of one adapter's term in dX, (dH·A)⊙D of "task", fails.
  const auto& s = layer.adapters()[0];
  const MatrixD term = (s.scale * (r * s.b) * s.a).cwiseProduct(masks[0]);
  Grads mutated = exact;
  mutated.x -= 2.0 * term;
  CHECK(relative(mutated.x, fd.x) > 1e-3);
  mutated = exact;
  mutated.b[2] *= -1.0;  // the sign of QA-LoRA's dB
  CHECK(relative(mutated.b[2], fd.b[2]) > 1.0);
}

TEST_CASE("TrainableLinear: DoRA's detached norm (T5.4)", "[train][linear]") {
  std::mt19937 rng(6);
  train::TrainableLinear<double> layer("v_proj",
                                       train::FrozenBase<double>(train::DenseBase<double>(
                                           qlr::test::gaussian(rng, n_out, k_in).cast<double>())));
  layer.add_adapter("default", config_of(AdapterKind::dora, false, 0.0));
  randomize(layer, rng);
  const MatrixD x = qlr::test::gaussian(rng, tokens, k_in).cast<double>();
  const MatrixD r = qlr::test::gaussian(rng, tokens, n_out).cast<double>();
  const Grads exact = analytic(layer, x, r, {});
  const Grads live = numeric(layer, x, r, {});  // n recomputed from A and B at every point
  // With n un-frozen the differences see ∂n/∂A, ∂n/∂B: far from the detached gradients.
  CHECK(relative(exact.a[0], live.a[0]) > 1e-3);
  CHECK(relative(exact.b[0], live.b[0]) > 1e-3);
  CHECK(relative(exact.m[0], live.m[0]) <= 1e-6);  // m does not enter n
  layer.hold_dora_norms(true);
  check_close(exact, numeric(layer, x, r, {}), layer, 1e-6);
}

TEST_CASE("TrainableLinear: B = 0 gives the base output exactly, dA = 0, dB != 0 (T8.2)",
          "[train][linear]") {
  std::mt19937 rng(7);
  const Matrix w = qlr::test::gaussian(rng, n_out, k_in);
  const train::FrozenBase<float> base(
      qlr::layers::make_linear(w, qlr::layers::parse_linear_spec("int4-asym-g32")));
  const Matrix x = qlr::test::gaussian(rng, tokens, k_in);
  Matrix expected(tokens, n_out);
  base.forward(x, expected);
  for (const AdapterKind kind : {AdapterKind::lora, AdapterKind::dora, AdapterKind::qa_lora}) {
    CAPTURE(static_cast<int>(kind));
    train::TrainableLinear<float> layer("o_proj", base);
    layer.add_adapter("default", config_of(kind, false, 0.0));
    CHECK(qlr::test::bitwise_equal(layer.forward(x), expected));
    layer.backward(qlr::test::gaussian(rng, tokens, n_out));
    const auto& s = layer.adapters()[0];
    CHECK(s.grad_a.isZero(0.0f));
    CHECK(!s.grad_b.isZero(0.0f));
  }
}

TEST_CASE("TrainableLinear: initializations (T8.5) and rsLoRA's scale (T8.7)", "[train][linear]") {
  std::mt19937 rng(8);
  const Matrix w = qlr::test::gaussian(rng, 40, 256);
  const train::FrozenBase<float> base(train::DenseBase<float>(w, 64));
  train::TrainableLinear<float> layer("k_proj", base);
  train::AdapterConfig c;
  c.rank = 16;
  c.alpha = 16;
  c.seed = 99;
  layer.add_adapter("kaiming", c);
  c.init = train::Init::gaussian;
  layer.add_adapter("gaussian", c);
  c.kind = AdapterKind::qa_lora;
  c.init = train::Init::xavier_uniform;
  layer.add_adapter("xavier", c);
  c.kind = AdapterKind::lora;
  c.init = train::Init::kaiming_uniform;
  c.scaling = qlr::adapter::Scaling::rank_stabilized;
  layer.add_adapter("rs", c);
  const auto& kaiming = layer.adapter("kaiming");
  CHECK(kaiming.a.cwiseAbs().maxCoeff() <= 1.0f / 16.0f);  // 1/√K, K = 256
  CHECK(kaiming.a.cwiseAbs().maxCoeff() > 0.9f / 16.0f);   // and spread to it
  CHECK(kaiming.b.isZero(0.0f));
  CHECK(kaiming.scale == 1.0f);
  CHECK(layer.adapter("rs").scale == 4.0f);                           // α/√r = 16/4
  CHECK(qlr::test::bitwise_equal(layer.adapter("rs").a, kaiming.a));  // same seed, same draw
  const Matrix& gauss = layer.adapter("gaussian").a;
  const double sd = std::sqrt(gauss.cast<double>().array().square().mean());
  CHECK(sd == Approx(1.0 / 16).epsilon(0.05));  // N(0, 1/r²)
  const Matrix& xavier = layer.adapter("xavier").a;
  CHECK(xavier.cols() == 4);  // L = 256/64
  CHECK(xavier.cwiseAbs().maxCoeff() <= std::sqrt(6.0f / 20.0f));
  train::TrainableLinear<float> again("k_proj", base);
  again.add_adapter("kaiming", train::AdapterConfig{.rank = 16, .alpha = 16, .seed = 99});
  CHECK(qlr::test::bitwise_equal(again.adapter("kaiming").a, kaiming.a));  // reproducible
}

TEST_CASE("TrainableLinear: parameters are PEFT-named views of values and gradients",
          "[train][linear]") {
  std::mt19937 rng(9);
  train::TrainableLinear<float> layer(
      "model.layers.3.self_attn.q_proj",
      train::FrozenBase<float>(train::DenseBase<float>(qlr::test::gaussian(rng, 8, 32))));
  layer.add_adapter("default", train::AdapterConfig{.kind = AdapterKind::dora, .rank = 2});
  train::AdapterConfig frozen{.rank = 2};
  frozen.trainable = false;
  layer.add_adapter("old", frozen);
  const train::ParameterList params = layer.parameters();
  REQUIRE(params.size() == 3);
  CHECK(params[0].name == "base_model.model.model.layers.3.self_attn.q_proj.lora_A.default.weight");
  CHECK(params[1].name == "base_model.model.model.layers.3.self_attn.q_proj.lora_B.default.weight");
  CHECK(params[2].name ==
        "base_model.model.model.layers.3.self_attn.q_proj.lora_magnitude_vector.default.weight");
  CHECK(params[0].shape == std::vector<std::int64_t>{2, 32});
  CHECK(params[2].shape == std::vector<std::int64_t>{8});
  train::check_parameters(params, "test");
  layer.forward(qlr::test::gaussian(rng, 3, 32));
  layer.backward(qlr::test::gaussian(rng, 3, 8));
  CHECK(params[1].grad.data() == layer.adapter("default").grad_b.data());
  CHECK(train::gradient_norm(params) > 0.0);
  layer.zero_gradients();
  CHECK(train::gradient_norm(params) == 0.0);
}

TEST_CASE("TrainableLinear: bad input is a qlr::Error naming the value", "[train][linear]") {
  std::mt19937 rng(10);
  const Matrix w = qlr::test::gaussian(rng, 8, 64);
  auto rotated = qlr::layers::make_linear(w, qlr::layers::parse_linear_spec("int4-asym-g32+rht3"));
  train::TrainableLinear<float> layer("m", train::FrozenBase<float>(std::move(rotated)));
  CHECK_THROWS_WITH(layer.add_adapter("a", {.rank = 0}),
                    Catch::Contains("rank = 0; expected 1 <= r <= min(N, K) = 8"));
  CHECK_THROWS_WITH(layer.add_adapter("a", {.rank = 9}), Catch::Contains("rank = 9"));
  CHECK_THROWS_WITH(layer.add_adapter("a", {.rank = 2, .dropout = 1.0}),
                    Catch::Contains("dropout = 1; expected a value in [0, 1)"));
  CHECK_THROWS_WITH(layer.add_adapter("a", {.rank = 2, .dropout = -0.1}),
                    Catch::Contains("dropout = -0.1"));
  CHECK_THROWS_WITH(layer.add_adapter("a", {.rank = 2, .alpha = std::nan("")}),
                    Catch::Contains("alpha = nan"));
  CHECK_THROWS_WITH(layer.add_adapter("a", {.kind = AdapterKind::qa_lora, .rank = 2}),
                    Catch::Contains("QA-LoRA on a rotated base"));
  layer.add_adapter("a", {.rank = 2});
  CHECK_THROWS_WITH(layer.add_adapter("a", {.rank = 2}), Catch::Contains("adapter 'a' exists"));
  train::TrainableLinear<float> grouped(
      "m", train::FrozenBase<float>(
               qlr::layers::make_linear(w, qlr::layers::parse_linear_spec("int4-asym-g32"))));
  CHECK_THROWS_WITH(
      grouped.add_adapter("qa", {.kind = AdapterKind::qa_lora, .rank = 2, .group_size = 16}),
      Catch::Contains("pools over groups of 16; expected the base's quantization groups of 32"));
  grouped.add_adapter("qa", {.kind = AdapterKind::qa_lora, .rank = 2, .group_size = 32});
  CHECK(grouped.adapter("qa").a.cols() == 2);
  CHECK_THROWS_WITH(layer.backward(Matrix::Zero(2, 8)), Catch::Contains("no forward"));
  CHECK_THROWS_WITH(layer.forward(Matrix::Zero(2, 63)),
                    Catch::Contains("x is 2x63; expected M x K = M x 64"));
  layer.forward(Matrix::Ones(2, 64));
  CHECK_THROWS_WITH(layer.backward(Matrix::Zero(3, 8)),
                    Catch::Contains("dy is 3x8; expected M x N = 2x8"));
  Matrix bad = Matrix::Zero(2, 8);
  bad(1, 2) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(layer.backward(bad), Catch::Contains("dy holds a NaN or an infinity"));
  CHECK_THROWS_WITH(layer.set_values("a", Matrix::Zero(3, 64), Matrix::Zero(8, 2)),
                    Catch::Contains("A is 3x64, B is 8x2; expected 2x64 and 8x2"));
  CHECK_THROWS_WITH(layer.set_values("b", Matrix::Zero(2, 64), Matrix::Zero(8, 2)),
                    Catch::Contains("no adapter 'b'"));
  auto attached = qlr::layers::make_linear(w, qlr::layers::parse_linear_spec("int4-asym-g32"));
  attached.attach("x", qlr::adapter::Lora(Matrix::Zero(2, 64), Matrix::Zero(8, 2), 2.0));
  CHECK_THROWS_WITH(train::FrozenBase<float>(std::move(attached)),
                    Catch::Contains("adapter 'x' enabled"));
}
