// SPDX-License-Identifier: Apache-2.0
// The online rotation on every kernel path: the fast Walsh–Hadamard transform (worked
// example, the radix-2 reference bit for bit, H_K ⊗ H_{2^k} for any LLM width) and
// rotate-then-quantize of activations (the per-token row quantizer). Also cross-built for
// arm64 and run under qemu (.ci/arm64), where the paths are reference and portable.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "qlr/core/error.hpp"
#include "qlr/kernels/fwht.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/layers/rotated_activations.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/rotate/hadamard_matrix.hpp"
#include "qlr/rotate/hadamard_transform.hpp"
#include "qlr/rotate/rotation.hpp"
#include "qlr_test_support.hpp"
#include "rotate_test_util.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
namespace kernels = qlr::kernels;
namespace quant = qlr::quant;
namespace rotate = qlr::rotate;

namespace {

/// (H_K ⊗ H_{2^k})·x, or its transpose times x, in doubles without forming the n×n matrix:
/// with X the K×2^k row-major view of x, (A ⊗ B)·x is A·X·Bᵀ (H_{2^k} is symmetric).
Eigen::VectorXd kronecker_hadamard_times(const rotate::HadamardMatrix& hk, int log2p,
                                         const Eigen::VectorXd& x, bool transpose) {
  const index_t p = index_t{1} << log2p;
  MatrixD a(hk.order, hk.order);
  for (index_t i = 0; i < hk.order; ++i)
    for (index_t j = 0; j < hk.order; ++j) a(i, j) = hk(i, j);
  if (transpose) a.transposeInPlace();
  MatrixD sylvester(p, p);
  for (index_t i = 0; i < p; ++i)
    for (index_t j = 0; j < p; ++j)
      sylvester(i, j) = (__builtin_popcountll(static_cast<unsigned long long>(i & j)) & 1) != 0 ? -1 : 1;
  using RowMajorD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const RowMajorD y = a * Eigen::Map<const RowMajorD>(x.data(), hk.order, p) * sylvester;
  return Eigen::Map<const Eigen::VectorXd>(y.data(), y.size());
}

/// Relative 2-norm error of `got` against `want`.
double relative_error(const Eigen::VectorXd& got, const Eigen::VectorXd& want) {
  return (got - want).norm() / want.norm();
}

}  // namespace

TEST_CASE("FWHT: the worked example and the dense Sylvester product on every path", "[rotate][fwht]") {
  for (const kernels::Isa isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    const kernels::FwhtFn fwht = kernels::fwht_for(isa);
    float x[4] = {1, 2, 3, 4};
    fwht(x, 2, 1.0f);
    CHECK(std::vector<float>(x, x + 4) == std::vector<float>{10, -2, -4, 0});
    std::mt19937 rng(7);
    for (int log2n = 0; log2n <= 10; ++log2n) {
      CAPTURE(log2n);
      const index_t n = index_t{1} << log2n;
      std::uniform_int_distribution<int> small(-8, 8);
      std::vector<float> v(static_cast<std::size_t>(n));
      for (float& e : v) e = static_cast<float>(small(rng));
      const Eigen::VectorXd want = qlr::test::kronecker_hadamard(rotate::find_hadamard(1), log2n) *
                                   Eigen::Map<const Eigen::VectorXf>(v.data(), n).cast<double>();
      fwht(v.data(), log2n, 1.0f);  // integers below 2^24: exact
      CHECK(Eigen::Map<const Eigen::VectorXf>(v.data(), n).cast<double>() == want);
    }
  }
}

TEST_CASE("FWHT: every path equals the radix-2 reference bit for bit, 2 to 2^16", "[rotate][fwht]") {
  std::mt19937 rng(11);
  for (int log2n = 1; log2n <= 16; ++log2n) {
    CAPTURE(log2n);
    const index_t n = index_t{1} << log2n;
    const Matrix x = qlr::test::gaussian(rng, 1, n);
    std::vector<float> want(x.data(), x.data() + n);
    const float scale = 1.0f / std::sqrt(static_cast<float>(n));
    kernels::reference::fwht(want.data(), log2n, scale);
    for (const kernels::Isa isa : kernels::available_isas()) {
      CAPTURE(kernels::to_string(isa));
      std::vector<float> got(x.data(), x.data() + n);
      kernels::fwht_for(isa)(got.data(), log2n, scale);
      CHECK(got == want);
      // Ĥ is orthogonal and symmetric: it keeps the norm, and applied twice gives x back.
      const Eigen::Map<const Eigen::VectorXf> once(got.data(), n);
      CHECK(std::abs(once.norm() - x.norm()) <= 1e-6 * x.norm());
      kernels::fwht_for(isa)(got.data(), log2n, scale);
      CHECK((Eigen::Map<const Eigen::VectorXf>(got.data(), n) - x.row(0).transpose()).norm() <= 1e-6 * x.norm());
    }
  }
}

