// SPDX-License-Identifier: Apache-2.0
// Rotation policies (ALGORITHMS.md §4.2–4.5, oracles T4.3–T4.8): orthogonality, the
// invariance (W·Q)(Qᵀ·x) = W·x on either side of a layer, reproducible randomness, the
// RMSNorm fold, and what a rotation does to outliers (rotate-then-quantize: online_test.cpp).
#include "qlr/rotate/rotation.hpp"

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "qlr/core/error.hpp"
#include "qlr/kernels/gemm.hpp"
#include "qlr/kernels/isa.hpp"
#include "qlr/layers/rotated_activations.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/rotate/random_orthogonal.hpp"
#include "qlr/rotate/rms_norm.hpp"
#include "qlr_test_support.hpp"
#include "rotate_test_util.hpp"

using qlr::index_t;
using qlr::Matrix;
namespace rotate = qlr::rotate;
namespace quant = qlr::quant;

namespace {

/// Checks that R is orthogonal and that rotating a layer's weight on its input side and its
/// input online, or its weight on the output side and un-rotating its output, changes no
/// output beyond FP32 rounding.
template <rotate::RotationPolicy R>
void check_invariance(const R& r, std::uint32_t seed) {
  const index_t n = r.size();
  CAPTURE(n);
  std::mt19937 rng(seed);
  const Matrix w = qlr::test::gaussian(rng, 24, n);  // reads the rotated basis
  const Matrix x = qlr::test::gaussian(rng, 3, n);
  const Matrix y = x * w.transpose();
  Matrix w_rotated = w;
  rotate::rotate_weight_input(r, w_rotated);
  Matrix x_rotated = x;
  rotate::rotate_rows(r, x_rotated);
  for (index_t t = 0; t < x.rows(); ++t)  // ‖Qᵀx‖ = ‖x‖
    CHECK(std::abs(x_rotated.row(t).norm() - x.row(t).norm()) <= 2e-6 * x.row(t).norm());
  const Matrix y_rotated = x_rotated * w_rotated.transpose();
  CHECK((y_rotated - y).norm() <= 1e-5 * y.norm());
  // Output side: (Qᵀ·V)·u = Qᵀ·(V·u), so un-rotating the output gives V·u back.
  const Matrix v = qlr::test::gaussian(rng, n, 40);
  const Matrix u = qlr::test::gaussian(rng, 2, 40);
  Matrix v_rotated = v;
  rotate::rotate_weight_output(r, v_rotated);
  Matrix out = u * v_rotated.transpose();
  rotate::unrotate_rows(r, out);
  CHECK((out - u * v.transpose()).norm() <= 1e-5 * (u * v.transpose()).norm());
  // unrotate ∘ rotate = identity
  rotate::unrotate_rows(r, x_rotated);
  CHECK((x_rotated - x).norm() <= 1e-6 * x.norm());
}

/// Pearson kurtosis E[(x − μ)^4]/σ^4 of one row.
double kurtosis(const Eigen::RowVectorXf& row) {
  const Eigen::ArrayXd v = row.cast<double>().array();
  const Eigen::ArrayXd centred = v - v.mean();
  const double var = centred.square().mean();
  return centred.square().square().mean() / (var * var);
}

}  // namespace

TEST_CASE("Rotation: every policy keeps a layer's output, on either side, several sizes", "[rotate][policy]") {
  for (const index_t n : {64, 172, 4096, 11008}) {
    check_invariance(rotate::Identity(n), 1);
    check_invariance(rotate::Hadamard(n), 2);
    check_invariance(rotate::RandomizedHadamard(n, 42), 3);
  }
  for (const index_t n : {12, 172, 300}) check_invariance(rotate::RandomOrthogonal(n, 7), 4);
}

