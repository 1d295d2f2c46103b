// SPDX-License-Identifier: Apache-2.0
// EoRA (ALGORITHMS.md §7): full rank reproduces ΔW (T7.1), the loss is the tail of the
// whitened spectrum (T7.2), never above plain SVD's (T7.3), C = I and scaled inputs reduce to
// SVD (T7.4), rank-deficient inputs are fine and all-zero ones refused (T7.6), the loss falls
// with r (T7.7); the randomized SVD finds the same term; the term quantizes and still helps.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <Eigen/SVD>

#include "adapter_test_util.hpp"
#include "compensate_test_util.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
#include "qlr/compensate/eora.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/spec.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
using qlr::compensate::Compensation;
using qlr::compensate::Covariance;
using qlr::compensate::Eigenspace;
using qlr::compensate::eora;
using qlr::compensate::svd_compensation;

namespace {

/// A layer, its INT3 RTN compression and calibration inputs with correlated features.
struct Case {
  Matrix w, w_hat, x;
};

Case make_case(std::uint32_t seed, index_t n, index_t k, index_t m) {
  std::mt19937 rng(seed);
  Case c;
  c.w = qlr::test::gaussian(rng, n, k);
  c.w_hat = qlr::quant::dequantize(qlr::quant::IntAsym<3>({.group_size = 16}).quantize(c.w));
  c.x = qlr::test::correlated_inputs(rng, m, k);
  return c;
}

MatrixD delta_of(const Case& c) { return (c.w - c.w_hat).cast<double>(); }

/// ‖(ΔW − B·A)·Xᵀ‖_F², from X itself.
double calibration_loss(const Case& c, const Compensation& t) {
  return qlr::test::output_error_direct(delta_of(c) - t.b * t.a, c.x);
}

}  // namespace

TEST_CASE("EoRA at full rank reproduces the compression error (T7.1)", "[compensate][eora]") {
  for (const auto& [n, k] : {std::pair<index_t, index_t>{24, 16}, {12, 20}}) {
    CAPTURE(n, k);
    const Case c = make_case(21, n, k, 200);
    const Eigenspace space(qlr::test::covariance_of(c.x));
    const Compensation t = eora(c.w, c.w_hat, space, std::min(n, k));
    CHECK((t.b * t.a - delta_of(c)).norm() <= 1e-8 * delta_of(c).norm());
    // The FP32 adapter on top of Ŵ gives back W on the calibration inputs, at FP32 rounding.
    const Matrix y = c.x * c.w.transpose();
    const Matrix y_hat = c.x * (c.w_hat + t.to_low_rank().delta()).transpose();
    CHECK((y - y_hat).norm() <= 1e-5 * y.norm());
  }
}

TEST_CASE("EoRA's loss is the whitened tail, at most plain SVD's, falling with r (T7.2, T7.3, T7.7)",
          "[compensate][eora]") {
  const Case c = make_case(22, 40, 32, 300);
  const Covariance cov = qlr::test::covariance_of(c.x);
  const Eigenspace space(cov);
  // σ of ΔW·Q·Λ^½, directly.
  const Eigen::MatrixXd whitened =
      delta_of(c) * space.basis() * space.values().cwiseSqrt().asDiagonal();
  const Eigen::VectorXd sigma = Eigen::JacobiSVD<Eigen::MatrixXd>(whitened).singularValues();
  double previous = std::numeric_limits<double>::infinity();
  for (index_t r = 1; r <= 32; ++r) {
    CAPTURE(r);
    const Compensation t = eora(c.w, c.w_hat, space, r);
    const double loss = calibration_loss(c, t);
    const double tail = sigma.tail(32 - r).squaredNorm();
    CHECK(std::abs(loss - tail) <= 1e-8 * std::max(tail, 1e-8 * sigma.squaredNorm()));
    // (at full rank both are rounding noise: hence the margin)
    CHECK(loss <= calibration_loss(c, svd_compensation(c.w, c.w_hat, r)) * (1 + 1e-9) +
                      1e-20 * sigma.squaredNorm());
    CHECK(loss <= previous * (1 + 1e-12));
    CHECK(cov.output_error(delta_of(c) - t.b * t.a) ==
          Approx(loss).epsilon(1e-9).margin(1e-12 * sigma.squaredNorm()));
    previous = loss;
  }
}

TEST_CASE("EoRA with C = I is plain SVD, and scaling the inputs changes nothing (T7.4)",
          "[compensate][eora]") {
  const Case c = make_case(23, 30, 24, 100);
  const Eigenspace identity(Covariance(MatrixD::Identity(24, 24) * 7.0, 7));
  const Eigenspace space(qlr::test::covariance_of(c.x));
  const Eigenspace scaled(qlr::test::covariance_of(c.x * 4.0f));  // exact in FP32
  for (const index_t r : {1, 4, 9}) {
    CAPTURE(r);
    const MatrixD svd = [&] { const auto t = svd_compensation(c.w, c.w_hat, r); return MatrixD(t.b * t.a); }();
    const Compensation e = eora(c.w, c.w_hat, identity, r);
    CHECK(qlr::test::relative_error(svd, e.b * e.a) <= 1e-10);
    const Compensation a = eora(c.w, c.w_hat, space, r);
    const Compensation b = eora(c.w, c.w_hat, scaled, r);
    CHECK(qlr::test::relative_error(a.b * a.a, b.b * b.a) <= 1e-10);
  }
}

