// SPDX-License-Identifier: Apache-2.0
// Weight-only INT4/INT8 GEMM on every ISA path this CPU has, against the reference over
// shapes with tails in M, N and K, ragged groups, extreme codes, thread counts and bad input.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <catch2/catch.hpp>

#include "qlr/core/parallel.hpp"
#include "qlr/kernels/gemm.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
namespace kernels = qlr::kernels;

namespace {

using qlr::test::input;
using qlr::test::output;

/// Y = X·Ŵᵀ in double from the dequantized weight: the oracle, independent of any kernel.
MatrixD oracle(const Matrix& x, const Matrix& w_hat) {
  return x.cast<double>() * w_hat.cast<double>().transpose();
}

/// |y − y_ref| ≤ γ·magnitude per output, γ = (K/8 + 16)·2^-24: the worst-case bound of an
/// FP32 sum of K terms split over 8 to 32 lanes and reduced by a tree (Higham §3.1), where
/// `magnitude` is the sum of the terms' absolute values.
void check_within(const Matrix& y, const MatrixD& ref, const Matrix& x, const MatrixD& magnitude) {
  const double gamma = (static_cast<double>(x.cols()) / 8 + 16) * 0x1p-24;
  qlr::test::check_within_bound(y, ref, magnitude, gamma,
                                "output outside the FP32 summation bound");
}

/// The bound for kernels that sum ŵ_i·x_i: magnitude Σ_i |ŵ_i·x_i|. One dropped or doubled
/// term of a K = 4096 row is 30× larger than this.
void check_close(const Matrix& y, const MatrixD& ref, const Matrix& x, const Matrix& w_hat) {
  check_within(y, ref, x, x.cast<double>().cwiseAbs() * w_hat.cast<double>().cwiseAbs().transpose());
}

/// The AVX2 INT4 path (also AVX-VNNI's) factors each group's zero point out,
/// y = Σ_l s_l·(Σ u·x − z_l·Σ x), so its terms are s·u·x and s·z·x, not ŵ·x: the same γ
/// applies to Σ_i |s|·(u_i + |z|)·|x_i|, which is ≥ Σ |ŵ_i·x_i|.
bool factors_zero_points(kernels::Isa isa, int bits) {
  return bits == 4 && (isa == kernels::Isa::avx2 || isa == kernels::Isa::avx_vnni);
}

/// Σ_i |s|·(u_i + |z|)·|x_i| per output, from the packed codes and group parameters.
MatrixD factored_magnitude(const kernels::PackedView& v, const Matrix& x) {
  MatrixD terms(v.rows, v.cols);
  for (index_t o = 0; o < v.rows; ++o) {
    for (index_t i = 0; i < v.cols; ++i) {
      const index_t at = v.params(o, i / (v.blocks_per_group * kernels::block_codes));
      terms(o, i) = std::abs(double{v.scales[at]}) * (v.code(o, i) + std::abs(double{v.zeros[at]}));
    }
  }
  return x.cast<double>().cwiseAbs() * terms.transpose();
}

/// Packs `q` and checks Y = X·Ŵᵀ on every ISA path against the oracle.
template <class Format>
void check_packed_every_isa(const qlr::QuantizedMatrix<Format>& q, const Matrix& x) {
  const kernels::PackedWeights packed(q);
  const Matrix w_hat = qlr::quant::dequantize(q);
  const MatrixD ref = oracle(x, w_hat);
  for (const kernels::Isa isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    Matrix y = Matrix::Constant(x.rows(), q.rows(), std::numeric_limits<float>::quiet_NaN());
    kernels::gemm(packed, input(x), output(y), {}, isa);
    if (factors_zero_points(isa, Format::bits))
      check_within(y, ref, x, factored_magnitude(packed.view(), x));
    else
      check_close(y, ref, x, w_hat);
  }
}

/// Quantizes a heavy-tailed N×K weight with `policy` and checks M tokens on every path.
template <class Policy>
void check_every_isa(const Policy& policy, index_t m, index_t n, index_t k, std::uint32_t seed) {
  std::mt19937 rng(seed);
  const Matrix w = qlr::test::heavy_tailed(rng, n, k);
  const Matrix x = qlr::test::gaussian(rng, m, k);
  check_packed_every_isa(policy.quantize(w), x);
}

template <class Policy>
void sweep(std::initializer_list<index_t> ms, std::initializer_list<index_t> ns,
           std::initializer_list<index_t> ks, std::initializer_list<index_t> gs) {
  qlr::test::for_each_packable_shape(
      ms, ns, ks, gs, [](index_t m, index_t n, index_t k, index_t g) {
        check_every_isa(Policy({.group_size = g}), m, n, k,
                        static_cast<std::uint32_t>(m * 131 + n * 17 + k + g));
      });
}

}  // namespace

