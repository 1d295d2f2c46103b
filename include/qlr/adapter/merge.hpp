// SPDX-License-Identifier: Apache-2.0
// Merging adapters into their base: dense merges and unmerges (LoRA, low-rank, QA-LoRA,
// DoRA), the exact QA-LoRA merge into an int_asym base's zero points (ALGORITHMS.md §3.3),
// and the lossy requantizing merge of any adapter into a quantized base, with its error
// report and a keep-it-separate recommendation.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "qlr/adapter/concept.hpp"
#include "qlr/adapter/detail/factors.hpp"
#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/low_rank.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
#include "qlr/adapter/zero_merge.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/numeric.hpp"
#include "qlr/core/types.hpp"
#include "qlr/quant/concept.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/quant/metrics.hpp"

namespace qlr::adapter {

namespace detail {
/// Throws unless `w` (named `name`) is a finite weight of the adapter's N×K shape.
template <Adapter A>
void check_merge_operand(ConstMatrixRef w, const A& a, const char* entity, const char* name) {
  QLR_CHECK(w.rows() == a.out_features() && w.cols() == a.in_features(), shape_mismatch,
            "{}: {} is {}x{}; expected {}x{} (the adapter's out_features x in_features)", entity,
            name, w.rows(), w.cols(), a.out_features(), a.in_features());
  check_finite(w, std::string(entity) + ": " + name);
}

/// W + ΔW after checking W.
template <Adapter A>
Matrix dense_merge(ConstMatrixRef w, const A& a, const char* entity) {
  check_merge_operand(w, a, entity, "w");
  Matrix merged = w;
  merged += a.delta();
  return merged;
}

/// W_merged − ΔW after checking W_merged.
template <Adapter A>
Matrix dense_unmerge(ConstMatrixRef merged, const A& a, const char* entity) {
  check_merge_operand(merged, a, entity, "merged");
  Matrix w = merged;
  w -= a.delta();
  return w;
}

/// Values an adapter stores when kept beside the base: its own count, else r·(N + K).
template <Adapter A>
index_t stored_values(const A& a) {
  if constexpr (requires { { a.parameter_count() } -> std::convertible_to<index_t>; }) {
    return a.parameter_count();
  } else {
    return a.rank() * (a.out_features() + a.in_features());
  }
}

/// ‖num‖/‖den‖ with 0/0 = 0 and x/0 = ∞.
QLR_COMPILED_FUNCTION
double norm_ratio(double num, double den) noexcept {
  if (den == 0.0) return num == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return num / den;
}
}  // namespace detail

/// W + s·B·A (N×K) for W (N×K). Throws for a shape mismatch or a NaN/Inf in W.
QLR_COMPILED_FUNCTION
Matrix merge(ConstMatrixRef w, const Lora& lora) {
  return detail::dense_merge(w, lora, "adapter::merge(Lora)");
}
/// W_merged − s·B·A: the inverse of merge, up to FP32 rounding.
QLR_COMPILED_FUNCTION
Matrix unmerge(ConstMatrixRef merged, const Lora& lora) {
  return detail::dense_unmerge(merged, lora, "adapter::unmerge(Lora)");
}
/// W + B·A (N×K) for W (N×K). Throws for a shape mismatch or a NaN/Inf in W.
QLR_COMPILED_FUNCTION
Matrix merge(ConstMatrixRef w, const LowRank& term) {
  return detail::dense_merge(w, term, "adapter::merge(LowRank)");
}
/// W_merged − B·A: the inverse of merge, up to FP32 rounding.
QLR_COMPILED_FUNCTION
Matrix unmerge(ConstMatrixRef merged, const LowRank& term) {
  return detail::dense_unmerge(merged, term, "adapter::unmerge(LowRank)");
}
/// W + s·B̂·Â (N×K) with the dequantized factors. Throws for a shape mismatch or NaN/Inf.
QLR_COMPILED_FUNCTION
Matrix merge(ConstMatrixRef w, const QuantizedLowRank& term) {
  return detail::dense_merge(w, term, "adapter::merge(QuantizedLowRank)");
}
/// W_merged − s·B̂·Â: the inverse of merge, up to FP32 rounding.
QLR_COMPILED_FUNCTION
Matrix unmerge(ConstMatrixRef merged, const QuantizedLowRank& term) {
  return detail::dense_unmerge(merged, term, "adapter::unmerge(QuantizedLowRank)");
}
/// W + ΔW (N×K), ΔW the per-cell constant update of QA-LoRA expanded over its groups. For
/// a quantized base, merge_into_zeros is the exact merge.
QLR_COMPILED_FUNCTION
Matrix merge(ConstMatrixRef w, const QaLora& qa) {
  return detail::dense_merge(w, qa, "adapter::merge(QaLora)");
}
/// W_merged − ΔW: the inverse of merge, up to FP32 rounding.
QLR_COMPILED_FUNCTION
Matrix unmerge(ConstMatrixRef merged, const QaLora& qa) {
  return detail::dense_unmerge(merged, qa, "adapter::unmerge(QaLora)");
}

/// A merged DoRA weight and the row norms n of W0 + s·B·A that unmerge needs back.
struct DoraMerge {
  Matrix weight;     ///< diag(m/n)·(W0 + s·B·A), N×K
  Vector row_norms;  ///< n (N), Dora::row_norms(W0)
};

/// diag(m/n)·(W0 + s·B·A) for W0 (N×K) (§5.3). Throws for a shape mismatch, a NaN/Inf in W0
/// or a row of W0 + s·B·A with norm 0.
QLR_COMPILED_FUNCTION
DoraMerge merge(ConstMatrixRef w0, const Dora& dora) {
  constexpr const char* entity = "adapter::merge(Dora)";
  detail::check_merge_operand(w0, dora, entity, "w0");
  DoraMerge out{Matrix(w0), dora.row_norms(w0)};
  out.weight += dora.delta();
  for (index_t o = 0; o < out.weight.rows(); ++o) {
    QLR_CHECK(out.row_norms(o) > 0.0f, invalid_argument,
              "{}: row_norms({}) = 0; expected > 0 (row {} of W0 + s*B*A is zero, so m/n is "
              "undefined)",
              entity, o, o);
    out.weight.row(o) *= dora.magnitude()(o) / out.row_norms(o);
  }
  return out;
}

/// W0 = diag(n/m)·W_merged − s·B·A, with n the row_norms merge returned. Throws for a shape
/// mismatch, a NaN/Inf, a norm ≤ 0 or a magnitude m_o = 0 (that row of W_merged is zero:
/// W0 cannot be recovered from it).
QLR_COMPILED_FUNCTION
Matrix unmerge(ConstMatrixRef merged, const Dora& dora, const Vector& row_norms) {
  constexpr const char* entity = "adapter::unmerge(Dora)";
  detail::check_merge_operand(merged, dora, entity, "merged");
  QLR_CHECK(row_norms.size() == dora.out_features(), shape_mismatch,
            "{}: row_norms.size() = {}; expected out_features = {}", entity, row_norms.size(),
            dora.out_features());
  for (index_t o = 0; o < row_norms.size(); ++o) {
    QLR_CHECK(std::isfinite(row_norms(o)) && row_norms(o) > 0.0f, invalid_argument,
              "{}: row_norms({}) = {}; expected a finite value > 0", entity, o, row_norms(o));
    QLR_CHECK(dora.magnitude()(o) != 0.0f, invalid_argument,
              "{}: magnitude({}) = 0; expected every m_o != 0 (row {} of the merged weight is "
              "zero, so W0 cannot be recovered)",
              entity, o, o);
  }
  Matrix w0 = merged;
  for (index_t o = 0; o < w0.rows(); ++o) w0.row(o) *= row_norms(o) / dora.magnitude()(o);
  w0 -= dora.delta();
  return w0;
}

/// merge_error / update above which requantizing_merge recommends keeping the adapter
/// separate (see MergeReport::keep_separate_recommended).
inline constexpr double default_keep_separate_tolerance = 0.1;

/// What a requantizing merge cost, against the exact FP32 merge M = Ŵ + ΔW (for DoRA,
/// M = diag(m/n)·(Ŵ + s·B·A)) and M_q = dequantize(requantized M).
struct MergeReport {
  double relative_frobenius = 0.0;  ///< ‖M_q − M‖_F / ‖M‖_F
  double max_abs = 0.0;             ///< max |M_q − M|
  /// ‖(M − M_q)·Xᵀ‖_F / ‖M·Xᵀ‖_F on the calibration inputs X, when given.
  std::optional<double> relative_output_error;
  /// ‖(M − M_q)·Xᵀ‖_F / ‖(M − Ŵ)·Xᵀ‖_F (without X, the same on the weights): the merge's
  /// error against the change the adapter makes, which the recommendation compares.
  double error_to_update = 0.0;
  double tolerance = default_keep_separate_tolerance;  ///< the threshold compared against
  /// Extra storage of keeping the adapter separate in f16 instead: 16·(its values)/(N·K),
  /// e.g. 16·r(N + K)/(N·K) for LoRA. Lossless.
  double separate_extra_bits_per_parameter = 0.0;
  /// error_to_update > tolerance. Keeping the adapter separate is lossless for a few
  /// bits/param; merging is free at inference but adds the requantization noise. That
  /// noise matters against what the adapter changed, not against W: a merge error as large
  /// as the update erases the fine-tune whatever its size relative to W (a 1 % update under
  /// INT4's ~9 % noise). On calibration outputs when given, since that is what the next
  /// layer sees. Default 0.1: the merged model keeps the update to within 10 % (1 % of its
  /// energy).
  bool keep_separate_recommended = false;