TEST_CASE("EoRA on rank-deficient inputs stays finite and within the floor's bound (T7.6)",
          "[compensate][eora]") {
  const Case c = make_case(24, 20, 48, 12);  // 12 samples, K = 48
  const Eigenspace space(qlr::test::covariance_of(c.x));
  const double lambda_max = space.values().maxCoeff();
  const double uncompensated = qlr::test::output_error_direct(delta_of(c), c.x);
  for (const index_t r : {2, 8, 20}) {
    CAPTURE(r);
    const Compensation t = eora(c.w, c.w_hat, space, r);
    CHECK(t.a.allFinite());
    CHECK(t.b.allFinite());
    const Compensation s = svd_compensation(c.w, c.w_hat, r);
    const double svd_residual = (delta_of(c) - s.b * s.a).squaredNorm();
    // (at r = min(N, K) = 20 both losses are rounding noise: hence the margin)
    CHECK(calibration_loss(c, t) <= calibration_loss(c, s) * (1 + 1e-9) +
                                        1e-8 * lambda_max * svd_residual + 1e-20 * uncompensated);
  }
  // r = 12 = M: every calibration direction is reconstructed.
  CHECK(calibration_loss(c, eora(c.w, c.w_hat, space, 12)) <= 1e-12 * qlr::test::output_error_direct(delta_of(c), c.x) + 1e-8 * lambda_max * delta_of(c).squaredNorm());
  CHECK_QLR_ERROR(Eigenspace(qlr::test::covariance_of(Matrix::Zero(30, 48))), "largest eigenvalue = 0");
  CHECK_QLR_ERROR(Eigenspace(Covariance(48)), "largest eigenvalue = 0 over 0 samples");
}

TEST_CASE("EoRA's safeguards: the reference clamp and damping also reach the optimum",
          "[compensate][eora]") {
  const Case c = make_case(25, 20, 16, 100);
  const Covariance cov = qlr::test::covariance_of(c.x);
  const Eigenspace relative(cov);
  const Eigenspace clamp(cov, {.floor = qlr::compensate::EigenFloor::reference_clamp});
  const double base = calibration_loss(c, eora(c.w, c.w_hat, relative, 5));
  CHECK(calibration_loss(c, eora(c.w, c.w_hat, clamp, 5)) == Approx(base).epsilon(1e-9));
  // Damping trades a little calibration loss for robustness: worse, but only slightly.
  const Eigenspace damped(cov, {.damping = 0.01});
  const double loss = calibration_loss(c, eora(c.w, c.w_hat, damped, 5));
  CHECK(loss >= base * (1 - 1e-9));
  CHECK(loss <= base * 1.2);
  CHECK_QLR_ERROR(Eigenspace(cov, {.relative_floor = 0.0}), "relative_floor = 0");
  CHECK_QLR_ERROR(Eigenspace(cov, {.damping = -1.0}), "damping = -1");
}

TEST_CASE("The Gram-matrix thin SVD matches JacobiSVD on tall, wide and rank-deficient y",
          "[compensate][eora]") {
  std::mt19937 rng(29);
  const auto rank_two = [&](index_t n, index_t k) {
    return MatrixD(qlr::test::gaussian(rng, n, 2).cast<double>() *
                   qlr::test::gaussian(rng, 2, k).cast<double>());
  };
  // Graded singular values 1 … 1e-6 to see that small σ keep their accuracy.
  const auto graded = [&](index_t n) {
    const Eigen::MatrixXd q = qlr::compensate::detail::orthonormal_columns(
        qlr::test::gaussian(rng, n, n).cast<double>());
    const Eigen::VectorXd s = Eigen::VectorXd::LinSpaced(n, 0.0, -6.0).unaryExpr(
        [](double e) { return std::pow(10.0, e); });
    return MatrixD(q * s.asDiagonal() * q.transpose().colwise().reverse());
  };
  const std::vector<MatrixD> cases = {MatrixD(qlr::test::gaussian(rng, 37, 11).cast<double>()),
                                      MatrixD(qlr::test::gaussian(rng, 9, 30).cast<double>()),
                                      rank_two(17, 23), rank_two(23, 17), graded(12),
                                      MatrixD::Zero(5, 4)};
  for (const MatrixD& y : cases) {
    CAPTURE(y.rows(), y.cols());
    const auto t = qlr::compensate::detail::thin_svd(y, "test");
    const Eigen::VectorXd expected = Eigen::JacobiSVD<Eigen::MatrixXd>(y).singularValues();
    const index_t n = std::min(y.rows(), y.cols());
    REQUIRE(t.sigma.size() == n);
    REQUIRE(t.u.rows() == y.rows());
    REQUIRE(t.v.rows() == y.cols());
    const double scale = std::max(expected(0), 1e-300);
    CHECK((t.sigma - expected).cwiseAbs().maxCoeff() <= 1e-12 * scale);
    for (index_t i = 1; i < n; ++i) CHECK(t.sigma(i) <= t.sigma(i - 1));
    CHECK((t.u * t.sigma.asDiagonal() * t.v.transpose() - y).norm() <= 1e-13 * (1 + y.norm()));
    // Both sides orthonormal to ~ε·(σ_1/σ_i)² (the Gram matrix squares the condition number):
    // 1e-6 for σ_i ≥ 1e-4·σ_1.
    const index_t solid = (t.sigma.array() >= 1e-4 * scale).count();
    const Eigen::MatrixXd eye = Eigen::MatrixXd::Identity(solid, solid);
    CHECK((t.u.leftCols(solid).transpose() * t.u.leftCols(solid) - eye).norm() <= 1e-6);
    CHECK((t.v.leftCols(solid).transpose() * t.v.leftCols(solid) - eye).norm() <= 1e-6);
  }
}

