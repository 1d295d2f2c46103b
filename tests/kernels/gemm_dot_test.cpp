// SPDX-License-Identifier: Apache-2.0
// Integer GEMM (W8A8, W4A8, W4A4) on every ISA path this CPU has: bitwise equal to the
// reference (exact int32 group sums, the same FP32 steps), the reference within the FP32
// bound of a double oracle, exact integer outputs at the accumulator's limits, thread
// counts and bad input.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <vector>

#include <catch2/catch.hpp>

#include "qlr/core/bit_pack.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/kernels/gemm.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
namespace kernels = qlr::kernels;
namespace quant = qlr::quant;

namespace {

using qlr::test::input;
using qlr::test::bitwise_equal;
using qlr::test::output;

qlr::ActivationCodes codes_of(const quant::QuantizedActivations& a) {
  return a.view();
}

/// Y on path `isa`, every output first poisoned with NaN so an unwritten one shows.
template <class Format>
Matrix run(const kernels::DotWeights<Format>& w, const qlr::ActivationCodes& x, kernels::Isa isa,
           const qlr::Epilogue& e = {}) {
  Matrix y = Matrix::Constant(x.rows, w.rows(), std::numeric_limits<float>::quiet_NaN());
  kernels::gemm(w, x, output(y), e, isa);
  return y;
}

/// The oracle of one weight q: |y − X̂·Ŵᵀ| ≤ (groups + 3)·2^-23·(Σ_i |ŵ_i·x̂_i| +
/// Σ_i |s_l·z_l·x̂_i|) per output, in double: each group adds one rounded int→float
/// conversion and one or two FMAs to a running FP32 sum, whose worst case is groups·u of the
/// sum of magnitudes (Higham §3.1); the zero term is cancelled in integers first, so it
/// enters only through those roundings. One wrong code of a K = 512 row moves the output
/// ~30× more than this.
class DotOracle {
 public:
  template <class Format>
  explicit DotOracle(const qlr::QuantizedMatrix<Format>& q)
      : w_hat_(quant::dequantize(q).template cast<double>()),
        gamma_((static_cast<double>(qlr::group_count(q.cols(), q.group_size())) + 3) * 0x1p-23) {
    MatrixD zero_terms = MatrixD::Zero(q.rows(), q.cols());  // |s·z| per weight
    for (index_t o = 0; o < q.rows(); ++o)
      for (index_t i = 0; i < q.cols(); ++i) {
        const auto at = static_cast<std::size_t>(o * qlr::group_count(q.cols(), q.group_size()) +
                                                 i / q.group_size());
        const double z = Format::encoding == qlr::Encoding::int_asym
                             ? q.zeros()[at]
                             : static_cast<double>(1 << (Format::bits - 1));
        zero_terms(o, i) = std::abs(q.scales()[at] * z);
      }
    magnitude_terms_ = (w_hat_.cwiseAbs() + zero_terms).transpose();
  }

  /// Checks y = X̂·Ŵᵀ within the bound.
  void check(const Matrix& y, const quant::QuantizedActivations& a) const {
    const MatrixD x_hat = quant::dequantize(a).cast<double>();
    const MatrixD ref = x_hat * w_hat_.transpose();
    const MatrixD magnitude = x_hat.cwiseAbs() * magnitude_terms_;
    qlr::test::check_within_bound(y, ref, magnitude, gamma_,
                                  "integer GEMM outside the FP32 bound of the oracle");
  }

