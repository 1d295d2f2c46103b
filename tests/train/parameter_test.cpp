// SPDX-License-Identifier: Apache-2.0
// The parameter list's gradient helpers (global-norm clipping as PyTorch's clip_grad_norm_)
// and the learning-rate schedules of ALGORITHMS.md §8.4.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <numbers>
#include <vector>

#include "qlr/train/parameter.hpp"
#include "qlr/train/schedule.hpp"

namespace train = qlr::train;

TEST_CASE("clip_gradient_norm: scales to the bound above it, leaves gradients below it",
          "[train][parameter]") {
  std::vector<float> a{3.0f, 0.0f}, b{4.0f}, va(2), vb(1);
  const train::ParameterList params{{"a", {2}, va, a}, {"b", {1}, vb, b}};
  CHECK(train::gradient_norm(params) == 5.0);
  CHECK(train::clip_gradient_norm(params, 10.0) == 5.0);  // below: unchanged
  CHECK((a[0] == 3.0f && b[0] == 4.0f));
  CHECK(train::clip_gradient_norm(params, 1.0) == 5.0);
  CHECK(train::gradient_norm(params) == Approx(1.0).epsilon(1e-6));
  CHECK(a[0] / b[0] == Approx(0.75));
  CHECK_THROWS_WITH(train::clip_gradient_norm(params, 0.0), Catch::Contains("max_norm = 0"));
  b[0] = std::numeric_limits<float>::quiet_NaN();
  const float before = a[0];
  CHECK_THROWS_WITH(train::clip_gradient_norm(params, 1.0), Catch::Contains("norm is nan"));
  CHECK(a[0] == before);
}

TEST_CASE("zero_gradients and scale_gradients: accumulation over micro-batches",
          "[train][parameter]") {
  std::vector<float> g{1.0f, 2.0f}, v(2);
  const train::ParameterList params{{"w", {2}, v, g}};
  train::scale_gradients(params, 0.25f);
  CHECK(g == std::vector<float>{0.25f, 0.5f});
  train::zero_gradients(params);
  CHECK(g == std::vector<float>{0.0f, 0.0f});
}

TEST_CASE("Schedules: constant, warmup then constant, and warmup then half a cosine as HF's",
          "[train][schedule]") {
  CHECK(train::ConstantSchedule{.peak = 2e-4}(0) == 2e-4);
  CHECK(train::ConstantSchedule{.peak = 2e-4}(12345) == 2e-4);
  const train::WarmupConstantSchedule w{.peak = 2e-3, .warmup = 10};
  CHECK(w(0) == 0.0);
  CHECK(w(5) == Approx(1e-3));
  CHECK(w(10) == 2e-3);
  CHECK(w(100000) == 2e-3);
  CHECK(train::WarmupConstantSchedule{.peak = 2e-3}(0) == 2e-3);  // no warmup
  const train::WarmupCosineSchedule s{.peak = 1e-3, .warmup = 10, .total = 110};
  s.check();
  CHECK(s(0) == 0.0);  // HF: the first step of a warmup runs at 0
  CHECK(s(5) == Approx(5e-4));
  CHECK(s(10) == 1e-3);
  CHECK(s(60) == Approx(5e-4));  // half way down the cosine
  CHECK(s(35) == Approx(1e-3 * 0.5 * (1.0 + std::cos(std::numbers::pi * 0.25))));
  CHECK(s(110) == 0.0);
  CHECK(s(500) == 0.0);
  CHECK_THROWS_WITH((train::WarmupCosineSchedule{.warmup = 5, .total = 4}.check()),
                    Catch::Contains("warmup = 5, total = 4"));
  CHECK_THROWS_WITH((train::WarmupCosineSchedule{.peak = 0.0}.check()),
                    Catch::Contains("peak = 0"));
}
