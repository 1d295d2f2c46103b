// SPDX-License-Identifier: Apache-2.0
// QA-LoRA against ALGORITHMS.md §3 oracles: T3.1 (merge exactness, f32 and double, ragged
// K), T3.2 (dyadic data: bit-identical), T3.3 (codes and scales untouched), T3.4 (integer
// zeros), T3.5 (B = 0), T3.6 (κ bookkeeping); the pooled projection, and bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "adapter_test_util.hpp"
#include "qlr/adapter/concept.hpp"
#include "qlr/adapter/merge.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/core/bit_pack.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/nf4.hpp"
#include "qlr_test_support.hpp"

using qlr::Encoding;
using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
using qlr::QuantizedMatrix;
using qlr::ZeroMode;
using qlr::adapter::Pooling;
using qlr::adapter::QaLora;
using qlr::test::gaussian;
using qlr::test::relative_error;
using qlr::test::same_bytes;
using qlr::test::to_double;
using Int4 = qlr::quant::IntAsym<4>;
using Q4 = QuantizedMatrix<Int4::format>;

static_assert(qlr::adapter::Adapter<QaLora>);
static_assert(qlr::adapter::AdapterFor<QaLora, Int4::format>);
static_assert(qlr::adapter::AdapterFor<QaLora, qlr::quant::IntAsym<2>::format>);
static_assert(!qlr::adapter::AdapterFor<QaLora, qlr::quant::IntSym<4>::format>);
static_assert(!qlr::adapter::AdapterFor<QaLora, qlr::quant::Nf4::format>);

namespace {

/// Unpacked codes of row o.
template <class Q>
std::vector<std::uint8_t> codes_of(const Q& q, index_t o) {
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(q.cols()));
  qlr::unpack_codes(Q::bits, q.row_codes(o), codes);
  return codes;
}

/// S·(q − Z) in double with the given zeros (N×L), from q's codes and scales.
template <class Q>
MatrixD dequantize_with_zeros(const Q& q, const MatrixD& zeros) {
  MatrixD w(q.rows(), q.cols());
  for (index_t o = 0; o < q.rows(); ++o) {
    const auto codes = codes_of(q, o);
    for (index_t i = 0; i < q.cols(); ++i) {
      const index_t l = i / q.group_size();
      w(o, i) = static_cast<double>(q.scale(o, l)) *
                (static_cast<double>(codes[static_cast<std::size_t>(i)]) - zeros(o, l));
    }
  }
  return w;
}

/// The stored zeros (N×L) in double.
template <class Q>
MatrixD zeros_of(const Q& q) {
  MatrixD z(q.rows(), q.groups());
  for (index_t o = 0; o < q.rows(); ++o)
    for (index_t l = 0; l < q.groups(); ++l) z(o, l) = q.zero(o, l);
  return z;
}

/// The stored scales (N×L) in double.
template <class Q>
MatrixD scales_of(const Q& q) {
  MatrixD s(q.rows(), q.groups());
  for (index_t o = 0; o < q.rows(); ++o)
    for (index_t l = 0; l < q.groups(); ++l) s(o, l) = q.scale(o, l);
  return s;
}

/// The unmerged forward in double, by a reimplementation of §3.1: X·Ŵᵀ + s·(P·Aᵀ)·Bᵀ with
/// P[m,l] = (κ/g_l)·Σ_{i∈G_l} X[m,i].
MatrixD unmerged_forward(const MatrixD& w_hat, const QaLora& qa, const Matrix& x) {
  const index_t g = qa.group_size();
  MatrixD p = MatrixD::Zero(x.rows(), qa.groups());
  for (index_t m = 0; m < x.rows(); ++m) {
    for (index_t i = 0; i < x.cols(); ++i) p(m, i / g) += x(m, i);
    for (index_t l = 0; l < qa.groups(); ++l) {
      const auto width = static_cast<double>(std::min(g, x.cols() - l * g));
      p(m, l) *= qa.kappa() / width;
    }
  }
  return to_double(x) * w_hat.transpose() + static_cast<double>(qa.scale()) * p *
                                                to_double(qa.a()).transpose() *
                                                to_double(qa.b()).transpose();
}