TEST_CASE("kernels: the paths this CPU has", "[kernels][isa]") {
  std::string names;
  for (const auto isa : kernels::available_isas())
    names += std::string(kernels::to_string(isa)) + " ";
  WARN("kernel paths under test: " << names << "(best: " << kernels::to_string(kernels::best_isa())
                                   << ")");
  CHECK(kernels::available_isas().front() == kernels::Isa::reference);
  if (const char* required = std::getenv("QLR_REQUIRE_ISAS")) {  // e.g. avx512_vnni on CI
    CHECK(kernels::is_supported(kernels::parse_isa(required)));
  }
}

TEST_CASE("reference gemm_wq: equals the double product of the dequantized weight",
          "[kernels][gemm_wq]") {
  std::mt19937 rng(1);
  const Matrix w = qlr::test::heavy_tailed(rng, 19, 100);
  const Matrix x = qlr::test::gaussian(rng, 3, 100);
  const auto q = qlr::quant::IntAsym<4>({.group_size = 32}).quantize(w);
  const kernels::PackedWeights packed(q);
  Matrix y(3, 19);
  kernels::gemm(packed, input(x), output(y), {}, kernels::Isa::reference);
  const MatrixD ref = oracle(x, qlr::quant::dequantize(q));
  CHECK((y.cast<double>() - ref).cwiseAbs().maxCoeff() <=
        ref.cwiseAbs().maxCoeff() * 0x1p-23);  // one f32 rounding of a double sum
}

TEST_CASE("PackedWeights: unpack() returns the QuantizedMatrix byte for byte",
          "[kernels][packed]") {
  std::mt19937 rng(2);
  for (const index_t k : {index_t{32}, index_t{100}, index_t{257}}) {
    const Matrix w = qlr::test::gaussian(rng, 7, k);
    const auto q4 = qlr::quant::IntAsym<4>({.group_size = 32}).quantize(w);
    CHECK(kernels::PackedWeights(q4).unpack().parts().codes == q4.parts().codes);
    const auto q8 = qlr::quant::IntSym<8>({.group_size = 0}).quantize(w);
    CHECK(kernels::PackedWeights(q8).unpack().parts().codes == q8.parts().codes);
    CHECK(kernels::PackedWeights(q8).unpack().parts().scales == q8.parts().scales);
  }
}

TEST_CASE("gemm_wq: every ISA within the FP32 bound of the oracle, tails in M, N, K",
          "[kernels][gemm_wq]") {
  const std::initializer_list<index_t> ms{1, 2, 3, 7, 16, 33};
  const std::initializer_list<index_t> ns{1, 15, 16, 17, 255};
  const std::initializer_list<index_t> ks{32, 64, 96, 257, 512};
  const std::initializer_list<index_t> gs{32, 64, 128};
  SECTION("int4 asymmetric") {
    sweep<qlr::quant::IntAsym<4>>(ms, ns, ks, gs);
  }
  SECTION("int4 symmetric") {
    sweep<qlr::quant::IntSym<4>>(ms, ns, ks, gs);
  }
  SECTION("int8 asymmetric") {
    sweep<qlr::quant::IntAsym<8>>(ms, ns, ks, gs);
  }
  SECTION("int8 symmetric") {
    sweep<qlr::quant::IntSym<8>>(ms, ns, ks, gs);
  }
}