 private:
  MatrixD w_hat_, magnitude_terms_;
  double gamma_;
};

/// For heavy-tailed inputs of each token count in `ms` against a heavy-tailed N×K weight
/// quantized by `policy` (packed once): the reference within the oracle's bound, and every
/// other path bitwise equal to it.
template <class Policy>
void check_every_isa(const Policy& policy, int activation_bits, std::span<const index_t> ms,
                     index_t n, index_t k, std::uint32_t seed) {
  std::mt19937 rng(seed);
  const auto q = policy.quantize(qlr::test::heavy_tailed(rng, n, k));
  const kernels::DotWeights packed(q);
  const DotOracle oracle(q);
  for (const index_t m : ms) {
    CAPTURE(m);
    const auto a =
        quant::quantize_per_token(qlr::test::heavy_tailed(rng, m, k), {.bits = activation_bits});
    const Matrix ref = run(packed, codes_of(a), kernels::Isa::reference);
    oracle.check(ref, a);
    for (const kernels::Isa isa : kernels::available_isas()) {
      CAPTURE(kernels::to_string(isa));
      CHECK(bitwise_equal(run(packed, codes_of(a), isa), ref));
    }
  }
}

template <class Policy>
void sweep(int activation_bits, std::initializer_list<index_t> ms,
           std::initializer_list<index_t> ns, std::initializer_list<index_t> ks,
           std::initializer_list<index_t> gs, quant::IntOptions base = {},
           index_t max_volume = std::numeric_limits<index_t>::max()) {
  qlr::test::for_each_packable_shape(
      ms, ns, ks, gs,
      [&](index_t n, index_t k, index_t g, std::span<const index_t> tokens) {
        quant::IntOptions options = base;
        options.group_size = g;
        check_every_isa(Policy(options), activation_bits, tokens, n, k,
                        static_cast<std::uint32_t>(n * 17 + k + g));
      },
      max_volume);
}

/// A QuantizedMatrix with given codes, scale 1 and zero point `zero` in every group.
template <int Bits>
qlr::QuantizedMatrix<qlr::QuantFormat<Bits, qlr::Encoding::int_asym>> unit_scale_matrix(
    index_t rows, index_t cols, index_t group_size, const std::vector<std::uint8_t>& codes,
    float zero) {
  qlr::QuantizedParts p;
  p.rows = rows;
  p.cols = cols;
  p.group_size = group_size;
  const index_t row_bytes = qlr::packed_size(Bits, cols);
  p.codes.resize(static_cast<std::size_t>(rows * row_bytes));
  for (index_t o = 0; o < rows; ++o)
    qlr::pack_codes(Bits,
                    std::span(codes).subspan(static_cast<std::size_t>(o * cols),
                                             static_cast<std::size_t>(cols)),
                    std::span(p.codes).subspan(static_cast<std::size_t>(o * row_bytes),
                                               static_cast<std::size_t>(row_bytes)));
  const auto groups = static_cast<std::size_t>(rows * qlr::group_count(cols, group_size));
  p.scales.assign(groups, 1.0f);
  p.zeros.assign(groups, zero);
  const bool integral = zero == std::nearbyint(zero) && zero >= 0.0f && zero < (1 << Bits);
  p.zero_mode = integral ? qlr::ZeroMode::integer : qlr::ZeroMode::floating;
  return qlr::QuantizedMatrix<qlr::QuantFormat<Bits, qlr::Encoding::int_asym>>(std::move(p));
}

/// Σ_i (u_i − z)·q_i for one row and one token, in int64: the integer oracle.
std::int64_t exact_dot(const std::vector<std::uint8_t>& u, const std::vector<std::int8_t>& q,
                       index_t row, index_t token, index_t k, std::int64_t zero) {
  std::int64_t sum = 0;
  for (index_t i = 0; i < k; ++i)
    sum += (static_cast<std::int64_t>(u[static_cast<std::size_t>(row * k + i)]) - zero) *
           q[static_cast<std::size_t>(token * k + i)];
  return sum;
}

}  // namespace

