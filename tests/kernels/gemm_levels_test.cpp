// SPDX-License-Identifier: Apache-2.0
// NF4 GEMM (the levels kernel: ŵ = s·levels[u] looked up and multiplied in FP32) on every ISA
// path this CPU has: bitwise equal to the reference, which follows one fixed sequence of
// FMAs, over shapes with tails in M, N and K, block sizes and scale types; the reference
// within its FP32 bound of a double oracle; per-token codes; the epilogue, thread counts
// and bad input.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include <catch2/catch.hpp>

#include "qlr/core/parallel.hpp"
#include "qlr/kernels/gemm.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/nf4.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
namespace kernels = qlr::kernels;
namespace quant = qlr::quant;

namespace {

using Nf4Weights = kernels::DotWeights<quant::Nf4::format>;

/// Y on path `isa` for FP32 x or per-token codes, every output first poisoned with NaN.
template <class X>
Matrix run_levels(const Nf4Weights& w, const X& x, index_t m, kernels::Isa isa,
                  const qlr::Epilogue& e = {}) {
  Matrix y = Matrix::Constant(m, w.rows(), std::numeric_limits<float>::quiet_NaN());
  if constexpr (std::is_same_v<X, Matrix>)
    kernels::gemm(w, qlr::test::input(x), qlr::test::output(y), e, isa);
  else
    kernels::gemm(w, x, qlr::test::output(y), e, isa);
  return y;
}

/// The reference within its FP32 bound of X·Ŵᵀ in double: each group's four chains take
/// ≤ g/4 FMAs, two adds join them and one FMA per group adds them to the row's sum, so
/// |y − ref| ≤ (g/4 + groups + 3)·2^−24·Σ|ŵ·x| (Higham §3.1, with u = 2^−24; 2^−23 here).
void check_oracle(const Matrix& y, const MatrixD& x,
                  const qlr::QuantizedMatrix<quant::Nf4::format>& q) {
  const MatrixD w_hat = quant::dequantize(q).cast<double>();
  const double g = static_cast<double>(q.group_size());
  const double gamma =
      (g / 4 + static_cast<double>(qlr::group_count(q.cols(), q.group_size())) + 3) * 0x1p-23;
  qlr::test::check_within_bound(y, x * w_hat.transpose(),
                                x.cwiseAbs() * w_hat.cwiseAbs().transpose(), gamma,
                                "NF4 GEMM outside the FP32 bound of the oracle");
}

/// For each token count in `ms`: FP32 and INT8/INT4-coded activations against an NF4 weight
/// (N×K, blocks of `block`), the reference within the oracle's bound and every path bitwise
/// equal to it.
void check_every_isa(index_t n, index_t k, index_t block, qlr::ScaleType scale_type,
                     std::initializer_list<index_t> ms, std::uint32_t seed) {
  CAPTURE(n, k, block);
  std::mt19937 rng(seed);
  const quant::Nf4 policy({.block_size = block, .scale_type = scale_type});
  const auto q = policy.quantize(qlr::test::heavy_tailed(rng, n, k));
  const Nf4Weights packed(q);
  for (const index_t m : ms) {
    CAPTURE(m);
    const Matrix x = qlr::test::heavy_tailed(rng, m, k);
    const Matrix ref = run_levels(packed, x, m, kernels::Isa::reference);
    check_oracle(ref, x.cast<double>(), q);
    for (const int bits : {8, 4}) {
      const auto a = quant::quantize_per_token(x, {.bits = bits});
      const Matrix coded = run_levels(packed, a.view(), m, kernels::Isa::reference);
      check_oracle(coded, quant::dequantize(a).cast<double>(), q);
      for (const kernels::Isa isa : kernels::available_isas()) {
        CAPTURE(kernels::to_string(isa), bits);
        CHECK(qlr::test::bitwise_equal(run_levels(packed, a.view(), m, isa), coded));
      }
    }
    for (const kernels::Isa isa : kernels::available_isas()) {
      CAPTURE(kernels::to_string(isa));
      CHECK(qlr::test::bitwise_equal(run_levels(packed, x, m, isa), ref));
    }
  }
}

}  // namespace

