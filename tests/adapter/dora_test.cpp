// SPDX-License-Identifier: Apache-2.0
// DoRA against ALGORITHMS.md §5 oracles: T5.1 (B = 0 is the base bit for bit), T5.2 (merge,
// unmerge, merged row norms), T5.3 (the efficient row-norm formula), and bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>

#include "adapter_test_util.hpp"
#include "qlr/adapter/concept.hpp"
#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/merge.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
using qlr::Vector;
using qlr::adapter::Dora;
using qlr::test::gaussian;
using qlr::test::relative_error;
using qlr::test::to_double;

static_assert(qlr::adapter::Adapter<Dora>);
static_assert(qlr::adapter::AdapterFor<Dora, qlr::QuantFormat<4, qlr::Encoding::codebook>>);

namespace {

/// y = c ⊙ (x·W0ᵀ + t·Bᵀ), the unmerged DoRA forward in FP32 (no bias).
Matrix dora_forward(const Dora& dora, const Matrix& w0, const Matrix& x) {
  Matrix t(x.rows(), dora.rank());
  dora.project(x, t);
  Matrix y = x * w0.transpose();
  y += t * dora.up().transpose();
  const Vector c = dora.output_scale(w0);
  for (index_t m = 0; m < y.rows(); ++m) y.row(m).array() *= c.transpose().array();
  return y;
}

/// m = initial magnitude plus a perturbation, B ≠ 0: a DoRA adapter after some training.
Dora trained_dora(std::mt19937& rng, const Matrix& w0, index_t r) {
  Vector m = Dora::initial_magnitude(w0);
  for (index_t o = 0; o < m.size(); ++o) m(o) *= 1.0f + 0.1f * gaussian(rng, 1, 1)(0, 0);
  return Dora(gaussian(rng, r, w0.cols(), 0.1f), gaussian(rng, w0.rows(), r, 0.1f), m, 16.0);
}

}  // namespace

TEST_CASE("T5.1 Dora with B = 0 and m from initial_magnitude is the base bit for bit",
          "[adapter][dora]") {
  std::mt19937 rng(11);
  const index_t n = 40, k = 96, r = 8;
  // On a dequantized base, as a DoRA adapter on a quantized layer sees it.
  const Matrix w0 = qlr::quant::dequantize(
      qlr::quant::IntAsym<4>({.group_size = 32}).quantize(gaussian(rng, n, k)));
  const Dora dora(gaussian(rng, r, k), Matrix::Zero(n, r), Dora::initial_magnitude(w0), 8.0);
  const Vector c = dora.output_scale(w0);
  CHECK((c.array() == 1.0f).all());
  CHECK(dora.row_norms(w0) == dora.magnitude());
  const Matrix x = gaussian(rng, 6, k);
  const Matrix y_base = x * w0.transpose();
  CHECK(dora_forward(dora, w0, x) == y_base);
}

TEST_CASE("T5.3 the efficient row-norm formula equals the explicit norm in double",
          "[adapter][dora]") {
  std::mt19937 rng(12);
  for (const index_t k : {96, 172}) {
    CAPTURE(k);
    const index_t n = 50, r = 16;
    const Matrix w0 = gaussian(rng, n, k);
    const Dora dora = trained_dora(rng, w0, r);
    const Eigen::VectorXd n_sq = dora.squared_row_norms(w0);
    const MatrixD v = to_double(w0) + static_cast<double>(dora.scale()) * to_double(dora.b()) *
                                          to_double(dora.a());
    for (index_t o = 0; o < n; ++o) {
      const double explicit_norm = v.row(o).norm();
      CHECK(std::abs(std::sqrt(n_sq(o)) - explicit_norm) <= 1e-12 * explicit_norm);
      CHECK(dora.row_norms(w0)(o) == static_cast<float>(std::sqrt(n_sq(o))));
    }
  }
  // A row that cancels (W0_o = −s·(BA)_o) is formed explicitly: its norm is 0, not noise.
  const index_t n = 4, k = 32, r = 2;
  const Matrix a = gaussian(rng, r, k);
  const Matrix b = gaussian(rng, n, r);
  const Dora dora(a, b, Vector::Ones(n), 2.0);  // s = 1
  Matrix w0 = gaussian(rng, n, k);
  w0.row(2) = -(b * a).row(2);
  const Eigen::VectorXd n_sq = dora.squared_row_norms(w0);
  CHECK(std::sqrt(n_sq(2)) < 1e-6 * w0.row(2).norm());
}

