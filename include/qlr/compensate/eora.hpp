// SPDX-License-Identifier: Apache-2.0
// EoRA (ALGORITHMS.md §7): a training-free rank-r term B·A that cancels the compression error
// ΔW = W − Ŵ where the calibration inputs live. ‖(ΔW − L)·Xᵀ‖_F² = ‖(ΔW − L)·Q·Λ^½‖_F² for
// C = XᵀX = Q·Λ·Qᵀ, so the best rank-r L is the truncated SVD taken in the whitened basis
// and mapped back (Eckart–Young). Plain SVD of ΔW (C = I) is the baseline.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Eigenvalues>
#include <Eigen/QR>

#include "qlr/adapter/low_rank.hpp"
#include "qlr/compensate/calibration.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/random.hpp"
#include "qlr/core/types.hpp"

namespace qlr::compensate {

/// How eigenvalues too small to invert are lifted (§7.1 safeguards).
enum class EigenFloor : std::uint8_t {
  relative,         ///< λ_i ← max(λ_i, ε_rel·λ_max): covers zero and negative λ alike (qlr)
  reference_clamp,  ///< λ_i ≤ 0 ← the smallest positive λ (EoRA's code, which would divide
                    ///< by an exact zero; qlr lifts zeros too)
};

/// Options of the eigendecomposition of the calibration covariance.
struct EigenspaceOptions {
  EigenFloor floor = EigenFloor::relative;  ///< the safeguard for tiny or negative λ
  double relative_floor = 1e-8;             ///< ε_rel of EigenFloor::relative
  double damping = 0.0;                     ///< δ ≥ 0: C += δ·mean(diag C)·I first (option)
};

/// C = Q·Λ·Qᵀ of one layer's calibration covariance, floored: the whitening EoRA projects
/// into. Computed once per layer and reused for every rank and every compressed Ŵ.
class Eigenspace {
 public:
  /// Decomposes `cov` (O(K³), Eigen's self-adjoint solver, double). Throws when λ_max ≤ 0
  /// or is not finite (no input, or all-zero inputs) and for invalid options.
  QLR_COMPILED_FUNCTION
  explicit Eigenspace(const Covariance& cov, const EigenspaceOptions& options = {});

  /// Q (K×K): column i is the eigenvector of values()(i).
  [[nodiscard]] const Eigen::MatrixXd& basis() const noexcept { return basis_; }
  /// Λ after the floor (K, ascending, all > 0).
  [[nodiscard]] const Eigen::VectorXd& values() const noexcept { return values_; }
  /// K.
  [[nodiscard]] index_t in_features() const noexcept { return basis_.rows(); }

 private:
  Eigen::MatrixXd basis_;
  Eigen::VectorXd values_;
};

template <int>
Eigenspace::Eigenspace(const Covariance& cov, const EigenspaceOptions& options) {
  constexpr const char* entity = "compensate::Eigenspace";
  QLR_CHECK(options.relative_floor > 0.0 && options.relative_floor < 1.0, invalid_argument,
            "{}: relative_floor = {}; expected a value in (0, 1)", entity, options.relative_floor);
  QLR_CHECK(options.damping >= 0.0 && std::isfinite(options.damping), invalid_argument,
            "{}: damping = {}; expected a finite value >= 0", entity, options.damping);
  Eigen::MatrixXd c = cov.sum();
  c = 0.5 * (c + c.transpose()).eval();  // exact symmetry for the solver
  if (options.damping > 0.0) c.diagonal().array() += options.damping * c.diagonal().mean();
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(c);
  QLR_CHECK(solver.info() == Eigen::Success, invalid_argument,
            "{}: the eigendecomposition did not converge; expected a finite covariance", entity);
  values_ = solver.eigenvalues();  // ascending
  const double lambda_max = values_.maxCoeff();
  QLR_CHECK(std::isfinite(lambda_max) && lambda_max > 0.0, invalid_argument,
            "{}: largest eigenvalue = {} over {} samples; expected > 0 (inputs that are not "
            "all zero)",
            entity, lambda_max, cov.samples());
  if (options.floor == EigenFloor::relative) {
    values_ = values_.cwiseMax(options.relative_floor * lambda_max);
  } else {
    const double smallest_positive = (values_.array() > 0.0).select(values_, lambda_max).minCoeff();
    values_ = (values_.array() > 0.0).select(values_, smallest_positive);
  }
  basis_ = solver.eigenvectors();
}

/// How the top-r singular triplets are found.
enum class SvdMethod : std::uint8_t {
  exact,       ///< eigenvectors of the whole Gram matrix: small layers and tests
  randomized,  ///< Gaussian sketch, power iterations, then a small SVD: large layers
};

/// Options of the truncated SVD.
struct SvdOptions {
  SvdMethod method = SvdMethod::exact;  ///< exact or randomized
  index_t oversampling = 10;            ///< randomized: sketch width r + oversampling
  int power_iterations = 2;             ///< randomized: passes that sharpen the spectrum
  std::uint64_t seed = 0;               ///< randomized: seed of the Gaussian sketch (§4.2)
};

/// A rank-r compensation ΔW ≈ B·A in double, with the spectrum it was cut from.
struct Compensation {
  MatrixD b;                        ///< B (N×r) = U_r·Σ_r^½
  MatrixD a;                        ///< A (r×K)
  Eigen::VectorXd singular_values;  ///< σ of the (whitened) error, descending; all of them
                                    ///< for exact SVD, the sketch's for randomized

