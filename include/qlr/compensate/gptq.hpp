// SPDX-License-Identifier: Apache-2.0
// GPTQ (ALGORITHMS.md §2.7): quantizes W column by column and feeds each column's rounding
// error forward into the columns not yet quantized, weighted by the inverse Hessian of the
// layer's calibration loss, so the output error on the calibration inputs shrinks. It makes
// the same QuantizedMatrix as RTN (contiguous groups, same grid rules), so every kernel runs it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include <Eigen/Cholesky>

#include "qlr/compensate/calibration.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/quant/concept.hpp"
#include "qlr/quant/int_group.hpp"
#include "qlr/quant/spec.hpp"

namespace qlr::compensate {

/// Options of GPTQ's error feedback; the grid itself is set by quant::IntOptions.
struct GptqOptions {
  double percdamp = 0.01;   ///< damping λ = percdamp·mean(diag H), added to H's diagonal
  bool act_order = false;   ///< quantize columns by descending H[i,i] (groups stay contiguous)
  index_t block_size = 128; ///< columns per lazy update (speed only: same result in exact math)
};

namespace detail {

/// What GPTQ needs of the calibration statistics: the processing order of the columns, the
/// dead ones (never activated) and U, the upper Cholesky factor of H⁻¹ in that order.
struct GptqPlan {
  std::vector<index_t> order;     ///< order[p] = column quantized p-th
  std::vector<index_t> position;  ///< position[c] = p with order[p] = c
  std::vector<bool> dead;         ///< dead[c]: H[c,c] = 0, the column is zeroed
  Eigen::MatrixXd u;              ///< K×K upper triangular, H⁻¹ = UᵀU, in processing order
};

/// H = 2·C/M, dead columns, optional act order, damping, U = chol(H⁻¹)ᵀ (§2.7).
QLR_COMPILED_FUNCTION
GptqPlan make_plan(const Covariance& cov, const GptqOptions& opt) {
  constexpr const char* entity = "compensate::Gptq";
  QLR_CHECK(cov.samples() >= 1, invalid_argument,
            "{}: covariance samples = 0; expected >= 1 calibration input", entity);
  QLR_CHECK(opt.percdamp >= 0.0 && std::isfinite(opt.percdamp), invalid_argument,
            "{}: percdamp = {}; expected a finite value >= 0", entity, opt.percdamp);
  QLR_CHECK(opt.block_size >= 1, invalid_argument, "{}: block_size = {}; expected >= 1", entity,
            opt.block_size);
  const index_t k = cov.in_features();
  Eigen::MatrixXd h = cov.sum() * (2.0 / static_cast<double>(cov.samples()));
  GptqPlan plan;
  plan.dead.assign(static_cast<std::size_t>(k), false);
  for (index_t i = 0; i < k; ++i) {
    if (h(i, i) != 0.0) continue;
    plan.dead[static_cast<std::size_t>(i)] = true;
    h(i, i) = 1.0;  // its row and column are zero too (C is a Gram matrix)
  }
  plan.order.resize(static_cast<std::size_t>(k));
  std::iota(plan.order.begin(), plan.order.end(), index_t{0});
  if (opt.act_order) {
    std::stable_sort(plan.order.begin(), plan.order.end(),
                     [&](index_t a, index_t b) { return h(a, a) > h(b, b); });
  }
  plan.position.resize(plan.order.size());
  for (index_t p = 0; p < k; ++p) plan.position[static_cast<std::size_t>(plan.order[p])] = p;
  Eigen::MatrixXd hp(k, k);  // H with rows and columns in processing order
  for (index_t j = 0; j < k; ++j)
    for (index_t i = 0; i < k; ++i) hp(i, j) = h(plan.order[i], plan.order[j]);
  hp.diagonal().array() += opt.percdamp * hp.diagonal().mean();
  // U without forming H⁻¹: with J the reversal, J·H·J = M·Mᵀ (M lower) gives
  // H⁻¹ = J·M⁻ᵀ·M⁻¹·J = UᵀU for U = J·M⁻¹·J, upper with a positive diagonal, so the unique
  // factor. One Cholesky and one triangular solve instead of a Cholesky, an inverse and a
  // second Cholesky (2.7 K³ → 1.3 K³ flops).
  const Eigen::LLT<Eigen::MatrixXd> chol(hp.reverse());
  QLR_CHECK(chol.info() == Eigen::Success, invalid_argument,
            "{}: the damped Hessian is not positive definite (percdamp = {}); expected a "
            "covariance of real inputs, or a larger percdamp",
            entity, opt.percdamp);
  const Eigen::MatrixXd m_inverse = chol.matrixL().solve(Eigen::MatrixXd::Identity(k, k));
  plan.u = m_inverse.reverse();
  plan.u.triangularView<Eigen::StrictlyLower>().setZero();
  QLR_CHECK(plan.u.allFinite(), invalid_argument,
            "{}: the inverse Hessian overflows (percdamp = {}); expected a larger percdamp",
            entity, opt.percdamp);
  return plan;
}

/// GPTQ's codes and group grids of w (N×K): the error feedback, which does not depend on the
/// storage format (the coding `c` carries the width and encoding), so that it is compiled
/// once rather than once per format.
struct GptqCodes {
  std::vector<std::uint8_t> codes;              ///< N×K, original column order
  std::vector<quant::detail::GroupGrid> grids;  ///< N×groups, row-major
  index_t groups = 0;                           ///< groups per row
};

/// GPTQ on the rows of w (N×K) with coding `c`. Rows are independent given U, so they run in
/// fixed panels of rows in parallel: any thread count gives the same bytes.
QLR_COMPILED_FUNCTION
GptqCodes gptq_codes(ConstMatrixRef w, const quant::detail::IntCoding& c,
                     const quant::IntOptions& qopt, const GptqOptions& opt, const GptqPlan& plan,
                     const char* entity) {
  quant::detail::validate_options(c, qopt, entity);
  const index_t n = w.rows();
  const index_t k = w.cols();
  QLR_CHECK(n >= 1 && k == plan.u.rows(), shape_mismatch,
            "{}: w is {}x{}; expected N x {} (the covariance's in_features), N >= 1", entity, n, k,
            plan.u.rows());
  check_finite(w, entity);
  const index_t g = effective_group_size(qopt.group_size, k, entity);
  const index_t groups = group_count(k, g);
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(n * k));  // original column order
  std::vector<quant::detail::GroupGrid> grids(static_cast<std::size_t>(n * groups));
  const Eigen::MatrixXd& u = plan.u;
  constexpr index_t panel_rows = 64;

