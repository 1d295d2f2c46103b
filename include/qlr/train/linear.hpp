// SPDX-License-Identifier: Apache-2.0
// TrainableLinear: low-rank adapters trained on a frozen (quantized) base — LoRA and rsLoRA,
// DoRA with the detached norm, QA-LoRA over pooled inputs — with dropout, several adapters,
// frozen ones, and the gradients of ALGORITHMS.md §3.2, §5.2 and §8.1. Each adapter adds its
// term to the base output (PEFT's rule with several active adapters):
//
//   LoRA / rsLoRA   y += s·(X̃·Aᵀ)·Bᵀ
//   QA-LoRA         y += s·(pool(X̃)·Aᵀ)·Bᵀ
//   DoRA            y += (c − 1)⊙(X̃·Ŵᵀ) + c⊙s·(X̃·Aᵀ)·Bᵀ,  c = m / ‖Ŵ + s·B·A‖ per row
//
// with X̃ = X⊙D the adapter's dropped-out input (D = 1 without dropout, when the DoRA term is
// the familiar c⊙(Ŵx + s·BAx) − Ŵx). The scalar T is float for training and double for the
// gradient checks, which run this same code on the dequantized weight.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/parallel.hpp"
#include "qlr/core/types.hpp"
#include "qlr/train/frozen_base.hpp"
#include "qlr/train/parameter.hpp"

namespace qlr::train {

/// Which adapter a TrainableLinear trains.
enum class AdapterKind : std::uint8_t {
  lora,     ///< LoRA (rsLoRA with Scaling::rank_stabilized)
  dora,     ///< DoRA: LoRA direction plus a per-row magnitude, norm detached
  qa_lora,  ///< QA-LoRA: A acts on the input pooled over the base's quantization groups
};

/// How an adapter's A starts (B starts at 0, DoRA's m at the base's row norms).
enum class Init : std::uint8_t {
  kaiming_uniform,  ///< A ~ U(±1/√fan_in): PEFT's default (Kaiming-uniform, a = √5)
  gaussian,         ///< A ~ N(0, 1/r²): PEFT's "gaussian"
  xavier_uniform,   ///< A ~ U(±√(6/(fan_in + r))): QA-LoRA's reference
};

/// An adapter of a TrainableLinear: what it is, how it scales, drops out and starts.
struct AdapterConfig {
  AdapterKind kind = AdapterKind::lora;                   ///< LoRA, DoRA or QA-LoRA
  index_t rank = 8;                                       ///< r, in [1, min(N, K)]
  double alpha = 16.0;                                    ///< α of s = α/r (or α/√r)
  adapter::Scaling scaling = adapter::Scaling::standard;  ///< α/r, or α/√r (rsLoRA)
  double dropout = 0.0;                                   ///< p in [0, 1) on the adapter's input
  adapter::Pooling pooling = adapter::Pooling::mean;      ///< QA-LoRA's κ
  index_t group_size = 0;  ///< QA-LoRA's pooling group: 0 takes the base's, else must equal it
  Init init = Init::kaiming_uniform;                      ///< A's distribution
  std::uint64_t seed = 0;                                 ///< A's and the dropout masks' seed
  bool trainable = true;                                  ///< false: a frozen adapter
};

namespace detail {
/// Rows per block of an adapter's products. Fixed, so that the blocks, and the order in which
/// their partial gradients are added, do not depend on the thread count.
inline constexpr index_t adapter_block_rows = 256;

/// Calls body(block, first_row, rows) for each block of adapter_block_rows rows of [0, m),
/// blocks in parallel.
template <class Body>
void for_adapter_blocks(index_t m, Body&& body) {
  const index_t blocks = (m + adapter_block_rows - 1) / adapter_block_rows;
  parallel_for(blocks, 1, [&](index_t begin, index_t end) {
    for (index_t b = begin; b < end; ++b) {
      const index_t first = b * adapter_block_rows;
      body(b, first, std::min(adapter_block_rows, m - first));
    }
  });
}
}  // namespace detail

/// One adapter's values, gradients and what its last forward kept for the backward.
template <class T>
struct AdapterState {
  std::string name;           ///< PEFT's adapter name, e.g. "default"
  AdapterConfig config;       ///< as added
  T scale{};                  ///< s
  MatrixT<T> a;               ///< A: r×K (r×L for QA-LoRA)
  MatrixT<T> b;               ///< B: N×r
  VectorT<T> magnitude;       ///< DoRA's m (N); empty otherwise
  MatrixT<T> grad_a;          ///< ∂loss/∂A, accumulated over backward calls
  MatrixT<T> grad_b;          ///< ∂loss/∂B
  VectorT<T> grad_magnitude;  ///< ∂loss/∂m
  std::mt19937_64 rng;        ///< the dropout masks' stream
  // The last forward's intermediate values.
  MatrixT<T> mask;       ///< D (M×K), 0 or 1/(1 − p); empty without dropout
  MatrixT<T> input;      ///< the input A reads: X̃, pool(X̃) for QA-LoRA; empty when X
  MatrixT<T> h;          ///< X̃·Aᵀ (or pool(X̃)·Aᵀ), M×r
  MatrixT<T> dora_z;     ///< DoRA: X̃·Ŵᵀ + s·h·Bᵀ, M×N (what m multiplies, over n)
  VectorT<T> dora_norm;  ///< DoRA: n = ‖Ŵ + s·B·A‖ per row, detached
};

/// A linear layer with a frozen base and trainable low-rank adapters. forward() keeps what
/// backward() needs; backward() adds every trainable adapter's gradients to its gradient
/// buffers (zero them between optimizer steps) and returns dX.
template <class T = float>
class TrainableLinear {
 public:
  /// A layer named `module` (the PEFT module path, e.g. "model.layers.0.self_attn.q_proj")
  /// over `base`.
  TrainableLinear(std::string module, FrozenBase<T> base)
      : module_(std::move(module)), base_(std::move(base)) {}

