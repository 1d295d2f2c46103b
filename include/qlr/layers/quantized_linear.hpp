// SPDX-License-Identifier: Apache-2.0
// QuantizedLinear: the layer an engine drops into a transformer. Its base weight is rotated
// (optional), quantized group-wise and packed once; zero or more named low-rank adapters sit
// beside it. A forward runs one base GEMM and adds every adapter's B·t in the kernel's
// epilogue, so Y is written once. Each role is a template argument checked by its concept:
// swapping INT4-g128 for NF4, adding a Hadamard rotation or choosing W4A8 over weight-only
// is a change of one argument.
#pragma once

#include <algorithm>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "qlr/adapter/concept.hpp"
#include "qlr/adapter/dora.hpp"
#include "qlr/adapter/lora.hpp"
#include "qlr/adapter/low_rank.hpp"
#include "qlr/adapter/merge.hpp"
#include "qlr/adapter/qa_lora.hpp"
#include "qlr/adapter/quantized_low_rank.hpp"
#include "qlr/core/error.hpp"
#include "qlr/core/format.hpp"
#include "qlr/core/matrix.hpp"
#include "qlr/core/view.hpp"
#include "qlr/layers/policies.hpp"
#include "qlr/layers/rotated_activations.hpp"
#include "qlr/quant/activation.hpp"
#include "qlr/quant/concept.hpp"
#include "qlr/quant/dequantize.hpp"
#include "qlr/rotate/rotation.hpp"

namespace qlr::layers {

/// The adapter types a layer can hold, as one closed set (the variant it stores them in).
template <class... A>
struct AdapterSet {
  using variant = std::variant<A...>;  ///< storage of one attached adapter
  /// Whether `X` is one of the set.
  template <class X>
  static constexpr bool contains = (std::is_same_v<X, A> || ...);
  /// Whether every adapter of the set can sit beside a base of format `Format`.
  template <class Format>
  static constexpr bool all_fit = (adapter::AdapterFor<A, Format> && ...);
};

/// LoRA, DoRA, a plain low-rank term (EoRA) and quantized low-rank factors: any base.
using StandardAdapters =
    AdapterSet<adapter::Lora, adapter::Dora, adapter::LowRank, adapter::QuantizedLowRank>;
/// The standard set plus QA-LoRA, for asymmetric integer bases.
using AsymAdapters = AdapterSet<adapter::Lora, adapter::Dora, adapter::LowRank,
                                adapter::QuantizedLowRank, adapter::QaLora>;

/// An adapter set whose members all fit a base of format `Format`.
template <class S, class Format>
concept AdapterSetFor = requires {
  typename S::variant;                          // the storage of one attached adapter
  requires S::template all_fit<Format>;         // every member is an AdapterFor<Format> (QA-LoRA needs int_asym)
};

/// Which basis an adapter reads: the layer's input x, or the rotated Qᵀ·x its base sees
/// (an adapter trained after rotation, RoLoRA). Equal for an unrotated layer.
enum class Basis { original, rotated };

/// A linear layer y = x·Wᵀ + b with a quantized base and named low-rank adapters.
/// Q quantizes, R rotates the input side (W·Q, Qᵀ·x), Act says how activations enter the
/// GEMM, Adapters is the set of adapter types it may hold, K the kernel that runs it.
template <quant::Quantizer Q, rotate::RotationPolicy R = rotate::Identity,
          ActivationPolicy Act = FloatActivations, class Adapters = StandardAdapters,
          class K = SimdKernels>
  requires AdapterSetFor<Adapters, typename Q::format> && KernelFor<K, typename Q::format, Act>
class QuantizedLinear {
 public:
  using format = typename Q::format;  ///< the base weight's quantized format
  using quantizer_type = Q;           ///< the quantizer policy
  using rotation_type = R;            ///< the rotation policy
  using adapter_set = Adapters;       ///< the adapter types it may hold
  /// The adapter id of a row that uses no adapter, in a multi-adapter forward.
  static constexpr index_t no_adapter = -1;