TEST_CASE("Rotation: randomized Hadamard signs are reproducible and its Q orthogonal", "[rotate][policy]") {
  const std::vector<float> signs = rotate::random_signs(16, 2024);
  CHECK(signs == rotate::random_signs(16, 2024));
  CHECK(signs != rotate::random_signs(16, 2025));
  // std::mt19937_64 is specified to the bit: these are its draws' top bits for seed 2024.
  CHECK(signs == std::vector<float>{-1, -1, 1, 1, 1, 1, -1, -1, 1, -1, -1, -1, -1, -1, 1, 1});
  // Columns of Qᵀ (images of the basis vectors) are orthonormal.
  const rotate::RandomizedHadamard r(172, 5);
  Matrix basis = Matrix::Identity(172, 172);
  rotate::rotate_rows(r, basis);
  CHECK((basis * basis.transpose() - Matrix::Identity(172, 172)).cwiseAbs().maxCoeff() <= 1e-6);
}

TEST_CASE("Rotation: random orthogonal Q is orthogonal, reproducible and seed-dependent", "[rotate][policy]") {
  const rotate::RandomOrthogonal a(50, 3);
  const Matrix& q = a.matrix();
  CHECK((q.transpose() * q - Matrix::Identity(50, 50)).cwiseAbs().maxCoeff() <= 1e-6);
  CHECK(q == rotate::RandomOrthogonal(50, 3).matrix());
  CHECK(q != rotate::RandomOrthogonal(50, 4).matrix());
  CHECK_THROWS_AS(rotate::RandomOrthogonal(0, 1), qlr::Error);
}

TEST_CASE("Rotation: wrong sizes and NaN are refused, leaving the data as it was", "[rotate][policy]") {
  const rotate::RandomizedHadamard r(64, 1);
  Matrix w(8, 65);
  CHECK_THROWS_WITH(rotate::rotate_weight_input(r, w), Catch::Contains("row length = 65") && Catch::Contains("n = 64"));
  Matrix v(63, 8);
  CHECK_THROWS_WITH(rotate::rotate_weight_output(r, v), Catch::Contains("rows of W = 63"));
  std::mt19937 rng(2);
  Matrix x = qlr::test::gaussian(rng, 9, 64);
  x(4, 0) = std::nanf("");
  Matrix before = x;
  CHECK_THROWS_WITH(rotate::rotate_rows(r, x), Catch::Contains("row 4"));
  x(4, 0) = before(4, 0) = 0.0f;
  CHECK((x - before).norm() <= 1e-6 * before.norm());
  CHECK_THROWS_AS(rotate::Identity(0), qlr::Error);
}

TEST_CASE("Rotation: the RMSNorm fold keeps the layer's output and sets the gain to 1", "[rotate][rmsnorm]") {
  std::mt19937 rng(8);
  const index_t d = 172;
  qlr::Vector gamma = qlr::test::gaussian(rng, d, 1).col(0).array().abs() + 0.5f;
  Matrix wq = qlr::test::gaussian(rng, 32, d);
  Matrix wk = qlr::test::gaussian(rng, 16, d);
  const Matrix h = qlr::test::gaussian(rng, 4, d);
  const auto normed = [&](const qlr::Vector& g) {
    Matrix out(h.rows(), d);
    for (index_t t = 0; t < h.rows(); ++t) {
      const float rms = std::sqrt(h.row(t).squaredNorm() / static_cast<float>(d) + 1e-5f);
      out.row(t) = (h.row(t).array() * g.transpose().array() / rms).matrix();
    }
    return out;
  };
  const Matrix before_q = normed(gamma) * wq.transpose();
  const Matrix before_k = normed(gamma) * wk.transpose();
  rotate::fold_rms_norm(gamma, {wq, wk});
  CHECK(gamma == qlr::Vector::Ones(d));
  CHECK((normed(gamma) * wq.transpose() - before_q).norm() <= 1e-6 * before_q.norm());
  CHECK((normed(gamma) * wk.transpose() - before_k).norm() <= 1e-6 * before_k.norm());
  // Bad input changes nothing.
  Matrix wrong = qlr::test::gaussian(rng, 3, d + 1);
  const Matrix wq_now = wq;
  CHECK_THROWS_WITH(rotate::fold_rms_norm(gamma, {wq, wrong}), Catch::Contains("173 columns"));
  CHECK(wq == wq_now);
  gamma(3) = INFINITY;
  CHECK_THROWS_AS(rotate::fold_rms_norm(gamma, {wq}), qlr::Error);
  CHECK(wq == wq_now);
}

