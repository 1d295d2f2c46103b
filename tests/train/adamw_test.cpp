// SPDX-License-Identifier: Apache-2.0
// AdamW (ALGORITHMS.md §8.4): the first step's closed form (T8.4), every kernel path within
// a derived bound of a double oracle of the same formula (and the portable path bit for bit
// against the reference on x86, where neither fuses a multiply-add), the state file's bitwise
// round trip, and refused input that changes nothing.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "qlr/core/config.hpp"
#include "qlr/io/safetensors.hpp"
#include "qlr/kernels/adamw.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/train/adamw.hpp"
#include "qlr/train/parameter.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
namespace kernels = qlr::kernels;
namespace train = qlr::train;

namespace {

/// Tensors that own their values and gradients, and the ParameterList that views them.
struct Model {
  std::vector<std::vector<float>> values, grads;
  std::vector<std::vector<std::int64_t>> shapes;
  std::vector<std::string> names;

  void add(std::string name, std::vector<std::int64_t> shape, std::mt19937& rng) {
    std::int64_t n = 1;
    for (const auto d : shape) n *= d;
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> v(static_cast<std::size_t>(n)), g(static_cast<std::size_t>(n));
    for (auto& x : v) x = normal(rng);
    for (auto& x : g) x = normal(rng);
    names.push_back(std::move(name));
    shapes.push_back(std::move(shape));
    values.push_back(std::move(v));
    grads.push_back(std::move(g));
  }
  [[nodiscard]] train::ParameterList parameters() {
    train::ParameterList list;
    for (std::size_t i = 0; i < names.size(); ++i)
      list.push_back({names[i], shapes[i], values[i], grads[i]});
    return list;
  }
  /// New Gaussian gradients, as the next micro-batch would give.
  void new_gradients(std::mt19937& rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (auto& g : grads)
      for (auto& x : g) x = normal(rng);
  }
};

Model two_tensor_model(std::uint32_t seed) {
  std::mt19937 rng(seed);
  Model m;
  m.add("layers.0.q_proj.lora_A.weight", {4, 37}, rng);
  m.add("layers.0.q_proj.lora_B.weight", {29, 4}, rng);
  return m;
}

/// The distance between a and b in units in the last place of b.
double ulps(float a, float b) {
  return std::abs(static_cast<double>(a) - b) /
         (std::nextafter(std::abs(b), std::numeric_limits<float>::infinity()) - std::abs(b));
}

}  // namespace

TEST_CASE("AdamW: the first step from zero moments is -lr*g/(|g| + eps) (T8.4)",
          "[train][adamw]") {
  // g = 0.5, lr = 1e-3: -9.99999980e-4 (and -2e-5 more with weight decay 0.01 at theta = 2).
  for (const double decay : {0.0, 0.01}) {
    const float theta0 = decay == 0.0 ? 0.0f : 2.0f;
    std::vector<float> value{theta0}, grad{0.5f};
    const train::ParameterList params{{"w", {1}, value, grad}};
    train::AdamW adam(params, {.weight_decay = decay}, kernels::Isa::reference);
    adam.step(params, 1e-3);
    const double expected = -1e-3 * decay * theta0 - 1e-3 * 0.5 / (0.5 + 1e-8);
    CAPTURE(decay, value[0]);
    if (decay == 0.0)
      CHECK(ulps(value[0], static_cast<float>(expected)) <= 2.0);
    else  // θ stays near 2: the change is resolved to FP32's step there, 2^-22
      CHECK(std::abs((static_cast<double>(value[0]) - theta0) - expected) <= 0x1p-22);
    CHECK(adam.steps() == 1);
  }
}