  [[nodiscard]] index_t in_features() const noexcept { return base_.in_features(); }    ///< K
  [[nodiscard]] index_t out_features() const noexcept { return base_.out_features(); }  ///< N
  /// The module path the parameters are named after.
  [[nodiscard]] const std::string& module() const noexcept { return module_; }
  /// The frozen base.
  [[nodiscard]] const FrozenBase<T>& base() const noexcept { return base_; }

  /// Adds adapter `name` with A drawn as `config.init` says, B = 0 and, for DoRA, m = ‖Ŵ‖
  /// per row, so that the layer's output is unchanged. Throws for a taken name, a rank
  /// outside [1, min(N, K)], a non-finite α, a dropout outside [0, 1), or a QA-LoRA adapter
  /// on a rotated base (its groups do not lie along x) or with pooling groups other than the
  /// base's.
  void add_adapter(std::string name, const AdapterConfig& config);

  /// Sets adapter `name`'s factors (and DoRA's magnitude) to given values: LoftQ/EoRA
  /// initializations, a checkpoint, a double twin. Throws for a shape other than the
  /// adapter's or a NaN/Inf.
  void set_values(std::string_view name, const MatrixT<T>& a, const MatrixT<T>& b,
                  const VectorT<T>& magnitude = {});

  /// The adapters, in the order they were added.
  [[nodiscard]] std::span<const AdapterState<T>> adapters() const noexcept { return adapters_; }
  /// Adapter `name`. Throws for an unknown name.
  [[nodiscard]] const AdapterState<T>& adapter(std::string_view name) const {
    return adapters_[index_of(name)];
  }

  /// Y (M×N) = base(X) + every adapter's term. With `training`, each adapter with dropout
  /// draws a fresh mask from its stream, unless `masks` gives one per adapter (an empty
  /// matrix: none); without, no dropout. Keeps what backward() needs. Throws for an X that
  /// is not M×K or a mask of another shape.
  MatrixT<T> forward(ConstRefT<T> x, bool training = true, std::span<const MatrixT<T>> masks = {});