  /// Quantizes and packs `w` (N×K) without a rotation (R = Identity).
  explicit QuantizedLinear(ConstMatrixRef w, const Q& quantizer = {}, Act act = {})
    requires std::is_same_v<R, rotate::Identity>
      : QuantizedLinear(w, quantizer, rotate::Identity(w.cols()), act) {}

  /// Rotates `w` (N×K) on its input side (W·Q), quantizes and packs it.
  QuantizedLinear(ConstMatrixRef w, const Q& quantizer, R rotation, Act act = {})
      : rotation_(std::move(rotation)),
        act_(act),
        base_(rotate_and_quantize(w, quantizer, rotation_)),
        packed_(K::template pack<Act>(base_)) {}

  /// A layer over an already quantized base `q`, stored in the rotated basis (a file, a merge).
  QuantizedLinear(QuantizedMatrix<format> q, R rotation, Act act = {})
      : rotation_(std::move(rotation)),
        act_(act),
        base_(fitting_rotation(std::move(q), rotation_)),
        packed_(K::template pack<Act>(base_)) {}

  [[nodiscard]] index_t in_features() const noexcept { return base_.cols(); }   ///< K
  [[nodiscard]] index_t out_features() const noexcept { return base_.rows(); }  ///< N
  /// The quantized base, in the rotated basis.
  [[nodiscard]] const QuantizedMatrix<format>& base() const noexcept { return base_; }
  /// The rotation policy.
  [[nodiscard]] const R& rotation() const noexcept { return rotation_; }
  /// The activation policy.
  [[nodiscard]] const Act& activations() const noexcept { return act_; }

  /// Sets the bias b (N values, finite); an empty vector removes it.
  void set_bias(const Vector& bias) {
    if (bias.size() != 0) {
      QLR_CHECK(bias.size() == out_features(), shape_mismatch,
                "layers::QuantizedLinear::set_bias: bias has {} values; expected N = {}",
                bias.size(), out_features());
      check_finite(bias.transpose(), "layers::QuantizedLinear::set_bias");
    }
    bias_ = bias;
  }
  /// The bias (empty when there is none).
  [[nodiscard]] const Vector& bias() const noexcept { return bias_; }

  /// Attaches `a` under `name`, enabled, reading `basis`. Throws for a taken name or an
  /// adapter whose shape is not N×K.
  template <class A>
    requires Adapters::template contains<A>
  void attach(std::string name, A a, Basis basis = Basis::original) {
    constexpr const char* entity = "layers::QuantizedLinear::attach";
    QLR_CHECK(find(name) == nullptr, invalid_argument,
              "{}: name = '{}'; expected a name no attached adapter has", entity, name);
    QLR_CHECK(a.in_features() == in_features() && a.out_features() == out_features(),
              shape_mismatch, "{}: adapter '{}' is {}x{} (N x K); expected {}x{}", entity, name,
              a.out_features(), a.in_features(), out_features(), in_features());
    entries_.emplace_back(std::move(name), std::move(a), basis);
    refresh_output_scale(entries_.back());
    restack();
  }

  /// Removes the adapter `name`. Ids of the adapters attached after it drop by one.
  void detach(std::string_view name) {
    const index_t id = adapter_id(name);
    entries_.erase(entries_.begin() + id);
    restack();
  }

  /// Enables or disables adapter `name`: a disabled adapter takes no part in any forward.
  void set_enabled(std::string_view name, bool enabled) {
    entries_[static_cast<std::size_t>(adapter_id(name))].enabled = enabled;
    restack();
  }

  /// Multiplies adapter `name`'s update by `scale` (1 as attached; 0 silences it).
  void set_scale(std::string_view name, float scale) {
    QLR_CHECK(std::isfinite(scale), invalid_argument,
              "layers::QuantizedLinear::set_scale: scale = {}; expected a finite value", scale);
    Entry& e = entries_[static_cast<std::size_t>(adapter_id(name))];
    e.scale = scale;
    refresh_output_scale(e);
    restack();
  }

