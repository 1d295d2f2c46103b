// SPDX-License-Identifier: Apache-2.0
// Integer group quantizers against ALGORITHMS.md §2 oracles T2.1–T2.7: exact worked
// examples, the half-step error bound over a sweep of widths, group sizes and matrices,
// degenerate groups, ragged groups, clip search, thread independence and bad input.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "qlr/core/parallel.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::quant::IntAsym;
using qlr::quant::IntOptions;
using qlr::quant::IntSym;

namespace {

/// Unpacked codes of row `o`.
template <class Q>
std::vector<std::uint8_t> row_codes(const Q& q, index_t o) {
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(q.cols()));
  qlr::unpack_codes(Q::bits, q.row_codes(o), codes);
  return codes;
}

/// Zero point of group l of row o as the decoder uses it (2^(b−1) for symmetric).
template <class Q>
double zero_of(const Q& q, index_t o, index_t l) {
  if constexpr (Q::encoding == qlr::Encoding::int_asym) return q.zero(o, l);
  return static_cast<double>(1 << (Q::bits - 1));
}

/// ŵ in double from the stored codes and parameters: exact for integer zero points, so the
/// bound below tests the quantizer's choice of code, not the float rounding of dequantize.
template <class Q>
std::vector<std::vector<double>> dequantize_exact(const Q& q) {
  std::vector<std::vector<double>> out(static_cast<std::size_t>(q.rows()));
  for (index_t o = 0; o < q.rows(); ++o) {
    const auto codes = row_codes(q, o);
    auto& row = out[static_cast<std::size_t>(o)];
    row.resize(codes.size());
    for (index_t i = 0; i < q.cols(); ++i) {
      const index_t l = i / q.group_size();
      row[static_cast<std::size_t>(i)] =
          static_cast<double>(q.scale(o, l)) *
          (static_cast<double>(codes[static_cast<std::size_t>(i)]) - zero_of(q, o, l));
    }
  }
  return out;
}

/// One unit in the last place of |c| in f32.
float ulp(float c) {
  return std::nextafter(std::abs(c), std::numeric_limits<float>::infinity()) - std::abs(c);
}

/// T2.3: every element inside its group's range is within half a step of its code's value.
template <class Q>
void check_half_step_bound(const Matrix& w, const Q& q) {
  const auto exact = dequantize_exact(q);
  for (index_t o = 0; o < w.rows(); ++o) {
    for (index_t i = 0; i < w.cols(); ++i) {
      const double s = q.scale(o, i / q.group_size());
      const double err = std::abs(static_cast<double>(w(o, i)) -
                                  exact[static_cast<std::size_t>(o)][static_cast<std::size_t>(i)]);
      if (!(err <= s / 2 * (1 + 1e-12))) {
        CAPTURE(o, i, w(o, i), s, err);
        FAIL_CHECK("element outside the half-step bound");
        return;
      }
    }
  }
}

/// T2.4: coding the dequantized values again with the stored grid returns the same codes.
template <class Q>
void check_reencoding_is_identity(const Q& q) {
  const Matrix w_hat = qlr::quant::dequantize(q);
  for (index_t o = 0; o < q.rows(); ++o) {
    const auto codes = row_codes(q, o);
    for (index_t i = 0; i < q.cols(); ++i) {
      const index_t l = i / q.group_size();
      const double x = static_cast<double>(w_hat(o, i)) / q.scale(o, l);
      const double z = zero_of(q, o, l);
      const double u = q.zero_mode() == qlr::ZeroMode::integer ? std::nearbyint(x) + z
                                                               : std::nearbyint(x + z);
      if (u != codes[static_cast<std::size_t>(i)]) {
        CAPTURE(o, i, u, codes[static_cast<std::size_t>(i)]);
        FAIL_CHECK("re-encoding changed a code");
        return;
      }
    }
  }
}

template <int Bits>
void check_bounds_sweep(const Matrix& w, index_t g) {
  const IntOptions opt{.group_size = g};
  const auto asym = IntAsym<Bits>(opt).quantize(w);
  const auto sym = IntSym<Bits>(opt).quantize(w);
  for (index_t o = 0; o < w.rows(); ++o) {
    for (const auto c : row_codes(asym, o)) REQUIRE(c <= (1 << Bits) - 1);
    for (const auto c : row_codes(sym, o)) REQUIRE(c <= (1 << Bits) - 1);
  }
  check_half_step_bound(w, asym);
  check_half_step_bound(w, sym);
  check_reencoding_is_identity(asym);
  check_reencoding_is_identity(sym);
}

}  // namespace

