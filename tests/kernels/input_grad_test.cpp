// SPDX-License-Identifier: Apache-2.0
// The input-gradient GEMM dX = dY·Ŵ on every ISA path this CPU has: each path bitwise equal
// to a fused multiply-add chain over the dequantized weight (the portable path within its
// derived bound where its ISA does not fuse), that chain within its bound of a double
// product, over shapes with tails in M, N and K and across several tiles; INT4/INT8 packed
// for the integer kernels and every format of the dense kernel; 1, 2 and 3 threads; bad input.
#include "qlr/kernels/input_grad.hpp"

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <catch2/catch.hpp>

#include "qlr/core/parallel.hpp"
#include "qlr/layers/dense_weights.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/nf4.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
namespace kernels = qlr::kernels;

namespace {

using qlr::test::bitwise_equal;
using qlr::test::input;
using qlr::test::output;

/// dX on path `isa`, every element first poisoned with NaN so an unwritten one shows.
Matrix run(const kernels::WeightTiles& w, const Matrix& dy, kernels::Isa isa) {
  Matrix dx = Matrix::Constant(dy.rows(), w.cols, std::numeric_limits<float>::quiet_NaN());
  kernels::input_grad(w, input(dy), output(dx), isa);
  return dx;
}

/// The definition: dx[i, j] = fma chain over t of dy[i, t]·ŵ[t, j], in t order, and the
/// chain's bound against the exact product: |chain − exact| ≤ γ_N·Σ_t |dy·ŵ| (Higham §3.1,
/// γ_N = N·u/(1 − N·u), u = 2^−24), which also bounds a multiply-then-add chain; two chains
/// differ by at most twice it.
class ChainOracle {
 public:
  explicit ChainOracle(Matrix w_hat) : w_(std::move(w_hat)) {}

  /// Checks `dx` of every path: bitwise the chain, or within 2γ_N of it where not exact.
  void check(const kernels::WeightTiles& tiles, const Matrix& dy) const {
    const index_t n = w_.rows(), k = w_.cols();
    Matrix chain(dy.rows(), k);
    MatrixD bound(dy.rows(), k);
    const MatrixD exact = dy.cast<double>() * w_.cast<double>();
    const MatrixD magnitude = dy.cast<double>().cwiseAbs() * w_.cast<double>().cwiseAbs();
    const double u = 0x1p-24,
                 gamma = static_cast<double>(n) * u / (1.0 - static_cast<double>(n) * u);
    for (index_t i = 0; i < dy.rows(); ++i) {
      for (index_t j = 0; j < k; ++j) {
        float acc = 0.0f;
        for (index_t t = 0; t < n; ++t) acc = std::fma(dy(i, t), w_(t, j), acc);
        chain(i, j) = acc;
        bound(i, j) = gamma * magnitude(i, j);
      }
    }
    // A float can hold the bound's value only so finely: a tolerance of a few ulps of the
    // magnitude keeps a bound of 0 from failing on an exactly computed product.
    CHECK(((chain.cast<double>() - exact).cwiseAbs().array() <= bound.array()).all());
    for (const kernels::Isa isa : kernels::available_isas()) {
      CAPTURE(kernels::to_string(isa));
      const Matrix dx = run(tiles, dy, isa);
      if (kernels::input_grad_is_exact(isa)) {
        CHECK(bitwise_equal(dx, chain));
      } else {
        CHECK(((dx.cast<double>() - chain.cast<double>()).cwiseAbs().array() <= 2.0 * bound.array())
                  .all());
      }
    }
  }