  /// One line with the figures and the recommendation.
  [[nodiscard]] std::string summary() const {
    char out[320];
    char output_part[64] = "";
    if (relative_output_error)
      std::snprintf(output_part, sizeof output_part, ", on outputs %.3g", *relative_output_error);
    std::snprintf(out, sizeof out,
                  "requantizing merge: relative error %.3g%s, max abs %.3g; error/update %.3g %s "
                  "tolerance %.3g: %s (separate costs +%.4g bits/param, lossless)",
                  relative_frobenius, output_part, max_abs, error_to_update,
                  keep_separate_recommended ? ">" : "<=", tolerance,
                  keep_separate_recommended ? "keep the adapter separate" : "merge",
                  separate_extra_bits_per_parameter);
    return out;
  }
};

/// A requantized merged weight and its report.
template <QuantFormatType F>
struct RequantizedMerge {
  QuantizedMatrix<F> weight;  ///< quantizer.quantize(M)
  MergeReport report;         ///< what that cost
};

/// Merges `adapter` into an already quantized base: M = dequantize(base) + ΔW (a DoRA
/// adapter: its full merge), requantized by `quantizer` (any format, e.g. the base's own).
/// Lossy; the report measures it on the weights and, given calibration inputs `x` (M×K),
/// on the outputs. Throws for mismatched shapes, a NaN/Inf in x or a negative tolerance.
template <quant::Quantizer Q, QuantFormatType F, Adapter A>
RequantizedMerge<typename Q::format> requantizing_merge(
    const QuantizedMatrix<F>& base, const A& adapter, const Q& quantizer,
    std::optional<ConstMatrixRef> x = std::nullopt,
    double tolerance = default_keep_separate_tolerance) {
  constexpr const char* entity = "adapter::requantizing_merge";
  QLR_CHECK(base.rows() == adapter.out_features() && base.cols() == adapter.in_features(),
            shape_mismatch,
            "{}: base is {}x{}; expected {}x{} (the adapter's out_features x in_features)",
            entity, base.rows(), base.cols(), adapter.out_features(), adapter.in_features());
  QLR_CHECK(tolerance >= 0.0, invalid_argument, "{}: tolerance = {}; expected >= 0", entity,
            tolerance);
  if (x) {
    QLR_CHECK(x->rows() >= 1 && x->cols() == base.cols(), shape_mismatch,
              "{}: x is {}x{}; expected M x {} with M >= 1 (in_features)", entity, x->rows(),
              x->cols(), base.cols());
    check_finite(*x, std::string(entity) + ": x");
  }
  const Matrix w_hat = quant::dequantize(base);
  Matrix exact;
  if constexpr (std::same_as<A, Dora>) {
    exact = merge(w_hat, adapter).weight;
  } else {
    exact = w_hat + adapter.delta();
  }
  RequantizedMerge<typename Q::format> out{quantizer.quantize(exact), {}};
  const Matrix merged = quant::dequantize(out.weight);
  MergeReport& report = out.report;
  report.relative_frobenius = quant::relative_frobenius_error(exact, merged);
  report.max_abs = quant::max_abs_error(exact, merged);
  const MatrixD exact_d = exact.cast<double>();
  const MatrixD error = exact_d - merged.cast<double>();
  const MatrixD update = exact_d - w_hat.cast<double>();
  if (x) {
    const MatrixD xt = x->cast<double>().transpose();
    const double error_norm = (error * xt).norm();
    report.relative_output_error = detail::norm_ratio(error_norm, (exact_d * xt).norm());
    report.error_to_update = detail::norm_ratio(error_norm, (update * xt).norm());
  } else {
    report.error_to_update = detail::norm_ratio(error.norm(), update.norm());
  }
  report.tolerance = tolerance;
  report.separate_extra_bits_per_parameter =
      16.0 * static_cast<double>(detail::stored_values(adapter)) /
      (static_cast<double>(base.rows()) * static_cast<double>(base.cols()));
  report.keep_separate_recommended = report.error_to_update > tolerance;
  return out;
}

}  // namespace qlr::adapter