TEST_CASE("nearbyint: rounds half to even in the default mode (T1.3)", "[quant][int_group]") {
  CHECK(std::nearbyint(-3.5) == -4.0);
  CHECK(std::signbit(std::nearbyint(-0.5)));
  CHECK(std::nearbyint(-0.5) == 0.0);
  CHECK(std::nearbyint(0.5) == 0.0);
  CHECK(std::nearbyint(1.5) == 2.0);
  CHECK(std::nearbyint(2.5) == 2.0);
  CHECK(std::nearbyint(4.5) == 4.0);
}

TEST_CASE("IntAsym<4>: the worked example of T2.1, exactly", "[quant][int_group]") {
  Matrix w(1, 8);
  w << -1.0f, -0.875f, -0.125f, 0.0f, 0.375f, 1.125f, 2.0f, 2.75f;
  const auto q = IntAsym<4>({.group_size = 8}).quantize(w);
  CHECK(q.scale(0, 0) == 0.25f);
  CHECK(q.zero(0, 0) == 4.0f);
  CHECK(row_codes(q, 0) == std::vector<std::uint8_t>{0, 0, 4, 4, 6, 8, 12, 15});
  Matrix expected(1, 8);
  expected << -1.0f, -1.0f, 0.0f, 0.0f, 0.5f, 1.0f, 2.0f, 2.75f;
  CHECK(qlr::quant::dequantize(q) == expected);
}

TEST_CASE("IntSym<4>: the worked example of T2.2, exactly", "[quant][int_group]") {
  Matrix w(1, 5);
  w << 3.5f, -1.75f, 0.4375f, 0.0f, -0.21875f;
  const auto q = IntSym<4>({.group_size = 0}).quantize(w);
  CHECK(q.scale(0, 0) == 0.5f);
  CHECK(row_codes(q, 0) == std::vector<std::uint8_t>{15, 4, 9, 8, 8});  // q = 7, −4, 1, 0, 0
  CHECK(q.zeros().empty());
}

TEST_CASE("IntAsym/IntSym: codes in range, half-step bound, re-encoding (T2.3, T2.4)",
          "[quant][int_group]") {
  const index_t g = GENERATE(32, 64, 128, 0);
  const index_t k = GENERATE(64, 172, 257);  // 172 and 257 leave ragged last groups
  const std::uint32_t seed = GENERATE(1u, 2u);
  const bool heavy = GENERATE(false, true);
  CAPTURE(g, k, seed, heavy);
  std::mt19937 rng(seed);
  const Matrix w = heavy ? qlr::test::heavy_tailed(rng, 13, k) : qlr::test::gaussian(rng, 13, k);
  check_bounds_sweep<2>(w, g);
  check_bounds_sweep<3>(w, g);
  check_bounds_sweep<4>(w, g);
  check_bounds_sweep<8>(w, g);
}

TEST_CASE("IntAsym: the half-step bound holds with f16 scales and float zeros",
          "[quant][int_group]") {
  std::mt19937 rng(7);
  const Matrix w = qlr::test::heavy_tailed(rng, 9, 200);
  const auto zero_mode = GENERATE(qlr::ZeroMode::integer, qlr::ZeroMode::floating);
  const auto scale_type = GENERATE(qlr::ScaleType::f32, qlr::ScaleType::f16);
  CAPTURE(static_cast<int>(zero_mode), static_cast<int>(scale_type));
  const IntOptions opt{.group_size = 32, .zero_mode = zero_mode, .scale_type = scale_type};
  const auto q = IntAsym<3>(opt).quantize(w);
  for (const float s : q.scales()) REQUIRE(s == qlr::round_to_storage(s, scale_type));
  check_half_step_bound(w, q);
  check_reencoding_is_identity(q);
}

TEST_CASE("IntAsym: float zeros without include_zero reproduce each group's min and max",
          "[quant][int_group]") {
  std::mt19937 rng(3);
  Matrix w = qlr::test::gaussian(rng, 6, 96);
  w.row(2).array() += 5.0f;  // a row whose groups all lie above zero
  const IntOptions opt{.group_size = 32, .zero_mode = qlr::ZeroMode::floating,
                       .include_zero = false};
  const auto q = IntAsym<4>(opt).quantize(w);
  const Matrix w_hat = qlr::quant::dequantize(q);
  for (index_t o = 0; o < w.rows(); ++o) {
    for (index_t l = 0; l < 3; ++l) {
      const auto group = w.row(o).segment(l * 32, 32);
      const auto group_hat = w_hat.row(o).segment(l * 32, 32);
      // Float rounding of Z = −lo/s and of s·(u − Z): a few f32 ulps of the range's ends.
      const double tolerance = 4e-7 * (std::abs(group.minCoeff()) + std::abs(group.maxCoeff()));
      CHECK(std::abs(group_hat.minCoeff() - group.minCoeff()) <= tolerance);
      CHECK(std::abs(group_hat.maxCoeff() - group.maxCoeff()) <= tolerance);
    }
  }
  check_half_step_bound(w, q);
}