  parallel_for((n + panel_rows - 1) / panel_rows, 1, [&](index_t first, index_t last) {
    std::vector<double> values;
    for (index_t panel = first; panel < last; ++panel) {
      const index_t row0 = panel * panel_rows;
      const index_t rows = std::min(panel_rows, n - row0);
      Eigen::MatrixXd cur(rows, k);  // the panel's current weights, processing order
      for (index_t p = 0; p < k; ++p) {
        const index_t col = plan.order[static_cast<std::size_t>(p)];
        for (index_t r = 0; r < rows; ++r)
          cur(r, p) = plan.dead[static_cast<std::size_t>(col)] ? 0.0 : w(row0 + r, col);
      }
      std::vector<bool> fitted(static_cast<std::size_t>(groups), false);
      for (index_t i1 = 0; i1 < k; i1 += opt.block_size) {
        const index_t i2 = std::min(k, i1 + opt.block_size);
        Eigen::MatrixXd err = Eigen::MatrixXd::Zero(rows, i2 - i1);  // scaled errors of the block
        for (index_t i = i1; i < i2; ++i) {
          const index_t col = plan.order[static_cast<std::size_t>(i)];
          const index_t l = col / g;
          if (!fitted[static_cast<std::size_t>(l)]) {
            // Fit group l when its first column comes up, on the current values of all its
            // columns; those past this block still lack this block's lazy update.
            fitted[static_cast<std::size_t>(l)] = true;
            const index_t begin = l * g;
            const index_t width = std::min(g, k - begin);
            values.resize(static_cast<std::size_t>(width));
            for (index_t r = 0; r < rows; ++r) {
              for (index_t j = 0; j < width; ++j) {
                const index_t p = plan.position[static_cast<std::size_t>(begin + j)];
                double v = cur(r, p);
                if (p >= i2) v -= err.row(r).head(i - i1).dot(u.col(p).segment(i1, i - i1));
                values[static_cast<std::size_t>(j)] = v;
              }
              grids[static_cast<std::size_t>((row0 + r) * groups + l)] =
                  quant::detail::fit_group(c, qopt, values.data(), width, entity);
            }
          }
          for (index_t r = 0; r < rows; ++r) {
            const quant::detail::GroupGrid& grid =
                grids[static_cast<std::size_t>((row0 + r) * groups + l)];
            const std::uint8_t code = quant::detail::encode(c, grid, cur(r, i));
            codes[static_cast<std::size_t>((row0 + r) * k + col)] = code;
            err(r, i - i1) = (cur(r, i) - quant::detail::decode(grid, code)) / u(i, i);
          }
          // §2.7: W[:, j] −= e·U[i, j] for the rest of the block now, the other columns lazily.
          cur.middleCols(i + 1, i2 - i - 1).noalias() -=
              err.col(i - i1) * u.row(i).segment(i + 1, i2 - i - 1);
        }
        if (i2 < k)
          cur.rightCols(k - i2).noalias() -= err * u.block(i1, i2, i2 - i1, k - i2);
      }
    }
  });
  return {std::move(codes), std::move(grids), groups};
}

/// GPTQ on the rows of w (N×K) with coding `c`, stored as Format.
template <QuantFormatType Format>
QuantizedMatrix<Format> gptq_quantize(ConstMatrixRef w, const quant::detail::IntCoding& c,
                                      const quant::IntOptions& qopt, const GptqOptions& opt,
                                      const GptqPlan& plan, const char* entity) {
  const GptqCodes q = gptq_codes(w, c, qopt, opt, plan, entity);
  const index_t k = w.cols();
  return quant::detail::quantize_rows<Format>(
      w, {qopt.group_size, c.scale_type, c.zero_mode, {}}, entity,
      [&](index_t o, std::uint8_t* row_codes, float* scales, float* zeros) {
        std::copy_n(q.codes.data() + o * k, k, row_codes);
        for (index_t l = 0; l < q.groups; ++l) {
          const quant::detail::GroupGrid& grid =
              q.grids[static_cast<std::size_t>(o * q.groups + l)];
          scales[l] = grid.scale;
          if (zeros != nullptr) zeros[l] = grid.zero;
        }
      });
}

}  // namespace detail

