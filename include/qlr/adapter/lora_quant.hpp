// SPDX-License-Identifier: Apache-2.0
// LoRAQuant (ALGORITHMS.md §6): re-factor a trained LoRA by SVD, B·A = U·Σ·Vᵀ, so that its
// components come ordered by importance, then spend the bits there: the h leading components
// at 2–3 bits, the rest binary (1 bit). The result is a QuantizedLowRank the layer runs.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include <Eigen/QR>
#include <Eigen/SVD>

#include "qlr/adapter/detail/factors.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
#include "qlr/core/config.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/types.hpp"
#include "qlr/quant/binary.hpp"
#include "qlr/quant/spec.hpp"

namespace qlr::adapter {

/// How the split point h follows from the energy threshold ρ (§6.2).
enum class SplitRule : std::uint8_t {
  reference,  ///< h = max(1, k* − 1): the crossing component goes low (LoRAQuant's code)
  inclusive,  ///< h = k*: the high part holds at least ρ of the energy
};

/// How the refinement's gradient passes the rounding of Q (§6.4).
enum class RefineGradient : std::uint8_t {
  scale_only,        ///< round has zero derivative: only each group's ends move, through s
  straight_through,  ///< STE: ∂round(x)/∂x = 1, so every latent moves
};

/// The §6.4 refinement of each high component: plain gradient descent on latent (p, q).
struct Refinement {
  int steps = 300;                                   ///< gradient steps; 0 turns it off
  double learning_rate = 1e-2;                       ///< step size on f
  RefineGradient gradient = RefineGradient::scale_only;  ///< the reference's path by default
};

/// Options of LoRAQuant; the defaults are the paper's README command.
struct LoraQuantOptions {
  double energy = 0.8;                    ///< ρ ∈ (0, 1]: energy share of the high part
  SplitRule split = SplitRule::reference; ///< how h follows from ρ
  int high_bits = 2;                      ///< b_h: 2, 3, 4 or 8
  index_t group_size = 128;               ///< g along each component vector
  ScaleType scale_type = ScaleType::f16;  ///< storage of scales (f16: storage-true bits)
  Refinement refine = {};                 ///< of the high components (--opt)
};

/// B'·A' = B·A with orthogonal components (§6.1): B' = U·Σ^½ (N×r), A' = Σ^½·Vᵀ (r×K).
struct SvdFactors {
  MatrixD a;              ///< A' (r×K): row j = √σ_j·v_jᵀ
  MatrixD b;              ///< B' (N×r): column j = √σ_j·u_j
  Eigen::VectorXd sigma;  ///< σ, descending
};

/// The SVD of B·A (B: N×r, A: r×K) without forming the N×K product: thin QRs of B and Aᵀ,
/// then the r×r SVD of R_B·R_Aᵀ (double). Each (u_j, v_j) is signed so that the entry of
/// largest magnitude of u_j is positive. Throws for mismatched or non-finite factors.
QLR_COMPILED_FUNCTION
SvdFactors svd_reparameterize(const Matrix& a, const Matrix& b) {
  constexpr const char* entity = "adapter::svd_reparameterize";
  detail::check_factor_pair(a, b, a.cols(), a.cols(), entity);
  const index_t r = a.rows();
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr_b(b.cast<double>());
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr_a(a.cast<double>().transpose());
  const Eigen::MatrixXd q_b = qr_b.householderQ() * Eigen::MatrixXd::Identity(b.rows(), r);
  const Eigen::MatrixXd q_a = qr_a.householderQ() * Eigen::MatrixXd::Identity(a.cols(), r);
  const Eigen::MatrixXd r_b = qr_b.matrixQR().topRows(r).triangularView<Eigen::Upper>();
  const Eigen::MatrixXd r_a = qr_a.matrixQR().topRows(r).triangularView<Eigen::Upper>();
  const Eigen::JacobiSVD<Eigen::MatrixXd> svd(r_b * r_a.transpose(),
                                              Eigen::ComputeFullU | Eigen::ComputeFullV);
  Eigen::MatrixXd u = q_b * svd.matrixU();  // (N, r)
  Eigen::MatrixXd v = q_a * svd.matrixV();  // (K, r)
  for (index_t j = 0; j < r; ++j) {
    Eigen::Index top = 0;
    u.col(j).cwiseAbs().maxCoeff(&top);
    if (u(top, j) < 0.0) {
      u.col(j) = -u.col(j);
      v.col(j) = -v.col(j);
    }
  }
  const Eigen::VectorXd root = svd.singularValues().cwiseSqrt();
  return {root.asDiagonal() * v.transpose(), u * root.asDiagonal(), svd.singularValues()};
}

/// The split point h for singular values σ (descending) and threshold ρ ∈ (0, 1] (§6.2):
/// k* = min{k ≥ 1 : Σ_{i≤k} σ_i² ≥ ρ·Σ σ_i²}. 0 when all σ are 0. Throws for ρ ∉ (0, 1].
QLR_COMPILED_FUNCTION
index_t split_point(const Eigen::VectorXd& sigma, double energy, SplitRule rule) {
  QLR_CHECK(energy > 0.0 && energy <= 1.0, invalid_argument,
            "adapter::split_point: energy = {}; expected a value in (0, 1]", energy);
  const double total = sigma.squaredNorm();
  if (total == 0.0) return 0;
  index_t k_star = sigma.size();
  double running = 0.0;
  for (index_t k = 1; k <= sigma.size(); ++k) {
    running += sigma(k - 1) * sigma(k - 1);
    if (running / total >= energy) {
      k_star = k;
      break;
    }
  }
  return rule == SplitRule::inclusive ? k_star : std::max<index_t>(1, k_star - 1);
}

/// A LoRAQuant adapter, with the split it was made with.
struct LoraQuantized {
  QuantizedLowRank adapter;         ///< runs in any layer; bits_per_parameter() is storage-true
  index_t high_components = 0;      ///< h
  int high_bits = 2;                ///< b_h
  Eigen::VectorXd singular_values;  ///< σ of B·A, descending