TEST_CASE("AdamW: every kernel path follows the formula in double, tails in n",
          "[train][adamw][kernels]") {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const index_t n : {1, 3, 4, 5, 15, 16, 17, 63, 1000 + 3}) {
    CAPTURE(n);
    std::vector<float> theta(static_cast<std::size_t>(n)), g(theta.size()), m(theta.size()),
        v(theta.size());
    for (std::size_t i = 0; i < theta.size(); ++i) {
      theta[i] = normal(rng);
      g[i] = normal(rng) * (i % 7 == 0 ? 1e-6f : 1.0f);  // small gradients: ε matters
      m[i] = 0.1f * normal(rng);
      v[i] = std::abs(normal(rng)) * 1e-3f;
    }
    const kernels::AdamWConstants c{.decay = 0.999f, .step_size = 0.01f, .bias2_sqrt = 0.25f};
    std::vector<float> ref_theta = theta, ref_m = m, ref_v = v;
    kernels::reference::adamw_step(c, n, ref_theta.data(), g.data(), ref_m.data(), ref_v.data());
    for (const kernels::Isa isa : kernels::available_isas()) {
      CAPTURE(kernels::to_string(isa));
      std::vector<float> p_theta = theta, p_m = m, p_v = v;
      kernels::adamw_step_for(isa)(c, n, p_theta.data(), g.data(), p_m.data(), p_v.data());
      for (std::size_t i = 0; i < theta.size(); ++i) {
        // The formula in double from the same FP32 constants. Each FP32 step rounds once, or
        // less where a path fuses a multiply-add (u = 2^-24): m's sum errs by at most 2u of
        // its terms' magnitudes (they may cancel), v's terms do not cancel, and θ's error is
        // a few u of its terms plus what m's error moves the update by.
        constexpr double u = 0x1p-24;
        const double t = static_cast<double>(theta[i]) * c.decay;
        const double m_terms[] = {static_cast<double>(c.beta1) * m[i],
                                  static_cast<double>(c.one_minus_beta1) * g[i]};
        const double mi = m_terms[0] + m_terms[1];
        const double vi = static_cast<double>(c.beta2) * v[i] +
                          static_cast<double>(c.one_minus_beta2) * g[i] * g[i];
        const double denom = std::sqrt(vi) / c.bias2_sqrt + c.eps;
        const double update = c.step_size * mi / denom;
        const double m_error = 2 * u * (std::abs(m_terms[0]) + std::abs(m_terms[1]));
        CHECK(std::abs(p_m[i] - mi) <= m_error);
        CHECK(std::abs(p_v[i] - vi) <= 3 * u * vi);
        CHECK(std::abs(p_theta[i] - (t - update)) <=
              8 * u * (std::abs(t) + std::abs(update)) + 2 * c.step_size * m_error / denom);
      }
      if (QLR_ARCH_X86 && isa == kernels::Isa::portable) {
        // SSE2 has no fused multiply-add and divides exactly: the reference's FP32 steps.
        CHECK(p_theta == ref_theta);
        CHECK(p_m == ref_m);
        CHECK(p_v == ref_v);
      }
    }
  }
}

TEST_CASE("AdamW: 10 steps, save, restore, 10 more equal 20 steps bit for bit",
          "[train][adamw]") {
  const qlr::test::TempFolder folder("adamw");
  const train::AdamWOptions options{.beta1 = 0.8, .beta2 = 0.99, .weight_decay = 0.01};
  Model straight = two_tensor_model(3);
  Model resumed = two_tensor_model(3);
  std::mt19937 rng_a(11), rng_b(11);
  train::AdamW adam(straight.parameters(), options);
  for (int i = 0; i < 20; ++i) {
    straight.new_gradients(rng_a);
    adam.step(straight.parameters(), 1e-2 * (1.0 + i));
  }
  {
    train::AdamW first(resumed.parameters(), options);
    for (int i = 0; i < 10; ++i) {
      resumed.new_gradients(rng_b);
      first.step(resumed.parameters(), 1e-2 * (1.0 + i));
    }
    first.save(folder / "adamw.safetensors");
  }
  train::AdamW second(resumed.parameters());  // default options: load brings the saved ones
  second.load(folder / "adamw.safetensors");
  CHECK(second.steps() == 10);
  CHECK(second.options().beta1 == options.beta1);
  CHECK(second.options().weight_decay == options.weight_decay);
  for (int i = 10; i < 20; ++i) {
    resumed.new_gradients(rng_b);
    second.step(resumed.parameters(), 1e-2 * (1.0 + i));
  }
  CHECK(second.steps() == 20);
  CHECK(resumed.values == straight.values);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(std::ranges::equal(second.first_moment(i), adam.first_moment(i)));
    CHECK(std::ranges::equal(second.second_moment(i), adam.second_moment(i)));
  }
}

