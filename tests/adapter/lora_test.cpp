// SPDX-License-Identifier: Apache-2.0
// LoRA and the plain low-rank term (ALGORITHMS.md §8.1–8.2): scaling, the projection
// against a double reference, ΔW, the dense merge/unmerge round trip, the concept, and bad
// input (shapes, ranks, NaN/Inf in every factor and in x, T1.4).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>

#include "adapter_test_util.hpp"
#include "qlr/adapter/concept.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/low_rank.hpp"
#include "qlr/adapter/merge.hpp"
#include "qlr/core/format.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
using qlr::adapter::Lora;
using qlr::adapter::LowRank;
using qlr::adapter::Scaling;
using qlr::test::gaussian;
using qlr::test::relative_error;
using qlr::test::to_double;

static_assert(qlr::adapter::Adapter<Lora>);
static_assert(qlr::adapter::Adapter<LowRank>);
static_assert(qlr::adapter::AdapterFor<Lora, qlr::QuantFormat<4, qlr::Encoding::codebook>>);
static_assert(qlr::adapter::AdapterFor<LowRank, qlr::QuantFormat<4, qlr::Encoding::int_sym>>);

TEST_CASE("Lora: scale is alpha/r, or alpha/sqrt(r) with rsLoRA", "[adapter][lora]") {
  std::mt19937 rng(1);
  const Lora standard(gaussian(rng, 16, 40), gaussian(rng, 24, 16), 32.0);
  CHECK(standard.scale() == 2.0f);
  CHECK(standard.rank() == 16);
  CHECK(standard.in_features() == 40);
  CHECK(standard.out_features() == 24);
  CHECK(standard.parameter_count() == 16 * (24 + 40));
  const Lora stabilized(gaussian(rng, 16, 40), gaussian(rng, 24, 16), 32.0,
                        Scaling::rank_stabilized);
  CHECK(stabilized.scale() == 8.0f);
  CHECK(LowRank(gaussian(rng, 4, 40), gaussian(rng, 24, 4)).scale() == 1.0f);
}

TEST_CASE("Lora: project and delta match a double reference", "[adapter][lora]") {
  std::mt19937 rng(2);
  const index_t m = 7, n = 33, k = 50, r = 5;
  const Lora lora(gaussian(rng, r, k), gaussian(rng, n, r), 10.0);
  const Matrix x = gaussian(rng, m, k);
  Matrix t(m, r);
  lora.project(x, t);
  const double s = lora.scale();
  const MatrixD t_ref = s * to_double(x) * to_double(lora.a()).transpose();
  CHECK(relative_error(t_ref, to_double(t)) < 1e-6);
  CHECK(&lora.up() == &lora.b());
  const MatrixD delta_ref = s * to_double(lora.b()) * to_double(lora.a());
  CHECK(relative_error(delta_ref, to_double(lora.delta())) < 1e-6);
  // The side path reproduces the dense update: x·ΔWᵀ = t·Bᵀ.
  const MatrixD y_dense = to_double(x) * delta_ref.transpose();
  CHECK(relative_error(y_dense, to_double(t) * to_double(lora.b()).transpose()) < 1e-6);

  // project writes into a block of a larger buffer through its stride.
  Matrix wide = Matrix::Constant(m, r + 3, 7.0f);
  lora.project(x, wide.leftCols(r));
  CHECK(wide.leftCols(r) == t);
  CHECK((wide.rightCols(3).array() == 7.0f).all());

  const LowRank term(lora.a(), lora.b());
  Matrix u(m, r);
  term.project(x, u);
  CHECK(relative_error(to_double(x) * to_double(lora.a()).transpose(), to_double(u)) < 1e-6);
}

TEST_CASE("merge and unmerge of LoRA and LowRank round-trip W", "[adapter][lora][merge]") {
  std::mt19937 rng(3);
  const index_t n = 48, k = 64, r = 8;
  const Matrix w = gaussian(rng, n, k);
  const Lora lora(gaussian(rng, r, k, 0.1f), gaussian(rng, n, r, 0.1f), 16.0);
  const Matrix merged = qlr::adapter::merge(w, lora);
  CHECK(relative_error(to_double(w) + to_double(lora.delta()), to_double(merged)) < 1e-7);
  CHECK(relative_error(to_double(w), to_double(qlr::adapter::unmerge(merged, lora))) < 1e-6);
  // Merged forward = base forward + side path.
  const Matrix x = gaussian(rng, 5, k);
  Matrix t(5, r);
  lora.project(x, t);
  const MatrixD y_side = to_double(x) * to_double(w).transpose() +
                         to_double(t) * to_double(lora.b()).transpose();
  CHECK(relative_error(y_side, to_double(x) * to_double(merged).transpose()) < 1e-6);

  const LowRank term(gaussian(rng, r, k), gaussian(rng, n, r));
  const Matrix merged_term = qlr::adapter::merge(w, term);
  CHECK(relative_error(to_double(w) + to_double(term.b()) * to_double(term.a()),
                       to_double(merged_term)) < 1e-6);
  CHECK(relative_error(to_double(w), to_double(qlr::adapter::unmerge(merged_term, term))) < 1e-6);
}