TEST_CASE("gemm_dot: every ISA bitwise equal to the reference, tails in M, N, K",
          "[kernels][gemm_dot]") {
  const std::initializer_list<index_t> ms{1, 2, 3, 7, 16};
  const std::initializer_list<index_t> ns{1, 15, 16, 17, 255};
  const std::initializer_list<index_t> ks{32, 64, 96, 257, 512};
  const std::initializer_list<index_t> gs{32, 64, 128};
  SECTION("W8A8 symmetric") {
    sweep<quant::IntSym<8>>(8, ms, ns, ks, gs);
  }
  SECTION("W8A8 asymmetric") {
    sweep<quant::IntAsym<8>>(8, ms, ns, ks, gs);
  }
  SECTION("W4A8 asymmetric") {
    sweep<quant::IntAsym<4>>(8, ms, ns, ks, gs);
  }
  SECTION("W4A8 symmetric") {
    sweep<quant::IntSym<4>>(8, ms, ns, ks, gs);
  }
  SECTION("W4A4 symmetric") {
    sweep<quant::IntSym<4>>(4, ms, ns, ks, gs);
  }
  SECTION("W3A8 asymmetric and symmetric") {
    sweep<quant::IntAsym<3>>(8, ms, ns, ks, gs);
    sweep<quant::IntSym<3>>(8, {1, 3, 5}, {17, 33}, {96, 257}, {32, 128});
  }
  SECTION("W2A8 asymmetric and symmetric") {
    sweep<quant::IntAsym<2>>(8, ms, ns, ks, gs);
    sweep<quant::IntSym<2>>(8, {1, 3, 5}, {17, 33}, {96, 257}, {32, 128});
  }
  SECTION("W3A4 and W2A4") {
    sweep<quant::IntAsym<3>>(4, {1, 4}, {17, 40}, {96, 257}, {32, 64});
    sweep<quant::IntAsym<2>>(4, {1, 4}, {17, 40}, {96, 257}, {32, 64});
  }
  SECTION("W4A8 floating zero points") {
    std::mt19937 rng(9);
    const auto floating =
        quant::IntAsym<4>({.group_size = 32, .zero_mode = qlr::ZeroMode::floating})
            .quantize(qlr::test::gaussian(rng, 4, 64));
    REQUIRE(kernels::DotWeights(floating).view().zero_offsets != nullptr);  // the path exists
    sweep<quant::IntAsym<4>>(8, {1, 5}, {17, 40}, {96, 257}, {32, 128},
                             {.zero_mode = qlr::ZeroMode::floating});
  }
  SECTION("f16 scales, kept as f16 in the packed form") {
    std::mt19937 rng(10);
    const quant::IntOptions f16{.group_size = 32, .scale_type = qlr::ScaleType::f16};
    REQUIRE(kernels::DotWeights(quant::IntAsym<4>(f16).quantize(qlr::test::gaussian(rng, 4, 64)))
                .view()
                .half_scales);
    sweep<quant::IntAsym<4>>(8, {1, 3, 7}, {17, 40}, {96, 257}, {32, 128},
                             {.scale_type = qlr::ScaleType::f16});
    sweep<quant::IntSym<8>>(8, {1, 5}, {17}, {96, 257}, {32, 128},
                            {.scale_type = qlr::ScaleType::f16});
    sweep<quant::IntAsym<3>>(8, {1, 5}, {17}, {96, 257}, {32, 128},
                             {.scale_type = qlr::ScaleType::f16});
    sweep<quant::IntAsym<2>>(4, {1, 5}, {17}, {96, 257}, {32, 128},
                             {.scale_type = qlr::ScaleType::f16});
  }
  SECTION("W3A8 and W2A8 floating zero points") {
    sweep<quant::IntAsym<3>>(8, {1, 5}, {17, 40}, {96, 257}, {32, 128},
                             {.zero_mode = qlr::ZeroMode::floating});
    sweep<quant::IntAsym<2>>(8, {1, 5}, {17, 40}, {96, 257}, {32, 128},
                             {.zero_mode = qlr::ZeroMode::floating});
  }
  SECTION("per-channel (one group per row)") {
    sweep<quant::IntSym<8>>(8, {1, 6}, {17, 33}, {100, 4096 + 7}, {0});
    sweep<quant::IntAsym<4>>(4, {1, 6}, {17}, {100, 4096 + 7}, {0});
    sweep<quant::IntAsym<3>>(8, {1, 6}, {17}, {100, 4096 + 7}, {0});
    sweep<quant::IntAsym<2>>(8, {1, 6}, {17}, {4096 + 7}, {0});
  }
}