TEST_CASE("T5.2 merged DoRA: outputs, row norms |m_o| and unmerge", "[adapter][dora][merge]") {
  std::mt19937 rng(13);
  const index_t n = 64, k = 172, r = 8;
  const Matrix w0 = gaussian(rng, n, k);
  const Dora dora = trained_dora(rng, w0, r);
  const auto merged = qlr::adapter::merge(w0, dora);
  CHECK(merged.row_norms == dora.row_norms(w0));

  const Matrix x = gaussian(rng, 9, k);
  const MatrixD y_unmerged = to_double(dora_forward(dora, w0, x));
  const MatrixD y_merged = to_double(x) * to_double(merged.weight).transpose();
  CHECK(relative_error(y_unmerged, y_merged) <= 1e-6);

  for (index_t o = 0; o < n; ++o) {
    const double norm = to_double(merged.weight).row(o).norm();
    const double m = std::abs(static_cast<double>(dora.magnitude()(o)));
    CHECK(std::abs(norm - m) <= 1e-6 * m);
  }
  const Matrix restored = qlr::adapter::unmerge(merged.weight, dora, merged.row_norms);
  CHECK(relative_error(to_double(w0), to_double(restored)) <= 1e-6);
}

TEST_CASE("Dora rejects bad shapes and NaN/Inf in A, B, m, W0 and x (T1.4)",
          "[adapter][dora][errors]") {
  std::mt19937 rng(14);
  const index_t n = 12, k = 20, r = 4;
  const Matrix a = gaussian(rng, r, k);
  const Matrix b = gaussian(rng, n, r);
  const Vector m = Vector::Ones(n);
  CHECK_QLR_ERROR(Dora(a, b, Vector::Ones(n + 1), 1.0),
                  "magnitude.size() = 13; expected out_features = b.rows() = 12");
  CHECK_QLR_ERROR(Dora(a, gaussian(rng, n, r + 1), m, 1.0), "b is 12x5");
  const Dora dora(a, b, m, 1.0);
  CHECK_QLR_ERROR(dora.row_norms(gaussian(rng, n, k + 1)), "w0 is 12x21; expected 12x20");
  CHECK_QLR_ERROR(qlr::adapter::merge(gaussian(rng, n + 1, k), dora), "w0 is 13x20");
  CHECK_QLR_ERROR(qlr::adapter::unmerge(gaussian(rng, n, k), dora, Vector::Ones(n - 1)),
                  "row_norms.size() = 11; expected out_features = 12");
  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    CAPTURE(bad);
    Matrix a_bad = a;
    a_bad(1, 3) = bad;
    Matrix b_bad = b;
    b_bad(7, 2) = bad;
    Vector m_bad = m;
    m_bad(5) = bad;
    CHECK_QLR_ERROR(Dora(a_bad, b, m, 1.0), "a: element (1, 3)");
    CHECK_QLR_ERROR(Dora(a, b_bad, m, 1.0), "b: element (7, 2)");
    CHECK_QLR_ERROR(Dora(a, b, m_bad, 1.0), "adapter::Dora: magnitude: element 5");
    Matrix w0 = gaussian(rng, n, k);
    w0(4, 9) = bad;
    CHECK_QLR_ERROR(Dora::initial_magnitude(w0), "initial_magnitude: w0: element (4, 9)");
    CHECK_QLR_ERROR(dora.row_norms(w0), "row_norms: w0: element (4, 9)");
    CHECK_QLR_ERROR(dora.output_scale(w0), "w0: element (4, 9)");
    CHECK_QLR_ERROR(qlr::adapter::merge(w0, dora), "merge(Dora): w0: element (4, 9)");
    CHECK_QLR_ERROR(qlr::adapter::unmerge(w0, dora, Vector::Ones(n)),
                    "unmerge(Dora): merged: element (4, 9)");
    Vector norms_bad = Vector::Ones(n);
    norms_bad(3) = bad;
    CHECK_QLR_ERROR(qlr::adapter::unmerge(gaussian(rng, n, k), dora, norms_bad),
                    "row_norms(3)");
    Matrix x = gaussian(rng, 2, k);
    x(0, 19) = bad;
    Matrix t(2, r);
    CHECK_QLR_ERROR(dora.project(x, t), "x: element (0, 19)");
  }
}

TEST_CASE("Dora: unmerge with a zero magnitude and a zero direction row are errors",
          "[adapter][dora][errors]") {
  std::mt19937 rng(15);
  const index_t n = 6, k = 16, r = 2;
  const Matrix w0 = gaussian(rng, n, k);
  Vector m = Dora::initial_magnitude(w0);
  m(4) = 0.0f;
  const Dora dora(gaussian(rng, r, k), gaussian(rng, n, r), m, 2.0);
  const auto merged = qlr::adapter::merge(w0, dora);  // allowed: row 4 merges to zero
  CHECK(merged.weight.row(4).isZero(0.0f));
  CHECK_QLR_ERROR(qlr::adapter::unmerge(merged.weight, dora, merged.row_norms),
                  "magnitude(4) = 0; expected every m_o != 0");

  Matrix w_zero_row = w0;
  w_zero_row.row(1).setZero();
  const Dora no_update(gaussian(rng, r, k), Matrix::Zero(n, r), Vector::Ones(n), 2.0);
  CHECK_QLR_ERROR(no_update.output_scale(w_zero_row), "row_norms(1) = 0; expected > 0");
  CHECK_QLR_ERROR(qlr::adapter::merge(w_zero_row, no_update), "row_norms(1) = 0");
}