/// The unmerged forward as a layer computes it: X·Ŵᵀ + t·Bᵀ with t from project (FP32),
/// accumulated in double.
MatrixD unmerged_forward_f32(const Matrix& w_hat, const QaLora& qa, const Matrix& x) {
  Matrix t(x.rows(), qa.rank());
  qa.project(x, t);
  return to_double(x) * to_double(w_hat).transpose() +
         to_double(t) * to_double(qa.up()).transpose();
}

QaLora random_qa_lora(std::mt19937& rng, index_t n, index_t k, index_t g, index_t r,
                      Pooling pooling, float b_sigma = 1.0f) {
  const index_t groups = (k + g - 1) / g;
  return QaLora(gaussian(rng, r, groups), gaussian(rng, n, r, b_sigma), 16.0, k, g, pooling);
}

/// A QuantizedMatrix from unpacked codes (N×K), scales and zeros (N×L).
Q4 make_q4(index_t n, index_t k, index_t g, const std::vector<std::uint8_t>& codes,
           std::vector<float> scales, std::vector<float> zeros) {
  qlr::QuantizedParts parts;
  parts.rows = n;
  parts.cols = k;
  parts.group_size = g;
  const index_t stride = qlr::packed_size(4, k);
  parts.codes.resize(static_cast<std::size_t>(n * stride));
  for (index_t o = 0; o < n; ++o)
    qlr::pack_codes(4,
                    std::span(codes).subspan(static_cast<std::size_t>(o * k),
                                             static_cast<std::size_t>(k)),
                    std::span(parts.codes).subspan(static_cast<std::size_t>(o * stride),
                                                   static_cast<std::size_t>(stride)));
  parts.scales = std::move(scales);
  parts.zeros = std::move(zeros);
  return Q4(std::move(parts));
}

}  // namespace

TEST_CASE("QaLora: pooled projection and dense delta match §3.1", "[adapter][qa_lora]") {
  std::mt19937 rng(21);
  for (const index_t k : {256, 172}) {
    for (const Pooling pooling : {Pooling::mean, Pooling::sum, Pooling::peft}) {
      CAPTURE(k, static_cast<int>(pooling));
      const index_t n = 24, g = 32, r = 4;
      const QaLora qa = random_qa_lora(rng, n, k, g, r, pooling);
      CHECK(qa.groups() == (k + g - 1) / g);
      CHECK(qa.group_width(qa.groups() - 1) == (k % g == 0 ? g : k % g));
      CHECK(qa.kappa() == (pooling == Pooling::mean  ? 1.0
                           : pooling == Pooling::sum ? 32.0
                                                     : static_cast<double>(k) / 32.0));
      CHECK(qa.parameter_count() == r * (n + qa.groups()));
      const Matrix x = gaussian(rng, 5, k);
      // The side path alone: a zero base.
      const MatrixD zero = MatrixD::Zero(n, k);
      const MatrixD ref = unmerged_forward(zero, qa, x);
      CHECK(relative_error(ref, unmerged_forward_f32(Matrix::Zero(n, k), qa, x)) < 1e-6);
      // ΔW is constant in each cell and reproduces the side path densely.
      const Matrix delta = qa.delta();
      CHECK(relative_error(ref, to_double(x) * to_double(delta).transpose()) < 1e-6);
      const MatrixD d = qa.group_delta();
      for (index_t i = 0; i < k; ++i) CHECK(delta(3, i) == static_cast<float>(d(3, i / g)));
    }
  }
}

TEST_CASE("T3.1 merge into zeros is exact: f32 and double, K = 256 and ragged 172",
          "[adapter][qa_lora][merge]") {
  std::mt19937 rng(22);
  const index_t n = 96, g = 32, r = 8, m = 16;
  for (const index_t k : {256, 172}) {
    for (const Pooling pooling : {Pooling::mean, Pooling::sum, Pooling::peft}) {
      CAPTURE(k, static_cast<int>(pooling));
      const Q4 base = Int4({.group_size = g}).quantize(gaussian(rng, n, k));
      const QaLora qa = random_qa_lora(rng, n, k, g, r, pooling);
      const Matrix x = gaussian(rng, m, k);
      const Q4 merged = qlr::adapter::merge_into_zeros(base, qa);
      CHECK(merged.zero_mode() == ZeroMode::floating);
      // f32: the layer's unmerged path against the merged base, both accumulated in double.
      const MatrixD y_merged = to_double(x) * to_double(qlr::quant::dequantize(merged)).transpose();
      const MatrixD y_unmerged = unmerged_forward_f32(qlr::quant::dequantize(base), qa, x);
      CHECK(relative_error(y_unmerged, y_merged) <= 1e-5);
      // Double: Z' = Z − D/S unrounded against the double reimplementation of §3.1.
      const MatrixD z_merged = zeros_of(base) - qa.group_delta().cwiseQuotient(scales_of(base));
      const MatrixD y_merged_d = to_double(x) * dequantize_with_zeros(base, z_merged).transpose();
      const MatrixD w_hat_d = dequantize_with_zeros(base, zeros_of(base));
      const MatrixD y_unmerged_d = unmerged_forward(w_hat_d, qa, x);
      CHECK(relative_error(y_unmerged_d, y_merged_d) <= 1e-12);
      // The stored f32 zeros are Z' rounded once.
      for (index_t o = 0; o < n; o += 17)
        for (index_t l = 0; l < base.groups(); ++l)
          CHECK(merged.zero(o, l) == static_cast<float>(z_merged(o, l)));
    }
  }
}