TEST_CASE("gemm_dot: the issue's full sweep of shapes", "[kernels][gemm_dot][.slow]") {
  const std::initializer_list<index_t> ms{1, 2, 3, 7, 16, 33, 64, 129};
  const std::initializer_list<index_t> ns{1, 15, 16, 17, 255, 2323};
  const std::initializer_list<index_t> ks{32, 64, 96, 257, 512, 4096};
  const std::initializer_list<index_t> gs{32, 64, 128};
  SECTION("W8A8") {
    sweep<quant::IntSym<8>>(8, ms, ns, ks, gs, {}, qlr::test::slow_sweep_max_volume);
  }
  SECTION("W4A8") {
    sweep<quant::IntAsym<4>>(8, ms, ns, ks, gs, {}, qlr::test::slow_sweep_max_volume);
  }
  SECTION("W4A4") {
    sweep<quant::IntSym<4>>(4, ms, ns, ks, gs, {}, qlr::test::slow_sweep_max_volume);
  }
  SECTION("W3A8") {
    sweep<quant::IntAsym<3>>(8, ms, ns, ks, gs, {}, qlr::test::slow_sweep_max_volume);
  }
  SECTION("W2A8") {
    sweep<quant::IntAsym<2>>(8, ms, ns, ks, gs, {}, qlr::test::slow_sweep_max_volume);
  }
}

TEST_CASE("gemm_dot: exact integer outputs at the extremes of codes and accumulators",
          "[kernels][gemm_dot]") {
  // With scale 1 everywhere the output is float(Σ (u − z)·q) exactly: one rounding of the
  // int32 sum, which must therefore be exact.
  const auto check = [](auto bits_tag, index_t n, index_t k, index_t m, std::uint8_t u_value,
                        float zero, std::int8_t q_value) {
    constexpr int bits = decltype(bits_tag)::value;
    std::vector<std::uint8_t> u(static_cast<std::size_t>(n * k), u_value);
    std::vector<std::int8_t> q(static_cast<std::size_t>(m * k), q_value);
    for (std::size_t i = 0; i < u.size(); i += 7) u[i] = static_cast<std::uint8_t>(u_value / 3);
    const kernels::DotWeights packed(unit_scale_matrix<bits>(n, k, k, u, zero));
    const std::vector<float> ones(static_cast<std::size_t>(m), 1.0f);
    const int activation_bits = q_value >= -8 && q_value <= 7 ? 4 : 8;
    const qlr::ActivationCodes x{q.data(), ones.data(), m, k, k, activation_bits};
    for (const auto isa : kernels::available_isas()) {
      CAPTURE(kernels::to_string(isa), n, k, m, int{u_value}, zero, int{q_value});
      const Matrix y = run(packed, x, isa);
      for (index_t o = 0; o < n; ++o)
        for (index_t t = 0; t < m; ++t) {
          const std::int64_t want = exact_dot(u, q, o, t, k, static_cast<std::int64_t>(zero));
          REQUIRE(want >= std::numeric_limits<std::int32_t>::min());
          REQUIRE(y(t, o) == static_cast<float>(want));
        }
    }
  };
  using int8_tag = std::integral_constant<int, 8>;
  using int4_tag = std::integral_constant<int, 4>;
  using int3_tag = std::integral_constant<int, 3>;
  using int2_tag = std::integral_constant<int, 2>;
  // The longest INT8 group the packing accepts, every product at −255·128 or 255·127.
  const index_t longest = kernels::max_dot_group_length(8) / 8 * 8;
  check(int8_tag{}, 17, longest, 2, 255, 0.0f, -128);
  check(int8_tag{}, 3, longest, 1, 255, 0.0f, 127);
  check(int8_tag{}, 3, longest, 2, 0, 255.0f, -128);
  // INT4 extremes: codes 15 and 0 against −128/127 and the INT4 activations −8/7.
  check(int4_tag{}, 33, 4096 + 5, 3, 15, 0.0f, -128);
  check(int4_tag{}, 33, 4096 + 5, 3, 0, 15.0f, 127);
  check(int4_tag{}, 18, 999, 5, 15, 8.0f, -8);
  check(int4_tag{}, 18, 999, 1, 15, 0.0f, 7);
  // INT3 and INT2 extremes, over blocks (32 and 16 columns) with tails.
  check(int3_tag{}, 33, 4096 + 5, 3, 7, 0.0f, -128);
  check(int3_tag{}, 17, 999, 4, 0, 7.0f, 127);
  check(int3_tag{}, 18, 999, 1, 7, 4.0f, -8);
  check(int2_tag{}, 33, 4096 + 5, 3, 3, 0.0f, -128);
  check(int2_tag{}, 17, 999, 4, 0, 3.0f, 127);
  check(int2_tag{}, 18, 999, 1, 3, 2.0f, 7);
  // A floating zero far below the codes (the AWQ-style range without 0): u − z ≈ 2000, held
  // as an int32 zero (the others are bytes).
  REQUIRE(
      kernels::DotWeights(unit_scale_matrix<4>(1, 64, 64, std::vector<std::uint8_t>(64), -2000.0f))
          .view()
          .wide_zeros);
  check(int4_tag{}, 17, 64, 2, 15, -2000.0f, 127);
  check(int3_tag{}, 17, 96, 3, 7, -2000.0f, -128);
  check(int8_tag{}, 17, 64, 2, 255, 300.0f, 127);
}