TEST_CASE("Lora and LowRank reject bad shapes and ranks, naming the argument",
          "[adapter][lora][errors]") {
  std::mt19937 rng(4);
  const Matrix a = gaussian(rng, 4, 20);
  const Matrix b = gaussian(rng, 12, 4);
  CHECK_QLR_ERROR(Lora(a, gaussian(rng, 12, 3), 1.0), "b is 12x3; expected N x 4");
  CHECK_QLR_ERROR(LowRank(a, gaussian(rng, 12, 5)), "b is 12x5");
  CHECK_QLR_ERROR(Lora(Matrix(0, 20), Matrix(12, 0), 1.0), "rank = a.rows() = 0");
  CHECK_QLR_ERROR(LowRank(Matrix(0, 20), Matrix(12, 0)), "rank = a.rows() = 0");
  // r ≤ min(N, K): 13 > N = 12.
  CHECK_QLR_ERROR(Lora(gaussian(rng, 13, 20), gaussian(rng, 12, 13), 1.0),
                  "rank = 13; expected <= min(out_features = 12, in_features = 20) = 12");
  CHECK_QLR_ERROR(Lora(a, b, std::numeric_limits<double>::infinity()), "alpha = inf");
  CHECK_QLR_ERROR(Lora(a, b, std::nan("")), "alpha = nan");

  const Lora lora(a, b, 4.0);
  Matrix t(3, 4);
  CHECK_QLR_ERROR(lora.project(gaussian(rng, 3, 21), t), "x is 3x21; expected 20 columns");
  Matrix t_rows(2, 4);
  CHECK_QLR_ERROR(lora.project(gaussian(rng, 3, 20), t_rows), "t is 2x4; expected 3x4");
  Matrix t_cols(3, 5);
  CHECK_QLR_ERROR(lora.project(gaussian(rng, 3, 20), t_cols), "t is 3x5; expected 3x4");
  CHECK_QLR_ERROR(qlr::adapter::merge(gaussian(rng, 12, 21), lora), "w is 12x21; expected 12x20");
  CHECK_QLR_ERROR(qlr::adapter::unmerge(gaussian(rng, 11, 20), lora),
                  "merged is 11x20; expected 12x20");
}

TEST_CASE("Lora and LowRank reject NaN and Inf in A, B, x and the merged weight (T1.4)",
          "[adapter][lora][errors]") {
  std::mt19937 rng(5);
  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    CAPTURE(bad);
    Matrix a = gaussian(rng, 4, 20);
    Matrix b = gaussian(rng, 12, 4);
    Matrix a_bad = a;
    a_bad(2, 17) = bad;
    Matrix b_bad = b;
    b_bad(9, 1) = bad;
    CHECK_QLR_ERROR(Lora(a_bad, b, 1.0), "adapter::Lora: a: element (2, 17)");
    CHECK_QLR_ERROR(Lora(a, b_bad, 1.0), "adapter::Lora: b: element (9, 1)");
    CHECK_QLR_ERROR(LowRank(a_bad, b), "adapter::LowRank: a: element (2, 17)");
    CHECK_QLR_ERROR(LowRank(a, b_bad), "adapter::LowRank: b: element (9, 1)");

    const Lora lora(a, b, 2.0);
    const LowRank term(a, b);
    Matrix x = gaussian(rng, 3, 20);
    x(1, 5) = bad;
    Matrix t(3, 4);
    CHECK_QLR_ERROR(lora.project(x, t), "adapter::Lora: x: element (1, 5)");
    CHECK_QLR_ERROR(term.project(x, t), "adapter::LowRank: x: element (1, 5)");
    Matrix w = gaussian(rng, 12, 20);
    w(11, 19) = bad;
    CHECK_QLR_ERROR(qlr::adapter::merge(w, lora), "w: element (11, 19)");
    CHECK_QLR_ERROR(qlr::adapter::unmerge(w, lora), "merged: element (11, 19)");
    CHECK_QLR_ERROR(qlr::adapter::merge(w, term), "w: element (11, 19)");
    CHECK_QLR_ERROR(qlr::adapter::unmerge(w, term), "merged: element (11, 19)");
  }
}

TEST_CASE("Lora::project reports an overflow of a finite x", "[adapter][lora][errors]") {
  const Matrix a = Matrix::Constant(1, 4, 3e38f);
  const Lora lora(a, Matrix::Ones(2, 1), 1.0);
  const Matrix x = Matrix::Constant(1, 4, 1e3f);
  Matrix t(1, 1);
  CHECK_QLR_ERROR(lora.project(x, t), "from a finite x");
}