TEST_CASE("T3.2 dyadic data: merged and unmerged outputs are bit-identical in double",
          "[adapter][qa_lora][merge]") {
  std::mt19937 rng(23);
  const index_t n = 8, k = 64, g = 32, r = 4, m = 6, groups = 2;
  std::uniform_int_distribution<int> code(0, 15), small(-8, 8), exponent(6, 8), xs(-16, 16);
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(n * k));
  for (auto& c : codes) c = static_cast<std::uint8_t>(code(rng));
  std::vector<float> scales(static_cast<std::size_t>(n * groups)), zeros(scales.size());
  for (auto& s : scales) s = std::ldexp(1.0f, -exponent(rng));  // 2^-6 … 2^-8
  for (auto& z : zeros) z = static_cast<float>(code(rng));
  const Q4 base = make_q4(n, k, g, codes, scales, zeros);
  Matrix a(r, groups), b(n, r), x(m, k);
  const auto dyadic = [&](Matrix& out, std::uniform_int_distribution<int>& numerator, int exp) {
    for (index_t i = 0; i < out.size(); ++i)
      out.data()[i] = std::ldexp(static_cast<float>(numerator(rng)), exp);
  };
  dyadic(a, small, -8);  // multiples of 2^-8
  dyadic(b, small, -8);
  dyadic(x, xs, -4);     // multiples of 2^-4
  const QaLora qa(a, b, 1.0, k, g);  // α/r = 0.25, mean pooling
  REQUIRE(qa.scale() == 0.25f);
  const Q4 merged = qlr::adapter::merge_into_zeros(base, qa);
  const MatrixD w_merged = dequantize_with_zeros(merged, zeros_of(merged));
  const MatrixD y_merged = to_double(x) * w_merged.transpose();
  const MatrixD y_unmerged = unmerged_forward(dequantize_with_zeros(base, zeros_of(base)), qa, x);
  CHECK(y_merged == y_unmerged);
  CHECK(!qa.group_delta().isZero());
  CHECK(zeros_of(merged) != zeros_of(base));
}

TEST_CASE("T3.3 codes and scales are byte-identical after the merge; only zeros change",
          "[adapter][qa_lora][merge]") {
  std::mt19937 rng(24);
  const index_t n = 32, k = 172, g = 32;
  for (const qlr::ScaleType scale_type : {qlr::ScaleType::f32, qlr::ScaleType::f16}) {
    const Q4 base = Int4({.group_size = g, .scale_type = scale_type}).quantize(gaussian(rng, n, k));
    const QaLora qa = random_qa_lora(rng, n, k, g, 4, Pooling::mean);
    for (const ZeroMode mode : {ZeroMode::floating, ZeroMode::integer}) {
      CAPTURE(static_cast<int>(scale_type), static_cast<int>(mode));
      const Q4 merged = qlr::adapter::merge_into_zeros(base, qa, mode);
      CHECK(same_bytes(merged.codes(), base.codes()));
      CHECK(same_bytes(merged.scales(), base.scales()));
      CHECK(!same_bytes(merged.zeros(), base.zeros()));
      CHECK(merged.zero_mode() == mode);
      // Float zeros are stored in f32, where f16 scales are exact.
      CHECK(merged.scale_type() == (mode == ZeroMode::floating ? qlr::ScaleType::f32 : scale_type));
      CHECK(merged.group_size() == base.group_size());
    }
  }
}

