// SPDX-License-Identifier: Apache-2.0
// Covariance: the streaming Σ x·xᵀ equals XᵀX, is bitwise the same however the stream is cut
// and on any thread count (T7.5), predicts the layer's output error, and refuses bad input
// without losing what it holds.
#include <catch2/catch.hpp>

#include <limits>
#include <random>

#include "adapter_test_util.hpp"
#include "compensate_test_util.hpp"
#include "qlr/compensate/calibration.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
using qlr::compensate::Covariance;

namespace {
/// The covariance of x fed in `chunks` pieces of uneven sizes.
MatrixD sum_in_chunks(const Matrix& x, index_t chunks) {
  Covariance cov(x.cols());
  for (index_t c = 0, begin = 0; c < chunks; ++c) {
    const index_t end = x.rows() * (c + 1) * (c + 1) / (chunks * chunks);  // uneven cuts
    cov.add(x.middleRows(begin, end - begin));
    begin = end;
  }
  CHECK(cov.samples() == x.rows());
  return cov.sum();
}
}  // namespace

TEST_CASE("Covariance: the streamed sum is XᵀX, bit for bit for any cut and thread count",
          "[compensate][calibration]") {
  std::mt19937 rng(5);
  const Matrix x = qlr::test::correlated_inputs(rng, 700, 37);  // crosses two 256-row blocks
  const MatrixD one = sum_in_chunks(x, 1);
  const MatrixD exact = x.cast<double>().transpose() * x.cast<double>();
  CHECK((one - exact).norm() <= 1e-12 * exact.norm());
  CHECK(one == sum_in_chunks(x, 7));
  CHECK(one == sum_in_chunks(x, 64));
  const int threads = qlr::num_threads();
  qlr::set_num_threads(1);
  const MatrixD serial = sum_in_chunks(x, 7);
  qlr::set_num_threads(threads);
  CHECK(one == serial);
}

TEST_CASE("Covariance: output_error is the squared output error on the inputs added",
          "[compensate][calibration]") {
  std::mt19937 rng(6);
  const Matrix x = qlr::test::correlated_inputs(rng, 90, 20);
  const MatrixD e = qlr::test::gaussian(rng, 7, 20).cast<double>();
  const double direct = qlr::test::output_error_direct(e, x);
  CHECK(qlr::test::covariance_of(x).output_error(e) == Approx(direct).epsilon(1e-12));
}

TEST_CASE("Covariance refuses bad input and keeps what it holds", "[compensate][calibration]") {
  std::mt19937 rng(7);
  CHECK_QLR_ERROR(Covariance(0), "in_features = 0");
  Covariance cov(8);
  const Matrix x = qlr::test::gaussian(rng, 10, 8);
  cov.add(x);
  const MatrixD before = cov.sum();
  CHECK_QLR_ERROR(cov.add(qlr::test::gaussian(rng, 3, 9)), "expected 8 columns");
  Matrix bad = x;
  bad(4, 2) = std::numeric_limits<float>::quiet_NaN();
  CHECK_QLR_ERROR(cov.add(bad), "element (4, 2) = nan");
  CHECK(cov.samples() == 10);
  CHECK(cov.sum() == before);
  CHECK_QLR_ERROR(Covariance(MatrixD::Zero(3, 4), 1), "sum is 3x4");
  CHECK_QLR_ERROR(Covariance(MatrixD::Zero(3, 3), -1), "samples = -1");
  MatrixD inf = MatrixD::Zero(3, 3);
  inf(1, 1) = std::numeric_limits<double>::infinity();
  CHECK_QLR_ERROR(Covariance(inf, 5), "NaN or an infinity");
}