  /// The term as an adapter (FP32 factors, scale 1): y = Ŵx + B(Ax).
  [[nodiscard]] adapter::LowRank to_low_rank() const {
    return adapter::LowRank(a.cast<float>(), b.cast<float>());
  }
};

namespace detail {

/// Throws unless W and Ŵ are finite matrices of one shape and 1 ≤ rank ≤ min(N, K).
QLR_COMPILED_FUNCTION
void check_compensation_inputs(ConstMatrixRef w, ConstMatrixRef w_hat, index_t rank,
                               const char* entity) {
  QLR_CHECK(w.rows() >= 1 && w.cols() >= 1, shape_mismatch,
            "{}: w is {}x{}; expected a non-empty matrix", entity, w.rows(), w.cols());
  QLR_CHECK(w_hat.rows() == w.rows() && w_hat.cols() == w.cols(), shape_mismatch,
            "{}: w_hat is {}x{}; expected {}x{} (the shape of w)", entity, w_hat.rows(),
            w_hat.cols(), w.rows(), w.cols());
  const index_t bound = std::min(w.rows(), w.cols());
  QLR_CHECK(rank >= 1 && rank <= bound, invalid_argument,
            "{}: rank = {}; expected 1 <= rank <= min(N = {}, K = {}) = {}", entity, rank,
            w.rows(), w.cols(), bound);
  check_finite(w, std::string(entity) + ": w");
  check_finite(w_hat, std::string(entity) + ": w_hat");
}

/// Thin orthonormal basis of the columns of y (rows ≥ cols).
QLR_COMPILED_FUNCTION
Eigen::MatrixXd orthonormal_columns(const Eigen::MatrixXd& y) {
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(y);
  return qr.householderQ() * Eigen::MatrixXd::Identity(y.rows(), y.cols());
}

/// The top singular triplets of y: (U, σ, V) with at least `rank` columns, σ descending.
struct Triplets {
  Eigen::MatrixXd u;
  Eigen::VectorXd sigma;
  Eigen::MatrixXd v;
};

/// Thin SVD of y from the eigenvectors of its smaller Gram matrix. Why not BDCSVD: the
/// self-adjoint solver is the one Eigenspace already instantiates, and BDCSVD would add ~20 s
/// (~45 s under ASan) to every translation unit that includes this header. The Gram side's
/// vectors are orthonormal to rounding; σ_i = ‖y·v_i‖ rather than √λ_i keeps small σ
/// accurate to ~ε·σ_1 instead of √ε·σ_1; the other side, y·v_i/σ_i, is orthonormal to
/// ~ε·(σ_1/σ_i)² (the Gram matrix squares the condition number), which the top-r triplets
/// EoRA keeps can afford, and U·Σ·Vᵀ = y·V·Vᵀ still reproduces y at full rank.
QLR_COMPILED_FUNCTION
Triplets thin_svd(const Eigen::MatrixXd& y, const char* entity) {
  const bool wide = y.rows() < y.cols();
  const Eigen::MatrixXd tall = wide ? Eigen::MatrixXd(y.transpose()) : y;  // (m, n), m ≥ n
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(tall.transpose() * tall);
  QLR_CHECK(solver.info() == Eigen::Success, invalid_argument,
            "{}: the eigendecomposition of the {}x{} Gram matrix did not converge; expected a "
            "finite matrix",
            entity, tall.cols(), tall.cols());
  const Eigen::MatrixXd projected = tall * solver.eigenvectors();  // columns y·v_i, norm σ_i
  const Eigen::VectorXd norms = projected.colwise().norm().transpose();
  // λ come ascending; order by the computed σ, which also settles ties among tiny λ.
  std::vector<index_t> order(static_cast<std::size_t>(norms.size()));
  std::iota(order.begin(), order.end(), index_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](index_t i, index_t j) { return norms(i) > norms(j); });
  const auto n = static_cast<index_t>(order.size());
  Eigen::MatrixXd left(tall.rows(), n);
  Eigen::MatrixXd right(n, n);
  Eigen::VectorXd sigma(n);
  for (index_t i = 0; i < n; ++i) {
    const index_t from = order[static_cast<std::size_t>(i)];
    sigma(i) = norms(from);
    right.col(i) = solver.eigenvectors().col(from);
    // A zero σ leaves a zero column: it multiplies a zero singular value in U·Σ·Vᵀ.
    if (sigma(i) > 0.0) {
      left.col(i) = projected.col(from) / sigma(i);
    } else {
      left.col(i).setZero();
    }
  }
  if (wide) return {std::move(right), std::move(sigma), std::move(left)};
  return {std::move(left), std::move(sigma), std::move(right)};
}

/// Top-`rank` SVD of y (N×K): exact, or randomized (Halko–Martinsson–Tropp: range sketch
/// Y·Ω, power iterations re-orthonormalized each pass, SVD of the small projection).
QLR_COMPILED_FUNCTION
Triplets top_singular(const Eigen::MatrixXd& y, index_t rank, const SvdOptions& opt,
                      const char* entity) {
  if (opt.method == SvdMethod::exact) {
    return thin_svd(y, entity);
  }
  QLR_CHECK(opt.oversampling >= 0 && opt.power_iterations >= 0, invalid_argument,
            "{}: oversampling = {}, power_iterations = {}; expected both >= 0", entity,
            opt.oversampling, opt.power_iterations);
  const index_t width = std::min(rank + opt.oversampling, std::min(y.rows(), y.cols()));
  Eigen::MatrixXd q = orthonormal_columns(y * gaussian_matrix(y.cols(), width, opt.seed));
  for (int i = 0; i < opt.power_iterations; ++i) {
    const Eigen::MatrixXd z = orthonormal_columns(y.transpose() * q);  // (K, width)
    q = orthonormal_columns(y * z);                                    // (N, width)
  }
  const Eigen::MatrixXd small = q.transpose() * y;  // (width, K)
  Triplets t = thin_svd(small, entity);
  t.u = q * t.u;
  return t;
}

/// B = U_r·Σ_r^½ and A = Σ_r^½·V_rᵀ·back, where back maps the SVD's basis to the inputs'.
QLR_COMPILED_FUNCTION
Compensation split_factors(const Triplets& t, index_t rank, const Eigen::MatrixXd* back) {
  const Eigen::VectorXd root = t.sigma.head(rank).cwiseSqrt();
  Compensation c;
  c.b = t.u.leftCols(rank) * root.asDiagonal();                        // (N, r)
  const Eigen::MatrixXd a = root.asDiagonal() * t.v.leftCols(rank).transpose();  // (r, K')
  c.a = back != nullptr ? MatrixD(a * *back) : MatrixD(a);
  c.singular_values = t.sigma;
  return c;
}

}  // namespace detail

