// SPDX-License-Identifier: Apache-2.0
// The per-token row quantizer (ALGORITHMS.md §2.6) on every path this CPU has: codes and
// scales bitwise equal to quant::quantize_per_token over tails in K, ties k + 1/2 (exact
// ones, and values an f32 quotient would round the wrong way), extreme values and zeros;
// NaN/Inf rows give a NaN scale and leave the codes alone.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <catch2/catch.hpp>
#include <xsimd/xsimd.hpp>

#include "qlr/core/numeric.hpp"
#include "qlr/kernels/activation.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
namespace kernels = qlr::kernels;
namespace quant = qlr::quant;

namespace {

constexpr std::int8_t unwritten = 0x55;  // a code no test row produces where it is checked

/// Every row of x through path `isa`'s row kernel, laid out as quant::quantize_per_token's.
quant::QuantizedActivations run_rows(kernels::Isa isa, const Matrix& x, quant::ActivationOptions o) {
  quant::QuantizedActivations a;
  a.rows = x.rows();
  a.cols = x.cols();
  a.bits = o.bits;
  a.codes.assign(static_cast<std::size_t>(x.size()), unwritten);
  a.scales.assign(static_cast<std::size_t>(x.rows()), -1.0f);
  const kernels::QuantizeTokenFn quantize_token = kernels::quantize_token_for(isa);
  for (index_t t = 0; t < x.rows(); ++t)
    a.scales[static_cast<std::size_t>(t)] =
        quantize_token(x.row(t).data(), x.cols(), o.bits, o.clip, a.codes.data() + t * x.cols());
  return a;
}

/// Whether two float vectors hold the same bits.
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

/// Every path's codes and scales equal quant::quantize_per_token's, bit for bit.
void check_every_path(const Matrix& x, quant::ActivationOptions o) {
  const quant::QuantizedActivations want = quant::quantize_per_token(x, o);
  for (const kernels::Isa isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    const quant::QuantizedActivations got = run_rows(isa, x, o);
    CHECK(got.codes == want.codes);
    CHECK(same_bits(got.scales, want.scales));
  }
}

/// One row: `absmax` first (it sets the scale), then `values`.
Matrix row_of(float absmax, const std::vector<float>& values) {
  Matrix x(1, static_cast<index_t>(values.size()) + 1);
  x(0, 0) = absmax;
  for (std::size_t i = 0; i < values.size(); ++i) x(0, static_cast<index_t>(i) + 1) = values[i];
  return x;
}

}  // namespace

TEST_CASE("quantize_token: the portable path is xsimd at this unit's own ISA", "[kernels][activation]") {
  WARN("portable path: xsimd " << xsimd::default_arch::name() << ", "
                               << xsimd::batch<float>::size << " floats per batch");
  CHECK(kernels::is_supported(kernels::Isa::portable));
  CHECK(kernels::quantize_token_for(kernels::Isa::portable) == &kernels::portable::quantize_token);
  CHECK(kernels::quantize_token_for(kernels::Isa::reference) == &kernels::reference::quantize_token);
}

TEST_CASE("quantize_token: every path equals quant::quantize_per_token, tails in K and M",
          "[kernels][activation]") {
  const index_t k = GENERATE(1, 7, 8, 9, 31, 32, 33, 4096 + 7);
  const index_t m = GENERATE(1, 3, 17);
  const int bits = GENERATE(8, 4);
  const float clip = GENERATE(1.0f, 0.6f);
  const std::uint32_t seed = GENERATE(1u, 2u);
  CAPTURE(k, m, bits, clip, seed);
  std::mt19937 rng(seed);
  Matrix x = seed == 1 ? qlr::test::gaussian(rng, m, k) : qlr::test::heavy_tailed(rng, m, k);
  if (m > 1) x.row(1) *= 50.0f;     // an outlier token
  if (m > 2) x.row(2).setZero();    // an all-zero token: s = 1, zero codes
  check_every_path(x, {.bits = bits, .clip = clip});
}

TEST_CASE("quantize_token: exact ties k + 1/2 go to even on every path", "[kernels][activation]") {
  const int bits = GENERATE(8, 4);
  const int exponent = GENERATE(-20, 0, 9);  // power-of-two scales: every x/s below is exact
  CAPTURE(bits, exponent);
  const int max_code = qlr::token_max_code(bits);
  const float step = std::ldexp(1.0f, exponent);
  std::vector<float> ties;
  for (int code = -max_code; code < max_code; ++code)  // −qmax + 1/2 … qmax − 1/2: |x| < qmax·s
    ties.push_back((static_cast<float>(code) + 0.5f) * step);
  const Matrix x = row_of(static_cast<float>(max_code) * step, ties);  // s = step exactly
  const quant::QuantizedActivations want = quant::quantize_per_token(x, {.bits = bits});
  REQUIRE(want.scales[0] == step);
  for (index_t i = 1; i < x.cols(); ++i) {
    CAPTURE(x(0, i));
    CHECK(want.code(0, i) % 2 == 0);  // ties to even, never away from zero
  }
  check_every_path(x, {.bits = bits});
}

