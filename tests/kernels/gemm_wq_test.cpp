// SPDX-License-Identifier: Apache-2.0
// Weight-only INT4/INT8 GEMM (FP32 activations, split into INT8 limbs) on every ISA path this
// CPU has: the split's error bound on adversarial values, every path bitwise equal to the
// reference over shapes with tails in M, N and K, the reference within its bound of a double
// oracle, extreme codes, floating zeros, the epilogue, thread counts and bad input.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <catch2/catch.hpp>

#include "qlr/core/bit_pack.hpp"
#include "qlr/core/config.hpp"
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
using qlr::test::bitwise_equal;
using qlr::test::output;

/// Y on path `isa`, every output first poisoned with NaN so an unwritten one shows.
template <class Format>
Matrix run(const kernels::DotWeights<Format>& w, const Matrix& x, kernels::Isa isa,
           const qlr::Epilogue& e = {}) {
  Matrix y = Matrix::Constant(x.rows(), w.rows(), std::numeric_limits<float>::quiet_NaN());
  kernels::gemm(w, input(x), output(y), e, isa);
  return y;
}

/// max|x| over the weight group of each element: the scale the split measures against.
Matrix group_max(const Matrix& x, index_t group_size) {
  Matrix top(x.rows(), x.cols());
  for (index_t m = 0; m < x.rows(); ++m)
    for (index_t begin = 0; begin < x.cols(); begin += group_size) {
      const index_t width = std::min(group_size, x.cols() - begin);
      top.row(m).segment(begin, width).setConstant(x.row(m).segment(begin, width).cwiseAbs().maxCoeff());
    }
  return top;
}

/// The oracle of one weight q: |y − X·Ŵᵀ| within the limb path's bound, Ŵ = dequantize(q),
/// in double:
///   * the split: |x − x̂| ≤ 2^−22·max|x| of x's group;
///   * the FP32 steps: per limb and group one conversion (exact below 2^24), s·c and an
///     fma into a running sum of 2G terms (the zero fraction's too), then two adds of the
///     limbs: ≤ (2G + 4)·u of Σ_i |s|·(|u_i − zi| + |z − zi|)·Σ_j |c_j·q_ij|, where
///     Σ_j |c_j·q_ij| ≤ |x_i| + max|x|/127 (Higham §3.1, u = 2^−24);
///   * Ŵ itself is a float: s·(u − z) rounded, within u·|s|·(|u| + |z|) of the exact value.
/// A limb scaled by the wrong power of two moves an output ~2^−9·max|x|·Σ|ŵ|, far outside.
class LimbOracle {
 public:
  template <class Format>
  explicit LimbOracle(const qlr::QuantizedMatrix<Format>& q)
      : w_hat_(qlr::quant::dequantize(q).template cast<double>()),
        terms_(q.rows(), q.cols()),
        groups_(qlr::group_count(q.cols(), q.group_size())),
        group_size_(groups_ == 1 ? q.cols() : q.group_size()) {
    // |s|·(|u − zi| + |z − zi| + |u| + |z|) per weight
    std::vector<std::uint8_t> u(static_cast<std::size_t>(q.cols()));
    for (index_t o = 0; o < q.rows(); ++o) {
      qlr::unpack_codes(Format::bits, q.row_codes(o), std::span(u));
      for (index_t i = 0; i < q.cols(); ++i) {
        const auto at = static_cast<std::size_t>(o * groups_ + i / group_size_);
        const double s = std::abs(q.scales()[at]);
        const double z = Format::encoding == qlr::Encoding::int_asym
                             ? q.zeros()[at]
                             : static_cast<double>(1 << (Format::bits - 1));
        const double zi = std::nearbyint(z), code = u[static_cast<std::size_t>(i)];
        terms_(o, i) = s * (std::abs(code - zi) + std::abs(z - zi) + code + std::abs(z));
      }
    }
  }

