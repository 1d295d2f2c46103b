// SPDX-License-Identifier: Apache-2.0
// The requantizing merge of LoRA, DoRA and QA-LoRA into a quantized base: the report's
// figures against an independent computation, INT8 against INT2, the recommendation's
// threshold, and bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <optional>
#include <random>

#include "adapter_test_util.hpp"
#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/merge.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr_test_support.hpp"

using qlr::index_t;
using qlr::Matrix;
using qlr::MatrixD;
using qlr::Vector;
using qlr::adapter::Dora;
using qlr::adapter::Lora;
using qlr::adapter::MergeReport;
using qlr::adapter::QaLora;
using qlr::adapter::requantizing_merge;
using qlr::test::gaussian;
using qlr::test::same_bytes;
using qlr::test::to_double;

namespace {

constexpr index_t layer_rows = 64, layer_cols = 160, adapter_rank = 8;

/// The report recomputed from its definitions, with plain loops in double.
void check_report(const MergeReport& report, const Matrix& exact, const Matrix& merged,
                  const Matrix& w_hat, const Matrix* x, double stored_values, double tolerance) {
  double err2 = 0, ref2 = 0, max_abs = 0;
  for (index_t o = 0; o < layer_rows; ++o) {
    for (index_t i = 0; i < layer_cols; ++i) {
      const double e = static_cast<double>(exact(o, i)) - merged(o, i);
      err2 += e * e;
      ref2 += static_cast<double>(exact(o, i)) * exact(o, i);
      max_abs = std::max(max_abs, std::abs(e));
    }
  }
  CHECK(report.relative_frobenius == Approx(std::sqrt(err2 / ref2)).epsilon(1e-12));
  CHECK(report.max_abs == Approx(max_abs).epsilon(1e-6));
  const MatrixD e = to_double(exact) - to_double(merged);
  const MatrixD u = to_double(exact) - to_double(w_hat);
  if (x != nullptr) {
    REQUIRE(report.relative_output_error.has_value());
    double out_err2 = 0, out_ref2 = 0, out_upd2 = 0;
    for (index_t m = 0; m < x->rows(); ++m) {
      for (index_t o = 0; o < layer_rows; ++o) {
        double ye = 0, yr = 0, yu = 0;
        for (index_t i = 0; i < layer_cols; ++i) {
          ye += e(o, i) * (*x)(m, i);
          yr += static_cast<double>(exact(o, i)) * (*x)(m, i);
          yu += u(o, i) * (*x)(m, i);
        }
        out_err2 += ye * ye;
        out_ref2 += yr * yr;
        out_upd2 += yu * yu;
      }
    }
    CHECK(*report.relative_output_error == Approx(std::sqrt(out_err2 / out_ref2)).epsilon(1e-10));
    CHECK(report.error_to_update == Approx(std::sqrt(out_err2 / out_upd2)).epsilon(1e-10));
  } else {
    CHECK_FALSE(report.relative_output_error.has_value());
    CHECK(report.error_to_update == Approx(e.norm() / u.norm()).epsilon(1e-10));
  }
  CHECK(report.separate_extra_bits_per_parameter ==
        Approx(16.0 * stored_values / (static_cast<double>(layer_rows) * layer_cols)).epsilon(1e-14));
  CHECK(report.tolerance == tolerance);
  CHECK(report.keep_separate_recommended == (report.error_to_update > tolerance));
}

}  // namespace

TEST_CASE("requantizing_merge of a LoRA: the report equals its definitions",
          "[adapter][merge][requantize]") {
  std::mt19937 rng(41);
  const auto base = qlr::quant::IntAsym<4>({.group_size = 32}).quantize(gaussian(rng, layer_rows, layer_cols));
  const Lora lora(gaussian(rng, adapter_rank, layer_cols, 0.2f), gaussian(rng, layer_rows, adapter_rank, 0.2f), 16.0);
  const Matrix x = gaussian(rng, 12, layer_cols);
  const Matrix w_hat = qlr::quant::dequantize(base);
  const Matrix exact = w_hat + lora.delta();
  const qlr::quant::IntAsym<8> int8({.group_size = 32});
  const auto expected_weight = int8.quantize(exact);

  const auto with_x = requantizing_merge(base, lora, int8, x);
  CHECK(same_bytes(with_x.weight.codes(), expected_weight.codes()));
  CHECK(same_bytes(with_x.weight.scales(), expected_weight.scales()));
  check_report(with_x.report, exact, qlr::quant::dequantize(with_x.weight), w_hat, &x,
               static_cast<double>(adapter_rank * (layer_rows + layer_cols)), qlr::adapter::default_keep_separate_tolerance);

  const auto weights_only = requantizing_merge(base, lora, int8, std::nullopt, 0.3);
  check_report(weights_only.report, exact, qlr::quant::dequantize(weights_only.weight), w_hat,
               nullptr, static_cast<double>(adapter_rank * (layer_rows + layer_cols)), 0.3);
  // The summary states the figures and the decision.
  const std::string text = with_x.report.summary();
  CHECK_THAT(text, Catch::Contains("relative error") && Catch::Contains("on outputs") &&
                       Catch::Contains("bits/param"));
  CHECK_THAT(text, Catch::Contains(with_x.report.keep_separate_recommended
                                       ? "keep the adapter separate"
                                       : ": merge"));
}