TEST_CASE("quantize_token: values a few ulps from a tie k + 1/2 are coded as the exact quotient says",
          "[kernels][activation]") {
  // A scale that is no power of two: x/s is inexact, and for x next to (k + 1/2)·s an f32
  // quotient (x/s or x·(1/s)) often rounds onto the tie, or past it, while the exact one
  // lies just beside it.
  const int bits = GENERATE(8, 4);
  const float absmax = GENERATE(100.3f, 0.0123f, 3.7e5f);
  CAPTURE(bits, absmax);
  const int max_code = qlr::token_max_code(bits);
  const float s = qlr::token_scale(absmax, bits, 1.0f);
  const float inverse = 1.0f / s;
  std::vector<float> values;
  int f32_division_wrong = 0;    // codes of nearbyint(x/s) in f32 that differ from the exact ones
  int f32_reciprocal_wrong = 0;  // the same for nearbyint(x·(1/s))
  for (int code = -max_code; code < max_code; ++code) {
    const double tie = code + 0.5;
    float x = static_cast<float>(tie * s);
    for (int i = 0; i < 4; ++i) x = std::nextafter(x, -INFINITY);
    for (int i = 0; i < 9; ++i, x = std::nextafter(x, INFINITY)) {
      if (std::abs(x) > absmax) continue;
      values.push_back(x);
      const double exact = std::nearbyint(static_cast<double>(x) / s);
      f32_division_wrong += std::nearbyint(x / s) != exact ? 1 : 0;
      f32_reciprocal_wrong += std::nearbyint(x * inverse) != exact ? 1 : 0;
    }
  }
  CAPTURE(values.size(), f32_division_wrong, f32_reciprocal_wrong);
  CHECK(f32_division_wrong > 0);  // the cases under test do occur
  CHECK(f32_reciprocal_wrong > 0);
  const Matrix x = row_of(absmax, values);
  REQUIRE(quant::quantize_per_token(x, {.bits = bits}).scales[0] == s);
  check_every_path(x, {.bits = bits});
}

TEST_CASE("quantize_token: extreme values, subnormals, zeros and saturation", "[kernels][activation]") {
  const float big = std::numeric_limits<float>::max();
  const float tiny = std::numeric_limits<float>::denorm_min();
  const float smallest_normal = std::numeric_limits<float>::min();
  const index_t k = GENERATE(5, 33, 4096 + 7);
  const int bits = GENERATE(8, 4);
  CAPTURE(k, bits);
  std::mt19937 rng(static_cast<std::uint32_t>(k));
  std::uniform_int_distribution<int> pick(0, 5);
  Matrix x(8, k);
  for (index_t i = 0; i < k; ++i) {
    const float sign = (i % 2 == 0) ? 1.0f : -1.0f;
    const float choices[] = {big, -big, tiny, smallest_normal, 0.0f, -0.0f};
    x(0, i) = choices[pick(rng)];               // ±FLT_MAX beside subnormals
    x(1, i) = sign * tiny * static_cast<float>(i % 7);  // subnormals only: s lifted to FLT_MIN
    x(2, i) = 0.0f;                             // zeros
    x(3, i) = -0.0f;                            // negative zeros
    x(4, i) = sign * big;                       // ±FLT_MAX only
    x(5, i) = sign * 3.0f;                      // one magnitude
    x(6, i) = static_cast<float>(i) * 1e-3f - 1.0f;
    x(7, i) = sign * smallest_normal * static_cast<float>(i + 1);
  }
  check_every_path(x, {.bits = bits});
  check_every_path(x, {.bits = bits, .clip = 0.25f});  // saturates at −qmax − 1 and qmax
  // clip·FLT_MAX/qmax far below FLT_MAX: the f32 quotient of FLT_MAX overflows to infinity.
  check_every_path(x, {.bits = bits, .clip = tiny});
}

TEST_CASE("quantize_token: a NaN or an infinity gives a NaN scale and writes no code",
          "[kernels][activation]") {
  const index_t k = GENERATE(1, 9, 33, 4096 + 7);
  const float bad = GENERATE(std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity());
  std::mt19937 rng(static_cast<std::uint32_t>(k));
  for (const index_t where : {index_t{0}, k / 2, k - 1}) {
    for (const kernels::Isa isa : kernels::available_isas()) {
      CAPTURE(k, bad, where, kernels::to_string(isa));
      Matrix x = qlr::test::gaussian(rng, 1, k);
      x(0, where) = bad;
      std::vector<std::int8_t> q(static_cast<std::size_t>(k), unwritten);
      CHECK(std::isnan(kernels::quantize_token_for(isa)(x.data(), k, 8, 1.0f, q.data())));
      CHECK(q == std::vector<std::int8_t>(static_cast<std::size_t>(k), unwritten));
    }
  }
}