  /// Checks y = X·Ŵᵀ within the bound.
  void check(const Matrix& y, const Matrix& x) const {
    const MatrixD top = group_max(x, group_size_).cast<double>();
    const double gamma = (2.0 * static_cast<double>(groups_) + 4) * 0x1p-24;
    const MatrixD per_input = 0x1p-22 * top + gamma * (x.cast<double>().cwiseAbs() + top / 127.0);
    const MatrixD tolerance = per_input * terms_.transpose();
    const MatrixD ref = x.cast<double>() * w_hat_.transpose();
    qlr::test::check_within_bound(y, ref, tolerance, 1.0,
                                  "weight-only GEMM outside the limb bound of the oracle");
  }

 private:
  MatrixD w_hat_, terms_;
  index_t groups_, group_size_;
};

/// For each of `xs`: the reference within the oracle's bound, and every other path bitwise
/// equal to it. The weight is packed once for all of them.
template <class Format>
void check_packed_every_isa(const qlr::QuantizedMatrix<Format>& q, std::span<const Matrix> xs) {
  const kernels::DotWeights packed(q);
  const LimbOracle oracle(q);
  for (const Matrix& x : xs) {
    CAPTURE(x.rows());
    const Matrix ref = run(packed, x, kernels::Isa::reference);
    oracle.check(ref, x);
    for (const kernels::Isa isa : kernels::available_isas()) {
      CAPTURE(kernels::to_string(isa));
      CHECK(bitwise_equal(run(packed, x, isa), ref));
    }
  }
}

/// The same for one x.
template <class Format>
void check_packed_every_isa(const qlr::QuantizedMatrix<Format>& q, const Matrix& x) {
  check_packed_every_isa(q, std::span<const Matrix>(&x, 1));
}

/// Quantizes a heavy-tailed N×K weight with `policy` and checks heavy-tailed inputs of each
/// token count in `ms`.
template <class Policy>
void check_every_isa(const Policy& policy, std::span<const index_t> ms, index_t n, index_t k,
                     std::uint32_t seed) {
  std::mt19937 rng(seed);
  const auto q = policy.quantize(qlr::test::heavy_tailed(rng, n, k));
  std::vector<Matrix> xs;
  for (const index_t m : ms) xs.push_back(qlr::test::heavy_tailed(rng, m, k));
  check_packed_every_isa(q, std::span<const Matrix>(xs));
}

/// The same for M tokens.
template <class Policy>
void check_every_isa(const Policy& policy, index_t m, index_t n, index_t k, std::uint32_t seed) {
  check_every_isa(policy, std::span<const index_t>(&m, 1), n, k, seed);
}

template <class Policy>
void sweep(std::initializer_list<index_t> ms, std::initializer_list<index_t> ns,
           std::initializer_list<index_t> ks, std::initializer_list<index_t> gs,
           index_t max_volume = std::numeric_limits<index_t>::max()) {
  qlr::test::for_each_packable_shape(
      ms, ns, ks, gs,
      [](index_t n, index_t k, index_t g, std::span<const index_t> tokens) {
        check_every_isa(Policy({.group_size = g}), tokens, n, k,
                        static_cast<std::uint32_t>(n * 17 + k + g));
      },
      max_volume);
}

/// x̂ of token m, column i from the limb rows: Σ_j c_j·q_j, in double.
double reconstruct(const kernels::DotActivationView& a, const kernels::DotWeightView& w,
                   index_t m, index_t i) {
  const index_t l = i / w.group_size < w.groups ? i / w.group_size : w.groups - 1;
  double x = 0.0;
  for (int j = 0; j < a.limbs; ++j)
    x += static_cast<double>(a.group_scale(a.limbs * m + j, l)) * a.row(a.limbs * m + j)[i];
  return x;
}

}  // namespace