  /// Folds QA-LoRA adapter `name`, with its run-time scale, into the base's zero points (the
  /// exact merge of ALGORITHMS.md §3.3), repacks the base and detaches the adapter: forward
  /// gives the same outputs within FP32 rounding without a low-rank path. ZeroMode::integer
  /// rounds and clamps the new zero points instead (lossy; see adapter::merge_into_zeros).
  /// Throws for an adapter that is not QA-LoRA or is disabled, or one that reads the original
  /// basis of a rotated layer (its groups are not the base's).
  void merge_into_base(std::string_view name, ZeroMode zeros = ZeroMode::floating)
    requires Adapters::template contains<adapter::QaLora>
  {
    constexpr const char* entity = "layers::QuantizedLinear::merge_into_base";
    const Entry& e = entries_[static_cast<std::size_t>(adapter_id(name))];
    const auto* qa = std::get_if<adapter::QaLora>(&e.adapter);
    QLR_CHECK(qa != nullptr, invalid_argument,
              "{}: adapter '{}' is not QA-LoRA; expected a QA-LoRA adapter (others merge into an "
              "FP32 weight: adapter::merge, or adapter::requantizing_merge)",
              entity, name);
    QLR_CHECK(e.enabled, invalid_argument, "{}: adapter '{}' is disabled; expected an enabled one",
              entity, name);
    QLR_CHECK(e.basis == Basis::rotated || rotation_is_identity(), invalid_argument,
              "{}: adapter '{}' reads the original basis of a rotated layer; expected "
              "Basis::rotated (the base's groups are in the rotated basis)",
              entity, name);
    const adapter::QaLora scaled =
        e.scale == 1.0f ? *qa
                        : adapter::QaLora(qa->a(), qa->b(), qa->alpha() * e.scale, qa->in_features(),
                                          qa->group_size(), qa->pooling(), qa->scaling());
    QuantizedMatrix<format> merged = adapter::merge_into_zeros(base_, scaled, zeros);
    auto packed = K::template pack<Act>(merged);
    base_ = std::move(merged);
    packed_ = std::move(packed);
    detach(name);
    for (Entry& other : entries_) refresh_output_scale(other);  // DoRA norms read the base
  }

  /// The id of adapter `name` for a multi-adapter forward. Throws for an unknown name.
  [[nodiscard]] index_t adapter_id(std::string_view name) const {
    for (std::size_t i = 0; i < entries_.size(); ++i)
      if (entries_[i].name == name) return static_cast<index_t>(i);
    qlr::detail::fail(Errc::invalid_argument,
                      "layers::QuantizedLinear: adapter '{}' is not attached; expected one of [{}]",
                      name, names_joined());
  }

  /// The names of the attached adapters, in id order.
  [[nodiscard]] std::vector<std::string> adapter_names() const {
    std::vector<std::string> names;
    for (const Entry& e : entries_) names.push_back(e.name);
    return names;
  }

  /// Calls f(name, adapter, basis, enabled, scale) for every attached adapter, in id order
  /// (the adapter as a const reference to the set's variant): what a file writer saves.
  template <class F>
  void for_each_adapter(F&& f) const {
    for (const Entry& e : entries_) f(e.name, e.adapter, e.basis, e.enabled, e.scale);
  }

  /// The adapter `name` as attached. Throws for an unknown name or another type.
  template <class A>
  [[nodiscard]] const A& adapter(std::string_view name) const {
    const auto* a = std::get_if<A>(&entries_[static_cast<std::size_t>(adapter_id(name))].adapter);
    QLR_CHECK(a != nullptr, invalid_argument,
              "layers::QuantizedLinear::adapter: '{}' holds another adapter type", name);
    return *a;
  }

  /// Y (M×N) = X (M×K)·Ŵᵀ + b plus every enabled adapter. A DoRA adapter rescales the
  /// whole output, so it must be the only one enabled. Throws for mismatched shapes.
  void forward(ConstMatrixRef x, MatrixRef y) const {
    check_io(x, y, "layers::QuantizedLinear::forward");
    const index_t m = x.rows();
    Matrix t(m, stacked_rank_);
    std::optional<Matrix> rotated_x;
    for (const Entry& e : entries_) {
      if (!e.enabled) continue;
      const ConstMatrixRef in = input_of(e, x, rotated_x);
      project(e, in, t.middleCols(e.first, rank_of(e)));
    }
    std::vector<LowRankSlice> slices;
    if (const Entry* dora = enabled_dora()) {
      QLR_CHECK(enabled_count() == 1, invalid_argument,
                "layers::QuantizedLinear::forward: DoRA adapter '{}' rescales the whole output; "
                "expected it to be the only enabled adapter (or pick adapters per row)",
                dora->name);
      slices.assign(static_cast<std::size_t>(m),
                    LowRankSlice{0, stacked_rank_, dora->output_scale.data()});
    }
    run(x, y, t, slices, rotated_x);
  }