TEST_CASE("gemm_dot: a group past the int32 headroom is refused at packing",
          "[kernels][gemm_dot]") {
  const index_t k = kernels::max_dot_group_length(8) + 16;
  std::vector<std::uint8_t> u(static_cast<std::size_t>(2 * k), 1);
  CHECK_THROWS_WITH(kernels::DotWeights(unit_scale_matrix<8>(2, k, k, u, 0.0f)),
                    Catch::Contains("expected at most 65785 for 8-bit codes"));
}

TEST_CASE("DotWeights: integer zero points need no fractional term", "[kernels][gemm_dot]") {
  std::mt19937 rng(8);
  const Matrix w = qlr::test::gaussian(rng, 20, 64);
  CHECK(kernels::DotWeights(quant::IntAsym<4>({.group_size = 32}).quantize(w))
            .view()
            .zero_offsets == nullptr);
  CHECK(
      kernels::DotWeights(quant::IntSym<8>({.group_size = 64}).quantize(w)).view().zero_offsets ==
      nullptr);
}

TEST_CASE("DotWeights: parameters at their storage width, W4 g128 f16 within 4.2 bits a weight",
          "[kernels][gemm_dot]") {
  std::mt19937 rng(8);
  const index_t n = 64, k = 1024;
  const Matrix w = qlr::test::gaussian(rng, n, k);
  const auto bits_read = [&](const auto& packed) {
    return 8.0 * static_cast<double>(packed.code_bytes() + packed.parameter_bytes()) /
           static_cast<double>(n * k);
  };
  const quant::IntOptions f16{.group_size = 128, .scale_type = qlr::ScaleType::f16};
  CHECK(bits_read(kernels::DotWeights(quant::IntAsym<4>(f16).quantize(w))) == 4.1875);
  CHECK(bits_read(kernels::DotWeights(quant::IntAsym<3>(f16).quantize(w))) == 3.1875);
  CHECK(bits_read(kernels::DotWeights(quant::IntAsym<2>(f16).quantize(w))) == 2.1875);
  // f32 scales stay f32: 4 + 40/128 bits.
  CHECK(bits_read(kernels::DotWeights(quant::IntAsym<4>({.group_size = 128}).quantize(w))) ==
        4.3125);
}

TEST_CASE("gemm_dot: a floating zero too far for int32 sums is refused at packing",
          "[kernels][gemm_dot]") {
  std::vector<std::uint8_t> u(2 * 64, 1);
  CHECK_THROWS_WITH(
      kernels::DotWeights(unit_scale_matrix<4>(2, 64, 64, u, 1e6f)),
      Catch::Contains("zero point of row 0, group 0 = 1000000; expected round(z) in "
                      "[-262128, 262143] so that int32 dot products over 64 columns"));
  CHECK_THROWS_WITH(kernels::DotWeights(unit_scale_matrix<4>(2, 64, 64, u, -1e30f)),
                    Catch::Contains("zero point of row 0, group 0 = -1e+30"));
}