TEST_CASE("EoRA of an exact compression is a zero term, not NaN", "[compensate][eora]") {
  const Case c = make_case(30, 12, 20, 50);
  const Eigenspace space(qlr::test::covariance_of(c.x));
  for (const auto method : {qlr::compensate::SvdMethod::exact, qlr::compensate::SvdMethod::randomized}) {
    const Compensation t = eora(c.w, c.w, space, 4, {.method = method});
    CHECK(t.b.isZero(0.0));
    CHECK(t.a.isZero(0.0));
    CHECK(t.singular_values.isZero(0.0));
  }
}

TEST_CASE("Randomized SVD finds the exact truncated term on a decaying spectrum",
          "[compensate][eora]") {
  const Case c = make_case(26, 64, 80, 400);
  const Eigenspace space(qlr::test::covariance_of(c.x));
  const qlr::compensate::SvdOptions randomized{.method = qlr::compensate::SvdMethod::randomized,
                                                .seed = 3};
  for (const index_t r : {4, 16}) {
    CAPTURE(r);
    const Compensation exact = eora(c.w, c.w_hat, space, r);
    const Compensation fast = eora(c.w, c.w_hat, space, r, randomized);
    CHECK(calibration_loss(c, fast) <= calibration_loss(c, exact) * 1.02);
    const Compensation again = eora(c.w, c.w_hat, space, r, randomized);
    CHECK(fast.a == again.a);  // seeded: the same sketch every time
    CHECK(fast.b == again.b);
  }
}

TEST_CASE("A quantized EoRA term costs bits/param and still removes most of the error",
          "[compensate][eora]") {
  const Case c = make_case(27, 128, 256, 600);
  const Eigenspace space(qlr::test::covariance_of(c.x));
  const double none = qlr::test::output_error_direct(delta_of(c), c.x);
  const Compensation t = eora(c.w, c.w_hat, space, 32);
  const double fp32 = calibration_loss(c, t);
  const auto term = t.to_low_rank();
  for (const char* spec : {"int4-asym-g128", "int3-asym-g128"}) {
    CAPTURE(spec);
    const auto q = qlr::adapter::QuantizedLowRank::quantize(term, qlr::quant::parse_quant_spec(spec));
    const double loss = qlr::test::output_error_direct(delta_of(c) - q.delta().cast<double>(), c.x);
    CHECK(loss < none);
    CHECK(loss > fp32);
    CHECK(q.bits_per_parameter() < 4.5);
  }
}

TEST_CASE("EoRA refuses bad shapes, ranks and values by name", "[compensate][eora]") {
  const Case c = make_case(28, 10, 12, 50);
  const Eigenspace space(qlr::test::covariance_of(c.x));
  CHECK_QLR_ERROR(eora(c.w, c.w_hat, space, 0), "rank = 0");
  CHECK_QLR_ERROR(eora(c.w, c.w_hat, space, 11), "expected 1 <= rank <= min(N = 10, K = 12) = 10");
  CHECK_QLR_ERROR(eora(c.w, c.w_hat.leftCols(11), space, 2), "w_hat is 10x11");
  const Eigenspace other(Covariance(MatrixD::Identity(9, 9), 1));
  CHECK_QLR_ERROR(eora(c.w, c.w_hat, other, 2), "expected 9 columns");
  Matrix bad = c.w_hat;
  bad(2, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK_QLR_ERROR(eora(c.w, bad, space, 2), "w_hat: element (2, 5) = nan");
  CHECK_QLR_ERROR(svd_compensation(c.w, c.w_hat, 40), "rank = 40");
}