 private:
  Matrix w_;
};

/// Quantizes a heavy-tailed N×K weight with `policy`, stores it packed for the integer kernels
/// (DotWeights) or compact for the dense kernel (DenseWeights) and checks dY of every token
/// count in `ms`.
template <bool Packed, class Policy>
void check_storage(const Policy& policy, std::initializer_list<index_t> ms, index_t n, index_t k,
                   std::uint32_t seed) {
  CAPTURE(n, k);
  std::mt19937 rng(seed);
  const auto q = policy.quantize(qlr::test::heavy_tailed(rng, n, k));
  using Format = typename Policy::format;
  const std::conditional_t<Packed, kernels::DotWeights<Format>, qlr::layers::DenseWeights<Format>>
      stored(q);
  const ChainOracle oracle(qlr::quant::dequantize(q));
  for (const index_t m : ms) {
    CAPTURE(m);
    if constexpr (Packed) {
      oracle.check(kernels::weight_tiles(stored.view()), qlr::test::heavy_tailed(rng, m, n));
    } else {
      oracle.check(qlr::layers::weight_tiles(stored), qlr::test::heavy_tailed(rng, m, n));
    }
  }
}

/// check_storage through the integer kernels' packed weight (INT4, INT8).
template <class Policy>
void check_packed(const Policy& policy, std::initializer_list<index_t> ms, index_t n, index_t k,
                  std::uint32_t seed) {
  check_storage<true>(policy, ms, n, k, seed);
}

/// check_storage through the dense kernel's compact weight, any format.
template <class Policy>
void check_dense(const Policy& policy, std::initializer_list<index_t> ms, index_t n, index_t k,
                 std::uint32_t seed) {
  check_storage<false>(policy, ms, n, k, seed);
}

}  // namespace

TEST_CASE("input_grad: decode_tile gives dequantize's values, any block", "[kernels][input_grad]") {
  std::mt19937 rng(1);
  const Matrix w = qlr::test::gaussian(rng, 37, 300);
  const auto check = [](const auto& q) {
    const kernels::DotWeights packed(q);
    const Matrix w_hat = qlr::quant::dequantize(q);
    for (const auto [n0, rows, k0, cols] : {std::array<index_t, 4>{0, 37, 0, 300},
                                            {5, 20, 8, 100},
                                            {16, 21, 296, 4},
                                            {36, 1, 64, 236},
                                            {3, 9, 4, 221}}) {
      CAPTURE(n0, rows, k0, cols);
      Matrix tile = Matrix::Constant(rows, cols, std::numeric_limits<float>::quiet_NaN());
      kernels::decode_tile(packed.view(), n0, rows, k0, cols, tile.data(), cols);
      CHECK(bitwise_equal(tile, Matrix(w_hat.block(n0, k0, rows, cols))));
    }
  };
  const qlr::quant::IntOptions f16{.group_size = 64, .scale_type = qlr::ScaleType::f16};
  check(qlr::quant::IntAsym<4>({.group_size = 32}).quantize(w));
  check(qlr::quant::IntSym<8>(f16).quantize(w));
  check(qlr::quant::IntAsym<3>({.group_size = 32}).quantize(w));
  check(qlr::quant::IntSym<3>(f16).quantize(w));
  check(
      qlr::quant::IntAsym<2>({.group_size = 32, .zero_mode = qlr::ZeroMode::floating}).quantize(w));
  check(qlr::quant::IntSym<2>({.group_size = 0}).quantize(w));
  check(qlr::quant::Nf4({.block_size = 32, .scale_type = qlr::ScaleType::f16}).quantize(w));
}

TEST_CASE(
    "input_grad: every ISA equal to the fused chain, INT2/3/4/8 and NF4 packed, tails in M, N, K",
    "[kernels][input_grad]") {
  // N past 128 and K past 256 take several weight tiles and several column chunks.
  const std::initializer_list<index_t> ms{1, 2, 5, 7, 8, 9, 13, 33};
  for (const index_t n : {1, 15, 17, 129, 300}) {
    for (const index_t k : {40, 100, 264, 520}) {
      const auto seed = static_cast<std::uint32_t>(n * 31 + k);
      check_packed(qlr::quant::IntAsym<4>({.group_size = 32}), ms, n, k, seed);
      check_packed(qlr::quant::IntSym<8>({.group_size = 64}), ms, n, k, seed + 1);
    }
  }
  check_packed(qlr::quant::IntAsym<3>({.group_size = 32}), {1, 9}, 130, 520, 4);
  check_packed(qlr::quant::IntAsym<2>({.group_size = 64}), {2, 17}, 45, 264, 5);
  check_packed(qlr::quant::Nf4({.block_size = 64}), {2, 9}, 45, 264, 6);
  check_packed(qlr::quant::IntSym<4>({.group_size = 0}), {3, 17}, 33, 4096 + 7, 2);
  check_packed(qlr::quant::IntAsym<8>({.group_size = 128}), {6}, 257, 1000, 3);
}