TEST_CASE("kernels: the paths this CPU has", "[kernels][isa]") {
  std::string names;
  for (const auto isa : kernels::available_isas())
    names += std::string(kernels::to_string(isa)) + " ";
  WARN("kernel paths under test: " << names << "(best: " << kernels::to_string(kernels::best_isa())
                                   << ")");
  CHECK(kernels::available_isas().front() == kernels::Isa::reference);
#if !QLR_ARCH_X86  // arm64 (CI runs it under qemu): the two paths every target has, no more
  CHECK(kernels::available_isas() == std::vector{kernels::Isa::reference, kernels::Isa::portable});
  CHECK(kernels::best_isa() == kernels::Isa::portable);
#endif
  // e.g. "avx2,avx_vnni,avx512_vnni": .ci/run names every path /proc/cpuinfo says the CPU
  // has, so that a detection that silently falls back to a narrower path fails CI.
  if (const char* required = std::getenv("QLR_REQUIRE_ISAS")) {
    std::string_view list = required;
    while (!list.empty()) {
      const std::size_t comma = list.find(',');
      const std::string_view name = list.substr(0, comma);
      CAPTURE(name);
      CHECK(kernels::is_supported(kernels::parse_isa(name)));
      list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    }
  }
}

TEST_CASE("LimbActivations: |x − x̂| ≤ 2^-22·max|x| of the group, on adversarial values",
          "[kernels][gemm_wq]") {
  const index_t k = 8 * 32 + 5;  // 8 groups of 32 and a ragged one
  const kernels::DotWeights packed(
      qlr::quant::IntSym<4>({.group_size = 32}).quantize(Matrix::Ones(3, k)));
  const kernels::DotWeightView w = packed.view();
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  Matrix x(4, k);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = unit(rng);
  // Values at the split's edges, group by group (max|x| = 127 makes c = 1): residuals of
  // exactly ±0.5 and 127.5/256 (the carry into q0), ties in the last limb, max|x| itself.
  const float edges[] = {127.0f, -127.0f, 126.5f, 0.5f, -0.5f, 1.0f + 127.5f / 256,
                         2.0f - 127.5f / 256, 3.0f + 0.5f / 256 + 0.5f / 65536, -126.998f, 0.0f};
  for (index_t i = 0; i < 10; ++i) x(0, i) = edges[i];
  for (index_t i = 32; i < 64; ++i) x(0, i) = 1e-3f * unit(rng);  // one outlier over small values
  x(0, 40) = 1e3f;
  for (index_t i = 64; i < 96; ++i) x(0, i) = 0.0f;                      // an all-zero group
  for (index_t i = 96; i < 128; ++i) x(0, i) = 1e-38f * unit(rng);       // subnormal range
  for (index_t i = 128; i < 160; ++i) x(0, i) = 3e38f * unit(rng);       // near the float max
  for (index_t i = 160; i < 192; ++i) x(0, i) = static_cast<float>(i % 3) - 1.0f;  // −1, 0, 1
  for (index_t i = 0; i < k; ++i) x(1, i) = std::ldexp(unit(rng), static_cast<int>(i % 60) - 30);
  const kernels::detail::LimbActivations limbs(input(x), w);
  const kernels::DotActivationView& a = limbs.view();
  REQUIRE(a.limbs == 3);
  REQUIRE(a.rows == 3 * x.rows());
  const Matrix top = group_max(x, 32);
  for (index_t m = 0; m < x.rows(); ++m) {
    for (index_t i = 0; i < k; ++i) {
      CAPTURE(m, i, x(m, i));
      const double error = std::abs(reconstruct(a, w, m, i) - static_cast<double>(x(m, i)));
      // A group whose max|x| is below 127 times the smallest normal float has c = 2^−126:
      // its error is bounded in absolute terms instead.
      CHECK(error <= std::max(0x1p-22 * static_cast<double>(top(m, i)), 0x1p-142));
    }
    for (index_t i = k; i < w.padded_cols; ++i)
      for (int j = 0; j < 3; ++j) CHECK(a.row(3 * m + j)[i] == 0);  // padding adds nothing
    for (int j = 0; j < 3; ++j) {
      for (index_t l = 0; l < w.groups; ++l) {
        std::int32_t sum = 0;
        for (index_t i = w.group_begin(l); i < w.group_end(l); ++i) sum += a.row(3 * m + j)[i];
        CHECK(a.group_sums[(3 * m + j) * a.groups + l] == sum);
      }
    }
  }
  // The carry: 1 + 127.5/256 must not leave q1 = 128 (wrapped to −128 in int8, off by 1).
  CHECK(std::abs(reconstruct(a, w, 0, 5) - (1.0 + 127.5 / 256)) <= 0x1p-22 * 127);
}