TEST_CASE("requantizing_merge: INT8 far more accurate than INT2; the decision follows the "
          "tolerance",
          "[adapter][merge][requantize]") {
  std::mt19937 rng(42);
  const auto base = qlr::quant::IntAsym<4>({.group_size = 32}).quantize(gaussian(rng, layer_rows, layer_cols));
  const Lora lora(gaussian(rng, adapter_rank, layer_cols, 0.2f), gaussian(rng, layer_rows, adapter_rank, 0.2f), 16.0);
  const Matrix x = gaussian(rng, 12, layer_cols);
  const auto int8 = requantizing_merge(base, lora, qlr::quant::IntAsym<8>({.group_size = 32}), x);
  const auto int2 = requantizing_merge(base, lora, qlr::quant::IntAsym<2>({.group_size = 32}), x);
  CHECK(int8.report.relative_frobenius < int2.report.relative_frobenius / 20);
  CHECK(*int8.report.relative_output_error < *int2.report.relative_output_error / 20);
  CHECK(int8.report.error_to_update < int2.report.error_to_update / 20);
  CHECK(int2.report.keep_separate_recommended);  // INT2 noise swamps the update

  const double ratio = int8.report.error_to_update;
  const qlr::quant::IntAsym<8> q8({.group_size = 32});
  CHECK(requantizing_merge(base, lora, q8, x, ratio * 0.9).report.keep_separate_recommended);
  CHECK_FALSE(requantizing_merge(base, lora, q8, x, ratio * 1.1).report.keep_separate_recommended);
}

TEST_CASE("requantizing_merge of DoRA and QA-LoRA adapters", "[adapter][merge][requantize]") {
  std::mt19937 rng(43);
  const auto base = qlr::quant::IntAsym<4>({.group_size = 32}).quantize(gaussian(rng, layer_rows, layer_cols));
  const Matrix w_hat = qlr::quant::dequantize(base);
  const qlr::quant::IntAsym<8> int8({.group_size = 32});

  Vector m = Dora::initial_magnitude(w_hat);
  m *= 1.05f;
  const Dora dora(gaussian(rng, adapter_rank, layer_cols, 0.2f), gaussian(rng, layer_rows, adapter_rank, 0.2f), m, 16.0);
  const Matrix dora_exact = qlr::adapter::merge(w_hat, dora).weight;
  const auto dora_merge = requantizing_merge(base, dora, int8);
  check_report(dora_merge.report, dora_exact, qlr::quant::dequantize(dora_merge.weight), w_hat,
               nullptr, static_cast<double>(adapter_rank * (layer_rows + layer_cols) + layer_rows),
               qlr::adapter::default_keep_separate_tolerance);

  const QaLora qa(gaussian(rng, adapter_rank, 5), gaussian(rng, layer_rows, adapter_rank, 0.2f), 16.0, layer_cols, 32);
  const auto qa_merge = requantizing_merge(base, qa, int8);
  check_report(qa_merge.report, w_hat + qa.delta(), qlr::quant::dequantize(qa_merge.weight),
               w_hat, nullptr, static_cast<double>(adapter_rank * (layer_rows + 5)),
               qlr::adapter::default_keep_separate_tolerance);
}

TEST_CASE("requantizing_merge rejects bad shapes, NaN/Inf in x and a bad tolerance (T1.4)",
          "[adapter][merge][requantize][errors]") {
  std::mt19937 rng(44);
  const auto base = qlr::quant::IntAsym<4>({.group_size = 32}).quantize(gaussian(rng, layer_rows, layer_cols));
  const qlr::quant::IntAsym<8> int8({.group_size = 32});
  const Lora narrow(gaussian(rng, adapter_rank, layer_cols - 1), gaussian(rng, layer_rows, adapter_rank), 16.0);
  CHECK_QLR_ERROR(requantizing_merge(base, narrow, int8), "base is 64x160; expected 64x159");
  const Lora lora(gaussian(rng, adapter_rank, layer_cols), gaussian(rng, layer_rows, adapter_rank), 16.0);
  CHECK_QLR_ERROR(requantizing_merge(base, lora, int8, gaussian(rng, 3, layer_cols + 1)),
                  "x is 3x161; expected M x 160");
  CHECK_QLR_ERROR(requantizing_merge(base, lora, int8, std::nullopt, -0.5), "tolerance = -0.5");
  CHECK_QLR_ERROR(requantizing_merge(base, lora, int8, std::nullopt, std::nan("")),
                  "tolerance = nan");
  for (const float bad : {std::nanf(""), std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity()}) {
    CAPTURE(bad);
    Matrix x = gaussian(rng, 3, layer_cols);
    x(2, 100) = bad;
    CHECK_QLR_ERROR(requantizing_merge(base, lora, int8, x),
                    "requantizing_merge: x: element (2, 100)");
  }
}