TEST_CASE("HadamardTransform: K*2^k equals the normalized Kronecker product and the reference path bit for bit", "[rotate][fwht]") {
  std::mt19937 rng(5);
  for (const index_t k : {1, 12, 20, 28, 40, 172, 344}) {
    for (int log2p = 0; log2p <= 6; ++log2p) {
      const index_t n = k << log2p;
      CAPTURE(k, log2p, n);
      const rotate::HadamardFactor factor = rotate::hadamard_factor(n);
      const rotate::HadamardMatrix hk = rotate::find_hadamard(factor.order);
      const double norm = std::sqrt(static_cast<double>(n));
      // The dense product itself once, small enough to build: the factored oracle is its twin.
      if (n <= 512) {
        const MatrixD dense = qlr::test::kronecker_hadamard(hk, factor.log2_pow2);
        const Eigen::VectorXd e = Eigen::VectorXd::LinSpaced(n, -1.0, 2.0);
        CHECK(relative_error(kronecker_hadamard_times(hk, factor.log2_pow2, e, false), dense * e) < 1e-13);
        CHECK(relative_error(kronecker_hadamard_times(hk, factor.log2_pow2, e, true),
                             dense.transpose() * e) < 1e-13);
      }
      const Matrix x = qlr::test::gaussian(rng, 3, n);
      Matrix reference_forward = x;
      Matrix reference_transposed = x;
      rotate::HadamardTransform(n, kernels::Isa::reference).apply_rows(reference_forward, false);
      rotate::HadamardTransform(n, kernels::Isa::reference).apply_rows(reference_transposed, true);
      for (const kernels::Isa isa : kernels::available_isas()) {
        CAPTURE(kernels::to_string(isa));
        const rotate::HadamardTransform transform(n, isa);
        for (const bool transpose : {false, true}) {
          CAPTURE(transpose);
          Matrix y = x;
          transform.apply_rows(y, transpose);
          CHECK(y == (transpose ? reference_transposed : reference_forward));  // bit for bit
          for (index_t r = 0; r < x.rows(); ++r) {
            const Eigen::VectorXd xr = x.row(r).transpose().cast<double>();
            const Eigen::VectorXd want =
                kronecker_hadamard_times(hk, factor.log2_pow2, xr, transpose) / norm;
            CHECK(relative_error(y.row(r).transpose().cast<double>(), want) <= 1e-6);
          }
          transform.apply_rows(y, !transpose);  // the inverse
          CHECK((y - x).norm() <= 1e-6 * x.norm());
        }
      }
    }
  }
}

TEST_CASE("HadamardTransform: 11008 = 172*64 keeps norms and inverts", "[rotate][fwht]") {
  std::mt19937 rng(3);
  const rotate::HadamardTransform transform(11008);
  const Matrix x = qlr::test::gaussian(rng, 5, 11008);
  Matrix y = x;
  transform.apply_rows(y);
  for (index_t r = 0; r < x.rows(); ++r)
    CHECK(std::abs(y.row(r).norm() - x.row(r).norm()) <= 1e-6 * x.row(r).norm());
  transform.apply_rows(y, true);
  CHECK((y - x).norm() <= 1e-6 * x.norm());
}

TEST_CASE("HadamardTransform: bad input is refused and loses nothing", "[rotate][fwht]") {
  const rotate::HadamardTransform transform(64);
  Matrix wrong(2, 63);
  CHECK_THROWS_WITH(transform.apply_rows(wrong), Catch::Contains("rows of 63 values") && Catch::Contains("n = 64"));
  std::mt19937 rng(9);
  for (const float bad : {std::nanf(""), INFINITY}) {
    Matrix x = qlr::test::gaussian(rng, 37, 64);
    x(23, 5) = bad;
    const Matrix before = x;
    CHECK_THROWS_WITH(transform.apply_rows(x), Catch::Contains("row 23") && Catch::Contains("NaN or an infinity"));
    x(23, 5) = 0.0f;  // compare the finite rest: rows already rotated were rotated back
    Matrix expected = before;
    expected(23, 5) = 0.0f;
    CHECK((x - expected).norm() <= 1e-6 * expected.norm());
  }
  Matrix empty(0, 64);
  CHECK_NOTHROW(transform.apply_rows(empty));
}