TEST_CASE("gemm_wq: every ISA bitwise equal to the reference, tails in M, N, K",
          "[kernels][gemm_wq]") {
  const std::initializer_list<index_t> ms{1, 2, 3, 7, 16};
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
  SECTION("int3 asymmetric and symmetric") {
    sweep<qlr::quant::IntAsym<3>>(ms, ns, ks, gs);
    sweep<qlr::quant::IntSym<3>>({1, 4}, {17, 33}, {96, 257}, {32, 128});
  }
  SECTION("int2 asymmetric and symmetric") {
    sweep<qlr::quant::IntAsym<2>>(ms, ns, ks, gs);
    sweep<qlr::quant::IntSym<2>>({1, 4}, {17, 33}, {96, 257}, {32, 128});
  }
  SECTION("per-channel (one group per row)") {
    sweep<qlr::quant::IntSym<8>>({1, 6}, {17, 33}, {100, 4096 + 7}, {0});
    sweep<qlr::quant::IntAsym<4>>({1, 6}, {17}, {100, 4096 + 7}, {0});
    sweep<qlr::quant::IntAsym<3>>({1, 6}, {17}, {100, 4096 + 7}, {0});
    sweep<qlr::quant::IntAsym<2>>({1, 6}, {17}, {4096 + 7}, {0});
  }
}

TEST_CASE("gemm_wq: the issue's full sweep of shapes", "[kernels][gemm_wq][.slow]") {
  const std::initializer_list<index_t> ms{1, 2, 3, 7, 16, 33, 64, 129};
  const std::initializer_list<index_t> ns{1, 15, 16, 17, 255, 2323};
  const std::initializer_list<index_t> ks{32, 64, 96, 257, 512, 4096};
  const std::initializer_list<index_t> gs{32, 64, 128};
  SECTION("int4 asymmetric") {
    sweep<qlr::quant::IntAsym<4>>(ms, ns, ks, gs, qlr::test::slow_sweep_max_volume);
  }
  SECTION("int8 symmetric") {
    sweep<qlr::quant::IntSym<8>>(ms, ns, ks, gs, qlr::test::slow_sweep_max_volume);
  }
  SECTION("int3 and int2 asymmetric") {
    sweep<qlr::quant::IntAsym<3>>(ms, ns, ks, gs, qlr::test::slow_sweep_max_volume);
    sweep<qlr::quant::IntAsym<2>>(ms, ns, ks, gs, qlr::test::slow_sweep_max_volume);
  }
}

TEST_CASE("gemm_wq: large K and N, outliers and extreme codes", "[kernels][gemm_wq]") {
  check_every_isa(qlr::quant::IntAsym<4>({.group_size = 128}), 3, 2323, 4096, 7);
  check_every_isa(qlr::quant::IntSym<8>({.group_size = 0}), 2, 300, 4096 + 7, 8);
  check_every_isa(qlr::quant::IntAsym<4>({.group_size = 64}), 45, 37, 8192 + 32, 9);
  // Every code at its extremes: a row of ±max values quantizes to codes 0 and 2^b − 1 only,
  // against activations at ±1e4 and an LLM-style outlier channel 1000× the rest.
  Matrix w(8, 96);
  for (index_t i = 0; i < w.size(); ++i) w.data()[i] = (i * 7919) % 3 == 0 ? -1.0f : 1.0f;
  Matrix x = Matrix::Constant(5, 96, 1e4f);
  x.row(1) *= -1.0f;
  x.row(2).setConstant(1.0f);
  x(2, 7) = 1000.0f;
  check_packed_every_isa(qlr::quant::IntAsym<4>({.group_size = 32}).quantize(w), x);
  check_packed_every_isa(qlr::quant::IntAsym<8>({.group_size = 64}).quantize(w), x);
  check_packed_every_isa(qlr::quant::IntAsym<3>({.group_size = 32}).quantize(w), x);
  check_packed_every_isa(qlr::quant::IntAsym<2>({.group_size = 32}).quantize(w), x);
  check_every_isa(qlr::quant::IntAsym<3>({.group_size = 128}), 3, 300, 4096 + 7, 10);
  check_every_isa(qlr::quant::IntAsym<2>({.group_size = 64}), 7, 37, 8192 + 32, 11);
}

