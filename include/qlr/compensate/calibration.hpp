// SPDX-License-Identifier: Apache-2.0
// The calibration statistics GPTQ and EoRA share (ALGORITHMS.md §2.7, §7.1): per layer, the
// second moment C = Σ_t x_t·x_tᵀ of its inputs and the sample count, accumulated in double
// while streaming, so memory is O(K²) whatever the amount of calibration text.
#pragma once

#include <algorithm>
#include <cstdint>

#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/types.hpp"

namespace qlr::compensate {

/// Σ_t x_t·x_tᵀ (K×K, double) and the count of the inputs x_t (length K) seen by one layer.
///
/// Samples are summed in fixed blocks of `block_rows` rows in arrival order, so how a stream
/// is cut into add() calls does not change one bit of the result (T7.5), nor does the
/// thread count (each entry of C is one fixed-order dot product per block).
class Covariance {
 public:
  /// Rows summed per block: large enough for a GEMM, small enough to buffer.
  static constexpr index_t block_rows = 256;

  /// An empty accumulator for inputs of length `in_features` ≥ 1.
  explicit Covariance(index_t in_features) : pending_(block_rows, checked_size(in_features)) {
    sum_.setZero(in_features, in_features);
  }

  /// Statistics computed elsewhere: `sum` = Σ x·xᵀ (K×K, symmetric) over `samples` inputs.
  /// Throws for a non-square or non-finite sum or a negative count.
  Covariance(MatrixD sum, std::int64_t samples) : pending_(block_rows, checked_size(sum.rows())) {
    QLR_CHECK(sum.cols() == sum.rows(), shape_mismatch,
              "compensate::Covariance: sum is {}x{}; expected a square K x K matrix", sum.rows(),
              sum.cols());
    QLR_CHECK(sum.allFinite(), invalid_argument,
              "compensate::Covariance: sum holds a NaN or an infinity; expected finite values");
    QLR_CHECK(samples >= 0, invalid_argument, "compensate::Covariance: samples = {}; expected >= 0",
              samples);
    sum_ = std::move(sum);
    samples_ = samples;
  }

  /// Adds the rows of x (M×K), one input each. Throws for K ≠ in_features() or a NaN/Inf in
  /// x, before anything is added: a failed call leaves the statistics as they were.
  QLR_COMPILED_FUNCTION
  void add(ConstMatrixRef x);

  /// K.
  [[nodiscard]] index_t in_features() const noexcept { return sum_.rows(); }
  /// Inputs added so far, M.
  [[nodiscard]] std::int64_t samples() const noexcept { return samples_; }

  /// Σ x·xᵀ (K×K, symmetric) over every input added so far.
  QLR_COMPILED_FUNCTION
  [[nodiscard]] MatrixD sum() const;

  /// The calibration loss of a weight error E (N×K): ‖E·Xᵀ‖_F² = Σ_o e_o·C·e_oᵀ, the squared
  /// output error of the layer on every input added. Throws for K ≠ in_features().
  QLR_COMPILED_FUNCTION
  [[nodiscard]] double output_error(const MatrixD& e) const;

 private:
  static index_t checked_size(index_t k) {
    QLR_CHECK(k >= 1, invalid_argument, "compensate::Covariance: in_features = {}; expected >= 1", k);
    return k;
  }

  /// total += blockᵀ·block, parallel over panels of columns of C.
  template <class Block>
  static void accumulate(MatrixD& total, const Block& block) {
    constexpr index_t panel = 64;
    const index_t k = total.cols();
    parallel_for((k + panel - 1) / panel, 1, [&](index_t first, index_t last) {
      for (index_t p = first; p < last; ++p) {
        const index_t begin = p * panel;
        const index_t width = std::min(panel, k - begin);
        total.middleCols(begin, width).noalias() +=
            block.transpose() * block.middleCols(begin, width);
      }
    });
  }

  MatrixD sum_;
  MatrixD pending_;  // block_rows × K: inputs not yet summed
  index_t pending_rows_ = 0;
  std::int64_t samples_ = 0;
};

template <int>
void Covariance::add(ConstMatrixRef x) {
  constexpr const char* entity = "compensate::Covariance::add";
  QLR_CHECK(x.cols() == in_features(), shape_mismatch,
            "{}: x is {}x{}; expected {} columns (in_features)", entity, x.rows(), x.cols(),
            in_features());
  check_finite(x, entity);
  for (index_t row = 0; row < x.rows();) {
    const index_t take = std::min(x.rows() - row, block_rows - pending_rows_);
    pending_.middleRows(pending_rows_, take) = x.middleRows(row, take).cast<double>();
    pending_rows_ += take;
    row += take;
    if (pending_rows_ == block_rows) {
      accumulate(sum_, pending_);
      pending_rows_ = 0;
    }
  }
  samples_ += x.rows();
}

template <int>
MatrixD Covariance::sum() const {
  MatrixD total = sum_;
  if (pending_rows_ > 0) accumulate(total, pending_.topRows(pending_rows_));
  return total;
}

template <int>
double Covariance::output_error(const MatrixD& e) const {
  QLR_CHECK(e.cols() == in_features(), shape_mismatch,
            "compensate::Covariance::output_error: e is {}x{}; expected {} columns", e.rows(),
            e.cols(), in_features());
  return (e * sum()).cwiseProduct(e).sum();
}

// qlr::compiled (qlr/compensate/compensate.cpp) holds the one copy of these in a program.
#define QLR_CALIBRATION_FUNCTIONS(prefix)                 \
  prefix template void Covariance::add<>(ConstMatrixRef); \
  prefix template MatrixD Covariance::sum<>() const;      \
  prefix template double Covariance::output_error<>(const MatrixD&) const;
#if defined(QLR_COMPILED)
QLR_CALIBRATION_FUNCTIONS(extern)
#endif

}  // namespace qlr::compensate