TEST_CASE("Rotation: a randomized Hadamard removes activation outliers", "[rotate][outliers]") {
  std::mt19937 rng(12);
  const index_t n = 4096;
  const Matrix x = qlr::test::tokens_with_outliers(rng, 16, n);
  const rotate::RandomizedHadamard r(n, 77);
  Matrix rotated = x;
  rotate::rotate_rows(r, rotated);
  double kurt_before = 0.0, kurt_after = 0.0, peak_before = 0.0, peak_after = 0.0;
  for (index_t t = 0; t < x.rows(); ++t) {
    kurt_before += kurtosis(x.row(t)) / static_cast<double>(x.rows());
    kurt_after += kurtosis(rotated.row(t)) / static_cast<double>(x.rows());
    const double rms = x.row(t).norm() / std::sqrt(static_cast<double>(n));  // the same after
    peak_before += x.row(t).cwiseAbs().maxCoeff() / rms;
    peak_after += rotated.row(t).cwiseAbs().maxCoeff() / rms;
  }
  CHECK(kurt_before > 400.0);  // ≈ 516 for these tokens
  CHECK(kurt_after < 4.0);     // a Gaussian's 3
  CHECK(peak_before >= 5.0 * peak_after);
  // INT4 per-token codes: the outliers set the step, so without rotation the rest rounds to
  // 0. Error measured in the original basis (un-rotating is orthogonal: the same norm).
  const auto int4_error = [](const Matrix& v) {
    return (quant::dequantize(quant::quantize_per_token(v, {.bits = 4})) - v).norm() / v.norm();
  };
  const double error_plain = int4_error(x);
  const double error_rotated = int4_error(rotated);
  INFO("INT4 per-token error: " << error_plain << " plain, " << error_rotated << " rotated");
  CHECK(error_plain >= 2.0 * error_rotated);  // measured: see the INFO line
}

TEST_CASE("Rotation: W4A4 output error of a layer is at least halved by rotating", "[rotate][outliers]") {
  std::mt19937 rng(13);
  const index_t n_out = 256, k = 4096;
  const Matrix x = qlr::test::tokens_with_outliers(rng, 8, k);
  const Matrix w = qlr::test::gaussian(rng, n_out, k, 0.02f);
  const Matrix y = x * w.transpose();
  const auto w4a4_output = [&](const Matrix& weight, const quant::QuantizedActivations& a) {
    const qlr::kernels::DotWeights packed(quant::IntSym<4>({.group_size = 128}).quantize(weight));
    Matrix out(a.rows, n_out);
    qlr::kernels::gemm(packed, a.view(), {out.data(), out.rows(), out.cols(), out.cols()});
    return out;
  };
  const Matrix plain = w4a4_output(w, quant::quantize_per_token(x, {.bits = 4}));
  const rotate::RandomizedHadamard r(k, 5);
  Matrix w_rotated = w;
  rotate::rotate_weight_input(r, w_rotated);
  const Matrix rotated = w4a4_output(w_rotated, qlr::layers::rotate_quantize_per_token(r, x, {.bits = 4}));
  const double error_plain = (plain - y).norm() / y.norm();
  const double error_rotated = (rotated - y).norm() / y.norm();
  INFO("W4A4 output error: " << error_plain << " plain, " << error_rotated << " rotated");
  CHECK(error_plain >= 2.0 * error_rotated);
}