TEST_CASE("IntAsym/IntSym: all-zero groups are exact zeros (T2.5)", "[quant][int_group]") {
  const Matrix w = Matrix::Zero(2, 64);
  for (const auto zero_mode : {qlr::ZeroMode::integer, qlr::ZeroMode::floating}) {
    const IntOptions opt{.group_size = 32, .zero_mode = zero_mode};
    const auto asym = IntAsym<4>(opt).quantize(w);
    const auto sym = IntSym<3>(opt).quantize(w);
    CHECK(row_codes(asym, 0) == std::vector<std::uint8_t>(64, 0));  // u = 0, Z = 0
    CHECK(row_codes(sym, 1) == std::vector<std::uint8_t>(64, 4));   // q = 0 stored as 2^(b−1)
    CHECK(qlr::quant::dequantize(asym).isZero(0.0f));
    CHECK(qlr::quant::dequantize(sym).isZero(0.0f));
    CHECK(std::signbit(asym.zero(0, 0)) == false);  // +0, not −0
  }
}

TEST_CASE("IntAsym/IntSym: a constant group c reconstructs c within 1 ulp (T2.5)",
          "[quant][int_group]") {
  // c is one end of its grid: ŵ = s*·qmax with s* = c/qmax rounded to nearest, a relative
  // error below 2^-24, so the f32 result is c or a neighbour.
  std::mt19937 rng(12);
  std::uniform_real_distribution<float> magnitude(-20.0f, 20.0f);
  Matrix w(400, 32);
  for (index_t o = 0; o < w.rows(); ++o) {
    const float c = std::ldexp(1.0f + std::abs(magnitude(rng)) / 20.0f, static_cast<int>(magnitude(rng)));
    w.row(o).setConstant(o % 2 == 0 ? c : -c);
  }
  const IntOptions opts[] = {
      {.group_size = 32},
      {.group_size = 32, .zero_mode = qlr::ZeroMode::floating, .include_zero = false}};
  for (const auto& opt : opts) {
    CAPTURE(static_cast<int>(opt.zero_mode), opt.include_zero);
    for (const Matrix& m : {qlr::quant::dequantize(IntAsym<4>(opt).quantize(w)),
                            qlr::quant::dequantize(IntAsym<8>(opt).quantize(w)),
                            qlr::quant::dequantize(IntSym<4>(opt).quantize(w)),
                            qlr::quant::dequantize(IntSym<8>(opt).quantize(w))}) {
      for (index_t o = 0; o < w.rows(); ++o) {
        CAPTURE(o, w(o, 0), m(o, 0));
        REQUIRE(std::abs(m(o, 0) - w(o, 0)) <= ulp(w(o, 0)));
      }
    }
  }
}

TEST_CASE("IntAsym/IntSym: scales below the smallest normal are lifted to it (§2.3)",
          "[quant][int_group]") {
  Matrix w(2, 8);
  w.row(0).setConstant(1e-39f);  // subnormal: 1e-39/15 is far below FLT_MIN
  w.row(1) << 3e-40f, -2e-40f, 0.0f, 1e-40f, 4e-40f, -4e-40f, 2e-40f, 1e-41f;
  for (const auto scale_type : {qlr::ScaleType::f32, qlr::ScaleType::f16}) {
    const float floor = scale_type == qlr::ScaleType::f32 ? std::numeric_limits<float>::min()
                                                          : 0x1p-14f;
    const IntOptions opt{.group_size = 8, .scale_type = scale_type};
    const auto asym = IntAsym<4>(opt).quantize(w);
    const auto sym = IntSym<4>(opt).quantize(w);
    for (index_t o = 0; o < 2; ++o) {
      CHECK(asym.scale(o, 0) == floor);
      CHECK(sym.scale(o, 0) == floor);
    }
    check_half_step_bound(w, asym);  // every value is within half of the floored step of 0
    check_half_step_bound(w, sym);
  }
}