TEST_CASE("gemm_wq: the issue's full sweep of shapes", "[kernels][gemm_wq][.slow]") {
  const std::initializer_list<index_t> ms{1, 2, 3, 7, 16, 33, 64, 129};
  const std::initializer_list<index_t> ns{1, 15, 16, 17, 255, 2323};
  const std::initializer_list<index_t> ks{32, 64, 96, 257, 512, 4096};
  const std::initializer_list<index_t> gs{32, 64, 128};
  SECTION("int4 asymmetric") {
    sweep<qlr::quant::IntAsym<4>>(ms, ns, ks, gs);
  }
  SECTION("int8 symmetric") {
    sweep<qlr::quant::IntSym<8>>(ms, ns, ks, gs);
  }
}

TEST_CASE("gemm_wq: large K and N, one group per row and extreme codes", "[kernels][gemm_wq]") {
  check_every_isa(qlr::quant::IntAsym<4>({.group_size = 128}), 3, 2323, 4096, 7);
  check_every_isa(qlr::quant::IntSym<8>({.group_size = 0}), 2, 300, 4096 + 7, 8);
  // Long rows split the tokens into blocks whose activations fit in L2 (8 to 10 tokens at
  // this K): 45 tokens take several blocks and a partial one.
  check_every_isa(qlr::quant::IntAsym<4>({.group_size = 64}), 45, 37, 8192 + 32, 9);
  // Every code at its extremes: a row of ±max values quantizes to codes 0 and 2^b − 1 only.
  Matrix w(8, 96);
  for (index_t i = 0; i < w.size(); ++i) w.data()[i] = (i * 7919) % 3 == 0 ? -1.0f : 1.0f;
  const Matrix x = Matrix::Constant(5, 96, 1e4f);
  check_packed_every_isa(qlr::quant::IntAsym<4>({.group_size = 32}).quantize(w), x);
  check_packed_every_isa(qlr::quant::IntAsym<8>({.group_size = 64}).quantize(w), x);
}

TEST_CASE("gemm_wq: floating zero points, near and far from the codes", "[kernels][gemm_wq]") {
  // QA-LoRA's merge moves zeros off the integers, and an AWQ-style range may put them far
  // outside the codes: ŵ = s·(u − z) must follow z anywhere.
  using Floating = qlr::quant::IntAsym<4>;
  for (const index_t g : {index_t{32}, index_t{128}})
    for (const index_t k : {index_t{96}, index_t{257}, index_t{512}})
      check_every_isa(Floating({.group_size = g, .zero_mode = qlr::ZeroMode::floating}), 3, 17, k,
                      static_cast<std::uint32_t>(g + k));
  std::mt19937 rng(10);
  const Matrix w = qlr::test::heavy_tailed(rng, 9, 160);
  const Matrix x = qlr::test::gaussian(rng, 2, 160);
  for (const float far : {-2000.0f, 40.5f, 7.25f}) {
    CAPTURE(far);
    qlr::QuantizedParts parts =
        Floating({.group_size = 32, .zero_mode = qlr::ZeroMode::floating}).quantize(w).parts();
    parts.zeros.assign(parts.zeros.size(), far);
    check_packed_every_isa(qlr::QuantizedMatrix<Floating::format>(std::move(parts)), x);
  }
}