TEST_CASE("T3.4 integer-zero merge: within S/2 of the float merge, exact for integer D/S",
          "[adapter][qa_lora][merge]") {
  std::mt19937 rng(25);
  const index_t n = 40, k = 172, g = 32;
  const Q4 base = Int4({.group_size = g}).quantize(gaussian(rng, n, k));
  for (const float b_sigma : {0.05f, 3.0f}) {  // the large update clamps some cells
    CAPTURE(b_sigma);
    const QaLora qa = random_qa_lora(rng, n, k, g, 4, Pooling::mean, b_sigma);
    const auto exact = qlr::adapter::merge_into_zeros_counted(base, qa, ZeroMode::floating);
    const auto rounded = qlr::adapter::merge_into_zeros_counted(base, qa, ZeroMode::integer);
    CHECK(exact.clamped_cells == 0);
    CHECK(rounded.weight.zero_mode() == ZeroMode::integer);
    const MatrixD w_float = dequantize_with_zeros(exact.weight, zeros_of(exact.weight));
    const MatrixD w_int = dequantize_with_zeros(rounded.weight, zeros_of(rounded.weight));
    index_t clamped = 0;
    for (index_t o = 0; o < n; ++o) {
      for (index_t l = 0; l < base.groups(); ++l) {
        const double z = std::nearbyint(exact.weight.zero(o, l));
        if (z < 0.0 || z > 15.0) {
          ++clamped;
          continue;
        }
        const double s = base.scale(o, l);
        for (index_t i = l * g; i < std::min(k, (l + 1) * g); ++i)
          CHECK(std::abs(w_int(o, i) - w_float(o, i)) <= s / 2);
      }
    }
    CHECK(rounded.clamped_cells == clamped);
    if (b_sigma > 1.0f) CHECK(clamped > 0);
  }

  // D/S integer in every cell: S = 2^-4, sum pooling with s = 1, so D = B[o]·A[l] =
  // B[o]·k_l·2^-4 with B[o] ∈ {−1, 0, 1}, k_l ∈ [−3, 3], and Z = 8 keeps Z' in range.
  const index_t n2 = 6, k2 = 128, g2 = 32, groups2 = 4;
  std::uniform_int_distribution<int> code(0, 15), unit(-1, 1), step(-3, 3);
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(n2 * k2));
  for (auto& c : codes) c = static_cast<std::uint8_t>(code(rng));
  const Q4 base2 = make_q4(n2, k2, g2, codes, std::vector<float>(n2 * groups2, 0.0625f),
                           std::vector<float>(n2 * groups2, 8.0f));
  Matrix a(1, groups2), b(n2, 1);
  for (index_t l = 0; l < groups2; ++l) a(0, l) = static_cast<float>(step(rng)) * 0.0625f;
  for (index_t o = 0; o < n2; ++o) b(o, 0) = static_cast<float>(unit(rng));
  const QaLora qa2(a, b, 1.0, k2, g2, Pooling::sum);
  const auto exact2 = qlr::adapter::merge_into_zeros_counted(base2, qa2, ZeroMode::floating);
  const auto rounded2 = qlr::adapter::merge_into_zeros_counted(base2, qa2, ZeroMode::integer);
  CHECK(rounded2.clamped_cells == 0);
  CHECK(qlr::quant::dequantize(rounded2.weight) == qlr::quant::dequantize(exact2.weight));
}

TEST_CASE("T3.5 B = 0: the merged base and the unmerged layer equal the base exactly",
          "[adapter][qa_lora][merge]") {
  std::mt19937 rng(26);
  const index_t n = 16, k = 172, g = 32, r = 4;
  const Q4 base = Int4({.group_size = g}).quantize(gaussian(rng, n, k));
  const QaLora qa(gaussian(rng, r, base.groups()), Matrix::Zero(n, r), 16.0, k, g);
  const Matrix w_hat = qlr::quant::dequantize(base);
  for (const ZeroMode mode : {ZeroMode::floating, ZeroMode::integer}) {
    const auto merged = qlr::adapter::merge_into_zeros_counted(base, qa, mode);
    CHECK(merged.clamped_cells == 0);
    CHECK(same_bytes(merged.weight.zeros(), base.zeros()));
    CHECK(qlr::quant::dequantize(merged.weight) == w_hat);
  }
  const Matrix x = gaussian(rng, 4, k);
  Matrix t(4, r);
  qa.project(x, t);
  const Matrix y_base = x * w_hat.transpose();
  Matrix y = y_base;
  y += t * qa.up().transpose();
  CHECK(y == y_base);
}