TEST_CASE("gemm_dot: bias and low-rank epilogue", "[kernels][gemm_dot]") {
  const index_t m = 13, n = 37, k = 160, r = 4;  // tiles of 6 tokens and a tail
  const auto [w, x, b, t, bias] = qlr::test::epilogue_operands(3, m, n, k, r);
  const auto q = quant::IntSym<4>({.group_size = 32}).quantize(w);
  const kernels::DotWeights packed(q);
  const auto a = quant::quantize_per_token(x);
  const Matrix bt = b.transpose();
  const qlr::LowRankTerm low_rank{input(bt), input(t)};
  const qlr::Epilogue e{.bias = bias.data(), .low_rank = &low_rank};
  const MatrixD ref =
      quant::dequantize(a).cast<double>() * quant::dequantize(q).cast<double>().transpose() +
      t.cast<double>() * b.cast<double>().transpose() + MatrixD::Ones(m, 1) * bias.cast<double>();
  const Matrix y_ref = run(packed, codes_of(a), kernels::Isa::reference, e);
  CHECK((y_ref.cast<double>() - ref).cwiseAbs().maxCoeff() < 1e-4);  // |y| ~ 10: FP32 sums
  // Bt rows further apart than N, as QuantizedLinear pads them: the same bits.
  Matrix wide = Matrix::Constant(r, n + 16, std::nanf(""));
  wide.leftCols(n) = bt;
  const qlr::LowRankTerm padded{{wide.data(), r, n, n + 16}, input(t)};
  const qlr::Epilogue e_padded{.bias = bias.data(), .low_rank = &padded};
  for (const auto isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    CHECK(bitwise_equal(run(packed, codes_of(a), isa, e), y_ref));
    CHECK(bitwise_equal(run(packed, codes_of(a), isa, e_padded), y_ref));
  }
}

TEST_CASE("gemm_dot: per-token adapter slices and output scales", "[kernels][gemm_dot]") {
  // Two adapters (ranks 3 and 5) stacked in one Bt; tokens take adapter 0, adapter 1 with a
  // DoRA-style output scale, or none — the multi-adapter batch of a layer. Runs of `period`
  // tokens share a slice: a period of 1 changes slice within every tile, one of 4 lets
  // parts of tiles share one (the paths then run those tokens' sums together).
  const index_t period = GENERATE(1, 4);
  const index_t m = 13, n = 37, k = 160;
  CAPTURE(period);
  std::mt19937 rng(21);
  const Matrix w = qlr::test::gaussian(rng, n, k), x = qlr::test::gaussian(rng, m, k);
  const Matrix bt = qlr::test::gaussian(rng, 8, n), t = qlr::test::gaussian(rng, m, 5);
  const Matrix scale = qlr::test::gaussian(rng, 1, n), bias = qlr::test::gaussian(rng, 1, n);
  const qlr::LowRankSlice choices[] = {{0, 3, nullptr}, {3, 5, scale.data()}, {0, 0, nullptr}};
  std::vector<qlr::LowRankSlice> slices;
  for (index_t i = 0; i < m; ++i) slices.push_back(choices[(i / period) % 3]);
  const qlr::LowRankTerm low_rank{input(bt), input(t), slices.data()};
  const qlr::Epilogue e{.bias = bias.data(), .low_rank = &low_rank};
  const auto q = quant::IntAsym<4>({.group_size = 32}).quantize(w);
  const kernels::DotWeights packed(q);
  const auto a = quant::quantize_per_token(x);
  MatrixD ref = quant::dequantize(a).cast<double>() * quant::dequantize(q).cast<double>().transpose();
  for (index_t i = 0; i < m; ++i) {
    const qlr::LowRankSlice& s = slices[static_cast<std::size_t>(i)];
    for (index_t o = 0; o < n; ++o) {
      for (index_t j = 0; j < s.rank; ++j) ref(i, o) += double{bt(s.first + j, o)} * t(i, j);
      if (s.output_scale != nullptr) ref(i, o) *= s.output_scale[o];
      ref(i, o) += bias(0, o);
    }
  }
  const Matrix y_ref = run(packed, codes_of(a), kernels::Isa::reference, e);
  CHECK((y_ref.cast<double>() - ref).cwiseAbs().maxCoeff() < 1e-4);  // |y| ~ 10: FP32 sums
  for (const auto isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    CHECK(bitwise_equal(run(packed, codes_of(a), isa, e), y_ref));
  }
  slices[2] = {4, 5, nullptr};  // rows 4..8 of an 8-row Bt
  CHECK_THROWS_WITH(run(packed, codes_of(a), kernels::Isa::reference, e),
                    Catch::Contains("low-rank slice of token 2 = rows [4, 9) of Bt"));
}