TEST_CASE("AdamW: a NaN or Inf gradient is refused by name and changes nothing",
          "[train][adamw]") {
  Model model = two_tensor_model(4);
  train::AdamW adam(model.parameters());
  adam.step(model.parameters(), 1e-3);
  const auto values = model.values;
  const std::vector<float> m(adam.first_moment(1).begin(), adam.first_moment(1).end());
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity()}) {
    model.grads[1][57] = bad;
    CHECK_THROWS_WITH(adam.step(model.parameters(), 1e-3),
                      Catch::Contains("gradient of \"layers.0.q_proj.lora_B.weight\" [57]"));
    CHECK(model.values == values);
    CHECK(std::ranges::equal(adam.first_moment(1), m));
    CHECK(adam.steps() == 1);
  }
}

TEST_CASE("AdamW: bad options, learning rates, lists and state files are qlr::Errors",
          "[train][adamw]") {
  Model model = two_tensor_model(6);
  const auto params = model.parameters();
  CHECK_THROWS_WITH(train::AdamW(params, {.beta1 = 1.0}), Catch::Contains("beta1 = 1"));
  CHECK_THROWS_WITH(train::AdamW(params, {.beta2 = -0.1}), Catch::Contains("beta2 = -0.1"));
  CHECK_THROWS_WITH(train::AdamW(params, {.eps = -1.0}), Catch::Contains("eps = -1"));
  train::AdamW adam(params);
  for (const double lr : {-1e-3, std::numeric_limits<double>::quiet_NaN()})
    CHECK_THROWS_WITH(adam.step(params, lr),
                      Catch::Contains("expected a finite learning rate >= 0"));
  {
    // lr = 0, a warmup's first step: the moments move, the parameters stay (PyTorch).
    Model warm = two_tensor_model(8);
    std::mt19937 rng(2);
    warm.new_gradients(rng);
    const auto p = warm.parameters();
    const std::vector<float> before(p[0].value.begin(), p[0].value.end());
    train::AdamW first(p);
    first.step(p, 0.0);
    CHECK(std::equal(before.begin(), before.end(), p[0].value.begin()));
    CHECK(first.steps() == 1);
    CHECK(first.first_moment(0)[0] == Approx(0.1 * p[0].grad[0]));
  }
  auto renamed = params;
  renamed[1].name = "other";
  CHECK_THROWS_WITH(adam.step(renamed, 1e-3), Catch::Contains("is \"other\""));
  CHECK_THROWS_WITH(adam.step({params[0]}, 1e-3), Catch::Contains("1 parameters; expected the 2"));
  auto twice = params;
  twice[1].name = twice[0].name;
  CHECK_THROWS_WITH(train::AdamW(twice), Catch::Contains("listed twice"));
  auto misshapen = params;
  misshapen[0].shape = {5, 37};
  CHECK_THROWS_WITH(train::AdamW(misshapen), Catch::Contains("expected 185 each"));
  CHECK(adam.steps() == 0);

  // A state of other parameters, or of other shapes, is refused before anything changes.
  const qlr::test::TempFolder folder("adamw-bad");
  adam.step(params, 1e-3);
  adam.save(folder / "state.safetensors");
  Model other = two_tensor_model(6);
  other.names[0] = "layers.0.k_proj.lora_A.weight";
  train::AdamW fresh(other.parameters());
  CHECK_THROWS_WITH(fresh.load(folder / "state.safetensors"),
                    Catch::Contains("no tensor \"layers.0.k_proj.lora_A.weight.exp_avg\""));
  CHECK(fresh.steps() == 0);
  CHECK(fresh.first_moment(1)[0] == 0.0f);
  Model wider;
  std::mt19937 rng(1);
  wider.add("layers.0.q_proj.lora_A.weight", {4, 38}, rng);
  wider.add("layers.0.q_proj.lora_B.weight", {29, 4}, rng);
  train::AdamW wide(wider.parameters());
  CHECK_THROWS_WITH(wide.load(folder / "state.safetensors"), Catch::Contains("expected F32 [4, 38]"));
  qlr::io::SafetensorsWriter foreign;
  foreign.set_metadata("format", "something else");
  foreign.write(folder / "foreign.safetensors");
  CHECK_THROWS_WITH(adam.load(folder / "foreign.safetensors"),
                    Catch::Contains("expected \"qlr.adamw.v1\""));
  CHECK(adam.steps() == 1);
}