  /// Multi-adapter batch: row i of X uses adapter `adapter_of_row[i]` (an id from
  /// adapter_id, or no_adapter) — one base GEMM for the whole batch, then each adapter's
  /// low-rank path on its rows, added in the epilogue. Throws for an id out of range or a
  /// disabled adapter.
  void forward(ConstMatrixRef x, MatrixRef y, std::span<const index_t> adapter_of_row) const {
    constexpr const char* entity = "layers::QuantizedLinear::forward";
    check_io(x, y, entity);
    const index_t m = x.rows();
    QLR_CHECK(static_cast<index_t>(adapter_of_row.size()) == m, shape_mismatch,
              "{}: adapter_of_row has {} ids; expected one per row of x (M = {})", entity,
              adapter_of_row.size(), m);
    index_t widest = 0;
    for (index_t i = 0; i < m; ++i) {
      const index_t id = adapter_of_row[static_cast<std::size_t>(i)];
      QLR_CHECK(id == no_adapter || (id >= 0 && id < static_cast<index_t>(entries_.size())),
                invalid_argument, "{}: adapter_of_row[{}] = {}; expected -1 or an id in [0, {})",
                entity, i, id, entries_.size());
      if (id == no_adapter) continue;
      const Entry& e = entries_[static_cast<std::size_t>(id)];
      QLR_CHECK(e.enabled, invalid_argument,
                "{}: adapter_of_row[{}] names '{}'; expected an enabled adapter", entity, i, e.name);
      widest = std::max(widest, rank_of(e));
    }
    Matrix t = Matrix::Zero(m, widest);
    std::vector<LowRankSlice> slices(static_cast<std::size_t>(m));
    std::optional<Matrix> rotated_x;
    std::vector<index_t> rows;
    for (std::size_t id = 0; id < entries_.size(); ++id) {
      const Entry& e = entries_[id];
      rows.clear();
      for (index_t i = 0; i < m; ++i)
        if (adapter_of_row[static_cast<std::size_t>(i)] == static_cast<index_t>(id)) rows.push_back(i);
      if (rows.empty()) continue;
      const ConstMatrixRef in = input_of(e, x, rotated_x);
      Matrix gathered(static_cast<index_t>(rows.size()), in.cols());
      for (std::size_t j = 0; j < rows.size(); ++j) gathered.row(static_cast<index_t>(j)) = in.row(rows[j]);
      Matrix part(gathered.rows(), rank_of(e));
      project(e, gathered, part);
      for (std::size_t j = 0; j < rows.size(); ++j) {
        t.row(rows[j]).head(part.cols()) = part.row(static_cast<index_t>(j));
        slices[static_cast<std::size_t>(rows[j])] =
            LowRankSlice{e.first, rank_of(e), e.output_scale.size() ? e.output_scale.data() : nullptr};
      }
    }
    run(x, y, t, slices, rotated_x);
  }

  /// forward(x, y) into a new M×N matrix.
  [[nodiscard]] Matrix forward(ConstMatrixRef x) const {
    Matrix y(x.rows(), out_features());
    forward(x, y);
    return y;
  }

  /// The dequantized base Ŵ in the original basis (N×K): what the layer computes without
  /// adapters and bias, up to activation quantization.
  [[nodiscard]] Matrix dequantized_weight() const {
    Matrix w = quant::dequantize(base_);
    rotate::unrotate_rows(rotation_, w);
    return w;
  }