TEST_CASE("T3.6 merging with another pooling constant is detected", "[adapter][qa_lora][merge]") {
  std::mt19937 rng(27);
  const index_t n = 96, k = 256, g = 32, r = 8;
  const Q4 base = Int4({.group_size = g}).quantize(gaussian(rng, n, k));
  const QaLora trained = random_qa_lora(rng, n, k, g, r, Pooling::mean);
  const Matrix x = gaussian(rng, 16, k);
  const MatrixD y_unmerged = unmerged_forward_f32(qlr::quant::dequantize(base), trained, x);
  const auto merged_error = [&](const QaLora& qa) {
    const Q4 merged = qlr::adapter::merge_into_zeros(base, qa);
    return relative_error(y_unmerged,
                          to_double(x) * to_double(qlr::quant::dequantize(merged)).transpose());
  };
  CHECK(merged_error(trained) <= 1e-5);
  for (const Pooling other : {Pooling::sum, Pooling::peft}) {
    CAPTURE(static_cast<int>(other));
    const QaLora wrong(trained.a(), trained.b(), trained.alpha(), k, g, other);
    CHECK(merged_error(wrong) > 1e-2);  // ≫ the 1e-5 tolerance of T3.1
  }
}

TEST_CASE("QaLora and merge_into_zeros reject bad input, naming it (T1.4)",
          "[adapter][qa_lora][errors]") {
  std::mt19937 rng(28);
  const index_t n = 12, k = 172, g = 32, r = 4, groups = 6;
  const Matrix a = gaussian(rng, r, groups);
  const Matrix b = gaussian(rng, n, r);
  CHECK_QLR_ERROR(QaLora(gaussian(rng, r, k), b, 1.0, k, g), "a is 4x172; expected 6 columns");
  CHECK_QLR_ERROR(QaLora(a, b, 1.0, k, -1), "group_size = -1");
  CHECK_QLR_ERROR(QaLora(a, gaussian(rng, n, r + 1), 1.0, k, g), "b is 12x5");
  CHECK_QLR_ERROR(QaLora(a, b, std::nan(""), k, g), "alpha = nan");
  const QaLora qa(a, b, 1.0, k, g);
  Matrix t(2, r);
  CHECK_QLR_ERROR(qa.project(gaussian(rng, 2, k - 1), t), "x is 2x171; expected 172 columns");
  Matrix t_bad(3, r);
  CHECK_QLR_ERROR(qa.project(gaussian(rng, 2, k), t_bad), "t is 3x4; expected 2x4");

  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    CAPTURE(bad);
    Matrix a_bad = a;
    a_bad(3, 5) = bad;
    Matrix b_bad = b;
    b_bad(11, 0) = bad;
    CHECK_QLR_ERROR(QaLora(a_bad, b, 1.0, k, g), "adapter::QaLora: a: element (3, 5)");
    CHECK_QLR_ERROR(QaLora(a, b_bad, 1.0, k, g), "adapter::QaLora: b: element (11, 0)");
    Matrix x = gaussian(rng, 2, k);
    x(1, 170) = bad;  // in the ragged last group
    CHECK_QLR_ERROR(qa.project(x, t), "QaLora::project: x: element (1, 170)");
    Matrix w = gaussian(rng, n, k);
    w(0, 0) = bad;
    CHECK_QLR_ERROR(qlr::adapter::merge(w, qa), "merge(QaLora): w: element (0, 0)");
  }

  const Q4 base64 = Int4({.group_size = 64}).quantize(gaussian(rng, n, k));
  const QaLora qa64_wrong(gaussian(rng, r, 6), b, 1.0, k, 32);
  CHECK_QLR_ERROR(qlr::adapter::merge_into_zeros(base64, qa64_wrong),
                  "base.group_size() = 64 and adapter group_size() = 32; expected them equal");
  const Q4 other_shape = Int4({.group_size = 32}).quantize(gaussian(rng, n + 1, k));
  CHECK_QLR_ERROR(qlr::adapter::merge_into_zeros(other_shape, qa),
                  "base is 13x172; expected 12x172");
}