/// The GPTQ quantizer policy of INT-`Bits` encoding `E` (int_asym or int_sym) for one layer,
/// whose calibration statistics it holds: a Quantizer like quant::IntGroup, same format.
template <int Bits, Encoding E>
  requires quant::SupportedIntBits<Bits> && (E == Encoding::int_asym || E == Encoding::int_sym)
class Gptq {
 public:
  using format = QuantFormat<Bits, E>;  ///< what quantize() produces, as quant::IntGroup

  /// GPTQ for the layer whose inputs `cov` summarizes, on the grid of `quant_options`.
  /// Factors the Hessian here (O(K³)); quantize() reuses it. Throws for a covariance without
  /// samples, invalid options or a Hessian that damping does not make positive definite.
  explicit Gptq(const Covariance& cov, quant::IntOptions quant_options = {},
                GptqOptions options = {})
      : quant_(quant_options),
        options_(options),
        plan_(std::make_shared<const detail::GptqPlan>(detail::make_plan(cov, options))) {}

  /// The grid options.
  [[nodiscard]] const quant::IntOptions& options() const noexcept { return quant_; }
  /// The error-feedback options.
  [[nodiscard]] const GptqOptions& gptq_options() const noexcept { return options_; }

  /// Quantizes `w` (N×K, K = the covariance's). Throws for a wrong shape or a NaN/Inf in w.
  [[nodiscard]] QuantizedMatrix<format> quantize(ConstMatrixRef w) const {
    return detail::gptq_quantize<format>(w, quant::detail::coding_of(Bits, E, quant_), quant_,
                                         options_, *plan_, "compensate::Gptq::quantize");
  }

 private:
  quant::IntOptions quant_;
  GptqOptions options_;
  std::shared_ptr<const detail::GptqPlan> plan_;  // shared by copies: the O(K²) part
};

/// GPTQ with asymmetric INT-`Bits` grids.
template <int Bits>
using GptqAsym = Gptq<Bits, Encoding::int_asym>;
/// GPTQ with symmetric INT-`Bits` grids.
template <int Bits>
using GptqSym = Gptq<Bits, Encoding::int_sym>;

/// GPTQ of `w` (N×K) on the integer format `spec` names, the run-time twin of Gptq. Throws
/// for NF4 (GPTQ needs an integer grid) and as Gptq does.
QLR_COMPILED_FUNCTION
quant::AnyQuantizedMatrix gptq_quantize(ConstMatrixRef w, const Covariance& cov,
                                        const quant::QuantSpec& spec,
                                        const GptqOptions& options = {}) {
  QLR_CHECK(spec.encoding != Encoding::codebook, unsupported,
            "compensate::gptq_quantize: spec = {}; expected an integer format (int2/3/4/8)",
            quant::to_string(spec));
  const auto run = [&]<int Bits>() -> quant::AnyQuantizedMatrix {
    if (spec.encoding == Encoding::int_sym)
      return GptqSym<Bits>(cov, spec.options, options).quantize(w);
    return GptqAsym<Bits>(cov, spec.options, options).quantize(w);
  };
  switch (spec.bits) {
    case 2: return run.template operator()<2>();
    case 3: return run.template operator()<3>();
    case 4: return run.template operator()<4>();
    case 8: return run.template operator()<8>();
    default:
      qlr::detail::fail(Errc::unsupported,
                        "compensate::gptq_quantize: bits = {}; expected 2, 3, 4 or 8", spec.bits);
  }
}

// qlr::compiled (qlr/compensate/compensate.cpp) holds the one copy of these in a program.
#define QLR_GPTQ_FUNCTIONS(prefix)                                                             \
  prefix template detail::GptqPlan detail::make_plan<>(const Covariance&, const GptqOptions&); \
  prefix template detail::GptqCodes detail::gptq_codes<>(                                      \
      ConstMatrixRef, const quant::detail::IntCoding&, const quant::IntOptions&,               \
      const GptqOptions&, const detail::GptqPlan&, const char*);                               \
  prefix template quant::AnyQuantizedMatrix gptq_quantize<>(                                   \
      ConstMatrixRef, const Covariance&, const quant::QuantSpec&, const GptqOptions&);
#if defined(QLR_COMPILED)
QLR_GPTQ_FUNCTIONS(extern)
#endif

}  // namespace qlr::compensate
