// SPDX-License-Identifier: Apache-2.0
// LoRAQuant (ALGORITHMS.md §6): re-factor a trained LoRA by SVD, B·A = U·Σ·Vᵀ, so that its
// components come ordered by importance, then spend the bits there: the h leading components
// at 2–3 bits, the rest binary (1 bit). The result is a QuantizedLowRank the layer runs.
#pragma once

#include <Eigen/QR>
#include <Eigen/SVD>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "qlr/adapter/detail/factors.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
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

/// Options of LoRAQuant; the defaults are the paper's README command.
struct LoraQuantOptions {
  double energy = 0.8;                    ///< ρ ∈ (0, 1]: energy share of the high part
  SplitRule split = SplitRule::reference; ///< how h follows from ρ
  int high_bits = 2;                      ///< b_h: 2, 3, 4 or 8
  index_t group_size = 128;               ///< g along each component vector
  ScaleType scale_type = ScaleType::f16;  ///< storage of scales (f16: storage-true bits)
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
inline SvdFactors svd_reparameterize(const Matrix& a, const Matrix& b) {
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
inline index_t split_point(const Eigen::VectorXd& sigma, double energy, SplitRule rule) {
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
inline double average_reference_bits(std::span<const LoraQuantized> adapters) {
  double bits = 0.0;
  double values = 0.0;
  for (const LoraQuantized& q : adapters) {
    const auto count = static_cast<double>(q.adapter.parameter_count());
    bits += q.reference_bits() * count;
    values += count;
  }
  return values > 0.0 ? bits / values : 0.0;
}

/// LoRAQuant of ΔW = scale·B·A (B: N×r, A: r×K): SVD re-factoring, the leading h components
/// group-wise asymmetric RTN at `high_bits`, the others binary (§6.3). Groups run along each
/// component vector (rows of A', columns of B'). Throws for bad factors or options.
///
/// Deviation [ours]: high grids keep 0 in range (include_zero) instead of the reference's
/// clamped integer zero, which clips groups that do not straddle 0; on the zero-mean SVD
/// components the two grids differ only on such groups.
inline LoraQuantized lora_quant(const Matrix& a, const Matrix& b, double scale,
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
  const Matrix a_f = f.a.cast<float>();                // (r, K)
  const Matrix bt_f = f.b.transpose().cast<float>();   // (r, N): components as rows
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

}  // namespace qlr::adapter