  /// The dense FP32 weight in the original basis that the layer computes with its enabled
  /// adapters summed in (a DoRA adapter rescales the rows): the oracle of forward().
  [[nodiscard]] Matrix dense_weight() const {
    Matrix w = dequantized_weight();
    for (const Entry& e : entries_) {
      if (!e.enabled) continue;
      Matrix delta = std::visit([](const auto& a) { return a.delta(); }, e.adapter) * e.scale;
      if (e.basis == Basis::rotated) rotate::unrotate_rows(rotation_, delta);
      w += delta;
      if (e.output_scale.size() != 0) w = e.output_scale.asDiagonal() * w;
    }
    return w;
  }

 private:
  struct Entry {
    Entry(std::string n, typename Adapters::variant a, Basis b)
        : name(std::move(n)), adapter(std::move(a)), basis(b) {}
    std::string name;
    typename Adapters::variant adapter;
    Basis basis = Basis::original;
    bool enabled = true;
    float scale = 1.0f;   // runtime multiplier of the update
    Vector output_scale;  // DoRA: m/‖W + scale·s·B·A‖ per row; empty otherwise
    index_t first = 0;    // first row of bt_ while enabled
  };

  static QuantizedMatrix<format> rotate_and_quantize(ConstMatrixRef w, const Q& quantizer,
                                                     const R& rotation) {
    Matrix rotated = w;
    rotate::rotate_weight_input(rotation, rotated);  // checks K = n and finiteness
    return quantizer.quantize(rotated);
  }

  static QuantizedMatrix<format> fitting_rotation(QuantizedMatrix<format> q, const R& rotation) {
    QLR_CHECK(q.cols() == rotation.size(), shape_mismatch,
              "layers::QuantizedLinear: base has K = {} columns; expected the rotation's n = {}",
              q.cols(), rotation.size());
    return q;
  }

  [[nodiscard]] const Entry* find(std::string_view name) const {
    for (const Entry& e : entries_)
      if (e.name == name) return &e;
    return nullptr;
  }

  [[nodiscard]] std::string names_joined() const {
    std::string all;
    for (const Entry& e : entries_) all += (all.empty() ? "'" : ", '") + e.name + "'";
    return all;
  }

  static index_t rank_of(const Entry& e) {
    return std::visit([](const auto& a) { return a.rank(); }, e.adapter);
  }

  [[nodiscard]] index_t enabled_count() const {
    return static_cast<index_t>(
        std::count_if(entries_.begin(), entries_.end(), [](const Entry& e) { return e.enabled; }));
  }

  [[nodiscard]] const Entry* enabled_dora() const {
    for (const Entry& e : entries_)
      if (e.enabled && e.output_scale.size() != 0) return &e;
    return nullptr;
  }

  // DoRA's factor depends on the base in the adapter's basis and on the runtime scale
  // (n = ‖W + scale·s·B·A‖): computed when either changes, never per forward.
  void refresh_output_scale(Entry& e) const {
    if (const auto* dora = std::get_if<adapter::Dora>(&e.adapter)) {
      const Matrix w0 = e.basis == Basis::rotated ? quant::dequantize(base_) : dequantized_weight();
      e.output_scale =
          e.scale == 1.0f
              ? dora->output_scale(w0)
              : adapter::Dora(dora->a(), dora->b(), dora->magnitude(), dora->alpha() * e.scale,
                              dora->scaling())
                    .output_scale(w0);
    }
  }

  // Floats between rows of bt_: an odd number of 64-byte lines. A tile's epilogue reads r
  // rows at one column; at N = 4096 a stride of N put all of them in one L1 set (rows 16 KB
  // apart), and each call refetched them from L2. Zen 4, 4096² W4A8 LoRA r = 16, M = 64, one
  // thread: time with ÷ without the adapter 1.11–1.15 at stride N, 1.10 padded; r = 64 1.57 → 1.37.
  static index_t low_rank_stride(index_t n) noexcept {
    const index_t lines = (n + 15) / 16;
    return 16 * (lines % 2 == 1 ? lines : lines + 1);
  }