TEST_CASE("gemm_wq: bias and low-rank epilogue", "[kernels][gemm_wq]") {
  const index_t m = 5, n = 37, k = 160, r = 4;
  const auto [w, x, b, t, bias] = qlr::test::epilogue_operands(3, m, n, k, r);
  const auto q = qlr::quant::IntSym<4>({.group_size = 32}).quantize(w);
  const kernels::PackedWeights packed(q);
  const Matrix w_hat = qlr::quant::dequantize(q);
  const Matrix bt = b.transpose();
  const qlr::LowRankTerm low_rank{input(bt), input(t)};
  const MatrixD ref = oracle(x, w_hat) + t.cast<double>() * b.cast<double>().transpose() +
                      MatrixD::Ones(m, 1) * bias.cast<double>();
  for (const auto isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    Matrix y(m, n);
    kernels::gemm(packed, input(x), output(y), {.bias = bias.data(), .low_rank = &low_rank}, isa);
    CHECK((y.cast<double>() - ref).cwiseAbs().maxCoeff() < 1e-4);  // |y| ~ 10: FP32 sums
  }
}

TEST_CASE("gemm_wq: bitwise identical for 1, 2 and 3 threads", "[kernels][gemm_wq]") {
  const int saved = qlr::num_threads();
  std::mt19937 rng(4);
  const Matrix w = qlr::test::gaussian(rng, 515, 256);
  const Matrix x = qlr::test::gaussian(rng, 9, 256);
  const kernels::PackedWeights packed(qlr::quant::IntAsym<4>({.group_size = 64}).quantize(w));
  for (const auto isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    qlr::set_num_threads(1);
    Matrix one(9, 515);
    kernels::gemm(packed, input(x), output(one), {}, isa);
    for (const int threads : {2, 3}) {
      qlr::set_num_threads(threads);
      Matrix many(9, 515);
      kernels::gemm(packed, input(x), output(many), {}, isa);
      CHECK(std::memcmp(one.data(), many.data(), sizeof(float) * one.size()) == 0);
    }
  }
  qlr::set_num_threads(saved);
}

TEST_CASE("gemm_wq: bad shapes and layouts are qlr::Errors", "[kernels][gemm_wq]") {
  const Matrix w = Matrix::Ones(8, 64);
  const kernels::PackedWeights packed(qlr::quant::IntAsym<4>({.group_size = 32}).quantize(w));
  Matrix x = Matrix::Ones(2, 64);
  Matrix y(2, 8);
  Matrix wrong_k = Matrix::Ones(2, 63);
  CHECK_THROWS_WITH(kernels::gemm(packed, input(wrong_k), output(y)),
                    Catch::Contains("x.cols = 63; expected in_features K = 64"));
  Matrix wrong_n(2, 9);
  CHECK_THROWS_WITH(kernels::gemm(packed, input(x), output(wrong_n)),
                    Catch::Contains("y.cols = 9; expected out_features N = 8"));
  Matrix wrong_m(3, 8);
  CHECK_THROWS_WITH(kernels::gemm(packed, input(x), output(wrong_m)),
                    Catch::Contains("y.rows = 3, x.rows = 2"));
  CHECK_THROWS_WITH(kernels::gemm(packed, qlr::ConstMatrixView{nullptr, 2, 64, 64}, output(y)),
                    Catch::Contains("expected non-null buffers"));
  CHECK_THROWS_WITH(kernels::gemm(packed, qlr::ConstMatrixView{x.data(), 2, 64, 32}, output(y)),
                    Catch::Contains("x.stride = 32"));
  const Matrix bt(2, 8), t(3, 2);
  const qlr::LowRankTerm bad_low_rank{input(bt), input(t)};
  CHECK_THROWS_WITH(kernels::gemm(packed, input(x), output(y), {.low_rank = &bad_low_rank}),
                    Catch::Contains("low-rank Bt is 2x8, t is 3x2"));
  CHECK_THROWS_WITH(kernels::PackedWeights(
                        qlr::quant::IntAsym<4>({.group_size = 48}).quantize(Matrix::Ones(2, 96))),
                    Catch::Contains("group_size = 48; expected a multiple of 32"));
  CHECK_THROWS_WITH(kernels::parse_isa("sse9"), Catch::Contains("isa = 'sse9'"));
}