/// EoRA: the rank-`rank` B·A minimizing ‖(ΔW − B·A)·Xᵀ‖_F for ΔW = w − w_hat (N×K) over the
/// inputs `space` was built from (§7.1 steps 4–6). Throws for mismatched shapes, rank ∉
/// [1, min(N, K)] or a NaN/Inf in w or w_hat.
QLR_COMPILED_FUNCTION
Compensation eora(ConstMatrixRef w, ConstMatrixRef w_hat, const Eigenspace& space, index_t rank,
                  const SvdOptions& options = {}) {
  constexpr const char* entity = "compensate::eora";
  detail::check_compensation_inputs(w, w_hat, rank, entity);
  QLR_CHECK(space.in_features() == w.cols(), shape_mismatch,
            "{}: w is {}x{}; expected {} columns (the covariance's in_features)", entity, w.rows(),
            w.cols(), space.in_features());
  const Eigen::VectorXd root = space.values().cwiseSqrt();
  const Eigen::MatrixXd delta = w.cast<double>() - w_hat.cast<double>();  // ΔW (N, K)
  const Eigen::MatrixXd whitened = (delta * space.basis()) * root.asDiagonal();  // ΔW·Q·Λ^½
  // Λ^{-½}·Qᵀ maps a whitened row back to input space.
  const Eigen::MatrixXd back = root.cwiseInverse().asDiagonal() * space.basis().transpose();
  return detail::split_factors(detail::top_singular(whitened, rank, options, entity), rank, &back);
}

/// The plain-SVD baseline (ZeroQuant-V2 LoRC, §7.2): the best rank-`rank` B·A for ‖ΔW − B·A‖_F,
/// i.e. EoRA with C = I. Throws as eora does.
QLR_COMPILED_FUNCTION
Compensation svd_compensation(ConstMatrixRef w, ConstMatrixRef w_hat, index_t rank,
                              const SvdOptions& options = {}) {
  constexpr const char* entity = "compensate::svd_compensation";
  detail::check_compensation_inputs(w, w_hat, rank, entity);
  const Eigen::MatrixXd delta = w.cast<double>() - w_hat.cast<double>();
  return detail::split_factors(detail::top_singular(delta, rank, options, entity), rank, nullptr);
}

// qlr::compiled (qlr/compensate/compensate.cpp) holds the one copy of these in a program.
#define QLR_EORA_FUNCTIONS(prefix)                                                                \
  prefix template Eigenspace::Eigenspace(const Covariance&, const EigenspaceOptions&);            \
  prefix template detail::Triplets detail::thin_svd<>(const Eigen::MatrixXd&, const char*);       \
  prefix template Compensation eora<>(ConstMatrixRef, ConstMatrixRef, const Eigenspace&, index_t, \
                                      const SvdOptions&);                                         \
  prefix template Compensation svd_compensation<>(ConstMatrixRef, ConstMatrixRef, index_t,        \
                                                  const SvdOptions&);
#if defined(QLR_COMPILED)
QLR_EORA_FUNCTIONS(extern)
#endif

}  // namespace qlr::compensate