TEST_CASE("Rotation: rotate-then-quantize equals the two steps and leaves x alone", "[rotate][online]") {
  std::mt19937 rng(6);
  for (const index_t n : {172, 4096}) {
    const rotate::RandomizedHadamard r(n, 9);
    const Matrix x = qlr::test::tokens_with_outliers(rng, 5, n);
    for (const int bits : {8, 4}) {
      CAPTURE(n, bits);
      const quant::QuantizedActivations fused = qlr::layers::rotate_quantize_per_token(r, x, {.bits = bits});
      Matrix rotated = x;
      rotate::rotate_rows(r, rotated);
      const quant::QuantizedActivations two_steps = quant::quantize_per_token(rotated, {.bits = bits});
      CHECK(fused.codes == two_steps.codes);
      CHECK(fused.scales == two_steps.scales);
    }
  }
  const rotate::Hadamard h(64);
  Matrix x = qlr::test::gaussian(rng, 3, 64);
  CHECK_THROWS_WITH(qlr::layers::rotate_quantize_per_token(h, Matrix(2, 63)), Catch::Contains("n = 64"));
  x(2, 9) = -INFINITY;
  CHECK_THROWS_WITH(qlr::layers::rotate_quantize_per_token(h, x), Catch::Contains("row 2"));
  CHECK_THROWS_WITH(qlr::layers::rotate_quantize_per_token(h, x, {.bits = 3}), Catch::Contains("bits = 3"));
}

TEST_CASE("quantize_activations: every kernel path gives quant::quantize_per_token's codes and errors",
          "[rotate][online]") {
  std::mt19937 rng(12);
  for (const index_t k : {1, 7, 33, 4096 + 7}) {
    for (const index_t m : {1, 3, 17}) {
      Matrix x = qlr::test::heavy_tailed(rng, m, k);
      x.row(m / 2) *= 40.0f;
      for (const int bits : {8, 4}) {
        const quant::QuantizedActivations want = quant::quantize_per_token(x, {.bits = bits});
        for (const qlr::kernels::Isa isa : qlr::kernels::available_isas()) {
          CAPTURE(k, m, bits, qlr::kernels::to_string(isa));
          const quant::QuantizedActivations got = qlr::layers::quantize_activations(x, {.bits = bits}, isa);
          CHECK(got.codes == want.codes);
          CHECK(got.scales == want.scales);
        }
      }
    }
  }
  // The fused rotation codes on every path as on the reference one.
  const rotate::RandomizedHadamard r(172, 9);
  const Matrix tokens = qlr::test::tokens_with_outliers(rng, 5, 172);
  const auto reference = qlr::layers::rotate_quantize_per_token(r, tokens, {.bits = 4}, qlr::kernels::Isa::reference);
  for (const qlr::kernels::Isa isa : qlr::kernels::available_isas()) {
    CAPTURE(qlr::kernels::to_string(isa));
    const auto fused = qlr::layers::rotate_quantize_per_token(r, tokens, {.bits = 4}, isa);
    CHECK(fused.codes == reference.codes);
    CHECK(fused.scales == reference.scales);
  }
  // The errors of quant::quantize_per_token, under this entity's name.
  Matrix x = qlr::test::gaussian(rng, 3, 33);
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    x(2, 17) = bad;
    for (const qlr::kernels::Isa isa : qlr::kernels::available_isas()) {
      CAPTURE(bad, qlr::kernels::to_string(isa));
      CHECK_THROWS_WITH(qlr::layers::quantize_activations(x, {}, isa),
                        "layers::quantize_activations: row 2 of x holds a NaN or an infinity; "
                        "expected finite activations");
    }
  }
  x(2, 17) = 0.0f;
  CHECK_THROWS_WITH(qlr::layers::quantize_activations(x, {.bits = 3}),
                    "layers::quantize_activations: bits = 3; expected 8 or 4");
  CHECK_THROWS_WITH(qlr::layers::quantize_activations(x, {.clip = 1.5f}),
                    "layers::quantize_activations: clip = 1.5; expected a value in (0, 1]");
  CHECK_THROWS_WITH(qlr::layers::quantize_activations(Matrix(0, 4)),
                    "layers::quantize_activations: x is 0x4; expected a non-empty matrix");
}