  // Stacks Bᵀ of the enabled adapters, in id order, into bt_ (R×N, rows low_rank_stride
  // apart): the epilogue's operand.
  void restack() {
    stacked_rank_ = 0;
    for (Entry& e : entries_) {
      e.first = stacked_rank_;
      if (e.enabled) stacked_rank_ += rank_of(e);
    }
    bt_ = Matrix::Zero(stacked_rank_, low_rank_stride(out_features()));
    for (const Entry& e : entries_) {
      if (!e.enabled) continue;
      std::visit(
          [&](const auto& a) {
            bt_.middleRows(e.first, a.rank()).leftCols(out_features()) = a.up().transpose();
          },
          e.adapter);
    }
  }

  // Whether Q = I: known from the type, or asked of a rotation chosen at run time.
  [[nodiscard]] bool rotation_is_identity() const noexcept {
    if constexpr (std::is_same_v<R, rotate::Identity>)
      return true;
    else if constexpr (requires { rotation_.is_identity(); })
      return rotation_.is_identity();
    else
      return false;
  }

  // x itself for an adapter of the original basis, else Qᵀ·x (computed once per forward).
  ConstMatrixRef input_of(const Entry& e, ConstMatrixRef x, std::optional<Matrix>& rotated) const {
    if (e.basis == Basis::original || std::is_same_v<R, rotate::Identity>) return x;
    if (!rotated) {
      rotated = x;
      rotate::rotate_rows(rotation_, *rotated);
    }
    return *rotated;
  }

  static void project(const Entry& e, ConstMatrixRef x, MatrixRef t) {
    std::visit([&](const auto& a) { a.project(x, t); }, e.adapter);
    if (e.scale != 1.0f) t *= e.scale;
  }

  void check_io(ConstMatrixRef x, MatrixRef y, const char* entity) const {
    QLR_CHECK(x.cols() == in_features() && x.rows() >= 1, shape_mismatch,
              "{}: x is {}x{}; expected M x K = M x {} with M >= 1", entity, x.rows(), x.cols(),
              in_features());
    QLR_CHECK(y.rows() == x.rows() && y.cols() == out_features(), shape_mismatch,
              "{}: y is {}x{}; expected M x N = {}x{}", entity, y.rows(), y.cols(), x.rows(),
              out_features());
  }

  // The base GEMM with the adapters' t (M×r) and the stacked Bᵀ in its epilogue.
  void run(ConstMatrixRef x, MatrixRef y, const Matrix& t, const std::vector<LowRankSlice>& slices,
           std::optional<Matrix>& rotated_x) const {
    const LowRankTerm low_rank{{bt_.data(), bt_.rows(), out_features(), bt_.cols()},
                               {t.data(), t.rows(), t.cols(), t.cols()},
                               slices.empty() ? nullptr : slices.data()};
    const bool has_low_rank = t.cols() > 0 && bt_.rows() > 0;
    const Epilogue epilogue{bias_.size() != 0 ? bias_.data() : nullptr,
                            has_low_rank || !slices.empty() ? &low_rank : nullptr};
    const MatrixView out{y.data(), y.rows(), y.cols(), y.outerStride()};
    if constexpr (Act::bits == 0) {
      if constexpr (std::is_same_v<R, rotate::Identity>) {
        K::gemm(packed_, ConstMatrixView{x.data(), x.rows(), x.cols(), x.outerStride()}, out,
                epilogue);
      } else {
        if (!rotated_x) {
          rotated_x = x;
          rotate::rotate_rows(rotation_, *rotated_x);
        }
        const Matrix& xr = *rotated_x;
        K::gemm(packed_, ConstMatrixView{xr.data(), xr.rows(), xr.cols(), xr.cols()}, out, epilogue);
      }
    } else {
      const quant::ActivationOptions options{Act::bits, act_.clip};
      const quant::QuantizedActivations codes =
          std::is_same_v<R, rotate::Identity> ? quantize_activations(x, options)
                                              : rotate_quantize_per_token(rotation_, x, options);
      K::gemm(packed_, codes.view(), out, epilogue);
    }
  }

  [[no_unique_address]] R rotation_;
  [[no_unique_address]] Act act_;
  QuantizedMatrix<format> base_;
  typename K::template packed<format, Act> packed_;
  Vector bias_;
  std::vector<Entry> entries_;
  Matrix bt_;  // R×(N + padding): Bᵀ of the enabled adapters, stacked
  index_t stacked_rank_ = 0;
};

}  // namespace qlr::layers