TEST_CASE("input_grad: the dense kernel's formats (INT2, INT3, INT4, NF4)",
          "[kernels][input_grad]") {
  for (const index_t k : {40, 100, 520}) {
    check_dense(qlr::quant::IntAsym<2>({.group_size = 32}), {1, 9, 17}, 130, k, 4);
    check_dense(qlr::quant::IntSym<3>({.group_size = 64}), {1, 9}, 17, k, 5);
    check_dense(qlr::quant::IntAsym<4>({.group_size = 32}), {7}, 129, k, 6);
    check_dense(qlr::quant::Nf4({.block_size = 64}), {2, 33}, 45, k, 7);
  }
}

TEST_CASE("input_grad: bitwise identical for 1, 2 and 3 threads", "[kernels][input_grad]") {
  const int saved = qlr::num_threads();
  std::mt19937 rng(4);
  const kernels::DotWeights packed(
      qlr::quant::IntAsym<4>({.group_size = 64}).quantize(qlr::test::gaussian(rng, 515, 1100)));
  const kernels::DotWeightView view = packed.view();
  for (const index_t m : {3, 70}) {  // 70 tokens over 5 column chunks also splits the tokens
    const Matrix dy = qlr::test::gaussian(rng, m, 515);
    for (const auto isa : kernels::available_isas()) {
      CAPTURE(m, kernels::to_string(isa));
      qlr::set_num_threads(1);
      const Matrix one = run(kernels::weight_tiles(view), dy, isa);
      for (const int threads : {2, 3}) {
        qlr::set_num_threads(threads);
        CHECK(bitwise_equal(run(kernels::weight_tiles(view), dy, isa), one));
      }
    }
  }
  qlr::set_num_threads(saved);
}

TEST_CASE("input_grad: bad shapes and gradients are qlr::Errors", "[kernels][input_grad]") {
  const kernels::DotWeights packed(
      qlr::quant::IntAsym<4>({.group_size = 32}).quantize(Matrix::Ones(8, 64)));
  const kernels::DotWeightView view = packed.view();
  const kernels::WeightTiles tiles = kernels::weight_tiles(view);
  Matrix dy = Matrix::Ones(2, 8);
  Matrix dx(2, 64);
  Matrix wrong_n = Matrix::Ones(2, 9);
  CHECK_THROWS_WITH(kernels::input_grad(tiles, input(wrong_n), output(dx)),
                    Catch::Contains("dy.cols = 9; expected out_features N = 8"));
  Matrix wrong_k(2, 63);
  CHECK_THROWS_WITH(kernels::input_grad(tiles, input(dy), output(wrong_k)),
                    Catch::Contains("dx.cols = 63; expected in_features K = 64"));
  Matrix wrong_m(3, 64);
  CHECK_THROWS_WITH(kernels::input_grad(tiles, input(dy), output(wrong_m)),
                    Catch::Contains("dx.rows = 3, dy.rows = 2"));
  for (const float bad :
       {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    Matrix poisoned = dy;
    poisoned(1, 5) = bad;
    dx.setConstant(7.0f);
    CHECK_THROWS_WITH(
        kernels::input_grad(tiles, input(poisoned), output(dx)),
        Catch::Contains("dy(1, 5) = ") && Catch::Contains("expected finite gradients"));
    CHECK((dx.array() == 7.0f).all());  // nothing written
  }
}