TEST_CASE("IntAsym: a scale rounded down that would break the bound is stepped up",
          "[quant][int_group]") {
  // With s* = s rounded to nearest, this range's top end lands 0.5000007 steps from the grid
  // (found by a search over 5·10^7 random ranges).
  Matrix w(1, 2);
  w << -0x1.c74992p+0f, 0x1.29b01cp+1f;
  const auto q = IntAsym<4>({.group_size = 0}).quantize(w);
  const double s = (static_cast<double>(w(0, 1)) - w(0, 0)) / 15.0;
  CHECK(q.scale(0, 0) == std::nextafter(static_cast<float>(s), 1.0f));
  check_half_step_bound(w, q);
}

TEST_CASE("IntAsym: float zeros far from the range keep the bound in f16", "[quant][int_group]") {
  Matrix w(2, 4);
  w << 1000.1f, 1000.3f, 1000.5f, 1000.7f,  // Z = −lo/s ≈ −25000: f16 cannot hold it
      -3.0f, -2.5f, -2.25f, -2.0f;          // all negative, Z within reach
  const IntOptions opt{.group_size = 0, .zero_mode = qlr::ZeroMode::floating,
                       .include_zero = false, .scale_type = qlr::ScaleType::f16};
  const auto q = IntAsym<4>(opt).quantize(w);
  check_half_step_bound(w, q);
  check_reencoding_is_identity(q);
  CHECK(q.zero(0, 0) == 0.0f);                        // refitted with 0 in range
  CHECK(std::abs(q.zero(1, 0) - 45.0f) < 0.1f);       // −lo/s = 3·15: kept beyond qmax
}

TEST_CASE("IntAsym: per-channel and ragged groups are independent vectors (T2.6)",
          "[quant][int_group]") {
  std::mt19937 rng(11);
  const Matrix w = qlr::test::heavy_tailed(rng, 5, 172);
  const auto whole = IntAsym<4>({.group_size = 0}).quantize(w);
  CHECK(whole.groups() == 1);
  for (const index_t g : {index_t{172}, index_t{1000}}) {
    const auto same = IntAsym<4>({.group_size = g}).quantize(w);
    CHECK(same.parts().codes == whole.parts().codes);
    CHECK(same.parts().scales == whole.parts().scales);
    CHECK(same.parts().zeros == whole.parts().zeros);
  }
  const auto grouped = IntAsym<3>({.group_size = 32}).quantize(w);
  REQUIRE(grouped.groups() == 6);  // 5·32 + 12
  for (index_t o = 0; o < w.rows(); ++o) {
    const auto codes = row_codes(grouped, o);
    for (index_t l = 0; l < 6; ++l) {
      const index_t n = l < 5 ? 32 : 12;
      const Matrix piece = w.block(o, l * 32, 1, n);
      const auto alone = IntAsym<3>({.group_size = 0}).quantize(piece);
      CHECK(alone.scale(0, 0) == grouped.scale(o, l));
      CHECK(alone.zero(0, 0) == grouped.zero(o, l));
      const auto alone_codes = row_codes(alone, 0);
      CHECK(std::equal(alone_codes.begin(), alone_codes.end(), codes.begin() + l * 32));
    }
  }
}

TEST_CASE("IntAsym/IntSym: clip search never loses to RTN, group by group (T2.7)",
          "[quant][int_group]") {
  const bool symmetric = GENERATE(false, true);
  const double norm = GENERATE(2.4, 2.0);
  CAPTURE(symmetric, norm);
  std::mt19937 rng(5);
  const Matrix w = qlr::test::heavy_tailed(rng, 16, 160);
  IntOptions rtn{.group_size = 32};
  IntOptions clip = rtn;
  clip.range = qlr::quant::Range::mse_clip;
  clip.clip.norm = norm;
  const Matrix a = symmetric ? qlr::quant::dequantize(IntSym<3>(rtn).quantize(w))
                             : qlr::quant::dequantize(IntAsym<3>(rtn).quantize(w));
  const Matrix b = symmetric ? qlr::quant::dequantize(IntSym<3>(clip).quantize(w))
                             : qlr::quant::dequantize(IntAsym<3>(clip).quantize(w));
  int improved = 0;
  for (index_t o = 0; o < w.rows(); ++o) {
    for (index_t l = 0; l < 5; ++l) {
      double err_rtn = 0.0;
      double err_clip = 0.0;
      for (index_t i = l * 32; i < (l + 1) * 32; ++i) {
        err_rtn += std::pow(std::abs(static_cast<double>(a(o, i)) - w(o, i)), norm);
        err_clip += std::pow(std::abs(static_cast<double>(b(o, i)) - w(o, i)), norm);
      }
      // The search scores ŵ in double, these are f32 dequantized: allow that rounding.
      CHECK(err_clip <= err_rtn * (1 + 1e-5));
      improved += err_clip < err_rtn * 0.99;
    }
  }
  CHECK(improved > 40);  // heavy tails: most of the 80 groups gain from clipping
}