TEST_CASE("gemm_wq: floating zero points, near and far from the codes", "[kernels][gemm_wq]") {
  // QA-LoRA's merge moves zeros off the integers, and an AWQ-style range may put them far
  // outside the codes: ŵ = s·(u − z) must follow z anywhere the int32 sums allow.
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
  const kernels::DotWeights packed(q);
  const Matrix w_hat = qlr::quant::dequantize(q);
  const Matrix bt = b.transpose();
  const qlr::LowRankTerm low_rank{input(bt), input(t)};
  const qlr::Epilogue epilogue{.bias = bias.data(), .low_rank = &low_rank};
  const MatrixD ref = x.cast<double>() * w_hat.cast<double>().transpose() +
                      t.cast<double>() * b.cast<double>().transpose() +
                      MatrixD::Ones(m, 1) * bias.cast<double>();
  const Matrix y_ref = run(packed, x, kernels::Isa::reference, epilogue);
  CHECK((y_ref.cast<double>() - ref).cwiseAbs().maxCoeff() < 1e-4);  // |y| ~ 10: FP32 sums
  for (const auto isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    CHECK(bitwise_equal(run(packed, x, isa, epilogue), y_ref));
  }
}

TEST_CASE("gemm_wq: bitwise identical for 1, 2 and 3 threads", "[kernels][gemm_wq]") {
  const int saved = qlr::num_threads();
  std::mt19937 rng(4);
  const Matrix w = qlr::test::gaussian(rng, 515, 256);
  const Matrix x = qlr::test::gaussian(rng, 9, 256);
  const kernels::DotWeights packed(qlr::quant::IntAsym<4>({.group_size = 64}).quantize(w));
  for (const auto isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    qlr::set_num_threads(1);
    const Matrix one = run(packed, x, isa);
    for (const int threads : {2, 3}) {
      qlr::set_num_threads(threads);
      CHECK(bitwise_equal(run(packed, x, isa), one));
    }
  }
  qlr::set_num_threads(saved);
}

TEST_CASE("gemm_wq: bad shapes and activations are qlr::Errors", "[kernels][gemm_wq]") {
  const Matrix w = Matrix::Ones(8, 64);
  const kernels::DotWeights packed(qlr::quant::IntAsym<4>({.group_size = 32}).quantize(w));
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
  for (const float bad : {std::numeric_limits<float>::quiet_NaN(),
                          std::numeric_limits<float>::infinity()}) {
    Matrix poisoned = x;
    poisoned(1, 37) = bad;
    y.setConstant(7.0f);
    CHECK_THROWS_WITH(kernels::gemm(packed, input(poisoned), output(y)),
                      Catch::Contains("x(1, 37) = ") && Catch::Contains("expected finite activations"));
    CHECK((y.array() == 7.0f).all());  // nothing written
  }
  CHECK_THROWS_WITH(kernels::DotWeights(
                        qlr::quant::IntAsym<4>({.group_size = 48}).quantize(Matrix::Ones(2, 96))),
                    Catch::Contains("group_size = 48; expected a multiple of 32"));
  CHECK_THROWS_WITH(kernels::parse_isa("sse9"), Catch::Contains("isa = 'sse9'"));
}