  /// dX (M×K) for dY (M×N) of the last forward; adds each trainable adapter's gradients to
  /// its buffers. Throws for a dY of another shape or without a forward.
  MatrixT<T> backward(ConstRefT<T> dy);

  /// Every trainable adapter's gradients ← 0.
  void zero_gradients() noexcept;

  /// Restarts every adapter's dropout stream from `seed` (adapter i from seed + i): a loop
  /// that seeds each step from its number draws the same masks when it resumes.
  void reseed_dropout(std::uint64_t seed) noexcept {
    for (std::size_t i = 0; i < adapters_.size(); ++i) adapters_[i].rng.seed(seed + i);
  }

  /// Frees what the last forward kept (its input and each adapter's intermediates), as a
  /// model that recomputes activations does between a block's forward and its backward.
  void release_activations() noexcept;

  /// Bytes the last forward keeps for backward(): its input and each adapter's intermediates.
  [[nodiscard]] std::size_t activation_bytes() const noexcept;

  /// With `hold`, forward() reuses each DoRA adapter's norm n from the last forward instead
  /// of recomputing it from A and B: the function whose gradients backward() returns (n is
  /// detached, §5.2), which the gradient checks difference. Off by default.
  void hold_dora_norms(bool hold) noexcept { hold_dora_norms_ = hold; }

  /// The trainable tensors as one list, named as PEFT names them in a model:
  /// "base_model.model.<module>.lora_A.<adapter>.weight", ".lora_B.", and for DoRA
  /// ".lora_magnitude_vector.<adapter>.weight". Views valid until the adapters change.
  [[nodiscard]] ParameterList parameters() requires std::is_same_v<T, float>;

 private:
  [[nodiscard]] std::size_t index_of(std::string_view name) const;
  [[nodiscard]] index_t pooled_width() const noexcept {
    return group_count(in_features(), pool_group());
  }
  [[nodiscard]] index_t pool_group() const noexcept {
    const index_t g = base_.group_size();
    return g <= 0 || g >= in_features() ? in_features() : g;
  }
  [[nodiscard]] T pool_factor(const AdapterState<T>& s, index_t l) const noexcept;
  // What A of `s` multiplied in the last forward.
  [[nodiscard]] const MatrixT<T>& input_of(const AdapterState<T>& s) const noexcept {
    return s.input.size() != 0 ? s.input : x_;
  }
  void pool(const AdapterState<T>& s, ConstRefT<T> x, MatrixT<T>& p) const;
  void spread(const AdapterState<T>& s, const MatrixT<T>& dp, RefT<T> dx) const;
  // Adds s's gradients for Ĝ = g to its buffers and its term of dX to dx.
  void adapter_backward(AdapterState<T>& s, ConstRefT<T> g, MatrixT<T>& dx) const;
  void dora_norms(AdapterState<T>& s) const;