TEST_CASE("IntAsym: the result does not depend on the thread count", "[quant][int_group]") {
  const int saved = qlr::num_threads();
  std::mt19937 rng(9);
  const Matrix w = qlr::test::heavy_tailed(rng, 67, 300);
  const IntOptions opt{.group_size = 64, .range = qlr::quant::Range::mse_clip};
  qlr::set_num_threads(1);
  const auto one = IntAsym<4>(opt).quantize(w);
  for (const int threads : {2, 3}) {
    qlr::set_num_threads(threads);
    const auto many = IntAsym<4>(opt).quantize(w);
    CHECK(many.parts().codes == one.parts().codes);
    CHECK(many.parts().scales == one.parts().scales);
    CHECK(many.parts().zeros == one.parts().zeros);
  }
  qlr::set_num_threads(saved);
}

TEST_CASE("IntAsym: worker threads round the way the caller does", "[quant][int_group]") {
  const int saved = qlr::num_threads();
  std::mt19937 rng(10);
  const Matrix w = qlr::test::gaussian(rng, 64, 128);
  qlr::set_num_threads(1);
  const auto one = IntAsym<4>({.group_size = 32}).quantize(w);
  // Threads started under another rounding mode must not keep it for later jobs.
  REQUIRE(std::fesetround(FE_UPWARD) == 0);
  qlr::set_num_threads(4);
  std::fesetround(FE_TONEAREST);
  const auto four = IntAsym<4>({.group_size = 32}).quantize(w);
  CHECK(four.parts().codes == one.parts().codes);
  CHECK(four.parts().scales == one.parts().scales);
  qlr::set_num_threads(saved);
}

TEST_CASE("IntAsym/IntSym: bad input is a qlr::Error naming the argument", "[quant][int_group]") {
  Matrix w = Matrix::Ones(4, 40);
  w(3, 17) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(IntAsym<4>().quantize(w), Catch::Contains("element (3, 17) = nan"));
  w(3, 17) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(IntSym<4>().quantize(w), Catch::Contains("element (3, 17) = inf"));
  w(3, 17) = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(IntAsym<2>().quantize(w), Catch::Contains("element (3, 17) = -inf"));
  w(3, 17) = 1.0f;

  CHECK_THROWS_WITH(IntAsym<4>().quantize(Matrix(0, 8)), Catch::Contains("w is 0x8"));
  CHECK_THROWS_WITH(IntAsym<4>({.group_size = -4}).quantize(w),
                    Catch::Contains("group_size = -4"));
  CHECK_THROWS_WITH(IntAsym<4>({.include_zero = false}).quantize(w),
                    Catch::Contains("include_zero = false with zero_mode = integer"));
  IntOptions clip{.range = qlr::quant::Range::mse_clip};
  clip.clip.max_shrink = 1.5;
  CHECK_THROWS_WITH(IntAsym<4>(clip).quantize(w), Catch::Contains("clip.max_shrink = 1.5"));
  clip.clip = {.grid = 0};
  CHECK_THROWS_WITH(IntAsym<4>(clip).quantize(w), Catch::Contains("clip.grid = 0"));
  clip.clip = {.norm = -1.0};
  CHECK_THROWS_WITH(IntAsym<4>(clip).quantize(w), Catch::Contains("clip.norm = -1"));

  Matrix large = Matrix::Ones(1, 8) * 1e9f;  // scale 1e9/15 does not fit f16
  CHECK_THROWS_WITH(IntAsym<4>({.scale_type = qlr::ScaleType::f16}).quantize(large),
                    Catch::Contains("fits the f16 scale type"));
}

TEST_CASE("IntAsym: quantizing outside round-to-nearest mode is refused", "[quant][int_group]") {
  const Matrix w = Matrix::Ones(2, 8);
  REQUIRE(std::fesetround(FE_UPWARD) == 0);
  bool threw = false;
  try {
    (void)IntAsym<4>().quantize(w);
  } catch (const qlr::Error& e) {
    threw = std::string(e.what()).find("FE_TONEAREST") != std::string::npos;
  }
  std::fesetround(FE_TONEAREST);
  CHECK(threw);
}