TEST_CASE("gemm_levels: NF4 on every ISA bitwise equal to the reference, tails in M, N, K",
          "[kernels][gemm_levels]") {
  for (const index_t n : {1, 15, 16, 17, 70})
    for (const index_t k : {64, 100, 257})
      check_every_isa(n, k, 64, qlr::ScaleType::f32, {1, 2, 3, 5, 9},
                      static_cast<std::uint32_t>(n + k));
  check_every_isa(33, 512, 32, qlr::ScaleType::f16, {1, 4}, 7);
  check_every_isa(40, 4096 + 7, 128, qlr::ScaleType::f16, {1, 3}, 8);
  check_every_isa(17, 300, 0, qlr::ScaleType::f32, {2}, 9);  // one block per row
}

TEST_CASE("gemm_levels: every level and its packed form come back", "[kernels][gemm_levels]") {
  // A row holding each of the 16 levels exactly: w = levels[u], absmax 1.
  const index_t k = 64;
  Matrix w(3, k);
  for (index_t i = 0; i < k; ++i) w(0, i) = quant::Nf4::levels[static_cast<std::size_t>(i % 16)];
  w.row(1) = -w.row(0);
  w.row(2).setZero();
  const auto q = quant::Nf4().quantize(w);
  const Nf4Weights packed(q);
  const auto back = packed.unpack();
  CHECK(back.parts().codes == q.parts().codes);
  CHECK(back.parts().scales == q.parts().scales);
  const Matrix x = Matrix::Identity(k, k);  // y = Ŵᵀ, column by column
  for (const kernels::Isa isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    const Matrix y = run_levels(packed, x, k, isa);
    CHECK(qlr::test::bitwise_equal(Matrix(y.transpose()), quant::dequantize(q)));
  }
}

TEST_CASE("gemm_levels: bias, low-rank epilogue and thread counts", "[kernels][gemm_levels]") {
  std::mt19937 rng(3);
  const index_t m = 7, n = 45, k = 320, r = 4;
  const auto q = quant::Nf4().quantize(qlr::test::gaussian(rng, n, k));
  const Nf4Weights packed(q);
  const Matrix x = qlr::test::gaussian(rng, m, k);
  const Matrix bt = qlr::test::gaussian(rng, r, n), t = qlr::test::gaussian(rng, m, r);
  const Matrix bias = qlr::test::gaussian(rng, 1, n);
  const qlr::LowRankTerm low_rank{qlr::test::input(bt), qlr::test::input(t)};
  const qlr::Epilogue e{.bias = bias.data(), .low_rank = &low_rank};
  const Matrix y = run_levels(packed, x, m, kernels::Isa::reference, e);
  const MatrixD ref = x.cast<double>() * quant::dequantize(q).cast<double>().transpose() +
                      t.cast<double>() * bt.cast<double>() +
                      MatrixD::Ones(m, 1) * bias.cast<double>();
  CHECK((y.cast<double>() - ref).norm() <= 1e-5 * ref.norm());
  const int threads = qlr::num_threads();
  for (const int count : {1, 2, 3}) {
    qlr::set_num_threads(count);
    for (const kernels::Isa isa : kernels::available_isas())
      CHECK(qlr::test::bitwise_equal(run_levels(packed, x, m, isa, e), y));
  }
  qlr::set_num_threads(threads);
}

TEST_CASE("gemm_levels: bad shapes and activations are qlr::Errors", "[kernels][gemm_levels]") {
  std::mt19937 rng(4);
  const Nf4Weights packed(quant::Nf4().quantize(qlr::test::gaussian(rng, 20, 64)));
  Matrix x = qlr::test::gaussian(rng, 2, 64);
  x(1, 5) = std::numeric_limits<float>::infinity();
  Matrix y(2, 20);
  CHECK_THROWS_WITH(kernels::gemm(packed, qlr::test::input(x), qlr::test::output(y)),
                    Catch::Contains("x(1, 5) = inf; expected finite activations"));
  const Matrix narrow = qlr::test::gaussian(rng, 2, 63);
  CHECK_THROWS_AS(kernels::gemm(packed, qlr::test::input(narrow), qlr::test::output(y)),
                  qlr::Error);
  CHECK_THROWS_WITH(
      Nf4Weights(quant::Nf4({.block_size = 48}).quantize(qlr::test::gaussian(rng, 4, 96))),
      Catch::Contains("group_size = 48; expected a multiple of 32"));
}