TEST_CASE("gemm_dot: bitwise identical for 1, 2 and 3 threads", "[kernels][gemm_dot]") {
  const int saved = qlr::num_threads();
  std::mt19937 rng(4);
  const kernels::DotWeights packed(
      quant::IntAsym<4>({.group_size = 64}).quantize(qlr::test::gaussian(rng, 515, 256)));
  const auto a = quant::quantize_per_token(qlr::test::gaussian(rng, 9, 256));
  for (const auto isa : kernels::available_isas()) {
    CAPTURE(kernels::to_string(isa));
    qlr::set_num_threads(1);
    const Matrix one = run(packed, codes_of(a), isa);
    for (const int threads : {2, 3}) {
      qlr::set_num_threads(threads);
      CHECK(bitwise_equal(run(packed, codes_of(a), isa), one));
    }
  }
  qlr::set_num_threads(saved);
}

TEST_CASE("gemm_dot: bad shapes, codes and scales are qlr::Errors", "[kernels][gemm_dot]") {
  const kernels::DotWeights packed(
      quant::IntSym<4>({.group_size = 32}).quantize(Matrix::Ones(8, 64)));
  std::vector<std::int8_t> codes(2 * 64, 1);
  std::vector<float> scales(2, 1.0f);
  Matrix y(2, 8);
  const qlr::ActivationCodes x{codes.data(), scales.data(), 2, 64, 64, 8};
  CHECK_NOTHROW(kernels::gemm(packed, x, output(y)));
  auto wrong = x;
  wrong.cols = 63;
  CHECK_THROWS_WITH(kernels::gemm(packed, wrong, output(y)),
                    Catch::Contains("x.cols = 63; expected in_features K = 64"));
  Matrix wrong_n(2, 9);
  CHECK_THROWS_WITH(kernels::gemm(packed, x, output(wrong_n)),
                    Catch::Contains("y.cols = 9; expected out_features N = 8"));
  Matrix wrong_m(3, 8);
  CHECK_THROWS_WITH(kernels::gemm(packed, x, output(wrong_m)),
                    Catch::Contains("y.rows = 3, x.rows = 2"));
  wrong = x;
  wrong.codes = nullptr;
  CHECK_THROWS_WITH(kernels::gemm(packed, wrong, output(y)),
                    Catch::Contains("expected non-null buffers"));
  wrong = x;
  wrong.bits = 2;
  CHECK_THROWS_WITH(kernels::gemm(packed, wrong, output(y)),
                    Catch::Contains("x.bits = 2; expected 8 or 4"));
  wrong = x;
  wrong.stride = 32;
  CHECK_THROWS_WITH(kernels::gemm(packed, wrong, output(y)), Catch::Contains("x.stride = 32"));
  wrong = x;
  wrong.bits = 4;
  codes[70] = 9;
  CHECK_THROWS_WITH(kernels::gemm(packed, wrong, output(y)),
                    Catch::Contains("x code (1, 6) = 9; expected an INT4 code in [-8, 7]"));
  scales[1] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(kernels::gemm(packed, x, output(y)),
                    Catch::Contains("x.scales[1] = inf; expected a finite activation scale"));
  CHECK_THROWS_WITH(
      kernels::DotWeights(quant::IntAsym<8>({.group_size = 48}).quantize(Matrix::Ones(2, 96))),
      Catch::Contains("group_size = 48; expected a multiple of 32"));
}