  std::string module_;
  FrozenBase<T> base_;
  std::vector<AdapterState<T>> adapters_;
  Eigen::VectorXd base_row_norm_sq_;  // ‖Ŵ_o‖², computed when the first DoRA adapter is added
  MatrixT<T> x_;                      // the last forward's input
  bool has_forward_ = false;
  bool hold_dora_norms_ = false;
};

// ---------------------------------------------------------------------------------------

template <class T>
std::size_t TrainableLinear<T>::index_of(std::string_view name) const {
  for (std::size_t i = 0; i < adapters_.size(); ++i)
    if (adapters_[i].name == name) return i;
  qlr::detail::fail(Errc::invalid_argument,
                    "train::TrainableLinear: no adapter '{}' in module '{}'; expected one of the "
                    "{} added",
                    name, module_, adapters_.size());
}

template <class T>
void TrainableLinear<T>::add_adapter(std::string name, const AdapterConfig& config) {
  constexpr const char* entity = "train::TrainableLinear::add_adapter";
  const index_t n = out_features(), k = in_features();
  QLR_CHECK(!name.empty(), invalid_argument, "{}: empty adapter name; expected e.g. \"default\"",
            entity);
  for (const auto& s : adapters_)
    QLR_CHECK(s.name != name, invalid_argument, "{}: adapter '{}' exists; expected a new name",
              entity, name);
  QLR_CHECK(config.rank >= 1 && config.rank <= std::min(n, k), invalid_argument,
            "{}: rank = {}; expected 1 <= r <= min(N, K) = {}", entity, config.rank,
            std::min(n, k));
  QLR_CHECK(config.dropout >= 0.0 && config.dropout < 1.0, invalid_argument,
            "{}: dropout = {}; expected a value in [0, 1)", entity, config.dropout);
  const bool qa = config.kind == AdapterKind::qa_lora;
  QLR_CHECK(!qa || !base_.is_rotated(), unsupported,
            "{}: adapter '{}' is QA-LoRA on a rotated base; expected an unrotated base (its "
            "quantization groups must lie along x to pool over them)",
            entity, name);
  QLR_CHECK(!qa || config.group_size == 0 || config.group_size == pool_group(), invalid_argument,
            "{}: adapter '{}' pools over groups of {}; expected the base's quantization groups "
            "of {} (or 0 to take them)",
            entity, name, config.group_size, pool_group());
  AdapterState<T> s;
  s.name = std::move(name);
  s.config = config;
  s.scale = static_cast<T>(adapter::lora_scale(config.alpha, config.rank, config.scaling, entity));
  const index_t r = config.rank;
  const index_t fan_in = qa ? pooled_width() : k;
  s.a.resize(r, fan_in);
  std::mt19937_64 rng(config.seed);
  const auto uniform = [&rng] { return static_cast<double>(rng() >> 11) * 0x1p-53; };
  switch (config.init) {
    case Init::kaiming_uniform:
    case Init::xavier_uniform: {
      const double bound = config.init == Init::kaiming_uniform
                               ? 1.0 / std::sqrt(static_cast<double>(fan_in))
                               : std::sqrt(6.0 / static_cast<double>(fan_in + r));
      for (index_t i = 0; i < s.a.size(); ++i)
        s.a.data()[i] = static_cast<T>(bound * (2.0 * uniform() - 1.0));
      break;
    }
    case Init::gaussian: {
      // Box–Muller: two uniforms per normal, the second kept for the next element.
      const double sigma = 1.0 / static_cast<double>(r);
      for (index_t i = 0; i < s.a.size(); i += 2) {
        const double u1 = 1.0 - uniform(), u2 = uniform();
        const double radius = sigma * std::sqrt(-2.0 * std::log(u1));
        s.a.data()[i] = static_cast<T>(radius * std::cos(2.0 * std::numbers::pi * u2));
        if (i + 1 < s.a.size())
          s.a.data()[i + 1] = static_cast<T>(radius * std::sin(2.0 * std::numbers::pi * u2));
      }
      break;
    }
  }
  s.b = MatrixT<T>::Zero(n, r);
  s.grad_a = MatrixT<T>::Zero(r, fan_in);
  s.grad_b = MatrixT<T>::Zero(n, r);
  s.rng.seed(config.seed ^ 0x9e3779b97f4a7c15ull);  // a stream apart from A's
  if (config.kind == AdapterKind::dora) {
    if (base_row_norm_sq_.size() == 0) {
      const MatrixT<T> w = base_.dequantized_weight();
      base_row_norm_sq_.resize(n);
      for (index_t o = 0; o < n; ++o) {
        double sum = 0.0;  // in double, index order, as adapter::row_norm_sq
        for (index_t i = 0; i < k; ++i)
          sum += static_cast<double>(w(o, i)) * static_cast<double>(w(o, i));
        base_row_norm_sq_(o) = sum;
      }
    }
    // std::sqrt per element, as dora_norms takes it: B = 0 then gives n = m bit for bit
    // (Eigen's vectorized float sqrt is an approximation refined by Newton's method).
    s.magnitude.resize(n);
    for (index_t o = 0; o < n; ++o)
      s.magnitude(o) = static_cast<T>(std::sqrt(base_row_norm_sq_(o)));
    s.grad_magnitude = VectorT<T>::Zero(n);
  }
  adapters_.push_back(std::move(s));
}

template <class T>
void TrainableLinear<T>::set_values(std::string_view name, const MatrixT<T>& a, const MatrixT<T>& b,
                                    const VectorT<T>& magnitude) {
  constexpr const char* entity = "train::TrainableLinear::set_values";
  AdapterState<T>& s = adapters_[index_of(name)];
  QLR_CHECK(a.rows() == s.a.rows() && a.cols() == s.a.cols() && b.rows() == s.b.rows() &&
                b.cols() == s.b.cols(),
            shape_mismatch, "{}: A is {}x{}, B is {}x{}; expected {}x{} and {}x{} for '{}'", entity,
            a.rows(), a.cols(), b.rows(), b.cols(), s.a.rows(), s.a.cols(), s.b.rows(), s.b.cols(),
            name);
  const bool dora = s.config.kind == AdapterKind::dora;
  QLR_CHECK(magnitude.size() == (dora ? s.magnitude.size() : 0) || (dora && magnitude.size() == 0),
            shape_mismatch, "{}: magnitude has {} values; expected {} for '{}'", entity,
            magnitude.size(), dora ? s.magnitude.size() : 0, name);
  QLR_CHECK(a.allFinite() && b.allFinite() && magnitude.allFinite(), invalid_argument,
            "{}: a NaN or an infinity in the values of '{}'; expected finite values", entity, name);
  s.a = a;
  s.b = b;
  if (magnitude.size() != 0) s.magnitude = magnitude;
}

template <class T>
T TrainableLinear<T>::pool_factor(const AdapterState<T>& s, index_t l) const noexcept {
  const index_t g = pool_group(), k = in_features();
  const index_t width = std::min(g, k - l * g);
  double kappa = 1.0;
  if (s.config.pooling == adapter::Pooling::sum) kappa = static_cast<double>(g);
  if (s.config.pooling == adapter::Pooling::peft)
    kappa = static_cast<double>(k) / static_cast<double>(g);
  return static_cast<T>(kappa / static_cast<double>(width));
}

template <class T>
void TrainableLinear<T>::pool(const AdapterState<T>& s, ConstRefT<T> x, MatrixT<T>& p) const {
  const index_t g = pool_group(), groups = pooled_width();
  p.resize(x.rows(), groups);
  for (index_t l = 0; l < groups; ++l) {
    const index_t begin = l * g, width = std::min(g, in_features() - begin);
    p.col(l) = pool_factor(s, l) * x.middleCols(begin, width).rowwise().sum();
  }
}

template <class T>
void TrainableLinear<T>::spread(const AdapterState<T>& s, const MatrixT<T>& dp, RefT<T> dx) const {
  const index_t g = pool_group();
  for (index_t l = 0; l < dp.cols(); ++l) {
    const index_t begin = l * g, width = std::min(g, in_features() - begin);
    const T f = pool_factor(s, l);
    for (index_t t = 0; t < dx.rows(); ++t) dx.row(t).segment(begin, width).array() = f * dp(t, l);
  }
}

template <class T>
void TrainableLinear<T>::dora_norms(AdapterState<T>& s) const {
  // ‖Ŵ_o + s·(BA)_o‖² = ‖Ŵ_o‖² + 2s·(Ŵ·Aᵀ)_o·B_o + s²·B_o·(A·Aᵀ)·B_oᵀ (§5.1), in double:
  // no N×K temporary, O(N·K·r) through the base's own kernel.
  const index_t n = out_features(), r = s.a.rows();
  MatrixT<T> wa(r, n);  // (A·Ŵᵀ) = (Ŵ·Aᵀ)ᵀ
  base_.apply_weight(s.a, wa);
  const MatrixD aat = (s.a.template cast<double>() * s.a.template cast<double>().transpose());
  const double sc = static_cast<double>(s.scale);
  s.dora_norm.resize(n);
  for (index_t o = 0; o < n; ++o) {
    const Eigen::RowVectorXd bo = s.b.row(o).template cast<double>();
    const double cross = bo.dot(wa.col(o).template cast<double>());
    const double quad = bo * aat * bo.transpose();
    const double sq = base_row_norm_sq_(o) + 2.0 * sc * cross + sc * sc * quad;
    s.dora_norm(o) = static_cast<T>(std::sqrt(std::max(sq, 0.0)));
  }
}

template <class T>
MatrixT<T> TrainableLinear<T>::forward(ConstRefT<T> x, bool training,
                                       std::span<const MatrixT<T>> masks) {
  constexpr const char* entity = "train::TrainableLinear::forward";
  const index_t m = x.rows(), n = out_features(), k = in_features();
  QLR_CHECK(x.cols() == k && m >= 1, shape_mismatch,
            "{}: x is {}x{}; expected M x K = M x {} with M >= 1 (module '{}')", entity, m,
            x.cols(), k, module_);
  QLR_CHECK(masks.empty() || masks.size() == adapters_.size(), invalid_argument,
            "{}: {} masks; expected none or one per adapter ({})", entity, masks.size(),
            adapters_.size());
  MatrixT<T> y(m, n);
  base_.forward(x, y);
  x_ = x;
  MatrixT<T> base_term;  // X·Ŵᵀ without bias, for DoRA without dropout
  for (std::size_t j = 0; j < adapters_.size(); ++j) {
    AdapterState<T>& s = adapters_[j];
    const double p = training ? s.config.dropout : 0.0;
    const bool explicit_mask = !masks.empty() && masks[j].size() != 0;
    if (explicit_mask) {
      QLR_CHECK(masks[j].rows() == m && masks[j].cols() == k && masks[j].allFinite(),
                shape_mismatch, "{}: mask of adapter '{}' is {}x{}; expected finite M x K = {}x{}",
                entity, s.name, masks[j].rows(), masks[j].cols(), m, k);
      s.mask = masks[j];
    } else if (p > 0.0) {
      const T keep = static_cast<T>(1.0 / (1.0 - p));
      s.mask.resize(m, k);
      for (index_t i = 0; i < s.mask.size(); ++i)
        s.mask.data()[i] = static_cast<double>(s.rng() >> 11) * 0x1p-53 < p ? T(0) : keep;
    } else {
      s.mask.resize(0, 0);
    }
    const bool dropped = s.mask.size() != 0;
    MatrixT<T> xt;
    if (dropped) xt = x.cwiseProduct(s.mask);
    const ConstRefT<T> in = dropped ? ConstRefT<T>(xt) : x;
    if (s.config.kind == AdapterKind::qa_lora)
      pool(s, in, s.input);
    else if (dropped)
      s.input = std::move(xt);
    else
      s.input.resize(0, 0);  // A reads x_ itself
    const MatrixT<T>& a_input = input_of(s);
    const bool dora = s.config.kind == AdapterKind::dora;
    s.h.resize(m, s.a.rows());
    MatrixT<T> up(dora ? m : 0, n);
    detail::for_adapter_blocks(m, [&](index_t, index_t first, index_t rows) {
      auto h = s.h.middleRows(first, rows);
      h.noalias() = a_input.middleRows(first, rows) * s.a.transpose();
      if (dora)
        up.middleRows(first, rows).noalias() = s.scale * (h * s.b.transpose());
      else
        y.middleRows(first, rows).noalias() += s.scale * (h * s.b.transpose());
    });
    if (!dora) continue;
    if (!hold_dora_norms_ || s.dora_norm.size() != n) dora_norms(s);
    MatrixT<T> z(m, n);  // X̃·Ŵᵀ
    if (dropped) {
      base_.apply_weight(input_of(s), z);
    } else {
      if (base_term.size() == 0) {
        base_term.resize(m, n);
        base_.apply_weight(x, base_term);
      }
      z = base_term;
    }
    s.dora_z = z + up;
    for (index_t o = 0; o < n; ++o) {
      const T c = s.magnitude(o) / s.dora_norm(o);
      y.col(o) += (c - T(1)) * z.col(o) + c * up.col(o);
    }
  }
  has_forward_ = true;
  return y;
}

template <class T>
MatrixT<T> TrainableLinear<T>::backward(ConstRefT<T> dy) {
  constexpr const char* entity = "train::TrainableLinear::backward";
  QLR_CHECK(has_forward_, invalid_argument,
            "{}: no forward to go back through (module '{}'); expected forward() first", entity,
            module_);
  const index_t m = x_.rows(), n = out_features(), k = in_features();
  QLR_CHECK(dy.rows() == m && dy.cols() == n, shape_mismatch,
            "{}: dy is {}x{}; expected M x N = {}x{} (module '{}')", entity, dy.rows(), dy.cols(),
            m, n, module_);
  QLR_CHECK(dy.allFinite(), invalid_argument,
            "{}: dy holds a NaN or an infinity (module '{}'); expected finite gradients", entity,
            module_);
  // DoRA first: its factors c = m/‖Ŵ + s·BA‖ scale the G its low-rank term sees (Ĝ), and its
  // (c − 1)⊙G goes through Ŵ: with the base's own G when there is no dropout, else through
  // the dropped-out input.
  std::vector<MatrixT<T>> g_dora(adapters_.size());
  MatrixT<T> g_base;  // G plus the DoRA terms; empty when there are none
  MatrixT<T> side;    // the DoRA terms under dropout, in the input basis
  for (std::size_t j = 0; j < adapters_.size(); ++j) {
    AdapterState<T>& s = adapters_[j];
    if (s.config.kind != AdapterKind::dora) continue;
    VectorT<T> c(n);
    for (index_t o = 0; o < n; ++o) c(o) = s.magnitude(o) / s.dora_norm(o);
    if (s.config.trainable)
      for (index_t o = 0; o < n; ++o)
        s.grad_magnitude(o) += dy.col(o).dot(s.dora_z.col(o)) / s.dora_norm(o);
    const MatrixT<T> gc = dy * (c.array() - T(1)).matrix().asDiagonal();  // (c − 1)⊙G
    g_dora[j] = dy * c.asDiagonal();
    if (s.mask.size() != 0) {
      MatrixT<T> extra(m, k);
      base_.backward_input(x_.cwiseProduct(s.mask), gc, extra);
      if (side.size() == 0) side = MatrixT<T>::Zero(m, k);
      side += extra.cwiseProduct(s.mask);
    } else {
      if (g_base.size() == 0) g_base = dy;
      g_base += gc;
    }
  }
  MatrixT<T> dx(m, k);
  base_.backward_input(x_, g_base.size() != 0 ? ConstRefT<T>(g_base) : dy, dx);
  if (side.size() != 0) dx += side;
  for (std::size_t j = 0; j < adapters_.size(); ++j)
    adapter_backward(adapters_[j], g_dora[j].size() != 0 ? ConstRefT<T>(g_dora[j]) : dy, dx);
  return dx;
}

template <class T>
void TrainableLinear<T>::adapter_backward(AdapterState<T>& s, ConstRefT<T> g,
                                          MatrixT<T>& dx) const {
  const index_t m = g.rows();
  const MatrixT<T>& a_input = input_of(s);
  const bool dropped = s.mask.size() != 0, qa = s.config.kind == AdapterKind::qa_lora;
  const index_t blocks = (m + detail::adapter_block_rows - 1) / detail::adapter_block_rows;
  const std::size_t partials = s.config.trainable ? static_cast<std::size_t>(blocks) : 0;
  std::vector<MatrixT<T>> part_b(partials), part_a(partials);  // per block, added in order
  detail::for_adapter_blocks(m, [&](index_t block, index_t first, index_t rows) {
    const auto g_rows = g.middleRows(first, rows);
    const MatrixT<T> dh = s.scale * (g_rows * s.b);  // rows × r
    if (s.config.trainable) {
      part_b[static_cast<std::size_t>(block)].noalias() =
          g_rows.transpose() * s.h.middleRows(first, rows);
      part_a[static_cast<std::size_t>(block)].noalias() =
          dh.transpose() * a_input.middleRows(first, rows);
    }
    MatrixT<T> term = dh * s.a;  // rows × K, or rows × L for QA-LoRA
    if (qa) {
      MatrixT<T> spread_term(rows, in_features());
      spread(s, term, spread_term);
      term.swap(spread_term);
    }
    if (dropped)
      dx.middleRows(first, rows) += term.cwiseProduct(s.mask.middleRows(first, rows));
    else
      dx.middleRows(first, rows) += term;
  });
  for (std::size_t b = 0; b < partials; ++b) {
    s.grad_b.noalias() += s.scale * part_b[b];
    s.grad_a += part_a[b];
  }
}

template <class T>
void TrainableLinear<T>::release_activations() noexcept {
  x_ = MatrixT<T>();
  for (AdapterState<T>& s : adapters_) {
    s.mask = MatrixT<T>();
    s.input = MatrixT<T>();
    s.h = MatrixT<T>();
    s.dora_z = MatrixT<T>();
  }
  has_forward_ = false;
}

template <class T>
std::size_t TrainableLinear<T>::activation_bytes() const noexcept {
  std::size_t values = static_cast<std::size_t>(x_.size());
  for (const AdapterState<T>& s : adapters_)
    values +=
        static_cast<std::size_t>(s.mask.size() + s.input.size() + s.h.size() + s.dora_z.size());
  return values * sizeof(T);
}

template <class T>
void TrainableLinear<T>::zero_gradients() noexcept {
  for (AdapterState<T>& s : adapters_) {
    s.grad_a.setZero();
    s.grad_b.setZero();
    s.grad_magnitude.setZero();
  }
}

template <class T>
ParameterList TrainableLinear<T>::parameters() requires std::is_same_v<T, float> {
  ParameterList list;
  const std::string prefix = "base_model.model." + module_ + ".";
  const auto span_of = [](auto& m) {
    return std::span<float>(m.data(), static_cast<std::size_t>(m.size()));
  };
  for (AdapterState<T>& s : adapters_) {
    if (!s.config.trainable) continue;
    list.push_back({prefix + "lora_A." + s.name + ".weight",
                    {s.a.rows(), s.a.cols()},
                    span_of(s.a),
                    span_of(s.grad_a)});
    list.push_back({prefix + "lora_B." + s.name + ".weight",
                    {s.b.rows(), s.b.cols()},
                    span_of(s.b),
                    span_of(s.grad_b)});
    if (s.config.kind == AdapterKind::dora)
      list.push_back({prefix + "lora_magnitude_vector." + s.name + ".weight",
                      {s.magnitude.size()},
                      span_of(s.magnitude),
                      span_of(s.grad_magnitude)});
  }
  return list;
}

// qlr::compiled (qlr/train/train.cpp) holds the one copy of the FP32 layer in a program.
#define QLR_TRAINABLE_LINEAR_INSTANCES(prefix) prefix template class TrainableLinear<float>;
#if defined(QLR_COMPILED)
QLR_TRAINABLE_LINEAR_INSTANCES(extern)
#endif

}  // namespace qlr::train