  /// r.
  [[nodiscard]] index_t rank() const noexcept { return adapter.rank(); }
  /// Reference accounting (§6.5, what the paper reports): code bits only,
  /// (h·b_h + (r − h)) / r.
  [[nodiscard]] double reference_bits() const noexcept {
    const auto h = static_cast<double>(high_components);
    return (h * high_bits + (static_cast<double>(rank()) - h)) / static_cast<double>(rank());
  }
};

/// Reference bits over many adapters, weighted by each one's r·(N + K) values (§6.5).
QLR_COMPILED_FUNCTION
double average_reference_bits(std::span<const LoraQuantized> adapters) {
  double bits = 0.0;
  double values = 0.0;
  for (const LoraQuantized& q : adapters) {
    const auto count = static_cast<double>(q.adapter.parameter_count());
    bits += q.reference_bits() * count;
    values += count;
  }
  return values > 0.0 ? bits / values : 0.0;
}

/// f = ‖u·vᵀ − p̂·q̂ᵀ‖_F from inner products alone (§6.4's rank-1 identity, no m×n matrix).
QLR_COMPILED_FUNCTION
double rank1_distance(const Eigen::VectorXd& u, const Eigen::VectorXd& v,
                      const Eigen::VectorXd& p_hat, const Eigen::VectorXd& q_hat) {
  const double squared = u.squaredNorm() * v.squaredNorm() - 2.0 * u.dot(p_hat) * v.dot(q_hat) +
                         p_hat.squaredNorm() * q_hat.squaredNorm();
  return std::sqrt(std::max(squared, 0.0));  // cancellation can leave a tiny negative
}

namespace detail {

/// A vector through the high quantizer, with what the refinement's gradient needs per group.
struct QuantizedComponent {
  Eigen::VectorXd values;             ///< Q(x)
  std::vector<double> scales;         ///< s of each group (0: constant group, no gradient)
  std::vector<index_t> top, bottom;   ///< the entries that set hi and lo (−1: it is the 0)
};

/// Q(x) by the very steps quant::quantize takes on a row of float latents, so Q(x) here
/// is what the stored codes decode to.
QLR_COMPILED_FUNCTION
QuantizedComponent quantize_component(const Eigen::VectorXd& x,
                                      const quant::detail::IntCoding& coding,
                                      const quant::IntOptions& options) {
  constexpr const char* entity = "adapter::lora_quant";
  const index_t n = x.size();
  const index_t g = effective_group_size(options.group_size, n, entity);
  const std::vector<float> row(x.data(), x.data() + n);
  QuantizedComponent out{Eigen::VectorXd(n), {}, {}, {}};
  for (index_t begin = 0; begin < n; begin += g) {
    const index_t size = std::min(g, n - begin);
    const float* w = row.data() + begin;
    const quant::detail::GroupGrid grid = quant::detail::fit_group(coding, options, w, size, entity);
    for (index_t i = 0; i < size; ++i)
      out.values(begin + i) = quant::detail::decode(grid, quant::detail::encode(coding, grid, w[i]));
    const auto [lo, hi] = std::minmax_element(w, w + size);
    // With include_zero the range is [min(lo, 0), max(hi, 0)]: an end that is the 0 is fixed.
    const bool zero_end = coding.include_zero;
    const bool flat = zero_end ? *lo == 0.0f && *hi == 0.0f : *lo == *hi;
    out.scales.push_back(flat ? 0.0 : static_cast<double>(grid.scale));
    out.top.push_back(!zero_end || *hi > 0.0f ? begin + (hi - w) : -1);
    out.bottom.push_back(!zero_end || *lo < 0.0f ? begin + (lo - w) : -1);
  }
  return out;
}

/// ∂f/∂x from ∂f/∂x̂ = `outer` through Q: ŵ = s·(u − Z) with s = (hi − lo)/qmax, so the scale
/// path reaches only each group's ends; STE adds ∂f/∂x̂ itself and takes round(w/s) − w/s as
/// ∂(u − Z)·s/∂s.
QLR_COMPILED_FUNCTION
Eigen::VectorXd latent_gradient(const Eigen::VectorXd& x, const QuantizedComponent& q,
                                const Eigen::VectorXd& outer, double max_code, index_t group_size,
                                RefineGradient rule) {
  const bool ste = rule == RefineGradient::straight_through;
  Eigen::VectorXd grad = ste ? outer : Eigen::VectorXd::Zero(x.size());
  for (std::size_t l = 0; l < q.scales.size(); ++l) {
    const double s = q.scales[l];
    if (s == 0.0) continue;
    const index_t begin = static_cast<index_t>(l) * group_size;
    const index_t end = std::min<index_t>(begin + group_size, x.size());
    double by_scale = 0.0;  // ∂f/∂s
    for (index_t i = begin; i < end; ++i)
      by_scale += outer(i) * (q.values(i) / s - (ste ? x(i) / s : 0.0));
    if (q.top[l] >= 0) grad(q.top[l]) += by_scale / max_code;
    if (q.bottom[l] >= 0) grad(q.bottom[l]) -= by_scale / max_code;
  }
  return grad;
}

}  // namespace detail

/// One high component after the §6.4 refinement, with f before and after.
struct RefinedComponent {
  Eigen::VectorXd b;         ///< latent column of B' (length N) to quantize
  Eigen::VectorXd a;         ///< latent row of A' (length K) to quantize
  double initial_error = 0;  ///< f at the unrefined pair
  double error = 0;          ///< f at the returned pair: never above initial_error
};

/// Refines one high component (u = b'_j, v = a'_j) under the asymmetric `high` quantizer:
/// `steps` gradient steps on f = ‖u·vᵀ − Q(p)·Q(q)ᵀ‖_F from (p, q) = (u, v), keeping the
/// best pair seen (the reference keeps the last; keeping the best is ours, so f never rises).
QLR_COMPILED_FUNCTION
RefinedComponent refine_component(const Eigen::VectorXd& u, const Eigen::VectorXd& v,
                                  const quant::QuantSpec& high, const Refinement& options) {
  constexpr const char* entity = "adapter::refine_component";
  QLR_CHECK(options.steps >= 0, invalid_argument, "{}: steps = {}; expected >= 0", entity,
            options.steps);
  QLR_CHECK(options.learning_rate > 0.0 && std::isfinite(options.learning_rate), invalid_argument,
            "{}: learning_rate = {}; expected a finite value > 0", entity, options.learning_rate);
  QLR_CHECK(high.encoding == Encoding::int_asym, unsupported,
            "{}: encoding = {}; expected int_asym", entity, to_string(high.encoding));
  const auto coding = quant::detail::coding_of(high.bits, Encoding::int_asym, high.options);
  quant::detail::validate_options(coding, high.options, entity);
  const index_t g_b = effective_group_size(high.options.group_size, u.size(), entity);
  const index_t g_a = effective_group_size(high.options.group_size, v.size(), entity);
  RefinedComponent best{u, v, 0.0, 0.0};
  Eigen::VectorXd p = u, q = v;
  for (int step = 0; step <= options.steps; ++step) {
    const auto p_q = detail::quantize_component(p, coding, high.options);
    const auto q_q = detail::quantize_component(q, coding, high.options);
    const double f = rank1_distance(u, v, p_q.values, q_q.values);
    if (step == 0) best.initial_error = best.error = f;
    if (!std::isfinite(f) || f > 2.0 * best.initial_error) break;  // diverging: stop
    if (f < best.error) best = {p, q, best.initial_error, f};
    if (f == 0.0 || step == options.steps) break;
    const Eigen::VectorXd by_p = (q_q.values.squaredNorm() * p_q.values - v.dot(q_q.values) * u) / f;
    const Eigen::VectorXd by_q = (p_q.values.squaredNorm() * q_q.values - u.dot(p_q.values) * v) / f;
    p -= options.learning_rate *
         detail::latent_gradient(p, p_q, by_p, coding.max_code(), g_b, options.gradient);
    q -= options.learning_rate *
         detail::latent_gradient(q, q_q, by_q, coding.max_code(), g_a, options.gradient);
  }
  return best;
}

/// LoRAQuant of ΔW = scale·B·A (B: N×r, A: r×K): SVD re-factoring, the leading h components
/// group-wise asymmetric RTN at `high_bits`, the others binary (§6.3). Groups run along each
/// component vector (rows of A', columns of B'). Throws for bad factors or options.
///
/// Deviation [ours]: high grids keep 0 in range (include_zero) instead of the reference's
/// clamped integer zero, which clips groups that do not straddle 0; on the zero-mean SVD
/// components the two grids differ only on such groups.
QLR_COMPILED_FUNCTION
LoraQuantized lora_quant(const Matrix& a, const Matrix& b, double scale,
                         const LoraQuantOptions& options = {}) {
  constexpr const char* entity = "adapter::lora_quant";
  QLR_CHECK(options.high_bits == 2 || options.high_bits == 3 || options.high_bits == 4 ||
                options.high_bits == 8,
            unsupported, "{}: high_bits = {}; expected 2, 3, 4 or 8", entity, options.high_bits);
  QLR_CHECK(std::isfinite(scale), invalid_argument, "{}: scale = {}; expected a finite value",
            entity, scale);
  SvdFactors f = svd_reparameterize(a, b);
  const index_t r = a.rows();
  const index_t h = split_point(f.sigma, options.energy, options.split);
  quant::QuantSpec high;
  high.bits = options.high_bits;
  high.options.group_size = options.group_size;
  high.options.scale_type = options.scale_type;
  const quant::Binary low({options.group_size, options.scale_type});
  Matrix a_f = f.a.cast<float>();                // (r, K)
  Matrix bt_f = f.b.transpose().cast<float>();   // (r, N): components as rows
  if (options.refine.steps > 0) {
    for (index_t j = 0; j < h; ++j) {
      const RefinedComponent c = refine_component(f.b.col(j), f.a.row(j).transpose(), high,
                                                  options.refine);
      bt_f.row(j) = c.b.transpose().cast<float>();
      a_f.row(j) = c.a.transpose().cast<float>();
    }
  }
  std::vector<ComponentBlock> blocks;
  // A zero adapter (h = 0) is stored as one high block: its all-zero groups decode to exact
  // zeros, which binary codes cannot.
  const index_t high_end = h == 0 ? r : h;
  blocks.push_back({0, high_end, quant::quantize(a_f.topRows(high_end), high),
                    quant::quantize(bt_f.topRows(high_end), high)});
  if (high_end < r) {
    blocks.push_back({high_end, r, low.quantize(a_f.bottomRows(r - high_end)),
                      low.quantize(bt_f.bottomRows(r - high_end))});
  }
  return {QuantizedLowRank(std::move(blocks), scale), h, options.high_bits, std::move(f.sigma)};
}

// qlr::compiled (qlr/compensate/compensate.cpp) holds the one copy of this in a program.
#define QLR_LORA_QUANT_FUNCTIONS(prefix)                                                           \
  prefix template SvdFactors svd_reparameterize<>(const Matrix&, const Matrix&);                   \
  prefix template detail::QuantizedComponent detail::quantize_component<>(                         \
      const Eigen::VectorXd&, const quant::detail::IntCoding&, const quant::IntOptions&);          \
  prefix template RefinedComponent refine_component<>(                                             \
      const Eigen::VectorXd&, const Eigen::VectorXd&, const quant::QuantSpec&, const Refinement&); \
  prefix template LoraQuantized lora_quant<>(const Matrix&, const Matrix&, double,                 \
                                             const LoraQuantOptions&);
#if defined(QLR_COMPILED)
QLR_LORA_QUANT_FUNCTIONS(extern)
#endif

}  // namespace qlr::adapter
